"""The committed chapters and exercises hold finished text: nbval compares outputs, not
markdown, so an unwritten cell would otherwise pass every run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(
    [
        *ROOT.glob("notebooks/*.ipynb"),
        *ROOT.glob("exercises/*.ipynb"),
        *ROOT.glob("exercises/solutions/*.ipynb"),
    ]
)
UNFINISHED = re.compile(r"\b(PLACEHOLDER\w*|TODO|FIXME|TBD)\b")


def unfinished_cells(cells: list[dict]) -> list[tuple[int, str]]:
    """(index, why) of every markdown cell that is empty and every cell whose source holds a
    placeholder word."""
    found = []
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and not source.strip():
            found.append((i, "empty markdown"))
        elif m := UNFINISHED.search(source):
            found.append((i, m.group(0)))
    return found


def test_the_check_finds_a_placeholder_and_an_empty_cell():
    cells = [
        {"cell_type": "markdown", "source": ["## A title\n", "Some text."]},
        {"cell_type": "markdown", "source": ["PLACEHOLDER_06A"]},
        {"cell_type": "code", "source": ["x = 1  # TODO later"]},
        {"cell_type": "markdown", "source": ["  \n"]},
    ]
    assert unfinished_cells(cells) == [(1, "PLACEHOLDER_06A"), (2, "TODO"), (3, "empty markdown")]
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_cell_is_left_unwritten(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert not unfinished_cells(cells), f"{path.name}: unfinished cells {unfinished_cells(cells)}"
