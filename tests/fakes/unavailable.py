"""Cannot run here, and says why."""

from backends.numpy_ref import DEVICE, DTYPES, fetch, prepare, run  # noqa: F401


def available():
    return "needs the fake accelerator, which this machine lacks"
