"""Agreement with the float64 NumPy reference: the check every backend passes before it is timed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import backends
from backends.base import Problem, TrainResult, UnsupportedProblem, train
from harness.problems import Case

TOLERANCE = {"float64": 1e-10, "float32": 1e-3}


def max_relative_error(result: TrainResult, reference: TrainResult) -> float:
    """Largest normwise relative error over the loss trace and every weight matrix.

    For each array: max|a - ref| / max|ref| (infinity norm), so an entry that happens to be near
    zero does not blow the measure up. Shape mismatches and non-finite values count as inf.
    """
    pairs = [(result.losses, reference.losses), *zip(result.weights, reference.weights)]
    if len(result.weights) != len(reference.weights):
        return float("inf")
    worst = 0.0
    for got, ref in pairs:
        got = np.asarray(got, dtype=np.float64)
        if got.shape != ref.shape or not np.all(np.isfinite(got)):
            return float("inf")
        if ref.size == 0:
            continue
        scale = float(np.max(np.abs(ref))) or 1.0
        worst = max(worst, float(np.max(np.abs(got - ref))) / scale)
    return worst


def reference_result(problem: Problem, iterations: int, log_every: int) -> TrainResult:
    """The float64 NumPy run of ``problem`` (cast to float64 when it is float32)."""
    return train(backends.load(backends.REFERENCE), problem.astype("float64"), iterations, log_every)


_REFERENCES: dict[int, tuple[Case, TrainResult]] = {}


def case_reference(case: Case) -> TrainResult:
    """Reference result for ``case``, computed once per case object (cases hold arrays, so no hash)."""
    hit = _REFERENCES.get(id(case))
    if hit is None or hit[0] is not case:
        hit = (case, reference_result(case.problem, case.iterations, case.log_every))
        _REFERENCES[id(case)] = hit
    return hit[1]


@dataclass
class Verdict:
    backend: str
    case: str
    dtype: str
    error: float | None  # None when the backend did not produce a result
    status: str  # "ok", "FAIL", "n/a" (unsupported), "error"
    detail: str = ""


def check(backend_name: str, case: Case, backend=None) -> Verdict:
    """Run ``case`` on the backend (``backends.load(backend_name)`` unless given) and compare with
    the float64 reference."""
    backend = backend or backends.load(backend_name)
    dtype = case.problem.dtype
    try:
        result = train(backend, case.problem, case.iterations, case.log_every)
    except UnsupportedProblem as exc:
        return Verdict(backend_name, case.label, dtype, None, "n/a", str(exc))
    except Exception as exc:  # reported in the table, never swallowed
        return Verdict(backend_name, case.label, dtype, None, "error", f"{type(exc).__name__}: {exc}")
    reference = case_reference(case)
    error = max_relative_error(result, reference)
    status = "ok" if error <= TOLERANCE[dtype] else "FAIL"
    return Verdict(backend_name, case.label, dtype, error, status)
