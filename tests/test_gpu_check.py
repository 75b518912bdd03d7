"""``make gpu-check`` (harness.gpu_check) without a GPU: the watchdog that turns a hung test into a
failed one, the step budgets, the path where there is no CUDA device, and the output folder, with
fake tests, fake children and fake backends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from backends.base import TrainResult
from harness import gpu_check
from harness.gpu_check import Check, StepResult, run_check, run_parallel, watch_pytest
from harness.plan import PRESETS, grid

ROOT = Path(__file__).resolve().parent.parent

FAKE_TESTS = """
import os
import signal
import subprocess
import sys
import time

import pytest


def test_a_passes():
    pass


def test_b_fails():
    assert 1 == 2, "deliberately wrong"


def test_c_hangs_in_a_c_call():
    time.sleep(60)


def test_d_hangs_ignoring_sigalrm_and_sigterm():
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.environ["FAKE_PIDS"], "a") as fh:
        fh.write(f"{os.getpid()} {child.pid}\\n")
    signal.alarm(1)  # what an in-process timeout would rely on: ignored here
    while True:
        time.sleep(0.05)


def test_e_crashes():
    os._exit(3)


def test_f_skips():
    pytest.skip("not here")


def test_g_runs_after_the_hangs():
    pass
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to read its status counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _env(**extra: str) -> dict:
    return {**Check(Path(".")).env(), **gpu_check.TESTS_ENV, **extra}


PYTEST_ARGS = ["-p", "no:cacheprovider", "-o", "addopts=", "-q"]


def test_hung_and_crashed_tests_are_failures_and_the_others_still_run(tmp_path):
    (tmp_path / "test_fake.py").write_text(FAKE_TESTS)
    pids = tmp_path / "pids"
    lines = []
    start = time.monotonic()
    watched = watch_pytest([*PYTEST_ARGS, str(tmp_path / "test_fake.py")], tmp_path / "out", lambda nodeid: 1.5,
                           start + 60, _env(FAKE_PIDS=str(pids)), log=lines.append)  # fmt: skip
    outcomes = {nodeid.split("::")[1]: r.outcome for nodeid, r in watched.records.items()}
    assert outcomes == {"test_a_passes": "passed", "test_b_fails": "failed", "test_c_hangs_in_a_c_call": "timeout",
                        "test_d_hangs_ignoring_sigalrm_and_sigterm": "timeout", "test_e_crashes": "crashed",
                        "test_f_skips": "skipped", "test_g_runs_after_the_hangs": "passed"}  # fmt: skip
    assert list(outcomes) == sorted(outcomes)  # in the order collected
    assert watched.attempts == 4 and watched.outcome == "failed"
    records = {nodeid.split("::")[1]: r for nodeid, r in watched.records.items()}
    assert "deliberately wrong" in records["test_b_fails"].detail
    assert (
        "ran past its 1.5 s timeout" in records["test_c_hangs_in_a_c_call"].detail
        and records["test_c_hangs_in_a_c_call"].attempt == 1
    )
    assert records["test_e_crashes"].attempt == 3 and "status 3" in records["test_e_crashes"].detail
    assert (
        records["test_f_skips"].detail == "Skipped: not here"
        and records["test_g_runs_after_the_hangs"].attempt == 4
    )
    # the hung pytest and the process its test started were killed with the group
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid)
    out = tmp_path / "out"
    assert not (out / "junit-1.xml").exists()  # killed attempts write no XML ...
    assert "test_g_runs_after_the_hangs" in (out / "junit-4.xml").read_text()  # ... a finished one does
    assert (out / "deselect-4.txt").read_text().count("\n") == 5  # a to e had an outcome before attempt 4
    assert any("TIMEOUT" in line and "test_c_hangs" in line for line in lines)
    assert time.monotonic() - start < 30


def test_the_steps_budget_ends_a_hung_run_and_the_rest_are_not_run(tmp_path):
    (tmp_path / "test_fake.py").write_text(FAKE_TESTS)
    start = time.monotonic()
    watched = watch_pytest([*PYTEST_ARGS, str(tmp_path / "test_fake.py"), "-k", "test_a or test_c or test_g"],
                           tmp_path / "out", lambda nodeid: 600.0, start + 3.0, _env(), log=lambda _: None)  # fmt: skip
    assert time.monotonic() - start < 8
    outcomes = {nodeid.split("::")[1]: (r.outcome, r.detail) for nodeid, r in watched.records.items()}
    assert list(outcomes) == [
        "test_a_passes",
        "test_c_hangs_in_a_c_call",
        "test_g_runs_after_the_hangs",
    ]  # -k's
    assert outcomes["test_a_passes"][0] == "passed"
    assert outcomes["test_c_hangs_in_a_c_call"] == ("timeout", "still running when the step's budget ran out")
    assert outcomes["test_g_runs_after_the_hangs"] == ("not run", "not run: the step's budget ran out")
    assert watched.outcome == "timeout" and watched.attempts == 1


def test_jobs_run_in_order_at_most_n_at_once_until_the_deadline(tmp_path):
    py = sys.executable
    hang = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    jobs = {"quick": ([py, "-c", "print('hi')"], tmp_path / "quick.log", None),
            "failing": ([py, "-c", "raise SystemExit(4)"], tmp_path / "failing.log", None),
            "hung": ([py, "-c", hang], tmp_path / "hung.log", None),
            "late": ([py, "-c", "pass"], tmp_path / "late.log", None)}  # fmt: skip
    start = time.monotonic()
    ran = run_parallel(jobs, 2, start + 2.0, _env())
    assert time.monotonic() - start < 6
    assert ran["quick"].rc == 0 and ran["failing"].rc == 4 and (tmp_path / "quick.log").read_text() == "hi\n"
    assert ran["hung"].timed_out and ran["hung"].rc is None
    assert ran["late"].rc == 0  # started when one of the first two ended: two at a time
    ran = run_parallel({"hung": jobs["hung"], "late": jobs["late"]}, 1, time.monotonic() + 0.5, _env())
    assert ran["hung"].timed_out and not ran["late"].started


def test_budgets_roll_over_and_the_exit_status_says_what_failed(tmp_path, monkeypatch):
    seen = {}

    def step(name, outcome="ok", seconds=0.0):
        def run(check, deadline):
            seen[name] = deadline - time.monotonic()
            time.sleep(seconds)
            if outcome == "raise":
                raise RuntimeError("a defect")
            return StepResult(outcome, f"{name} {outcome}")

        return run

    functions = {name: step(name) for name in gpu_check.STEPS}
    monkeypatch.setattr(gpu_check, "STEP_FUNCTIONS", functions)
    budgets = {name: 10.0 for name in gpu_check.STEPS}
    lines = []
    check = Check(
        tmp_path / "a", dict(budgets), find_device=lambda: "Fake GPU, 1.0, 80 GiB", log=lines.append
    )
    assert run_check(check) == gpu_check.EXIT_OK
    # a step that took no time leaves its budget to the next: 10, 20, 30, ...
    assert [round(seen[name]) for name in gpu_check.STEPS] == [10, 20, 30, 40, 50]
    summary = (tmp_path / "a" / "summary.txt").read_text()
    assert summary.splitlines()[0].split() == ["step", "outcome", "seconds", "budget", "detail"]
    assert "exit status 0" in summary and "every step ok" in lines[-1]

    functions.update(validate=step("validate", "failed"), sweep=step("sweep", "raise"))
    check = Check(
        tmp_path / "b", dict(budgets), find_device=lambda: "Fake GPU, 1.0, 80 GiB", log=lines.append
    )
    assert run_check(check, ["validate", "sweep"]) == gpu_check.EXIT_FAILED
    saved = json.loads((tmp_path / "b" / "gpu-check.json").read_text())
    assert list(saved["steps"]) == ["discover", "validate", "sweep"] and saved["exit_status"] == 1
    assert saved["steps"]["sweep"]["outcome"] == "failed"
    assert saved["steps"]["sweep"]["detail"] == "the step itself failed: RuntimeError: a defect"
    check = Check(
        tmp_path / "t", dict(budgets), find_device=lambda: "Fake GPU, 1.0, 80 GiB", log=lines.append
    )
    assert run_check(check, ["tests"]) == gpu_check.EXIT_OK  # no backend to find: no discover step
    assert list(json.loads((tmp_path / "t" / "gpu-check.json").read_text())["steps"]) == ["tests"]

    def interrupted(check, deadline):
        raise KeyboardInterrupt

    functions.update(tests=interrupted)
    check = Check(
        tmp_path / "c", dict(budgets), find_device=lambda: "Fake GPU, 1.0, 80 GiB", log=lines.append
    )
    assert run_check(check) == gpu_check.EXIT_INTERRUPTED
    saved = json.loads((tmp_path / "c" / "gpu-check.json").read_text())
    assert saved["steps"]["tests"]["outcome"] == "interrupted" and "validate" not in saved["steps"]


def test_without_a_cuda_device_every_step_is_skipped_and_the_exit_status_is_3(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH without nvidia-smi
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, env={**_env(), "PATH": str(empty)}, timeout=60)  # fmt: skip
    assert proc.returncode == gpu_check.EXIT_NO_DEVICE, proc.stderr
    saved = json.loads((out / "gpu-check.json").read_text())
    assert saved["exit_status"] == 3 and saved["gpu"] is None
    assert {name: step["outcome"] for name, step in saved["steps"].items()} == dict.fromkeys(
        gpu_check.STEPS, "skipped"
    )
    assert all(step["detail"] == gpu_check.NO_DEVICE for step in saved["steps"].values())
    assert sorted(p.name for p in out.iterdir()) == ["environment.json", "gpu-check.json", "summary.txt"]
    assert "pytest" in json.loads((out / "environment.json").read_text())["packages"]
    assert "exit status 3: nothing checked" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--steps", "tests,nope"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr


FAKE_PYTHON = """#!{python}
# Stands in for the machine's python3 in harness.gpu_check's children: answers as each child would.
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
if args[:2] == ["-m", "pytest"]:
    os.execv({python!r}, [{python!r}, *args])
if args[0] == "-c" and "availability" in args[1]:
    name = args[2]
    answers = {{"fake-gpu-a": (None, "gpu"), "fake-gpu-b": ("package 'fakelib' not installed", None),
               "fake-gpu-c": (None, "cpu")}}
    why, where = answers[name]
    print(json.dumps({{"name": name, "unavailable": why, "runs_on": where, "library": "fakelib 1.0"}}))
elif args[0] == "-c" and "probe_main" in args[1]:
    for forced, us in (("block", 3.0), ("grid", 2.0)):
        print(json.dumps({{"backend": args[2], "dtype": "float64", "batch": 256, "hidden": 4, "auto_path": "grid",
                          "forced": forced, "path": forced, "threads": 256, "blocks": 1 if forced == "block" else 132,
                          "cooperative_cap": None if forced == "block" else 264, "launch_bound": [256, 1],
                          "registers": 96, "spill_bytes": 0, "predicted_us": us, "measured_us": us * 1.5,
                          "iterations": 200, "finite": True}}))
elif args[:3] == ["-m", "harness", "validate"]:
    name = args[4]
    print(f"{{'backend':<15}} case")
    print(f"{{name:<15}} xor2[N=4,3x1,float64,T=10000]  1.00e-16  ok (<= 1e-10)")
    print("all available backends agree")
elif args[:3] == ["-m", "harness", "bench"]:
    folder = Path(args[args.index("--out") + 1]) / "fake-machine"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runs.csv").write_text("backend,dtype,batch,hidden,status\\n" + "".join(
        f"fake-gpu-a,float64,{{n}},4,ok\\n" for n in (256, 4096)) + "fake-gpu-a,float64,65536,4,skipped\\n")
    (folder / "machine.json").write_text(json.dumps({{"ceilings": {{}}}}))
    print(f"results: {{folder / 'runs.csv'}}")
else:
    sys.exit(f"unexpected arguments {{args}}")
"""


def test_every_step_writes_into_one_folder(tmp_path, monkeypatch):
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    monkeypatch.setattr(gpu_check, "TEST_FILES", {str(tmp_path / "test_ok.py"): 30.0})
    monkeypatch.setattr(gpu_check, "gpu_declared", lambda: ["fake-gpu-a", "fake-gpu-b", "fake-gpu-c"])
    monkeypatch.setattr(
        gpu_check, "compiler_backends", lambda names: [n for n in names if n in ("fake-gpu-a", "fake-gpu-b")]
    )
    lines = []
    out = tmp_path / "out"
    check = Check(out, python=str(python), find_device=lambda: "Fake GPU, 1.0, 80 GiB", log=lines.append)
    assert run_check(check) == gpu_check.EXIT_OK, "\n".join(lines)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"gpu-check.json", "summary.txt", "environment.json", "discover/fake-gpu-a.txt", "tests/summary.csv",
            "tests/failures.txt", "tests/pytest-1.log", "tests/progress-1.jsonl", "tests/junit-1.xml",
            "validate/fake-gpu-a.txt", "sweep.log", "fake-machine/runs.csv", "fake-machine/machine.json",
            "probes.csv", "probes.txt", "probes/fake-gpu-a.jsonl"} <= files  # fmt: skip
    assert not any(f.startswith("validate/fake-gpu-b") or f.startswith("validate/fake-gpu-c") for f in files)
    saved = json.loads((out / "gpu-check.json").read_text())
    assert saved["gpu_backends"] == ["fake-gpu-a"]
    assert saved["left_out"] == {"fake-gpu-b": "unavailable: package 'fakelib' not installed",
                                 "fake-gpu-c": "runs on the cpu here"}  # fmt: skip
    steps = saved["steps"]
    assert {name: step["outcome"] for name, step in steps.items()} == dict.fromkeys(gpu_check.STEPS, "ok")
    assert steps["tests"]["detail"].startswith("1 passed in 1 pytest attempt")
    assert steps["validate"]["records"][0]["detail"] == "1 cases, no disagreement"
    assert steps["sweep"]["detail"] == "backend-points: 2 ok, 1 skipped (fake-machine/runs.csv)"
    assert "left out: fake-gpu-b (unavailable: package 'fakelib' not installed)" in steps["probes"]["detail"]
    table = (out / "probes.txt").read_text().splitlines()
    assert table[0].split()[:3] == ["backend", "dtype", "N"] and len(table) == 3
    assert table[2].split()[4:10] == ["grid", "grid", "256", "132", "264", "256,1"]
    csv_lines = (out / "probes.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(gpu_check.PROBE_COLUMNS) and len(csv_lines) == 3


SELECTION = """
import pytest

@pytest.mark.parametrize("name", ["numpy", "python", "not-a-backend"])
def test_by_backend(name):
    pass

def test_plain():
    pass

@pytest.mark.parametrize("x", [1, 2])
def test_left_out(x):
    pass

def test_left_out_not():
    pass
"""


def test_the_test_selection_keeps_the_gpu_cases(tmp_path):
    for name in ("test_sel.py", "test_only.py"):
        (tmp_path / name).write_text(SELECTION)
    progress = tmp_path / "progress.jsonl"
    subprocess.run([sys.executable, "-m", "pytest", "-p", gpu_check.PLUGIN, f"--watchdog-progress={progress}",
                    *PYTEST_ARGS, f"--rootdir={tmp_path}", "--collect-only", "--watchdog-backends=numpy", "--watchdog-backend-only=test_only.py",
                    "--watchdog-exclude=test_sel.py::test_left_out", str(tmp_path / "test_sel.py"),
                    str(tmp_path / "test_only.py")], cwd=ROOT, env=_env(), capture_output=True, timeout=60)  # fmt: skip
    nodeids = json.loads(progress.read_text().splitlines()[0])["nodeids"]
    assert nodeids == [
        "test_sel.py::test_by_backend[numpy]",  # python: a backend not kept; not-a-backend: no backend
        "test_sel.py::test_by_backend[not-a-backend]",
        "test_sel.py::test_plain",
        "test_sel.py::test_left_out_not",  # test_left_out's items excluded, not those of a longer name
        "test_only.py::test_by_backend[numpy]",  # in a backend-only file: only the kept backends' items
    ]


def test_the_gpu_tests_leave_the_agreement_cases_to_validate():
    args = gpu_check.pytest_arguments(Check(Path(".")))
    assert args[-len(gpu_check.TEST_FILES) :] == list(gpu_check.TEST_FILES)
    assert all((ROOT / f).exists() for f in gpu_check.TEST_FILES)
    import tests.test_agreement as agreement

    for nodeid in gpu_check.AGREEMENT_LEFT_OUT:
        path, function = nodeid.split("::")
        assert path == gpu_check.AGREEMENT and callable(getattr(agreement, function))
        assert f"--watchdog-exclude={nodeid}" in args
    backends_arg = next(a for a in args if a.startswith("--watchdog-backends="))
    assert "numpy" not in backends_arg.split("=")[1].split(",") and backends_arg.count(",") >= 1


class FakePlan:
    """A plan module whose block/grid switch is at N*H > 4096."""

    FORCE_PATH = None

    class _Layout:
        def __init__(self, path):
            self.path = path

    @classmethod
    def plan(cls, sizes, N, itemsize, props):
        return cls._Layout(cls.FORCE_PATH or ("block" if N * sizes[1] <= 4096 else "grid"))


def test_the_probes_straddle_the_switch_and_force_each_path():
    batches = (4, 16, 64, 256, 1024, 4096)
    assert gpu_check.switch_sizes(FakePlan, {}, 8, widths=(4, 64), batches=batches) == [
        (256, 4), (1024, 4), (4096, 4),  # the first grid size is the last: two before it, itself
        (16, 64), (64, 64), (256, 64), (1024, 64),  # two on each side
    ]  # fmt: skip
    assert gpu_check.switch_sizes(FakePlan, {}, 8, widths=(4,), batches=(4, 16, 64)) == [
        (16, 4),
        (64, 4),
    ]  # no switch
    assert gpu_check.switch_sizes(FakePlan, {}, 8, widths=(4,), batches=(2048, 4096, 8192)) == [
        (2048, 4),
        (4096, 4),
    ]

    class FakeCuda:
        NAME = "fake-cuda"

        def __init__(self):
            self.forced = []
            self.runs = 0

        def device_properties(self):
            return {}

        def prepare(self, problem):
            self.forced.append(FakePlan.FORCE_PATH)
            if FakePlan.FORCE_PATH == "grid" and problem.dtype == "float32":
                raise ValueError("no cooperative launch\nsecond line")
            return {"path": FakePlan.FORCE_PATH}

        def run(self, state, iterations, log_every):
            self.runs += 1

        def fetch(self, state):
            return TrainResult([np.ones(2)], np.empty(0))

        def describe(self, state):
            return {"path": state["path"], "threads": 256, "blocks": 1, "cooperative_cap": None,
                    "launch_bound": (256, 1), "registers": 40, "spill_bytes": 0, "predicted_us": 1.0}  # fmt: skip

    backend = FakeCuda()
    rows = list(gpu_check.probe_rows(backend, FakePlan, iterations=10, repeats=2))
    assert FakePlan.FORCE_PATH is None  # reset after every probe
    assert len(rows) == 2 * len(gpu_check.switch_sizes(FakePlan, {}, 8)) * 2
    assert backend.forced == [row["forced"] for row in rows] == ["block", "grid"] * (len(rows) // 2)
    good = [r for r in rows if not r.get("error")]
    assert all(r["path"] == r["forced"] and r["measured_us"] > 0 and r["finite"] for r in good)
    bad = [r for r in rows if r.get("error")]
    assert bad and all(r["dtype"] == "float32" and r["forced"] == "grid" for r in bad)
    assert bad[0]["error"] == "ValueError: no cooperative launch"
    assert backend.runs == len(good) * 3  # one warm-up run and two timed ones per probe
    table = gpu_check.probe_table(rows[:2] + bad[:1])
    assert "error: ValueError: no cooperative launch" in table.splitlines()[-1]


def test_the_gpu_presets_fit_their_commands():
    check = PRESETS["gpu-check"]
    assert len(check.batch) == 3 and len(check.hidden) == 3 and check.dtypes == ("float64", "float32")
    assert len(grid(check)) == 18 and check.total_budget + 45 <= gpu_check.BUDGETS["sweep"]
    whole, first, second = PRESETS["gpu"], PRESETS["gpu-1"], PRESETS["gpu-2"]
    assert first.batch + second.batch == whole.batch and first.hidden == second.hidden == whole.hidden
    assert first.total_budget + 2 * 60 < 9 * 60 and second.total_budget == first.total_budget
    assert sum(gpu_check.BUDGETS.values()) <= 450


def test_a_probe_of_the_real_cuda_backend_has_every_column():
    """The probes against ``CudaBackend.describe`` and ``_cuda_plan.FORCE_PATH`` themselves (under
    the simulator in `make test`): one size, each path forced, one short timed run."""
    from backends import _cuda_plan
    from tests.helpers import usable

    backend = usable("numba-cuda")
    rows = list(gpu_check.probe_rows(backend, _cuda_plan, ("float64",), 1, 1, widths=(4,), batches=(4,)))
    assert [(r["batch"], r["hidden"], r["forced"], r.get("path")) for r in rows] == [
        (4, 4, "block", "block"),
        (4, 4, "grid", "grid"),
    ]
    assert all(not r.get("error") and r["finite"] and r["measured_us"] > 0 for r in rows), rows
    assert set(gpu_check.PROBE_COLUMNS) - {"error"} <= set(rows[0]) and _cuda_plan.FORCE_PATH is None
    assert rows[1]["blocks"] >= 1 and rows[1]["cooperative_cap"] >= 1 and rows[0]["predicted_us"] > 0
