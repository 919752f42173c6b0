"""Kubernetes quantities and byte sizes.

A strict implementation of the Kubernetes quantity grammar (``1Gi``, ``1G``, ``1073741824``,
``1.5Gi``, ``1e3``) so that sizes are compared as numbers, never as strings: ``1024Mi`` equals
``1Gi``; ``1G`` (10^9) is smaller than ``1Gi`` (2^30). kubernetes-asyncio ships no parser.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
PIB = 1024**5

_BINARY = {"Ki": KIB, "Mi": MIB, "Gi": GIB, "Ti": TIB, "Pi": PIB, "Ei": 1024**6}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
}
_QUANTITY_RE = re.compile(
    r"^(?P<sign>[+-])?(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
# Whole binary units only: the format of fileDevices[].size (docs/design/lvm.md).
WHOLE_BINARY_SIZE_RE = re.compile(r"^[1-9][0-9]*(Mi|Gi|Ti|Pi)$")
PERCENT_RE = re.compile(r"^([1-9][0-9]?|100)%$")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: str | int) -> Decimal:
    """Parse a Kubernetes quantity into an exact Decimal (bytes, for sizes)."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    text = str(value)
    m = _QUANTITY_RE.match(text)
    if not m:
        raise QuantityError(f"not a Kubernetes quantity: {value!r} (examples: 10Gi, 512Mi, 1073741824)")
    try:
        number = Decimal(m.group("num"))
    except InvalidOperation as exc:  # pragma: no cover - regex guarantees digits
        raise QuantityError(f"not a Kubernetes quantity: {value!r}") from exc
    suffix = m.group("suffix") or ""
    if suffix in _BINARY:
        number *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        number *= _DECIMAL[suffix]
    else:  # exponent form
        number *= Decimal(10) ** int(suffix[1:])
    return -number if m.group("sign") == "-" else number


def quantity_bytes(value: str | int) -> int:
    """A quantity as whole bytes; fractional bytes are an error (a disk has none)."""
    number = parse_quantity(value)
    if number != number.to_integral_value():
        raise QuantityError(f"{value!r} is not a whole number of bytes")
    return int(number)


def is_quantity(value: str | int) -> bool:
    try:
        parse_quantity(value)
    except QuantityError:
        return False
    return True


def decimal_unit_hint(value: str) -> str:
    """A hint for the classic mistake of writing ``1G`` (10^9 bytes) where ``1Gi`` was meant."""
    m = re.match(r"^([0-9]+)([KMGTP])B?$", value.strip())
    if not m:
        return ""
    return (f" ({value} is decimal: {m.group(1)}×10^{'KMGTP'.index(m.group(2)) * 3 + 3} bytes;"
            f" did you mean {m.group(1)}{m.group(2)}i?)")


def format_bytes(n: int) -> str:
    """Bytes as the largest exact binary unit, else a short approximate one (for tables)."""
    for unit, size in (("Pi", PIB), ("Ti", TIB), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    for unit, size in (("Pi", PIB), ("Ti", TIB), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def align_down(n: int, unit: int) -> int:
    return (n // unit) * unit


def align_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def bytes_to_quantity(n: int) -> str:
    """Exact quantity string for a byte count: the largest binary unit that divides it."""
    for unit, size in (("Pi", PIB), ("Ti", TIB), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
