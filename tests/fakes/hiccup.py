"""Correct and fast, but the calibration's one-iteration run hits a hiccup (a descheduled thread, say):
the second unlogged single-iteration call in a process sleeps 50 ms."""

import time

from tests.fakes._base import Fake


class Hiccup(Fake):
    NAME = "fake-hiccup"
    single_calls = 0

    def run(self, state, iterations, log_every):
        if iterations == 1 and not log_every:
            self.single_calls += 1
            if self.single_calls == 2:  # the first is the worker's warm-up, the second its calibration
                time.sleep(0.05)
        super().run(state, iterations, log_every)
