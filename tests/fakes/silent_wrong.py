"""Right when it logs, wrong when it does not: the unlogged (timed) path skips the weight updates."""

from backends import numpy_ref
from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare  # noqa: F401


def run(state, iterations, log_every):
    if log_every:
        numpy_ref.run(state, iterations, log_every)
    # log_every == 0: returns without training, as a backend with a broken fast path would
