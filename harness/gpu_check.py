"""``make gpu-check``: the GPU backends checked on a lent GPU machine in one bounded command.

    python -m harness.gpu_check [--out DIR] [--steps tests,validate,sweep,probes] [--jobs N]
                                [--test-timeout SECONDS] [--budget STEP=SECONDS ...]

Steps, in this order, each in child processes (``NUMBA_ENABLE_CUDASIM=0``: the real device) under
its own time budget (``BUDGETS``: 450 s in all, so that the command ends within 8 minutes; time a
step leaves unused is added to the next step's); a child still running when its step's budget is
spent is killed with its process group. Each step is recorded as ok, failed, timeout or skipped,
with the reason:

1. ``discover`` (with any of steps 3-5): every backend declared ``DEVICE`` "gpu" or "any", whether it is available
   here and where it runs, each in a process of its own, all at once. A backend that is not
   available (a missing package: numba-cuda-mlir, warp) is reported with its reason and left out of
   the later steps; one that runs on the CPU here is left out too.
2. ``tests``: ``TEST_FILES`` under pytest, watched test by test (``harness.pytest_watchdog``): a test
   that runs past its timeout (``TEST_FILES``, or ``--test-timeout``) is recorded as ``timeout`` and
   pytest is started again without the tests already finished, so a deadlocked cooperative grid
   is a failed test, not a hung command. Of ``tests/test_agreement.py`` only the cases of the GPU
   backends run, less ``AGREEMENT_LEFT_OUT``, which step 3 runs.
3. ``validate``: ``python -m harness validate --backends NAME`` for every available GPU backend
   (the full case list: both seed runs in full, the scaled cases at awkward and larger sizes, both
   dtypes), ``--jobs`` backends at a time.
4. ``sweep``: ``python -m harness bench --preset gpu-check`` over the available GPU backends (3
   batch sizes x 3 widths, float64 and float32, ``harness.plan.PRESETS``) into
   ``<out>/<machine>/`` (runs.csv, machine.json with the GPU ceilings when a Numba GPU backend is in
   the sweep). A rerun into the same folder resumes: points already stored for the commit are kept.
5. ``probes``: for each available CUDA-compiler backend (``backends._cuda_compiler.COMPILERS``), both
   dtypes and a few sizes on each side of the block/grid switch, the block and the grid path forced
   (``backends._cuda_plan.FORCE_PATH``): per-iteration time of ``PROBE_ITERATIONS`` iterations (best
   of ``PROBE_REPEATS``), the blocks granted, the launch bound, registers, spills and the predicted
   time (``CudaBackend.describe``); printed as a table and written to probes.csv.

Everything goes to one folder, ``--out`` (default: ``$OUT`` if set, else ``gpu-check-out``)::

    gpu-check.json      every step: outcome, seconds, budget, detail, and its records (rewritten after each step)
    summary.txt         the final table, as printed
    environment.json    python, package versions, pytest plugins present, nvidia-smi's GPU line, budgets
    discover/NAME.txt   each GPU backend's availability check
    tests/summary.csv   every selected test: outcome, seconds, attempt, detail (failures.txt: the failures' text)
    tests/pytest-K.log, tests/progress-K.jsonl, tests/junit-K.xml   pytest attempt K (a killed attempt writes no XML)
    validate/NAME.txt   validate's table for one backend
    sweep.log, <machine>/runs.csv, <machine>/machine.json
    probes.csv, probes.txt, probes/NAME.jsonl (its rows as they came), probes/NAME.log

Exit status: 0 every step ok (or skipped for a reason that is not a failure, e.g. a missing
package); 1 a step failed or timed out; 2 bad command line; 3 no CUDA device here (no
``nvidia-smi`` listing a GPU): every GPU step skipped, nothing checked; 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import backends

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("discover", "tests", "validate", "sweep", "probes")
#: Seconds each step may take (450 in all: the command ends within 8 minutes, with margin).
BUDGETS = {"discover": 40.0, "tests": 150.0, "validate": 85.0, "sweep": 125.0, "probes": 50.0}
#: The test files of step ``tests``, in the order they run, with each one's per-test timeout in
#: seconds (a test's first use of a library pays its import and compilation: torch.compile's is
#: the longest).
TEST_FILES = {
    "tests/test_numba_cuda.py": 45.0,
    "tests/test_gpu_floor.py": 60.0,
    "tests/test_agreement.py": 90.0,
    "tests/test_gpu_capture.py": 60.0,
    "tests/test_gpu_peers.py": 60.0,  # last: host code with stand-ins, the same with or without a GPU
}
#: Test functions of tests/test_agreement.py that step ``tests`` leaves to step ``validate``:
#: the agreement cases (``validate`` runs the same ``harness.agreement.check`` on every one of
#: them and on larger ones; its xor3 case is the 60000-iteration seed run, against the reference,
#: and tests/test_numba_cuda.py checks that run's published digits on every CUDA path). Each is
#: seconds to a minute per GPU backend (~500 us an iteration for cupy on an H100, ../shared/gpu-h100).
#: pytest loads no plugin by itself (the watchdog's is named with -p): the test files use none, and
#: the machine's own (xdist, timeout) cannot change how the tests run.
TESTS_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
AGREEMENT = "tests/test_agreement.py"
AGREEMENT_LEFT_OUT = (
    "tests/test_agreement.py::test_agrees_with_numpy_reference",
)
#: The probes: iterations of one timed run, timed runs (the best is kept), the widths and the
#: batch sizes among which each width's block/grid switch is looked for, sizes taken on each side.
PROBE_ITERATIONS = 100
PROBE_REPEATS = 3
PROBE_WIDTHS = (4, 64)
PROBE_BATCHES = tuple(4 * 2**k for k in range(15))  # 4 .. 65536
PROBE_SIDE = 2
PROBE_COLUMNS = ("backend", "dtype", "batch", "hidden", "auto_path", "forced", "path", "threads", "blocks",
                 "cooperative_cap", "launch_bound", "registers", "spill_bytes", "predicted_us", "measured_us",
                 "iterations", "finite", "error")  # fmt: skip
#: Exit statuses (the module docstring).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
NO_DEVICE = "no CUDA device (no nvidia-smi listing a GPU)"
#: Seconds between two looks at a running child.
POLL = 0.1

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


# --- children: one command, several at once ---------------------------------------------------


@dataclass
class Ran:
    """How a child ended: its exit status (None: killed at the deadline, or never started)."""

    rc: int | None
    seconds: float
    timed_out: bool = False
    started: bool = True


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child's process group (it was started in a session of its own) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # stuck in the kernel: left to the system, reported by the caller
        pass


def _start(argv: list[str], log: Path, env: dict, stdout: Path | None = None) -> subprocess.Popen:
    """``argv`` in a new session (so its whole group can be killed), output to ``log`` (stdout to
    ``stdout`` instead where given)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        if stdout is None:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, env=env,
                                    cwd=ROOT, start_new_session=True)  # fmt: skip
        with open(stdout, "wb") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT,
                                    start_new_session=True)  # fmt: skip


def run_command(argv: list[str], log: Path, deadline: float, env: dict, stdout: Path | None = None) -> Ran:
    """Run ``argv`` until it exits or ``deadline`` (``time.monotonic``) passes, then kill its group."""
    return run_parallel({"": (argv, log, stdout)}, 1, deadline, env)[""]


def run_parallel(jobs: dict[str, tuple[list[str], Path, Path | None]], concurrency: int, deadline: float,
                 env: dict) -> dict[str, Ran]:  # fmt: skip
    """Run the jobs (name -> (argv, log, stdout or None)), ``concurrency`` at a time, in order,
    each until it exits or ``deadline`` passes. A job not started by then is ``started=False``."""
    waiting = list(jobs)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: dict[str, Ran] = {}
    try:
        while waiting or running:
            now = time.monotonic()
            while waiting and len(running) < max(1, concurrency) and now < deadline:
                name = waiting.pop(0)
                argv, log, stdout = jobs[name]
                running[name] = (_start(argv, log, env, stdout), now)
            for name, (proc, began) in list(running.items()):
                rc = proc.poll()
                if rc is not None:
                    done[name] = Ran(rc, time.monotonic() - began)
                    del running[name]
                elif now >= deadline:
                    _kill(proc)
                    done[name] = Ran(None, time.monotonic() - began, timed_out=True)
                    del running[name]
            if now >= deadline:
                done.update({name: Ran(None, 0.0, started=False) for name in waiting})
                waiting = []
            if running:
                time.sleep(POLL)
    finally:  # interrupted: no child outlives the check
        for proc, _ in running.values():
            _kill(proc)
    return done


def _lines(path: Path) -> list[str]:
    """The non-empty lines of a text file, stripped (none if it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def tail(path: Path, lines: int = 1) -> str:
    """The last non-empty lines of a text file ('' if it is missing)."""
    return " | ".join(_lines(path)[-lines:])


# --- the watchdog: pytest, test by test --------------------------------------------------------

PLUGIN = "harness.pytest_watchdog"


@dataclass
class Record:
    nodeid: str
    outcome: str  # passed failed error skipped xfailed xpassed timeout crashed "not run"
    seconds: float
    attempt: int
    detail: str = ""


FAILING = ("failed", "error", "xpassed", "timeout", "crashed")


class Progress:
    """Reads the events a pytest attempt appends to its progress file, as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def events(self) -> Iterator[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # not an event (the plugin writes whole lines only)
                continue


@dataclass
class Watched:
    """What the watched pytest runs did: every selected test's record, in the order collected."""

    records: dict[str, Record]
    attempts: int
    outcome: str  # ok, failed, timeout
    detail: str


def watch_pytest(args: list[str], folder: Path, timeout_for: Callable[[str], float], deadline: float, env: dict,
                 python: str = sys.executable, log: Log = _print) -> Watched:  # fmt: skip
    """Run ``python -m pytest ARGS`` under the watchdog plugin until every selected test has an
    outcome or ``deadline`` passes: a test running longer than ``timeout_for(nodeid)`` seconds,
    or one during which pytest died, gets the group killed and recorded (``timeout``, ``crashed``),
    and pytest starts again with the tests that have an outcome deselected."""
    folder.mkdir(parents=True, exist_ok=True)
    records: dict[str, Record] = {}
    order: list[str] = []
    attempt, ending, problem = 0, "", ""
    while not ending:
        if time.monotonic() >= deadline:
            ending = "budget"
            break
        attempt += 1
        deselect = folder / f"deselect-{attempt}.txt"
        deselect.write_text("".join(f"{nodeid}\n" for nodeid in records))
        progress_path = folder / f"progress-{attempt}.jsonl"
        progress_path.unlink(missing_ok=True)
        argv = [python, "-m", "pytest", "-p", PLUGIN, f"--watchdog-progress={progress_path}",
                f"--watchdog-deselect={deselect}", f"--junitxml={folder / f'junit-{attempt}.xml'}", *args]  # fmt: skip
        proc = _start(argv, folder / f"pytest-{attempt}.log", env)
        progress = Progress(progress_path)
        current: tuple[str, float] | None = None
        try:
            while True:
                rc = proc.poll()
                for event in progress.events():
                    kind = event["event"]
                    if kind == "collected":
                        order += [nodeid for nodeid in event["nodeids"] if nodeid not in order]
                    elif kind == "start":
                        current = (event["nodeid"], time.monotonic())
                    elif kind == "end":
                        nodeid = event["nodeid"]
                        records[nodeid] = Record(
                            nodeid, event["outcome"], event["seconds"], attempt, event["detail"]
                        )
                        _report(records[event["nodeid"]], log)
                        current = None
                    elif kind == "collect_error":
                        nodeid = event["nodeid"]
                        records[nodeid] = Record(nodeid, "error", 0.0, attempt, event["detail"])
                        order.append(event["nodeid"])
                        _report(records[event["nodeid"]], log)
                if rc is not None:
                    break
                now = time.monotonic()
                if current and now - current[1] > timeout_for(current[0]):
                    _kill(proc)
                    limit = timeout_for(current[0])
                    why = f"ran past its {limit:g} s timeout: pytest killed and restarted"
                    records[current[0]] = Record(current[0], "timeout", now - current[1], attempt, why)
                    _report(records[current[0]], log)
                    current = None
                    break
                if now >= deadline:
                    _kill(proc)
                    if current:
                        why = "still running when the step's budget ran out"
                        records[current[0]] = Record(current[0], "timeout", now - current[1], attempt, why)
                        _report(records[current[0]], log)
                    ending = "budget"
                    break
                time.sleep(POLL)
        finally:
            if proc.poll() is None:
                _kill(proc)
        if ending or rc is None:
            continue  # killed: the budget ends the loop; a hung test, the next attempt
        if current:  # pytest died inside a test (a segfault, an os._exit)
            why = f"pytest exited with status {rc} during this test"
            records[current[0]] = Record(current[0], "crashed", time.monotonic() - current[1], attempt, why)
            _report(records[current[0]], log)
            continue
        if rc not in (0, 1, 5):  # 0 passed, 1 some failed, 5 nothing (left) to run: else pytest itself failed
            problem = f"pytest exited with status {rc}: {tail(folder / f'pytest-{attempt}.log')}"
            ending = "pytest"
        else:
            ending = "done"
    why = {"budget": "not run: the step's budget ran out", "pytest": f"not run: {problem}"}.get(
        ending, "not run"
    )
    for nodeid in order:
        if nodeid not in records:
            records[nodeid] = Record(nodeid, "not run", 0.0, attempt, why)
    ordered = {nodeid: records[nodeid] for nodeid in order if nodeid in records}
    ordered.update({k: v for k, v in records.items() if k not in ordered})
    counts: dict[str, int] = {}
    for record in ordered.values():
        counts[record.outcome] = counts.get(record.outcome, 0) + 1
    detail = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no tests"
    detail += f" in {attempt} pytest attempt{'s' if attempt > 1 else ''}"
    if problem:
        detail += f"; {problem}"
    if ending == "budget":
        outcome = "timeout"
    elif problem or any(r.outcome in FAILING for r in ordered.values()):
        outcome = "failed"
    else:
        outcome = "ok"
    return Watched(ordered, attempt, outcome, detail)


def _report(record: Record, log: Log) -> None:
    if record.outcome in FAILING:
        last = (record.detail.strip().splitlines() or [""])[-1][:200]
        log(f"  {record.outcome.upper()} {record.nodeid} ({record.seconds:.1f} s): {last}")


def write_test_records(watched: Watched, folder: Path) -> None:
    """tests/summary.csv (every test) and tests/failures.txt (the failing ones' text)."""
    with open(folder / "summary.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["nodeid", "outcome", "seconds", "attempt", "detail"])
        for r in watched.records.values():
            writer.writerow([r.nodeid, r.outcome, f"{r.seconds:.3f}", r.attempt, r.detail])
    with open(folder / "failures.txt", "w") as fh:
        for r in watched.records.values():
            if r.outcome in FAILING:
                fh.write(
                    f"=== {r.outcome}: {r.nodeid} ({r.seconds:.1f} s, attempt {r.attempt})\n{r.detail}\n\n"
                )


# --- the check: context, steps, summary ---------------------------------------------------------


@dataclass
class StepResult:
    outcome: str  # ok, failed, timeout, skipped
    detail: str = ""
    seconds: float = 0.0
    budget: float = 0.0
    records: list = field(default_factory=list)


@dataclass
class Check:
    """One run of the check: where it writes, what it may spend, what ``discover`` found."""

    out: Path
    budgets: dict[str, float] = field(default_factory=lambda: dict(BUDGETS))
    jobs: int = 4
    test_timeout: float | None = None  # one per-test timeout for every file (None: TEST_FILES')
    python: str = sys.executable
    log: Log = _print
    find_device: Callable[[], str | None] = None  # type: ignore[assignment]
    device: str | None = None
    gpu_backends: list[str] = field(default_factory=list)  # available and running on the GPU here
    left_out: dict[str, str] = field(default_factory=dict)  # GPU-declared backend -> why it is left out

    def __post_init__(self) -> None:
        if self.find_device is None:
            self.find_device = find_device

    def env(self) -> dict:
        """The children's environment: the real device, this repository first on the path."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def find_device(timeout: float = 20.0) -> str | None:
    """nvidia-smi's line for each GPU ('name, driver, memory'), or None where it lists none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return "; ".join(lines) if proc.returncode == 0 and lines else None


def gpu_declared() -> list[str]:
    """Registered backends that run on a GPU where there is one (DEVICE "gpu" or "any")."""
    return [name for name in backends.names() if backends.declared(name, "DEVICE") in ("gpu", "any")]


DISCOVER_CODE = """
import json, sys
import backends
name = sys.argv[1]
why = backends.availability(name)
where = None if why else backends.load(name).runs_on()
print(json.dumps({"name": name, "unavailable": why, "runs_on": where, "library": backends.library(name)}))
"""


def step_discover(check: Check, deadline: float) -> StepResult:
    folder = check.out / "discover"
    names = gpu_declared()
    jobs = {name: ([check.python, "-c", DISCOVER_CODE, name], folder / f"{name}.log", folder / f"{name}.txt")
            for name in names}  # fmt: skip
    ran = run_parallel(jobs, len(jobs), deadline, check.env())
    records, problems = [], []
    for name in names:
        found = None
        try:
            lines = (folder / f"{name}.txt").read_text().splitlines()
            found = json.loads(lines[-1]) if lines else None
        except (OSError, json.JSONDecodeError):
            pass
        r = ran[name]
        if r.timed_out or not r.started:
            why = "availability check still running when the step's budget ran out"
            problems.append(name)
        elif found is None or r.rc != 0:
            why = f"availability check failed (exit {r.rc}): {tail(folder / f'{name}.log')}"
            problems.append(name)
        elif found["unavailable"]:
            why = f"unavailable: {found['unavailable']}"
        elif found["runs_on"] != "gpu":
            why = f"runs on the {found['runs_on']} here"
        else:
            why = None
            check.gpu_backends.append(name)
        if why:
            check.left_out[name] = why
        records.append({"backend": name, "library": (found or {}).get("library", ""), "left_out": why or "",
                        "seconds": round(r.seconds, 2)})  # fmt: skip
    detail = f"{len(check.gpu_backends)} GPU backends: {', '.join(check.gpu_backends) or 'none'}"
    if check.left_out:
        detail += "; left out: " + "; ".join(f"{n} ({why})" for n, why in check.left_out.items())
    if problems:
        return StepResult("failed", detail, records=records)
    if not check.gpu_backends:
        return StepResult(
            "failed", "a CUDA device, but no GPU backend can use it; " + detail, records=records
        )
    return StepResult("ok", detail, records=records)


def pytest_arguments(check: Check) -> list[str]:
    """pytest's arguments for step ``tests`` (the watchdog adds its own)."""
    # No plugin is loaded but the watchdog's (TESTS_ENV): one test at a time, as the watchdog reads
    # them, whatever the machine has installed; -o addopts: the project's addopts name
    # pytest-benchmark's option, which is then unknown.
    args = ["-p", "no:cacheprovider", "-o", "addopts=-ra", "-q", "--continue-on-collection-errors",
            f"--watchdog-backends={','.join(gpu_declared())}"]  # fmt: skip
    args += [f"--watchdog-exclude={nodeid}" for nodeid in AGREEMENT_LEFT_OUT]
    args += [f"--watchdog-backend-only={AGREEMENT}"]
    return args + list(TEST_FILES)


def step_tests(check: Check, deadline: float) -> StepResult:
    folder = check.out / "tests"
    if folder.exists():  # an earlier run's attempts would read as this run's
        for pattern in ("progress-*.jsonl", "deselect-*.txt", "pytest-*.log", "junit-*.xml"):
            for path in folder.glob(pattern):
                path.unlink()

    def timeout_for(nodeid: str) -> float:
        if check.test_timeout is not None:
            return check.test_timeout
        return TEST_FILES.get(nodeid.split("::", 1)[0], max(TEST_FILES.values()))

    env = {**check.env(), **TESTS_ENV}
    watched = watch_pytest(
        pytest_arguments(check), folder, timeout_for, deadline, env, check.python, check.log
    )
    write_test_records(watched, folder)
    records = [asdict(r) for r in watched.records.values() if r.outcome not in ("passed", "skipped")]
    return StepResult(watched.outcome, watched.detail + " (tests/summary.csv)", records=records)


def step_validate(check: Check, deadline: float) -> StepResult:
    if not check.gpu_backends:
        return StepResult("skipped", "no GPU backend available")
    folder = check.out / "validate"
    jobs = {name: ([check.python, "-m", "harness", "validate", "--backends", name], folder / f"{name}.txt", None)
            for name in check.gpu_backends}  # fmt: skip
    ran = run_parallel(jobs, check.jobs, deadline, check.env())
    records, bad = [], []
    for name in check.gpu_backends:
        r, path = ran[name], folder / f"{name}.txt"
        text = path.read_text(errors="replace") if path.exists() else ""
        # a case's row: the backend's name, then the case's label (a note's text is in parentheses)
        cases = [
            line for line in text.splitlines() if line.startswith(name + " ") and line.split()[1][:1] != "("
        ]
        wrong = [" ".join(line.split()) for line in cases if " FAIL (" in line or " error: " in line]
        if not r.started:
            outcome, why = "not run", "the step's budget ran out before it started"
        elif r.timed_out:
            outcome, why = (
                "timeout",
                f"still running when the step's budget ran out ({len(cases)} cases done)",
            )
        elif r.rc == 0:
            outcome, why = "ok", f"{len(cases)} cases, no disagreement"
        else:
            outcome = "failed"
            why = "; ".join(wrong) if wrong else f"exit {r.rc}: {tail(path)}"
        if outcome != "ok":
            bad.append(f"{name}: {outcome}")
        records.append({"backend": name, "outcome": outcome, "seconds": round(r.seconds, 1), "detail": why})
    for record in records:
        if record["outcome"] != "ok":
            check.log(f"  validate {record['backend']}: {record['outcome']}: {record['detail'][:300]}")
    if not bad:
        return StepResult(
            "ok", f"{len(records)} backends agree on every case (validate/*.txt)", records=records
        )
    outcome = "timeout" if all(r["outcome"] in ("timeout", "not run", "ok") for r in records) else "failed"
    return StepResult(outcome, "; ".join(bad) + " (validate/NAME.txt)", records=records)


def _machine_folder(out: Path) -> Path | None:
    """The results folder the sweep wrote (``<out>/<machine>/``, its runs.csv newest)."""
    found = sorted(out.glob("*/runs.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def step_sweep(check: Check, deadline: float) -> StepResult:
    if not check.gpu_backends:
        return StepResult("skipped", "no GPU backend available")
    from harness.orchestrate import uses_cuda

    argv = [check.python, "-m", "harness", "bench", "--preset", "gpu-check", "--backends", ",".join(check.gpu_backends),
            "--out", str(check.out), "--no-plots", "--no-progress"]  # fmt: skip
    log = check.out / "sweep.log"
    r = run_command(argv, log, deadline, check.env())
    folder = _machine_folder(check.out)
    counts: dict[str, int] = {}
    ceilings = False
    if folder is not None:
        with open(folder / "runs.csv", newline="") as fh:
            points = {}
            for row in csv.DictReader(fh):
                points[(row.get("backend"), row.get("dtype"), row.get("batch"), row.get("hidden"))] = row.get(
                    "status", ""
                )
        for status in points.values():
            counts[status] = counts.get(status, 0) + 1
        try:
            machine = json.loads((folder / "machine.json").read_text())
            ceilings = any(str(k).startswith("gpu_") for k in (machine.get("ceilings") or {}))
        except (OSError, json.JSONDecodeError):
            pass
    where = f"{folder.relative_to(check.out)}/runs.csv" if folder else "no runs.csv"
    detail = f"backend-points: {', '.join(f'{n} {s}' for s, n in counts.items()) or 'none'} ({where})"
    wanted_ceilings = uses_cuda(check.gpu_backends)
    if wanted_ceilings and ceilings:
        detail += "; GPU ceilings in machine.json"
    elif wanted_ceilings:  # bench says why in a note
        why = [line for line in _lines(log) if line.startswith("note: GPU ceilings not measured")]
        detail += f"; GPU ceilings NOT measured: {why[-1] if why else 'see sweep.log'}"
    records = [{"status": s, "points": n} for s, n in counts.items()]
    if r.timed_out:
        return StepResult("timeout", detail, records=records)
    if r.rc != 0:
        return StepResult(
            "failed", f"bench exited with status {r.rc}: {tail(log)}; {detail}", records=records
        )
    if wanted_ceilings and not ceilings:
        return StepResult("failed", detail, records=records)
    return StepResult("ok", detail, records=records)


# --- probes: block vs grid around the switch ---------------------------------------------------


def compiler_backends(names: list[str]) -> list[str]:
    """Of ``names``, the backends built on one of the CUDA compilers (``CudaBackend.COMPILER``)."""
    from backends._cuda_compiler import COMPILERS

    def compiler(name: str) -> str | None:
        try:
            return getattr(backends.info(name), "COMPILER", None)
        except (backends.UnknownBackend, ImportError):
            return None

    return [name for name in names if compiler(name) in COMPILERS]


def switch_sizes(plan_module, props: dict, itemsize: int, widths=PROBE_WIDTHS, batches=PROBE_BATCHES,
                 side: int = PROBE_SIDE) -> list[tuple[int, int]]:  # fmt: skip
    """(N, H): for each width, the ``side`` batch sizes on each side of the first one the plan
    (unforced) moves off the block path (the largest ``side`` ones where it never does)."""
    sizes = []
    for H in widths:
        paths = [plan_module.plan((3, H, 1), N, itemsize, props).path for N in batches]
        first = next((i for i, path in enumerate(paths) if path != "block"), len(batches))
        lo, hi = max(0, first - side), min(len(batches), first + side)
        sizes += [(N, H) for N in batches[lo:hi]]
    return sizes


def probe_rows(backend, plan_module, dtypes=("float64", "float32"), iterations: int = PROBE_ITERATIONS,
               repeats: int = PROBE_REPEATS, widths=PROBE_WIDTHS, batches=PROBE_BATCHES) -> Iterator[dict]:  # fmt: skip
    """One row per (dtype, size around the switch, forced path): ``backend``'s own prepare, run
    and fetch, ``describe`` of the prepared state, the best of ``repeats`` timed runs."""
    import numpy as np

    from harness.problems import scaled

    props = backend.device_properties()
    for dtype in dtypes:
        itemsize = np.dtype(dtype).itemsize
        for N, H in switch_sizes(plan_module, props, itemsize, widths, batches):
            problem = scaled(N, H, dtype, seed=0)
            auto = plan_module.plan(problem.sizes, N, itemsize, props).path
            for forced in ("block", "grid"):
                row = {"backend": backend.NAME, "dtype": dtype, "batch": N, "hidden": H, "auto_path": auto,
                       "forced": forced, "iterations": iterations}  # fmt: skip
                plan_module.FORCE_PATH = forced
                try:
                    state = backend.prepare(problem)
                    backend.run(state, 2, 0)  # compiled and warm
                    best = float("inf")
                    for _ in range(repeats):
                        start = time.perf_counter()
                        backend.run(state, iterations, 0)
                        best = min(best, time.perf_counter() - start)
                    row.update(backend.describe(state))
                    row["measured_us"] = best / iterations * 1e6
                    result = backend.fetch(state)
                    row["finite"] = all(bool(np.isfinite(w).all()) for w in result.weights)
                except Exception as exc:  # recorded in its row; the other probes go on
                    first = (str(exc).splitlines() or [""])[0]
                    row["error"] = f"{type(exc).__name__}: {first}"[:300]
                finally:
                    plan_module.FORCE_PATH = None
                yield row


def probe_main(argv: list[str]) -> int:
    """In a child process: the probes of one backend, one JSON row per line on stdout."""
    from backends import _cuda_plan

    backend = backends.load(argv[0])
    for row in probe_rows(backend, _cuda_plan):
        print(json.dumps(row), flush=True)
    return 0


PROBE_CODE = "import sys\nfrom harness.gpu_check import probe_main\nsys.exit(probe_main(sys.argv[1:]))\n"


def probe_table(rows: list[dict]) -> str:
    """The probes as a fixed-width table."""
    head = ("backend", "dtype", "N x H", "auto", "forced", "path", "thr", "blocks", "cap", "bound", "regs", "spill",
            "pred us", "meas us")  # fmt: skip

    def cell(value, fmt="{}") -> str:
        return "-" if value is None or value == "" else fmt.format(value)

    lines = []
    for r in rows:
        if r.get("error"):
            lines.append((r["backend"], r["dtype"], f"{r['batch']}x{r['hidden']}", r.get("auto_path", ""), r["forced"],
                          "error: " + r["error"]))  # fmt: skip
            continue
        bound = r.get("launch_bound")
        lines.append((r["backend"], r["dtype"], f"{r['batch']}x{r['hidden']}", r["auto_path"], r["forced"],
                      cell(r.get("path")), cell(r.get("threads")), cell(r.get("blocks")), cell(r.get("cooperative_cap")),
                      cell(",".join(map(str, bound)) if isinstance(bound, (list, tuple)) else bound),
                      cell(r.get("registers")), cell(r.get("spill_bytes")), cell(r.get("predicted_us"), "{:.2f}"),
                      cell(r.get("measured_us"), "{:.2f}")))  # fmt: skip
    widths = [
        max([len(h)] + [len(str(line[i])) for line in lines if len(line) == len(head)])
        for i, h in enumerate(head)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)) if len(line) == len(head)
                   else "  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1])  # fmt: skip
    return "\n".join(out)


def step_probes(check: Check, deadline: float) -> StepResult:
    from backends._cuda_compiler import COMPILERS

    names = compiler_backends(check.gpu_backends)
    missing = [
        f"{n} ({why})" for n, why in check.left_out.items() if n in compiler_backends(list(check.left_out))
    ]
    if not names:
        return StepResult("skipped", f"no backend of {', '.join(COMPILERS)} available" +
                          (f": {'; '.join(missing)}" if missing else ""))  # fmt: skip
    folder = check.out / "probes"
    rows: list[dict] = []
    ran = {}
    for i, name in enumerate(names):  # one at a time (they time), each with a fair share of what is left
        share = time.monotonic() + (deadline - time.monotonic()) / (len(names) - i)
        ran[name] = run_command([check.python, "-c", PROBE_CODE, name], folder / f"{name}.log", share, check.env(),
                                stdout=folder / f"{name}.jsonl")  # fmt: skip
        path = folder / f"{name}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # the last line of a killed child
                    pass
    with open(check.out / "probes.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROBE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in row.items()}
            )
    table = probe_table(rows)
    (check.out / "probes.txt").write_text(table + "\n")
    check.log(table)
    errors = [r for r in rows if r.get("error")]
    problems = [f"{n}: killed at its share of the budget" for n, r in ran.items() if r.timed_out]
    problems += [
        f"{n}: exit {r.rc}: {tail(folder / f'{n}.log')}" for n, r in ran.items() if r.rc not in (0, None)
    ]
    detail = f"{len(rows)} probes ({len(errors)} with an error) over {', '.join(names)} (probes.csv)"
    if missing:
        detail += f"; left out: {'; '.join(missing)}"
    if problems:
        timed = all(r.timed_out for r in ran.values() if r.rc != 0)
        return StepResult("timeout" if timed else "failed", detail + "; " + "; ".join(problems), records=rows)
    return StepResult("failed" if errors else "ok", detail, records=rows)


# --- the whole check ---------------------------------------------------------------------------

STEP_FUNCTIONS = {"discover": step_discover, "tests": step_tests, "validate": step_validate, "sweep": step_sweep,
                  "probes": step_probes}  # fmt: skip


def environment(check: Check) -> dict:
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    packages = [
        "numpy",
        "pandas",
        "pytest",
        "pytest-xdist",
        "pytest-timeout",
        "pytest-benchmark",
        *backends.packages(),
    ]
    return {
        "python_version": sys.version.split()[0], "executable": check.python, "platform": platform.platform(),
        "gpu": check.device, "packages": {p: version(p) for p in dict.fromkeys(packages)},
        "budgets": check.budgets, "jobs": check.jobs, "test_timeouts": check.test_timeout or TEST_FILES,
    }  # fmt: skip


def summary_table(results: dict[str, StepResult]) -> str:
    lines = [f"{'step':<9} {'outcome':<8} {'seconds':>8} {'budget':>7}  detail"]
    for name, r in results.items():
        lines.append(f"{name:<9} {r.outcome:<8} {r.seconds:>8.1f} {r.budget:>7.0f}  {r.detail}")
    return "\n".join(lines)


def exit_status(check: Check, results: dict[str, StepResult]) -> int:
    if any(r.outcome in ("failed", "timeout", "interrupted") for r in results.values()):
        return EXIT_FAILED
    return EXIT_NO_DEVICE if check.device is None else EXIT_OK


def _write(check: Check, results: dict[str, StepResult], status: int | None) -> None:
    data = {"gpu": check.device, "exit_status": status, "gpu_backends": check.gpu_backends, "left_out": check.left_out,
            "steps": {name: asdict(r) for name, r in results.items()}}  # fmt: skip
    (check.out / "gpu-check.json").write_text(json.dumps(data, indent=1, default=str) + "\n")


def run_check(check: Check, steps=STEPS) -> int:
    """Every step of ``steps`` in order (``discover`` first where validate, sweep or probes is
    among them: they run the backends it finds); returns the exit status."""
    check.out = check.out.resolve()  # the children run in the repository root
    check.out.mkdir(parents=True, exist_ok=True)
    check.device = check.find_device()
    results: dict[str, StepResult] = {}
    needs_backends = {"validate", "sweep", "probes"} & set(steps)
    wanted = [name for name in STEPS if name in steps or (name == "discover" and needs_backends)]
    check.log(f"gpu-check into {check.out}: {check.device or NO_DEVICE}; steps {', '.join(wanted)} "
              f"(at most {sum(check.budgets[n] for n in wanted):.0f} s)")  # fmt: skip
    (check.out / "environment.json").write_text(json.dumps(environment(check), indent=1) + "\n")
    status, spare = None, 0.0
    try:
        for name in wanted:
            budget = check.budgets[name] + spare  # what the steps before left unused
            if check.device is None:
                results[name] = StepResult("skipped", NO_DEVICE, budget=budget)
                continue
            check.log(f"== {name} (budget {budget:.0f} s)")
            start = time.monotonic()
            try:
                result = STEP_FUNCTIONS[name](check, start + budget)
            except Exception as exc:  # a defect of the check itself: recorded, the other steps go on
                result = StepResult("failed", f"the step itself failed: {type(exc).__name__}: {exc}")
            result.seconds, result.budget = time.monotonic() - start, budget
            spare = max(0.0, budget - result.seconds)
            results[name] = result
            check.log(f"== {name}: {result.outcome} in {result.seconds:.0f} s: {result.detail}")
            _write(check, results, None)
        status = exit_status(check, results)
    except KeyboardInterrupt:
        running = next((n for n in wanted if n not in results), None)
        if running and check.device is not None:
            results[running] = StepResult("interrupted", "interrupted (its children were killed)",
                                          budget=check.budgets[running] + spare)  # fmt: skip
        status = EXIT_INTERRUPTED
    table = summary_table(results)
    (check.out / "summary.txt").write_text(table + f"\nexit status {status}\n")
    _write(check, results, status)
    check.log("\n" + table)
    meaning = {EXIT_OK: "every step ok", EXIT_FAILED: "a step failed or timed out",
               EXIT_NO_DEVICE: "nothing checked: " + NO_DEVICE, EXIT_INTERRUPTED: "interrupted"}[status]  # fmt: skip
    check.log(f"exit status {status}: {meaning} (everything under {check.out})")
    return status


# --- command line ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (as the harness's other commands)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _budget(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    if not sep or name not in STEPS:
        raise argparse.ArgumentTypeError(
            f"expected STEP=SECONDS with STEP one of {', '.join(STEPS)}, got {text!r}"
        )
    return name, _positive(seconds)


def _steps(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step(s) {', '.join(unknown) or text!r}; choose from {', '.join(STEPS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m harness.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"),
                        help="output folder (default: $OUT if set, else gpu-check-out)")  # fmt: skip
    parser.add_argument(
        "--steps",
        type=_steps,
        default=list(STEPS),
        help="comma-separated steps (default: all; discover runs with validate, sweep or probes)",
    )
    parser.add_argument(
        "--jobs", type=int, default=4, help="validate this many backends at a time (default 4)"
    )
    parser.add_argument(
        "--test-timeout", type=_positive, help="one per-test timeout in seconds for every test file"
    )
    parser.add_argument(
        "--budget",
        type=_budget,
        action="append",
        default=[],
        help="STEP=SECONDS: another budget for one step",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: not a folder")
    check = Check(args.out, {**BUDGETS, **dict(args.budget)}, args.jobs, args.test_timeout)
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum, frame):  # the children are killed on the way out, as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return run_check(check, args.steps)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
