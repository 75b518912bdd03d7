"""The registry and the declarations the harness and the reports read instead of backend names."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import backends
from backends.base import Backend

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# String constants in harness/ that equal a backend name but do not name the backend: the
# interpreter's version key ("python") and the two CUDA compilers, which harness.cuda_ptx and
# harness.gpu_floor load by their package names.
NOT_BACKENDS = {"python", "numba-cuda", "numba-cuda-mlir"}


def test_the_harness_and_the_reports_name_no_backend_but_the_reference():
    named = {}
    for path in HARNESS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        # the literal pieces of an f-string (f"{cores}c") are text, not names
        pieces = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if id(node) in pieces:
                continue
            if isinstance(node, ast.Constant) and node.value in backends.NAMES and node.value != backends.REFERENCE:
                named.setdefault(node.value, set()).add(path.relative_to(HARNESS.parent).as_posix())
    assert set(named) <= NOT_BACKENDS, named
    for value in NOT_BACKENDS & set(named):
        allowed = {"python": {"harness/importing.py", "harness/fingerprint.py", "harness/results.py", "harness/report/machine_readme.py"}}.get(
            value, {"harness/cuda_ptx.py", "harness/gpu_floor.py"})
        assert named[value] <= allowed, (value, named[value])


def test_file_names_follow_the_backend_names_and_shadow_no_library():
    package = Path(backends.__file__).parent
    files = {p.stem for p in package.glob("*_backend.py")}
    assert files == {n.replace("-", "_") + "_backend" for n in backends.NAMES}
    for name in backends.NAMES:
        assert backends.module_name(name).split(".")[-1] not in sys.stdlib_module_names
        assert backends.module_name(name).split(".")[-1] not in {"numpy", "numba", "jax", "torch", "cupy", "python"}


def test_variants_families_and_packages_come_from_the_classes():
    assert backends.base_of("numba-parallel") == "numba-cpu"
    assert backends.base_of("numba-cpu") is None and backends.base_of("numpy") is None
    assert backends.base_of("not-a-backend") is None
    assert backends.of_family("numba", "cpu") == ["numba-naive", "numba-loops", "numba-cpu", "numba-parallel"]
    assert backends.of_family("numba", "gpu") == ["numba-cuda", "numba-cuda-mlir"]
    assert backends.of_family("numba", "cpu", among={"numba-parallel", "numpy", "x"}) == ["numba-parallel"]
    packages = backends.packages()
    assert packages[:2] == ["numpy", "numpy-cuda13x"] or "numba" in packages
    assert {"numba", "numba-cuda", "jax", "torch", "cupy-cuda13x"} <= set(packages) and "python" not in packages
    assert backends.library("python").startswith("python 3.")
    assert backends.library("numpy").startswith("numpy ")


def test_unknown_and_broken_backends_say_why(monkeypatch):
    with pytest.raises(backends.UnknownBackend, match="unknown backend 'nope'"):
        backends.load("nope")
    monkeypatch.setitem(backends.REGISTRY, "ghost", "tests.no_such_module")
    assert "missing from this installation" in backends.availability("ghost")
    assert backends.style("ghost") == (None, "o") and backends.declared("ghost", "DEVICE", "cpu") == "cpu"
    monkeypatch.setitem(backends.REGISTRY, "misnamed", "tests.fakes.good")  # holds no class named "misnamed"
    assert "defines 0 Backend subclasses named 'misnamed'" in backends.availability("misnamed")


def test_defaults_live_on_the_base_class():
    class Minimal(Backend):
        NAME = "minimal"

    b = Minimal()
    assert b.available() is None and b.threads() is None and b.runs_on() == "cpu"
    assert b.compilations() is None  # COMPILES defaults to True: compiles, cannot count -> cache "unknown"
    b.set_threads(3)  # accepted, nothing to limit
    assert Minimal.memory_bytes("float32", 10, 10) == Minimal.memory_bytes("float64", 10, 10) / 2

    class Anywhere(Backend):
        NAME = "anywhere"
        DEVICE = "any"

    with pytest.raises(NotImplementedError, match="must say where it runs"):
        Anywhere().runs_on()


def test_plugins_are_one_variable():
    code = ("import backends; print(backends.REGISTRY['fake-good'], backends.availability('fake-good'), "
            "backends.load('fake-good').NAME)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, backends.PLUGIN_VARIABLE: "fake-good=tests.fakes.good"})
    assert out.stdout.split() == ["tests.fakes.good", "None", "fake-good"], out.stderr
    bad = subprocess.run([sys.executable, "-c", "import backends"], capture_output=True, text=True,
                         env={**__import__("os").environ, backends.PLUGIN_VARIABLE: "nonsense"})
    assert bad.returncode != 0 and "expected name=module" in bad.stderr
