"""Crossovers: the batch from which one backend (or device) overtakes another, per machine and
across machines. ``crossovers``: every backend against NumPy and the fastest GPU backend against
the fastest CPU backend, on one machine; ``pair_crossovers``: the fastest GPU backend of one
machine against the fastest CPU backend of another (the same one included). GPU and CPU come
from each row's ``device`` column (``results.fill_device`` for older rows).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.rows import REFERENCE, medians, newest, ordered
from harness.results import fill_device


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
    summary = medians(frame)
    device = frame.groupby(["source", "backend"])["device"].last() if "device" in frame.columns else pd.Series(dtype=str)
    rows = []

    def add(machine, dtype, hidden, challenger, baseline, mine: pd.Series, base: pd.Series):
        both = pd.concat([mine, base], axis=1, keys=["challenger", "baseline"]).dropna().sort_index()
        if both.empty:
            rows.append((machine, dtype, hidden, challenger, baseline, float("nan"), "no common batch sizes"))
            return
        n, text = _crossing(both.index.to_numpy(), (both["challenger"] / both["baseline"]).to_numpy())
        rows.append((machine, dtype, hidden, challenger, baseline, n, text))

    for (machine, dtype, hidden), part in summary.groupby(["source", "dtype", "hidden"], sort=True):
        table = part.pivot_table(index="batch", columns="backend", values="median")
        for name in ordered(table.columns):
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


def _side(summary: pd.DataFrame, devices: dict[str, str], device: str, dtype: str, hidden: int) -> pd.DataFrame:
    part = summary[(summary["dtype"] == dtype) & (summary["hidden"] == hidden)]
    part = part[part["backend"].map(lambda b: devices.get(b) == device)]
    if part.empty:
        return part
    return part.loc[part.groupby("batch")["median"].idxmin()].set_index("batch").sort_index()


def devices_of(frame: pd.DataFrame) -> dict[str, str]:
    """backend -> the device its newest rows report (``fill_device`` has filled older rows)."""
    frame, _ = newest(frame)
    return frame.groupby("backend")["device"].last().to_dict() if not frame.empty else {}


def pair_crossovers(machines: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """``machines``: {name: (rows, per-point summary)}. One row per (GPU machine, CPU machine,
    dtype, hidden) both measured."""
    out = []
    devices = {m: devices_of(rows) for m, (rows, _) in machines.items()}
    for gpu_m, (_, gpu_summary) in machines.items():
        for cpu_m, (_, cpu_summary) in machines.items():
            for dtype in sorted(set(gpu_summary["dtype"]) & set(cpu_summary["dtype"])):
                widths = sorted(set(gpu_summary[gpu_summary["dtype"] == dtype]["hidden"])
                                & set(cpu_summary[cpu_summary["dtype"] == dtype]["hidden"]))  # fmt: skip
                for hidden in widths:
                    g = _side(gpu_summary, devices[gpu_m], "gpu", dtype, hidden)
                    c = _side(cpu_summary, devices[cpu_m], "cpu", dtype, hidden)
                    if g.empty or c.empty:
                        continue
                    both = pd.concat([g["median"], c["median"]], axis=1, keys=["gpu", "cpu"]).dropna()
                    if both.empty:
                        continue
                    n, text = _crossing(both.index.to_numpy(), (both["gpu"] / both["cpu"]).to_numpy())
                    top = both.index.max()
                    out.append({
                        "gpu_machine": gpu_m, "cpu_machine": cpu_m, "dtype": dtype, "hidden": hidden,
                        "crossover_batch": n, "result": text,
                        "at_N=max": f"{top}: {g.loc[top, 'backend']} {_us(g.loc[top, 'median'])} vs "
                                         f"{c.loc[top, 'backend']} {_us(c.loc[top, 'median'])}",
                    })  # fmt: skip
    columns = ["gpu_machine", "cpu_machine", "dtype", "hidden", "crossover_batch", "result", "at_N=max"]
    return pd.DataFrame(out, columns=columns)


def _us(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"
