"""`torch-cudagraph`: the `torch` iteration captured once into CUDA graphs and replayed.

What a PyTorch user does to a tiny GPU training loop that is launch-bound: capture the step with
``torch.cuda.graph`` and replay it, so one graph launch replaces the ~15 kernel launches (and
their Python dispatch) of an eager iteration. The step is ``backends.torch_backend.step`` itself, so
the arithmetic cannot drift from the `torch` backend; the weights are static device tensors that
the captured kernels update in place. K iterations are unrolled into one graph where an iteration
is small (``backends._replay``: the graphs, the schedule, the choice of K).

Captured graphs are kept per (shape, dtype) by the backend object (one per process:
``backends.load``): ``prepare`` copies a problem's arrays into the static tensors of its shape
and captures only the first time, as a user would capture once and train many times. So the
states of one shape share those tensors: the harness uses one state at a time (prepare, run,
fetch), and ``fetch`` copies the results out.

Capture needs a CUDA GPU; without one the backend is unavailable with the reason. Tests construct
the backend with the CPU, a stand-in capture that calls the step eagerly, and no warm-up, and run
the same host code.
"""

from __future__ import annotations

from collections.abc import Callable

from backends import _replay
from backends.base import Problem, TrainResult, n_logged
from backends.torch_backend import Torch, _torch, losses_to_host, step, to_host

WARMUP = 3  # eager iterations on a side stream before capture (cuBLAS handles, workspaces)


def cuda_capture(fn: Callable[[], None]) -> Callable[[], None]:
    """Capture ``fn``'s kernels into a CUDA graph; returns its replay."""
    torch = _torch()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def cuda_warmup(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a side stream, as torch's CUDA-graph notes require before a capture."""
    torch = _torch()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(side)


class TorchCudagraph(Torch):
    NAME = "torch-cudagraph"
    SUMMARY = "the torch iteration captured once in a CUDA graph (K iterations unrolled) and replayed"
    DEVICE = "gpu"
    COLOUR, MARKER = "#332288", "p"
    LEVEL = "tuned"
    COMPILES = True  # a capture is this backend's compile step (``compilations``)

    def __init__(self, device: str | None = None, capture=None, warmup=None) -> None:
        """``device``, ``capture`` and ``warmup`` default (None) to CUDA, ``cuda_capture`` and a
        side-stream warm-up; tests pass "cpu", a capture that returns ``fn`` itself, and no warm-up."""
        self.on_device, self.capture, self.warmup = device, capture, warmup
        #: (batch, sizes, dtype) -> the captured graphs and the static tensors they read and write
        self.captured: dict[tuple, dict] = {}

    def available(self) -> str | None:
        reason = super().available()
        if reason is None and not _torch().cuda.is_available():
            return "needs a CUDA GPU (torch.cuda.is_available() is False)"
        return reason

    def runs_on(self) -> str:
        return "gpu"

    def _capture_all(self, problem: Problem, device, capture, warmup) -> dict:
        torch = _torch()
        put = lambda x: torch.tensor(x, device=device)  # noqa: E731
        X, y = put(problem.X), put(problem.y)
        W = [put(w) for w in problem.weights]
        alpha = float(problem.X.dtype.type(problem.alpha))
        unroll = _replay.unroll_for(problem.batch, problem.sizes[1])
        loss = torch.zeros((), dtype=X.dtype, device=device)

        def one() -> None:
            step(X, y, W, alpha, False)

        def many() -> None:
            for _ in range(unroll):
                step(X, y, W, alpha, False)

        def logged() -> None:
            loss.copy_(step(X, y, W, alpha, True))

        if warmup is not None:  # warm-up changes the weights; prepare() copies the problem's back in
            warmup(one)
            warmup(logged)
        return {
            "X": X, "y": y, "W": W, "loss": loss, "unroll": unroll,
            "single": capture(one), "unrolled": capture(many), "logged": capture(logged),
        }  # fmt: skip

    def prepare(self, problem: Problem) -> dict:
        """The problem's arrays in the static tensors of its shape (captured on first use)."""
        self.check(problem)
        torch = _torch()
        if self.on_device is None:
            device, capture, warmup = torch.device("cuda"), cuda_capture, cuda_warmup
        else:
            device, capture, warmup = torch.device(self.on_device), self.capture, self.warmup
        key = (problem.batch, problem.sizes, problem.dtype)
        with torch.no_grad():
            graphs = self.captured.get(key)
            if graphs is None:
                graphs = self.captured[key] = self._capture_all(problem, device, capture, warmup)
            statics = (graphs["X"], graphs["y"], *graphs["W"])
            for static, value in zip(statics, (problem.X, problem.y, *problem.weights)):
                static.copy_(torch.from_numpy(value))  # host to device, into the captured addresses
        return {"graphs": graphs, "losses": []}

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        torch = _torch()
        g = state["graphs"]
        with torch.no_grad():
            losses = torch.empty(n_logged(iterations, log_every), dtype=g["X"].dtype, device=g["X"].device)

            def logged(k: int) -> None:
                g["logged"]()
                losses[k].copy_(g["loss"])  # device to device: no synchronisation

            _replay.replay(
                _replay.schedule(iterations, log_every, g["unroll"]), g["unrolled"], g["single"], logged
            )
        # graph replays are queued asynchronously: wait before the clock is read
        self.synchronize(g["X"].device)
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        return TrainResult(to_host(state["graphs"]["W"]), losses_to_host(state["losses"]))

    def compilations(self) -> tuple[int, int]:
        """Shapes captured into graphs in this process (a capture is this backend's compile step)."""
        return len(self.captured), 0

    def threads(self) -> int | None:
        return None  # one host thread launches the graphs

    def set_threads(self, n: int) -> None:
        """Nothing to set: the work runs on the GPU."""
