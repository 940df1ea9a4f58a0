# Two commands do everything on a fresh machine (only python3 needed):
#   make demo   set up .venv, then prepare -> train -> evaluate the quickstart recipe on the embedded Gemma 3 270M
#   make test   set up .venv and .venv-unsloth, then run the test suite (offline) in both, side by side:
#                 test-main     .venv: requirements.txt (transformers 5.23, trl 1.16), pytest tests
#                 test-unsloth  .venv-unsloth: requirements.txt with requirements-gpu.txt's Python-level pins
#                               (transformers 5.17, trl 1.15, unsloth --no-deps; no CUDA-only package), pytest
#                               tests/unsloth_lane: the pipeline on Unsloth's CPU backend, in its own process
# Also:
#   make test-fast        the fast tier (-m "not slow"): what to run after each change, under a minute
#   make check-gpu-deps   resolve requirements.txt then requirements-gpu.txt for linux x86_64 / Python 3.12 (needs PyPI)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_RUN := runs/quickstart/demo
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# The Unsloth CPU lane: its own venv, because Unsloth's patches outlive its import (tools/gpu_pins.py says what it holds)
LANE := .venv-unsloth
LANE_PY := $(LANE)/bin/python
LANE_STAMP := $(LANE)/.installed
LANE_ENV := $(OFFLINE) GEMMA_FAST_LANE=unsloth UNSLOTH_CPU_BF16=0 GEMMA_FAST_CACHE=$(CURDIR)/$(LANE)/gemma_fast_cache \
	GEMMA_FAST_MAIN_PYTHON=$(CURDIR)/$(PY)

.PHONY: setup setup-unsloth demo test test-fast test-main test-unsloth check-gpu-deps clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(STAMP)

# requirements.txt with the GPU file's transformers/trl pins in one resolution, then unsloth + unsloth_zoo with
# --no-deps (they declare CUDA-only packages: torchvision, xformers, triton, bitsandbytes, cut_cross_entropy, torchao).
# Never `pip check`.
$(LANE_STAMP): requirements.txt requirements-gpu.txt tools/gpu_pins.py pyproject.toml
	test -x $(LANE_PY) || $(PYTHON) -m venv $(LANE)
	$(LANE_PY) -m pip install -q --upgrade pip
	$(PYTHON) tools/gpu_pins.py lane-requirements > $(LANE)/requirements-lane.txt
	$(LANE_PY) -m pip install -q -r $(LANE)/requirements-lane.txt
	$(LANE_PY) -m pip install -q --no-deps $$($(PYTHON) tools/gpu_pins.py lane-no-deps)
	$(LANE_PY) -m pip install -q --no-deps -e .
	touch $@

setup-unsloth: $(LANE_STAMP)

demo: setup
	$(PY) scripts/prepare_data.py --recipe quickstart
	$(PY) scripts/train_qlora.py --recipe quickstart --out $(DEMO_RUN) --overwrite
	$(PY) scripts/evaluate.py --recipe quickstart --adapter $(DEMO_RUN) --compare base

# Both lanes always run, side by side: most of each is single-threaded Python (imports, tiny models, subprocess
# launches), so on 2 cores they finish sooner together than one after the other (docs/benchmarks.md); the venvs are
# built side by side too. The lane's output goes to .venv-unsloth/lane.log and is printed after the main lane's. The
# exit status is the main lane's if it failed, else the lane's (pytest's own codes, so .ci/run still sees 5 for "no
# tests collected").
test:
	@$(MAKE) --no-print-directory -j2 setup setup-unsloth
	@$(LANE_ENV) $(LANE_PY) -m pytest -q tests/unsloth_lane > $(LANE)/lane.log 2>&1 & lane_pid=$$!; \
	trap 'kill $$lane_pid 2>/dev/null' INT TERM; \
	$(OFFLINE) $(PY) -m pytest -q tests; main=$$?; \
	wait $$lane_pid; lane=$$?; \
	echo "---- Unsloth CPU lane: tests/unsloth_lane in $(LANE), run beside the main lane ----"; cat $(LANE)/lane.log; \
	echo "make test: main lane exit $$main, Unsloth CPU lane exit $$lane"; \
	if [ $$main -ne 0 ]; then exit $$main; fi; exit $$lane

# The fast tier (pytest -m "not slow"): no real model, no subprocess, no export tools; under a minute here
test-fast: setup
	$(OFFLINE) $(PY) -m pytest -q -m "not slow" tests

test-main: setup
	$(OFFLINE) $(PY) -m pytest -q tests

test-unsloth: setup setup-unsloth
	$(LANE_ENV) $(LANE_PY) -m pytest -q tests/unsloth_lane

check-gpu-deps: setup
	$(PY) tools/check_gpu_requirements.py

clean:
	rm -rf data runs rag unsloth_compiled_cache _unsloth_temporary_saved_buffers
