"""The backend contract, with every default in one place, and the data every backend shares: the
problem it trains on and the result it returns.

A backend is one file, ``backends/<name, '-' as '_'>_backend.py``, holding one subclass of
``Backend`` whose ``NAME`` is the backend's name; registering it is one line in
``backends.NAMES`` (or ``NNBENCH_PLUGINS`` for a backend outside this package). Nothing else in
the harness or the reports names a backend, apart from the ``numpy`` reference: what they need to
know is declared here, on the class, and read without running anything.

Declarations (class attributes; the defaults below)::

    NAME       the registry name                         SUMMARY   one line for `list` and the README
    PACKAGE    distribution running its loop ("library" column; "python": the interpreter)
    DEVICE     "cpu", "gpu", or "any" (the GPU where the process has one, else the CPU)
    COLOUR, MARKER   how every figure draws it (None: a stable colour from the name)
    FAMILY     what it is built with, for the reports' groups ("numba": the Numba rungs)
    LEVEL      how much work it represents: "spec", "reference", "naive" (array code put under a
               compiler as it stands), "plain" (what most users write), "tuned" (an expert's)
    TWIN       the backend whose algorithm this one reproduces with another compiler or tool
               (``c`` -> ``numba-cpu``): the reports print the pair's ratio at every point
    LOOP_FILES the files, relative to the repository root, that hold its training loop, for the
               speed-vs-effort figure's line count (empty: its own file)
    DTYPES     the dtypes it supports
    COMPILES   False: runs only code built before it was imported (``cache`` = "none")
    SIMULATED  True while the CUDA simulator stands in for a GPU (the harness shortens its cases)
    BYTES_PER_ELEMENT   peak memory per N*H element in float64 (admission; ``memory_bytes``)

Methods: ``available``, ``threads``, ``set_threads``, ``compilations``, ``runs_on``, ``library``
and ``memory_bytes`` have defaults; ``prepare``, ``run`` and ``fetch`` are the backend::

    def prepare(problem) -> state       # copy inputs/weights where the loop will use them
    def run(state, iterations, log_every) -> None   # the whole training loop, synchronous
    def fetch(state) -> TrainResult     # bring the weights and logged losses back to the host

A backend file imports only NumPy, Numba and this package at its top: its optional library (JAX,
PyTorch, CuPy, a CUDA compiler) is imported on first use (``available`` or ``prepare``), so its
declarations are readable, and the file importable, where that library is missing. Constructing
a backend does nothing else either; ``backends.load`` makes one per process.

``compilations()`` gives a row's ``cache`` column (``harness.timing.cache_state``): what the first
call at a point did -- compiled (``cold``), loaded from disk (``disk``), reused code this process
had already built (``memory``), built nothing (``none``), or ``unknown`` for a backend that
compiles but cannot count (CuPy's kernel cache).

``prepare`` and ``fetch`` are where a GPU backend moves data; ``run`` is the loop alone, so the
harness can time the device-resident loop and the end-to-end call separately. ``run`` returns
only when the work is finished (asynchronous backends synchronise before returning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

DTYPES = {"float64": np.float64, "float32": np.float32}
DEVICES = ("cpu", "gpu", "any")
LEVELS = ("spec", "reference", "naive", "plain", "tuned")


class Backend:
    """One training-loop backend; subclass it (see the module docstring)."""

    NAME: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""
    PACKAGE: ClassVar[str | None] = None
    DEVICE: ClassVar[str] = "cpu"
    COLOUR: ClassVar[str | None] = None
    MARKER: ClassVar[str] = "o"
    FAMILY: ClassVar[str] = ""
    LEVEL: ClassVar[str] = "plain"
    TWIN: ClassVar[str | None] = None
    LOOP_FILES: ClassVar[tuple[str, ...]] = ()
    DTYPES: ClassVar[tuple[str, ...]] = ("float64", "float32")
    COMPILES: ClassVar[bool] = True
    SIMULATED: bool = False
    BYTES_PER_ELEMENT: ClassVar[float] = 48.0  # a few N x H float64 arrays

    def available(self) -> str | None:
        """None when usable here, else the one-line reason it is not."""
        return None

    def prepare(self, problem: Problem) -> Any:
        raise NotImplementedError

    def run(self, state: Any, iterations: int, log_every: int) -> None:
        raise NotImplementedError

    def fetch(self, state: Any) -> TrainResult:
        raise NotImplementedError

    def runs_on(self) -> str:
        """Where the loop runs in this process, "cpu" or "gpu" (the rows' ``device`` column).
        A backend declared "any" overrides it."""
        if self.DEVICE == "any":
            raise NotImplementedError(f"{self.NAME} is declared DEVICE='any' and must say where it runs")
        return self.DEVICE

    def threads(self) -> int | None:
        """Threads its loop uses (None: no CPU thread pool of its own to report, e.g. a GPU)."""
        return None

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads (the harness limits BLAS and Numba itself; a backend with a pool of
        its own, e.g. JAX's or PyTorch's, limits that here)."""

    def compilations(self) -> tuple[int, int] | None:
        """Programs this process has built so far (compiled or loaded), and how many came from a
        disk cache; None for a backend that compiles but cannot count."""
        return (0, 0) if not self.COMPILES else None

    @classmethod
    def library(cls) -> str | None:
        """What the rows' ``library`` column says, where '<PACKAGE> <version>' (the default, None)
        would not: a backend built by a toolchain names the compiler, its version and flags."""
        return None

    @classmethod
    def memory_bytes(cls, dtype: str, batch: int, hidden: int) -> float:
        """Rough peak memory of one point (admission refuses a point that would not fit)."""
        return cls.BYTES_PER_ELEMENT * batch * hidden * np.dtype(dtype).itemsize / 8

    def check(self, problem: Problem) -> None:
        """Raise UnsupportedProblem for a dtype this backend does not support."""
        if problem.dtype not in self.DTYPES:
            raise UnsupportedProblem(f"{self.NAME} supports {', '.join(self.DTYPES)}, not {problem.dtype}")


def missing_library(package: str, exc: ImportError) -> str:
    """The one-line reason a backend's optional library failed to import (for ``available``)."""
    name = getattr(exc, "name", None) or package
    if isinstance(exc, ModuleNotFoundError) and name.partition(".")[0] != package:
        return f"package {package!r} unusable: its dependency {name!r} is not installed"
    if isinstance(exc, ModuleNotFoundError):
        return f"package {package!r} not installed"
    return f"package {package!r} failed to import: {(str(exc).splitlines() or [''])[0][:160]}"


def numba_compilations(*namespaces) -> tuple[int, int]:
    """``compilations()`` for backends built of Numba dispatchers: over every dispatcher found in
    the given modules, dicts or iterables, its signatures built (compiled or loaded) and its
    on-disk cache hits."""
    seen, built, loaded = set(), 0, 0
    for namespace in namespaces:
        if isinstance(namespace, dict):
            values = namespace.values()
        elif hasattr(namespace, "__dict__") and not hasattr(namespace, "overloads"):
            values = vars(namespace).values()
        else:
            values = namespace
        for value in values:
            overloads = getattr(value, "overloads", None)
            if not isinstance(overloads, dict) or id(value) in seen:
                continue
            seen.add(id(value))
            built += len(overloads)
            stats = getattr(value, "stats", None)
            loaded += sum(getattr(stats, "cache_hits", {}).values()) if stats is not None else 0
    return built, loaded


class UnsupportedProblem(ValueError):
    """The backend cannot run this problem (dtype, depth, size); the message says why."""


class DeviceFault(RuntimeError):
    """The accelerator reported an error (a launch it refused, memory it lacked, a kernel that
    faulted): its state is unknown, so the process that saw it must run nothing more on it. The
    harness records the point as ``crashed`` with this message and starts a fresh worker."""


@dataclass(frozen=True)
class Problem:
    """Inputs, targets, initial weights and learning rate of one training run.

    ``weights[l]`` has shape (sizes[l], sizes[l+1]); ``len(weights)`` is the number of weight
    layers (1 for the 2-layer network of the spec, 2 for the 3-layer network).
    """

    X: np.ndarray
    y: np.ndarray
    weights: tuple[np.ndarray, ...]
    alpha: float
    name: str = "custom"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim != 2 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(f"X {self.X.shape} and y {self.y.shape} must be 2-D with equal rows")
        if not self.weights:
            raise ValueError("a problem needs at least one weight matrix")
        rows = self.X.shape[1]
        for w in self.weights:
            if w.ndim != 2 or w.shape[0] != rows:
                raise ValueError(f"weight shapes {[w.shape for w in self.weights]} do not chain")
            rows = w.shape[1]
        if rows != self.y.shape[1]:
            raise ValueError(f"last layer width {rows} != target width {self.y.shape[1]}")
        dtypes = {a.dtype for a in (self.X, self.y, *self.weights)}
        if len(dtypes) != 1 or self.X.dtype.name not in DTYPES:
            raise ValueError(f"arrays must share one dtype of {sorted(DTYPES)}, got {dtypes}")

    @property
    def dtype(self) -> str:
        return self.X.dtype.name

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes (D, H, ..., O)."""
        return (self.X.shape[1], *(w.shape[1] for w in self.weights))

    @property
    def batch(self) -> int:
        return self.X.shape[0]

    def astype(self, dtype: str) -> Problem:
        """The same problem with every array converted to ``dtype``."""
        t = DTYPES[dtype]
        return Problem(
            self.X.astype(t),
            self.y.astype(t),
            tuple(w.astype(t) for w in self.weights),
            self.alpha,
            self.name,
            dict(self.meta),
        )


@dataclass
class TrainResult:
    """Final weights (host arrays) and the mean |err| at each logged iteration."""

    weights: list[np.ndarray]
    losses: np.ndarray  # float64, one entry per iteration in logged_iterations(...)


def logged_iterations(iterations: int, log_every: int) -> range:
    """Iterations whose loss is recorded: 0, K, 2K, ... below ``iterations`` (none if K == 0)."""
    return range(0, iterations, log_every) if log_every > 0 else range(0)


def n_logged(iterations: int, log_every: int) -> int:
    return len(logged_iterations(iterations, log_every))


def train(backend, problem: Problem, iterations: int, log_every: int = 0) -> TrainResult:
    """Run one backend module end to end: prepare, run the whole loop, fetch."""
    state = backend.prepare(problem)
    backend.run(state, iterations, log_every)
    return backend.fetch(state)
