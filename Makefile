# bayescale: `make demo` and `make test` set everything up on a fresh machine.
# PyMC >= 6 and ArviZ >= 1 need Python >= 3.12; the machine's default python3 may be older,
# so pick the newest suitable interpreter ourselves (override with `make PYTHON=...`).

VENV ?= .venv
ifndef PYTHON
PYTHON := $(shell for c in python3.13 python3.12 \
	$$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3 2>/dev/null) \
	$$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3 2>/dev/null) \
	python3; do \
	  "$$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 \
	    && { command -v "$$c" 2>/dev/null || echo "$$c"; } && break; \
	done)
endif
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv docs docs-clean clean

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: bayescale needs Python >= 3.12 (PyMC >= 6, ArviZ >= 1) and none was found;"; \
	  echo "       install python3.12 or python3.13, or run: make PYTHON=/path/to/python3.12"; \
	  exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test,dask]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayescale demo --force

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The documentation site, warnings as errors, into docs/_build/html; then the rendering test.
# Notebooks are executed once (tiny settings) and cached in docs/_build/.notebooks, where the
# test suite's notebook test also leaves them, so CI does not run their fits twice.
DOCS_STAMP := $(VENV)/.installed-docs
SPHINXOPTS ?= -W --keep-going -q

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e ".[test,dask,docs]"
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/python -m sphinx -b html $(SPHINXOPTS) docs docs/_build/html
	BAYESCALE_DOCS_BUILT=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_docs_render.py

docs-clean:
	rm -rf docs/_build docs/api/generated docs/notebooks docs/_generated

clean:
	rm -rf $(VENV) demo_output .pytest_cache
