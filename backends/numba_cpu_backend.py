"""`numba-cpu`: the whole training loop in one serial @njit call, fused per row tile, fast exp.

The loop (backends/_numba_kernels.py) streams the batch through in tiles of T rows: each tile's
hidden activations (T x H) stay in cache, every exp runs vectorised (``fexp``: llvmlite here has
no SVML, so libm's exp would keep the loop scalar), and the gradients are accumulated as the
tiles go by; the weights are updated once per iteration. ``prepare`` allocates every buffer, so
``run`` allocates nothing per iteration. Supports 2- and 3-layer nets (1 or 2 weight matrices),
any D and O, float64 and float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends import _numba_exp, _numba_kernels
from backends._numba_kernels import Net, Work, prepare_net, run_team, train_kernel, weights
from backends.base import Backend, Problem, TrainResult, UnsupportedProblem, n_logged, numba_compilations


@dataclass
class NumbaState:
    """One prepared run: the kernel's two arguments, the kernel itself, and the losses so far."""

    net: Net
    work: Work
    kernel: Any  # the Numba dispatcher for this shape (``train_kernel``)
    layers: int
    losses: list[np.ndarray] = field(default_factory=list)

    @property
    def nchunks(self) -> int:
        """Chunks the loop splits each iteration into (1: the serial kernel): of tiles, or of hidden
        units in the hidden split (``hidden``)."""
        return self.work.closs.shape[0]

    @property
    def hidden(self) -> bool:
        """Whether the loop splits the hidden units among threads (the hidden split)."""
        return self.work.hb.shape[0] > 0


class NumbaCpu(Backend):
    NAME = "numba-cpu"
    SUMMARY = "Numba @njit, whole loop compiled, one thread"
    PACKAGE = "numba"
    COLOUR, MARKER = "#E69F00", "s"
    FAMILY = "numba"
    LEVEL = "tuned"
    LOOP_FILES = ("backends/numba_cpu_backend.py", "backends/_numba_kernels.py", "backends/_numba_exp.py")

    def available(self) -> str | None:
        try:
            import numba  # noqa: F401
        except Exception as exc:  # pragma: no cover - depends on the install
            return f"numba unusable: {type(exc).__name__}: {exc}"
        return None

    def chunks(self, problem: Problem) -> int:
        """How many chunks of tiles to split each iteration into (the serial kernel: 1)."""
        return 1

    def split_hidden(self, problem: Problem) -> bool:
        """Whether to split the hidden units among threads instead of the tiles (numba-parallel)."""
        return False

    def prepare(self, problem: Problem) -> NumbaState:
        self.check(problem)
        layers = len(problem.weights)
        if layers > 2:
            raise UnsupportedProblem(
                f"{self.NAME} supports 1 or 2 weight layers (2- and 3-layer nets), not {layers}"
            )
        hidden = self.split_hidden(problem)
        net, work, cols = prepare_net(problem, self.threads() if hidden else self.chunks(problem), hidden)
        D, O = problem.sizes[0], problem.sizes[-1]  # noqa: E741
        parallel = work.closs.shape[0] > 1
        kernel = train_kernel(layers, D, O, cols, parallel, problem.batch, problem.sizes[1], hidden)
        return NumbaState(net, work, kernel, layers)

    def run(self, state: NumbaState, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        if state.hidden:  # one thread per chunk (numba-parallel)
            run_team(state.kernel, state.net, state.work, iterations, log_every, losses)
        else:
            state.kernel(state.net, state.work, iterations, log_every, losses)
        state.losses.append(losses)

    def fetch(self, state: NumbaState) -> TrainResult:
        losses = np.concatenate(state.losses) if state.losses else np.empty(0)
        if state.layers == 1:
            return TrainResult([np.ascontiguousarray(state.net.W0.T)], losses)
        return TrainResult(weights(state.net, state.work), losses)

    def threads(self) -> int:
        return 1  # the loop is one compiled call on the calling thread (numba-parallel is the threaded one)

    def compilations(self) -> tuple[int, int]:
        """Signatures the kernels have built in this process (the step helpers, the fast exp and
        every kernel ``train_kernel`` made), and how many came from Numba's disk cache."""
        return numba_compilations(_numba_exp, _numba_kernels, _numba_kernels.KERNELS)
