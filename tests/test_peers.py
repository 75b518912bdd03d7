"""Peer-library backends (jax, torch, torch-compile, cupy and their tuned variants): what is
specific to each of them.

Agreement over every validation case is tested for all backends elsewhere; here: the class
hierarchy and the lazy import of each optional library, JAX's float64 switch and compilation
cache, the chunked logging loop, saturated inputs (z = +-800) through the whole training loop,
thread control, and that an unavailable backend says why.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import backends
from backends.base import Backend, Problem, train
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled
from tests.helpers import fast_tier, usable

PEERS = ("jax", "jax-unrolled", "torch", "torch-compile", "torch-cudagraph", "cupy", "cupy-fused", "cupy-graph")
#: backend -> (its optional library, the backend it refines: None for a family's plain one)
FAMILY = {
    "jax": ("jax", None),
    "jax-unrolled": ("jax", "jax"),
    "torch": ("torch", None),
    "torch-compile": ("torch", "torch"),
    "torch-cudagraph": ("torch", "torch"),
    "cupy": ("cupy", None),
    "cupy-fused": ("cupy", "cupy"),
    "cupy-graph": ("cupy", "cupy-fused"),
}


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
    for backend in (usable(name), backends.load(backends.REFERENCE)):
        state = backend.prepare(problem)
        for iterations, log_every in runs:
            backend.run(state, iterations, log_every)
        results.append(backend.fetch(state))
    result, reference = results
    assert result.losses.shape == reference.losses.shape
    return max_relative_error(result, reference)


# ----------------------------------------------------------------------------- classes, laziness


@pytest.mark.parametrize("name", PEERS)
def test_each_backend_is_one_class_refining_its_family(name):
    cls = backends.info(name)
    package, parent = FAMILY[name]
    assert issubclass(cls, Backend) and cls.NAME == name
    assert cls.PACKAGE == cls.FAMILY == package
    assert cls.LEVEL == ("plain" if name in ("jax", "torch", "torch-compile", "cupy") else "tuned")
    assert cls.DEVICE == ("any" if name in ("jax", "jax-unrolled", "torch", "torch-compile") else "gpu")
    if parent is not None:
        assert cls.__mro__[1] is backends.info(parent)  # a subclass, not a module of re-exports
    assert backends.info("torch").COMPILES is False and backends.info("torch-compile").COMPILES is True


def test_declarations_and_reasons_without_the_libraries():
    """With jax, torch and cupy unimportable, every peer's class still loads, and each says which
    package it lacks (the import is lazy: first use, never the file's top)."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["jax"] = sys.modules["torch"] = sys.modules["cupy"] = None
        import backends
        for name, (package, _) in {FAMILY!r}.items():
            cls = backends.info(name)
            assert cls.NAME == name and cls.SUMMARY and cls.COLOUR, name
            reason = backends.availability(name)
            assert reason == f"package {{package!r}} not installed", (name, reason)
        assert not {{"jax", "torch", "cupy"}} & {{m.partition(".")[0] for m, v in sys.modules.items() if v}}
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("name", fast_tier(PEERS))
def test_unavailable_backend_says_why(name):
    reason = backends.availability(name)  # torch-compile: one trial compilation
    assert reason is None or (isinstance(reason, str) and reason.strip() and "\n" not in reason)


# ----------------------------------------------------------------------------- the loops


@pytest.mark.parametrize("name", fast_tier(["jax", "torch", "torch-compile", "cupy"]))
def test_saturated_sigmoid_gives_exact_zero_and_one(name):
    problem = saturated()
    result = train(usable(name), problem, 50, 10)
    assert all(np.all(np.isfinite(w)) for w in result.weights) and np.all(np.isfinite(result.losses))
    assert max_relative_error(result, reference_result(problem, 50, 10)) <= TOLERANCE["float64"]


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_sigmoid_at_extremes(name):
    usable(name)
    if name == "jax":
        import jax.numpy as jnp

        from backends.jax_backend import sigmoid

        z = jnp.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    else:
        import torch

        from backends.torch_backend import sigmoid

        z = torch.tensor([-800.0, -40.0, 0.0, 40.0, 800.0], dtype=torch.float64)
    s = np.asarray(sigmoid(z))
    assert s.dtype == np.float64
    assert s[0] == 0.0 and s[2] == 0.5 and s[4] == 1.0 and np.all(np.isfinite(s))


@pytest.mark.parametrize("name", ["jax", "torch", "cupy"])
@pytest.mark.parametrize("runs", [[(7, 3)], [(5, 2), (6, 4)], [(3, 10)], [(4, 1)], [(9, 0), (2, 2)]])
def test_logging_and_repeated_runs_match_numpy(name, runs):
    """Loss slots at 0, K, 2K, ... including T not a multiple of K, K > T, and runs that continue."""
    assert agree(name, scaled(11, 6, seed=3), runs) <= TOLERANCE["float64"]


# ----------------------------------------------------------------------------- jax


def test_jax_computes_float64_in_float64():
    backend = usable("jax")
    import jax

    assert jax.config.jax_enable_x64  # turned on process-wide by the backend's first use
    state = backend.prepare(scaled(8, 4))
    assert all(w.dtype == np.float64 for w in state["W"])
    backend.run(state, 2, 1)
    assert state["losses"][0].dtype == np.float64


def test_jax_runs_on_its_default_backend():
    backend = usable("jax")
    import jax

    assert backend.runs_on() == ("cpu" if jax.default_backend() == "cpu" else "gpu")
    assert backends.load("jax-unrolled").runs_on() == backend.runs_on()


def test_jax_new_iteration_count_does_not_recompile():
    """Calibration runs the same size with different T and log_every=0: one executable for all."""
    backend = usable("jax")
    from backends.jax_backend import _train

    problem = scaled(10, 5, seed=11)
    train(backend, problem, 3, 0)
    before, built = _train()._cache_size(), backend.compilations()
    for iterations in (1, 2, 17, 100):
        train(backend, problem, iterations, 0)
    assert _train()._cache_size() == before and backend.compilations() == built
    train(backend, scaled(12, 5, seed=11), 3, 0)  # a new shape: one more executable, counted
    assert backend.compilations()[0] == built[0] + 1


def test_jax_threads_settable_in_own_process():
    """set_threads binds the whole process (CPU affinity), so it runs in a child process."""
    usable("jax")
    code = (
        "import backends\n"
        "j = backends.load('jax')\n"
        "if j.runs_on() == 'cpu':\n"
        "    j.set_threads(1); assert j.threads() == 1, j.threads()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


# ----------------------------------------------------------------------------- torch


def test_torch_threads_settable():
    backend = usable("torch")
    before = backend.threads()
    try:
        backend.set_threads(1)
        assert backend.threads() == 1
    finally:
        backend.set_threads(before)


def test_torch_compile_shares_the_eager_step():
    usable("torch")  # not torch-compile: wrapping the step compiles nothing
    from backends.torch_backend import step
    from backends.torch_compile_backend import compiled_step

    assert compiled_step()._torchdynamo_orig_callable is step
    assert compiled_step() is compiled_step()  # wrapped once per process


def test_torch_backends_run_where_torch_sees_a_gpu():
    usable("torch")
    import torch

    where = "gpu" if torch.cuda.is_available() else "cpu"
    assert backends.load("torch").runs_on() == backends.load("torch-compile").runs_on() == where
    assert backends.load("torch-cudagraph").runs_on() == "gpu"


# ----------------------------------------------------------------------------- cupy


def test_cupy_skips_with_reason_when_no_gpu():
    backend = usable("cupy")
    assert backend.runs_on() == "gpu" and backend.threads() is None
