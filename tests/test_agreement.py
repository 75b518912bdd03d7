"""One suite over every registered backend: agreement with the float64 NumPy reference.

Unavailable backends are skipped with their reason (e.g. cupy without a GPU); the CUDA backend
runs under NUMBA_ENABLE_CUDASIM=1 in `make test`, on shortened cases (the simulator runs each GPU
thread as a Python thread).
"""

import math

import numpy as np
import pytest

import backends
from backends.base import Problem, UnsupportedProblem, train
from harness.agreement import TOLERANCE, check, max_relative_error, reference_result
from harness.problems import (
    XOR2_PUBLISHED_OUTPUT,
    XOR3_PUBLISHED_LOSSES,
    Case,
    scaled,
    seed_case,
    validation_cases,
    xor2,
    xor3,
)

BACKENDS = backends.names()
CASES = validation_cases(quick=True)


def usable(name):
    why = backends.availability(name)
    if why:
        pytest.skip(f"{name} unavailable here: {why}")
    return backends.load(name)


from backends.base import Backend, compilations_of, compiles, simulated  # noqa: E402


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_module_meets_the_contract(name):
    """Every backend that imports here is a Backend, with a registry entry that names its device."""
    import importlib

    entry = backends.REGISTRY[name]
    assert entry.device in backends.DEVICES and entry.colour and entry.package
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        pytest.skip(f"{name}: its library is not installed here ({exc.name}): the import is what fails")
    assert isinstance(module, Backend), f"{name}: missing {[n for n in ('DTYPES', 'DEVICE', 'available', 'prepare', 'run', 'fetch') if not hasattr(module, n)]}"
    assert set(module.DTYPES) <= {"float64", "float32"} and module.DEVICE in ("cpu", "gpu")
    if entry.device != "any":
        assert module.DEVICE == entry.device
    threads = module.threads() if hasattr(module, "threads") else None
    assert threads is None or (isinstance(threads, int) and threads >= 1)
    if module.DEVICE == "cpu":
        assert isinstance(threads, int), f"{name} runs on the CPU: it must report its threads"
    counts = compilations_of(module)  # the cache column: a pair of counts, or a backend that builds nothing
    assert counts is None or (len(counts) == 2 and 0 <= counts[1] <= counts[0]), counts
    if compiles(module) and counts is None:  # only CuPy's kernel cache cannot be counted
        assert entry.package == "cupy", f"{name} compiles: it must count what it builds (compilations())"


def shorten(case: Case, iterations: int = 12) -> Case:
    return Case(case.problem, min(case.iterations, iterations), max(1, min(case.log_every, iterations // 3)))


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
@pytest.mark.parametrize("name", BACKENDS)
def test_agrees_with_numpy_reference(name, case):
    module = usable(name)
    if simulated(module):
        if case.problem.batch * max(case.problem.sizes) > 256:
            pytest.skip("CUDA simulator: large case left to the real-GPU run (make gpu-check)")
        case = shorten(case)
    verdict = check(name, case, module)
    if verdict.status == "n/a":
        pytest.skip(f"{name}: {verdict.detail}")
    assert verdict.status == "ok", f"{name} {case.label}: {verdict.status} {verdict.error} {verdict.detail}"


@pytest.mark.parametrize("name", BACKENDS)
def test_xor3_reproduces_published_run(name):
    module = usable(name)
    if simulated(module):
        pytest.skip("the same 60000-iteration run is tests/test_numba_cuda.py::test_xor3_full_run_reproduces_published_losses (~60 s under the simulator: run once)")
    result = train(module, xor3(), 60000, 10000)
    printed = tuple(float(f"{loss:.12g}") for loss in result.losses)
    assert printed == XOR3_PUBLISHED_LOSSES
    assert max_relative_error(result, reference_result(xor3(), 60000, 10000)) <= TOLERANCE["float64"]


@pytest.mark.parametrize("name", BACKENDS)
def test_xor2_reproduces_published_output(name):
    module = usable(name)
    if simulated(module):
        pytest.skip("the same 10000-iteration run is tests/test_numba_cuda.py::test_xor2_full_run_reproduces_published_output (run once)")
    result = train(module, xor2(), 9999, 0)  # the published print is the forward pass of iteration 10000
    output = 1 / (1 + np.exp(-(xor2().X @ result.weights[0])))
    assert tuple(f"{v:.8f}" for v in output.ravel()) == tuple(f"{v:.8f}" for v in XOR2_PUBLISHED_OUTPUT)


def extreme_problem(dtype: str, scale: float) -> Problem:
    """Weights so large that |z| reaches hundreds: sigmoid saturates to exactly 0 or 1."""
    p = scaled(6, 5, "float64", seed=3)
    weights = tuple(w * scale for w in p.weights)
    weights[0][2, :2] = (400.0, -800.0)  # bias row: one unit at +400, one at -800
    return Problem(p.X, p.y, weights, p.alpha, "extreme").astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", BACKENDS)
def test_extreme_inputs_saturate_without_nan(name, dtype):
    module = usable(name)
    problem = extreme_problem(dtype, 50.0)
    if dtype not in module.DTYPES:
        pytest.skip(f"{name} does not support {dtype}")
    try:
        result = train(module, problem, 5, 1)
    except UnsupportedProblem as exc:
        pytest.skip(str(exc))
    reference = reference_result(problem, 5, 1)
    assert all(np.isfinite(w).all() for w in result.weights)
    assert np.isfinite(result.losses).all()
    assert max_relative_error(result, reference) <= TOLERANCE[dtype]


@pytest.mark.parametrize("name", BACKENDS)
def test_runs_are_independent_and_resumable(name):
    """prepare() copies: two runs from one problem agree, and the problem's weights are untouched."""
    module = usable(name)
    problem = scaled(7, 3, "float64", seed=11)
    before = [w.copy() for w in problem.weights]
    first = train(module, problem, 10, 5)
    second = train(module, problem, 10, 5)
    assert all(np.array_equal(a, b) for a, b in zip(problem.weights, before))
    assert max_relative_error(first, second) <= TOLERANCE["float64"]
    # run() twice on one state continues training: 6 + 4 iterations == 10 iterations
    state = module.prepare(problem)
    module.run(state, 6, 0)
    module.run(state, 4, 0)
    split = module.fetch(state)
    assert max(
        float(np.max(np.abs(a - b))) / float(np.max(np.abs(b))) for a, b in zip(split.weights, first.weights)
    ) <= TOLERANCE["float64"]


@pytest.mark.parametrize("name", BACKENDS)
def test_log_every_zero_and_larger_than_run(name):
    module = usable(name)
    problem = scaled(3, 2, "float64", seed=1)
    assert train(module, problem, 4, 0).losses.shape == (0,)
    assert train(module, problem, 4, 100).losses.shape == (1,)
    assert train(module, problem, 5, 2).losses.shape == (3,)


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
