"""The `numba-cuda` kernels through the real CUDA toolchain, without a GPU.

The simulator (test_numba_cuda.py) checks what the kernels compute; it does not compile them. Here
``harness.cuda_ptx`` compiles every kernel with NVVM and ptxas (nvJitLink) for the oldest and the
newest architecture CUDA 13 supports, in a process with the simulator off, so a construct the real
CUDA target rejects, or a kernel whose launch would run out of registers, fails CI instead of the
first session that has a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.cuda_ptx import MULTI, SINGLE

REPO = Path(__file__).resolve().parent.parent
ARCHS = ("7.5", "9.0")
REGISTERS_PER_BLOCK = 65536  # 64K 32-bit registers per block on every architecture from sm_50 to sm_120


def compile_records(*extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "harness.cuda_ptx", "--json", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, records


def test_every_kernel_compiles_for_real_architectures():
    proc, records = compile_records(*(f"--arch={a}" for a in ARCHS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {(r["arch"], r["dtype"], r["D"], r["O"], r["kernel"]) for r in records}
    for arch in ARCHS:
        sm = "sm_" + arch.replace(".", "")
        for dtype in ("float64", "float32"):
            assert {(sm, dtype, 3, 1, k) for k in SINGLE + MULTI} <= got
            assert {(sm, dtype, 5, 3, k) for k in MULTI} <= got
    for r in records:
        # A launch of launch_bound threads must fit the register file, or it fails with
        # CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on the device.
        assert isinstance(r["registers"], int) and r["registers"] > 0, r
        assert r["registers"] * r["launch_bound"] <= REGISTERS_PER_BLOCK, r


def test_bad_architecture_is_one_line():
    proc, records = compile_records("--arch=nine")
    assert proc.returncode == 2 and not records
    assert "not an architecture" in proc.stderr and "Traceback" not in proc.stderr
    proc, records = compile_records("--arch=5.0")  # Maxwell: CUDA 13 starts at sm_75
    assert proc.returncode == 1 and not records
    assert proc.stderr.startswith("error: sm_50") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
