"""`cupy-graph`: `cupy-fused`'s iteration captured once into CUDA graphs (stream capture) and replayed.

The step is ``backends.cupy_fused.Fused.step`` over the same preallocated buffers, so nothing is
allocated while a graph is captured. ``prepare`` warms the step up (CuPy compiles its kernels and
cuBLAS sets up its handle on first use, neither of which may happen during a capture), copies the
problem back in, and captures three graphs on a non-blocking stream of its own: K unrolled
iterations, one iteration, one logged iteration (``backends._replay``). ``run`` replays them in
that stream. Captured graphs are kept per (shape, dtype) in the process, as in `torch-cudagraph`;
so are their buffers, which the next ``prepare`` of that shape overwrites.

A capture CuPy or the driver refuses is a one-line ``UnsupportedProblem`` (recorded as skipped
with the reason). Tests drive the host code with NumPy, a stand-in capture and a stand-in stream.
"""

from __future__ import annotations

from collections.abc import Callable

from backends import _replay, cupy_fused
from backends.base import Problem, TrainResult, UnsupportedProblem, check_dtype, n_logged

DTYPES = cupy_fused.DTYPES
DEVICE = "gpu"
available = cupy_fused.available
fetch_fused = cupy_fused.fetch

_CAPTURED: dict[tuple, dict] = {}


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
    fused = cupy_fused.Fused(problem, xp, kernels)
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


def prepare(problem: Problem, xp=None, kernels=None, stream=None, capture=None) -> dict:
    """The problem in the captured buffers of its shape; ``xp``, ``kernels``, ``stream`` and
    ``capture`` default to CuPy's, a new non-blocking stream and ``cupy_capture`` (tests: stand-ins)."""
    check_dtype(DTYPES, problem, "cupy-graph")
    if xp is None:
        import cupy as xp

        kernels = cupy_fused.cupy_kernels()
        stream = xp.cuda.Stream(non_blocking=True)
        capture = cupy_capture(stream)
        key = (problem.batch, problem.sizes, problem.dtype, "cupy")
    else:
        key = (problem.batch, problem.sizes, problem.dtype, id(capture))
    graphs = _CAPTURED.get(key)
    if graphs is None:
        graphs = _CAPTURED[key] = _capture_all(problem, xp, kernels, stream, capture)
    with graphs["stream"]:
        graphs["fused"].load(problem)  # the warm-up changed the weights: the problem's, again
    return {"graphs": graphs, "fused": graphs["fused"], "losses": []}


def run(state: dict, iterations: int, log_every: int) -> None:
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


def fetch(state: dict) -> TrainResult:
    with state["graphs"]["stream"]:
        return fetch_fused(state)


threads = cupy_fused.threads
set_threads = cupy_fused.set_threads
