"""Computes almost the right thing: every weight off by one part in a million."""

from backends import numpy_ref
from backends.numpy_ref import DEVICE, DTYPES, available, prepare, run  # noqa: F401


def fetch(state):
    result = numpy_ref.fetch(state)
    result.weights = [w * (1 + 1e-6) for w in result.weights]
    return result
