"""The results store and its one schema: ``Row`` round-trips every column type; runs.csv of every
layout ever written is read, and upgraded (atomically, nothing lost) before rows of this version
are appended to it; machine.json records the schema version; the committed results/ folders
(three older layouts) migrate, read, plot-load and import."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from harness import importing, results, schema
from harness.results import (
    COLUMNS,
    LAYOUTS,
    SCHEMA_VERSION,
    ResultsError,
    Row,
    Status,
    append_rows,
    migrate,
    read_rows,
    read_runs,
)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = {"xeon-2.80ghz-2c": 1, "xeon-16c-h100": 3, "xeon-2c": 5}  # folder -> its runs.csv's layout


def old_row(**extra) -> dict:
    row = dict(backend="numpy", dtype="float64", batch=4, hidden=4, iterations=10, repeat=0, seconds=0.5,
               seconds_e2e=0.5, compile_seconds=0.1, status="ok", reason="", max_rel_error=0.0, validated=True,
               threads=2, machine="m", commit="abc", timestamp="t")  # fmt: skip
    row.update(extra)
    return row


def write_layout(path, version: int, rows, extra_lines=()) -> tuple[str, ...]:
    header = LAYOUTS[version - 1]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        for line in extra_lines:
            fh.write(line + "\n")
    return header


# ----------------------------------------------------------------------------- the schema


def test_the_columns_are_the_row_fields_in_order(tmp_path):
    assert COLUMNS == [f.name for f in fields(Row)] and LAYOUTS[-1] == tuple(COLUMNS)
    assert SCHEMA_VERSION == len(LAYOUTS) == 5
    assert [len(layout) for layout in LAYOUTS] == [17, 18, 19, 21, 22]
    assert all(layout == LAYOUTS[-1][: len(layout)] for layout in LAYOUTS)  # each added a tail so far
    assert set(schema.DOCS) == set(COLUMNS) and all(schema.DOCS.values())
    (tmp_path / "empty.csv").write_text("")
    frame, _ = read_runs(tmp_path / "empty.csv")
    assert list(frame.columns) == COLUMNS and str(frame["batch"].dtype) == "int64"


EVERY_TYPE = [
    Row(backend="numpy", dtype="float64", batch=4, hidden=4, status=Status.SKIPPED, reason="unavailable: no GPU"),
    Row(backend="numba-cuda", dtype="float32", batch=65536, hidden=4096, iterations=1 << 20, repeat=6,
        seconds=0.1 + 0.2, seconds_e2e=1e-300, compile_seconds=5e-324, status=Status.OK,
        reason='a, "quoted" reason; with commas', max_rel_error=math.inf, validated=True, threads=16,
        machine="xeon-2c", commit="abcdef123456+dirty", timestamp="2026-12-02T00:00:00+00:00",
        library="numba-cuda 0.30.4", device="gpu", cache="disk", fresh=False, startup_seconds=4.6),
    Row(backend="x", dtype="float64", batch=1, hidden=1, status=Status.CRASHED, reason="é ü, ∞", validated=False,
        threads=None, device="cpu", cache="none", fresh=True, startup_seconds=0.0, max_rel_error=0.0),
]


def test_a_row_of_every_type_round_trips_through_the_file(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, EVERY_TYPE)
    rows, bad = read_rows(path)
    assert bad == [] and rows == EVERY_TYPE
    assert [Row.from_cells(row.cells()) for row in EVERY_TYPE] == EVERY_TYPE
    assert [Row.from_values(dict(zip(COLUMNS, row.cells()))) for row in EVERY_TYPE] == EVERY_TYPE
    frame, _ = read_runs(path)
    assert frame["seconds"].isna().tolist() == [True, False, True]  # the empty cell is NaN in the frame
    assert frame["validated"].tolist() == [False, True, False] and frame["status"].tolist() == ["skipped", "ok", "crashed"]
    assert frame["fresh"].tolist() == [None, False, True] and frame["threads"].tolist() == [None, 16, None]


def test_values_are_typed_on_the_way_in():
    import numpy as np

    row = Row(backend="b", dtype="float64", batch=np.int64(4), hidden=4.0, status="ok", seconds=np.float32(0.5),
              validated=np.bool_(True), startup_seconds=float("nan"), reason="two\nlines")  # fmt: skip
    assert type(row.batch) is int and row.hidden == 4 and row.status is Status.OK and row.validated is True
    assert row.startup_seconds is None and row.reason == "two lines"  # NaN is empty; one row, one line
    for bad in (dict(status="nope"), dict(device="tpu"), dict(cache="warm"), dict(batch=4.5), dict(validated="yes")):
        with pytest.raises(ValueError):
            Row(**{**dict(backend="b", dtype="float64", batch=4, hidden=4, status="ok"), **bad})
    with pytest.raises(TypeError):
        Row.from_values({**old_row(), "colour": "red"})
    with pytest.raises(TypeError):
        Row(backend="b", dtype="float64", batch=4, hidden=4)  # a row has a status


def test_a_bad_cell_is_a_bad_line_not_a_bad_file(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, EVERY_TYPE[:1])
    good = EVERY_TYPE[0].cells()
    with open(path, "a") as fh:
        for column, value in (("batch", "4.5"), ("status", "fine"), ("device", "tpu"), ("fresh", "yes"), ("seconds", "x")):
            cells = list(good)
            cells[COLUMNS.index(column)] = value
            fh.write(",".join(cells) + "\n")
        fh.write("too,few\n\n")
    rows, bad = read_rows(path)
    assert rows == EVERY_TYPE[:1] and bad == [3, 4, 5, 6, 7, 8, 9]


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_older_layout_is_read_with_its_missing_columns_empty(tmp_path, version):
    path = tmp_path / "runs.csv"
    header = write_layout(path, version, [{**old_row(), "library": "numpy 2", "device": "cpu", "cache": "none",
                                           "fresh": "True"}])  # fmt: skip
    (row,), bad = read_rows(path)
    assert bad == [] and row.batch == 4 and row.validated is True and row.threads == 2
    assert row.library == ("numpy 2" if "library" in header else "")
    assert row.device == ("cpu" if "device" in header else "") and row.fresh is (True if "fresh" in header else None)
    assert row.startup_seconds is None


def test_an_older_file_is_read_with_the_new_columns_empty(tmp_path):
    path = tmp_path / "runs.csv"
    write_layout(path, 1, [old_row(), old_row(repeat=1, reason="a, quoted \"reason\"")])
    frame, bad = read_runs(path)
    assert bad == [] and len(frame) == 2
    assert list(frame["library"]) == ["", ""]
    assert frame["reason"].iloc[1] == 'a, quoted "reason"'


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_appending_upgrades_an_older_file_once_and_keeps_every_line(tmp_path, version):
    path = tmp_path / "runs.csv"
    header = write_layout(path, version, [old_row(), old_row(repeat=1, reason='x, "y"')], extra_lines=["garbage,line"])
    (tmp_path / "machine.json").write_text(json.dumps({"cpu": "c", "schema_version": version}))
    before = path.read_text().splitlines()
    append_rows(path, [{**old_row(repeat=2), "library": "numpy 2.4.6"}])
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == len(before) + 1
    pad = "," * (len(COLUMNS) - len(header))
    assert lines[1] == before[1] + pad and lines[2] == before[2] + pad  # padded, values untouched
    assert "garbage,line" in lines  # a bad line is kept as it was (and still reported as bad)
    frame, bad = read_runs(path)
    assert bad == [4] and list(frame["library"]) == ["", "", "numpy 2.4.6"]
    assert json.loads((tmp_path / "machine.json").read_text()) == {"cpu": "c", "schema_version": SCHEMA_VERSION}
    append_rows(path, [old_row(repeat=3)])  # already upgraded: a plain append
    assert path.read_text().count(",".join(COLUMNS)) == 1


def test_a_foreign_header_is_still_refused(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="header does not match"):
        append_rows(path, [old_row()])
    assert path.read_text() == "a,b,c\n1,2,3\n"
    with pytest.raises(ResultsError, match="missing columns"):
        read_rows(path)


def test_a_folder_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, EVERY_TYPE[:1])
    (tmp_path / "machine.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="newer than this harness"):
        append_rows(path, EVERY_TYPE[1:])
    assert path.read_bytes() == before


def test_machine_json_records_the_schema_version(tmp_path):
    results.write_machine(tmp_path, {"cpu": "c"})  # no runs.csv yet: its rows will be the newest layout
    assert results.read_machine(tmp_path) == {"cpu": "c", "schema_version": SCHEMA_VERSION}
    write_layout(tmp_path / "runs.csv", 3, [old_row()])
    results.write_machine(tmp_path, {"cpu": "c"})  # the fingerprint says what the folder holds
    assert results.read_machine(tmp_path)["schema_version"] == 3
    assert migrate(tmp_path / "runs.csv") == (3, SCHEMA_VERSION)
    assert results.read_machine(tmp_path)["schema_version"] == SCHEMA_VERSION
    assert migrate(tmp_path / "runs.csv") == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent


def test_the_pytest_benchmark_importer_builds_rows():
    data = {"commit_info": {"id": "abcdef1234567890", "dirty": True}, "datetime": "d", "benchmarks": [
        {"extra_info": {"backend": "numpy", "batch": 4, "hidden": 4, "iterations": 10, "dtype": "float64",
                        "max_rel_error": 0.0}, "stats": {"data": [0.1, 0.2]}}]}  # fmt: skip
    rows = results.rows_from_pytest_benchmark(data, "m")
    assert [type(r) for r in rows] == [Row, Row] and rows[1].repeat == 1 and rows[1].seconds == 0.2
    assert rows[0].commit == "abcdef123456+dirty" and rows[0].status is Status.OK and rows[0].validated


# ----------------------------------------------------------------------------- the committed folders


def committed_copy(tmp_path, name) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("runs.csv", "machine.json"):
        shutil.copyfile(REPO / "results" / name / file, folder / file)
    return folder


@pytest.mark.parametrize("name", COMMITTED)
def test_each_committed_layout_migrates_keeping_every_value(tmp_path, name):
    folder = committed_copy(tmp_path, name)
    path = folder / "runs.csv"
    with open(path, newline="") as fh:
        original = list(csv.DictReader(fh))
    assert results.folder_version(folder) == COMMITTED[name]
    before, bad = read_rows(path)
    assert bad == [] and len(before) == len(original)
    assert migrate(path) == (COMMITTED[name], SCHEMA_VERSION)
    with open(path, newline="") as fh:
        upgraded = list(csv.DictReader(fh))
    assert list(upgraded[0]) == COLUMNS
    assert [{k: r[k] for k in o} for o, r in zip(original, upgraded)] == original  # verbatim
    after, bad = read_rows(path)
    assert bad == [] and after == before
    assert results.read_machine(folder)["schema_version"] == SCHEMA_VERSION
    append_rows(path, EVERY_TYPE[1:2])  # and a sweep may append to it
    assert read_rows(path)[0] == before + EVERY_TYPE[1:2]


@pytest.mark.parametrize("name", COMMITTED)
def test_each_committed_layout_loads_for_the_plots_and_imports(tmp_path, name):
    from harness.report import rows as report_rows

    (tmp_path / "results").mkdir()
    folder = committed_copy(tmp_path / "results", name)
    before = folder.joinpath("runs.csv").read_bytes()
    count = before.decode().count("\n") - 1
    machines = report_rows.load(tmp_path / "results", log=lambda m: None)
    frame, _ = machines[name]
    assert len(frame) == count and set(frame["device"]) <= {"cpu", "gpu"}
    assert not report_rows.medians(frame).empty
    assert folder.joinpath("runs.csv").read_bytes() == before  # reading never rewrites
    report = importing.import_results(folder, tmp_path / "out")
    imported, bad = read_rows(report.runs)
    assert bad == [] and report.appended == len(imported) == count
    assert results.read_machine(report.runs.parent)["schema_version"] == SCHEMA_VERSION
    assert all(row.device in ("cpu", "gpu") for row in imported)
