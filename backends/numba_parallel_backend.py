"""`numba-parallel`: the numba-cpu loop with the row tiles split across threads (prange).

Each iteration is one parallel region: the batch's row tiles are cut into ``nchunks`` fixed,
contiguous ranges (one per thread), each thread runs the same tile steps as numba-cpu into its
own gradient accumulators, and the accumulators are summed once, after the region, before the
single weight update. The split is fixed at ``prepare`` so results do not depend on scheduling.
Problems too small to pay for a parallel region per iteration (fewer than ``PARALLEL_MIN_WORK``
hidden activations per iteration, or a single tile) and 2-layer nets run numba-cpu's serial kernel.
"""

from __future__ import annotations

from numba import get_num_threads

from backends.base import Problem
from backends.numba_cpu_backend import NumbaCpu

# N*H below this: one parallel region (fork, barrier) per iteration costs more than it saves. Measured
# on the idle 2-core machine (docs/performance.md, "Parallel"): break-even at 2^12 (~15 us serial per
# iteration), 1.4-1.5x at 2^14 when the batch has several tiles, 1.5-2x from 2^16 on. (On a machine
# whose other core is busy the barrier waits for a descheduled thread and parallel loses below ~2^20.)
PARALLEL_MIN_WORK = 1 << 14


class NumbaParallel(NumbaCpu):
    NAME = "numba-parallel"
    SUMMARY = "Numba @njit(parallel=True), prange over rows"
    COLOUR, MARKER = "#D55E00", "D"

    def chunks(self, problem: Problem) -> int:
        """One chunk per thread from PARALLEL_MIN_WORK hidden activations on (``prepare`` caps it
        at the number of tiles; one chunk runs the serial kernel)."""
        N, H = problem.batch, problem.sizes[1]
        return self.threads() if len(problem.weights) == 2 and N * H >= PARALLEL_MIN_WORK else 1

    def threads(self) -> int:
        """Threads the parallel regions use (numba.get_num_threads(); NUMBA_NUM_THREADS sets it)."""
        return get_num_threads()
