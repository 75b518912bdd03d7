"""The two CUDA compilers the kernels run under, and the one compatibility step numba-cuda needs.

* ``numba-cuda`` (``from numba import cuda``): the compiler with the CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1``), which CI uses. In maintenance mode (NVIDIA/numba-cuda#902).
* ``numba-cuda-mlir`` (``from numba_cuda_mlir import cuda``): its maintained successor. No
  simulator.

numba-cuda 0.30.x registers an overload for ``np.row_stack`` when it first compiles a kernel;
numpy 2.5 removed that function (an alias of ``np.vstack`` since numpy 2.0), so every compile
raises ``AttributeError`` there (NVIDIA/numba-cuda#907, closed without a fix).
``numpy_row_stack_alias`` restores the name as ``np.vstack`` before numba-cuda is imported, only
when numpy lacks it, and only in a process that imports numba-cuda through this module (the
harness runs each backend in a process of its own). docs/cuda.md says why this and not a pin.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

COMPILERS = ("numba-cuda", "numba-cuda-mlir")
_KERNEL_SOURCE = Path(__file__).with_name("_cuda_kernels.py")


def numpy_row_stack_alias() -> bool:
    """Give numpy back ``row_stack`` (as ``vstack``) if it lacks it; True if it was missing."""
    import numpy

    if hasattr(numpy, "row_stack"):
        return False
    numpy.row_stack = numpy.vstack
    return True


def import_cuda(compiler: str) -> ModuleType:
    """The ``cuda`` module of ``compiler``; ImportError (with the package's name) if missing."""
    if compiler == "numba-cuda":
        numpy_row_stack_alias()
        from numba import cuda

        return cuda
    if compiler == "numba-cuda-mlir":
        from numba_cuda_mlir import cuda

        return cuda
    raise ValueError(f"unknown CUDA compiler {compiler!r}; known: {', '.join(COMPILERS)}")


def version(compiler: str) -> str:
    try:
        return metadata.version(compiler)
    except metadata.PackageNotFoundError:
        return "unknown"


def load_kernels(compiler: str) -> ModuleType:
    """The kernel source (backends/_cuda_kernels.py) executed with ``cuda`` bound to ``compiler``'s."""
    name = f"backends._cuda_kernels.{compiler.replace('-', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    cuda = import_cuda(compiler)
    spec = importlib.util.spec_from_file_location(name, _KERNEL_SOURCE)
    module = importlib.util.module_from_spec(spec)
    module.cuda = cuda
    sys.modules[name] = module  # before executing: numba looks functions' modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
