# One command runs the main job, one runs the tests; each installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test install bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install  ## the main job on the embedded digits
	$(PY) train.py fit --config conf/digits/ann.yaml

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/snn_step.py

clean:
	rm -rf runs .pytest_cache
