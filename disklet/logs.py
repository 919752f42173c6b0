"""One logging setup for the operator and the agent: structlog JSON lines (default) or text on
stderr, Kopf's stdlib records included.

Kopf attaches its whole ``settings`` object (and more) to every log record as extras; structlog's
``ExtraAdder()`` without an allow list would dump all of it into every line. Only the object
reference is kept, flattened to ``object``/``namespace``/``uid``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

ALLOWED_EXTRAS: tuple[str, ...] = ("k8s_ref",)
"""LogRecord extras always copied into log lines (Kopf's object reference); callers add their own."""


def _flatten_ref(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ref = event.pop("k8s_ref", None)
    if isinstance(ref, dict):
        kind, name = ref.get("kind"), ref.get("name")
        if kind and name:
            event["object"] = f"{kind}/{name}"
        if ref.get("namespace"):
            event["namespace"] = ref["namespace"]
        if ref.get("uid"):
            event["uid"] = ref["uid"]
    return event


def configure_logging(fmt: str = "json", level: str | int = "INFO", stream: TextIO | None = None,
                      extras: tuple[str, ...] = ()) -> logging.Handler:
    """Route stdlib (Kopf) and structlog records through one formatter on ``stream`` (stderr).

    ``fmt``: ``json`` or ``text`` (``console`` is accepted as text); ``extras``: further LogRecord
    extras allowed into the line (e.g. the agent's ``node``, ``lvg``).
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if fmt.lower() == "json" else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=ALLOWED_EXTRAS + tuple(extras)), _flatten_ref],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler
