"""`cupy-graph`: `cupy-fused`'s iteration captured once into CUDA graphs (stream capture) and replayed.

The step is ``backends.cupy_fused_backend.Fused.step`` over the same preallocated buffers.
``prepare`` makes those buffers on a non-blocking stream of its own, warms the step up there
(CuPy compiles its kernels and cuBLAS sets up its handle on first use, neither of which may happen
during a capture), and captures three graphs on that stream: K unrolled iterations, one iteration,
one logged iteration (``backends._replay``); then it copies the problem back in. ``run`` replays
them in that stream. Captured graphs are kept per (shape, dtype) by the backend object (one per
process), as in `torch-cudagraph`; so are their buffers, which the next ``prepare`` of that shape
overwrites. ``CupyGraph`` subclasses ``CupyFused``: the same buffers, kernels and ``fetch``, with
``prepare`` capturing and ``run`` replaying.

Nothing may be allocated from CuPy's memory pool during a capture: the captured kernels keep
writing into such a block at every replay, after the pool has handed it to someone else (CuPy
frees a temporary as soon as its kernel is queued). In CuPy 14 the step allocates only where CuPy
routes work to CUB, its default accelerator: a full reduction of >= 128 elements (``mean_abs`` on
N x O >= 128) runs CUB's two passes over a work area from ``memory.alloc``, and a matmul with a
1 x 1 result (batch 1, one output) multiplies into a temporary and sums that with CUB. So the
warm-up and the captures run with CuPy's reduction and routine accelerators off (``graph_safe``,
restored afterwards, also on an error; CuPy's own reduction kernels then, which write straight
into their output), and under a memory pool of their own, kept with the graphs, so that anything
CuPy still allocates while capturing stays the graphs' for as long as they live.

A capture CuPy or the driver refuses is a one-line ``UnsupportedProblem`` (recorded as skipped
with the reason). Tests drive the host code with NumPy, a stand-in capture and a stand-in stream
(``CupyGraph(np, numpy_kernels(), stream, capture)``), and the CuPy capture itself with a
stand-in for CuPy's module (``CupyGraph(stand_in, kernels)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from backends import _replay
from backends.base import Problem, TrainResult, UnsupportedProblem, n_logged
from backends.cupy_backend import _cupy
from backends.cupy_fused_backend import CupyFused, Fused, cupy_kernels


@contextlib.contextmanager
def graph_safe(cp) -> Iterator[None]:
    """CuPy's reduction and routine accelerators (CUB) off for the block, restored on leaving it."""
    core = cp._core
    saved = list(core.get_reduction_accelerators()), list(core.get_routine_accelerators())
    core.set_reduction_accelerators([])
    core.set_routine_accelerators([])
    try:
        yield
    finally:
        core.set_reduction_accelerators(saved[0])
        core.set_routine_accelerators(saved[1])


def cupy_capture(cp, stream, pool) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """A capture function on ``stream``: captures ``fn``'s work, allocating from ``pool`` (which
    must outlive the graph), and returns the graph's launch."""

    def capture(fn: Callable[[], None]) -> Callable[[], None]:
        with stream, cp.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                fn()
            except BaseException:
                with contextlib.suppress(Exception):  # the capture is invalid now: end it, report fn's error
                    stream.end_capture()
                raise
            graph = stream.end_capture()
        return lambda: graph.launch(stream)

    return capture


def _capture_all(problem: Problem, xp, kernels, stream, capture) -> dict:
    unroll = _replay.unroll_for(problem.batch, problem.sizes[1])
    with stream:  # buffers, kernel compilation and cuBLAS set-up in the capture's stream, not in a capture
        fused = Fused(problem, xp, kernels)
        fused.step(True)
        fused.step(False)
    stream.synchronize()

    def many() -> None:
        for _ in range(unroll):
            fused.step(False)

    try:
        graphs = {
            "single": capture(lambda: fused.step(False)),
            "unrolled": capture(many),
            "logged": capture(lambda: fused.step(True)),
        }
    except Exception as exc:  # CUDARuntimeError, or CuPy refusing an operation during capture
        raise UnsupportedProblem(f"CUDA graph capture failed: {type(exc).__name__}: {exc}") from None
    return {"fused": fused, "unroll": unroll, "stream": stream, **graphs}


class CupyGraph(CupyFused):
    NAME = "cupy-graph"
    SUMMARY = "cupy-fused with the iteration captured in a CUDA graph and replayed"
    COLOUR, MARKER = "#CC6677", "8"
    LEVEL = "tuned"

    def __init__(self, xp=None, kernels=None, stream=None, capture=None) -> None:
        """``xp`` and ``kernels`` default (None) to CuPy and ``cupy_kernels()``; without a
        ``capture``, each shape gets a new non-blocking stream of ``xp.cuda`` and ``cupy_capture``
        on it. Tests pass NumPy with a stand-in stream and capture, or a stand-in for CuPy."""
        super().__init__(xp, kernels)
        self.stream, self.capture = stream, capture
        #: (batch, sizes, dtype) -> the captured graphs, their stream and the buffers they use
        self.captured: dict[tuple, dict] = {}

    def _capture_all(self, problem: Problem) -> dict:
        if self.capture is not None:
            return _capture_all(problem, self.xp, self.kernels, self.stream, self.capture)
        cp = _cupy() if self.xp is None else self.xp
        kernels = cupy_kernels() if self.kernels is None else self.kernels
        stream, pool = cp.cuda.Stream(non_blocking=True), cp.cuda.MemoryPool()
        with graph_safe(cp):
            graphs = _capture_all(problem, cp, kernels, stream, cupy_capture(cp, stream, pool))
        return {**graphs, "pool": pool}  # the graphs write into whatever the pool holds: kept with them

    def prepare(self, problem: Problem) -> dict:
        """The problem in the captured buffers of its shape (captured on first use)."""
        self.check(problem)
        key = (problem.batch, problem.sizes, problem.dtype)
        graphs = self.captured.get(key)
        if graphs is None:
            graphs = self.captured[key] = self._capture_all(problem)
        with graphs["stream"]:
            graphs["fused"].load(problem)  # the warm-up changed the weights: the problem's, again
        return {"graphs": graphs, "fused": graphs["fused"], "losses": []}

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        g, f = state["graphs"], state["fused"]
        stream = g["stream"]
        with stream:
            losses = f.xp.empty(n_logged(iterations, log_every), f.X.dtype)

            def logged(k: int) -> None:
                g["logged"]()
                losses[k] = f.loss  # device to device, in the stream: no synchronisation

            _replay.replay(
                _replay.schedule(iterations, log_every, g["unroll"]), g["unrolled"], g["single"], logged
            )
        stream.synchronize()  # graph launches are queued asynchronously: wait before the clock is read
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        with state["graphs"]["stream"]:
            return super().fetch(state)
