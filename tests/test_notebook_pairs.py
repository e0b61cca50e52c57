"""Every notebook is a jupytext pair (percent .py source + executed .ipynb) and the two are in sync."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# the course notebooks (00a_super_resolution, 00b_..., 06_...) and their worked solutions (solutions/)
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.py")) + sorted(NOTEBOOKS.glob("solutions/*.py"))
EXECUTED = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")) + sorted(NOTEBOOKS.glob("solutions/*.ipynb"))
COURSE = [nb for nb in EXECUTED if nb.parent == NOTEBOOKS]


def test_every_source_has_an_executed_notebook_and_vice_versa():
    assert {p.with_suffix("") for p in SOURCES} == {p.with_suffix("") for p in EXECUTED}


@pytest.mark.parametrize("nb", EXECUTED, ids=lambda p: p.name)
def test_pair_in_sync(nb: Path):
    """The .ipynb converted back to percent format must equal the .py source byte for byte."""
    out = subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "py:percent", "-o", "-", str(nb)],
        capture_output=True, text=True, check=True, cwd=NOTEBOOKS.parent,
    ).stdout
    src = nb.with_suffix(".py").read_text()
    assert out == src, f"{nb.name} is out of sync with {nb.stem}.py: run `.ci/execute-notebook {nb.with_suffix('.py').relative_to(NOTEBOOKS.parent)}`"


@pytest.mark.parametrize("nb", EXECUTED, ids=lambda p: p.name)
def test_notebook_is_executed_in_order(nb: Path):
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in cells]
    assert all(isinstance(n, int) for n in counts), f"{nb.name} has unexecuted cells"
    assert counts == sorted(counts), f"{nb.name} was not executed top to bottom"


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.name)
def test_notebook_has_a_rendered_attention_explorer(nb: Path):
    """Every notebook offers the explorer (issue: interactive explorer in every notebook): a cell that builds an
    ``AttentionExplorer``, is skipped by nbval's output comparison, and produced a widget view when executed."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    explorer_cells = [c for c in cells if "AttentionExplorer(" in "".join(c["source"])]
    assert explorer_cells, f"{nb.name} has no AttentionExplorer cell"
    for c in explorer_cells:
        assert "nbval-ignore-output" in c["metadata"].get("tags", []), f"{nb.name}: explorer cell not nbval-ignored"
    views = [o for c in explorer_cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    errors = [o for c in explorer_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert views and not errors, f"{nb.name}: the explorer cell did not render a widget"
