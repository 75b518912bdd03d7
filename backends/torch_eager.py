"""`torch`: PyTorch eager tensors under no_grad with the manual update rule (no autograd).

On CUDA when ``torch.cuda.is_available()``, else on the CPU. ``step`` is shared with
``backends.torch_compiled``, which runs the same function under ``torch.compile``.
"""

from __future__ import annotations

import numpy as np
import torch

from backends.base import Problem, TrainResult, check_dtype, n_logged

DTYPES = ("float64", "float32")
DEVICE = "gpu" if torch.cuda.is_available() else "cpu"
COMPILES = False  # eager ATen kernels, built with torch
_TORCH_DEVICE = torch.device("cuda" if DEVICE == "gpu" else "cpu")


def available() -> str | None:
    return None


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-z)) in place on ``z``; exp(-z) -> inf for z < -709 gives 0, as in numpy.

    Not ``torch.sigmoid``: its kernels compute the function differently from the spec's formula.
    """
    return z.neg_().exp_().add_(1).reciprocal_()


def step(X: torch.Tensor, y: torch.Tensor, W: list[torch.Tensor], alpha, log: bool):
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


def prepare(problem: Problem) -> dict:
    check_dtype(DTYPES, problem, "torch")
    put = lambda x: torch.tensor(x, device=_TORCH_DEVICE)  # noqa: E731  (a copy, on the device)
    return {
        "X": put(problem.X),
        "y": put(problem.y),
        "W": [put(w) for w in problem.weights],
        "alpha": float(problem.X.dtype.type(problem.alpha)),
        "losses": [],
    }


def synchronize() -> None:
    if DEVICE == "gpu":
        torch.cuda.synchronize()  # kernels are queued asynchronously: wait before the clock is read


@torch.no_grad()
def run(state: dict, iterations: int, log_every: int, step=step) -> None:
    X, y, W, alpha = state["X"], state["y"], state["W"], state["alpha"]
    losses = torch.empty(n_logged(iterations, log_every), dtype=X.dtype, device=X.device)
    for it in range(iterations):
        log = bool(log_every) and it % log_every == 0
        loss = step(X, y, W, alpha, log)
        if log:
            losses[it // log_every] = loss  # stays on the device: no synchronisation here
    synchronize()
    state["losses"].append(losses)


def fetch(state: dict) -> TrainResult:
    losses = [x.cpu().numpy().astype(np.float64) for x in state["losses"]]
    return TrainResult(
        [w.cpu().numpy().copy() for w in state["W"]],
        np.concatenate(losses) if losses else np.empty(0),
    )


def threads() -> int | None:
    """Threads of PyTorch's intra-op pool (the CPU kernels and the BLAS calls it makes)."""
    return torch.get_num_threads()


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
