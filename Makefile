# Bascule: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: deps system cluster-up cluster-down images demo test test-unit bench lint

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,sampleapp]'
	@rm -f $(VENV)/.installed-* && touch $@

system:
	@scripts/install-system.sh

deps: system $(STAMP)

cluster-up: system
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

demo: deps
	@PATH=$(abspath $(VENV))/bin:$$PATH scripts/demo.sh

test: deps
	$(VENV)/bin/pytest

test-unit: deps
	$(VENV)/bin/pytest tests/unit

bench: deps
	@bench/cluster.sh
	@PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m bench.deploy

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports --no-cache
