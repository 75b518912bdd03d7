"""`torch-cudagraph`: the `torch` iteration captured once into CUDA graphs and replayed.

What a PyTorch user does to a tiny GPU training loop that is launch-bound: capture the step with
``torch.cuda.graph`` and replay it, so one graph launch replaces the ~15 kernel launches (and
their Python dispatch) of an eager iteration. The step is ``backends.torch_eager.step`` itself, so
the arithmetic cannot drift from the `torch` backend; the weights are static device tensors that
the captured kernels update in place. K iterations are unrolled into one graph where an iteration
is small (``backends._replay``: the graphs, the schedule, the choice of K).

Captured graphs are kept per (shape, dtype) in this process (``_CAPTURED``): ``prepare`` copies a
problem's arrays into the static tensors of its shape and captures only the first time, as a user
would capture once and train many times. So the states of one shape share those tensors: the
harness uses one state at a time (prepare, run, fetch), and ``fetch`` copies the results out.

Capture needs a CUDA GPU; without one the backend is unavailable with the reason. Tests run the
same host code with a stand-in capture that calls the step eagerly on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from backends import _replay, torch_eager
from backends.base import Problem, TrainResult, check_dtype, n_logged

DTYPES = torch_eager.DTYPES
DEVICE = "gpu"
WARMUP = 3  # eager iterations on a side stream before capture (cuBLAS handles, workspaces)

#: (batch, sizes, dtype) -> the captured graphs and the static tensors they read and write
_CAPTURED: dict[tuple, dict] = {}


def available() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def cuda_capture(fn: Callable[[], None]) -> Callable[[], None]:
    """Capture ``fn``'s kernels into a CUDA graph; returns its replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _cuda_warmup(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a side stream, as torch's CUDA-graph notes require before a capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(side)


@torch.no_grad()
def _capture_all(problem: Problem, device, capture, warmup) -> dict:
    put = lambda x: torch.tensor(x, device=device)  # noqa: E731
    X, y = put(problem.X), put(problem.y)
    W = [put(w) for w in problem.weights]
    alpha = float(problem.X.dtype.type(problem.alpha))
    unroll = _replay.unroll_for(problem.batch, problem.sizes[1])
    loss = torch.zeros((), dtype=X.dtype, device=device)

    def one() -> None:
        torch_eager.step(X, y, W, alpha, False)

    def many() -> None:
        for _ in range(unroll):
            torch_eager.step(X, y, W, alpha, False)

    def logged() -> None:
        loss.copy_(torch_eager.step(X, y, W, alpha, True))

    if warmup is not None:  # warm-up changes the weights; prepare() copies the problem's back in
        warmup(one)
        warmup(logged)
    return {
        "X": X, "y": y, "W": W, "loss": loss, "unroll": unroll,
        "single": capture(one), "unrolled": capture(many), "logged": capture(logged),
    }  # fmt: skip


@torch.no_grad()
def prepare(problem: Problem, device=None, capture=None, warmup=None) -> dict:
    """The problem's arrays in the static tensors of its shape (captured on first use).

    ``device``, ``capture`` and ``warmup`` default to CUDA, ``cuda_capture`` and a side-stream
    warm-up; tests pass the CPU, a capture that returns ``fn`` itself, and no warm-up.
    """
    check_dtype(DTYPES, problem, "torch-cudagraph")
    if device is None:
        device, capture, warmup = torch.device("cuda"), cuda_capture, _cuda_warmup
    key = (problem.batch, problem.sizes, problem.dtype, str(device), capture)
    graphs = _CAPTURED.get(key)
    if graphs is None:
        graphs = _CAPTURED[key] = _capture_all(problem, device, capture, warmup)
    for static, value in zip((graphs["X"], graphs["y"], *graphs["W"]), (problem.X, problem.y, *problem.weights)):
        static.copy_(torch.from_numpy(value))  # host to device, into the captured addresses
    return {"graphs": graphs, "losses": [], "sync": torch.cuda.synchronize if device.type == "cuda" else None}


@torch.no_grad()
def run(state: dict, iterations: int, log_every: int) -> None:
    g = state["graphs"]
    losses = torch.empty(n_logged(iterations, log_every), dtype=g["X"].dtype, device=g["X"].device)

    def logged(k: int) -> None:
        g["logged"]()
        losses[k].copy_(g["loss"])  # device to device: no synchronisation

    _replay.replay(_replay.schedule(iterations, log_every, g["unroll"]), g["unrolled"], g["single"], logged)
    if state["sync"] is not None:
        state["sync"]()  # graph replays are queued asynchronously: wait before the clock is read
    state["losses"].append(losses)


def fetch(state: dict) -> TrainResult:
    losses = [x.cpu().numpy().astype(np.float64) for x in state["losses"]]
    return TrainResult(
        [w.cpu().numpy().copy() for w in state["graphs"]["W"]],
        np.concatenate(losses) if losses else np.empty(0),
    )


def compilations() -> tuple[int, int]:
    """Shapes captured into graphs in this process (a capture is this backend's compile step)."""
    return len(_CAPTURED), 0


def threads() -> int | None:
    return None  # one host thread launches the graphs


def set_threads(n: int) -> None:
    """Nothing to set: the work runs on the GPU."""
