"""A correct backend: the NumPy reference under another name."""

from backends.numpy_ref import DEVICE, DTYPES, available, fetch, prepare, run  # noqa: F401
