# Two commands do everything on a fresh machine (only python3 needed):
#   make demo   set up .venv, then prepare -> train -> evaluate the quickstart recipe on the embedded Gemma 3 270M
#   make test   set up .venv, then run the test suite (offline)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_RUN := runs/quickstart/demo

.PHONY: setup demo test clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

setup: $(STAMP)

demo: setup
	$(PY) scripts/prepare_data.py --recipe quickstart
	$(PY) scripts/train_qlora.py --recipe quickstart --out $(DEMO_RUN) --overwrite
	$(PY) scripts/evaluate.py --recipe quickstart --adapter $(DEMO_RUN) --compare base

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

clean:
	rm -rf data runs rag
