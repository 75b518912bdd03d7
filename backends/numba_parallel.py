"""`numba-parallel`: the numba-cpu loop with the row tiles split across threads (prange).

Each iteration is one parallel region: the batch's row tiles are cut into ``nchunks`` fixed,
contiguous ranges (one per thread), each thread runs the same fused tile kernel as numba-cpu
into its own gradient accumulators, and the accumulators are summed once, after the region,
before the single weight update. The split is fixed at ``prepare`` so results do not depend on
scheduling. Problems too small to pay for a parallel region per iteration (fewer than
``PARALLEL_MIN_WORK`` hidden activations per iteration, or a single tile) run the serial kernel.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from backends import numba_cpu
from backends._numba_kernels import KERNEL_FM, chunk2, update
from backends.base import Problem, TrainResult, n_logged, numba_compilations

DTYPES = numba_cpu.DTYPES
DEVICE = "cpu"
NAME = "numba-parallel"
# N*H below this: one parallel region (fork, barrier) per iteration costs more than it saves. Measured
# on the idle 2-core machine (docs/performance.md, "Parallel"): break-even at 2^12 (~15 us serial per
# iteration), 1.4-1.5x at 2^14 when the batch has several tiles, 1.5-2x from 2^16 on. (On a machine
# whose other core is busy the barrier waits for a descheduled thread and parallel loses below ~2^20.)
PARALLEL_MIN_WORK = 1 << 14


def available() -> str | None:
    return numba_cpu.available()


def threads() -> int:
    """Threads the parallel regions use (numba.get_num_threads(); NUMBA_NUM_THREADS sets it)."""
    return get_num_threads()


@njit(parallel=True, cache=True, fastmath=KERNEL_FM, error_model="numpy")
def train2_parallel(
    Xt, yt, W0, W1t, A, d2, G0, G1, closs, T, cols, nchunks, iterations, log_every, losses, alpha, one
):
    N = Xt.shape[1]
    O = yt.shape[0]  # noqa: E741
    ntiles = (N + T - 1) // T
    per = (ntiles + nchunks - 1) // nchunks
    scale = 1.0 / (N * O)
    for it in range(iterations):
        for c in prange(nchunks):
            c0 = min(c * per, ntiles)
            c1 = min(c0 + per, ntiles)
            closs[c] = chunk2(Xt, yt, W0, W1t, c0, c1, T, N, A[c], d2[c], G0[c], G1[c], one, cols)
        if log_every > 0 and it % log_every == 0:
            loss = 0.0
            for c in range(nchunks):
                loss += closs[c]
            losses[it // log_every] = loss * scale
        update(W1t, G1, nchunks, alpha)
        update(W0, G0, nchunks, alpha)


def prepare(problem: Problem) -> dict:
    N, H = problem.X.shape[0], problem.weights[0].shape[1]
    nchunks = threads() if N * H >= PARALLEL_MIN_WORK else 1
    state = numba_cpu.make_state(problem, nchunks, NAME)
    state["threads"] = threads()
    return state


def run(state: dict, iterations: int, log_every: int) -> None:
    s = state
    if s["layers"] == 1 or s["nchunks"] == 1:
        numba_cpu.run(state, iterations, log_every)
        return
    losses = np.zeros(n_logged(iterations, log_every))
    train2_parallel(
        s["Xt"],
        s["yt"],
        s["W0"],
        s["W1t"],
        s["A"],
        s["d2"],
        s["G0"],
        s["G1"],
        s["closs"],
        s["T"],
        s["cols"],
        s["nchunks"],
        iterations,
        log_every,
        losses,
        s["alpha"],
        s["one"],
    )
    s["losses"].append(losses)


def fetch(state: dict) -> TrainResult:
    return numba_cpu.fetch(state)


def compilations() -> tuple[int, int]:
    """Signatures built in this process (the shared kernels and ``train2_parallel``), and how many
    came from Numba's disk cache."""
    from backends import _numba_kernels

    return numba_compilations(_numba_kernels, globals())
