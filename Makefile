# The README's commands. `make test` does all set-up from this repo's own files.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
# MLflow reads only its own switch (or DO_NOT_TRACK=true): mlops/constants.py NO_TELEMETRY_ENV
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help venv lint typecheck test demo bench up down clean

help:
	@echo "make demo   - run the lifecycle on simulated data (embedded defaults, no services needed)"
	@echo "make test   - create .venv, install pinned deps, lint, type check, run all tests"
	@echo "make bench  - performance benchmarks; results in benchmarks/results/"
	@echo "make up     - start a local Prefect server (UI :$(PREFECT_PORT)) and MLflow UI (:$(MLFLOW_PORT))"
	@echo "make down   - stop them"
	@echo "make clean  - remove .venv, the demo's and the default home's state, caches"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

demo: venv
	@if curl -sf http://127.0.0.1:$(PREFECT_PORT)/api/health >/dev/null 2>&1; then \
	  echo "Using the Prefect server on :$(PREFECT_PORT) (runs show in its UI)"; \
	  export PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api; fi; \
	$(BIN)/mlops demo

BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: benchmarks/requirements-evidently.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-evidently.txt
	@touch $@

# Evidently (the drift peer) runs in its own venv: it does not import beside pandas 3.
bench: venv $(BENCH_VENV)/.installed
	$(BIN)/python -m benchmarks.run $(BENCH)

up: venv
	deployments/local_services.sh start

down:
	deployments/local_services.sh stop

clean:
	rm -rf .mlops .demo .venv-bench .pytest_cache .mypy_cache .ruff_cache
