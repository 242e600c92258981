# The two Quick-start commands of the README:
#   make demo   -- install the runtime (no torch) into .venv-run and run the main job
#   make test   -- install everything into .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
RUNVENV ?= .venv-run

.PHONY: demo test lint install-dev suricata lab clean

$(RUNVENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUNVENV)
	$(RUNVENV)/bin/pip install -q -e .
	touch $@

demo: $(RUNVENV)/.installed
	$(RUNVENV)/bin/bnn-sidecar demo --out-dir demo-out

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev,train]'
	touch $@

install-dev: $(VENV)/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sidecar tests
	$(VENV)/bin/mypy

test: $(VENV)/.installed
	$(VENV)/bin/ruff check sidecar tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

suricata:
	bash scripts/install-suricata.sh

# Rebuild the traffic lab (root: namespaces, real tools) and its cross-source table.
lab: $(VENV)/.installed
	bash scripts/lab/build.sh
	$(VENV)/bin/python scripts/lab/cross_source.py
	$(VENV)/bin/python scripts/lab/diagnose.py
	$(VENV)/bin/python scripts/lab/thirdparty.py derive
	$(VENV)/bin/python scripts/lab/thirdparty.py eval

clean:
	rm -rf $(VENV) $(RUNVENV)
