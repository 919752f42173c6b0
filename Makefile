# disklet — developer entry points. `make test` is the one test command (README, CI).
PY ?= python3
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: test bootstrap lint typecheck pytest crds crds-check chart-crds chart-lint demo e2e e2e-mock bench

test: bootstrap lint typecheck crds-check pytest e2e-mock

bootstrap:
	@bash scripts/bootstrap.sh

lint:
	$(PY) -m ruff check disklet operator agent devkit tests e2e bench

typecheck:
	$(PY) -m mypy disklet

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

# README's "run it" command: disklet's real job end to end without a cluster (root for the LVM part).
demo: bootstrap
	$(PY) -m devkit.demo

e2e:
	$(PY) -m pytest e2e -q

# The e2e harness against the Kubernetes API mock as a server process (docs/e2e.md); part of
# `make test` because the whole mock run takes well under 3 minutes (~1 min when green).
e2e-mock:
	E2E_MOCK=1 $(PY) -m pytest e2e -q

# Every benchmark in bench/; figures in bench/results/*.json (docs/performance.md).
bench:
	$(PY) bench/run_all.py
