"""The sweep: every backend over a grid of batch sizes and hidden widths, validated, then timed.

How a sweep walks the grid (``harness.plan``: what it is asked to do and what may run): smallest
work first, one worker process per backend and dtype (``harness.worker``; so each dtype's first
point is a first call in a fresh process), each point's rows appended to ``runs.csv`` before the
next point starts, resume by commit. How each point is measured is ``harness.timing``'s policy;
this module applies it across backends, one point at a time, in named steps (``_run_point``):

1. ``_admit``: may the backend run this point (``harness.plan.admit``: time, memory, predicted
   cost; or its worker said it is unavailable), and its live worker, started if need be;
2. ``_calibrate``: the point's request (the float64 reference, computed once per point, the first
   time a backend is admitted) and the worker's calibration (``harness.timing.measure_point``);
3. ``_repeat``: the timed repeats, interleaved across backends (``harness.timing.rounds``), the
   worker that ran last let go idle before each;
4. ``_rows``: the ``Row`` objects of the point, built from the replies
   (``harness.protocol``: each reply's fields are the columns it determines).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import backends
from backends.base import TrainResult
from harness import results, timing
from harness.agreement import reference_result
from harness.plan import Plan, Predictor, Preset, admit, grid  # noqa: F401  (Preset: the sweep's API)
from harness.problems import scaled
from harness.protocol import (
    Calibrated,
    Failure,
    PointRequest,
    Ready,
    RepeatRequest,
    Timed,
    Unavailable,
    as_failure,
)
from harness.results import Row, Status
from harness.worker import Worker, wait_until_idle

POINT_KEY = ("backend", "dtype", "batch", "hidden")


@dataclass
class Sweep:
    """The state of one sweep while it runs."""

    plan: Plan
    commit: str
    started: float = field(default_factory=time.monotonic)
    workers: dict[tuple[str, str], Worker] = field(default_factory=dict)  # (backend, dtype) -> its worker
    unavailable: dict[str, str] = field(default_factory=dict)  # backend -> reason its worker gave
    predictor: Predictor = field(default_factory=lambda: Predictor())
    last_worker: Worker | None = None  # the worker that ran last (its threads may still be spinning)
    timed: int = 0  # backend-points timed in this sweep ...
    unstable: int = 0  # ... and how many of them had repeats spread more than UNSTABLE_SPREAD
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def quiet(self, worker: Worker) -> None:
        """Before ``worker`` runs anything timed: let the worker that ran last stop spinning."""
        last = self.last_worker
        if last is not None and last is not worker:
            last.settle()
        self.last_worker = worker


def done_keys(path: Path, commit: str) -> tuple[set[tuple], dict[tuple, float]]:
    """Points already in runs.csv for this commit (any status): what --resume skips; and the
    seconds per iteration of those that ran, so the budget predictions survive a resume."""
    if not path.exists():
        return set(), {}
    rows = [row for row in results.read_rows(path)[0] if row.commit == commit]
    per_iteration: dict[tuple, list[float]] = {}
    for row in rows:
        if row.status is Status.OK and row.seconds is not None and row.iterations > 0:
            per_iteration.setdefault(row.key(POINT_KEY), []).append(row.seconds / row.iterations)
    return {row.key(POINT_KEY) for row in rows}, {k: statistics.median(v) for k, v in per_iteration.items()}


def sweep(plan: Plan, log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run the sweep, appending each finished point to ``<out>/<machine>/runs.csv``; returns that path.
    The folder's lock (``results.locked``) is held throughout: what is done is read once, and no
    other writer can add a point in between (nothing is stored twice for one commit)."""
    directory = plan.out / plan.machine
    with results.locked(directory, log=log):
        return _sweep(plan, log, progress)


def _sweep(plan: Plan, log: Callable[[str], None], progress: bool) -> Path:
    from tqdm import tqdm

    from harness.fingerprint import commit as current_commit

    run = Sweep(plan, current_commit())
    directory = plan.out / plan.machine
    path = directory / results.RUNS
    if path.exists():
        results.prepare(path, log)  # a torn last line moved aside before resume reads what is done
    done, history = done_keys(path, run.commit) if plan.resume else (set(), {})
    points = grid(plan.preset)
    cells = [(p, b) for p in points for b in plan.backends]
    todo = [(p, b) for p, b in cells if (b, *p) not in done]
    if len(todo) < len(cells):
        log(f"resume: {len(cells) - len(todo)} of {len(cells)} backend-points already in {path} for commit {run.commit}; skipping them")
    bar = tqdm(total=len(todo), disable=not progress, unit="pt", dynamic_ncols=True)
    if progress:
        log = bar.write  # keeps warnings from tearing the progress bar
    for (backend, dtype, batch, hidden), per_iteration in history.items():
        run.predictor.add(backend, dtype, batch * hidden, per_iteration)
    try:
        for point in points:
            pending = [b for b in plan.backends if (b, *point) not in done]
            if not pending:
                continue
            dtype, batch, hidden = point
            bar.set_description(f"{dtype} N={batch} H={hidden}")
            rows = _run_point(run, point, pending, log)
            results.append_rows(path, rows, log)  # this point is durable before the next starts
            bar.update(len(pending))
    finally:
        bar.close()
        for worker in run.workers.values():
            worker.close()
    if run.unstable:
        log(f"note: {run.unstable} of {run.timed} timed backend-points had repeats with stdev > "
            f"{timing.UNSTABLE_SPREAD:.0%} of the mean (those > {timing.LOUD_SPREAD:.0%} are listed above); the medians are "
            "reported, and runs.csv keeps every repeat")  # fmt: skip
    return path


def _worker(run: Sweep, backend: str, dtype: str, log) -> Worker | Failure:
    """The live worker of (backend, dtype), started if need be; a Failure if it cannot start."""
    key = (backend, dtype)
    worker = run.workers.get(key)
    if worker is not None and worker.alive:
        return worker
    plan = run.plan
    worker = run.workers[key] = Worker(backend, plan.threads, start_timeout=max(plan.timeout, 120.0))
    if isinstance(worker.ready, Ready):
        return worker
    run.workers.pop(key).kill()
    if isinstance(worker.ready, Unavailable):
        run.unavailable[backend] = worker.ready.reason
        log(f"{backend}: unavailable ({worker.ready.reason}); recorded as skipped")
        return Failure(Status.SKIPPED, f"unavailable: {worker.ready.reason}")
    return worker.ready if isinstance(worker.ready, Failure) else Failure(Status.FAILED, "worker did not start")


@dataclass
class Point:
    """One point while the sweep measures it: what its steps share."""

    dtype: str
    batch: int
    hidden: int
    validate: int  # validation iterations (timing.validation_iterations)
    reference: TrainResult | None = None  # the float64 NumPy run, once a backend needs it
    rows: list[Row] = field(default_factory=list)  # rows of backends that produced no timing
    calibrated: dict[str, tuple[Ready, Calibrated]] = field(default_factory=dict)  # in the order they ran

    @property
    def work(self) -> int:
        return self.batch * self.hidden

    def describe(self) -> str:
        return f"{self.dtype} N={self.batch} H={self.hidden}"


def _run_point(run: Sweep, point: tuple, pending: list[str], log) -> list[Row]:
    """Every pending backend at one point, step by step; returns the point's rows."""
    dtype, batch, hidden = point
    job = Point(dtype, batch, hidden, timing.validation_iterations(batch * hidden, run.plan.preset.validate_iterations))
    for backend in pending:
        worker = _admit(run, job, backend, log)
        if worker is not None:
            _calibrate(run, job, backend, worker)
    timings, failed = _repeat(run, job)
    return job.rows + _rows(run, job, timings, failed, log)


def _admit(run: Sweep, job: Point, backend: str, log) -> Worker | None:
    """Step 1: the worker of a backend that may run this point; None with its row recorded when not."""
    why = (f"unavailable: {run.unavailable[backend]}" if backend in run.unavailable
           else admit(run.plan.preset, run.predictor, backend, (job.dtype, job.batch, job.hidden), job.validate,
                      time.monotonic() - run.started))  # fmt: skip
    if why:
        job.rows.append(_row(run, job, backend, status=Status.SKIPPED, reason=why))
        return None
    worker = _worker(run, backend, job.dtype, log)
    if isinstance(worker, Failure):
        job.rows.append(_row(run, job, backend, **worker.fields()))
        return None
    return worker


def _calibrate(run: Sweep, job: Point, backend: str, worker: Worker) -> None:
    """Step 2: the worker validates and calibrates the point (``timing.measure_point``)."""
    plan, preset = run.plan, run.plan.preset
    if job.reference is None:
        problem = scaled(job.batch, job.hidden, "float64", plan.seed)
        job.reference = reference_result(problem, job.validate, timing.log_every_for(job.validate))
        wait_until_idle(os.getpid())  # this process's own BLAS threads, after the reference
    run.quiet(worker)
    request = PointRequest(backend, job.dtype, job.batch, job.hidden, plan.seed, job.validate,
                           timing.log_every_for(job.validate), preset.min_time, timing.MAX_ITERATIONS, job.reference)  # fmt: skip
    reply = worker.call(request, timeout=max(plan.timeout, 10 * preset.point_budget))
    if isinstance(reply, Calibrated):
        run.predictor.add(backend, job.dtype, job.work, reply.seconds_per_iteration)
        job.calibrated[backend] = (worker.ready, reply)
        return
    failure = as_failure(reply)
    fresh = failure.first.fresh if failure.first else None
    job.rows.append(_row(run, job, backend, **worker.ready.fields(fresh), **failure.fields()))
    _drop(run, backend, job.dtype, failure)


def _repeat(run: Sweep, job: Point) -> tuple[dict[str, list[Timed]], dict[str, Failure]]:
    """Step 3: the timed repeats, interleaved: every round runs each backend once, in a fresh
    random order, the worker that ran last let go idle first. Returns the timings and the failures."""
    plan = run.plan
    timings: dict[str, list[Timed]] = {b: [] for b in job.calibrated}
    failed: dict[str, Failure] = {}
    wanted = {b: timing.repeats_for(plan.preset.repeats, c.iterations * c.seconds_per_iteration)
              for b, (_, c) in job.calibrated.items()}  # fmt: skip
    for _, order in timing.rounds(wanted, run.rng):
        for backend in (b for b in order if b not in failed):
            c = job.calibrated[backend][1]
            worker = run.workers[(backend, job.dtype)]
            run.quiet(worker)
            reply = worker.call(RepeatRequest(), timeout=max(plan.timeout, 20 * c.iterations * c.seconds_per_iteration))
            if isinstance(reply, Timed):
                timings[backend].append(reply)
                continue
            failed[backend] = as_failure(reply)
            _drop(run, backend, job.dtype, failed[backend])
    return timings, failed


def _rows(run: Sweep, job: Point, timings: dict[str, list[Timed]], failed: dict[str, Failure], log) -> list[Row]:
    """Step 4: the rows of the calibrated backends: one per repeat, or one with the repeat's failure;
    the repeats' median feeds the predictor and their spread the warnings."""
    rows = []
    for backend, (ready, c) in job.calibrated.items():
        common = {**ready.fields(c.first.fresh), **c.fields()}
        if backend in failed:
            rows.append(_row(run, job, backend, **common, status=failed[backend].status, reason=failed[backend].reason))
            continue
        seconds = [t.seconds for t in timings[backend]]
        run.predictor.add(backend, job.dtype, job.work, statistics.median(seconds) / c.iterations)
        rows += [_row(run, job, backend, **common, **t.fields(), repeat=r, status=Status.OK, validated=True)
                 for r, t in enumerate(timings[backend])]  # fmt: skip
        spread = timing.spread(seconds)
        run.unstable += spread > timing.UNSTABLE_SPREAD
        run.timed += 1
        if spread > timing.LOUD_SPREAD:
            log(f"warning: {backend} at {job.describe()} is unstable: stdev {spread:.0%} of the mean over "
                f"{len(seconds)} repeats ({min(seconds):.3g}..{max(seconds):.3g} s); the machine may be busy")  # fmt: skip
    return rows


def _row(run: Sweep, job: Point, backend: str, **values) -> Row:
    """A row of this point: the point's columns, then the replies' fields (``harness.protocol``)."""
    values.setdefault("device", "")
    if not values["device"]:  # the backend never reported one (it did not start): derived
        values["device"] = results.nominal_device(backend, run.plan.has_gpu)
    return Row(backend=backend, dtype=job.dtype, batch=job.batch, hidden=job.hidden, machine=run.plan.machine,
               commit=run.commit, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"), **values)  # fmt: skip


def _drop(run: Sweep, backend: str, dtype: str, reply: Failure) -> None:
    """Forget a worker that ended (a device fault) or died: the next point starts a fresh one."""
    if reply.fatal or not run.workers[(backend, dtype)].alive:
        run.workers.pop((backend, dtype)).kill()


def resolve_backends(requested: Iterable[str] | None) -> list[str]:
    names = list(requested) if requested else backends.names()
    for name in names:
        if name not in backends.REGISTRY:
            raise backends.UnknownBackend(name)
    return names
