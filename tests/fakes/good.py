"""A correct backend: the NumPy reference under another name."""

from tests.fakes._base import Fake


class Good(Fake):
    NAME = "fake-good"
