"""From loss to capability: a downstream metric (benchmark accuracy) from posterior draws.

numpy only, no PyMC. The model (built in :mod:`bayescale.model`) has two steps:

1. a scaling law of this package for the task loss L (or the general loss) as a function of
   N and D (or C), with its usual predictive (parameter uncertainty, the discrepancy δ of
   :mod:`bayescale.discrepancy` past the fitted range, run-to-run noise);
2. a link from the task loss to the metric, the sigmoid of Bhagia et al. (2024)::

       Acc = chance + (ceiling − chance) · sigmoid(−k · (L − L₀))

   with ``chance`` given by the user (0.25 for 4-way multiple choice), ``ceiling`` in
   (chance, 1], ``k > 0`` and ``L₀`` the task loss at the midpoint of the rise. A run's
   measured accuracy is Beta distributed around the link with precision φ (mean μ, variance
   μ(1 − μ)/(1 + φ)): it stays in [0, 1] and its spread behaves like the binomial error of a
   benchmark of finite size, so runs near chance and near the ceiling are weighed correctly.

The link is sampled on scaled parameters (``ceiling_frac``, ``k_scaled``, ``l0_scaled``,
``phi``) whose priors respect chance and 1 whatever the loss units:
``ceiling = chance + (1 − chance)·ceiling_frac`` with ``ceiling_frac ~ Beta(2, 1)``;
``k = k_scaled / span`` and ``L₀ = center + l0_scaled·span``, where ``center`` and ``span``
are the mean and the range of the runs' losses, so ``k_scaled ~ LogNormal(log 4, 1)`` says
"the runs' range covers about 4 logits of the sigmoid" and ``l0_scaled ~ Normal(0, 2)`` puts
the transition anywhere within two ranges of the runs.

Two ways to fit it (``ScalingModel(..., link_method=)``):

- ``"two_stage"``: the law is fitted to the losses (the fast path), the link to the runs'
  (observed loss, metric) pairs; a forecast pushes each draw of the first stage's predictive
  loss through a draw of the link.
- ``"joint"``: one posterior of both steps, in which the link reads the law's own loss at
  each run (so the accuracies inform the law and the loss noise does not blur the link).

Which is the default is measured by ``benchmarks/bench_downstream.py`` (see
:data:`DEFAULT_LINK_METHOD`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from ._validate import choice, is_scalar, probabilities, probability, reals, seed
from .exceptions import PACKAGE_FILES, ArgumentError, DesignWarning, UnreachableTargetWarning
from .priors import Prior

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit

__all__ = ["LINKS", "LINK_METHODS", "DEFAULT_LINK_METHOD", "LINK_PARAMETERS", "LinkPosterior",
           "sigmoid_link", "default_link_priors", "link_reference", "link_findings",
           "metric_draws", "forecast_metric_table", "prob_metric_above",
           "compute_to_reach_metric", "link_curve"]

LINKS = ("sigmoid",)
LINK_METHODS = ("two_stage", "joint")
#: The better calibrated of the two on the OLMo ladder (benchmarks/bench_downstream.py).
DEFAULT_LINK_METHOD = "two_stage"
#: The link's sampled parameters, in the order they are stored.
LINK_PARAMETERS = ("ceiling_frac", "k_scaled", "l0_scaled", "phi")
# Beta likelihood needs 0 < y < 1; an accuracy of exactly 0 or 1 is read as this close to it.
_EDGE = 1e-6
# The transition point counts as not identified when the posterior puts less than this much
# probability on L₀ lying inside the runs' loss range.
_IDENTIFIED_MIN = 0.5


def sigmoid_link(loss: Any, chance: Any, ceiling: Any, k: Any, l0: Any, xp: Any = np) -> Any:
    """The link, written once for numpy and PyTensor: chance + (ceiling − chance)·σ(−k(L − L₀)).

    Parameters
    ----------
    loss : array
        Task loss (any positive loss that falls with scale).
    chance, ceiling, k, l0 : float or array
        Floor (chance accuracy), ceiling (≤ 1), steepness (> 0, per unit of loss) and the
        loss at the midpoint of the rise.
    xp : module
        ``numpy`` or ``pytensor.tensor``.
    """
    return chance + (ceiling - chance) / (1.0 + xp.exp(k * (loss - l0)))


def default_link_priors() -> dict[str, Prior]:
    """Priors of the link's scaled parameters (see the module docstring)."""
    return {"ceiling_frac": Prior("Beta", alpha=2.0, beta=1.0),
            "k_scaled": Prior("LogNormal", mu=math.log(4.0), sigma=1.0),
            "l0_scaled": Prior("Normal", mu=0.0, sigma=2.0),
            "phi": Prior("LogNormal", mu=math.log(1000.0), sigma=1.5)}


#: Support of each link parameter, for the priors' checks.
LINK_DOMAINS = {"ceiling_frac": (0.0, 1.0), "k_scaled": (0.0, math.inf),
                "l0_scaled": (-math.inf, math.inf), "phi": (0.0, math.inf)}


def link_reference(loss: np.ndarray) -> dict[str, float]:
    """``center`` and ``span`` of the losses the link is fitted on (its units)."""
    loss = np.asarray(loss, dtype=np.float64)
    center = float(np.mean(loss))
    span = float(np.ptp(loss)) if loss.size > 1 else 0.0
    # Runs of (nearly) one loss: the unit still has to be a positive size.
    span = max(span, 0.05 * abs(center), 1e-6)
    return {"center": center, "span": span}


def clip_metric(metric: np.ndarray) -> np.ndarray:
    """Observed metrics for the Beta likelihood: 0 and 1 moved just inside."""
    return np.clip(np.asarray(metric, dtype=np.float64), _EDGE, 1.0 - _EDGE)


@dataclass(frozen=True, eq=False)
class LinkPosterior:
    """Posterior draws of the link of a fit, with what is needed to use them.

    Attributes
    ----------
    posterior : xarray.Dataset
        ``ceiling_frac``, ``k_scaled``, ``l0_scaled``, ``phi`` with dims (chain, draw).
    chance : float
        The metric's floor (given by the user; 0 when not).
    center, span : float
        The link's units: mean and range of the runs' losses.
    method : {"two_stage", "joint"}
    metric_name : str
        The metric's column in the user's data (e.g. ``"mmlu_acc"``).
    loss_name : str
        The loss the link reads: the task-loss column, or ``"loss"``.
    observed_loss, observed_metric : numpy.ndarray
        The runs' loss and metric the link was fitted on (for plots and checks).
    link : str
        ``"sigmoid"``.
    priors : dict of str to Prior
        The link's priors.
    """

    posterior: xr.Dataset
    chance: float
    center: float
    span: float
    method: str
    metric_name: str
    loss_name: str
    observed_loss: np.ndarray
    observed_metric: np.ndarray
    link: str = "sigmoid"
    priors: Mapping[str, Prior] | None = None

    @property
    def n_draws(self) -> int:
        return int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])

    def draws(self) -> dict[str, np.ndarray]:
        """Flat draws of the link in natural units: ``ceiling``, ``k``, ``l0``, ``phi``."""
        flat = {n: self.posterior[n].to_numpy().reshape(-1) for n in LINK_PARAMETERS}
        return {"ceiling": self.chance + (1.0 - self.chance) * flat["ceiling_frac"],
                "k": flat["k_scaled"] / self.span,
                "l0": self.center + flat["l0_scaled"] * self.span,
                "phi": flat["phi"]}

    def mean(self, loss: np.ndarray) -> np.ndarray:
        """Expected metric per draw at losses of shape (draws, points)."""
        d = {k: v[:, None] for k, v in self.draws().items()}
        with np.errstate(over="ignore"):
            return sigmoid_link(loss, self.chance, d["ceiling"], d["k"], d["l0"])

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Median and central band of ceiling, k, L₀ and φ, with R-hat and bulk ESS."""
        import arviz as az

        prob = probability("prob", prob)
        d = self.draws()
        tail = (1.0 - prob) / 2.0
        rhat = az.rhat(self.posterior)
        ess = az.ess(self.posterior, method="bulk")
        names = dict(zip(("ceiling", "k", "l0", "phi"), LINK_PARAMETERS))
        rows = {name: {"median": float(np.median(v)), "lower": float(np.quantile(v, tail)),
                       "upper": float(np.quantile(v, 1 - tail)),
                       "r_hat": float(rhat[names[name]]), "ess_bulk": float(ess[names[name]])}
                for name, v in d.items()}
        table = pd.DataFrame(rows).T
        table.index.name = "parameter"
        table.attrs["prob"] = prob
        return table

    def to_dict(self) -> dict[str, Any]:
        """Everything but the draws, JSON-ready (the draws are saved as a group)."""
        return {"link": self.link, "chance": self.chance, "center": self.center,
                "span": self.span, "method": self.method, "metric_name": self.metric_name,
                "loss_name": self.loss_name,
                "observed_loss": [float(v) for v in self.observed_loss],
                "observed_metric": [float(v) for v in self.observed_metric],
                "priors": {k: v.to_dict() for k, v in (self.priors or {}).items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], posterior: xr.Dataset) -> "LinkPosterior":
        return cls(posterior=posterior, chance=float(data["chance"]),
                   center=float(data["center"]), span=float(data["span"]),
                   method=str(data["method"]), metric_name=str(data["metric_name"]),
                   loss_name=str(data["loss_name"]),
                   observed_loss=np.asarray(data["observed_loss"], dtype=np.float64),
                   observed_metric=np.asarray(data["observed_metric"], dtype=np.float64),
                   link=str(data.get("link", "sigmoid")),
                   priors={k: Prior.from_dict(v) for k, v in data.get("priors", {}).items()})


# -- identification ------------------------------------------------------------------------

def link_findings(link: LinkPosterior) -> list[str]:
    """What the runs cannot tell about the sigmoid (empty when its transition is pinned).

    The transition point L₀ counts as identified when the posterior puts at least half its
    mass on L₀ lying inside the runs' loss range; otherwise the runs sit in a flat part of
    the sigmoid (near chance, or near the ceiling) and where the rise happens is a matter
    of the prior.
    """
    d = link.draws()
    lo, hi = float(np.min(link.observed_loss)), float(np.max(link.observed_loss))
    inside = float(np.mean((d["l0"] >= lo) & (d["l0"] <= hi)))
    if inside >= _IDENTIFIED_MIN:
        return []
    above = float(np.mean(d["l0"] < lo))  # the rise lies at lower loss than any run: near chance
    acc_lo, acc_hi = float(np.min(link.observed_metric)), float(np.max(link.observed_metric))
    where = ("near chance (the rise, if any, lies at lower loss than every run)" if above >= 0.5
             else "near the ceiling (the rise lies at higher loss than every run)")
    return [f"the runs sit in a flat part of the sigmoid, {where}: {link.metric_name} "
            f"{acc_lo:.3g}–{acc_hi:.3g} (chance {link.chance:g}) over {link.loss_name} "
            f"{lo:.4g}–{hi:.4g}; the transition point L0 is not identified "
            f"(P(L0 inside the runs' range) = {inside:.2f}), so forecasts of "
            f"{link.metric_name} past the runs span what the data cannot exclude (a jump or "
            "none) and the point of emergence is the prior's, not the data's"]


def warn_link_findings(link: LinkPosterior) -> list[str]:
    """Emit each of :func:`link_findings` as a :class:`DesignWarning`; return them."""
    findings = link_findings(link)
    for message in findings:
        warnings.warn(message, DesignWarning, skip_file_prefixes=PACKAGE_FILES)
    return findings


# -- draws ---------------------------------------------------------------------------------

def _link(fit: "ScalingFit") -> LinkPosterior:
    link = getattr(fit, "link", None)
    if link is None:
        from .exceptions import ModelMismatchError

        raise ModelMismatchError("this fit has no metric link: fit ScalingModel(..., "
                                 "link='sigmoid') on runs loaded with load_runs(..., "
                                 "metric=<column>)")
    return link


def _aligned(link: LinkPosterior, n_draws: int, random_seed: int | None) -> LinkPosterior:
    """The link with as many draws as the law's (the two stages may differ in size)."""
    if link.n_draws == n_draws:
        return link
    rng = np.random.default_rng(random_seed)
    index = rng.choice(link.n_draws, size=n_draws, replace=link.n_draws < n_draws)
    flat = link.posterior.stack(sample=("chain", "draw")).isel(sample=index)
    data = {n: (("chain", "draw"), flat[n].to_numpy()[None, :]) for n in LINK_PARAMETERS}
    from dataclasses import replace

    return replace(link, posterior=xr.Dataset(data))


def _link_inputs(fit: "ScalingFit", points: pd.DataFrame, kind: str,
                 random_seed: int | None) -> np.ndarray:
    """The loss each draw feeds the link, shape (draws, points).

    Two-stage: the link was fitted on measured losses, so it reads the predictive loss of a
    run (``kind="observed"``: law, discrepancy and noise) or the law's expected loss
    (``"mean"``). Joint: the link reads the law's expected loss (law + discrepancy) always.
    """
    from .forecast import loss_draws

    link = _link(fit)
    loss_kind = "mean" if link.method == "joint" else kind
    return loss_draws(fit, points, kind=loss_kind, random_seed=random_seed)


def _beta_params(mu: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.clip(mu, _EDGE, 1.0 - _EDGE)
    return mu * phi, (1.0 - mu) * phi


def metric_draws(fit: "ScalingFit", points: pd.DataFrame, kind: str = "observed",
                 random_seed: int | None = None) -> np.ndarray:
    """Metric per draw and point, shape (draws, points).

    ``kind="observed"``: the accuracy one run would measure (the Beta noise of the link on
    top); ``"mean"``: the link's expected accuracy. One uniform per draw, shared by the
    points, draws the Beta noise by its quantile function: each point's distribution is
    exact and bands along a curve stay smooth (as the loss noise of :mod:`forecast`).
    """
    from scipy.special import betaincinv

    from .forecast import KINDS

    choice("kind", kind, KINDS)
    base_seed = fit.settings.get("random_seed", 0) if random_seed is None else random_seed
    link = _aligned(_link(fit), fit.n_draws, base_seed)
    loss = _link_inputs(fit, points, kind, random_seed)
    mu = link.mean(loss)
    if kind == "mean":
        return mu
    a, b = _beta_params(mu, link.draws()["phi"][:, None])
    u = np.random.default_rng([int(base_seed), 0xACC]).uniform(size=(mu.shape[0], 1))
    return betaincinv(a, b, np.broadcast_to(u, mu.shape))


def _points(fit: "ScalingFit", flops: object, params: object, tokens: object,
            inputs: object) -> pd.DataFrame:
    from .forecast import resolve_points

    return resolve_points(fit, flops=flops, params=params, tokens=tokens, inputs=inputs)


def forecast_metric_table(fit: "ScalingFit", flops: object = None, params: object = None,
                          tokens: object = None, prob: float = 0.9, kind: str = "observed",
                          random_seed: int | None = None, inputs: object = None) -> pd.DataFrame:
    """Forecast the metric at compute budgets or at explicit (N, D), with a central band.

    See :meth:`bayescale.ScalingFit.forecast_metric`.
    """
    from .forecast import KINDS, warn_if_extrapolating

    prob = probability("prob", prob)
    choice("kind", kind, KINDS)
    random_seed = seed("random_seed", random_seed)
    link = _link(fit)
    points = _points(fit, flops, params, tokens, inputs)
    warn_if_extrapolating(fit, points["flops"].to_numpy())
    draws = metric_draws(fit, points, kind=kind, random_seed=random_seed)
    loss = _link_inputs(fit, points, kind, random_seed)
    tail = (1.0 - prob) / 2.0
    q = np.quantile(draws, [tail, 0.5, 1.0 - tail], axis=0)
    table = points.assign(loss_median=np.median(loss, axis=0), metric_mean=draws.mean(axis=0),
                          metric_median=q[1], metric_lower=q[0], metric_upper=q[2])
    table.attrs.update({"prob": float(prob), "kind": kind, "law": fit.law.name,
                        "metric": link.metric_name, "loss": link.loss_name,
                        "chance": link.chance, "link": link.link, "method": link.method})
    return table


def prob_metric_above(fit: "ScalingFit", target: object, flops: object = None,
                      params: object = None, tokens: object = None, kind: str = "observed",
                      inputs: object = None) -> float | pd.DataFrame:
    """P(metric ≥ target) for a run at each budget (or explicit N, D).

    Exact given the draws: the mean over draws of the Beta survival function at ``target``
    (``kind="observed"``) or of the indicator that the expected metric reaches it
    (``"mean"``). A scalar target at one point gives a float; otherwise a table with one
    ``prob_<target>`` column per target.
    """
    from scipy.special import betainc

    from .forecast import KINDS

    choice("kind", kind, KINDS)
    targets = reals("target", target)
    bad = np.flatnonzero(~((targets > 0) & (targets < 1)))
    if bad.size:
        raise ArgumentError(f"target must be a metric value strictly between 0 and 1, got "
                            f"{float(targets[bad[0]])!r}")
    link = _aligned(_link(fit), fit.n_draws, fit.settings.get("random_seed", 0))
    points = _points(fit, flops, params, tokens, inputs)
    loss = _link_inputs(fit, points, kind, None)
    mu = link.mean(loss)
    probs = np.empty((targets.size, len(points)))
    for i, t in enumerate(targets):
        if kind == "mean":
            probs[i] = (mu >= t).mean(axis=0)
        else:
            a, b = _beta_params(mu, link.draws()["phi"][:, None])
            probs[i] = (1.0 - betainc(a, b, t)).mean(axis=0)
    if is_scalar(target) and len(points) == 1 and (flops is None or is_scalar(flops)) \
            and (params is None or is_scalar(params)):
        return float(probs[0, 0])
    table = points.copy()
    for i, t in enumerate(targets):
        table[f"prob_{t:g}"] = probs[i]
    table.attrs.update({"kind": kind, "metric": link.metric_name, "targets": targets.tolist()})
    return table


def compute_to_reach_metric(fit: "ScalingFit", target: object, prob: object = 0.8,
                            kind: str = "observed", max_decades: float = 12.0,
                            ) -> float | pd.DataFrame:
    """Smallest budget (FLOPs) with P(metric ≥ target) ≥ prob; ``inf`` when out of reach.

    The run trains at the posterior-median compute-optimal split, as in
    :func:`bayescale.risk.compute_to_reach`. The search covers budgets from 1/1000 of the
    smallest run's compute to ``max_decades`` decades past the largest (a log grid, then
    bisection to 0.1% in compute); a target the posterior does not reach with probability
    ``prob`` anywhere there (e.g. above the ceiling) gives ``inf`` with an
    :class:`UnreachableTargetWarning`.
    """
    targets = reals("target", target)
    bad = np.flatnonzero(~((targets > 0) & (targets < 1)))
    if bad.size:
        raise ArgumentError(f"target must be a metric value strictly between 0 and 1, got "
                            f"{float(targets[bad[0]])!r}")
    probs = probabilities("prob", prob)
    _link(fit)
    flops = fit.runs.frame["flops"].to_numpy()
    lo, hi = math.log10(flops.min()) - 3.0, math.log10(flops.max()) + float(max_decades)
    grid = np.linspace(lo, hi, 121)

    def p_at(log10_c: np.ndarray, t: float) -> np.ndarray:
        table = prob_metric_above(fit, [t], flops=10.0 ** np.asarray(log10_c), kind=kind)
        return table.iloc[:, -1].to_numpy()

    rows = []
    for t in targets:
        on_grid = p_at(grid, float(t))
        for p in probs:
            hit = np.flatnonzero(on_grid >= p)
            if hit.size == 0:
                warnings.warn(f"P({_link(fit).metric_name} ≥ {t:g}) stays below {p:g} up to "
                              f"{10 ** hi:.3g} FLOPs (max {on_grid.max():.3f}): out of reach "
                              "for this posterior (the ceiling or the law's floor is in the "
                              "way)", UnreachableTargetWarning, skip_file_prefixes=PACKAGE_FILES)
                rows.append((float(t), float(p), math.inf))
                continue
            i = int(hit[0])
            if i == 0:
                rows.append((float(t), float(p), float(10 ** grid[0])))
                continue
            a, b = grid[i - 1], grid[i]
            while b - a > 4.3e-4:  # 0.1% in compute
                mid = 0.5 * (a + b)
                if p_at(np.array([mid]), float(t))[0] >= p:
                    b = mid
                else:
                    a = mid
            rows.append((float(t), float(p), float(10 ** b)))
    if is_scalar(target) and is_scalar(prob):
        return rows[0][2]
    table = pd.DataFrame(rows, columns=["target", "prob", "flops"])
    table.attrs.update({"kind": kind, "metric": _link(fit).metric_name})
    return table


def link_curve(fit: "ScalingFit", loss: object = None, prob: float = 0.9,
               kind: str = "mean", size: int = 100) -> pd.DataFrame:
    """The link's metric over a range of losses, with a central band (step 2 alone).

    ``loss`` defaults to a grid across the runs' losses widened by half their range each way.
    """
    from .forecast import KINDS

    prob = probability("prob", prob)
    choice("kind", kind, KINDS)
    link = _link(fit)
    if loss is None:
        lo, hi = float(link.observed_loss.min()), float(link.observed_loss.max())
        pad = 0.5 * (hi - lo) + 1e-9
        grid = np.linspace(max(lo - pad, 1e-9), hi + pad, size)
    else:
        grid = reals("loss", loss, "positive")
    mu = link.mean(np.broadcast_to(grid, (link.n_draws, grid.size)))
    values = mu
    if kind == "observed":
        from scipy.special import betaincinv

        a, b = _beta_params(mu, link.draws()["phi"][:, None])
        u = np.random.default_rng(0xACC).uniform(size=(mu.shape[0], 1))
        values = betaincinv(a, b, np.broadcast_to(u, mu.shape))
    tail = (1.0 - prob) / 2.0
    q = np.quantile(values, [tail, 0.5, 1.0 - tail], axis=0)
    table = pd.DataFrame({"loss": grid, "metric_median": q[1], "metric_lower": q[0],
                          "metric_upper": q[2]})
    table.attrs.update({"prob": prob, "kind": kind, "metric": link.metric_name,
                        "loss": link.loss_name, "chance": link.chance})
    return table
