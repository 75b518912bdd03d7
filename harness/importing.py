"""Results measured elsewhere, brought into ``results/<machine>/``: ``python -m harness import-results``.

A source folder holds a ``machine.json`` (the fingerprint of the machine that measured) and one or
more ``runs*.csv`` files in this project's column layout (older layouts are read as such). The
rows go into ``<out>/<machine>/runs.csv``, where ``<machine>`` is the name the fingerprint rule
(``harness.fingerprint.machine_name``) gives that machine.json, appended like a sweep's rows:

* rows are never rewritten; a row already in the target (same point, repeat, commit and
  timestamp) is not appended twice, so importing the same folder again adds nothing;
* the rows are read as ``harness.results.Row`` objects, whatever the source's layout (the one
  migration, ``harness.schema.upgrader``), and appended in the newest;
* an empty ``device`` of a row is derived from the source fingerprint (``results.nominal_device``),
  and an empty ``library`` is the backend's declared package at the version the fingerprint lists
  (empty where it lists none);
* when two source files hold the same point at the same commit (a side-by-side re-run, say), the
  first file in name order supplies it and the other's rows of that point are left out (counted,
  and kept in the verbatim copy below): one point, one run;
* the source's files are copied verbatim into ``<out>/<machine>/imported/<source name>/`` (the
  machine.json and runs*.csv as they were read; of the rest, the regular files of at most
  ``results.RUNS_LIMIT`` bytes: a FIFO, a device or a huge file is named as not copied), and
  machine.json records the import (source, files, rows, a note; merged,
  ``results.write_machine``): the provenance stays with the results.

The source is read with the store's bounds (regular files under ``results.RUNS_LIMIT`` /
``results.MACHINE_LIMIT``, machine.json's fields typed) and checked before anything is written; the
target folder's name is checked (``results.check_machine_name``: nothing outside ``out``); then,
under the target folder's lock (``results.locked``: two imports, or an import and a sweep, one
after the other), the rows already there are read, the new ones appended and machine.json
updated. A bad source is a ``ResultsError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from harness import results
from harness.floor import better_ceilings

KEY = ("backend", "dtype", "batch", "hidden", "repeat", "commit", "timestamp")
POINT = ("backend", "dtype", "batch", "hidden", "commit")


@dataclass
class Imported:
    machine: str
    runs: Path
    appended: int = 0
    already: int = 0  # rows the target already had
    shadowed: dict = field(default_factory=dict)  # file -> rows left out (point supplied by an earlier file)
    bad: dict = field(default_factory=dict)  # file -> bad line numbers
    not_copied: dict = field(default_factory=dict)  # file of the source -> why it was not copied


def folder_name(fingerprint: dict) -> str:
    from harness.fingerprint import machine_name

    try:
        return machine_name(fingerprint["cpu"], fingerprint.get("gpus") or [], int(fingerprint["cores_logical"]))
    except (KeyError, TypeError, ValueError):
        raise results.ResultsError("machine.json lacks 'cpu' or 'cores_logical': cannot name the machine") from None


def _library(backend: str, fingerprint: dict) -> str:
    """'<package> <version>' from the source fingerprint's versions, for rows without a library;
    "" where the fingerprint lists no version of the backend's declared package."""
    import backends

    package = backends.declared(backend, "PACKAGE")
    listed = {**(fingerprint.get("versions") or {}), "python": fingerprint.get("python")}  # the interpreter's too
    if not package or not any(listed.get(dist) for dist in backends.distributions(package)):
        return ""
    return backends.library_of(package, listed.get)


def import_results(source: Path, out: Path, note: str = "", machine: str | None = None,
                   log: results.Log = results._stderr) -> Imported:  # fmt: skip
    source, out = Path(source).resolve(), Path(out)
    if not source.is_dir():
        raise results.ResultsError(f"no results folder at {source}")
    try:
        machine_bytes = results.read_bytes(source / results.MACHINE, results.MACHINE_LIMIT)
    except FileNotFoundError:
        raise results.ResultsError(f"{source}: no {results.MACHINE} (the fingerprint of the machine that measured)") from None
    fingerprint = results.parse_machine(source / results.MACHINE, machine_bytes)
    files = sorted(source.glob("runs*.csv"))
    if not files:
        raise results.ResultsError(f"{source}: no runs*.csv")
    sources = {path: results.read_bytes(path, results.RUNS_LIMIT) for path in files}
    parsed = {path: results.parse_rows(path, data) for path, data in sources.items()}
    machine = machine or folder_name(fingerprint)
    results.check_machine_name(machine)
    target = out / machine
    report = Imported(machine, target / results.RUNS)
    with results.locked(target, log=log):
        if report.runs.exists():  # its torn line moved aside, its layout upgraded, before it is read
            results.prepare(report.runs, log)
        _import(report, source, fingerprint, {source / results.MACHINE: machine_bytes, **sources}, parsed, note, log)
    return report


def _import(report: Imported, source: Path, fingerprint: dict, sources: dict, parsed: dict, note: str, log) -> None:
    """The import proper, under the target folder's lock."""
    target = report.runs.parent
    existing: set[tuple] = set()
    if report.runs.exists():
        existing = {row.key(KEY) for row in results.read_rows(report.runs)[0]}
    has_gpu = results.machine_has_gpu(fingerprint)
    device_of = cache(lambda backend: results.nominal_device(backend, has_gpu))
    library_of = cache(lambda backend: _library(backend, fingerprint))
    rows, seen_points = [], {}
    for path, (stored, bad) in parsed.items():
        if bad:
            report.bad[path.name] = bad
        for row in stored:
            owner = seen_points.setdefault(row.key(POINT), path.name)
            if owner != path.name:
                report.shadowed[path.name] = report.shadowed.get(path.name, 0) + 1
                continue
            key = row.key(KEY)
            if key in existing:
                report.already += 1
                continue
            existing.add(key)
            try:
                rows.append(replace(row, device=row.device or device_of(row.backend),
                                    library=row.library or library_of(row.backend)))  # fmt: skip
            except ValueError as exc:  # a derived library name breaking a rule (too long)
                raise results.ResultsError(f"{path}: a row that does not fit the schema ({exc})") from None
    current = results.read_machine(target)

    # Checked; now written: the copy (of the bytes read), the rows (one append), then machine.json.
    copy = target / "imported" / source.name
    copy.mkdir(parents=True, exist_ok=True)
    for path, data in sources.items():
        results.write_atomic(copy / path.name, data)
    for path in sorted(source.iterdir()):  # the rest of the provenance (a README, logs): regular files only
        if path in sources or path.name.startswith(".") or path.is_dir():
            continue
        try:
            results.write_atomic(copy / path.name, results.read_bytes(path, results.RUNS_LIMIT))
        except FileNotFoundError:
            continue
        except results.ResultsError as exc:  # a FIFO, a device, a folder, a huge file: not copied, said so
            report.not_copied[path.name] = str(exc).removeprefix(f"{path}: ")
    if rows:
        results.append_rows(report.runs, rows, log)
    report.appended = len(rows)
    current = current or dict(fingerprint)
    # The ceilings are the machine's: of the folder's and the source's measurements of each, the
    # better is kept (as ``make bench`` keeps the better of its two), and those the folder lacks
    # (say, measured by a newer harness on the source) come with the import.
    ceilings = better_ceilings(current.get("ceilings", {}), fingerprint.get("ceilings", {}))
    if ceilings:
        current = {**current, "ceilings": ceilings}
    imports = list(current.get("imported", []))
    if report.appended or not any(i.get("source") == source.name for i in imports):
        imports.append({
            "source": source.name, "copy": str(copy.relative_to(target)), "files": [p.name for p in parsed],
            "rows_appended": report.appended, "rows_left_out": report.shadowed, "note": note,
        })  # fmt: skip
    results.write_machine(target, {**current, "imported": imports}, log)


def describe(report: Imported) -> str:
    parts = [f"{report.appended} rows appended to {report.runs}"]
    if report.already:
        parts.append(f"{report.already} already there")
    for name, count in report.shadowed.items():
        parts.append(f"{count} rows of {name} left out (points supplied by an earlier file; kept in imported/)")
    for name, bad in report.bad.items():
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        parts.append(f"{len(bad)} bad line(s) of {name} ignored (line {shown})")
    for name, why in report.not_copied.items():
        parts.append(f"{name} not copied ({why})")
    return "; ".join(parts)
