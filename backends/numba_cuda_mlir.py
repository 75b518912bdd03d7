"""`numba-cuda-mlir`: the same kernels as `numba-cuda`, compiled by numba-cuda-mlir.

numba-cuda-mlir (``from numba_cuda_mlir import cuda``) is the maintained successor of numba-cuda:
the same ``@cuda.jit`` language, an MLIR-based compiler and a faster launcher, and no simulator.
Kernel source, launch plan and host code are those of ``numba-cuda`` (``backends/_cuda_*.py``),
so a timing difference between the two backends is the compiler's and launcher's alone.
"""

from __future__ import annotations

from backends._cuda_host import CudaBackend

COMPILER = "numba-cuda-mlir"
_backend = CudaBackend(COMPILER)

DTYPES = _backend.DTYPES
DEVICE = _backend.DEVICE
SIMULATED = False  # numba-cuda-mlir has no simulator: it runs on a GPU or not at all
VERSION = f"{COMPILER} {_backend.version}"

available = _backend.available
device_name = _backend.device_name
prepare = _backend.prepare
run = _backend.run
fetch = _backend.fetch
compilations = _backend.compilations
COMPILES = not _backend.simulated  # the simulator interprets the kernels' Python
