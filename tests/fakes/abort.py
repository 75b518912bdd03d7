"""Kills its own process, as a segfault or a CUDA abort would."""

import os

from tests.fakes._base import Fake


class Abort(Fake):
    NAME = "fake-abort"

    def run(self, state, iterations, log_every):
        os.abort()
