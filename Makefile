# Quick start: `make demo` and `make test`. Each target sets up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup demo test bench lint clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES)
	$(BIN)/snakemake --configfile config/demo.yaml --report results/demo/report.html
	@echo
	@cat results/demo/comparison.md
	@echo "Open results/demo/report.html for the report: tables, plots, provenance, every cell."

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/demo.yaml

clean-demo:
	rm -rf results/demo
