# slipstream — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-packages
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install demo test faults dashboards test-unit test-integration lint typecheck check stack-up stack-down stack-status worker bench bench-short clean

help: ## list the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(SYSTEM_STAMP): scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml setup.py src/slipstream/schemas/_request_rows.pyx $(SYSTEM_STAMP)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "slipstream needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/slipstream stack fetch
	touch $@

install: $(STAMP) ## install everything: Debian packages, the venv in .venv, Kafka jars
	@echo "installed: $(BIN)/slipstream"

demo: install ## the main job: local stack + worker + live traffic (Ctrl-C stops; `make stack-down` after)
	$(BIN)/slipstream demo $(DEMO_ARGS)

test: install ## run the tests (unit + integration against the real Kafka, Redis, Prometheus)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

faults: install ## the full fault suite: RELIABILITY.md's table at full size (~10 min; figures in fault-report.jsonl)
	$(BIN)/slipstream stack up
	SLIPSTREAM_FAULTS=full $(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

dashboards: install ## regenerate the Grafana dashboards in deploy/grafana/dashboards (grafana-foundation-sdk)
	$(BIN)/python -m slipstream.dashboards

bench: install ## the full performance benchmark (starts the local stack; ~20 min)
	$(BIN)/slipstream stack up
	$(BIN)/slipstream bench --out bench-perf.json

bench-short: install ## the short performance benchmark (~2 min)
	$(BIN)/slipstream stack up
	$(BIN)/slipstream bench --short

test-unit: install ## unit tests only (no services)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## integration tests only
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: install ## ruff check and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install ## mypy
	$(BIN)/mypy

check: lint typecheck test ## lint, typecheck and test

stack-up: install ## start the local stack (Kafka, Redis, Prometheus, Alertmanager)
	$(BIN)/slipstream stack up

stack-down: install ## stop the local stack
	$(BIN)/slipstream stack down

stack-status: install ## show what runs where
	$(BIN)/slipstream stack status

worker: install ## run a worker against the configured Kafka/Redis
	$(BIN)/slipstream worker

clean: ## remove the venv and caches (not the Kafka jar cache, not the stack's data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache src/*.egg-info
