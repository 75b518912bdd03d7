import pytest

import backends
from tests.fakes import FAKES, plugin_spec


@pytest.fixture
def fakes(monkeypatch):
    """Register every fake backend here and in spawned worker processes."""
    monkeypatch.setenv(backends.PLUGIN_VARIABLE, plugin_spec())
    for name, module in FAKES.items():
        monkeypatch.setitem(backends.REGISTRY, name, module)
    return FAKES
