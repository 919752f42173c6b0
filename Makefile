# disklet — developer entry points. `make test` is the one test command (README, CI).
# The project's virtualenv (.venv, made by scripts/bootstrap.sh): the Makefile runs its Python, so
# nothing is installed into the machine's own Python. `make PY=python3 ...` uses another interpreter.
VENV := $(CURDIR)/.venv
PY ?= $(VENV)/bin/python
export PATH := $(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)
# This checkout's code is what runs and what is checked (not whatever an editable install points at).
export PYTHONPATH := $(CURDIR):$(CURDIR)/operator:$(CURDIR)/agent$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: test bootstrap venv lint typecheck archcheck pytest vm crds crds-check chart-crds chart-lint demo e2e e2e-mock envtest bench images wheels node

# The real-server tier (tests/api/*_real.py and e2e/) runs on a local control plane found through
# KUBEBUILDER_ASSETS (devkit/envtest.py); .ci/run sets it. Without it they skip with one line.
# `images` builds the operator and agent images (root; skipped with a note otherwise, a failure under CI).
# `vm` runs tests/vm/ in a throw-away VM on a real kernel (a failure under CI when it cannot boot).
test: bootstrap lint typecheck archcheck crds-check pytest vm images e2e node

bootstrap:
	@bash scripts/bootstrap.sh

# Only the virtualenv (and this package in it), for the targets below when .venv is missing.
venv:
	@bash scripts/bootstrap.sh --venv

# Every target that runs $(PY) makes the virtualenv first if it is missing (not when PY is overridden).
ifeq ($(PY),$(VENV)/bin/python)
lint typecheck archcheck crds crds-check pytest vm demo e2e e2e-mock envtest bench images wheels node: | $(VENV)/bin/python
$(VENV)/bin/python:
	@bash scripts/bootstrap.sh --venv
endif

lint:
	$(PY) -m ruff check disklet operator agent devkit tests e2e bench

# mypy over disklet, the operator, the agent and devkit; strict for the pure modules ([tool.mypy] in pyproject.toml).
typecheck:
	$(PY) -m mypy

# The layer contracts of docs/architecture.md ([tool.importlinter] in pyproject.toml).
archcheck:
	$(PY) -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'

crds:
	$(PY) -m disklet.api.crdgen
	@$(MAKE) --no-print-directory chart-crds

crds-check:
	$(PY) -m disklet.api.crdgen --check

# The chart renders the generated CRDs as templates (charts/disklet/files/crds/, so helm upgrade upgrades them); tests/unit/test_chart.py fails on drift.
chart-crds:
	rm -f charts/disklet/files/crds/disklet.io_*.yaml
	cp crds/disklet.io_*.yaml charts/disklet/files/crds/

chart-lint:
	helm lint --strict charts/disklet
	helm template disklet charts/disklet --namespace disklet >/dev/null

pytest:
	$(PY) -m pytest -m "unit or host or api" -q

# The vm tier: tests/vm/ inside a throw-away Debian VM on a real kernel (device-mapper, udev, disks
# with identities), one boot per group of tests (devkit/vm, docs/testing.md "The vm tier").
vm:
	$(PY) -m pytest -m vm tests/vm -q -rs

# README's "run it" command: disklet's real job end to end without a cluster (root for the LVM part).
demo: bootstrap
	$(PY) -m devkit.demo

# e2e/ on the session's real control plane (envtest: etcd + kube-apiserver + kube-controller-manager),
# or on E2E_KUBECONFIG's cluster, or the mock with E2E_MOCK=1 (docs/e2e.md). About a minute.
e2e:
	$(PY) -m pytest e2e -q -rs

# The e2e harness against the Kubernetes API mock as a server process (no assets needed).
e2e-mock:
	E2E_MOCK=1 $(PY) -m pytest e2e -q

# The node tier (tests/node/): the chart's own pods on a real node — the envtest control plane plus
# containerd, kubelet and kube-scheduler (devkit/node.py) — with the images of `make images` loaded
# (build/images/, or DISKLET_IMAGES_DIR). Root. One helm install shared by the scenarios (docs/testing.md).
node: images
	$(PY) -m pytest tests/node -q -rs -p no:cacheprovider

# A control plane for manual use: prints `export KUBECONFIG=...`, stops everything on Ctrl-C.
envtest:
	$(PY) -m devkit.envtest

# Every benchmark in bench/; figures in bench/results/*.json (docs/performance.md).
bench:
	$(PY) bench/run_all.py

# The operator and agent images from this checkout and Debian's packages (root; mmdebstrap, buildah):
# build/images/disklet-{operator,agent}.oci, their sizes printed, build/images/values.yaml for helm.
# The base root file system and the dependency wheels are reused while their inputs are unchanged
# (docs/images.md). A few minutes the first time, about two with the base cached.
images: bootstrap
	$(PY) -m devkit.images

# Only build/wheels (disklet's wheel and its dependencies'): the build context of a docker/buildah
# build of the Dockerfile elsewhere (docs/images.md).
wheels:
	$(PY) -m devkit.images --wheels-only
