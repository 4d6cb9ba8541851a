# JFB reproduction. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The environment every target runs in: the active Python (PYTHON) when it already provides torch, hydra and
# this checkout's jfb (a conda environment from environment.yml, CI's own environment), else $(VENV), built on
# first use. Spec lookups only: nothing is imported, so `make help` stays instant.
ACTIVE_ENV := $(shell $(PYTHON) -c "import importlib.util as u, os, sys; s = [u.find_spec(m) for m in ('jfb', 'torch', 'hydra')]; \
	sys.exit(not all(s) or os.path.dirname(os.path.realpath(s[0].origin)) != os.path.realpath('src/jfb'))" 2>/dev/null && echo yes)
PY := $(if $(ACTIVE_ENV),$(PYTHON),$(VENV)/bin/python)
ENV_STAMP := $(if $(ACTIVE_ENV),,$(VENV)/.installed)
# torch: the pinned CUDA build runs on CPUs too; override for other platforms (e.g. TORCH_SPEC="torch torchvision").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= quick
SEEDS ?=
DATA_DIR ?= $(or $(JFB_DATA_DIR),data)
PYTEST_ARGS ?=
# `make test-fast`: these files, without the tests marked slow or faults (`make test` runs everything).
FAST_TESTS ?= tests/test_core_api.py tests/test_core_gradients.py tests/test_core_solvers.py tests/test_models.py \
	tests/test_data.py tests/test_config_keys.py tests/test_train.py tests/test_launchers.py tests/test_repro_tables.py \
	tests/test_host_memory.py
BENCH_ARGS ?= --quick
DRY_RUN ?=
REPRO_FLAGS = $(if $(filter-out 0 no false,$(DRY_RUN)),--dry-run)

.PHONY: help venv test test-fast test-faults reproduce-table update-reference table bench data clean-venv

help:  ## list the targets, and the Python they use
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "Python: $(PY)$(if $(ACTIVE_ENV), (the active environment), (the local environment, built on first use))"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_SPEC)
	$(VENV)/bin/pip install -q -e ".[dev,launchers]"
	touch $@

venv: $(ENV_STAMP)  ## the environment the targets use: the active Python if it provides this checkout's jfb, else .venv (created here)
	@echo "make uses $$($(PY) -c 'import sys; print(sys.executable)')"

test: venv  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: venv  ## the edit loop, a few minutes: core, models, data, configs, tables and a few end-to-end runs
	$(PY) -m pytest -q -m "not slow and not faults" $(FAST_TESTS) $(PYTEST_ARGS)

test-faults: venv  ## fault-injection tests only (kill -9, disk full, failing runs, W&B down)
	$(PY) -m pytest -q -m faults $(PYTEST_ARGS)

reproduce-table: venv  ## train PROFILE's runs (quick|paper|smoke) here into reproduced/PROFILE/runs, build its tables and figures there (DRY_RUN=1: commands and time estimate only)
	$(PY) -m jfb.repro.reproduce --profile $(PROFILE) $(if $(SEEDS),--seeds "$(SEEDS)") --data-dir "$(DATA_DIR)" $(REPRO_FLAGS)

update-reference: venv  ## deliberately replace the committed reference results/PROFILE/ with runs made here (same sweep; DRY_RUN=1 supported)
	$(PY) -m jfb.repro.reproduce --profile $(PROFILE) $(if $(SEEDS),--seeds "$(SEEDS)") --data-dir "$(DATA_DIR)" --results-root results $(REPRO_FLAGS)

table: venv  ## rebuild reproduced/PROFILE/ tables and figures from this machine's run records only
	$(PY) -m jfb.repro.tables --profile $(PROFILE)

bench: venv  ## benchmark every gradient method (time split, memory vs depth) into results/bench/ (BENCH_ARGS="--quick")
	$(PY) -m jfb.bench $(BENCH_ARGS)

data: venv  ## download the datasets torchvision can download into DATA_DIR
	$(PY) -m jfb.data.download --data-dir "$(DATA_DIR)"

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
