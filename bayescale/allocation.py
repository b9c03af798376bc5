"""How to split compute between parameters and tokens, with uncertainty: numpy on draws.

- :func:`optimal_allocation`: the compute-optimal N and D at a budget C = 6·N·D, per posterior
  draw in closed form (Hoffmann et al. 2022, eq. 4: N_opt = G·(C/6)^(β/(α+β)) with
  G = (α·A / (β·B))^(1/(α+β))), summarised by median and central band.
- :func:`inference_optimal_allocation`: the N and D that reach a target loss at the least
  *total* cost, training 6·N·D plus inference 2·N per served token (Sardana et al. 2023,
  "Beyond Chinchilla-Optimal: Accounting for Inference in Language Model Scaling Laws"),
  per draw, compared with the Chinchilla-optimal model for the same target.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._validate import nonnegative, nonnegatives, positive, positives, probability
from .discrepancy import discrepancy_shift
from .exceptions import PACKAGE_FILES, ArgumentError, ExtrapolationWarning, ModelMismatchError
from .risk import prob_below

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["optimal_allocation", "optimal_allocation_draws", "inference_optimal_allocation",
           "inference_optimal_draws"]

_LOG6 = math.log(6.0)
_BISECTION_STEPS = 64
# Search down to 1 − x = e^-200·(1 − x0): models within a hair of the smallest one that can
# reach the target at all.
_SEARCH_WIDTH = 200.0


def _band(prob: float) -> tuple[float, float]:
    prob = probability("prob", prob)
    tail = (1.0 - prob) / 2.0
    return tail, 1.0 - tail


def _summary_columns(name: str, draws: np.ndarray, quantiles: tuple[float, float]) -> dict[str, np.ndarray]:
    """Median and band over draws (axis 0) of a (draws, points) array."""
    lower, median, upper = np.quantile(draws, [quantiles[0], 0.5, quantiles[1]], axis=0)
    return {f"{name}_median": median, f"{name}_lower": lower, f"{name}_upper": upper}


# -- compute-optimal -----------------------------------------------------------------------

def optimal_allocation_draws(fit: "ScalingFit", flops: object,
                             inputs: object = None) -> dict[str, np.ndarray]:
    """Per-draw compute-optimal split at each budget (``inputs``: the law's extra inputs,
    one value or one per budget, held fixed).

    Returns
    -------
    dict of str to numpy.ndarray
        ``params``, ``tokens``, ``tokens_per_param`` and ``loss`` (the law's expected loss at
        the optimum), each of shape (n_draws, n_budgets).

    Raises
    ------
    ModelMismatchError
        For a law without N and D (the compute law has no split to optimise).
    """
    c = positives("flops", flops)
    log_c = np.log(c)[None, :]
    fixed = _fixed_log_inputs(fit, inputs, c.size, axis=0)
    theta = fit.theta(expand=True)
    log_n = fit.law.optimal_log_params(theta, fit.reference, log_c, fixed or None)
    log_d = log_c - _LOG6 - log_n
    log_x = {"params": log_n, "tokens": log_d, "flops": log_c, **fixed}
    log_loss = fit.law.log_loss(theta, log_x, fit.reference, np)
    shift = discrepancy_shift(fit, log_x, theta["sigma"], theta, log_loss)
    if shift is not None:
        log_loss = log_loss + shift
    return {"params": np.exp(log_n), "tokens": np.exp(log_d),
            "tokens_per_param": np.exp(log_d - log_n), "loss": np.exp(log_loss)}


def _fixed_log_inputs(fit: "ScalingFit", inputs: object, size: int,
                      axis: int) -> dict[str, np.ndarray]:
    """The law's extra inputs as log values laid out along ``axis`` of (draws, budgets)
    (axis 0: a row (1, budgets)) or (budgets, draws) (axis 1: a column (budgets, 1))."""
    if not fit.law.extra_inputs and not inputs:
        return {}
    from .forecast import extra_input_values

    values = extra_input_values(fit, inputs or {}, size)
    return {name: (np.log(v)[None, :] if axis == 0 else np.log(v)[:, None])
            for name, v in values.items()}


def optimal_allocation(fit: "ScalingFit", flops: object, prob: float = 0.9, *,
                       inputs: object = None) -> pd.DataFrame:
    """Compute-optimal parameters and tokens at each budget, with posterior bands.

    Per posterior draw the split minimising the law's loss under C = 6·N·D is solved in closed
    form; the table summarises those draws.

    Parameters
    ----------
    fit : ScalingFit
        A fit of a law of N and D (e.g. ``"chinchilla"``).
    flops : float or sequence of float
        Training budgets in FLOPs.
    prob : float
        Mass of the central (equal-tailed) band.
    inputs : dict, optional
        The law's extra inputs, one value or one per budget, held fixed by the split (e.g.
        ``{"unique_tokens": 1e11}`` for the data-constrained law, whose split is numeric).

    Returns
    -------
    pandas.DataFrame
        Column ``flops``, any extra inputs, and, each as ``*_median``, ``*_lower``, ``*_upper``: ``params`` (N,
        parameters), ``tokens`` (D, training tokens), ``tokens_per_param`` (D/N) and ``loss``
        (the law's expected loss at the optimum: parameter uncertainty and the law's own
        error past the fitted range, the discrepancy; no run-to-run noise).
        ``attrs["prob"]``. The split itself is the law's optimum per draw (δ does not move it).

    Warns
    -----
    ExtrapolationWarning
        When the median optimal N or D lies outside the range of model sizes or token counts
        of the runs: the split then rests on the fitted exponents holding beyond the data.
    """
    quantiles = _band(prob)
    c = positives("flops", flops)
    fixed = _fixed_log_inputs(fit, inputs, c.size, axis=1)
    summary = _optimal_summary(fit, c, np.array([quantiles[0], 0.5, quantiles[1]]), fixed)
    table = pd.DataFrame({"flops": c, **{name: np.exp(v[:, 0]) for name, v in fixed.items()}})
    # D = C/(6·N) and D/N = C/(6·N²) fall as N rises, so their quantiles are those of N read
    # backwards: each band end is then a consistent split with 6·N·D = C (and half the sorting).
    n_lower, n_median, n_upper = summary[:, 0], summary[:, 1], summary[:, 2]
    # (c / 6v) / v, not c / (6v²): v² overflows past ~1e154 parameters.
    for name, transform in (("params", lambda v: v), ("tokens", lambda v: c / (6.0 * v)),
                            ("tokens_per_param", lambda v: c / (6.0 * v) / v)):
        flip = name != "params"
        table[f"{name}_median"] = transform(n_median)
        table[f"{name}_lower"] = transform(n_upper if flip else n_lower)
        table[f"{name}_upper"] = transform(n_lower if flip else n_upper)
    from .forecast import overflow_to_inf

    loss = overflow_to_inf(summary[:, 3:6], "the loss at the optimum")
    table["loss_median"], table["loss_lower"], table["loss_upper"] = loss[:, 1], loss[:, 0], loss[:, 2]
    _warn_outside_runs(fit, table["params_median"].to_numpy(), table["tokens_median"].to_numpy())
    table.attrs.update({"prob": float(prob), "law": fit.law.name})
    return table


def _optimal_summary(fit: "ScalingFit", flops: np.ndarray, levels: np.ndarray,
                     fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Quantiles over draws of N_opt and of the loss there, per budget: (budgets, 2·levels).

    The same numbers as :func:`optimal_allocation_draws` summarised with ``np.quantile``,
    computed chunk by chunk on every core (:mod:`bayescale._pointwise`).
    """
    from ._pointwise import Workspace, map_point_chunks, row_quantiles  # numba: on first use
    from .forecast import draw_rows

    law = fit.law
    fixed = fixed or {}
    if not law.splits_compute:
        law.optimal_log_params(fit.theta(), fit.reference, np.log(flops))  # raises the mismatch
    theta = draw_rows(fit)
    log_c = np.log(flops)[:, None]

    def chunk_summary(part: slice, workspace: Workspace) -> np.ndarray:
        rows = part.stop - part.start
        held = {name: v[part] for name, v in fixed.items()}
        log_n = law.optimal_log_params(theta, fit.reference, log_c[part], held or None)
        log_d = log_c[part] - _LOG6 - log_n
        log_x = {"params": log_n, "tokens": log_d, "flops": log_c[part], **held}
        loss = law.loss(theta, log_x, fit.reference, out=workspace.array("loss", rows, fit.n_draws),
                        work=workspace.array("work", rows, fit.n_draws))
        shift = (None if getattr(fit, "discrepancy", None) is None else
                 discrepancy_shift(fit, log_x, theta["sigma"], theta, np.log(loss)))
        if shift is not None:
            loss *= np.exp(shift, out=shift)
        return np.column_stack([row_quantiles(np.exp(log_n, out=log_n), levels),
                                row_quantiles(loss, levels)])

    return np.concatenate(map_point_chunks(chunk_summary, flops.size, fit.n_draws))


def _warn_outside_runs(fit: "ScalingFit", params: np.ndarray, tokens: np.ndarray) -> None:
    for label, symbol, values in (("model sizes", "N", params), ("token counts", "D", tokens)):
        observed = fit.runs.column("params" if symbol == "N" else "tokens")
        low, high = float(np.min(observed)), float(np.max(observed))
        outside = values[(values < low) | (values > high)]
        if outside.size:
            far = outside[np.argmax(np.abs(np.log(outside / np.clip(outside, low, high))))]
            warnings.warn(
                f"the median optimal {symbol} ({far:.3g}) lies outside the {label} of the runs "
                f"({low:.3g} to {high:.3g}); the split extrapolates the fitted exponents",
                ExtrapolationWarning, skip_file_prefixes=PACKAGE_FILES)


# -- inference-aware -----------------------------------------------------------------------

def _chinchilla_draws(fit: "ScalingFit") -> dict[str, np.ndarray]:
    names = ("E", "A", "B", "alpha", "beta")
    if fit.law.extra_inputs:
        raise ModelMismatchError(
            f"inference-aware allocation solves E + A/N^alpha + B/D^beta = target in closed "
            f"form; the {fit.law.name} law's loss also depends on "
            f"{', '.join(fit.law.extra_inputs)}, so that solution would be wrong for it: fit "
            "the 'chinchilla' law for this question")
    if not fit.law.splits_compute or not set(names) <= set(fit.law.paper_parameters):
        raise ModelMismatchError(
            f"inference-aware allocation needs a law of the form E + A/N^alpha + B/D^beta; the "
            f"{fit.law.name} law is not one: fit the 'chinchilla' law")
    paper = fit.paper_draws()
    return {name: np.asarray(paper[name], dtype=np.float64) for name in names}


def inference_optimal_draws(fit: "ScalingFit", target: float,
                            inference_tokens: float) -> dict[str, np.ndarray]:
    """Per draw, the least-total-cost model reaching ``target`` and the Chinchilla-optimal one.

    Minimises 6·N·D + 2·N·T subject to E + A/N^α + B/D^β = target. Writing x = (A/N^α)/(target
    − E), the constraint gives N and D as functions of x and the stationarity condition
    6·D·(1 − α·x/(β·(1 − x))) + 2·T = 0 has one root in (β/(α+β), 1), where its left side
    falls from 2·T to −∞; it is found by bisection in log(1 − x), vectorised over draws. T = 0
    gives x = β/(α+β): the Chinchilla-optimal model for the target.

    Parameters
    ----------
    target : float
        Target loss.
    inference_tokens : float
        Tokens the model will serve over its lifetime, T (≥ 0).

    Returns
    -------
    dict of str to numpy.ndarray
        Shape (n_draws,) each: ``params``, ``tokens``, ``train_flops``, ``inference_flops``,
        ``total_flops`` and the same with prefix ``chinchilla_``, ``savings`` (1 − total /
        chinchilla total), ``reachable`` (E < target). NaN where unreachable.
    """
    target = positive("target", target)
    t_inf = nonnegative("inference_tokens", inference_tokens)
    p = _chinchilla_draws(fit)
    alpha, beta = p["alpha"], p["beta"]
    reachable = p["E"] < target
    log_r = np.log(np.where(reachable, target - p["E"], np.nan))
    log_a, log_b = np.log(p["A"]), np.log(p["B"])

    def log_n_of(log_x: np.ndarray) -> np.ndarray:
        return (log_a - log_r - log_x) / alpha

    def log_d_of(log_1mx: np.ndarray) -> np.ndarray:
        return (log_b - log_r - log_1mx) / beta

    # y = log(1 − x); the Chinchilla optimum sits at y0 = log(α/(α+β)).
    y0 = np.log(alpha / (alpha + beta))
    y_hi, y_lo = y0.copy(), y0 - _SEARCH_WIDTH
    if t_inf > 0:
        log_2t = math.log(2.0 * t_inf)
        with np.errstate(invalid="ignore"):
            for _ in range(_BISECTION_STEPS):
                y = 0.5 * (y_hi + y_lo)
                x = -np.expm1(y)
                # q = α·x/(β·(1 − x)) − 1 > 0 here; the derivative is negative when 6·D·q > 2·T.
                log_q = np.log(alpha * x / (beta * np.exp(y)) - 1.0)
                negative = _LOG6 + log_d_of(y) + log_q > log_2t
                # Negative derivative: the model is still too small, the root lies at larger y.
                y_lo = np.where(negative, y, y_lo)
                y_hi = np.where(negative, y_hi, y)
        y = 0.5 * (y_hi + y_lo)
    else:
        y = y0

    log_t = math.log(t_inf) if t_inf > 0 else -math.inf

    def costs(y: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
        log_n = log_n_of(np.log1p(-np.exp(y)))
        log_d = log_d_of(y)
        # In logs: 2·N·T passes 1e308 for T near 1e300 while the saving stays well defined.
        log_train, log_infer = _LOG6 + log_n + log_d, math.log(2.0) + log_n + log_t
        with np.errstate(over="ignore", invalid="ignore"):  # NaN marks unreachable draws
            return {f"{prefix}params": np.exp(log_n), f"{prefix}tokens": np.exp(log_d),
                    f"{prefix}train_flops": np.exp(log_train),
                    f"{prefix}inference_flops": np.exp(log_infer),
                    f"{prefix}total_flops": np.exp(np.logaddexp(log_train, log_infer)),
                    f"{prefix}log_total": np.logaddexp(log_train, log_infer)}

    out = {**costs(y, ""), **costs(y0, "chinchilla_")}
    log_total, log_chinchilla = out.pop("log_total"), out.pop("chinchilla_log_total")
    # Both minimise over the same constraint set; rounding must not make savings negative.
    with np.errstate(invalid="ignore"):
        log_total = np.minimum(log_total, log_chinchilla)
        out["total_flops"] = np.minimum(out["total_flops"], out["chinchilla_total_flops"])
        out["savings"] = -np.expm1(log_total - log_chinchilla)
    out["reachable"] = reachable
    return out


def inference_optimal_allocation(fit: "ScalingFit", target: object, inference_tokens: object,
                                 prob: float = 0.9) -> pd.DataFrame:
    """The N and D reaching a target loss at least total (training + inference) cost.

    Following Sardana et al. (2023), a model that will serve T tokens costs 6·N·D FLOPs to
    train and 2·N·T to serve; for a target loss the cheapest model is smaller and trained
    longer than the Chinchilla-optimal one. Solved per posterior draw
    (:func:`inference_optimal_draws`) and summarised with median and band over the draws that
    can reach the target at all.

    Parameters
    ----------
    fit : ScalingFit
        A fit of the Chinchilla law.
    target : float or sequence of float
        Target loss(es).
    inference_tokens : float or sequence of float
        Lifetime inference tokens T (≥ 0); broadcast against ``target``.
    prob : float
        Mass of the central band.

    Returns
    -------
    pandas.DataFrame
        One row per (target, inference_tokens): ``p_unreachable`` (share of draws with
        E ≥ target), then ``*_median``, ``*_lower``, ``*_upper`` of ``params``, ``tokens``,
        ``tokens_per_param``, ``train_flops``, ``inference_flops``, ``total_flops``,
        ``chinchilla_params``, ``chinchilla_tokens``, ``chinchilla_total_flops`` and
        ``savings`` (fraction of the Chinchilla-optimal total cost saved). The plan one would
        pick now is the median N and D; ``plan_prob`` is P(loss ≤ target) for a run of that
        plan, run-to-run noise included (:func:`bayescale.risk.prob_below`).

    Warns
    -----
    ExtrapolationWarning
        When the median N or D lies outside the runs' range.
    """
    quantiles = _band(prob)
    targets = positives("target", target)
    t_inf = nonnegatives("inference_tokens", inference_tokens)
    try:
        targets, t_inf = np.broadcast_arrays(targets, t_inf)
    except ValueError:
        raise ArgumentError(f"target has {targets.size} values and inference_tokens {t_inf.size}: "
                         "give equally many (or one of either)") from None
    names = ("params", "tokens", "tokens_per_param", "train_flops", "inference_flops",
             "total_flops", "chinchilla_params", "chinchilla_tokens", "chinchilla_total_flops",
             "savings")
    rows = []
    for t, inference in zip(targets, t_inf):
        d = inference_optimal_draws(fit, float(t), float(inference))
        d["tokens_per_param"] = d["tokens"] / d["params"]
        ok = d["reachable"]
        row = {"target": float(t), "inference_tokens": float(inference),
               "p_unreachable": float(np.mean(~ok))}
        for name in names:
            values = d[name][ok] if ok.any() else np.full(1, np.nan)
            for column, value in _summary_columns(name, values[:, None], quantiles).items():
                row[column] = float(value[0])
        rows.append(row)
    columns = ["target", "inference_tokens", "p_unreachable"] + [
        f"{name}_{end}" for name in names for end in ("median", "lower", "upper")]
    table = pd.DataFrame(rows, columns=columns)   # no targets: an empty table, not a KeyError
    plan = table[["params_median", "tokens_median"]].to_numpy(dtype=np.float64)
    finite = np.isfinite(plan).all(axis=1)
    table["plan_prob"] = np.nan
    with warnings.catch_warnings():
        # The range check below says it once, in terms of N and D.
        warnings.simplefilter("ignore", ExtrapolationWarning)
        for i in np.flatnonzero(finite):
            table.loc[i, "plan_prob"] = prob_below(fit, float(table.loc[i, "target"]),
                                                   params=plan[i, 0], tokens=plan[i, 1],
                                                   mcse="none")
    if finite.any():
        _warn_outside_runs(fit, plan[finite, 0], plan[finite, 1])
    table.attrs.update({"prob": float(prob), "law": fit.law.name})
    return table
