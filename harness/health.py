"""Numerical health of a training run: no inf/NaN, no subnormal activations or deltas (SPEC).

Two checks record the extremes that matter: the largest |pre-activation| (saturation) and the
smallest non-zero |activation|, |1 - activation| and |delta| (subnormal territory).

* ``state_health(problem, weights)`` -- one forward and backward pass at given weights: what the
  sweep runs on the weights a backend returns after each calibration run and each timed repeat,
  so the trajectory that is timed (its T iterations) is the one certified. A row's activations and
  deltas depend only on that row and the weights, so the pass runs over the *distinct* rows of
  (X, y) -- at most 2^(inputs-1) for the sweep problem, 4 with its default 3 inputs -- which is
  exact for the whole batch and costs O(distinct rows x H) whatever N is.
* ``check_health(problem, iterations)`` -- the SPEC loop itself in NumPy (3-layer shape, row
  chunks so the largest sweep points fit in memory), checked at every iteration: the tests run it
  over the sweep range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.base import Problem
from backends.numpy_backend import sigmoid


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


def distinct_rows(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (x, y) rows of the batch, as (X, y) arrays in the problem's dtype."""
    rows = np.unique(np.hstack([problem.X, problem.y]), axis=0)
    inputs = problem.X.shape[1]
    return rows[:, :inputs], rows[:, inputs:]


def state_health(problem: Problem, weights, rows: tuple[np.ndarray, np.ndarray] | None = None) -> Health:
    """Health of one forward and backward pass of ``problem`` at ``weights`` (any depth); ``rows``:
    ``distinct_rows(problem)``, when the caller checks many states of one problem."""
    X, y = rows if rows is not None else distinct_rows(problem)
    dtype = problem.X.dtype
    weights = [np.asarray(w, dtype=dtype) for w in weights]
    h = Health()
    activations = [X]
    for W in weights:
        z = activations[-1] @ W
        h.max_abs_preactivation = max(h.max_abs_preactivation, float(np.abs(z).max()))
        activations.append(sigmoid(z))
    out = activations[-1]
    delta = (y - out) * out * (1 - out)
    deltas = [delta]
    for W, a in zip(weights[:0:-1], activations[-2:0:-1]):
        delta = (delta @ W.T) * a * (1 - a)
        deltas.append(delta)
    for a in activations[1:]:
        h.min_abs_activation = min(h.min_abs_activation, _min_nonzero(a), _min_nonzero(1 - a))
    h.min_abs_delta = min(_min_nonzero(d) for d in deltas)
    h.finite = all(bool(np.isfinite(a).all()) for a in (*weights, *activations, *deltas))
    return h


def describe(health: Health, dtype: str) -> str:
    """Why a state is unhealthy, in a few words (for a row's reason)."""
    tiny = np.finfo(dtype).tiny
    if not health.finite:
        return "NaN or inf in weights, activations or deltas"
    parts = [f"{label} {value:.3g}" for label, value in (("|activation| or |1 - activation|", health.min_abs_activation),
                                                          ("|delta|", health.min_abs_delta)) if value < tiny]  # fmt: skip
    return f"subnormal {' and '.join(parts)} (smallest normal {dtype}: {tiny:.3g})"


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
