# Portwatch. `make run` serves the admin at http://127.0.0.1:8000/admin/, `make test` runs the suite, `make lint` checks style.
# Each creates .venv/ with python3 -m venv when missing and installs the pinned requirements only when they change.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORTWATCH_HOST ?= 127.0.0.1
PORTWATCH_PORT ?= 8000
PYTEST_ARGS ?=

# A stamp named after the requirements' hash: editing a file (or going back to an older one) reinstalls.
hash = $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest()[:16])' $(1))
RUNTIME_STAMP := $(VENV)/.installed-runtime-$(call hash,requirements.txt)
DEV_STAMP := $(VENV)/.installed-dev-$(call hash,requirements.txt requirements-dev.txt)

.PHONY: help run test lint

help:
	@echo "make run   serve Portwatch on http://$(PORTWATCH_HOST):$(PORTWATCH_PORT)/ (PORTWATCH_HOST and PORTWATCH_PORT may be set in the environment)"
	@echo "make test  run the test suite (pass options with PYTEST_ARGS='-k smtp')"
	@echo "make lint  ruff check and ruff format --check"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-runtime-*
	touch $@

$(DEV_STAMP): | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-runtime-*
	touch $@ $(RUNTIME_STAMP)  # requirements-dev.txt includes requirements.txt

run: $(RUNTIME_STAMP)
	@# runmonitor migrates, creates the admin user (password printed once), then runs the web site,
	@# a Celery worker and the dispatcher until Ctrl-C stops them all.
	$(PY) manage.py runmonitor --host $(PORTWATCH_HOST) --port $(PORTWATCH_PORT)

# The tests get throwaway data directories, so they never touch var/ (secret key, SQLite, broker).
# The whole suite runs on SQLite, then the tests marked `postgres` run again on PostgreSQL
# (TEST_DATABASE_URL; pytest-django creates and drops its own test_ database there), each run with
# a directory of its own: a message one run left in the filesystem broker's folder is not the other's.
# pytest's exit status passes through: 5 ("no tests collected") fails the target too.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test: $(DEV_STAMP)
	sqlite=$$(mktemp -d) && postgres=$$(mktemp -d) && trap 'rm -rf "$$sqlite" "$$postgres"' EXIT && \
	PORTWATCH_DATA_DIR="$$sqlite" $(PY) -m pytest $(PYTEST_ARGS) && \
	PORTWATCH_DATA_DIR="$$postgres" DATABASE_URL="$(TEST_DATABASE_URL)" $(PY) -m pytest -m postgres $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
