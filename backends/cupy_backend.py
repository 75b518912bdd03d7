"""`cupy`: the NumPy loop with CuPy arrays on an NVIDIA GPU.

X, y and the weights stay on the device for the whole run and the logged losses are written into
a device array, so the loop never waits for the GPU; ``run`` synchronises once at the end.
float32 matmuls are true float32 unless the user sets CUPY_TF32=1 (CuPy's default is off).

CuPy is imported on first use (``_cupy``: ``available``, ``prepare``), not with this file, so the
backend's declarations are readable where CuPy is not installed. ``Cupy`` is also the base of the
tuned variants (``backends.cupy_fused_backend``, ``backends.cupy_graph_backend``), which share its
availability check and declarations.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from backends.base import Backend, Problem, TrainResult, missing_library, n_logged


@cache
def _cupy():
    """CuPy, imported once per process (ImportError where it is not installed; not cached)."""
    import cupy

    return cupy


def sigmoid(z):
    return 1.0 / (1.0 + _cupy().exp(-z))  # exp(-z) -> inf for z < -709 gives s = 0 (CuPy does not warn)


def synchronize() -> None:
    _cupy().cuda.get_current_stream().synchronize()  # kernels are queued asynchronously: finish first


class Cupy(Backend):
    NAME = "cupy"
    SUMMARY = "CuPy arrays on an NVIDIA GPU"
    PACKAGE = "cupy"
    DEVICE = "gpu"
    COLOUR, MARKER = "#6A3D9A", "h"
    FAMILY = "cupy"
    LEVEL = "plain"
    # COMPILES stays True: CuPy builds its elementwise kernels on first use, into a cache it does
    # not count (``compilations`` None: "unknown").

    def available(self) -> str | None:
        try:
            cp = _cupy()
        except ImportError as exc:
            return missing_library("cupy", exc)
        try:
            count = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError without a driver, RuntimeError without libcudart
            return f"no usable CUDA device: {type(exc).__name__}: {exc}".splitlines()[0]
        return None if count else "no CUDA device found"

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        cp = _cupy()
        return {
            "X": cp.asarray(problem.X),
            "y": cp.asarray(problem.y),
            "W": [cp.array(w) for w in problem.weights],
            "alpha": problem.X.dtype.type(problem.alpha),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        cp = _cupy()
        X, y, W, alpha = state["X"], state["y"], state["W"], state["alpha"]
        losses = cp.empty(n_logged(iterations, log_every))
        for it in range(iterations):
            a = [X]
            for w in W:
                a.append(sigmoid(a[-1] @ w))
            err = y - a[-1]
            if log_every and it % log_every == 0:
                losses[it // log_every] = cp.mean(cp.abs(err))  # device to device: no synchronisation
            delta = err * a[-1] * (1 - a[-1])
            for layer in reversed(range(len(W))):
                grad = a[layer].T @ delta
                if layer > 0:  # uses W[layer] before this iteration's update
                    delta = (delta @ W[layer].T) * a[layer] * (1 - a[layer])
                W[layer] += alpha * grad
        synchronize()
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        cp = _cupy()
        losses = cp.concatenate(state["losses"]) if state["losses"] else cp.empty(0)
        return TrainResult([cp.asnumpy(w) for w in state["W"]], cp.asnumpy(losses).astype(np.float64))

    def threads(self) -> int | None:
        return None  # one host thread queues the kernels; there is no CPU pool to size

    def set_threads(self, n: int) -> None:
        """Nothing to set: the work runs on the GPU (accepted so the harness can treat backends alike)."""
