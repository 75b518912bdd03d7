"""The results store under attack (issue 19): two writers at once, a write cut short by a crash or a
full disk, rows that could not be read back, files that are not what they claim (a FIFO, a folder,
a device, a huge sparse file, a machine.json of the wrong types), a sweep's fingerprint over an
import's, signals, and a simulator run posing as a GPU. Plus property tests of the store
(hypothesis): rows interrupted at any byte and resumed read back as exactly the finished ones, and
fuzzed files never end in a traceback."""

from __future__ import annotations

import csv
import errno
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backends
from harness import importing, results, schema
from harness.cli import main
from harness.results import COLUMNS, LAYOUTS, ResultsError, Row, Status, append_rows, read_rows
from tests.fakes import plugin_spec

REPO = Path(__file__).resolve().parent.parent
QUIET = dict(log=lambda message: None)


def row(**values) -> Row:
    base = dict(backend="numpy", dtype="float64", batch=4, hidden=4, iterations=10, repeat=0, seconds=0.5,
                status=Status.OK, validated=True, machine="m", commit="c0ffee", timestamp="2026-12-02T00:00:00+00:00",
                device="cpu")  # fmt: skip
    return Row(**{**base, **values})


def point(backend="numpy", batch=4, hidden=4, repeats=3, commit="c0ffee") -> list[Row]:
    """One point's rows as the sweep appends them: repeats 0..R-1 in one append."""
    return [row(backend=backend, batch=batch, hidden=hidden, repeat=r, seconds=0.1 * (r + 1), commit=commit)
            for r in range(repeats)]  # fmt: skip


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)  # fmt: skip


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# ----------------------------------------------------------------------------- 1. one writer at a time


def _append_batches(path: str, name: str, batches: int) -> None:
    for b in range(batches):
        append_rows(Path(path), point(backend=name, batch=b + 1, repeats=5), **QUIET)


def test_two_writers_at_once_store_every_row_once_in_whole_appends(tmp_path):
    path = tmp_path / "m" / "runs.csv"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_batches, args=(str(path), name, 20)) for name in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    rows, bad = read_rows(path)
    assert bad == [] and len(rows) == 2 * 20 * 5
    assert path.read_text().count("backend,dtype") == 1  # one header: the file was created once
    for i in range(0, len(rows), 5):  # each append's lines together, never interleaved
        chunk = rows[i : i + 5]
        assert len({(r.backend, r.batch) for r in chunk}) == 1 and [r.repeat for r in chunk] == list(range(5))
    assert {(r.backend, r.batch, r.repeat) for r in rows} == {(n, b + 1, r) for n in "ab" for b in range(20) for r in range(5)}


def _hold_lock(directory: str, held, release) -> None:
    with results.locked(Path(directory), **QUIET):
        held.set()
        release.wait(60)


@pytest.fixture
def lock_held_elsewhere(tmp_path):
    """The folder tmp_path/m locked by another process while the test runs."""
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "m"), held, release))
    holder.start()
    assert held.wait(60)
    yield tmp_path / "m"
    release.set()
    holder.join(30)


def test_a_second_writer_waits_with_a_message_then_gives_up_writing_nothing(lock_held_elsewhere, monkeypatch):
    monkeypatch.setattr(results, "LOCK_WAIT", 0.3)
    messages = []
    started = time.monotonic()
    with pytest.raises(ResultsError, match="another bench or import still holds"):
        append_rows(lock_held_elsewhere / "runs.csv", point(), log=messages.append)
    assert 0.3 <= time.monotonic() - started < 10
    assert len(messages) == 1 and messages[0].startswith("waiting: another bench or import is writing to")
    assert not (lock_held_elsewhere / "runs.csv").exists()


def test_a_second_bench_on_a_locked_folder_is_one_line_and_exit_2(lock_held_elsewhere, monkeypatch, capsys):
    monkeypatch.setattr(results, "LOCK_WAIT", 0.2)
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(lock_held_elsewhere.parent),
            "--machine", "m", "--no-plots", "--no-progress", "--preset", "quick"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("waiting: ") and err[-1].startswith("error: ") and "still holds" in err[-1]
    assert not (lock_held_elsewhere / "runs.csv").exists() and not (lock_held_elsewhere / "machine.json").exists()


@pytest.mark.slow  # two sweeps in subprocesses
def test_two_identical_benches_started_together_store_each_point_once(tmp_path):
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
            "--no-plots", "--no-progress", "--no-ceilings", "--preset", "quick"]  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    errs = "".join(err for _, err in outs)
    assert "Traceback" not in errs and "waiting: another bench or import" in errs and "already in" in errs
    rows, bad = read_rows(tmp_path / "m" / "runs.csv")
    assert bad == [] and sorted(r.repeat for r in rows) == [0, 1, 2]  # quick preset: 3 repeats, stored once


def _import(source: str, out: str, start) -> None:
    start.wait(60)
    importing.import_results(Path(source), Path(out), note=f"from {Path(source).name}", machine="m", **QUIET)


def _fingerprint(**extra) -> dict:
    return {"cpu": "Test CPU", "cores_logical": 2, "gpus": [], "commit": "c0ffee", **extra}


def _source(path: Path, rows: list[Row]) -> Path:
    path.mkdir(parents=True)
    (path / "machine.json").write_text(json.dumps(_fingerprint()))
    append_rows(path / "runs.csv", rows, **QUIET)
    return path


def test_two_imports_at_once_into_an_older_layout_lose_no_row(tmp_path):
    """The layout upgrade and both appends happen under the folder's lock: nothing vanishes."""
    target = tmp_path / "out" / "m"
    target.mkdir(parents=True)
    old = [dict(r.__dict__, status="ok") for r in point(backend="old", repeats=4)]
    with open(target / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LAYOUTS[0], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(old)
    a = _source(tmp_path / "a", [r for b in range(1, 11) for r in point(backend="x", batch=b, repeats=1)])
    b = _source(tmp_path / "b", [r for b in range(1, 11) for r in point(backend="y", batch=b, repeats=1)])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_import, args=(str(s), str(tmp_path / "out"), start)) for s in (a, b)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    rows, bad = read_rows(target / "runs.csv")
    assert bad == [] and results.folder_version(target) == results.SCHEMA_VERSION
    assert sorted((r.backend, r.batch) for r in rows) == sorted([("old", 4)] * 4 + [(n, i) for n in "xy" for i in range(1, 11)])
    imports = results.read_machine(target)["imported"]
    assert sorted(i["source"] for i in imports) == ["a", "b"] and all(i["rows_appended"] == 10 for i in imports)


def test_importing_the_same_folder_twice_at_once_appends_it_once(tmp_path):
    a = _source(tmp_path / "a", point(repeats=5))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_import, args=(str(a), str(tmp_path / "out"), start)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    rows, bad = read_rows(tmp_path / "out" / "m" / "runs.csv")
    assert bad == [] and len(rows) == 5
    assert len(results.read_machine(tmp_path / "out" / "m")["imported"]) == 1


# ----------------------------------------------------------------------------- 2. whole lines only


def test_a_full_disk_mid_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1), **QUIET)
    before = path.read_bytes()
    real = os.write

    def full(fd, data):  # half of it stored, then the disk is full
        if len(data) > 10:
            real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "_write", full)
    with pytest.raises(OSError, match="No space left"):
        append_rows(path, point(batch=2), **QUIET)
    assert path.read_bytes() == before  # cut back: no partial line for resume to count as done
    monkeypatch.setattr(results, "_write", real)
    append_rows(path, point(batch=3), **QUIET)
    rows, bad = read_rows(path)
    assert bad == [] and [r.batch for r in rows] == [1] * 3 + [3] * 3


def test_short_writes_are_continued_until_every_byte_is_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_write", lambda fd, data: os.write(fd, bytes(data[:7])))
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1), **QUIET)
    append_rows(path, point(batch=2), **QUIET)
    rows, bad = read_rows(path)
    assert bad == [] and rows == point(batch=1) + point(batch=2)


def test_a_write_that_stores_nothing_is_an_error_not_a_loop(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1), **QUIET)
    before = path.read_bytes()
    monkeypatch.setattr(results, "_write", lambda fd, data: 0)
    with pytest.raises(OSError):
        append_rows(path, point(batch=2), **QUIET)
    assert path.read_bytes() == before


def test_an_append_interrupted_mid_write_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1), **QUIET)
    before = path.read_bytes()

    def interrupted(fd, data):
        os.write(fd, bytes(data[:5]))
        raise KeyboardInterrupt  # SIGTERM/SIGHUP/Ctrl-C arriving between two writes

    monkeypatch.setattr(results, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        append_rows(path, point(batch=2), **QUIET)
    assert path.read_bytes() == before


def test_a_torn_last_line_is_moved_aside_with_a_message_never_glued(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1) + point(batch=2, repeats=1), **QUIET)
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b"numpy,fl")  # a crash mid-write (the issue's full-disk fragment)
    messages = []
    append_rows(path, point(batch=3), log=messages.append)
    torn = list(tmp_path.glob("runs.csv.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes() == b"numpy,fl"
    assert len(messages) == 1 and str(torn[0]) in messages[0] and "incomplete" in messages[0]
    rows, bad = read_rows(path)
    assert bad == [] and rows == point(batch=1) + point(batch=2, repeats=1) + point(batch=3)
    assert path.read_bytes().startswith(whole)


def test_a_torn_point_goes_aside_whole_so_resume_measures_it_again(tmp_path):
    """The fragment names its point and repeat (2): the whole repeats 0 and 1 before it go with it."""
    path = tmp_path / "runs.csv"
    append_rows(path, point(batch=1) + point(batch=2), **QUIET)
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # `truncate -s -20`: the last repeat of batch 2 cut short
    assert results.repair(path, **QUIET) > 0
    rows, bad = read_rows(path)
    assert bad == [] and rows == point(batch=1)
    (torn,) = tmp_path.glob("runs.csv.torn-*")
    assert path.read_bytes() + torn.read_bytes() == data[:-20]  # nothing lost: moved


def test_a_file_without_one_whole_line_is_started_again(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("backend,dty")  # the header itself cut short
    append_rows(path, point(), **QUIET)
    rows, bad = read_rows(path)
    assert bad == [] and rows == point()
    assert (next(tmp_path.glob("runs.csv.torn-*"))).read_text() == "backend,dty"


def test_the_reader_skips_an_unterminated_last_line_even_when_it_parses(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, point(repeats=2), **QUIET)
    path.write_bytes(path.read_bytes()[:-2])  # "...,cpu,,,\n" -> "...,cpu,," still 22 cells? never trusted
    rows, bad = read_rows(path)
    assert rows == point(repeats=1) and bad == [3]


@pytest.mark.slow  # two sweeps in subprocesses
def test_bench_after_a_crash_cut_the_last_line(tmp_path):
    """The issue's example: a sweep, `truncate -s -40`, then `--hidden 4,8`: a warning naming the
    file the fragment went to, every point whole (3 repeats each), no line glued."""
    args = ["bench", "--backends", "numpy", "--batch", "4", "--out", str(tmp_path), "--machine", "m", "--no-plots",
            "--no-progress", "--no-ceilings", "--preset", "quick"]  # fmt: skip
    assert cli(*args, "--hidden", "4").returncode == 0
    runs = tmp_path / "m" / "runs.csv"
    runs.write_bytes(runs.read_bytes()[:-40])
    second = cli(*args, "--hidden", "4,8")
    assert second.returncode == 0, second.stderr
    (torn,) = (tmp_path / "m").glob("runs.csv.torn-*")
    assert f"moved to {torn}" in second.stderr
    rows, bad = read_rows(runs)
    assert bad == []
    assert sorted((r.hidden, r.repeat) for r in rows) == [(h, r) for h in (4, 8) for r in range(3)]


# ----------------------------------------------------------------------------- 3. nothing written that cannot be read back

BAD_VALUES = {
    "seconds inf": dict(seconds=math.inf),
    "seconds negative": dict(seconds=-1.0),
    "compile_seconds inf": dict(compile_seconds=math.inf),
    "startup_seconds negative": dict(startup_seconds=-0.5),
    "batch 0": dict(batch=0),
    "hidden over the largest width": dict(hidden=(1 << 16) + 1),
    "repeat negative": dict(repeat=-1),
    "threads 0": dict(threads=0),
    "dtype": dict(dtype="float16"),
    "ok without seconds": dict(seconds=None),
    "device": dict(device="tpu"),
    "status": dict(status="great"),
    "backend too long": dict(backend="b" * 201),
    "max_rel_error negative": dict(max_rel_error=-1.0),
}


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_the_writer_refuses_what_the_reader_would_skip(tmp_path, bad):
    with pytest.raises(ValueError):
        row(**bad)
    path = tmp_path / "runs.csv"
    append_rows(path, [row()], **QUIET)
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="does not fit the schema"):
        append_rows(path, [row(batch=2), {**row().__dict__, **bad}], **QUIET)
    assert path.read_bytes() == before  # no row of the refused append
    good = row()
    object.__setattr__(good, next(iter(bad)), next(iter(bad.values())))  # a Row changed after it was checked
    with pytest.raises(ResultsError):
        append_rows(path, [good], **QUIET)
    # and the reader, given that line anyway, skips it with its number
    with open(path, "a") as fh:
        fh.write(results._encode([good]))
    rows, bad_lines = read_rows(path)
    assert rows == [row()] and bad_lines == [3]


def test_a_failure_reason_is_cut_to_a_sane_length():
    long = row(status=Status.FAILED, seconds=None, reason="RuntimeError: " + "x" * 200_000)
    assert len(long.reason) == schema.MAX_REASON and long.reason.endswith(schema.CUT)
    assert row(reason="a\nb\x00c").reason == "a bc"


def test_a_200kb_cell_of_an_older_harness_does_not_cost_the_folder(tmp_path):
    """Before reasons were cut, a 200 KB exception message was stored; csv's 128 KiB field limit
    then made plot, bench and import end in a traceback. Now the row reads, its reason cut."""
    folder = tmp_path / "m"
    append_rows(folder / "runs.csv", point(batch=1), **QUIET)
    huge = results._encode([row(batch=2)]).replace(",ok,,", ",failed," + "y" * 200_000 + ",", 1)
    huge = huge.replace(",0.5,", ",,", 1)
    with open(folder / "runs.csv", "a") as fh:
        fh.write(huge)
    append_rows(folder / "runs.csv", point(batch=3), **QUIET)
    rows, bad = read_rows(folder / "runs.csv")
    assert bad == [] and [r.batch for r in rows] == [1, 1, 1, 2, 3, 3, 3]
    assert rows[3].status is Status.FAILED and len(rows[3].reason) == schema.MAX_REASON
    (folder / "machine.json").write_text(json.dumps(_fingerprint()))
    report = importing.import_results(folder, tmp_path / "out", machine="n", **QUIET)
    assert report.appended == 7 and report.bad == {}
    from harness.report.rows import load

    assert len(load(tmp_path / "out", log=lambda m: None)["n"][0]) == 7


def test_the_reader_skips_bad_rows_by_line_number_and_keeps_the_rest(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, point(repeats=2), **QUIET)
    line = results._encode([row(batch=8)])
    with open(path, "a") as fh:
        fh.write(line.replace(",0.5,", ",inf,", 1))  # a stored `inf` seconds: plot's math domain error
        fh.write(line.replace(",4,", ",0,", 1))  # batch 0
        fh.write(line.replace(",cpu,", ",tpu,", 1))  # no such device
        fh.write(line)
    rows, bad = read_rows(path)
    assert bad == [4, 5, 6] and [r.batch for r in rows] == [4, 4, 8]


def test_a_line_that_is_not_utf8_costs_that_line_and_survives_the_upgrade(tmp_path):
    path = tmp_path / "runs.csv"
    rows = [dict(r.__dict__, status="ok") for r in point(repeats=2)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LAYOUTS[0], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[:1])
    with open(path, "ab") as fh:
        fh.write(b"numpy,float64,4,4,10,9,\xff\xfe,,,ok\n")
    with open(path, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=LAYOUTS[0], extrasaction="ignore", lineterminator="\n").writerows(rows[1:])
    old = [replace(r, device="") for r in point(repeats=2)]  # the first layout had no device column
    before, bad = read_rows(path)
    assert before == old and bad == [3]
    append_rows(path, point(batch=8, repeats=1), **QUIET)  # the upgrade to the newest layout, then the append
    after, bad = read_rows(path)
    assert after == old + point(batch=8, repeats=1) and bad == [3]
    assert b"\n" + b"numpy,float64,4,4,10,9,\xff\xfe,,,ok\n" in path.read_bytes()  # kept byte for byte


@pytest.mark.slow  # draws every figure
def test_plot_of_a_folder_with_an_inf_seconds_row_draws_the_rest(tmp_path, capsys):
    path = tmp_path / "m" / "runs.csv"
    append_rows(path, [r for n in (4, 16) for r in point(batch=n)], **QUIET)
    with open(path, "a") as fh:
        fh.write(results._encode([row(batch=64)]).replace(",0.5,", ",inf,", 1))
    assert main(["plot", "--results", str(tmp_path)]) == 0
    assert "bad line(s) ignored (line 8)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 4. bounded, typed reads


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.mkdir()


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _huge(limit: int):
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(limit + 1)  # sparse: no disk used

    return make


NOT_FILES = {"a FIFO": _fifo, "a folder": _folder, "a character device": _device}


@pytest.mark.parametrize("make", [*NOT_FILES.values(), _huge(results.RUNS_LIMIT)], ids=[*NOT_FILES, "huge"])
def test_a_runs_csv_that_is_no_regular_file_or_too_big_is_refused_at_once(tmp_path, make):
    path = tmp_path / "runs.csv"
    make(path)
    started = time.monotonic()
    with pytest.raises(ResultsError, match=str(path)):
        read_rows(path)
    with pytest.raises(ResultsError, match=str(path)):
        append_rows(path, point(), **QUIET)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("make", [*NOT_FILES.values(), _huge(results.MACHINE_LIMIT)], ids=[*NOT_FILES, "huge"])
def test_a_machine_json_that_is_no_regular_file_or_too_big_is_refused(tmp_path, make):
    make(tmp_path / "machine.json")
    with pytest.raises(ResultsError, match="machine.json"):
        results.read_machine(tmp_path)


@pytest.mark.parametrize("make", NOT_FILES.values(), ids=NOT_FILES.keys())
def test_import_results_from_a_hostile_source_is_one_line_and_exit_2(tmp_path, make):
    source = tmp_path / "src"
    source.mkdir()
    (source / "machine.json").write_text(json.dumps(_fingerprint()))
    make(source / "runs.csv")
    done = cli("import-results", str(source), "--out", str(tmp_path / "out"), timeout=60)  # a FIFO hung forever
    assert done.returncode == 2 and "not a regular file" in one_line_error(done.stderr)
    assert not (tmp_path / "out").exists()


def test_bench_on_a_runs_csv_that_is_a_folder_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "m" / "runs.csv").mkdir(parents=True)
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
            "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "a folder, not a regular file" in one_line_error(capsys.readouterr().err)


BAD_MACHINES = {
    "gpus not a list": {"gpus": "H100"},
    "gpu not an object": {"gpus": ["H100"]},
    "cores as text": {"cores_logical": "2"},
    "cores a bool": {"cores_logical": True},
    "ceiling NaN": {"ceilings": {"bytes_per_s": float("nan")}},
    "ceiling a list": {"ceilings": {"bytes_per_s": [1]}},
    "versions of numbers": {"versions": {"numpy": 2}},
    "environment a list": {"environment": ["X=1"]},
    "an import's note a number": {"imported": [{"source": "a", "note": 3}]},
    "imports not a list": {"imported": {"source": "a"}},
    "schema_version text": {"schema_version": "5"},
}


@pytest.mark.parametrize("bad", BAD_MACHINES.values(), ids=BAD_MACHINES.keys())
def test_each_machine_json_field_is_type_checked(tmp_path, bad, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "machine.json").write_text(json.dumps({**_fingerprint(), **bad}))
    field = next(iter(bad))
    with pytest.raises(ResultsError, match=f"machine.json: field '{field}' is not"):
        results.read_machine(tmp_path / "m")
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
            "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert f"field '{field}'" in one_line_error(capsys.readouterr().err)
    assert main(["import-results", str(tmp_path / "m"), "--out", str(tmp_path / "out")]) == 2
    assert f"field '{field}'" in one_line_error(capsys.readouterr().err)


def test_a_deeply_nested_machine_json_is_an_error_not_a_recursion_traceback(tmp_path):
    (tmp_path / "machine.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultsError, match="not valid JSON"):
        results.read_machine(tmp_path)


# ----------------------------------------------------------------------------- 5. machine.json merged


def test_a_sweep_keeps_the_folder_s_imports_notes_and_earlier_fingerprints(tmp_path):
    source = _source(tmp_path / "gpu-box", point())
    importing.import_results(source, tmp_path / "out", note="measured on a lent box", machine="m", **QUIET)
    target = tmp_path / "out" / "m"
    current = results.read_machine(target)
    results.write_machine(target, {**current, "notes": ["kept by hand"]}, **QUIET)
    sweep = _fingerprint(cpu="Another CPU", commit="beef", ceilings={"bytes_per_s": 1.0})
    results.write_machine(target, sweep, **QUIET)  # bench's first write
    results.write_machine(target, {**sweep, "ceilings": {"bytes_per_s": 2.0}}, **QUIET)  # and its second
    merged = results.read_machine(target)
    assert merged["cpu"] == "Another CPU" and merged["ceilings"] == {"bytes_per_s": 2.0}
    assert [i["note"] for i in merged["imported"]] == ["measured on a lent box"] and merged["notes"] == ["kept by hand"]
    assert [e["cpu"] for e in merged["earlier"]] == ["Test CPU"]  # the import's fingerprint, once
    assert merged["schema_version"] == results.SCHEMA_VERSION


def test_a_sweep_without_ceilings_keeps_the_same_fingerprint_s(tmp_path):
    """``bench --no-ceilings`` writes a fingerprint without ceilings: the folder's stay when it is
    the same fingerprint, and go to ``earlier`` with it when it is another; none is lost."""
    target = tmp_path / "m"
    target.mkdir()
    results.write_machine(target, _fingerprint(ceilings={"bytes_per_s": 2.0}), **QUIET)
    results.write_machine(target, _fingerprint(), **QUIET)  # the same machine state, nothing measured
    assert results.read_machine(target)["ceilings"] == {"bytes_per_s": 2.0}
    results.write_machine(target, _fingerprint(commit="beef"), **QUIET)  # another commit, nothing measured
    merged = results.read_machine(target)
    assert "ceilings" not in merged and merged["earlier"][-1]["ceilings"] == {"bytes_per_s": 2.0}
    results.write_machine(target, _fingerprint(commit="beef", ceilings={"bytes_per_s": 3.0}), **QUIET)
    assert results.read_machine(target)["ceilings"] == {"bytes_per_s": 3.0}  # measured: the new ones


@pytest.mark.slow  # a sweep, measuring the ceilings
def test_bench_after_import_results_keeps_the_import(tmp_path):
    source = _source(tmp_path / "src", point())
    assert main(["import-results", str(source), "--out", str(tmp_path), "--machine", "m", "--note", "n1"]) == 0
    done = cli("bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
               "--no-plots", "--no-progress", "--preset", "quick")  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = results.read_machine(tmp_path / "m")
    assert merged["imported"][0]["note"] == "n1" and merged["earlier"][0]["cpu"] == "Test CPU"
    assert merged["cpu"] != "Test CPU"
    assert merged["ceilings"]["bytes_per_s"] > 0 and merged["ceilings"]["sigmoid_latency_s_float64"] > 0


# ----------------------------------------------------------------------------- 6. errors before work, signals


def test_a_malformed_plugin_spec_is_one_line_and_exit_2():
    done = cli("list", env={"NNBENCH_PLUGINS": "bad"})
    assert done.returncode == 2 and "NNBENCH_PLUGINS" in one_line_error(done.stderr)


def test_a_plugin_whose_module_is_missing_is_refused_before_any_worker(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(backends.REGISTRY, "fake-missing", "tests.no_such_module")
    args = ["bench", "--backends", "fake-missing", "--batch", "4", "--hidden", "4", "--out", str(tmp_path),
            "--machine", "m", "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "fake-missing" in one_line_error(capsys.readouterr().err) and not (tmp_path / "m").exists()


def test_a_plugin_posing_as_a_built_in_backend_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(backends.REGISTRY, "numpy", "tests.fakes.wrong")  # NNBENCH_PLUGINS="numpy=tests.fakes.wrong"
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
            "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "replaces the built-in backend 'numpy'" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("variable,value", [("OMP_NUM_THREADS", "abc"), ("NUMBA_NUM_THREADS", "0"),
                                            ("OPENBLAS_NUM_THREADS", "-2"), ("OMP_NUM_THREADS", "4,x")])  # fmt: skip
def test_a_bad_thread_count_variable_is_refused_before_any_worker(tmp_path, monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    args = ["bench", "--backends", "numpy", "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "m",
            "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert variable in one_line_error(capsys.readouterr().err) and not (tmp_path / "m").exists()


@pytest.mark.parametrize("command,says", [("import-results", "rows are appended whole"), ("bench", "finished points are saved"),
                                          ("validate", None)])  # fmt: skip
def test_sigterm_and_sighup_end_a_command_as_ctrl_c_does_with_its_own_message(monkeypatch, capsys, command, says):
    import harness.cli

    for signum in (signal.SIGTERM, signal.SIGHUP):

        def signalled(args, signum=signum):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler interrupts this
            raise AssertionError("not interrupted")

        monkeypatch.setitem(harness.cli.COMMANDS, command, signalled)
        argv = {"import-results": ["import-results", "src"], "bench": ["bench"], "validate": ["validate"]}[command]
        assert main(argv) == 128 + signum
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"interrupted ({signal.Signals(signum).name})") and "\n" not in err
        assert (says in err) if says else (err == f"interrupted ({signal.Signals(signum).name})")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow  # a sweep of a slow fake, signalled mid-way
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_signalled_sweep_keeps_its_finished_points_and_leaves_no_process(tmp_path, signum):
    args = ["bench", "--preset", "quick", "--backends", "fake-slow,numpy", "--batch", "1,2,3,4,5,6", "--hidden", "2",
            "--out", str(tmp_path), "--machine", "m", "--no-plots", "--no-progress", "--no-ceilings", "--threads", "1"]  # fmt: skip
    env = {**os.environ, backends.PLUGIN_VARIABLE: plugin_spec("fake-slow")}
    process = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    runs = tmp_path / "m" / "runs.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (runs.exists() and runs.read_text().count("\n") >= 1 + 2 * 3):
        time.sleep(0.05)
    children = _descendants(process.pid)
    assert children  # its workers (and multiprocessing's resource tracker)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"interrupted ({signal.Signals(signum).name}): finished points are saved; run the same command again to resume"
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    rows, bad = read_rows(runs)
    assert bad == [] and len(rows) >= 6 and len(rows) % 3 == 0


# ----------------------------------------------------------------------------- 7. import-benchmark's checks


def _benchmark_json(path: Path, data=None, seconds=(0.1, 0.2)) -> Path:
    bench = {"extra_info": {"backend": "numpy", "dtype": "float64", "batch": 4, "hidden": 4, "iterations": 10,
                            "max_rel_error": 0.0}, "stats": {"data": list(seconds)}}  # fmt: skip
    path.write_text(json.dumps(data if data is not None else {"benchmarks": [bench], "datetime": "t"}))
    return path


@pytest.mark.parametrize("machine", ["../../ib", "..", "a/b", "."])
def test_import_benchmark_writes_nothing_outside_out(tmp_path, capsys, machine):
    source = _benchmark_json(tmp_path / "b.json")
    out = tmp_path / "deep" / "out"
    assert main(["import-benchmark", str(source), "--out", str(out), "--machine", machine]) == 2
    assert "machine name" in one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.json"]


@pytest.mark.parametrize("data,seconds", [(None, (-1.0,)), (None, (float("inf"),)), ({"benchmarks": "x"}, ()),
                                          ({"benchmarks": [{"extra_info": {"backend": "numpy", "dtype": "float64", "batch": "x",
                                                                           "hidden": 4, "iterations": 1}}]}, ())],
                         ids=["negative seconds", "inf seconds", "benchmarks not a list", "batch not a number"])  # fmt: skip
def test_import_benchmark_validates_each_row_like_import_results(tmp_path, capsys, data, seconds):
    source = _benchmark_json(tmp_path / "b.json", data, seconds)
    assert main(["import-benchmark", str(source), "--out", str(tmp_path / "out"), "--machine", "m"]) == 2
    one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "out" / "m" / "runs.csv").exists()


def test_import_benchmark_twice_stores_its_rows_once(tmp_path, capsys):
    source = _benchmark_json(tmp_path / "b.json")
    args = ["import-benchmark", str(source), "--out", str(tmp_path / "out"), "--machine", "m"]
    assert main(args) == 0 and main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"2 rows appended to {tmp_path / 'out' / 'm' / 'runs.csv'}",
                   f"0 rows appended to {tmp_path / 'out' / 'm' / 'runs.csv'}; 2 already there"]  # fmt: skip
    rows, bad = read_rows(tmp_path / "out" / "m" / "runs.csv")
    assert bad == [] and len(rows) == 2


def test_import_benchmark_from_a_fifo_is_refused_not_hung(tmp_path):
    os.mkfifo(tmp_path / "b.json")
    done = cli("import-benchmark", str(tmp_path / "b.json"), "--out", str(tmp_path / "out"), "--machine", "m", timeout=60)
    assert done.returncode == 2 and "not a regular file" in one_line_error(done.stderr)


# ----------------------------------------------------------------------------- 8. a simulator run says so


def test_a_simulated_backend_s_rows_say_sim_not_gpu():
    from backends.numpy_backend import Numpy
    from harness.worker import device_of

    class Simulated(Numpy):
        DEVICE = "gpu"
        SIMULATED = True

    assert device_of(Simulated()) == "sim" and device_of(Numpy()) == "cpu"
    assert row(device="sim").device == "sim" and "sim" in results.DEVICES
    frame = results.fill_device(results.frame([row(device="sim")]), {"gpus": [{"name": "H100"}]})
    assert list(frame["device"]) == ["sim"]  # reported, kept: never re-derived as "gpu"


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"), reason="needs the CUDA simulator")
def test_numba_cuda_under_the_simulator_reports_sim():
    from harness.worker import Worker

    if backends.availability("numba-cuda"):
        pytest.skip(f"numba-cuda unavailable: {backends.availability('numba-cuda')}")
    worker = Worker("numba-cuda", 1)
    try:
        assert worker.ready.device == "sim", worker.ready
    finally:
        worker.close()


# ----------------------------------------------------------------------------- 9. property tests

TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
FINITE = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
ROWS = st.builds(
    Row, backend=TEXT.filter(bool), dtype=st.sampled_from(["float64", "float32"]), batch=st.integers(1, 1 << 24),
    hidden=st.integers(1, 1 << 16), iterations=st.integers(0, 1 << 40), repeat=st.integers(0, 100),
    seconds=FINITE, seconds_e2e=st.none() | FINITE, compile_seconds=st.none() | FINITE,
    status=st.sampled_from(list(Status)), reason=st.text(max_size=60),
    max_rel_error=st.none() | st.floats(min_value=0, allow_nan=False), validated=st.booleans(),
    threads=st.none() | st.integers(1, 256), machine=TEXT, commit=TEXT, timestamp=TEXT, library=TEXT,
    device=st.sampled_from(["", *results.DEVICES]), cache=st.sampled_from(["", *results.CACHE_STATES]),
    fresh=st.none() | st.booleans(), startup_seconds=st.none() | FINITE,
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(ROWS, min_size=1, max_size=4), min_size=1, max_size=5), cut=st.floats(0, 1),
       resumed=st.lists(ROWS, min_size=1, max_size=3))  # fmt: skip
def test_rows_interrupted_at_any_byte_and_resumed_read_back_as_the_finished_ones(tmp_path_factory, batches, cut, resumed):
    """Any valid rows, appended in batches, the file cut at any byte (a crash mid-write), then one
    more append: the file reads back as exactly the rows whose lines were whole, then the resumed
    ones, when the cut line names no earlier repeats of its point; and in every case the rows kept
    plus the lines moved aside are exactly the bytes that were written."""
    folder = tmp_path_factory.mktemp("store")
    path = folder / "runs.csv"
    for batch in batches:
        append_rows(path, batch, **QUIET)
    data = path.read_bytes()
    at = round(cut * len(data))
    path.write_bytes(data[:at])
    rows = [r for batch in batches for r in batch]
    whole_lines = data[:at].count(b"\n") - 1  # rows whose line survived (the header is the first line)
    finished = rows[: max(whole_lines, 0)]
    before, bad = read_rows(path)
    assert before == finished and bad == ([] if at in (0, len(data)) or data[at - 1 : at] == b"\n" else [whole_lines + 2])
    append_rows(path, resumed, **QUIET)
    after, bad = read_rows(path)
    assert bad == []
    aside = b"".join(p.read_bytes() for p in sorted(folder.glob("runs.csv.torn-*")))
    header = results._encode([], header=True).encode()
    kept = path.read_bytes()
    assert kept.endswith(results._encode(resumed).encode())
    assert after[-len(resumed):] == resumed
    body = kept[: len(kept) - len(results._encode(resumed).encode())]
    if whole_lines >= 0:
        assert body + aside == data[:at]  # nothing lost: every byte kept or moved aside
        moved = aside.count(b"\n")  # whole lines moved with the fragment: earlier repeats of its point
        assert after[: len(after) - len(resumed)] == finished[: len(finished) - moved]
        if moved:  # the cut row's repeat r named them: repeats r-1 .. r-moved of its point
            r = rows[len(finished)].repeat
            assert [x.repeat for x in finished[len(finished) - moved :]] == list(range(r - moved, r))
    else:  # the header itself was cut: the file started again
        assert aside == data[:at] and body == header and after == resumed


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)  # fmt: skip
KEYS = st.sampled_from(list(results._FIELDS)) | st.text(max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(KEYS, JSON, max_size=6), raw=st.none() | st.binary(max_size=64))
def test_a_fuzzed_machine_json_never_ends_in_a_traceback(tmp_path_factory, fields, raw):
    folder = tmp_path_factory.mktemp("machine")
    (folder / "machine.json").write_bytes(raw if raw is not None else json.dumps(fields).encode())
    try:
        fingerprint = results.read_machine(folder)
    except ResultsError as exc:
        assert str(exc).startswith(str(folder / "machine.json")) and "\n" not in str(exc)
        return
    assert isinstance(fingerprint, dict)
    merged = results.merge_machine(fingerprint, _fingerprint())  # what a sweep then writes
    results.write_machine(folder, merged, **QUIET)
    assert results.read_machine(folder)["cpu"] == "Test CPU"


CELLS = st.lists(st.sampled_from(["", "1", "-1", "inf", "nan", "1e999", "ok", "cpu", "True", '"', "a,b", "float64",
                                  "\x00", "\r", "é", "x" * 300]) | st.text(max_size=5), max_size=25)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from([list(layout) for layout in LAYOUTS] + [["backend"], []]) | st.lists(st.text(max_size=5)),
       lines=st.lists(CELLS, max_size=8), tail=st.binary(max_size=20))  # fmt: skip
def test_a_fuzzed_runs_csv_never_ends_in_a_traceback(tmp_path_factory, header, lines, tail):
    """Read, appended to and read again: rows or a one-line ResultsError, never anything else; and
    what an append adds is read back whole."""
    folder = tmp_path_factory.mktemp("runs")
    path = folder / "runs.csv"
    text = "\n".join(",".join(cells) for cells in [header, *lines]) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogatepass") + tail)
    try:
        read_rows(path)
    except ResultsError as exc:
        assert "\n" not in str(exc)
    try:
        append_rows(path, point(batch=7), **QUIET)
    except ResultsError as exc:
        assert "\n" not in str(exc)
        return
    rows, _ = read_rows(path)
    assert rows[-3:] == point(batch=7)


def test_committed_results_all_read_with_the_stricter_rules():
    for path in sorted((REPO / "results").glob("*/runs.csv")) + sorted((REPO / "results").glob("*/imported/*/runs*.csv")):
        rows, bad = read_rows(path)
        assert rows and bad == [], path
        assert isinstance(results.read_machine(path.parent if path.name == "runs.csv" else path.parent), dict)


def test_a_row_replaced_with_a_bad_value_is_refused():
    with pytest.raises(ValueError):
        replace(row(), seconds=math.inf)
    assert COLUMNS[-1] == "startup_seconds"
