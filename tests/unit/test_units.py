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
