"""The command line: output formats, and one-line errors with exit status 2 for every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.problems import XOR3_PUBLISHED_LOSSES

REPO = Path(__file__).resolve().parent.parent


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)  # fmt: skip


def test_run_text_output_is_the_published_trace():
    out = cli("run", "--backend", "numpy", "--problem", "xor3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    trace = [line.split() for line in lines[:-1]]
    assert [int(i) for i, _ in trace] == [0, 10000, 20000, 30000, 40000, 50000]
    assert tuple(float(f"{float(v):.12g}") for _, v in trace) == XOR3_PUBLISHED_LOSSES
    assert all(len(v.replace("0.", "").lstrip("0")) >= 15 for _, v in trace)  # repr precision
    assert lines[-1].startswith("elapsed") and lines[-1].endswith("nothing to compile; cache: none)")


def test_run_json_output(capsys):
    assert main(["run", "--backend", "numpy", "--problem", "scaled", "--batch", "5", "--hidden", "3",
                 "--iterations", "20", "--log-every", "7", "--dtype", "float32", "--json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"backend", "problem", "dtype", "iterations", "losses", "weights", "seconds", "cache"}
    assert data["cache"] == "none"
    assert [i for i, _ in data["losses"]] == [0, 7, 14]
    assert [len(w) for w in data["weights"]] == [3, 3] and data["dtype"] == "float32"


@pytest.mark.slow  # imports every backend's library / measures the ceilings
def test_list_names_every_backend_with_a_reason(capsys, fakes):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "numpy", "numba-cpu", "numba-parallel", "numba-cuda", "jax", "torch", "cupy"):
        assert name in out
    assert "unavailable: needs the fake accelerator" in out


def test_list_of_named_backends_shows_those_only(capsys, fakes):
    assert main(["list", "--backends", "fake-unavailable,numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["fake-unavailable", "numpy"]
    assert "unavailable: needs the fake accelerator" in lines[0] and "available" in lines[1]


@pytest.mark.slow  # imports every backend's library / measures the ceilings
def test_validate_passes_for_good_and_fails_for_a_wrong_backend(capsys, fakes):
    assert main(["validate", "--backends", "fake-good", "--quick"]) == 0
    assert "all available backends agree" in capsys.readouterr().out
    assert main(["validate", "--backends", "fake-wrong", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "fake-wrong" in out


BAD = [
    (["run", "--backend", "nope", "--problem", "xor3"], "unknown backend 'nope'"),
    (["run", "--backend", "numpy", "--problem", "xor9"], "invalid choice"),
    (["run", "--backend", "numpy", "--problem", "scaled", "--batch", "0"], "must be positive"),
    (["run", "--backend", "numpy", "--problem", "scaled", "--hidden", "-3"], "must be positive"),
    (["run", "--backend", "numpy", "--problem", "scaled", "--batch", "1e3"], "not an integer"),
    (["run", "--backend", "numpy", "--problem", "scaled", "--batch", "99999999999"], "batch must be in"),
    (["run", "--backend", "numpy", "--problem", "xor3", "--iterations", "0"], "must be positive"),
    (["run", "--backend", "numpy", "--problem", "xor3", "--log-every", "x"], "not an integer"),
    (["run", "--backend", "numpy", "--problem", "xor3", "--dtype", "float16"], "invalid choice"),
    (["run", "--backend", "fake-unavailable", "--problem", "xor3"], "not available here"),
    (["run", "--backend", "python", "--problem", "xor3", "--dtype", "float32"], "supports float64"),
    (["validate", "--backends", "numpy,nope"], "unknown backend"),
    (["list", "--backends", "numpy,nope"], "unknown backend"),
    (["list", "--backends", "numpy,numpy"], "'numpy' given twice"),
    (["validate", "--backends", ","], "empty list"),
    (["bench", "--preset", "huge"], "unknown preset"),
    (["bench", "--backends", "numpy,nope"], "unknown backend"),
    (["bench", "--batch", "4,0"], "must be positive"),
    (["bench", "--hidden", "4,x"], "not an integer"),
    (["bench", "--batch", "100000000000"], "larger than the supported"),
    (["bench", "--dtype", "int8"], "unknown dtype"),
    (["bench", "--machine", "../evil"], "letters, digits"),
    (["bench", "--threads", "0"], "must be positive"),
    (["plot", "--results", "/nonexistent/folder"], "no results folder"),
    (["run", "--backend", "numpy", "--problem", "scaled", "--batch", "65536", "--hidden", "65536"], "GiB available"),
    (["run", "--backend", "python", "--problem", "scaled", "--batch", "1048576", "--hidden", "4096"], "GiB available"),
    (["run", "--backend", "numpy", "--problem", "xor3", "--iterations", "99999999999999999"], "at most 2147483647"),
    (["run", "--backend", "numpy", "--problem", "xor3", "--iterations", "100000000", "--log-every", "1"],
     "would log 100000000 losses"),
    (["bench", "--threads", "100000"], "may run on"),
    (["bench", "--dtype", "float64,float64"], "'float64' given twice"),
    (["bench", "--batch", "4,16,4"], "4 given twice"),
    (["bench", "--hidden", "64,64"], "64 given twice"),
    (["bench", "--backends", "numpy,numba-cpu,numpy"], "'numpy' given twice"),
    (["validate", "--backends", "numpy,numpy"], "'numpy' given twice"),
    (["floor", "--batch", "4,4"], "4 given twice"),
    (["import-results", "/nonexistent/folder"], "no results folder"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) or "(none)" for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, fakes):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_input_in_a_real_process_has_no_traceback():
    out = cli("run", "--backend", "numpy", "--problem", "scaled", "--batch", "-1")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_plot_refuses_a_folder_without_readable_results_and_writes_nothing(tmp_path, capsys):
    assert main(["plot", "--results", str(tmp_path)]) == 2
    assert "no runs.csv under" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "runs.csv").write_text("not,a,results,file\n1,2,3,4\n")
    assert main(["plot", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no readable runs.csv" in err and "missing columns" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m", "runs.csv"]


def test_bench_refuses_unusable_results_and_leaves_them_untouched(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    runs = folder / "runs.csv"
    runs.write_text("not,a,results,file\n1,2,3,4\n")
    before = runs.read_bytes()
    assert main(["bench", "--out", str(tmp_path), "--machine", "m", "--preset", "quick", "--no-progress"]) == 2
    assert "missing columns" in capsys.readouterr().err
    assert runs.read_bytes() == before

    runs.unlink()
    (folder / "machine.json").write_text("{ not json")
    assert main(["bench", "--out", str(tmp_path), "--machine", "m", "--preset", "quick", "--no-progress"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert (folder / "machine.json").read_text() == "{ not json"

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["bench", "--out", str(blocker), "--preset", "quick"]) == 2
    assert "cannot create results folder" in capsys.readouterr().err


def test_bench_refuses_a_folder_it_cannot_append_to(tmp_path, capsys):
    """A runs.csv with every column in another order, or a folder of a newer schema: refused
    before anything runs, the files untouched."""
    from harness.results import COLUMNS, SCHEMA_VERSION

    folder = tmp_path / "m"
    folder.mkdir()
    runs = folder / "runs.csv"
    runs.write_text(",".join(reversed(COLUMNS)) + "\n")
    args = ["bench", "--out", str(tmp_path), "--machine", "m", "--preset", "quick", "--no-progress"]
    assert main(args) == 2
    assert "header does not match" in capsys.readouterr().err and runs.read_text() == ",".join(reversed(COLUMNS)) + "\n"
    runs.write_text(",".join(COLUMNS) + "\n")
    (folder / "machine.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "newer than this harness" in err


def test_import_benchmark_into_an_older_folder_upgrades_it_and_records_the_version(tmp_path):
    from harness.results import COLUMNS, LAYOUTS, SCHEMA_VERSION, read_machine, read_rows

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "runs.csv").write_text(",".join(LAYOUTS[0]) + "\n")
    (folder / "machine.json").write_text(json.dumps({"cpu": "c", "schema_version": 1}))
    data = {"benchmarks": [{"extra_info": {"backend": "numpy", "batch": 4, "hidden": 4, "iterations": 10,
                                           "dtype": "float64", "max_rel_error": 0.0}, "stats": {"data": [0.1]}}]}  # fmt: skip
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(data))
    assert main(["import-benchmark", str(source), "--out", str(tmp_path), "--machine", "m"]) == 0
    assert (folder / "runs.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_machine(folder) == {"cpu": "c", "schema_version": SCHEMA_VERSION}
    assert [r.seconds for r in read_rows(folder / "runs.csv")[0]] == [0.1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions, so a read-only folder is writable")
def test_bench_refuses_a_read_only_results_folder(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    folder.chmod(0o500)
    assert main(["bench", "--out", str(tmp_path), "--machine", "m", "--preset", "quick"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_import_benchmark_json_into_the_results_table(tmp_path, capsys):
    data = {
        "commit_info": {"id": "abcdef1234567890", "dirty": False},
        "datetime": "2026-11-22T00:00:00",
        "benchmarks": [
            {"extra_info": {"backend": "numpy", "batch": 4, "hidden": 4, "iterations": 10, "dtype": "float64",
                            "max_rel_error": 0.0}, "stats": {"data": [0.1, 0.2, 0.3], "median": 0.2}},
            {"extra_info": {"backend": "fake", "batch": 4, "hidden": 4, "iterations": 10, "dtype": "float64"},
             "stats": {"median": 0.5}},
            {"extra_info": {}, "stats": {"median": 1.0}},
        ],
    }  # fmt: skip
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(data))
    assert main(["import-benchmark", str(source), "--out", str(tmp_path), "--machine", "m"]) == 0
    from harness.results import read_runs

    frame, bad = read_runs(tmp_path / "m" / "runs.csv")
    assert bad == [] and len(frame) == 4
    assert list(frame[frame.backend == "numpy"]["seconds"]) == [0.1, 0.2, 0.3]
    assert list(frame[frame.backend == "fake"]["status"]) == ["invalid"]  # no agreement recorded
    source.write_text("[1, 2")
    assert main(["import-benchmark", str(source)]) == 2
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err


def test_a_full_disk_during_a_sweep_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from harness import results

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "append_rows", full)
    args = ["bench", "--out", str(tmp_path), "--machine", "m", "--backends", "numpy", "--batch", "4", "--hidden", "4",
            "--preset", "quick", "--no-progress", "--no-plots", "--no-ceilings"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write results") and "No space left" in err[-1]


def test_commit_is_dirty_for_code_changes_not_for_results(tmp_path, monkeypatch):
    """A sweep writes into the tracked results/ before it reads the commit: that is not 'dirty'."""
    from harness import fingerprint

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results" / "m").mkdir(parents=True)
    (tmp_path / "results" / "m" / "runs.csv").write_text("backend\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(fingerprint, "REPO", tmp_path)
    clean = fingerprint.commit()
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (tmp_path / "results" / "m" / "runs.csv").write_text("backend\nnumpy\n")
    assert fingerprint.commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert fingerprint.commit() == clean + "+dirty"
