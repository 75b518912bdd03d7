"""Asks for far more memory than any machine has."""

import numpy as np

from tests.fakes._base import Fake


class Hog(Fake):
    NAME = "fake-hog"

    def run(self, state, iterations, log_every):
        state["scratch"] = np.ones(1 << 46)  # 512 TiB of float64
