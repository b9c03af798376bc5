"""Checks of what the runs can and cannot tell a scaling law, before and after fitting.

A posterior is only as informative as the design of the runs behind it. MCMC will happily
return a posterior for α from runs that all have one model size — it is then the prior, not
a measurement. These checks name such designs (:class:`~bayescale.DesignWarning`), say what it
means for the bands, and refuse (:class:`~bayescale.RunDataError`) when nothing can be fitted:

- one model size, or one token count: that axis's exponent and coefficient come from the
  prior alone;
- fewer than 3 distinct values of an input: the exponent along it is weakly identified;
- one tokens-per-parameter ratio: the N and D terms move together, so α and β (A and B) are
  not separately identifiable, and forecasts off that ratio are wide;
- loss not falling with compute: no scaling law describes the runs;
- a wild outlier (after the fit, from robust residuals);
- a prior that excludes the data (after the fit: the posterior sits in the prior's far tail),
  reported as a convergence problem because it makes the fit unreliable, not the design.

Everything here is numpy/scipy on runs and posterior draws; nothing imports PyMC.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .data import Runs, input_spec
from .exceptions import PACKAGE_FILES, DesignWarning, RunDataError
from .laws import ScalingLaw, get_law
from .priors import Prior, default_noise_priors

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["DesignFinding", "design_findings", "check_design", "outlier_findings", "fit_design_findings",
           "warn_outliers", "prior_conflicts", "OUTLIER_SDS", "SAME_VALUE_TOLERANCE"]

#: Values of an input within this relative distance count as the same (float noise, rounding).
SAME_VALUE_TOLERANCE = 0.01
#: Tokens-per-parameter ratios spanning less than this factor count as one ratio.
ONE_RATIO_SPAN = 1.25
#: A run is a wild outlier when its log-loss residual exceeds this many robust SDs ...
OUTLIER_SDS = 8.0
#: ... with the robust SD floored at this (0.5% in loss), so near-exact fits flag nothing,
_MIN_RESIDUAL_SCALE = 0.005
#: ... and lies at least 10% off the law in loss: "wild", not a slightly misfit corner.
_MIN_OUTLIER_OFFSET = math.log(1.1)
#: Posterior median beyond these prior quantiles: the prior excludes what the data say.
PRIOR_TAIL = 5e-4



def _axis(law: ScalingLaw, name: str) -> tuple[str, str, str, str, str]:
    """(label, plural, symbol, exponent, coefficient) of an input, from the declarations:
    the input's InputSpec and the law's ``axes`` (the parameters that input identifies)."""
    spec = input_spec(name)
    identified = law.axes.get(name, ())
    exponent = identified[0] if identified else f"the parameters along {spec.symbol}"
    coefficient = ", ".join(identified[1:]) if len(identified) > 1 else "its coefficient"
    return spec.label, spec.plural, spec.symbol, exponent, coefficient


@dataclass(frozen=True)
class DesignFinding:
    """One thing the runs cannot support.

    Attributes
    ----------
    code : str
        ``"one_value"``, ``"few_values"``, ``"one_ratio"``, ``"loss_not_falling"``,
        ``"curves"`` or ``"outlier"``; stable, for programs and tests.
    message : str
        The problem, what it means for the bands, and what to do.
    """

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (cluster medians): clusters no wider than SAME_VALUE_TOLERANCE.

    Each cluster starts at its smallest value and takes every value within a factor
    1 + SAME_VALUE_TOLERANCE of it; the next value starts the next cluster. Anchoring each
    cluster at its start (instead of chaining neighbours within the tolerance) keeps a dense
    design distinct however finely it is spread: 100,000 runs over two decades give ~460
    values, while runs that all sit within 1% of one scale still give one. One cluster per
    1% of range at most, so the loop is short (≈ 230 steps per decade of range).
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    medians = []
    i = 0
    while i < ordered.size:
        end = int(np.searchsorted(ordered, ordered[i] * (1 + SAME_VALUE_TOLERANCE), side="right"))
        medians.append(ordered[(i + end - 1) // 2])  # the cluster's (lower) median, shown in messages
        i = end
    return np.asarray(medians, dtype=np.float64)


def design_findings(runs: Runs, law: str | ScalingLaw) -> list[DesignFinding]:
    """What the runs' design lets the law identify, before any sampling.

    Parameters
    ----------
    runs : Runs
        From :func:`bayescale.load_runs`.
    law : str or ScalingLaw
        The law about to be fitted.

    Returns
    -------
    list of DesignFinding
        Empty when the design supports every parameter.

    Raises
    ------
    RunDataError
        When nothing can be fitted: every run at the same compute (compute law), or at the
        same model size and token count (Chinchilla law).
    ModelMismatchError
        When the runs lack an input the law needs (e.g. no ``params`` for Chinchilla).
    """
    law = get_law(law)
    law.check_runs(runs)  # ModelMismatchError when an input the law needs is absent
    findings: list[DesignFinding] = []
    n = len(runs)
    distinct = {name: _distinct(runs.column(name)) for name in law.inputs}
    single = [name for name in law.inputs if distinct[name].size == 1]
    if len(single) == len(law.inputs):
        where = ", ".join(f"{input_spec(name).symbol} ≈ {distinct[name][0]:.3g}" for name in single)
        raise RunDataError(
            f"all {n} runs were trained at the same scale ({where}): the {law.name} law "
            "describes how loss changes with scale, and these runs show no change of scale, so "
            "nothing can be fitted; add runs at other scales (3 or more, spread over at least "
            "a decade)")
    for name in law.inputs:
        label, plural, symbol, exponent, coefficient = _axis(law, name)
        values = distinct[name]
        if values.size == 1:
            findings.append(DesignFinding("one_value", (
                f"all {n} runs have one {label} ({symbol} ≈ {values[0]:.3g}): the data say "
                f"nothing about how loss changes with {symbol}, so {exponent} and {coefficient} "
                "come from their priors alone. Forecasts at any other "
                f"{label} (and the compute-optimal split of a budget) carry the prior's full "
                f"width. Add runs at 3 or more {plural} spread over at least a decade.")))
        elif values.size < 3:
            shown = ", ".join(f"{v:.3g}" for v in values)
            findings.append(DesignFinding("few_values", (
                f"only {values.size} distinct {plural} ({symbol} = {shown}): a power law with "
                f"an offset needs at least 3 to pin down its curvature, so {exponent} leans on "
                f"its prior and bands away from these {plural} are wide. Add runs at a third "
                f"{label} or more.")))
    if set(law.inputs) >= {"params", "tokens"} and not single:
        ratio = runs.column("tokens") / runs.column("params")
        if ratio.max() / ratio.min() < ONE_RATIO_SPAN:
            findings.append(DesignFinding("one_ratio", (
                f"every run has about the same tokens per parameter (D/N ≈ "
                f"{float(np.median(ratio)):.3g}): along one ratio the N and D terms shrink "
                "together, so alpha and beta (and A and B) are not separately identifiable. "
                "Forecasts at that ratio can still be tight; forecasts at any other ratio, and "
                "the compute-optimal allocation, are wide and mostly reflect the priors. Train "
                "some model sizes at ratios at least 4x apart.")))
    if getattr(runs, "has_curves", False):
        n_runs = len(np.unique(runs.run))
        findings.append(DesignFinding("curves", (
            f"the {n} rows are checkpoints of {n_runs} runs: fitted as independent runs, "
            "checkpoints of one run (same seed, data order and schedule) count as separate "
            "evidence and early checkpoints of a decaying schedule sit above the law, so the "
            "bands come out far too narrow. Fit them with bayescale.CurveModel (run offsets, "
            "schedule term, within-run correlation), or fit runs.final_points().")))
    loss, flops = runs.column("loss"), runs.column("flops")
    if n >= 3 and np.ptp(loss) > 0 and np.ptp(flops) > 0:
        rho = float(pd.Series(flops).corr(pd.Series(loss), method="spearman"))
        if rho > 0:
            findings.append(DesignFinding("loss_not_falling", (
                f"loss does not fall with compute (rank correlation of loss with FLOPs "
                f"{rho:+.2f} over {n} runs): a scaling law can only fall, so it will explain "
                "these runs as noise around a nearly flat curve, and its forecasts will be flat "
                "with bands as wide as the scatter — not a trend. Check that the loss column is "
                "a loss (lower is better, not accuracy), that no columns are swapped, and that "
                "no runs diverged.")))
    return findings


def check_design(runs: Runs, law: str | ScalingLaw, *, warn: bool = True) -> list[DesignFinding]:
    """Run :func:`design_findings` and emit one :class:`DesignWarning` per finding.

    Parameters
    ----------
    runs : Runs
    law : str or ScalingLaw
    warn : bool
        Emit the warnings (errors are raised either way); they point at the first line
        outside the package.

    Returns
    -------
    list of DesignFinding

    Raises
    ------
    RunDataError
        When nothing can be fitted (see :func:`design_findings`).
    """
    findings = design_findings(runs, law)
    if warn:
        for finding in findings:
            warnings.warn(finding.message, DesignWarning, skip_file_prefixes=PACKAGE_FILES)
    return findings


def _median_log_loss(fit: "ScalingFit") -> np.ndarray:
    """Posterior-median expected log loss at each run, shape (runs,)."""
    log_x = {name: np.log(fit.runs.column(name))[None, :] for name in fit.law.inputs}
    return np.median(fit.law.log_loss(fit.theta(expand=True), log_x, fit.reference, np), axis=0)


# Outlier findings per fit: model.fit warns with them and diagnostics() lists them; a fit is
# immutable, so compute them once.
_outlier_cache: "weakref.WeakKeyDictionary[ScalingFit, list[DesignFinding]]" = weakref.WeakKeyDictionary()


def outlier_findings(fit: "ScalingFit", sds: float = OUTLIER_SDS) -> list[DesignFinding]:
    """Cached :func:`_outlier_findings` (for the default ``sds``)."""
    if sds != OUTLIER_SDS:
        return _outlier_findings(fit, sds)
    if fit not in _outlier_cache:
        _outlier_cache[fit] = _outlier_findings(fit, sds)
    return list(_outlier_cache[fit])


def _outlier_findings(fit: "ScalingFit", sds: float = OUTLIER_SDS) -> list[DesignFinding]:
    """Runs far off the fitted law, judged by robust residuals of log loss.

    The residual of run i is log(loss_i) minus the posterior-median expected log loss; its
    scale is 1.4826·MAD of all residuals (floored at 0.005, i.e. 0.5% in loss). Runs more than
    ``sds`` scales and more than 10% (in loss) away are reported together in one finding.

    Returns
    -------
    list of DesignFinding
        One ``"outlier"`` finding, or none.
    """
    n = len(fit.runs)
    if n < 6:
        return []
    residual = np.log(fit.runs.column("loss")) - _median_log_loss(fit)
    centre = float(np.median(residual))
    scale = max(1.4826 * float(np.median(np.abs(residual - centre))), _MIN_RESIDUAL_SCALE)
    z = (residual - centre) / scale
    flagged = np.flatnonzero((np.abs(z) > sds) & (np.abs(residual - centre) > _MIN_OUTLIER_OFFSET))
    if flagged.size == 0:
        return []
    order = flagged[np.argsort(-np.abs(z[flagged]))]
    frame = fit.runs.frame
    described = []
    for i in order[:3]:
        row = frame.iloc[i]
        where = ", ".join(f"{input_spec(name).symbol}={row[name]:.3g}" for name in fit.law.inputs)
        off = math.expm1(abs(residual[i])) * 100
        side = "above" if residual[i] > 0 else "below"
        described.append(f"run {i} ({where}, loss={row['loss']:.4g}) lies {off:.0f}% {side} the "
                         f"law ({abs(z[i]):.0f} robust SDs)")
    more = f" and {flagged.size - 3} more" if flagged.size > 3 else ""
    subject = "a wild outlier" if flagged.size == 1 else f"{flagged.size} wild outliers"
    if fit.likelihood == "student_t":
        effect = ("The Student-t likelihood limits the pull of such runs on the law, so the "
                  "bands are hardly affected; still check them, and drop runs that are wrong.")
    else:
        effect = ("With the Normal likelihood such runs inflate sigma, widening every observed "
                  "band, and pull the law toward themselves: refit with "
                  "likelihood='student_t' or drop runs that are wrong.")
    return [DesignFinding("outlier", (
        f"{subject}: {'; '.join(described)}{more}; the other runs scatter by about "
        f"±{math.expm1(scale) * 100:.1f}%. Probably {'a ' if flagged.size == 1 else ''}diverged, "
        f"mislabelled or mistyped run{'' if flagged.size == 1 else 's'}. "
        f"{effect}"))]


def warn_outliers(fit: "ScalingFit") -> list[DesignFinding]:
    """Emit a :class:`DesignWarning` for the runs :func:`outlier_findings` flags."""
    findings = outlier_findings(fit)
    for finding in findings:
        warnings.warn(finding.message, DesignWarning, skip_file_prefixes=PACKAGE_FILES)
    return findings


def _prior_distribution(prior: Prior):
    """The scipy distribution of a prior, or None for Fixed."""
    from scipy import stats  # lazily: scipy.stats costs a noticeable share of import time

    p = prior.params
    if prior.dist == "Normal":
        return stats.norm(p["mu"], p["sigma"])
    if prior.dist == "StudentT":
        return stats.t(p["nu"], p["mu"], p["sigma"])
    if prior.dist == "LogNormal":
        return stats.lognorm(p["sigma"], scale=math.exp(p["mu"]))
    if prior.dist == "HalfNormal":
        return stats.halfnorm(scale=p["sigma"])
    if prior.dist == "HalfStudentT":
        return stats.t(p["nu"], 0.0, p["sigma"])  # folded below
    if prior.dist == "Exponential":
        return stats.expon(scale=1.0 / p["lam"])
    if prior.dist == "Gamma":
        return stats.gamma(p["alpha"], scale=1.0 / p["beta"])
    if prior.dist == "Beta":
        return stats.beta(p["alpha"], p["beta"])
    if prior.dist == "Uniform":
        return stats.uniform(p["lower"], p["upper"] - p["lower"])
    if prior.dist == "TruncatedNormal":
        lo, hi = (p["lower"] - p["mu"]) / p["sigma"], (p["upper"] - p["mu"]) / p["sigma"]
        return stats.truncnorm(lo, hi, p["mu"], p["sigma"])
    return None


def prior_quantile(prior: Prior, value: float) -> float:
    """The prior's CDF at ``value`` (NaN for a fixed prior)."""
    dist = _prior_distribution(prior)
    if dist is None:
        return math.nan
    if prior.dist == "HalfStudentT":
        return float(2.0 * dist.cdf(value) - 1.0)
    return float(dist.cdf(value))


def prior_conflicts(fit: "ScalingFit", tail: float = PRIOR_TAIL) -> list[str]:
    """Parameters whose posterior median lies in the far tail of their prior.

    When the prior puts almost no mass where the data point, the posterior is a compromise
    that fits neither: the sampler may mix badly and the bands reflect the prior's shape, not
    the data. Flagged when the prior CDF at the posterior median is below ``tail`` or above
    ``1 - tail``.

    Returns
    -------
    list of str
        One plain-language problem per conflicting parameter, with what to try.
    """
    defaults = {**fit.law.default_priors(), **default_noise_priors(fit.likelihood)}
    custom = sorted(name for name, prior in fit.priors.items() if defaults.get(name) != prior)
    echo = (f" A parameter pushed to an extreme can also be the echo of another prior set too "
            f"tight: you set the priors of {', '.join(custom)}." if custom else "")
    problems = []
    for name in fit.posterior.data_vars:
        prior = fit.priors.get(name)
        if prior is None or prior.dist == "Fixed":
            continue
        median = float(fit.posterior[name].median())
        q = prior_quantile(prior, median)
        if not (q < tail or q > 1.0 - tail):
            continue
        side = "lower" if q < tail else "upper"
        problems.append(
            f"the posterior of {name} (median {median:.4g}) sits in the far {side} tail of its "
            f"prior {prior!r} (prior quantile {q:.2g}): the prior excludes what the data say, "
            "so the fit is a compromise that matches neither and its bands follow the prior; "
            f"widen or re-centre the prior of {name}, or check the runs.{echo}")
    return problems


def fit_design_findings(fit: "ScalingFit") -> list[DesignFinding]:
    """Every design finding about a fitted law: the runs' design and wild outliers."""
    try:
        findings = design_findings(fit.runs, fit.law)
    except RunDataError as exc:  # only for fits made without the check (e.g. built by hand)
        findings = [DesignFinding("one_value", str(exc))]
    return findings + outlier_findings(fit)
