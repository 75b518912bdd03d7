"""Correct and fast, but the calibration's one-iteration run hits a hiccup (a descheduled thread, say):
the second unlogged single-iteration call in a process sleeps 50 ms."""

import time

from backends import numpy_ref
from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare  # noqa: F401

_single_calls = 0


def run(state, iterations, log_every):
    global _single_calls
    if iterations == 1 and not log_every:
        _single_calls += 1
        if _single_calls == 2:  # the first is the worker's warm-up, the second its calibration
            time.sleep(0.05)
    numpy_ref.run(state, iterations, log_every)
