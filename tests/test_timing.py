"""harness.timing: the measurement policy's pieces, on their own (the sweep tests run them end to
end); and that timing holds the policy only: the messages are harness.protocol's."""

from __future__ import annotations

import random

import numpy as np
import pytest

import backends
from backends.numpy_backend import Numpy
from harness import protocol, timing
from harness.agreement import reference_result
from harness.problems import scaled
from harness.results import STATUSES, Status

numpy_ref = backends.load("numpy")


def request(problem, reference=None, backend="x") -> protocol.PointRequest:
    reference = reference_result(problem, 4, 1) if reference is None else reference
    return protocol.PointRequest(backend, problem.dtype, problem.batch, max(problem.sizes), 3, 4, 1, 0.001, 1 << 20, reference)


def test_status_is_the_one_set_of_row_statuses():
    assert STATUSES == ("ok", "skipped", "failed", "invalid", "unhealthy", "timeout", "crashed")
    assert str(Status.TIMEOUT) == "timeout" and Status("crashed") is Status.CRASHED


def test_calibration_doubles_until_a_run_lasts_min_time():
    calls = []

    def run_seconds(t):  # 1 ms per iteration, as a clock would say
        calls.append(t)
        return 1e-3 * t

    t, seconds = timing.calibrate(run_seconds, min_time=0.05, max_iterations=1 << 20)
    assert t == 50 and seconds == pytest.approx(0.05)
    assert calls[:4] == [1, 1, 1, 50]  # one, the fastest of three below 5 x min_time, then T (no warm-up:
    # the point's first call ran the timed path already)
    t, _ = timing.calibrate(lambda t: 1e-9 * t, min_time=0.05, max_iterations=1000)
    assert t == 1000  # capped


def test_calibration_takes_the_fastest_of_three_single_runs():
    times = iter([0.2, 0.001, 0.001, 0.05])  # a hiccup (< 5 x min_time), two fast runs, T = 50

    t, _ = timing.calibrate(lambda t: next(times), min_time=0.05, max_iterations=1 << 20)
    assert t == 50


@pytest.mark.parametrize("work,expected", [(16, 8), (1 << 14, 4), (1 << 15, 2), (1 << 20, 2), (1 << 24, 1)])
def test_validation_iterations_shrink_with_the_work(work, expected):
    assert timing.validation_iterations(work, 8) == expected


def test_repeats_and_point_cost():
    assert timing.repeats_for(5, 0.1) == 5 and timing.repeats_for(5, 1.0) == timing.LONG_REPEATS
    assert timing.repeats_for(2, 1.0) == 2
    assert timing.point_cost(2.0, 3, 5) == 2.0 * (3 + timing.CALIBRATION_RUNS + 5)


def test_rounds_interleave_in_a_fresh_order_each_round():
    rounds = list(timing.rounds({"a": 3, "b": 3, "c": 1}, random.Random(1)))
    assert [r for r, _ in rounds] == [0, 1, 2]
    assert sorted(rounds[0][1]) == ["a", "b", "c"] and sorted(rounds[2][1]) == ["a", "b"]
    assert timing.spread([1.0, 1.0]) == 0.0 and timing.spread([1.0]) == 0.0
    assert timing.spread([1.0, 3.0]) == pytest.approx(np.std([1.0, 3.0], ddof=1) / 2.0)


def test_measure_point_validates_both_paths_and_calibrates():
    problem = scaled(8, 4, "float64", 3)
    reply = timing.measure_point(numpy_ref, problem, request(problem), threads=1)
    assert isinstance(reply, protocol.Calibrated) and reply.max_rel_error == 0.0
    assert reply.iterations >= 1 and reply.first.compile_seconds > 0 and reply.threads == 1
    assert reply.first.cache == "none" and reply.first.fresh is False  # numpy builds nothing; not told it was first
    wrong = request(problem, reference_result(scaled(8, 4, "float64", 9), 4, 1))
    failure = timing.measure_point(numpy_ref, problem, wrong, threads=1)
    assert isinstance(failure, protocol.Failure) and failure.status is Status.INVALID
    assert failure.first.cache == "none" and failure.fields()["status"] is Status.INVALID


class _Counting(Numpy):
    """numpy with a compiler's counters: ``built`` programs per first call at a new shape."""

    NAME, COMPILES = "counting", True

    def __init__(self, from_disk: bool):
        self.from_disk, self.shapes, self.counts = from_disk, set(), [0, 0]

    def prepare(self, problem):
        if problem.X.shape not in self.shapes:
            self.shapes.add(problem.X.shape)
            self.counts[0] += 1
            self.counts[1] += self.from_disk
        return super().prepare(problem)

    def compilations(self):
        return tuple(self.counts)


@pytest.mark.parametrize("from_disk,first,second", [(False, "cold", "memory"), (True, "disk", "memory")])
def test_the_first_call_says_what_it_built(from_disk, first, second):
    backend = _Counting(from_disk)
    problem = scaled(8, 4, "float64", 3)
    a = timing.measure_point(backend, problem, request(problem), threads=None, fresh=True)
    b = timing.measure_point(backend, problem, request(problem), threads=None)
    assert (a.first.cache, a.first.fresh, b.first.cache, b.first.fresh) == (first, True, second, False)
    compiles = _Counting(False)
    assert timing.cache_state(numpy_ref, None, None) == "none"  # COMPILES = False
    assert timing.cache_state(compiles, None, None) == "unknown"  # compiles, cannot count
    assert timing.cache_state(compiles, (3, 1), (5, 2)) == "cold"  # one compiled, one loaded: compiled


class _Saturating(Numpy):
    """numpy that trains right, then, from ``after`` iterations on, returns weights whose hidden
    layer is saturated (subnormal activations and deltas), as a diverging run would."""

    NAME = "saturating"

    def __init__(self, after: int):
        self.after = after

    def run(self, state, iterations, log_every):
        super().run(state, iterations, log_every)
        state["saturate"] = iterations >= self.after

    def fetch(self, state):
        result = super().fetch(state)
        if state.get("saturate"):
            result.weights[0] = np.zeros_like(result.weights[0])
            result.weights[0][2, :] = -709.3  # z = -709.3 in every row: s(z) ~ 9e-309, subnormal in float64
        return result


def test_the_timed_trajectory_is_checked_for_subnormals_beyond_the_validated_iterations():
    problem = scaled(8, 4, "float64", 3)
    healthy = timing.measure_point(_Saturating(after=1 << 30), problem, request(problem), threads=None)
    assert isinstance(healthy, protocol.Calibrated)
    # from 5 iterations on: beyond the 4 validated ones, reached by the calibration runs
    sick = timing.measure_point(_Saturating(after=5), problem, request(problem), threads=None)
    assert isinstance(sick, protocol.Failure) and sick.status is Status.UNHEALTHY
    assert "subnormal" in sick.reason and "of the timed run" in sick.reason and sick.first.compile_seconds > 0


def test_timing_is_the_policy_and_the_protocol_holds_the_messages():
    for name in ("PointRequest", "RepeatRequest", "CloseRequest", "Ready", "Unavailable", "Calibrated", "Timed", "Failure"):
        assert not hasattr(timing, name) or getattr(timing, name).__module__ == "harness.protocol", name
        assert getattr(protocol, name).__module__ == "harness.protocol"
    import inspect

    source = inspect.getsource(timing)
    assert "@dataclass" not in source and "Worker" not in source and "conn." not in source


def test_first_call_times_and_counts_any_call():
    backend = _Counting(from_disk=False)
    problem = scaled(8, 4, "float64", 3)
    value, seconds, cache = timing.first_call(backend, lambda: backend.prepare(problem))
    assert isinstance(value, dict) and seconds >= 0 and cache == "cold"
    assert timing.first_call(backend, lambda: backend.prepare(problem))[2] == "memory"  # same shape: nothing built
    assert timing.first_call(numpy_ref, lambda: 7)[::2] == (7, "none")


def test_replies_name_the_row_fields_they_determine():
    from harness.results import COLUMNS, Row

    first = protocol.FirstCall(0.5, "cold", True)
    ready = protocol.Ready("numpy 2.0", "cpu", 0.25)
    calibrated = protocol.Calibrated(first, 1e-16, 64, 1e-5, 2)
    timed = protocol.Timed(0.01, 0.02)
    for reply in (first, calibrated, timed, protocol.Failure(Status.CRASHED, "died", first, 0.1)):
        assert set(reply.fields()) <= set(COLUMNS)
    assert ready.fields(True)["startup_seconds"] == 0.25 and ready.fields(False)["startup_seconds"] is None
    row = Row(backend="numpy", dtype="float64", batch=4, hidden=4, status=Status.OK, **ready.fields(True),
              **calibrated.fields(), **timed.fields())  # fmt: skip
    assert (row.iterations, row.cache, row.fresh, row.threads, row.seconds_e2e) == (64, "cold", True, 2, 0.02)
    assert "reference" not in repr(request(scaled(8, 4, "float64", 3)))  # no arrays in a request's repr
