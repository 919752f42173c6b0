"""The disk-selector engine: type checking, size literals, the cost limit, evaluation and resolution."""

from __future__ import annotations

import pytest

from disklet.diskselect import (
    MAX_COST,
    MAX_EXPRESSION,
    SELECTOR_AMBIGUOUS,
    SELECTOR_MATCHED_NOTHING,
    Candidate,
    DiskFacts,
    SelectorError,
    compile_selector,
    expand_size_literals,
    human_size,
    resolve_one,
)

TI = 1024**4
NVME = DiskFacts(path="/dev/nvme1n1", size=2 * TI, model="SAMSUNG MZQL21T9HCJR-00A07", serial="S1",
                 transport="nvme", by_id=("nvme-eui.0025", "nvme-SAMSUNG_MZQL21T9HCJR-00A07_S1"))
HDD = DiskFacts(path="/dev/sda", size=8 * 1000**4, model="WDC WD80EFZZ", serial="W1", transport="sata",
                rotational=True, vendor="ATA")


@pytest.mark.parametrize(("text", "expanded"), [
    ("disk.size >= 1Ti", f"disk.size >= {TI}"),
    ("disk.size > 960G", "disk.size > 960000000000"),
    ("disk.size >= 1.5T", "disk.size >= 1500000000000"),
    ("disk.size < 512Mi && disk.size > 2k", f"disk.size < {512 * 1024**2} && disk.size > 2000"),
    ('disk.model == "1Ti" || disk.serial == \'2Gi\'', 'disk.model == "1Ti" || disk.serial == \'2Gi\''),
    ('disk.model == "a \\" 1Ti"', 'disk.model == "a \\" 1Ti"'),  # an escaped quote does not end the string
    ("0x1F > 2 && disk.size1G", "0x1F > 2 && disk.size1G"),
])
def test_size_literals_are_expanded_outside_strings_only(text, expanded):
    assert expand_size_literals(text) == expanded


@pytest.mark.parametrize(("expr", "want"), [
    ('disk.transport == "nvme" && !disk.rotational && disk.size >= 1Ti', True),
    ('disk.model.startsWith("SAMSUNG MZQL2")', True),
    ('disk.byId.exists(l, l.startsWith("nvme-eui."))', True),
    ("disk.size >= 3Ti", False),
    ('disk.vendor == ""', True),  # NVMe has no vendor: a missing fact reads as empty
    ('disk.model.lowerAscii().contains("samsung")', True),  # the strings extension
    ('disk.serial.matches("^S[0-9]+$")', True),
])
def test_evaluation(expr, want):
    assert compile_selector(expr).evaluate(NVME) is want


@pytest.mark.parametrize(("expr", "fragment"), [
    ("disk.sise >= 1Ti", "undeclared reference to 'disk.sise'"),
    ('disk.size >= "1Ti"', "no matching overload"),
    ("disk.size", "must be a boolean"),
    ("disk.size >= 1Ti ||", "Syntax error"),
    ("", "empty"),
    ("x" * (MAX_EXPRESSION + 1), "longer than"),
    ("disk.byId.exists(a, disk.byId.exists(b, disk.byId.exists(c, a == b && b == c)))", "too expensive"),
])
def test_bad_expressions_are_errors_naming_the_field(expr, fragment):
    with pytest.raises(SelectorError) as err:
        compile_selector(expr, "spec.diskLayout.disks[0].match")
    assert str(err.value).startswith("spec.diskLayout.disks[0].match: ")
    assert fragment in str(err.value)


def test_two_nested_comprehensions_fit_the_cost_limit():
    sel = compile_selector("disk.byId.exists(a, disk.byId.exists(b, a != b && a.startsWith(b)))")
    assert 0 < sel.cost <= MAX_COST
    assert sel.evaluate(NVME) is False


def test_an_evaluation_error_is_reported_not_a_match():
    sel = compile_selector('disk.byId[5] == "x"', "m")
    with pytest.raises(SelectorError, match="m: evaluating on /dev/nvme1n1"):
        sel.evaluate(NVME)
    res = resolve_one(sel, [Candidate(NVME)])
    assert res.code == SELECTOR_MATCHED_NOTHING and "evaluation failed" in res.lines[0]


def test_resolution_lists_every_candidate_with_its_reason():
    sel = compile_selector("disk.size >= 1Ti", "m")
    free = resolve_one(sel, [Candidate(NVME), Candidate(HDD, "Mounted", "mounted at /data")])
    assert free.chosen is not None and free.chosen.facts is NVME
    assert free.lines == [f"/dev/nvme1n1 (SAMSUNG MZQL21T9HCJR-00A07, serial S1, {human_size(2 * TI)}, nvme): chosen",
                          "/dev/sda (WDC WD80EFZZ, serial W1, 7.28Ti, sata): matches, but is not consumable: "
                          "Mounted (mounted at /data)"]
    both = resolve_one(sel, [Candidate(NVME), Candidate(HDD)])
    assert both.code == SELECTOR_AMBIGUOUS and both.chosen is None and "matched more than one" in both.message()
    taken = resolve_one(sel, [Candidate(NVME, taken_by="chosen by disk a"), Candidate(HDD)])
    assert taken.chosen is not None and taken.chosen.facts is HDD
    assert "matches, but is already chosen by disk a" in taken.lines[0]
