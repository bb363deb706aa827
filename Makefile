# One command runs the main job, one runs the tests; each installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo reproduce test test-e2e test-recipes install bench gpu-check clean

# pip would compile every installed file to bytecode (half the install's time; most are never imported): instead
# one import of the entry points caches the bytecode of what a run imports, even where the environment sets
# PYTHONDONTWRITEBYTECODE (else every process of a run would compile torch and Lightning anew)
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[test]'
	$(PY) -c "import srsnn_cli.train, srsnn_cli.pipeline, srsnn_cli.report, torch.distributed, pytest"
	touch $@

install: $(VENV)/.installed

demo: install  ## the whole pipeline on the embedded digits, one seed (robust ANN -> HYDRA 90% -> SNN -> fine-tune -> evaluation -> report)
	$(PY) pipeline.py --config conf/digits/pipeline.yaml

reproduce: install  ## the demo's pipeline over 3 seeds (about 3x the demo): publishes results/digits (mean and spread)
	$(PY) pipeline.py --config conf/digits/seeds.yaml

test: install  ## lint (ruff check + format check), then the suite
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not recipes and not e2e"  # 2 workers, a file per worker (shared fixtures), one thread each

test-e2e: install  ## the end-to-end runs that take minutes: pipelines, killed-and-resumed fits, DDP fine-tuning (CI runs it too)
	$(PY) -m pytest -n 2 --dist loadfile -m e2e

test-recipes: install  ## the paper recipes' stage chains on synthetic data of their true shape (CI runs it too)
	$(PY) -m pytest -n 2 -m recipes

bench: install
	$(PY) bench/snn_step.py

gpu-check: install  ## on a machine with a GPU: tests, recipe chains and benches on CUDA; output kept in results/gpu/
	PY=$(PY) bash bench/gpu_check.sh

clean:
	rm -rf runs .pytest_cache
