"""Kubernetes quantities and byte sizes.

A strict implementation of the Kubernetes quantity grammar (``1Gi``, ``1G``, ``1073741824``,
``1.5Gi``, ``1e3``) so that sizes are compared as numbers, never as strings: ``1024Mi`` equals
``1Gi``; ``1G`` (10^9) is smaller than ``1Gi`` (2^30). kubernetes-asyncio ships no parser.

Parsing is bounded and exact: at most 64 characters, an exponent of at most ±64, a magnitude of at
most ``MAX_QUANTITY`` (1Ei — no disk, VG or file device comes near) unless the caller lifts it, and
arithmetic in a private decimal context that raises rather than rounds. Any input yields a number
or a ``QuantityError`` that says why; never ``decimal.Overflow`` or a silently rounded size.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Underflow, localcontext

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
EIB = 1024**6
# The largest size disklet accepts anywhere (1Ei).
MAX_QUANTITY = EIB
# kube-apiserver caps every quantity at the largest int64 (it does not reject bigger ones).
KUBERNETES_MAX_QUANTITY = 2**63 - 1
MAX_QUANTITY_TEXT = 64
MAX_EXPONENT = 64
# Enough digits for any 64-character mantissa times 2^60, so that exact arithmetic never rounds.
_EXACT = Context(prec=200, Emax=10_000, Emin=-10_000, traps=[InvalidOperation, Overflow, Underflow, Inexact])

# Whole binary units only: the format of fileDevices[].size (docs/design/lvm.md).
WHOLE_BINARY_SIZE_RE = re.compile(r"^[1-9][0-9]*(Mi|Gi|Ti|Pi)$")
PERCENT_RE = re.compile(r"^([1-9][0-9]?|100)%$")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: str | int, *, maximum: int | None = MAX_QUANTITY) -> Decimal:
    """Parse a Kubernetes quantity into an exact Decimal (bytes, for sizes).

    ``maximum`` bounds the magnitude (a ``QuantityError`` above it); ``None`` applies
    kube-apiserver's own rule instead: values above the largest int64 are capped to it.
    """
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return _bounded(Decimal(value), value, maximum)
    text = str(value)
    if len(text) > MAX_QUANTITY_TEXT:
        raise QuantityError(f"not a Kubernetes quantity: {text[:24]!r}... is longer than {MAX_QUANTITY_TEXT} characters")
    m = _QUANTITY_RE.fullmatch(text)
    if not m:
        raise QuantityError(f"not a Kubernetes quantity: {value!r} (examples: 10Gi, 512Mi, 1073741824)")
    suffix = m.group("suffix") or ""
    try:
        with localcontext(_EXACT):
            number = Decimal(m.group("num"))
            if suffix in _BINARY:
                number *= _BINARY[suffix]
            elif suffix in _DECIMAL:
                number *= _DECIMAL[suffix]
            else:  # exponent form
                exponent = int(suffix[1:])
                if number and abs(exponent) > MAX_EXPONENT:
                    if exponent < 0:
                        raise QuantityError(f"quantity {value!r} has an exponent below -{MAX_EXPONENT}")
                    return _bounded(None, value, maximum, negative=m.group("sign") == "-")
                number = number.scaleb(exponent) if number else Decimal(0)
    except (ArithmeticError, ValueError) as exc:  # pragma: no cover - bounds above keep it exact
        if isinstance(exc, QuantityError):
            raise
        raise QuantityError(f"quantity {value!r} cannot be represented exactly") from exc
    return _bounded(-number if m.group("sign") == "-" else number, value, maximum)


def _bounded(number: Decimal | None, value: object, maximum: int | None, *, negative: bool = False) -> Decimal:
    """``number`` within the bound; ``None`` stands for "beyond any bound" (a huge exponent)."""
    if number is not None:
        negative = number < 0
    if maximum is None:
        if number is None or abs(number) > KUBERNETES_MAX_QUANTITY:
            return Decimal(-KUBERNETES_MAX_QUANTITY if negative else KUBERNETES_MAX_QUANTITY)
        return number
    if number is None or abs(number) > maximum:
        shown = value if len(str(value)) <= 40 else f"{str(value)[:24]}..."
        raise QuantityError(f"quantity {shown!r} is {'below the minimum of -' if negative else 'above the maximum of '}"
                            f"{bytes_to_quantity(maximum)}")
    return number


def quantity_bytes(value: str | int, *, maximum: int | None = MAX_QUANTITY) -> int:
    """A quantity as whole bytes; fractional bytes are an error (a disk has none)."""
    number = parse_quantity(value, maximum=maximum)
    if number != number.to_integral_value():
        raise QuantityError(f"{value!r} is not a whole number of bytes")
    return int(number)


def is_quantity(value: str | int, *, maximum: int | None = MAX_QUANTITY) -> bool:
    try:
        parse_quantity(value, maximum=maximum)
    except QuantityError:
        return False
    return True


def decimal_unit_hint(value: str) -> str:
    """A hint for the classic mistake of writing ``1G`` (10^9 bytes) where ``1Gi`` was meant."""
    m = re.fullmatch(r"^([0-9]+)([KMGTP])B?$", value.strip())
    if not m:
        return ""
    return (f" ({value} is decimal: {m.group(1)}×10^{'KMGTP'.index(m.group(2)) * 3 + 3} bytes;"
            f" did you mean {m.group(1)}{m.group(2)}i?)")


def disko_unit_hint(value: str) -> str:
    """A hint for writing a Kubernetes binary unit (``1Gi``) where disko's own letters are expected:
    disko's ``1G`` already means 1 GiB."""
    m = re.fullmatch(r"^([0-9]+)([KMGTP])i(B)?$", value.strip())
    if not m:
        return ""
    return (f" ({value} is a Kubernetes unit: DiskLayout sizes are disko's, whose letters are already binary"
            f" (1G = 1 GiB); write {m.group(1)}{m.group(2)})")


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
    for unit, size in (("Ei", EIB), ("Pi", PIB), ("Ti", TIB), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
