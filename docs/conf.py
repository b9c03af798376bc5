"""Sphinx configuration of the bayescale documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

import bayescale

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import bayescale_docs  # noqa: E402

project = "bayescale"
author = "the bayescale developers"
copyright = "the bayescale developers (MIT licence)"
release = bayescale.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "sphinxarg.ext",
    "bayescale_docs",  # _ext/: API index, laws page and executed notebooks, from the package
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# API reference: autosummary stubs from api/index.rst (written by bayescale_docs first).
autosummary_generate = ["api/index.rst"]
autosummary_imported_members = True
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # the class template lists members with autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# MyST and notebooks: executed copies come from _ext/executed_notebooks.py, never re-run here.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True

html_theme = "pydata_sphinx_theme"
html_title = f"bayescale {release}"
# MathJax from the jupyter-server-mathjax package, copied into the site (_static/mathjax/), so
# pages with formulas work offline and fetch nothing from a CDN.
html_static_path = ["_static", str(bayescale_docs.mathjax_static())]
html_css_files = ["custom.css"]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# MathJax 2's own configuration (myst's automatic one is MathJax 3's): typeset only the math
# that Sphinx and myst mark, never a stray "$" in the text.
myst_update_mathjax = False
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                               "processClass": "math|output_area",
                               "ignoreClass": "tex2jax_ignore|mathjax_ignore|document"}}
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
