"""`pythran`: the NumPy loop compiled ahead of time by Pythran -- effort level "naive".

``backends/_pythran/train.py`` is ``backends/numpy_backend.py``'s loop with a ``#pythran export``
line per dtype (its docstring lists every change Pythran needs). It is compiled by the
``pythran`` command at -O3 with the flags Pythran's documentation gives for vectorised code
(-DUSE_XSIMD -march=native: Pythran fuses the element-wise expressions into loops, and xsimd
vectorises them, exp included) against OpenBLAS from the ``scipy-openblas64`` wheel (Pythran's
``compiler.blas=scipy-openblas``: its matmuls need a CBLAS, and this one needs no system package
or header), once per key (the source, the flags, the versions of Pythran, the BLAS wheel and the
C++ compiler, the CPU, the Python ABI) into the shared build cache (``backends._aot``): the first
call of a fresh process that has to build is ``cold`` and includes the build; one that loads the
cached module is ``disk``. ``library()`` names Pythran's version, the compiler, the flags and the
BLAS for the rows' ``library`` column (PACKAGE's version alone until ``backends.library`` asks a
class for its ``library()``).

No OpenMP: Pythran's -fopenmp parallelises only loops annotated ``#omp parallel for``, and the
NumPy loop has none (adding them would mean rewriting it as loops, which is not this rung). Its
threads are OpenBLAS's, limited to the harness's count like NumPy's. 2- and 3-layer nets (any
depth, as the NumPy loop), any D and O, float64 and float32.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import _aot
from backends._pythran.build import build_module, cxx
from backends.base import Backend, Problem, TrainResult, missing_library, n_logged

SOURCE = Path(__file__).with_name("_pythran") / "train.py"
MODULE = "nnbench_pythran_train"  # the extension's name (its PyInit_ symbol)
FLAGS = ("-O3", "-march=native", "-DUSE_XSIMD")
BLAS = "scipy-openblas"  # Pythran's name for the scipy-openblas64 wheel's OpenBLAS
BLAS_DIST = "scipy-openblas64"


@dataclass
class PythranState:
    X: np.ndarray
    y: np.ndarray
    W: list[np.ndarray]
    alpha: Any
    losses: list[np.ndarray] = field(default_factory=list)


class Pythran(Backend):
    NAME = "pythran"
    SUMMARY = "Pythran: the NumPy loop compiled ahead of time (#pythran export), OpenBLAS matmuls"
    PACKAGE = "pythran"
    COLOUR, MARKER = "#17BECF", "3"
    FAMILY = "pythran"
    LEVEL = "naive"
    LOOP_FILES = ("backends/pythran_backend.py", "backends/_pythran/train.py")
    BYTES_PER_ELEMENT = 48.0  # the NumPy loop's temporaries

    def __init__(self) -> None:
        self._module = None
        self._counts = (0, 0)
        self._threads: int | None = None

    def available(self) -> str | None:
        try:
            import pythran  # noqa: F401
        except ImportError as exc:
            return missing_library("pythran", exc)
        try:
            import scipy_openblas64  # noqa: F401
        except ImportError:
            return f"package {BLAS_DIST!r} not installed (the OpenBLAS Pythran links the loop's matmuls to)"
        if self._module is None and shutil.which(cxx()[0]) is None:
            return f"no C++ compiler ({cxx()[0]!r} not found) to build the Pythran module"
        return None

    @classmethod
    def library(cls) -> str:
        """What the rows' ``library`` column should say: Pythran's version, the C++ compiler, its
        flags and the BLAS, e.g. 'pythran 0.19.0 (g++ 12.2.0 -O3 -march=native -DUSE_XSIMD,
        scipy-openblas64 0.3.34.481.3)'."""
        from importlib import metadata

        def version(dist: str) -> str:
            try:
                return f"{dist} {metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                return f"{dist} not installed"

        return f"{version('pythran')} ({_aot.tool_name(cxx())} {' '.join(FLAGS)}, {version(BLAS_DIST)})"

    def key_parts(self) -> list[str | bytes]:
        from importlib import metadata

        import scipy_openblas64

        return [SOURCE.read_bytes(), " ".join(FLAGS), BLAS, f"pythran {metadata.version('pythran')}",
                f"{BLAS_DIST} {metadata.version(BLAS_DIST)} {scipy_openblas64.get_lib_dir()}",
                " ".join(cxx()), _aot.tool_version(tuple(cxx()))]  # _aot adds the Python ABI and the CPU (-march=native)

    def module(self):
        """The compiled module, built (``cold``) or loaded from the build cache (``disk``) on
        first use in this process; its OpenBLAS gets the harness's thread count."""
        if self._module is None:
            build = lambda tmp: build_module(SOURCE, MODULE, tmp, FLAGS, BLAS)  # noqa: E731
            path, built = _aot.cached_build(MODULE, self.key_parts(), build)
            self._module = _aot.load_extension(path, MODULE)
            self._counts = (1, 0 if built else 1)
            if self._threads is not None:
                self.set_threads(self._threads)  # the OpenBLAS it loaded was not there when the harness set it
        return self._module

    def prepare(self, problem: Problem) -> PythranState:
        self.check(problem)
        self.module()
        return PythranState(
            np.ascontiguousarray(problem.X),
            np.ascontiguousarray(problem.y),
            [np.array(w, order="C") for w in problem.weights],
            problem.X.dtype.type(problem.alpha),
        )

    def run(self, state: PythranState, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        weights, losses = self.module().train(state.X, state.y, state.W, state.alpha, iterations, log_every, losses)
        state.W = list(weights)
        state.losses.append(losses)

    def fetch(self, state: PythranState) -> TrainResult:
        losses = np.concatenate(state.losses) if state.losses else np.empty(0)
        return TrainResult([w.copy() for w in state.W], losses)

    def threads(self) -> int | None:
        """Threads of the OpenBLAS the module runs its matmuls on (before the module is loaded:
        of the BLAS behind NumPy, which the harness limits to the same count)."""
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if self._module is not None:
            import scipy_openblas64

            lib_dir = os.path.realpath(scipy_openblas64.get_lib_dir())
            ours = [i for i in blas if os.path.realpath(i["filepath"]).startswith(lib_dir + os.sep)]
            blas = ours or blas
        counts = [i["num_threads"] for i in blas]
        return max(counts) if counts else None

    def set_threads(self, n: int) -> None:
        self._threads = max(1, int(n))
        if self._module is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(self._threads, user_api="blas")

    def compilations(self) -> tuple[int, int]:
        """The module once loaded: (1, 0) when this process built it, (1, 1) when it came from
        the build cache; (0, 0) before first use."""
        return self._counts
