"""Checks specific to the Numba CPU backends: the fast exp, extreme inputs, layouts, floors."""

from __future__ import annotations

import math

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import backends  # noqa: E402
from backends import _numba_kernels as K  # noqa: E402
from backends.base import Problem, UnsupportedProblem, train  # noqa: E402
from harness.agreement import TOLERANCE, check, max_relative_error, reference_result  # noqa: E402
from harness.problems import XOR3_PUBLISHED_LOSSES, scaled, seed_case, validation_cases  # noqa: E402

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


@pytest.mark.parametrize("name", NAMES)
def test_validation_cases_agree(name):
    failures = []
    for case in validation_cases(quick=True):
        verdict = check(name, case)
        if verdict.status != "ok":
            failures.append((verdict.case, verdict.status, verdict.error, verdict.detail))
    assert not failures


@pytest.mark.parametrize("name", NAMES)
def test_xor3_published_digits(name):
    case = seed_case("xor3")
    result = train(backends.load(name), case.problem, case.iterations, case.log_every)
    assert [f"{v:.12g}" for v in result.losses] == [f"{v:.12g}" for v in XOR3_PUBLISHED_LOSSES]


# Both tile layouts (column layout for narrow H, row layout with and without the D=3,O=1 fast
# path), partial last tiles, several chunks in numba-parallel.
LAYOUT_POINTS = [
    (100, 6, 5, 2, "float64"),  # columns, general D/O
    (700, 200, 3, 1, "float64"),  # columns, fast path, partial last tile (T=320)
    (40, 7, 3, 1, "float64"),  # rows (batch < 64), narrow
    (1030, 3, 3, 1, "float32"),  # columns, partial tile
    (301, 61, 5, 2, "float64"),  # rows, general
    (257, 129, 3, 1, "float32"),  # rows, fast path, partial tile
    (8200, 130, 3, 1, "float64"),  # columns, N*H >= 2^20: several chunks in numba-parallel
    (32800, 33, 4, 3, "float64"),  # rows, general, several chunks
    (70000, 16, 3, 1, "float64"),  # columns, several chunks
]


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
    from backends import numba_parallel

    assert numba_parallel.threads() == numba.get_num_threads() >= 1
    assert numba_parallel.available() is None


def test_floor_is_pure_arithmetic():
    from harness.floor import floor_parts, floor_seconds

    ceilings = {"sigmoid_per_s_float64": 1e9, "fma_per_s_float64": 1e10, "bytes_per_s": 1e10}
    parts = floor_parts(4096, 1024, "float64", ceilings)
    assert parts["sigmoids"] == 4096 * 1025 and parts["macs"] == 2 * 4096 * 1024 * 4
    compute = 4096 * 1025 / 1e9 + 2 * 4096 * 1024 * 4 / 1e10
    assert floor_seconds(4096, 1024, "float64", ceilings) == pytest.approx(compute)
    # a tiny hidden layer with a huge batch is memory bound
    assert floor_parts(1 << 24, 1, "float64", ceilings)["floor_s"] >= (1 << 24) * 4 * 8 / 1e10


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
    from backends import numba_parallel

    monkeypatch.setattr(numba_parallel, "threads", lambda: 4)
    state = numba_parallel.prepare(scaled(batch, hidden))
    assert state["nchunks"] == chunks
