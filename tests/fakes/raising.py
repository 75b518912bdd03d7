"""Raises inside the loop."""

from tests.fakes._base import Fake


class Raising(Fake):
    NAME = "fake-raise"

    def run(self, state, iterations, log_every):
        raise RuntimeError("deliberate failure inside the loop")
