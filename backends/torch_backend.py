"""`torch`: PyTorch eager tensors under no_grad with the manual update rule (no autograd).

On CUDA when ``torch.cuda.is_available()``, else on the CPU. ``step`` is shared with the
subclasses ``backends.torch_compile_backend`` (the same function under ``torch.compile``) and
``backends.torch_cudagraph_backend`` (the same function captured into CUDA graphs).

PyTorch is imported on first use (``_torch``: ``available``, ``prepare``), not with this file, so
the backend's declarations are readable where PyTorch is not installed. ``sigmoid`` and ``step``
use tensor methods only, so they need no import of their own.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from backends.base import Backend, Problem, TrainResult, missing_library, n_logged


@cache
def _torch():
    """PyTorch, imported once per process (ImportError where it is not installed; not cached)."""
    import torch

    return torch


def sigmoid(z):
    """1 / (1 + exp(-z)) in place on ``z``; exp(-z) -> inf for z < -709 gives 0, as in numpy.

    Not ``torch.sigmoid``: its kernels compute the function differently from the spec's formula.
    """
    return z.neg_().exp_().add_(1).reciprocal_()


def step(X, y, W: list, alpha, log: bool):
    """One iteration, updating ``W`` in place; returns mean |err| (a device tensor) when ``log``."""
    a = [X]
    for w in W:
        a.append(sigmoid(a[-1] @ w))
    err = y - a[-1]
    loss = err.abs().mean() if log else None
    delta = err.mul_(a[-1]).mul_(1 - a[-1])
    for layer in reversed(range(len(W))):
        # The next delta first: it needs W[layer] before this iteration's update.
        below = (delta @ W[layer].T).mul_(a[layer]).mul_(1 - a[layer]) if layer > 0 else None
        # W += alpha * (a.T @ delta), rounded as the spec writes it (addmm_'s fused alpha rounds
        # differently); alpha may be a 0-d tensor, so torch.compile need not specialise on it.
        W[layer].add_((a[layer].T @ delta).mul_(alpha))
        delta = below
    return loss


def to_host(tensors: list) -> list[np.ndarray]:
    """Device tensors as host arrays of their own (copies)."""
    return [t.cpu().numpy().copy() for t in tensors]


def losses_to_host(losses: list) -> np.ndarray:
    parts = [x.cpu().numpy().astype(np.float64) for x in losses]
    return np.concatenate(parts) if parts else np.empty(0)


class Torch(Backend):
    NAME = "torch"
    SUMMARY = "PyTorch eager, no_grad, manual update rule"
    PACKAGE = "torch"
    DEVICE = "any"
    COLOUR, MARKER = "#0072B2", "P"
    FAMILY = "torch"
    LEVEL = "plain"
    COMPILES = False  # eager ATen kernels, built with torch

    def available(self) -> str | None:
        try:
            _torch()
        except ImportError as exc:
            return missing_library("torch", exc)
        return None

    def runs_on(self) -> str:
        """The GPU where PyTorch sees a CUDA device, else the CPU."""
        return "gpu" if _torch().cuda.is_available() else "cpu"

    def device(self):
        """The torch.device the tensors live on."""
        return _torch().device("cuda" if self.runs_on() == "gpu" else "cpu")

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        torch, device = _torch(), self.device()
        put = lambda x: torch.tensor(x, device=device)  # noqa: E731  (a copy, on the device)
        return {
            "X": put(problem.X),
            "y": put(problem.y),
            "W": [put(w) for w in problem.weights],
            "alpha": float(problem.X.dtype.type(problem.alpha)),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        self.loop(state, iterations, log_every, step)

    def loop(self, state: dict, iterations: int, log_every: int, step) -> None:
        """The iterations in Python, each one call of ``step`` (eager, or a compiled ``step``)."""
        torch = _torch()
        X, y, W, alpha = state["X"], state["y"], state["W"], state["alpha"]
        with torch.no_grad():
            losses = torch.empty(n_logged(iterations, log_every), dtype=X.dtype, device=X.device)
            for it in range(iterations):
                log = bool(log_every) and it % log_every == 0
                loss = step(X, y, W, alpha, log)
                if log:
                    losses[it // log_every] = loss  # stays on the device: no synchronisation here
        self.synchronize(X.device)
        state["losses"].append(losses)

    @staticmethod
    def synchronize(device) -> None:
        if device.type == "cuda":
            _torch().cuda.synchronize()  # kernels are queued asynchronously: wait before the clock is read

    def fetch(self, state: dict) -> TrainResult:
        return TrainResult(to_host(state["W"]), losses_to_host(state["losses"]))

    def threads(self) -> int | None:
        """Threads of PyTorch's intra-op pool (the CPU kernels and the BLAS calls it makes)."""
        return _torch().get_num_threads()

    def set_threads(self, n: int) -> None:
        _torch().set_num_threads(n)
