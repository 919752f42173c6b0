"""One boot of the test VM: qemu with the declared disks, a job in, results out, nothing left behind.

:func:`boot` attaches, in this order: the root image (``snapshot=on``: writes go to a qemu temp
file, the cached image is never changed), the project image (read-only), a job disk and a results
disk (raw tar streams, virtio serials ``disklet-job``/``disklet-results``), a state disk (ext4,
mounted at ``/var/lib/disklet-vm-state``, kept across the boots of a group), then the declared
disks — NVMe each on its own controller, SCSI on one ``virtio-scsi-pci`` bus, SATA on one AHCI
controller. Disk images are sparse files in the caller's directory, created on first use and kept
for later boots of the same group (a disk that comes back under another controller). The guest has
no network (``-nic none``). qemu runs in its own process group and is killed with it on timeout.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.vm import Boot, Disk, kernel_version
from devkit.vm.guestreport import MARK
from devkit.vm.image import project_image, root_image

BOOT_TIMEOUT = float(os.environ.get("DISKLET_VM_TIMEOUT") or 2400)
"""Seconds one boot may take (software emulation on a loaded 2-core machine is slow)."""
RESULTS_SIZE = 64 << 20
STATE_SIZE = 64 << 20
STATE_DIR = "/var/lib/disklet-vm-state"
"""Where the guest mounts the group's state disk (ext4, kept across the boots of one group)."""


@dataclass
class Outcome:
    exit_code: int | None
    """The job's exit status (None: the guest never wrote results)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """What the job left in /run/results (plus ``exit``, ``uptime``, ``dmesg.txt``)."""
    console: str = ""
    seconds: float = 0.0
    guest_seconds: float | None = None

    def text(self, name: str) -> str:
        return self.files.get(name, b"").decode("utf-8", "replace")


def disk_args(disks: Sequence[Disk], images: Path) -> list[str]:
    """qemu arguments for ``disks``; each image file ``images/<image>.img`` is made (sparse) if missing."""
    argv: list[str] = []
    scsi = sata = False
    seen_ids: dict[str, int] = {}
    for n, disk in enumerate(disks):
        path = images / f"{disk.image}.img"
        if not path.exists():
            with open(path, "wb") as f:
                f.truncate(disk.size_bytes)
        elif path.stat().st_size != disk.size_bytes:
            raise ValueError(f"disk image {disk.image} is {path.stat().st_size} bytes, declared {disk.size_bytes}")
        drive = f"d{n}"
        seen_ids[disk.image] = seen_ids.get(disk.image, 0) + 1
        # Two paths to one image: qemu must not take its write lock twice.
        lock = ",file.locking=off" if sum(1 for d in disks if d.image == disk.image) > 1 else ""
        argv += ["-drive", f"file={path},if=none,id={drive},format=raw,cache=unsafe{lock}"]
        rot = "7200" if disk.rotational else "1"
        if disk.kind == "nvme":
            argv += ["-device", f"nvme,drive={drive},serial={disk.serial}"]
        elif disk.kind == "virtio":
            argv += ["-device", f"virtio-blk-pci,drive={drive},serial={disk.serial}"]
        elif disk.kind == "scsi":
            if not scsi:
                argv += ["-device", "virtio-scsi-pci,id=scsi0"]
                scsi = True
            wwn = f",wwn={disk.wwn}" if disk.wwn else ""
            argv += ["-device", f"scsi-hd,drive={drive},bus=scsi0.0,serial={disk.serial}{wwn},rotation_rate={rot}"]
        else:
            if not sata:
                argv += ["-device", "ahci,id=ahci0"]
                sata = True
            ports = sum(1 for d in disks[:n] if d.kind == "sata")
            model = f",model={disk.model}" if disk.model else ""
            argv += ["-device", f"ide-hd,drive={drive},bus=ahci0.{ports},serial={disk.serial}{model},rotation_rate={rot}"]
    return argv


def _die_with_parent() -> None:
    """qemu gets SIGKILL when the test process dies, however it dies (no VM outlives its run)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _job_tar(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def console_results(console: str) -> dict[str, object]:
    """The per-test results the guest printed as they finished (devkit.vm.guestreport)."""
    out: dict[str, object] = {}
    for line in console.splitlines():
        at = line.find(MARK)
        if at < 0:
            continue
        try:
            out.update(json.loads(base64.b64decode(line[at + len(MARK):].strip())))
        except (ValueError, binascii.Error):
            continue
    return out


def _read_results(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        out[member.name.removeprefix("./")] = f.read()
    except tarfile.ReadError:
        return {}
    return out


def boot(spec: Boot, workdir: Path, job: dict[str, str | bytes], *, timeout: float = BOOT_TIMEOUT,
         log: Path | None = None) -> Outcome:
    """Boot once with ``spec``'s disks (images under ``workdir``), run ``job["job.sh"]`` as the workload.

    ``job`` maps file names to contents; the guest unpacks them into /run/job and runs job.sh;
    whatever it leaves in /run/results comes back in :attr:`Outcome.files`.
    """
    kver = kernel_version()
    if kver is None:
        raise RuntimeError("vm: no kernel in /boot")
    root, initrd = root_image(log)
    project = project_image(log)
    workdir.mkdir(parents=True, exist_ok=True)
    job_img = workdir / "job.img"
    results_img = workdir / "results.img"
    data = _job_tar(job)
    job_img.write_bytes(data + b"\0" * (-len(data) % 512 + 1024))
    with open(results_img, "wb") as f:
        f.truncate(0)
        f.truncate(RESULTS_SIZE)
    state_img = workdir / "state.img"
    if not state_img.exists():  # kept across the boots of a group: what one boot leaves for the next
        with open(state_img, "wb") as f:
            f.truncate(STATE_SIZE)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "disklet-state", "--", str(state_img)],  # noqa: S603
                       check=True, capture_output=True, timeout=120)
    argv = ["qemu-system-x86_64", "-cpu", "max", "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
            "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", f"/boot/vmlinuz-{kver}", "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=3 disklet.vm=1",
            "-drive", f"file={root},if=none,id=root,format=raw,snapshot=on",
            "-device", "virtio-blk-pci,drive=root,serial=disklet-root",
            "-drive", f"file={project},if=none,id=proj,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=proj,serial=disklet-project",
            "-drive", f"file={job_img},if=none,id=job,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=job,serial=disklet-job",
            "-drive", f"file={results_img},if=none,id=res,format=raw",
            "-device", "virtio-blk-pci,drive=res,serial=disklet-results",
            "-drive", f"file={state_img},if=none,id=state,format=raw",
            "-device", "virtio-blk-pci,drive=state,serial=disklet-state",
            *disk_args(spec.disks, workdir)]
    console = workdir / "console.log"
    started = time.monotonic()
    env = dict(os.environ, TMPDIR=str(workdir))  # snapshot=on's temp file lands here, removed with it
    with open(console, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                start_new_session=True, env=env, preexec_fn=_die_with_parent)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = time.monotonic() - started
    text = console.read_bytes().decode("utf-8", "replace").replace("\r", "")
    files = _read_results(results_img)
    if "report.json" not in files:  # killed on its timeout: what the tests announced on the console
        streamed = console_results(text)
        if streamed:
            files["report.json"] = json.dumps(streamed).encode()
    exit_raw = files.get("exit", b"").strip()
    guest = files.get("uptime", b"").strip()
    return Outcome(exit_code=int(exit_raw) if exit_raw.lstrip(b"-").isdigit() else None, files=files,
                   console=text, seconds=seconds, guest_seconds=float(guest) if guest else None)
