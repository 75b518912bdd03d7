"""`warp`: NVIDIA Warp kernels -- effort level "plain", what a Warp user writes.

One thread per output element, as Warp's examples do: a layer's forward pass (one thread per
activation, a dot product and ``wp.exp``), the output error and delta (the logged loss summed on
the device with ``wp.atomic_add``), a hidden layer's delta, and each weight's gradient and update
(one thread per weight, summing over the batch). Five launches per iteration for the 3-layer
net, any depth as the NumPy loop. The kernels are generic (``typing.Any``) with float32 and
float64 overloads declared up front, so one module build serves both dtypes.

Where it runs: Warp's CUDA device where the process has one (``DEVICE = "any"``), else the CPU,
where Warp runs a launch's threads one after another (``threads()`` is 1: Warp has no CPU
thread pool). Iterations that log no loss are one iteration's launches captured into a graph
(``wp.ScopedCapture``) in ``prepare`` and replayed by ``run``, so the timed run launches and
captures nothing else (the harness prepares a fresh state for every timed run); Warp offers
capture on the CPU too, so the CPU path that the tests run here replays the same kind of graph.
The CUDA path (a CUDA graph, its capture and its replay) cannot be run on this project's
machines, which have no GPU: it is untested.

Warp compiles the module (its own Clang for the CPU, NVRTC for CUDA) into its kernel cache,
which this backend puts under the shared build directory (``backends._aot.build_dir()/warp``,
so the tests write nothing to ~): a first load that compiles is ``cold``, one that finds the
module's binary in the cache is ``disk``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend, Problem, TrainResult, missing_library, n_logged


@cache
def _warp():
    """Warp, initialised quietly with its kernel cache under the shared build directory."""
    import warp as wp

    from backends import _aot

    wp.config.quiet = True  # no banner
    wp.config.log_level = wp.LOG_WARNING  # no line per module load
    wp.config.kernel_cache_dir = str(_aot.build_dir() / "warp")
    wp.init()
    return wp


@cache
def _kernels():
    """The generic kernels, defined on first use (Warp is not imported before), with their
    float32 and float64 overloads."""
    wp = _warp()

    @wp.kernel
    def forward(inp: wp.array2d(dtype=Any), W: wp.array2d(dtype=Any), out: wp.array2d(dtype=Any)):
        """out = sigmoid(inp @ W), one thread per element of out."""
        i, j = wp.tid()
        z = W.dtype(0.0)
        for k in range(inp.shape[1]):
            z += inp[i, k] * W[k, j]
        out[i, j] = W.dtype(1.0) / (W.dtype(1.0) + wp.exp(-z))

    @wp.kernel
    def output_delta(
        a: wp.array2d(dtype=Any),
        y: wp.array2d(dtype=Any),
        delta: wp.array2d(dtype=Any),
        losses: wp.array(dtype=wp.float64),
        slot: int,
    ):
        """err = y - a; delta = err * a * (1 - a); |err| summed into losses[slot] (slot >= 0)."""
        i, j = wp.tid()
        s = a[i, j]
        err = y[i, j] - s
        delta[i, j] = err * s * (a.dtype(1.0) - s)
        if slot >= 0:
            wp.atomic_add(losses, slot, wp.float64(wp.abs(err)))

    @wp.kernel
    def hidden_delta(
        delta_next: wp.array2d(dtype=Any),
        W: wp.array2d(dtype=Any),
        a: wp.array2d(dtype=Any),
        delta: wp.array2d(dtype=Any),
    ):
        """delta = (delta_next @ W.T) * a * (1 - a), with W before this iteration's update."""
        i, j = wp.tid()
        s = W.dtype(0.0)
        for o in range(W.shape[1]):
            s += delta_next[i, o] * W[j, o]
        h = a[i, j]
        delta[i, j] = s * h * (W.dtype(1.0) - h)

    @wp.kernel
    def update(
        inp: wp.array2d(dtype=Any), delta: wp.array2d(dtype=Any), W: wp.array2d(dtype=Any), alpha: Any
    ):
        """W += alpha * (inp.T @ delta), one thread per weight."""
        k, j = wp.tid()
        g = W.dtype(0.0)
        for i in range(inp.shape[0]):
            g += inp[i, k] * delta[i, j]
        W[k, j] = W[k, j] + alpha * g

    for scalar in (wp.float32, wp.float64):
        m = wp.array2d(dtype=scalar)
        wp.overload(forward, [m, m, m])
        wp.overload(output_delta, [m, m, m, wp.array(dtype=wp.float64), int])
        wp.overload(hidden_delta, [m, m, m, m])
        wp.overload(update, [m, m, m, scalar])
    return forward, output_delta, hidden_delta, update


@dataclass
class WarpState:
    X: Any  # wp.array2d on the device, like everything below
    y: Any
    W: list
    acts: list  # activations of each layer (acts[0] is X)
    deltas: list  # delta of each weight layer's output
    alpha: Any
    device: Any
    graph: Any = None  # one unlogged iteration, captured in prepare
    no_losses: Any = None  # the captured launches' loss array (slot -1: never written)
    #: per run: (device array of summed |err| per logged iteration, its count)
    losses: list = field(default_factory=list)


class Warp(Backend):
    NAME = "warp"
    SUMMARY = "NVIDIA Warp kernels, one thread per element, graph replay (CUDA where present, else CPU)"
    PACKAGE = "warp-lang"
    DEVICE = "any"
    COLOUR, MARKER = "#76B900", "4"
    FAMILY = "warp"
    LEVEL = "plain"
    BYTES_PER_ELEMENT = 24.0  # the activations and deltas of the hidden layer

    def __init__(self) -> None:
        self._counts = [0, 0]
        self._loaded: set[str] = set()  # devices the kernels' module is loaded on

    def available(self) -> str | None:
        try:
            import warp  # noqa: F401  (before _warp(): initialised once per process, with the cache directory)

            _warp()
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == "warp":
                return f"package {self.PACKAGE!r} not installed"
            return missing_library("warp", exc)
        return None

    def runs_on(self) -> str:
        """The GPU where Warp sees a CUDA device, else the CPU."""
        return "gpu" if _warp().is_cuda_available() else "cpu"

    def device(self):
        return _warp().get_device("cuda:0" if self.runs_on() == "gpu" else "cpu")

    def load(self, device) -> None:
        """Load the kernels' module on ``device`` (compiling it into the kernel cache unless it is
        there), counting a compile as built and a cache hit as built and loaded. Warp says which
        one it was only in a log line, so this looks at the kernel cache: a file that was not
        there before the load was compiled by it."""
        if str(device) in self._loaded:
            return
        wp = _warp()
        cache_dir = Path(wp.config.kernel_cache_dir)
        before = _files(cache_dir)
        wp.load_module(_kernels()[0].module, device=device)
        self._loaded.add(str(device))
        self._counts[0] += 1
        self._counts[1] += 0 if _files(cache_dir) - before else 1

    def prepare(self, problem: Problem) -> WarpState:
        self.check(problem)
        wp, device = _warp(), self.device()
        self.load(device)
        scalar = wp.float32 if problem.dtype == "float32" else wp.float64
        put = lambda x: wp.array(np.ascontiguousarray(x), dtype=scalar, device=device)  # noqa: E731 (a copy)
        N = problem.batch
        acts = [put(problem.X)] + [wp.zeros((N, n), dtype=scalar, device=device) for n in problem.sizes[1:]]
        state = WarpState(
            X=acts[0],
            y=put(problem.y),
            W=[put(w) for w in problem.weights],
            acts=acts,
            deltas=[wp.zeros((N, n), dtype=scalar, device=device) for n in problem.sizes[1:]],
            alpha=scalar(problem.X.dtype.type(problem.alpha)),
            device=device,
            no_losses=wp.zeros(1, dtype=wp.float64, device=device),
        )
        # Captured here, not in the timed run: capture and graph instantiation are set-up.
        with wp.ScopedCapture(device=device) as capture:
            self.iteration(state, state.no_losses, -1)  # captured, not run: replayed by run
        state.graph = capture.graph
        return state

    def iteration(self, state: WarpState, losses, slot: int) -> None:
        """One iteration's launches: the NumPy loop, layer by layer."""
        wp = _warp()
        forward, output_delta, hidden_delta, update = _kernels()
        acts, deltas, W, device = state.acts, state.deltas, state.W, state.device
        for layer, w in enumerate(W):
            wp.launch(
                forward, dim=acts[layer + 1].shape, inputs=[acts[layer], w, acts[layer + 1]], device=device
            )
        wp.launch(
            output_delta,
            dim=acts[-1].shape,
            inputs=[acts[-1], state.y, deltas[-1], losses, slot],
            device=device,
        )
        for layer in reversed(range(len(W))):
            if layer > 0:  # uses W[layer] before this iteration's update
                wp.launch(
                    hidden_delta,
                    dim=acts[layer].shape,
                    inputs=[deltas[layer], W[layer], acts[layer], deltas[layer - 1]],
                    device=device,
                )
            wp.launch(
                update,
                dim=W[layer].shape,
                inputs=[acts[layer], deltas[layer], W[layer], state.alpha],
                device=device,
            )

    def run(self, state: WarpState, iterations: int, log_every: int) -> None:
        wp = _warp()
        losses = wp.zeros(max(1, n_logged(iterations, log_every)), dtype=wp.float64, device=state.device)
        for it in range(iterations):
            if log_every and it % log_every == 0:
                self.iteration(state, losses, it // log_every)
            else:
                wp.capture_launch(state.graph)
        wp.synchronize_device(state.device)  # launches are queued asynchronously on a GPU
        state.losses.append((losses, n_logged(iterations, log_every)))

    def fetch(self, state: WarpState) -> TrainResult:
        scale = state.y.shape[0] * state.y.shape[1]
        parts = [losses.numpy()[:n] / scale for losses, n in state.losses]
        weights = [w.numpy().copy() for w in state.W]
        return TrainResult(weights, np.concatenate(parts) if parts else np.empty(0))

    def threads(self) -> int | None:
        """1 on the CPU (Warp runs a CPU launch's threads one after another); None on a GPU."""
        return 1 if self.runs_on() == "cpu" else None

    def compilations(self) -> tuple[int, int]:
        """Module loads in this process (one per device), and how many found the module's binary
        already in the kernel cache."""
        return self._counts[0], self._counts[1]


def _files(cache_dir: Path) -> set[str]:
    """Every file in the kernel cache's module directories (a compile adds its binary there)."""
    found = set()
    for root, _, names in os.walk(cache_dir):
        found.update(os.path.join(root, name) for name in names)
    return found
