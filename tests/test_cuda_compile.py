"""The CUDA kernels through the real CUDA toolchains, without a GPU, on numpy 2.5's namespace.

The simulator (test_numba_cuda.py) checks what the kernels compute; it does not compile them. Here
``harness.cuda_ptx`` compiles every kernel with numba-cuda (NVVM) and numba-cuda-mlir, each
followed by ptxas (nvJitLink, with the device runtime for the grid-sync kernels), for the oldest
and the newest architecture CUDA 13 supports (``BUILDS``: which dtypes for which), in processes
with the simulator off. So a construct the real CUDA target rejects, a kernel whose launch would
run out of registers or that spills fails CI instead of the first session that has a GPU.

numpy 2.5 is not installable here, so these processes stand in for it: they delete
``numpy.row_stack`` (the function numpy 2.5 removed, whose absence breaks every numba-cuda
0.30 compile) before anything imports numba. ``test_the_stand_in_breaks_numba_cuda_without_the_alias``
shows that the stand-in does reproduce the break.
"""

# ruff: noqa: E741 (D and O as in SPEC.md)

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REGISTERS_PER_BLOCK = 65536  # 64K 32-bit registers per block on every architecture from sm_50 to sm_120
#: numpy 2.5 stand-in: the removed function is gone before numba-cuda can look for it.
WITHOUT_ROW_STACK = "import numpy; del numpy.row_stack; "


def _mlir_missing() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("numba_cuda_mlir") else "numba-cuda-mlir is not installed (pip install numba-cuda-mlir)"


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)  # fmt: skip


def _cuda_ptx(*args: str, stand_in: bool = True) -> subprocess.Popen:
    code = (WITHOUT_ROW_STACK if stand_in else "") + (
        "import runpy, sys; sys.argv[0] = 'harness.cuda_ptx'; runpy.run_module('harness.cuda_ptx', run_name='__main__')"
    )
    return _python(code, *args)


#: What CI compiles: every kernel, both dtypes and both widths, for the newest architecture (Hopper:
#: the H100/H200 the GPU checks run on); for the oldest (Turing) the float64 kernels only -- they
#: use twice the registers of the float32 ones, so a register or spill limit shows there first.
#: The oldest architecture's float32 kernels (and sm_80, sm_89) are compiled by ``make cuda-ptx``,
#: not by CI: about a quarter of this test's time (a minute of one core per compiler) for a
#: combination that differs from the ones compiled here only in its element type.
BUILDS = {"9.0": ("float64", "float32"), "7.5": ("float64",)}
ARCHS = tuple(BUILDS)


def _compile_every_kernel(compiler: str, arch: str) -> tuple[int, str, list[dict]]:
    """Every kernel of BUILDS[arch] compiled for ``arch`` by ``compiler``, in a fresh process."""
    # numba-cuda-mlir registers np.row_stack only for (2, 0) <= numpy < (2, 5), by numpy's version:
    # on this numpy (< 2.5) the stand-in would break it where numpy 2.5 does not. It runs as is.
    dtypes = (f"--dtype={d}" for d in BUILDS[arch])
    proc = _cuda_ptx("--json", f"--compiler={compiler}", f"--arch={arch}", *dtypes, stand_in=compiler == "numba-cuda")
    stdout, stderr = proc.communicate(timeout=900)
    return proc.returncode, stderr, [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _check_every_kernel(result: tuple[int, str, list[dict]], compiler: str, arch: str) -> None:
    code, stderr, records = result
    assert code == 0, stderr[-3000:]
    kernels = _kernel_names()
    got = {(r["arch"], r["dtype"], r["D"], r["O"], r["kernel"]) for r in records}
    sm = "sm_" + arch.replace(".", "")
    for dtype in BUILDS[arch]:
        for D, O in ((3, 1), (5, 3)):
            assert {(sm, dtype, D, O, k) for k in kernels} <= got, (compiler, sm, dtype, D, O)
    for r in records:
        assert r["compiler"] == compiler
        # A launch of launch_bound threads must fit the register file, or it fails with
        # CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on the device; min_blocks such blocks must fit it
        # together (launch bounds (256, 2): two blocks per SM); and nothing spills at that bound.
        assert isinstance(r["registers"], int) and r["registers"] > 0, r
        assert r["registers"] * r["launch_bound"] * r["min_blocks"] <= REGISTERS_PER_BLOCK, r
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        # the grid kernels ask for two blocks per SM where that spills nothing (D + O <= 4)
        grid = r["kernel"] in ("grid3", "grid2")
        two = grid and r["D"] + r["O"] <= 4
        assert r["min_blocks"] == (2 if two else 1), r
        # the grid kernels, and only they, sync the whole grid (so they are launched cooperatively)
        assert r["grid_sync"] == grid, r


def _kernel_names() -> tuple[str, ...]:
    # The kernel table's names without loading a compiler into this (simulator) process.
    import ast

    tree = ast.parse((REPO / "backends" / "_cuda_kernels.py").read_text())
    names: dict[str, tuple] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target in ("BLOCK_KERNELS", "GRID_KERNELS", "PHASE_KERNELS"):
                names[target] = ast.literal_eval(node.value)
    return names["BLOCK_KERNELS"] + names["GRID_KERNELS"] + names["PHASE_KERNELS"]


# one test per (compiler, architecture), each its own process, so pytest-xdist spreads them
@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_with_numba_cuda_on_numpy_2_5(arch):
    _check_every_kernel(_compile_every_kernel("numba-cuda", arch), "numba-cuda", arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.skipif(_mlir_missing() is not None, reason=f"{_mlir_missing()}; CI installs it with the test extra")
def test_every_kernel_compiles_with_numba_cuda_mlir(arch):
    """The same kernel source and signatures as numba-cuda's, through the successor compiler."""
    _check_every_kernel(_compile_every_kernel("numba-cuda-mlir", arch), "numba-cuda-mlir", arch)


def test_the_stand_in_breaks_numba_cuda_without_the_alias():
    """Without backends._cuda_compiler's alias, numba-cuda fails on the stand-in as on numpy 2.5."""
    code = WITHOUT_ROW_STACK + """
from numba import cuda
def kernel(x):
    x[0] = 1.0
cuda.compile_ptx(kernel, "void(float64[::1])", cc=(9, 0))
"""
    proc = _python(code)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "AttributeError" in stderr and "row_stack" in stderr


def test_bad_architecture_is_one_line():
    proc = _cuda_ptx("--json", "--arch=nine")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2 and not stdout
    assert "not an architecture" in stderr and "Traceback" not in stderr
    proc = _cuda_ptx("--json", "--arch=5.0")  # Maxwell: CUDA 13 starts at sm_75
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1 and not stdout.strip()
    assert stderr.startswith("error: numba-cuda sm_50") and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
