"""Never returns (the per-point timeout must stop it)."""

import time

from tests.fakes._base import Fake


class Hang(Fake):
    NAME = "fake-hang"

    def run(self, state, iterations, log_every):
        while True:
            time.sleep(1)
