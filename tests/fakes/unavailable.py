"""Cannot run here, and says why."""

from tests.fakes._base import Fake


class Unavailable(Fake):
    NAME = "fake-unavailable"

    def available(self):
        return "needs the fake accelerator, which this machine lacks"
