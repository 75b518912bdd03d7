"""``make bench`` end to end, outside the CLI: ceilings, fingerprint, sweep, ceilings again, plots.

``harness.cli`` parses and checks the arguments, then calls ``bench_and_report``; this module
owns the order of the stages and what each writes:

1. the CPU ceilings of the floor (``harness.floor``), and the GPU ceilings (``harness.gpu_floor``,
   in a child process) when a CUDA backend is in the sweep and the machine has an NVIDIA GPU;
2. ``machine.json``: the fingerprint with those ceilings, merged into the folder's (its imports,
   notes and earlier fingerprints kept: ``harness.results.write_machine``);
3. the sweep (``harness.bench``), appending to ``runs.csv``;
4. the CPU ceilings measured again, the better of the two kept (the machine may have been busy);
5. every figure and generated text (``harness.report.draw_repository``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import bench, results

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def gpu_ceilings(log: Log = _stderr) -> dict:
    """The GPU ceilings (harness.gpu_floor), measured in a child process: this process imports no
    backend library. Nothing where there is no NVIDIA GPU or it cannot be measured (with a note)."""
    if not shutil.which("nvidia-smi"):
        log("note: GPU ceilings not measured (no nvidia-smi: no NVIDIA GPU here)")
        return {}
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.gpu_floor", "--json"], capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    log(f"note: GPU ceilings not measured ({why})")
    return {}


def uses_cuda(names) -> bool:
    """A Numba GPU backend among ``names``: the GPU floor prices its points."""
    import backends

    return bool(backends.of_family("numba", "gpu", among=names))


def bench_and_report(plan: bench.Plan, preset_name: str, threads_requested: int, plots: bool = True,
                     progress: bool = True, log: Log = _stderr, ceilings: bool = True) -> Path:  # fmt: skip
    """Run every stage for ``plan``; returns the runs.csv written. OSError: results not writable.
    ``ceilings=False`` (``--no-ceilings``): none measured; machine.json keeps the folder's own for
    the same fingerprint (``results.merge_machine``)."""
    from harness.fingerprint import fingerprint

    directory = plan.out / plan.machine
    extra = {"machine": plan.machine, "preset": preset_name, "threads_requested": threads_requested}
    seconds = 1.0 if preset_name == "quick" else 3.0  # for each measurement of the ceilings
    measure_ceilings = None
    if ceilings:
        try:
            from harness.floor import better_ceilings, measure_ceilings

            extra["ceilings"] = measure_ceilings(seconds_budget=seconds)
        except ImportError as exc:  # also from inside measure_ceilings: no second measurement then
            measure_ceilings = None
            log(f"note: floor ceilings not measured ({exc})")
        if uses_cuda(plan.backends):
            extra["ceilings"] = {**extra.get("ceilings", {}), **gpu_ceilings(log)}
    else:
        log("note: floor ceilings not measured (--no-ceilings)")
    info = fingerprint(extra)
    results.write_machine(directory, info, log)
    plan.has_gpu = results.machine_has_gpu(info)
    start = time.monotonic()
    path = bench.sweep(plan, log=log, progress=progress)
    if measure_ceilings:  # measured again after the sweep; the better of the two is the ceiling
        info["ceilings"] = better_ceilings(info["ceilings"], measure_ceilings(seconds_budget=seconds))
        results.write_machine(directory, info, log)
    print(f"results: {path} ({time.monotonic() - start:.0f} s)")
    if plots:
        from harness.report import draw_repository

        draw_repository(plan.out)
    return path

