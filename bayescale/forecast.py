"""Loss forecasts from posterior draws: numpy only, no PyMC.

Two kinds of band:

- ``kind="mean"``: uncertainty about the law itself — where the expected loss of a run at
  that scale lies.
- ``kind="observed"``: what one actual training run would measure — the law's uncertainty
  plus run-to-run noise (the likelihood's σ, and ν for Student-t).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .exceptions import ExtrapolationWarning, ModelMismatchError

if TYPE_CHECKING:
    from .fit import ScalingFit

__all__ = ["resolve_points", "log_loss_draws", "loss_draws", "forecast_table", "KINDS",
           "EXTRAPOLATION_DECADES"]

KINDS = ("observed", "mean")
#: Forecasts this many decades of compute past the largest run raise ExtrapolationWarning.
EXTRAPOLATION_DECADES = 2.0


def _positive_array(name: str, values: object) -> np.ndarray:
    try:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D sequence, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array) | (array <= 0))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {float(array[bad[0]])!r}: must be a finite positive number")
    return array


def resolve_points(fit: "ScalingFit", flops: object = None, params: object = None,
                   tokens: object = None) -> pd.DataFrame:
    """Turn the user's flops or (params, tokens) into a table of points to forecast.

    With ``flops`` alone, a law of N and D trains each budget at the posterior-median
    compute-optimal split: N = exp(median over draws of log N_opt(C)), D = C / (6·N).
    """
    law = fit.law
    if params is not None or tokens is not None:
        if params is None or tokens is None:
            raise ValueError("give params= and tokens= together (or flops= alone)")
        if flops is not None:
            raise ValueError("give either flops= or params= and tokens=, not both: "
                             "flops is 6·params·tokens")
        n = _positive_array("params", params)
        d = _positive_array("tokens", tokens)
        try:
            n, d = np.broadcast_arrays(n, d)
        except ValueError:
            raise ValueError(f"params has {n.size} values and tokens {d.size}: give equally many "
                             "(or one of each)") from None
        return pd.DataFrame({"flops": 6.0 * n * d, "params": n, "tokens": d})
    if flops is None:
        raise ValueError("give flops= (compute budgets in FLOPs) or params= and tokens=")
    c = _positive_array("flops", flops)
    if "params" not in law.inputs:
        return pd.DataFrame({"flops": c, "params": np.nan, "tokens": np.nan})
    log_n_opt = law.optimal_log_params(fit.theta(expand=True), fit.reference, np.log(c)[None, :])
    n = np.exp(np.median(log_n_opt, axis=0))
    return pd.DataFrame({"flops": c, "params": n, "tokens": c / (6.0 * n)})


def _log_inputs(points: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: np.log(points[name].to_numpy(dtype=np.float64))[None, :]
            for name in ("params", "tokens", "flops")}


def log_loss_draws(fit: "ScalingFit", points: pd.DataFrame) -> np.ndarray:
    """Expected log loss per draw and point, shape (draws, points)."""
    theta = fit.theta(expand=True)
    for name in fit.law.inputs:
        if points[name].isna().any():
            raise ModelMismatchError(f"the {fit.law.name} law needs {name} for every point")
    return fit.law.log_loss(theta, _log_inputs(points), fit.reference, np)


def noise_draws(fit: "ScalingFit", shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Run-to-run noise on log loss for each draw, shape ``shape`` = (draws, points).

    One noise value per draw, shared by all points: each point's distribution is the same as
    with independent noise, but bands along a curve come out smooth and a point's forecast
    does not depend on which other points are asked for in the same call.
    """
    theta = fit.theta()
    sigma = theta["sigma"][:, None]
    if fit.likelihood == "student_t":
        standard = rng.standard_t(theta["nu"])[:, None]
    else:
        standard = rng.standard_normal(shape[0])[:, None]
    return np.broadcast_to(sigma * standard, shape)


def loss_draws(fit: "ScalingFit", points: pd.DataFrame, kind: str = "observed",
               random_seed: int | None = None) -> np.ndarray:
    """Loss per draw and point, shape (draws, points); ``kind`` as in :func:`forecast_table`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    log_loss = log_loss_draws(fit, points)
    if kind == "observed":
        rng = np.random.default_rng(fit.settings["random_seed"] if random_seed is None else random_seed)
        log_loss = log_loss + noise_draws(fit, log_loss.shape, rng)
    return np.exp(log_loss)


def warn_if_extrapolating(fit: "ScalingFit", flops: np.ndarray, stacklevel: int = 3) -> None:
    """Warn when a point lies more than EXTRAPOLATION_DECADES past the largest run's compute."""
    largest = float(fit.runs.frame["flops"].max())
    decades = np.log10(np.max(flops) / largest) if len(flops) else -math.inf
    if decades > EXTRAPOLATION_DECADES:
        warnings.warn(
            f"forecasting {decades:.1f} decades of compute past the largest run "
            f"({largest:.3g} FLOPs); the bands assume the law holds that far, which the data "
            "cannot check", ExtrapolationWarning, stacklevel=stacklevel)


def forecast_table(fit: "ScalingFit", flops: object = None, params: object = None,
                   tokens: object = None, prob: float = 0.9, kind: str = "observed",
                   random_seed: int | None = None) -> pd.DataFrame:
    """Forecast loss at compute budgets or at explicit (N, D), with a central band.

    See :meth:`bayescale.ScalingFit.forecast` for the parameters.
    """
    if not 0.0 < float(prob) < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob!r}")
    points = resolve_points(fit, flops=flops, params=params, tokens=tokens)
    warn_if_extrapolating(fit, points["flops"].to_numpy(), stacklevel=4)
    samples = loss_draws(fit, points, kind=kind, random_seed=random_seed)
    tail = (1.0 - prob) / 2.0
    lower, median, upper = np.quantile(samples, [tail, 0.5, 1.0 - tail], axis=0)
    table = points.assign(loss_mean=samples.mean(axis=0), loss_median=median,
                          loss_lower=lower, loss_upper=upper)
    table.attrs.update({"prob": float(prob), "kind": kind, "law": fit.law.name})
    return table
