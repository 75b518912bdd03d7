"""Computes almost the right thing: every weight off by one part in a million."""

from tests.fakes._base import Fake


class Wrong(Fake):
    NAME = "fake-wrong"

    def fetch(self, state):
        result = super().fetch(state)
        result.weights = [w * (1 + 1e-6) for w in result.weights]
        return result
