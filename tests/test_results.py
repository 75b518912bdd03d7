"""runs.csv across layouts: a file written before a column was added is read, and upgraded
(atomically, nothing lost) before rows of this version are appended to it."""

from __future__ import annotations

import csv

import pytest

from harness.results import ADDED_COLUMNS, COLUMNS, ResultsError, append_rows, read_runs


def old_row(**extra) -> dict:
    row = dict(backend="numpy", dtype="float64", batch=4, hidden=4, iterations=10, repeat=0, seconds=0.5,
               seconds_e2e=0.5, compile_seconds=0.1, status="ok", reason="", max_rel_error=0.0, validated=True,
               threads=2, machine="m", commit="abc", timestamp="t")  # fmt: skip
    row.update(extra)
    return row


def write_old(path, rows, extra_lines=()) -> list[str]:
    header = [c for c in COLUMNS if c not in ADDED_COLUMNS]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        for line in extra_lines:
            fh.write(line + "\n")
    return header


def test_an_older_file_is_read_with_the_new_columns_empty(tmp_path):
    path = tmp_path / "runs.csv"
    write_old(path, [old_row(), old_row(repeat=1, reason="a, quoted \"reason\"")])
    frame, bad = read_runs(path)
    assert bad == [] and len(frame) == 2
    assert list(frame["library"]) == ["", ""]
    assert frame["reason"].iloc[1] == 'a, quoted "reason"'


def test_appending_upgrades_an_older_file_once_and_keeps_every_line(tmp_path):
    path = tmp_path / "runs.csv"
    write_old(path, [old_row(), old_row(repeat=1, reason='x, "y"')], extra_lines=["garbage,line"])
    before = path.read_text().splitlines()
    append_rows(path, [{**old_row(repeat=2), "library": "numpy 2.4.6"}])
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == len(before) + 1
    pad = "," * len(ADDED_COLUMNS)
    assert lines[1] == before[1] + pad and lines[2] == before[2] + pad  # padded, values untouched
    assert "garbage,line" in lines  # a bad line is kept as it was (and still reported as bad)
    frame, bad = read_runs(path)
    assert bad == [4] and list(frame["library"]) == ["", "", "numpy 2.4.6"]
    append_rows(path, [old_row(repeat=3)])  # already upgraded: a plain append
    assert path.read_text().count(",".join(COLUMNS)) == 1


def test_a_foreign_header_is_still_refused(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="header does not match"):
        append_rows(path, [old_row()])
    assert path.read_text() == "a,b,c\n1,2,3\n"
