# Quick start: `make demo` and `make test`. Each target sets up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup demo test test-slurm test-gpu gpu-check bench lint containers clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES) --show-failed-logs
	$(BIN)/snakemake --configfile config/demo.yaml --report results/demo/report.html
	@echo
	@cat results/demo/comparison.md
	@echo "Open results/demo/report.html for the report: tables, plots, provenance, every cell."

test: $(STAMP)
	$(BIN)/python -m pytest

# The demo grid through profiles/slurm on a local SLURM cluster (root; installs SLURM with apt and
# writes /etc/slurm/slurm.conf): `make test` skips it unless CI=true.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest --slurm-cluster -m slurm tests/test_slurm.py

# The GPU tests alone (tests/test_gpu.py and any other test marked gpu): every GPU path once, with
# peak GPU memory and time per step; skipped, with the reason, on a machine without CUDA.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu -rs

# On a GPU machine, in under 10 minutes: the GPU benchmark (python -m benchmarks.gpu) and the GPU
# tests, then which parts ran and which were skipped for missing packages. It uses .venv where it
# runs, else python3 (a GPU node's own environment), so it sets nothing up.
gpu-check:
	benchmarks/gpu_check.sh

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/demo.yaml

# One Apptainer image per conda env: containers/<env>.sif from containers/<env>.def.
APPTAINER := $(shell command -v apptainer || command -v singularity)
IMAGES := $(patsubst envs/%.yaml,containers/%.sif,$(wildcard envs/*.yaml))

ifeq ($(APPTAINER),)
containers:
	@echo "make containers: neither apptainer nor singularity is installed on this machine, so no"
	@echo "image was built. Build them where Apptainer is (most clusters: 'module load apptainer'),"
	@echo "or point 'containers:' in the workflow config at a registry (docs/slurm.md)."
	@exit 1
else
containers: $(IMAGES)
endif

containers/%.sif: containers/%.def envs/%.yaml containers/install-env.sh
	$(APPTAINER) build --force $@ $<

clean-demo:
	rm -rf results/demo
