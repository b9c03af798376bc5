"""Plan the next runs: which pilot runs buy the most certainty per FLOP (numpy on draws).

Preposterior analysis on the posterior draws, never a new posterior per candidate:

1. For a candidate pilot run x = (N, D), simulate what it would measure: S draws of the
   observed loss from the forecast layer's predictive (:func:`bayescale.forecast.loss_draws`,
   so a change to the predictive, such as a model-discrepancy term, reaches the planner too).
2. For each simulated outcome y_s, reweight every posterior draw θ_i by the pilot's
   likelihood under the fit's own noise model: w_i ∝ p(log y_s | θ_i), Student-t (ν draws)
   or normal on log loss around the law with the σ draws. The reweighted draws are the
   posterior one would have after training the pilot and refitting (importance sampling
   from the current posterior; the Kish effective sample size says how well it represents
   it).
3. Compute the objective under the weights and average over the S outcomes. The expected
   reduction is today's objective minus that average; its Monte-Carlo standard error is
   the standard deviation of the per-outcome reductions over √S.

Objectives (``objective=``):

- ``"band"``: the width (nats) of the central ``prob`` band of the loss one run at
  ``target_flops`` would measure, trained at today's posterior-median compute-optimal split
  (``kind="mean"``: of the law's expected loss, leaving out the run-to-run noise no pilot
  can remove).
- ``"prob"``: the posterior variance of the per-draw probability that that run reaches
  ``target`` (how unsure we are of P(loss ≤ target)).
- ``"split"``: the width (tokens per parameter) of the central ``prob`` band of the
  compute-optimal tokens-per-parameter ratio at ``target_flops``.

With ``target_points`` (a table of N, D) the ``"band"`` objective is the mean band width over
those runs: a target region instead of one compute-optimal point.

Sets of runs are chosen greedily: the j-th pick maximises its expected reduction per unit
of cost *given* the picks before it (their simulated outcomes and the candidate's come from
the same draw, and the weights multiply), among the candidates that still fit the budget.

The adaptive loop for a team that trains pilots one at a time::

    plan = fit.plan_runs(target_flops=1e24, budget=1e21)     # 1. rank candidate pilots
    best = plan.iloc[0]                                      # 2. train (best.params, best.tokens)
    runs = bs.load_runs(pd.concat([old_runs, new_run]))      # 3. add the measured run
    fit = bs.ScalingModel("chinchilla").fit(runs)            #    refit
    plan = fit.plan_runs(target_flops=1e24, budget=1e21 - best.cost)   # 4. plan again

Replanning after each pilot uses its real outcome instead of a simulated one, so it is never
worse than committing to the k greedy picks in advance.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._validate import positive as _positive
from .exceptions import PACKAGE_FILES, ModelMismatchError
from .forecast import loss_draws, resolve_points

if TYPE_CHECKING:
    from ._protocols import FitLike

__all__ = ["OBJECTIVES", "plan_runs", "default_candidates", "objective_draws",
           "reweighted_objective", "pilot_log_likelihood", "PlanWarning"]

OBJECTIVES = ("band", "prob", "split")
#: How the greedy ranks candidates: by reduction per cost, by reduction, or the better total.
GREEDY_RULES = ("best", "ratio", "gain")
#: Objective units, for tables and plots.
OBJECTIVE_UNITS = {"band": "nats", "prob": "probability²", "split": "tokens/param"}
#: A candidate whose median effective sample size over outcomes falls below this gets a warning:
#: its reweighted posterior rests on too few draws for the reduction to be trusted.
ESS_WARN = 100.0
#: Pareto k (PSIS) above which importance weights are unreliable (Vehtari et al. 2024).
KHAT_WARN = 0.7
#: Simulated outcomes per pick on which the Pareto k is computed (PSIS is slow in Python).
KHAT_OUTCOMES = 20
_LOG6 = math.log(6.0)


class PlanWarning(UserWarning):
    """The planner's estimate is weak (few effective draws) or a request could not be met."""


# -- inputs ------------------------------------------------------------------------------

def _has_split(fit: "FitLike") -> bool:
    return "params" in fit.law.inputs and "tokens" in fit.law.inputs


def default_candidates(fit: "FitLike", budget: float, grid_size: int = 12) -> pd.DataFrame:
    """A log-spaced grid of pilot runs cheaper than ``budget`` FLOPs, within sensible range.

    For a law of N and D: ``grid_size`` model sizes from the smallest trained N to 10x the
    largest, times ``grid_size`` token counts over the same span for D, kept when
    6·N·D ≤ budget and the tokens per parameter lie within half the smallest and twice the
    largest ratio among the runs (outside it the law is untested). For a compute law:
    ``grid_size`` budgets from the smallest run's compute up to ``budget``.

    Returns
    -------
    pandas.DataFrame
        Columns ``params``, ``tokens``, ``flops``, ``cost`` (= flops).
    """
    frame = fit.runs.frame
    if not _has_split(fit):
        low = float(frame["flops"].min())
        if budget < low:
            raise ValueError(f"budget={budget:.3g} FLOPs is below the smallest run's compute "
                             f"({low:.3g}): no pilot in the fitted range is that cheap")
        c = np.geomspace(low, budget, grid_size)
        return pd.DataFrame({"params": np.nan, "tokens": np.nan, "flops": c, "cost": c})
    n_runs, d_runs = frame["params"].to_numpy(), frame["tokens"].to_numpy()
    ratio = d_runs / n_runs
    n = np.geomspace(n_runs.min(), 10 * n_runs.max(), grid_size)
    d = np.geomspace(d_runs.min(), 10 * d_runs.max(), grid_size)
    nn, dd = (a.ravel() for a in np.meshgrid(n, d))
    c = 6.0 * nn * dd
    keep = (c <= budget) & (dd / nn >= 0.5 * ratio.min()) & (dd / nn <= 2.0 * ratio.max())
    if not keep.any():
        raise ValueError(f"budget={budget:.3g} FLOPs buys no pilot on the default grid "
                         f"(cheapest: {c.min():.3g} FLOPs); raise the budget or pass "
                         "candidates=")
    return pd.DataFrame({"params": nn[keep], "tokens": dd[keep], "flops": c[keep],
                         "cost": c[keep]})


def _pool(fit: "FitLike", candidates: object) -> pd.DataFrame:
    """Validate a user's pool of runnable experiments; fill flops (6·N·D) and cost (flops)."""
    if not isinstance(candidates, pd.DataFrame):
        raise TypeError("candidates must be a pandas DataFrame with columns params and tokens "
                        f"(and optional flops, cost), got {type(candidates).__name__}")
    if len(candidates) == 0:
        raise ValueError("candidates is empty: give at least one pilot run")
    needed = ["params", "tokens"] if _has_split(fit) else ["flops"]
    missing = [name for name in needed if name not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lacks column(s) {missing} that the {fit.law.name} law "
                         f"needs; it has {list(candidates.columns)}")
    pool = pd.DataFrame(index=range(len(candidates)))
    for name in ("params", "tokens", "flops", "cost"):
        if name in candidates.columns:
            pool[name] = pd.to_numeric(candidates[name], errors="coerce").to_numpy(dtype=np.float64)
    for name in [*needed, *(c for c in ("cost",) if c in pool)]:
        values = pool[name].to_numpy()
        bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
        if bad.size:
            raise ValueError(f"candidates column {name!r}, row {bad[0]}: "
                             f"{candidates[name].iloc[bad[0]]!r} is not a finite positive number")
    if _has_split(fit):
        pool["flops"] = 6.0 * pool["params"] * pool["tokens"]
    else:
        pool["params"] = np.nan
        pool["tokens"] = np.nan
    if "cost" not in pool:
        pool["cost"] = pool["flops"]
    # The user's other columns (names, ids) ride along into the ranking.
    others = [c for c in candidates.columns if c not in pool.columns]
    extra = candidates[others].reset_index(drop=True)
    return pd.concat([pool[["params", "tokens", "flops", "cost"]], extra], axis=1)


# -- per-draw pieces -----------------------------------------------------------------------

def objective_draws(fit: "FitLike", objective: str, target_flops: float,
                    target: float | None = None, random_seed: int = 0,
                    replicates: int = 64, kind: str = "observed") -> tuple[np.ndarray, pd.DataFrame]:
    """The per-draw quantity whose uncertainty the objective measures, shape (draws,).

    - ``"band"``: one draw of the loss a run at the target point would measure (the forecast
      layer's predictive of ``kind``), so the weighted band is the forecast band.
    - ``"prob"``: per draw, the chance that run reaches ``target``, estimated from
      ``replicates`` predictive draws (the same predictive as ``"band"``).
    - ``"split"``: the compute-optimal tokens per parameter at ``target_flops``.

    Returns the values and the target point (flops, params, tokens).
    """
    point = resolve_points(fit, flops=[target_flops])
    if objective == "band":
        return loss_draws(fit, point, kind=kind, random_seed=random_seed)[:, 0], point
    if objective == "prob":
        if target is None:
            raise ValueError("objective='prob' needs target= (the loss to reach)")
        hits = np.zeros(fit.n_draws)
        for r in range(replicates):
            hits += loss_draws(fit, point, kind="observed", random_seed=random_seed + r)[:, 0] <= target
        return hits / replicates, point
    if not _has_split(fit):
        raise ModelMismatchError(f"objective='split' needs a law of N and D; the {fit.law.name} "
                                 "law has no tokens-per-parameter split")
    from .allocation import optimal_allocation_draws

    return optimal_allocation_draws(fit, [target_flops])["tokens_per_param"][:, 0], point


def _noise_terms(fit: "FitLike") -> dict[str, np.ndarray | bool]:
    """Per-draw pieces of the fit's likelihood on log loss (see :func:`pilot_log_likelihood`)."""
    from scipy.special import gammaln

    theta = fit.theta()
    sigma = np.asarray(theta["sigma"], dtype=np.float64)
    student = fit.likelihood == "student_t"
    if student:
        nu = np.asarray(theta["nu"], dtype=np.float64)
        log_norm = (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * math.pi)
                    - np.log(sigma))
    else:
        nu = np.ones_like(sigma)
        log_norm = -0.5 * math.log(2 * math.pi) - np.log(sigma)
    return {"student": student, "inv_sigma": 1.0 / sigma, "nu": nu, "half_nu1": (nu + 1) / 2,
            "log_norm": log_norm}


def pilot_log_likelihood(fit: "FitLike", mu: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """log p(log y | θ_i) of a measured log loss under each draw: the fit's own likelihood.

    Parameters
    ----------
    mu : (draws,) the law's log loss at the pilot, per draw.
    log_y : (outcomes,) measured (or simulated) log losses.

    Returns
    -------
    numpy.ndarray
        Shape (outcomes, draws).
    """
    terms = _noise_terms(fit)
    z = (np.asarray(log_y)[:, None] - mu[None, :]) * terms["inv_sigma"]
    if terms["student"]:
        return terms["log_norm"] - terms["half_nu1"] * np.log1p(z * z / terms["nu"])
    return terms["log_norm"] - 0.5 * z * z


def reweighted_objective(log_weights: np.ndarray, values: np.ndarray, objective: str,
                         prob: float = 0.9) -> float:
    """The objective of ``values`` (draws,) under importance weights exp(``log_weights``).

    Widths use the weighted quantile with each draw at the midpoint of its weight mass
    (numpy's "hazen" rule when the weights are equal); ``"prob"`` is the weighted variance.
    This is the definition the compiled kernel implements.
    """
    w = np.exp(log_weights - np.max(log_weights))
    if objective == "prob":
        mean = np.sum(w * values) / w.sum()
        return float(np.sum(w * (values - mean) ** 2) / w.sum())
    order = np.argsort(values, kind="stable")
    v, ws = values[order], w[order]
    keep = ws > 0
    v, ws = v[keep], ws[keep]
    mids = np.cumsum(ws) - 0.5 * ws
    tail = (1.0 - prob) / 2.0
    low, high = np.interp([tail * ws.sum(), (1.0 - tail) * ws.sum()], mids, v)
    return float(high - low)


def _log_law_at(fit: "FitLike", pool: pd.DataFrame) -> np.ndarray:
    """The law's log loss at each candidate, per draw: shape (candidates, draws)."""
    log_x = {name: np.log(pool[name].to_numpy(dtype=np.float64))[:, None]
             for name in ("params", "tokens", "flops")}
    theta = {name: values[None, :] for name, values in fit.theta().items()}
    return np.ascontiguousarray(fit.law.log_loss(theta, log_x, fit.reference, np))


def _simulate(fit: "FitLike", pool: pd.DataFrame, rows: np.ndarray, seed: int) -> np.ndarray:
    """Simulated log loss of each pilot at draws ``rows``, shape (candidates, outcomes)."""
    simulated = loss_draws(fit, pool[["flops", "params", "tokens"]], kind="observed",
                           random_seed=seed)
    return np.ascontiguousarray(np.log(simulated[rows, :]).T)


def _expected_objectives(fit: "FitLike", mu: np.ndarray, outcomes: np.ndarray,
                         base: np.ndarray, values: np.ndarray, objective: str,
                         prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Objective and ESS per (candidate, outcome) under the pilot's (and earlier picks')
    likelihood weights, via the compiled kernel on every core."""
    from ._pointwise import map_point_chunks
    from ._plankernel import OBJECTIVE_VARIANCE, OBJECTIVE_WIDTH, reweighted_rows

    n_cand, n_out = outcomes.shape
    terms = _noise_terms(fit)
    total = np.zeros(n_cand * n_out)
    ess = np.empty(n_cand * n_out)
    tail = (1.0 - prob) / 2.0
    code = OBJECTIVE_VARIANCE if objective == "prob" else OBJECTIVE_WIDTH
    inv_nu_all = 1.0 / terms["nu"]
    for row_values in np.atleast_2d(values):      # one row per target point; their mean
        # Every per-draw array in the order of increasing values: band ends in one scan.
        order = np.argsort(row_values, kind="stable")
        mu_s = np.ascontiguousarray(mu[:, order])
        base_s = np.ascontiguousarray(base[:, order])
        per_draw = [np.ascontiguousarray(terms[name][order])
                    for name in ("log_norm", "inv_sigma", "half_nu1")]
        inv_nu = np.ascontiguousarray(inv_nu_all[order])
        values_s = np.ascontiguousarray(row_values[order])
        out = np.empty(n_cand * n_out)

        def run(part: slice, workspace: object) -> None:
            reweighted_rows(part.start, part.stop, mu_s, outcomes, base_s, *per_draw, inv_nu,
                            bool(terms["student"]), values_s, code, tail, 1.0 - tail, out, ess)

        map_point_chunks(run, n_cand * n_out, mu.shape[1])
        total += out
    out = total / np.atleast_2d(values).shape[0]
    return out.reshape(n_cand, n_out), ess.reshape(n_cand, n_out)


# -- the planner ---------------------------------------------------------------------------

def plan_runs(fit: "FitLike", target_flops: float, candidates: pd.DataFrame | None = None,
              budget: float | None = None, objective: str = "band", k: int = 1, *,
              target: float | None = None, prob: float = 0.9, kind: str = "observed",
              greedy: str = "best", n_outcomes: int = 100, grid_size: int = 12,
              target_points: pd.DataFrame | None = None,
              random_seed: int | None = None) -> pd.DataFrame:
    """Rank candidate pilot runs by the expected reduction of an uncertainty per unit cost.

    See the module docstring for the method. See :meth:`bayescale.ScalingFit.plan_runs`
    for the parameters.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    target_flops = _positive("target_flops", target_flops)
    if budget is not None:
        budget = _positive("budget", budget)
    if target is not None:
        target = _positive("target", target)
    if not 0.0 < float(prob) < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob!r}")
    if greedy not in GREEDY_RULES:
        raise ValueError(f"greedy must be one of {GREEDY_RULES}, got {greedy!r}")
    if kind not in ("observed", "mean"):
        raise ValueError(f"kind must be 'observed' or 'mean', got {kind!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number of pilots ≥ 1, got {k!r}")
    if isinstance(n_outcomes, bool) or not isinstance(n_outcomes, (int, np.integer)) or n_outcomes < 2:
        raise ValueError(f"n_outcomes must be a whole number ≥ 2, got {n_outcomes!r}")
    if objective == "split" and not _has_split(fit):
        raise ModelMismatchError(f"objective='split' needs a law of N and D; the {fit.law.name} "
                                 "law has no tokens-per-parameter split")
    seed = int(fit.settings.get("random_seed") or 0) if random_seed is None else int(random_seed)

    if candidates is None:
        budget = target_flops / 100.0 if budget is None else budget
        pool = default_candidates(fit, budget, grid_size)
    else:
        pool = _pool(fit, candidates)
        if budget is not None:
            affordable = pool["cost"].to_numpy() <= budget
            if not affordable.any():
                raise ValueError(f"no candidate costs at most budget={budget:.3g} (cheapest: "
                                 f"{pool['cost'].min():.3g})")
            pool = pool[affordable].reset_index(drop=True)

    with warnings.catch_warnings():
        # The target lies past the runs by design; forecasts there warn, planning need not.
        from .exceptions import ExtrapolationWarning

        warnings.simplefilter("ignore", ExtrapolationWarning)
        values, point = objective_draws(fit, objective, target_flops, target, seed + 7919,
                                        kind=kind)
        if target_points is not None:
            if objective != "band":
                raise ValueError("target_points= works with objective='band' (the mean band "
                                 f"width over a target region), not {objective!r}")
            region = _pool(fit, target_points)
            values = loss_draws(fit, region[["flops", "params", "tokens"]], kind=kind,
                                random_seed=seed + 7919).T
    values = np.ascontiguousarray(np.atleast_2d(values), dtype=np.float64)
    current = float(np.mean([reweighted_objective(np.zeros(fit.n_draws), row, objective, prob)
                             for row in values]))

    n_out = min(int(n_outcomes), fit.n_draws)
    rows = np.sort(np.random.default_rng(seed).choice(fit.n_draws, n_out, replace=False))
    mu = _log_law_at(fit, pool)
    costs = pool["cost"].to_numpy(dtype=np.float64)

    def evaluate(base: np.ndarray, before: np.ndarray, round_seed: int):
        """Expected reduction (given the picks in ``base``), its MCSE and median ESS."""
        outcomes = _simulate(fit, pool, rows, round_seed)
        after, ess = _expected_objectives(fit, mu, outcomes, base, values, objective, prob)
        reduction = before[None, :] - after
        return (reduction.mean(axis=1), reduction.std(axis=1, ddof=1) / math.sqrt(n_out),
                np.median(ess, axis=1), outcomes)

    zero_base = np.zeros((n_out, fit.n_draws))
    first = evaluate(zero_base, np.full(n_out, current), seed + 1)
    expected, mcse, median_ess, _ = first
    ranking = pool.assign(expected_reduction=expected, relative_reduction=expected / current,
                          per_flop=expected / pool["flops"].to_numpy(), per_cost=expected / costs,
                          mcse=mcse, ess=median_ess)

    def greedy_picks(rule: str) -> list[dict[str, float]]:
        """k picks, each the best by ``rule`` ("ratio": reduction per cost, "gain": reduction)
        among the unpicked candidates that fit the budget left, given the picks before it."""
        picks: list[dict[str, float]] = []
        base, remaining, result = zero_base, math.inf if budget is None else budget, first
        for j in range(int(k)):
            if j:
                before = _given_base(base, values, objective, prob)
                result = evaluate(base, before, seed + 1 + 2 * j)
            gain, error, spread, outcomes = result
            taken = [p["index"] for p in picks]
            open_ = np.flatnonzero(costs <= remaining)
            open_ = open_[~np.isin(open_, taken)]
            if open_.size == 0:
                break
            score = gain[open_] / costs[open_] if rule == "ratio" else gain[open_]
            best = int(open_[np.argmax(score)])
            # Log weights of the pick at a few outcomes, for the PSIS diagnostic below.
            some = slice(0, min(n_out, KHAT_OUTCOMES))
            log_w = base[some] + pilot_log_likelihood(fit, mu[best], outcomes[best, some])
            picks.append({"index": best, "reduction": float(gain[best]),
                          "mcse": float(error[best]), "ess": float(spread[best]),
                          "log_w": log_w})
            remaining -= costs[best]
            if j + 1 < k:
                # The pick's own simulated outcome at each outcome draw; later rounds weight by it.
                pick_y = _simulate(fit, pool.iloc[[best]], rows, seed + 2 + 2 * j)[0]
                base = base + pilot_log_likelihood(fit, mu[best], pick_y)
        return picks

    # Budgeted greedy: by reduction per cost, and by reduction alone; keep the better total
    # (the cost-effective rule alone can spend a sliver of the budget on tiny runs).
    rules = ("ratio", "gain") if greedy == "best" else (greedy,)
    candidates_picks = {r: greedy_picks(r) for r in rules}
    rule = max(candidates_picks, key=lambda r: sum(p["reduction"] for p in candidates_picks[r]))
    picks = candidates_picks[rule]
    if len(picks) < k:
        warnings.warn(f"only {len(picks)} of k={k} pilots fit the budget {budget:.3g}",
                      PlanWarning, skip_file_prefixes=PACKAGE_FILES)

    ranking["pick"] = 0
    ranking["khat"] = np.nan
    ranking["pick_reduction"] = np.nan
    ranking["pick_mcse"] = np.nan
    ranking["cumulative_reduction"] = np.nan
    cumulative = 0.0
    for number, pick in enumerate(picks, start=1):
        cumulative += pick["reduction"]
        # Pareto k of the importance weights (ArviZ's PSIS): above 0.7 the reweighted
        # draws do not represent the updated posterior well.
        khat = _median_khat(pick["log_w"])
        ranking.loc[pick["index"], ["pick", "khat", "pick_reduction", "pick_mcse",
                                    "cumulative_reduction"]] = \
            [number, khat, pick["reduction"], pick["mcse"], cumulative]
    weak = ranking[(ranking["pick"] > 0) & ((ranking["ess"] < ESS_WARN)
                                            | (ranking["khat"] > KHAT_WARN))]
    if len(weak):
        warnings.warn(f"the reweighted posterior of pick(s) {sorted(weak['pick'].astype(int))} "
                      f"rests on few effective draws (median ESS < {ESS_WARN:.0f} or Pareto k > "
                      f"{KHAT_WARN}): the pilot would teach the fit more than its draws can "
                      "represent, so its expected reduction is less certain than its mcse; "
                      "refit with more draws, or train it and refit", PlanWarning,
                      skip_file_prefixes=PACKAGE_FILES)
    # The picks first, in order; then the rest by reduction per unit cost.
    key = np.where(ranking["pick"] > 0, ranking["pick"], np.inf)
    ranking = ranking.assign(_key=key).sort_values(["_key", "per_cost"], ascending=[True, False],
                                                   kind="stable")
    ranking = ranking.drop(columns="_key").reset_index(drop=True)
    ranking.attrs.update({
        "objective": objective, "units": OBJECTIVE_UNITS[objective], "current": current,
        "prob": float(prob), "kind": kind, "target_flops": target_flops, "budget": budget,
        "target": target, "target_points": len(values),
        "target_params": float(point["params"].iloc[0]) if target_points is None else math.nan,
        "target_tokens": float(point["tokens"].iloc[0]) if target_points is None else math.nan,
        "n_outcomes": n_out,
        "n_draws": fit.n_draws, "law": fit.law.name, "k": int(k), "greedy": rule,
        "total_expected_reduction": cumulative,
        "pick_cost": float(sum(costs[p["index"]] for p in picks))})
    return ranking


def _median_khat(log_w: np.ndarray) -> float:
    """Median over outcomes of the PSIS Pareto k of log weights (outcomes, draws); equal
    weights (nothing learnt) count as k = 0."""
    from arviz_stats.base import array_stats

    varies = np.ptp(log_w, axis=1) > 1e-12
    khat = np.zeros(log_w.shape[0])
    if varies.any():
        try:
            khat[varies] = array_stats.psislw(log_w[varies], r_eff=1.0, axis=-1)[1]
        except ValueError:   # a tail too flat to fit: PSIS cannot judge it
            khat[varies] = np.nan
    return float(np.median(khat))


def _given_base(base: np.ndarray, values: np.ndarray, objective: str,
                prob: float) -> np.ndarray:
    """The objective per outcome under the picks' weights alone (the mean over the rows of
    ``values``, one per target point), shape (outcomes,)."""
    return np.array([np.mean([reweighted_objective(row, v, objective, prob) for v in values])
                     for row in base])
