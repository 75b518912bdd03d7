# Two commands matter: `make bench` and `make test`. Both build the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PyTorch's CPU wheel: a plain `torch` from PyPI is a multi-GB CUDA build on Linux.
TORCH  ?= torch==2.13.0
PRESET ?= default
ARGS   ?=

.PHONY: help venv test test-fast bench bench-quick plots validate list floor gpu-check lint clean

help:
	@echo "make bench        run the default sweep, store results/<machine>/ and draw plots"
	@echo "make bench-quick  the same with --preset quick (about a minute)"
	@echo "make test         agreement suite over every backend, harness tests (CUDA via simulator)"
	@echo "make plots        redraw every figure from stored results only"
	@echo "make validate     agreement table of every available backend"
	@echo "make gpu-check    on a GPU machine with the packages preinstalled: validate + GPU bench"

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" || echo "note: $(TORCH) not installable here; the torch backends will report why"
	$(BIN)/python -m pip install -q -e ".[test,peers]" || $(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	NUMBA_ENABLE_CUDASIM=$${NUMBA_ENABLE_CUDASIM-1} $(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check backends harness tests

bench: $(STAMP)
	$(BIN)/python -m harness bench --preset $(PRESET) $(ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m harness bench --preset quick $(ARGS)

plots: $(STAMP)
	$(BIN)/python -m harness plot $(ARGS)

validate: $(STAMP)
	$(BIN)/python -m harness validate $(ARGS)

list: $(STAMP)
	$(BIN)/python -m harness list

floor: $(STAMP)
	$(BIN)/python -m harness floor $(ARGS)

# The GPU machine has numba, numba-cuda, cupy, torch, jax preinstalled and reaches no package
# registry: run the repository in place, no venv.
gpu-check:
	PYTHONPATH=. python3 -m harness list
	PYTHONPATH=. python3 -m pytest -q -m "not slow" tests/test_agreement.py
	PYTHONPATH=. python3 -m harness validate
	PYTHONPATH=. python3 -m harness bench --preset $(PRESET) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
