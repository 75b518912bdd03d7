"""What the GPU peers' graph captures run under, checked without a GPU where a stand-in can show it.

`cupy-graph`'s CuPy capture (``cupy_capture``, ``graph_safe``, a memory pool kept with the graphs)
driven through ``CupyGraph`` itself with a stand-in for CuPy's module: NumPy arrays and the NumPy
kernels, CuPy's accelerator lists and allocator switch, and streams that capture as CUDA does --
a kernel queued on a capturing stream is recorded, not run, and the graph's launch runs what was
recorded. Every device call notes the stream, the accelerators and the allocator it found, so a
test can ask what the warm-up and the captures ran under. `warp`'s graph is captured in
``prepare``, not in the timed ``run`` (Warp's CPU device, where warp-lang is installed). On a GPU
machine, the same capture with CuPy itself.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from backends.base import UnsupportedProblem, train
from backends.cupy_fused_backend import numpy_kernels
from backends.cupy_graph_backend import CupyGraph
from harness.agreement import TOLERANCE, check, max_relative_error, reference_result
from harness.problems import scaled, validation_cases, xor2, xor3
from tests.helpers import XOR2_UPDATES, assert_xor2_published, assert_xor3_published, usable

CASES = validation_cases(quick=True)
REFUSED = "operation not permitted when stream is capturing"


class Graph:
    def __init__(self, recorded: list):
        self.recorded = recorded

    def launch(self, stream) -> None:
        for kernel in self.recorded:
            kernel()


class Stream:
    """A stand-in CuPy stream: current inside ``with``; while capturing, its kernels are recorded."""

    def __init__(self, cp: CupyStandIn):
        self.cp, self.capturing, self.failed, self.recorded = cp, False, False, []

    def __enter__(self):
        self.cp.current.append(self)
        return self

    def __exit__(self, *exc):
        self.cp.current.pop()
        return False

    def synchronize(self) -> None:
        pass

    def begin_capture(self) -> None:
        assert not self.capturing
        self.capturing, self.failed, self.recorded = True, False, []

    def end_capture(self) -> Graph:
        assert self.capturing
        self.capturing = False
        if self.failed:  # as CUDA: an operation refused during capture invalidates it
            raise RuntimeError("cudaErrorStreamCaptureInvalidated: capture invalidated by a previous error")
        return Graph(self.recorded)


class Pool:
    def malloc(self, size: int):
        raise AssertionError("the stand-in allocates nothing")


class CupyStandIn:
    """NumPy arrays with the parts of CuPy that cupy-graph's capture uses, noting what every array
    made and every kernel queued ran under. ``refuse``: a kernel that raises when captured."""

    def __init__(self, refuse: str | None = None):
        self.reduction, self.routine = ["cub"], ["cub"]  # CuPy's default (CUPY_ACCELERATORS=cub)
        self.allocator = None  # None: CuPy's default memory pool
        self.current: list[Stream] = []  # the streams entered, innermost last
        self.notes: list[SimpleNamespace] = []
        self.refuse = refuse
        self._core = SimpleNamespace(
            get_reduction_accelerators=lambda: self.reduction,
            set_reduction_accelerators=lambda names: setattr(self, "reduction", list(names)),
            get_routine_accelerators=lambda: self.routine,
            set_routine_accelerators=lambda names: setattr(self, "routine", list(names)),
        )
        self.cuda = SimpleNamespace(Stream=self.stream, MemoryPool=Pool, using_allocator=self.using_allocator)
        self.streams: list[Stream] = []

    def stream(self, non_blocking: bool = False) -> Stream:
        assert non_blocking  # a capture needs a stream other than the legacy default one
        self.streams.append(Stream(self))
        return self.streams[-1]

    @contextlib.contextmanager
    def using_allocator(self, allocator):
        saved, self.allocator = self.allocator, allocator
        try:
            yield
        finally:
            self.allocator = saved

    def note(self, what: str) -> Stream | None:
        stream = self.current[-1] if self.current else None
        self.notes.append(SimpleNamespace(what=what, stream=stream, capturing=bool(stream and stream.capturing),
                                          reduction=list(self.reduction), routine=list(self.routine),
                                          allocator=self.allocator))  # fmt: skip
        return stream

    def asarray(self, x):
        self.note("array")
        return np.asarray(x)

    def empty(self, shape, dtype=float):
        self.note("array")
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype=float):
        self.note("array")
        return np.zeros(shape, dtype)

    def kernels(self) -> SimpleNamespace:
        """``numpy_kernels()``, queued on the current stream like CuPy's kernels."""

        def queued(name, kernel):
            def call(*args, **kwargs):
                stream = self.note(name)
                if stream is None or not stream.capturing:
                    kernel(*args, **kwargs)
                elif name == self.refuse:
                    stream.failed = True
                    raise RuntimeError(REFUSED)
                else:
                    stream.recorded.append(lambda: kernel(*args, **kwargs))

            return call

        return SimpleNamespace(
            **{name: queued(name, kernel) for name, kernel in vars(numpy_kernels()).items()}
        )


def cupy_standin(refuse: str | None = None) -> tuple[CupyGraph, CupyStandIn]:
    cp = CupyStandIn(refuse)
    return CupyGraph(cp, cp.kernels()), cp


# ----------------------------------------------------------------------------- cupy-graph


def test_cupy_capture_runs_with_cub_off_in_its_stream_under_a_pool_kept_with_the_graphs():
    """N x O = 256: CuPy would run ``mean_abs`` as CUB's two passes over a work area allocated
    during the capture, which returns to the pool while the graph keeps writing into it."""
    backend, cp = cupy_standin()
    problem = scaled(256, 8, "float64", 1)
    backend.prepare(problem)
    graphs = backend.captured[(256, problem.sizes, "float64")]
    kernels = [n for n in cp.notes if n.what != "array"]
    captured = [n for n in kernels if n.capturing]
    assert {n.what for n in captured} == {"matmul", "sigmoid_", "output", "mean_abs", "slope_", "update_"}
    assert all(n.stream is graphs["stream"] for n in cp.notes)  # buffers, warm-up, captures and load alike
    assert all(n.reduction == [] and n.routine == [] for n in kernels)  # warm-up and captures: CUB off
    assert all(n.allocator == graphs["pool"].malloc for n in captured)
    assert len(graphs["stream"].recorded) == 2 * 2 + 1 + 1 + 4 + 2  # the last capture: one logged iteration
    assert (cp.reduction, cp.routine, cp.allocator, cp.current) == (["cub"], ["cub"], None, [])  # as before


def test_a_refused_cupy_capture_restores_cupy_and_names_the_refused_operation():
    backend, cp = cupy_standin(refuse="mean_abs")
    with pytest.raises(UnsupportedProblem, match=f"CUDA graph capture failed: RuntimeError: {REFUSED}$"):
        backend.prepare(scaled(256, 8, "float32", 1))
    assert (cp.reduction, cp.routine, cp.allocator, cp.current) == (["cub"], ["cub"], None, [])
    assert not any(s.capturing for s in cp.streams)


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_cupy_capture_replays_what_it_recorded_in_agreement_with_numpy(case):
    verdict = check("cupy-graph", case, cupy_standin()[0])
    assert verdict.status == "ok", f"{case.label}: {verdict.status} {verdict.error} {verdict.detail}"


def test_cupy_capture_reproduces_the_published_runs():
    backend, _ = cupy_standin()
    assert_xor3_published(train(backend, xor3(), 60000, 10000).losses)
    assert_xor2_published(train(backend, xor2(), XOR2_UPDATES, 0))


@pytest.mark.gpu
def test_cupy_graph_on_the_device_allocates_nothing_while_capturing_and_logs_every_loss():
    """On a GPU: N x O >= 128 (CUB's two-pass reduction where accelerators are on) and batch 1 (a
    1 x 1 matmul), several logged losses each; the graphs' own pool stays empty."""
    backend = usable("cupy-graph")
    import cupy

    before = cupy._core.get_reduction_accelerators(), cupy._core.get_routine_accelerators()
    for problem in (scaled(256, 8, "float64", 1), scaled(257, 129, "float32", 2), scaled(1, 7, "float64", 3)):
        result = train(backend, problem, 40, 10)
        assert len(result.losses) == 4
        error = max_relative_error(result, reference_result(problem, 40, 10))
        assert error <= TOLERANCE[problem.dtype], (problem.batch, problem.sizes, error)
        assert backend.captured[(problem.batch, problem.sizes, problem.dtype)]["pool"].total_bytes() == 0
    assert (cupy._core.get_reduction_accelerators(), cupy._core.get_routine_accelerators()) == before


# ----------------------------------------------------------------------------- warp


def test_warp_captures_in_prepare_and_its_timed_run_only_replays(monkeypatch):
    """The harness times ``run`` alone on a freshly prepared state: a capture there would be timed."""
    backend = usable("warp")
    import warp as wp

    problem = scaled(16, 8, "float64", 2)
    state = backend.prepare(problem)
    assert state.graph is not None
    captures, replays = [], []
    begin, launch = wp.capture_begin, wp.capture_launch
    monkeypatch.setattr(wp, "capture_begin", lambda *a, **k: captures.append(a) or begin(*a, **k))
    monkeypatch.setattr(wp, "capture_launch", lambda *a, **k: replays.append(a) or launch(*a, **k))
    backend.run(state, 50, 20)  # logged at 0, 20 and 40; the 47 others replay the graph
    assert (len(captures), len(replays)) == (0, 47)
    error = max_relative_error(backend.fetch(state), reference_result(problem, 50, 20))
    assert error <= TOLERANCE["float64"]
