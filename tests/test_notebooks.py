"""Every notebook in notebooks/ executes top to bottom with tiny sampler settings."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
TINY_SETTINGS = "draws = 200\ntune = 300\nchains = 2\n"


def with_tiny_settings(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Insert an override cell after the cell tagged 'parameters' (as papermill does)."""
    for index, cell in enumerate(notebook.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(TINY_SETTINGS))
            return notebook
    raise AssertionError("notebook has no cell tagged 'parameters'")


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them"
    client = NotebookClient(with_tiny_settings(notebook), timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
