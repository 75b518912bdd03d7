"""`cython`: the training loop in Cython -- effort level "plain", what a Cython user writes.

The loop is ``backends/_cython/train.pyx``: typed memoryviews, ``prange`` over the rows with the
harness's thread count (``set_threads``; one thread below ``PARALLEL_MIN_WORK``), libc ``exp``,
no tiling and no hand-written exp. It is compiled ahead of time with the C compiler Python was
built with (setuptools' ``build_ext``), at -O3 and with OpenMP (-fopenmp) where the compiler has
it (without, ``prange`` runs serially and ``threads()`` says 1), once per key (the source, the
flags, Cython's and the compiler's versions, the Python ABI) into the shared build cache
(``backends._aot``): the first call of a fresh process that has to build is ``cold`` and
includes the build, one that loads the cached module is ``disk``. ``library()`` names Cython's
version, the compiler and the flags for the rows' ``library`` column (PACKAGE's version alone
until ``backends.library`` asks a class for its ``library()``). 2- and 3-layer nets, any D and O,
float64 and float32 (Cython fused types).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import _aot
from backends._cython.build import build_extension, compiler
from backends.base import Backend, Problem, TrainResult, UnsupportedProblem, missing_library, n_logged

SOURCE = Path(__file__).with_name("_cython") / "train.pyx"
MODULE = "nnbench_cython_train"  # the extension's name (its PyInit_ symbol)
CFLAGS = ("-O3",)
OPENMP_FLAGS = ("-fopenmp",)
# N*H below this runs on one thread: a parallel region per iteration (waking the team, the
# barrier) costs more than it saves there. The same threshold as numba-parallel's, for the same
# reason (docs/performance.md, "Parallel"); the only concession to speed in this backend.
PARALLEL_MIN_WORK = 1 << 14


@dataclass
class CythonState:
    X: np.ndarray
    y: np.ndarray
    W: list[np.ndarray]
    alpha: Any
    scratch: tuple[np.ndarray, ...]  # per-thread rows and gradient slices (first dimension: the threads it runs on)
    losses: list[np.ndarray] = field(default_factory=list)


class Cython(Backend):
    NAME = "cython"
    SUMMARY = "Cython: typed memoryviews, prange over rows, libc exp (ahead of time, -O3 -fopenmp)"
    PACKAGE = "cython"
    COLOUR, MARKER = "#8C564B", "+"
    FAMILY = "cython"
    LEVEL = "plain"
    LOOP_FILES = ("backends/cython_backend.py", "backends/_cython/train.pyx")
    BYTES_PER_ELEMENT = 8.0  # only X, y and the weights: the per-row scratch is per thread

    def __init__(self) -> None:
        self._module = None
        self._counts = (0, 0)
        self._threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def available(self) -> str | None:
        try:
            import Cython  # noqa: F401
            import setuptools  # noqa: F401
        except ImportError as exc:
            return missing_library("Cython" if exc.name == "Cython" else "setuptools", exc)
        if self._module is None and shutil.which(compiler()[0]) is None:
            return f"no C compiler ({compiler()[0]!r} not found) to build the Cython extension"
        return None

    @classmethod
    def library(cls) -> str:
        """What the rows' ``library`` column should say: Cython's version, the C compiler and its
        flags, e.g. 'cython 3.3.1 (gcc 12.2.0 -O3 -fopenmp)'."""
        from importlib import metadata

        try:
            tool = f"cython {metadata.version('cython')}"
        except metadata.PackageNotFoundError:
            tool = "cython not installed"
        return f"{tool} ({_aot.tool_name(compiler())} {' '.join(CFLAGS + OPENMP_FLAGS)})"

    def key_parts(self) -> list[str | bytes]:
        import Cython

        return [SOURCE.read_bytes(), " ".join(CFLAGS), " ".join(OPENMP_FLAGS), f"Cython {Cython.__version__}",
                " ".join(compiler()), _aot.tool_version(tuple(compiler()))]

    def module(self):
        """The compiled extension, built (``cold``) or loaded from the build cache (``disk``) on
        first use in this process."""
        if self._module is None:
            def build(tmp: Path) -> Path:
                try:
                    return build_extension(SOURCE, MODULE, tmp, CFLAGS + OPENMP_FLAGS, OPENMP_FLAGS)
                except RuntimeError as exc:  # a compiler without OpenMP: prange runs serially
                    if "openmp" not in str(exc).lower() and "omp.h" not in str(exc):
                        raise
                    (tmp / "serial").mkdir()
                    return build_extension(SOURCE, MODULE, tmp / "serial", CFLAGS, ())

            path, built = _aot.cached_build(MODULE, self.key_parts(), build)
            self._module = _aot.load_extension(path, MODULE)
            self._counts = (1, 0 if built else 1)
        return self._module

    def prepare(self, problem: Problem) -> CythonState:
        self.check(problem)
        layers = len(problem.weights)
        if layers > 2:
            raise UnsupportedProblem(f"{self.NAME} supports 1 or 2 weight layers (2- and 3-layer nets), not {layers}")
        self.module()
        dtype, sizes = problem.X.dtype, problem.sizes
        T = self.threads() if problem.batch * sizes[1] >= PARALLEL_MIN_WORK else 1
        scratch: tuple[np.ndarray, ...]
        if layers == 1:
            scratch = (np.zeros((T, sizes[1]), dtype), np.zeros((T, sizes[0], sizes[1]), dtype))
        else:
            D, H, O = sizes  # noqa: E741
            scratch = (np.zeros((T, H), dtype), np.zeros((T, O), dtype), np.zeros((T, D, H), dtype), np.zeros((T, H, O), dtype))
        return CythonState(
            np.ascontiguousarray(problem.X),
            np.ascontiguousarray(problem.y),
            [np.array(w, order="C") for w in problem.weights],
            dtype.type(problem.alpha),
            scratch,
        )

    def run(self, state: CythonState, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        module = self.module()
        if len(state.W) == 1:
            module.train1(state.X, state.y, state.W[0], state.alpha, iterations, log_every, losses, *state.scratch)
        else:
            module.train2(state.X, state.y, *state.W, state.alpha, iterations, log_every, losses, *state.scratch)
        state.losses.append(losses)

    def fetch(self, state: CythonState) -> TrainResult:
        losses = np.concatenate(state.losses) if state.losses else np.empty(0)
        return TrainResult([w.copy() for w in state.W], losses)

    def threads(self) -> int:
        """Threads ``prange`` runs on from ``PARALLEL_MIN_WORK`` on: the count ``set_threads``
        gave (default: the CPUs this process may use), 1 once the module turns out to be built
        without OpenMP."""
        if self._module is not None and not self._module.OPENMP:
            return 1
        return self._threads

    def set_threads(self, n: int) -> None:
        self._threads = max(1, int(n))

    def compilations(self) -> tuple[int, int]:
        """The extension once loaded: (1, 0) when this process built it, (1, 1) when it came
        from the build cache; (0, 0) before first use."""
        return self._counts
