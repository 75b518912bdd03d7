"""`numpy`: the idiomatic NumPy loop -- the reference for agreement and the baseline for speed."""

from __future__ import annotations

import numpy as np

from backends.base import Backend, Problem, TrainResult, n_logged


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-z) -> inf for z < -709 gives s = 0, as intended
        return 1.0 / (1.0 + np.exp(-z))


class Numpy(Backend):
    NAME = "numpy"
    SUMMARY = "idiomatic NumPy loop: the agreement reference and speed baseline"
    PACKAGE = "numpy"
    COLOUR, MARKER = "#000000", "o"
    LEVEL = "reference"
    COMPILES = False  # NumPy and BLAS are prebuilt

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        return {
            "X": problem.X,
            "y": problem.y,
            "W": [w.copy() for w in problem.weights],
            "alpha": problem.X.dtype.type(problem.alpha),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        X, y, W, alpha = state["X"], state["y"], state["W"], state["alpha"]
        losses = np.empty(n_logged(iterations, log_every))
        for it in range(iterations):
            a = [X]
            for w in W:
                a.append(sigmoid(a[-1] @ w))
            err = y - a[-1]
            if log_every and it % log_every == 0:
                losses[it // log_every] = np.mean(np.abs(err))
            delta = err * a[-1] * (1 - a[-1])
            for layer in reversed(range(len(W))):
                grad = a[layer].T @ delta
                if layer > 0:  # uses W[layer] before this iteration's update
                    delta = (delta @ W[layer].T) * a[layer] * (1 - a[layer])
                W[layer] += alpha * grad
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        losses = np.concatenate(state["losses"]) if state["losses"] else np.empty(0)
        return TrainResult([w.copy() for w in state["W"]], losses)

    def threads(self) -> int | None:
        """Threads of the BLAS library behind NumPy's matmul (the harness limits it to its count)."""
        from threadpoolctl import threadpool_info

        counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        return max(counts) if counts else None
