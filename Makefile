# The two commands of the README: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-browser lint install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## run: install, migrate the SQLite database, load the demo on first run, serve on :8000
run: install
	$(BIN)/access-audit migrate
	$(BIN)/access-audit demo --if-empty
	$(BIN)/access-audit serve --host $(HOST) --port $(PORT)

## test: install with the test extra and run the suite (AUDIT_TEST_DATABASE_URL picks PostgreSQL)
test: install-test
	$(BIN)/pytest -q

## test-browser: the dashboard in Debian's Chromium (/usr/bin/chromium) through Playwright,
## against a real server with the demo; screenshots and axe results in bench/results/screens/
test-browser: install-test
	rm -rf bench/results/screens && mkdir -p bench/results/screens
	AUDIT_BROWSER_TESTS=1 $(BIN)/pytest -q tests/browser

## lint: ruff, mypy strict, the import layers (import-linter), and Alembic's check that
## models and migrations agree
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@tmp=$$(mktemp -d); \
	  AUDIT_DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic upgrade head >/dev/null 2>&1 && \
	  AUDIT_DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic check; \
	  status=$$?; rm -rf $$tmp; exit $$status

## bench: the benchmarks of bench/ (each prints a table and writes JSON beside it)
bench: install-test
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
