"""Registry of training-loop backends, imported lazily by name.

Importing this package imports no backend: a missing GPU stack or optional library only makes
that one backend unavailable, with a reason, and never breaks ``import backends``.

A module whose name starts with ``_`` is not a backend but code several backends share:
``_numba_kernels`` (the Numba CPU kernels), ``_cuda_kernels`` / ``_cuda_plan`` / ``_cuda_host`` /
``_cuda_launch`` / ``_cuda_compiler`` (the two CUDA backends), ``_replay`` (the GPU peers' replay
schedule). The harness's measuring tools use a few of their public names, on purpose, so they
measure the code the backends run: ``harness.floor`` times ``_numba_kernels.fexp`` under the
kernels' ``KERNEL_FM``; ``harness.cuda_ptx`` loads the kernels through ``_cuda_compiler``
(``COMPILERS``, ``import_cuda``, ``load_kernels``, ``version``); ``harness.gpu_floor`` imports a
compiler's ``cuda`` through it (``import_cuda``) and reads ``_cuda_host.simulator_on``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Entry:
    """One backend: its name, module, one-line summary, the library that runs its loop (its
    distribution name, for the ``library`` column), where it runs ("cpu", "gpu", or "any": the GPU
    where the machine has one, else the CPU), and how it is drawn (colour, marker; None: a stable
    colour from the name)."""

    name: str
    module: str
    summary: str
    package: str | None = None
    device: str = "cpu"
    colour: str | None = None
    marker: str = "o"


# Colours: Okabe-Ito based (colour-blind safe), one per backend, the same in every figure.
REGISTRY: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("python", "backends.pure_python", "pure Python lists and math: the definition of the loop", "python", "cpu", "#7f7f7f", "x"),
        Entry("numpy", "backends.numpy_ref", "idiomatic NumPy loop: the agreement reference and speed baseline", "numpy", "cpu", "#000000", "o"),
        Entry("numba-cpu", "backends.numba_cpu", "Numba @njit, whole loop compiled, one thread", "numba", "cpu", "#E69F00", "s"),
        Entry("numba-parallel", "backends.numba_parallel", "Numba @njit(parallel=True), prange over rows", "numba", "cpu", "#D55E00", "D"),
        Entry("numba-cuda", "backends.numba_cuda", "Numba @cuda.jit kernels on an NVIDIA GPU, compiled by numba-cuda", "numba-cuda", "gpu", "#009E73", "^"),
        Entry("numba-cuda-mlir", "backends.numba_cuda_mlir", "the numba-cuda kernels compiled by numba-cuda-mlir", "numba-cuda-mlir", "gpu", "#44AA99", "<"),
        Entry("jax", "backends.jax_xla", "JAX jit with the whole loop in lax.fori_loop", "jax", "any", "#CC79A7", "v"),
        Entry("jax-unrolled", "backends.jax_unrolled", "the jax loop with K iterations unrolled per loop trip", "jax", "any", "#AA4499", "1"),
        Entry("torch", "backends.torch_eager", "PyTorch eager, no_grad, manual update rule", "torch", "any", "#0072B2", "P"),
        Entry("torch-compile", "backends.torch_compiled", "PyTorch with the iteration under torch.compile", "torch", "any", "#56B4E9", "*"),
        Entry("torch-cudagraph", "backends.torch_cudagraph", "the torch iteration captured once in a CUDA graph (K iterations unrolled) and replayed", "torch", "gpu", "#332288", "p"),
        Entry("cupy", "backends.cupy_gpu", "CuPy arrays on an NVIDIA GPU", "cupy", "gpu", "#6A3D9A", "h"),
        Entry("cupy-fused", "backends.cupy_fused", "CuPy with fused elementwise kernels and preallocated buffers", "cupy", "gpu", "#882255", "H"),
        Entry("cupy-graph", "backends.cupy_graph", "cupy-fused with the iteration captured in a CUDA graph and replayed", "cupy", "gpu", "#CC6677", "8"),
    )
}
DEVICES = ("cpu", "gpu", "any")

REFERENCE = "numpy"
PLUGIN_VARIABLE = "NNBENCH_PLUGINS"


def _register_plugins(spec: str) -> None:
    """Extra backends from ``NNBENCH_PLUGINS="name=package.module,..."``.

    This is how the test suite injects fake (slow, failing, crashing) backends into subprocess
    sweeps, and how a user tries a backend of their own without editing this file.
    """
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name or not module:
            raise ValueError(f"{PLUGIN_VARIABLE}: expected name=module, got {item!r}")
        REGISTRY[name] = Entry(name, module, f"plugin from {PLUGIN_VARIABLE}", device="cpu")


_register_plugins(os.environ.get(PLUGIN_VARIABLE, ""))


class UnknownBackend(KeyError):
    def __str__(self) -> str:
        return f"unknown backend {self.args[0]!r}; known: {', '.join(REGISTRY)}"


def names() -> list[str]:
    return list(REGISTRY)


def load(name: str) -> ModuleType:
    """Import the backend module; raises UnknownBackend or ImportError (missing package)."""
    try:
        entry = REGISTRY[name]
    except KeyError:
        raise UnknownBackend(name) from None
    return importlib.import_module(entry.module)


def distributions(package: str) -> tuple[str, ...]:
    """The distribution names a package installs under (cupy's wheels name the CUDA major)."""
    return (package, f"{package}-cuda13x", f"{package}-cuda12x")


def library(name: str) -> str:
    """The library (and its version) that runs backend ``name``'s loop, e.g. 'numba 0.68.1'."""
    package = REGISTRY[name].package
    if package is None:  # a plugin: not known
        return ""
    if package == "python":
        import platform

        return f"python {platform.python_version()}"
    from importlib import metadata

    for dist in distributions(package):
        try:
            return f"{package} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{package} (version unknown)"


def availability(name: str) -> str | None:
    """None if the backend can run here, else a one-line reason (never raises for known names)."""
    try:
        module = load(name)
    except UnknownBackend:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing == REGISTRY[name].module:
            return f"backend module {missing} is missing from this installation"
        return f"package {missing!r} not installed" if missing else f"import failed: {exc}"
    except Exception as exc:  # a broken install must not hide other backends
        return f"import failed: {type(exc).__name__}: {exc}"
    try:
        return module.available()
    except Exception as exc:
        return f"availability check failed: {type(exc).__name__}: {exc}"
