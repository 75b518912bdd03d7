"""What each ``python -m harness`` command does, once ``harness.cli`` has parsed its arguments:
checks that need more than the argument's own text (a backend that exists and runs here, memory
for a problem, results that can be read), then the work, delegated to the stage it belongs to
(``harness.orchestrate`` for ``bench``, ``harness.report`` for ``plot``, ...).

A bad input raises ``UsageError`` (one line on stderr, exit status 2, nothing written).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import backends
from backends.base import DTYPES, UnsupportedProblem, logged_iterations, train

#: Most iterations of one ``run`` (2^31 - 1, far more than any benchmark run needs) and most
#: logged losses (the loss buffer is allocated before the loop starts).
MAX_RUN_ITERATIONS = (1 << 31) - 1
MAX_LOGGED = 1 << 24
DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "results"


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


#: Thread-count variables the libraries read at import, in a worker: each must be a positive integer
#: (OMP_NUM_THREADS: a comma-separated list of them, one per nesting level).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")  # fmt: skip
#: Largest pytest-benchmark JSON import-benchmark reads.
MAX_BENCHMARK_JSON = 256 << 20


def _check_machine_name(machine: str) -> None:
    """A results folder name: letters, digits, '.', '-' and '_' (no path, no traversal)."""
    from harness import results

    try:
        results.check_machine_name(machine)
    except results.ResultsError as exc:
        raise UsageError(f"--machine: {exc}") from None


def _check_thread_variables() -> None:
    """Every thread-count variable set is usable: else a worker would fail (or warn and guess) at
    every point; refused before any starts."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name)
        if value is None:
            continue
        parts = value.split(",") if name == "OMP_NUM_THREADS" else [value]
        if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            raise UsageError(f"environment variable {name}={value!r}: not a positive integer")


def cmd_list(args) -> int:
    from harness.bench import resolve_backends

    try:
        names = resolve_backends(args.backends)
    except backends.UnknownBackend as exc:
        raise UsageError(str(exc)) from None
    width = max(map(len, names))
    for name in names:
        why = backends.availability(name)
        state = "available" if why is None else f"unavailable: {why}"
        print(f"{name:<{width}}  {state:<40}  {backends.declared(name, 'SUMMARY', '')}")
    return 0


def _require(name: str):
    if name not in backends.REGISTRY:
        raise UsageError(str(backends.UnknownBackend(name)))
    why = backends.availability(name)
    if why:
        raise UsageError(f"backend {name!r} is not available here: {why}")
    return backends.load(name)


def cmd_run(args) -> int:
    from harness.problems import SEED_DEFAULTS, scaled

    backend = _require(args.backend)
    if args.problem == "scaled":
        try:
            problem = scaled(args.batch, args.hidden, args.dtype, args.seed)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        iterations, log_every = 1000, 100
    else:
        build, iterations, log_every = SEED_DEFAULTS[args.problem]
        problem = build().astype(args.dtype)
    iterations = args.iterations or iterations
    log_every = log_every if args.log_every is None else args.log_every
    if iterations > MAX_RUN_ITERATIONS:
        raise UsageError(f"--iterations {iterations}: at most {MAX_RUN_ITERATIONS}")
    logged = len(logged_iterations(iterations, log_every))
    if logged > MAX_LOGGED:
        raise UsageError(f"--log-every {log_every} would log {logged} losses (at most {MAX_LOGGED}); log less often")
    _admit_memory(args.backend, problem)
    from harness.timing import first_call

    try:  # the whole run is its first call: timed and counted as the sweep times a point's first call
        result, seconds, cache = first_call(backend, lambda: train(backend, problem, iterations, log_every))
    except UnsupportedProblem as exc:
        raise UsageError(f"{args.backend}: {exc}") from None
    trace = list(zip(logged_iterations(iterations, log_every), result.losses.tolist()))
    if args.json:
        print(json.dumps({
            "backend": args.backend, "problem": args.problem, "dtype": args.dtype, "iterations": iterations,
            "losses": [[i, loss] for i, loss in trace], "weights": [w.tolist() for w in result.weights],
            "seconds": seconds, "cache": cache,
        }))  # fmt: skip
    else:
        for i, loss in trace:
            print(f"{i} {loss!r}")
        built = {"cold": "including compilation", "disk": "including loading compiled code from the disk cache",
                 "none": "nothing to compile", "unknown": "including any compilation"}.get(cache, cache)  # fmt: skip
        print(f"elapsed {seconds:.3f} s ({args.backend}, {args.problem}, {args.dtype}, {iterations} iterations, "
              f"{built}; cache: {cache})")  # fmt: skip
    return 0


def _admit_memory(backend: str, problem) -> None:
    """Refuse a problem that would not fit in the memory available now (the sweep's admission rule)."""
    from harness.plan import memory_refusal

    why = memory_refusal(backend, problem.dtype, problem.batch, max(problem.sizes))
    if why:
        raise UsageError(f"{backend} at N={problem.batch}, H={max(problem.sizes)} ({problem.dtype}) {why}")


def cmd_validate(args) -> int:
    from harness.agreement import TOLERANCE, check
    from harness.problems import validation_cases

    requested = args.backends
    names = requested or backends.names()
    for name in names:
        if requested:
            _require(name)
    failures = 0
    print(f"{'backend':<15} {'case':<40} {'max rel error':>13}  verdict")
    for name in names:
        why = backends.availability(name)
        if why:
            print(f"{name:<15} {'(all)':<40} {'':>13}  unavailable: {why}")
            continue
        backend = backends.load(name)
        cases = validation_cases(quick=args.quick or backend.SIMULATED)
        if backend.SIMULATED:
            cases = [c for c in cases if c.iterations <= 2000 and c.problem.batch * max(c.problem.sizes) <= 1024]
            print(f"{name:<15} (CUDA simulator: long and large cases left out; run on a GPU for the full table)")
        for case in cases:
            v = check(name, case, backend)
            error = "" if v.error is None else f"{v.error:.2e}"
            verdict = {"ok": f"ok (<= {TOLERANCE[v.dtype]:g})", "FAIL": f"FAIL (> {TOLERANCE[v.dtype]:g})"}.get(
                v.status, f"{v.status}: {v.detail}"
            )
            failures += v.status in ("FAIL", "error")
            print(f"{name:<15} {v.case:<40} {error:>13}  {verdict}", flush=True)
    print(f"{failures} disagreement(s)" if failures else "all available backends agree")
    return 1 if failures else 0


def cmd_bench(args) -> int:
    from harness import bench, results
    from harness.fingerprint import machine_name
    from harness.plan import PRESETS

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    for dtype in args.dtype or ():
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    try:
        names = bench.resolve_backends(args.backends)
    except backends.UnknownBackend as exc:
        raise UsageError(str(exc)) from None
    from harness.problems import MAX_BATCH, MAX_WIDTH

    for label, values, high in (("batch", args.batch, MAX_BATCH), ("hidden", args.hidden, MAX_WIDTH)):
        if values and max(values) > high:
            raise UsageError(f"--{label} {max(values)} is larger than the supported {high}")
    for name in names:  # a plugin taking a built-in's name would store its timings under that name
        if name in backends.NAMES and backends.REGISTRY[name] != backends.module_name(name):
            raise UsageError(f"{backends.PLUGIN_VARIABLE} replaces the built-in backend {name!r} with "
                             f"{backends.REGISTRY[name]!r}: its rows would pass for {name}'s; give the plugin its own name")  # fmt: skip
    for name in (n for n in names if n not in backends.NAMES):  # a plugin (NNBENCH_PLUGINS) whose module
        try:  # is missing or broken: refused before any worker starts
            backends.info(name)
        except ImportError as exc:
            raise UsageError(f"backend {name!r}: its module cannot be loaded ({exc})") from None
    _check_thread_variables()
    cpus = len(os.sched_getaffinity(0))
    if args.threads and args.threads > cpus:
        raise UsageError(f"--threads {args.threads}: this process may run on {cpus} CPUs")
    machine = args.machine or machine_name()
    _check_machine_name(machine)
    directory = args.out / machine
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create results folder {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UsageError(f"results folder {directory} is not writable")
    try:
        with results.locked(directory):  # one writer per folder, from the checks to the last row
            _bench_locked(args, names, machine, directory)
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _bench_locked(args, names: list[str], machine: str, directory: Path) -> None:
    """``bench`` once the folder's lock is held: the folder's files checked (a torn last line
    moved aside, an older layout upgraded), then the sweep."""
    from harness import results
    from harness.plan import PRESETS, Plan, custom_preset

    runs = directory / results.RUNS
    try:
        if os.path.lexists(runs):
            results.read_runs(runs)
            results.prepare(runs)
    except results.ResultsError as exc:
        raise UsageError(f"{exc}; refusing to append (choose another --out or --machine)") from None
    except OSError as exc:
        raise UsageError(f"{runs}: cannot be read ({exc.strerror or exc}); refusing to append") from None
    try:
        results.read_machine(directory)
    except results.ResultsError as exc:
        raise UsageError(f"{exc}; fix or remove it first") from None
    from harness.orchestrate import bench_and_report

    preset = custom_preset(PRESETS[args.preset], args.batch, args.hidden, args.dtype)
    plan = Plan(preset, names, args.out, machine, threads=args.threads or os.cpu_count(), resume=not args.fresh)
    try:
        bench_and_report(plan, args.preset, args.threads or os.cpu_count(), plots=not args.no_plots,
                         progress=not args.no_progress, ceilings=not args.no_ceilings)  # fmt: skip
    except OSError as exc:  # disk full, folder removed under us: finished points are already on disk
        raise UsageError(f"cannot write results under {directory}: {exc.strerror or exc}") from None
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None


def cmd_plot(args) -> int:
    from harness import results

    if not args.results.is_dir():
        raise UsageError(f"no results folder at {args.results}")
    try:
        from harness.report import draw_repository

        draw_repository(args.results)
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_floor(args) -> int:
    from harness.floor import floor_seconds, measure_ceilings

    ceilings = measure_ceilings()
    print(json.dumps(ceilings, indent=1))
    print(f"floor, seconds per iteration ({args.dtype}); rows: batch, columns: hidden")
    print("batch    " + "".join(f"{h:>11}" for h in args.hidden))
    for n in args.batch:
        print(f"{n:<9}" + "".join(f"{floor_seconds(n, h, args.dtype, ceilings):>11.3g}" for h in args.hidden))
    from harness.orchestrate import gpu_ceilings

    gpu = gpu_ceilings()  # measured in a child process where there is an NVIDIA GPU; else a note
    if gpu:
        from harness.gpu_floor import gpu_floor_seconds

        print(json.dumps(gpu, indent=1))
        print(f"GPU floor, seconds per iteration ({args.dtype}); rows: batch, columns: hidden")
        print("batch    " + "".join(f"{h:>11}" for h in args.hidden))
        for n in args.batch:
            print(f"{n:<9}" + "".join(f"{gpu_floor_seconds(n, h, args.dtype, gpu):>11.3g}" for h in args.hidden))
    return 0


def cmd_import(args) -> int:
    from harness import results
    from harness.fingerprint import machine_name

    machine = args.machine or machine_name()
    _check_machine_name(machine)
    try:
        text = results.read_bytes(args.file, MAX_BENCHMARK_JSON).decode("utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise UsageError(f"cannot read {args.file}: no such file") from None
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{args.file}: not a pytest-benchmark JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise UsageError(f"{args.file}: not a pytest-benchmark JSON (no 'benchmarks' key)")
    from harness.importing import KEY

    runs = args.out / machine / results.RUNS
    try:
        rows = results.rows_from_pytest_benchmark(data, machine)
        with results.locked(runs.parent):  # the rows already there read under the lock they are appended under
            if runs.exists():
                results.prepare(runs)
                existing = {row.key(KEY) for row in results.read_rows(runs)[0]}
                new = [row for row in rows if row.key(KEY) not in existing]
            else:
                new = rows
            if new:
                results.append_rows(runs, new)
    except results.ResultsError as exc:
        raise UsageError(f"{args.file}: {exc}" if str(exc).startswith("not a pytest") else str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {runs}: {exc.strerror or exc}") from None
    already = f"; {len(rows) - len(new)} already there" if len(new) < len(rows) else ""
    print(f"{len(new)} rows appended to {runs}{already}")
    return 0


def cmd_import_results(args) -> int:
    from harness import results
    from harness.importing import describe, import_results

    if args.machine:
        _check_machine_name(args.machine)
    try:
        report = import_results(args.source, args.out, args.note, args.machine)
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot import {args.source}: {exc.strerror or exc}") from None
    print(describe(report))
    return 0


COMMANDS = {"list": cmd_list, "import-benchmark": cmd_import, "import-results": cmd_import_results, "run": cmd_run, "validate": cmd_validate, "bench": cmd_bench, "plot": cmd_plot,
            "floor": cmd_floor}  # fmt: skip
