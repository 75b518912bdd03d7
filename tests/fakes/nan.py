"""Diverges: returns NaN weights."""

import numpy as np

from tests.fakes._base import Fake


class Nan(Fake):
    NAME = "fake-nan"

    def fetch(self, state):
        result = super().fetch(state)
        result.weights = [np.full_like(w, np.nan) for w in result.weights]
        return result
