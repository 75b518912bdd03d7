"""`c-openmp`: numba-parallel's algorithm in C -- the `c` loop with the row tiles' chunks on OpenMP
threads (backends/_c/train_body.h, ``nn_train3``'s parallel branch).

Each iteration is one parallel region over ``nchunks`` fixed, contiguous ranges of tiles, one per
thread (``schedule(static, 1)``, ``num_threads(nchunks)``), each into its own gradient
accumulators, summed in chunk order before the single weight update: numba-parallel's split,
chosen by the same rule (its ``PARALLEL_MIN_WORK``; 2-layer nets and small problems run the
serial loop), with the harness's thread count (``set_threads``) in place of Numba's. Where the
batch has fewer row tiles than threads it runs numba-parallel's hidden split by the same rule
(``split_hidden``, ``nn_train_hidden``: the same chunks of hidden units, the chunks' shares of
the output pre-activations summed in the same order, and the same team: one parallel region for
the run, its threads meeting once an iteration through the same flags, with ``__atomic``
builtins; OpenMP starts the team where numba-parallel starts Python threads). The
threads are GCC's libgomp, the OpenMP runtime Numba's default "omp" threading layer also runs on
where it is chosen (``numba.threading_layer()``; the development machine's is "omp").
"""

from __future__ import annotations

import os

from backends.base import Problem
from backends.c_backend import C


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class COpenmp(C):
    NAME = "c-openmp"
    SUMMARY = "numba-parallel's algorithm in C (system compiler -O3 -march=native -fopenmp, via cffi)"
    COLOUR, MARKER = "#661100", "d"
    TWIN = "numba-parallel"
    LOOP_FILES = (
        "backends/c_backend.py",
        "backends/c_openmp_backend.py",
        "backends/_c/train.c",
        "backends/_c/train_body.h",
    )
    OPENMP = True

    def __init__(self) -> None:
        super().__init__()
        self._threads = _cores()  # OpenMP's default; the harness sets its own count

    def set_threads(self, n: int) -> None:
        self._threads = max(1, int(n))

    def threads(self) -> int:
        return self._threads

    def chunks(self, problem: Problem) -> int:
        """numba-parallel's rule: one chunk per thread from PARALLEL_MIN_WORK hidden activations on
        (``prepare_net`` caps it at the number of tiles; one chunk runs the serial loop)."""
        from backends.numba_parallel_backend import PARALLEL_MIN_WORK

        N, H = problem.batch, problem.sizes[1]
        return self.threads() if len(problem.weights) == 2 and N * H >= PARALLEL_MIN_WORK else 1

    def split_hidden(self, problem: Problem) -> bool:
        """numba-parallel's rule for the hidden split (``numba_parallel_backend.split_hidden``)."""
        from backends.numba_parallel_backend import split_hidden

        return split_hidden(problem.batch, problem.sizes[1], len(problem.weights), self.threads())
