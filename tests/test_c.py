"""The C twins (`c`, `c-openmp`) and the ahead-of-time build cache they use (backends/_aot.py).

The twins must agree with numba-cpu / numba-parallel closely (same algorithm, only the compiler
differs), not only with NumPy; their builds must count honestly (cold / disk / memory); a missing
compiler or cffi must be one line. The agreement with NumPy is tests/test_agreement.py's."""

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
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled, xor3
from tests.helpers import usable

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# backends/_aot.py


def _writer(content: bytes, calls: list | None = None):
    def build(tmpdir: Path) -> Path:
        if calls is not None:
            calls.append(tmpdir)
        path = tmpdir / "artifact.bin"
        path.write_bytes(content)
        return path

    return build


def test_build_dir_honours_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(_aot.BUILD_DIR_VARIABLE, str(tmp_path / "b"))
    assert _aot.build_dir() == tmp_path / "b"
    monkeypatch.delenv(_aot.BUILD_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _aot.build_dir() == tmp_path / "xdg" / "nnbench" / "build"


def test_cached_build_builds_once_per_key_and_again_when_a_source_changes(monkeypatch, tmp_path):
    monkeypatch.setenv(_aot.BUILD_DIR_VARIABLE, str(tmp_path))
    calls: list = []
    path, built = _aot.cached_build("thing", ["source v1", b"-O3"], _writer(b"one", calls))
    assert built and path.read_bytes() == b"one" and path.parent.parent == tmp_path
    again, built = _aot.cached_build("thing", ["source v1", b"-O3"], _writer(b"never", calls))
    assert not built and again == path and again.read_bytes() == b"one" and len(calls) == 1
    changed, built = _aot.cached_build("thing", ["source v2", b"-O3"], _writer(b"two", calls))
    assert built and changed != path and changed.read_bytes() == b"two" and len(calls) == 2
    assert path.read_bytes() == b"one"  # the other key's artifact is untouched
    # parts are length-prefixed and typed: no two different sequences share a key
    assert _aot.cache_key(["ab", "c"]) != _aot.cache_key(["a", "bc"]) != _aot.cache_key([b"a", "bc"])
    assert not list(tmp_path.glob(".thing-build-*"))  # the build's temporary folders are gone


def test_the_key_names_the_cpu_so_a_shared_cache_never_serves_another_machine(monkeypatch):
    """Builds use -march=native: a module built on one CPU must not load on another."""
    here = _aot.cache_key(["same sources"])
    monkeypatch.setattr(_aot, "cpu_identity", lambda: "model name: another CPU; flags: sse2")
    assert _aot.cache_key(["same sources"]) != here


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupted_or_partial_artifact_is_rebuilt_not_used(monkeypatch, tmp_path, damage):
    monkeypatch.setenv(_aot.BUILD_DIR_VARIABLE, str(tmp_path))
    path, _ = _aot.cached_build("thing", ["k"], _writer(b"0123456789"))
    if damage == "truncate":
        path.write_bytes(b"01234")
    elif damage == "flip":
        path.write_bytes(b"0123456780")
    elif damage == "delete":
        path.unlink()
    else:
        (path.parent / _aot.MANIFEST).write_text("{not json")
    rebuilt, built = _aot.cached_build("thing", ["k"], _writer(b"0123456789"))
    assert built and rebuilt.read_bytes() == b"0123456789"
    assert not _aot.cached_build("thing", ["k"], _writer(b"x"))[1]


def test_a_failed_build_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv(_aot.BUILD_DIR_VARIABLE, str(tmp_path))

    def broken(tmpdir: Path) -> Path:
        (tmpdir / "half").write_bytes(b"partial")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        _aot.cached_build("thing", ["k"], broken)
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".lock"]
    path, built = _aot.cached_build("thing", ["k"], _writer(b"ok"))
    assert built and path.read_bytes() == b"ok"


_RACER = """
import sys, time
from pathlib import Path
from backends import _aot

def build(tmpdir):
    with open(sys.argv[1], "a") as log:
        log.write("built\\n")
    path = tmpdir / "artifact.bin"
    with open(path, "wb") as out:
        for _ in range(20):  # written slowly: a reader that saw it half-written would fail below
            out.write(b"x" * 1000)
            out.flush()
            time.sleep(0.01)
    return path

path, built = _aot.cached_build("raced", ["same key"], build)
assert path.read_bytes() == b"x" * 20000, "a partial artifact was returned"
print(path, built)
"""


def test_concurrent_processes_build_once_and_all_see_the_whole_artifact(tmp_path):
    env = dict(os.environ, NNBENCH_BUILD_DIR=str(tmp_path / "cache"))
    log = tmp_path / "builds.log"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(log)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [r.communicate(timeout=120)[0].split() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert log.read_text().splitlines() == ["built"]  # exactly one process built it
    assert len({path for path, _ in outputs}) == 1 and sorted(b for _, b in outputs) == ["False"] * 3 + [
        "True"
    ]


# ---------------------------------------------------------------------------------------------
# the C backends: availability, library string, agreement with their Numba twins


@pytest.mark.parametrize("name", ["c", "c-openmp"])
def test_missing_compiler_is_one_line(monkeypatch, name):
    cls = backends.info(name)
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    assert cls().available() == "no C compiler ('/nonexistent/bin/cc' not found)"


@pytest.mark.parametrize("name", ["c", "c-openmp"])
def test_missing_cffi_is_one_line(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "cffi", None)  # import cffi -> ModuleNotFoundError
    assert backends.info(name)().available() == "package 'cffi' not installed"


@pytest.mark.parametrize("name", ["c", "c-openmp"])
def test_declarations_name_the_twin_and_the_loop_files(name):
    cls = backends.info(name)
    assert cls.TWIN in backends.names() and cls.FAMILY == "c" and cls.LEVEL == "tuned"
    assert all((ROOT / f).is_file() for f in cls.LOOP_FILES)


def test_library_names_the_compiler_and_the_flags():
    from backends.c_backend import compiler

    text = usable("c").library()
    assert text.split()[0] in ("gcc", "clang", Path(compiler()[0]).name)
    assert "-O3" in text and "-march=native" in text and "cffi" in text
    assert "-fopenmp" in usable("c-openmp").library().split()


def test_exp_is_numbas_exp():
    """The C exp is _numba_exp's, bit for bit (same constants, clamps and 2^k), or within 1 ulp where
    the two compilers contract a multiply-add differently."""
    from backends._numba_exp import exp32, exp64

    lib = usable("c").module(3, 1).lib
    rng = np.random.default_rng(0)
    xs = np.concatenate(
        [rng.uniform(-760, 720, 4000), [-800.0, -745.2, -708.4, -1e-300, 0.0, 1e-300, 88.0, 709.7, 800.0]]
    )
    got = np.array([lib.nn_exp64(float(x)) for x in xs])
    want = np.array([exp64(x) for x in xs])
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(got == 0, want == 0)
    finite = np.isfinite(want) & (want > 0)
    assert np.all(np.abs(got[finite] - want[finite]) <= np.spacing(want[finite]))
    xs32 = np.concatenate([rng.uniform(-110, 95, 2000), [-200, -103.9, 0, 88.7, 200]]).astype(np.float32)
    got32 = np.array([lib.nn_exp32(float(x)) for x in xs32], np.float32)
    want32 = np.array([exp32(x) for x in xs32], np.float32)
    finite = np.isfinite(want32) & (want32 > 0)
    assert np.array_equal(np.isinf(got32), np.isinf(want32)) and np.array_equal(got32 == 0, want32 == 0)
    assert np.all(np.abs(got32[finite] - want32[finite]) <= np.spacing(want32[finite]))


# (batch, hidden, dtype, extra): every regime and layout of _numba_kernels -- small (the batch one
# row tile), row layout (17 rows: four at a time and one left over), wide rows (H > 256: three row
# tiles, the last partial), column tiles (two, the last partial), D > FUSE_MAX (the multi-pass
# forms; the column layout's are checked against NumPy below, sparing a Numba kernel compile),
# the 2-layer net, float32.
TWIN_CASES = [
    (4, 4, "float64", {}),
    (17, 33, "float64", {}),
    (1000, 100, "float64", {}),
    (64, 300, "float64", {}),
    (9, 6, "float64", dict(inputs=5, outputs=2)),
    (13, 4, "float64", dict(layers=1)),
    (1000, 100, "float32", {}),
]


@pytest.mark.parametrize(("batch", "hidden", "dtype", "extra"), TWIN_CASES, ids=lambda v: str(v))
def test_c_agrees_with_numba_cpu(batch, hidden, dtype, extra):
    """Same algorithm: the weights and losses match numba-cpu's to a few ulp per step (the compilers
    only split the vectorised sums differently), far closer than the NumPy tolerance."""
    problem = scaled(batch, hidden, dtype, seed=batch + hidden, **extra)
    c = train(usable("c"), problem, 60, 10)
    numba = train(usable("numba-cpu"), problem, 60, 10)
    assert max_relative_error(c, numba) <= (1e-13 if dtype == "float64" else 2e-5)


@pytest.mark.parametrize("name", ["c", "c-openmp"])
def test_multi_pass_column_layout_agrees_with_numpy(name):
    """D and O above FUSE_MAX in the column layout (the multi-pass forward, acc_cols, delta_cols)."""
    problem = scaled(200, 16, "float64", seed=216, inputs=5, outputs=2)
    assert usable(name).prepare(problem).cols
    result = train(usable(name), problem, 60, 10)
    assert max_relative_error(result, reference_result(problem, 60, 10)) <= TOLERANCE["float64"]


@pytest.mark.slow
def test_c_openmp_agrees_with_numba_parallel_across_chunks(monkeypatch):
    """Several chunks of tiles (N*H >= PARALLEL_MIN_WORK, four tiles) on two threads each."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba-parallel has one thread here: no chunks to compare")
    omp, par = usable("c-openmp"), usable("numba-parallel")
    monkeypatch.setattr(omp, "_threads", 2)
    problem = scaled(2048, 16, "float64", seed=4)
    state = omp.prepare(problem)
    assert state.work.closs.shape[0] == 2  # the split is the one numba-parallel makes
    omp.run(state, 40, 10)
    mine = omp.fetch(state)
    threads = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        assert par.chunks(problem) == 2
        theirs = train(par, problem, 40, 10)
    finally:
        numba.set_num_threads(threads)
    assert max_relative_error(mine, theirs) <= 1e-13
    serial = train(usable("c"), problem, 40, 10)  # chunks only change the order of the gradient sum
    assert max_relative_error(mine, serial) <= 1e-13


@pytest.mark.parametrize(
    ("batch", "hidden", "dtype", "extra"),
    [
        (1, 1, "float64", {}),  # one unit: one chunk
        (3, 9, "float64", {}),  # chunks of 8 and 1 units
        (7, 300, "float64", {}),  # rows not a multiple of 4, a shorter last chunk
        (5, 37, "float64", dict(inputs=5, outputs=2)),  # D, O > FUSE_MAX: the multi-pass forms
        (10, 150, "float32", {}),
    ],
    ids=lambda v: str(v),
)
def test_c_openmp_hidden_split_agrees_with_numba_parallel(monkeypatch, batch, hidden, dtype, extra):
    """The hidden split in C (forced at sizes the rule would not pick): numba-parallel's chunks and
    order of the chunks' partial sums, so its result to a few ulp per step, and NumPy's within tolerance."""
    import numba

    from backends._numba_kernels import hidden_bounds
    from backends.c_openmp_backend import COpenmp
    from backends.numba_parallel_backend import NumbaParallel

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba-parallel has one thread here: no hidden units to split")
    omp, par = usable("c-openmp"), usable("numba-parallel")
    for cls in (COpenmp, NumbaParallel):
        monkeypatch.setattr(cls, "split_hidden", lambda self, problem: len(problem.weights) == 2)
    monkeypatch.setattr(omp, "_threads", 2)
    problem = scaled(batch, hidden, dtype, seed=batch + hidden, **extra)
    state = omp.prepare(problem)
    assert np.array_equal(state.work.hb, hidden_bounds(hidden, 2))
    omp.run(state, 30, 10)
    omp.run(state, 10, 10)  # a second run continues from the first one's weights
    mine = omp.fetch(state)
    threads = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        theirs = train(par, problem, 40, 10)
    finally:
        numba.set_num_threads(threads)
    assert [w.shape for w in mine.weights] == [w.shape for w in problem.weights]
    assert max_relative_error(mine, theirs) <= (1e-13 if dtype == "float64" else 2e-5)
    assert max_relative_error(mine, reference_result(problem, 40, 10)) <= TOLERANCE[dtype]


_ALONE_CHILD = textwrap.dedent("""
    import json
    from backends.c_openmp_backend import COpenmp
    from harness.agreement import max_relative_error, reference_result
    from harness.problems import scaled
    COpenmp.split_hidden = lambda self, problem: True
    omp = COpenmp()
    omp.set_threads(2)
    problem = scaled(4, 64, seed=5)
    state = omp.prepare(problem)
    omp.run(state, 30, 10)
    error = max_relative_error(omp.fetch(state), reference_result(problem, 30, 10))
    print(json.dumps([len(state.work.hb) - 1, int(state.work.flags[0]), error]))
""")


def test_c_openmp_hidden_split_runs_alone_when_openmp_gives_one_thread():
    """OpenMP may give the team's region fewer threads than it asks for (here OMP_THREAD_LIMIT=1):
    the one thread runs every chunk after the join's patience instead of waiting for ever."""
    from backends._numba_kernels import TEAM_SOLO

    usable("c-openmp")
    out = subprocess.run([sys.executable, "-c", _ALONE_CHILD], cwd=ROOT, env=dict(os.environ, OMP_THREAD_LIMIT="1"),
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    chunks, join, error = json.loads(out.stdout.strip().splitlines()[-1])
    assert chunks == 2 and join >= TEAM_SOLO and error <= TOLERANCE["float64"]


def test_c_openmp_uses_the_harness_thread_count():
    omp = usable("c-openmp")
    before = omp.threads()
    try:
        omp.set_threads(1)
        assert omp.threads() == 1 and omp.chunks(scaled(2048, 16)) == 1
        omp.set_threads(3)
        assert omp.chunks(scaled(2048, 16)) == 3 and omp.chunks(scaled(64, 4)) == 1
        assert omp.chunks(scaled(4096, 16, layers=1)) == 1  # the 2-layer net is serial
        assert omp.split_hidden(scaled(4, 4096)) and not omp.split_hidden(scaled(4, 4096, layers=1))
        omp.set_threads(1)
        assert not omp.split_hidden(scaled(4, 4096))  # numba-parallel's rule, with the harness's threads
        assert not usable("c").split_hidden(scaled(4, 4096))
    finally:
        omp.set_threads(before)


def test_deeper_net_is_refused_with_a_reason():
    from backends.base import UnsupportedProblem

    with pytest.raises(UnsupportedProblem, match="1 or 2 weight layers"):
        usable("c").prepare(scaled(11, 6, "float64", seed=9, layers=3))


_CACHE_CHILD = textwrap.dedent("""
    import json, sys
    import backends
    from backends.base import train
    from harness.problems import scaled, xor3
    from harness.timing import first_call
    backend = backends.load(sys.argv[1])
    states = [first_call(backend, lambda: train(backend, xor3(), 5, 1))[2]]
    states.append(first_call(backend, lambda: train(backend, scaled(300, 20, seed=2), 5, 1))[2])
    print(json.dumps([states, backend.compilations()]))
""")


@pytest.mark.slow
def test_first_call_is_cold_with_an_empty_cache_then_disk_then_memory(tmp_path):
    """An ahead-of-time build counts honestly: built in this call (cold, the build timed in it),
    loaded from the build cache (disk), or already loaded in this process (memory)."""
    usable("c")
    env = dict(os.environ, NNBENCH_BUILD_DIR=str(tmp_path))

    def child():
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_CHILD, "c"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert child() == [["cold", "memory"], [1, 0]]
    assert child() == [["disk", "memory"], [1, 1]]
    xor3_result = train(usable("c"), xor3(), 5, 1)
    assert np.all(np.isfinite(xor3_result.losses))
