# Two commands set up everything on a fresh machine (Python >= 3.10 with venv):
#   make demo   create .venv, install dlcli, train the digits quick start, print its metrics
#   make test   create .venv, install dlcli with test extras, run the quick test tier (under 10 min)
#   make test-slow   the rest (tests marked slow or distributed); make test-all: both
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/digits_cnn

.PHONY: demo test test-slow test-all install clean docs lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing dlcli and its dependencies into $(VENV) (a few minutes the first time) ..."
	$(BIN)/python -m pip install --progress-bar on -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/dlcli train recipes/digits_cnn.yaml --run-dir $(RUN) --overwrite
	@echo "metrics: $(RUN)/metrics.json"
	@cat $(RUN)/metrics.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow and not distributed"

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m "slow or distributed"

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check dlcli tests benchmarks

docs: $(VENV)/.installed
	$(BIN)/dlcli schema --markdown --out docs/recipes.md

clean:
	rm -rf $(VENV) runs .pytest_cache
