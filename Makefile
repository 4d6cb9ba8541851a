# JFB reproduction. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: the pinned CUDA build runs on CPUs too; override for other platforms (e.g. TORCH_SPEC="torch torchvision").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= quick
SEEDS ?= 0
DATA_DIR ?= $(or $(JFB_DATA_DIR),data)
PYTEST_ARGS ?=
BENCH_ARGS ?= --quick
DRY_RUN ?=
REPRO_FLAGS = $(if $(filter-out 0 no false,$(DRY_RUN)),--dry-run)

.PHONY: help venv test test-faults reproduce-table update-reference table bench data clean-venv

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_SPEC)
	$(VENV)/bin/pip install -q -e ".[dev,launchers]"
	touch $@

venv: $(VENV)/.installed  ## create the local virtual environment (.venv) with everything installed

test: venv  ## set up the environment and run the test suite
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-faults: venv  ## fault-injection tests only (kill -9, disk full, failing runs, W&B down)
	$(PY) -m pytest -q -m faults $(PYTEST_ARGS)

reproduce-table: venv  ## train PROFILE's runs (quick|paper|smoke) here into reproduced/PROFILE/runs, build its tables and figures there (DRY_RUN=1: commands and time estimate only)
	$(PY) -m jfb.repro.reproduce --profile $(PROFILE) --seeds "$(SEEDS)" --data-dir "$(DATA_DIR)" $(REPRO_FLAGS)

update-reference: venv  ## deliberately replace the committed reference results/PROFILE/ with runs made here (same sweep; DRY_RUN=1 supported)
	$(PY) -m jfb.repro.reproduce --profile $(PROFILE) --seeds "$(SEEDS)" --data-dir "$(DATA_DIR)" --results-root results $(REPRO_FLAGS)

table: venv  ## rebuild reproduced/PROFILE/ tables and figures from this machine's run records only
	$(PY) -m jfb.repro.tables --profile $(PROFILE)

bench: venv  ## benchmark every gradient method (time split, memory vs depth) into results/bench/ (BENCH_ARGS="--quick")
	$(PY) -m jfb.bench $(BENCH_ARGS)

data: venv  ## download the datasets torchvision can download into DATA_DIR
	$(PY) scripts/download_data.py --data-dir "$(DATA_DIR)"

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
