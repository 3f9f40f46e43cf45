# One target each for run, test, lint, bench (STYLE.md). Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint bench install install-dev system-deps clean screenshots docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.bench: requirements.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## Serve on http://127.0.0.1:7556 from db/diagnoxix.sqlite3 (extra flags: make run ARGS="--dev")
run: install
	$(BIN)/python run.py $(ARGS)

## Debian packages the tests need (Chromium), installed with apt-get when missing
system-deps:
	bash scripts/system-deps.sh

## Install the test tools (and Chromium) and run every test
test: install-dev system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

## ruff (lint and format), mypy --strict (package, SDK, tests, bench), the layering contracts (pyproject.toml)
lint: install-dev
	$(BIN)/ruff check diagnoxix diagnoxix_client tests bench run.py
	$(BIN)/ruff format --check diagnoxix diagnoxix_client tests bench run.py
	$(BIN)/mypy
	$(BIN)/lint-imports

## PNGs of every dashboard page under docs/screenshots/ (needs Debian's chromium: apt-get install chromium)
screenshots: install-dev
	$(BIN)/python -m tests.dashboard_screenshots

## docs/configuration.md, generated from the settings and the command line (a test fails when it is stale)
docs: install
	$(BIN)/python -m diagnoxix.reference --write

## The performance benchmark (docs/performance.md): make bench ARGS="--quick" for a 1-2 minute run
bench: $(VENV)/.bench
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
