# Two commands on a fresh machine: `make demo` and `make test`.
# The virtual environment is rebuilt only when pyproject.toml changes (stamp files), so repeated runs are fast.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKSPACE ?= payfm-workspace
DEMO_CHARGES ?= 1000000
DEMO_DAYS ?= 120
DEMO_ARGS ?=

.PHONY: demo test lint typecheck pytest bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/payfm --workspace $(WORKSPACE) demo --charges $(DEMO_CHARGES) --days $(DEMO_DAYS) $(DEMO_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# One process per CPU (pytest-xdist), at most 3: each file's tests run in one process, in order (module
# fixtures are built once; a test may empty its worker's own scratch Redis database, tests/services.py).
# `pytest tests/test_x.py` alone runs in one process; `make pytest PYTEST_ARGS=-n0` runs all in one.
PYTEST_ARGS ?= -n auto --maxprocesses 3 --dist loadfile
pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_generate.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
