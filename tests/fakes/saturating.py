"""Right over the validated iterations, then saturated: a run of 10 or more iterations returns a
hidden layer whose activations and deltas are subnormal (as a diverging network's would be)."""

import numpy as np

from tests.fakes._base import Fake


class Saturating(Fake):
    NAME = "fake-saturating"

    def run(self, state, iterations, log_every):
        super().run(state, iterations, log_every)
        state["saturated"] = iterations >= 10

    def fetch(self, state):
        result = super().fetch(state)
        if state.get("saturated"):
            result.weights[0] = np.zeros_like(result.weights[0])
            result.weights[0][-1, :] = -709.3  # bias row, every z = -709.3: s(z) ~ 9e-309 in float64
        return result
