"""The headline figures of one machine's results, as Markdown: ``<machine>/plots/summary.md``.

Computed from the per-point medians that the plots use (``rows.medians`` of the newest run of
each point), so the README's tables can be regenerated from stored results with ``make plots``:

* speed-up of every backend over NumPy: geometric mean over the points both measured, the slowest
  point, and two landmark points (the xor3 seed shape 4 x 4 and 4096 x 1024);
* the Numba targets (docs/performance.md): the best Numba CPU backend (``FAMILY`` "numba",
  ``DEVICE`` "cpu") against NumPy at every point, and for N*H >= 2^20 against the measured floor
  and against the fastest other CPU backend;
* each variant over the backend it derives from (``backends.base_of``: e.g. a threaded or
  unrolled subclass over its parent), by problem size;
* the effort ladder (``harness.report.ladder``): each Numba CPU backend by effort level, with the
  C twins, against NumPy by size band, with its loop lines; each twin pair's time ratio at every
  point, and by band where each side is faster;
* on a GPU machine, the Numba GPU backends over the best Numba CPU backend at the largest point
  measured, and against the GPU floor (``harness.gpu_floor``) where machine.json has the GPU
  ceilings.

A backend with no timed point is listed with the reason its rows give, never left out. The
backends are found by their declarations; no backend but the `numpy` reference is named here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

import backends
from harness.report import ladder
from harness.report.rows import REFERENCE, ordered

LANDMARKS = ((4, 4), (4096, 1024))
LARGE = 1 << 20  # N*H from which the floor and JAX targets apply


def _ratio(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def _geo(values: pd.Series) -> float:
    values = values[np.isfinite(values) & (values > 0)]
    return math.exp(float(np.mean(np.log(values)))) if len(values) else float("nan")


def _point(index) -> str:
    n, h = index
    return f"{n} x {h}"


def _why_missing(frame: pd.DataFrame, backend: str, dtype: str) -> str:
    rows = frame[(frame["backend"] == backend) & (frame["dtype"] == dtype)]
    reasons = rows["reason"].dropna().astype(str)
    reasons = reasons[reasons != ""]
    if reasons.empty:
        return "no rows"
    return f"{rows['status'].iloc[0]}: {reasons.iloc[0]}"


def summary_markdown(
    name: str,
    frame: pd.DataFrame,
    summary: pd.DataFrame,
    ceilings: dict | None,
    floor_fn: Callable | None,
) -> str:
    """Markdown report for one machine folder. ``frame``: its newest rows; ``summary``: per-point medians."""
    out = [f"# Summary: {name}", ""]
    out.append(
        "Medians per point from `runs.csv` (newest run of each point); every ratio compares two backends "
        "measured side by side in the same sweep on this machine."
    )
    for dtype in sorted(summary["dtype"].unique()):
        table = point_table(summary, dtype)
        out += ["", f"## {dtype}", ""]
        out += speedup_table(table, frame, dtype)
        out += _numba_targets(table, frame, dtype, ceilings, floor_fn)
        out += ladder.summary_section(table, frame, dtype)
        out += gpu_standing(table, frame)
        out += _gpu_target(table, frame, dtype)
        out += _gpu_floor(table, frame, dtype, ceilings)
    return "\n".join(out) + "\n"


def point_table(summary: pd.DataFrame, dtype: str) -> pd.DataFrame:
    """Medians of one dtype: rows (batch, hidden), a column per backend."""
    part = summary[summary["dtype"] == dtype]
    return part.pivot_table(index=["batch", "hidden"], columns="backend", values="median")


def speedup_table(table: pd.DataFrame, frame: pd.DataFrame, dtype: str) -> list[str]:
    """Every backend's speed-up over NumPy: geometric mean, slowest point, the landmark points."""
    backends = [b for b in ordered(frame["backend"].unique()) if b != REFERENCE]
    if REFERENCE not in table:
        return [f"No `{REFERENCE}` time at any point: {_why_missing(frame, REFERENCE, dtype)}."]
    base = table[REFERENCE]
    out = [f"Speed-up over `{REFERENCE}` ({int(base.notna().sum())} points have a `{REFERENCE}` time):", ""]
    marks = " | ".join(f"{n} x {h}" for n, h in LANDMARKS)
    out.append(f"| backend | points | geometric mean | slowest point | {marks} |")
    out.append("|---|---|---|---|" + "---|" * len(LANDMARKS))
    for b in backends:
        speed = (base / table[b]).dropna() if b in table else pd.Series(dtype=float)
        if b not in table:
            cells = ["0", f"not timed ({_why_missing(frame, b, dtype)})", ""] + [""] * len(LANDMARKS)
        elif speed.empty:
            cells = ["0", f"no point in common with `{REFERENCE}`", ""] + [""] * len(LANDMARKS)
        else:
            slow = speed.idxmin()
            cells = [str(len(speed)), _ratio(_geo(speed)), f"{_ratio(speed[slow])} at {_point(slow)}"]
            cells += [_ratio(speed.get(p, float("nan"))) for p in LANDMARKS]
        out.append(f"| `{b}` | " + " | ".join(cells) + " |")
    return out


def _numba_cpu(frame) -> list[str]:
    return backends.of_family("numba", "cpu", among=set(frame["backend"]))


def _numba_targets(table, frame, dtype, ceilings, floor_fn) -> list[str]:
    numba_cpu = _numba_cpu(frame)
    have = [b for b in numba_cpu if b in table]
    if not have:
        return ["", "No Numba CPU backend was timed: " + ("; ".join(f"`{b}`: {_why_missing(frame, b, dtype)}" for b in numba_cpu) or "none in these rows")]
    best = table[have].min(axis=1)
    lines = ["", "### Numba on the CPU", ""]
    if REFERENCE in table:
        speed = (table[REFERENCE] / best).dropna()
        if not speed.empty:
            slow = speed.idxmin()
            lines.append(
                f"- Best Numba CPU backend over `{REFERENCE}`: geometric mean {_ratio(_geo(speed))}, slowest point "
                f"{_ratio(speed[slow])} at {_point(slow)}; slower than `{REFERENCE}` at {int((speed < 1).sum())} of {len(speed)} points."
            )
    lines += _variants(table)
    rows = []
    for (n, h), t in best.items():
        if not np.isfinite(t):  # no Numba CPU time at this point (e.g. the budget ran out): its cells stay empty
            rows.append((n, h, float("nan"), None, float("nan")))
            continue
        floor = float("nan")
        if ceilings and floor_fn is not None:
            try:
                floor = floor_fn(int(n), int(h), dtype, ceilings)
            except Exception:  # a floor model that cannot price this point leaves the cell empty
                floor = float("nan")
        others = table.loc[(n, h), [b for b in _cpu_peers(table, frame) if b not in have]].dropna()
        peer = (others.min() / t, others.idxmin()) if len(others) else None
        ref = table[REFERENCE].get((n, h), float("nan")) / t if REFERENCE in table else float("nan")
        rows.append((n, h, t / floor if floor and np.isfinite(floor) else float("nan"), peer, ref))
    if not rows:
        return lines
    lines += [
        "",
        "Every point (floor: `harness.floor.floor_seconds` with this machine's ceilings in `machine.json`: the "
        "larger of the throughput time and the critical path of one iteration, on one thread or on all of them "
        "with one hand-off between cores in the path, whichever is less; ceilings measured before the latencies "
        "were give the all-thread throughput floor alone, and before the hand-off was, the all-thread floor "
        "without it):",
        "",
        "| N x H | best Numba / floor | fastest other CPU backend / best Numba | numpy / best Numba |",
        "|---|---|---|---|",
    ]
    for n, h, f, peer, r in rows:
        cells = [
            f"{f:.2f}" if np.isfinite(f) else "-",
            f"{peer[0]:.2f} (`{peer[1]}`)" if peer else "-",
            f"{r:.2f}" if np.isfinite(r) else "-",
        ]
        lines.append(f"| {n} x {h} | " + " | ".join(cells) + " |")
    floors = np.array([f for _, _, f, _, _ in rows])
    finite = np.isfinite(floors)
    if finite.any():
        lines.append("")
        for label, keep in (("every point", finite), ("N*H >= 2^20", finite & np.array([n * h >= LARGE for n, h, *_ in rows]))):
            part = floors[keep]
            if part.size:
                lines.append(
                    f"Best Numba / floor, {label}: {part.min():.2f}-{part.max():.2f}; within 2x at "
                    f"{int((part <= 2).sum())} of {part.size} points."
                )
    beaten = [(n, h, peer) for n, h, _, peer, _ in rows if peer and peer[0] < 1]
    compared = sum(1 for *_, peer, _ in rows if peer)
    if compared:
        lines.append(
            f"The best Numba backend is the fastest CPU backend at {compared - len(beaten)} of {compared} points"
            + (": slower at " + ", ".join(f"{n} x {h} (`{p[1]}`, {1 / p[0]:.2f}x faster)" for n, h, p in beaten) if beaten else "")
            + "."
        )
    return lines


def _cpu_peers(table, frame) -> list[str]:
    """Backends timed on the CPU here, besides the NumPy reference (the rows' ``device``; a row
    without one: ``results.nominal_device`` on a machine without a GPU)."""
    from harness.results import nominal_device

    device = frame.groupby("backend")["device"].last() if "device" in frame.columns else pd.Series(dtype=object)

    def where(b):
        d = device.get(b)
        return d if isinstance(d, str) and d else nominal_device(b, has_gpu=False)

    return [b for b in table.columns if b != REFERENCE and where(b) == "cpu"]


def _variants(table) -> list[str]:
    """Each timed variant over the timed backend it derives from, by problem-size band."""
    lines = []
    for variant in ordered(table.columns):
        base = backends.base_of(variant)
        if base is None or base not in table:
            continue
        ratio = (table[base] / table[variant]).dropna()
        work = np.array([n * h for n, h in ratio.index])
        for lo, hi, label in ((0, 1 << 14, "N*H < 2^14"), (1 << 14, LARGE, "2^14 <= N*H < 2^20"), (LARGE, math.inf, "N*H >= 2^20")):
            part = ratio[(work >= lo) & (work < hi)]
            if len(part):
                lines.append(
                    f"- `{variant}` / `{base}` speed-up, {label}: median {_ratio(part.median())} "
                    f"(range {_ratio(part.min())}-{_ratio(part.max())}, {len(part)} point{'s' if len(part) != 1 else ''})."
                )
    return lines


GPU_LANDMARKS = ((4, 4), (1024, 1024), (65536, 4096))


def _gpu_floor(table, frame, dtype, ceilings) -> list[str]:
    """Each CUDA backend's time as a multiple of the GPU floor (harness.gpu_floor), per point."""
    from harness.gpu_floor import gpu_floor_seconds, has_gpu_ceilings

    present = backends.of_family("numba", "gpu", among=set(frame["backend"]))
    if not present or not any(b in table for b in present):
        return []
    if not has_gpu_ceilings(ceilings):
        return ["", "GPU floor: unmeasured (machine.json has no GPU ceilings; `python -m harness.gpu_floor` "
                    "measures them on the GPU machine, and `bench` records them there)."]  # fmt: skip
    lines = ["", "Time per iteration over the GPU floor (`harness.gpu_floor.gpu_floor_seconds` with this "
                 "machine's GPU ceilings in `machine.json`):", ""]  # fmt: skip
    marks = " | ".join(f"{n} x {h}" for n, h in GPU_LANDMARKS)
    lines += [f"| backend | points | range | within 2x | {marks} |", "|---|---|---|---|" + "---|" * len(GPU_LANDMARKS)]
    for b in present:
        if b not in table:
            lines.append(f"| `{b}` | 0 | not timed ({_why_missing(frame, b, dtype)}) | | " + " | ".join([""] * len(GPU_LANDMARKS)) + " |")
            continue
        times = table[b].dropna()
        ratio = pd.Series({p: t / gpu_floor_seconds(int(p[0]), int(p[1]), dtype, ceilings) for p, t in times.items()})
        cells = [str(len(ratio)), f"{ratio.min():.2f}-{ratio.max():.2f}", f"{int((ratio <= 2).sum())} of {len(ratio)}"]
        cells += [f"{ratio[p]:.2f}" if p in ratio else "-" for p in GPU_LANDMARKS]
        lines.append(f"| `{b}` | " + " | ".join(cells) + " |")
    return lines


def gpu_standing(table, frame) -> list[str]:
    """Every backend that ran on the GPU (the rows' ``device``) against the others, point by point:
    how often it is the fastest GPU backend, its time over the best GPU time, and how often it
    beats the best CPU backend."""
    if "device" not in frame.columns:
        return []
    device = frame.groupby("backend")["device"].last()
    gpus = [b for b in ordered(device.index) if device[b] == "gpu" and b in table]
    cpus = [b for b in table.columns if device.get(b) == "cpu"]
    if not gpus:
        return []
    timed = table[gpus].dropna(how="all")
    best_gpu = timed.min(axis=1)
    best_cpu = table.loc[timed.index, cpus].min(axis=1) if cpus else pd.Series(np.nan, index=timed.index)
    lines = ["", "### GPU backends (the `device` column), point by point", "",
             f"{len(timed)} points have a GPU time. Time over best GPU: geometric mean over the backend's points "
             "of its time / the fastest GPU backend's time there (1 = always the fastest).", "",
             "| backend | points | fastest GPU backend at | time over best GPU (geo-mean, worst) | beats the best CPU backend at |",
             "|---|---|---|---|---|"]  # fmt: skip
    winner = timed.idxmin(axis=1)
    for b in gpus:
        mine = timed[b].dropna()
        over = mine / best_gpu[mine.index]
        beats = (mine < best_cpu[mine.index]).sum() if cpus else 0
        cpu_cell = f"{int(beats)} of {int(best_cpu[mine.index].notna().sum())}" if cpus else "no CPU backend timed"
        lines.append(f"| `{b}` | {len(mine)} | {int((winner[mine.index] == b).sum())} of {len(mine)} | "
                     f"{_geo(over):.2f}, {over.max():.2f} at {_point(over.idxmax())} | {cpu_cell} |")  # fmt: skip
    return lines


def _gpu_target(table, frame, dtype) -> list[str]:
    """Each Numba GPU backend over the best Numba CPU backend at the largest point both timed."""
    lines = []
    have = [b for b in _numba_cpu(frame) if b in table]
    for gpu in backends.of_family("numba", "gpu", among=set(frame["backend"])):
        if gpu not in table:
            lines += ["", f"`{gpu}` was not timed here ({_why_missing(frame, gpu, dtype)}): GPU figures unmeasured."]
            continue
        both = table[[gpu, *have]].dropna()
        if both.empty or not have:
            lines += ["", f"`{gpu}` has no point in common with a Numba CPU backend."]
            continue
        n, h = max(both.index, key=lambda p: (p[0] * p[1], p[0]))
        ratio = both.loc[(n, h), have].min() / both.loc[(n, h), gpu]
        lines += ["", f"`{gpu}` over the best Numba CPU backend at the largest common point ({n} x {h}): {_ratio(ratio)}."]
    return lines
