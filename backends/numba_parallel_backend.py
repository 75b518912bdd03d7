"""`numba-parallel`: the numba-cpu loop with the row tiles split across threads (prange).

Each iteration is one parallel region: the batch's row tiles are cut into ``nchunks`` fixed,
contiguous ranges (one per thread), each thread runs the same tile steps as numba-cpu into its
own gradient accumulators, and the accumulators are summed once, after the region, before the
single weight update. The split is fixed at ``prepare`` so results do not depend on scheduling.
Where the batch has fewer row tiles than threads, the hidden units are split instead (the hidden
split, ``split_hidden``): each thread keeps its own hidden units and updates their weights, and
the threads are a team for the whole run -- started once by ``run_team`` (Python threads, each
running the ``nogil`` kernel for its chunk), meeting once an iteration through atomic flags
instead of a parallel region's fork and join (``_numba_kernels._train_hidden``). Problems too
small to pay for a parallel region per iteration (fewer than ``PARALLEL_MIN_WORK`` hidden
activations per iteration, or a single tile) or for the team's meetings (below
``HIDDEN_SPLIT_MIN_WORK``), and 2-layer nets, run numba-cpu's serial kernel.
"""

from __future__ import annotations

from numba import get_num_threads

from backends._numba_kernels import tile_layout
from backends.base import Problem
from backends.numba_cpu_backend import NumbaCpu

# N*H below this: one parallel region (fork, barrier) per iteration costs more than it saves. Measured
# on the idle 2-core machine (docs/performance.md, "Parallel"): break-even at 2^12 (~15 us serial per
# iteration), 1.4-1.5x at 2^14 when the batch has several tiles, 1.5-2x from 2^16 on. (On a machine
# whose other core is busy the barrier waits for a descheduled thread and parallel loses below ~2^20.)
PARALLEL_MIN_WORK = 1 << 14
# The hidden split (backends/_numba_kernels.py, ``_train_hidden``: a team of threads for the whole
# run), for batches of fewer row tiles than threads. Measured on the 2-core EPYC VM against
# numba-cpu, each backend in a process of its own, float64, best and median of 5 runs of ~0.12 s,
# two rounds, before the spin got its ``pause`` (docs/performance.md, "The hidden split as a
# team"; the sweeps on a busy host did not show these gains everywhere): from N*H = 2^12 with H >= 64,
# 0.58-0.74x at 4x1024, 0.62-0.70x at 16x256, 0.71-0.93x at 64x64 (one best-of-5 1.13), 0.56-0.75x
# at 16x512, 0.73-0.97x at 256x64, but 1.0-1.26x at 4x512 and 1.02-1.11x at 32x128 (both off the
# default grid); below 2^12 it loses where the one-thread small kernel runs (4x64 2.8x, 16x16
# 1.9x, 64x16 1.7x) and is level or ahead at 2^10 (4x256 0.57-0.86x, 16x64 0.94-1.03x); narrower layers
# lose at 2^13 (256x32 1.17-1.73x). (The region-per-iteration hidden split it replaced won only
# from 2^13 with H >= 128 and from 2^14 with H >= 32.)
HIDDEN_SPLIT_MIN_WORK = 1 << 12  # hidden activations per iteration, layers of HIDDEN_SPLIT_WIDE units on
HIDDEN_SPLIT_WIDE = 64
HIDDEN_SPLIT_NARROW_MIN_WORK = 1 << 14  # the same for narrower layers, of HIDDEN_SPLIT_MIN_H units on
HIDDEN_SPLIT_MIN_H = 32


def split_hidden(batch: int, hidden: int, layers: int, threads: int) -> bool:
    """Whether the hidden units rather than the row tiles are split among the threads: a 3-layer
    net whose batch has fewer row tiles (``tile_layout``) than there are threads, with at least
    HIDDEN_SPLIT_MIN_WORK hidden activations per iteration (HIDDEN_SPLIT_NARROW_MIN_WORK below
    HIDDEN_SPLIT_WIDE hidden units, and never below HIDDEN_SPLIT_MIN_H)."""
    wide = hidden >= HIDDEN_SPLIT_WIDE
    work = HIDDEN_SPLIT_MIN_WORK if wide else HIDDEN_SPLIT_NARROW_MIN_WORK
    if layers != 2 or threads < 2 or hidden < HIDDEN_SPLIT_MIN_H or batch * hidden < work:
        return False
    T, _ = tile_layout(batch, hidden)
    return -(-batch // T) < threads


class NumbaParallel(NumbaCpu):
    NAME = "numba-parallel"
    SUMMARY = "Numba @njit(parallel=True), prange over rows"
    COLOUR, MARKER = "#D55E00", "D"
    LOOP_FILES = ("backends/_numba_atomics.py",)  # the hidden split's team (numba-cpu's files come with the base)

    def chunks(self, problem: Problem) -> int:
        """One chunk per thread from PARALLEL_MIN_WORK hidden activations on (``prepare`` caps it
        at the number of tiles; one chunk runs the serial kernel)."""
        N, H = problem.batch, problem.sizes[1]
        return self.threads() if len(problem.weights) == 2 and N * H >= PARALLEL_MIN_WORK else 1

    def split_hidden(self, problem: Problem) -> bool:
        """The hidden split where the row tiles are too few for the threads (``split_hidden``)."""
        return split_hidden(problem.batch, problem.sizes[1], len(problem.weights), self.threads())

    def threads(self) -> int:
        """Threads the parallel regions use (numba.get_num_threads(); NUMBA_NUM_THREADS sets it)."""
        return get_num_threads()
