"""Checks specific to the Numba CPU backends: the fast exp, extreme inputs, layouts, floors, the
disk cache of the specialised kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import backends  # noqa: E402
from backends import _numba_kernels as K  # noqa: E402
from backends.base import Problem, TrainResult, UnsupportedProblem, n_logged, train  # noqa: E402
from harness.agreement import TOLERANCE, max_relative_error, reference_result  # noqa: E402
from harness.problems import scaled  # noqa: E402
from tests.helpers import compilations_in_a_fresh_process  # noqa: E402

NAMES = ("numba-cpu", "numba-parallel")


@numba.njit(error_model="numpy")
def _vexp(a):
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = K.fexp(a[i])
    return out


def _ulps(got, want):
    """Distance in units of the last place of ``want`` (both finite, same dtype)."""
    spacing = np.spacing(np.abs(want).astype(want.dtype))
    return np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing.astype(np.float64)


def test_exp64_accuracy_whole_range():
    x = np.concatenate(
        [
            np.linspace(-745.0, 709.7, 400_001),
            np.random.default_rng(0).uniform(-30, 30, 200_000),
            [0.0, -0.0, 1e-300, -1e-300, 1e-10, math.log(2) / 2, -math.log(2) / 2, 709.78, -708.39],
        ]
    )
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x)
    got = _vexp(x)
    normal = want >= np.finfo(np.float64).tiny
    assert np.max(_ulps(got[normal], want[normal])) <= 2.0
    # gradual underflow: absolute error within one subnormal step or two
    sub = ~normal
    assert np.max(np.abs(got[sub] - want[sub])) <= 2 * 5e-324


def test_exp64_extremes_and_specials():
    x = np.array([709.79, 710.0, 800.0, 1e308, np.inf, -745.14, -746.0, -800.0, -1e308, -np.inf])
    got = _vexp(x)
    assert np.all(np.isinf(got[:5])) and np.all(got[:5] > 0)
    assert np.all(got[5:] == 0.0)
    assert not np.any(np.isnan(got))


def test_exp32_accuracy_and_stays_float32():
    x = np.concatenate([np.linspace(-87.0, 88.7, 200_001), np.linspace(-5, 5, 10_001)]).astype(np.float32)
    got = _vexp(x)
    assert got.dtype == np.float32
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.max(_ulps(got, want)) <= 2.0
    ext = np.array([88.73, 89.0, 400.0, 800.0, -104.0, -400.0, -800.0], np.float32)
    e = _vexp(ext)
    assert np.all(np.isinf(e[:4])) and np.all(e[4:] == 0.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_extreme_inputs_like_numpy(dtype):
    z = np.array([-800.0, -745.5, -400.0, -88.0, -1.0, 0.0, 1.0, 40.0, 400.0, 800.0], dtype)
    buf = z.copy()
    K.sigmoid_flat(buf, buf.size, z.dtype.type(1))
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-z))
    assert not np.any(np.isnan(buf))
    assert buf[0] == 0.0 and buf[-1] == 1.0 and buf[2] == want[2]
    assert np.max(np.abs(buf - want)) <= 4 * np.finfo(dtype).eps


# Both tile layouts (column layout for narrow H, row layout), fused (D, O <= FUSE_MAX) and
# multi-pass forms, partial last tiles, several chunks in numba-parallel, small-problem kernels.
# Three (D, O): (3, 1) and (5, 2) as in the validation cases, (4, 3) for a fused form with O > 1;
# each further (D, O) would be one more compilation of every kernel (seconds each, cold).
LAYOUT_POINTS = [
    (100, 6, 5, 2, "float64"),  # columns, multi-pass (D > FUSE_MAX), one tile
    (700, 200, 3, 1, "float64"),  # columns, fused, partial last tile (T=320), two chunks in numba-parallel
    (40, 7, 3, 1, "float64"),  # rows (batch < 64), fused, one tile
    (1030, 3, 3, 1, "float32"),  # columns, partial tile
    (1100, 61, 5, 2, "float64"),  # columns, multi-pass, partial tile, several chunks
    (257, 129, 3, 1, "float32"),  # columns, fused, one tile of 257 rows
    (8200, 130, 3, 1, "float64"),  # columns, several chunks
    (32800, 33, 4, 3, "float64"),  # columns, fused with O > 1, several chunks
    (70000, 16, 3, 1, "float64"),  # columns, several chunks
    (50, 300, 3, 1, "float64"),  # rows (H > 256), fused, partial tile of 2 rows (not a multiple of 4)
    (62, 600, 5, 2, "float64"),  # rows, multi-pass, partial tile, several chunks
    (9, 6, 5, 2, "float32"),  # small (N*H <= SMALL_WORK), multi-pass
    (13, 7, 4, 3, "float64"),  # small, fused, rows not a multiple of 4
]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch,hidden,inputs,outputs,dtype", LAYOUT_POINTS)
def test_layouts_agree(name, batch, hidden, inputs, outputs, dtype):
    problem = scaled(batch, hidden, dtype, seed=batch + hidden, inputs=inputs, outputs=outputs)
    result = train(backends.load(name), problem, 30, 7)
    error = max_relative_error(result, reference_result(problem, 30, 7))
    assert error <= TOLERANCE[dtype]
    assert all(w.dtype == np.dtype(dtype) for w in result.weights)
    assert result.losses.dtype == np.float64 and result.losses.shape == (5,)


@pytest.mark.parametrize("name", NAMES)
def test_prepare_copies_and_runs_append(name):
    module = backends.load(name)
    problem = scaled(64, 8, "float64", seed=3)
    before = [w.copy() for w in problem.weights]
    first = train(module, problem, 20, 5)
    second = train(module, problem, 20, 5)
    assert all(np.array_equal(a, b) for a, b in zip(before, problem.weights))
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, second.weights))
    state = module.prepare(problem)  # two runs continue from where the first stopped
    module.run(state, 10, 5)
    module.run(state, 10, 5)
    split = module.fetch(state)
    assert np.allclose(split.weights[0], first.weights[0], rtol=0, atol=1e-14)
    assert split.losses.shape == (4,)


@pytest.mark.parametrize("name", NAMES)
def test_deeper_nets_are_refused(name):
    problem = scaled(16, 8, "float64", seed=1, layers=3)
    with pytest.raises(UnsupportedProblem):
        backends.load(name).prepare(problem)


def test_no_nan_when_saturated():
    # pre-activations of +-800 in both layers: every sigmoid saturates to exactly 0 or 1
    X = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    y = np.array([[1.0], [0.0]])
    W0 = np.array([[800.0, -800.0], [-800.0, 800.0], [0.0, 0.0]])
    W1 = np.array([[800.0], [-800.0]])
    problem = Problem(X, y, (W0, W1), 1.0)
    ref = reference_result(problem, 5, 1)
    for name in NAMES:
        result = train(backends.load(name), problem, 5, 1)
        assert all(np.all(np.isfinite(w)) for w in result.weights)
        assert max_relative_error(result, ref) <= 1e-10


def test_threads_reported():
    parallel = backends.load("numba-parallel")
    assert parallel.threads() == numba.get_num_threads() >= 1
    assert parallel.available() is None
    assert backends.load("numba-cpu").threads() == 1


def test_declarations():
    from backends.numba_cpu_backend import NumbaCpu
    from backends.numba_parallel_backend import NumbaParallel

    assert issubclass(NumbaParallel, NumbaCpu)
    for cls, name, colour, marker in (
        (NumbaCpu, "numba-cpu", "#E69F00", "s"),
        (NumbaParallel, "numba-parallel", "#D55E00", "D"),
    ):
        assert backends.info(name) is cls
        assert (cls.NAME, cls.COLOUR, cls.MARKER, cls.PACKAGE, cls.DEVICE) == (
            name,
            colour,
            marker,
            "numba",
            "cpu",
        )
        assert (cls.FAMILY, cls.LEVEL, cls.DTYPES) == ("numba", "tuned", ("float64", "float32"))


@pytest.mark.parametrize(
    "batch,hidden,chunks",
    [
        (4, 4, 1),  # the seed size: serial kernel
        (256, 16, 1),  # N*H = 2^12: below PARALLEL_MIN_WORK
        (4, 4096, 1),  # N*H = 2^14 but one row tile: nothing to split
        (1024, 16, 2),  # N*H = 2^14, two column tiles of 512 rows
        (4096, 64, 4),  # several tiles: one chunk per thread
    ],
)
def test_parallel_split(monkeypatch, batch, hidden, chunks):
    """Where numba-parallel splits the batch, with 4 threads: from PARALLEL_MIN_WORK, one chunk per thread."""
    from backends.numba_parallel_backend import NumbaParallel

    monkeypatch.setattr(NumbaParallel, "threads", lambda self: 4)
    backend = NumbaParallel()
    problem = scaled(batch, hidden)
    assert backend.chunks(problem) == (4 if batch * hidden >= 1 << 14 else 1)
    net, work, _ = K.prepare_net(problem, backend.chunks(problem))
    assert work.closs.shape[0] == chunks  # (prepare would compile the kernel; this is the split alone)


# The hidden split at sizes the rule would not pick (forced): one unit (one chunk), chunks of 8 and
# 1 units, a last chunk shorter than the others, N = 1, rows not a multiple of 4, D and O above
# FUSE_MAX (the multi-pass forms), O > 1 fused, float32.
HIDDEN_POINTS = [
    (1, 1, 3, 1, "float64"),
    (3, 9, 3, 1, "float64"),
    (1, 17, 3, 1, "float32"),
    (7, 300, 3, 1, "float64"),
    (5, 37, 5, 2, "float64"),
    (6, 21, 4, 3, "float64"),
    (10, 150, 3, 1, "float32"),
]


@pytest.fixture
def forced_hidden_split(monkeypatch):
    """numba-parallel with two threads and the hidden split wherever the net has two weight layers."""
    from backends.numba_parallel_backend import NumbaParallel

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba-parallel has one thread here: no hidden units to split")
    threads = numba.get_num_threads()
    numba.set_num_threads(2)
    monkeypatch.setattr(NumbaParallel, "split_hidden", lambda self, problem: len(problem.weights) == 2)
    yield NumbaParallel()
    numba.set_num_threads(threads)


@pytest.mark.parametrize("batch,hidden,inputs,outputs,dtype", HIDDEN_POINTS)
def test_hidden_split_agrees_with_numpy(forced_hidden_split, batch, hidden, inputs, outputs, dtype):
    backend = forced_hidden_split
    problem = scaled(batch, hidden, dtype, seed=batch + hidden, inputs=inputs, outputs=outputs)
    state = backend.prepare(problem)
    bounds = state.work.hb
    assert state.hidden and state.nchunks == len(bounds) - 1 == min(2, -(-hidden // K.HIDDEN_CHUNK_MULTIPLE))
    assert bounds[0] == 0 and bounds[-1] == hidden
    assert np.all(np.diff(bounds)[:-1] % K.HIDDEN_CHUNK_MULTIPLE == 0)
    backend.run(state, 20, 7)
    backend.run(state, 10, 3)  # a second run continues from the first one's weights
    result = backend.fetch(state)
    reference = reference_result(problem, 30, 0)
    error = max_relative_error(TrainResult(result.weights, reference.losses), reference)
    assert error <= TOLERANCE[dtype]
    assert all(w.dtype == np.dtype(dtype) and w.flags.c_contiguous for w in result.weights)
    assert [w.shape for w in result.weights] == [w.shape for w in problem.weights]
    split = train(backend, problem, 30, 7)  # the losses, against NumPy's
    assert max_relative_error(split, reference_result(problem, 30, 7)) <= TOLERANCE[dtype]


def test_hidden_split_runs_alone_when_the_team_does_not_form():
    """Thread 0 of the hidden split's team run with no thread 1: after TEAM_PATIENCE polls it runs
    both chunks itself (it never waits for ever), with the same sums in the same order as a team,
    so the result is the team's bit for bit."""
    problem = scaled(4, 64, seed=5)
    kernel = K.train_kernel(2, 3, 1, False, True, 4, 64, hidden=True)
    alone, team = K.prepare_net(problem, 2, hidden=True), K.prepare_net(problem, 2, hidden=True)
    assert len(alone[1].hb) == 3  # two chunks
    losses = np.zeros(n_logged(30, 10)), np.zeros(n_logged(30, 10))
    alone[1].flags[:] = 0
    kernel(alone[0], alone[1], 0, 30, 10, losses[0])  # thread 0 only
    assert alone[1].flags[0] >= K.TEAM_SOLO
    K.run_team(kernel, team[0], team[1], 30, 10, losses[1])  # both threads (or one, if the other came late)
    assert np.array_equal(losses[0], losses[1])
    for a, b in zip(K.weights(*alone[:2]), K.weights(*team[:2]), strict=True):
        assert np.array_equal(a, b)
    reference = reference_result(problem, 30, 10)
    assert max_relative_error(TrainResult(K.weights(*alone[:2]), losses[0]), reference) <= TOLERANCE["float64"]


def test_hidden_split_weights_round_trip():
    """The chunk-major weights of the hidden split come back as the problem's arrays, untouched."""
    problem = scaled(5, 45, seed=3)
    net, work, cols = K.prepare_net(problem, 2, hidden=True)
    assert not cols and net.W0.ndim == 1 and list(work.hb) == [0, 24, 45]
    assert np.array_equal(net.W0[: 3 * 24].reshape(3, 24), problem.weights[0][:, :24])
    for got, want in zip(K.weights(net, work), problem.weights, strict=True):
        assert np.array_equal(got, want) and got is not want


@pytest.mark.parametrize(
    "batch,hidden,threads,split",
    [
        (4, 4096, 2, True),  # N*H = 2^14, one row tile of 4 rows
        (4, 4096, 1, False),  # one thread: nothing to split
        (4, 2048, 2, True),  # 2^13, H >= HIDDEN_SPLIT_WIDE
        (4, 1024, 2, True),  # 2^12: HIDDEN_SPLIT_MIN_WORK
        (4, 512, 2, False),  # 2^11: below it
        (64, 64, 2, True),  # 2^12, one column tile, H = HIDDEN_SPLIT_WIDE
        (64, 256, 2, True),  # one column tile
        (512, 32, 2, True),  # 2^14, narrow: HIDDEN_SPLIT_NARROW_MIN_WORK
        (256, 32, 2, False),  # 2^13, narrow
        (256, 16, 2, False),  # 2^12, H < HIDDEN_SPLIT_MIN_H
        (1024, 16, 2, False),  # H < HIDDEN_SPLIT_MIN_H (and two tiles)
        (16, 1024, 2, False),  # two row tiles of 8 rows: the tiles are split
        (16, 1024, 4, True),  # two row tiles, four threads
        (4096, 4096, 2, False),  # many tiles
    ],
)
def test_hidden_split_is_chosen_where_it_pays(monkeypatch, batch, hidden, threads, split):
    from backends.numba_parallel_backend import NumbaParallel, split_hidden

    monkeypatch.setattr(NumbaParallel, "threads", lambda self: threads)
    assert NumbaParallel().split_hidden(scaled(batch, hidden)) is split
    assert split_hidden(batch, hidden, 1, threads) is False  # never for the 2-layer net
    assert backends.load("numba-cpu").split_hidden(scaled(batch, hidden)) is False


def test_run_allocates_nothing_it_keeps():
    """The state holds only what prepare allocated: run adds its losses and nothing else."""
    backend = backends.load("numba-cpu")
    state = backend.prepare(scaled(300, 20, seed=2))
    before = {id(a) for a in (*state.net[:4], *state.work)}
    backend.run(state, 3, 1)
    assert {id(a) for a in (*state.net[:4], *state.work)} == before and len(state.losses) == 1


_CACHE_CHILD = """
import json, sys
import backends
from backends.base import train
from harness.problems import scaled, xor3
backend = backends.load(sys.argv[1])
train(backend, xor3(), 5, 1)
train(backend, scaled(300, 20, seed=2), 5, 1)
train(backend, scaled(1024, 16, seed=2), 5, 1)  # numba-parallel, two threads: the parallel kernel
train(backend, scaled(4, 4096, seed=2), 5, 1)  # numba-parallel, two threads: the hidden split
print(json.dumps(backend.compilations()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_disk_cache_serves_a_fresh_process(name, tmp_path):
    """The factory-made kernels (closures) are cached on disk: a second process loads every one."""
    def child() -> tuple[int, int]:
        return compilations_in_a_fresh_process(_CACHE_CHILD, name, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="2")

    built, loaded = child()
    # small, tiled serial (columns); then numba-cpu: tiled serial (rows, 4 x 4096); numba-parallel:
    # tiled parallel (columns) and the hidden split (4 x 4096)
    kernels = 4 if name == "numba-parallel" else 3
    assert built >= kernels and loaded == 0  # cold: everything compiled (the kernels, and the exp)
    built, loaded = child()
    assert built == loaded == kernels  # warm: every kernel from the disk cache, nothing compiled


def test_kernels_cache_keys_follow_the_exp_source():
    """Numba keys a cached closure on its cells; every kernel holds a hash of _numba_exp.py, so an
    edit of the exp or sigmoid there recompiles the kernels instead of loading stale code."""
    import zlib
    from pathlib import Path

    from backends import _numba_exp, _numba_kernels

    stamp = zlib.crc32(Path(_numba_exp.__file__).read_bytes())
    assert _numba_kernels.EXP_SOURCE == stamp
    shapes = [(2, 3, 1, False, False, 4, 2), (3, 3, 1, False, False, 4, 4), (3, 3, 1, False, False, 4096, 64),
              (3, 3, 1, True, False, 4096, 64), (3, 3, 1, True, True, 4096, 64),
              (3, 3, 1, False, True, 4, 4096, True)]  # fmt: skip
    for shape in shapes:
        kernel = _numba_kernels.train_kernel(*shape)
        cells = [cell.cell_contents for cell in kernel.py_func.__closure__]
        assert stamp in cells, shape
