"""`cupy-graph`: `cupy-fused`'s iteration captured once into CUDA graphs (stream capture) and replayed.

The step is ``backends.cupy_fused_backend.Fused.step`` over the same preallocated buffers, so nothing is
allocated while a graph is captured. ``prepare`` warms the step up (CuPy compiles its kernels and
cuBLAS sets up its handle on first use, neither of which may happen during a capture), copies the
problem back in, and captures three graphs on a non-blocking stream of its own: K unrolled
iterations, one iteration, one logged iteration (``backends._replay``). ``run`` replays them in
that stream. Captured graphs are kept per (shape, dtype) by the backend object (one per process),
as in `torch-cudagraph`; so are their buffers, which the next ``prepare`` of that shape
overwrites. ``CupyGraph`` subclasses ``CupyFused``: the same buffers, kernels and ``fetch``, with
``prepare`` capturing and ``run`` replaying.

A capture CuPy or the driver refuses is a one-line ``UnsupportedProblem`` (recorded as skipped
with the reason). Tests drive the host code with NumPy, a stand-in capture and a stand-in stream
(``CupyGraph(np, numpy_kernels(), stream, capture)``).
"""

from __future__ import annotations

from collections.abc import Callable

from backends import _replay
from backends.base import Problem, TrainResult, UnsupportedProblem, n_logged
from backends.cupy_backend import _cupy
from backends.cupy_fused_backend import CupyFused, Fused, cupy_kernels


def cupy_capture(stream) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """A capture function on ``stream``: captures ``fn``'s work, returns the graph's launch."""

    def capture(fn: Callable[[], None]) -> Callable[[], None]:
        with stream:
            stream.begin_capture()
            try:
                fn()
            finally:
                graph = stream.end_capture()
        return lambda: graph.launch(stream)

    return capture


def _capture_all(problem: Problem, xp, kernels, stream, capture) -> dict:
    fused = Fused(problem, xp, kernels)
    unroll = _replay.unroll_for(problem.batch, problem.sizes[1])
    with stream:  # warm-up: kernel compilation and cuBLAS set-up happen here, not in a capture
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
        """``xp``, ``kernels``, ``stream`` and ``capture`` default (None) to CuPy's, a new
        non-blocking stream per shape and ``cupy_capture`` on it; tests pass stand-ins."""
        super().__init__(xp, kernels)
        self.stream, self.capture = stream, capture
        #: (batch, sizes, dtype) -> the captured graphs, their stream and the buffers they use
        self.captured: dict[tuple, dict] = {}

    def _capture_all(self, problem: Problem) -> dict:
        if self.xp is None:
            cp = _cupy()
            stream = cp.cuda.Stream(non_blocking=True)
            return _capture_all(problem, cp, cupy_kernels(), stream, cupy_capture(stream))
        return _capture_all(problem, self.xp, self.kernels, self.stream, self.capture)

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

            _replay.replay(_replay.schedule(iterations, log_every, g["unroll"]), g["unrolled"], g["single"], logged)
        stream.synchronize()  # graph launches are queued asynchronously: wait before the clock is read
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        with state["graphs"]["stream"]:
            return super().fetch(state)
