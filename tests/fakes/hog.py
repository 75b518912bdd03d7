"""Asks for far more memory than any machine has."""

import numpy as np

from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare  # noqa: F401


def run(state, iterations, log_every):
    state["scratch"] = np.ones(1 << 46)  # 512 TiB of float64
