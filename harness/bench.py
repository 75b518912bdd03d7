"""The sweep: every backend over a grid of batch sizes and hidden widths, validated, then timed.

Timing discipline (see README, "How a point is measured"):
- each backend runs in its own worker process (harness.worker): a crash or hang costs one point;
- the first call (compile + a short validation run) is timed on its own: ``compile_seconds``;
- the validation run is compared with the float64 NumPy reference before anything is timed;
- T (iterations per timed run) is calibrated per backend and point so one run lasts ``min_time``;
- R repeats, each from fresh initial weights (the copy is not in ``seconds``), with the order of
  backends shuffled in every round so machine drift does not favour one of them; runs longer
  than LONG_RUN seconds get LONG_REPEATS repeats (at least 3), which keeps the largest points
  of the grid within budget;
- a point predicted to exceed the per-point budget or the memory at hand is skipped with a reason.
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
from harness import results
from harness.agreement import reference_result
from harness.problems import scaled
from harness.worker import Point, Worker, wait_until_idle


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
MAX_ITERATIONS = 1 << 20
UNSTABLE_SPREAD = 0.10  # stdev / mean of the repeats above this is unstable (pyperf's rule) ...
LONG_RUN = 0.25  # seconds: a timed run longer than this gets ...
LONG_REPEATS = 3  # ... this many repeats instead of the preset's (when that is more)
LOUD_SPREAD = 0.25  # ... and above this it is reported point by point, not only counted


@dataclass
class Plan:
    preset: Preset
    backends: list[str]
    out: Path
    machine: str
    threads: int | None = None
    resume: bool = True
    seed: int = SEED
    timeout: float = 120.0  # least seconds a worker may take to answer before it is killed
    has_gpu: bool = False  # the machine has an NVIDIA GPU (for the device of rows that never ran)
    last_worker: Worker | None = None  # the worker that ran last (its threads may still be spinning)
    timed: int = 0  # backend-points timed in this sweep ...
    unstable: int = 0  # ... and how many of them had repeats spread more than UNSTABLE_SPREAD
    rng: random.Random = field(default_factory=lambda: random.Random(0))


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

    commit = current_commit()
    directory = plan.out / plan.machine
    path = directory / results.RUNS
    done, history = done_keys(path, commit) if plan.resume else (set(), {})
    points = grid(plan.preset)
    cells = [(p, b) for p in points for b in plan.backends]
    todo = [(p, b) for p, b in cells if (b, *p) not in done]
    if len(todo) < len(cells):
        log(f"resume: {len(cells) - len(todo)} of {len(cells)} backend-points already in {path} for commit {commit}; skipping them")
    unavailable: dict[str, str] = {}  # backend -> reason, as its worker reported at start

    predictor = Predictor()
    workers: dict[str, Worker] = {}
    started = time.monotonic()
    bar = tqdm(total=len(todo), disable=not progress, unit="pt", dynamic_ncols=True)
    if progress:
        log = bar.write  # keeps warnings from tearing the progress bar
    for (backend, dtype, batch, hidden), per_iteration in history.items():
        predictor.add(backend, dtype, batch * hidden, per_iteration)
    try:
        for point in points:
            pending = [b for b in plan.backends if (b, *point) not in done]
            if not pending:
                continue
            dtype, batch, hidden = point
            bar.set_description(f"{dtype} N={batch} H={hidden}")
            rows = _run_point(plan, point, pending, unavailable, workers, predictor, commit, started, log)
            results.append_rows(path, rows)  # this point is durable before the next starts
            bar.update(len(pending))
    finally:
        bar.close()
        for worker in workers.values():
            worker.close()
    if plan.unstable:
        log(f"note: {plan.unstable} of {plan.timed} timed backend-points had repeats with stdev > "
            f"{UNSTABLE_SPREAD:.0%} of the mean (those > {LOUD_SPREAD:.0%} are listed above); the medians are "
            "reported, and runs.csv keeps every repeat")  # fmt: skip
    return path


def _run_point(plan, point, pending, unavailable, workers, predictor, commit, started, log) -> list[dict]:
    dtype, batch, hidden = point
    preset = plan.preset
    work = batch * hidden
    rows: list[dict] = []
    active: dict[str, dict] = {}  # backend -> its calibration reply, in the order they ran
    reference = None
    point_key = f"{dtype} N={batch} H={hidden}"
    # Validation runs a few iterations at small points, two from N*H = 2^15 up (the second already
    # runs on updated weights; a slow backend would otherwise spend more time validating than
    # being timed) and one from 2^24 up, where the NumPy reference alone takes seconds per
    # iteration and the same code paths were validated over two iterations at smaller points.
    validate_iterations = 1 if work >= 1 << 24 else max(2, min(preset.validate_iterations, (1 << 16) // work))

    def skip(backend: str, status: str, reason: str, **extra) -> None:
        rows.append(_row(plan, backend, dtype, batch, hidden, commit, status=status, reason=reason, **extra))

    def quiet(worker: Worker) -> None:
        """Before ``worker`` runs anything timed: let the worker that ran last stop spinning."""
        last = plan.last_worker
        if last is not None and last is not worker:
            last.settle()
        plan.last_worker = worker

    for backend in pending:
        if backend in unavailable:
            skip(backend, "skipped", f"unavailable: {unavailable[backend]}")
            continue
        if time.monotonic() - started > preset.total_budget:
            skip(backend, "skipped", f"sweep time budget of {preset.total_budget:.0f} s used up")
            continue
        free = psutil.virtual_memory().available
        need = bytes_needed(backend, dtype, batch, hidden)
        if need > 0.7 * free:
            skip(backend, "skipped", f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available")
            continue
        guess = predictor.predict(backend, dtype, work)
        if guess:
            per_iteration, from_work = guess
            cost = per_iteration * (validate_iterations + 2 + repeats_for(preset, per_iteration))
            if cost > preset.point_budget:
                skip(
                    backend, "skipped",
                    f"predicted {per_iteration:.3g} s/iteration (from N*H={from_work}): ~{cost:.0f} s "
                    f"> point budget {preset.point_budget:.0f} s",
                )  # fmt: skip
                continue
        worker = workers.get(backend)
        if worker is None or not worker.alive:
            worker = workers[backend] = Worker(backend, plan.threads, start_timeout=max(plan.timeout, 120.0))
            ready = worker.ready
            if ready.get("status") != "ready":
                workers.pop(backend).kill()
                if ready.get("status") == "unavailable":
                    unavailable[backend] = ready["reason"]
                    log(f"{backend}: unavailable ({ready['reason']}); recorded as skipped")
                    skip(backend, "skipped", f"unavailable: {ready['reason']}")
                else:
                    skip(backend, ready.get("status", "failed"), ready.get("reason", "worker did not start"))
                continue
        if reference is None:
            validate_problem = scaled(batch, hidden, "float64", plan.seed)
            reference = reference_result(validate_problem, validate_iterations, _log_every(validate_iterations))
            wait_until_idle(os.getpid())  # this process's own BLAS threads, after the reference
        quiet(worker)
        request = Point(
            backend, dtype, batch, hidden, plan.seed, validate_iterations, _log_every(validate_iterations),
            preset.min_time, MAX_ITERATIONS,
        )  # fmt: skip
        reply = worker.call(("point", request, reference), timeout=max(plan.timeout, 10 * preset.point_budget))
        reply["library"] = worker.ready.get("library", "")
        reply["device"] = worker.ready.get("device", "")
        if reply["status"] != "ok":
            skip(backend, reply["status"], reply.get("reason", ""), compile_seconds=reply.get("compile_seconds", ""),
                 max_rel_error=reply.get("max_rel_error", ""), library=reply["library"], device=reply["device"])  # fmt: skip
            if reply.get("fatal") or not worker.alive:
                workers.pop(backend).kill()
            continue
        predictor.add(backend, dtype, work, reply["seconds_per_iteration"])
        active[backend] = reply

    # Repeats, interleaved: every round runs each backend once, in a fresh random order.
    timings: dict[str, list[dict]] = {b: [] for b in active}
    failed: dict[str, dict] = {}
    wanted = {b: repeats_for(preset, info["iterations"] * info["seconds_per_iteration"]) for b, info in active.items()}
    for round_ in range(max(wanted.values(), default=0)):
        order = [b for b in active if b not in failed and round_ < wanted[b]]
        plan.rng.shuffle(order)
        for backend in order:
            info = active[backend]
            expected = info["iterations"] * info["seconds_per_iteration"]
            quiet(workers[backend])
            reply = workers[backend].call(("repeat",), timeout=max(plan.timeout, 20 * expected))
            if reply["status"] != "ok":
                failed[backend] = reply
                if reply.get("fatal") or not workers[backend].alive:
                    workers.pop(backend).kill()
                continue
            timings[backend].append(reply)

    for backend, info in active.items():
        common = dict(
            iterations=info["iterations"], compile_seconds=info["compile_seconds"],
            max_rel_error=info["max_rel_error"], threads=info.get("threads") or "", library=info["library"],
            device=info["device"],
        )  # fmt: skip
        if backend in failed:
            reply = failed[backend]
            skip(backend, reply["status"], reply.get("reason", ""), **common)
            continue
        seconds = [t["seconds"] for t in timings[backend]]
        predictor.add(backend, dtype, work, statistics.median(seconds) / info["iterations"])
        for r, t in enumerate(timings[backend]):
            rows.append(_row(plan, backend, dtype, batch, hidden, commit, repeat=r, seconds=t["seconds"],
                             seconds_e2e=t["seconds_e2e"], status="ok", validated=True, **common))  # fmt: skip
        spread = statistics.stdev(seconds) / statistics.fmean(seconds) if len(seconds) > 1 else 0.0
        plan.unstable += spread > UNSTABLE_SPREAD
        plan.timed += 1
        if spread > LOUD_SPREAD:
            log(f"warning: {backend} at {point_key} is unstable: stdev {spread:.0%} of the mean over "
                f"{len(seconds)} repeats ({min(seconds):.3g}..{max(seconds):.3g} s); the machine may be busy")  # fmt: skip
    return rows


def repeats_for(preset: Preset, run_seconds: float) -> int:
    """Repeats of one timed run: the preset's, or LONG_REPEATS for runs longer than LONG_RUN."""
    return min(preset.repeats, LONG_REPEATS) if run_seconds > LONG_RUN else preset.repeats


def _log_every(iterations: int) -> int:
    return max(1, iterations // 4)


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
