"""The built documentation site (``make docs``): links resolve, and pages render in Chromium.

``make docs`` builds docs/_build/html and then runs this file with BAYESCALE_DOCS_BUILT=1, so
there a missing build fails. In a plain ``make test`` before any docs build the tests skip,
saying why. Chromium is Debian's package; without it the rendering tests skip locally and
fail in CI (``.ci/run`` installs it and sets BAYESCALE_REQUIRE_CHROMIUM=1).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

HTML = Path(__file__).resolve().parent.parent / "docs" / "_build" / "html"
API_PAGE = HTML / "api" / "generated" / "bayescale.ScalingFit.html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def site() -> Path:
    if not (HTML / "index.html").exists():
        if os.environ.get("BAYESCALE_DOCS_BUILT"):
            pytest.fail(f"the docs build left no {HTML / 'index.html'}")
        pytest.skip("the docs are not built: `make docs` builds them and then runs this test")
    return HTML


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("BAYESCALE_REQUIRE_CHROMIUM") or os.environ.get("CI"):
        pytest.fail("headless Chromium is needed to check the docs render: apt-get install "
                    "chromium (CI must have it; .ci/run installs it)")
    pytest.skip("headless Chromium is not installed here (apt-get install chromium); "
                "CI installs it and runs this test")


class _Links(HTMLParser):
    """Every href/src of a page, and every id it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "name" in attrs:
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.refs.append((tag, attrs[key]))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_every_internal_link_and_image_resolves(site):
    # Every built page (the theme's template fragments in _static/ are not pages).
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)
    assert len(pages) > 40, f"only {len(pages)} pages built"
    parsed = {page: _parse(page) for page in pages}
    missing, bad_anchor, external = [], [], set()
    for page, links in parsed.items():
        for tag, ref in links.refs:
            parts = urlsplit(ref)
            if parts.scheme in ("http", "https"):
                if tag != "a":  # a resource fetched from the network, not a link to follow
                    external.add(f"{page.relative_to(site)}: {tag} {ref}")
                continue
            if parts.scheme in ("mailto", "data", "javascript") or parts.netloc:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                missing.append(f"{page.relative_to(site)}: {tag} {ref}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    bad_anchor.append(f"{page.relative_to(site)}: {ref}")
    # Nothing machine-specific leaks into the pages (checkout paths, temporary folders).
    leaks = [str(page.relative_to(site)) for page in pages
             if str(HTML.parents[2]) in (text := page.read_text(encoding="utf-8"))
             or re.search(r"/tmp/tmp\w+/", text)]
    assert not leaks, f"machine paths in {leaks[:10]}"
    assert not missing, f"{len(missing)} links to missing files, e.g. {missing[:10]}"
    assert not bad_anchor, f"{len(bad_anchor)} links to missing anchors, e.g. {bad_anchor[:10]}"
    # The pages load nothing from the network (plain links to elsewhere are fine).
    assert not external, sorted(external)[:10]


def test_benchmark_tables_are_tables(site):
    # The calibration tables (included Markdown) and the CSVs of benchmarks/results
    # (the bench-table directive) render as HTML tables with the benchmark's rows.
    trust = (site / "trust.html").read_text(encoding="utf-8")
    assert trust.count("<table") >= 5, trust.count("<table")
    assert "<td><p>point+boot+resid</p></td>" in trust
    assert "list-table" not in trust
    performance = (site / "performance.html").read_text(encoding="utf-8")
    assert "<td><p>bayescale warm</p></td>" in performance


def test_api_reference_covers_every_public_name(site):
    import bayescale as bs

    generated = site / "api" / "generated"
    for name in bs.__all__:
        if name != "__version__":
            assert (generated / f"bayescale.{name}.html").exists(), name
    text = API_PAGE.read_text(encoding="utf-8")
    for method in ("forecast", "prob_below", "compute_to_reach", "optimal_allocation"):
        assert f'id="bayescale.ScalingFit.{method}"' in text, method


def test_notebook_pages_carry_their_figures(site):
    for name in ("01_quickstart", "02_budget_risk", "03_trust_the_forecast"):
        page = site / "notebooks" / f"{name}.html"
        images = [ref for tag, ref in _parse(page).refs if tag == "img"]
        assert images, f"{name} has no figures"
        assert "Traceback" not in page.read_text(encoding="utf-8"), name


def _run_chromium(binary: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                   "--allow-file-access-from-files", f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


_PROBE = """<script>window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return i.complete ? i.naturalWidth : -1; });
  var sheets = Array.prototype.filter.call(document.querySelectorAll('link[rel=stylesheet]'),
    function (l) { return !l.sheet; }).length;
  var nav = document.querySelectorAll('nav a, .bd-sidebar a').length;
  document.body.setAttribute('data-probe',
    [images.join(' '), sheets, nav, getComputedStyle(document.body).fontFamily].join('|'));
});</script>"""


@pytest.mark.parametrize("page", [HTML / "index.html", API_PAGE,
                                  HTML / "notebooks" / "02_budget_risk.html", HTML / "model.html"],
                         ids=["index", "api-ScalingFit", "notebook-02", "model"])
def test_page_renders_in_headless_chromium(site, chromium, page):
    # A probe copy beside the page (so its relative links still work): after load, record each
    # image's decoded width, the stylesheets that failed to load, the navigation links, the font.
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    try:
        result = _run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom",
                               probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"Chromium did not run the page: {result.stderr[-2000:]}"
    widths, failed_sheets, nav, font = found.group(1).split("|")
    widths = [int(w) for w in widths.split()]
    assert all(w > 0 for w in widths), f"images that did not load: {widths}"
    assert int(failed_sheets) == 0, "a stylesheet did not load"
    assert int(nav) >= 5, "no navigation: the theme did not render"
    assert "serif" in font.lower() or "sans" in font.lower(), font
    if page.name == "02_budget_risk.html":
        assert len(widths) >= 2, "the notebook's figures are missing"
    if 'class="math' in page.read_text(encoding="utf-8"):
        assert "MathJax_Display" in result.stdout, "MathJax (served from _static) typeset nothing"
    if page not in (HTML / "index.html", API_PAGE):
        return

    # The page itself paints: a screenshot far from blank (kept for a human to look at).
    shots = HTML.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    shot = shots / f"{page.stem}.png"
    shot.unlink(missing_ok=True)
    result = _run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,1600",
                           page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    not_white = np.any(pixels < 245, axis=2).mean()
    assert not_white > 0.03, f"{shot} is almost blank ({not_white:.3f} non-white)"
