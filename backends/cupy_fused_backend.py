"""`cupy-fused`: the CuPy loop as a CuPy user tunes it: fused elementwise kernels, no temporaries.

`cupy` launches one kernel per array operation and allocates every intermediate. Here every
buffer is allocated once in ``prepare`` and each elementwise stretch of an iteration is one
``cupy.ElementwiseKernel`` writing into its buffer:

* forward, per layer: ``a = X @ W`` (cuBLAS, into the buffer), then ``sigmoid_`` in place;
* output: ``err = y - a``, ``d = err * a * (1 - a)`` in one kernel; a logged iteration adds one
  ``mean_abs`` reduction into a device scalar;
* backward, per layer: ``grad = a.T @ d`` and ``g = d @ W.T`` (cuBLAS), ``g *= a * (1 - a)``
  in place (with W before this iteration's update, SPEC step 5), then ``W += alpha * grad``.

So an iteration of the 3-layer net is 2 x 2 + 1 + 4 + 2 = 11 kernels (12 when logged) and
allocates no array of its own (where CuPy routes work to CUB it still takes a temporary from its
pool; ``backends.cupy_graph_backend`` says where). The same step, captured once into CUDA graphs
and replayed, is `cupy-graph`.

The kernels' arithmetic is the spec's formula (``1 / (1 + exp(-z))``, slope from the output). The
CUDA compiler may contract ``w + alpha * g`` into a fused multiply-add, so the last bits can
differ from NumPy's; well inside the 1e-10 agreement tolerance.

``Fused`` takes its array module and kernels as arguments, and so does the backend
(``CupyFused(xp, kernels)``; ``backends.load`` makes the CuPy one): tests drive the same host code
(buffer plumbing, operation order, logging) with NumPy and NumPy versions of the kernels on any
machine. The kernels themselves need a GPU. Availability, declarations and the thread methods are
`cupy`'s (``CupyFused`` subclasses ``Cupy``).
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np

from backends.base import Problem, TrainResult, n_logged
from backends.cupy_backend import Cupy, _cupy, synchronize


@cache
def cupy_kernels():
    """The fused kernels (made once per process; compiled by CuPy on first call, per dtype)."""
    cp = _cupy()
    return SimpleNamespace(
        sigmoid_=cp.ElementwiseKernel("", "T a", "a = T(1) / (T(1) + exp(-a))", "nnbench_sigmoid"),
        output=cp.ElementwiseKernel(
            "T y, T a", "T err, T d", "err = y - a; d = err * a * (T(1) - a)", "nnbench_output"
        ),
        slope_=cp.ElementwiseKernel("T a", "T g", "g = g * a * (T(1) - a)", "nnbench_slope"),
        update_=cp.ElementwiseKernel("T alpha, T grad", "T w", "w += alpha * grad", "nnbench_update"),
        mean_abs=cp.ReductionKernel(
            "T x", "T m", "abs(x)", "a + b", "m = a / _in_ind.size()", "0", "nnbench_mean_abs"
        ),
        matmul=lambda a, b, out: cp.matmul(a, b, out=out),
    )


def numpy_kernels():
    """The same operations in NumPy, with the same calling conventions (for tests)."""

    def sigmoid_(a):
        with np.errstate(over="ignore"):  # exp(-z) -> inf gives s = 0, as CUDA's exp does
            np.divide(1, np.add(1, np.exp(np.negative(a, out=a), out=a), out=a), out=a)

    def output(y, a, err, d):
        np.subtract(y, a, out=err)
        np.multiply(err * a, 1 - a, out=d)

    def slope_(a, g):
        g *= a * (1 - a)

    def update_(alpha, grad, w):
        w += alpha * grad

    def mean_abs(x, out):
        out[...] = np.mean(np.abs(x))

    return SimpleNamespace(sigmoid_=sigmoid_, output=output, slope_=slope_, update_=update_,
                           mean_abs=mean_abs, matmul=lambda a, b, out: np.matmul(a, b, out=out))  # fmt: skip


class Fused:
    """The static buffers of one problem shape and one iteration over them."""

    def __init__(self, problem: Problem, xp, kernels) -> None:
        n, sizes, dtype = problem.batch, problem.sizes, problem.X.dtype
        self.xp, self.k = xp, kernels
        self.X = xp.asarray(problem.X).copy()
        self.y = xp.asarray(problem.y).copy()
        self.W = [xp.asarray(w).copy() for w in problem.weights]
        self.alpha = dtype.type(problem.alpha)
        self.a = [self.X] + [xp.empty((n, s), dtype) for s in sizes[1:]]  # activations
        self.err = xp.empty((n, sizes[-1]), dtype)
        self.d = [None] + [xp.empty((n, s), dtype) for s in sizes[1:]]  # deltas per layer output
        self.grad = [xp.empty(w.shape, dtype) for w in self.W]
        self.loss = xp.zeros((), dtype)

    def load(self, problem: Problem) -> None:
        """Copy a problem's arrays into the buffers (same shape and dtype)."""
        for static, value in zip((self.X, self.y, *self.W), (problem.X, problem.y, *problem.weights)):
            static[...] = self.xp.asarray(value)

    def step(self, log: bool) -> None:
        k, a, d, W = self.k, self.a, self.d, self.W
        for layer, w in enumerate(W):
            k.matmul(a[layer], w, a[layer + 1])
            k.sigmoid_(a[layer + 1])
        top = len(W)
        k.output(self.y, a[top], self.err, d[top])
        if log:
            k.mean_abs(self.err, out=self.loss)
        for layer in reversed(range(top)):
            k.matmul(a[layer].T, d[layer + 1], self.grad[layer])
            if layer > 0:  # the next delta first: it needs W[layer] before this iteration's update
                k.matmul(d[layer + 1], W[layer].T, d[layer])
                k.slope_(a[layer], d[layer])
            k.update_(self.alpha, self.grad[layer], W[layer])


def to_host(xp, array) -> np.ndarray:
    return np.array(array.get() if hasattr(array, "get") else array, dtype=array.dtype)


class CupyFused(Cupy):
    NAME = "cupy-fused"
    SUMMARY = "CuPy with fused elementwise kernels and preallocated buffers"
    COLOUR, MARKER = "#882255", "H"
    LEVEL = "tuned"

    def __init__(self, xp=None, kernels=None) -> None:
        """``xp`` and ``kernels`` default (None) to CuPy and ``cupy_kernels()``; tests pass NumPy
        and ``numpy_kernels()``."""
        self.xp, self.kernels = xp, kernels

    def _modules(self):
        """(array module, kernels, synchronise or None) this backend runs with."""
        if self.xp is None:
            return _cupy(), cupy_kernels(), synchronize
        return self.xp, self.kernels, None

    def prepare(self, problem: Problem) -> dict:
        """Device buffers for ``problem``."""
        self.check(problem)
        xp, kernels, sync = self._modules()
        return {"fused": Fused(problem, xp, kernels), "losses": [], "sync": sync}

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        f = state["fused"]
        losses = f.xp.empty(n_logged(iterations, log_every), f.X.dtype)
        for it in range(iterations):
            log = bool(log_every) and it % log_every == 0
            f.step(log)
            if log:
                losses[it // log_every] = f.loss  # device to device: no synchronisation
        if state["sync"] is not None:
            state["sync"]()
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        f = state["fused"]
        losses = [to_host(f.xp, x).astype(np.float64) for x in state["losses"]]
        return TrainResult([to_host(f.xp, w) for w in f.W], np.concatenate(losses) if losses else np.empty(0))
