# The two README commands: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := False
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install run test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# dvc needs a git repository; a fresh clone has one, a copied folder may not.
run: $(STAMP)
	test -d .git || git init --quiet
	test -d .dvc || $(BIN)/dvc init --quiet
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check medr1 stages tests

clean:
	rm -rf data/raw data/processed models metrics reports .dvc/cache
