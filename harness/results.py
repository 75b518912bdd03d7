"""Tidy, append-only results: ``results/<machine>/runs.csv`` plus ``machine.json``: the store.

One row per timed repeat (status ``ok``) or one row per point that did not produce timings
(status ``skipped``/``failed``/``invalid``/``unhealthy``/``timeout``/``crashed``, with a reason).
What a row is, its columns, types and layouts, is ``harness.schema.Row`` (re-exported here); this
module is the one place that writes and reads it:

* ``append_rows``: rows appended as whole lines in one ``O_APPEND`` write, then fsync, so an
  interrupted sweep leaves a valid file holding every finished point; a file of an older layout
  is first upgraded by ``migrate``;
* ``read_rows`` / ``read_runs``: a file of any layout, as ``Row`` objects / a typed DataFrame,
  with its bad lines reported (line numbers), not fatal;
* ``migrate``: the one migration of a folder: runs.csv rewritten in the newest layout
  (atomically, every line kept), machine.json's ``schema_version`` stamped;
* ``write_machine`` / ``read_machine``: the fingerprint, stamped with the ``schema_version`` of
  the folder's runs.csv.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.schema import (  # noqa: F401  (re-exported: the schema's names, read where the store is)
    CACHE_STATES,
    DEVICES,
    LAYOUTS,
    NUMERIC,
    SCHEMA_VERSION,
    STATUSES,
    Row,
    Status,
    frame,
    layout_version,
    missing_columns,
    upgrader,
)
from harness.schema import COLUMNS as _COLUMNS

COLUMNS = list(_COLUMNS)
#: Columns the first layout lacks (added since; read as empty from an older file).
ADDED_COLUMNS = [c for c in COLUMNS if c not in LAYOUTS[0]]
RUNS = "runs.csv"
MACHINE = "machine.json"
#: machine.json's record of the layout of its folder's runs.csv (harness.schema.LAYOUTS).
SCHEMA_KEY = "schema_version"


class ResultsError(ValueError):
    """A results file that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- writing


def append_rows(path: Path, rows: Iterable[Row | Mapping]) -> None:
    """Append rows (``Row`` objects, or mappings of column -> value) as complete lines in one write,
    then fsync: a kill leaves no partial line. An older layout is migrated first; a file of any
    other header, or a folder of a newer schema, is refused (ResultsError), nothing written."""
    path = Path(path)
    try:
        rows = [row if isinstance(row, Row) else Row.from_values(row) for row in rows]
    except (TypeError, ValueError) as exc:
        raise ResultsError(f"{path}: a row that does not fit the schema ({exc})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        version = check_appendable(path)
        if version < SCHEMA_VERSION:
            migrate(path)
    data = _encode(rows, header=new).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one O_APPEND write of whole lines
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        _stamp(path.parent, SCHEMA_VERSION)


def _encode(rows: Iterable[Row], header: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(row.cells() for row in rows)
    return buffer.getvalue()


def _header(path: Path) -> list[str] | None:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), None)


def check_appendable(path: Path) -> int:
    """The schema version of an existing runs.csv, which rows can be appended to (after ``migrate``);
    ResultsError for a header of no known layout, or a folder whose machine.json says a newer
    harness wrote it."""
    version = layout_version(_header(path))
    if version is None:
        raise ResultsError(f"{path}: header does not match this version's columns; use another --out")
    recorded = _recorded_version(path.parent)
    if recorded is not None and recorded > SCHEMA_VERSION:
        raise ResultsError(f"{path.parent / MACHINE}: schema_version {recorded} is newer than this harness's "
                           f"({SCHEMA_VERSION}); update the harness to add to it")  # fmt: skip
    return version


def migrate(path: Path) -> tuple[int, int]:
    """The one migration of a results folder: its runs.csv (``path``) of an older layout rewritten
    with the newest header, each line's cells re-laid by ``harness.schema.upgrader`` (values
    verbatim; a line with the wrong number of fields is kept as it is, and ``read_runs`` still
    reports it), atomically: a kill leaves the old file or the new one. Then the ``schema_version``
    of machine.json beside it (when there is one) is stamped. Returns (version before, after)."""
    path = Path(path)
    version = check_appendable(path)
    if version < SCHEMA_VERSION:
        with open(path, newline="") as fh:
            lines = fh.read().splitlines()
        upgrade = upgrader(LAYOUTS[version - 1])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for line in lines[1:]:
            try:
                writer.writerow(upgrade(next(csv.reader([line]), [])))
            except ValueError:
                buffer.write(line + "\n")
        write_atomic(path, buffer.getvalue())
    _stamp(path.parent, SCHEMA_VERSION)
    return version, SCHEMA_VERSION


def folder_version(directory: Path) -> int | None:
    """The schema version of ``directory``'s runs.csv, from its header (the newest for a folder
    without one: its first rows will be written in it); None for a header of no known layout."""
    path = Path(directory) / RUNS
    if not path.exists() or path.stat().st_size == 0:
        return SCHEMA_VERSION
    return layout_version(_header(path))


def _recorded_version(directory: Path) -> int | None:
    try:
        recorded = json.loads((Path(directory) / MACHINE).read_text()).get(SCHEMA_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, int) else None


def _stamp(directory: Path, version: int) -> None:
    """Record ``version`` in the folder's machine.json, if it has a readable one that says otherwise."""
    path = Path(directory) / MACHINE
    try:
        fingerprint = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(fingerprint, dict) and fingerprint.get(SCHEMA_KEY) != version:
        _write_json(path, {**fingerprint, SCHEMA_KEY: version})


# ----------------------------------------------------------------------------- devices


def nominal_device(backend: str, has_gpu: bool) -> str:
    """The device ``backend`` runs on on a machine with (``has_gpu``) or without an NVIDIA GPU.

    The one place a device is derived rather than reported (a worker reports ``runs_on()``): for
    rows written before the ``device`` column existed, and for rows of a backend that never ran
    (unavailable). From the backend's declared ``DEVICE`` ("cpu", "gpu", or "any": the GPU where
    there is one, as jax and torch do); "" for a name not registered here (a plugin elsewhere).
    """
    import backends

    declared = backends.declared(backend, "DEVICE", None)
    if declared == "any":
        return "gpu" if has_gpu else "cpu"
    return declared if declared in DEVICES else ""


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
        nominal = {b: nominal_device(b, has_gpu) for b in frame.loc[empty, "backend"].unique()}
        device = device.where(~empty, frame["backend"].map(nominal))
    return frame.assign(device=device)


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


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_machine(directory: Path, fingerprint: dict) -> None:
    """Write the fingerprint, with the ``schema_version`` of the folder's runs.csv."""
    directory = Path(directory)
    version = folder_version(directory)
    _write_json(directory / MACHINE, {**fingerprint, **({SCHEMA_KEY: version} if version else {})})


def read_machine(directory: Path) -> dict:
    path = directory / MACHINE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None


def read_rows(path: Path) -> tuple[list[Row], list[int]]:
    """Every row of one runs.csv of any layout (``harness.schema.upgrader``), and the numbers of its
    bad lines (the wrong number of fields, or a value that does not parse): reported, not fatal.
    ResultsError for a file that is not a runs.csv (not text, or lacking the first layout's columns)."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None
    lines = text.splitlines()
    if not lines:
        return [], []
    header = next(csv.reader(lines[:1]), [])
    missing = missing_columns(header)
    if missing:
        raise ResultsError(f"{path}: missing columns {', '.join(missing)}")
    upgrade = upgrader(header)
    rows, bad = [], []
    for number, line in enumerate(lines[1:], start=2):  # one row per line: numbers stay line numbers
        try:
            rows.append(Row.from_cells(upgrade(next(csv.reader([line]), []))))
        except (ValueError, TypeError, csv.Error):
            bad.append(number)
    return rows, bad


def read_runs(path: Path):
    """Read one runs.csv into a DataFrame typed by the schema (``harness.schema.frame``, the newest
    layout's columns whatever the file's); returns (frame, bad line numbers)."""
    rows, bad = read_rows(path)
    return frame(rows), bad


def rows_from_pytest_benchmark(data: dict, machine: str) -> list[Row]:
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
            rows.append(Row(
                backend=info["backend"], dtype=info["dtype"], batch=info["batch"], hidden=info["hidden"],
                iterations=info["iterations"], repeat=repeat, seconds=seconds,
                status=Status.OK if validated else Status.INVALID,
                reason="" if validated else "agreement not recorded or above tolerance",
                max_rel_error=error, validated=validated, machine=machine, commit=commit,
                timestamp=data.get("datetime", ""),
            ))  # fmt: skip
    return rows
