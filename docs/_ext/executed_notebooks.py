"""Executed copies of notebooks/*.ipynb, shared by the test suite and the docs build.

The notebook test (tests/test_notebooks.py) executes every notebook with tiny sampler settings;
it stores the executed notebook here, keyed by the notebook, the settings and the bayescale
source, so that ``make docs`` right after ``make test`` (as in CI) shows those outputs instead
of running every fit a second time. A notebook without a current copy is executed by the docs
build itself, the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CACHE = REPO / "docs" / "_build" / ".notebooks"
#: Part of every cache key: bump it when the way notebooks are executed changes.
EXECUTION = "nbclient, inline figures"
#: Inserted after the cell tagged 'parameters' (as papermill does): seconds, not minutes.
TINY_SETTINGS = "draws = 200\ntune = 300\nchains = 2\n"


def with_tiny_settings(notebook, settings: str = TINY_SETTINGS):
    """Insert an override cell after the cell tagged 'parameters' (in place; returned)."""
    import nbformat

    for index, cell in enumerate(notebook.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(settings))
            return notebook
    raise AssertionError("notebook has no cell tagged 'parameters'")


def source_digest() -> str:
    """SHA-256 of the bayescale package source: a code change makes every copy stale."""
    digest = hashlib.sha256()
    package = REPO / "bayescale"
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".csv", ".md", ".json") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_path(notebook: Path, settings: str) -> Path:
    """Where the executed copy of ``notebook`` run with ``settings`` lives."""
    digest = hashlib.sha256()
    digest.update(Path(notebook).read_bytes())
    digest.update(settings.encode())
    digest.update(EXECUTION.encode())
    digest.update(source_digest().encode())
    return CACHE / f"{Path(notebook).stem}-{digest.hexdigest()[:16]}.ipynb"


def store(notebook: Path, settings: str, executed) -> Path:
    """Write an executed notebook (an nbformat node) as the current copy, atomically."""
    import nbformat

    target = cache_path(notebook, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{Path(notebook).stem}-*.ipynb"):
        stale.unlink(missing_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        nbformat.write(executed, out)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def execute(node, workdir: str | Path, timeout: int = 600):
    """Execute a notebook node in place, in ``workdir``, with figures shown inline.

    The kernel inherits this process's environment, and CI sets ``MPLBACKEND=Agg`` for the
    tests: in a kernel that would draw every figure off screen, and the executed notebook
    would carry none. So the kernel gets Jupyter's inline backend explicitly.
    """
    from nbclient import NotebookClient

    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        NotebookClient(node, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved
    return node


def executed(notebook: Path, settings: str = TINY_SETTINGS, timeout: int = 600) -> Path:
    """The current executed copy of ``notebook``, executing it first if there is none."""
    import nbformat

    target = cache_path(notebook, settings)
    if target.exists():
        return target
    node = with_tiny_settings(nbformat.read(notebook, as_version=4), settings)
    with tempfile.TemporaryDirectory() as workdir:
        execute(node, workdir, timeout)
    return store(notebook, settings, node)
