# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit test-slow test-min install install-dev clean bench-store bench-import bench-profiles bench-export bench-pgp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when pyproject.toml changes; the stamp files remember what is installed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/lakeport demo

lint: install-dev
	$(BIN)/ruff check engine pipelines tests benchmarks
	$(BIN)/ruff format --check engine pipelines tests benchmarks

typecheck: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/pytest

test: lint typecheck unit

test-slow: install-dev
	$(BIN)/pytest -m slow

# The tests on the oldest versions pyproject allows: every floor installed exactly.
MIN_VENV := .venv-min
test-min:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) tests/floors.py pyproject.toml > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/floors.txt -e '.[dev]'
	$(MIN_VENV)/bin/python tests/floors.py pyproject.toml --check
	$(MIN_VENV)/bin/pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) $(MIN_VENV) .mypy_cache .ruff_cache .pytest_cache

bench-store: install-dev
	$(BIN)/python -m benchmarks.bench_store --rows 1000000 --rows 5000000

bench-import: install-dev
	$(BIN)/python -m benchmarks.bench_import --rows 1000000 --rows 10000000

bench-profiles: install-dev
	$(BIN)/python -m benchmarks.bench_profiles --rows 1000000 --rows 10000000

bench-export: install-dev
	$(BIN)/python -m benchmarks.bench_export --rows 1000000 --rows 10000000
	$(BIN)/python -m benchmarks.bench_events --rows 1000000 --rows 10000000

bench-pgp: install-dev
	$(BIN)/python -m benchmarks.bench_pgp --rows 1000000
