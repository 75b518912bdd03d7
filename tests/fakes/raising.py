"""Raises inside the loop."""

from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare  # noqa: F401


def run(state, iterations, log_every):
    raise RuntimeError("deliberate failure inside the loop")
