"""harness.report draws every figure from stored CSV alone: synthetic results, no backend involved."""

from __future__ import annotations

import json
import math
import sys
import types

import pandas as pd
import pytest

from harness.report import draw_all as plot_all
from harness.report.crossovers import crossovers
from harness.report.rows import medians, newest, notes_for
from harness.results import COLUMNS, append_rows, read_runs

BATCHES = (4, 16, 64, 256)
HIDDENS = (4, 32)
RATIO = {4: 4.0, 16: 2.0, 64: 0.5, 256: 0.25}  # fast backend / numpy: crosses 1 between N=16 and N=64


def row(backend, batch, hidden, seconds, status="ok", reason="", repeat=0, dtype="float64", **extra):
    base = dict(
        backend=backend,
        dtype=dtype,
        batch=batch,
        hidden=hidden,
        iterations=100,
        repeat=repeat,
        seconds=seconds,
        seconds_e2e=seconds,
        compile_seconds=0.01 if status == "ok" else "",
        status=status,
        reason=reason,
        max_rel_error=1e-14 if status == "ok" else "",
        validated=status == "ok",
        threads=1,
        machine="m",
        commit="abc123",
        timestamp="2025-01-01T00:00:00",
    )
    base.update(extra)
    return base


def numpy_seconds(batch, hidden):
    return 1e-4 * batch * hidden


def machine_rows(scale=1.0):
    rows = []
    for n in BATCHES:
        for h in HIDDENS:
            t = numpy_seconds(n, h) * scale
            for r in range(3):
                jitter = 1 + 0.05 * r
                rows.append(row("numpy", n, h, t * jitter, repeat=r))
                rows.append(row("numba-cpu", n, h, t * RATIO[n] * jitter, repeat=r))
            # python: measured only at small N, predicted too slow above
            if n <= 16:
                rows.append(row("python", n, h, t * 50))
            else:
                rows.append(row("python", n, h, "", status="skipped", reason="predicted too slow"))
            rows.append(row("numba-cuda", n, h, "", status="skipped", reason="no CUDA GPU"))
    # one unhealthy point: excluded, named in the footer
    rows = [r for r in rows if not (r["backend"] == "numba-cpu" and r["batch"] == 256 and r["hidden"] == 32)]
    rows.append(row("numba-cpu", 256, 32, "", status="unhealthy", reason="subnormal activations"))
    return rows


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Two machine folders drawn once (matplotlib is the slow part): alpha has ceilings, beta none."""
    root = tmp_path_factory.mktemp("results")
    for name, scale in (("alpha", 1.0), ("beta", 0.5)):
        rows = machine_rows(scale)
        if name == "beta":  # a smaller grid on the second machine; H=32 is common to both
            rows = [r for r in rows if r["hidden"] == 32 and r["batch"] >= 64]
        append_rows(root / name / "runs.csv", rows)
    (root / "alpha" / "machine.json").write_text(json.dumps({"ceilings": {"flops": 1e9}}))
    (root / "beta" / "machine.json").write_text(json.dumps({"hostname": "beta"}))
    with open(root / "alpha" / "runs.csv", "a") as fh:
        fh.write("this is not,a valid line\n")  # wrong field count
        fh.write(",".join(["numpy", "float64", "4", "4", "100", "0", "0.1"]) + "\n")  # fields missing
    fake = types.ModuleType("harness.floor")  # harness.floor's contract, without depending on its model
    fake.floor_seconds = lambda batch, hidden, dtype, ceilings: batch * hidden / ceilings["flops"]
    messages = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "harness.floor", fake)
        written = plot_all(root, log=messages.append)
    return root, written, "\n".join(messages)


def test_plot_all_writes_figures_and_reports_bad_lines(drawn):
    root, written, log = drawn
    n_rows = len(machine_rows())
    assert f"alpha/runs.csv: 2 bad line(s) ignored (line {n_rows + 2}, {n_rows + 3})" in log
    for machine in ("alpha", "beta"):
        plots = root / machine / "plots"
        for stem in ("time_vs_batch_float64", "time_vs_hidden_float64", "speedup_float64", "compile", "ladder_float64",
                     "effort_float64"):  # fmt: skip
            for ext in ("png", "svg"):
                path = plots / f"{stem}.{ext}"
                assert path in written and path.stat().st_size > 1000, path
        assert (plots / "crossovers.csv").exists() and (plots / "crossovers.md").exists()
    for ext in ("png", "svg"):
        assert root / "plots" / f"machines_float64.{ext}" in written
        assert root / "alpha" / "plots" / f"floor_float64.{ext}" in written
    assert not list(root.rglob("*.tmp")), "atomic writes leave no temporary file"
    # beta's machine.json has no ceilings: its floor figure is skipped with a reason, never silently
    assert not list((root / "beta").rglob("floor_*"))
    assert "beta: floor float64 skipped: machine.json has no 'ceilings'" in log
    assert "crosses at N~32" in log  # the crossover table goes through log too
    # the machine README lists every figure drawn for it, the ladder's included
    readme = (root / "alpha" / "README.md").read_text()
    for stem in ("ladder_float64", "effort_float64", "speedup_float64", "floor_float64", "compile"):
        assert f"- [`plots/{stem}.png`](plots/{stem}.png) ([svg](plots/{stem}.svg)): " in readme, stem
    # a ladder rung with no row on this machine stays in the ladder figure's legend, with its reason
    svg = (root / "alpha" / "plots" / "ladder_float64.svg").read_text()
    assert "numba-parallel: not run" in svg and "numba-cpu" in svg


def test_skipped_and_unhealthy_backends_are_named_in_the_footer(drawn):
    root, _, _ = drawn
    frame, _ = read_runs(root / "alpha" / "runs.csv")
    notes = notes_for(frame)
    assert "numba-cuda (skipped: no CUDA GPU)" in notes
    assert any(n.startswith("python at") and "N>=64" in n and "predicted too slow" in n for n in notes)
    assert any(n.startswith("numba-cpu at 1 point, N=256, H=32 (unhealthy: subnormal") for n in notes)
    assert not any(n.startswith("numpy") for n in notes)
    # a backend absent from a slice is still accounted for
    assert "torch (no rows for this selection)" in notes_for(frame, ["torch"])
    # and the footer really is drawn: SVG keeps text as text
    svg = (root / "alpha" / "plots" / "time_vs_batch_float64.svg").read_text()
    assert "not shown:" in svg and "numba-cuda (skipped: no CUDA GPU)" in svg


def test_crossover_is_interpolated_in_log_space():
    frame = pd.DataFrame(machine_rows(), columns=COLUMNS)
    table = crossovers(frame)
    cpu = table[(table["backend"] == "numba-cpu") & (table["hidden"] == 4)].iloc[0]
    # ratio 2 at N=16 and 0.5 at N=64: log-ratio is 0 halfway in log N, at sqrt(16 * 64) = 32
    assert cpu["crossover_batch"] == pytest.approx(32.0)
    assert "crosses" in cpu["result"]
    python = table[(table["backend"] == "python") & (table["hidden"] == 4)].iloc[0]
    assert math.isnan(python["crossover_batch"]) and python["result"].startswith("never in range")
    gpu = table[table["backend"] == "fastest GPU"]
    assert set(gpu["result"]) == {"no plottable GPU rows"}


def test_crossover_always_and_newest_commit_wins():
    old = [row("numpy", n, 8, 1.0, commit="old") for n in BATCHES]
    old += [row("cupy", n, 8, 2.0, commit="old") for n in BATCHES]  # slower everywhere in the old run
    new = [row("numpy", n, 8, 1.0, commit="new") for n in BATCHES]
    new += [row("cupy", n, 8, 0.5, commit="new") for n in BATCHES]  # faster everywhere now
    frame = pd.DataFrame(old + new, columns=COLUMNS)
    table = crossovers(frame)
    cupy = table[table["backend"] == "cupy"].iloc[0]
    assert cupy["result"].startswith("always")
    assert table[table["backend"] == "fastest GPU"].iloc[0]["result"].startswith("always")
    assert any("older commits superseded" in n for n in notes_for(frame))


def test_a_sweep_out_of_time_does_not_hide_an_earlier_measurement():
    """A budget-cut row says nothing about its point: the earlier run's rows stand. Any other newer
    row (a skip with another reason, a measurement) supersedes as before; a point no run reached
    keeps its newest skipped rows."""
    from harness.report.rows import newest
    from harness.results import BUDGET_USED_UP

    cut = BUDGET_USED_UP.format(400)
    rows = [row("numba-cpu", 4, 8, 1.0, commit="old"), row("numba-cpu", 4, 8, "", "skipped", cut, commit="new"),
            row("numpy", 4, 8, 2.0, commit="old"), row("numpy", 4, 8, 3.0, commit="new"),
            row("jax", 4, 8, 1.5, commit="old"), row("jax", 4, 8, "", "skipped", "unavailable: gone", commit="new"),
            row("torch", 64, 8, "", "skipped", BUDGET_USED_UP.format(450), commit="old"),
            row("torch", 64, 8, "", "skipped", cut, commit="new")]  # fmt: skip
    kept, dropped = newest(pd.DataFrame(rows, columns=COLUMNS))
    by = kept.set_index("backend")
    assert by.loc["numba-cpu", "commit"] == "old" and by.loc["numba-cpu", "status"] == "ok"
    assert by.loc["numpy", "commit"] == "new" and by.loc["jax", "commit"] == "new"
    assert by.loc["torch", "commit"] == "new" and by.loc["torch", "reason"] == cut
    assert len(kept) == 4 and dropped == 4


def test_single_machine_skips_cross_machine_with_reason(tmp_path):
    rows = [row("numba-cuda", n, 8, "", status="skipped", reason="no CUDA GPU") for n in BATCHES]
    append_rows(tmp_path / "solo" / "runs.csv", rows)
    messages = []
    written = plot_all(tmp_path, log=messages.append)
    assert any("solo: no plottable rows" in m and "numba-cuda (skipped: no CUDA GPU)" in m for m in messages)
    assert any("cross-machine" in m and "only one machine" in m for m in messages)
    assert not (tmp_path / "plots").exists()
    assert not [p for p in written if p.suffix in (".png", ".svg")]


def test_reporting_imports_no_backend_and_has_no_import_loop():
    """Figures come from stored CSV alone: each reporting module imports plotting, results and
    registry code, never a backend module; and the modules form stages, with no import loop."""
    import ast
    import pkgutil
    from pathlib import Path

    import harness.report

    allowed_roots = {"__future__", "harness", "backends", "matplotlib", "numpy", "pandas", "io", "math", "re", "textwrap",
                     "zlib", "collections", "pathlib", "dataclasses", "tokenize"}  # fmt: skip
    graph = {}
    for info in pkgutil.iter_modules(harness.report.__path__):
        name = f"harness.report.{info.name}"
        path = Path(harness.report.__path__[0]) / f"{info.name}.py"
        graph[name] = set()
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {f"harness.report.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and n.module == "harness.report" for a in n.names}  # fmt: skip
        assert {m.split(".")[0] for m in imported} <= allowed_roots, (name, imported)
        assert {m for m in imported if m.startswith("backends")} <= {"backends"}, name  # the registry only
        outside = {m for m in imported if m.startswith("harness") and not m.startswith("harness.report")}
        assert outside <= {"harness.results", "harness.floor", "harness.gpu_floor"}, (name, outside)
        graph[name] = {m for m in imported if m.startswith("harness.report.")} - {name}

    def reach(start, seen):
        for nxt in graph.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    for name in graph:
        assert name not in reach(name, set()), f"import loop through {name}"


def test_reporting_imports_no_backend_library():
    """Reporting reads the backends' declarations (colours, markers, families, variants), never
    their libraries: no JAX, PyTorch, CuPy or CUDA compiler is imported to draw a figure."""
    import subprocess
    import sys

    code = (
        "import sys, backends, harness.report, harness.report.readme_block, harness.importing\n"
        "from harness.report.rows import colour, marker, ordered\n"
        "styles = [colour(n) + marker(n) for n in ordered(backends.names())]\n"
        "variants = [backends.base_of(n) for n in backends.names()]\n"
        "families = backends.of_family('numba', 'gpu') + backends.packages()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'torch', 'cupy', 'numba_cuda', 'numba_cuda_mlir'))\n"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_summary_report(drawn):
    """summary.md: geo-mean and slowest point over numpy, Numba targets, unmeasured backends named."""
    root, written, _ = drawn
    path = root / "alpha" / "plots" / "summary.md"
    assert path in written
    text = path.read_text()
    # numba-cpu / numpy = 4, 2, 0.5, 0.25 at N = 4, 16, 64, 256 (so speed-ups 0.25 .. 4), both H, minus
    # the unhealthy 256 x 32 point: 7 points, product of speed-ups 0.25
    assert f"| `numba-cpu` | 7 | {0.25 ** (1 / 7):.3g}x | 0.25x at 4 x 4 | 0.25x | - |" in text
    assert "| `python` | 4 | 0.021x | 0.021x at 4 x 4 |" in text  # the median of numpy (x1.05) over 50
    assert "| `numba-cuda` | 0 | not timed (skipped: no CUDA GPU) |" in text
    assert "slower than `numpy` at 4 of 7 points" in text
    # the effort ladder: every Numba CPU rung, timed or not, by effort level
    assert "### The effort ladder" in text and "| `numba-cpu` | tuned |" in text
    assert "| `numba-parallel` | tuned |  |" in text and "not timed (not run)" in text
    assert "`numba-cuda` was not timed here (skipped: no CUDA GPU): GPU figures unmeasured." in text


def test_summary_gpu_floor():
    from harness.gpu_floor import gpu_floor_seconds
    from harness.report.summary import summary_markdown
    from tests.test_gpu_floor import H100_LIKE

    rows = []
    for n, h in ((4, 4), (1024, 1024), (65536, 4096)):
        floor = gpu_floor_seconds(n, h, "float64", H100_LIKE)
        per_run = 100 * floor  # rows hold seconds of 100 iterations
        rows += [row("numpy", n, h, 1.0), row("numba-cuda", n, h, 1.5 * per_run), row("numba-cuda-mlir", n, h, 3 * per_run)]
    frame, _ = newest(pd.DataFrame(rows, columns=COLUMNS))
    text = summary_markdown("m", frame, medians(frame), H100_LIKE, None)
    assert "| `numba-cuda` | 3 | 1.50-1.50 | 3 of 3 | 1.50 | 1.50 | 1.50 |" in text
    assert "| `numba-cuda-mlir` | 3 | 3.00-3.00 | 0 of 3 | 3.00 | 3.00 | 3.00 |" in text
    text = summary_markdown("m", frame, medians(frame), {"x": 1}, None)
    assert "GPU floor: unmeasured (machine.json has no GPU ceilings" in text


def test_summary_floor_and_gpu_ratios():
    from harness.report.summary import summary_markdown

    rows = []
    for n, h in ((1024, 1024), (4096, 1024), (16, 16)):
        t = 1e-9 * n * h
        rows += [row("numpy", n, h, 10 * t), row("numba-cpu", n, h, 2 * t), row("numba-parallel", n, h, t)]
        rows += [row("jax", n, h, 3 * t), row("numba-cuda", n, h, t / 25)]
    frame, _ = newest(pd.DataFrame(rows, columns=COLUMNS))
    floor = lambda n, h, dtype, ceilings: 1e-11 * n * h / 1.5  # noqa: E731  (per iteration: best Numba = 1.5x floor)
    text = summary_markdown("m", frame, medians(frame), {"x": 1}, floor)
    assert "| 1024 x 1024 | 1.50 | 3.00 (`jax`) | 10.00 |" in text and "| 4096 x 1024 | 1.50 | 3.00 (`jax`) | 10.00 |" in text
    assert "| 16 x 16 | 1.50 | 3.00 (`jax`) | 10.00 |" in text  # every point is priced, small ones too
    assert "every point: 1.50-1.50; within 2x at 3 of 3 points" in text
    assert "N*H >= 2^20: 1.50-1.50; within 2x at 2 of 2 points" in text
    assert "the fastest CPU backend at 3 of 3 points." in text
    assert "N*H >= 2^20: median 2x" in text and "N*H < 2^14: median 2x" in text
    assert "largest common point (4096 x 1024): 25x" in text
    # a point where only python ran (the sweep's budget ran out there): empty cells, no count
    frame, _ = newest(pd.DataFrame(rows + [row("python", 16384, 64, 5.0)], columns=COLUMNS))
    text = summary_markdown("m", frame, medians(frame), {"x": 1}, floor)
    assert "| 16384 x 64 | - | - | - |" in text and "nan" not in text
    assert "every point: 1.50-1.50; within 2x at 3 of 3 points" in text and "at 3 of 3 points." in text


def test_compile_figure_shows_the_fresh_process_call_apart_and_says_what_was_built():
    import pandas as pd

    from harness.report import first_calls

    summary = pd.DataFrame([
        dict(backend="numba-cpu", dtype="float64", batch=4, hidden=4, compile=0.9, cache="cold", fresh="True", startup=0.15),
        dict(backend="numba-cpu", dtype="float64", batch=16, hidden=4, compile=0.001, cache="memory", fresh="False"),
        dict(backend="numba-cpu", dtype="float64", batch=64, hidden=4, compile=0.2, cache="disk", fresh="False"),
        dict(backend="numpy", dtype="float64", batch=4, hidden=4, compile=0.0002, cache="none", fresh="True"),
        dict(backend="jax", dtype="float64", batch=4, hidden=4, compile=0.3, cache="", fresh=""),  # older results
    ])  # fmt: skip
    fig = first_calls.compile_times(summary, "t", [], "data")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "fresh 0.9 s (cold) after start-up 0.15 s; later points 0.101 s (memory 1, disk 1)" in texts  # median of 0.001, 0.2
    assert "fresh 0.0002 s (none)" in texts
    assert "median 0.3 s over points (cache not recorded)" in texts
    label = fig.axes[0].get_xlabel()
    assert "in a fresh process" in label and "cache not recorded: first call = prepare + the validation run" in label


def test_svg_clip_ids_do_not_depend_on_the_process():
    from harness.report.figures import _stable_clip_ids

    svg = b'<g clip-path="url(#p0123456789)"/><g clip-path="url(#pabcdefabcd)"/><g clip-path="url(#p0123456789)"/>' \
          b'<clipPath id="pabcdefabcd"/><clipPath id="p0123456789"/>'
    assert _stable_clip_ids(svg) == (b'<g clip-path="url(#clip0)"/><g clip-path="url(#clip1)"/><g clip-path="url(#clip0)"/>'
                                     b'<clipPath id="clip1"/><clipPath id="clip0"/>')  # fmt: skip
