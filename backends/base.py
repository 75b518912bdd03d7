"""The backend contract and the data every backend shares: the problem it trains on and the
result it returns.

A backend module (see ``backends/__init__.py`` for the registry) is a ``Backend`` (below)::

    DTYPES: tuple[str, ...]            # dtypes it supports, e.g. ("float64", "float32")
    DEVICE: str                         # "cpu" or "gpu": where it runs in this process
    def available() -> str | None       # None when usable here, else the reason it is not
    def prepare(problem) -> state       # copy inputs/weights where the loop will use them
    def run(state, iterations, log_every) -> None   # the whole training loop, synchronous
    def fetch(state) -> TrainResult     # bring the weights and logged losses back to the host

and may provide (the harness reads them only through ``threads_of``, ``set_threads_of``,
``simulated`` and ``compilations_of``)::

    def threads() -> int | None         # threads its loop uses (None: no CPU pool, e.g. a GPU)
    def set_threads(n) -> None          # use n threads (BLAS and Numba are limited by the harness)
    SIMULATED: bool                     # runs on the CUDA simulator (the harness shortens cases)
    COMPILES: bool                      # False: runs only code built before it was imported
    def compilations() -> tuple[int, int]   # programs this process has built so far (compiled or
                                            # loaded), and how many of them came from a disk cache

The last two give a row's ``cache`` column (``harness.timing.cache_state``): what the first call
at a point did -- compiled (``cold``), loaded from disk (``disk``), reused code this process had
already built (``memory``), built nothing (``none``), or ``unknown`` for a backend that compiles
but cannot count (CuPy's kernel cache).

Adding a backend is its file plus one registry line (``backends/__init__.py``), which also
gives its device class, plot colour and marker.

``prepare`` and ``fetch`` are where a GPU backend moves data; ``run`` is the loop alone, so the
harness can time the device-resident loop and the end-to-end call separately. ``run`` returns
only when the work is finished (asynchronous backends synchronise before returning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

DTYPES = {"float64": np.float64, "float32": np.float32}


@runtime_checkable
class Backend(Protocol):
    """What the harness needs of a backend module (``isinstance(module, Backend)`` checks it)."""

    DTYPES: tuple[str, ...]
    DEVICE: str

    def available(self) -> str | None: ...

    def prepare(self, problem: Problem) -> Any: ...

    def run(self, state: Any, iterations: int, log_every: int) -> None: ...

    def fetch(self, state: Any) -> TrainResult: ...


def threads_of(module) -> int | None:
    """The backend's ``threads()``, or None where it has no thread pool of its own to report."""
    get = getattr(module, "threads", None)
    return get() if get else None


def set_threads_of(module, n: int) -> None:
    """The backend's ``set_threads(n)`` where it has one."""
    setter = getattr(module, "set_threads", None)
    if setter:
        setter(n)


def compilations_of(module) -> tuple[int, int] | None:
    """The backend's ``compilations()`` counters, or None where it reports none."""
    get = getattr(module, "compilations", None)
    return tuple(get()) if get else None


def compiles(module) -> bool:
    """False for a backend that declares it runs only prebuilt code (``COMPILES = False``)."""
    return bool(getattr(module, "COMPILES", True))


def numba_compilations(*namespaces) -> tuple[int, int]:
    """``compilations()`` for backends built of Numba dispatchers: over every dispatcher found in
    the given modules (or dicts), its signatures built (compiled or loaded) and its on-disk cache hits."""
    seen, built, loaded = set(), 0, 0
    for namespace in namespaces:
        values = vars(namespace).values() if not isinstance(namespace, dict) else namespace.values()
        for value in values:
            overloads = getattr(value, "overloads", None)
            if not isinstance(overloads, dict) or id(value) in seen:
                continue
            seen.add(id(value))
            built += len(overloads)
            stats = getattr(value, "stats", None)
            loaded += sum(getattr(stats, "cache_hits", {}).values()) if stats is not None else 0
    return built, loaded


def simulated(module) -> bool:
    """True when the backend runs on the CUDA simulator (each GPU thread a Python thread)."""
    return bool(getattr(module, "SIMULATED", False))


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


def check_dtype(module_dtypes: tuple[str, ...], problem: Problem, backend: str) -> None:
    if problem.dtype not in module_dtypes:
        raise UnsupportedProblem(f"{backend} supports {', '.join(module_dtypes)}, not {problem.dtype}")


def train(backend, problem: Problem, iterations: int, log_every: int = 0) -> TrainResult:
    """Run one backend module end to end: prepare, run the whole loop, fetch."""
    state = backend.prepare(problem)
    backend.run(state, iterations, log_every)
    return backend.fetch(state)
