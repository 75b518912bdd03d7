"""The ``compile`` figure of one machine: each backend's first call at a point, the first call in
a fresh process apart from the later points, with what those calls built (the ``cache`` column)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from harness.report.figures import footer, new_figure
from harness.report.rows import colour, ordered


def compile_times(summary: pd.DataFrame, title: str, notes, head) -> Figure:
    """The first call at a point, per backend and dtype: the bar is the first call in a fresh
    process (``fresh``), its outline that call plus the worker's start-up before it (the backend's
    imports and availability check, ``startup_seconds``), the dot the median over the backend's
    later points (line: min..max); the labels say what those calls built (the ``cache`` column).
    Results stored before those columns existed get a bar of the median over points, labelled so."""
    per = summary.dropna(subset=["compile"])
    names = ordered(per["backend"])
    notes = notes + [
        f"{n} (no compile_seconds recorded)" for n in ordered(set(summary["backend"]) - set(names))
    ]
    dtypes = sorted(per["dtype"].unique())
    fig, width_chars, _ = new_figure(1, 1, notes, (9.5, 0.32 * len(names) * len(dtypes) + 1.4))
    ax = fig.subplots()
    height = 0.8 / max(1, len(dtypes))
    hatches = ("", "//", "..", "xx")
    tiny = 1e-6  # log axis: a near-zero first call shows as 1 us
    for k, dtype in enumerate(dtypes):
        labelled = False
        for i, name in enumerate(names):
            part = per[(per["backend"] == name) & (per["dtype"] == dtype)]
            if part.empty:
                continue
            y = i + (k - (len(dtypes) - 1) / 2) * height
            fresh = part[part["fresh"] == "True"]
            later = part[part["fresh"] == "False"]
            unrecorded = part[~part["fresh"].isin(("True", "False"))]
            startup = 0.0
            if not fresh.empty:
                bar = float(fresh["compile"].median())
                text = f"fresh {bar:.3g} s ({_states(fresh)})"
                if "startup" in fresh and fresh["startup"].notna().any():  # the outline: start-up + first call
                    startup = float(fresh["startup"].median())
                    ax.barh(y, bar + startup, height=height * 0.9, fill=False, edgecolor=colour(name), lw=0.8)
                    text += f" after start-up {startup:.3g} s"
            elif not unrecorded.empty:
                bar = float(unrecorded["compile"].median())
                text = f"median {bar:.3g} s over points (cache not recorded)"
            else:
                bar = float(later["compile"].median())
                text = f"median {bar:.3g} s over points (no fresh-process call)"
            ax.barh(y, max(bar, tiny), height=height * 0.9, color=colour(name), hatch=hatches[k % len(hatches)],
                    edgecolor="white", label=None if labelled else dtype)  # fmt: skip
            labelled = True
            right = max(bar + startup, tiny)
            if not later.empty:
                med, lo, hi = (max(float(f(later["compile"])), tiny) for f in (pd.Series.median, pd.Series.min, pd.Series.max))
                ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], fmt="o", color="#333333", ms=3, capsize=2, lw=0.8)
                text += f"; later points {later['compile'].median():.3g} s ({_states(later)})"
                right = max(right, hi)
            ax.text(right * 1.15, y, text, va="center", fontsize=6.5)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 1000)  # room for the labels
    recorded = per["fresh"].isin(("True", "False"))
    lines = []
    if recorded.any():
        lines += ["first call at a point: prepare + one iteration + fetch (s)",
                  "bar: in a fresh process (outline: + the start-up before it); dot: median over later points, line = min..max"]  # fmt: skip
    if not recorded.all():  # rows stored before the cache column: the harness then timed another call
        lines += ["cache not recorded: first call = prepare + the validation run + fetch, in a worker that",
                  "had run smaller points (median over points; the harness before the cache column)"]  # fmt: skip
    ax.set_xlabel("\n".join(lines) if recorded.any() else "\n".join(lines).replace("cache not recorded: first", "first"))
    ax.grid(True, axis="x", alpha=0.3)
    if len(dtypes) > 1:
        ax.legend(fontsize=8, title="dtype (hatch)", loc="lower right")
    fig.suptitle(title)
    footer(fig, notes, head + "; cold = compiled, disk = loaded from a disk cache, memory = built earlier in "
           "the process, none = builds nothing", width_chars)  # fmt: skip
    return fig


def _states(part: pd.DataFrame) -> str:
    """The cache states of some first calls, most frequent first, e.g. 'cold' or 'memory 5, disk 1'."""
    counts = part["cache"].replace("", "not recorded").value_counts()
    return counts.index[0] if len(counts) == 1 else ", ".join(f"{state} {n}" for state, n in counts.items())
