"""One clear line for a missing or broken kubeconfig, before any client library sees it. Pure but for reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

HINT = "pass --kubeconfig FILE and/or --context NAME, or set KUBECONFIG"


def kubeconfig_paths(explicit: str | None) -> list[str]:
    """The files kctl would read: ``--kubeconfig``, else every entry of ``$KUBECONFIG``, else ~/.kube/config."""
    if explicit:
        return [explicit]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [str(Path.home() / ".kube" / "config")]


def kubeconfig_problem(explicit: str | None, context: str | None) -> str | None:
    """What is wrong with the kubeconfig, as one sentence (None: looks usable)."""
    paths = kubeconfig_paths(explicit)
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot read kubeconfig {path}: {exc.strerror}"
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            return f"kubeconfig {path} is not valid YAML{where}"
        if not isinstance(data, dict):
            return f"kubeconfig {path} is empty or not a kubeconfig mapping"
        docs.append((path, data))
    if not docs:
        where = ", ".join(paths)
        return f"no kubeconfig found at {where}"
    contexts = {c.get("name") for _, d in docs for c in d.get("contexts") or [] if isinstance(c, dict)}
    current = context or next((d.get("current-context") for _, d in docs if d.get("current-context")), None)
    if not current:
        return (f"kubeconfig {docs[0][0]} sets no current-context and no --context was given"
                + (f" (contexts: {', '.join(sorted(str(c) for c in contexts))})" if contexts else ""))
    if current not in contexts:
        return f"context {current!r} is not in kubeconfig {', '.join(p for p, _ in docs)}"
    return None
