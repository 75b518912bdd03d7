"""What several test files share: a usable backend or a skip that says why, and the published-run
assertions (SPEC: every float64 backend reproduces both seed runs to the last printed digit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import backends
from backends.base import Backend, TrainResult
from harness.problems import XOR2_PUBLISHED_OUTPUT, XOR3_PUBLISHED_LOSSES, xor2

#: The published xor2 print is the forward pass after 9999 updates (iteration 10000's).
XOR2_UPDATES = 9999


#: Backends that compile a program per problem shape and dtype (Inductor; XLA with up to 64
#: iterations unrolled): seconds per new size, however warm the caches. `make test-fast` keeps their
#: contract checks and their float64 xor2 seed runs; the full suite (`make test`, CI) runs the rest.
PER_SHAPE_COMPILERS = ("torch-compile", "jax-unrolled")


def fast_tier(names: Sequence[str]) -> list:
    """``names`` as pytest parameters, the PER_SHAPE_COMPILERS marked slow (left out of `make test-fast`)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in PER_SHAPE_COMPILERS else n for n in names]


def usable(name: str) -> Backend:
    """The backend, or a skip naming why it cannot run here (a missing package, no GPU)."""
    why = backends.availability(name)
    if why:
        pytest.skip(f"{name} unavailable here: {why}")
    return backends.load(name)


def printed_losses(losses: Sequence[float]) -> tuple[float, ...]:
    """The losses as the published xor3 run prints them (12 significant digits)."""
    return tuple(float(f"{float(loss):.12g}") for loss in losses)


def assert_xor3_published(losses: Sequence[float], prefix: bool = False) -> None:
    """The xor3 trace (60000 iterations, logged every 10000) to the last published digit; with
    ``prefix``, a shorter run's losses against the published ones they cover (at least two)."""
    if prefix:
        assert 2 <= len(losses) <= len(XOR3_PUBLISHED_LOSSES), len(losses)
        assert printed_losses(losses) == XOR3_PUBLISHED_LOSSES[: len(losses)]
    else:
        assert printed_losses(losses) == XOR3_PUBLISHED_LOSSES


def assert_xor2_published(result: TrainResult) -> None:
    """The xor2 output after ``XOR2_UPDATES`` updates, to the 8 published decimals."""
    output = 1 / (1 + np.exp(-(xor2().X @ result.weights[0])))
    assert tuple(f"{v:.8f}" for v in output.ravel()) == tuple(f"{v:.8f}" for v in XOR2_PUBLISHED_OUTPUT)


ROOT = Path(__file__).resolve().parents[1]


def compilations_in_a_fresh_process(code: str, name: str, **env: str) -> tuple[int, int]:
    """(built, loaded from disk) that ``code`` prints as its last line, run for backend ``name`` in
    a new interpreter from the repository root with ``env`` added (e.g. NUMBA_CACHE_DIR)."""
    out = subprocess.run([sys.executable, "-c", code, name], cwd=ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))
