"""The class every fake derives from: the NumPy reference under a fake's name."""

from backends.numpy_backend import Numpy


class Fake(Numpy):
    SUMMARY = "a fake backend for the harness's tests"
    PACKAGE = None
    COLOUR = None
    LEVEL = "plain"
    FAMILY = "fake"
    COMPILES = True  # as a plugin that builds code but cannot count it: cache "unknown"
