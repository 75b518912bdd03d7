"""Reporting: every figure and generated text of a results folder, from stored results alone.

``make plots`` (``python -m harness plot``) runs ``draw_all``. The stages, one module each:

* ``rows``: which stored rows are data (newest run per point, status ok and validated), backend
  names, colours and markers (from the registry), the notes naming what is not drawn and why;
* ``figures``: the figures of one machine (time per iteration, speed-up, floor) and their
  shared frame (footer, save); ``first_calls``: its ``compile`` figure;
* ``ladder``: the effort ladder (the Numba CPU rungs by ``LEVEL``, their ``TWIN`` backends, each
  backend's loop lines); ``ladder_figures``: its ``ladder`` and ``effort`` figures;
* ``crossovers``: where one backend (or the GPU) overtakes another, per machine and per pair;
* ``summary``: ``<machine>/plots/summary.md``, the headline figures;
* ``compare``: across machines: time per iteration and speed-ups (``machines_<dtype>``), the
  fastest backend at every point (``fastest_<dtype>``) and ``plots/crossovers.md``;
* ``machine_readme``: ``<machine>/README.md``;
* ``readme_block``: the repository README's generated blocks (the answer it opens with, the
  results tables).

``draw_all`` runs the builders of ``MACHINE_BUILDERS`` on each machine folder and those of
``CROSS_BUILDERS`` on all of them; adding a figure is adding a builder. Nothing here imports a
backend: only the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.report import compare, figures, first_calls, ladder, ladder_figures, machine_readme, summary
from harness.report.crossovers import crossovers
from harness.report.rows import REFERENCE, RUNS, Log, load, markdown, medians, newest, notes_for, ordered
from harness.results import MACHINE, write_atomic


@dataclass
class Machine:
    """One machine folder, as every per-machine builder sees it."""

    name: str
    rows: pd.DataFrame  # every stored row of the folder
    frame: pd.DataFrame  # the newest run of each point, every status
    summary: pd.DataFrame  # per-point medians of the plottable rows
    fingerprint: dict
    out: Path  # where its figures go (<results>/<machine>/plots or <out_dir>/<machine>)
    home: Path  # the machine folder itself (<results>/<machine> or <out_dir>/<machine>)
    floor_fn: Callable | None
    log: Log

    @property
    def everyone(self) -> list[str]:
        return ordered(self.frame["backend"])

    @property
    def ceilings(self) -> dict | None:
        return self.fingerprint.get("ceilings") if isinstance(self.fingerprint, dict) else None

    def dtypes(self) -> list[str]:
        return sorted(self.summary["dtype"].unique())

    def notes(self, dtype: str | None = None) -> list[str]:
        rows = self.frame if dtype is None else self.frame[self.frame["dtype"] == dtype]
        return notes_for(rows, self.everyone)

    def head(self, dtype: str) -> str:
        return f"data: {self.name}/{RUNS}, {dtype}"


@dataclass
class Machines:
    """Every machine folder, as the cross-machine builders see them."""

    loaded: dict  # load()'s {name: (rows, fingerprint)}
    summaries: dict[str, pd.DataFrame]  # the non-empty per-point medians
    out: Path
    log: Log
    notes: list[str] = field(default_factory=list)


def _time_figures(m: Machine) -> list[Path]:
    written = []
    for dtype in m.dtypes():
        part = m.summary[m.summary["dtype"] == dtype]
        for panel, x, stem, what in (("hidden", "batch", "time_vs_batch", "batch N"), ("batch", "hidden", "time_vs_hidden", "hidden width H")):
            fig = figures.time_lines(part, panel, x, f"{m.name}: time per iteration vs {what}, {dtype}", m.notes(dtype), m.head(dtype))
            written += figures.save(fig, m.out, f"{stem}_{dtype}")
    return written


def _speedup_figures(m: Machine) -> list[Path]:
    written = []
    for dtype in m.dtypes():
        part = m.summary[m.summary["dtype"] == dtype]
        fig, why = figures.speedup(part, f"{m.name}: speedup over {REFERENCE}, {dtype}", m.notes(dtype), m.head(dtype))
        if fig is None:
            m.log(f"plots: {m.name}: speedup {dtype} skipped: {why}")
        else:
            written += figures.save(fig, m.out, f"speedup_{dtype}")
    return written


def _floor_figures(m: Machine) -> list[Path]:
    if m.floor_fn is None:
        return []
    written = []
    for dtype in m.dtypes():
        if not m.ceilings:
            m.log(f"plots: {m.name}: floor {dtype} skipped: {MACHINE} has no 'ceilings'")
            continue
        part = m.summary[m.summary["dtype"] == dtype]
        try:
            fig = figures.floor(part, dtype, m.ceilings, m.floor_fn, f"{m.name}: time per iteration / floor, {dtype}",
                                m.notes(dtype), m.head(dtype))  # fmt: skip
        except Exception as exc:  # a floor model that cannot price these points is not fatal
            m.log(f"plots: {m.name}: floor {dtype} skipped: floor_seconds failed ({type(exc).__name__}: {exc})")
            continue
        written += figures.save(fig, m.out, f"floor_{dtype}")
    return written


def _compile_figure(m: Machine) -> list[Path]:
    if not m.summary["compile"].notna().any():
        m.log(f"plots: {m.name}: compile figure skipped: no compile_seconds in plottable rows")
        return []
    fig = first_calls.compile_times(m.summary, f"{m.name}: compile / first-call time per backend", m.notes(), f"data: {m.name}/{RUNS}")
    return figures.save(fig, m.out, "compile")


def _ladder_figures(m: Machine) -> list[Path]:
    written = []
    for dtype in m.dtypes():
        table = ladder.times(m.summary, dtype)
        frame = m.frame[m.frame["dtype"] == dtype]
        for stem, draw, what in (("ladder", ladder_figures.ladder_figure, "the effort ladder"),
                                 ("effort", ladder_figures.effort_figure, "speed vs effort")):  # fmt: skip
            fig, why = draw(table, frame, dtype, f"{m.name}: {what}, {dtype}", m.notes(dtype), m.head(dtype))
            if fig is None:
                m.log(f"plots: {m.name}: {stem} {dtype} skipped: {why}")
            else:
                written += figures.save(fig, m.out, f"{stem}_{dtype}")
    return written


def _summary_md(m: Machine) -> list[Path]:
    write_atomic(m.out / "summary.md", summary.summary_markdown(m.name, m.frame, m.summary, m.ceilings, m.floor_fn))
    return [m.out / "summary.md"]


def _crossovers_md(m: Machine) -> list[Path]:
    table = crossovers(m.frame)
    write_atomic(m.out / "crossovers.csv", table.to_csv(index=False))
    write_atomic(m.out / "crossovers.md", f"# Crossovers: {m.name}\n\n" + markdown(table))
    m.log(f"plots: {m.name}: crossovers\n{table.to_string(index=False)}")
    return [m.out / "crossovers.csv", m.out / "crossovers.md"]


def _readme(m: Machine, written: list[Path] = ()) -> list[Path]:
    """The machine folder's README, listing the figures ``written`` into its plots folder."""
    path = m.home / "README.md"
    drawn = [p.relative_to(m.home).as_posix() for p in written if p.is_relative_to(m.home)]
    write_atomic(path, machine_readme.readme(m.name, m.rows, m.fingerprint, drawn))
    return [path]


def _machines_figures(c: Machines) -> list[Path]:
    if len(c.loaded) < 2:
        c.log("plots: cross-machine figures skipped: only one machine folder")
        return []
    written = []
    dtypes = sorted(set().union(*(set(s["dtype"]) for s in c.summaries.values()))) if c.summaries else []
    for dtype in dtypes:
        fig = compare.machines(c.summaries, dtype, c.notes, c.log)
        if fig is not None:
            written += figures.save(fig, c.out, f"machines_{dtype}")
    return written


def _comparison(c: Machines) -> list[Path]:
    return compare.draw_comparison(c.loaded, c.summaries, c.out, c.log)


#: Run on each machine folder with data, in order (the README also for a folder without data).
MACHINE_BUILDERS: tuple[Callable[[Machine], list[Path]], ...] = (
    _time_figures, _speedup_figures, _floor_figures, _compile_figure, _ladder_figures, _summary_md, _crossovers_md,
)  # fmt: skip
#: Run once on every machine folder.
CROSS_BUILDERS: tuple[Callable[[Machines], list[Path]], ...] = (_machines_figures, _comparison)


def _floor_function(log: Log):
    try:
        from harness.floor import floor_seconds
    except ImportError as exc:
        log(f"plots: floor figures skipped: harness.floor not importable ({exc})")
        return None
    return floor_seconds


def draw_all(results_dir: Path, out_dir: Path | None = None, log: Log = print, loaded: dict | None = None) -> list[Path]:
    """Redraw everything from ``results_dir/*/runs.csv``; returns the files written.

    Per-machine files go to ``<results_dir>/<machine>/plots/`` (its README to the machine folder)
    and cross-machine files to ``<results_dir>/plots/``; with ``out_dir``, to ``<out_dir>/<machine>/``
    and ``<out_dir>/``. ``loaded``: ``rows.load(results_dir)`` when the caller has it already.
    ``ResultsError`` when there is no readable runs.csv.
    """
    results_dir = Path(results_dir)
    loaded = load(results_dir, log) if loaded is None else loaded
    floor_fn = _floor_function(log)
    written: list[Path] = []
    summaries: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for name, (rows, fingerprint) in loaded.items():
        home = (Path(out_dir) / name) if out_dir is not None else results_dir / name
        frame, _ = newest(rows)
        m = Machine(name, rows, frame, medians(frame), fingerprint, home if out_dir is not None else home / "plots",
                    home, floor_fn, log)  # fmt: skip
        mine: list[Path] = []
        if m.summary.empty:
            log(f"plots: {name}: no plottable rows; " + "; ".join(m.notes()))
        else:
            for build in MACHINE_BUILDERS:
                mine += build(m)
            summaries[name] = m.summary
        written += mine + _readme(m, mine)
        notes += [f"[{name}] {n}" for n in notes_for(rows)]
    cross = Machines(loaded, summaries, Path(out_dir) if out_dir is not None else results_dir / "plots", log, notes)
    for build in CROSS_BUILDERS:
        written += build(cross)
    return written


#: The repository's own results folder and README (the README's tables are drawn from them).
REPOSITORY = Path(__file__).resolve().parents[2]


def draw_repository(results_dir: Path, log: Log = print) -> list[Path]:
    """``draw_all``, then, when ``results_dir`` is this repository's ``results/``, the README's
    generated tables (``readme_block``). What ``make plots`` and ``make bench`` run."""
    from harness.report import readme_block

    loaded = load(Path(results_dir), log)
    paths = draw_all(results_dir, log=log, loaded=loaded)
    print(f"{len(paths)} figure files written under {results_dir}")
    readme = REPOSITORY / "README.md"
    if Path(results_dir).resolve() == (REPOSITORY / "results").resolve() and readme.is_file():
        try:
            changed = readme_block.update(readme, results_dir, loaded)
        except ValueError as exc:
            log(f"note: README's generated blocks not regenerated: {exc}")
        else:
            print(f"README.md: the answer and the results tables {'regenerated' if changed else 'already current'}")
    return paths


__all__ = ["draw_all", "draw_repository", "MACHINE_BUILDERS", "CROSS_BUILDERS", "Machine", "Machines"]
