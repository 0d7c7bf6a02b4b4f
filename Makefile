# `make test` and `make demo` work on a fresh machine: they create .venv when it is missing.
# uv installs the dependencies (the same versions as pip resolves here, in about 12 s instead
# of pip's 80 s on the 2-core machine) and compiles their bytecode once: where
# PYTHONDONTWRITEBYTECODE is set, as on these machines, no process writes it, and each of the
# suite's processes would compile every module it imports again (imports take twice as long).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m compileall -q jaxadv
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/jaxadv train --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/estimators.py

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxadv tests benchmarks

# the site (Sphinx, docs/conf.py) into docs/_build/html; a warning is an error
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache docs/_build
