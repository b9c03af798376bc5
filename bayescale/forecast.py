"""Loss forecasts from posterior draws: numpy only, no PyMC.

Tables over many points are summarised chunk by chunk on every core
(:mod:`bayescale._pointwise`), so 10,000 budgets × 4,000 draws never sit in memory at once.

Two kinds of band (the predictive of :mod:`bayescale.discrepancy`,
log L_obs = law(θ; x) + δ(x) + ε):

- ``kind="mean"``: the law's expected loss — the posterior's parameter uncertainty plus the
  law's own error past the fitted range (the discrepancy δ, zero inside the range).
- ``kind="observed"``: what one actual training run would measure — the above plus
  run-to-run noise ε (the likelihood's σ, and ν for Student-t).
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._validate import choice, positives, probability, seed
from .data import declared_inputs
from .discrepancy import discrepancy_shift
from .exceptions import (PACKAGE_FILES, ArgumentError, ExtrapolationWarning, ModelMismatchError,
                         NonFiniteWarning)

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["resolve_points", "median_optimal_log_params", "draw_rows",
           "noise_factors", "loss_draws", "forecast_table", "KINDS", "EXTRAPOLATION_DECADES"]

KINDS = ("observed", "mean")
#: Forecasts this many decades of compute past the largest run raise ExtrapolationWarning.
EXTRAPOLATION_DECADES = 2.0


def extra_input_values(fit: "ScalingFit", inputs: object, size: int) -> dict[str, np.ndarray]:
    """The law's declared extra inputs (e.g. unique_tokens) for ``size`` points, validated.

    ``inputs`` maps each extra input the law declares to one value or one per point, over
    the values the fit holds (:meth:`bayescale.ScalingFit.holding`). Raises
    :class:`ModelMismatchError` when one is missing and :class:`ArgumentError` for an input
    the law does not take or a wrong count; returns arrays of shape (size,).
    """
    from ._validate import mapping

    given = dict(mapping("inputs", inputs, "a dict {input name: values}"))
    held = getattr(fit, "held_inputs", None)   # fit.holding(...): the defaults
    if held:
        given = {**held, **given}
    unknown = sorted(set(given) - set(fit.law.extra_inputs))
    if unknown:
        raise ArgumentError(f"the {fit.law.name} law takes no input {unknown[0]!r}; its extra "
                            f"inputs are {list(fit.law.extra_inputs) or 'none'}")
    missing = [name for name in fit.law.extra_inputs if name not in given]
    if missing:
        raise ModelMismatchError(f"the {fit.law.name} law needs {missing[0]}= for every point "
                                 f"(e.g. {missing[0]}=1e11)")
    out = {}
    for name, values in given.items():
        array = positives(name, values)
        if array.size not in (1, size):
            raise ArgumentError(f"{name} has {array.size} values for {size} points: give one or "
                                "one per point")
        out[name] = np.broadcast_to(array, (size,)).copy()
    return out


def resolve_points(fit: "ScalingFit", flops: object = None, params: object = None,
                   tokens: object = None, inputs: object = None) -> pd.DataFrame:
    """Turn the user's flops or (params, tokens) into a table of points to forecast.

    With ``flops`` alone, a law of N and D trains each budget at the posterior-median
    compute-optimal split: N = exp(median over draws of log N_opt(C)), D = C / (6·N).
    ``inputs`` gives the law's declared extra inputs (e.g. ``{"unique_tokens": 1e11}``),
    one value or one per point; the split holds them fixed.
    """
    if not fit.law.extra_inputs:
        if inputs:
            extra_input_values(fit, inputs, 1)  # raises: this law takes no extra inputs
        return _resolve_standard(fit, flops, params, tokens)
    given = [v for v in ((flops,) if flops is not None else (params, tokens)) if v is not None]
    size = max((int(np.size(v)) for v in given), default=1)
    extras = extra_input_values(fit, inputs, size)
    points = _resolve_standard(fit, flops, params, tokens,
                               {name: np.log(v) for name, v in extras.items()})
    return points.assign(**extras)


def _resolve_standard(fit: "ScalingFit", flops: object, params: object, tokens: object,
                      fixed: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    law = fit.law
    if params is not None or tokens is not None:
        if not {"params", "tokens"} & set(law.inputs):
            raise ModelMismatchError(f"the {law.name} law is a law of compute alone: give "
                                     "flops=, not params= and tokens=")
        if params is None or tokens is None:
            raise ArgumentError("give params= and tokens= together (or flops= alone)")
        if flops is not None:
            raise ArgumentError("give either flops= or params= and tokens=, not both: "
                             "flops is 6·params·tokens")
        n = positives("params", params)
        d = positives("tokens", tokens)
        try:
            n, d = np.broadcast_arrays(n, d)
        except ValueError:
            raise ArgumentError(f"params has {n.size} values and tokens {d.size}: give equally "
                                "many (or one of each)") from None
        with np.errstate(over="ignore", under="ignore"):
            c = 6.0 * n * d
        bad = np.flatnonzero(~(np.isfinite(c) & (c > 0)))
        if bad.size:
            i = bad[0]
            raise ArgumentError(f"params[{i}] = {float(n[i])!r} and tokens[{i}] = {float(d[i])!r} give "
                                f"6·N·D = {float(c[i])!r} FLOPs, outside float64 (1e-308 to 1e308): "
                                "expected a plan whose compute is a finite positive number")
        return pd.DataFrame({"flops": c, "params": n, "tokens": d})
    if flops is None:
        raise ArgumentError("give flops= (compute budgets in FLOPs) or params= and tokens=")
    c = positives("flops", flops)
    if not law.splits_compute:
        return pd.DataFrame({"flops": c, "params": np.nan, "tokens": np.nan})
    n = np.exp(median_optimal_log_params(fit, np.log(c), fixed))
    return pd.DataFrame({"flops": c, "params": n, "tokens": c / (6.0 * n)})


def draw_rows(fit: "ScalingFit") -> dict[str, np.ndarray]:
    """The parameter draws as rows of shape (1, draws): against inputs of shape (points, 1)
    the law gives one row of draws per point, the layout the per-point summaries want."""
    return {name: values[None, :] for name, values in fit.theta().items()}


# Each fit's last few median splits, keyed by the budgets' bytes: forecast, prob_below and
# compute_to_reach at the same budgets (a notebook's usual sequence) compute it once.
_SPLIT_CACHE: "weakref.WeakKeyDictionary[ScalingFit, OrderedDict[bytes, np.ndarray]]" = \
    weakref.WeakKeyDictionary()
_SPLIT_CACHE_SIZE = 4
_SPLIT_CACHE_LOCK = threading.Lock()


def median_optimal_log_params(fit: "ScalingFit", log_flops: np.ndarray,
                              fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Posterior median over draws of log N_opt at each log budget, shape (points,).

    ``fixed``: log values of the law's extra inputs per budget, held fixed by the split.
    The result is read-only; the last few are remembered per fit, so asking again at the
    same budgets costs nothing.
    """
    from ._pointwise import map_point_chunks, row_quantiles  # numba: imported on first use

    log_flops = np.ascontiguousarray(log_flops, dtype=np.float64)
    fixed = {name: np.ascontiguousarray(v, dtype=np.float64) for name, v in (fixed or {}).items()}
    key = log_flops.tobytes() + b"".join(name.encode() + v.tobytes() for name, v in sorted(fixed.items()))
    with _SPLIT_CACHE_LOCK:
        remembered = _SPLIT_CACHE.setdefault(fit, OrderedDict())
        if key in remembered:
            remembered.move_to_end(key)
            return remembered[key]
    theta = draw_rows(fit)

    def chunk_median(part: slice, workspace: object) -> np.ndarray:
        log_n = fit.law.optimal_log_params(theta, fit.reference, log_flops[part, None],
                                           {name: v[part, None] for name, v in fixed.items()} or None)
        return row_quantiles(log_n, 0.5)[:, 0]

    median = np.concatenate(map_point_chunks(chunk_median, log_flops.size, fit.n_draws))
    median.flags.writeable = False
    with _SPLIT_CACHE_LOCK:
        remembered[key] = median
        while len(remembered) > _SPLIT_CACHE_SIZE:
            remembered.popitem(last=False)
    return median


def _log_inputs(points: pd.DataFrame, layout: str = "row") -> dict[str, np.ndarray]:
    """log params/tokens/flops shaped (1, points) (``"row"``) or (points, 1) (``"column"``)."""
    names = [c for c in points.columns if c in declared_inputs()]
    logs = {name: np.log(points[name].to_numpy(dtype=np.float64)) for name in names}
    if layout == "column":
        return {name: values[:, None] for name, values in logs.items()}
    return {name: values[None, :] for name, values in logs.items()}


def _check_inputs(fit: "ScalingFit", points: pd.DataFrame) -> None:
    for name in fit.law.inputs:
        if points[name].isna().any():
            raise ModelMismatchError(f"the {fit.law.name} law needs {name} for every point")


def noise_factors(fit: "ScalingFit", rng: np.random.Generator) -> np.ndarray:
    """Run-to-run noise as a factor on the loss, one per draw, shape (draws,).

    A run measures L·exp(σ·ε) with ε the likelihood's standard noise. One noise value per
    draw, shared by all points: each point's distribution is the same as with independent
    noise, but bands along a curve come out smooth and a point's forecast does not depend
    on which other points are asked for in the same call.
    """
    theta = fit.theta()
    if fit.likelihood == "student_t":
        standard = rng.standard_t(theta["nu"])
    else:
        standard = rng.standard_normal(fit.n_draws)
    return np.exp(theta["sigma"] * standard)


def _noise_rng(fit: "ScalingFit", random_seed: int | None) -> np.random.Generator:
    return np.random.default_rng(fit.settings["random_seed"] if random_seed is None else random_seed)


def loss_draws(fit: "ScalingFit", points: pd.DataFrame, kind: str = "observed",
               random_seed: int | None = None) -> np.ndarray:
    """Loss per draw and point, shape (draws, points); ``kind`` as in :func:`forecast_table`."""
    if kind not in KINDS:
        raise ArgumentError(f"kind must be one of {KINDS}, got {kind!r}")
    _check_inputs(fit, points)
    theta = fit.theta(expand=True)
    log_x = _log_inputs(points)
    loss = fit.law.loss(theta, log_x, fit.reference)
    if getattr(fit, "discrepancy", None) is not None:
        shift = discrepancy_shift(fit, log_x, theta["sigma"], theta, np.log(loss))
        if shift is not None:
            loss *= np.exp(shift)
    if kind == "observed":
        loss *= noise_factors(fit, _noise_rng(fit, random_seed))[:, None]
    return loss


def overflow_to_inf(values: np.ndarray, what: str) -> np.ndarray:
    """Summaries of draws that overflowed: NaN (inf − inf between two infinite draws) is inf.

    Loss and compute are sums of positive terms, so a draw that overflows float64 is a value
    too large to represent, never an undefined one. Warns :class:`NonFiniteWarning` once.
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    values = np.where(np.isnan(values), np.inf, values)
    warnings.warn(f"{what} overflows float64 (> 1.8e308) in some posterior draws at "
                  f"{int(bad.any(axis=-1).sum()) if values.ndim > 1 else int(bad.sum())} "
                  "point(s): the table shows inf there; the law's parameters in those draws "
                  "(often a prior far wider than the data) make the loss astronomically large",
                  NonFiniteWarning, skip_file_prefixes=PACKAGE_FILES)
    return values


def warn_if_extrapolating(fit: "ScalingFit", flops: np.ndarray) -> None:
    """Warn when a point lies more than EXTRAPOLATION_DECADES past the largest run's compute."""
    largest = float(fit.runs.frame["flops"].max())
    decades = np.log10(np.max(flops) / largest) if len(flops) else -math.inf
    if decades > EXTRAPOLATION_DECADES:
        warnings.warn(
            f"forecasting {decades:.1f} decades of compute past the largest run "
            f"({largest:.3g} FLOPs); the bands' allowance for the law's own error there is "
            "extrapolated from errors at shorter distances, which the data cannot check",
            ExtrapolationWarning, skip_file_prefixes=PACKAGE_FILES)


def forecast_table(fit: "ScalingFit", flops: object = None, params: object = None,
                   tokens: object = None, prob: float = 0.9, kind: str = "observed",
                   random_seed: int | None = None, inputs: object = None) -> pd.DataFrame:
    """Forecast loss at compute budgets or at explicit (N, D), with a central band.

    See :meth:`bayescale.ScalingFit.forecast` for the parameters.
    """
    prob = probability("prob", prob)
    choice("kind", kind, KINDS)
    random_seed = seed("random_seed", random_seed)
    points = resolve_points(fit, flops=flops, params=params, tokens=tokens, inputs=inputs)
    warn_if_extrapolating(fit, points["flops"].to_numpy())
    _check_inputs(fit, points)
    from ._pointwise import Workspace, map_point_chunks, row_quantiles  # numba: on first use

    theta = draw_rows(fit)
    log_x = _log_inputs(points, layout="column")
    factors = noise_factors(fit, _noise_rng(fit, random_seed)) if kind == "observed" else None
    tail = (1.0 - prob) / 2.0
    levels = np.array([tail, 0.5, 1.0 - tail])

    def chunk_summary(part: slice, workspace: Workspace) -> np.ndarray:
        rows = part.stop - part.start
        loss = fit.law.loss(theta, {name: x[part] for name, x in log_x.items()}, fit.reference,
                            out=workspace.array("loss", rows, fit.n_draws),
                            work=workspace.array("work", rows, fit.n_draws))
        if getattr(fit, "discrepancy", None) is not None:
            part_x = {name: x[part] for name, x in log_x.items()}
            shift = discrepancy_shift(fit, part_x, theta["sigma"], theta, np.log(loss))
            if shift is not None:
                loss *= np.exp(shift, out=shift)
        if factors is not None:
            loss *= factors
        return np.column_stack([loss.mean(axis=1), row_quantiles(loss, levels)])

    summary = np.concatenate(map_point_chunks(chunk_summary, len(points), fit.n_draws))
    summary = overflow_to_inf(summary, "the forecast loss")
    table = points.assign(loss_mean=summary[:, 0], loss_median=summary[:, 2],
                          loss_lower=summary[:, 1], loss_upper=summary[:, 3])
    table.attrs.update({"prob": float(prob), "kind": kind, "law": fit.law.name})
    return table
