# Bascule: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: deps system helm cluster-up cluster-down images flow-image demo test test-unit bench lint lock mutation

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,sampleapp]'
	@rm -f $(VENV)/.installed-* && touch $@

system:
	@scripts/install-system.sh

# Bytecode for Bascule's own modules, written once: with PYTHONDONTWRITEBYTECODE set (as on
# machines of this kind), every `bascule` process would compile them again (~0.2 s of CPU
# each, measured on the tests' hundreds of processes).
deps: system $(STAMP)
	@$(PY) -m compileall -q bascule flows tasks tests >/dev/null

# helm for `manifests:` Helm charts, built from the Go module scripts/helm/go.mod pins into
# ~/.cache/bascule (once per version); prints its path. The tests build it when they need it.
helm:
	@scripts/build-helm.sh

cluster-up: system
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

# The Kubernetes work pool's flow image, Bascule at COMMIT (default HEAD), imported into the
# local cluster (README: Flows as Kubernetes Jobs); prints its reference.
flow-image: system
	@tests/cluster/flow-image.sh $(COMMIT)

demo: deps
	@PATH=$(abspath $(VENV))/bin:$$PATH scripts/demo.sh

# Independent tests in parallel on one shared cluster and Prefect server, then the tests marked
# `alone` one at a time (pyproject.toml's markers say which and why); both runs always report.
TEST_WORKERS ?= 4
test: deps
	@rc=0; $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not alone" || rc=$$?; \
		$(VENV)/bin/pytest -m alone || rc=$$?; exit $$rc

test-unit: deps
	$(VENV)/bin/pytest tests/unit

bench: deps
	@bench/cluster.sh
	@PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m bench.deploy
	@PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m bench.realpath

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports --no-cache

# requirements.lock: every package the deploy workflow installs (pyproject.toml's dependencies
# and its build backend), pinned with their hashes, for `pip install --require-hashes`. Run it
# after changing those dependencies (`make test` says when the lock no longer matches); it keeps
# the pins it can, LOCK_ARGS=--upgrade moves every one to the newest release.
lock: deps
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --build-deps-for wheel --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) -o requirements.lock pyproject.toml

# Mutation testing of the pure decision modules ([tool.mutmut] in pyproject.toml): each
# mutant runs only the unit tests that reach the mutated function, one at a time (the machine
# is shared); then the share killed per module. Not part of `make test`: it takes a while.
# Its own venv: the tool, pinned, and the dependencies requirements.lock pins, without hashes
# (Bascule itself is imported from the mutated copy, mutants/, never installed there).
MUT_VENV ?= .venv-mut
MUT_STAMP := $(MUT_VENV)/.installed-$(shell cat requirements.lock scripts/mutation-requirements.txt | sha1sum | cut -c1-12)

$(MUT_STAMP): requirements.lock scripts/mutation-requirements.txt
	@test -x $(MUT_VENV)/bin/python || python3 -m venv $(MUT_VENV)
	sed -e '/--hash=/d' -e 's/ *\\$$//' requirements.lock > $(MUT_VENV)/requirements.txt
	$(MUT_VENV)/bin/pip install -q --disable-pip-version-check -r $(MUT_VENV)/requirements.txt \
		-r scripts/mutation-requirements.txt
	@rm -f $(MUT_VENV)/.installed-* && touch $@

mutation: $(MUT_STAMP)
	rm -rf mutants && mkdir mutants
	$(MUT_VENV)/bin/mutmut run --max-children 1 > mutants/run.log 2>&1 || (tail -40 mutants/run.log; exit 1)
	$(MUT_VENV)/bin/python scripts/mutation_report.py
