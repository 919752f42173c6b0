# disklet — developer entry points. `make test` is the one test command (README, CI).
PY ?= python3
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: test bootstrap lint typecheck pytest crds crds-check demo e2e e2e-mock bench

test: bootstrap lint typecheck crds-check pytest

bootstrap:
	@bash scripts/bootstrap.sh

lint:
	$(PY) -m ruff check disklet operator agent tests e2e bench

typecheck:
	$(PY) -m mypy disklet

crds:
	$(PY) -m disklet.api.crdgen

crds-check:
	$(PY) -m disklet.api.crdgen --check

pytest:
	$(PY) -m pytest -m "unit or host or api" -q

e2e:
	$(PY) -m pytest e2e -q
