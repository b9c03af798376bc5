"""Every notebook in notebooks/ executes top to bottom with tiny sampler settings."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _executed_notebooks():
    """docs/_ext/executed_notebooks.py, imported by path (docs/ is not a package): the tiny
    settings and the store of executed copies that the docs build reuses."""
    import importlib.util

    where = Path(__file__).resolve().parent.parent / "docs" / "_ext" / "executed_notebooks.py"
    spec = importlib.util.spec_from_file_location("executed_notebooks", where)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXECUTED = _executed_notebooks()
TINY_SETTINGS = _EXECUTED.TINY_SETTINGS
with_tiny_settings = _EXECUTED.with_tiny_settings


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them"
    # Raises CellExecutionError, naming the cell, on any error.
    _EXECUTED.execute(with_tiny_settings(notebook), tmp_path, timeout=600)
    # Keep the executed copy for the docs build (docs/_ext/executed_notebooks.py): CI builds
    # the docs right after the tests and shows these outputs instead of running the fits again.
    _EXECUTED.store(path, TINY_SETTINGS, notebook)

