"""A device error at the 4 x 4 point that poisons the process (as a sticky CUDA error does): every
later call in the same worker fails too, so only a fresh worker can run the next points."""

from backends import numpy_ref
from backends.base import DeviceFault
from backends.numpy_ref import DEVICE, DTYPES, available, fetch, run  # noqa: F401

_poisoned = False


def prepare(problem):
    global _poisoned
    if _poisoned or (problem.batch == 4 and problem.sizes[1] == 4):
        _poisoned = True
        raise DeviceFault("CudaAPIError while running the grid path: [720] CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE")
    return numpy_ref.prepare(problem)
