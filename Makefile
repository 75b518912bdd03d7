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
	@echo "make gpu-check    on a GPU machine with the packages preinstalled: CUDA tests, validate, a short"
	@echo "                  sweep and the plan probes, each step bounded, into \$$OUT (or gpu-check-out/);"
	@echo "                  expected at most 8 minutes (not yet measured on a GPU)"
	@echo "make gpu-bench PART=1|2  on that machine: the GPU sweep (batch 4-256 | 1024-65536) into"
	@echo "                  \$$OUT/<machine>/ (or results/); expected under 9 minutes each (not yet measured)"

# pip writes each package's bytecode on one core as it installs (a minute of the two-minute build
# on 2 cores, most of it torch's and jax's); PIP: installed without it, then compiled once on every
# core (compileall -j 0), so imports still find their .pyc where PYTHONDONTWRITEBYTECODE is set.
# compileall's status is not checked: some packages ship files for newer Pythons (torch's
# py312_intrinsics.py) that fail to compile, as pip ignores them when it compiles. The packages'
# own test folders (a third of the venv's .py files: pandas, sympy, numba, scipy, ...) are left out:
# nothing here imports them.
PIP    := $(BIN)/python -m pip install -q --no-compile
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH)" || echo "note: $(TORCH) not installable here; the torch backends will report why"
	$(PIP) -e ".[test,peers]" || $(PIP) -e ".[test]"
	$(PIP) -e ".[ladder]" || echo "note: the [ladder] extra (cffi, cython, pythran, warp-lang) is not installable here; those backends will report why"
	$(BIN)/python -m compileall -q -j 0 -x 'site-packages/.*/tests?/' $(VENV)/lib > /dev/null 2>&1 || true
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
# gpu-check: harness.gpu_check, one command bounded by its steps' budgets (450 s in all): the CUDA
# tests under a per-test watchdog, `validate` of every GPU backend, the gpu-check sweep (runs.csv and
# machine.json with the GPU ceilings under $(GPU_CHECK_OUT)/<machine>/), the block/grid probes.
# Exit status 0 ok, 1 a step failed, 3 no CUDA device (nothing checked).
# gpu-bench: the gpu grid in two parts, one command each (presets gpu-1 and gpu-2), results into
# $(GPU_OUT)/<machine>/ (runs.csv, machine.json with the GPU ceilings; plots are drawn back here
# with `make plots`).
GPU_PY  ?= python3
GPU_OUT ?= $(if $(OUT),$(OUT),results)
GPU_CHECK_OUT ?= $(if $(OUT),$(OUT),gpu-check-out)
PART    ?=
gpu-check:
	PYTHONPATH=. $(GPU_PY) -m harness.gpu_check --out $(GPU_CHECK_OUT) $(ARGS)

gpu-bench:
	@case "$(PART)" in 1|2) ;; *) echo "make gpu-bench: set PART=1 (batch 4-256) or PART=2 (batch 1024-65536), one command each" >&2; exit 2;; esac
	PYTHONPATH=. $(GPU_PY) -m harness bench --preset gpu-$(PART) --out $(GPU_OUT) --no-plots --no-progress $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
