"""How one point (backend, dtype, N, H) is measured: the timing policy, and nothing else.

The messages that carry its results between processes are ``harness.protocol``; the sweep that
applies it across backends is ``harness.bench``; what may run at all (time and memory budgets) is
``harness.plan``.

In the worker process of the backend (``harness.worker`` calls ``measure_point`` and ``timed_run``;
the sweep starts one worker per backend and dtype, so every dtype's first point runs in a fresh
process):

1. **First call.** ``prepare`` + ``run`` of one iteration on the timed path (``log_every = 0``) +
   ``fetch``, timed as a whole: ``compile_seconds``, whatever the first call had to build. The
   backend's ``compilations()`` counters before and after give the row's ``cache``
   (``cache_state``: ``cold``, ``disk``, ``memory``, ``none`` or ``unknown``) and ``fresh`` says
   whether it was the worker's first call at all (``first_call`` is that timing and counting, for
   any call: ``python -m harness run`` reports its whole run's ``cache`` with it). Before a fresh
   call the worker has only imported the backend and run its availability check, whose time
   (``Ready.startup_seconds``) the row carries as ``startup_seconds``: what else a fresh process
   pays before its first result (for torch-compile that check compiles a trial step, so
   Inductor's own start-up is counted there).
2. **Validation, both paths.** ``validation_iterations`` iterations with logging: weights and loss
   trace against the float64 NumPy reference (``harness.agreement.TOLERANCE``); then the same
   iterations with ``log_every = 0``, the path every timed run takes (a branch of its own in jax
   and the CUDA backends), against the reference's weights. A failure is ``invalid`` (or
   ``unhealthy`` for NaN/inf) and nothing is timed.
3. **Calibration.** One timed iteration; below ``RETRY_BELOW x min_time`` the fastest of three, so
   one hiccup cannot leave T tiny. T = ceil(min_time / that), capped at ``MAX_ITERATIONS``, doubled
   until one timed run of T iterations lasts ``min_time``.
4. **Health of the timed trajectory.** The weights every calibration run and every timed repeat
   ends with (1, ..., T iterations from the same initial weights: checkpoints of the trajectory
   that is timed) go through one forward and backward pass (``harness.health.state_health``): an
   inf/NaN or a subnormal activation or delta (SPEC) makes the point ``unhealthy``.
5. **Repeats** (``timed_run``): each from fresh initial weights (``prepare``, untimed), ``run`` of T
   iterations timed alone (``seconds``: the device-resident loop, synchronised) and with the copies
   (``seconds_e2e``).

For the parent (``harness.bench`` applies them): validation runs ``validation_iterations(work)``
iterations (a few at small points, fewer where the NumPy reference itself is slow); a point
predicted from the backend's smaller points (``point_cost``) to exceed the point budget is skipped
before it runs (``harness.plan.admit``); ``repeats_for`` gives the repeats (fewer for long runs);
the repeats are interleaved: every round runs each backend once in a fresh random order
(``rounds``), and before each timed request the sweep lets the worker that ran last go idle
(``harness.worker.wait_until_idle``: BLAS and OpenMP pools busy-wait after a parallel call).
Spread between repeats above ``UNSTABLE_SPREAD`` (pyperf's rule) is counted, above
``LOUD_SPREAD`` reported point by point.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from backends.base import TrainResult, UnsupportedProblem, train
from harness.protocol import Calibrated, Failure, FirstCall, PointRequest
from harness.schema import Status

T = TypeVar("T")

# --- the policy's numbers ---------------------------------------------------------------------
#: Most iterations of one timed run.
MAX_ITERATIONS = 1 << 20
#: A single-iteration calibration run shorter than RETRY_BELOW x min_time is taken as the fastest
#: of three (the two extra runs cost at most 2 x RETRY_BELOW x min_time).
RETRY_BELOW = 5
#: Validation iterations: the preset's below VALIDATION_WORK / (N*H), at least MIN_VALIDATION ...
VALIDATION_WORK = 1 << 16
MIN_VALIDATION = 2
#: ... and one from N*H = ONE_VALIDATION_WORK up, where the NumPy reference alone takes seconds per
#: iteration and the same code paths were validated over two iterations at smaller points.
ONE_VALIDATION_WORK = 1 << 24
#: Runs a point costs besides its validation and repeats, in units of one timed run's iterations:
#: the first call and the single calibration iteration (the prediction counts iterations, see
#: ``point_cost``).
CALIBRATION_RUNS = 2
#: A timed run longer than LONG_RUN seconds gets LONG_REPEATS repeats (when that is fewer).
LONG_RUN = 0.25
LONG_REPEATS = 3
#: Spread (stdev / mean) of the repeats above which a point is unstable (pyperf's rule) / loud.
UNSTABLE_SPREAD = 0.10
LOUD_SPREAD = 0.25


# --- in the worker ------------------------------------------------------------------------------


def finite(result: TrainResult) -> bool:
    return all(np.all(np.isfinite(w)) for w in result.weights) and bool(np.all(np.isfinite(result.losses)))


def cache_state(backend, before: tuple[int, int] | None, after: tuple[int, int] | None) -> str:
    """What a call built, from the backend's ``compilations()`` before and after it."""
    if not backend.COMPILES:
        return "none"
    if before is None or after is None:
        return "unknown"
    built, loaded = after[0] - before[0], after[1] - before[1]
    return "cold" if built > loaded else "disk" if loaded else "memory"


def first_call(backend, call: Callable[[], T]) -> tuple[T, float, str]:
    """Run ``call()`` timed, counting what it built: (its value, wall seconds, ``cache_state``).
    Step 1 of the policy, and ``python -m harness run``'s elapsed time and cache."""
    before = backend.compilations()
    start = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - start
    return value, seconds, cache_state(backend, before, backend.compilations())


def timed_run(backend, problem, iterations: int) -> tuple[float, float, TrainResult]:
    """Seconds of ``run`` alone and of prepare + run + fetch; preparation is a fresh copy each time."""
    start = time.perf_counter()
    state = backend.prepare(problem)
    begin = time.perf_counter()
    backend.run(state, iterations, 0)  # returns only when finished (backends synchronise)
    end = time.perf_counter()
    result = backend.fetch(state)
    done = time.perf_counter()
    return end - begin, done - start, result


def unhealthy(problem, result: TrainResult, iterations: int, rows=None) -> Failure | None:
    """A Failure when the weights a run of ``iterations`` ended with are not healthy (step 4)."""
    from harness.health import describe, state_health

    if not finite(result):
        return Failure(Status.UNHEALTHY, f"NaN or inf in weights or losses after {iterations} iterations")
    health = state_health(problem, result.weights, rows)
    if health.ok(problem.dtype):
        return None
    return Failure(Status.UNHEALTHY, f"{describe(health, problem.dtype)} after {iterations} iterations of the timed run")


def calibrate(run_seconds, min_time: float, max_iterations: int) -> tuple[int, float]:
    """T such that one timed run lasts ``min_time``; ``run_seconds(T)`` times a run of T iterations.
    Returns (T, seconds of the last run of T)."""
    one = run_seconds(1)
    if one < RETRY_BELOW * min_time:
        one = min(one, run_seconds(1), run_seconds(1))
    iterations = max(1, min(max_iterations, math.ceil(min_time / max(one, 1e-9))))
    seconds = one if iterations == 1 else run_seconds(iterations)
    while seconds < min_time and iterations < max_iterations:
        iterations = min(max_iterations, iterations * 2)
        seconds = run_seconds(iterations)
    return iterations, seconds


class _Unhealthy(Exception):
    def __init__(self, failure: Failure):
        self.failure = failure


def measure_point(backend, problem, request: PointRequest, threads: int | None, fresh: bool = False,
                  rows=None) -> Calibrated | Failure:  # fmt: skip
    """Steps 1-4 of the policy for one point: first call, validation of both paths, calibration
    with the health of every run's end state (``rows``: ``harness.health.distinct_rows(problem)``,
    computed here when not given)."""
    from harness.agreement import TOLERANCE, max_relative_error
    from harness.health import distinct_rows

    tolerance = TOLERANCE[request.dtype]
    reference = request.reference
    try:
        _, seconds, cache = first_call(backend, lambda: train(backend, problem, 1, 0))
    except UnsupportedProblem as exc:
        return Failure(Status.SKIPPED, f"unsupported: {exc}")
    first = FirstCall(seconds, cache, fresh)

    result = train(backend, problem, request.validate_iterations, request.log_every)
    if not finite(result):
        return Failure(Status.UNHEALTHY, "NaN or inf in weights or losses", first)
    error = max_relative_error(result, reference)
    if not error <= tolerance:
        return Failure(Status.INVALID, f"max relative error {error:.3g} > {tolerance:g} vs float64 numpy", first, error)
    unlogged = train(backend, problem, request.validate_iterations, 0)
    silent = max_relative_error(unlogged, TrainResult(reference.weights, np.empty(0)))
    if not (finite(unlogged) and silent <= tolerance):
        return Failure(Status.INVALID, f"the unlogged (timed) path: max relative error {silent:.3g} > {tolerance:g} "
                       "vs float64 numpy", first, silent)  # fmt: skip

    rows = distinct_rows(problem) if rows is None else rows

    def run_seconds(iterations: int) -> float:
        seconds, _, result = timed_run(backend, problem, iterations)
        failure = unhealthy(problem, result, iterations, rows)
        if failure:
            raise _Unhealthy(failure)
        return seconds

    try:
        iterations, seconds = calibrate(run_seconds, request.min_time, request.max_iterations)
    except _Unhealthy as bad:
        return Failure(bad.failure.status, bad.failure.reason, first, max(error, silent))
    return Calibrated(first, max(error, silent), iterations, seconds / iterations, threads)


# --- for the parent ------------------------------------------------------------------------------


def validation_iterations(work: int, preset_iterations: int) -> int:
    if work >= ONE_VALIDATION_WORK:
        return 1
    return max(MIN_VALIDATION, min(preset_iterations, VALIDATION_WORK // work))


def log_every_for(iterations: int) -> int:
    """Validation logs four losses (or every iteration of a shorter run)."""
    return max(1, iterations // 4)


def repeats_for(repeats: int, run_seconds: float) -> int:
    """Repeats of one timed run: the preset's, or LONG_REPEATS for runs longer than LONG_RUN."""
    return min(repeats, LONG_REPEATS) if run_seconds > LONG_RUN else repeats


def point_cost(per_iteration: float, validate: int, repeats: int) -> float:
    """Predicted seconds of one point at ``per_iteration`` seconds per iteration: validation, the
    calibration runs and ``repeats`` runs, each counted as one iteration. That is the cost where it
    matters: a point slow enough to exceed the budget has per_iteration >= min_time, so T = 1."""
    return per_iteration * (validate + CALIBRATION_RUNS + repeats)


def rounds(wanted: dict[str, int], rng: random.Random):
    """The interleaved repeat order: round r runs every backend that wants more than r repeats,
    in a fresh random order. Yields (round, [backends])."""
    for r in range(max(wanted.values(), default=0)):
        order = [b for b in wanted if r < wanted[b]]
        rng.shuffle(order)
        yield r, order


def spread(seconds: list[float]) -> float:
    """Sample stdev / mean of the repeats (0 for fewer than two)."""
    return statistics.stdev(seconds) / statistics.fmean(seconds) if len(seconds) > 1 else 0.0
