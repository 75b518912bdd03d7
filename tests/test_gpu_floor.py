"""The GPU floor: its arithmetic (pure), its probe kernels (under the simulator: they run; what
they time is only meaningful on a GPU) and its refusal to time the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.gpu_floor import KEYS, gpu_floor_parts, gpu_floor_seconds, has_gpu_ceilings
from tests.helpers import usable

REPO = Path(__file__).resolve().parent.parent
#: Illustrative ceilings: the H100 figures of shared/gpu-h100/README.md where it has them
#: (sigmoid throughput and latency, grid and block sync, launch), round numbers elsewhere.
H100_LIKE = {
    "gpu_sigmoid_per_s_float64": 386e9,
    "gpu_sigmoid_per_s_float32": 943e9,
    "gpu_fma_per_s_float64": 25e12,
    "gpu_fma_per_s_float32": 50e12,
    "gpu_sigmoid_latency_s_float64": 0.115e-6,
    "gpu_sigmoid_latency_s_float32": 0.05e-6,
    "gpu_bytes_per_s": 3e12,
    "gpu_block_sync_s": 0.064e-6,
    "gpu_grid_sync_s": 1.48e-6,
    "gpu_launch_s": 28.8e-6,
}


def test_the_ceilings_are_complete():
    assert set(H100_LIKE) == set(KEYS) and has_gpu_ceilings(H100_LIKE)
    assert not has_gpu_ceilings({k: v for k, v in H100_LIKE.items() if k != "gpu_grid_sync_s"})
    assert not has_gpu_ceilings(None) and not has_gpu_ceilings({})


def test_small_iterations_are_bound_by_their_dependencies():
    parts = gpu_floor_parts(4, 4, "float64", H100_LIKE)
    # two dependent sigmoids and two block barriers: (0.115 + 0.064) us x 2
    assert parts["floor_s"] == parts["dependencies_s"] == pytest.approx(2 * (0.115e-6 + 0.064e-6))


def test_mid_size_iterations_pay_grid_syncs():
    parts = gpu_floor_parts(1024, 1024, "float64", H100_LIKE)
    assert parts["dependencies_s"] == pytest.approx(2 * (0.115e-6 + 1.48e-6))
    assert parts["floor_s"] == max(parts["compute_s"], parts["memory_s"], parts["dependencies_s"])


def test_large_iterations_are_bound_by_sigmoid_throughput():
    N, H = 65536, 4096
    parts = gpu_floor_parts(N, H, "float64", H100_LIKE)
    sigmoids = N * (H + 1) / 386e9
    assert parts["floor_s"] == parts["compute_s"] == pytest.approx(sigmoids + 2 * N * H * 4 / 25e12)
    assert gpu_floor_seconds(N, H, "float32", H100_LIKE) < gpu_floor_seconds(N, H, "float64", H100_LIKE)


def test_the_probe_kernels_run(monkeypatch):
    """Under the simulator the probes compute (finite, converging values); on a GPU they are timed."""
    nc = usable("numba-cuda")
    if not nc.SIMULATED:
        pytest.skip("checked on the simulator; on a GPU `python -m harness.gpu_floor` runs them for real")
    from harness.gpu_floor import _probes

    cuda = nc.cuda
    k = _probes(cuda)
    for dtype in ("float64", "float32"):
        t = np.dtype(dtype).type
        buf = cuda.to_device(np.linspace(-2, 2, 4).astype(dtype))
        k["chains"][2, 2](buf, 30, t(1), t(0.25))
        got = buf.copy_to_host()
        assert got.dtype == np.dtype(dtype) and np.all(np.isfinite(got))
        # eight chains of s(s(...)) all converge to the fixed point of s, 0.6590...
        np.testing.assert_allclose(got, 8 * 0.6590463, rtol=1e-3)
        buf = cuda.to_device(np.linspace(-2, 2, 4).astype(dtype))
        k["fmas"][2, 2](buf, 60, t(0.5), t(0.25))
        np.testing.assert_allclose(buf.copy_to_host(), 8 * 0.5, rtol=1e-6)
    a, b, c = (cuda.to_device(np.full(10, v)) for v in (0.0, 1.0, 2.0))
    k["triad"][2, 2](a, b, c, 3.0)
    assert np.all(a.copy_to_host() == 7.0)
    flags = cuda.to_device(np.zeros(4, np.int64))
    k["block_sync"][1, 4](flags, 3)
    k["grid_sync"][1, 4](flags, 3)  # the simulator's cooperative grid is one block
    assert np.all(flags.copy_to_host() == 3)


def test_the_simulator_is_refused():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "harness.gpu_floor"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.startswith("error: GPU ceilings need a real GPU") and len(proc.stderr.strip().splitlines()) == 1
