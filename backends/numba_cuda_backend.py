"""`numba-cuda`: the training loop as Numba ``@cuda.jit`` kernels compiled by numba-cuda.

The kernels (``backends/_cuda_kernels.py``), the launch plan (``backends/_cuda_plan.py``) and the
host code (``backends/_cuda_host.py``, ``CudaBackend``) are shared with ``numba-cuda-mlir``; this
class binds them to numba-cuda, the compiler with the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)
that CI runs the kernels under. numba-cuda is imported on first use (``available``, ``prepare``);
on numpy 2.5 that import first restores ``numpy.row_stack`` (see ``backends/_cuda_compiler.py``).
docs/cuda.md explains the design.
"""

from __future__ import annotations

from backends._cuda_host import CudaBackend


class NumbaCuda(CudaBackend):
    NAME = "numba-cuda"
    SUMMARY = "Numba @cuda.jit kernels on an NVIDIA GPU, compiled by numba-cuda"
    PACKAGE = "numba-cuda"
    COMPILER = "numba-cuda"
    COLOUR, MARKER = "#009E73", "^"
    FAMILY = "numba"
    LEVEL = "tuned"
    # SIMULATED (True under the simulator) and COMPILES (not SIMULATED: the simulator interprets
    # the kernels' Python) are set per instance, from NUMBA_ENABLE_CUDASIM (CudaBackend.__init__).
