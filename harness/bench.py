"""The sweep: every backend over a grid of batch sizes and hidden widths, validated, then timed.

What a sweep is configured with (``Preset``, ``Plan``) and how it walks the grid: smallest work
first, one worker process per backend (``harness.worker``), each point's rows appended to
``runs.csv`` before the next point starts, resume by commit. How each point is measured is
``harness.timing``'s policy; this module applies it across backends: the point and memory
budgets, the interleaved repeats, the settle between workers.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import psutil

import backends
from harness import results, timing
from harness.agreement import reference_result
from harness.problems import scaled
from harness.results import Status
from harness.timing import Calibrated, Failure, PointRequest, Ready, RepeatRequest, Timed, Unavailable
from harness.worker import Worker, wait_until_idle


@dataclass(frozen=True)
class Preset:
    batch: tuple[int, ...]
    hidden: tuple[int, ...]
    dtypes: tuple[str, ...]
    repeats: int
    min_time: float  # seconds one timed run must last
    point_budget: float  # seconds one backend may spend on one point (validation + repeats)
    total_budget: float  # seconds for the whole sweep; points left when it runs out are skipped
    validate_iterations: int = 8


POWERS_OF_4 = tuple(4**k for k in range(1, 9))  # 4 .. 65536
PRESETS = {
    "quick": Preset((4, 256, 16384), (4, 256), ("float64",), 3, 0.01, 3.0, 30.0, 4),
    "default": Preset(POWERS_OF_4, POWERS_OF_4[:6], ("float64",), 5, 0.05, 45.0, 500.0),
    "full": Preset(POWERS_OF_4, POWERS_OF_4[:6], ("float64", "float32"), 7, 0.2, 120.0, 4 * 3600.0),
    # For a lent GPU machine (`make gpu-bench`): every batch size of the default grid, the hidden
    # widths 4, 64, 1024 and 4096 (the corners and the largest point of the default grid), sized
    # so that the whole command ends inside the device tool's 10-minute limit.
    "gpu": Preset(POWERS_OF_4, (4, 64, 1024, 4096), ("float64",), 5, 0.05, 30.0, 400.0),
}
SEED = 2024
#: A point whose estimated memory exceeds this share of what is available is skipped.
MEMORY_SHARE = 0.7


@dataclass
class Plan:
    """What a sweep is asked to do (configuration only; ``Sweep`` holds the state of a run)."""

    preset: Preset
    backends: list[str]
    out: Path
    machine: str
    threads: int | None = None
    resume: bool = True
    seed: int = SEED
    timeout: float = 120.0  # least seconds a worker may take to answer before it is killed
    has_gpu: bool = False  # the machine has an NVIDIA GPU (for the device of rows that never ran)


@dataclass
class Sweep:
    """The state of one sweep while it runs."""

    plan: Plan
    commit: str
    started: float = field(default_factory=time.monotonic)
    workers: dict[str, Worker] = field(default_factory=dict)
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


def grid(preset: Preset) -> list[tuple[str, int, int]]:
    """(dtype, batch, hidden) points, smallest work first so slow backends are predicted, not run."""
    points = itertools.product(preset.dtypes, preset.batch, preset.hidden)
    return sorted(points, key=lambda p: (p[1] * p[2], p[1], p[0]))


def bytes_needed(backend: str, dtype: str, batch: int, hidden: int) -> float:
    """Rough peak memory of one point: a few N x H arrays (Python floats in lists cost ~40 B each)."""
    per_element = 40 * 6 if backend == "python" else 8 * 6
    return per_element * batch * hidden * (1 if dtype == "float64" or backend == "python" else 0.5)


class Predictor:
    """Predicts seconds per iteration of a backend at a new point from its largest smaller point."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], dict[int, float]] = {}

    def add(self, backend: str, dtype: str, work: int, seconds_per_iteration: float) -> None:
        """Record (or replace: the repeats' median supersedes the calibration's estimate)."""
        self.seen.setdefault((backend, dtype), {})[work] = seconds_per_iteration

    def predict(self, backend: str, dtype: str, work: int) -> tuple[float, int] | None:
        below = [(w, s) for w, s in self.seen.get((backend, dtype), {}).items() if w <= work]
        if not below:
            return None
        w, s = max(below)
        return s * work / w, w  # at least linear in N*H: the work per iteration is


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


def _admit(run: Sweep, backend: str, point: tuple, validate: int) -> str | None:
    """Why ``backend`` must skip this point before it runs (None: it may run)."""
    dtype, batch, hidden = point
    preset = run.plan.preset
    if backend in run.unavailable:
        return f"unavailable: {run.unavailable[backend]}"
    if time.monotonic() - run.started > preset.total_budget:
        return f"sweep time budget of {preset.total_budget:.0f} s used up"
    free = psutil.virtual_memory().available
    need = bytes_needed(backend, dtype, batch, hidden)
    if need > MEMORY_SHARE * free:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"
    guess = run.predictor.predict(backend, dtype, batch * hidden)
    if guess:
        per_iteration, from_work = guess
        cost = timing.point_cost(per_iteration, validate, timing.repeats_for(preset.repeats, per_iteration))
        if cost > preset.point_budget:
            return (f"predicted {per_iteration:.3g} s/iteration (from N*H={from_work}): ~{cost:.0f} s "
                    f"> point budget {preset.point_budget:.0f} s")  # fmt: skip
    return None


def _worker(run: Sweep, backend: str, log) -> Worker | Failure:
    """The backend's live worker, started if need be; a Failure if it cannot start."""
    worker = run.workers.get(backend)
    if worker is not None and worker.alive:
        return worker
    plan = run.plan
    worker = run.workers[backend] = Worker(backend, plan.threads, start_timeout=max(plan.timeout, 120.0))
    if isinstance(worker.ready, Ready):
        return worker
    run.workers.pop(backend).kill()
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
    reference = None
    validate = timing.validation_iterations(work, preset.validate_iterations)

    def record(backend: str, status, reason: str, **extra) -> None:
        rows.append(_row(plan, backend, dtype, batch, hidden, run.commit, status=status, reason=reason, **extra))

    def drop(backend: str, reply: Failure) -> None:
        if reply.fatal or not run.workers[backend].alive:
            run.workers.pop(backend).kill()

    for backend in pending:
        why = _admit(run, backend, point, validate)
        if why:
            record(backend, Status.SKIPPED, why)
            continue
        worker = _worker(run, backend, log)
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
                   max_rel_error=_blank(failure.max_rel_error), library=ready.library, device=ready.device)  # fmt: skip
            drop(backend, failure)
            continue
        run.predictor.add(backend, dtype, work, reply.seconds_per_iteration)
        calibrated[backend] = reply

    # Repeats, interleaved: every round runs each backend once, in a fresh random order.
    timings: dict[str, list[Timed]] = {b: [] for b in calibrated}
    failed: dict[str, Failure] = {}
    wanted = {b: timing.repeats_for(preset.repeats, c.iterations * c.seconds_per_iteration) for b, c in calibrated.items()}
    for _, order in timing.rounds(wanted, run.rng):
        for backend in (b for b in order if b not in failed):
            c = calibrated[backend]
            run.quiet(run.workers[backend])
            reply = run.workers[backend].call(RepeatRequest(), timeout=max(plan.timeout, 20 * c.iterations * c.seconds_per_iteration))
            if isinstance(reply, Timed):
                timings[backend].append(reply)
                continue
            failed[backend] = _as_failure(reply)
            drop(backend, failed[backend])

    for backend, c in calibrated.items():
        ready = run.workers[backend].ready if backend in run.workers else None
        common = dict(
            iterations=c.iterations, compile_seconds=c.compile_seconds, max_rel_error=c.max_rel_error,
            threads=c.threads or "", library=ready.library if ready else "", device=ready.device if ready else "",
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


def resolve_backends(requested: Iterable[str] | None) -> list[str]:
    names = list(requested) if requested else backends.names()
    for name in names:
        if name not in backends.REGISTRY:
            raise backends.UnknownBackend(name)
    return names


def custom_preset(base: Preset, batch=None, hidden=None, dtypes=None) -> Preset:
    return replace(
        base,
        batch=tuple(batch) if batch else base.batch,
        hidden=tuple(hidden) if hidden else base.hidden,
        dtypes=tuple(dtypes) if dtypes else base.dtypes,
    )
