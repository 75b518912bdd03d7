"""Tidy, append-only results: ``results/<machine>/runs.csv`` plus ``machine.json``.

One row per timed repeat (status ``ok``) or one row per point that did not produce timings
(status ``skipped``/``failed``/``invalid``/``unhealthy``/``timeout``/``crashed``, with a reason).
Rows are appended and flushed to disk one point at a time, each as whole lines, so an interrupted
sweep leaves a valid file holding every finished point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from enum import Enum
from pathlib import Path

COLUMNS = [
    "backend",
    "dtype",
    "batch",
    "hidden",
    "iterations",
    "repeat",
    "seconds",  # wall time of one timed run of `iterations` iterations (device-resident for GPUs)
    "seconds_e2e",  # same run including host<->device copies (equals `seconds` on CPU backends)
    "compile_seconds",  # first call at the point: prepare + one iteration on the timed path + fetch, wall time
    "status",
    "reason",
    "max_rel_error",
    "validated",
    "threads",
    "machine",
    "commit",
    "timestamp",
    "library",  # the library (and version) that ran the loop, e.g. "numba-cuda 0.30.4": a CUDA compiler's row says which
    "device",  # "cpu" or "gpu": what the backend ran on (its module's DEVICE, reported by the worker)
    "cache",  # what that first call built: cold, disk, memory, none or unknown (harness.timing.cache_state)
    "fresh",  # True: the first call was its worker process's first (a fresh process); False: a later point
    "startup_seconds",  # fresh rows: the worker's imports of the backend and its availability check, before that call
]
#: Columns added after the first results were stored, oldest first. A runs.csv whose header is
#: COLUMNS without a tail of these is read with the missing columns empty, and is upgraded (the
#: header and every row padded, rewritten once, atomically) before new rows are appended to it.
ADDED_COLUMNS = ["library", "device", "cache", "fresh", "startup_seconds"]
class Status(str, Enum):
    """A row's status in runs.csv, and of a worker's answer that is not a timing (``harness.timing.Failure``)."""

    OK = "ok"
    SKIPPED = "skipped"  # not run: unavailable, unsupported, over budget or memory
    FAILED = "failed"  # raised, or out of memory
    INVALID = "invalid"  # disagreed with the NumPy reference
    UNHEALTHY = "unhealthy"  # NaN or inf
    TIMEOUT = "timeout"  # no answer in time: worker killed
    CRASHED = "crashed"  # the worker died, or the device faulted

    def __str__(self) -> str:  # as written to runs.csv
        return self.value


STATUSES = tuple(s.value for s in Status)
RUNS = "runs.csv"
MACHINE = "machine.json"


class ResultsError(ValueError):
    """A results file that cannot be used; the message names the file and the problem."""


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows as complete lines in one write, then fsync: a kill leaves no partial line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != COLUMNS:
            if not older_layout(header):
                raise ResultsError(f"{path}: header does not match this version's columns; use another --out")
            upgrade(path, header)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    if new:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    data = buffer.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one O_APPEND write of whole lines
        os.fsync(fd)
    finally:
        os.close(fd)


def older_layout(header: list[str] | None) -> bool:
    """True if ``header`` is this version's columns less a tail of ADDED_COLUMNS."""
    return any(header == COLUMNS[: len(COLUMNS) - k] for k in range(1, len(ADDED_COLUMNS) + 1))


DEVICES = ("cpu", "gpu")
#: The ``cache`` column's values (``harness.timing.cache_state``).
CACHE_STATES = ("cold", "disk", "memory", "none", "unknown")


def nominal_device(backend: str, has_gpu: bool) -> str:
    """The device ``backend`` runs on on a machine with (``has_gpu``) or without an NVIDIA GPU.

    The one place a device is derived rather than reported: for rows written before the ``device``
    column existed, and for rows of a backend that never ran (unavailable). From the registry's
    ``device`` ("cpu", "gpu", or "any": the GPU where there is one, as jax and torch do); "" for
    a name the registry does not know (a plugin).
    """
    import backends

    entry = backends.REGISTRY.get(backend)
    if entry is None:
        return ""
    if entry.device == "any":
        return "gpu" if has_gpu else "cpu"
    return entry.device


def machine_has_gpu(fingerprint: dict) -> bool:
    return bool(isinstance(fingerprint, dict) and fingerprint.get("gpus"))


def fill_device(frame, fingerprint: dict):
    """``frame`` with every empty ``device`` cell derived from the machine's fingerprint (rows
    written before the column existed); reported devices are kept as they are."""
    has_gpu = machine_has_gpu(fingerprint)
    if "device" not in frame.columns:
        frame = frame.assign(device="")
    device = frame["device"].astype(object).where(frame["device"].notna(), "").astype(str)
    empty = device == ""
    if empty.any():
        device = device.where(~empty, frame["backend"].map(lambda b: nominal_device(b, has_gpu)))
    return frame.assign(device=device)


def upgrade(path: Path, header: list[str]) -> None:
    """Rewrite a runs.csv of an older layout with this version's header, rows padded with empty
    values (atomically: a kill leaves the old file or the new one). Lines with the wrong number
    of fields are kept as they are (``read_runs`` reports them)."""
    pad = len(COLUMNS) - len(header)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    with open(path, newline="") as fh:
        lines = fh.read().splitlines()
    for line in lines[1:]:
        fields = next(csv.reader([line]), [])
        if len(fields) == len(header):
            writer.writerow(fields + [""] * pad)
        else:
            buffer.write(line + "\n")
    write_atomic(path, buffer.getvalue())


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_machine(directory: Path, fingerprint: dict) -> None:
    write_atomic(directory / MACHINE, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def read_machine(directory: Path) -> dict:
    path = directory / MACHINE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None


def read_runs(path: Path):
    """Read one runs.csv into a DataFrame; returns (frame, bad_lines) with bad lines reported, not fatal.

    A line is bad when it has the wrong number of fields or a value of the wrong type.
    """
    import pandas as pd

    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None
    lines = text.splitlines()
    if not lines:
        return pd.DataFrame(columns=COLUMNS), []
    header = next(csv.reader([lines[0]]))
    missing = [c for c in COLUMNS if c not in header and c not in ADDED_COLUMNS]
    if missing:
        raise ResultsError(f"{path}: missing columns {', '.join(missing)}")
    absent = [c for c in ADDED_COLUMNS if c not in header]
    good, bad = [], []
    for number, fields in enumerate(csv.reader(lines[1:]), start=2):
        if len(fields) != len(header):
            bad.append(number)
            continue
        row = dict(zip(header, fields))
        row.update(dict.fromkeys(absent, ""))
        try:
            for col in ("batch", "hidden", "iterations", "repeat"):
                row[col] = int(row[col])
            for col in ("seconds", "seconds_e2e", "compile_seconds", "max_rel_error", "startup_seconds"):
                row[col] = float(row[col]) if row[col] != "" else float("nan")
            if row["status"] not in STATUSES:
                raise ValueError(row["status"])
            if row["device"] not in ("", *DEVICES):
                raise ValueError(row["device"])
            if row["cache"] not in ("", *CACHE_STATES) or row["fresh"] not in ("", "True", "False"):
                raise ValueError(row["cache"], row["fresh"])
        except (ValueError, KeyError):
            bad.append(number)
            continue
        row["validated"] = row["validated"] in ("True", "true", "1")
        good.append(row)
    frame = pd.DataFrame(good, columns=[*header, *absent] if good else COLUMNS)
    return frame, bad


def rows_from_pytest_benchmark(data: dict, machine: str) -> list[dict]:
    """Rows of the results table from a pytest-benchmark JSON (``--benchmark-json`` or ``--benchmark-save``).

    Each round becomes one repeat; ``validated`` comes from the agreement the suite recorded.
    """
    from harness.agreement import TOLERANCE

    commit = (data.get("commit_info") or {}).get("id", "unknown")[:12]
    if (data.get("commit_info") or {}).get("dirty"):
        commit += "+dirty"
    rows = []
    for bench in data.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        if not {"backend", "batch", "hidden", "iterations", "dtype"} <= set(info):
            continue  # not one of this suite's benchmarks
        error = info.get("max_rel_error")
        validated = error is not None and error <= TOLERANCE[info["dtype"]]
        for repeat, seconds in enumerate(stats.get("data") or [stats.get("median")]):
            rows.append({
                "backend": info["backend"], "dtype": info["dtype"], "batch": info["batch"], "hidden": info["hidden"],
                "iterations": info["iterations"], "repeat": repeat, "seconds": seconds, "seconds_e2e": "",
                "compile_seconds": "", "status": "ok" if validated else "invalid",
                "reason": "" if validated else "agreement not recorded or above tolerance",
                "max_rel_error": "" if error is None else error, "validated": validated, "threads": "",
                "machine": machine, "commit": commit, "timestamp": data.get("datetime", ""), "library": "", "device": "",
                "cache": "", "fresh": "", "startup_seconds": "",
            })  # fmt: skip
    return rows
