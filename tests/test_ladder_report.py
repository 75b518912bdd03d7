"""The effort-ladder reports (harness.report.ladder, ladder_figures): rungs and twins from the
declarations, the loop-line rule, the summary tables, the README's sentences and the figures, from
synthetic rows of fake backends declared here (no backend runs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import backends
from backends.base import Backend
from harness.report import figures, ladder, ladder_figures, readme_block
from harness.report.rows import medians, newest
from harness.results import COLUMNS, append_rows

MODULE = __name__


class FakeTuned(Backend):
    NAME, FAMILY, LEVEL, LOOP_FILES = "fake-tuned", "numba", "tuned", ("loops/tuned.py", "loops/kernel.py")


class FakeC(Backend):
    NAME, FAMILY, LEVEL, TWIN, LOOP_FILES = "fake-c", "c", "tuned", "fake-tuned", ("loops/kernel.c",)


class FakePlain(Backend):
    NAME, FAMILY, LEVEL = "fake-plain", "numba", "plain"  # its loop is its own file


class FakeNaive(Backend):
    NAME, FAMILY, LEVEL, LOOP_FILES = "fake-naive", "numba", "naive", ("loops/naive.py",)


class FakeThreaded(FakeTuned):  # a variant: its base's loop files and its own file
    NAME = "fake-threaded"


class FakeCThreads(FakeC):
    NAME, TWIN = "fake-c-threads", "fake-threaded"


class FakeGpu(Backend):  # a Numba backend on the GPU is no rung of the CPU ladder
    NAME, FAMILY, LEVEL, DEVICE = "fake-gpu", "numba", "tuned", "gpu"


# registry order deliberately not the effort order: the ladder sorts by LEVEL
FAKES = ("fake-tuned", "fake-c", "fake-plain", "fake-naive", "fake-threaded", "fake-c-threads", "fake-gpu")

PYTHON_SOURCE = '''\
"""Module docstring
spanning two lines."""
import math  # a trailing comment

# a whole-line comment


def f(x):
    """A docstring."""
    y = (x +

         1)
    s = """a
b"""
    return math.exp(y)
'''  # counted: import, def, the two lines of y (not the blank one inside), the two of s, return = 7

C_SOURCE = r"""/* a block
   comment */
#include <math.h>
// a line comment
static const char *s = "not // a comment"; /* trailing */

double f(double x) {
    return exp(x); // exp
}
"""  # counted: #include, static, double, return, } = 5


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """The fakes (and the numpy reference) as the whole registry; their loop files under tmp_path."""
    monkeypatch.setattr(backends, "REGISTRY", {"numpy": backends.module_name("numpy"), **dict.fromkeys(FAKES, MODULE)})
    (tmp_path / "loops").mkdir()
    (tmp_path / "loops" / "tuned.py").write_text("def run(x):\n    return x\n")  # 2
    (tmp_path / "loops" / "kernel.py").write_text(PYTHON_SOURCE)  # 7
    (tmp_path / "loops" / "kernel.c").write_text(C_SOURCE)  # 5
    (tmp_path / "loops" / "naive.py").write_text("# only a comment\nx = 1\n")  # 1
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "numpy_backend.py").write_text("import numpy\n")  # 1
    own = tmp_path / MODULE.replace(".", "/")
    own.parent.mkdir(parents=True)
    own.with_suffix(".py").write_text("'''doc'''\nclass A:\n    pass\n")  # 2
    return tmp_path


def test_rungs_twins_and_members_come_from_the_declarations(registry):
    assert ladder.rungs() == ["fake-naive", "fake-plain", "fake-tuned", "fake-threaded"]
    assert ladder.twins() == [("fake-c", "fake-tuned"), ("fake-c-threads", "fake-threaded")]
    assert ladder.members() == ["fake-naive", "fake-plain", "fake-tuned", "fake-c", "fake-threaded", "fake-c-threads"]


def test_the_loop_line_rule(registry, tmp_path):
    assert ladder.count_lines(registry / "loops" / "kernel.py") == 7
    assert ladder.count_lines(registry / "loops" / "kernel.c") == 5
    (tmp_path / "notes.txt").write_text("text\n")
    with pytest.raises(ValueError, match="no line-count rule for .txt"):
        ladder.count_lines(tmp_path / "notes.txt")
    own = MODULE.replace(".", "/") + ".py"
    assert ladder.loop_files("fake-plain") == [own]  # nothing declared: its own file
    assert ladder.loop_files("fake-threaded") == ["loops/tuned.py", "loops/kernel.py", own]  # base's + its own
    assert ladder.loop_lines("fake-tuned", registry) == (9, "loops/tuned.py, loops/kernel.py")
    assert ladder.loop_lines("fake-threaded", registry)[0] == 11
    assert ladder.loop_lines("fake-c-threads", registry)[0] == 7
    assert ladder.loop_lines("fake-naive", registry)[0] == 1
    (registry / "loops" / "kernel.c").unlink()
    assert ladder.loop_lines("fake-c", registry) == (None, "loops/kernel.c not found")
    assert ladder.loop_lines("not-registered", registry) == (None, "not registered here: its files are unknown")


def test_the_rule_counts_this_repository_s_backends():
    """Every registered backend's loop is countable by the rule (a file the rule cannot read, or a
    LOOP_FILES entry that does not exist, fails here rather than as a footnote in a figure)."""
    for name in backends.names():
        count, why = ladder.loop_lines(name)
        assert count is not None and count > 0, (name, why)


POINTS = ((4, 4), (64, 64), (256, 256), (1024, 1024))  # one point per size band
SPEEDUP = {"fake-naive": 0.5, "fake-plain": 2.0, "fake-tuned": 8.0}


def fake_rows():
    rows = []

    def add(backend, n, h, seconds, status="ok", reason="", device="cpu", **extra):
        rows.append(dict(backend=backend, dtype="float64", batch=n, hidden=h, iterations=100, repeat=0, seconds=seconds,
                         seconds_e2e=seconds, compile_seconds=0.01, status=status, reason=reason, max_rel_error=1e-15,
                         validated=status == "ok", threads=1, machine="m", commit="c1", timestamp="2026-01-01T00:00:00",
                         device=device, **extra))  # fmt: skip

    for n, h in POINTS:
        add("numpy", n, h, 0.1)
        for name, speed in SPEEDUP.items():
            add(name, n, h, 0.1 / speed)
        # the C twin: 1.25x faster than its Numba twin from N*H = 2^16 on, 1.25x slower below
        add("fake-c", n, h, 0.1 / 8.0 / 1.25 if n * h >= 1 << 16 else 0.1 / 8.0 * 1.25, library="gcc 12 -O3")
        add("fake-threaded", n, h, "", status="skipped", reason="unavailable: no threads here")
        add("fake-gpu", n, h, 0.001, device="gpu")
    return rows  # fake-c-threads: no row at all ("not run")


def tables():
    frame, _ = newest(pd.DataFrame(fake_rows(), columns=COLUMNS))
    return ladder.times(medians(frame), "float64"), frame


def test_summary_ladder_and_twin_tables(registry):
    table, frame = tables()
    text = "\n".join(ladder.summary_section(table, frame, "float64", registry))
    rows = [line for line in text.splitlines() if line.startswith("| `fake-")]
    assert [r.split("`")[1] for r in rows[:6]] == ladder.members()
    assert "| `fake-naive` | naive |  | 1 | 0.5x | 0.5x | 0.5x | 0.5x | 0.5x |" in text
    assert "| `fake-tuned` | tuned |  | 9 | 8x | 8x | 8x | 8x | 8x |" in text
    assert "| `fake-c` | tuned | `fake-tuned` | 5 | 6.4x | 6.4x | 6.4x | 10x | 10x |" in text
    assert "| `fake-threaded` | tuned |  | 11 | not timed (skipped: unavailable: no threads here) |" in text
    assert "| `fake-c-threads` | tuned | `fake-threaded` | 7 | not timed (not run) |" in text
    assert ("`fake-tuned / fake-c` (`fake-tuned`: library not recorded; `fake-c`: gcc 12 -O3): 4 points; `fake-tuned` "
            "faster at 2, `fake-c` at 2; from N*H = 2^16 up (2 points) median 1.25, range 1.25-1.25; the target <= 1.1 met at 0 of 2.") in text  # fmt: skip
    assert "`fake-threaded / fake-c-threads`: no point timed by both (`fake-threaded`: skipped: unavailable: no threads here; `fake-c-threads`: not run)." in text
    assert "| `fake-tuned / fake-c` | N*H < 2^12 | 1 | 0.80 | 0.80-0.80 | 1 point, N*H 16 | no point |" in text
    assert "| `fake-tuned / fake-c` | N*H >= 2^20 | 1 | 1.25 | 1.25-1.25 | no point | 1 point, N*H 1048576 |" in text
    assert "| 64 x 64 | 4096 | 0.80 |" in text and "| 256 x 256 | 65536 | 1.25 |" in text
    assert ladder.LOC_RULE in text


def test_readme_sentences_are_computed_from_the_rows(registry):
    table, frame = tables()
    assert ladder.representative(table) == [(4, 4), (64, 64), (1024, 1024)]
    first, second, third = ladder.sentences(table, frame, "float64", "box")
    assert first == ("On `box` (float64, newest run of each point, commit `c1`), at the seed size 4 x 4 the Numba rungs run "
                     "at 0.5x (`fake-naive`), 2x (`fake-plain`) and 8x (`fake-tuned`) NumPy's speed, from least to most "
                     "effort; not timed: `fake-threaded` (skipped: unavailable: no threads here).")  # fmt: skip
    assert second == ("From N*H = 2^16 up (2 points) their median speed-ups are `fake-naive` 0.5x, `fake-plain` 2x and "
                      "`fake-tuned` 8x: `fake-tuned` is 16x as fast as `fake-naive` there (not timed there: `fake-threaded`).")  # fmt: skip
    assert third == ("Against the same algorithm built by another compiler, the median time ratio `fake-tuned / fake-c` "
                     "is 1.25 from N*H = 2^16 up (range 1.25-1.25; `fake-tuned` faster at 0 of 2 points; `fake-c`: gcc 12 -O3). "
                     "Not compared: `fake-threaded / fake-c-threads` (`fake-threaded`: skipped: unavailable: no threads "
                     "here; `fake-c-threads`: not run).")  # fmt: skip
    # other numbers, other sentences: nothing in them is fixed text
    slower = table.copy()
    slower["fake-plain"] *= 4
    assert "`fake-plain` 0.5x" in ladder.sentences(slower, frame, "float64", "box")[1]


def test_answer_block_picks_the_machine_with_the_ladder(registry, tmp_path):
    append_rows(tmp_path / "results" / "ladder-box" / "runs.csv", fake_rows())
    (tmp_path / "results" / "ladder-box" / "machine.json").write_text(json.dumps({"cpu": "Fake CPU", "cores_logical": 2}))
    only_numpy = [r for r in fake_rows() if r["backend"] == "numpy"]
    append_rows(tmp_path / "results" / "zz-numpy-only" / "runs.csv", only_numpy)
    block = readme_block.answer(tmp_path / "results")
    assert block.startswith(readme_block.ANSWER_BEGIN) and block.endswith(readme_block.ANSWER_END)
    assert "![the effort ladder on ladder-box](results/ladder-box/plots/ladder_float64.png)" in block
    assert "| backend | level | loop lines | 4 x 4 | 64 x 64 | 1024 x 1024 |" in block
    assert "| `fake-c-threads` | tuned, twin of `fake-threaded` | - | not timed (not run) | | |" in block
    assert "| `fake-c` | tuned, twin of `fake-tuned` | - | 6.4x | 6.4x | 10x |" in block  # loop files not in this repository
    assert "`fake-tuned` is 16x as fast as `fake-naive` there" in block


def test_a_rung_without_rows_stays_in_the_figures_and_they_are_deterministic(registry, tmp_path):
    table, frame = tables()
    svgs = []
    for attempt in ("one", "two"):
        fig, why = ladder_figures.ladder_figure(table, frame, "float64", "t", [], "data")
        assert why == ""
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert [label.split(":")[0] for label in labels] == ladder.members()
        assert "fake-c-threads: not run" in labels
        assert any(label.startswith("fake-threaded: skipped:") for label in labels)
        svgs.append(figures.save(fig, tmp_path / attempt, "ladder_float64")[1].read_bytes())
    assert svgs[0] == svgs[1]
    fig, _ = ladder_figures.effort_figure(table, frame, "float64", "t", [], "data", root=registry)
    assert [ax.get_title() for ax in fig.axes] == ["4 x 4 (N*H = 16)", "64 x 64 (N*H = 4096)", "1024 x 1024 (N*H = 1048576)"]
    points = {t.get_text(): t.xy for t in fig.axes[2].texts if hasattr(t, "xy")}
    assert points["fake-tuned"] == pytest.approx((9, 8.0)) and points["fake-c"] == pytest.approx((5, 10.0))
    assert points["numpy"] == pytest.approx((1, 1.0))
    footer = "\n".join(t.get_text() for t in fig.texts)
    assert "fake-c-threads (not run)" in footer.replace("\n", " ")
    assert "fake-gpu (ran on the GPU: this figure is the CPU's)" in footer.replace("\n", " ") and "fake-gpu" not in points
    no_numpy = table.drop(columns="numpy")
    assert ladder_figures.ladder_figure(no_numpy, frame, "float64", "t", [], "d")[0] is None


def test_machine_readme_lists_the_new_figures():
    from harness.report import machine_readme

    frame = pd.DataFrame(columns=COLUMNS)
    text = machine_readme.readme("m", frame, {}, ["plots/ladder_float64.png", "plots/ladder_float64.svg", "plots/effort_float64.png"])
    assert "- [`plots/ladder_float64.png`](plots/ladder_float64.png) ([svg](plots/ladder_float64.svg)): the effort ladder" in text
    assert "- [`plots/effort_float64.png`](plots/effort_float64.png): speed vs effort" in text
    assert text.count("## Figures") == 1
