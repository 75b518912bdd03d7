"""Problems every backend trains on, built here once so all backends start from identical bits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backends.base import DTYPES, Problem

XOR_X = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]


@dataclass(frozen=True)
class Case:
    """A problem with its run length: what `run` and `validate` execute."""

    problem: Problem
    iterations: int
    log_every: int

    @property
    def label(self) -> str:
        p = self.problem
        size = "x".join(map(str, p.sizes))
        return f"{p.name}[N={p.batch},{size},{p.dtype},T={self.iterations}]"


def xor2() -> Problem:
    """SPEC seed problem: 2-layer net, y = first input column."""
    X = np.array(XOR_X, dtype=np.float64)
    y = np.array([[0, 0, 1, 1]], dtype=np.float64).T
    np.random.seed(1)  # the published run uses NumPy's legacy global generator
    W0 = 2 * np.random.random((3, 1)) - 1
    return Problem(X, y, (W0,), 1.0, "xor2")


def xor3() -> Problem:
    """SPEC seed problem: 3-layer net (3, 4, 1) learning XOR."""
    X = np.array(XOR_X, dtype=np.float64)
    y = np.array([[0, 1, 1, 0]], dtype=np.float64).T
    np.random.seed(1)
    W0 = 2 * np.random.random((3, 4)) - 1
    W1 = 2 * np.random.random((4, 1)) - 1  # drawn after W0 from the same stream
    return Problem(X, y, (W0, W1), 1.0, "xor3")


SEED_DEFAULTS = {"xor2": (xor2, 10000, 1000), "xor3": (xor3, 60000, 10000)}

# Published outputs of the two seed runs (printed with 12 and 8 significant digits).
XOR3_PUBLISHED_LOSSES = (
    0.496410031903,
    0.00858452565325,
    0.00578945986251,
    0.00462917677677,
    0.00395876528027,
    0.00351012256786,
)
# xor2 prints the forward pass of its last iteration, i.e. s(X @ W0) after 9999 updates.
XOR2_PUBLISHED_OUTPUT = (0.00966449, 0.00786506, 0.99358898, 0.99211957)

MAX_BATCH = 1 << 24
MAX_WIDTH = 1 << 16


def scaled(
    batch: int,
    hidden: int,
    dtype: str = "float64",
    seed: int = 0,
    inputs: int = 3,
    outputs: int = 1,
    layers: int = 2,
) -> Problem:
    """The sweep problem: XOR of two random bits, extra inputs are noise bits, last input is 1.

    Scaling (why it stays healthy up to N=65536, H=4096 in float32 and float64, see tests):
    - weights uniform in +-1/sqrt(fan_in), so every pre-activation starts O(1);
    - alpha = 1 / (N * sqrt(H)): 1/N turns the summed gradient into the mean gradient, and
      1/sqrt(H) because the output pre-activation sums H weight updates of the same sign at
      once -- with alpha = 1/N alone the output layer overshoots by ~H/16 per step and saturates
      (|z| in the hundreds, activations and deltas underflow to subnormals).
    Every array is drawn in float64 from one seeded generator, then cast, so float32 and float64
    runs start from the same values.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    for label, value, low, high in (
        ("batch", batch, 1, MAX_BATCH),
        ("hidden", hidden, 1, MAX_WIDTH),
        ("inputs", inputs, 3, 64),
        ("outputs", outputs, 1, 64),
        ("layers", layers, 1, 8),
    ):
        if not low <= value <= high:
            raise ValueError(f"{label} must be in [{low}, {high}], got {value}")
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(batch, inputs - 1))
    X = np.column_stack([bits, np.ones(batch)]).astype(np.float64)
    target = (bits[:, 0] ^ bits[:, 1]).astype(np.float64)
    y = np.repeat(target[:, None], outputs, axis=1)
    sizes = [inputs] + [hidden] * (layers - 1) + [outputs]
    weights = tuple(
        rng.uniform(-1.0, 1.0, size=(fan_in, fan_out)) / math.sqrt(fan_in)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
    )
    alpha = 1.0 / (batch * math.sqrt(max(sizes[1:-1], default=1)))
    problem = Problem(X, y, weights, alpha, "scaled", {"seed": seed})
    return problem.astype(dtype)


def seed_case(name: str, iterations: int | None = None, log_every: int | None = None) -> Case:
    build, default_iterations, default_log = SEED_DEFAULTS[name]
    return Case(
        build(),
        default_iterations if iterations is None else iterations,
        default_log if log_every is None else log_every,
    )


def validation_cases(quick: bool = False) -> list[Case]:
    """What `validate` checks: both seed problems and scaled problems at awkward sizes, in both dtypes.

    The float64 seed runs are the spec's full runs; float32 seed runs use fewer iterations (the
    float32 vs float64 gap grows along a 60000-step trajectory, see SPEC agreement numbers).
    """
    cases = [seed_case("xor2"), seed_case("xor3")]
    cases += [Case(p.problem.astype("float32"), 2000, 500) for p in (seed_case("xor2"), seed_case("xor3"))]
    sizes = [(1, 1), (1, 7), (3, 1), (5, 3), (17, 33), (64, 5)]
    if not quick:
        sizes += [(257, 129), (1000, 100)]
    for dtype in ("float64", "float32"):
        for batch, hidden in sizes:
            cases.append(Case(scaled(batch, hidden, dtype, seed=batch * 31 + hidden), 300, 50))
    cases.append(Case(scaled(9, 6, "float64", seed=5, inputs=5, outputs=2), 200, 40))
    cases.append(Case(scaled(13, 4, "float64", seed=6, layers=1), 200, 40))
    return cases
