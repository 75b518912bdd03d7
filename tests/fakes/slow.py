"""Correct, but sleeps 20 ms per iteration (a backend the budget must predict and skip)."""

import time

from tests.fakes._base import Fake


class Slow(Fake):
    NAME = "fake-slow"

    def run(self, state, iterations, log_every):
        time.sleep(0.02 * iterations)
        super().run(state, iterations, log_every)
