"""The sweep: every backend over a grid of batch sizes and hidden widths, validated, then timed.

How a sweep walks the grid (``harness.plan``: what it is asked to do and what may run): smallest
work first, one worker process per backend and dtype (``harness.worker``; so each dtype's first
point is a first call in a fresh process), each point's rows appended to ``runs.csv`` before the
next point starts, resume by commit. How each point is measured is ``harness.timing``'s policy;
this module applies it across backends: admission, the interleaved repeats, the settle between
workers.
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
from harness import results, timing
from harness.agreement import reference_result
from harness.plan import Plan, Predictor, Preset, admit, grid  # noqa: F401  (Preset: the sweep's API)
from harness.problems import scaled
from harness.results import Status
from harness.timing import Calibrated, Failure, PointRequest, Ready, RepeatRequest, Timed, Unavailable
from harness.worker import Worker, wait_until_idle


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


def _row(plan: Plan, backend: str, dtype: str, batch: int, hidden: int, commit: str, **values) -> dict:
    row = {
        "backend": backend,
        "dtype": dtype,
        "batch": batch,
        "hidden": hidden,
        "machine": plan.machine,
        "commit": commit,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeat": 0,
        "iterations": 0,
        "validated": False,
    }
    row.update(values)
    row["status"] = str(row["status"])
    if not row.get("device"):  # the backend never reported one (it did not start): derived
        row["device"] = results.nominal_device(backend, plan.has_gpu)
    return row


def done_keys(path: Path, commit: str) -> tuple[set[tuple], dict[tuple, float]]:
    """Points already in runs.csv for this commit (any status): what --resume skips; and the
    seconds per iteration of those that ran, so the budget predictions survive a resume."""
    if not path.exists():
        return set(), {}
    frame, _ = results.read_runs(path)
    frame = frame[frame["commit"] == commit]
    keys = ["backend", "dtype", "batch", "hidden"]
    done = {(r.backend, r.dtype, int(r.batch), int(r.hidden)) for r in frame.itertuples()}
    ok = frame[frame["status"] == "ok"]
    per_iteration = (ok["seconds"] / ok["iterations"]).groupby([ok[k] for k in keys]).median()
    return done, {tuple(k): float(v) for k, v in per_iteration.items()}


def sweep(plan: Plan, log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run the sweep, appending each finished point to ``<out>/<machine>/runs.csv``; returns that path."""
    from tqdm import tqdm

    from harness.fingerprint import commit as current_commit

    run = Sweep(plan, current_commit())
    directory = plan.out / plan.machine
    path = directory / results.RUNS
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
            results.append_rows(path, rows)  # this point is durable before the next starts
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


def _run_point(run: Sweep, point: tuple, pending: list[str], log) -> list[dict]:
    plan, preset = run.plan, run.plan.preset
    dtype, batch, hidden = point
    work = batch * hidden
    rows: list[dict] = []
    calibrated: dict[str, Calibrated] = {}  # backend -> its calibration, in the order they ran
    readies: dict[str, Ready] = {}  # backend -> the greeting of the worker that calibrated it
    reference = None
    validate = timing.validation_iterations(work, preset.validate_iterations)

    def record(backend: str, status, reason: str, **extra) -> None:
        rows.append(_row(plan, backend, dtype, batch, hidden, run.commit, status=status, reason=reason, **extra))

    def drop(backend: str, reply: Failure) -> None:
        if reply.fatal or not run.workers[(backend, dtype)].alive:
            run.workers.pop((backend, dtype)).kill()

    for backend in pending:
        why = (f"unavailable: {run.unavailable[backend]}" if backend in run.unavailable
               else admit(preset, run.predictor, backend, point, validate, time.monotonic() - run.started))  # fmt: skip
        if why:
            record(backend, Status.SKIPPED, why)
            continue
        worker = _worker(run, backend, dtype, log)
        if isinstance(worker, Failure):
            record(backend, worker.status, worker.reason)
            continue
        if reference is None:
            reference = reference_result(scaled(batch, hidden, "float64", plan.seed), validate, timing.log_every_for(validate))
            wait_until_idle(os.getpid())  # this process's own BLAS threads, after the reference
        run.quiet(worker)
        request = PointRequest(backend, dtype, batch, hidden, plan.seed, validate, timing.log_every_for(validate),
                               preset.min_time, timing.MAX_ITERATIONS, reference)  # fmt: skip
        reply = worker.call(request, timeout=max(plan.timeout, 10 * preset.point_budget))
        ready = worker.ready
        if not isinstance(reply, Calibrated):
            failure = _as_failure(reply)
            record(backend, failure.status, failure.reason, compile_seconds=_blank(failure.compile_seconds),
                   max_rel_error=_blank(failure.max_rel_error), library=ready.library, device=ready.device,
                   cache=failure.cache, fresh=_blank(failure.fresh), startup_seconds=_startup(ready, failure.fresh))  # fmt: skip
            drop(backend, failure)
            continue
        run.predictor.add(backend, dtype, work, reply.seconds_per_iteration)
        calibrated[backend] = reply
        readies[backend] = ready

    # Repeats, interleaved: every round runs each backend once, in a fresh random order.
    timings: dict[str, list[Timed]] = {b: [] for b in calibrated}
    failed: dict[str, Failure] = {}
    wanted = {b: timing.repeats_for(preset.repeats, c.iterations * c.seconds_per_iteration) for b, c in calibrated.items()}
    for _, order in timing.rounds(wanted, run.rng):
        for backend in (b for b in order if b not in failed):
            c = calibrated[backend]
            run.quiet(run.workers[(backend, dtype)])
            reply = run.workers[(backend, dtype)].call(RepeatRequest(), timeout=max(plan.timeout, 20 * c.iterations * c.seconds_per_iteration))
            if isinstance(reply, Timed):
                timings[backend].append(reply)
                continue
            failed[backend] = _as_failure(reply)
            drop(backend, failed[backend])

    for backend, c in calibrated.items():
        ready = readies[backend]
        common = dict(
            iterations=c.iterations, compile_seconds=c.compile_seconds, max_rel_error=c.max_rel_error, threads=c.threads or "",
            library=ready.library, device=ready.device, cache=c.cache, fresh=c.fresh, startup_seconds=_startup(ready, c.fresh),
        )  # fmt: skip
        if backend in failed:
            record(backend, failed[backend].status, failed[backend].reason, **common)
            continue
        seconds = [t.seconds for t in timings[backend]]
        run.predictor.add(backend, dtype, work, statistics.median(seconds) / c.iterations)
        for r, t in enumerate(timings[backend]):
            rows.append(_row(plan, backend, dtype, batch, hidden, run.commit, repeat=r, seconds=t.seconds,
                             seconds_e2e=t.seconds_e2e, status=Status.OK, reason="", validated=True, **common))  # fmt: skip
        spread = timing.spread(seconds)
        run.unstable += spread > timing.UNSTABLE_SPREAD
        run.timed += 1
        if spread > timing.LOUD_SPREAD:
            log(f"warning: {backend} at {dtype} N={batch} H={hidden} is unstable: stdev {spread:.0%} of the mean over "
                f"{len(seconds)} repeats ({min(seconds):.3g}..{max(seconds):.3g} s); the machine may be busy")  # fmt: skip
    return rows


def _as_failure(reply) -> Failure:
    return reply if isinstance(reply, Failure) else Failure(Status.FAILED, f"unexpected reply {type(reply).__name__}")


def _blank(value):
    return "" if value is None else value


def _startup(ready: Ready, fresh: bool | None):
    """The worker's start-up seconds, on the row of its first call only."""
    return ready.startup_seconds if fresh else ""


def resolve_backends(requested: Iterable[str] | None) -> list[str]:
    names = list(requested) if requested else backends.names()
    for name in names:
        if name not in backends.REGISTRY:
            raise backends.UnknownBackend(name)
    return names
