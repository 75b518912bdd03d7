"""Across machines: "which hardware, which backend should I train this on?", from stored results alone.

Written to ``<results>/plots/`` (or ``out_dir``) by ``draw_comparison``:

* ``fastest_<dtype>.png/.svg``: one panel per machine, one cell per measured (N, H), coloured by
  the backend with the lowest median time there, labelled with it and the time per iteration;
* ``crossovers.md`` / ``crossovers.csv``: for every pair of machines (a GPU side and a CPU side,
  the same machine included) and each hidden width both measured, the batch from which the
  fastest GPU backend of the first beats the fastest CPU backend of the second at every larger
  batch measured (log-log interpolated between grid points, as ``crossovers.crossovers``; smaller
  batches where the GPU already won are named), and the best backend on each side at the largest
  common batch.

GPU and CPU come from each row's ``device`` column (``results.fill_device`` for older rows).
Each side's times are its own machine's medians: a cross-machine ratio compares two sweeps run
at different times, which is what comparing hardware means; within one machine the figures are
side by side in one sweep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report import figures
from harness.report.crossovers import _us, devices_of, pair_crossovers
from harness.report.rows import (
    MACHINE_STYLES,
    REFERENCE,
    RUNS,
    Log,
    colour,
    markdown,
    marker,
    notes_for,
    ordered,
)
from harness.results import write_atomic


def fastest(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (dtype, batch, hidden): the backend with the lowest median and its median."""
    if summary.empty:
        return pd.DataFrame(columns=["dtype", "batch", "hidden", "backend", "median"])
    best = summary.loc[summary.groupby(["dtype", "batch", "hidden"])["median"].idxmin()]
    return best[["dtype", "batch", "hidden", "backend", "median"]].reset_index(drop=True)


def _fastest_figure(bests: dict[str, pd.DataFrame], devices: dict[str, dict], dtype: str, notes: list[str]):
    names = sorted(bests)
    cols, rows = figures.grid_shape(len(names), 2)
    sizes = {m: (sorted(b["batch"].unique()), sorted(b["hidden"].unique())) for m, b in bests.items()}
    width = max(0.62 * len(sizes[m][0]) + 1.6 for m in names)
    height = max(0.42 * len(sizes[m][1]) + 1.4 for m in names)
    fig, width_chars, _ = figures.new_figure(cols, rows, notes, (width, height))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    shown = set()
    for ax, machine in zip(axes, names):
        best = bests[machine]
        batches, hiddens = sizes[machine]
        image = np.ones((len(hiddens), len(batches), 3)) * 0.87  # grey: not measured
        for r in best.itertuples(index=False):
            i, j = hiddens.index(r.hidden), batches.index(r.batch)
            image[i, j] = matplotlib_rgb(colour(r.backend))
            shown.add(r.backend)
            light = sum(image[i, j]) > 1.6
            where = " GPU" if devices[machine].get(r.backend) == "gpu" else ""
            ax.text(j, i, f"{_short(r.backend)}{where}\n{_us(r.median)}", ha="center", va="center", fontsize=6,
                    color="black" if light else "white")  # fmt: skip
        ax.imshow(image, origin="lower", aspect="auto")
        ax.set_xticks(range(len(batches)), [figures.size_label(b) for b in batches], fontsize=7)
        ax.set_yticks(range(len(hiddens)), [figures.size_label(h) for h in hiddens], fontsize=7)
        ax.set_xlabel("batch N")
        ax.set_ylabel("hidden H")
        ax.set_title(machine, fontsize=10)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    order = ordered(shown)
    fig.legend([Patch(color=colour(n)) for n in order], order, loc="outside right upper", fontsize=8,
               title="fastest")  # fmt: skip
    fig.suptitle(f"fastest backend per point, {dtype} (label: backend, GPU if it ran on one, median time per iteration)")
    figures.footer(fig, notes, f"data: {', '.join(f'{m}/{RUNS}' for m in names)}, {dtype}", width_chars)
    return fig


def matplotlib_rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def _short(name: str) -> str:
    return name.replace("numba-", "nb-").replace("-compile", "-c").replace("parallel", "par")


def draw_comparison(loaded: dict, summaries: dict[str, pd.DataFrame], out: Path, log: Log = print) -> list[Path]:
    """The cross-machine files (a cross-machine builder of ``harness.report``). ``loaded``: ``plots.load``'s
    {machine: (rows, fingerprint)}; ``summaries``: per-point medians of each machine."""
    written: list[Path] = []
    machines = {m: (loaded[m][0], s) for m, s in summaries.items() if not s.empty}
    if not machines:
        return written
    dtypes = sorted(set().union(*(set(s["dtype"]) for _, s in machines.values())))
    for dtype in dtypes:
        bests = {m: fastest(s[s["dtype"] == dtype]) for m, (_, s) in machines.items()}
        bests = {m: b for m, b in bests.items() if not b.empty}
        if not bests:
            continue
        notes = [f"{m}: no {dtype} rows" for m in machines if m not in bests]
        notes += [f"[{m}] {n}" for m in bests for n in notes_for(loaded[m][0][loaded[m][0]["dtype"] == dtype])]
        devices = {m: devices_of(loaded[m][0]) for m in bests}
        written += figures.save(_fastest_figure(bests, devices, dtype, notes), out, f"fastest_{dtype}")
    table = pair_crossovers(machines)
    write_atomic(out / "crossovers.csv", table.to_csv(index=False))
    lines = ["# CPU <-> GPU crossovers, per pair of machines", "",
             "For each GPU machine, CPU machine (the same one included), dtype and hidden width both measured: "
             "the batch N from which the fastest GPU backend of the first beats the fastest CPU backend of "
             "the second at every larger batch measured (log-log interpolated between grid points; from `runs.csv` medians, newest run per point), "
             "and the two winners at the largest common batch.", ""]  # fmt: skip
    if table.empty:
        lines.append("No pair of machines has both GPU and CPU timings at a common point.")
    else:
        lines.append(markdown(table))
    write_atomic(out / "crossovers.md", "\n".join(lines) + "\n")
    written += [out / "crossovers.csv", out / "crossovers.md"]
    log(f"plots: crossovers across machines: {len(table)} rows in {out / 'crossovers.md'}")
    return written


def machines(summaries: dict[str, pd.DataFrame], dtype: str, notes, log: Log) -> Figure | None:
    """Across machine folders: time vs batch at one common hidden width, and geo-mean speedups.

    Colour is the backend, as everywhere; line style (left) and hatch (right) is the machine.
    """
    parts = {m: s[s["dtype"] == dtype] for m, s in summaries.items()}
    parts = {m: s for m, s in parts.items() if not s.empty}
    if len(parts) < 2:
        log(f"plots: cross-machine {dtype}: skipped, only {len(parts)} machine folder(s) with {dtype} data")
        return None
    common = set.intersection(*(set(s["hidden"]) for s in parts.values()))
    if not common:
        log(f"plots: cross-machine {dtype}: skipped, no hidden width measured on every machine")
        return None
    hidden = max(common)  # the largest shared width: where backends differ most
    machines = sorted(parts)
    names = ordered(set().union(*(set(s["backend"]) for s in parts.values())))
    fig, width_chars, _ = figures.new_figure(2, 1, notes, (5.0, 4.0))
    left, right = fig.subplots(1, 2)
    hatches = ("", "//", "..", "xx")
    batches = sorted(set().union(*(set(s[s["hidden"] == hidden]["batch"]) for s in parts.values())))
    for k, machine in enumerate(machines):
        part = parts[machine][parts[machine]["hidden"] == hidden]
        for name in ordered(part["backend"]):
            line = part[part["backend"] == name].set_index("batch").reindex(batches)
            left.plot(
                batches,
                line["median"],
                color=colour(name),
                marker=marker(name),
                ms=4,
                ls=MACHINE_STYLES[k % len(MACHINE_STYLES)],
            )
    figures._size_axis(left, batches)
    left.set_yscale("log")
    left.set_xlabel("batch N")
    left.set_ylabel("seconds / iteration (median)")
    left.set_title(f"time per iteration at H = {figures.size_label(hidden)}", fontsize=10)
    left.grid(True, alpha=0.3)
    # geometric-mean speedup over each machine's own numpy, over the points both measured there
    others = [n for n in names if n != REFERENCE]
    width = 0.8 / len(machines)
    for k, machine in enumerate(machines):
        s = parts[machine]
        ref = s[s["backend"] == REFERENCE].set_index(["batch", "hidden"])["median"]
        for i, name in enumerate(others):
            mine = s[s["backend"] == name].set_index(["batch", "hidden"])["median"]
            ratio = (ref / mine).dropna()
            if ratio.empty:
                continue
            right.bar(
                i + (k - (len(machines) - 1) / 2) * width,
                float(np.exp(np.log(ratio).mean())),
                width * 0.9,
                color=colour(name),
                hatch=hatches[k % len(hatches)],
                edgecolor="white",
            )
    right.axhline(1.0, color="#444444", lw=1, ls="--")
    right.set_yscale("log")
    right.set_xticks(range(len(others)), others, rotation=35, ha="right", fontsize=8)
    right.set_ylabel(f"geo-mean speedup over {REFERENCE} (same machine)")
    right.set_title("all points measured on each machine", fontsize=10)
    right.grid(True, axis="y", alpha=0.3)
    backend_handles = [Line2D([], [], color=colour(n), marker=marker(n), ms=5) for n in names]
    machine_handles = [
        (
            Line2D([], [], color="#333333", ls=MACHINE_STYLES[k % len(MACHINE_STYLES)]),
            Patch(facecolor="#999999", edgecolor="white", hatch=hatches[k % len(hatches)]),
        )
        for k in range(len(machines))
    ]
    first = fig.legend(backend_handles, names, loc="outside right upper", fontsize=8, title="backend")
    fig.legend(
        machine_handles,
        machines,
        loc="outside right lower",
        fontsize=8,
        title="machine",
        handler_map={tuple: HandlerTuple(ndivide=None)},
        handlelength=4,
    )
    fig.add_artist(first)
    fig.suptitle(f"machines compared, {dtype}")
    figures.footer(fig, notes, f"data: {', '.join(f'{m}/{RUNS}' for m in machines)}, {dtype}", width_chars)
    return fig


