"""The two figures of the effort ladder (``harness.report.ladder``), in ``figures``' frame:

* ``ladder_<dtype>``: speed-up over NumPy of each Numba CPU rung against N*H, each C twin dashed
  beside it in its own style; and, where twins were timed, each pair's time ratio at every point;
* ``effort_<dtype>``: loop lines (``ladder.LOC_RULE``) against speed-up over NumPy at up to three
  representative points, one marker per backend that ran on the CPU, with its name.

A ladder member without a timed point stays in the legend with its reason; every backend left out
of the effort figure is named in its footer.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

import backends
from harness.report import ladder
from harness.report.figures import _size_axis, footer, new_figure
from harness.report.rows import REFERENCE, colour, marker, ordered


def _legend_label(name: str, why: str) -> str:
    return name if not why else "\n".join(textwrap.wrap(f"{name}: {why}", 44, break_on_hyphens=False))


def ladder_figure(table: pd.DataFrame, frame: pd.DataFrame, dtype: str, title: str, notes, head) -> tuple[Figure | None, str]:
    """Speed-up over NumPy of the ladder against N*H (left) and each twin pair's ratio (right)."""
    names = ladder.members()
    if not names:
        return None, "no Numba CPU backend is registered"
    if REFERENCE not in table:
        return None, f"no plottable {REFERENCE} rows: no baseline for speed-ups"
    speed = ladder.speedups(table)
    pairs = ladder.twins()
    head += (f"; left: line = median over the points with that N*H of {REFERENCE} median / backend median, "
             "band = their min..max; dashed: a backend reproducing its twin's algorithm with another compiler"
             + ("; right: time of the twin / time of the backend at every point" if pairs else ""))  # fmt: skip
    fig, width_chars, _ = new_figure(2 if pairs else 1, 1, notes, (5.2, 4.0), head)
    axes = fig.subplots(1, 2 if pairs else 1, squeeze=False).ravel()
    ax = axes[0]
    twinned = {b for b, _ in pairs}
    handles, labels, sizes = [], [], set()
    for name in names:
        style = "--" if name in twinned else "-"
        mine = speed[name].dropna() if name in speed else pd.Series(dtype=float)
        if mine.empty:
            handles.append(Line2D([], [], color=colour(name), marker=marker(name), ls=style, alpha=0.4))
            labels.append(_legend_label(name, ladder.status(frame, name, dtype)))
            continue
        by_work = mine.groupby(ladder.work(mine.index)).agg(["median", "min", "max"])
        x = by_work.index.to_numpy()
        sizes |= set(x.tolist())
        (line,) = ax.plot(x, by_work["median"], ls=style, marker=marker(name), color=colour(name), ms=4, lw=1.4)
        ax.fill_between(x, by_work["min"], by_work["max"], color=colour(name), alpha=0.12, lw=0)
        handles.append(line)
        labels.append(name)
    ax.axhline(1.0, color="#444444", lw=1, ls=":")
    ax.text(0.01, 1.03, REFERENCE, fontsize=8, va="bottom", transform=ax.get_yaxis_transform())
    if sizes:
        _size_axis(ax, sizes)
    else:
        ax.text(0.5, 0.5, "no ladder member timed", ha="center", va="center", transform=ax.transAxes)
    ax.set_yscale("log")
    _plain_log_labels(ax, "y")
    ax.set_xlabel("N x H (batch x hidden width)")
    ax.set_ylabel(f"speed-up over {REFERENCE} (>1: faster)")
    ax.set_title("the effort ladder", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if pairs:
        _pair_panel(axes[1], table, frame, dtype, pairs, sizes)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(title)
    footer(fig, notes, head, width_chars)
    return fig, ""


def _plain_log_labels(ax, which: str) -> None:
    """Ticks of a log axis labelled 0.5, 1, 2, 10 (1-2-5 steps over at most three decades)."""
    low, high = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())  # the limits as autoscaled now
    axis = ax.xaxis if which == "x" else ax.yaxis
    narrow = low > 0 and high / low <= 1000
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _pair_panel(ax, table, frame, dtype, pairs, ladder_sizes) -> None:
    drawn, sizes, missing = False, set(), []
    for backend, twin in pairs:
        r = ladder.pair_ratios(table, backend, twin)
        if r.empty:
            missing.append(f"{twin} / {backend}: not both timed")
            continue
        w = ladder.work(r.index)
        sizes |= set(w.tolist())
        order = np.argsort(w, kind="stable")
        ax.plot(w[order], r.to_numpy()[order], ls="none", marker=marker(backend), color=colour(backend), ms=4, alpha=0.7,
                label=f"{twin} / {backend}")  # fmt: skip
        median = r.groupby(w).median()
        ax.plot(median.index.to_numpy(), median.to_numpy(), ls="--", color=colour(backend), lw=1.2)
        drawn = True
    ax.axhline(1.0, color="#444444", lw=1, ls=":")
    ax.axhline(ladder.TWIN_TARGET, color="#999999", lw=0.8, ls="--")
    ax.text(0.01, ladder.TWIN_TARGET * 1.01, f"{ladder.TWIN_TARGET:g} (the target from N*H = 2^16)", fontsize=7,
            va="bottom", color="#666666", transform=ax.get_yaxis_transform())  # fmt: skip
    if sizes or ladder_sizes:
        _size_axis(ax, sizes or ladder_sizes)
    ax.set_yscale("log")
    low, high = ax.get_ylim() if drawn else (1.0, 1.0)
    ax.set_ylim(min(low, 0.5), max(high, 2.0))
    _plain_log_labels(ax, "y")
    ax.set_xlabel("N x H (batch x hidden width)")
    ax.set_ylabel("time ratio (>1: the twin is slower)")
    ax.set_title("the same algorithm, two compilers", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="best")
    if missing:
        ax.text(0.02, 0.02, "\n".join(missing), fontsize=7, transform=ax.transAxes, va="bottom", color="#333333")


def effort_figure(table: pd.DataFrame, frame: pd.DataFrame, dtype: str, title: str, notes, head,
                  root=ladder.REPOSITORY) -> tuple[Figure | None, str]:  # fmt: skip
    """Loop lines against speed-up over NumPy, one panel per representative point; the backends
    that ran on the CPU (the rows' ``device``), the others named in the footer."""
    if REFERENCE not in table:
        return None, f"no plottable {REFERENCE} rows: no baseline for speed-ups"
    points = ladder.representative(table)
    speed = ladder.speedups(table)
    names = ordered(set(frame[frame["dtype"] == dtype]["backend"]) | set(backends.names()))  # the unrun ones too
    device = frame.groupby("backend")["device"].last() if "device" in frame.columns else pd.Series(dtype=object)
    gpu = [n for n in names if device.get(n) == "gpu"]
    names = [n for n in names if n not in gpu]
    lines, uncounted = {}, []
    for name in names:
        count, why = ladder.loop_lines(name, root)
        if count is None:
            uncounted.append(f"{name} (loop lines not counted: {why})")
        else:
            lines[name] = count
    ran = set(frame[frame["dtype"] == dtype]["backend"])
    never = [f"{n} (not run)" for n in names if n not in ran]  # the others' rows are in ``notes``
    notes = notes + uncounted + never + [f"{n} (ran on the GPU: this figure is the CPU's)" for n in gpu]
    head += f"; speed-up = {REFERENCE} median / backend median at the point; {ladder.LOC_RULE}"
    fig, width_chars, _ = new_figure(len(points), 1, notes, (4.2, 3.8), head)
    axes = fig.subplots(1, len(points), squeeze=False).ravel()
    for ax, point in zip(axes, points):
        absent = []
        for name in names:
            value = speed[name].get(point, float("nan")) if name in speed else float("nan")
            if name not in lines or not np.isfinite(value):
                if name in lines and name in speed and speed[name].notna().any():
                    absent.append(name)
                continue
            ax.plot([lines[name]], [value], ls="none", marker=marker(name), color=colour(name), ms=6)
            ax.annotate(name, (lines[name], value), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color=colour(name))  # fmt: skip
        ax.axhline(1.0, color="#444444", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(0.15)
        _plain_log_labels(ax, "x")
        _plain_log_labels(ax, "y")
        ax.set_xlabel("loop lines (rule in the footer)")
        ax.set_ylabel(f"speed-up over {REFERENCE}")
        ax.set_title(f"{point[0]} x {point[1]} (N*H = {point[0] * point[1]})", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if absent:
            text = "\n".join(textwrap.wrap("not timed here: " + ", ".join(absent), 40, break_on_hyphens=False))
            ax.text(0.02, 0.02, text, fontsize=7, transform=ax.transAxes, va="bottom", color="#333333")
    fig.suptitle(title)
    footer(fig, notes, head, width_chars)
    return fig, ""
