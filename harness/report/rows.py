"""Which stored rows are data, and how backends are named and drawn: the first stage of reporting.

A point is (machine folder, backend, dtype, batch, hidden). ``runs.csv`` is append-only, so the last
row of a point belongs to its newest run; of each point only the rows carrying that newest row's
commit are kept (older commits are counted in the notes). Of those, only rows with status ``ok``
and ``validated`` True and a positive time are data (``plottable``). Every other row is named in
``notes_for`` with its status and reason, so no backend disappears without a word.

Imports no backend library: the registry and the backends' declarations (``backends.style``:
colours and markers; order: ``backends.names``) and ``harness.results``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

import backends
from backends import REFERENCE
from harness.results import (
    BUDGET_USED_UP_PATTERN,
    NUMERIC,
    RUNS,
    ResultsError,
    fill_device,
    read_machine,
    read_runs,
)

__all__ = ["REFERENCE", "RUNS"]

_FALLBACK_COLOURS = ("#8c564b", "#bcbd22", "#17becf", "#e377c2", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
MACHINE_STYLES = ("-", "--", ":", "-.")
POINT = ["source", "backend", "dtype", "batch", "hidden"]

Log = Callable[[str], None]


def colour(backend: str) -> str:
    """The colour the backend declares, the same in every figure; a backend that declares none (or
    is not registered here) gets a stable colour from its name."""
    declared = backends.style(backend)[0]
    return declared or _FALLBACK_COLOURS[zlib.crc32(backend.encode()) % len(_FALLBACK_COLOURS)]


def marker(backend: str) -> str:
    return backends.style(backend)[1]


def ordered(names: Iterable[str]) -> list[str]:
    """Registered backends in registry order, then other names alphabetically."""
    known = backends.names()
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
    """Per point, keep the rows with the commit of its last (newest) row; returns (rows, dropped count).

    A row the sweep skipped because its time budget was used up (``schema.BUDGET_USED_UP``) is no
    measurement: where an earlier run measured the point, that run's rows are kept instead. A point
    no run reached keeps its newest skipped rows, which say why."""
    frame = _with_source(frame)
    if frame.empty:
        return frame, 0
    cut = (frame["status"] == "skipped") & frame["reason"].fillna("").astype(str).str.fullmatch(BUDGET_USED_UP_PATTERN)
    last = frame.groupby(POINT, sort=False)["commit"].transform("last")
    reached = frame["commit"].where(~cut).groupby([frame[c] for c in POINT], sort=False).transform("last")
    keep = frame["commit"] == reached.fillna(last)
    return frame[keep], int((~keep).sum())


def _validated(frame: pd.DataFrame) -> pd.Series:
    return frame["validated"].map(lambda v: v is True or v in ("True", "true", "1", 1)).astype(bool)


def plottable(frame: pd.DataFrame) -> pd.Series:
    seconds = pd.to_numeric(frame["seconds"], errors="coerce")
    return (frame["status"] == "ok") & _validated(frame) & (seconds > 0) & (frame["iterations"] > 0)


def medians(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and min..max of seconds per iteration, per point, over the plottable rows."""
    ok = frame[plottable(frame)]
    grouped = ok.assign(t=ok["seconds"] / ok["iterations"]).groupby(POINT)
    out = grouped["t"].agg(median="median", lo="min", hi="max", n="size")
    out["compile"] = grouped["compile_seconds"].median()
    out["startup"] = grouped["startup_seconds"].median() if "startup_seconds" in ok.columns else float("nan")
    for column in ("cache", "fresh"):  # one value per point (its first call); "" for older results
        out[column] = grouped[column].first().map(lambda v: "" if pd.isna(v) else str(v)) if column in ok.columns else ""
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
    good = plottable(frame) if not frame.empty else pd.Series(dtype=bool)
    names = ordered(set(frame["backend"]) | set(backends or ()))
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


def markdown(table: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.0f}" if v >= 100 else f"{v:.3g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def load(results_dir: Path, log: Log = print) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Every ``<results_dir>/<machine>/runs.csv``: {folder: (rows with a ``source`` column, machine.json)}.

    A folder whose runs.csv cannot be read is skipped with a note; ``ResultsError`` when there is
    no runs.csv at all, or none that can be read (its message names the first reason).
    """
    machines, reasons = {}, []
    found = sorted(Path(results_dir).glob(f"*/{RUNS}"))
    if not found:
        raise ResultsError(f"no {RUNS} under {results_dir}/*/: nothing to plot")
    for path in found:
        folder = path.parent
        try:
            frame, bad = read_runs(path)
        except ResultsError as exc:
            reasons.append(str(exc))
            log(f"plots: {exc}; folder skipped")
            continue
        except OSError as exc:
            reasons.append(f"{path}: {exc.strerror or exc}")
            log(f"plots: {reasons[-1]}; folder skipped")
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
    if not machines:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise ResultsError(f"no readable {RUNS} under {results_dir}: {reasons[0]}{more}")
    return machines
