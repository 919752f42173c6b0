# syntax=docker/dockerfile:1
# disklet images: one Dockerfile (Containerfile), two targets (docs/images.md).
# `make images` builds both here: the base is a Debian bookworm root file system made by mmdebstrap
# (every Debian package below already inside, so the apt step is skipped), the Python wheels are
# built on the host into build/wheels. Anywhere else, with docker or buildah:
#   make wheels
#   docker build --target agent    --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/disklet/disklet-agent:0.1.0 .
#   docker build --target operator --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/disklet/disklet-operator:0.1.0 .
# Build context: the repository root (.dockerignore keeps it to build/wheels).

# Debian bookworm (nix-bin 2.8, the version disklet is tested with; python3 3.11). Pin a digest in
# release pipelines. `make images` passes its own mmdebstrap base here.
ARG BASE=docker.io/library/debian:bookworm-20241202-slim

# ---- system: the Debian packages of both images, one shared layer ------------------------------
# python3; nix-bin (nix-instantiate: the operator's DiskLayout pre-flight, the agent's); lvm2,
# util-linux (lsblk, blkid, wipefs, nsenter) and mount (losetup) for the agent. With
# DISKLET_NSENTER=true the agent runs the host's own binaries through nsenter; the ones in the image
# serve DISKLET_NSENTER=false (local use, tests in a container) and in-container tools.
FROM ${BASE} AS system
# hadolint ignore=DL3008
RUN if dpkg-query -W python3 nix-bin lvm2 util-linux mount >/dev/null 2>&1; then exit 0; fi \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 nix-bin lvm2 util-linux mount \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# ---- runtime: disklet in the virtualenv /opt/disklet, from wheels only -------------------------
# The wheels (disklet's own and its dependencies, built on the host by `make wheels`) are bind-mounted,
# never copied into a layer; pip runs from its own wheel, so no pip and no pip cache stay behind.
# Byte code is compiled once with unchecked hashes: no timestamps inside (reproducible layers), and
# nothing to write at run time (read-only root file system).
FROM system AS runtime
# A hash of the wheels (make images passes it): a changed wheel never reuses a cached layer.
ARG WHEELS=
RUN --mount=type=bind,source=build/wheels,target=/tmp/wheels \
    set -- /tmp/wheels/pip-*.whl \
 && python3 -m venv --without-pip /opt/disklet \
 && /opt/disklet/bin/python3 "$1/pip" install --no-index --find-links=/tmp/wheels \
      --no-compile --no-cache-dir --disable-pip-version-check --no-warn-script-location disklet \
 && /opt/disklet/bin/python3 -m compileall -q --invalidation-mode unchecked-hash /opt/disklet/lib \
 && rm -rf /opt/disklet/bin/Activate.ps1 /opt/disklet/bin/activate*
# The commit the wheels were built from (disklet-agent --version, disklet-operator --version).
# The RUN comes first on purpose: buildah's layer cache (1.28, Debian bookworm) keys LABEL and ENV on
# their text, not on the build argument's value, so without a step that uses REVISION an unchanged
# wheel reused the previous commit's ENV and LABEL. A RUN's cache key includes the build arguments,
# and every later step is rebuilt on top of its new layer (a few bytes; the wheels' layer stays cached).
ARG REVISION=unknown
RUN printf '%s\n' "${REVISION}" > /opt/disklet/REVISION
LABEL org.opencontainers.image.source="https://github.com/disklet/disklet" \
      org.opencontainers.image.revision="${REVISION}"
ENV PATH=/opt/disklet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DISKLET_REVISION=${REVISION}

# ---- operator: never touches a node; evaluates Nix for DiskLayout pre-flight; runs as non-root --
FROM runtime AS operator
RUN groupadd --system --gid 10001 disklet \
 && useradd --system --no-log-init --uid 10001 --gid disklet --home-dir /tmp --shell /usr/sbin/nologin disklet \
 && rm -f /var/log/faillog /var/log/lastlog /etc/shadow- /etc/gshadow- /etc/passwd- /etc/group- /etc/subuid- /etc/subgid-
# nix-instantiate evaluates raw disko Nix; a local store under /tmp lets it run without a daemon.
ENV HOME=/tmp \
    NIX_REMOTE=local?root=/tmp/nix \
    NIX_STATE_DIR=/tmp/nix/var
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["disklet-operator"]

# ---- agent: privileged DaemonSet; host commands run through nsenter into PID 1's namespaces ----
FROM runtime AS agent
ENV DISKLET_NSENTER=true
EXPOSE 9091 9092
ENTRYPOINT ["disklet-agent"]
CMD ["run"]
