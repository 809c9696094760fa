# The two commands of the README: `make demo` and `make test`. Both bootstrap first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test test-unit test-integration lint clean

bootstrap:
	@bash stack/bootstrap.sh

demo: bootstrap
	@$(VENV)/bin/coach demo

test: bootstrap
	@$(VENV)/bin/pytest

test-unit: bootstrap
	@$(VENV)/bin/pytest -m unit

test-integration: bootstrap
	@$(VENV)/bin/pytest -m "integration or drill"

lint:
	@$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

clean:
	-@$(VENV)/bin/coach stack down
	rm -rf .coach .coach-test
