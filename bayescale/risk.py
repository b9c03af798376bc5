"""Budget risk from posterior draws: numpy only, no PyMC.

The questions a lead asks before paying for a training run:

- :func:`prob_below` — what is the chance that a run with this budget reaches loss ≤ target?
- :func:`compute_to_reach` — how much compute do we need to reach the target with 80% (or any)
  confidence?
- :func:`compute_distribution` — how uncertain is the compute the law needs to hit the target,
  and how likely is the target out of reach at any compute (below the irreducible loss E)?
- :func:`risk_table` — probabilities on a grid of targets × budgets.

Definitions
-----------
A run trained with compute C measures the log loss ``log L_obs = mu_s(C) + sigma_s·eps``, where
``mu_s`` is the law's log loss under posterior draw ``s`` plus that draw's discrepancy δ_s(C)
(the law's own error past the fitted range, one standard normal per draw:
:mod:`bayescale.discrepancy`; zero inside the range and for fits saved without one) and
``eps`` is the likelihood's noise (Student-t with ``nu_s`` degrees of freedom, or standard
normal). Given the draws this is exact, no Monte Carlo over the noise::

    P(L_obs ≤ target) = mean over draws s of F((log target − mu_s(C)) / sigma_s)

with F the noise CDF. ``kind="mean"`` drops the noise: the fraction of draws whose expected
loss (law + δ) is ≤ target. With the default ("improvement") discrepancy every draw's loss
still falls with compute, so P rises with the budget and compute_to_reach's bisection holds.

Where the run sits in (N, D) for a law of both (``mode``):

- ``"median"`` (default): the allocation a user would actually pick now — the posterior-median
  compute-optimal N (C = 6·N·D), the same for every draw. The probability then includes the
  cost of not knowing the optimum exactly.
- ``"oracle"``: each draw trains at its own optimum (an upper bound on what any one allocation
  can give).

Explicit ``params=`` and ``tokens=`` evaluate a concrete plan instead. A law of compute alone
has no allocation: the budget is all there is.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from ._validate import choice, is_scalar, positives, probabilities, probability, real
from .discrepancy import add_discrepancy, discrepancy_shift
from .exceptions import PACKAGE_FILES, ArgumentError, ExtrapolationWarning, UnreachableTargetWarning
from .forecast import KINDS, draw_rows, extra_input_values, resolve_points, warn_if_extrapolating

if TYPE_CHECKING:
    from ._pointwise import Workspace
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["prob_below", "compute_to_reach", "compute_distribution", "compute_to_target_draws",
           "risk_table", "noise_cdf", "MODES", "MCSE_METHODS"]

MODES = ("median", "oracle")
MCSE_METHODS = ("ess", "iid", "none")
_LOG6 = math.log(6.0)
# compute_to_reach searches budgets in [1, 1e50] FLOPs; per-draw compute in [1, 1e300].
_SEARCH_LOG_FLOPS = (0.0, math.log(1e50))
_DRAW_LOG_FLOPS = (0.0, math.log(1e300))
# Bisection stops when the bracket is this narrow in log FLOPs (relative 1e-10 in C).
_LOG_TOL = 1e-10


# -- noise ---------------------------------------------------------------------------------

def noise_cdf(z: np.ndarray, nu: np.ndarray | float | None) -> np.ndarray:
    """CDF of the standardised noise on log loss: Student-t with ``nu`` d.o.f., or normal.

    For a whole-number ``nu`` shared by every draw (the default fixes ν = 4) the closed-form
    finite series is used (:func:`bayescale._pointwise.t_cdf_integer`); it is exact to
    rounding and about 30x faster than :func:`scipy.special.stdtr` (6.5 against 195 ns a
    value on this project's machine), which handles every other ``nu``.

    Parameters
    ----------
    z : numpy.ndarray
        Standardised values (log target − log loss) / sigma.
    nu : float, array broadcasting against ``z``, or None
        Degrees of freedom; None for normal noise.
    """
    z = np.asarray(z, dtype=np.float64)
    if nu is None:
        return special.ndtr(z)
    whole = _whole_nu(nu)
    if whole is not None:
        from ._pointwise import t_cdf_integer

        return t_cdf_integer(z, whole)
    return special.stdtr(nu, z)


def _whole_nu(nu: np.ndarray | float) -> int | None:
    """nu as an int when it is one whole number the closed-form CDF handles, else None."""
    from ._pointwise import NU_INTEGER_MAX

    values = np.unique(np.asarray(nu, dtype=np.float64))
    if values.size == 1 and float(values[0]).is_integer() and 1 <= values[0] <= NU_INTEGER_MAX:
        return int(values[0])
    return None


# -- shared pieces -------------------------------------------------------------------------

def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    choice(name, value, choices)


def _noise(fit: "ScalingFit") -> tuple[np.ndarray, np.ndarray | float | None]:
    """sigma as a row of draws (1, S); nu as a row, one float when every draw shares it (a
    fixed ν), or None for normal noise."""
    theta = draw_rows(fit)
    if fit.likelihood != "student_t":
        return theta["sigma"], None
    nu = theta["nu"]
    return theta["sigma"], float(nu[0, 0]) if (nu == nu[0, 0]).all() else nu


def _prob_draws(fit: "ScalingFit", log_target: float | np.ndarray, mu: np.ndarray,
                kind: str) -> np.ndarray:
    """Per-draw P(loss ≤ target) given the law's log loss ``mu`` (points, draws)."""
    if kind == "mean":
        return (mu <= log_target).astype(np.float64)
    sigma, nu = _noise(fit)
    return noise_cdf((log_target - mu) / sigma, nu)


def _log_of_loss(fit: "ScalingFit", theta: dict[str, np.ndarray], log_x: dict[str, np.ndarray],
                 workspace: "Workspace | None" = None) -> np.ndarray:
    """log L, from the law's linear form (cheaper than log-sum-exp) while L is finite.

    With a ``workspace`` the result is one of its arrays, of shape (points, draws).
    """
    from ._pointwise import fused_log_loss  # numba: on first use

    buffers = {}
    log_loss = None
    shape = np.broadcast_shapes(*(np.shape(x) for x in log_x.values()))
    if workspace is not None:
        buffers = {"out": workspace.array("loss", shape[0], fit.n_draws),
                   "work": workspace.array("work", shape[0], fit.n_draws)}
    if len(shape) == 2 and shape[1] == 1:  # points down a column: the compiled pass
        out = buffers["out"] if buffers else np.empty((shape[0], fit.n_draws))
        log_loss = fused_log_loss(fit.law, theta, fit.reference,
                                  {k: np.broadcast_to(v, shape) for k, v in log_x.items()}, out)
    if log_loss is None:
        loss = fit.law.loss(theta, log_x, fit.reference, **buffers)
        # L beyond 1e308 (L > 0, so its max tells): only log-sum-exp keeps the value finite.
        if loss.size and math.isinf(loss.max()):
            log_loss = fit.law.log_loss(theta, log_x, fit.reference, np)
        else:
            log_loss = np.log(loss, out=loss)
    # δ: the law is evaluated again only at points past the fitted range.
    return add_discrepancy(fit, log_x, _a_parameter(theta), theta, log_loss, workspace)


def _a_parameter(theta: dict[str, np.ndarray]) -> np.ndarray:
    """One parameter array: its shape says how the draws lie."""
    return theta["sigma"] if "sigma" in theta else next(iter(theta.values()))


def _nan_to_inf(mu: np.ndarray) -> np.ndarray:
    """A NaN log loss comes from inf − inf in an overflowing draw: the loss is huge (inf)."""
    return np.where(np.isnan(mu), np.inf, mu) if np.isnan(mu).any() else mu


def _oracle_log_loss(fit: "ScalingFit", theta: dict[str, np.ndarray], log_c: np.ndarray,
                     workspace: "Workspace | None" = None,
                     fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The law's log loss with each draw at its own compute-optimal split (broadcasting);
    ``fixed`` holds the law's extra inputs (log values), which the split keeps fixed."""
    law = fit.law
    fixed = fixed or {}
    if not law.splits_compute:
        return _log_of_loss(fit, theta, {"flops": log_c, **fixed}, workspace)
    log_n = law.optimal_log_params(theta, fit.reference, log_c, fixed or None)
    log_d = log_c - _LOG6 - log_n
    return _log_of_loss(fit, theta, {"params": log_n, "tokens": log_d, "flops": log_c, **fixed},
                        workspace)


def _extras(fit: "ScalingFit", inputs: object, size: int) -> dict[str, np.ndarray]:
    """The law's extra inputs for ``size`` rows (empty for a law without any), validated."""
    if not fit.law.extra_inputs and not inputs:
        return {}
    return extra_input_values(fit, inputs or {}, size)


def _rows(extras: dict[str, np.ndarray], which: np.ndarray) -> dict[str, np.ndarray] | None:
    """The extra inputs of the selected rows (None when the law has none)."""
    return {name: values[which] for name, values in extras.items()} if extras else None


def _points(fit: "ScalingFit", flops: object, params: object, tokens: object,
            mode: str, inputs: object = None) -> pd.DataFrame:
    _check_choice("mode", mode, MODES)
    if fit.law.extra_inputs or inputs:
        if mode == "oracle":
            raise ValueError(f"mode='oracle' is not available for the {fit.law.name} law "
                             f"(extra inputs {list(fit.law.extra_inputs)}); use mode='median'")
        return resolve_points(fit, flops=flops, params=params, tokens=tokens, inputs=inputs)
    if params is not None or tokens is not None:
        if mode == "oracle":
            raise ArgumentError("mode='oracle' trains every draw at its own optimum; it cannot be "
                             "combined with explicit params= and tokens=")
        return resolve_points(fit, flops=flops, params=params, tokens=tokens)
    if flops is None:
        raise ArgumentError("give flops= (compute budgets in FLOPs) or params= and tokens=")
    if mode == "oracle" or not fit.law.splits_compute:
        c = positives("flops", flops)
        return pd.DataFrame({"flops": c, "params": np.nan, "tokens": np.nan})
    return resolve_points(fit, flops=flops)


def _point_log_inputs(points: pd.DataFrame, mode: str) -> dict[str, np.ndarray]:
    """log flops, and log params and tokens unless each draw trains at its own optimum, as
    columns of shape (points, 1)."""
    names = ["flops"]
    if mode != "oracle" and not points["params"].isna().all():
        names += ["params", "tokens"]
    names += [c for c in points.columns if c not in ("flops", "params", "tokens")]
    return {name: np.log(points[name].to_numpy(dtype=np.float64))[:, None] for name in names}


def _log_loss_rows(fit: "ScalingFit", theta: dict[str, np.ndarray], log_x: dict[str, np.ndarray],
                   workspace: "Workspace | None" = None) -> np.ndarray:
    """The law's log loss per point and draw (points, draws) at :func:`_point_log_inputs`."""
    if "params" not in log_x:
        return _oracle_log_loss(fit, theta, log_x["flops"], workspace)
    return _log_of_loss(fit, theta, log_x, workspace)


def _mean_log_loss(fit: "ScalingFit", points: pd.DataFrame, mode: str) -> np.ndarray:
    """The law's log loss per point and draw, shape (points, draws)."""
    return _log_loss_rows(fit, draw_rows(fit), _point_log_inputs(points, mode))


def ess_mean_rows(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """ArviZ's ESS of the mean (``az.ess(method="mean")``) for every row at once.

    The same estimator as ``arviz_stats`` — split chains, FFT autocovariance, Geyer's initial
    positive then initial monotone sequence — written over a leading axis of points instead
    of ArviZ's Python loop over them; tested equal to ArviZ's. The reference for the compiled
    kernel :func:`bayescale._ess.ess_mean_rows_compiled` that prob_below uses.

    Parameters
    ----------
    values : numpy.ndarray
        Per-draw values, shape (points, chains·draws), chain-major.
    shape : (int, int)
        (chains, draws).

    Returns
    -------
    numpy.ndarray
        Shape (points,); NaN where ArviZ gives NaN (fewer than 4 draws, non-finite values).
    """
    from scipy.fft import next_fast_len

    chains, draws = shape
    points = values.shape[0]
    if draws < 4 or points == 0:
        return np.full(points, np.nan)
    cube = values.reshape(points, chains, draws)
    half = draws // 2
    split = np.concatenate([cube[:, :, :half], cube[:, :, draws - half:]], axis=1)
    m, n = split.shape[1], half
    total = m * n
    chain_mean = split.mean(axis=2)
    centered = split - chain_mean[:, :, None]
    size = next_fast_len(2 * n)
    spectrum = np.fft.rfft(centered, n=size, axis=2)
    spectrum *= np.conjugate(spectrum)
    acov = np.fft.irfft(spectrum, n=size, axis=2)[:, :, :n] / n
    mean_acov = acov.mean(axis=1)                                   # (points, n)
    mean_var = mean_acov[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + chain_mean.var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]
    rho[:, 0] = 1.0
    # Pair sums P_k = rho[2k] + rho[2k+1]; ArviZ's loop visits k = 1..k_max while the previous
    # pair is positive and stops at the first pair <= 0 (K); monotone: running minimum.
    k_max = max(0, (n - 3) // 2)
    pairs = rho[:, 0:2 * k_max + 2:2] + rho[:, 1:2 * k_max + 2:2]   # (points, k_max + 1)
    stop = pairs[:, 1:] <= 0
    first = (np.where(stop.any(axis=1), stop.argmax(axis=1) + 1, k_max) if k_max
             else np.zeros(points, dtype=np.intp))
    k_last = np.where(pairs[:, 0] > 0, first, 0)
    rows = np.arange(points)
    sums = np.concatenate([np.zeros((points, 1)),
                           np.cumsum(np.minimum.accumulate(pairs, axis=1), axis=1)], axis=1)
    rho_last = rho[rows, 2 * k_last]
    pair_last = pairs[rows, k_last]
    last = np.where(k_last == 0, 1.0,
                    np.where((rho_last > 0) | (pair_last >= 0), rho_last, 0.0))
    tau = np.maximum(-1.0 + 2.0 * sums[rows, k_last] + last, 1.0 / np.log10(total))
    ess = total / tau
    constant = (split.max(axis=(1, 2)) - split.min(axis=(1, 2))) < np.finfo(float).resolution
    ess = np.where(constant, float(total), ess)
    finite = np.isfinite(values).all(axis=1) & np.isfinite(var_plus)
    return np.where(finite | constant, ess, np.nan)


def _ess(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """ArviZ's ESS of the mean for each row of per-draw values (points, draws).

    The compiled kernel (:mod:`bayescale._ess`; numba, no GIL, lags computed only as far as
    Geyer's sequence goes) is about 20x faster than :func:`ess_mean_rows` on 10,000 rows of
    4,000 draws; both are ArviZ's estimator and tested equal to ``az.ess``.
    """
    from ._ess import ess_mean_rows_compiled  # numba: imported on first use

    return ess_mean_rows_compiled(values, shape)


def _summarise(fit: "ScalingFit", p: np.ndarray, mcse: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over draws and its Monte-Carlo standard error, per row (point)."""
    mean = p.mean(axis=1)
    if mcse == "none":
        return mean, np.full(mean.shape, np.nan)
    sd = p.std(axis=1, ddof=1) if p.shape[1] > 1 else np.zeros(mean.shape)
    return mean, _mcse(fit, p, mean, sd, mcse)


def _mcse(fit: "ScalingFit", p: np.ndarray, mean: np.ndarray, sd: np.ndarray,
          mcse: str) -> np.ndarray:
    """Monte-Carlo standard error of each row's mean: sd / sqrt(ESS or number of draws)."""
    if mcse == "none":
        return np.full(mean.shape, np.nan)
    n = float(p.shape[1])
    if mcse == "ess":
        shape = (fit.posterior.sizes["chain"], fit.posterior.sizes["draw"])
        # A row with no spread (all draws 0 or 1) is known exactly: skip ArviZ there.
        varying = np.flatnonzero(sd > 0)
        ess = np.full(mean.shape, n)
        if varying.size == mean.size:
            ess = _ess(p, shape)        # every row: no copy of the (points, draws) array
        elif varying.size:
            ess[varying] = _ess(p[varying], shape)
        n = np.where(np.isfinite(ess) & (ess > 0), ess, n)
    return np.where(sd > 0, sd / np.sqrt(n), 0.0)


def _target_scalar(target: object) -> float:
    value = real("target", target)
    if value <= 0:
        raise ArgumentError(f"target must be a finite positive loss, got {target!r}")
    return value


# -- P(loss ≤ target) ----------------------------------------------------------------------

def prob_below(fit: "ScalingFit", target: float, flops: object = None, *, params: object = None,
               tokens: object = None, mode: str = "median", kind: str = "observed",
               mcse: str = "ess", inputs: object = None) -> float | pd.DataFrame:
    """Probability that a training run reaches loss ≤ ``target``.

    Parameters
    ----------
    fit : ScalingFit
    target : float
        Target loss (same units as the runs' loss, e.g. nats/token).
    flops : float or sequence of float, optional
        Training budgets in FLOPs.
    params, tokens : float or sequence of float, optional
        An explicit plan: N parameters trained on D tokens (instead of ``flops``).
    mode : {"median", "oracle"}
        ``"median"``: the run trains at the posterior-median compute-optimal N (the allocation
        one would pick now). ``"oracle"``: each posterior draw at its own optimum.
    kind : {"observed", "mean"}
        ``"observed"`` includes run-to-run noise (the loss one run would measure, exact given
        the draws); ``"mean"`` asks about the law's expected loss only: parameter uncertainty
        and, past the fitted range, the law's own error (the discrepancy δ), no noise.
    mcse : {"ess", "iid", "none"}
        Monte-Carlo standard error of the probability: sd of the per-draw probabilities over
        sqrt(ESS), with ArviZ's ESS of the mean over (chain, draw) (``"ess"``, compiled: about
        0.6 s for 10,000 budgets × 4,000 draws on 2 cores), or over sqrt(number of draws) (``"iid"``, fast, ignores autocorrelation), or
        not computed (``"none"``).

    Returns
    -------
    float or pandas.DataFrame
        A float when one budget (or one plan) is given as a scalar; otherwise columns
        ``flops``, ``params``, ``tokens`` (the allocation used; NaN for ``"oracle"`` and for a
        compute law), ``prob`` and ``mcse``; ``attrs`` holds target, mode, kind, mcse method.

    Warns
    -----
    ExtrapolationWarning
        When a budget lies more than two decades of compute past the largest run.

    Examples
    --------
    >>> fit.prob_below(2.05, flops=3e23)                  # doctest: +SKIP
    0.83
    """
    target = _target_scalar(target)
    _check_choice("kind", kind, KINDS)
    _check_choice("mcse", mcse, MCSE_METHODS)
    scalar = all(v is None or is_scalar(v) for v in (flops, params, tokens))
    points = _points(fit, flops, params, tokens, mode, inputs)
    warn_if_extrapolating(fit, points["flops"].to_numpy())
    log_target = math.log(target)
    from ._pointwise import map_point_chunks, noise_cdf_rows  # numba: on first use

    sigma, nu = _noise(fit)
    # The compiled pass covers normal noise and a shared whole-number ν (the default).
    compiled = kind == "observed" and (nu is None or _whole_nu(nu) is not None)
    whole_nu = None if nu is None or not compiled else _whole_nu(nu)

    theta = draw_rows(fit)
    log_x = _point_log_inputs(points, mode)

    def chunk_probs(part: slice, workspace: Workspace) -> tuple[np.ndarray, np.ndarray]:
        mu = _log_loss_rows(fit, theta, {name: x[part] for name, x in log_x.items()}, workspace)
        if not compiled:
            return _summarise(fit, _prob_draws(fit, log_target, _nan_to_inf(mu), kind), mcse)
        p, mean, sd = noise_cdf_rows(mu, log_target, sigma, whole_nu,
                                     out=workspace.array("work", *mu.shape))
        if np.isnan(mean).any():  # draws whose log loss overflowed: loss ≥ anything
            return _summarise(fit, _prob_draws(fit, log_target, _nan_to_inf(mu), kind), mcse)
        return mean, _mcse(fit, p, mean, sd, mcse)

    chunks = map_point_chunks(chunk_probs, len(points), fit.n_draws)
    probs = [mean for mean, _ in chunks]
    errors = [error for _, error in chunks]
    table = points.assign(prob=np.concatenate(probs), mcse=np.concatenate(errors))
    if scalar:
        return float(table["prob"].iloc[0])
    table.attrs.update({"target": target, "mode": mode, "kind": kind, "mcse_method": mcse,
                        "law": fit.law.name})
    return table


def _prob_at_log_flops(fit: "ScalingFit", log_targets: np.ndarray, log_c: np.ndarray,
                       mode: str, kind: str,
                       inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """P(loss ≤ target_k) at budget exp(log_c_k), one pair per k (no warnings, no MCSE)."""
    points = _points(fit, np.exp(log_c), None, None, mode, inputs)
    mu = _mean_log_loss(fit, points, mode)
    return _prob_draws(fit, log_targets[:, None], mu, kind).mean(axis=1)


def _prob_limit(fit: "ScalingFit", log_targets: np.ndarray, kind: str) -> np.ndarray:
    """P(loss ≤ target) with unlimited compute: the law's loss falls to E in every draw."""
    theta = draw_rows(fit)
    log_e = fit.law.log_e(theta, fit.reference, np)
    # δ at unlimited compute: its value at the distance cap.
    far = {"params": np.array(300.0), "tokens": np.array(300.0)}   # e^300: as if unlimited
    far["flops"] = np.array(_LOG6 + 600.0)
    shift = discrepancy_shift(fit, far, theta["sigma"], theta, log_e)
    if shift is not None:
        log_e = log_e + shift
    if kind == "mean":
        return (log_e < log_targets[:, None]).mean(axis=1)
    return _prob_draws(fit, log_targets[:, None], log_e, kind).mean(axis=1)


# -- compute to reach a target -------------------------------------------------------------

def compute_to_reach(fit: "ScalingFit", target: object, prob: object = 0.8, *,
                     mode: str = "median", kind: str = "observed",
                     inputs: object = None) -> float | pd.DataFrame:
    """Smallest training budget whose :func:`prob_below` is at least ``prob``.

    prob_below rises monotonically with compute (every draw's loss falls), so the budget is
    found by bisection in log FLOPs, vectorised over all (target, prob) pairs, to a relative
    precision of 1e-10. The search covers 1 to 1e50 FLOPs.

    Parameters
    ----------
    fit : ScalingFit
    target : float or sequence of float
        Target loss(es).
    prob : float or sequence of float
        Required confidence(s) in (0, 1); broadcast against ``target``.
    mode, kind : str
        As in :func:`prob_below`.
    inputs : dict, optional
        The law's extra inputs held fixed while the budget grows, one value or one per
        target (e.g. ``{"unique_tokens": 1e11}`` for the data-constrained law: the compute to
        reach the target with that much unique data).

    Returns
    -------
    float or pandas.DataFrame
        FLOPs (``inf`` when out of reach) for a scalar target and prob; otherwise columns
        ``target``, ``prob``, ``flops``, ``params``, ``tokens`` (the allocation at that budget),
        any extra inputs, ``prob_limit`` (P(loss ≤ target) with unlimited compute; for a law
        with extra inputs, at the top of the search range, 1e50 FLOPs, with them held fixed)
        and ``reachable``.

    Warns
    -----
    UnreachableTargetWarning
        When even unlimited compute gives prob_below < ``prob``: the posterior puts too much
        mass on an irreducible loss E at or above the target (with ``kind="mean"`` exactly when
        P(E ≥ target) > 1 − prob). The result is ``inf``.
    ExtrapolationWarning
        When the budget found lies more than two decades past the largest run.
    """
    _check_choice("mode", mode, MODES)
    _check_choice("kind", kind, KINDS)
    scalar = is_scalar(target) and is_scalar(prob)
    targets = positives("target", target)
    probs = probabilities("prob", prob)
    try:
        targets, probs = np.broadcast_arrays(targets, probs)
    except ValueError:
        raise ArgumentError(f"target has {targets.size} values and prob {probs.size}: give equally "
                         "many (or one of either)") from None
    extras = _extras(fit, inputs, targets.size)
    everything = np.ones(targets.shape, dtype=bool)
    log_t = np.log(targets)
    lo = np.full(targets.shape, _SEARCH_LOG_FLOPS[0])
    hi = np.full(targets.shape, _SEARCH_LOG_FLOPS[1])
    p_hi = _prob_at_log_flops(fit, log_t, hi, mode, kind, _rows(extras, everything))
    p_lo = _prob_at_log_flops(fit, log_t, lo, mode, kind, _rows(extras, everything))
    # With extra inputs held fixed (unique data, say) the loss levels off above E, so the
    # limit is the probability at the top of the search range.
    limit = p_hi if extras else _prob_limit(fit, log_t, kind)
    reachable = (limit >= probs) & (p_hi >= probs)
    done = p_lo >= probs          # met at the bottom of the search range already
    hi = np.where(done, lo, hi)
    active = reachable & ~done
    while active.any() and np.max(hi[active] - lo[active]) > _LOG_TOL:
        mid = 0.5 * (lo + hi)
        p_mid = _prob_at_log_flops(fit, log_t[active], mid[active], mode, kind,
                                   _rows(extras, active))
        up = np.zeros(targets.shape, dtype=bool)
        up[active] = p_mid >= probs[active]
        hi = np.where(active & up, mid, hi)
        lo = np.where(active & ~up, mid, lo)
    flops = np.where(reachable, np.exp(hi), np.inf)
    if done.any():
        first = int(np.flatnonzero(done)[0])
        warnings.warn(f"target loss {targets[first]:g} is reached with probability "
                      f"{probs[first]:g} already at {math.exp(_SEARCH_LOG_FLOPS[0]):g} FLOP, the "
                      "bottom of the search range: any budget reaches it, and the law was not "
                      "fitted anywhere near that small; returning 1 FLOP",
                      ExtrapolationWarning, skip_file_prefixes=PACKAGE_FILES)
    for t in np.unique(targets[~reachable]):
        # One warning per target, at the lowest confidence it fails (higher ones fail too).
        worst = np.flatnonzero(~reachable & (targets == t))
        k = worst[np.argmin(probs[worst])]
        warnings.warn(_unreachable_message(fit, t, probs[k], limit[k], kind,
                                           {name: float(v[k]) for name, v in extras.items()}),
                      UnreachableTargetWarning, skip_file_prefixes=PACKAGE_FILES)
    finite = flops[np.isfinite(flops)]
    warn_if_extrapolating(fit, finite)
    if scalar:
        return float(flops[0])
    table = pd.DataFrame({"target": targets, "prob": probs, "flops": flops,
                          "params": np.nan, "tokens": np.nan, **extras, "prob_limit": limit,
                          "reachable": reachable})
    if finite.size and mode == "median" and fit.law.splits_compute:
        plan = resolve_points(fit, flops=finite, inputs=_rows(extras, np.isfinite(flops)))
        table.loc[np.isfinite(flops), "params"] = plan["params"].to_numpy()
        table.loc[np.isfinite(flops), "tokens"] = plan["tokens"].to_numpy()
    table.attrs.update({"mode": mode, "kind": kind, "law": fit.law.name})
    return table


def _unreachable_message(fit: "ScalingFit", target: float, prob: float, limit: float,
                         kind: str, fixed: dict[str, float] | None = None) -> str:
    if fixed:
        held = ", ".join(f"{name} = {value:g}" for name, value in fixed.items())
        beyond = "" if limit >= prob else (
            f"even at {math.exp(_SEARCH_LOG_FLOPS[1]):.0e} FLOPs P(loss ≤ {target:g}) is only "
            f"{limit:.3f}: with {held} held fixed the law's loss levels off above the target "
            f"(give more of it to see how much that helps)")
    else:
        e = fit.paper_draws()["E"]
        p_e = float(np.mean(e >= target))
        beyond = "" if limit >= prob else (
            f"even with unlimited compute P(loss ≤ {target:g}) is only {limit:.3f} because the "
            f"irreducible loss E (posterior median {np.median(e):.4g}) is ≥ {target:g} with "
            f"probability {p_e:.3f}")
    if not beyond:
        beyond = (f"it would need more than {math.exp(_SEARCH_LOG_FLOPS[1]):.0e} FLOPs "
                  f"(P with unlimited compute: {limit:.3f})")
    return (f"target loss {target:g} is out of reach with probability {prob:g} (or more): "
            f"{beyond}. Returning inf; choose a higher target or a lower prob"
            + (" (kind='observed' also counts run-to-run noise)" if kind == "observed" else ""))


def compute_to_target_draws(fit: "ScalingFit", target: float,
                            inputs: object = None) -> np.ndarray:
    """Per draw, the compute at which the law's expected loss reaches ``target``.

    Each draw trains at its own compute-optimal split (no noise): the root in C of
    L_s(C) = target, found by bisection in log FLOPs vectorised over draws (relative precision
    1e-10). ``inf`` where the draw's irreducible loss E ≥ target, or where the root lies beyond
    1e300 FLOPs; 1.0 where even 1 FLOP suffices. ``inputs`` holds the law's extra inputs (one
    value each, e.g. ``{"unique_tokens": 1e11}``), fixed while the budget grows.

    Returns
    -------
    numpy.ndarray
        FLOPs, shape (n_draws,).
    """
    log_t = math.log(_target_scalar(target))
    fixed = {name: np.full(fit.n_draws, math.log(float(values[0])))
             for name, values in _extras(fit, inputs, 1).items()}
    theta = fit.theta()
    lo = np.full(fit.n_draws, _DRAW_LOG_FLOPS[0])
    hi = np.full(fit.n_draws, _DRAW_LOG_FLOPS[1])
    reachable = _oracle_log_loss(fit, theta, hi, fixed=fixed) <= log_t
    trivial = _oracle_log_loss(fit, theta, lo, fixed=fixed) <= log_t
    for _ in range(int(math.ceil(math.log2((hi[0] - lo[0]) / _LOG_TOL)))):
        mid = 0.5 * (lo + hi)
        below = _oracle_log_loss(fit, theta, mid, fixed=fixed) <= log_t
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    log_c = np.where(trivial, _DRAW_LOG_FLOPS[0], hi)
    return np.where(reachable, np.exp(log_c), np.inf)


def compute_distribution(fit: "ScalingFit", target: object, prob: float = 0.9, *,
                         inputs: object = None) -> pd.DataFrame:
    """Posterior distribution of the compute needed to reach each target.

    Per draw: the budget at which the law's expected loss (with the draw's discrepancy δ),
    trained compute-optimally, reaches the target (:func:`compute_to_target_draws`);
    quantiles treat unreachable draws as infinite compute.

    Parameters
    ----------
    target : float or sequence of float
        Target loss(es).
    prob : float
        Mass of the central band (``flops_lower``, ``flops_upper``).
    inputs : dict, optional
        The law's extra inputs, one value each, held fixed (as in :func:`compute_to_reach`).

    Returns
    -------
    pandas.DataFrame
        Columns ``target``, any extra inputs, ``flops_median``, ``flops_lower``, ``flops_upper`` (FLOPs, ``inf``
        when that quantile falls among unreachable draws) and ``p_unreachable`` (share of draws
        with E ≥ target, or beyond 1e300 FLOPs); ``attrs["prob"]``.
    """
    prob = probability("prob", prob)
    targets = positives("target", target)
    extras = {name: float(values[0]) for name, values in _extras(fit, inputs, 1).items()}
    tail = (1.0 - prob) / 2.0
    rows = []
    for t in targets:
        c = compute_to_target_draws(fit, float(t), extras or None)
        # inverted_cdf: no interpolation, so quantiles among infinite draws stay inf, not nan.
        lower, median, upper = np.quantile(c, [tail, 0.5, 1.0 - tail], method="inverted_cdf")
        rows.append({"target": float(t), **extras, "flops_median": median, "flops_lower": lower,
                     "flops_upper": upper, "p_unreachable": float(np.mean(~np.isfinite(c)))})
    table = pd.DataFrame(rows)
    table.attrs.update({"prob": prob, "law": fit.law.name})
    return table


# -- grid ----------------------------------------------------------------------------------

def risk_table(fit: "ScalingFit", targets: object, budgets: object, *, mode: str = "median",
               kind: str = "observed", inputs: object = None) -> pd.DataFrame:
    """P(loss ≤ target) on a grid: one row per target, one column per budget.

    Parameters
    ----------
    targets : float or sequence of float
        Target losses.
    budgets : float or sequence of float
        Training budgets in FLOPs.
    mode, kind : str
        As in :func:`prob_below`.
    inputs : dict, optional
        The law's extra inputs, one value or one per budget (as in :func:`prob_below`).

    Returns
    -------
    pandas.DataFrame
        Index ``target``; columns the budgets (FLOPs, floats); values probabilities.
        ``attrs``: ``mode``, ``kind``, ``params`` and ``tokens`` (the allocation per budget,
        empty for ``"oracle"`` and compute laws) and ``mcse_max`` (largest Monte-Carlo
        standard error in the grid, ESS-based).
    """
    _check_choice("kind", kind, KINDS)
    targets = positives("targets", targets)
    points = _points(fit, budgets, None, None, mode, inputs)
    warn_if_extrapolating(fit, points["flops"].to_numpy())
    mu = _nan_to_inf(_mean_log_loss(fit, points, mode))
    values, mcse_max = [], 0.0
    for t in targets:
        mean, error = _summarise(fit, _prob_draws(fit, math.log(t), mu, kind), "ess")
        values.append(mean)
        mcse_max = max(mcse_max, float(np.max(error, initial=0.0)))
    table = pd.DataFrame(np.reshape(values, (len(targets), len(points))),
                         index=pd.Index(targets, name="target"),
                         columns=pd.Index(points["flops"].to_numpy(), name="flops"))
    allocated = points["params"].notna().all()
    table.attrs.update({"mode": mode, "kind": kind, "law": fit.law.name, "mcse_max": mcse_max,
                        "params": points["params"].tolist() if allocated else [],
                        "tokens": points["tokens"].tolist() if allocated else []})
    for name in fit.law.extra_inputs:
        table.attrs[name] = points[name].tolist()
    return table
