"""One suite over every registered backend: agreement with the float64 NumPy reference.

Unavailable backends are skipped with their reason (e.g. cupy without a GPU); the CUDA backend
runs under NUMBA_ENABLE_CUDASIM=1 in `make test`, on shortened cases (the simulator runs each GPU
thread as a Python thread).
"""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import backends
from backends.base import DEVICES, LEVELS, Backend, Problem, UnsupportedProblem, train
from harness.agreement import TOLERANCE, case_reference, check, max_relative_error, reference_result
from harness.problems import Case, scaled, seed_case, validation_cases, xor2
from tests.helpers import (
    PER_SHAPE_COMPILERS,
    XOR2_UPDATES,
    assert_xor2_published,
    assert_xor3_published,
    fast_tier,
    usable,
)

BACKENDS = backends.names()
CASES = validation_cases(quick=True)
SEED_XOR3 = next(c for c in CASES if c.problem.name == "xor3" and c.problem.dtype == "float64")
assert (SEED_XOR3.iterations, SEED_XOR3.log_every) == (60000, 10000)  # the published run
# The fast tier keeps, per backend and dtype, the seed problems, N = 1 with H = 1, an odd size, 5
# inputs with 2 outputs and the 2-layer net; the other sizes run in the full suite.
# The backends that compile per shape keep only the float64 xor2 seed run there (helpers.PER_SHAPE_COMPILERS).
FAST = {(1, 1), (17, 33), (9, 6), (13, 1), (4, 4), (4, 1)}
SEED_XOR2 = next(c for c in CASES if c.problem.name == "xor2" and c.problem.dtype == "float64")


def _in_fast_tier(name: str, case: Case) -> bool:
    if name in PER_SHAPE_COMPILERS:
        return case is SEED_XOR2
    return (case.problem.batch, case.problem.sizes[1]) in FAST


AGREEMENT_PARAMS = [pytest.param(name, c, id=f"{name}-{c.label}", marks=() if _in_fast_tier(name, c) else pytest.mark.slow)
                    for name in BACKENDS for c in CASES]  # fmt: skip


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_declares_what_the_reports_need(name):
    """Every registered backend's file imports here (its optional library is imported on first
    use) and declares, on its class, what the harness and the reports read."""
    cls = backends.info(name)
    assert issubclass(cls, Backend) and cls.NAME == name
    assert backends.module_name(name) == cls.__module__ == f"backends.{name.replace('-', '_')}_backend"
    assert cls.SUMMARY and cls.PACKAGE and cls.COLOUR and cls.MARKER
    assert cls.DEVICE in DEVICES and cls.LEVEL in LEVELS
    assert set(cls.DTYPES) <= {"float64", "float32"} and "float64" in cls.DTYPES
    assert cls.memory_bytes("float64", 1024, 1024) > 0


def test_backend_styles_are_distinct():
    styles = [backends.style(n) for n in BACKENDS]
    assert len(set(styles)) == len(styles)
    assert len({c for c, _ in styles}) == len(styles)


@pytest.mark.parametrize("name", BACKENDS)
def test_usable_backend_meets_the_contract(name):
    backend = usable(name)
    assert backends.load(name) is backend  # one instance per process
    assert backend.runs_on() in ("cpu", "gpu")
    if backend.DEVICE != "any":
        assert backend.runs_on() == backend.DEVICE
    threads = backend.threads()
    assert threads is None or (isinstance(threads, int) and threads >= 1)
    if backend.runs_on() == "cpu":
        assert isinstance(threads, int), f"{name} runs on the CPU: it must report its threads"
    counts = backend.compilations()  # the cache column: a pair of counts, or a backend that cannot count
    assert counts is None or (len(counts) == 2 and 0 <= counts[1] <= counts[0]), counts
    if not backend.COMPILES:
        assert counts == (0, 0)
    elif counts is None:  # only CuPy's kernel cache cannot be counted
        assert backend.PACKAGE == "cupy", f"{name} compiles: it must count what it builds (compilations())"


NEW_BACKEND = textwrap.dedent("""
    import numpy as np

    from backends.base import Backend, TrainResult, n_logged


    class Doubled(Backend):
        NAME = "{name}"
        SUMMARY = "the NumPy loop, written out for one hidden layer"
        PACKAGE = "numpy"
        COLOUR, MARKER = "#123456", "d"
        LEVEL = "plain"
        COMPILES = False

        def prepare(self, problem):
            self.check(problem)
            return {{"p": problem, "W": [w.copy() for w in problem.weights], "losses": []}}

        def run(self, state, iterations, log_every):
            X, y, W, alpha = state["p"].X, state["p"].y, state["W"], state["p"].alpha
            losses = np.empty(n_logged(iterations, log_every))
            for it in range(iterations):
                a = [X]
                for w in W:
                    a.append(1 / (1 + np.exp(-(a[-1] @ w))))
                err = y - a[-1]
                if log_every and it % log_every == 0:
                    losses[it // log_every] = np.mean(np.abs(err))
                delta = err * a[-1] * (1 - a[-1])
                for layer in reversed(range(len(W))):
                    grad = a[layer].T @ delta
                    if layer > 0:
                        delta = (delta @ W[layer].T) * a[layer] * (1 - a[layer])
                    W[layer] += alpha * grad
            state["losses"].append(losses)

        def fetch(self, state):
            return TrainResult([w.copy() for w in state["W"]], np.concatenate(state["losses"] or [np.empty(0)]))

        def threads(self):
            return 1
""")


@pytest.mark.slow
def test_a_new_backend_is_one_file_and_one_line(tmp_path):
    """A copy of the backends package with one file added and one line added to ``NAMES`` (and no
    other change) is listed, validated, swept, stored and summarised by the unchanged harness."""
    import difflib
    import os
    import shutil
    from pathlib import Path

    name = "zz-one-file"
    package = Path(backends.__file__).parent
    copy = tmp_path / "src" / "backends"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / f"{name.replace('-', '_')}_backend.py").write_text(NEW_BACKEND.format(name=name))
    registry = (copy / "__init__.py").read_text()
    registry = registry.replace('    "cupy-graph",\n)', f'    "cupy-graph",\n    "{name}",\n)')
    (copy / "__init__.py").write_text(registry)
    changed = [d for d in difflib.unified_diff((package / "__init__.py").read_text().splitlines(), registry.splitlines(), n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert changed == [f'+    "{name}",']
    assert sorted(p.name for p in copy.glob("*.py")) == sorted([*(p.name for p in package.glob("*.py")), f"{name.replace('-', '_')}_backend.py"])

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy.parent), str(package.parent)])}

    def harness(*args):
        return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    listed = harness("list", "--backends", f"numpy,{name}")  # the whole list is test_cli's
    assert listed.returncode == 0 and name in listed.stdout and "the NumPy loop, written out" in listed.stdout, listed.stdout + listed.stderr
    valid = harness("validate", "--backends", name, "--quick")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    bench = harness("bench", "--preset", "quick", "--backends", f"numpy,{name}", "--batch", "4,16", "--hidden", "4",
                    "--out", str(tmp_path / "results"), "--machine", "m", "--no-progress", "--no-ceilings")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    runs = (tmp_path / "results" / "m" / "runs.csv").read_text()
    assert runs.count(f"{name},") >= 2
    summary = (tmp_path / "results" / "m" / "plots" / "summary.md").read_text()
    assert f"| `{name}` |" in summary


def shorten(case: Case, iterations: int = 12) -> Case:
    return Case(case.problem, min(case.iterations, iterations), max(1, min(case.log_every, iterations // 3)))


@pytest.mark.parametrize("name,case", AGREEMENT_PARAMS)
def test_agrees_with_numpy_reference(name, case):
    backend = usable(name)
    if backend.SIMULATED:
        if case.problem.batch * max(case.problem.sizes) > 256:
            pytest.skip("CUDA simulator: large case left to the real-GPU run (make gpu-check)")
        case = shorten(case)
    elif case is SEED_XOR3:
        # The seed run in float64 (60000 iterations): the reference, and the published digits too,
        # from one run. (Under the simulator, tests/test_numba_cuda.py's xor3 run checks them.)
        result = train(backend, case.problem, case.iterations, case.log_every)
        assert_xor3_published(result.losses)
        assert max_relative_error(result, case_reference(case)) <= TOLERANCE["float64"]
        return
    verdict = check(name, case, backend)
    if verdict.status == "n/a":
        pytest.skip(f"{name}: {verdict.detail}")
    assert verdict.status == "ok", f"{name} {case.label}: {verdict.status} {verdict.error} {verdict.detail}"


@pytest.mark.parametrize("name", BACKENDS)
def test_xor2_reproduces_published_output(name):
    backend = usable(name)
    if backend.SIMULATED:
        pytest.skip("the same 10000-iteration run is tests/test_numba_cuda.py's full xor2 run (run once)")
    assert_xor2_published(train(backend, xor2(), XOR2_UPDATES, 0))


def extreme_problem(dtype: str, scale: float) -> Problem:
    """Weights so large that |z| reaches hundreds: sigmoid saturates to exactly 0 or 1."""
    p = scaled(6, 5, "float64", seed=3)
    weights = tuple(w * scale for w in p.weights)
    weights[0][2, :2] = (400.0, -800.0)  # bias row: one unit at +400, one at -800
    return Problem(p.X, p.y, weights, p.alpha, "extreme").astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", fast_tier(BACKENDS))
def test_extreme_inputs_saturate_without_nan(name, dtype):
    backend = usable(name)
    problem = extreme_problem(dtype, 50.0)
    if dtype not in backend.DTYPES:
        pytest.skip(f"{name} does not support {dtype}")
    try:
        result = train(backend, problem, 5, 1)
    except UnsupportedProblem as exc:
        pytest.skip(str(exc))
    reference = reference_result(problem, 5, 1)
    assert all(np.isfinite(w).all() for w in result.weights)
    assert np.isfinite(result.losses).all()
    assert max_relative_error(result, reference) <= TOLERANCE[dtype]


@pytest.mark.parametrize("name", fast_tier(BACKENDS))
def test_runs_are_independent_and_resumable(name):
    """prepare() copies: two runs from one problem agree, and the problem's weights are untouched."""
    backend = usable(name)
    problem = scaled(7, 3, "float64", seed=11)
    before = [w.copy() for w in problem.weights]
    first = train(backend, problem, 10, 5)
    second = train(backend, problem, 10, 5)
    assert all(np.array_equal(a, b) for a, b in zip(problem.weights, before))
    assert max_relative_error(first, second) <= TOLERANCE["float64"]
    # run() twice on one state continues training: 6 + 4 iterations == 10 iterations
    state = backend.prepare(problem)
    backend.run(state, 6, 0)
    backend.run(state, 4, 0)
    split = backend.fetch(state)
    assert max(
        float(np.max(np.abs(a - b))) / float(np.max(np.abs(b))) for a, b in zip(split.weights, first.weights)
    ) <= TOLERANCE["float64"]


@pytest.mark.parametrize("name", fast_tier(BACKENDS))
def test_log_every_zero_and_larger_than_run(name):
    backend = usable(name)
    problem = scaled(3, 2, "float64", seed=1)
    assert train(backend, problem, 4, 0).losses.shape == (0,)
    assert train(backend, problem, 4, 100).losses.shape == (1,)
    assert train(backend, problem, 5, 2).losses.shape == (3,)


def test_deeper_network_agrees_on_python_and_numpy():
    """Any depth: a 4-layer network (3 weight matrices) on the two backends that define it."""
    problem = scaled(11, 6, "float64", seed=9, layers=3)
    a = train(backends.load("python"), problem, 200, 50)
    b = train(backends.load("numpy"), problem, 200, 50)
    assert len(a.weights) == 3
    assert max_relative_error(a, b) <= TOLERANCE["float64"]


def test_max_relative_error_detects_small_and_structural_differences():
    ref = reference_result(scaled(4, 3, "float64"), 5, 1)
    off = reference_result(scaled(4, 3, "float64"), 5, 1)
    assert max_relative_error(off, ref) == 0.0
    off.weights[1][0, 0] *= 1 + 1e-8
    assert 1e-10 < max_relative_error(off, ref) < 1e-7
    off.weights[0][0, 0] = np.nan
    assert max_relative_error(off, ref) == math.inf
    off.weights = off.weights[:1]
    assert max_relative_error(off, ref) == math.inf


def test_validation_cases_cover_edges():
    cases = validation_cases()
    shapes = {(c.problem.batch, c.problem.sizes[1]) for c in cases if c.problem.name == "scaled"}
    assert (1, 1) in shapes and any(n % 2 and n > 1 for n, _ in shapes)
    assert {c.problem.dtype for c in cases} == {"float64", "float32"}
    assert {c.problem.name for c in cases} >= {"xor2", "xor3", "scaled"}
    assert seed_case("xor3").iterations == 60000 and seed_case("xor3").log_every == 10000
