"""The effort ladder's tools other than Numba and C (``cython``, ``pythran``, ``warp``): their
builds are cached and counted honestly (``cold`` when built, ``disk`` when a later process loads
the build), a missing toolchain is a one-line reason, and Cython's ``prange`` runs on the
harness's thread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import backends
from backends import _aot
from backends.base import train
from harness.agreement import TOLERANCE, max_relative_error
from harness.problems import scaled
from harness.timing import cache_state
from tests.helpers import usable

ROOT = Path(__file__).resolve().parents[1]
LADDER_TOOLS = ("cython", "pythran", "warp")

FIRST_CALLS = textwrap.dedent("""
    import json, sys
    import backends
    from backends.base import train
    from harness.problems import scaled
    from harness.timing import first_call
    states = {}
    for name in sys.argv[1:]:
        backend = backends.load(name)
        problem = scaled(5, 3, "float64", seed=1)
        states[name] = first_call(backend, lambda: train(backend, problem, 2, 1))[2]
    print(json.dumps(states))
""")


def first_call_states(names, build_dir: Path | None = None) -> dict[str, str]:
    """The ``cache`` state of each backend's first call, in a fresh process."""
    env = dict(os.environ)
    if build_dir is not None:
        env[_aot.BUILD_DIR_VARIABLE] = str(build_dir)
    done = subprocess.run([sys.executable, "-c", FIRST_CALLS, *names], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_builds_from_disk():
    """Cython and Pythran build into the shared build cache (whichever process gets there first,
    a test worker or this test's first process): a process started after that is ``disk``."""
    names = [n for n in ("cython", "pythran") if backends.availability(n) is None]
    if not names:
        pytest.skip("neither cython nor pythran is usable here")
    first = first_call_states(names)
    assert set(first.values()) <= {"cold", "disk"}, first
    assert first_call_states(names) == dict.fromkeys(names, "disk")


@pytest.mark.parametrize("name", ["cython", "pythran"])
def test_a_build_in_this_call_is_cold_and_a_cached_one_disk(name, monkeypatch):
    """``compilations()`` from what the build cache says this call did."""
    usable(name)
    build = _aot.cached_build  # the real build cache (building here only if nothing did before)
    for built_now, expected in ((True, "cold"), (False, "disk")):
        backend = backends.info(name)()  # a fresh instance: nothing loaded yet
        monkeypatch.setattr(_aot, "cached_build", lambda *args, built_now=built_now: (build(*args)[0], built_now))
        before = backend.compilations()
        backend.prepare(scaled(3, 2, "float64", seed=1))
        assert cache_state(backend, before, backend.compilations()) == expected
        again = backend.compilations()
        backend.prepare(scaled(3, 2, "float64", seed=1))
        assert cache_state(backend, again, backend.compilations()) == "memory"


def test_warp_compiles_once_into_its_kernel_cache(tmp_path):
    """Warp's kernel cache lives under the build directory: an empty one compiles (``cold``), the
    next process finds the module there (``disk``)."""
    usable("warp")
    assert first_call_states(["warp"], tmp_path) == {"warp": "cold"}
    assert any(p.is_file() for p in (tmp_path / "warp").rglob("*")), "no kernel cache under the build directory"
    assert first_call_states(["warp"], tmp_path) == {"warp": "disk"}


def test_missing_toolchains_are_one_line_reasons(monkeypatch):
    from backends import cython_backend, pythran_backend, warp_backend

    monkeypatch.setitem(sys.modules, "Cython", None)
    assert cython_backend.Cython().available() == "package 'Cython' not installed"
    monkeypatch.setitem(sys.modules, "pythran", None)
    assert pythran_backend.Pythran().available() == "package 'pythran' not installed"
    monkeypatch.setitem(sys.modules, "warp", None)
    assert warp_backend.Warp().available() == "package 'warp-lang' not installed"
    monkeypatch.undo()

    monkeypatch.setitem(sys.modules, "scipy_openblas64", None)
    if _importable("pythran"):
        assert pythran_backend.Pythran().available() == (
            "package 'scipy-openblas64' not installed (the OpenBLAS Pythran links the loop's matmuls to)")
    monkeypatch.undo()

    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    if _importable("Cython") and _importable("setuptools"):
        assert cython_backend.Cython().available() == "no C compiler ('/nonexistent/cc' not found) to build the Cython extension"
    if _importable("pythran") and _importable("scipy_openblas64"):
        assert pythran_backend.Pythran().available() == "no C++ compiler ('/nonexistent/c++' not found) to build the Pythran module"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_cython_runs_prange_on_the_harness_thread_count():
    backend = backends.info("cython")()
    if backend.available():
        pytest.skip(f"cython unavailable here: {backend.available()}")
    module = backend.module()
    if not module.OPENMP:
        assert backend.threads() == 1
        pytest.skip("this Cython extension was built without OpenMP: prange runs serially")
    assert module.team(1) == 1 and module.team(2) == 2

    from backends.cython_backend import PARALLEL_MIN_WORK

    problem = scaled(128, PARALLEL_MIN_WORK // 128, "float64", seed=5)  # N*H at the threshold: parallel
    results = {}
    for threads in (1, 2):
        backend.set_threads(threads)
        assert backend.threads() == threads
        state = backend.prepare(problem)
        backend.run(state, 3, 1)
        per_thread = state.scratch[2]  # W0's gradient slices (threads x D x H), of the last iteration
        assert per_thread.shape[0] == threads
        assert all(np.any(per_thread[t] != 0) for t in range(threads)), "a thread of the team took no rows"
        results[threads] = backend.fetch(state)
    assert max_relative_error(results[2], results[1]) <= TOLERANCE["float64"]

    small = backend.prepare(scaled(4, 4, "float64", seed=5))  # below the threshold: one thread
    assert small.scratch[2].shape[0] == 1


def test_cython_and_pythran_declare_what_they_compile_from():
    for name in ("cython", "pythran"):
        cls = backends.info(name)
        assert cls.LOOP_FILES and all((ROOT / f).is_file() for f in cls.LOOP_FILES)
        assert cls.COMPILES and cls.TWIN is None
    assert [backends.info(n).LEVEL for n in LADDER_TOOLS] == ["plain", "naive", "plain"]


def test_a_deeper_net_is_refused_by_cython_and_run_by_the_others():
    from backends.base import UnsupportedProblem

    problem = scaled(6, 4, "float64", seed=2, layers=3)
    cython = usable("cython")
    with pytest.raises(UnsupportedProblem, match="1 or 2 weight layers"):
        cython.prepare(problem)
    reference = train(backends.load("numpy"), problem, 20, 5)
    for name in ("pythran", "warp"):
        if backends.availability(name) is None:
            assert max_relative_error(train(backends.load(name), problem, 20, 5), reference) <= TOLERANCE["float64"]
