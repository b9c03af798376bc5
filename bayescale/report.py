"""Reports for people who will not open a notebook: one self-contained HTML file, or Markdown.

A report is built once as a list of blocks (headings, paragraphs, tables, figures, lists) from
the tables the analysis makes, then rendered either as HTML — one file, CSS inline, figures
embedded as base64 PNG, nothing fetched from the network — or as Markdown with the figures in
a folder beside it (``report.md`` → ``report_files/``). Files are written atomically and never
replace an existing report unless ``overwrite=True``.

Warnings raised while the report is computed (extrapolation far past the data, failed
convergence diagnostics, an optimum outside the observed range) are captured and listed under
"Caveats", so they reach the reader instead of a terminal nobody looks at.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import html
import io
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .exceptions import ArgumentError, ConvergenceWarning, DesignWarning, ExtrapolationWarning

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["write_report", "build_report", "Report", "render_html", "render_markdown",
           "assets_dir", "report_format", "headline", "fmt_flops", "REPORT_SUFFIXES"]

REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}
#: Confidence levels whose compute-to-reach the report lists.
REACH_PROBS = (0.5, 0.8, 0.95)
_DPI = 120
#: Distinct warnings of one kind listed under Caveats before the rest are counted.
_MAX_PER_KIND = 3


# -- number formatting ---------------------------------------------------------------------

def fmt_flops(value: float, digits: int = 2) -> str:
    """Compact scientific notation for large counts: 3e23, 5.2e23, 1.4e12; "∞" for inf."""
    value = float(value)
    if math.isinf(value):
        return "∞ (unreachable)" if value > 0 else "−∞"
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}"
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", text)


def _fmt_loss(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else "n/a"


def _fmt_band(lower: float, upper: float, fmt=_fmt_loss) -> str:
    return f"{fmt(lower)} – {fmt(upper)}"


def _fmt_prob(value: float) -> str:
    """Probabilities to two decimals, but never round a near-certainty to exactly 0 or 1."""
    if not np.isfinite(value):
        return "n/a"
    if 0 < value < 0.005:
        return "< 0.01"
    if 0.995 < value < 1:
        return "> 0.99"
    return f"{value:.2f}"


def _fmt_fixed(value: float, spec: str) -> str:
    """A diagnostic (R-hat, ESS) or "n/a" where it is not defined (one chain, few draws)."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def _fmt_param(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    if abs(value) >= 1e4:
        return fmt_flops(value, 3)
    return f"{value:.4g}"


# -- the report as data --------------------------------------------------------------------

@dataclass
class Block:
    """One element of a report: kind is heading, paragraph, table, figure, list or callout."""

    kind: str
    text: str = ""
    level: int = 2
    table: pd.DataFrame | None = None
    items: list[str] = field(default_factory=list)
    name: str = ""
    png: bytes = b""
    style: str = ""


@dataclass
class Report:
    """A report ready to render: title, headline sentence and blocks in reading order."""

    title: str
    headline: str
    blocks: list[Block]
    caveats: list[str]

    @property
    def figures(self) -> dict[str, bytes]:
        """Figure name → PNG bytes."""
        return {b.name: b.png for b in self.blocks if b.kind == "figure"}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Table caption → table (strings, as shown)."""
        return {b.text: b.table for b in self.blocks if b.kind == "table" and b.table is not None}


class _Builder:
    def __init__(self, dpi: int) -> None:
        self.blocks: list[Block] = []
        self.dpi = dpi

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text=text, level=level))

    def paragraph(self, text: str, style: str = "") -> None:
        self.blocks.append(Block("paragraph", text=text, style=style))

    def callout(self, text: str, style: str = "") -> None:
        self.blocks.append(Block("callout", text=text, style=style))

    def table(self, frame: pd.DataFrame, caption: str) -> None:
        self.blocks.append(Block("table", text=caption, table=frame.astype(str)))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(Block("list", items=list(items)))

    def figure(self, fig: "Figure", name: str, caption: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi, metadata={"Software": None})
        self.blocks.append(Block("figure", text=caption, name=name, png=buffer.getvalue()))


def _figure(figsize: tuple[float, float] = (8.0, 5.0)) -> "Figure":
    # A bare Figure (no pyplot): no GUI backend, no global state, freed with the object.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


# -- the headline --------------------------------------------------------------------------

def _out_of_reach_reason(fit: "ScalingFit", target: float) -> str:
    """Why no compute reaches ``target``: E, or (a law with extra inputs) the data held."""
    held = getattr(fit, "held_inputs", None) or {}
    if fit.law.extra_inputs:
        values = ", ".join(f"{name} = {held[name]:g}" for name in fit.law.extra_inputs
                           if name in held)
        return (f"with {values or 'its extra inputs'} held fixed the law's loss levels off "
                f"above {target:g}")
    return f"too much posterior mass has the irreducible loss E above {target:g}"


def headline(fit: "ScalingFit", target: float | None = None, budget: float | None = None,
             prob: float = 0.8) -> str:
    """The one sentence a lead reads first.

    With a target and a budget: ``"P(loss ≤ 2.05 at 3e23 FLOPs) = 0.71; 80% confidence needs
    5.2e23 FLOPs."`` With a budget only: the forecast median and 90% band there. With a
    target only: the compute needed at ``prob`` confidence. A :class:`~bayescale.Budget`
    as ``budget`` puts the sentence in its units (:func:`_budget_headline`).
    """
    from .budget import is_budget

    if is_budget(budget):
        return _budget_headline(fit, target, budget, prob)
    parts = []
    if target is not None and budget is not None:
        p = _fmt_prob(float(fit.prob_below(target, flops=budget)))
        relation = "" if p[0] in "<>" else "= "
        parts.append(f"P(loss ≤ {target:g} at {fmt_flops(budget)} FLOPs) {relation}{p}")
    if target is not None:
        need = float(fit.compute_to_reach(target, prob=prob))
        level = f"{100 * prob:.0f}%"
        if math.isfinite(need):
            parts.append(f"{level} confidence needs {fmt_flops(need)} FLOPs")
        else:
            parts.append(f"{level} confidence is out of reach at any compute "
                         f"({_out_of_reach_reason(fit, target)})")
    elif budget is not None:
        table = fit.forecast(flops=[budget], prob=0.9)
        row = table.iloc[0]
        parts.append(f"Forecast loss at {fmt_flops(budget)} FLOPs: {row['loss_median']:.3f} "
                     f"(90% band {row['loss_lower']:.3f} – {row['loss_upper']:.3f})")
    if not parts:
        return (f"The {fit.law.name} law fitted to {len(fit.runs)} runs; pass a target loss "
                "and a budget for the risk headline.")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def trust_line(fit: "ScalingFit", flops: float, prob: float = 0.9) -> str:
    """How far to trust a forecast at ``flops``: its extrapolation ratio and the share of the
    band that is the law's own error (the discrepancy δ, see :mod:`bayescale.discrepancy`).

    The ratio is 10^d, d the decades past the largest fitted compute, N or D (the budget
    trained at the posterior-median split); the share is 1 − (w₀ / w)², w and w₀ the widths
    (log upper/lower) of the ``prob`` band of one run's loss with and without δ: roughly the
    part of the band's variance that comes from the law being wrong past the data.
    """
    from .forecast import resolve_points

    point = resolve_points(fit, flops=[flops])
    discrepancy = getattr(fit, "discrepancy", None)
    log_x = {n: np.log(point[n].to_numpy(dtype=np.float64)) for n in ("flops", "params", "tokens")
             if point[n].notna().all()}
    if discrepancy is None:
        from .discrepancy import distance_decades, fitted_log_max

        decades = float(distance_decades(log_x, fitted_log_max(fit.runs))[0])
    else:
        decades = float(discrepancy.distance(log_x)[0])
    if decades <= 0:
        return "inside the fitted range (the runs check the law here)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = fit.forecast(flops=[flops], prob=prob)
        narrow = fit.with_discrepancy(None).forecast(flops=[flops], prob=prob)
    w = float(np.log(wide["loss_upper"] / wide["loss_lower"]).iloc[0])
    w0 = float(np.log(narrow["loss_upper"] / narrow["loss_lower"]).iloc[0])
    share = 0.0 if w <= 0 else max(0.0, 1.0 - (w0 / w) ** 2)
    ratio = float(flops) / float(fit.runs.frame["flops"].max())
    where = f"{ratio:.3g}x the largest run's compute"
    if 10 ** decades > 1.05 * max(ratio, 1.0):
        where += f", {10 ** decades:.3g}x past the fitted N or D"
    return (f"{where}; discrepancy {100 * share:.0f}% of the {100 * prob:.0f}% band "
            "(the law's own error past the data)")


def _budget_headline(fit: "ScalingFit", target: float | None, budget: Any, prob: float) -> str:
    """The headline in the budget's units: ``"P(loss ≤ 2.05 for $5M) = 0.83; 80% confidence
    needs $3.1M, 41 days on 1,024 chips."`` and what the budget buys."""
    from .budget import _fmt_flops, _fmt_unit, fmt_price

    if len(budget) != 1:
        raise ValueError(f"the report's budget is one amount, got {len(budget)}")
    hw, unit = budget.hardware, budget.unit
    given = _fmt_unit(float(budget.amount[0]), unit, hw)
    parts = []
    if target is not None:
        p = _fmt_prob(float(fit.prob_below(target, budget)))
        relation = "" if p[0] in "<>" else "= "
        parts.append(f"P(loss ≤ {target:g} for {given}) {relation}{p}")
        primary = (unit if unit != "flops" or hw is None
                   else "usd" if hw.price_per_hour is not None else "gpu_hours")
        units = [primary] + [extra for extra, known in
                             (("usd", hw is not None and hw.price_per_hour),
                              ("days", hw is not None and hw.chips))
                             if known and extra != primary]
        need = fit.compute_to_reach(target, prob, units=units, hardware=hw)
        needed = (need if isinstance(need, pd.DataFrame)
                  else pd.DataFrame({units[0]: [need]}))
        level = f"{100 * prob:.0f}%"
        if math.isfinite(float(needed[units[0]].iloc[0])):
            amounts = ", ".join(_fmt_unit(float(needed[u].iloc[0]), u, hw) for u in units)
            parts.append(f"{level} confidence needs {amounts}")
        else:
            parts.append(f"{level} confidence is out of reach at any compute "
                         f"({_out_of_reach_reason(fit, target)})")
    else:
        row = fit.forecast(budget, prob=0.9).iloc[0]
        parts.append(f"Forecast loss for {given}: {row['loss_median']:.3f} "
                     f"(90% band {row['loss_lower']:.3f} – {row['loss_upper']:.3f})")
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if hw is not None and unit != "flops":
        low, high = budget.flops_range()
        bought = (f"{_fmt_flops(low[0])}–{_fmt_flops(high[0])}" if budget.uncertain
                  else _fmt_flops(float(low[0])))
        price = f", {fmt_price(hw.price_per_hour)} per chip-hour" if hw.price_per_hour else ""
        text += (f" ({given} buys {bought} FLOPs on {hw.name}"
                 f" at {_fmt_mfu(hw)}{price}.)")
    elif hw is not None:
        price = f", {fmt_price(hw.price_per_hour)} per chip-hour" if hw.price_per_hour else ""
        text += f" (Costs on {hw.name} at {_fmt_mfu(hw)}{price}.)"
    return text


def _fmt_mfu(hardware: Any) -> str:
    if not hardware.uncertain:
        return f"{100 * hardware.median_utilization:.3g}% MFU"
    low, high = hardware.utilization_quantile(0.0), hardware.utilization_quantile(1.0)
    if math.isfinite(low) and math.isfinite(high):
        return f"{100 * low:.3g}–{100 * high:.3g}% MFU"
    return f"median {100 * hardware.median_utilization:.3g}% MFU"


# -- sections ------------------------------------------------------------------------------

def _default_budgets(fit: "ScalingFit", budget: float | None) -> list[float]:
    """Whole decades from the largest run to two decades past it, plus the budget asked about."""
    largest = float(fit.runs.frame["flops"].max())
    first = math.ceil(math.log10(largest))
    last = math.floor(math.log10(largest * 100 * 1.0000001))
    values = {float(f"1e{k}") for k in range(first, max(first, last) + 1)}
    if budget is not None:
        values.add(float(budget))
    return _unique(values)


def _unique(values: Any) -> list[float]:
    """Sorted distinct values, treating numbers equal to 12 digits as one (1e23 vs 10.0**23)."""
    return sorted({float(f"{float(v):.12g}") for v in values})


def _default_targets(target: float) -> list[float]:
    """The target and neighbours about 1% and 2% either side: how fast the odds move."""
    # Enough decimals that a small-scale target (2e-5) keeps distinct neighbours.
    decimals = max(2, len(f"{target:g}".partition(".")[2]), 2 - math.floor(math.log10(target)))
    return sorted({target, *(round(target * f, decimals) for f in (0.98, 0.99, 1.01, 1.02))})


def _data_section(b: _Builder, fit: "ScalingFit") -> None:
    frame = fit.runs.frame
    b.heading("Data")
    b.paragraph(f"{len(frame)} training runs from {fit.runs.source}. Compute spans "
                f"{fmt_flops(frame['flops'].min())} to {fmt_flops(frame['flops'].max())} FLOPs "
                f"({math.log10(frame['flops'].max() / frame['flops'].min()):.1f} decades); "
                f"final loss {frame['loss'].min():.3f} to {frame['loss'].max():.3f} nats/token.")
    rows = []
    for column, name, unit in (("params", "model size N", "parameters"),
                               ("tokens", "training tokens D", "tokens"),
                               ("flops", "compute C", "FLOPs"),
                               ("loss", "final loss L", "nats/token")):
        values = frame[column]
        if not np.isfinite(values).all():
            continue
        fmt = _fmt_loss if column == "loss" else fmt_flops
        rows.append({"quantity": name, "unit": unit, "min": fmt(values.min()),
                     "median": fmt(values.median()), "max": fmt(values.max()),
                     "distinct values": str(values.nunique())})
    b.table(pd.DataFrame(rows), "Runs the law was fitted to")


_LIKELIHOODS = {
    "student_t": "Student-t on log loss (robust: an outlying run pulls the fit less, like the "
                 "Huber loss of Hoffmann et al.)",
    "normal": "Normal on log loss",
}
# The noise parameters' meanings; each law declares its own (ScalingLaw.meanings).
_PRIOR_MEANING = {
    "sigma": "run-to-run noise σ on log loss",
    "nu": "Student-t degrees of freedom ν",
}


def _model_section(b: _Builder, fit: "ScalingFit") -> None:
    b.heading("Model")
    b.paragraph(f"Law: {fit.law.formula} ({fit.law.name}); loss in nats/token, N in "
                "parameters, D in tokens, C in FLOPs. Likelihood: "
                f"{_LIKELIHOODS.get(fit.likelihood, fit.likelihood)}.")
    rows = []
    for name, prior in fit.priors.items():
        args = ", ".join(f"{k}={v:.3g}" for k, v in prior.params.items())
        rows.append({"parameter": name, "prior": f"{prior.dist}({args})",
                     "meaning": fit.law.meanings().get(name) or _PRIOR_MEANING.get(name, "")})
    b.table(pd.DataFrame(rows), "Priors (sampled parameters; the paper's A, B, E are derived)")
    s = fit.settings
    seconds = s.get("seconds")
    timing = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    b.paragraph(f"Sampler: {s.get('sampler', 'NUTS')}, {s.get('chains')} chains × "
                f"{s.get('draws')} draws after {s.get('tune')} tuning steps, random seed "
                f"{s.get('random_seed')}{timing}.")


def _diagnostics_section(b: _Builder, fit: "ScalingFit") -> None:
    diagnostics = fit.diagnostics()
    b.heading("Diagnostics")
    # The sampler's verdict and what the runs cannot support are separate findings: a fit
    # can converge perfectly on runs that cannot pin the law down.
    design = list(getattr(diagnostics, "design", []))
    sampler = dataclasses.replace(diagnostics, design=[]) if design else diagnostics
    b.callout(sampler.verdict(), style="ok" if diagnostics.ok else "bad")
    for note in design:
        b.callout(f"Data design: {note}", style="warn")
    table = diagnostics.table
    rows = [{"parameter": name, "R-hat": _fmt_fixed(row["r_hat"], ".3f"),
             "ESS bulk": _fmt_fixed(row["ess_bulk"], ".0f"),
             "ESS tail": _fmt_fixed(row["ess_tail"], ".0f")}
            for name, row in table.iterrows()]
    b.table(pd.DataFrame(rows), "Convergence of the sampled parameters")
    b.paragraph(f"{diagnostics.divergences} divergent transitions in {diagnostics.n_draws} "
                f"draws; mean tree depth {_fmt_fixed(diagnostics.mean_tree_depth, '.1f')}, mean "
                f"step size {_fmt_fixed(diagnostics.mean_step_size, '.3g')}. R-hat near 1 means the chains agree; an "
                "effective sample size (ESS) of a few hundred makes the intervals stable.")


def _parameter_section(b: _Builder, fit: "ScalingFit") -> None:
    summary = fit.summary()
    level = round(100 * summary.attrs.get("prob", 0.94))
    b.heading("Parameters")
    rows = [{"parameter": name, "median": _fmt_param(row["median"]),
             "mean": _fmt_param(row["mean"]), "sd": _fmt_param(row["sd"]),
             f"{level}% HDI": _fmt_band(row["hdi_lower"], row["hdi_upper"], _fmt_param),
             "R-hat": _fmt_fixed(row["r_hat"], ".3f"),
             "ESS bulk": _fmt_fixed(row["ess_bulk"], ".0f")}
            for name, row in summary.iterrows()]
    b.table(pd.DataFrame(rows), f"Posterior of {fit.law.formula}")


def _forecast_section(b: _Builder, fit: "ScalingFit", budgets: list[float]) -> None:
    from .plotting import plot_fit

    b.heading("Forecast")
    fig = _figure()
    plot_fit(fit, flops=budgets, ax=fig.add_subplot())
    b.figure(fig, "fit", "Runs, the fitted law (median, 50% and 90% bands of one run's loss) and "
                         "the forecasts at the budgets in the table.")
    narrow = fit.forecast(flops=budgets, prob=0.5)
    wide = fit.forecast(flops=budgets, prob=0.9)
    mean = fit.forecast(flops=budgets, prob=0.9, kind="mean")
    largest = float(fit.runs.frame["flops"].max())
    rows = []
    for i, c in enumerate(budgets):
        row = {"compute C (FLOPs)": fmt_flops(c), "× largest run": f"{c / largest:.3g}"}
        if fit.law.splits_compute:
            row["N (params)"] = fmt_flops(wide["params"].iloc[i])
            row["D (tokens)"] = fmt_flops(wide["tokens"].iloc[i])
        row["median loss"] = _fmt_loss(wide["loss_median"].iloc[i])
        row["50% band"] = _fmt_band(narrow["loss_lower"].iloc[i], narrow["loss_upper"].iloc[i])
        row["90% band (one run)"] = _fmt_band(wide["loss_lower"].iloc[i], wide["loss_upper"].iloc[i])
        row["90% band (law's mean)"] = _fmt_band(mean["loss_lower"].iloc[i], mean["loss_upper"].iloc[i])
        row["how far to trust this"] = trust_line(fit, c)
        rows.append(row)
    split = (" Each budget is trained at the posterior-median compute-optimal N and D."
             if fit.law.splits_compute else "")
    b.table(pd.DataFrame(rows), "Forecast loss (nats/token) at each budget." + split
            + " Bands contain the posterior's uncertainty, the law's own error past the fitted"
            " range (growing with the distance, its scale learned from held-out errors) and,"
            " for one run, run-to-run noise.")


def _metric_section(b: _Builder, fit: "ScalingFit", budgets: list[float]) -> None:
    """From loss to the downstream metric (issue 16): bands, the two steps, what is unknown."""
    from .plotting import plot_link, plot_metric_forecast

    link = fit.link
    b.heading(f"From loss to {link.metric_name}")
    fig = _figure()
    plot_metric_forecast(fit, flops=budgets, ax=fig.add_subplot())
    b.figure(fig, "metric", f"{link.metric_name} of the runs and its forecast along the "
                            "compute-optimal frontier (median, 50% and 90% bands of one run).")
    fig = _figure((12.0, 4.6))
    plot_link(fit, axes=fig.subplots(1, 2))
    b.figure(fig, "link", f"Step 1: the law for {link.loss_name}. Step 2: the sigmoid from "
                          f"{link.loss_name} to {link.metric_name} (bands of the link's mean).")
    narrow = fit.forecast_metric(flops=budgets, prob=0.5)
    wide = fit.forecast_metric(flops=budgets, prob=0.9)
    rows = [{"compute C (FLOPs)": fmt_flops(c),
             f"median {link.loss_name}": _fmt_loss(wide["loss_median"].iloc[i]),
             f"median {link.metric_name}": f"{wide['metric_median'].iloc[i]:.3f}",
             "50% band": f"{narrow['metric_lower'].iloc[i]:.3f} – {narrow['metric_upper'].iloc[i]:.3f}",
             "90% band": f"{wide['metric_lower'].iloc[i]:.3f} – {wide['metric_upper'].iloc[i]:.3f}"}
            for i, c in enumerate(budgets)]
    b.table(pd.DataFrame(rows), f"Forecast {link.metric_name} of one run at each budget "
                                f"(chance {link.chance:g}; {link.method.replace('_', '-')} fit): "
                                "the law's predictive loss, discrepancy included, pushed "
                                "through the link's posterior, plus the metric's noise.")
    summary = link.summary(0.9)
    table = pd.DataFrame({"parameter": ["ceiling", "k (per unit loss)", "L0", "phi (precision)"],
                          "median": [_fmt_param(v) for v in summary["median"]],
                          "90% interval": [_fmt_band(lo, hi, _fmt_param) for lo, hi in
                                           zip(summary["lower"], summary["upper"])]})
    b.table(table, "The link: Acc = chance + (ceiling − chance)·sigmoid(−k·(L − L0)); the "
                   "metric is Beta distributed around it with precision phi.")
    findings = link_findings_text(fit)
    b.paragraph(findings)


def link_findings_text(fit: "ScalingFit") -> str:
    """One paragraph on whether the runs pin the sigmoid down."""
    findings = fit.link_findings()
    if not findings:
        return ("The runs cover the rise of the sigmoid: the transition point L0 lies inside "
                "their loss range, so the link is pinned by data, not by its prior.")
    return "Not identified: " + " ".join(findings) + "."


def _risk_section(b: _Builder, fit: "ScalingFit", target: float, budgets: list[float],
                  targets: list[float], budget: float | None) -> None:
    from .plotting import plot_risk

    b.heading("Budget risk")
    split = (", split into N and D at today's best estimate of the optimum,"
             if fit.law.splits_compute else "")
    b.paragraph(f"P(loss ≤ target) is the chance that one training run at that budget{split} "
                "ends at or below the target loss — counting both what we do not know about "
                "the law and run-to-run noise.")
    grid = fit.risk_table(targets=targets, budgets=budgets)
    rows = []
    for t in targets:
        row = {"target loss": f"{t:g}"}
        for c in budgets:
            row[f"{fmt_flops(c)} FLOPs"] = _fmt_prob(_grid_value(grid, t, c))
        rows.append(row)
    b.table(pd.DataFrame(rows), "P(loss ≤ target) by target (rows) and budget (columns)")
    pairs_t = np.repeat(targets, len(REACH_PROBS))
    pairs_p = np.tile(REACH_PROBS, len(targets))
    reach = fit.compute_to_reach(pairs_t, prob=pairs_p)
    reach_rows = []
    for t in targets:
        row = {"target loss": f"{t:g}"}
        for p in REACH_PROBS:
            match = reach[_same(reach["target"], t) & _same(reach["prob"], p)]
            row[f"{100 * p:.0f}% confidence"] = fmt_flops(float(match["flops"].iloc[0]))
        reach_rows.append(row)
    b.table(pd.DataFrame(reach_rows), "Compute (FLOPs) needed to reach each target")
    fig = _figure()
    shown = sorted({targets[0], target, targets[-1]})
    plot_risk(fit, shown, flops=[budget] if budget is not None else None, probs=REACH_PROBS,
              ax=fig.add_subplot())
    b.figure(fig, "risk", "Chance of reaching each target against budget; markers: the budget "
                          "that reaches it with 50/80/95% confidence.")


def _same(a: Any, b: Any) -> Any:
    """Equal to 12 significant digits, at any scale (losses of 1e-8 included)."""
    return np.isclose(a, b, rtol=1e-12, atol=0.0)


def _grid_value(grid: pd.DataFrame, target: float, flops: float) -> float:
    """Look up P(loss ≤ target) at a budget in a risk table, long or wide."""
    if {"target", "flops", "prob"} <= set(grid.columns):
        match = grid[_same(grid["target"], target) & _same(grid["flops"], flops)]
        return float(match["prob"].iloc[0])
    row = grid.loc[[i for i in grid.index if _same(float(i), target)][0]]
    column = [c for c in grid.columns if _same(float(c), flops)][0]
    return float(row[column])


def _allocation_section(b: _Builder, fit: "ScalingFit", budgets: list[float]) -> None:
    from .plotting import plot_allocation, plot_isoflop

    b.heading("Compute-optimal allocation")
    table = fit.optimal_allocation(flops=budgets, prob=0.9)
    rows = []
    for _, r in table.iterrows():
        rows.append({"compute C (FLOPs)": fmt_flops(r["flops"]),
                     "N_opt (params)": fmt_flops(r["params_median"]),
                     "N 90% band": _fmt_band(r["params_lower"], r["params_upper"], fmt_flops),
                     "D_opt (tokens)": fmt_flops(r["tokens_median"]),
                     "D 90% band": _fmt_band(r["tokens_lower"], r["tokens_upper"], fmt_flops),
                     "tokens per param": f"{r['tokens_per_param_median']:.3g}",
                     "tokens/param 90% band": _fmt_band(r["tokens_per_param_lower"],
                                                        r["tokens_per_param_upper"],
                                                        lambda v: f"{v:.3g}")})
    b.table(pd.DataFrame(rows), "How to split each budget between model size N and tokens D "
                                "(C = 6·N·D), with the posterior's 90% band")
    fig = _figure()
    plot_allocation(fit, flops=budgets, ax=fig.add_subplot())
    b.figure(fig, "allocation", "Compute-optimal N and D against compute, with 90% bands.")
    fig = _figure()
    plot_isoflop(fit, ax=fig.add_subplot())
    b.figure(fig, "isoflop", "Loss against model size at fixed compute (IsoFLOP profiles), with "
                             "the compute-optimal model size and its 90% band.")


def _posterior_section(b: _Builder, fit: "ScalingFit") -> None:
    from .plotting import plot_posterior

    b.heading("Posterior")
    k = len(fit.law.paper_parameters)
    size = 1.8 * k + 0.8
    fig = _figure((size, size))
    plot_posterior(fit, ax=fig.subplots(k, k, squeeze=False))
    b.figure(fig, "posterior", "Marginal posteriors (diagonal, with median and 94% HDI) and "
                               "pairwise draws of the law's parameters.")


def _backtest_section(b: _Builder, result: Any) -> None:
    from .plotting import plot_backtest

    b.heading("Backtest")
    s = result.summary
    settings = getattr(result, "settings", {})
    split = (f"runs above {fmt_flops(settings['cutoff_flops'])} FLOPs held out"
             if "cutoff_flops" in settings else
             f"the largest {100 * settings['holdout_frac']:.0f}% of runs by compute held out"
             if "holdout_frac" in settings else "held-out runs chosen by the user")
    b.paragraph(f"The law was refitted on {int(s['n_train'])} runs ({split}) and asked to "
                f"forecast the {int(s['n_test'])} held-out runs. RMSLE {s['rmsle']:.4f} (≈ "
                f"{100 * s['rmsle']:.1f}% typical error); bias {s['bias']:+.4f} (positive = "
                "forecasts too pessimistic); CRPS {:.4f}.".format(s["crps"]))
    levels = [k[len("coverage_"):] for k in s.index if k.startswith("coverage_")]
    rows = [{"band": f"{lvl}%", "share of held-out runs inside": f"{s[f'coverage_{lvl}']:.2f}",
             "target share": f"{float(lvl) / 100:.2f}",
             "mean width (log)": f"{s[f'width_{lvl}']:.4f}"} for lvl in levels]
    b.table(pd.DataFrame(rows), "Coverage of the forecast bands (honest bands cover about their "
                                "level)")
    fig = _figure((6.8, 5.6))
    plot_backtest(result, ax=fig.add_subplot())
    b.figure(fig, "backtest", "Forecast against actual loss for every held-out run.")


def plan_summary_lines(plan: pd.DataFrame) -> list[str]:
    """Plain sentences about a plan from :meth:`~bayescale.ScalingFit.plan_runs`: today's
    objective, the greedy picks and what they are expected to buy."""
    a = plan.attrs
    what = {"band": f"width of the {round(100 * a['prob'])}% band of one run's loss",
            "prob": f"variance of P(loss ≤ {a.get('target')})",
            "split": f"width of the {round(100 * a['prob'])}% band of tokens per parameter"}
    where = f"at {fmt_flops(a['target_flops'])} FLOPs"
    if a.get("target_points", 1) > 1:
        where = f"averaged over {a['target_points']} target runs"
    elif np.isfinite(a.get("target_params", math.nan)):
        where += (f" (N ≈ {fmt_flops(a['target_params'])}, "
                  f"D ≈ {fmt_flops(a['target_tokens'])})")
    lines = [f"Objective: the {what[a['objective']]} {where}; today {a['current']:.4g} "
             f"{a['units']}. Expected reductions from {a['n_outcomes']} simulated outcomes "
             f"per pilot, reweighting {a['n_draws']} posterior draws."]
    picks = plan[plan["pick"] > 0].sort_values("pick")
    for _, r in picks.iterrows():
        size = (f"N = {fmt_flops(r['params'])}, D = {fmt_flops(r['tokens'])}"
                if np.isfinite(r["params"]) else f"C = {fmt_flops(r['flops'])} FLOPs")
        lines.append(f"Pick {int(r['pick'])}: {size} (cost {fmt_flops(r['cost'])}): expected "
                     f"reduction {r['pick_reduction']:.3g} ± {r['pick_mcse']:.1g} {a['units']}"
                     f" given the picks before it; {100 * r['cumulative_reduction'] / a['current']:.1f}% "
                     f"of today's value in total (ESS {r['ess']:.0f}).")
    return lines


def _plan_section(b: _Builder, plan: pd.DataFrame, fit: "ScalingFit") -> None:
    """Which pilot runs to train next (the table of :meth:`ScalingFit.plan_runs`)."""
    from .plotting import plot_plan

    b.heading("Plan the next runs")
    b.paragraph("Before paying for the big run, which smaller runs would pin its forecast down "
                "most per unit of compute? For each candidate pilot the posterior simulates "
                "what it would measure, reweights the posterior draws by that measurement "
                "and recomputes the uncertainty; the average over simulated outcomes is the "
                "expected reduction (± its Monte-Carlo error). Train a pick, refit, and plan "
                "again: the real outcome replaces the simulated ones.")
    b.bullets(plan_summary_lines(plan))
    units = plan.attrs["units"]
    top = plan.head(10)
    b.table(pd.DataFrame({
        "N (params)": top["params"].map(fmt_flops), "D (tokens)": top["tokens"].map(fmt_flops),
        "cost": top["cost"].map(fmt_flops),
        f"expected reduction ({units})": [f"{r:.3g} ± {m:.1g}" for r, m in
                                          zip(top["expected_reduction"], top["mcse"])],
        "share of today": top["relative_reduction"].map(lambda v: f"{100 * v:.1f}%"),
        "per unit cost": top["per_cost"].map(lambda v: f"{v:.3g}"),
        "ESS": top["ess"].map(lambda v: f"{v:.0f}"),
        "pick": top["pick"].map(lambda v: str(int(v)) if v else "")}),
        f"The {len(top)} best of {len(plan)} candidate pilots by expected reduction per unit cost")
    fig = _figure()
    plot_plan(plan, fit, ax=fig.add_subplot())
    b.figure(fig, "plan", "Expected reduction per unit cost over the (N, D) plane; the greedy "
                          "picks circled and numbered, trained runs as dots.")


def _caveats(fit: "ScalingFit", budgets: list[float], caught: list[warnings.WarningMessage],
             backtest: Any = None) -> list[str]:
    frame = fit.runs.frame
    largest = float(frame["flops"].max())
    items = []
    furthest = max(budgets)
    decades = math.log10(furthest / largest)
    if decades > 0:
        items.append(f"Extrapolation: the largest budget here ({fmt_flops(furthest)} FLOPs) is "
                     f"{decades:.1f} decades ({furthest / largest:.3g}×) past the largest run "
                     f"({fmt_flops(largest)} FLOPs). The bands assume the law keeps its form "
                     "that far; they cannot cover a change of regime (repeated data, a new "
                     "architecture or tokenizer).")
    if "sigma" in fit.theta():
        sigma = float(np.median(fit.theta()["sigma"]))
        items.append(f"Run-to-run noise is estimated from these runs: σ ≈ {sigma:.3g} on log "
                     f"loss (≈ {100 * sigma:.1f}% of the loss). The one-run bands include it; "
                     "the law's-mean bands do not.")
    design = getattr(fit.diagnostics(), "design", [])
    items += [f"Data design: {note}" for note in design]
    if len(frame) < 20:
        items.append(f"Only {len(frame)} runs: the posterior leans on the priors more than "
                     "usual; check the prior table above.")
    if backtest is not None:
        summary = backtest.summary
        levels = sorted((float(k[len("coverage_"):]) / 100, k) for k in summary.index
                        if k.startswith("coverage_"))
        # speak of the 90% band when there is one: the level a lead quotes
        for level, key in sorted(levels, key=lambda pair: abs(pair[0] - 0.9)):
            if summary[key] < level - 0.1:
                items.append(f"Backtest: the {100 * level:.0f}% bands covered only "
                             f"{100 * summary[key]:.0f}% of the held-out runs. On these data "
                             "the bands are too narrow; read them as optimistic.")
                break
    seen = set(design)  # a design finding warned during the report is listed once
    by_kind: dict[str, list[str]] = {}
    for w in caught:
        message = str(w.message)
        if message in seen:
            continue
        seen.add(message)
        kind = (w.category.__name__ if w.category.__module__.startswith("bayescale")
                else "Warning")
        by_kind.setdefault(kind, []).append(message)
    for kind, messages in by_kind.items():
        # A few of each kind say what matters; a dozen near-identical lines would bury it.
        items += [f"{kind} raised while computing this report: {m}"
                  for m in messages[:_MAX_PER_KIND]]
        if len(messages) > _MAX_PER_KIND:
            items.append(f"… and {len(messages) - _MAX_PER_KIND} more {kind}s like these "
                         "(the tables above show every case).")
    return items


def _relevant(w: warnings.WarningMessage) -> bool:
    if issubclass(w.category, (ConvergenceWarning, ExtrapolationWarning, DesignWarning)):
        return True
    # Other UserWarnings raised by bayescale itself (e.g. an optimum outside the data).
    package = os.path.dirname(os.path.abspath(__file__))
    return (issubclass(w.category, UserWarning)
            and os.path.abspath(str(w.filename)).startswith(package))


# -- building ------------------------------------------------------------------------------

def build_report(fit: "ScalingFit", *, target: float | None = None, budget: float | None = None,
                 budgets: Sequence[float] | None = None, targets: Sequence[float] | None = None,
                 prob: float = 0.8, backtest: Any = None, title: str | None = None,
                 dpi: int = _DPI, plan: pd.DataFrame | None = None) -> Report:
    """Compute everything a report shows and return it as a :class:`Report` (nothing written).

    See :func:`write_report` for the parameters.
    """
    from ._validate import integer, positives, probability

    target = _positive_or_none("target", target)
    from .budget import is_budget

    money = budget if is_budget(budget) else None   # the headline speaks in its units
    budget = _positive_or_none("budget", float(money.to("flops")[0]) if money is not None else budget)
    prob = probability("prob", prob)
    dpi = integer("dpi", dpi, 10, 1200)
    if title is not None and not isinstance(title, str):
        from .exceptions import ArgumentTypeError

        raise ArgumentTypeError(f"title = {title!r} is a {type(title).__name__}: expected a string")
    budget_list = (_unique([*positives("budgets", budgets, allow_empty=False),
                            *([budget] if budget else [])])
                   if budgets is not None else _default_budgets(fit, budget))
    target_list = (_unique([*positives("targets", targets, allow_empty=False),
                            *([target] if target else [])])
                   if targets is not None else _default_targets(target) if target else [])

    fit, held_note = fit.for_presentation()   # a law of extra inputs: hold them, and say so
    b = _Builder(dpi)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.warn_if_unreliable()
        line = headline(fit, target=target, budget=money if money is not None else budget,
                        prob=prob)
        if held_note and line:
            line = f"{line} {held_note}"
        _data_section(b, fit)
        _model_section(b, fit)
        _diagnostics_section(b, fit)
        _parameter_section(b, fit)
        _forecast_section(b, fit, budget_list)
        if getattr(fit, "link", None) is not None:
            _metric_section(b, fit, budget_list)
        if target is not None:
            _risk_section(b, fit, target, budget_list, target_list, budget)
        if fit.law.splits_compute:
            _allocation_section(b, fit, budget_list)
        _posterior_section(b, fit)
        if backtest is not None:
            _backtest_section(b, backtest)
        if plan is not None:
            _plan_section(b, plan, fit)
    caveats = _caveats(fit, budget_list, [w for w in caught if _relevant(w)], backtest)
    if held_note:
        caveats.insert(0, held_note)
    b.heading("Caveats")
    b.bullets(caveats)
    title = title or (f"Scaling-law report: {fit.law.name} law on {len(fit.runs)} runs")
    return Report(title=title, headline=line, blocks=b.blocks, caveats=caveats)


def _positive_or_none(name: str, value: Any) -> float | None:
    from ._validate import positive

    return None if value is None else positive(name, value)


# -- rendering -----------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2329;
       background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #d8dde3; padding-bottom: 4px; }
.meta { color: #5b6670; font-size: 0.9em; }
.headline { font-size: 1.2em; font-weight: 600; background: #eef4fb; border-left: 5px solid #1f5fa8;
            padding: 12px 16px; margin: 16px 0; }
.callout { padding: 10px 14px; margin: 12px 0; border-left: 5px solid #888; background: #f4f4f4; }
.callout.ok { border-color: #2e8540; background: #eef7ef; }
.callout.bad { border-color: #c0392b; background: #fbeeed; }
.callout.warn { border-color: #d68910; background: #fdf5e6; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding: 4px 0; caption-side: top; }
th, td { border: 1px solid #d8dde3; padding: 4px 9px; white-space: nowrap; }
th { background: #f3f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.text { text-align: left; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { color: #5b6670; font-size: 0.9em; margin-top: 4px; }
li { margin: 4px 0; }
.scroll { overflow-x: auto; }
"""


_NUMERIC = re.compile(r"^[-+−<>∞0-9.]")


def _is_numeric_column(values: pd.Series) -> bool:
    return all(_NUMERIC.match(str(v)) for v in values)


def _html_table(frame: pd.DataFrame, caption: str) -> str:
    align = ['num' if _is_numeric_column(frame[c]) else 'text' for c in frame.columns]
    head = "".join(f'<th class="{a}">{html.escape(str(c))}</th>'
                   for a, c in zip(align, frame.columns))
    body = "".join("<tr>" + "".join(f'<td class="{a}">{html.escape(str(v))}</td>'
                                    for a, v in zip(align, row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return (f'<div class="scroll"><table><caption>{html.escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def render_html(report: Report, generated: str = "") -> str:
    """The report as one self-contained HTML document (figures as base64 PNG data URIs)."""
    parts = [f"<h1>{html.escape(report.title)}</h1>"]
    if generated:
        parts.append(f'<p class="meta">{html.escape(generated)}</p>')
    parts.append(f'<p class="headline">{html.escape(report.headline)}</p>')
    for block in report.blocks:
        if block.kind == "heading":
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif block.kind == "paragraph":
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif block.kind == "callout":
            parts.append(f'<p class="callout {block.style}">{html.escape(block.text)}</p>')
        elif block.kind == "table":
            parts.append(_html_table(block.table, block.text))
        elif block.kind == "list":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            parts.append(f"<ul>{items}</ul>")
        elif block.kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                         f'alt="{html.escape(block.text, quote=True)}">'
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(frame: pd.DataFrame, caption: str) -> str:
    header = "| " + " | ".join(_md_escape(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---:" if _is_numeric_column(frame[c]) else ":---"
                             for c in frame.columns) + " |"
    rows = ["| " + " | ".join(_md_escape(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([f"**{_md_escape(caption)}**", "", header, rule, *rows])


def render_markdown(report: Report, assets: str, generated: str = "") -> str:
    """The report as Markdown; figures are linked as ``<assets>/<name>.png``."""
    parts = [f"# {report.title}"]
    if generated:
        parts.append(f"*{generated}*")
    # "$" escaped: renderers with TeX math would read "$5M ... $3.1M" as a formula.
    headline_text = report.headline.replace("$", "\\$")
    parts.append(f"> **{headline_text}**")
    for block in report.blocks:
        if block.kind == "heading":
            parts.append("#" * block.level + " " + block.text)
        elif block.kind == "paragraph":
            parts.append(block.text)
        elif block.kind == "callout":
            mark = {"ok": "✅", "bad": "⛔", "warn": "⚠️"}.get(block.style, "")
            parts.append(f"> {mark} {block.text}".replace(">  ", "> "))
        elif block.kind == "table":
            parts.append(_md_table(block.table, block.text))
        elif block.kind == "list":
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif block.kind == "figure":
            parts.append(f"![{_md_escape(block.text)}]({assets}/{block.name}.png)\n\n"
                         f"*{block.text}*")
    return "\n\n".join(parts) + "\n"


# -- writing -------------------------------------------------------------------------------

def assets_dir(path: str | PathLike[str]) -> Path:
    """The folder of a Markdown report's figures: ``report.md`` → ``report_files``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_files")


def report_format(path: str | PathLike[str]) -> str:
    """``"html"`` or ``"markdown"`` from the suffix; ValueError for anything else."""
    path = Path(path)
    try:
        return REPORT_SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ArgumentError(f"report path {str(path)!r} must end in .html (one self-contained "
                         "file) or .md (Markdown plus a folder of PNGs)") from None


@contextlib.contextmanager
def _atomic_dir(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success, move it into place."""
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True (CLI: --force) to "
                              "replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_report(fit: "ScalingFit", path: str | PathLike[str], *, target: float | None = None,
                 budget: float | None = None, budgets: Sequence[float] | None = None,
                 targets: Sequence[float] | None = None, prob: float = 0.8,
                 backtest: Any = None, overwrite: bool = False, title: str | None = None,
                 dpi: int = _DPI, plan: pd.DataFrame | None = None) -> Path:
    """Write a report of a fit: self-contained HTML, or Markdown with a folder of PNGs.

    Contents: the headline sentence; data summary; law, priors and likelihood; diagnostics
    with a plain-language verdict; parameter table; forecast table and figure; with a target,
    the risk table, compute needed at 50/80/95% confidence and the risk figure; for a law of
    N and D, the compute-optimal allocation table with allocation and IsoFLOP figures; the
    posterior figure; the backtest when given; caveats (extrapolation distance and every
    warning raised while computing the report).

    Parameters
    ----------
    fit : ScalingFit
    path : str or path-like
        ``*.html`` for one self-contained file (figures embedded, no network needed), or
        ``*.md`` for Markdown with its figures in ``<stem>_files/`` beside it.
    target : float, optional
        Target loss (nats/token) for the risk headline and tables.
    budget : float or Budget, optional
        The compute budget (FLOPs) being decided on; a :class:`~bayescale.Budget` of one
        amount (dollars, GPU-hours, days) makes the headline speak in its units, and the
        tables use the compute it buys at the median utilization.
    budgets : sequence of float, optional
        Budgets for the tables (default: the decades from the largest run's to two decades
        past it, plus ``budget``).
    targets : sequence of float, optional
        Target losses for the risk table (default: ``target`` and ±1%, ±2%).
    prob : float
        Confidence level of the headline's compute-to-reach (default 0.8).
    backtest : Backtest, optional
        A result of :func:`bayescale.backtest` to summarise.
    plan : pandas.DataFrame, optional
        A result of :meth:`~bayescale.ScalingFit.plan_runs`: adds the section "Plan the
        next runs" (picks, the best candidates, the figure of :func:`~bayescale.plotting.plot_plan`).
    overwrite : bool
        Replace an existing report (and, for Markdown, its figure folder).
    title : str, optional
    dpi : int
        Resolution of the figures.

    Returns
    -------
    pathlib.Path
        The report written.

    Raises
    ------
    FileExistsError
        When the report (or its figure folder) exists and ``overwrite`` is False; checked
        before anything is computed.
    ValueError
        When the suffix is not .html/.htm/.md/.markdown or a number is not positive.
    """
    from ._validate import output_path

    target_path = output_path(path, overwrite=overwrite)
    kind = report_format(target_path)
    assets = assets_dir(target_path)
    if kind == "markdown":
        output_path(assets, overwrite=overwrite, name="figure folder", directory=True)
    build = build_group_report if getattr(fit, "is_grouped", False) else build_report
    report = build(fit, target=target, budget=budget, budgets=budgets, targets=targets,
                   prob=prob, backtest=backtest, title=title, dpi=dpi, plan=plan)
    from ._version import __version__
    from .io import atomic_write

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    generated = (f"Generated {stamp} by bayescale {__version__} from {fit.runs.source} "
                 f"(seed {fit.settings.get('random_seed')}).")
    # Temporary folders are created private (0700); a report is meant to be shared, so give
    # its figure folder the permissions an ordinary new folder would get under the umask.
    umask = os.umask(0)
    os.umask(umask)
    if kind == "html":
        text = render_html(report, generated)
    else:
        with _atomic_dir(assets, overwrite=overwrite) as folder:
            folder.chmod(0o777 & ~umask)
            for name, png in report.figures.items():
                (folder / f"{name}.png").write_bytes(png)
        text = render_markdown(report, assets.name, generated)
    with atomic_write(target_path, overwrite=overwrite) as tmp:  # gives umask permissions
        tmp.write_text(text, encoding="utf-8")
    return target_path



def build_group_report(fit: "ScalingFit", *, title: str | None = None, **kwargs: Any) -> Report:
    """The report of a grouped fit: one section per group (each group's own report, one
    heading level down) and a comparison of the groups at the largest budget shown."""
    blocks: list[Block] = []
    caveats: list[str] = []
    headlines = []
    budgets = []
    for group in fit.groups:
        part = build_report(fit.group_fit(group), **kwargs)
        blocks.append(Block("heading", text=f"Group {group}", level=2))
        blocks.append(Block("paragraph", text=part.headline))
        for block in part.blocks:
            if block.kind == "heading":
                block = dataclasses.replace(block, level=block.level + 1)
            elif block.kind == "figure":
                block = dataclasses.replace(block, name=f"{_slug(group)}_{block.name}")
            blocks.append(block)
        caveats += [f"{group}: {c}" for c in part.caveats]
        headlines.append(f"{group}: {part.headline}")
        budgets += [float(v) for v in kwargs.get("budgets") or []]
    at = max(budgets) if budgets else 10.0 ** math.ceil(
        math.log10(float(fit.runs.column("flops").max())) + 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = fit.compare_groups(at)
    shown = pd.DataFrame({
        "A": table["group_a"].astype(str), "B": table["group_b"].astype(str),
        "P(A < B)": table["p_a_better"].map(_fmt_prob),
        "loss A − B (90% band)": [f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]" for m, lo, hi in
                                  zip(table["diff_mean"], table["diff_lower"], table["diff_upper"])],
        "leader": table["leader"].astype(str),
        "confident (P ≥ 0.9) from": table["confident_flops"].map(
            lambda v: "never in range" if not math.isfinite(v) else fmt_flops(v))})
    blocks.append(Block("heading", text="Comparison of the groups", level=2))
    blocks.append(Block("paragraph", text=(
        f"Expected loss of each pair at {fmt_flops(at)} FLOPs ({fit.pooling} pooling), each "
        "group at its own compute-optimal split; draws paired, each group with its own "
        "discrepancy.")))
    blocks.append(Block("table", text="Which group wins", table=shown.astype(str)))
    title = title or (f"Scaling-law report: {fit.law.name} law on {len(fit.runs)} runs in "
                      f"{len(fit.groups)} groups")
    return Report(title=title, headline=" ".join(headlines), blocks=blocks, caveats=caveats)


def _slug(value: object) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(value))
