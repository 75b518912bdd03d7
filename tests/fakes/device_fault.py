"""A device error at the 4 x 4 point that poisons the process (as a sticky CUDA error does): every
later call in the same worker fails too, so only a fresh worker can run the next points."""

from backends.base import DeviceFault
from tests.fakes._base import Fake


class DeviceFaulting(Fake):
    NAME = "fake-device-fault"
    poisoned = False

    def prepare(self, problem):
        if self.poisoned or (problem.batch == 4 and problem.sizes[1] == 4):
            self.poisoned = True
            raise DeviceFault("CudaAPIError while running the grid path: [720] CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE")
        return super().prepare(problem)
