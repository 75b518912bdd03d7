# Two commands matter: `make bench` and `make test`. Both build the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PyTorch's CPU wheel: a plain `torch` from PyPI is a multi-GB CUDA build on Linux.
TORCH  ?= torch==2.13.0
PRESET ?= default
# pytest workers for `make test` / `make test-fast` (pytest-xdist); 1 runs the suite in one process.
JOBS   ?= 2
ARGS   ?=

.PHONY: help venv test test-fast bench bench-quick plots validate list floor cuda-ptx gpu-check gpu-bench lint clean

help:
	@echo "make bench        run the default sweep, store results/<machine>/ and draw plots"
	@echo "make bench-quick  the same with --preset quick (about a minute)"
	@echo "make test         agreement suite over every backend, harness tests (CUDA via simulator): what CI runs"
	@echo "make test-fast    the same without the tests marked slow (under 3 minutes on 2 cores)"
	@echo "make plots        redraw every figure from stored results only"
	@echo "make validate     agreement table of every available backend"
	@echo "make cuda-ptx     compile every CUDA kernel for real GPU architectures (no GPU needed;"
	@echo "                  ARGS='--compiler numba-cuda --compiler numba-cuda-mlir' for both compilers)"
	@echo "make gpu-check    on a GPU machine with the packages preinstalled: tests + validate"
	@echo "make gpu-bench    on that machine: the GPU sweep into \$$OUT/<machine>/ (or results/)"

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" || echo "note: $(TORCH) not installable here; the torch backends will report why"
	$(BIN)/python -m pip install -q -e ".[test,peers]" || $(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q -e ".[ladder]" || echo "note: the [ladder] extra (cffi, cython, pythran, warp-lang) is not installable here; those backends will report why"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	NUMBA_ENABLE_CUDASIM=$${NUMBA_ENABLE_CUDASIM-1} $(BIN)/python -m pytest -n $(JOBS) --dist worksteal $(ARGS)

test-fast: $(STAMP)
	NUMBA_ENABLE_CUDASIM=$${NUMBA_ENABLE_CUDASIM-1} $(BIN)/python -m pytest -n $(JOBS) --dist worksteal -m "not slow" $(ARGS)

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

cuda-ptx: $(STAMP)
	$(BIN)/python -m harness.cuda_ptx $(ARGS)

# On a GPU machine that has numba, numba-cuda, cupy, torch and jax preinstalled and reaches no
# package registry: run the repository in place (PYTHONPATH=., the machine's python3, no venv).
# gpu-check: the agreement, CUDA and GPU-floor suites on the real device, then `validate` (a few minutes).
# gpu-bench: the GPU sweep (preset gpu: sized to finish within 10 minutes), results into
# $(GPU_OUT)/<machine>/ (runs.csv, machine.json with the GPU ceilings; plots are drawn back here
# with `make plots`).
GPU_PY  ?= python3
GPU_OUT ?= $(if $(OUT),$(OUT),results)
gpu-check:
	PYTHONPATH=. $(GPU_PY) -m harness list
	NUMBA_ENABLE_CUDASIM=0 PYTHONPATH=. $(GPU_PY) -m pytest -q -p no:cacheprovider tests/test_agreement.py tests/test_numba_cuda.py tests/test_gpu_floor.py tests/test_peers.py $(ARGS)
	PYTHONPATH=. $(GPU_PY) -m harness validate

gpu-bench:
	PYTHONPATH=. $(GPU_PY) -m harness bench --preset gpu --out $(GPU_OUT) --no-plots --no-progress $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
