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
* the source files are copied verbatim into ``<out>/<machine>/imported/<source name>/`` and
  machine.json records the import (source, files, rows, a note): the provenance stays with the
  results.

Everything is read and checked before anything is written; a bad source is a ``ResultsError``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from harness import results

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


def import_results(source: Path, out: Path, note: str = "", machine: str | None = None) -> Imported:
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise results.ResultsError(f"no results folder at {source}")
    if not (source / results.MACHINE).is_file():
        raise results.ResultsError(f"{source}: no {results.MACHINE} (the fingerprint of the machine that measured)")
    fingerprint = results.read_machine(source)
    if not isinstance(fingerprint, dict):
        raise results.ResultsError(f"{source / results.MACHINE}: not a JSON object")
    files = sorted(source.glob("runs*.csv"))
    if not files:
        raise results.ResultsError(f"{source}: no runs*.csv")
    machine = machine or folder_name(fingerprint)
    target = out / machine
    report = Imported(machine, target / results.RUNS)

    existing: set[tuple] = set()
    if report.runs.exists():
        existing = {row.key(KEY) for row in results.read_rows(report.runs)[0]}
    has_gpu = results.machine_has_gpu(fingerprint)
    device_of = cache(lambda backend: results.nominal_device(backend, has_gpu))
    library_of = cache(lambda backend: _library(backend, fingerprint))
    rows, seen_points = [], {}
    for path in files:
        stored, bad = results.read_rows(path)
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
            rows.append(replace(row, device=row.device or device_of(row.backend),
                                library=row.library or library_of(row.backend)))  # fmt: skip
    if report.runs.exists():
        results.check_appendable(report.runs)

    # Checked; now written: the copy, the rows (one append), then machine.json (atomic).
    copy = target / "imported" / source.name
    copy.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copyfile(path, copy / path.name)
    if rows:
        results.append_rows(report.runs, rows)
    report.appended = len(rows)
    current = results.read_machine(target) if (target / results.MACHINE).exists() else dict(fingerprint)
    imports = list(current.get("imported", []))
    if report.appended or not any(i.get("source") == source.name for i in imports):
        imports.append({
            "source": source.name, "copy": str(copy.relative_to(target)), "files": [p.name for p in files],
            "rows_appended": report.appended, "rows_left_out": report.shadowed, "note": note,
        })  # fmt: skip
    results.write_machine(target, {**current, "imported": imports})
    return report


def describe(report: Imported) -> str:
    parts = [f"{report.appended} rows appended to {report.runs}"]
    if report.already:
        parts.append(f"{report.already} already there")
    for name, count in report.shadowed.items():
        parts.append(f"{count} rows of {name} left out (points supplied by an earlier file; kept in imported/)")
    for name, bad in report.bad.items():
        parts.append(f"{len(bad)} bad line(s) of {name} ignored")
    return "; ".join(parts)
