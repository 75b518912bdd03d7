"""The GPU peers at their best (torch-cudagraph, cupy-fused, cupy-graph, jax-unrolled): host logic.

On a GPU the registered backends run through tests/test_agreement.py like every other backend.
Here, on any machine: the replay schedule of the CUDA-graph backends; and each backend's own host
code (static buffers, operation order, loss logging, capture once per shape, replay counts) driven
with stand-ins for what needs a GPU, passed to the backend classes as parameters -- torch on the
CPU with a "capture" that returns the step itself (``TorchCudagraph(device="cpu", capture=...)``),
NumPy arrays with NumPy versions of the fused kernels and a stand-in stream (``CupyFused(np, ...)``,
``CupyGraph(np, ...)``) -- through the same agreement cases and published seed runs. What stays GPU-only is named in each skip reason.
cupy-graph's CuPy capture itself (CUB off, its stream, its own memory pool) and warp's capture in
``prepare``: tests/test_gpu_capture.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import backends
from backends import _replay
from backends.base import UnsupportedProblem, logged_iterations, train
from backends.cupy_fused_backend import CupyFused, numpy_kernels
from backends.cupy_graph_backend import CupyGraph
from harness.agreement import TOLERANCE, check, max_relative_error, reference_result
from harness.problems import scaled, validation_cases, xor2, xor3
from tests.helpers import XOR2_UPDATES, assert_xor2_published, assert_xor3_published

CASES = validation_cases(quick=True)


# ----------------------------------------------------------------------------- the schedule


def expand(plan, unroll):
    """The iterations a plan runs, in order, as (index, logged)."""
    out = []
    for kind, count in plan:
        n = 1 if kind == "logged" else count * (unroll if kind == "unrolled" else 1)
        out += [(len(out) + i, kind == "logged") for i in range(n)]
    return out


@pytest.mark.parametrize("unroll", [1, 2, 3, 5, 64])
def test_schedule_runs_every_iteration_once_in_order_with_the_logged_ones_in_place(unroll):
    for iterations, log_every in itertools.product(range(0, 41), range(0, 8)):
        plan = _replay.schedule(iterations, log_every, unroll)
        logged = set(logged_iterations(iterations, log_every))
        assert expand(plan, unroll) == [(i, i in logged) for i in range(iterations)], (iterations, log_every)
        assert [c for k, c in plan if k == "logged"] == list(range(len(logged)))  # losses[k], in order
        assert all(c > 0 for k, c in plan if k != "logged")  # no empty replay steps


def test_schedule_uses_the_unrolled_graph_for_long_stretches():
    assert _replay.schedule(200, 0, 64) == [("unrolled", 3), ("single", 8)]
    assert _replay.schedule(60000, 10000, 64)[:3] == [("logged", 0), ("unrolled", 156), ("single", 15)]
    with pytest.raises(ValueError):
        _replay.schedule(10, 0, 0)


def test_unroll_shrinks_with_the_work_per_iteration():
    assert _replay.unroll_for(4, 4) == _replay.MAX_UNROLL
    assert _replay.unroll_for(1024, 4) == 16
    assert _replay.unroll_for(256, 256) == 1 and _replay.unroll_for(65536, 4096) == 1


# ----------------------------------------------------------------------------- stand-ins


class Counting:
    """A stand-in capture: the 'graph' is the function itself; counts captures and replays."""

    def __init__(self):
        self.captured = 0
        self.replays = 0

    def __call__(self, fn):
        self.captured += 1

        def replay():
            self.replays += 1
            fn()

        return replay


class Stream:
    """A stand-in for a CuPy stream (a context manager that synchronises)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


def torch_standin():
    """torch-cudagraph on the CPU, its "graphs" the step itself, no warm-up."""
    pytest.importorskip("torch")
    from backends.torch_cudagraph_backend import TorchCudagraph

    return TorchCudagraph(device="cpu", capture=Counting())


def fused_standin():
    """cupy-fused over NumPy arrays with NumPy versions of its kernels."""
    return CupyFused(xp=np, kernels=numpy_kernels())


def graph_standin():
    """cupy-graph over NumPy, with a stand-in stream and capture."""
    return CupyGraph(xp=np, kernels=numpy_kernels(), stream=Stream(), capture=Counting())


STANDINS = {"torch-cudagraph": torch_standin, "cupy-fused": fused_standin, "cupy-graph": graph_standin}


# The float64 xor3 seed run (60000 iterations, seconds per backend on the CPU) is left to the full
# suite here: test_host_code_reproduces_the_published_runs runs it in both tiers.
HOST_CASES = [pytest.param(c, id=c.label, marks=pytest.mark.slow if c.iterations >= 60000 else ()) for c in CASES]


@pytest.mark.parametrize("case", HOST_CASES)
@pytest.mark.parametrize("name", list(STANDINS))
def test_host_code_agrees_with_numpy_reference(name, case):
    verdict = check(name, case, STANDINS[name]())
    assert verdict.status == "ok", f"{name} {case.label}: {verdict.status} {verdict.error} {verdict.detail}"


@pytest.mark.parametrize("name", list(STANDINS))
def test_host_code_reproduces_the_published_runs(name):
    backend = STANDINS[name]()
    assert_xor3_published(train(backend, xor3(), 60000, 10000).losses)
    assert_xor2_published(train(backend, xor2(), XOR2_UPDATES, 0))


@pytest.mark.parametrize("name", ["torch-cudagraph", "cupy-graph"])
def test_graphs_are_captured_once_per_shape_and_replayed_as_scheduled(name):
    backend = STANDINS[name]()
    for seed in (3, 4):  # two problems of one shape: one capture of the three graphs
        result = train(backend, scaled(4, 4, "float64", seed), 200, 0)
    assert backend.capture.captured == 3
    assert backend.capture.replays == 2 * (3 + 8)  # 200 = 3 x 64 + 8 singles, per run
    # and the second problem's result is its own, not the first one's continued
    assert (
        max_relative_error(result, reference_result(scaled(4, 4, "float64", 4), 200, 0))
        <= TOLERANCE["float64"]
    )
    train(backend, scaled(8, 4, "float64", 3), 5, 2)  # another shape: captured anew
    assert backend.capture.captured == 6
    if name == "torch-cudagraph":
        assert backend.compilations() == (2, 0)  # a capture per shape is its compile step


def test_a_refused_capture_is_an_unsupported_problem_with_the_reason():
    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(
        UnsupportedProblem, match="CUDA graph capture failed: RuntimeError: operation not permitted"
    ):
        CupyGraph(xp=np, kernels=numpy_kernels(), stream=Stream(), capture=refuse).prepare(
            scaled(5, 3, "float32", 1)
        )


def test_fused_step_allocates_nothing_after_prepare():
    """Every buffer is made in prepare: a step writes into the same arrays (what graph capture needs)."""
    state = fused_standin().prepare(scaled(16, 8, "float64", 1))
    f = state["fused"]
    buffers = [f.X, f.y, *f.W, *f.a[1:], f.err, *f.d[1:], *f.grad, f.loss]
    ids = [id(b) for b in buffers]
    addresses = [b.__array_interface__["data"][0] for b in buffers]
    f.step(True)
    f.step(False)
    buffers = [f.X, f.y, *f.W, *f.a[1:], f.err, *f.d[1:], *f.grad, f.loss]
    assert [id(b) for b in buffers] == ids
    assert [b.__array_interface__["data"][0] for b in buffers] == addresses


@pytest.mark.parametrize("name", ["torch-cudagraph", "cupy-fused", "cupy-graph"])
def test_registered_gpu_peer_says_what_it_needs_here(name):
    reason = backends.availability(name)
    if reason is None:
        pytest.skip(f"{name} runs here (a GPU machine): tests/test_agreement.py covers it on the device")
    assert "CUDA" in reason or "cupy" in reason, reason


# ----------------------------------------------------------------------------- jax-unrolled


def test_jax_unrolled_compiles_once_per_shape_whatever_the_iteration_count():
    pytest.importorskip("jax")
    from backends.jax_backend import Jax, _train

    backend = backends.load("jax-unrolled")
    assert isinstance(backend, Jax)  # the jax backend with another unroll factor, nothing else
    problem = scaled(1024, 4, "float64", 7)
    state = backend.prepare(problem)
    assert backend.unroll_for(state) == 16 and backends.load("jax").unroll_for(state) == 1
    train(backend, problem, 3, 0)
    before = _train()._cache_size()
    for iterations in (1, 15, 16, 17, 100):  # below, at and above K = 16; calibration varies T
        result = train(backend, problem, iterations, 0)
        assert max_relative_error(result, reference_result(problem, iterations, 0)) <= TOLERANCE["float64"]
    assert _train()._cache_size() == before
    assert backend.unroll_for(backend.prepare(scaled(4, 4, "float64", 7))) == _replay.MAX_UNROLL
