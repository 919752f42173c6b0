"""The two size grammars of docs/kctl.md#sizes, and nothing else: LVM sizes (fileDevices, thin pools)
are binary Kubernetes quantities and refuse decimal letters; DiskLayout sizes are disko's, whose
letters are already binary, and refuse Kubernetes units. Each wrong form gets the right spelling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.api.lvm import FileDevice, ThinPool
from disklet.layout import extract as extract_module
from disklet.layout import preflight

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "nix_available", lambda: False)


@pytest.mark.parametrize("size,hint", [("1G", "did you mean 1Gi?"), ("500M", "did you mean 500Mi?"),
                                       ("2TB", "did you mean 2Ti?")])
def test_thin_pool_refuses_decimal_sizes_with_the_binary_spelling(size: str, hint: str) -> None:
    with pytest.raises(ValidationError) as err:
        ThinPool(name="tp", size=size)
    assert hint in str(err.value) and "10^" in str(err.value)


@pytest.mark.parametrize("size", ["1Gi", "1536Mi", "1073741824", "1Ei", "50%"])
def test_thin_pool_keeps_binary_bytes_and_percentages(size: str) -> None:
    assert ThinPool(name="tp", size=size).size == size


def test_file_devices_refuse_decimal_sizes_with_the_binary_spelling() -> None:
    with pytest.raises(ValidationError, match="did you mean 1Gi"):
        FileDevice(name="a", directory="/var/lib/disklet/file-devices", size="1G")


def structured(size: str) -> dict:
    return {"nodeName": "n", "diskLayout": {"disks": [{"name": "d", "device": "/dev/vdb", "gpt": {"partitions": [
        {"name": "a", "size": size, "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/a"}},
        {"name": "b", "size": "100%", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/b"}},
    ]}}]}}


@pytest.mark.parametrize("size,fix", [("1Gi", "write 1G"), ("512Mi", "write 512M"), ("2TiB", "write 2T")])
def test_disklayout_refuses_kubernetes_units_with_the_disko_spelling(size: str, fix: str) -> None:
    with pytest.raises(ValidationError) as err:
        DiskLayoutSpec.model_validate(structured(size))
    assert fix in str(err.value) and "already binary (1G = 1 GiB)" in str(err.value)


def test_disklayout_1G_is_one_gibibyte_for_disko() -> None:
    spec = DiskLayoutSpec.model_validate(structured("1G"))
    assert spec.disk_layout is not None and spec.disk_layout.disks[0].gpt.partitions[0].size == "1G"


def test_raw_disko_body_with_a_kubernetes_unit_says_write_1G() -> None:
    body = ('{ disko.devices = { disk.d = { type = "disk"; device = "/dev/vdb"; content = { type = "gpt"; '
            'partitions.p = { size = "1Gi"; content = { type = "filesystem"; format = "ext4"; '
            'mountpoint = "/srv/data"; }; }; }; }; }; }')
    result = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": body}))
    assert result.phase == Phase.REFUSED, result
    assert "write 1G" in result.message, result.message
