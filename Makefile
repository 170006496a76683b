# The README's commands. Each sets itself up: a virtualenv in .venv, then the work.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Tests run on PostgreSQL: the local server unless DATABASE_URL says otherwise.
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/oo_ml)

# The admin's browser tests drive Debian's Chromium (Playwright never downloads one).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

FUZZ_STAMP := $(VENV)/.fuzz-stamp

.PHONY: install run test lint format bench fuzz screenshots

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# exec: a SIGTERM to make reaches bin/run itself (make passes it to its child,
# which would otherwise be a shell that dies and leaves bin/run running).
run: install
	VENV=$(VENV) exec bin/run

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

test: install $(CHROMIUM)
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest $(ARGS)

# docs/screenshots/: the admin pages the README shows, taken by their browser test.
screenshots: install $(CHROMIUM)
	OO_ML_SCREENSHOTS=docs/screenshots DATABASE_URL=$(TEST_DATABASE_URL) \
		$(PY) -m pytest oo_ml/tests/test_admin_pages_browser.py -q -k sideways

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The load generator of `make bench`, from Debian like Chromium.
WRK := /usr/bin/wrk

$(WRK):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk

bench: install $(WRK)
	VENV=$(VENV) bin/bench-load

$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,fuzz]"
	touch $(FUZZ_STAMP)

# schemathesis over the whole OpenAPI schema against a real server (bin/fuzz).
fuzz: $(FUZZ_STAMP)
	VENV=$(VENV) bin/fuzz
