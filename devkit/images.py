"""``make images``: the operator and agent images from this repository and Debian's packages alone.

Four steps, each reused when its inputs did not change (so CI and a second ``make images`` pay once):

1. **Base root file system** (``build/images/base/bookworm-<key>.tar``): ``mmdebstrap`` makes a
   minimal Debian bookworm with every Debian package of the Dockerfile's ``system`` stage
   (:data:`PACKAGES`), without documentation, man pages, locales, apt lists or apt cache. The key is
   a hash of everything that goes in (suite, mirror, packages, options, timestamp); a base older than
   ``DISKLET_BASE_MAX_AGE_HOURS`` (default 24) is made again, so security updates arrive. Downloaded
   ``.deb`` files are kept in ``build/cache/debs``. The tar is imported as the image
   ``localhost/disklet-base:<key>``.
2. **Wheels** (``build/wheels``): ``pip wheel`` on the host builds disklet's own wheel from the
   checkout's files (tracked and untracked, ignored ones left out) and the wheels of its
   dependencies and of pip itself; the dependencies are fetched again only when pyproject.toml's
   dependency list or the Python version changed.
3. **Images**: ``buildah bud --isolation=chroot --layers`` of the Dockerfile's ``operator`` and ``agent``
   targets with ``--build-arg BASE=localhost/disklet-base:<key>`` (so its apt step is skipped),
   ``REVISION`` (the commit) and ``WHEELS`` (a hash of the wheels: a changed wheel never hits a cached
   layer), ``--timestamp`` = ``SOURCE_DATE_EPOCH`` (default: the commit's time).
4. **Archives**: ``build/images/disklet-operator.oci`` and ``build/images/disklet-agent.oci`` (OCI
   image layout in a tar, named ``<registry>/disklet-<name>:<tag>``), a check that
   ``disklet-agent --version`` in the image names the commit, the sizes printed, and
   ``build/images/images.json`` (names, archives, layer digests, sizes, seconds per step) and
   ``build/images/values.yaml`` (``helm install -f`` it to run exactly these images).

Settings (environment): ``IMAGE_REGISTRY`` (default ``ghcr.io/disklet``), ``IMAGE_TAG`` (default:
``<version>-<12-digit commit>``, ``-dirty`` when the checkout has changes), ``SOURCE_DATE_EPOCH``,
``DISKLET_DEBIAN_MIRROR``, ``DISKLET_BASE_MAX_AGE_HOURS``. Needs root, ``mmdebstrap`` and ``buildah``
(scripts/bootstrap.sh installs them). docs/images.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
OUT = BUILD / "images"
WHEELS = BUILD / "wheels"
DEB_CACHE = BUILD / "cache" / "debs"
DOCKERFILE = ROOT / "Dockerfile"

SUITE = "bookworm"
#: The Debian packages of both images (the Dockerfile's ``system`` stage installs the same list;
#: tests/unit/test_dockerfiles.py keeps the two equal).
PACKAGES = ("python3", "nix-bin", "lvm2", "util-linux", "mount")
#: Left out of the base: documentation (copyright files stay), man pages, info, locales.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
#: The base's file times (it does not depend on the commit, so one base serves every commit).
BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
TARGETS = ("operator", "agent")

MMDEBSTRAP_TIMEOUT = 1800
BUILD_TIMEOUT = 1800


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"images: {msg}", flush=True)


def run(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None,
        capture: bool = False, quiet: bool = False) -> str:
    """One command (argv list, timeout); its output goes to ours unless captured or quiet."""
    out = subprocess.PIPE if capture or quiet else None
    proc = subprocess.run(list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if quiet else None,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:] if quiet else ""
        raise BuildError(f"{argv[0]} exited {proc.returncode}: {' '.join(argv)}\n{tail}")
    return proc.stdout or ""


def git(*args: str) -> str:
    return run(["git", "-C", str(ROOT), *args], timeout=60, capture=True).strip()


# ---- inputs --------------------------------------------------------------------------------------

def checkout_files() -> list[str]:
    """The checkout's files as the commit plus local changes: tracked and untracked, ignored ones not."""
    out = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted(p for p in set(out.split("\0")) if p and (ROOT / p).is_file())


def revision() -> str:
    rev = git("rev-parse", "HEAD")
    return rev + ("-dirty" if git("status", "--porcelain") else "")


def source_date_epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct", "HEAD"))


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def default_tag(rev: str) -> str:
    return f"{project_version()}-{rev[:12]}" + ("-dirty" if rev.endswith("-dirty") else "")


# ---- 1. the base root file system ---------------------------------------------------------------

def base_inputs(mirror: str) -> dict[str, object]:
    return {"suite": SUITE, "mirror": mirror, "packages": list(PACKAGES), "dpkg": list(DPKG_OPTIONS),
            "epoch": BASE_EPOCH, "variant": "minbase", "format": 3}


def base_key(mirror: str) -> str:
    return hashlib.sha256(json.dumps(base_inputs(mirror), sort_keys=True).encode()).hexdigest()[:16]


def build_base(mirror: str, max_age_hours: float) -> tuple[Path, bool]:
    """The base tar for these inputs: reused when present and younger than ``max_age_hours``."""
    key = base_key(mirror)
    tar = OUT / "base" / f"{SUITE}-{key}.tar"
    if tar.exists() and time.time() - tar.stat().st_mtime < max_age_hours * 3600:
        log(f"base {tar.relative_to(ROOT)} reused (inputs unchanged, {(time.time() - tar.stat().st_mtime) / 3600:.1f} h old)")
        return tar, False
    tar.parent.mkdir(parents=True, exist_ok=True)
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    for old in tar.parent.glob(f"{SUITE}-*.tar"):
        old.unlink()
    partial = tar.with_suffix(".partial")
    argv = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=tar", "--quiet",
            f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
            # Reuse downloaded packages: the cache goes in before the download and comes out after it.
            "--skip=download/empty", "--skip=essential/unlink",
            f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/ && cp -a -- {DEB_CACHE}/. \"$1\"/var/cache/apt/archives/",
            f"--customize-hook=cp -a -- \"$1\"/var/cache/apt/archives/. {DEB_CACHE}/",
            "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb",
            # No apt lists, logs or caches that differ from build to build.
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/log/apt \"$1\"/var/log/dpkg.log "
            "\"$1\"/var/log/alternatives.log \"$1\"/var/cache/ldconfig/aux-cache",
            # The files every container runtime mounts over: present (else the first RUN of a build
            # adds them with the time of that build, and its layer differs every time) and with
            # fixed contents (mmdebstrap copies the build host's resolv.conf and hostname).
            "--customize-hook=printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "
            "> \"$1\"/etc/hosts && : > \"$1\"/etc/resolv.conf && echo localhost > \"$1\"/etc/hostname",
            SUITE, str(partial), mirror]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(BASE_EPOCH))
    log(f"base: mmdebstrap {SUITE} with {', '.join(PACKAGES)} (a few minutes the first time)")
    try:
        run(argv, timeout=MMDEBSTRAP_TIMEOUT, env=env, quiet=True)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(tar)
    # Only the newest version of each package stays in the cache.
    return tar, True


def image_exists(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", "--", ref], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60, check=False).returncode == 0


def import_base(tar: Path, fresh: bool) -> str:
    """The base tar as the image ``localhost/disklet-base:<key>`` (one layer, timestamps fixed)."""
    ref = f"localhost/disklet-base:{tar.stem.rsplit('-', 1)[1]}"
    if not fresh and image_exists(ref):
        return ref
    ctr = run(["buildah", "from", "--quiet", "scratch"], timeout=60, capture=True).strip()
    try:
        run(["buildah", "add", "--quiet", ctr, str(tar), "/"], timeout=600, quiet=True)
        run(["buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--cmd", "/bin/bash", ctr], timeout=60)
        run(["buildah", "commit", "--quiet", "--timestamp", str(BASE_EPOCH), "--rm", ctr, ref], timeout=600,
            quiet=True)
    except BaseException:
        subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        raise
    return ref


# ---- 2. wheels ----------------------------------------------------------------------------------

def deps_key() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    inputs = {"deps": sorted(deps), "python": f"{sys.version_info.major}.{sys.version_info.minor}",
              "pip": "pip"}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def export_checkout(dest: Path) -> str:
    """Copy the checkout's files to ``dest`` and return their revision, taken together at the start
    of a build (a checkout changed while the base is made does not end up in the images)."""
    rev = revision()
    for rel in checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target, follow_symlinks=False)
    return rev


def build_wheels(src: Path) -> tuple[str, bool]:
    """build/wheels: disklet's wheel (always made afresh from ``src``, the exported checkout) and
    its dependencies'."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    stamp = WHEELS / f".deps-{deps_key()}"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
           "--wheel-dir", str(WHEELS)]
    for old in WHEELS.glob("disklet-*.whl"):
        old.unlink()
    fetched = not stamp.exists()
    if fetched:
        for old in WHEELS.iterdir():
            old.unlink()
        log("wheels: pip wheel disklet, its dependencies and pip (fetched once per dependency list)")
        run([*pip, str(src), "pip"], timeout=1800, quiet=True)
        stamp.touch()
    else:
        run([*pip, "--no-deps", str(src)], timeout=600, quiet=True)
    return wheels_digest(sorted(WHEELS.glob("*.whl"))), fetched


def wheels_digest(wheels: Sequence[Path]) -> str:
    """A hash of what the wheels install (names and contents of their files, not the zip's file
    times): a rebuilt but unchanged disklet wheel reuses the cached image layers."""
    digest = hashlib.sha256()
    for whl in wheels:
        digest.update(whl.name.encode() + b"\0")
        with zipfile.ZipFile(whl) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                digest.update(info.filename.encode() + b"\0" + hashlib.sha256(z.read(info)).digest())
    return digest.hexdigest()[:16]


# ---- 3./4. images and archives --------------------------------------------------------------------

def build_image(target: str, *, base: str, ref: str, rev: str, wheels: str, epoch: int, no_cache: bool) -> None:
    argv = ["buildah", "bud", "--isolation=chroot", "--layers", "--quiet", "--timestamp", str(epoch),
            *(["--no-cache"] if no_cache else []),
            "--build-arg", f"BASE={base}", "--build-arg", f"REVISION={rev}", "--build-arg", f"WHEELS={wheels}",
            "--target", target, "--tag", ref, "--file", str(DOCKERFILE), str(ROOT)]
    run(argv, timeout=BUILD_TIMEOUT, quiet=True)


def write_archive(ref: str, path: Path, epoch: int) -> None:
    """``ref`` as an OCI archive; the index names the image in full for containerd's import
    (``io.containerd.image.name``) and by tag for OCI tools (``org.opencontainers.image.ref.name``); the
    tar's own headers carry ``epoch``, so the same image gives the same archive, byte for byte."""
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run(["buildah", "push", "--quiet", "--format", "oci", ref, f"oci-archive:{partial}:{ref}"], timeout=1200,
        quiet=True)
    tag = ref.rsplit(":", 1)[1]
    fixed = path.with_suffix(".fixing")
    with tarfile.open(partial) as src, tarfile.open(fixed, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            member.mtime, member.uid, member.gid, member.uname, member.gname = epoch, 0, 0, "", ""
            member.pax_headers = {}
            if member.name.lstrip("./") == "index.json" and data is not None:
                index = json.loads(data.read())
                for m in index.get("manifests", []):
                    m.setdefault("annotations", {})
                    m["annotations"]["io.containerd.image.name"] = ref
                    m["annotations"]["org.opencontainers.image.ref.name"] = tag
                body = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
                member.size = len(body)
                dst.addfile(member, io.BytesIO(body))
            else:
                dst.addfile(member, data)
    partial.unlink()
    fixed.rename(path)


def layer_digests(ref: str) -> list[str]:
    manifest = json.loads(run(["buildah", "inspect", "--type", "image", "--format", "{{.Manifest}}", "--", ref],
                              timeout=60, capture=True))
    return [layer["digest"] for layer in manifest["layers"]]


def image_size(ref: str) -> int:
    """Uncompressed size of the image's layers (what it takes on a node)."""
    out = run(["podman", "image", "inspect", "--format", "{{.Size}}", "--", ref], timeout=60, capture=True)
    return int(out.strip())


def image_label(ref: str, name: str) -> str:
    image = json.loads(run(["buildah", "inspect", "--type", "image", "--", ref], timeout=60, capture=True))
    return str((image.get("OCIv1", {}).get("config", {}).get("Labels") or {}).get(name, ""))


def version_in_image(ref: str) -> str:
    ctr = run(["buildah", "from", "--quiet", "--pull=never", ref], timeout=120, capture=True).strip()
    try:
        return run(["buildah", "run", "--isolation=chroot", "--", ctr, "disklet-agent", "--version"],
                   timeout=120, capture=True).strip()
    finally:
        subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)


#: What never ships: compilers, pip (and its cache), apt's package lists and downloaded packages,
#: the wheels. Paths relative to the image's root; directories must be absent or empty.
FORBIDDEN_PATHS = ("usr/bin/gcc", "usr/bin/cc", "usr/bin/x86_64-linux-gnu-gcc-12", "usr/bin/c++", "usr/bin/pip",
                   "usr/bin/pip3", "opt/disklet/bin/pip", "opt/disklet/bin/pip3", "root/.cache", "tmp/wheels")
EMPTY_DIRS = ("var/lib/apt/lists", "var/cache/apt/archives", "tmp")
#: apt's own empty bookkeeping that may stay in an empty directory above.
EMPTY_DIR_KEEPS = {"lock", "partial"}


def check_contents(ref: str) -> list[str]:
    """What is wrong inside ``ref`` (mounted read-only through buildah): see :data:`FORBIDDEN_PATHS`."""
    problems: list[str] = []
    ctr = run(["buildah", "from", "--quiet", "--pull=never", ref], timeout=120, capture=True).strip()
    try:
        root = Path(run(["buildah", "mount", ctr], timeout=60, capture=True).strip())
        for rel in FORBIDDEN_PATHS:
            if (root / rel).exists() or (root / rel).is_symlink():
                problems.append(f"/{rel} is in the image")
        for rel in EMPTY_DIRS:
            d = root / rel
            for entry in d.iterdir() if d.is_dir() else ():
                if entry.name in EMPTY_DIR_KEEPS and (entry.is_file() and entry.stat().st_size == 0
                                                      or entry.is_dir() and not any(entry.iterdir())):
                    continue
                problems.append(f"/{rel}/{entry.name} is in the image")
        site = next((root / "opt/disklet/lib").glob("python3*/site-packages"), None)
        if site is None:
            problems.append("no /opt/disklet/lib/python3*/site-packages")
        else:
            problems += [f"{p.relative_to(root)} is in the image" for p in site.glob("pip") if p.exists()]
            problems += [f"{p.relative_to(root)} is in the image" for p in site.glob("pip-*.dist-info")]
        problems += [f"{p.relative_to(root)} is in the image" for p in (root / "opt").rglob("*.whl")]
    finally:
        subprocess.run(["buildah", "umount", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
    return problems


def compare_with_previous(path: Path, result: dict[str, object]) -> bool | None:
    """Whether the layers equal those of the previous build of the same commit in ``path`` (None:
    there was none); printed, so two builds of one commit show whether they are reproducible."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if previous.get("revision") != result["revision"] or str(result["revision"]).endswith("-dirty"):
        return None
    same = True
    for target, info in dict(result["images"]).items():  # type: ignore[call-overload]
        before = previous.get("images", {}).get(target, {}).get("layers")
        if before is None:
            continue
        if before == info["layers"]:
            log(f"{target}: layer digests equal the previous build of this commit ({len(before)} layers)")
        else:
            same = False
            diff = [i for i, (a, b) in enumerate(zip(before, info["layers"], strict=False)) if a != b]
            log(f"{target}: layer digests DIFFER from the previous build of this commit (layers {diff})")
    return same


def check_operator_nix(ref: str) -> str:
    """``nix-instantiate --eval`` in the operator image as the chart runs it: as the image's user
    (10001), the root file system read-only, an empty ``/tmp`` (the chart's emptyDir), the image's
    environment. Returns the evaluation's output; :class:`BuildError` when it fails."""
    config = json.loads(run(["buildah", "inspect", "--type", "image", "--", ref], timeout=60,
                            capture=True))["OCIv1"]["config"]
    user = str(config.get("User") or "")
    env = [str(e) for e in config.get("Env") or []]
    if not user or user.split(":")[0] in ("", "0", "root"):
        raise BuildError(f"{ref}: the operator image must name a non-root user, not {user!r}")
    ctr = run(["buildah", "from", "--quiet", "--pull=never", ref], timeout=120, capture=True).strip()
    mounted: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="disklet-operator-root-"))
    try:
        image_root = run(["buildah", "mount", ctr], timeout=60, capture=True).strip()
        run(["mount", "--bind", "--", image_root, str(root)], timeout=30)
        mounted.append(str(root))
        run(["mount", "-o", "remount,bind,ro", "--", str(root)], timeout=30)
        for fstype, target, opts in (("tmpfs", "tmp", "size=64m,mode=1777"), ("proc", "proc", "ro")):
            run(["mount", "-t", fstype, "-o", opts, "--", fstype, str(root / target)], timeout=30)
            mounted.append(str(root / target))
        (root / "tmp" / "check.nix").write_text("{ sum = 1 + 2; }\n")
        out = run(["chroot", f"--userspec={user}", "--", str(root), "/usr/bin/env", "-i", *env,
                   "nix-instantiate", "--eval", "--strict", "/tmp/check.nix"], timeout=120, capture=True).strip()
        if out != "{ sum = 3; }":
            raise BuildError(f"{ref}: nix-instantiate as {user} on a read-only root answered {out!r}")
        return out
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "--", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60, check=False)
        if not any(Path(p).is_mount() for p in mounted):
            root.rmdir()
        subprocess.run(["buildah", "umount", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.images", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: operator,agent")
    ap.add_argument("--no-cache", action="store_true",
                    help="build every layer again (the base tar and the wheels are still reused; "
                         "DISKLET_BASE_MAX_AGE_HOURS=0 makes the base again): compare the layer digests "
                         "with the previous build of the same commit")
    ap.add_argument("--wheels-only", action="store_true",
                    help="only build build/wheels (for docker/buildah builds elsewhere; no root needed)")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="disklet-images-") as tmp:
        src = Path(tmp) / "src"
        if args.wheels_only:
            try:
                export_checkout(src)
                digest, _ = build_wheels(src)
            except (BuildError, subprocess.TimeoutExpired) as exc:
                print(f"images: FAILED: {exc}", file=sys.stderr)
                return 1
            log(f"wheels in {WHEELS.relative_to(ROOT)} ({digest})")
            return 0
        return build_all(targets, src, no_cache=args.no_cache)


def build_all(targets: Sequence[str], src: Path, *, no_cache: bool) -> int:
    missing = [] if os.geteuid() == 0 else ["root (mmdebstrap --mode=root, buildah)"]
    missing += [f"{tool} (scripts/bootstrap.sh installs it as root)"
                for tool in ("mmdebstrap", "buildah", "podman") if shutil.which(tool) is None]
    if missing:
        # CI runs as root with bootstrap's packages: there a missing piece is a failure, not a skip.
        ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        print(f"images: {'FAILED' if ci else 'skipped'}: needs {', '.join(missing)}", file=sys.stderr)
        return 2 if ci else 0
    mirror = os.environ.get("DISKLET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    max_age = float(os.environ.get("DISKLET_BASE_MAX_AGE_HOURS", "24"))
    registry = os.environ.get("IMAGE_REGISTRY", "ghcr.io/disklet").rstrip("/")
    seconds: dict[str, float] = {}
    started = time.monotonic()
    try:
        rev = export_checkout(src)
        tag = os.environ.get("IMAGE_TAG") or default_tag(rev)
        epoch = source_date_epoch()
        t = time.monotonic()
        tar, fresh = build_base(mirror, max_age)
        base = import_base(tar, fresh)
        seconds["base"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        wheels, _ = build_wheels(src)
        seconds["wheels"] = round(time.monotonic() - t, 1)
        result: dict[str, object] = {"revision": rev, "tag": tag, "registry": registry,
                                     "source_date_epoch": epoch, "base": base, "wheels": wheels, "images": {}}
        images: dict[str, dict[str, object]] = {}
        for target in targets:
            ref = f"{registry}/disklet-{target}:{tag}"
            t = time.monotonic()
            log(f"{target}: buildah bud --target {target} -> {ref}")
            build_image(target, base=base, ref=ref, rev=rev, wheels=wheels, epoch=epoch, no_cache=no_cache)
            archive = OUT / f"disklet-{target}.oci"
            write_archive(ref, archive, epoch)
            seconds[target] = round(time.monotonic() - t, 1)
            problems = check_contents(ref)
            label = image_label(ref, "org.opencontainers.image.revision")
            if label != rev:
                problems.append(f"label org.opencontainers.image.revision is {label!r}, not {rev!r} "
                                "(a cached layer from another commit)")
            if problems:
                raise BuildError(f"{ref}: " + "; ".join(problems))
            images[target] = {"image": ref, "archive": str(archive.relative_to(ROOT)),
                              "archive_bytes": archive.stat().st_size, "size_bytes": image_size(ref),
                              "layers": layer_digests(ref)}
        if "agent" in images:
            version = version_in_image(str(images["agent"]["image"]))
            if rev not in version:
                raise BuildError(f"disklet-agent --version in the image does not name {rev}: {version!r}")
            images["agent"]["version"] = version
        if "operator" in images:
            check_operator_nix(str(images["operator"]["image"]))
            log("operator: nix-instantiate evaluates as uid 10001 on a read-only root file system")
        seconds["total"] = round(time.monotonic() - started, 1)
        result["images"] = images
        result["seconds"] = seconds
        result["same_as_previous_build"] = compare_with_previous(OUT / "images.json", result)
        (OUT / "images.json").write_text(json.dumps(result, indent=2) + "\n")
        (OUT / "values.yaml").write_text(
            "# helm install ... -f build/images/values.yaml: the images `make images` built\n"
            f"image:\n  registry: {registry}\n  tag: \"{tag}\"\n  pullPolicy: IfNotPresent\n")
    except (BuildError, subprocess.TimeoutExpired) as exc:
        print(f"images: FAILED: {exc}", file=sys.stderr)
        return 1
    for info in images.values():
        log(f"{info['image']}: {mib(float(str(info['size_bytes'])))} unpacked, archive {info['archive']} "
            f"{mib(float(str(info['archive_bytes'])))}, {len(list(info['layers']))} layers")  # type: ignore[call-overload]
    if "agent" in images:
        log(f"in the image: {images['agent']['version']}")
    log("seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    log(f"helm values: build/images/values.yaml (image.registry={registry}, image.tag={tag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
