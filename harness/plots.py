"""Every figure from stored results alone: ``results/<machine>/runs.csv`` in, PNG + SVG out.

Imports no backend: only pandas, matplotlib, numpy, the registry (``backends``, names and styles),
``harness.results`` and (lazily) ``harness.floor``.

Which rows are data: a point is (machine folder, backend, dtype, batch, hidden). ``runs.csv`` is
append-only, so the last row of a point belongs to its newest run; of each point only the rows carrying
that newest row's commit are kept (older commits are counted in the footer). Of those, only rows with
status ``ok`` and ``validated`` True and a positive time are plotted. Every other row is named in the
figure's footer with its status and reason, so no backend disappears without a word.

Figures per machine folder and dtype (in ``<machine>/plots/``): ``time_vs_batch``, ``time_vs_hidden``,
``speedup``, ``floor`` (needs ``harness.floor`` and a ``ceilings`` entry in machine.json) and one
``compile`` figure; plus ``crossovers.csv``/``.md`` and ``summary.md`` (``harness.summary``). Across machine folders (in ``plots/``):
``machines_<dtype>`` when there are two or more folders with data.
"""

from __future__ import annotations

import io
import math
import textwrap
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from backends import REFERENCE, REGISTRY  # the registry only: importing it imports no backend
from harness.results import MACHINE, RUNS, ResultsError, fill_device, read_machine, read_runs, write_atomic

# A fixed colour and marker per backend, the same in every figure: the registry's.
BACKEND_STYLE: dict[str, tuple[str, str]] = {e.name: (e.colour, e.marker) for e in REGISTRY.values() if e.colour}
_FALLBACK_COLOURS = ("#8c564b", "#bcbd22", "#17becf", "#e377c2", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
MACHINE_STYLES = ("-", "--", ":", "-.")
POINT = ["source", "backend", "dtype", "batch", "hidden"]
NUMERIC = ("batch", "hidden", "iterations", "seconds", "compile_seconds")

Log = Callable[[str], None]


def colour(backend: str) -> str:
    """Fixed colour of a backend; unknown names get a stable colour from their name."""
    if backend in BACKEND_STYLE:
        return BACKEND_STYLE[backend][0]
    return _FALLBACK_COLOURS[zlib.crc32(backend.encode()) % len(_FALLBACK_COLOURS)]


def marker(backend: str) -> str:
    return BACKEND_STYLE.get(backend, ("", "o"))[1]


def _ordered(names: Iterable[str]) -> list[str]:
    """Known backends in registry order, then unknown names alphabetically."""
    known = list(BACKEND_STYLE)
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


# ----------------------------------------------------------------------------- row selection


def _with_source(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as numbers (a frame may come from elsewhere than read_runs) and a ``source``
    column naming the machine folder, falling back to the CSV's machine column."""
    numbers = {c: pd.to_numeric(frame[c], errors="coerce") for c in NUMERIC if c in frame.columns}
    if "commit" in frame.columns:
        numbers["commit"] = frame["commit"].fillna("").astype(str)
    if "source" not in frame.columns:
        numbers["source"] = frame["machine"] if "machine" in frame.columns else ""
    return frame.assign(**numbers)


def newest(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per point, keep the rows with the commit of its last (newest) row; returns (rows, dropped count)."""
    frame = _with_source(frame)
    if frame.empty:
        return frame, 0
    last = frame.groupby(POINT, sort=False)["commit"].transform("last")
    keep = frame["commit"] == last
    return frame[keep], int((~keep).sum())


def _validated(frame: pd.DataFrame) -> pd.Series:
    return frame["validated"].map(lambda v: v is True or v in ("True", "true", "1", 1)).astype(bool)


def _plottable(frame: pd.DataFrame) -> pd.Series:
    seconds = pd.to_numeric(frame["seconds"], errors="coerce")
    return (frame["status"] == "ok") & _validated(frame) & (seconds > 0) & (frame["iterations"] > 0)


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and min..max of seconds per iteration, per point, over the plottable rows."""
    ok = frame[_plottable(frame)]
    grouped = ok.assign(t=ok["seconds"] / ok["iterations"]).groupby(POINT)
    out = grouped["t"].agg(median="median", lo="min", hi="max", n="size")
    out["compile"] = grouped["compile_seconds"].median()
    return out.reset_index()


# ----------------------------------------------------------------------------- footer notes


def _span(values: set, grid: list, letter: str) -> str:
    """How a subset of a sorted grid reads: '' (all of it), 'N>=64', 'N<=16', 'N=64' or 'N in {..}'."""
    values = sorted(values)
    if len(values) == len(grid):
        return ""
    if len(values) == 1:
        return f"{letter}={values[0]}"
    if values == grid[-len(values) :]:
        return f"{letter}>={values[0]}"
    if values == grid[: len(values)]:
        return f"{letter}<={values[-1]}"
    shown = ",".join(map(str, values[:5])) + (",..." if len(values) > 5 else "")
    return f"{letter} in {{{shown}}}"


def _why(row_status: str, reason: str) -> str:
    reason = str(reason).strip() if isinstance(reason, str) else ""
    return f"{row_status}: {reason}" if reason else row_status


def notes_for(frame: pd.DataFrame, backends: Iterable[str] | None = None) -> list[str]:
    """One line per backend (and reason) whose rows in ``frame`` are not plotted, plus provenance notes.

    ``backends``: names that must be accounted for even if ``frame`` holds none of their rows (for
    example every backend of the machine when ``frame`` is one dtype's slice).
    """
    frame, dropped = newest(frame)
    good = _plottable(frame) if not frame.empty else pd.Series(dtype=bool)
    names = _ordered(set(frame["backend"]) | set(backends or ()))
    several_dtypes = frame["dtype"].nunique() > 1
    notes = []
    for name in names:
        rows = frame[frame["backend"] == name]
        if rows.empty:
            notes.append(f"{name} (no rows for this selection)")
            continue
        bad = rows[~good.loc[rows.index]]
        if bad.empty:
            continue
        all_points = set(map(tuple, rows[["dtype", "batch", "hidden"]].to_numpy().tolist()))
        shown_points = set(
            map(tuple, rows[good.loc[rows.index]][["dtype", "batch", "hidden"]].to_numpy().tolist())
        )
        status = bad["status"].where(bad["status"] != "ok", "not validated")
        status = status.where(~((bad["status"] == "ok") & _validated(bad)), "no timing")
        for (label, reason), group in bad.assign(label=status, why=bad["reason"].fillna("")).groupby(
            ["label", "why"], sort=False
        ):
            points = set(map(tuple, group[["dtype", "batch", "hidden"]].to_numpy().tolist()))
            where = []
            if points != all_points:
                batches = sorted({p[1] for p in all_points})
                hiddens = sorted({p[2] for p in all_points})
                dtypes = sorted({p[0] for p in all_points})
                parts = [
                    _span({p[0] for p in points}, dtypes, "dtype") if several_dtypes else "",
                    _span({p[1] for p in points}, batches, "N"),
                    _span({p[2] for p in points}, hiddens, "H"),
                ]
                count = f"{len(points)} point{'s' if len(points) > 1 else ''}"
                where = [count] + [p for p in parts if p]
            if points <= shown_points:  # those points still have plottable repeats: only these rows go
                where.insert(0, "some repeats")
            text = name + (f" at {', '.join(where)}" if where else "") + f" ({_why(label, reason)})"
            notes.append(text)
    if dropped:
        notes.append(f"{dropped} row(s) of older commits superseded by each point's newest run")
    commits = sorted({str(c)[:10] for c in frame["commit"].dropna() if str(c)})
    if len(commits) > 1:
        notes.append(f"points come from {len(commits)} commits: {', '.join(commits[:4])}")
    return notes


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)  # keep backend names like numba-cuda whole


def _footer(fig: Figure, notes: list[str], head: str, width_chars: int) -> None:
    lines = _wrap(
        f"{head}. Plotted: rows with status ok and validated; each point is its newest run.", width_chars
    )
    if notes:
        lines += _wrap("not shown: " + "; ".join(notes), width_chars)
    fig.text(0.005, 0.005, "\n".join(lines), fontsize=7.5, va="bottom", ha="left", color="#333333")


def _new_figure(ncols: int, nrows: int, notes: list[str], panel=(4.0, 3.2)) -> tuple[Figure, int, float]:
    """Figure with room at the bottom for the footer; returns (fig, wrap width, footer height fraction)."""
    width = max(7.0, panel[0] * ncols + 1.8)
    width_chars = int(width * 15)
    n_lines = 1 + len(_wrap("not shown: " + "; ".join(notes), width_chars)) if notes else 1
    footer = 0.16 * n_lines + 0.12
    height = panel[1] * nrows + 0.6 + footer
    fig = Figure(figsize=(width, height), layout="constrained")
    frac = footer / height
    fig.get_layout_engine().set(rect=(0, frac, 1, 1 - frac))
    return fig, width_chars, frac


def _save(fig: Figure, directory: Path, stem: str) -> list[Path]:
    """PNG and SVG, each written to a temporary file beside the target and renamed over it."""
    paths = []
    # SVG text stays text (searchable, small); no date or random ids, so unchanged data gives same bytes
    with matplotlib.rc_context({"svg.hashsalt": "nnbench", "svg.fonttype": "none"}):
        for fmt in ("png", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else {})
            fig.set_layout_engine("none")  # the layout is settled by the first save: skip it the second time
            path = directory / f"{stem}.{fmt}"
            write_atomic(path, buffer.getvalue())
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------- figures


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols, math.ceil(math.sqrt(n)))  # near-square: 4 -> 2x2, 5 -> 3+2, 9 -> 3x3
    return cols, math.ceil(n / cols)


def _size_label(value: float, _pos=None) -> str:
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
    ax.set_xticks(values[::step], [_size_label(v) for v in values[::step]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _time_lines(summary: pd.DataFrame, panel_key: str, x_key: str, title: str, notes, head) -> Figure:
    """Seconds per iteration vs ``x_key``, one panel per value of ``panel_key``, one line per backend."""
    panels = sorted(summary[panel_key].unique())
    cols, rows = _grid(len(panels))
    fig, width_chars, _ = _new_figure(cols, rows, notes)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, value in zip(axes, panels):
        part = summary[summary[panel_key] == value]
        xs = sorted(part[x_key].unique())  # the panel's grid: a point missing for one backend is a gap
        for name in _ordered(part["backend"]):
            line = part[part["backend"] == name].set_index(x_key).reindex(xs)
            ax.plot(xs, line["median"], color=colour(name), marker=marker(name), ms=4, lw=1.4, label=name)
            ax.fill_between(xs, line["lo"], line["hi"], color=colour(name), alpha=0.2, lw=0)
        _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_title(f"{'H' if panel_key == 'hidden' else 'N'} = {_size_label(value)}", fontsize=10)
        ax.set_xlabel("batch N" if x_key == "batch" else "hidden width H")
        ax.set_ylabel("seconds / iteration")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _legend(fig)
    fig.suptitle(title)
    _footer(fig, notes, head + "; line = median over repeats, band = min..max", width_chars)
    return fig


def _legend(fig: Figure) -> None:
    """One legend for the figure, backends in registry order, whatever panel drew them."""
    seen = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    names = _ordered(seen)
    fig.legend([seen[n] for n in names], names, loc="outside right upper", fontsize=8)


def _speedup(summary: pd.DataFrame, title: str, notes, head) -> tuple[Figure | None, str]:
    """Heatmap of numpy median / backend median per (hidden, batch), one panel per backend."""
    ref = summary[summary["backend"] == REFERENCE].set_index(["batch", "hidden"])["median"]
    if ref.empty:
        return None, f"no plottable {REFERENCE} rows: no baseline for speedups"
    names = [n for n in _ordered(summary["backend"]) if n != REFERENCE]
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
    cols, rows = _grid(len(names), 3)
    panel = (max(3.2, 0.55 * len(batches) + 1.2), max(2.4, 0.4 * len(hiddens) + 1.2))
    fig, width_chars, _ = _new_figure(cols, rows, notes, panel)
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
        ax.set_xticks(range(len(batches)), [_size_label(b) for b in batches], fontsize=7)
        ax.set_yticks(range(len(hiddens)), [_size_label(h) for h in hiddens], fontsize=7)
        ax.set_xlabel("batch N")
        ax.set_ylabel("hidden H")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=list(axes[: len(names)]), shrink=0.8)
    ticks = [r for r in (0.001, 0.01, 0.1, 0.5, 1, 2, 10, 100, 1000) if abs(math.log10(r)) <= limit]
    bar.set_ticks([math.log10(r) for r in ticks], labels=[f"{r:g}x" for r in ticks])
    bar.set_label(f"speedup over {REFERENCE} (>1: faster)")
    fig.suptitle(title)
    _footer(
        fig,
        notes,
        head + f"; cell = {REFERENCE} median / backend median at that point, grey = no ratio",
        width_chars,
    )
    return fig, ""


def _compile(summary: pd.DataFrame, title: str, notes, head) -> Figure:
    """Median first-call (compile) time over points, per backend and dtype, bars with min..max."""
    per = summary.dropna(subset=["compile"])
    names = _ordered(per["backend"])
    notes = notes + [
        f"{n} (no compile_seconds recorded)" for n in _ordered(set(summary["backend"]) - set(names))
    ]
    dtypes = sorted(per["dtype"].unique())
    fig, width_chars, _ = _new_figure(1, 1, notes, (6.5, 0.28 * len(names) * len(dtypes) + 1.2))
    ax = fig.subplots()
    height = 0.8 / max(1, len(dtypes))
    hatches = ("", "//", "..", "xx")
    for k, dtype in enumerate(dtypes):
        labelled = False
        for i, name in enumerate(names):
            values = per[(per["backend"] == name) & (per["dtype"] == dtype)]["compile"]
            if values.empty:
                continue
            y = i + (k - (len(dtypes) - 1) / 2) * height
            med = max(float(values.median()), 1e-6)  # log axis: a near-zero first call shows as 1 us
            lo, hi = max(float(values.min()), 1e-6), max(float(values.max()), 1e-6)
            ax.barh(
                y,
                med,
                height=height * 0.9,
                color=colour(name),
                hatch=hatches[k % len(hatches)],
                edgecolor="white",
                label=None if labelled else dtype,
            )
            labelled = True
            ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], color="#333333", capsize=2, lw=0.8)
            ax.text(hi * 1.15, y, f"{values.median():.3g} s", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("first call: compile + one short run (seconds; median over points, bar = min..max)")
    ax.grid(True, axis="x", alpha=0.3)
    if len(dtypes) > 1:
        ax.legend(fontsize=8, title="dtype (hatch)")
    fig.suptitle(title)
    _footer(fig, notes, head, width_chars)
    return fig


def _floor(summary: pd.DataFrame, dtype: str, ceilings: dict, floor_seconds, title, notes, head) -> Figure:
    """Time per iteration as a multiple of the machine's floor, against N*H."""
    fig, width_chars, _ = _new_figure(1, 1, notes, (7.0, 4.2))
    ax = fig.subplots()
    for name in _ordered(summary["backend"]):
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
    _footer(
        fig, notes, head + "; floor = harness.floor.floor_seconds with machine.json ceilings", width_chars
    )
    return fig


def _machines(summaries: dict[str, pd.DataFrame], dtype: str, notes, log: Log) -> Figure | None:
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
    names = _ordered(set().union(*(set(s["backend"]) for s in parts.values())))
    fig, width_chars, _ = _new_figure(2, 1, notes, (5.0, 4.0))
    left, right = fig.subplots(1, 2)
    hatches = ("", "//", "..", "xx")
    batches = sorted(set().union(*(set(s[s["hidden"] == hidden]["batch"]) for s in parts.values())))
    for k, machine in enumerate(machines):
        part = parts[machine][parts[machine]["hidden"] == hidden]
        for name in _ordered(part["backend"]):
            line = part[part["backend"] == name].set_index("batch").reindex(batches)
            left.plot(
                batches,
                line["median"],
                color=colour(name),
                marker=marker(name),
                ms=4,
                ls=MACHINE_STYLES[k % len(MACHINE_STYLES)],
            )
    _size_axis(left, batches)
    left.set_yscale("log")
    left.set_xlabel("batch N")
    left.set_ylabel("seconds / iteration (median)")
    left.set_title(f"time per iteration at H = {_size_label(hidden)}", fontsize=10)
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
    _footer(fig, notes, f"data: {', '.join(f'{m}/{RUNS}' for m in machines)}, {dtype}", width_chars)
    return fig


# ----------------------------------------------------------------------------- crossovers


def _crossing(batches: np.ndarray, ratio: np.ndarray) -> tuple[float, str]:
    """The batch from which ``ratio`` (challenger time / baseline time) stays below 1, log-interpolated
    between the last grid point where it is not and the next; smaller batches where the challenger
    was already faster are named in the text."""
    span = f"N={batches[0]}..{batches[-1]}"
    slower = [i for i, r in enumerate(ratio) if r >= 1]
    earlier = lambda upto: [int(batches[j]) for j in range(upto) if ratio[j] < 1]  # noqa: E731
    also = lambda upto: f"; also faster at N={','.join(map(str, earlier(upto)))}" if earlier(upto) else ""  # noqa: E731
    if not slower:
        return float("nan"), f"always (faster from N={batches[0]})"
    last = slower[-1]
    if last == len(ratio) - 1:
        return float("nan"), f"never in range ({span})" + also(last)
    i = last + 1
    a, b = math.log(ratio[last]), math.log(ratio[i])
    t = a / (a - b)  # where log(ratio) reaches 0 on the segment, in log-batch space
    n = math.exp(math.log(batches[last]) + t * (math.log(batches[i]) - math.log(batches[last])))
    return n, f"crosses at N~{n:.3g} (between {batches[last]} and {batches[i]})" + also(last)


def crossovers(frame: pd.DataFrame) -> pd.DataFrame:
    """Batch at which each backend overtakes numpy, and the fastest GPU overtakes the fastest CPU.

    One row per (machine, dtype, hidden, challenger), over the batch sizes both measured: the batch
    from which the challenger's median stays below the baseline's, interpolated in log-log space
    between the grid points around it. ``crossover_batch`` is NaN when the result is "always" (faster at every
    batch measured) or "never in range" (slower at the largest); ``result`` says which. GPU and CPU are read from the rows'
    ``device`` column (what each backend ran on); at each batch the fastest GPU backend is compared
    with the fastest CPU backend.
    """
    frame, _ = newest(frame)
    frame = fill_device(frame, {})  # a frame not from load(): devices of unknown rows by the registry
    summary = _summary(frame)
    device = frame.groupby(["source", "backend"])["device"].last() if "device" in frame.columns else pd.Series(dtype=str)
    rows = []

    def add(machine, dtype, hidden, challenger, baseline, mine: pd.Series, base: pd.Series):
        both = pd.concat([mine, base], axis=1, keys=["c", "b"]).dropna().sort_index()
        if both.empty:
            rows.append((machine, dtype, hidden, challenger, baseline, float("nan"), "no common batch sizes"))
            return
        n, text = _crossing(both.index.to_numpy(), (both["c"] / both["b"]).to_numpy())
        rows.append((machine, dtype, hidden, challenger, baseline, n, text))

    for (machine, dtype, hidden), part in summary.groupby(["source", "dtype", "hidden"], sort=True):
        table = part.pivot_table(index="batch", columns="backend", values="median")
        for name in _ordered(table.columns):
            if name == REFERENCE:
                continue
            if REFERENCE not in table:
                rows.append((machine, dtype, hidden, name, REFERENCE, float("nan"), "no numpy baseline"))
                continue
            add(machine, dtype, hidden, name, REFERENCE, table[name], table[REFERENCE])
        on = {c: device.get((machine, c), "") for c in table.columns}
        gpus = [c for c in table.columns if on[c] == "gpu"]
        cpus = [c for c in table.columns if on[c] == "cpu"]
        gpu_rows = (frame["source"] == machine) & (frame.get("device", "") == "gpu")
        if gpus and cpus:
            add(
                machine,
                dtype,
                hidden,
                "fastest GPU",
                "fastest CPU",
                table[gpus].min(axis=1, skipna=True),
                table[cpus].min(axis=1, skipna=True),
            )
        elif bool(np.any(gpu_rows)):
            why = "no plottable GPU rows" if not gpus else "no plottable CPU rows"
            rows.append((machine, dtype, hidden, "fastest GPU", "fastest CPU", float("nan"), why))
    columns = ["machine", "dtype", "hidden", "backend", "baseline", "crossover_batch", "result"]
    return pd.DataFrame(rows, columns=columns)


def _markdown(table: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.0f}" if v >= 100 else f"{v:.3g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- driver


def load(results_dir: Path, log: Log = print) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Every ``<results_dir>/<machine>/runs.csv``: {folder: (rows with a ``source`` column, machine.json)}."""
    machines = {}
    for path in sorted(Path(results_dir).glob(f"*/{RUNS}")):
        folder = path.parent
        try:
            frame, bad = read_runs(path)
        except ResultsError as exc:
            log(f"plots: {exc}; folder skipped")
            continue
        if bad:
            shown = ", ".join(map(str, bad[:20])) + (", ..." if len(bad) > 20 else "")
            log(f"plots: {path}: {len(bad)} bad line(s) ignored (line {shown})")
        try:
            fingerprint = read_machine(folder)
        except ResultsError as exc:
            log(f"plots: {exc}; figures needing machine.json skipped")
            fingerprint = {}
        machines[folder.name] = (fill_device(frame, fingerprint).assign(source=folder.name), fingerprint)
    return machines


def _floor_function(log: Log):
    try:
        from harness.floor import floor_seconds
    except ImportError as exc:
        log(f"plots: floor figures skipped: harness.floor not importable ({exc})")
        return None
    return floor_seconds


def _plot_machine(name: str, frame: pd.DataFrame, fingerprint: dict, out: Path, floor_fn, log: Log):
    """All figures and the crossover table of one machine folder; returns (paths, summary)."""
    written: list[Path] = []
    frame, _ = newest(frame)
    summary = _summary(frame)
    everyone = _ordered(frame["backend"])
    if summary.empty:
        log(f"plots: {name}: no plottable rows; " + "; ".join(notes_for(frame, everyone)))
        return written, summary
    ceilings = fingerprint.get("ceilings") if isinstance(fingerprint, dict) else None
    for dtype in sorted(summary["dtype"].unique()):
        part = summary[summary["dtype"] == dtype]
        notes = notes_for(frame[frame["dtype"] == dtype], everyone)
        head = f"data: {name}/{RUNS}, {dtype}"
        fig = _time_lines(
            part, "hidden", "batch", f"{name}: time per iteration vs batch N, {dtype}", notes, head
        )
        written += _save(fig, out, f"time_vs_batch_{dtype}")
        fig = _time_lines(
            part, "batch", "hidden", f"{name}: time per iteration vs hidden width H, {dtype}", notes, head
        )
        written += _save(fig, out, f"time_vs_hidden_{dtype}")
        fig, why = _speedup(part, f"{name}: speedup over {REFERENCE}, {dtype}", notes, head)
        if fig is None:
            log(f"plots: {name}: speedup {dtype} skipped: {why}")
        else:
            written += _save(fig, out, f"speedup_{dtype}")
        if floor_fn is not None:
            if not ceilings:
                log(f"plots: {name}: floor {dtype} skipped: {MACHINE} has no 'ceilings'")
            else:
                try:
                    fig = _floor(
                        part,
                        dtype,
                        ceilings,
                        floor_fn,
                        f"{name}: time per iteration / floor, {dtype}",
                        notes,
                        head,
                    )
                except Exception as exc:  # a floor model that cannot price these points is not fatal
                    why = f"{type(exc).__name__}: {exc}"
                    log(f"plots: {name}: floor {dtype} skipped: floor_seconds failed ({why})")
                else:
                    written += _save(fig, out, f"floor_{dtype}")
    if summary["compile"].notna().any():
        fig = _compile(
            summary,
            f"{name}: compile / first-call time per backend",
            notes_for(frame, everyone),
            f"data: {name}/{RUNS}",
        )
        written += _save(fig, out, "compile")
    else:
        log(f"plots: {name}: compile figure skipped: no compile_seconds in plottable rows")
    from harness.summary import summary_markdown

    write_atomic(out / "summary.md", summary_markdown(name, frame, summary, ceilings, floor_fn))
    written.append(out / "summary.md")
    table = crossovers(frame)
    write_atomic(out / "crossovers.csv", table.to_csv(index=False))
    write_atomic(out / "crossovers.md", f"# Crossovers: {name}\n\n" + _markdown(table))
    written += [out / "crossovers.csv", out / "crossovers.md"]
    log(f"plots: {name}: crossovers\n{table.to_string(index=False)}")
    return written, summary


def plot_all(results_dir: Path, out_dir: Path | None = None, log: Log = print, extras=()) -> list[Path]:
    """Redraw every figure from ``results_dir/*/runs.csv``; returns the files written.

    Per-machine files go to ``<results_dir>/<machine>/plots/`` and cross-machine figures to
    ``<results_dir>/plots/``; with ``out_dir`` they go to ``<out_dir>/<machine>/`` and ``<out_dir>/``.
    ``extras``: more builders, each called as ``extra(loaded, summaries, homes, cross, log)`` and
    returning the files it wrote (``loaded``: ``load``'s result; ``summaries``: per-point medians
    per machine; ``homes``: each machine's folder, ``<results_dir>/<machine>`` or
    ``<out_dir>/<machine>``; ``cross``: the cross-machine folder). ``harness.report`` lists them.
    """
    results_dir = Path(results_dir)
    machines = load(results_dir, log)
    if not machines:
        log(f"plots: no {RUNS} under {results_dir}/*/; nothing to draw")
        return []
    floor_fn = _floor_function(log)
    written: list[Path] = []
    summaries: dict[str, pd.DataFrame] = {}
    homes: dict[str, Path] = {}
    all_notes: list[str] = []
    for name, (frame, fingerprint) in machines.items():
        homes[name] = (Path(out_dir) / name) if out_dir is not None else results_dir / name
        out = homes[name] if out_dir is not None else homes[name] / "plots"
        paths, summary = _plot_machine(name, frame, fingerprint, out, floor_fn, log)
        written += paths
        summaries[name] = summary
        all_notes += [f"[{name}] {n}" for n in notes_for(frame)]
    cross = Path(out_dir) if out_dir is not None else results_dir / "plots"
    for extra in extras:
        written += extra(machines, summaries, homes, cross, log)
    summaries = {m: s for m, s in summaries.items() if not s.empty}
    if len(machines) < 2:
        log("plots: cross-machine figures skipped: only one machine folder")
        return written
    dtypes = sorted(set().union(*(set(s["dtype"]) for s in summaries.values()))) if summaries else []
    for dtype in dtypes:
        fig = _machines(summaries, dtype, all_notes, log)
        if fig is not None:
            written += _save(fig, cross, f"machines_{dtype}")
    return written
