"""`numba-naive`: the `numpy` backend's loop put under ``@njit`` as it stands -- the first rung of
the effort ladder (what Numba buys for no work beyond the decorator).

The loop below is ``backends/numpy_backend.py``'s ``run`` line for line. What Numba would not
accept, and what changed for it:

* ``W[layer] += alpha * grad`` on the list of weights: Numba compiles it as a store back into the
  list, so the weights are a ``numba.typed.List`` (a Python list argument is a "reflected list",
  deprecated; a tuple cannot be stored into).
* ``reversed(range(...))``: ``reversed`` is not supported in nopython mode; the layers are walked
  with ``range(len(W) - 1, -1, -1)``.
* ``1.0`` and ``1`` literals: Numba types a Python float literal as float64 (NumPy 2 treats it as
  "weak" and keeps float32), so float32 runs would promote every array to float64 and fail to
  append to the float32 list. ``sigmoid`` and ``1 - a`` use ``one``, 1 in the problem's dtype,
  passed in like ``alpha``.
* ``np.errstate``: not supported (nor needed: compiled ``np.exp`` overflows to inf silently, and
  1 / (1 + inf) = 0, as the NumPy loop intends).
* The losses array is allocated by the caller (``run``), which appends it to the state, since the
  compiled function cannot touch the state dict.

Everything else -- the list of activations built per iteration, ``@`` (the same BLAS as NumPy,
through SciPy's bindings), ``np.exp`` over whole arrays (a scalar libm call per element, as
llvmlite has no SVML), the temporaries -- is kept, which is the point of this rung. Any depth
(any number of weight matrices), any D, H, O, float64 and float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backends.base import Backend, Problem, TrainResult, missing_library, n_logged, numba_compilations


@njit(cache=True)
def sigmoid(z, one):
    return one / (one + np.exp(-z))


@njit(cache=True)
def train_loop(X, y, W, alpha, one, iterations, log_every, losses):
    """``numpy_backend.Numpy.run``'s loop (see the module docstring for the four changes)."""
    for it in range(iterations):
        a = [X]
        for w in W:
            a.append(sigmoid(a[-1] @ w, one))
        err = y - a[-1]
        if log_every and it % log_every == 0:
            losses[it // log_every] = np.mean(np.abs(err))
        delta = err * a[-1] * (one - a[-1])
        for layer in range(len(W) - 1, -1, -1):
            grad = a[layer].T @ delta
            if layer > 0:  # uses W[layer] before this iteration's update
                delta = (delta @ W[layer].T) * a[layer] * (one - a[layer])
            W[layer] += alpha * grad


class NumbaNaive(Backend):
    NAME = "numba-naive"
    SUMMARY = "the NumPy loop under @njit as it stands (np.exp, @, temporaries)"
    PACKAGE = "numba"
    COLOUR, MARKER = "#DDCC77", "2"
    FAMILY = "numba"
    LEVEL = "naive"

    def available(self) -> str | None:
        try:
            import numba  # noqa: F401

            # Numba's @ calls BLAS through SciPy's bindings: loaded here, before the harness
            # applies its thread limit to every BLAS library in the process.
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            return missing_library("scipy" if "scipy" in str(getattr(exc, "name", "")) else "numba", exc)
        return None

    def prepare(self, problem: Problem) -> dict:
        from numba.typed import List

        self.check(problem)
        t = problem.X.dtype.type
        return {
            "X": np.ascontiguousarray(problem.X),  # every list element must be C-contiguous
            "y": np.ascontiguousarray(problem.y),
            "W": List([np.array(w, order="C", copy=True) for w in problem.weights]),
            "alpha": t(problem.alpha),
            "one": t(1),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        train_loop(
            state["X"], state["y"], state["W"], state["alpha"], state["one"], iterations, log_every, losses
        )
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        losses = np.concatenate(state["losses"]) if state["losses"] else np.empty(0)
        return TrainResult([np.array(w, copy=True) for w in state["W"]], losses)

    def threads(self) -> int:
        """The loop runs on the calling thread; its @ calls are BLAS (SciPy's, and NumPy's), which
        may thread: the largest BLAS thread count, as the `numpy` backend reports, at least 1."""
        from threadpoolctl import threadpool_info

        counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        return max(counts, default=1)

    def compilations(self) -> tuple[int, int]:
        """Signatures built in this process (``train_loop``, ``sigmoid``) and the disk-cache hits."""
        return numba_compilations({"train_loop": train_loop, "sigmoid": sigmoid})
