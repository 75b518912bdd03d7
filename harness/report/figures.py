"""The figures of one machine folder, from stored results: PNG + SVG.

Per machine folder and dtype (in ``<machine>/plots/``): ``time_vs_batch``, ``time_vs_hidden``,
``speedup``, ``floor`` (needs ``harness.floor`` and a ``ceilings`` entry in machine.json); the
``compile`` figure is ``harness.report.first_calls``'s, the ``ladder`` and ``effort`` figures
``harness.report.ladder_figures``', and the cross-machine figures are
``harness.report.compare``'s, both drawn in this module's frame (``new_figure``, ``footer``). Each footer names
every backend and point that is not drawn, with the reason (``rows.notes_for``).
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from harness.report.rows import (
    REFERENCE,
    colour,
    marker,
    ordered,
)
from harness.results import write_atomic


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)  # keep backend names like numba-cuda whole


def _head(head: str) -> str:
    return f"{head}. Plotted: rows with status ok and validated; each point is its newest run."


def footer(fig: Figure, notes: list[str], head: str, width_chars: int) -> None:
    lines = _wrap(_head(head), width_chars)
    if notes:
        lines += _wrap("not shown: " + "; ".join(notes), width_chars)
    fig.text(0.005, 0.005, "\n".join(lines), fontsize=7.5, va="bottom", ha="left", color="#333333")


def new_figure(ncols: int, nrows: int, notes: list[str], panel=(4.0, 3.2), head: str = "") -> tuple[Figure, int, float]:
    """Figure with room at the bottom for the footer; returns (fig, wrap width, footer height fraction).
    ``head``: the footer's head when it may need more than one line."""
    width = max(7.0, panel[0] * ncols + 1.8)
    width_chars = int(width * 15)
    n_lines = max(1, len(_wrap(_head(head), width_chars))) if head else 1
    n_lines += len(_wrap("not shown: " + "; ".join(notes), width_chars)) if notes else 0
    footer = 0.16 * n_lines + 0.12
    height = panel[1] * nrows + 0.6 + footer
    fig = Figure(figsize=(width, height), layout="constrained")
    frac = footer / height
    fig.get_layout_engine().set(rect=(0, frac, 1, 1 - frac))
    return fig, width_chars, frac


def save(fig: Figure, directory: Path, stem: str) -> list[Path]:
    """PNG and SVG, each written to a temporary file beside the target and renamed over it."""
    paths = []
    # SVG text stays text (searchable, small); no date or random ids, so unchanged data gives same bytes
    with matplotlib.rc_context({"svg.hashsalt": "nnbench", "svg.fonttype": "none"}):
        for fmt in ("png", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else {})
            fig.set_layout_engine("none")  # the layout is settled by the first save: skip it the second time
            data = buffer.getvalue() if fmt == "png" else _stable_clip_ids(buffer.getvalue())
            path = directory / f"{stem}.{fmt}"
            write_atomic(path, data)
            paths.append(path)
    return paths


def _stable_clip_ids(svg: bytes) -> bytes:
    """Clip-path ids numbered in order of first use. Matplotlib hashes a clip's key, and for some
    clips (the speed-up heat maps') that key differs between processes drawing the same data."""
    names: dict[bytes, bytes] = {}

    def rename(match: re.Match) -> bytes:
        return names.setdefault(match.group(0), b"clip%d" % len(names))

    return re.sub(rb"(?<=url\(#)p[0-9a-f]{10}(?=\))|(?<=id=\")p[0-9a-f]{10}(?=\")", rename, svg)


# ----------------------------------------------------------------------------- figures


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols, math.ceil(math.sqrt(n)))  # near-square: 4 -> 2x2, 5 -> 3+2, 9 -> 3x3
    return cols, math.ceil(n / cols)


def size_label(value: float, _pos=None) -> str:
    """Sweep sizes are powers of two: 4, 64, 1k, 64k, 1M read faster than 2^16."""
    for unit, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if value >= unit and value % unit == 0:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def _size_axis(ax, values) -> None:
    """Log-2 x axis with a tick per measured size (thinned to at most 9) labelled 4, 1k, 64k."""
    ax.set_xscale("log", base=2)
    values = sorted(set(int(v) for v in values))
    step = max(1, math.ceil(len(values) / 9))
    ax.set_xticks(values[::step], [size_label(v) for v in values[::step]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def time_lines(summary: pd.DataFrame, panel_key: str, x_key: str, title: str, notes, head) -> Figure:
    """Seconds per iteration vs ``x_key``, one panel per value of ``panel_key``, one line per backend."""
    panels = sorted(summary[panel_key].unique())
    cols, rows = grid_shape(len(panels))
    fig, width_chars, _ = new_figure(cols, rows, notes)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, value in zip(axes, panels):
        part = summary[summary[panel_key] == value]
        xs = sorted(part[x_key].unique())  # the panel's grid: a point missing for one backend is a gap
        for name in ordered(part["backend"]):
            line = part[part["backend"] == name].set_index(x_key).reindex(xs)
            ax.plot(xs, line["median"], color=colour(name), marker=marker(name), ms=4, lw=1.4, label=name)
            ax.fill_between(xs, line["lo"], line["hi"], color=colour(name), alpha=0.2, lw=0)
        _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_title(f"{'H' if panel_key == 'hidden' else 'N'} = {size_label(value)}", fontsize=10)
        ax.set_xlabel("batch N" if x_key == "batch" else "hidden width H")
        ax.set_ylabel("seconds / iteration")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _legend(fig)
    fig.suptitle(title)
    footer(fig, notes, head + "; line = median over repeats, band = min..max", width_chars)
    return fig


def _legend(fig: Figure) -> None:
    """One legend for the figure, backends in registry order, whatever panel drew them."""
    seen = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    names = ordered(seen)
    fig.legend([seen[n] for n in names], names, loc="outside right upper", fontsize=8)


def speedup(summary: pd.DataFrame, title: str, notes, head) -> tuple[Figure | None, str]:
    """Heatmap of numpy median / backend median per (hidden, batch), one panel per backend."""
    ref = summary[summary["backend"] == REFERENCE].set_index(["batch", "hidden"])["median"]
    if ref.empty:
        return None, f"no plottable {REFERENCE} rows: no baseline for speedups"
    names = [n for n in ordered(summary["backend"]) if n != REFERENCE]
    if not names:
        return None, f"only {REFERENCE} has plottable rows"
    batches = sorted(summary["batch"].unique())
    hiddens = sorted(summary["hidden"].unique())
    ratios = {}
    for name in names:
        mine = summary[summary["backend"] == name].set_index(["batch", "hidden"])["median"]
        ratio = (ref / mine).dropna()
        grid = np.full((len(hiddens), len(batches)), np.nan)
        for (b, h), r in ratio.items():
            grid[hiddens.index(h), batches.index(b)] = r
        ratios[name] = grid
    finite = np.concatenate([np.log10(g[np.isfinite(g)]) for g in ratios.values()])
    limit = max(0.3, float(np.max(np.abs(finite)))) if finite.size else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    cols, rows = grid_shape(len(names), 3)
    panel = (max(3.2, 0.55 * len(batches) + 1.2), max(2.4, 0.4 * len(hiddens) + 1.2))
    fig, width_chars, _ = new_figure(cols, rows, notes, panel)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, name in zip(axes, names):
        grid = ratios[name]
        image = ax.imshow(np.log10(grid), cmap="RdBu", norm=norm, origin="lower", aspect="auto")
        ax.set_facecolor("#dddddd")  # cells without a ratio (not measured or not plottable)
        for i in range(len(hiddens)):
            for j in range(len(batches)):
                r = grid[i, j]
                if np.isfinite(r):
                    dark = abs(math.log10(r)) > 0.6 * limit
                    ax.text(
                        j,
                        i,
                        f"{r:.2g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        valid = grid[np.isfinite(grid)]
        gm = (
            f"geo-mean {math.exp(np.mean(np.log(valid))):.3g}x over {valid.size} cells"
            if valid.size
            else "no common points"
        )
        ax.set_title(f"{name}\n{gm}", fontsize=10, color=colour(name))
        ax.set_xticks(range(len(batches)), [size_label(b) for b in batches], fontsize=7)
        ax.set_yticks(range(len(hiddens)), [size_label(h) for h in hiddens], fontsize=7)
        ax.set_xlabel("batch N")
        ax.set_ylabel("hidden H")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=list(axes[: len(names)]), shrink=0.8)
    ticks = [r for r in (0.001, 0.01, 0.1, 0.5, 1, 2, 10, 100, 1000) if abs(math.log10(r)) <= limit]
    bar.set_ticks([math.log10(r) for r in ticks], labels=[f"{r:g}x" for r in ticks])
    bar.set_label(f"speedup over {REFERENCE} (>1: faster)")
    fig.suptitle(title)
    footer(
        fig,
        notes,
        head + f"; cell = {REFERENCE} median / backend median at that point, grey = no ratio",
        width_chars,
    )
    return fig, ""


def floor(summary: pd.DataFrame, dtype: str, ceilings: dict, floor_seconds, title, notes, head) -> Figure:
    """Time per iteration as a multiple of the machine's floor, against N*H."""
    fig, width_chars, _ = new_figure(1, 1, notes, (7.0, 4.2))
    ax = fig.subplots()
    for name in ordered(summary["backend"]):
        part = summary[summary["backend"] == name]
        floors = np.array(
            [floor_seconds(int(b), int(h), dtype, ceilings) for b, h in zip(part["batch"], part["hidden"])],
            dtype=float,
        )
        ok = np.isfinite(floors) & (floors > 0)
        x = (part["batch"] * part["hidden"]).to_numpy()[ok]
        y = part["median"].to_numpy()[ok] / floors[ok]
        order = np.argsort(x, kind="stable")
        ax.plot(
            x[order],
            y[order],
            ls="none",
            marker=marker(name),
            color=colour(name),
            ms=5,
            alpha=0.8,
            label=name,
        )
    ax.axhline(1.0, color="#444444", lw=1, ls="--")
    ax.text(0.01, 1.05, "floor", fontsize=8, va="bottom", transform=ax.get_yaxis_transform())
    _size_axis(ax, (summary["batch"] * summary["hidden"]).unique())
    ax.set_yscale("log")
    ax.set_xlabel("N x H (batch x hidden width)")
    ax.set_ylabel("time per iteration / floor")
    ax.grid(True, which="major", alpha=0.3)
    _legend(fig)
    fig.suptitle(title)
    footer(
        fig, notes, head + "; floor = harness.floor.floor_seconds with machine.json ceilings", width_chars
    )
    return fig
