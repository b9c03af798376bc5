"""Model discrepancy: how wrong the law itself gets past the fitted range (numpy only).

The predictive of a fit (see the design's "The predictive")::

    log L_obs(x) = law(θ; x) + δ(x) + ε

- ``law(θ; x)``: the law's log loss under a posterior draw θ (parameter uncertainty);
- ``δ(x)``: the law's own error, zero inside the fitted range and growing with the distance
  past it (below), z ~ Normal(0, 1) times a learned scale τ;
- ``ε``: run-to-run noise (the likelihood's σ and ν).

One z per posterior draw, shared by every point, the same device as the noise factors of
:func:`bayescale.forecast.noise_factors`: each point's marginal is exact, a band along a
curve is smooth, and a draw's law + δ stays one curve, so P(L ≤ target) given the draws
stays a closed-form mean of noise CDFs. ``z`` is drawn from a generator seeded by the fit's
seed, so a saved and loaded fit forecasts the same numbers.

The default form is ``"improvement"``: δ = z·τ·(law at the edge of the fitted range − law
at x), in log loss, with z·τ ≤ 1: the improvement the law promises past the data is off by
a factor 1 − z·τ. It is zero inside the range, grows with the distance past it and stops
growing where the law flattens (at E); every draw's loss still falls with compute. The
``"distance"`` form, δ = z·τ·d^power (d in decades), was the other candidate.

The scale τ is learned, not set: each fit learns it (:func:`learned_discrepancy`) from
backtests inside its own runs (rolling origin: fit below one of eight inner cutoffs, forecast
above) under a prior whose median and spread come from an empirical-Bayes fit over a corpus
of published scaling studies (the prior that maximises the marginal likelihood of the
studies' own inner backtests; ``benchmarks/bench_calibration.py``, evaluated
leave-one-study-out). How an inner split's errors count as evidence follows the runs' design
(:func:`evidence_model`): learning curves and scattered runs give the predictive's own model,
one shared draw of δ per split; an isoFLOP grid (many model sizes at each of a few budgets)
gives errors that move together only in part (the law's shape across N at one budget is
wrong too), so half of δ's variance is shared and half is per run. The discrepancy is stored
with the fit. A fit without one (saved by bayescale 0.1.0, or ``fit.with_discrepancy(None)``)
forecasts exactly as before: law + ε.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides
    from .data import Runs

__all__ = ["Discrepancy", "distance_decades", "default_discrepancy", "learned_discrepancy",
           "rolling_origin_errors", "tau_log_likelihood", "learn_tau", "discrepancy_normals",
           "discrepancy_shift", "fitted_log_max", "DEFAULT_TAU", "DEFAULT_PRIOR_SD",
           "DEFAULT_POWER", "DEFAULT_CAP_DECADES", "DISTANCE_INPUTS", "TAU_GRID", "MORE_FRACS",
           "DEFAULT_FRACS", "DEFAULT_LIKELIHOOD", "LIKELIHOODS", "GRID_LIKELIHOOD", "GRID_RHO",
           "is_isoflop_grid", "evidence_model"]

_LN10 = math.log(10.0)
#: Inputs whose fitted range a forecast can leave.
DISTANCE_INPUTS = ("flops", "params", "tokens")
#: Median of the prior on τ (the "improvement" form: sd of δ as a share of the law's predicted
#: fall past the data), learned by empirical Bayes over six published studies with
#: benchmarks/bench_calibration.py (calibration_corpus.json, "all_studies" of the default:
#: the prior maximising the marginal likelihood of every study's inner backtests).
DEFAULT_TAU = 0.39
#: sd of the prior on log τ, learned with DEFAULT_TAU (from the candidates 0.5, 1, 2, 4).
DEFAULT_PRIOR_SD = 1.0
#: δ's sd grows as distance**power (1: linear trend error; 0.5: a random walk in log C).
DEFAULT_POWER = 1.0
#: ``"improvement"``: δ = z·τ·(the law's predicted fall in log loss from the edge of the
#: fitted range to x), so the law's promised improvement past the data is off by a factor
#: 1 − z·τ (floored at 0: a draw never gets worse with more compute). ``"distance"``:
#: δ = z·τ·min(d, cap)^power in decades d past the range.
FORMS = ("improvement", "distance")
DEFAULT_FORM = "improvement"
#: Past this many decades δ stops growing (the search ranges of compute_to_reach reach 1e50
#: FLOPs; an unbounded δ would make every target a coin flip there).
DEFAULT_CAP_DECADES = 3.0
# Salt of the generator of z, so that z is independent of the noise draws of the same seed.
_SALT = 0x5CA1E


def distance_decades(log_x: Mapping[str, np.ndarray], log_max: Mapping[str, float]) -> np.ndarray:
    """Decades past the fitted range: max over inputs of log10(x / largest fitted x), ≥ 0.

    Parameters
    ----------
    log_x : mapping of str to array
        Natural logs of the inputs (``flops``, ``params``, ``tokens``), broadcasting together.
    log_max : mapping of str to float
        Natural log of the largest fitted value of each input; inputs missing from either
        mapping (or NaN) are ignored.

    Returns
    -------
    numpy.ndarray
        Distance in decades (0 inside the fitted range), the broadcast shape of ``log_x``.
    """
    result: np.ndarray | float = 0.0
    for name in DISTANCE_INPUTS:
        if name in log_x and name in log_max and math.isfinite(log_max[name]):
            # fmax: a NaN input (params of a compute-law point: not defined) is ignored.
            result = np.fmax(result, (np.asarray(log_x[name], dtype=np.float64)
                                      - log_max[name]) / _LN10)
    return np.maximum(np.asarray(result, dtype=np.float64), 0.0)


@dataclass(frozen=True)
class Discrepancy:
    """The law's error past the fitted range: sd of δ = τ·min(d, cap)^power in log loss.

    Attributes
    ----------
    tau : float
        sd of log loss at one decade past the fitted range (0.01 ≈ 1%).
    log_max : dict of str to float
        Natural log of the largest fitted flops (and params, tokens) of the runs.
    power : float
        Growth with distance: 1 linear, 0.5 like a random walk.
    cap_decades : float
        Distance past which δ stops growing.
    source : str
        How ``tau`` was learned.
    """

    tau: float
    log_max: dict[str, float] = field(default_factory=dict)
    form: str = DEFAULT_FORM
    power: float = DEFAULT_POWER
    cap_decades: float = DEFAULT_CAP_DECADES
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("tau", "power", "cap_decades"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Discrepancy.{name} must be a finite number >= 0, got "
                                 f"{getattr(self, name)!r}")
        if self.power <= 0:
            raise ValueError(f"Discrepancy.power must be > 0, got {self.power!r}")
        if self.form not in FORMS:
            raise ValueError(f"Discrepancy.form must be one of {FORMS}, got {self.form!r}")

    def distance(self, log_x: Mapping[str, np.ndarray]) -> np.ndarray:
        """Decades past the fitted range at natural-log inputs ``log_x``."""
        return distance_decades(log_x, self.log_max)

    def sd(self, log_x: Mapping[str, np.ndarray]) -> np.ndarray:
        """sd of δ (log loss) at natural-log inputs ``log_x``; 0 inside the fitted range."""
        d = np.minimum(self.distance(log_x), self.cap_decades)
        return self.tau * d**self.power

    def to_dict(self) -> dict[str, Any]:
        return {"tau": float(self.tau), "log_max": {k: float(v) for k, v in self.log_max.items()},
                "form": self.form, "power": float(self.power), "cap_decades": float(self.cap_decades),
                "source": self.source}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Discrepancy":
        return cls(tau=float(values["tau"]),
                   log_max={k: float(v) for k, v in dict(values.get("log_max", {})).items()},
                   form=str(values.get("form", DEFAULT_FORM)),
                   power=float(values.get("power", DEFAULT_POWER)),
                   cap_decades=float(values.get("cap_decades", DEFAULT_CAP_DECADES)),
                   source=str(values.get("source", "")))


def fitted_log_max(runs: "Runs") -> dict[str, float]:
    """Natural log of the largest flops, params and tokens among the runs (NaN columns out)."""
    out = {}
    for name in DISTANCE_INPUTS:
        values = runs.frame[name].to_numpy(dtype=np.float64)
        if np.isfinite(values).any():
            out[name] = float(np.log(np.nanmax(values)))
    return out


def default_discrepancy(runs: "Runs", tau: float | None = None,
                        form: str = DEFAULT_FORM) -> Discrepancy:
    """A discrepancy over the range of ``runs`` with scale ``tau`` (default: the corpus τ)."""
    value = DEFAULT_TAU if tau is None else float(tau)
    return Discrepancy(tau=value, log_max=fitted_log_max(runs), form=form,
                       source="corpus prior median" if tau is None else "given")


# -- learning τ from the fit's own runs ------------------------------------------------------

#: Inner backtests: hold out these shares of the runs with the most compute.
ROLLING_FRACS = (0.2, 0.35, 0.5)
#: More inner backtests, where the runs allow (identical splits are fitted once).
MORE_FRACS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
#: The default fit's inner backtests, likelihood and per-split weight (learned_discrepancy),
#: chosen on benchmarks/bench_calibration.py (README "Key numbers", docs/trust.md): eight inner
#: splits, so that inner forecasts as good as the noise pull τ well below the prior median;
#: the likelihood follows the design (:func:`evidence_model`).
DEFAULT_FRACS = MORE_FRACS
#: The evidence model of runs that are not an isoFLOP grid (learning curves, scattered runs).
DEFAULT_LIKELIHOOD = "shared"
#: The evidence model of an isoFLOP grid (:func:`is_isoflop_grid`) and its shared share ρ.
GRID_LIKELIHOOD = "mixed"
GRID_RHO = 0.5
DEFAULT_SPLIT_WEIGHT = 1.0
#: The grid τ is learned on (sd of log loss per decade).
TAU_GRID = np.concatenate([[0.0], np.geomspace(5e-4, 2.0, 72)])


def top_compute_mask(flops: np.ndarray, frac: float) -> np.ndarray:
    """True for about the share ``frac`` of runs with the most compute; runs of equal compute
    stay together (all True), so the share can be a little larger."""
    flops = np.asarray(flops, dtype=np.float64)
    n_test = max(1, round(frac * flops.size))
    return flops >= np.sort(flops)[flops.size - n_test]


def is_isoflop_grid(flops: np.ndarray) -> bool:
    """Whether the runs form an isoFLOP grid: at least 3 distinct compute budgets, each
    shared by 3 runs or more on average (many model sizes per budget).

    A structural property of the design, read from the data (digitised or scattered runs
    have as many budgets as runs; learning curves one run per compute).
    """
    from .design import _distinct

    flops = np.asarray(flops, dtype=np.float64)
    flops = flops[np.isfinite(flops) & (flops > 0)]
    # Budgets equal within 1% are one budget: C = 6·N·D from rounded N and D is never exact.
    budgets = len(_distinct(flops)) if flops.size else 0
    return budgets >= 3 and 3 * budgets <= flops.size


def evidence_model(flops: np.ndarray) -> tuple[str, float]:
    """How the rolling-origin errors of runs with compute ``flops`` count as evidence for τ:
    ``(likelihood, rho)`` of :func:`tau_log_likelihood`, declared from the design (not tuned
    per data set).

    An isoFLOP grid gets ``GRID_LIKELIHOOD`` (``"mixed"``, ρ = ``GRID_RHO``): at one budget
    the law misses each model size by its own amount (its shape across N is off), so only
    part of δ moves together. Anything else gets ``DEFAULT_LIKELIHOOD`` (``"shared"``: the
    errors of one inner split are one draw of δ, the predictive's own model).
    """
    if is_isoflop_grid(flops):
        return GRID_LIKELIHOOD, GRID_RHO
    return DEFAULT_LIKELIHOOD, 1.0


def rolling_origin_errors(runs: "Runs", law: str, start: Mapping[str, float],
                          fracs: tuple[float, ...] = ROLLING_FRACS) -> dict[str, np.ndarray]:
    """Backtests inside the runs: Huber point fits of the runs below inner cutoffs, scored on
    the runs above.

    For each share in ``fracs`` the runs with the most compute are held out
    (:func:`top_compute_mask`, as :func:`bayescale.backtest.split_runs` splits), the law is point-fitted to the rest by
    :func:`bayescale.pointfit.point_fit` from one start (``start``: paper parameters, e.g.
    the posterior medians), and each held-out run gives a log error and its distance past the
    inner range.

    Returns
    -------
    dict
        ``errors`` (log forecast − log actual), ``distance`` (decades past the inner range),
        ``improvement`` (the inner fit's predicted fall in log loss from the inner edge),
        ``noise`` (robust sd of the inner fit's residuals, per error), ``origin`` (which
        inner split) and ``log_flops`` (the held-out run's log compute), all 1-D and equally long; empty when no inner split can be fitted or
        the law has no point fit.
    """
    import warnings

    from .pointfit import POINT_LAWS, point_fit

    empty = {key: np.zeros(0) for key in ("errors", "distance", "improvement", "noise", "origin",
                                          "log_flops")}
    if law not in POINT_LAWS:
        return empty
    x0 = _point_start(law, start)
    if x0 is None:
        return empty
    from .laws import get_law

    inputs = get_law(law).inputs
    needed = len(x0) + 2
    parts: dict[str, list[np.ndarray]] = {key: [] for key in empty}
    seen: set[bytes] = set()
    for k, frac in enumerate(fracs):
        mask = top_compute_mask(runs.column("flops"), frac)
        if mask.tobytes() in seen or (~mask).sum() < needed or not mask.any():
            continue
        seen.add(mask.tobytes())
        inner, outer = runs.subset(~mask), runs.subset(mask)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                point = point_fit(inner, law=law, grid=x0[None, :])
        except Exception:   # an inner fit that fails says nothing about τ; skip it
            continue
        predicted = point.predict(**{name: outer.column(name) for name in inputs})
        inner_max = fitted_log_max(inner)
        log_outer = {n: np.log(outer.frame[n].to_numpy(dtype=np.float64)) for n in DISTANCE_INPUTS
                     if np.isfinite(outer.frame[n]).all()}
        at_edge = clip_to_range(log_outer, inner_max)
        edge = point.predict(**{name: np.exp(at_edge[name]) for name in inputs})
        fitted = point.predict(**{name: inner.column(name) for name in inputs})
        errors = np.log(predicted) - np.log(outer.column("loss"))
        residuals = np.log(fitted) - np.log(inner.column("loss"))
        if not (np.isfinite(errors).all() and np.isfinite(residuals).all()):
            continue
        log_x = {n: np.log(outer.frame[n].to_numpy(dtype=np.float64)) for n in DISTANCE_INPUTS
                 if np.isfinite(outer.frame[n]).all()}
        parts["errors"].append(errors)
        parts["distance"].append(distance_decades(log_x, inner_max))
        parts["improvement"].append(np.maximum(np.log(edge) - np.log(predicted), 0.0))
        mad = 1.4826 * np.median(np.abs(residuals - np.median(residuals)))
        parts["noise"].append(np.full(errors.size, mad))
        parts["origin"].append(np.full(errors.size, float(k)))
        parts["log_flops"].append(np.log(outer.column("flops")))
    return {key: np.concatenate(values) if values else empty[key] for key, values in parts.items()}


def _point_start(law: str, paper: Mapping[str, float]) -> np.ndarray | None:
    """The point fit's coordinates for given paper values (e.g. posterior medians), or None.

    The point fit works at a zero reference, where the sampled parameters of the power-law
    laws are E (as ``E_fraction``), log A (``a``), log B (``b``) and the exponents; the
    result is checked by mapping it back to paper values, so a law parametrised otherwise
    gets None (and its fit the corpus prior's τ) instead of a wrong start.
    """
    from .laws import get_law

    spec = get_law(law)
    zero = {name: 0.0 for name in spec.reference_names()}
    given = {"E_fraction": paper.get("E"), "a": math.log(paper["A"]) if "A" in paper else None,
             "b": math.log(paper["B"]) if "B" in paper else None}
    theta, x = {}, []
    for p in spec.parameters:
        value = given.get(p.name) if p.name in given else paper.get(p.name)
        if value is None or not math.isfinite(value) or (p.point_log and value <= 0):
            return None
        theta[p.name] = np.array([value])
        x.append(math.log(value) if p.point_log else value)
    try:
        back = spec.paper_values(theta, zero)
    except Exception:
        return None
    for name, value in paper.items():
        if name in back and not np.allclose(back[name], value, rtol=1e-6):
            return None
    return np.array(x, dtype=np.float64)


#: How the rolling-origin errors enter τ's likelihood (:func:`tau_log_likelihood`).
LIKELIHOODS = ("averaged", "shared", "mixed", "learned-rho")
#: The shares of δ's variance shared by a split's errors that ``"learned-rho"`` averages over.
RHO_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def tau_log_likelihood(inner: Mapping[str, np.ndarray], power: float = DEFAULT_POWER,
                       cap_decades: float = DEFAULT_CAP_DECADES,
                       taus: np.ndarray = TAU_GRID, form: str = DEFAULT_FORM,
                       likelihood: str = "averaged", split_weight: float = 1.0,
                       rho: float = 0.5) -> np.ndarray:
    """Log likelihood of each τ given rolling-origin errors. Zeros when there are no errors.

    g is the scale δ grows with (the inner fit's predicted improvement, or the capped
    distance^power) and s0 the inner fit's residual sd.

    - ``"averaged"``: e ~ Normal(0, s0² + (τ·g)²) per error; the errors of one inner split
      share its fit's mistake, so each split counts as one observation (its errors' log
      densities are averaged, not summed).
    - ``"shared"``: the predictive's own model, e = τ·z·g + noise with one z per inner split
      (as one z per draw in the forecast), so each split's errors are jointly normal with
      covariance s0²·I + τ²·g·gᵀ (exact rank-one marginal likelihood). Each split's log
      likelihood is multiplied by ``split_weight`` (the splits are nested, not independent).
    - ``"mixed"``: a share ``rho`` of δ's variance shared by the split's errors (one z) and
      the rest independent per error, each still ∝ g: covariance
      s0²·I + τ²·(rho·g·gᵀ + (1 − rho)·diag(g²)). ``rho=1`` is ``"shared"``. Errors that do
      not move together (the law's shape wrong across N at one compute) then count as
      evidence for τ too.
    - ``"learned-rho"``: ``"mixed"`` with ρ unknown, uniform on RHO_GRID and marginalised
      (Bayesian averaging over how much the errors move together), so the runs say which
      structure their errors have.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    e = np.asarray(inner["errors"], dtype=np.float64)
    if e.size == 0:
        return np.zeros(np.size(taus))
    if form == "improvement":
        d = np.asarray(inner["improvement"], dtype=np.float64)
    else:
        d = np.minimum(np.asarray(inner["distance"], dtype=np.float64), cap_decades) ** power
    if likelihood == "learned-rho":
        args = (e, d, np.asarray(inner["noise"], dtype=np.float64), np.asarray(inner["origin"]),
                np.asarray(taus))
        from scipy.special import logsumexp

        per_rho = np.stack([_shared_log_likelihood(*args, r) for r in RHO_GRID])
        # ρ uniform on its grid: the log of the mean likelihood over the grid.
        return split_weight * (logsumexp(per_rho, axis=0) - math.log(len(RHO_GRID)))
    if likelihood in ("shared", "mixed"):
        return split_weight * _shared_log_likelihood(
            e, d, np.asarray(inner["noise"], dtype=np.float64), np.asarray(inner["origin"]),
            np.asarray(taus), 1.0 if likelihood == "shared" else rho)
    var = (np.asarray(inner["noise"], dtype=np.float64)[None, :] ** 2
           + (np.asarray(taus)[:, None] * d[None, :]) ** 2 + 1e-12)
    origin = np.asarray(inner["origin"])
    _, index, counts = np.unique(origin, return_inverse=True, return_counts=True)
    weight = 1.0 / counts[index]
    return -0.5 * np.sum(weight[None, :] * (np.log(var) + e[None, :] ** 2 / var), axis=1)


def _shared_log_likelihood(e: np.ndarray, g: np.ndarray, noise: np.ndarray, origin: np.ndarray,
                           taus: np.ndarray, rho: float = 1.0) -> np.ndarray:
    """Sum over inner splits of log Normal(e_k; 0, D + ρτ²·g_k·g_kᵀ), D = s_k² + (1−ρ)τ²g_k²
    (diagonal), for each τ."""
    out = np.zeros(taus.size)
    t2 = (taus**2)[:, None]
    for k in np.unique(origin):
        sel = origin == k
        ek, gk = e[sel][None, :], g[sel][None, :]
        s2 = float(np.median(noise[sel])) ** 2 + 1e-12
        diag = s2 + (1.0 - rho) * t2 * gk**2                       # (taus, n)
        gg = np.sum(gk**2 / diag, axis=1)
        ge = np.sum(gk * ek / diag, axis=1)
        ee = np.sum(ek**2 / diag, axis=1)
        r = rho * t2[:, 0]
        # Matrix determinant lemma and Sherman–Morrison for the rank-one part.
        out += -0.5 * (np.sum(np.log(diag), axis=1) + np.log1p(r * gg) + ee - r * ge**2 / (1 + r * gg))
    return out


def learn_tau(inner: Mapping[str, np.ndarray], prior_tau: float = DEFAULT_TAU,
              prior_sd: float = DEFAULT_PRIOR_SD, power: float = DEFAULT_POWER,
              form: str = DEFAULT_FORM, likelihood: str = "averaged",
              split_weight: float = 1.0, rho: float = 0.5) -> float:
    """Posterior median of τ: a log-normal prior (median ``prior_tau``, sd ``prior_sd`` in
    log τ) times the rolling-origin likelihood (:func:`tau_log_likelihood`), on TAU_GRID.
    With no inner errors this is the prior median."""
    grid = TAU_GRID[1:]
    log_prior = -0.5 * ((np.log(grid) - math.log(max(prior_tau, 1e-4))) / prior_sd) ** 2
    log_post = tau_log_likelihood(inner, power, taus=grid, form=form, likelihood=likelihood,
                                  split_weight=split_weight, rho=rho) + log_prior
    weights = np.exp(log_post - log_post.max()) * np.gradient(np.log(grid))
    cdf = np.cumsum(weights) / weights.sum()
    return float(grid[min(np.searchsorted(cdf, 0.5), grid.size - 1)])


def learned_discrepancy(fit: "ScalingFit") -> Discrepancy:
    """The default fit's discrepancy: τ learned from the fit's own runs (rolling origin) under
    the corpus prior; the corpus τ alone for laws without a point fit."""
    medians = {name: float(np.median(values)) for name, values in fit.paper_draws().items()}
    inner = rolling_origin_errors(fit.runs, fit.law.name, medians, fracs=DEFAULT_FRACS)
    likelihood, rho = evidence_model(fit.runs.column("flops"))
    tau = learn_tau(inner, likelihood=likelihood, split_weight=DEFAULT_SPLIT_WEIGHT, rho=rho)
    model = likelihood if likelihood == "shared" else f"{likelihood} (rho {rho:g}, isoFLOP grid)"
    source = (f"empirical Bayes: corpus prior (median {DEFAULT_TAU:g}, sd {DEFAULT_PRIOR_SD:g} in "
              f"log tau) x {model} likelihood of {inner['errors'].size} "
              f"rolling-origin errors in {len(np.unique(inner['origin']))} inner splits")
    return Discrepancy(tau=tau, log_max=fitted_log_max(fit.runs), source=source)


_NORMALS: "weakref.WeakKeyDictionary[ScalingFit, np.ndarray]" = weakref.WeakKeyDictionary()


def discrepancy_normals(fit: "ScalingFit") -> np.ndarray:
    """The standard normal z of δ, one per posterior draw, from the fit's seed (read-only)."""
    cached = _NORMALS.get(fit)
    if cached is None or cached.size != fit.n_draws:
        rng = np.random.default_rng([int(fit.settings.get("random_seed", 0)), _SALT])
        cached = rng.standard_normal(fit.n_draws)
        cached.flags.writeable = False
        _NORMALS[fit] = cached
    return cached


def clip_to_range(log_x: Mapping[str, np.ndarray], log_max: Mapping[str, float]) -> dict[str, np.ndarray]:
    """The point moved back to the edge of the fitted range.

    With N and D: log N and log D are lowered by their excess over the largest fitted N
    and D, and any remaining excess of compute over the largest fitted C is taken off both
    equally (so a big model trained long, each within range but never combined, moves back
    too). Otherwise each input is clipped to its largest fitted value.
    """
    out = dict(log_x)
    # Points of a law of compute alone carry NaN (not defined) for N and D: clip C alone.
    if all(name in log_x and name in log_max and np.isfinite(log_x[name]).all()
           for name in DISTANCE_INPUTS):
        a = np.maximum(np.asarray(log_x["params"]) - log_max["params"], 0.0)
        b = np.maximum(np.asarray(log_x["tokens"]) - log_max["tokens"], 0.0)
        rest = np.maximum(np.asarray(log_x["flops"]) - a - b - log_max["flops"], 0.0)
        a, b = a + rest / 2, b + rest / 2
        out.update(params=log_x["params"] - a, tokens=log_x["tokens"] - b,
                   flops=log_x["flops"] - a - b)
        return out
    for name, value in log_x.items():
        if name in log_max:
            out[name] = np.minimum(value, log_max[name])
    return out


def _edge_log_loss(fit: "ScalingFit", theta: Mapping[str, np.ndarray],
                   edge_x: Mapping[str, np.ndarray], workspace: Any = None) -> np.ndarray:
    """The law's log loss at the edge points, evaluated once per distinct edge point.

    Points past the fitted range in every input move back to the same edge, so with one
    row of draws per point (inputs of shape (points, 1)) most rows repeat: evaluating the
    law there once and gathering saves most of the discrepancy's cost (it is a second
    evaluation of the law at every point and draw otherwise).
    """
    columns = [np.asarray(v) for v in edge_x.values()]
    rows = np.broadcast_shapes(*(c.shape for c in columns))
    # Only where the draws lie along a row (1, draws): then rows are points, not draws.
    per_point = (len(rows) == 2 and rows[0] > 1
                 and all(c.ndim == 2 and c.shape[1] == 1 for c in columns)
                 and all(np.ndim(v) == 2 and np.shape(v)[0] == 1 for v in theta.values()))
    if per_point:
        stacked = np.hstack([np.broadcast_to(c, (rows[0], 1)) for c in columns])
        # Clipping leaves rounding differences of a few ulps between equal edges.
        _, first, inverse = np.unique(np.round(stacked, 9), axis=0, return_index=True,
                                      return_inverse=True)
        if first.size < rows[0]:
            distinct = {name: np.asarray(v)[first] if np.shape(v)[0] > 1 else np.asarray(v)
                        for name, v in edge_x.items()}
            return _law_log_loss(fit, theta, distinct)[inverse.reshape(-1)]
    return _law_log_loss(fit, theta, edge_x, workspace)


def _law_log_loss(fit: "ScalingFit", theta: Mapping[str, np.ndarray],
                  log_x: Mapping[str, np.ndarray], workspace: Any = None) -> np.ndarray:
    """log L from the law's linear form (a sum of exponentials: cheaper than log-sum-exp),
    in one compiled pass where the layout allows, falling back to log-sum-exp only where L
    overflows."""
    from ._pointwise import fused_log_loss  # numba: on first use

    rows = np.broadcast_shapes(*(np.shape(v) for v in log_x.values()))
    n_draws = max((np.size(v) for v in theta.values()), default=0)
    # The compiled pass wants points down a column and the draws along one row.
    rowwise = all(np.shape(v) in ((1, n_draws), (n_draws,)) for v in theta.values())
    if len(rows) == 2 and rows[1] == 1 and rowwise:
        out = (np.empty((rows[0], n_draws)) if workspace is None
               else workspace.array("edge", rows[0], n_draws))
        fused = fused_log_loss(fit.law, theta, fit.reference,
                               {k: np.broadcast_to(v, rows) for k, v in log_x.items()}, out)
        if fused is not None:
            return fused
    loss = fit.law.loss(theta, log_x, fit.reference)
    if loss.size and math.isinf(loss.max()):
        return fit.law.log_loss(theta, log_x, fit.reference, np)
    return np.log(loss, out=loss)


def discrepancy_shift(fit: "ScalingFit", log_x: Mapping[str, np.ndarray], like: np.ndarray,
                      theta: Mapping[str, np.ndarray] | None = None,
                      log_loss: np.ndarray | None = None,
                      workspace: Any = None) -> np.ndarray | None:
    """δ per draw and point, to add to the law's log loss; None when the fit has none.

    Parameters
    ----------
    fit : ScalingFit
    log_x : mapping of str to array
        Natural-log inputs laid out as for the law's evaluation.
    like : numpy.ndarray
        A parameter array of the law's evaluation, whose shape says how the draws lie:
        (draws, 1), (1, draws) or (draws,). z takes that shape.
    theta, log_loss : optional
        The parameter draws and the law's log loss at ``log_x`` (needed by the
        ``"improvement"`` form, which evaluates the law at the edge of the fitted range).
    workspace : bayescale._pointwise.Workspace, optional
        The calling thread's scratch arrays; the result may then be one of them.
    """
    discrepancy = getattr(fit, "discrepancy", None)
    if discrepancy is None or discrepancy.tau == 0:
        return None
    z = discrepancy_normals(fit).reshape(np.shape(like))
    if discrepancy.form == "distance":
        return discrepancy.sd(log_x) * z
    if theta is None or log_loss is None:
        raise ValueError("the improvement discrepancy needs theta= and log_loss=")
    edge = _edge_log_loss(fit, theta, clip_to_range(log_x, discrepancy.log_max), workspace)
    return _improvement_shift(discrepancy, z, edge, log_loss)


def add_discrepancy(fit: "ScalingFit", log_x: Mapping[str, np.ndarray], like: np.ndarray,
                    theta: Mapping[str, np.ndarray], log_loss: np.ndarray,
                    workspace: Any = None) -> np.ndarray:
    """The law's log loss with δ added, in place where ``log_loss`` has the full shape.

    The same δ as :func:`discrepancy_shift`; with points down a column and the draws
    along a row (the risk routes' layout), the law is evaluated again only at the points
    past the fitted range, since δ is zero at every point within it (its edge is itself).

    Parameters
    ----------
    fit, log_x, like, theta, workspace
        As for :func:`discrepancy_shift`.
    log_loss : numpy.ndarray
        The law's log loss at ``log_x``; updated in place when its shape is the result's.

    Returns
    -------
    numpy.ndarray
        log L + δ (``log_loss`` itself when no δ applies or its shape is the result's).
    """
    discrepancy = getattr(fit, "discrepancy", None)
    if discrepancy is None or discrepancy.tau == 0:
        return log_loss
    past = None
    if discrepancy.form == "improvement":
        clipped = clip_to_range(log_x, discrepancy.log_max)
        past = _points_past_range(log_x, clipped, like, np.shape(log_loss))
    if past is None or past.all():
        shift = discrepancy_shift(fit, log_x, like, theta, log_loss, workspace)
        if shift is None:
            return log_loss
        if np.shape(log_loss) == np.broadcast_shapes(np.shape(log_loss), np.shape(shift)):
            log_loss += shift
            return log_loss
        return log_loss + shift
    rows = np.flatnonzero(past)
    if rows.size:
        edge_x = {name: np.asarray(v)[rows] if np.ndim(v) == 2 and np.shape(v)[0] > 1 else v
                  for name, v in clipped.items()}
        z = discrepancy_normals(fit).reshape(np.shape(like))
        edge = _edge_log_loss(fit, theta, edge_x, workspace)
        log_loss[rows] += _improvement_shift(discrepancy, z, edge, log_loss[rows])
    return log_loss


def _points_past_range(log_x: Mapping[str, np.ndarray], clipped: Mapping[str, np.ndarray],
                       like: np.ndarray, loss_shape: tuple[int, ...]) -> np.ndarray | None:
    """Which points (rows) the clip to the fitted range moves, in the points × draws layout.

    None unless every input is a (points, 1) column or a scalar, the draws lie along one
    row and the log loss holds one row per point; then a boolean per point (NaN inputs,
    "not defined", count as unmoved).
    """
    columns = [np.asarray(v) for v in log_x.values()]
    if (np.ndim(like) != 2 or np.shape(like)[0] != 1
            or not all(c.ndim == 0 or (c.ndim == 2 and c.shape[1] == 1) for c in columns)):
        return None
    n_points = max((c.shape[0] for c in columns if c.ndim == 2), default=0)
    if n_points == 0 or len(loss_shape) != 2 or loss_shape[0] != n_points:
        return None
    past = np.zeros(n_points, dtype=bool)
    for name, value in log_x.items():
        value, moved = np.asarray(value), np.asarray(clipped[name])
        changed = (value != moved) & ~(np.isnan(value) & np.isnan(moved))
        past |= np.broadcast_to(changed.reshape(-1), n_points) if changed.ndim else bool(changed)
    return past


def _improvement_shift(discrepancy: Discrepancy, z: np.ndarray, edge: np.ndarray,
                       log_loss: np.ndarray) -> np.ndarray:
    """δ of the "improvement" form from the law's log loss at the point and at its edge."""
    if edge.shape != np.broadcast_shapes(edge.shape, np.shape(log_loss), np.shape(z)):
        edge = np.broadcast_to(edge, np.broadcast_shapes(edge.shape, np.shape(log_loss),
                                                         np.shape(z))).copy()
    # In place (edge is ours): these arrays are points × draws, and temporaries cost.
    improvement = np.maximum(np.subtract(edge, log_loss, out=edge), 0.0, out=edge)
    # 1 − z·τ ≥ 0: the law's fall past the data is scaled, never reversed (monotone in C).
    improvement *= np.minimum(discrepancy.tau * z, 1.0)
    return improvement
