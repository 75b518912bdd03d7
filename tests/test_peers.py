"""Peer-library backends (jax, torch, torch-compile, cupy): what is specific to each of them.

Agreement over every validation case is tested for all backends elsewhere; here: JAX's float64
switch and compilation cache, the chunked logging loop, saturated inputs (z = +-800) through the
whole training loop, thread control, and that an unavailable backend says why.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import backends
from backends.base import Problem, train
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled

PEERS = ("jax", "torch", "torch-compile", "cupy")


def _module(name: str):
    reason = backends.availability(name)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return backends.load(name)


def saturated() -> Problem:
    """A 3-layer problem whose first-layer pre-activations reach -800 and +800 (s = 0 and 1 exactly)."""
    X = np.array([[1, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float64)
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    W0 = np.array([[-400.0, 400.0, 0.5], [-400.0, 400.0, -0.5], [0.0, 0.0, 0.1]])
    W1 = np.array([[1.0], [-1.0], [0.5]])
    return Problem(X, y, (W0, W1), 1.0, "saturated")


def agree(name: str, problem: Problem, runs: list[tuple[int, int]]) -> float:
    """Error against NumPy after the same sequence of run() calls on one prepared state."""
    results = []
    for module in (_module(name), backends.load(backends.REFERENCE)):
        state = module.prepare(problem)
        for iterations, log_every in runs:
            module.run(state, iterations, log_every)
        results.append(module.fetch(state))
    result, reference = results
    assert result.losses.shape == reference.losses.shape
    return max_relative_error(result, reference)


@pytest.mark.parametrize("name", PEERS)
def test_unavailable_backend_says_why(name):
    reason = backends.availability(name)
    assert reason is None or (isinstance(reason, str) and reason.strip() and "\n" not in reason)


@pytest.mark.parametrize(
    "name", ["jax", "torch", pytest.param("torch-compile", marks=pytest.mark.slow), "cupy"]
)
def test_saturated_sigmoid_gives_exact_zero_and_one(name):
    problem = saturated()
    result = train(_module(name), problem, 50, 10)
    assert all(np.all(np.isfinite(w)) for w in result.weights) and np.all(np.isfinite(result.losses))
    assert max_relative_error(result, reference_result(problem, 50, 10)) <= TOLERANCE["float64"]


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_sigmoid_at_extremes(name):
    module = _module(name)
    if name == "jax":
        import jax.numpy as jnp

        z = jnp.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    else:
        import torch

        z = torch.tensor([-800.0, -40.0, 0.0, 40.0, 800.0], dtype=torch.float64)
    s = np.asarray(module.sigmoid(z))
    assert s.dtype == np.float64
    assert s[0] == 0.0 and s[2] == 0.5 and s[4] == 1.0 and np.all(np.isfinite(s))


@pytest.mark.parametrize("name", ["jax", "torch", "cupy"])
@pytest.mark.parametrize("runs", [[(7, 3)], [(5, 2), (6, 4)], [(3, 10)], [(4, 1)], [(9, 0), (2, 2)]])
def test_logging_and_repeated_runs_match_numpy(name, runs):
    """Loss slots at 0, K, 2K, ... including T not a multiple of K, K > T, and runs that continue."""
    assert agree(name, scaled(11, 6, seed=3), runs) <= TOLERANCE["float64"]


def test_jax_computes_float64_in_float64():
    jax_xla = _module("jax")
    import jax

    assert jax.config.jax_enable_x64  # turned on process-wide by importing the backend
    state = jax_xla.prepare(scaled(8, 4))
    assert all(w.dtype == np.float64 for w in state["W"])
    jax_xla.run(state, 2, 1)
    assert state["losses"][0].dtype == np.float64


def test_jax_device_matches_default_backend():
    jax_xla = _module("jax")
    import jax

    assert jax_xla.DEVICE == ("cpu" if jax.default_backend() == "cpu" else "gpu")


def test_jax_new_iteration_count_does_not_recompile():
    """Calibration runs the same size with different T and log_every=0: one executable for all."""
    jax_xla = _module("jax")
    problem = scaled(10, 5, seed=11)
    train(jax_xla, problem, 3, 0)
    before = jax_xla._train._cache_size()
    for iterations in (1, 2, 17, 100):
        train(jax_xla, problem, iterations, 0)
    assert jax_xla._train._cache_size() == before


def test_torch_threads_settable():
    torch_eager = _module("torch")
    before = torch_eager.threads()
    try:
        torch_eager.set_threads(1)
        assert torch_eager.threads() == 1
    finally:
        torch_eager.set_threads(before)


def test_jax_threads_settable_in_own_process():
    """set_threads binds the whole process (CPU affinity), so it runs in a child process."""
    _module("jax")
    code = (
        "from backends import jax_xla as j\n"
        "if j.DEVICE == 'cpu':\n"
        "    j.set_threads(1); assert j.threads() == 1, j.threads()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_torch_compile_shares_the_eager_step():
    _module("torch")
    from backends import torch_compiled, torch_eager  # torch_compiled imports without compiling

    assert torch_compiled._compiled_step._torchdynamo_orig_callable is torch_eager.step


def test_cupy_skips_with_reason_when_no_gpu():
    reason = backends.availability("cupy")
    if reason:
        pytest.skip(f"cupy: {reason}")
    cupy_gpu = backends.load("cupy")
    assert cupy_gpu.DEVICE == "gpu" and cupy_gpu.threads() is None
