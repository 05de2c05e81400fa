# Two fresh-machine entry points: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := $(BIN)/python hack/stack.py
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all deps venv binaries image lint unit test e2e demo stack-up stack-down stack-env clean console bench bench-scale bench-storage crds

all: test

## System packages from Debian: MariaDB server and clients, openssl, unshare (util-linux).
deps:
	@bash hack/install-deps.sh

$(BIN)/python: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(BIN)/python

venv: $(BIN)/python

## Control plane, etcd, kubectl, helm and MinIO from the Go module proxy (cached under ~/.cache).
binaries:
	@bash hack/build-binaries.sh >/dev/null

## crds/*.yaml, the chart's copies and docs/api-reference.md, rendered from the typed models in
## operator/mysql_backup_operator/api/ (docs/design-typed-api.md). Run after changing a model.
crds: venv
	$(BIN)/python hack/gen-crds.py

## The web console's assets (committed; needs node/npm): rebuild after editing web/.
console: venv
	cd web && npm install --no-audit --no-fund && npx vite build
	$(BIN)/python -m mysql_backup_operator.console.assets web operator/mysql_backup_operator/console/static

## The operator image (plus a Debian base and a pause image) as OCI archives, built locally with
## mmdebstrap and buildah, cached by a hash of their inputs. `hack/stack.py up` builds it itself.
image:
	@bash hack/install-deps.sh
	@bash hack/build-image.sh

lint: venv
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack
	$(BIN)/mypy --strict operator/mysql_backup_operator

unit: venv
	$(BIN)/pytest -q tests/unit

## Everything: lint, unit tests, then the real-stack tests (the fixtures start or reuse the stack).
test: deps venv binaries lint
	$(BIN)/pytest -q -rs tests

e2e: deps venv binaries
	$(BIN)/pytest -q -rs tests/e2e

## Data-path benchmark (not part of `make test`): BENCH_ARGS=--small for a ~100 MB quick run.
bench: deps venv binaries
	$(BIN)/python hack/bench.py $(BENCH_ARGS)

## Scale benchmark (not part of `test`): P policies x B finished Backups; see docs/performance.md.
## Change the scale with e.g. BENCH_ARGS="--policies 200 --backups-per-policy 10".
bench-scale: deps venv binaries
	$(BIN)/python hack/bench_scale.py $(BENCH_ARGS)

## Object-store benchmark (not part of `test`): streaming upload/read and peak RSS per backend.
bench-storage: deps venv binaries
	$(BIN)/python hack/bench_storage.py $(BENCH_ARGS)

stack-up: deps venv binaries
	$(STACK) up

stack-down: venv
	$(STACK) down

stack-env: venv
	@$(STACK) env

demo: deps venv binaries
	@bash hack/demo.sh

clean: stack-down
	rm -rf $(VENV) .stack
