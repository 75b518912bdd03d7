"""Fake backends for testing the harness: each wraps the NumPy reference and breaks one thing.

Registered for subprocesses through NNBENCH_PLUGINS (see backends/__init__.py), e.g.
``NNBENCH_PLUGINS="fake-wrong=tests.fakes.wrong"``.
"""

FAKES = {
    "fake-good": "tests.fakes.good",
    "fake-wrong": "tests.fakes.wrong",
    "fake-slow": "tests.fakes.slow",
    "fake-raise": "tests.fakes.raising",
    "fake-hang": "tests.fakes.hang",
    "fake-abort": "tests.fakes.abort",
    "fake-nan": "tests.fakes.nan",
    "fake-hog": "tests.fakes.hog",
    "fake-unavailable": "tests.fakes.unavailable",
    "fake-compiles": "tests.fakes.compiles",
    "fake-hiccup": "tests.fakes.hiccup",
    "fake-device-fault": "tests.fakes.device_fault",
    "fake-silent-wrong": "tests.fakes.silent_wrong",
    "fake-saturating": "tests.fakes.saturating",
}


def plugin_spec(*names: str) -> str:
    return ",".join(f"{n}={FAKES[n]}" for n in (names or FAKES))
