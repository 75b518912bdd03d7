"""Registry of training-loop backends, imported lazily by name.

Registering a backend is one line in ``NAMES``; its file is ``backends/<name>_backend.py`` with
``-`` written ``_`` (``numba-cpu`` -> ``backends/numba_cpu_backend.py``: no file shadows the
library it wraps). Everything else about it (summary, device, style, family, level, dtypes,
memory) is declared by its ``backends.base.Backend`` subclass in that file.

Importing this package imports no backend. A backend file imports no optional library at its top
(``backends/base.py``), so ``info(name)`` reads any backend's declarations, and a missing GPU stack
or optional library only makes that one backend unavailable, with a reason.

A module whose name starts with ``_`` is not a backend but code several backends share:
``_numba_kernels`` (the Numba CPU kernels, one factory of specialised closures) and ``_numba_exp``
(their vectorisable exp), ``_cuda_kernels`` / ``_cuda_plan`` / ``_cuda_host`` /
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
import platform
from functools import cache

from backends.base import Backend

# The order is the order of every table and legend.
NAMES = (
    "python",
    "numpy",
    "numba-naive",
    "numba-loops",
    "numba-cpu",
    "numba-parallel",
    "c",
    "c-openmp",
    "cython",
    "pythran",
    "numba-cuda",
    "numba-cuda-mlir",
    "warp",
    "jax",
    "jax-unrolled",
    "torch",
    "torch-compile",
    "torch-cudagraph",
    "cupy",
    "cupy-fused",
    "cupy-graph",
)

REFERENCE = "numpy"
PLUGIN_VARIABLE = "NNBENCH_PLUGINS"


def module_name(name: str) -> str:
    """The file of backend ``name``, by the one naming rule."""
    return f"backends.{name.replace('-', '_')}_backend"


#: name -> module holding its Backend subclass: ``NAMES`` by the rule, then plugins.
REGISTRY: dict[str, str] = {name: module_name(name) for name in NAMES}


def _register_plugins(spec: str) -> None:
    """Extra backends from ``NNBENCH_PLUGINS="name=package.module,..."``.

    This is how the test suite injects fake (slow, failing, crashing) backends into subprocess
    sweeps, and how a user tries a backend of their own without editing this file.
    """
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name or not module:
            raise ValueError(f"{PLUGIN_VARIABLE}: expected name=module, got {item!r}")
        REGISTRY[name] = module


_register_plugins(os.environ.get(PLUGIN_VARIABLE, ""))


class UnknownBackend(KeyError):
    def __str__(self) -> str:
        return f"unknown backend {self.args[0]!r}; known: {', '.join(REGISTRY)}"


def names() -> list[str]:
    return list(REGISTRY)


def info(name: str) -> type[Backend]:
    """The backend's class: its declarations, read without importing its optional library.
    Raises UnknownBackend, or ImportError when its file is missing or broken."""
    try:
        module = importlib.import_module(REGISTRY[name])
    except KeyError:
        raise UnknownBackend(name) from None
    found = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Backend) and c.NAME == name]
    if len(found) != 1:
        raise ImportError(f"{REGISTRY[name]} defines {len(found)} Backend subclasses named {name!r}, not one")
    return found[0]


@cache
def _instance(name: str, module: str) -> Backend:
    return info(name)()  # keyed by the module too: a test may point a name at another module


def load(name: str) -> Backend:
    """The backend, one instance per process; raises UnknownBackend or ImportError."""
    if name not in REGISTRY:
        raise UnknownBackend(name)
    return _instance(name, REGISTRY[name])


def style(name: str) -> tuple[str | None, str]:
    """(colour, marker) of a backend in every figure; (None, "o") for one whose file cannot be read
    here (a plugin from another machine's results)."""
    try:
        cls = info(name)
    except (UnknownBackend, ImportError):
        return None, "o"
    return cls.COLOUR, cls.MARKER


def declared(name: str, attribute: str, default=None):
    """One declaration of a backend (``DEVICE``, ``FAMILY``, ...), or ``default`` for a name not
    registered here or whose file cannot be imported."""
    try:
        return getattr(info(name), attribute)
    except (UnknownBackend, ImportError):
        return default


def base_of(name: str) -> str | None:
    """The registered backend that ``name``'s class derives from (numba-parallel: numba-cpu), or
    None for a backend that is no variant of another."""
    try:
        cls = info(name)
    except (UnknownBackend, ImportError):
        return None
    for parent in cls.__mro__[1:]:
        if issubclass(parent, Backend) and parent.NAME and parent.NAME != name and parent.NAME in REGISTRY:
            return parent.NAME
    return None


def of_family(family: str, device: str, among=None) -> list[str]:
    """Backends (of ``among``, default all registered) declaring ``FAMILY`` and ``DEVICE``, in
    registry order: e.g. ("numba", "cpu") are the Numba CPU rungs the reports compare."""
    pool = names() if among is None else [n for n in names() if n in set(among)]
    return [n for n in pool if declared(n, "FAMILY") == family and declared(n, "DEVICE") == device]


def distributions(package: str) -> tuple[str, ...]:
    """The distribution names a package may install under (cupy's wheels name the CUDA major)."""
    return (package, f"{package}-cuda13x", f"{package}-cuda12x")


def packages() -> list[str]:
    """Every distribution a registered backend's loop runs on (cupy under each of its wheel names),
    in registry order: the versions a machine's fingerprint records and its README shows."""
    found: list[str] = []
    for name in names():
        package = declared(name, "PACKAGE")
        if package and package != "python":
            found += [d for d in distributions(package) if d not in found]
    return found


def library_of(package: str | None, versions) -> str:
    """'<package> <version>' from ``versions(dist)`` (None: not installed); '' for no package."""
    if not package:
        return ""
    for dist in distributions(package):
        version = versions(dist)
        if version:
            return f"{package} {version}"
    return f"{package} (version unknown)"


def library(name: str) -> str:
    """The library (and its version) that runs backend ``name``'s loop, e.g. 'numba 0.68.1', or
    what the backend's own ``library()`` says (a compiled backend: compiler, version, flags)."""
    from importlib import metadata

    own = info(name).library()
    if own:
        return own

    def installed(dist: str) -> str | None:
        if dist == "python":
            return platform.python_version()
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return library_of(declared(name, "PACKAGE"), installed)


def availability(name: str) -> str | None:
    """None if the backend can run here, else a one-line reason (never raises for known names)."""
    try:
        backend = load(name)
    except UnknownBackend:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing == REGISTRY[name]:
            return f"backend module {missing} is missing from this installation"
        return f"package {missing!r} not installed" if missing else f"import failed: {exc}"
    except Exception as exc:  # a broken install must not hide other backends
        return f"import failed: {type(exc).__name__}: {exc}"
    try:
        return backend.available()
    except Exception as exc:
        return f"availability check failed: {type(exc).__name__}: {exc}"
