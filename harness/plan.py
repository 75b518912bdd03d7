"""What a sweep is asked to do and what it may run: presets, the plan, the grid, and admission
(the time, memory and point budgets, with the per-iteration predictor that applies the last).

``harness.bench`` walks the grid; ``harness.timing`` measures each point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from harness import timing
from harness.schema import BUDGET_USED_UP


@dataclass(frozen=True)
class Preset:
    batch: tuple[int, ...]
    hidden: tuple[int, ...]
    dtypes: tuple[str, ...]
    repeats: int
    min_time: float  # seconds one timed run must last
    point_budget: float  # seconds one backend may spend on one point (validation + repeats)
    total_budget: float  # seconds for the whole sweep; points left when it runs out are skipped
    validate_iterations: int = 8


POWERS_OF_4 = tuple(4**k for k in range(1, 9))  # 4 .. 65536
PRESETS = {
    "quick": Preset((4, 256, 16384), (4, 256), ("float64",), 3, 0.01, 3.0, 30.0, 4),
    # default: timed runs of 20 ms (was 50 ms until the seven effort-ladder backends came: measured
    # under the same load, 6 small points x 15 CPU backends took 63 s instead of 102 s). Sweep
    # budget 400 s: `make bench` from a fresh clone on 2 cores took 10m44s with 500 s (sweep 12:
    # 522 s of sweep), 10m25s with 450 s (sweep 13: 467 s of sweep) and 9m20s with 400 s (417 s of
    # sweep, 30 points, up to N*H = 2^18); the venv, the ceilings and the plots take the rest.
    "default": Preset(POWERS_OF_4, POWERS_OF_4[:6], ("float64",), 5, 0.02, 45.0, 400.0),
    "full": Preset(POWERS_OF_4, POWERS_OF_4[:6], ("float64", "float32"), 7, 0.2, 120.0, 4 * 3600.0),
    # For a lent GPU machine: every batch size of the default grid, the hidden widths 4, 64, 1024
    # and 4096 (the corners and the largest point of the default grid). Sized for the backends of
    # 29e10a6 to end within 10 minutes; with today's backends `make gpu-bench` runs it in two
    # parts, gpu-1 and gpu-2.
    "gpu": Preset(POWERS_OF_4, (4, 64, 1024, 4096), ("float64",), 5, 0.05, 30.0, 400.0),
    # `make gpu-bench PART=1` / `PART=2`: the gpu grid's small and large batch sizes, one command
    # each. The sweep's own budget (330 s) plus the ceilings measured before and after it and the
    # point running when it runs out is expected (not measured) to keep each part under 9 minutes.
    "gpu-1": Preset(POWERS_OF_4[:4], (4, 64, 1024, 4096), ("float64",), 5, 0.05, 30.0, 330.0),
    "gpu-2": Preset(POWERS_OF_4[4:], (4, 64, 1024, 4096), ("float64",), 5, 0.05, 30.0, 330.0),
    # `make gpu-check`'s short sweep of the GPU backends (harness.gpu_check, step sweep: 125 s with
    # the ceilings): 3 batch sizes x 3 widths in both dtypes, short timed runs, few repeats.
    "gpu-check": Preset((256, 4096, 65536), (4, 64, 1024), ("float64", "float32"), 3, 0.02, 8.0, 75.0),
}
SEED = 2024
#: A point whose estimated memory exceeds this share of what is available is skipped.
MEMORY_SHARE = 0.7


@dataclass
class Plan:
    """What a sweep is asked to do (configuration only; ``Sweep`` holds the state of a run)."""

    preset: Preset
    backends: list[str]
    out: Path
    machine: str
    threads: int | None = None
    resume: bool = True
    seed: int = SEED
    timeout: float = 120.0  # least seconds a worker may take to answer before it is killed
    has_gpu: bool = False  # the machine has an NVIDIA GPU (for the device of rows that never ran)


def grid(preset: Preset) -> list[tuple[str, int, int]]:
    """(dtype, batch, hidden) points, smallest work first so slow backends are predicted, not run."""
    points = itertools.product(preset.dtypes, preset.batch, preset.hidden)
    return sorted(points, key=lambda p: (p[1] * p[2], p[1], p[0]))


def bytes_needed(backend: str, dtype: str, batch: int, hidden: int) -> float:
    """Rough peak memory of one point: the backend's declared estimate (``Backend.memory_bytes``),
    read without running it; the default estimate for a name whose file cannot be read here."""
    import backends
    from backends.base import Backend

    return backends.declared(backend, "memory_bytes", Backend.memory_bytes)(dtype, batch, hidden)


def memory_refusal(backend: str, dtype: str, batch: int, hidden: int) -> str | None:
    """Why a point would not fit in the memory available now (more than MEMORY_SHARE of it), or None.
    The sweep's admission and ``python -m harness run`` both ask this."""
    free = psutil.virtual_memory().available
    need = bytes_needed(backend, dtype, batch, hidden)
    if need > MEMORY_SHARE * free:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"
    return None


class Predictor:
    """Predicts seconds per iteration of a backend at a new point from its largest smaller point."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], dict[int, float]] = {}

    def add(self, backend: str, dtype: str, work: int, seconds_per_iteration: float) -> None:
        """Record (or replace: the repeats' median supersedes the calibration's estimate)."""
        self.seen.setdefault((backend, dtype), {})[work] = seconds_per_iteration

    def predict(self, backend: str, dtype: str, work: int) -> tuple[float, int] | None:
        below = [(w, s) for w, s in self.seen.get((backend, dtype), {}).items() if w <= work]
        if not below:
            return None
        w, s = max(below)
        return s * work / w, w  # at least linear in N*H: the work per iteration is


def admit(
    preset: Preset, predictor: Predictor, backend: str, point: tuple, validate: int, elapsed: float
) -> str | None:
    """Why ``backend`` must skip this point (dtype, N, H) before it runs, ``elapsed`` seconds into
    the sweep (None: it may run): the sweep's time budget, memory, the point budget predicted."""
    dtype, batch, hidden = point
    if elapsed > preset.total_budget:
        return BUDGET_USED_UP.format(preset.total_budget)
    memory = memory_refusal(backend, dtype, batch, hidden)
    if memory:
        return memory
    guess = predictor.predict(backend, dtype, batch * hidden)
    if guess:
        per_iteration, from_work = guess
        cost = timing.point_cost(per_iteration, validate, timing.repeats_for(preset.repeats, per_iteration))
        if cost > preset.point_budget:
            return (f"predicted {per_iteration:.3g} s/iteration (from N*H={from_work}): ~{cost:.0f} s "
                    f"> point budget {preset.point_budget:.0f} s")  # fmt: skip
    return None


def custom_preset(base: Preset, batch=None, hidden=None, dtypes=None) -> Preset:
    return replace(
        base,
        batch=tuple(batch) if batch else base.batch,
        hidden=tuple(hidden) if hidden else base.hidden,
        dtypes=tuple(dtypes) if dtypes else base.dtypes,
    )
