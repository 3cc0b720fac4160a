# Two commands do all the set-up: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TALLY_HOME ?= $(CURDIR)/.tally
export DAGSTER_HOME ?= $(TALLY_HOME)/dagster_home
PYTEST_ARGS ?=
UI_PORT ?= 3000
DOCS_PORT ?= 8580

.PHONY: install seeds demo test test-unit test-integration bench ui docs stack-up stack-down clean chromium prometheus wrk dagster-home postgresql demo-migration

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(wildcard streaming/speed/_*.c streaming/speed/_*.h)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,embedded-redis,snowflake-emulator]'
	@touch $(STAMP)

# The dbt seeds of the segment rules, generated from streaming/segments.yaml (committed; definitions only
# check them).
seeds: $(STAMP)
	$(BIN)/python -m assets.dbt.segment_seeds

demo: $(STAMP)
	$(BIN)/python -m orchestration.demo

# `make demo` as a parallel run: tally's collector forwards to a lossy legacy stand-in counting into PostgreSQL.
demo-migration: $(STAMP) postgresql
	$(BIN)/python -m orchestration.demo_migration

test: $(STAMP) chromium prometheus postgresql
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's PostgreSQL for the migration tests (a fixture runs initdb + pg_ctl on a temp directory).
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)

# Debian's chromium for the browser tests (no browser downloads).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Debian's prometheus (the server and promtool) for the metrics and alert-rule tests.
prometheus:
	@command -v promtool >/dev/null || (apt-get update && apt-get install -y prometheus)

# A persistent Dagster instance under .tally/ (one run at a time: DuckDB has a single writer).
dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# The Dagster UI on loopback (asset lineage, runs, backfills): http://127.0.0.1:$(UI_PORT)
ui: $(STAMP) dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

# dbt docs on loopback: http://127.0.0.1:$(DOCS_PORT)
docs: $(STAMP)
	cd dbt_project && export TALLY_DUCKDB_PATH=$${TALLY_DUCKDB_PATH:-$(TALLY_HOME)/warehouse.duckdb} \
	  && ../$(BIN)/dbt docs generate --profiles-dir . --quiet \
	  && ../$(BIN)/dbt docs serve --profiles-dir . --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

bench: $(STAMP) wrk
	$(BIN)/python -m bench

# Debian's wrk, the collector benchmark's load generator.
wrk:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

stack-up: $(STAMP)
	$(BIN)/tally stack up

stack-down: $(STAMP)
	$(BIN)/tally stack down

clean:
	-$(BIN)/tally stack down
	rm -rf $(VENV) .tally .pytest_cache
