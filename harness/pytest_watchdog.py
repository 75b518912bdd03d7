"""A pytest plugin that reports each test as it starts and ends, for ``harness.gpu_check``'s watchdog.

A Python signal cannot interrupt a test stuck inside a CUDA call (a deadlocked cooperative grid
waits in the driver, where no Python code runs), so no in-process timeout can end such a test. The
watchdog runs pytest in a process group of its own and reads this plugin's progress file: a test
that started and has not ended within its timeout gets the whole group killed, is recorded as
``timeout``, and pytest is started again with the finished and the hung tests deselected.

    python -m pytest -p harness.pytest_watchdog --watchdog-progress=FILE [--watchdog-deselect=FILE]
                     [--watchdog-backends=a,b] [--watchdog-backend-only=FILE ...]
                     [--watchdog-exclude=NODEID ...] tests/...

Options (without ``--watchdog-progress`` the plugin does nothing):

- ``--watchdog-deselect``: a file of node ids, one per line, to leave out (the tests an earlier
  attempt finished or killed);
- ``--watchdog-backends``: keep only the tests parametrized by a registered backend (a ``name``
  parameter that is a name of ``backends.REGISTRY``) of these backends; tests parametrized
  otherwise are kept, except in the files named by ``--watchdog-backend-only``, where only the
  tests of those backends are kept;
- ``--watchdog-exclude``: leave out a test function's items: NODEID is ``file::function``, and
  every parametrization of that function is left out.

The progress file gets one JSON object per line, appended with one ``write`` each and never
buffered: ``{"event": "collected", "nodeids": [...]}`` (after the deselection), ``{"event":
"start", "nodeid": ...}``, ``{"event": "end", "nodeid": ..., "outcome": ..., "seconds": ...,
"detail": ...}`` with ``outcome`` one of passed, failed (in the test), error (in setup or
teardown), skipped, xfailed, xpassed, and ``{"event": "collect_error", "nodeid": ..., "detail": ...}``
for a file that could not be collected (run with ``--continue-on-collection-errors``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

#: Most characters of a failure's text kept in the progress file (its end: the assertion).
DETAIL_CHARS = 4000


def pytest_addoption(parser) -> None:
    group = parser.getgroup("watchdog", "progress for harness.gpu_check's watchdog")
    group.addoption(
        "--watchdog-progress", default=None, help="append start and end events of every test to this file"
    )
    group.addoption("--watchdog-deselect", default=None, help="file of node ids (one a line) to deselect")
    group.addoption(
        "--watchdog-backends", default=None, help="comma-separated backends whose parametrized tests are kept"
    )
    group.addoption("--watchdog-backend-only", action="append", default=[],
                    help="test file in which only the tests of --watchdog-backends are kept")  # fmt: skip
    group.addoption(
        "--watchdog-exclude", action="append", default=[], help="file::function whose items are deselected"
    )


def pytest_configure(config) -> None:
    path = config.getoption("watchdog_progress")
    if path:
        config.pluginmanager.register(Recorder(config, Path(path)), "watchdog-recorder")


def excluded(nodeid: str, prefixes: list[str]) -> bool:
    """``nodeid`` is an item of one of the test functions ``prefixes`` (``file::function``)."""
    return any(nodeid == p or nodeid.startswith(p + "[") for p in prefixes)


class Recorder:
    def __init__(self, config, path: Path) -> None:
        self.config = config
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.tests: dict[str, dict] = {}

    def emit(self, **event) -> None:
        os.write(self.fd, (json.dumps(event) + "\n").encode())

    def pytest_unconfigure(self, config) -> None:
        os.close(self.fd)

    @pytest.hookimpl(trylast=True)  # after -k and -m: "collected" lists what will run
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        drop: set[str] = set()
        listed = config.getoption("watchdog_deselect")
        if listed and Path(listed).exists():
            drop = {line.strip() for line in Path(listed).read_text().splitlines() if line.strip()}
        keep_backends = config.getoption("watchdog_backends")
        registry: dict = {}
        if keep_backends is not None:
            import backends

            registry = backends.REGISTRY
            keep_backends = {name for name in keep_backends.split(",") if name}
        prefixes = config.getoption("watchdog_exclude")
        only = set(config.getoption("watchdog_backend_only"))

        def kept(item) -> bool:
            if item.nodeid in drop or excluded(item.nodeid, prefixes):
                return False
            callspec = getattr(item, "callspec", None)
            name = callspec.params.get("name") if callspec is not None else None
            if keep_backends is not None and isinstance(name, str) and name in registry:
                return name in keep_backends
            return item.nodeid.split("::", 1)[0] not in only

        selected = [item for item in items if kept(item)]
        deselected = [item for item in items if not kept(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected
        self.emit(event="collected", nodeids=[item.nodeid for item in items])

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.emit(
                event="collect_error", nodeid=report.nodeid, detail=str(report.longrepr)[-DETAIL_CHARS:]
            )

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.tests[nodeid] = {"outcome": "passed", "seconds": 0.0, "detail": ""}
        self.emit(event="start", nodeid=nodeid)

    def pytest_runtest_logreport(self, report) -> None:
        test = self.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0, "detail": ""})
        test["seconds"] += report.duration
        if test["outcome"] in ("failed", "error"):
            return  # the first failure is the one to report
        if report.failed:
            test["outcome"] = "failed" if report.when == "call" else "error"
            test["detail"] = report.longreprtext[-DETAIL_CHARS:]
        elif report.skipped and test["outcome"] == "passed":
            if hasattr(report, "wasxfail"):
                test["outcome"], test["detail"] = "xfailed", str(report.wasxfail)
            else:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                test["outcome"], test["detail"] = "skipped", reason
        elif report.passed and report.when == "call" and hasattr(report, "wasxfail"):
            test["outcome"] = "xpassed"

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        test = self.tests.pop(nodeid, {"outcome": "passed", "seconds": 0.0, "detail": ""})
        self.emit(event="end", nodeid=nodeid, **test)
