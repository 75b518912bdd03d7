"""Correct, but its first timed-path call (log_every = 0) in a process takes a second, as a JIT
that specialises on the logging variant would (JAX does)."""

import time

from tests.fakes._base import Fake


class Compiles(Fake):
    NAME = "fake-compiles"

    def __init__(self):
        self._compiled = set()

    def compilations(self):
        return len(self._compiled), 0

    def run(self, state, iterations, log_every):
        key = (state["X"].shape, bool(log_every))
        if key not in self._compiled:
            time.sleep(1.0)
            self._compiled.add(key)
        super().run(state, iterations, log_every)
