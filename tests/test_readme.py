"""The README's results tables are generated from the committed results, never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import readme_block

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_committed_results():
    expected = readme_block.block(ROOT / "results")
    assert readme_block.current(ROOT / "README.md") == expected, (
        "README.md's generated tables differ from results/*/runs.csv: run `make plots` and commit"
    )


def test_update_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{readme_block.BEGIN}\nstale\n{readme_block.END}\nafter\n")
    assert readme_block.update(readme, ROOT / "results") is True
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\nafter\n") and "stale" not in text
    assert "#### `xeon-16c-h100`" in text and "#### CPU <-> GPU crossovers" in text
    assert readme_block.update(readme, ROOT / "results") is False  # already current


def test_update_refuses_a_readme_without_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        readme_block.update(readme, ROOT / "results")
    assert readme.read_text() == "no markers\n"
