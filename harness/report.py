"""``make plots``: every figure and generated text of a results folder, from stored results alone.

``plots.plot_all`` draws each machine's figures, ``summary.md`` and ``crossovers.md``; the extras
below add the cross-machine comparison (``harness.compare``: fastest backend per point, CPU <-> GPU
crossovers per pair of machines) and each machine folder's README (``harness.machine_readme``).
"""

from __future__ import annotations

from pathlib import Path

from harness import compare, machine_readme, plots

EXTRAS = (compare.draw_comparison, machine_readme.write_readmes)


def draw_all(results_dir: Path, out_dir: Path | None = None, log: plots.Log = print) -> list[Path]:
    return plots.plot_all(results_dir, out_dir, log, extras=EXTRAS)
