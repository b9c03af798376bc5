"""Reports: self-contained HTML and Markdown, correct headline, caveats, safe writing, and a
real render in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bayescale as bs
from bayescale import report as report_module
from bayescale.cli import main
from bayescale.report import assets_dir, build_report, fmt_flops, headline, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TARGET, BUDGET = 2.05, 1e23


class Page(HTMLParser):
    """Collects what a reader would see: headings, images, tables, links, scripts."""

    def __init__(self):
        super().__init__()
        self.images, self.captions, self.headings, self.tags = [], [], [], []
        self.links, self._in = [], None
        self.table_rows = 0
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("caption", "h2", "h1"):
            self._in = tag
        if tag == "tr":
            self.table_rows += 1
        for key in ("href", "src"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "caption":
            self.captions.append(data)
        elif self._in in ("h1", "h2"):
            self.headings.append(data)


def parse(path):
    page = Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    page.close()
    return page


def fake_backtest(fit):
    """A backtest result built from the fit's own draws (no refit): the report only reads
    ``table``, ``summary`` and ``settings``."""
    frame = fit.runs.frame
    test = frame[frame["flops"] >= frame["flops"].quantile(0.8)]
    points = test[["flops", "params", "tokens"]].reset_index(drop=True)
    from bayescale.forecast import loss_draws

    draws = loss_draws(fit, points)
    actual = test["loss"].to_numpy()
    table = points.assign(loss=actual, loss_median=np.median(draws, axis=0))
    summary = {"n_train": float(len(frame) - len(test)), "n_test": float(len(test)),
               "rmsle": float(np.sqrt(np.mean(np.log(table["loss_median"] / actual) ** 2))),
               "bias": float(np.mean(np.log(table["loss_median"] / actual))), "crps": 0.004}
    for p in (0.5, 0.9):
        lower, upper = np.quantile(draws, [(1 - p) / 2, (1 + p) / 2], axis=0)
        label = f"{100 * p:.0f}"
        table[f"loss_lower_{label}"], table[f"loss_upper_{label}"] = lower, upper
        summary[f"coverage_{label}"] = float(np.mean((lower <= actual) & (actual <= upper)))
        summary[f"width_{label}"] = float(np.mean(np.log(upper / lower)))
    return SimpleNamespace(table=table, summary=pd.Series(summary),
                           settings={"holdout_frac": 0.2})


@pytest.fixture(scope="module")
def written(chinchilla_fit, tmp_path_factory):
    """One full report (with a backtest), written once: its path and the Report it rendered."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    built = []
    original = report_module.build_report

    def keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "build_report", keep)
        write_report(chinchilla_fit, path, target=TARGET, budget=BUDGET,
                     backtest=fake_backtest(chinchilla_fit))
    return path, built[0]


@pytest.fixture(scope="module")
def html_report(written):
    return written[0]


# Figures at low resolution where a test checks only the writing, not the pictures.
FAST = {"dpi": 30}


# -- content -------------------------------------------------------------------------------

def test_html_is_self_contained_with_decodable_pngs(html_report):
    page = parse(html_report)
    names = ["fit", "risk", "allocation", "isoflop", "posterior", "backtest"]
    assert len(page.images) == len(names)
    for image in page.images:
        src = image["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.verify()
        width, height = Image.open(io.BytesIO(data)).size
        assert width >= 600 and height >= 400
        assert image["alt"]
    # nothing to fetch: no external links, stylesheets or scripts
    assert all(link.startswith("data:") for link in page.links)
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in html_report.read_text() and "https://" not in html_report.read_text()


def test_html_has_every_section_and_table(html_report):
    page = parse(html_report)
    assert page.headings[0].startswith("Scaling-law report: chinchilla law on 80 runs")
    for heading in ("Data", "Model", "Diagnostics", "Parameters", "Forecast", "Budget risk",
                    "Compute-optimal allocation", "Posterior", "Backtest", "Caveats"):
        assert heading in page.headings
    captions = " | ".join(page.captions)
    for caption in ("Runs the law was fitted to", "Priors", "Convergence of the sampled parameters",
                    "Posterior of L(N, D)", "Forecast loss (nats/token) at each budget",
                    "P(loss ≤ target) by target", "Compute (FLOPs) needed to reach each target",
                    "How to split each budget", "Coverage of the forecast bands"):
        assert caption in captions
    assert page.table_rows > 40


def test_headline_numbers_match_the_analysis(chinchilla_fit, html_report):
    p = chinchilla_fit.prob_below(TARGET, flops=BUDGET)
    need = chinchilla_fit.compute_to_reach(TARGET, prob=0.8)
    expected = (f"P(loss ≤ 2.05 at 1e23 FLOPs) = {p:.2f}; 80% confidence needs "
                f"{fmt_flops(need)} FLOPs.")
    assert 0.01 < p < 0.99  # the test setting keeps the headline informative
    assert headline(chinchilla_fit, target=TARGET, budget=BUDGET) == expected
    assert expected in parse(html_report).text


def test_headline_variants(chinchilla_fit):
    budget_only = headline(chinchilla_fit, budget=1e23)
    row = chinchilla_fit.forecast(flops=[1e23], prob=0.9).iloc[0]
    assert budget_only == (f"Forecast loss at 1e23 FLOPs: {row['loss_median']:.3f} (90% band "
                           f"{row['loss_lower']:.3f} – {row['loss_upper']:.3f}).")
    certain = headline(chinchilla_fit, target=5.0, budget=1e22)
    assert certain.startswith("P(loss ≤ 5 at 1e22 FLOPs) > 0.99;")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hopeless = headline(chinchilla_fit, target=1.0)
    assert hopeless == ("80% confidence is out of reach at any compute (too much posterior "
                        "mass has the irreducible loss E above 1).")


def test_fmt_flops():
    assert fmt_flops(3e23) == "3e23"
    assert fmt_flops(5.23e23) == "5.2e23"
    assert fmt_flops(1.5e-3) == "0.0015"
    assert fmt_flops(2e-7) == "2e-7"
    assert fmt_flops(float("inf")) == "∞ (unreachable)"


def test_tables_show_the_analysis_numbers(chinchilla_fit, written):
    report = written[1]
    tables = report.tables
    forecast = next(t for c, t in tables.items() if c.startswith("Forecast loss"))
    # whole decades up to 100x the largest run (1.8e23 FLOPs), plus the budget asked about
    budgets = [1e23, 1e24, 1e25]
    assert list(forecast["compute C (FLOPs)"]) == ["1e23", "1e24", "1e25"]
    expected = chinchilla_fit.forecast(flops=sorted(budgets), prob=0.9)
    assert list(forecast["median loss"]) == [f"{v:.4f}" for v in expected["loss_median"]]
    risk = next(t for c, t in tables.items() if c.startswith("P(loss ≤ target)"))
    assert list(risk["target loss"]) == ["2.01", "2.03", "2.05", "2.07", "2.09"]
    grid = chinchilla_fit.risk_table(targets=[2.05], budgets=[BUDGET])
    row = risk[risk["target loss"] == "2.05"].iloc[0]
    assert row["1e23 FLOPs"] == f"{grid.iloc[0, 0]:.2f}"
    parameters = next(t for c, t in tables.items() if c.startswith("Posterior of"))
    assert list(parameters["parameter"]) == list(chinchilla_fit.summary().index)
    coverage = next(t for c, t in tables.items() if c.startswith("Coverage"))
    assert list(coverage["band"]) == ["50%", "90%"]
    assert [b.name for b in report.blocks if b.kind == "figure"] == [
        "fit", "risk", "allocation", "isoflop", "posterior", "backtest"]


def test_caveats_list_the_warnings_raised(compute_fit):
    # A broken fit: one chain of alpha moved up by half, so the chains disagree (R-hat fails).
    posterior = compute_fit.posterior.copy(deep=True)
    posterior["alpha"].values[0] *= 1.5
    broken = bs.ScalingFit(law=compute_fit.law, priors=compute_fit.priors,
                           likelihood=compute_fit.likelihood, runs=compute_fit.runs,
                           reference=compute_fit.reference, posterior=posterior,
                           sample_stats=compute_fit.sample_stats, settings=compute_fit.settings)
    largest = compute_fit.runs.frame["flops"].max()
    report = build_report(broken, budgets=[largest * 1e3], dpi=30)
    text = " ".join(report.caveats)
    assert "Extrapolation: the largest budget here" in text and "3.0 decades" in text
    assert "ExtrapolationWarning raised while computing this report: forecasting 3.0 decades" in text
    problems = broken.diagnostics().problems
    assert problems[0].startswith("R-hat up to")
    for problem in problems:
        assert f"ConvergenceWarning raised while computing this report: {problem}" in text
    verdict = next(b for b in report.blocks if b.kind == "callout")
    assert verdict.style == "bad" and verdict.text.startswith("Not reliable yet: R-hat up to")
    # each warning once, however many tables raised it
    assert len(report.caveats) == len(set(report.caveats))


def test_design_findings_are_their_own_callout(compute_fit, monkeypatch):
    original = bs.ScalingFit.diagnostics
    note = "all runs share one tokens/param ratio, so alpha and beta are not separately identified."
    monkeypatch.setattr(bs.ScalingFit, "diagnostics",
                        lambda self: dataclasses.replace(original(self), design=[note]))
    report = build_report(compute_fit, dpi=30)
    callouts = [b for b in report.blocks if b.kind == "callout"]
    assert "Data design" not in callouts[0].text  # the sampler's verdict stands alone
    assert (callouts[1].style, callouts[1].text) == ("warn", f"Data design: {note}")
    assert f"Data design: {note}" in report.caveats


def test_backtest_undercoverage_is_a_caveat(compute_fit):
    summary = pd.Series({"n_train": 30.0, "n_test": 10.0, "rmsle": 0.01, "bias": -0.01,
                         "crps": 0.005, "coverage_50": 0.1, "width_50": 0.01,
                         "coverage_90": 0.6, "width_90": 0.03})
    caveats = report_module._caveats(compute_fit, [1e21], [], SimpleNamespace(summary=summary))
    assert ("Backtest: the 90% bands covered only 60% of the held-out runs. On these data the "
            "bands are too narrow; read them as optimistic.") in caveats
    honest = summary.copy()
    honest[["coverage_50", "coverage_90"]] = [0.5, 0.88]
    caveats = report_module._caveats(compute_fit, [1e21], [], SimpleNamespace(summary=honest))
    assert not any(c.startswith("Backtest") for c in caveats)


def test_compute_law_report_has_no_allocation(compute_fit, tmp_path):
    path = write_report(compute_fit, tmp_path / "compute.html", target=2.6, budget=1e22)
    page = parse(path)
    assert "Compute-optimal allocation" not in page.headings
    assert "Budget risk" in page.headings
    assert len(page.images) == 3  # fit, risk, posterior


# -- Markdown ------------------------------------------------------------------------------

def test_markdown_report_with_png_folder(compute_fit, tmp_path):
    path = write_report(compute_fit, tmp_path / "report.md", target=2.6)
    text = path.read_text(encoding="utf-8")
    folder = tmp_path / "report_files"
    assert assets_dir(path) == folder
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked == ["report_files/fit.png", "report_files/risk.png", "report_files/posterior.png"]
    for link in linked:
        assert (tmp_path / link).read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in folder.iterdir()) == ["fit.png", "posterior.png", "risk.png"]
    assert text.startswith("# Scaling-law report: compute law on 40 runs")
    assert "| quantity | unit | min | median | max | distinct values |" in text
    assert "| :--- | :--- | ---: | ---: | ---: | ---: |" in text
    assert "## Caveats" in text
    # nothing left over from the atomic writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "report_files"]


def test_markdown_refuses_to_replace_figure_folder(compute_fit, tmp_path):
    (tmp_path / "report_files").mkdir()
    with pytest.raises(FileExistsError, match="report_files"):
        write_report(compute_fit, tmp_path / "report.md", **FAST)
    assert not (tmp_path / "report.md").exists()
    write_report(compute_fit, tmp_path / "report.md", overwrite=True, **FAST)
    assert len(list((tmp_path / "report_files").iterdir())) == 2


# -- safe writing --------------------------------------------------------------------------

def test_never_overwrites_unless_asked(compute_fit, tmp_path):
    path = tmp_path / "report.html"
    path.write_text("the lead's annotated copy")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        write_report(compute_fit, path, **FAST)
    assert path.read_text() == "the lead's annotated copy"
    write_report(compute_fit, path, overwrite=True, **FAST)
    assert path.read_text().startswith("<!DOCTYPE html>")
    mode = path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # shareable like any new file, not private like a temp file


def test_failed_render_leaves_old_report_intact(compute_fit, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old report")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "render_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(compute_fit, path, overwrite=True, **FAST)
    assert path.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_bad_paths_and_numbers(compute_fit, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.html .* or \.md"):
        write_report(compute_fit, tmp_path / "report.pdf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(compute_fit, tmp_path / "missing" / "report.html")
    with pytest.raises(ValueError, match="target must be a finite positive number"):
        write_report(compute_fit, tmp_path / "report.html", target=-2.0)
    assert list(tmp_path.iterdir()) == []


def test_fit_report_method(compute_fit, tmp_path):
    path = compute_fit.report(tmp_path / "r.html", budget=1e22, title="Budget review", **FAST)
    assert parse(path).headings[0] == "Budget review"


# -- command line --------------------------------------------------------------------------

def test_cli_report(compute_fit, tmp_path, capsys):
    saved = tmp_path / "fit.nc"
    compute_fit.save(saved)
    out = tmp_path / "report.html"
    args = ["report", str(saved), "--target", "2.6", "--budget", "1e22", "-o", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == headline(compute_fit, target=2.6, budget=1e22)
    assert len(parse(out).images) == 3
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(["report", str(saved), "-o", str(tmp_path / "r.pdf")]) == 2
    assert "must end in .html" in capsys.readouterr().err


# -- a real browser ------------------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium; installed with apt-get when missing and we are root. A machine
    where it cannot be installed fails this test rather than skipping it silently."""
    found = find_chromium()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                       capture_output=True, timeout=900)
        found = find_chromium()
    if found is None:
        pytest.fail("headless Chromium is needed to check the HTML report renders: install "
                    "Debian's `chromium` package (apt-get install chromium)")
    return found


def run_chromium(binary, *args, timeout=180):
    with tempfile.TemporaryDirectory() as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                   f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_report_renders_in_headless_chromium(chromium, html_report, tmp_path):
    # A copy with a probe script: after load, record every image's decoded width in the DOM.
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', function () {"
              "var widths = Array.prototype.map.call(document.images, function (i) {"
              "return i.complete ? i.naturalWidth : -1; });"
              "document.body.setAttribute('data-image-widths', widths.join(','));"
              "});</script>")
    probe.write_text(html_report.read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    result = run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'data-image-widths="([^"]*)"', result.stdout)
    assert found, f"Chromium did not run the page: {result.stderr[-2000:]}"
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) == 6 and all(w > 0 for w in widths), widths

    # And the page itself (no probe) paints: a screenshot with figures is far from blank.
    shot = tmp_path / "shot.png"
    result = run_chromium(chromium, f"--screenshot={shot}", "--window-size=1200,2400",
                          html_report.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    not_white = np.any(pixels < 245, axis=2).mean()
    colourful = (np.ptp(pixels, axis=2) > 60).mean()  # bands, run colours: only figures have these
    assert not_white > 0.05, not_white
    assert colourful > 0.005, colourful


def test_write_report_is_exported():
    assert bs.write_report is write_report


def test_many_warnings_of_one_kind_are_counted_not_listed(compute_fit):
    caught = [warnings.WarningMessage(bs.UnreachableTargetWarning(f"target {t} is out of reach"),
                                      bs.UnreachableTargetWarning, "risk.py", 1)
              for t in (1.1, 1.2, 1.3, 1.4, 1.5, 1.1)]
    caveats = report_module._caveats(compute_fit, [1e21], caught)
    listed = [c for c in caveats if c.startswith("UnreachableTargetWarning raised")]
    assert listed == [f"UnreachableTargetWarning raised while computing this report: target "
                      f"{t} is out of reach" for t in (1.1, 1.2, 1.3)]
    assert ("… and 2 more UnreachableTargetWarnings like these (the tables above show every "
            "case).") in caveats
