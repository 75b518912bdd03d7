"""The sweep engine, tested with fake backends that are slow, wrong, crashing, hanging or greedy.

The sweeps of several points and backends are marked slow (more than ~5 s on 2 cores); the short
ones (one or two backends, one to four points) stay in the fast tier, end to end."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import backends
from backends.numpy_backend import Numpy
from harness import bench, plan, protocol, results, timing
from harness.bench import Plan, Preset, sweep
from harness.protocol import PointRequest, RepeatRequest

TINY = Preset(batch=(4, 16), hidden=(4, 8), dtypes=("float64",), repeats=2, min_time=0.002, point_budget=5.0,
              total_budget=120.0, validate_iterations=3)  # fmt: skip
REPO = Path(__file__).resolve().parent.parent


def run_sweep(tmp_path, names, preset=TINY, **kw) -> pd.DataFrame:
    plan = Plan(preset, names, tmp_path, "m", threads=1, timeout=kw.pop("timeout", 20.0), **kw)
    path = sweep(plan, log=lambda m: None, progress=False)
    frame, bad = results.read_runs(path)
    assert bad == []
    return frame


@pytest.mark.slow
def test_every_fault_is_recorded_and_other_points_survive(tmp_path, fakes):
    names = ["numpy", "fake-good", "fake-wrong", "fake-raise", "fake-abort", "fake-nan", "fake-hog", "fake-unavailable"]
    frame = run_sweep(tmp_path, names)
    status = frame.groupby("backend")["status"].agg(set).to_dict()
    assert status == {
        "numpy": {"ok"}, "fake-good": {"ok"}, "fake-wrong": {"invalid"}, "fake-raise": {"failed"},
        "fake-abort": {"crashed"}, "fake-nan": {"unhealthy"}, "fake-hog": {"failed"}, "fake-unavailable": {"skipped"},
    }  # fmt: skip
    points = 4
    ok = frame[frame["status"] == "ok"]
    assert len(ok[ok["backend"] == "numpy"]) == points * TINY.repeats
    assert ok["validated"].all() and (ok["max_rel_error"] <= 1e-10).all()
    assert (ok["seconds"] > 0).all() and (ok["seconds_e2e"] >= ok["seconds"]).all()
    assert (ok["compile_seconds"] > 0).all()
    reasons = frame.drop_duplicates("backend").set_index("backend")["reason"]
    assert "deliberate failure" in reasons["fake-raise"]
    assert "max relative error" in reasons["fake-wrong"]
    assert "memory" in reasons["fake-hog"].lower()
    assert "fake accelerator" in reasons["fake-unavailable"]
    assert "died" in reasons["fake-abort"]
    for backend, rows in frame[frame["status"] != "ok"].groupby("backend"):
        assert len(rows) == points, backend  # one row per point with its status: nothing dropped


def test_validation_covers_the_unlogged_path_that_is_timed(tmp_path, fakes):
    frame = run_sweep(tmp_path, ["numpy", "fake-silent-wrong"])
    wrong = frame[frame["backend"] == "fake-silent-wrong"]
    assert set(wrong["status"]) == {"invalid"}
    assert wrong["reason"].str.contains("unlogged").all()


def test_the_timed_trajectory_is_certified_healthy_not_only_the_validated_one(tmp_path, fakes):
    frame = run_sweep(tmp_path, ["numpy", "fake-saturating"])  # validation: 3 iterations; the calibration reaches 10
    sick = frame[frame["backend"] == "fake-saturating"]
    assert set(sick["status"]) == {"unhealthy"} and sick["reason"].str.contains("subnormal").all()
    assert set(frame[frame["backend"] == "numpy"]["status"]) == {"ok"}


@pytest.mark.slow
def test_each_dtype_starts_in_a_fresh_process_and_the_cache_is_recorded(tmp_path, fakes):
    preset = Preset(batch=(4, 16), hidden=(4,), dtypes=("float64", "float32"), repeats=1, min_time=0.002,
                    point_budget=5.0, total_budget=120.0, validate_iterations=2)  # fmt: skip
    frame = run_sweep(tmp_path, ["numpy", "fake-compiles", "fake-good"], preset=preset)
    assert set(frame["status"]) == {"ok"}
    first = frame.groupby(["backend", "dtype"])["batch"].transform("min") == frame["batch"]
    assert (frame["fresh"] == first).all()  # the smallest point of each dtype: a new worker
    cache = frame.groupby("backend")["cache"].agg(set).to_dict()
    assert cache == {"numpy": {"none"}, "fake-compiles": {"cold"}, "fake-good": {"unknown"}}
    compiles = frame[frame["backend"] == "fake-compiles"]
    assert (compiles["compile_seconds"] >= 1.0).all()  # its one-second compile, on the timed path
    fresh = frame["fresh"] == True  # noqa: E712  (True, False or None)
    assert (frame.loc[fresh, "startup_seconds"] > 0).all() and frame.loc[~fresh, "startup_seconds"].isna().all()


def test_a_device_fault_is_recorded_and_the_worker_replaced(tmp_path, fakes):
    """A device error (a refused cooperative launch, device memory, a faulting kernel) is a
    crashed point with its reason; the worker that saw it ends, and a fresh one runs the rest."""
    frame = run_sweep(tmp_path, ["numpy", "fake-device-fault"])
    fault = frame[frame["backend"] == "fake-device-fault"]
    crashed = fault[fault["status"] == "crashed"]
    assert list(zip(crashed["batch"], crashed["hidden"])) == [(4, 4)]
    assert crashed["reason"].iloc[0].startswith("device fault: CudaAPIError")
    assert "COOPERATIVE_LAUNCH_TOO_LARGE" in crashed["reason"].iloc[0]
    ok = fault[fault["status"] == "ok"]
    assert set(zip(ok["batch"], ok["hidden"])) == {(4, 8), (16, 4), (16, 8)}


def test_every_row_names_the_library_that_ran_it(tmp_path, fakes):
    import numpy

    frame = run_sweep(tmp_path, ["numpy", "fake-good", "fake-unavailable"])
    library = frame.groupby("backend")["library"].agg(set).to_dict()
    assert library["numpy"] == {f"numpy {numpy.__version__}"}
    assert library["fake-good"] == {""}  # a plugin's library is not known
    assert library["fake-unavailable"] == {""}  # never started


@pytest.mark.slow
def test_a_hang_is_stopped_by_the_timeout(tmp_path, fakes):
    preset = Preset((4,), (4, 8), ("float64",), 2, 0.002, 0.1, 60.0, 2)
    start = time.monotonic()
    frame = run_sweep(tmp_path, ["numpy", "fake-hang"], preset, timeout=2.0)
    assert time.monotonic() - start < 40
    hang = frame[frame["backend"] == "fake-hang"]
    assert set(hang["status"]) == {"timeout"} and len(hang) == 2
    assert set(frame[frame["backend"] == "numpy"]["status"]) == {"ok"}


def test_a_backend_too_slow_for_the_budget_is_predicted_and_skipped(tmp_path, fakes):
    preset = Preset((1, 2, 256), (4,), ("float64",), 2, 0.001, 0.6, 60.0, 2)
    frame = run_sweep(tmp_path, ["fake-slow"], preset)
    by_batch = frame.drop_duplicates("batch").set_index("batch")
    assert by_batch.loc[1, "status"] == "ok"
    assert by_batch.loc[256, "status"] == "skipped"
    assert "predicted" in by_batch.loc[256, "reason"] and "budget" in by_batch.loc[256, "reason"]


@pytest.mark.slow
def test_compilation_on_the_timed_path_does_not_poison_the_budget_prediction(tmp_path, fakes):
    """A JIT that compiles again for the timed (unlogged) path must not be timed as one iteration."""
    preset = Preset((1, 2, 64), (4,), ("float64",), 2, 0.001, 4.0, 60.0, 2)
    frame = run_sweep(tmp_path, ["fake-compiles"], preset)
    assert set(frame["status"]) == {"ok"}, frame[["batch", "status", "reason"]]
    ok = frame.assign(per_iteration=frame["seconds"] / frame["iterations"])
    assert (ok["per_iteration"] < 0.1).all()


def test_one_slow_calibration_run_does_not_set_the_iteration_count(tmp_path, fakes):
    """A hiccup in the calibration's single iteration must not leave T at 1: every repeat would then
    be one iteration long, at the mercy of the next hiccup (seen: torch at 16 x 16 calibrated to T=6)."""
    preset = Preset((4,), (4,), ("float64",), 2, 0.02, 5.0, 60.0, 2)
    frame = run_sweep(tmp_path, ["fake-hiccup"], preset)
    assert set(frame["status"]) == {"ok"}
    # T comes from the fast single runs (~0.05 ms each: hundreds of iterations), not the 50 ms one (T=1)
    assert (frame["iterations"] > 20).all(), frame[["iterations", "seconds"]]


def test_wait_until_idle_waits_for_spinning_threads_only():
    """A process that burns CPU for 0.4 s after it starts (as BLAS pools do after a call) is waited for."""
    from harness.worker import wait_until_idle

    code = ("import time\nprint('spinning', flush=True)\nend = time.perf_counter() + 0.4\n"
            "while time.perf_counter() < end: pass\ntime.sleep(30)")  # fmt: skip
    spinner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout.readline() == "spinning\n"  # its start-up (quiet while it reads files) is over
        waited = wait_until_idle(spinner.pid, max_wait=5.0)
        assert 0.2 < waited < 4.0, waited  # it spins until ~0.4 s after start, then sleeps
        assert wait_until_idle(spinner.pid, max_wait=5.0) < 0.5  # now idle: one short window
        assert wait_until_idle(spinner.pid, max_wait=0.05) <= 0.2  # max_wait bounds the wait
    finally:
        spinner.kill()
        spinner.wait()
    assert wait_until_idle(spinner.pid, max_wait=1.0) < 0.5  # a process that is gone counts as idle


def test_the_last_worker_settles_before_another_backend_is_timed(tmp_path, fakes, monkeypatch):
    settled = []
    calls = []
    real_settle, real_call = bench.Worker.settle, bench.Worker.call

    def settle(self, max_wait=0.5):
        settled.append((len(calls), self.backend))
        return real_settle(self, max_wait)

    def call(self, request, timeout):
        if isinstance(request, (PointRequest, RepeatRequest)):
            calls.append(self.backend)
        return real_call(self, request, timeout)

    monkeypatch.setattr(bench.Worker, "settle", settle)
    monkeypatch.setattr(bench.Worker, "call", call)
    run_sweep(tmp_path, ["numpy", "fake-good"], Preset((4,), (4,), ("float64",), 3, 0.001, 5.0, 60.0, 2))
    # before every request that follows another backend's, that other backend was waited for
    switches = [i for i in range(1, len(calls)) if calls[i] != calls[i - 1]]
    assert switches and [(i, calls[i - 1]) for i in switches] == settled


class Huge(Numpy):
    """numpy declaring a peak memory no machine has: admission must refuse it before it runs."""

    NAME = "fake-huge"
    BYTES_PER_ELEMENT = 1e30


@pytest.fixture
def huge(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "fake-huge", __name__)
    return "fake-huge"


def test_memory_admission_uses_the_declared_estimate(tmp_path, huge, monkeypatch):
    assert plan.bytes_needed(huge, "float64", 4, 4) == Huge.memory_bytes("float64", 4, 4) == 16 * 1e30
    assert plan.bytes_needed("python", "float32", 4, 4) == backends.info("python").memory_bytes("float32", 4, 4)
    assert plan.memory_refusal("numpy", "float64", 4, 4) is None
    started = []
    monkeypatch.setattr(bench, "Worker", lambda *a, **k: started.append(a))  # admission comes first
    frame = run_sweep(tmp_path, [huge], Preset((4,), (4, 8), ("float64",), 1, 0.001, 5.0, 60.0, 2))
    assert list(frame["status"]) == ["skipped", "skipped"] and not started
    assert frame["reason"].str.contains("GiB available").all() and set(frame["device"]) == {"cpu"}


def test_run_and_the_sweep_share_the_first_call_logic(monkeypatch, capsys):
    """``run --json``'s cache and a sweep row's cache come from one function, timing.cache_state."""
    import json

    from harness.agreement import reference_result
    from harness.cli import main
    from harness.problems import scaled
    from harness.worker import _Runner

    seen = []

    def cache_state(backend, before, after):
        seen.append(backend.NAME)
        return "disk"

    monkeypatch.setattr(timing, "cache_state", cache_state)
    assert main(["run", "--backend", "numpy", "--problem", "scaled", "--batch", "4", "--hidden", "4", "--iterations", "3",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["cache"] == "disk" and seen == ["numpy"]
    reference = reference_result(scaled(4, 4, "float64", 0), 2, 1)
    request = PointRequest("numpy", "float64", 4, 4, 0, 2, 1, 0.001, 1 << 10, reference)
    calibrated = _Runner("numpy", 1).point(request)  # what the sweep's worker runs for a point
    assert isinstance(calibrated, protocol.Calibrated) and seen == ["numpy", "numpy"]
    job = bench.Point("float64", 4, 4, 2)
    job.calibrated["numpy"] = (protocol.Ready("numpy x", "cpu", 0.1), calibrated)
    run = bench.Sweep(Plan(TINY, ["numpy"], Path("."), "m"), "c")
    rows = bench._rows(run, job, {"numpy": [protocol.Timed(0.1, 0.1)]}, {}, log=lambda m: None)
    assert [(r.cache, r.fresh, r.startup_seconds, r.status) for r in rows] == [("disk", True, 0.1, results.Status.OK)]


def test_repeats_are_interleaved_across_backends(tmp_path, fakes, monkeypatch):
    calls = []
    real = bench.Worker.call

    def spy(self, request, timeout):
        if isinstance(request, RepeatRequest):
            calls.append(self.backend)
        return real(self, request, timeout)

    monkeypatch.setattr(bench.Worker, "call", spy)
    run_sweep(tmp_path, ["numpy", "fake-good"], Preset((4,), (4,), ("float64",), 4, 0.001, 5.0, 60.0, 2))
    rounds = [calls[i : i + 2] for i in range(0, len(calls), 2)]
    assert len(rounds) == 4 and all(sorted(r) == ["fake-good", "numpy"] for r in rounds)


def test_resume_skips_finished_points_and_fresh_reruns(tmp_path):
    first = run_sweep(tmp_path, ["numpy"])
    again = run_sweep(tmp_path, ["numpy"])  # everything done for this commit: nothing appended
    assert len(again) == len(first)
    fresh = run_sweep(tmp_path, ["numpy"], resume=False)
    assert len(fresh) == 2 * len(first)


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_killed_sweep_leaves_valid_csv_and_resume_completes_it(tmp_path, fakes):
    """SIGKILL mid-sweep: every finished point is intact, no partial line; a rerun adds only the rest."""
    env = dict(os.environ)
    args = ["bench", "--preset", "quick", "--backends", "fake-slow,numpy", "--batch", "1,2,3,4,5,6", "--hidden", "2",
            "--out", str(tmp_path), "--machine", "m", "--no-plots", "--no-progress", "--no-ceilings", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    runs = tmp_path / "m" / "runs.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if runs.exists() and runs.read_text().count("\n") >= 3 * 2 + 1:  # header + two points
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    text = runs.read_text()
    assert text.endswith("\n")
    before, bad = results.read_runs(runs)
    assert bad == [] and 0 < before[["batch"]].drop_duplicates().shape[0] < 6
    done = set(before["batch"])
    finished = _cli(*args)
    assert finished.returncode == 0, finished.stderr
    assert "already in" in finished.stderr
    after, bad = results.read_runs(runs)
    assert bad == []
    per_point = after.groupby(["backend", "batch"]).size()
    assert set(after["batch"]) == {1, 2, 3, 4, 5, 6}
    assert (per_point == 3).all(), per_point  # quick preset: 3 repeats, each point exactly once
    assert set(after[after["batch"].isin(done)]["timestamp"]) <= set(before["timestamp"])
