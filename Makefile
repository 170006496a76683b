# The README's commands. Each sets itself up: a virtualenv in .venv, then the work.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Tests run on PostgreSQL: the local server unless DATABASE_URL says otherwise.
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/oo_ml)

.PHONY: install run test lint format bench

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	VENV=$(VENV) bin/run

test: install
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	VENV=$(VENV) bin/bench-load
