"""Correct, but sleeps 20 ms per iteration (a backend the budget must predict and skip)."""

import time

from backends import numpy_ref
from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare  # noqa: F401


def run(state, iterations, log_every):
    time.sleep(0.02 * iterations)
    numpy_ref.run(state, iterations, log_every)
