"""The problems: seed problems exact, the scaled problem identical across dtypes and healthy everywhere."""

import numpy as np
import pytest

from harness.health import check_health, distinct_rows, state_health
from harness.problems import scaled, xor2, xor3


def test_seed_problems_are_the_published_ones():
    p = xor3()
    assert p.sizes == (3, 4, 1) and p.alpha == 1.0
    np.random.seed(1)
    w0 = 2 * np.random.random((3, 4)) - 1
    w1 = 2 * np.random.random((4, 1)) - 1
    assert np.array_equal(p.weights[0], w0) and np.array_equal(p.weights[1], w1)
    assert p.y.ravel().tolist() == [0, 1, 1, 0] and xor2().y.ravel().tolist() == [0, 0, 1, 1]
    assert xor2().weights[0][:, 0].tolist() == pytest.approx([-0.165955990594852, 0.440648986884316, -0.999771250163369])


def test_scaled_problem_is_seeded_and_dtype_independent():
    a, b = scaled(33, 17, "float64", seed=4), scaled(33, 17, "float64", seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights)) and np.array_equal(a.X, b.X)
    c = scaled(33, 17, "float32", seed=4)
    assert c.dtype == "float32" and np.array_equal(c.X, a.X)
    assert np.array_equal(c.weights[0], a.weights[0].astype(np.float32))
    assert not np.array_equal(scaled(33, 17, seed=5).weights[0], a.weights[0])
    x = a.X
    assert set(np.unique(x[:, :2])) <= {0.0, 1.0} and (x[:, 2] == 1).all()
    assert np.array_equal(a.y[:, 0], np.logical_xor(x[:, 0], x[:, 1]).astype(float))


@pytest.mark.parametrize("kwargs", [dict(batch=0, hidden=4), dict(batch=4, hidden=0), dict(batch=4, hidden=4, dtype="float16"),
                                    dict(batch=-1, hidden=4), dict(batch=4, hidden=4, inputs=2)])  # fmt: skip
def test_scaled_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        scaled(**kwargs)


# The problem's design, checked over a spread of the sweep range (N up to 65536, H up to 4096): tiny
# problems for tens of thousands of iterations, large ones for few, the largest (65536 x 4096) at its
# initial weights only (test_the_largest_sweep_point_starts_healthy). A sweep's timed runs can be
# longer (266,624 iterations at 4x4 for numba-cpu): the sweep certifies those trajectories itself,
# from the weights each of its runs ends with (harness.timing step 4, tested in test_timing and
# test_bench).
HEALTH_POINTS = [
    (1, 1, 20000), (4, 4, 20000), (1, 4096, 2000), (16, 64, 10000), (65536, 4, 200),
    (256, 256, 500), (1024, 1024, 20), (4096, 256, 20),
]  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch,hidden,iterations", HEALTH_POINTS)
def test_scaled_problem_stays_healthy(batch, hidden, iterations, dtype):
    health = check_health(scaled(batch, hidden, dtype), iterations)
    assert health.finite
    assert health.max_abs_preactivation < 30  # far from saturation (float32 exp overflows at 88)
    assert health.ok(dtype), health  # no subnormal activation, 1 - activation, or delta


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_largest_sweep_point_starts_healthy(dtype):
    """65536 x 4096 (2^28 activations) at its initial weights, checked over its distinct rows: the
    same pass as the whole batch's (test_the_state_check_over_distinct_rows_is_the_full_batch_pass),
    in milliseconds instead of the ~40 s the NumPy pass over every row takes on 2 cores."""
    p = scaled(65536, 4096, dtype)
    health = state_health(p, p.weights)
    assert health.finite and health.max_abs_preactivation < 30
    assert health.ok(dtype), health


def test_health_check_detects_subnormals_of_a_saturated_network():
    p = scaled(64, 8, "float64")
    w0 = np.zeros_like(p.weights[0])
    w0[2, :] = -709.5  # bias row: s(-709.5) ~ 7e-309, below the smallest normal float64
    health = check_health(type(p)(p.X, p.y, (w0, p.weights[1]), p.alpha), 1)
    assert health.finite and health.max_abs_preactivation > 700 and not health.ok("float64")
    assert health.min_abs_activation < np.finfo(np.float64).tiny


@pytest.mark.parametrize("batch,hidden,layers", [(1, 1, 2), (64, 8, 2), (1000, 33, 2), (40, 5, 1), (40, 5, 3)])
def test_the_state_check_over_distinct_rows_is_the_full_batch_pass(batch, hidden, layers):
    p = scaled(batch, hidden, "float64", seed=batch, layers=layers)
    X, y = distinct_rows(p)
    assert len(X) <= 4 and len(X) == len(np.unique(p.X, axis=0))
    fast = state_health(p, p.weights)
    if layers == 2:  # check_health records the pass at the initial weights before its first update
        full = check_health(p, 1)
        assert fast.max_abs_preactivation == pytest.approx(full.max_abs_preactivation, rel=1e-12)
        assert fast.min_abs_activation == pytest.approx(full.min_abs_activation, rel=1e-12)
        assert fast.min_abs_delta == pytest.approx(full.min_abs_delta, rel=1e-12)
    assert fast.ok("float64")
    saturated = list(p.weights)
    saturated[0] = np.zeros_like(saturated[0])
    saturated[0][2, :] = -709.3  # every row: z = -709.3, s(z) ~ 9e-309, below the smallest normal float64
    assert not state_health(p, saturated).ok("float64")
    saturated[0][2, :] = np.inf
    assert not state_health(p, saturated).finite
