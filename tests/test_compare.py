"""Comparing hardware from stored results: the device column, importing another machine's folder,
the fastest backend per point, CPU <-> GPU crossovers per pair of machines, the generated READMEs.
Synthetic results; no backend runs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from harness import importing
from harness.report import compare, draw_all
from harness.results import (
    ADDED_COLUMNS,
    COLUMNS,
    ResultsError,
    append_rows,
    fill_device,
    nominal_device,
    read_runs,
)

BATCHES = (4, 64, 1024, 16384)
GPU_BOX = {"cpu": "Intel(R) Xeon(R) Gold 6430", "cores_logical": 32, "gpus": [{"name": "NVIDIA H100 80GB HBM3"}],
           "versions": {"numpy": "2.5.2", "numba-cuda": "0.30.4", "jax": "0.11.2"}, "python": "3.12.3",
           "commit": "feedbeef", "preset": "gpu"}  # fmt: skip
CPU_BOX = {"cpu": "AMD EPYC 9654", "cores_logical": 8, "gpus": []}


def row(backend, batch, hidden, seconds, status="ok", reason="", repeat=0, dtype="float64", **extra):
    base = dict(backend=backend, dtype=dtype, batch=batch, hidden=hidden, iterations=10, repeat=repeat,
                seconds=seconds, seconds_e2e=seconds, compile_seconds=0.01, status=status, reason=reason,
                max_rel_error=1e-15, validated=status == "ok", threads="", machine="m", commit="c1",
                timestamp="2026-01-01T00:00:00+00:00")  # fmt: skip
    base.update(extra)
    return base


def gpu_box_rows(with_device: bool):
    """numba-parallel on the CPU: 1e-6 * N s/iteration (x10); jax on the GPU: flat 1e-4 (x10);
    numba-cuda on the GPU: flat 2e-4, except 1e-5 at N = 16384. So jax beats the CPU from N ~ 100."""
    rows = []
    for n in BATCHES:
        for b, t, dev in (("numba-parallel", 1e-6 * n, "cpu"), ("jax", 1e-4, "gpu"),
                          ("numba-cuda", 1e-5 if n == 16384 else 2e-4, "gpu")):  # fmt: skip
            for r in range(3):
                rows.append(row(b, n, 64, 10 * t, repeat=r, **({"device": dev} if with_device else {})))
    return rows


def write_old_layout(path, rows):
    header = [c for c in COLUMNS if c not in ADDED_COLUMNS]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- device column


def test_nominal_device_from_the_registry_and_the_fingerprint():
    assert nominal_device("numba-cuda", has_gpu=False) == "gpu"
    assert nominal_device("numpy", has_gpu=True) == "cpu"
    assert nominal_device("jax", has_gpu=True) == "gpu" and nominal_device("jax", has_gpu=False) == "cpu"
    assert nominal_device("torch", has_gpu=True) == "gpu" and nominal_device("torch-cudagraph", has_gpu=False) == "gpu"
    assert nominal_device("not-a-backend", has_gpu=True) == ""


def test_old_rows_get_their_device_derived_once_and_reported_devices_are_kept(tmp_path):
    path = tmp_path / "runs.csv"
    write_old_layout(path, [row("jax", 4, 4, 0.1), row("numpy", 4, 4, 0.2)])
    frame, bad = read_runs(path)
    assert bad == [] and list(frame["device"]) == ["", ""]
    assert list(fill_device(frame, GPU_BOX)["device"]) == ["gpu", "cpu"]
    assert list(fill_device(frame, CPU_BOX)["device"]) == ["cpu", "cpu"]
    append_rows(path, [row("jax", 16, 4, 0.1, device="cpu")])  # upgrades the file, then appends
    frame, _ = read_runs(path)
    assert list(fill_device(frame, GPU_BOX)["device"]) == ["gpu", "cpu", "cpu"]  # the reported one stays


def test_a_device_that_is_neither_cpu_nor_gpu_is_a_bad_line(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, [row("jax", 4, 4, 0.1, device="gpu")])
    with pytest.raises(ResultsError, match="tpu"):  # the writer refuses what the reader would
        append_rows(path, [row("jax", 16, 4, 0.1, device="tpu")])
    good = path.read_text().splitlines()[-1]
    with path.open("a") as f:  # a file written by something else
        f.write(good.replace(",gpu,", ",tpu,").replace(",4,4,", ",16,4,") + "\n")
    frame, bad = read_runs(path)
    assert bad == [3] and list(frame["device"]) == ["gpu"]


def test_every_row_a_sweep_writes_has_a_device(tmp_path):
    """A real (tiny) sweep in a subprocess: ran, unavailable and budget-skipped rows all say cpu or gpu."""
    env = {"NNBENCH_PLUGINS": "fake-unavailable=tests.fakes.unavailable", "PYTHONPATH": "."}
    import os

    done = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--preset", "quick", "--backends", "numpy,numba-cuda,fake-unavailable",
         "--batch", "4", "--hidden", "4", "--out", str(tmp_path), "--machine", "box", "--no-plots", "--no-progress",
         "--no-ceilings"],
        capture_output=True, text=True, env={**os.environ, **env, "NUMBA_ENABLE_CUDASIM": "0"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame, _ = read_runs(tmp_path / "box" / "runs.csv")
    devices = dict(zip(frame["backend"], frame["device"]))
    assert devices["numpy"] == "cpu" and devices["numba-cuda"] == "gpu" and devices["fake-unavailable"] == "cpu"


# ----------------------------------------------------------------------------- importing


def make_source(tmp_path, name="box-export"):
    source = tmp_path / name
    source.mkdir()
    (source / "machine.json").write_text(json.dumps(GPU_BOX))
    write_old_layout(source / "runs-a.csv", gpu_box_rows(with_device=False))
    # a second file re-measuring one point at the same commit (left out) and adding another
    write_old_layout(source / "runs-b.csv", [row("jax", 4, 64, 5.0), row("jax", 4, 4096, 0.5)])
    (source / "README.md").write_text("how it was measured\n")
    return source


def test_import_names_the_machine_by_the_fingerprint_rule_and_keeps_provenance(tmp_path):
    source = make_source(tmp_path)
    report = importing.import_results(source, tmp_path / "results", note="measured with a shim")
    assert report.machine == "xeon-gold-6430-32c-h100"
    target = tmp_path / "results" / report.machine
    frame, bad = read_runs(target / "runs.csv")
    assert bad == [] and len(frame) == len(gpu_box_rows(False)) + 1
    assert report.shadowed == {"runs-b.csv": 1}  # jax 4 x 64 came from runs-a.csv
    assert frame[(frame["backend"] == "jax") & (frame["batch"] == 4) & (frame["hidden"] == 64)]["seconds"].max() < 1
    assert set(zip(frame["backend"], frame["device"])) == {("numba-parallel", "cpu"), ("jax", "gpu"), ("numba-cuda", "gpu")}
    assert set(frame[frame["backend"] == "jax"]["library"]) == {"jax 0.11.2"}
    assert set(frame[frame["backend"] == "numba-parallel"]["library"]) == {""}  # numba not in the versions
    fingerprint = json.loads((target / "machine.json").read_text())
    assert fingerprint["cpu"] == GPU_BOX["cpu"]
    assert fingerprint["imported"][0]["note"] == "measured with a shim"
    assert (target / "imported" / "box-export" / "README.md").read_text() == "how it was measured\n"
    # the same folder again: nothing appended, provenance not repeated
    again = importing.import_results(source, tmp_path / "results", note="measured with a shim")
    assert again.appended == 0 and again.already == len(frame)
    assert len(read_runs(target / "runs.csv")[0]) == len(frame)
    assert len(json.loads((target / "machine.json").read_text())["imported"]) == 1


def test_imported_values_round_trip_exactly(tmp_path):
    source = make_source(tmp_path)
    report = importing.import_results(source, tmp_path / "results")
    original = list(csv.DictReader(open(source / "runs-a.csv")))
    imported = list(csv.DictReader(open(report.runs)))
    for a, b in zip(original, imported):
        assert {k: a[k] for k in a} == {k: b[k] for k in a}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda s: (s / "machine.json").unlink(), "no machine.json"),
        (lambda s: (s / "machine.json").write_text("{bad"), "not valid JSON"),
        (lambda s: (s / "machine.json").write_text(json.dumps({"gpus": []})), "cannot name the machine"),
        (lambda s: [p.unlink() for p in s.glob("runs*.csv")], "no runs\\*.csv"),
        (lambda s: (s / "runs-a.csv").write_text("a,b\n1,2\n"), "missing columns"),
    ],
)
def test_a_bad_source_is_one_line_exit_2_and_writes_nothing(tmp_path, setup, message):
    source = make_source(tmp_path)
    setup(source)
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness", "import-results", str(source), "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_import_refuses_a_bad_machine_name(tmp_path):
    source = make_source(tmp_path)
    done = subprocess.run([sys.executable, "-m", "harness", "import-results", str(source), "--machine", "../x"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "use letters, digits" in done.stderr


# ----------------------------------------------------------------------------- comparison


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    gpu = root / "gpubox"
    gpu.mkdir()
    (gpu / "machine.json").write_text(json.dumps(GPU_BOX))
    write_old_layout(gpu / "runs.csv", gpu_box_rows(with_device=False))  # devices derived from machine.json
    cpu = root / "cpubox"
    rows = [row("numba-parallel", n, 64, 10 * 4e-6 * n, repeat=r, device="cpu") for n in BATCHES for r in range(3)]
    rows += [row("numba-cuda", n, 64, "", status="skipped", reason="unavailable: no CUDA GPU", device="gpu") for n in BATCHES]
    append_rows(cpu / "runs.csv", rows)
    (cpu / "machine.json").write_text(json.dumps(CPU_BOX))
    messages = []
    written = draw_all(root, log=messages.append)
    return root, written, "\n".join(messages)


def test_pair_crossovers_read_the_device_column(two_machines):
    root, _, _ = two_machines
    table = pd.read_csv(root / "plots" / "crossovers.csv")
    pairs = {(r.gpu_machine, r.cpu_machine): r for r in table.itertuples()}
    assert set(pairs) == {("gpubox", "gpubox"), ("gpubox", "cpubox")}  # cpubox has no GPU times
    # same machine: jax (1e-4) vs numba-parallel (1e-6 N): crosses at N = 100 exactly (log-log)
    assert math.isclose(pairs[("gpubox", "gpubox")].crossover_batch, 100, rel_tol=1e-9)
    # against the slower CPU box (4e-6 N): N = 25
    assert math.isclose(pairs[("gpubox", "cpubox")].crossover_batch, 25, rel_tol=1e-9)
    same = table[(table["gpu_machine"] == "gpubox") & (table["cpu_machine"] == "gpubox")]
    assert same["at_N=max"].iloc[0] == "16384: numba-cuda 10 us vs numba-parallel 16.4 ms"
    text = (root / "plots" / "crossovers.md").read_text()
    assert "| gpubox | cpubox | float64 | 64 | 25 |" in text


def test_fastest_backend_per_point():
    summary = pd.DataFrame({"dtype": ["float64"] * 4, "batch": [4, 4, 64, 64], "hidden": [4] * 4,
                            "backend": ["a", "b", "a", "b"], "median": [1.0, 2.0, 3.0, 0.5]})  # fmt: skip
    best = compare.fastest(summary)
    assert list(zip(best["batch"], best["backend"])) == [(4, "a"), (64, "b")]


def test_make_plots_draws_both_machines_and_the_comparison(two_machines):
    root, written, log = two_machines
    names = {p.relative_to(root).as_posix() for p in written}
    assert {"plots/fastest_float64.png", "plots/fastest_float64.svg", "plots/crossovers.md",
            "gpubox/README.md", "cpubox/README.md", "gpubox/plots/summary.md"} <= names  # fmt: skip
    svg = (root / "plots" / "fastest_float64.svg").read_text()
    assert "gpubox" in svg and "cpubox" in svg and "jax GPU" in svg
    assert "numba-cuda (skipped: unavailable: no CUDA GPU)" in svg  # the absent backend is named


def test_generated_readme_says_what_was_skipped_and_why(two_machines):
    root, _, _ = two_machines
    text = (root / "cpubox" / "README.md").read_text()
    assert "AMD EPYC 9654" in text and "GPU: none" in text
    assert "| `numba-cuda` | gpu | not recorded | 0 of 4 |" in text
    assert "numba-cuda (skipped: unavailable: no CUDA GPU)" in text
    gpu = (root / "gpubox" / "README.md").read_text()
    assert "NVIDIA H100 80GB HBM3" in gpu and "| `jax` | gpu |" in gpu


def test_summary_counts_where_each_gpu_backend_is_fastest(two_machines):
    root, _, _ = two_machines
    text = (root / "gpubox" / "plots" / "summary.md").read_text()
    assert "| `numba-cuda` | 4 | 1 of 4 |" in text  # fastest GPU backend only at N = 16384
    assert "| `jax` | 4 | 3 of 4 |" in text


def test_import_keeps_the_better_measurement_of_each_ceiling_and_adds_those_the_folder_lacks(tmp_path):
    source = make_source(tmp_path)
    target = tmp_path / "results" / "xeon-gold-6430-32c-h100"
    target.mkdir(parents=True)
    older = {**GPU_BOX, "ceilings": {"sigmoid_per_s_float64": 1.0e9, "threads": 32}}
    (target / "machine.json").write_text(json.dumps(older))
    newer = {**GPU_BOX, "ceilings": {"sigmoid_per_s_float64": 2.0e9, "sigmoid_latency_s_float64": 2.0e-8, "threads": 32}}
    (source / "machine.json").write_text(json.dumps(newer))
    importing.import_results(source, tmp_path / "results")
    ceilings = json.loads((target / "machine.json").read_text())["ceilings"]
    assert ceilings == {"sigmoid_per_s_float64": 2.0e9, "sigmoid_latency_s_float64": 2.0e-8, "threads": 32}
    slower = {**GPU_BOX, "ceilings": {"sigmoid_per_s_float64": 0.5e9, "sigmoid_latency_s_float64": 3.0e-8}}
    (source / "machine.json").write_text(json.dumps(slower))
    importing.import_results(source, tmp_path / "results")
    assert json.loads((target / "machine.json").read_text())["ceilings"] == ceilings  # the better of each kept
