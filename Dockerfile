# syntax=docker/dockerfile:1
# disklet images: one Dockerfile, two targets (docs/images.md).
#   docker build --target operator -t ghcr.io/disklet/disklet-operator:0.1.0 .
#   docker build --target agent    -t ghcr.io/disklet/disklet-agent:0.1.0 .
# Build context: the repository root (.dockerignore keeps it to the Python sources).

# Pinned base: Debian bookworm ships nix-bin 2.8, the version disklet is tested with.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: install the one distribution into a virtualenv ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY disklet ./disklet
COPY operator ./operator
COPY agent ./agent
RUN python -m venv /opt/disklet \
 && /opt/disklet/bin/pip install --no-compile . \
 && /opt/disklet/bin/python -m compileall -q /opt/disklet/lib

# ---- runtime: what both images share -----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/disklet/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/disklet /opt/disklet

# ---- operator: never touches a node; evaluates Nix for DiskLayout pre-flight; runs as non-root --
FROM runtime AS operator
# nix-instantiate evaluates raw disko Nix; a local store under /tmp lets it run without a daemon.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nix-bin \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 disklet \
 && useradd --system --uid 10001 --gid disklet --home-dir /tmp --shell /usr/sbin/nologin disklet
ENV HOME=/tmp \
    NIX_REMOTE=local?root=/tmp/nix \
    NIX_STATE_DIR=/tmp/nix/var
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["disklet-operator"]

# ---- agent: privileged DaemonSet; host commands run through nsenter into PID 1's namespaces ----
FROM runtime AS agent
# lvm2 (lvm), util-linux (lsblk, blkid, wipefs, nsenter), mount (losetup), nix-bin
# (nix-instantiate). With DISKLET_NSENTER=true the host's own binaries run; these are the
# fallback for DISKLET_NSENTER=false (local use) and for the tools the agent runs in-container.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      lvm2 util-linux mount nix-bin \
 && rm -rf /var/lib/apt/lists/*
ENV DISKLET_NSENTER=true
EXPOSE 9091
ENTRYPOINT ["disklet-agent"]
CMD ["run"]
