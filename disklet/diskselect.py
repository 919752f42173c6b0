"""Disk selectors: one CEL engine for DiskLayout ``match`` and LVMVolumeGroup ``blockDeviceSelector.match``.

An expression is evaluated over one disk at a time and must return a boolean, e.g.
``disk.transport == "nvme" && !disk.rotational && disk.size >= 1Ti``. The variables
(:data:`DISK_VARIABLES`) are declared with their types, so a misspelt field or a comparison of a
number with a string is refused when the expression is compiled, with the field it came from
in the message — by ``kctl apply``/``kctl diff`` and the operator's pre-flight before anything
reaches a node, and again by the agent.

- **Runtime**: ``cel-expr-python`` (Google's CEL runtime), with the strings extension.
- **Size literals**: ``1Ti``, ``500Gi``, ``960G`` (Kubernetes quantity suffixes: ``Ki Mi Gi Ti Pi Ei``
  are powers of 1024, ``k M G T P E`` powers of 1000) outside string literals become integer
  literals before compiling.
- **Cost limit**: the checked expression is walked and its worst-case cost estimated (each node 1,
  the body of a comprehension times :data:`MAX_LIST` iterations); an expression above
  :data:`MAX_COST`, longer than :data:`MAX_EXPRESSION` characters or nested deeper than
  :data:`MAX_DEPTH` is refused. Every list a disk has is bounded, so the estimate bounds the work.
- **Missing facts** read as empty: ``""`` for strings, ``0`` for numbers, ``[]`` for lists, so
  ``disk.model.startsWith("X")`` is simply false on a disk without a model.

Pure: no I/O. The resolution rule of a DiskLayout disk (exactly one consumable disk, the
others listed with why they are excluded) is :func:`resolve_one`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION = 2048
"""Longest accepted expression, in characters (the CRD field's maxLength)."""
MAX_LIST = 64
"""Bound assumed for every list a comprehension iterates (a disk's byId links are capped to it)."""
MAX_COST = 100_000
"""Largest accepted cost estimate: two nested comprehensions with a small body fit, three do not."""
MAX_DEPTH = 64
"""Deepest accepted expression tree."""

# name (after "disk."), CEL type, description. The one list of what a selector can read.
DISK_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("path", "string", "Kernel device path, e.g. /dev/nvme0n1 (changes between boots: select on identity instead)."),
    ("name", "string", "Kernel name, e.g. nvme0n1."),
    ("type", "string", "lsblk type: disk, part, mpath, md, ..."),
    ("size", "int", "Size in bytes; compare with size literals: disk.size >= 1Ti."),
    ("model", "string", "Model, e.g. SAMSUNG MZQL21T9HCJR-00A07."),
    ("vendor", "string", "Vendor (SCSI/SATA; NVMe disks usually have none)."),
    ("serial", "string", "Serial number."),
    ("wwn", "string", "World Wide Name, e.g. 0x5002538e40a1b2c3 or eui.0025388b91b2c3d4."),
    ("transport", "string", "nvme, sata, sas, usb, virtio, scsi, iscsi, fc, loop, ... (empty when unknown)."),
    ("rotational", "bool", "Spinning disk."),
    ("removable", "bool", "Removable media."),
    ("hotplug", "bool", "Hot-pluggable (USB, eSATA, ...)."),
    ("readOnly", "bool", "Read-only device."),
    ("logicalSectorSize", "int", "Logical sector size in bytes."),
    ("physicalSectorSize", "int", "Physical sector size in bytes."),
    ("partitionTable", "string", "Partition table type (gpt, dos) or empty."),
    ("fsType", "string", "Filesystem or signature on the device, or empty."),
    ("byId", "list<string>", "Names of the /dev/disk/by-id links to the device, e.g. nvme-eui.0025...."),
)

_SIZE_SUFFIXES = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6,
                  "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5, "E": 1000**6}
_SIZE_LITERAL = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)(?![\w])")


class SelectorError(ValueError):
    """An expression that cannot be used: the message names the field it came from."""


# ------------------------------------------------------------------------------------ facts


@dataclass(frozen=True)
class DiskFacts:
    """One disk (or BlockDevice) as a selector sees it."""

    path: str
    name: str = ""
    type: str = "disk"
    size: int = 0
    model: str = ""
    vendor: str = ""
    serial: str = ""
    wwn: str = ""
    transport: str = ""
    rotational: bool = False
    removable: bool = False
    hotplug: bool = False
    read_only: bool = False
    logical_sector_size: int = 0
    physical_sector_size: int = 0
    partition_table: str = ""
    fs_type: str = ""
    by_id: tuple[str, ...] = ()

    def variables(self) -> dict[str, Any]:
        """The CEL activation: ``disk.<name>`` → value."""
        return {
            "disk.path": self.path, "disk.name": self.name or self.path.rsplit("/", 1)[-1],
            "disk.type": self.type, "disk.size": int(self.size), "disk.model": self.model,
            "disk.vendor": self.vendor, "disk.serial": self.serial, "disk.wwn": self.wwn,
            "disk.transport": self.transport, "disk.rotational": bool(self.rotational),
            "disk.removable": bool(self.removable), "disk.hotplug": bool(self.hotplug),
            "disk.readOnly": bool(self.read_only), "disk.logicalSectorSize": int(self.logical_sector_size),
            "disk.physicalSectorSize": int(self.physical_sector_size),
            "disk.partitionTable": self.partition_table, "disk.fsType": self.fs_type,
            "disk.byId": list(self.by_id[:MAX_LIST]),
        }

    def describe(self) -> str:
        """``/dev/sdb (SAMSUNG X, serial S1, 1.9Ti, nvme)``: how candidates are listed."""
        facts = [f for f in (self.model, f"serial {self.serial}" if self.serial else "",
                             human_size(self.size) if self.size else "", self.transport) if f]
        return f"{self.path} ({', '.join(facts)})" if facts else self.path

    @classmethod
    def from_block_device_status(cls, status: Mapping[str, Any]) -> DiskFacts:
        """Facts from a BlockDevice's status (kctl diff and the agent's LVM selection)."""
        from .units import QuantityError, parse_quantity

        def s(key: str) -> str:
            v = status.get(key)
            return str(v) if v is not None else ""

        try:
            size = int(parse_quantity(s("size"), maximum=None)) if s("size") else 0
        except QuantityError:
            size = 0
        path = s("path")
        return cls(path=path, name=path.rsplit("/", 1)[-1], type=s("type") or "disk", size=size, model=s("model"),
                   vendor=s("vendor"), serial=s("serial"), wwn=s("wwn"), transport=s("transport"),
                   rotational=status.get("rota") is True, removable=status.get("removable") is True,
                   hotplug=status.get("hotPlug") is True, read_only=status.get("readOnly") is True,
                   logical_sector_size=int(status.get("logicalSectorSize") or 0),
                   physical_sector_size=int(status.get("physicalSectorSize") or 0),
                   partition_table=s("partitionTableType"), fs_type=s("fsType"),
                   by_id=tuple(str(x) for x in (status.get("byId") or [])[:MAX_LIST]))


def human_size(size: int) -> str:
    """1920383410176 → ``1.75Ti``: how candidates are listed (sizes from lsblk are rarely round)."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2)):
        if size >= factor:
            return f"{size / factor:.2f}".rstrip("0").rstrip(".") + unit
    return f"{size}B"


# ----------------------------------------------------------------------------- compiling


def _split_strings(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_string_literal, piece) runs, so size literals are never rewritten inside strings."""
    out: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i
            while j > start and text[j - 1] in "rRbB":
                j -= 1
            raw = "r" in text[j:i].lower()
            if j > start:
                out.append((False, text[start:j]))
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            k = i + len(quote)
            while k < n and not text.startswith(quote, k):
                k += 2 if (text[k] == "\\" and not raw) else 1
            end = min(n, k + len(quote))
            out.append((True, text[j:end]))
            i = start = end
            continue
        i += 1
    if start < n:
        out.append((False, text[start:]))
    return out


def expand_size_literals(expression: str) -> str:
    """``disk.size >= 1Ti`` → ``disk.size >= 1099511627776`` (outside string literals only)."""
    def repl(m: re.Match[str]) -> str:
        number, suffix = m.group(1), m.group(2)
        if "." in number:
            from decimal import Decimal

            return str(int(Decimal(number) * _SIZE_SUFFIXES[suffix]))
        return str(int(number) * _SIZE_SUFFIXES[suffix])

    return "".join(piece if is_str else _SIZE_LITERAL.sub(repl, piece) for is_str, piece in _split_strings(expression))


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    from cel_expr_python import cel
    from cel_expr_python.ext import ext_strings

    types = {"string": cel.Type.STRING, "int": cel.Type.INT, "bool": cel.Type.BOOL,
             "list<string>": cel.Type.List(cel.Type.STRING)}
    variables = {f"disk.{name}": types[t] for name, t, _ in DISK_VARIABLES}
    return cel.NewEnv(variables=variables, extensions=[ext_strings.ExtStrings()])


def _clean_cel_error(text: str) -> str:
    text = re.sub(r"^[A-Z_]+: ", "", text.strip())
    text = text.replace(" [INVALID_ARGUMENT]", "").replace(" (in container '')", "")
    return text.replace("ERROR: <input>:", "at ")


@dataclass(frozen=True)
class Selector:
    """A compiled, type-checked, cost-checked expression."""

    expression: str
    field: str
    cost: int
    _program: Any = dataclasses.field(repr=False, compare=False)

    def evaluate(self, disk: DiskFacts) -> bool:
        """True/False; :class:`SelectorError` when evaluation fails on this disk (e.g. an index out of range)."""
        value = self._program.eval(data=disk.variables())
        kind = value.type().name()
        if kind != "BOOL":
            raise SelectorError(f"{self.field}: evaluating on {disk.path}: {_clean_cel_error(str(value.value()))}")
        return bool(value.value())


@functools.lru_cache(maxsize=256)
def _compile_cached(expression: str, field_name: str) -> Selector:
    if not expression.strip():
        raise SelectorError(f"{field_name}: the expression is empty")
    if len(expression) > MAX_EXPRESSION:
        raise SelectorError(f"{field_name}: the expression is longer than {MAX_EXPRESSION} characters")
    text = expand_size_literals(expression)
    try:
        program = _env().compile(text)
    except Exception as exc:  # the runtime raises RuntimeError with the checker's message
        shown = "" if text == expression else f" (with size literals expanded: {text})"
        detail = _clean_cel_error(str(exc))
        if "undeclared reference" in detail:
            detail += "\n(a disk has: " + ", ".join(f"disk.{n}" for n, _, _ in DISK_VARIABLES) + ")"
        raise SelectorError(f"{field_name}: invalid expression{shown}: {detail}") from None
    kind = program.return_type().name()
    if kind != "BOOL":
        raise SelectorError(f"{field_name}: the expression must be a boolean (true selects the disk), "
                            f"it is {kind.lower()}")
    cost, depth = estimate_cost(program.serialize())
    if depth > MAX_DEPTH:
        raise SelectorError(f"{field_name}: the expression is nested too deeply ({depth} > {MAX_DEPTH})")
    if cost > MAX_COST:
        raise SelectorError(f"{field_name}: the expression is too expensive (estimated cost {cost} > {MAX_COST}; "
                            "nest at most two comprehensions such as exists/all/map/filter)")
    return Selector(expression=expression, field=field_name, cost=cost, _program=program)


def compile_selector(expression: str, field_name: str = "match") -> Selector:
    """Compile and check ``expression``; :class:`SelectorError` naming ``field_name`` when it cannot be used."""
    return _compile_cached(expression, field_name)


def check_selector(expression: str, field_name: str = "match") -> str | None:
    """The error text for ``expression`` (None when it compiles): for validators and pre-flights."""
    try:
        compile_selector(expression, field_name)
    except SelectorError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------------- cost estimate
# The checked expression is a serialized google.protobuf.Any wrapping cel.expr.CheckedExpr; walk
# its Expr tree with a minimal protobuf wire reader (field numbers from cel/expr/syntax.proto).


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
            yield num, wire, val
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > len(buf):
                raise ValueError("truncated field")
            yield num, wire, buf[i:i + length]
            i += length
        elif wire == 1:
            i += 8
            yield num, wire, None
        elif wire == 5:
            i += 4
            yield num, wire, None
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _sub(buf: bytes, *path: int) -> list[bytes]:
    """Length-delimited fields ``path[0]`` of ``buf``, then ``path[1]`` of each, ..."""
    level = [buf]
    for num in path:
        level = [v for b in level for n, w, v in _fields(b) if n == num and w == 2]
    return level


def _expr_cost(expr: bytes, mult: int, depth: int) -> tuple[int, int]:
    cost, deepest = mult, depth
    if depth > MAX_DEPTH:
        return cost, depth

    def add(children: Sequence[bytes], m: int) -> None:
        nonlocal cost, deepest
        for child in children:
            c, d = _expr_cost(child, m, depth + 1)
            cost += c
            deepest = max(deepest, d)

    for num, wire, value in _fields(expr):
        if wire != 2:
            continue
        if num == 5:    # Select: operand
            add(_sub(value, 1), mult)
        elif num == 6:  # Call: target, args
            add(_sub(value, 1) + _sub(value, 3), mult)
        elif num == 7:  # CreateList: elements
            add(_sub(value, 1), mult)
        elif num == 8:  # CreateStruct: entries' map keys and values
            add(_sub(value, 2, 3) + _sub(value, 2, 4), mult)
        elif num == 9:  # Comprehension: range/init/result once, condition and step per iteration
            add(_sub(value, 2) + _sub(value, 4) + _sub(value, 7), mult)
            add(_sub(value, 5) + _sub(value, 6), mult * MAX_LIST)
    return cost, deepest


def estimate_cost(serialized: bytes) -> tuple[int, int]:
    """(worst-case cost, depth) of a serialized checked expression; unreadable → above the limit."""
    try:
        checked = next((v for n, w, v in _fields(serialized) if n == 2 and w == 2), None)
        exprs = _sub(checked, 4) if checked is not None else []
        if len(exprs) != 1:
            raise ValueError("no expression in the checked form")
        return _expr_cost(exprs[0], 1, 1)
    except (ValueError, IndexError):
        return MAX_COST + 1, 0


# ------------------------------------------------------------------------------- resolution

SELECTOR_MATCHED_NOTHING = "selector_matched_nothing"
SELECTOR_AMBIGUOUS = "selector_ambiguous"


@dataclass(frozen=True)
class Candidate:
    """A disk the selector may choose, with why it could not be used (None: it can)."""

    facts: DiskFacts
    unusable_code: str | None = None
    """Machine-readable reason (a BlockDevice reason code, e.g. Mounted), None when consumable."""
    unusable_reason: str | None = None
    taken_by: str | None = None
    """Another selector of the same object already chose or pinned this disk."""


@dataclass
class Resolution:
    """The outcome of one selector over a node's disks."""

    field: str
    chosen: Candidate | None = None
    code: str | None = None
    """None when exactly one usable disk matched; else selector_matched_nothing / selector_ambiguous."""
    lines: list[str] = dataclasses.field(default_factory=list)
    """One line per candidate: chosen, or why it is excluded."""

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    def message(self) -> str:
        head = (f"{self.field} selects {self.chosen.facts.path}" if self.chosen is not None else
                f"{self.code}: {self.field} " + ("matched no usable disk" if self.code == SELECTOR_MATCHED_NOTHING
                                                 else "matched more than one usable disk"))
        return head + ("; candidates: " + "; ".join(self.lines) if self.lines else "; the node has no disks")


def resolve_one(selector: Selector, candidates: Sequence[Candidate]) -> Resolution:
    """Exactly one usable candidate must match; every candidate is listed with why it is (not) chosen."""
    out = Resolution(field=selector.field)
    usable: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: c.facts.path):
        desc = cand.facts.describe()
        try:
            hit = selector.evaluate(cand.facts)
        except SelectorError as exc:
            out.lines.append(f"{desc}: evaluation failed: {str(exc).split(': ', 1)[-1]}")
            continue
        if not hit:
            out.lines.append(f"{desc}: does not match")
        elif cand.taken_by:
            out.lines.append(f"{desc}: matches, but is already {cand.taken_by}")
        elif cand.unusable_code or cand.unusable_reason:
            out.lines.append(f"{desc}: matches, but is not consumable: {cand.unusable_code or 'NotConsumable'} "
                             f"({cand.unusable_reason or 'no detail'})")
        else:
            usable.append(cand)
            out.lines.append(f"{desc}: matches and is consumable")
    if len(usable) == 1:
        out.chosen = usable[0]
        out.lines = [line.replace(": matches and is consumable", ": chosen") if line.startswith(
            usable[0].facts.describe() + ":") else line for line in out.lines]
    elif not usable:
        out.code = SELECTOR_MATCHED_NOTHING
    else:
        out.code = SELECTOR_AMBIGUOUS
    return out
