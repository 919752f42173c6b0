"""Hypothesis strategies for disklet's custom objects, valid and hostile (test support, never shipped).

Each field is drawn from a mix of values that are valid, values that sit on a boundary (1Gi, 1Ei,
63/64 characters, 100%) and values an attacker or a careless user would write (``1G``, ``../``,
control characters, huge numbers, wrong types). Objects are wire dicts (camelCase), as a user
writes them and as the API server stores them; the tests feed them to the pydantic models, the
offline admission emulator (devkit/admission.py) and the pure handler logic.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from disklet.api.common import DNS_LABEL, DNS_SUBDOMAIN
from disklet.api.lvm import FILE_SIZE_PATTERN, LVM_NAME_PATTERN

BASE = "/var/lib/disklet/file-devices"

_ODD_STRINGS = ["", " ", "-x", "x-", "A", "a_b", "a.b", "a/b", "..", ".", "a\nb", "a\x00b", "ä", "-ffy",
                "x" * 64, "y" * 254, "ok"]


def _regex(pattern: str, max_size: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: 0 < len(s) <= max_size)


def odd_value() -> st.SearchStrategy[Any]:
    """A value of the wrong type."""
    return st.one_of(st.integers(-2, 2**70), st.booleans(), st.none(), st.just([]), st.just({}), st.floats(0, 10))


dns_labels = st.one_of(_regex(DNS_LABEL, 63), st.sampled_from(_ODD_STRINGS))
node_names = st.one_of(st.sampled_from(["node-a", "n1", "a" * 63, "a" * 64, "a" * 254, "a.b.c", "Node", "-n", "n_1", ""]),
                       _regex(DNS_SUBDOMAIN, 80))
vg_names = st.one_of(_regex(LVM_NAME_PATTERN, 130), st.sampled_from(["vg_data", "-vg", "vg data", "a" * 127, "a" * 128]))
file_sizes = st.one_of(
    _regex(FILE_SIZE_PATTERN, 34),
    st.sampled_from(["1Gi", "1024Mi", "1023Mi", "1Pi", "1024Pi", "1025Pi", "99999999999999999999999999Pi",
                     "1G", "0Gi", "1.5Gi", "1e3", "", "-1Gi", "1Ei", "1gi"]),
)
thin_sizes = st.one_of(
    st.sampled_from(["10Gi", "1", "0", "0.5", "1.5Gi", "50%", "100%", "101%", "0%", "1%", "99999999999999999999999999",
                     "9999999999999999999Pi", "1Ei", "2Ei", "1e3", "10G", "00", "0.0", "0Gi", "1.Gi", ""]),
    st.from_regex(r"^[0-9]{1,30}(\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$", fullmatch=True),
)
directories = st.one_of(
    st.sampled_from([BASE, BASE + "/sub", BASE + "/", "relative/dir", "/a/../b", "/a/./b", "/", "//", BASE + "/..",
                     BASE + "/a\nb", BASE + "/a\tb", "/x" * 2100, BASE + "/.hidden", BASE + "/a b"]),
    st.builds(lambda tail: BASE + "/" + tail, st.text(min_size=1, max_size=20)),
)
allocation_limits = st.sampled_from(["150%", "100%", "1%", "9999%", "10000%", "0%", "150", "", "-1%"])


@st.composite
def label_selectors(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(odd_value())
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["matchLabels"] = draw(st.dictionaries(st.sampled_from(["disklet.io/type", "a", "x" * 70, ""]),
                                                  st.sampled_from(["disk", "", "x" * 64, "nvme"]), max_size=3))
    if draw(st.booleans()):
        out["matchExpressions"] = draw(st.lists(st.fixed_dictionaries(
            {"key": st.sampled_from(["disklet.io/type", "k", ""]),
             "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", ""])},
            optional={"values": st.lists(st.sampled_from(["a", "b", "", "x" * 64]), max_size=3)}), max_size=3))
    return out


@st.composite
def file_devices(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 14)) == 0:
        return draw(odd_value())
    fd: dict[str, Any] = {"name": draw(dns_labels), "directory": draw(directories), "size": draw(file_sizes)}
    if draw(st.integers(0, 9)) == 0:
        del fd[draw(st.sampled_from(sorted(fd)))]
    if draw(st.integers(0, 14)) == 0:
        fd["extra"] = "x"
    return fd


@st.composite
def thin_pools(draw: st.DrawFn) -> Any:
    tp: dict[str, Any] = {"name": draw(vg_names), "size": draw(thin_sizes)}
    if draw(st.booleans()):
        tp["allocationLimit"] = draw(allocation_limits)
    return tp


@st.composite
def _template_fields(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"actualVGNameOnTheNode": draw(vg_names)}
    if draw(st.integers(0, 4)) == 0:
        spec["type"] = draw(st.sampled_from(["Local", "Shared", ""]))
    if draw(st.integers(0, 2)) == 0:
        spec["blockDeviceSelector"] = draw(label_selectors())
    if draw(st.integers(0, 5)) > 0:
        spec["fileDevices"] = draw(st.lists(file_devices(), max_size=4))
    if draw(st.booleans()):
        spec["thinPools"] = draw(st.lists(thin_pools(), max_size=3))
    if draw(st.integers(0, 19)) == 0:
        del spec["actualVGNameOnTheNode"]
    return spec


@st.composite
def lvg_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(_template_fields())
    if draw(st.integers(0, 9)) > 0:
        spec["local"] = {"nodeName": draw(node_names)}
    return spec


@st.composite
def lvg_objects(draw: st.DrawFn) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": draw(st.sampled_from(["vg-a", "data", "x" * 40]))}, "spec": draw(lvg_specs())}


@st.composite
def lvgset_objects(draw: st.DrawFn) -> dict[str, Any]:
    template = draw(_template_fields())
    if draw(st.booleans()):
        template["metadata"] = {"labels": draw(st.dictionaries(st.sampled_from(["team", "a/b"]),
                                                               st.sampled_from(["x", ""]), max_size=2))}
    spec: dict[str, Any] = {"nodeSelector": draw(label_selectors()), "lvmVolumeGroupTemplate": template}
    if draw(st.integers(0, 4)) == 0:
        spec["strategy"] = draw(st.sampled_from(["PerNode", "All"]))
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet",
            "metadata": {"name": draw(st.sampled_from(["fleet", "f" * 40]))}, "spec": spec}


@st.composite
def block_device_statuses(draw: st.DrawFn) -> dict[str, Any]:
    status: dict[str, Any] = {
        "nodeName": draw(node_names),
        "path": draw(st.sampled_from(["/dev/sdb", "/dev/nvme0n1p1", "-ffy", "/dev/../etc/passwd", "sdb", "",
                                      "/dev/sd b", "/dev/loop7"])),
        "size": draw(st.sampled_from(["10Gi", "1073741824", "1G", "", "1e1000000", "-1"])),
        "type": draw(st.sampled_from(["disk", "part", "rom", "lvm", ""])),
    }
    for key, values in (("consumable", [True, False, "yes"]), ("fsType", ["ext4", None, ""]),
                        ("pvUUID", ["abc", None]), ("rota", [True, 1]), ("serial", ["S1", None])):
        if draw(st.booleans()):
            status[key] = draw(st.sampled_from(values))
    if draw(st.integers(0, 9)) == 0:
        del status[draw(st.sampled_from(["nodeName", "path", "size", "type"]))]
    return status


@st.composite
def block_device_objects(draw: st.DrawFn, node: str | None = None) -> dict[str, Any]:
    status = draw(block_device_statuses())
    labels = draw(st.dictionaries(st.sampled_from(["disklet.io/node", "kubernetes.io/hostname", "disklet.io/type"]),
                                  st.sampled_from(["node-a", "node-b", node or "node-a", ""]), max_size=3))
    obj: dict[str, Any] = {"apiVersion": "disklet.io/v1alpha1", "kind": "BlockDevice",
                           "metadata": {"name": draw(st.sampled_from([f"dev-{i}" for i in range(8)])), "labels": labels}}
    if draw(st.integers(0, 9)) > 0:
        obj["status"] = status
    return obj
