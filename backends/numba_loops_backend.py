"""`numba-loops`: the training loop as plain ``@njit`` loops with ``math.exp`` -- the second rung of
the effort ladder: what a competent Numba user writes in an afternoon.

No tiling, no custom exp, no specialisation: each SPEC step is a small ``@njit`` function of
plain loops over whole arrays (``forward``: out = sigmoid(a @ w); ``output_delta``; ``gradient``:
g = a.T @ delta; ``backpropagate``: the delta of the layer below; ``step``: w += alpha * g), the
innermost loop running along a contiguous row, and one driver per depth calls them in SPEC's
order: ``train_net1`` (the 2-layer net, one weight matrix) and ``train_net2`` (the 3-layer net),
as numba-cpu supports. Every activation and delta is an N x width array allocated once in
``prepare``. Any D, H, O, float64 and float32 (the one constant in the arithmetic is ``one``, 1
in the problem's dtype, so float32 stays float32).

``math.exp`` is libm's scalar exp (llvmlite here has no SVML), so the loops holding it stay
scalar; the matrix loops around it vectorise.

fastmath: ``FASTMATH`` below is what every function here compiles with. It is False -- Numba's
default, what a user writes without thinking about it -- and it was not tuned. True gives LLVM
all its fast-math flags (reassociation, contraction into FMAs, no NaN/inf, approximate
functions and reciprocals); ``math.exp`` stays a scalar libm call either way. A rough check on
the 2-core development machine while it ran other jobs (load average ~8-9; float64, one thread,
``scaled`` problems, best of 7, True and False interleaved, two runs) found True *slower*: the
whole loop took 0.99-1.15x as long at 4x4 and 1.08-1.39x (mostly ~1.3x) from 16x16 to 4096x256.
Per step at 256x256, True made the forward passes 1.08x (hidden layer) and 1.32x (output layer)
slower and the input layer's gradient 2x faster, the other steps unchanged. Why the forward
passes lose was not investigated. The lead's side-by-side on a quiet machine
(docs/performance.md) is the measurement to quote.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit

from backends.base import Backend, Problem, TrainResult, UnsupportedProblem, n_logged, numba_compilations

#: fastmath of the compiled loop: Numba's default (see the module docstring for what True changes).
FASTMATH = False


@njit(cache=True, fastmath=FASTMATH)
def forward(a, w, out, one):
    """out = sigmoid(a @ w), row by row."""
    N = a.shape[0]
    rows, cols = w.shape
    for n in range(N):
        for j in range(cols):
            out[n, j] = 0
        for i in range(rows):
            x = a[n, i]
            for j in range(cols):
                out[n, j] += x * w[i, j]
        for j in range(cols):
            out[n, j] = one / (one + math.exp(-out[n, j]))


@njit(cache=True, fastmath=FASTMATH)
def output_delta(out, y, delta, one):
    """delta = err * out * (1 - out) with err = y - out; returns sum |err| (float64)."""
    loss = 0.0
    for n in range(y.shape[0]):
        for o in range(y.shape[1]):
            err = y[n, o] - out[n, o]
            loss += abs(err)
            delta[n, o] = err * out[n, o] * (one - out[n, o])
    return loss


@njit(cache=True, fastmath=FASTMATH)
def gradient(a, delta, g):
    """g = a.T @ delta, as a sum of outer products of rows."""
    rows, cols = g.shape
    for i in range(rows):
        for j in range(cols):
            g[i, j] = 0
    for n in range(a.shape[0]):
        for i in range(rows):
            x = a[n, i]
            for j in range(cols):
                g[i, j] += x * delta[n, j]


@njit(cache=True, fastmath=FASTMATH)
def backpropagate(delta, w, a, below, one):
    """below = (delta @ w.T) * a * (1 - a): the delta of the layer below (w before its update)."""
    rows, cols = w.shape
    for n in range(a.shape[0]):
        for i in range(rows):
            s = delta[n, 0] * w[i, 0]
            for j in range(1, cols):
                s += delta[n, j] * w[i, j]
            below[n, i] = s * a[n, i] * (one - a[n, i])


@njit(cache=True, fastmath=FASTMATH)
def step(w, g, alpha):
    """w += alpha * g."""
    rows, cols = w.shape
    for i in range(rows):
        for j in range(cols):
            w[i, j] += alpha * g[i, j]


@njit(cache=True, fastmath=FASTMATH)
def train_net1(X, y, W0, A1, D1, G0, alpha, one, iterations, log_every, losses):
    """The 2-layer net: one weight matrix."""
    scale = 1.0 / (y.shape[0] * y.shape[1])
    for it in range(iterations):
        forward(X, W0, A1, one)
        loss = output_delta(A1, y, D1, one)
        if log_every > 0 and it % log_every == 0:
            losses[it // log_every] = loss * scale
        gradient(X, D1, G0)
        step(W0, G0, alpha)


@njit(cache=True, fastmath=FASTMATH)
def train_net2(X, y, W0, W1, A1, A2, D1, D2, G0, G1, alpha, one, iterations, log_every, losses):
    """The 3-layer net: two weight matrices; the hidden delta uses W1 before its update."""
    scale = 1.0 / (y.shape[0] * y.shape[1])
    for it in range(iterations):
        forward(X, W0, A1, one)
        forward(A1, W1, A2, one)
        loss = output_delta(A2, y, D2, one)
        if log_every > 0 and it % log_every == 0:
            losses[it // log_every] = loss * scale
        gradient(A1, D2, G1)
        backpropagate(D2, W1, A1, D1, one)
        step(W1, G1, alpha)
        gradient(X, D1, G0)
        step(W0, G0, alpha)


class NumbaLoops(Backend):
    NAME = "numba-loops"
    SUMMARY = "plain @njit loops with math.exp: no tiling, no custom exp"
    PACKAGE = "numba"
    COLOUR, MARKER = "#999933", ">"
    FAMILY = "numba"
    LEVEL = "plain"
    BYTES_PER_ELEMENT = 24.0  # the activations and deltas (N x H each), allocated once

    def available(self) -> str | None:
        try:
            import numba  # noqa: F401
        except Exception as exc:  # pragma: no cover - depends on the install
            return f"numba unusable: {type(exc).__name__}: {exc}"
        return None

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        layers = len(problem.weights)
        if layers > 2:
            raise UnsupportedProblem(
                f"{self.NAME} supports 1 or 2 weight layers (2- and 3-layer nets), not {layers}"
            )
        t = problem.X.dtype.type
        N = problem.batch
        W = [np.array(w, order="C", copy=True) for w in problem.weights]
        return {
            "X": np.ascontiguousarray(problem.X),
            "y": np.ascontiguousarray(problem.y),
            "W": W,
            "A": [np.zeros((N, w.shape[1]), t) for w in W],  # each layer's output
            "D": [np.zeros((N, w.shape[1]), t) for w in W],  # the delta at each layer's output
            "G": [np.zeros(w.shape, t) for w in W],
            "alpha": t(problem.alpha),
            "one": t(1),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        s = state
        scalars = (s["alpha"], s["one"], iterations, log_every, losses)
        if len(s["W"]) == 1:
            train_net1(s["X"], s["y"], s["W"][0], s["A"][0], s["D"][0], s["G"][0], *scalars)
        else:
            (W0, W1), (A1, A2), (D1, D2), (G0, G1) = s["W"], s["A"], s["D"], s["G"]
            train_net2(s["X"], s["y"], W0, W1, A1, A2, D1, D2, G0, G1, *scalars)
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        losses = np.concatenate(state["losses"]) if state["losses"] else np.empty(0)
        return TrainResult([np.array(w, copy=True) for w in state["W"]], losses)

    def threads(self) -> int:
        return 1  # one compiled call on the calling thread, no BLAS

    def compilations(self) -> tuple[int, int]:
        """Signatures this file's functions built in this process, and the disk-cache hits."""
        return numba_compilations(sys.modules[__name__])
