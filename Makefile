# Two commands do all the set-up: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TALLY_HOME ?= $(CURDIR)/.tally
export DAGSTER_HOME ?= $(TALLY_HOME)/dagster_home
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-integration bench ui docs stack-up stack-down clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,embedded-redis,snowflake-emulator]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m orchestration.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

stack-up: $(STAMP)
	$(BIN)/tally stack up

stack-down: $(STAMP)
	$(BIN)/tally stack down

clean:
	-$(BIN)/tally stack down
	rm -rf $(VENV) .tally .pytest_cache
