"""kubectl-style output, the one ``-o`` flag set of every kctl command. Pure: objects in, strings out.

``-o json|yaml|wide|name|jsonpath=TEMPLATE|jsonpath-file=FILE|custom-columns=SPEC|custom-columns-file=FILE``
and ``--no-headers`` mean what they mean for kubectl. ``get`` tables take their columns from the CRDs'
printer columns (:func:`printer_columns`), so ``kctl get`` and ``kubectl get`` print the same.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from ..api.common import parse_rfc3339
from ..api.resources import Resource
from ..text import printable
from .jsonpath import JSONPathError, evaluate, parse_path, render_template, strip_braces, text_of

NONE = "<none>"



parse_time = parse_rfc3339


def format_age(seconds: float) -> str:
    """kubectl's human duration: 45s, 5m30s, 3h20m, 2d4h, 400d (no negative ages)."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m}m{s}s" if s else f"{m}m"
    if m < 180:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 8:
        return f"{h}h{m}m" if m else f"{h}h"
    if h < 48:
        return f"{h}h"
    d, h = divmod(h, 24)
    if d < 8:
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{d}d"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    when = parse_time(timestamp)
    if when is None:
        return NONE
    return format_age(((now or datetime.now(UTC)) - when).total_seconds())


def cell(value: Any) -> str:
    """One table cell: lists joined by commas, None as <none>, booleans lowercase."""
    if value is None or value == "" or value == []:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    return str(value)


MIN_CELL = 3
"""kubectl's tabwriter: minimum column width 6 including the 3 blanks of padding, so a column of empty cells
keeps 6 characters (``--no-headers`` lines up as kubectl's)."""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "", no_headers: bool = False,
          keep_empty: bool = False) -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get`` (no trailing blanks).

    ``keep_empty``: an empty string stays an empty cell (kubectl's CRD tables) instead of ``<none>``."""
    text_rows = [["" if keep_empty and c == "" else printable(cell(c)) for c in row] for row in rows]
    all_rows = ([] if no_headers else [list(headers)]) + text_rows
    if not all_rows:
        return ""
    widths = [max(MIN_CELL, *(len(r[i]) for r in all_rows)) for i in range(len(headers))]
    lines = []
    for r in all_rows:
        parts = [r[i].ljust(widths[i]) if i < len(r) - 1 else r[i] for i in range(len(r))]
        lines.append((indent + "   ".join(parts)).rstrip())
    return "\n".join(lines) + "\n"


def dump(data: Any, fmt: str) -> str:
    """``-o yaml`` or ``-o json`` of an object or a list (as a kind: List)."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    raise ValueError(f"unknown output format {fmt!r} (use yaml or json)")


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def field(obj: Any, path: str, default: Any = None) -> Any:
    """``field(obj, "status.phase")``: a dotted lookup that never raises."""
    cur = obj
    for seg in path.split("."):
        if not isinstance(cur, dict):
            return default
        cur = cur.get(seg)
    return default if cur is None else cur


def key_values(pairs: Sequence[tuple[str, Any]], indent: str = "") -> str:
    """``Name:   value`` lines aligned like ``kubectl describe``."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    out = []
    for k, v in pairs:
        text = cell(v) if not isinstance(v, str) or v else NONE
        lines = [printable(line) for line in text.split("\n")] or [""]
        out.append(f"{indent}{(k + ':').ljust(width)}{lines[0]}".rstrip())
        for extra in lines[1:]:
            out.append(f"{indent}{' ' * width}{extra}".rstrip())
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- the -o flag set
FORMATS = ("json", "yaml", "wide", "name", "jsonpath", "jsonpath-file", "custom-columns", "custom-columns-file")
OUTPUT_HELP = ("output format: json|yaml|wide|name|jsonpath=TEMPLATE|jsonpath-file=FILE|"
               "custom-columns=HEADER:JSONPATH,...|custom-columns-file=FILE (as kubectl)")


@dataclass(frozen=True)
class Output:
    """One parsed ``-o`` (``format`` None: the command's default human output)."""

    format: str | None = None
    arg: str = ""
    no_headers: bool = False
    label_columns: tuple[str, ...] = ()
    """``-L KEY``: one column per label key, after the others (header: the key's last segment, upper case)."""
    show_labels: bool = False
    """``--show-labels``: a last LABELS column (``k=v,...`` sorted by key)."""
    sort_by: str = ""
    """``--sort-by JSONPATH``: items sorted by that field (every format, as kubectl)."""
    show_managed_fields: bool = False
    """``--show-managed-fields``: keep ``metadata.managedFields`` in json/yaml (kubectl drops it there by default)."""

    @property
    def structured(self) -> bool:
        """Machine output: the command prints objects, not its human report."""
        return self.format not in (None, "wide")

    @property
    def wide(self) -> bool:
        return self.format == "wide"


def parse_output(text: str) -> Output:
    """argparse ``type=`` for ``-o``: checks the format and pre-parses templates and column specs."""
    fmt, sep, arg = text.partition("=")
    if fmt not in FORMATS:
        raise argparse.ArgumentTypeError(f"unknown output format {text!r}; use one of {', '.join(FORMATS)}")
    if fmt.endswith("-file"):
        if not arg:
            raise argparse.ArgumentTypeError(f"-o {fmt}=FILE needs a file")
        try:
            with open(arg, encoding="utf-8") as fh:
                arg = fh.read().strip()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {arg}: {exc.strerror}") from None
        fmt = fmt[: -len("-file")]
    if fmt in ("jsonpath", "custom-columns") and not arg:
        raise argparse.ArgumentTypeError(f"-o {fmt}=... needs a {'template' if fmt == 'jsonpath' else 'column list'}, "
                                         f"e.g. -o {fmt}={'{.items[*].metadata.name}' if fmt == 'jsonpath' else 'NAME:.metadata.name'}")
    if fmt in ("json", "yaml", "wide", "name") and sep:
        raise argparse.ArgumentTypeError(f"-o {fmt} takes no '=...'")
    try:
        if fmt == "jsonpath":
            render_template(arg, {})
        elif fmt == "custom-columns":
            custom_columns(arg)
    except JSONPathError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Output(fmt, arg)


@dataclass(frozen=True)
class Column:
    header: str
    path: str
    type: str = "string"
    priority: int = 0
    missing: str = NONE
    """What a missing value prints: ``<none>`` (custom-columns) or "" (CRD printer columns, as kubectl)."""

    def value(self, obj: Any, now: datetime | None = None) -> str:
        found = evaluate(parse_path(strip_braces(self.path)), obj)
        if not found or found[0] is None:
            return self.missing
        if self.type == "date":
            return age(found[0], now) if isinstance(found[0], str) else self.missing
        return text_of(found[0]) if len(found) == 1 else ",".join(text_of(v) for v in found)


NAME_COLUMN = Column("NAME", ".metadata.name")


@dataclass(frozen=True)
class KindNameColumn(Column):
    """NAME as ``kind.group/name``: what ``kubectl get a,b`` prints when several types are listed."""

    def value(self, obj: Any, now: datetime | None = None) -> str:
        return object_name(obj)


KIND_NAME_COLUMN = KindNameColumn("NAME", ".metadata.name")


def printer_columns(res: Resource) -> list[Column]:
    """``kubectl get`` columns of a disklet kind: NAME, then the CRD's additionalPrinterColumns."""
    return [NAME_COLUMN] + [Column(c["name"].upper(), c["jsonPath"], c.get("type", "string"), c.get("priority", 0),
                                   missing="")
                            for c in res.printer_columns]


def custom_columns(spec: str) -> list[Column]:
    """``HEADER:JSONPATH,...`` (kubectl's custom-columns)."""
    cols = []
    for part in spec.split(","):
        header, sep, path = part.partition(":")
        if not sep or not header.strip() or not path.strip():
            raise JSONPathError(f"custom-columns entry {part!r} is not HEADER:JSONPATH")
        parse_path(strip_braces(path))
        cols.append(Column(header.strip(), path.strip()))
    return cols


def object_name(obj: dict[str, Any]) -> str:
    """``-o name``: ``kind.group/name`` (core kinds: ``kind/name``), lowercase kind, like kubectl."""
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    kind = str(obj.get("kind") or "object").lower()
    return f"{kind}{'.' + group if group else ''}/{field(obj, 'metadata.name', '')}"


@dataclass(frozen=True)
class LabelColumn(Column):
    """``-L KEY``: the label's value, an empty cell when the object does not have it (as kubectl)."""

    def value(self, obj: Any, now: datetime | None = None) -> str:
        return str((field(obj, "metadata.labels") or {}).get(self.path, ""))


@dataclass(frozen=True)
class LabelsColumn(Column):
    """``--show-labels``: ``k=v,k2=v2`` sorted by key, ``<none>`` without labels (as kubectl)."""

    def value(self, obj: Any, now: datetime | None = None) -> str:
        labels = field(obj, "metadata.labels") or {}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def label_header(key: str) -> str:
    return key.rsplit("/", 1)[-1].upper()


def table_columns(columns: Sequence[Column], out: Output) -> list[Column]:
    """The columns a table prints: ``-o wide``'s priority, then ``-L`` columns, then LABELS."""
    cols = [c for c in columns if out.wide or c.priority == 0]
    cols += [LabelColumn(label_header(k), k, missing="") for k in out.label_columns]
    if out.show_labels:
        cols.append(LabelsColumn("LABELS", ".metadata.labels"))
    return cols


def render_table(objs: Sequence[dict[str, Any]], columns: Sequence[Column], out: Output,
                 now: datetime | None = None) -> str:
    cols = table_columns(columns, out)
    return table([c.header for c in cols], [[c.value(o, now) for c in cols] for o in objs],
                 no_headers=out.no_headers, keep_empty=True)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, text_of(value))


def sort_objects(objs: Sequence[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """``--sort-by``: kubectl's JSONPath (``.metadata.name`` or ``{.metadata.name}``); numbers sort as
    numbers, objects without the field first; ties keep their order."""
    parsed = parse_path(strip_braces(path))

    def key(obj: dict[str, Any]) -> tuple[int, Any]:
        found = evaluate(parsed, obj)
        return _sort_key(found[0] if found else None)
    return sorted(objs, key=key)


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def parse_sort_by(text: str) -> str:
    """argparse ``type=`` for ``--sort-by``."""
    try:
        parse_path(strip_braces(text))
    except JSONPathError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def render(objs: Sequence[dict[str, Any]], out: Output, *, single: bool = False,
           columns: Sequence[Column] | None = None, now: datetime | None = None) -> str:
    """Objects in any ``-o`` format (``single``: one object asked by name, not a List)."""
    if out.sort_by:
        objs = sort_objects(objs, out.sort_by)
    if out.format in ("json", "yaml") and not out.show_managed_fields:
        objs = [without_managed_fields(o) for o in objs]
    data: Any = objs[0] if single and len(objs) == 1 else as_list(list(objs))
    if out.format in ("json", "yaml"):
        return dump(data, out.format)
    if out.format == "name":
        return "".join(object_name(o) + "\n" for o in objs)
    if out.format == "jsonpath":
        return render_template(out.arg, data)
    if out.format == "custom-columns":
        return render_table(objs, custom_columns(out.arg), Output("wide", no_headers=out.no_headers), now)
    return render_table(objs, columns or [NAME_COLUMN], out, now)
