"""One source of refusal advice: every code has its own "what to do", docs/refusal-codes.md's column is
generated from it, and kctl describe prints the code's own advice (not one text for every refusal)."""

from __future__ import annotations

from pathlib import Path

from disklet import advice
from disklet.api.disklayout import RefusalCode
from disklet.cli import views

DOCS = Path(__file__).resolve().parents[2] / "docs" / "refusal-codes.md"


def test_every_refusal_code_has_advice_and_a_docs_row():
    assert set(advice.ADVICE) == {c.value for c in RefusalCode}
    rows = advice.docs_rows(DOCS.read_text(encoding="utf-8"))
    assert set(rows) == {c.value for c in RefusalCode}, "every code has a row in docs/refusal-codes.md"


def test_the_docs_column_is_generated_from_the_advice():
    rows = advice.docs_rows(DOCS.read_text(encoding="utf-8"))
    drift = {code: cell for code, cell in rows.items() if cell != advice.docs_cell(code)}
    assert not drift, "run `python -m disklet.advice --write` (docs/refusal-codes.md differs from disklet/advice.py)"
    assert advice.main(["--check"]) == 0


def test_the_docs_writer_replaces_only_the_advice_column():
    text = "| `no_target_devices` | The layout names nothing. | old advice |\n| other | x | y |\n"
    out = advice.render_docs(text)
    assert out == (f"| `no_target_devices` | The layout names nothing. | {advice.docs_cell('no_target_devices')} |\n"
                   "| other | x | y |\n")


def _refused(code: str) -> dict:
    return {"metadata": {"name": "dl", "generation": 1}, "spec": {"nodeName": "n1", "layoutNix": "{}"},
            "status": {"phase": "refused", "refusalReason": code, "message": "m"}}


def test_describe_prints_the_codes_own_next_step():
    pages = {code: views.describe_disk_layout(_refused(code), []) for code in
             ("mountpoint_not_allowed", "another_disk_layout_for_node", "target_device_not_found",
              "target_device_is_active_lvm_pv")}
    steps = {code: next(line for line in page.splitlines() if "Next step:" in line) for code, page in pages.items()}
    assert len(set(steps.values())) == len(steps), "each code gets its own advice"
    assert "DISKLET_MOUNT_ROOTS" in steps["mountpoint_not_allowed"]
    assert "Clears when the DiskLayout is changed" in steps["mountpoint_not_allowed"]
    assert "Quiesce" not in steps["mountpoint_not_allowed"]
    assert "merge the layouts or delete one" in steps["another_disk_layout_for_node"]
    assert "fix `device` in the layout" in steps["target_device_not_found"]
    assert "The agent retries on its own" in steps["target_device_not_found"]
    assert "`pvmove`" in steps["target_device_is_active_lvm_pv"]
    for step in steps.values():
        assert "https://" in step and "docs/refusal-codes.md for this code" not in step


def test_an_unknown_code_still_gets_a_pointer():
    assert "Unknown refusal code 'brand_new'" in advice.next_step("brand_new")


def test_a_refusal_events_message_keeps_its_next_step_within_the_cap():
    short = advice.event_message("target_device_not_found", "/dev/sdx: no such device")
    assert short == ("target_device_not_found: /dev/sdx: no such device Next step: "
                     + advice.next_step("target_device_not_found"))
    long = advice.event_message("target_device_not_blank", "x" * 5000, limit=1024)
    assert len(long) == 1024 and long.endswith(advice.next_step("target_device_not_blank"))
    assert long.startswith("target_device_not_blank: xxx") and "...  Next step:" not in long
