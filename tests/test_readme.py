"""The README's generated blocks (the answer it opens with, the results tables) come from the
committed results, never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import readme_block
from harness.report.rows import load

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def loaded():
    """The committed results, read once for this module's tests."""
    return load(ROOT / "results", log=lambda _: None)


def test_readme_tables_match_the_committed_results(loaded):
    expected = readme_block.block(ROOT / "results", loaded)
    assert readme_block.current(ROOT / "README.md") == expected, (
        "README.md's generated tables differ from results/*/runs.csv: run `make plots` and commit"
    )


def test_readme_opens_with_the_answer_generated_from_the_committed_results(loaded):
    text = (ROOT / "README.md").read_text()
    expected = readme_block.answer(ROOT / "results", loaded)
    assert readme_block.current(ROOT / "README.md", readme_block.ANSWER_BEGIN, readme_block.ANSWER_END) == expected, (
        "README.md's generated answer differs from results/*/runs.csv (or a loop file changed): run `make plots` and commit"
    )
    sections = text.split("\n## ")
    assert readme_block.ANSWER_BEGIN in sections[1] and readme_block.ANSWER_END in sections[1], "the first section is the answer"
    assert "![the effort ladder on " in expected and "| backend | level | loop lines |" in expected


def test_update_rewrites_only_the_blocks(tmp_path, loaded):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{readme_block.ANSWER_BEGIN}\nold answer\n{readme_block.ANSWER_END}\n"
                      f"before\n{readme_block.BEGIN}\nstale\n{readme_block.END}\nafter\n")  # fmt: skip
    assert readme_block.update(readme, ROOT / "results", loaded) is True
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{readme_block.ANSWER_BEGIN}\n") and text.endswith("\nafter\n")
    assert "stale" not in text and "old answer" not in text and f"{readme_block.ANSWER_END}\nbefore\n" in text
    assert "#### `xeon-16c-h100`" in text and "#### CPU <-> GPU crossovers" in text and "![the effort ladder on " in text
    assert readme_block.update(readme, ROOT / "results", loaded) is False  # already current


def test_update_refuses_a_readme_without_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    for text in ("no markers\n", f"{readme_block.BEGIN}\n{readme_block.END}\n"):  # the answer's markers missing
        readme.write_text(text)
        with pytest.raises(ValueError, match="markers"):
            readme_block.update(readme, ROOT / "results")
        assert readme.read_text() == text


def test_readme_describes_every_registered_backend():
    import backends

    text = (ROOT / "README.md").read_text()
    table = text.split("## The backends", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    described = {name.strip() for line in rows for name in line.split("|")[1].replace("`", "").split("/")}
    assert set(backends.NAMES) <= described, sorted(set(backends.NAMES) - described)
