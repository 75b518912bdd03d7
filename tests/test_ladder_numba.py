"""The lower Numba rungs of the effort ladder: `numba-naive` (the NumPy loop under @njit) and
`numba-loops` (plain loops with math.exp). Agreement with NumPy on the validation cases is
tests/test_agreement.py's; here: what the agreement suite does not cover (any depth, float32 kept
float32), that numba-naive is the NumPy loop, and that their compiled code is cached on disk."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import backends
from backends.base import train
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled
from tests.helpers import compilations_in_a_fresh_process, usable

NAMES = ["numba-naive", "numba-loops"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", NAMES)
def test_declared_as_numba_rungs(name):
    cls = backends.info(name)
    assert cls.FAMILY == "numba" and cls.PACKAGE == "numba"
    assert cls.LEVEL == {"numba-naive": "naive", "numba-loops": "plain"}[name]
    assert backends.of_family("numba", "cpu")[:2] == NAMES  # the ladder's order: naive, loops, tuned


@pytest.mark.parametrize(("name", "layers"), [(n, k) for n in NAMES for k in (1, 2)] + [("numba-naive", 3)])
def test_depths_agree_with_numpy(name, layers):
    """2- and 3-layer nets with D and O other than the seed's; numba-naive (the NumPy loop) any
    depth, so a 4-layer net too (the agreement suite has no 4-layer case for it)."""
    problem = scaled(11, 6, "float64", seed=9, layers=layers, inputs=4, outputs=3)
    result = train(usable(name), problem, 120, 30)
    assert max_relative_error(result, reference_result(problem, 120, 30)) <= TOLERANCE["float64"]


def test_numba_loops_refuses_a_deeper_net_with_a_reason():
    from backends.base import UnsupportedProblem

    with pytest.raises(UnsupportedProblem, match="1 or 2 weight layers"):
        usable("numba-loops").prepare(scaled(11, 6, "float64", seed=9, layers=3))


def _dispatchers(name: str) -> list:
    module = sys.modules[backends.REGISTRY[name]]
    return [v for v in vars(module).values() if hasattr(v, "signatures") and hasattr(v, "targetoptions")]


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    """Every array of a float32 run is float32 in the compiled loop (no float64 promotion by a
    literal), and the result agrees with the float64 reference to the float32 tolerance."""
    backend = usable(name)
    problem = scaled(9, 5, "float32", seed=3)
    result = train(backend, problem, 100, 25)
    assert all(w.dtype == np.float32 for w in result.weights)
    float32_signatures = [sig for d in _dispatchers(name) for sig in d.signatures if "float32" in str(sig)]
    assert float32_signatures and all("float64, 2d" not in str(sig) for sig in float32_signatures)
    assert max_relative_error(result, reference_result(problem, 100, 25)) <= TOLERANCE["float32"]


def _loop_body(function) -> list[str]:
    """The statements of a function's training loop, unparsed (comments and docstrings dropped)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    loop = next(node for node in ast.walk(tree) if isinstance(node, ast.For))
    return [ast.unparse(statement) for statement in loop.body]


def test_numba_naive_is_the_numpy_loop():
    """numba-naive's loop is numpy_backend's, statement for statement, up to the changes its file
    lists: state lookups are arguments, ``reversed(range(n))`` is ``range(n - 1, -1, -1)``, and
    the literal 1 is ``one`` (sigmoid takes it as an argument)."""
    from backends import numba_naive_backend, numpy_backend

    def normalise(line: str) -> str:
        line = line.replace("reversed(range(len(W)))", "range(len(W) - 1, -1, -1)")
        return line.replace("sigmoid(a[-1] @ w, one)", "sigmoid(a[-1] @ w)").replace("(1 - ", "(one - ")

    assert [normalise(s) for s in _loop_body(numpy_backend.Numpy.run)] == [
        normalise(s) for s in _loop_body(numba_naive_backend.train_loop)
    ]


def test_numba_loops_fastmath_is_the_declared_constant():
    from backends import numba_loops_backend as loops

    assert isinstance(loops.FASTMATH, bool)
    usable("numba-loops")
    functions = _dispatchers("numba-loops")
    assert len(functions) >= 6 and loops.train_net2 in functions
    assert all(f.targetoptions.get("fastmath", False) == loops.FASTMATH for f in functions)


@pytest.mark.parametrize("name", NAMES)
def test_threads_and_counts(name):
    backend = usable(name)
    train(backend, scaled(5, 3, seed=1), 3, 1)
    assert backend.threads() >= 1
    built, loaded = backend.compilations()
    assert built >= 1 and 0 <= loaded <= built


_CACHE_CHILD = """
import json, sys
import backends
from backends.base import train
from harness.problems import scaled, xor3
backend = backends.load(sys.argv[1])
train(backend, xor3(), 5, 1)
train(backend, scaled(9, 5, "float32", seed=2), 5, 1)
print(json.dumps(backend.compilations()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_disk_cache_serves_a_fresh_process(name, tmp_path):
    """cache=True: a second process loads every signature from Numba's disk cache (``disk``)."""
    def child() -> tuple[int, int]:
        return compilations_in_a_fresh_process(_CACHE_CHILD, name, NUMBA_CACHE_DIR=str(tmp_path))

    built, loaded = child()
    assert built >= 2 and loaded == 0  # float64 and float32, compiled
    built, loaded = child()  # (numba-naive's sigmoid is compiled only into a kernel being compiled)
    assert built == loaded >= 2  # every kernel from the disk cache, nothing compiled
