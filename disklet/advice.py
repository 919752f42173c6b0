"""What to do about each refusal code: the one source every message takes its advice from.

``kctl describe``, ``kctl diff``, the agent's and operator's Events and the "What to do" column of
docs/refusal-codes.md all print :data:`ADVICE`; the docs column is generated from it
(``python -m disklet.advice --write``; ``--check`` fails on drift, and so does
``tests/unit/test_advice.py``). Every :class:`~disklet.api.disklayout.RefusalCode` has an entry:
a new code without advice fails that test.

Pure: no I/O besides the ``__main__`` docs writer.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .api.disklayout import RefusalCode

DOCS_URL = "https://github.com/disklet/disklet/blob/main/docs"
"""Where the documentation lives for a user who installed the package (no docs/ beside them)."""
REFUSAL_CODES_URL = f"{DOCS_URL}/refusal-codes.md#codes"

C = RefusalCode
ADVICE: dict[str, str] = {
    C.LAYOUT_FORBIDDEN_OPTION: (
        "Remove the key: hooks and free-form arguments run as root on the node and are never allowed. "
        "Express the layout with the allowed types (docs/layouts.md, \"What a layout may contain\")."),
    C.LAYOUT_VALUE_NOT_ALLOWED: (
        "Use plain names (`[A-Za-z_][A-Za-z0-9_]*`), `/dev/disk/by-id/...` devices, the listed formats and "
        "simple mount options."),
    C.MOUNTPOINT_NOT_ALLOWED: (
        "Mount data under `/var/lib/kcore/...`, `/srv`, `/data` or `/mnt`; to allow another root set "
        "`DISKLET_MOUNT_ROOTS` (chart `layoutMountRoots`) on operator and agents. System paths cannot be allowed."),
    C.NOT_WHOLE_DISK: (
        "Name the whole disk, by `/dev/disk/by-id/...`. Loop devices only with `DISKLET_ALLOW_LOOP_TARGETS=1` in "
        "tests."),
    C.IDENTITY_CHANGED: (
        "Find where the applied disk went (`lsblk -o NAME,WWN,SERIAL,PTUUID`, `status.targetIdentities`) and name "
        "it by `/dev/disk/by-id/...`. If the disk was replaced on purpose, retire the old one "
        "(`allowDestructiveChanges`) and add the new one as a new, blank disk."),
    C.NOT_FOUND: (
        "Check the device path on the node (`disklet-agent disks`, `ls -l /dev/disk/by-id/`); fix `device` in the "
        "layout, or attach the disk."),
    C.DUPLICATE_TARGET: "Name each disk once, preferably by `/dev/disk/by-id/...`.",
    C.ACTIVE_SYSTEM_MOUNT: "You picked the OS disk. OS-disk repartitioning is out of scope; choose another disk.",
    C.ACTIVE_KCORE_VOLUME: (
        "Quiesce the workloads using it (stop VMs, evacuate volumes), unmount it."),
    C.ACTIVE_MOUNT: "Find the users (`findmnt`, `fuser -vm`), unmount.",
    C.ACTIVE_SWAP: "`swapoff` it and remove it from the swap configuration.",
    C.ACTIVE_LVM_PV: "Move the data off (`pvmove`), `vgreduce`, `pvremove`; or target another disk.",
    C.ACTIVE_ZPOOL_MEMBER: (
        "Remove it from its pool (`zpool detach/remove`) or export and `zpool labelclear` a pool you no longer "
        "need."),
    C.RAID_MEMBER: (
        "Stop the array (`mdadm --stop`) and `mdadm --zero-superblock` the member, if the array is truly unused."),
    C.OPEN_CRYPT_MAPPING: (
        "Unmount and `cryptsetup close` the mapping. A closed LUKS container is reported as not blank instead."),
    C.HAS_HOLDERS: "`dmsetup ls --tree` shows the stack; tear it down.",
    C.STATE_UNKNOWN: "Fix the cause shown (agent privileges, a hung device, a corrupt `current.nix`).",
    C.PARTITION_LABEL_COLLISION: (
        "Rename the disk or partition in the layout so its labels are unique on the node "
        "(`lsblk -o NAME,PARTLABEL`)."),
    C.VOLUME_GROUP_EXISTS: "Pick another VG name, or manage that VG with an LVMVolumeGroup instead.",
    C.ZPOOL_EXISTS: (
        "Pick another pool name, or export and `zpool labelclear` the old pool's devices if it is truly unused."),
    C.MOUNTPOINT_OVER_LIVE_MOUNT: "Choose a free mountpoint, or unmount what is there first.",
    C.MOUNTPOINT_RESOLVES_ELSEWHERE: (
        "Look at the path on the node (`namei -l PATH`): remove the symbolic link (and find who planted it: "
        "anything that can write under the allowed root, e.g. a pod with a hostPath volume), or point the "
        "mountpoint at a real directory inside the allowed root."),
    C.SELECTOR_MATCHED_NOTHING: (
        "Fix the expression (`kctl diff` shows the resolution per node from the BlockDevices), or free a disk. "
        "A disk plugged in later is found at the next retry."),
    C.SELECTOR_AMBIGUOUS: "Narrow the expression (serial, WWN, `disk.byId`), or give `device` instead.",
    C.SELECTED_DISK_MISSING: (
        "Bring the disk back; to use another disk, remove this one from the layout (`spec.allowDestructiveChanges`) "
        "and add it under a new name."),
    C.TARGET_BUSY: (
        "Find the user (`lsblk`, `findmnt`, `dmsetup ls --tree`, `fuser -v /dev/DISK`) and release it."),
    C.NOT_BLANK: "Check it holds nothing you need, then wipe it deliberately: `wipefs -a /dev/DISK`.",
    C.PARTITIONS_NOT_APPEND_ONLY: (
        "Keep the applied partitions unchanged and in order; append new ones at the end. To move a mountpoint on "
        "purpose, set `allowDestructiveChanges: true` for that change (the rebuild remounts it)."),
    C.APPLIED_DISK_REMOVED: (
        "Put the disk back, or retire it on purpose with `spec.allowDestructiveChanges: true` after moving its data "
        "off."),
    C.NO_TARGET_DEVICES: "Add `disko.devices.disk.<n>.device` entries.",
    C.LSBLK_PROBE_FAILED: "Check the agent pod (privileged, host `/dev` and `/sys`, `nsenter`).",
    C.DUPLICATE_NODE_LAYOUT: "One DiskLayout per node: merge the layouts or delete one.",
}

OPERATOR_CODES = frozenset({C.NO_TARGET_DEVICES, C.DUPLICATE_NODE_LAYOUT, C.LAYOUT_FORBIDDEN_OPTION,
                            C.LAYOUT_VALUE_NOT_ALLOWED, C.MOUNTPOINT_NOT_ALLOWED})
"""Codes the operator's pre-flight gives: they clear when the DiskLayout is changed."""
CLEARS_ON_CHANGE = "Clears when the DiskLayout is changed."
CLEARS_ON_RETRY = "The agent retries on its own (every `refused_retry_seconds`, default 30 s)."


def refusal_advice(code: str | None) -> str | None:
    """The code's own "what to do" (None for an unknown code)."""
    return ADVICE.get(str(code)) if code else None


def clears(code: str) -> str:
    """When the refusal goes away: on a changed DiskLayout (operator-side codes) or on the agent's retry."""
    return CLEARS_ON_CHANGE if code in OPERATOR_CODES else CLEARS_ON_RETRY


def docs_cell(code: str) -> str:
    """The "What to do" cell of docs/refusal-codes.md: the advice and when the refusal clears."""
    return f"{ADVICE[code]} {clears(code)}"


def next_step(code: str | None) -> str:
    """The line ``kctl describe``/``kctl diff`` and Events print for a refusal: advice, when it clears, where
    to read more (an absolute URL: a pip user has no docs/ directory)."""
    advice = refusal_advice(code)
    if advice is None:
        return (f"Unknown refusal code {code!r} (a newer agent?): see {REFUSAL_CODES_URL}. "
                "There is no --force: remove the cause on the node.")
    advice = advice.replace("docs/", DOCS_URL + "/")
    return f"{advice} {clears(str(code))} There is no --force ({REFUSAL_CODES_URL})."


def event_message(code: str, message: str, limit: int = 1024) -> str:
    """A refusal Event's message: ``CODE: message Next step: …`` within ``limit`` characters (an Event's
    message cap); the message is shortened, never the next step."""
    step = f" Next step: {next_step(code)}"
    head = f"{code}: {message}"
    if len(head) + len(step) > limit:
        head = head[: max(0, limit - len(step) - 3)] + "..."
    return (head + step)[:limit]


# ----------------------------------------------------------------------------- the docs column
ROW = re.compile(r"^\| `(?P<code>[a-z_]+)` \| (?P<meaning>.*) \| (?P<todo>.*) \|$")


def docs_rows(text: str) -> dict[str, str]:
    """code → "What to do" cell of the codes table in docs/refusal-codes.md."""
    return {m["code"]: m["todo"] for m in map(ROW.match, text.splitlines()) if m}


def render_docs(text: str) -> str:
    """docs/refusal-codes.md with every known code's "What to do" cell taken from :data:`ADVICE`."""
    out = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and m["code"] in ADVICE:
            line = f"| `{m['code']}` | {m['meaning']} | {docs_cell(m['code'])} |"
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main(argv: list[str]) -> int:
    path = Path(__file__).resolve().parents[1] / "docs" / "refusal-codes.md"
    text = path.read_text(encoding="utf-8")
    new = render_docs(text)
    missing = sorted(set(ADVICE) - set(docs_rows(new)))
    if "--write" in argv:
        path.write_text(new, encoding="utf-8")
    elif new != text:
        sys.stderr.write(f"{path}: the \"What to do\" column differs from disklet/advice.py: "
                         "run `python -m disklet.advice --write`\n")
        return 1
    if missing:
        sys.stderr.write(f"{path}: no row for {', '.join(missing)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
