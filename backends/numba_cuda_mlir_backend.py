"""`numba-cuda-mlir`: the same kernels as `numba-cuda`, compiled by numba-cuda-mlir.

numba-cuda-mlir (``from numba_cuda_mlir import cuda``) is the maintained successor of numba-cuda:
the same ``@cuda.jit`` language, an MLIR-based compiler and a faster launcher, and no simulator
(``SIMULATED`` is always False: it runs on a GPU or not at all). Kernel source, launch plan and
host code are those of ``numba-cuda`` (``backends/_cuda_*.py``), so a timing difference between
the two backends is the compiler's and launcher's alone.
"""

from __future__ import annotations

from backends.numba_cuda_backend import NumbaCuda


class NumbaCudaMlir(NumbaCuda):
    NAME = "numba-cuda-mlir"
    SUMMARY = "the numba-cuda kernels compiled by numba-cuda-mlir"
    PACKAGE = "numba-cuda-mlir"
    COMPILER = "numba-cuda-mlir"
    COLOUR, MARKER = "#44AA99", "<"
