# The two commands a fresh clone needs are `make demo` and `make test`; both create
# the virtualenv on first use and reinstall it when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=
NOX_ARGS ?=
# What the demo needs besides the SDK: its replay server runs on werkzeug.
DEMO_REQUIREMENTS ?= '.[demo]'

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.DEFAULT_GOAL := help
.PHONY: help demo test lint matrix clean

help:
	@echo "make demo     replay recorded OpenAI traffic into a local ingest, print the report"
	@echo "              (ARGS='--recordings DIR --db PATH')"
	@echo "make test     run the test suite (PYTEST_ARGS='...')"
	@echo "make lint     ruff check, ruff format --check, mypy"
	@echo "make matrix   the openai / wrapt / Python version matrix with nox (NOX_ARGS='...')"
	@echo "make clean    remove the virtualenv and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
		echo "traket-sdk needs Python 3.10 or newer; try: make PYTHON=python3.12 ..." >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# One stamp per set of requirements: `make demo` does not install the dev tools,
# and `make test` adds them to the same virtualenv.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e $(DEMO_REQUIREMENTS)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m examples.demo $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

matrix: $(VENV)/.installed-dev
	$(BIN)/python -m nox $(NOX_ARGS)

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache
