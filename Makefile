# One target each for run, test, lint, bench (STYLE.md). Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-postgresql lint bench install install-dev system-deps clean screenshots docs

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

## Install the test tools (and Chromium, PostgreSQL, Redis) and run every test: the whole suite,
## then the app tests again with their servers on PostgreSQL (test-postgresql)
test: install-dev system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-postgresql

# The app tests that run unchanged on the PostgreSQL store (each server on a fresh database).
PG_APP_TESTS = tests/test_api.py tests/test_ws_delivery.py tests/test_ws_frames.py tests/test_protocol.py \
	tests/test_validation.py tests/test_hostile_clients.py tests/test_corrections.py tests/test_webhooks.py \
	tests/test_webhook_events.py tests/test_push.py tests/test_preferences.py tests/test_devices.py \
	tests/test_sse.py tests/test_scheduled.py tests/test_typed_sends.py tests/test_templates.py \
	tests/test_links_actions.py tests/test_digest.py tests/test_rate_limits.py tests/test_request_order.py \
	tests/test_service.py tests/test_ws_auth.py tests/test_ws_idle.py tests/test_hub_room.py \
	tests/test_metrics.py tests/test_readiness.py tests/test_secrets_in_logs.py

## The app tests again, each server on a fresh PostgreSQL database instead of an SQLite file
test-postgresql: install-dev system-deps
	DIAGNOXIX_TEST_STORE=postgresql $(BIN)/python -m pytest -q -p no:cacheprovider $(PG_APP_TESTS)

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
