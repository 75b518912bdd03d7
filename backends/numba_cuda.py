"""`numba-cuda`: the training loop as Numba ``@cuda.jit`` kernels compiled by numba-cuda.

The kernels (``backends/_cuda_kernels.py``), the launch plan (``backends/_cuda_plan.py``) and the
host code (``backends/_cuda_host.py``) are shared with ``numba-cuda-mlir``; this module binds them
to numba-cuda, the compiler with the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) that CI runs the
kernels under. On numpy 2.5 the import first restores ``numpy.row_stack`` (see
``backends/_cuda_compiler.py``). docs/cuda.md explains the design.
"""

from __future__ import annotations

from backends._cuda_host import CudaBackend

COMPILER = "numba-cuda"
_backend = CudaBackend(COMPILER)

DTYPES = _backend.DTYPES
DEVICE = _backend.DEVICE
#: True when Numba's CUDA simulator stands in for a GPU: the harness shortens its runs there.
SIMULATED: bool = _backend.simulated
VERSION = f"{COMPILER} {_backend.version}"

available = _backend.available
device_name = _backend.device_name
prepare = _backend.prepare
run = _backend.run
fetch = _backend.fetch
compilations = _backend.compilations
COMPILES = not _backend.simulated  # the simulator interprets the kernels' Python
