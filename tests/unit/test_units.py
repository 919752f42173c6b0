from decimal import Decimal

import pytest

from disklet.units import (
    GIB,
    QuantityError,
    align_down,
    align_up,
    bytes_to_quantity,
    decimal_unit_hint,
    parse_quantity,
    quantity_bytes,
)


@pytest.mark.parametrize("text,expected", [
    ("1Gi", GIB), ("1024Mi", GIB), ("1073741824", GIB), ("1G", 10**9), ("1.5Gi", 3 * GIB // 2),
    ("1e3", 1000), ("500m", Decimal("0.5")), ("2Ti", 2 * 1024**4), ("+1Ki", 1024),
])
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "1g", "1GB", "Gi", "1 Gi", "1.2.3", "--1", "1Gi ", "abc"])
def test_parse_quantity_rejects(bad):
    with pytest.raises(QuantityError):
        parse_quantity(bad)


def test_1g_is_below_1gi_and_1024mi_equals_1gi():
    assert quantity_bytes("1G") < quantity_bytes("1Gi")
    assert quantity_bytes("1024Mi") == quantity_bytes("1Gi")


def test_fractional_bytes_rejected():
    with pytest.raises(QuantityError):
        quantity_bytes("500m")


def test_hint_and_formatting():
    assert "1Gi" in decimal_unit_hint("1G")
    assert decimal_unit_hint("1Gi") == ""
    assert bytes_to_quantity(GIB) == "1Gi"
    assert bytes_to_quantity(1069547520) == "1020Mi"
    assert bytes_to_quantity(1000) == "1000"
    assert align_down(4 * 1024**2 + 5, 4 * 1024**2) == 4 * 1024**2
    assert align_up(4 * 1024**2 + 5, 4 * 1024**2) == 8 * 1024**2


def test_node_label_value_is_valid_and_stable_for_long_names():
    from disklet.labels import node_label_value

    short = "node-1.example.com"
    assert node_label_value(short) == short
    long = ("n" * 60) + ".rack-12.dc-3.example.com"
    v = node_label_value(long)
    assert len(v) <= 63 and v[0].isalnum() and v[-1].isalnum()
    assert v == node_label_value(long)
    assert v != node_label_value(long.replace("rack-12", "rack-13"))


# -- bounds: every input is a number or a QuantityError that says why ------------------------------

@pytest.mark.parametrize("text", ["1e1000000", "1E999999999", "-1e1000000", "9e64", "1e65"])
def test_huge_exponents_are_a_quantity_error_not_a_decimal_overflow(text):
    with pytest.raises(QuantityError, match="(above the maximum|below the minimum) of -?1Ei"):
        parse_quantity(text)


def test_tiny_exponents_and_long_strings_are_quantity_errors():
    with pytest.raises(QuantityError, match="exponent below -64"):
        parse_quantity("1e-1000000")
    with pytest.raises(QuantityError, match="longer than 64 characters"):
        parse_quantity("1" * 65)
    assert parse_quantity("0e99999999") == 0  # zero times anything stays zero, exactly


@pytest.mark.parametrize("text", ["1025Pi", "99999999999999999999999999Pi", "2Ei", "1152921504606846977",
                                  "1.2e18", "1180591620717411303424"])
def test_sizes_above_one_exbibyte_are_refused_not_rounded(text):
    with pytest.raises(QuantityError, match="above the maximum of 1Ei"):
        quantity_bytes(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("1Ei", 2**60), ("1024Pi", 2**60), ("1152921504606846975", 2**60 - 1),
    ("1125899906842623Ki", (2**50 - 1) * 1024), ("1.152921504606846976e18", 2**60),
    ("123456789012345678", 123456789012345678),
])
def test_large_sizes_within_the_bound_are_exact(text, expected):
    assert quantity_bytes(text) == expected


def test_apiserver_semantics_cap_at_int64_instead_of_refusing():
    # The admission emulator mirrors kube-apiserver, which caps quantities at the largest int64.
    assert parse_quantity("1e1000000", maximum=None) == 2**63 - 1
    assert parse_quantity("99999999999999999999999999Pi", maximum=None) == 2**63 - 1
    assert parse_quantity("-9e70", maximum=None) == -(2**63 - 1)
    assert parse_quantity("2Ei", maximum=None) == 2 * 2**60
