# The two commands of the README: `make up` runs the whole system, `make test` runs the
# suite (installing what is missing, starting every server it needs and stopping them after).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up down status logs test test-unit lint gen gen-check venv tools clean

up: venv tools
	$(BIN)/ordermesh up

down:
	@if [ -x $(BIN)/ordermesh ]; then $(BIN)/ordermesh down; fi

status: venv
	$(BIN)/ordermesh status

logs: venv
	$(BIN)/ordermesh logs

test: venv tools
	scripts/test

test-unit: venv
	$(BIN)/pytest tests/unit -q

lint: venv tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	node_modules/.bin/buf lint
	scripts/breaking

gen: venv tools
	scripts/gen

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

tools: node_modules/.installed build/protodeps/.installed

# The Google API protos our protos import, copied out of the pinned googleapis-common-protos
# wheel (buf cannot reach its registry here).
build/protodeps/.installed: $(VENV)/.installed tools/protodeps.py
	$(BIN)/python tools/protodeps.py build/protodeps
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean: down
	rm -rf .run build
