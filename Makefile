# Developer entry points. Every target that needs Python depends on `venv`, which
# creates .venv on a fresh clone and reinstalls whenever pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv serve test bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: venv
	$(VENV)/bin/roomactors serve --config settings.toml

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/state_res.py
