"""Numerical health of a training run: no inf/NaN, no subnormal activations or deltas.

Runs the SPEC loop in NumPy (3-layer shape) in row chunks, so the largest sweep points fit in
memory, and records the extremes that matter: the largest |pre-activation| (saturation) and the
smallest non-zero |activation|, |1 - activation| and |delta| (subnormal territory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.base import Problem
from backends.numpy_ref import sigmoid


@dataclass
class Health:
    max_abs_preactivation: float = 0.0
    min_abs_activation: float = np.inf  # smallest of |a| and |1 - a| over non-zero entries
    min_abs_delta: float = np.inf  # smallest non-zero |delta|
    finite: bool = True

    def ok(self, dtype: str) -> bool:
        tiny = np.finfo(dtype).tiny  # smallest normal number
        return self.finite and self.min_abs_activation >= tiny and self.min_abs_delta >= tiny


def _min_nonzero(a: np.ndarray) -> float:
    a = np.abs(a[a != 0])
    return float(a.min()) if a.size else np.inf


def check_health(problem: Problem, iterations: int, chunk: int = 4096) -> Health:
    if len(problem.weights) != 2:
        raise ValueError("health check covers the 3-layer shape of the sweep problem")
    X, y = problem.X, problem.y
    W0, W1 = (w.copy() for w in problem.weights)
    alpha = X.dtype.type(problem.alpha)
    h = Health()
    for _ in range(iterations):
        g0, g1 = np.zeros_like(W0), np.zeros_like(W1)
        for start in range(0, X.shape[0], chunk):
            x, t = X[start : start + chunk], y[start : start + chunk]
            z1 = x @ W0
            a1 = sigmoid(z1)
            z2 = a1 @ W1
            a2 = sigmoid(z2)
            d2 = (t - a2) * a2 * (1 - a2)
            d1 = (d2 @ W1.T) * a1 * (1 - a1)
            g1 += a1.T @ d2
            g0 += x.T @ d1
            h.max_abs_preactivation = max(h.max_abs_preactivation, float(np.abs(z1).max()), float(np.abs(z2).max()))
            h.min_abs_activation = min(
                h.min_abs_activation, _min_nonzero(a1), _min_nonzero(1 - a1), _min_nonzero(a2), _min_nonzero(1 - a2)
            )
            h.min_abs_delta = min(h.min_abs_delta, _min_nonzero(d1), _min_nonzero(d2))
            h.finite &= bool(np.isfinite(d1).all() and np.isfinite(a1).all())
        W1 += alpha * g1
        W0 += alpha * g0
        h.finite &= bool(np.isfinite(W0).all() and np.isfinite(W1).all())
    return h
