"""Backtests: fit a law on the small runs, forecast the large ones, score the forecasts.

A forecast is worth what its bands are worth, so a backtest reports both accuracy and
calibration of the held-out runs' forecasts:

- **RMSLE**: root mean squared log error of the posterior-median forecast,
  sqrt(mean((log median − log actual)²)). 0.01 ≈ 1% typical error.
- **bias**: mean signed log error, mean(log median − log actual). Positive: forecasts too
  high (pessimistic); negative: too low (optimistic).
- **coverage** at each level p: the share of held-out runs inside the central (equal-tailed)
  p band of ``kind="observed"`` forecasts (law uncertainty plus run-to-run noise). Honest
  bands cover about p.
- **width** at each level: mean log(upper / lower) of the bands (≈ relative width; 0.02 is a
  band about 2% wide).
- **CRPS**: continuous ranked probability score of the forecast distribution of log loss,
  E|X − y| − ½·E|X − X'| over draws X, X' (a proper score in the units of log loss; it
  rewards sharp bands only when they are also right).

Everything here is numpy on posterior draws, except :func:`backtest` itself (which samples
through :class:`~bayescale.ScalingModel`) and :func:`compare` (ArviZ's PSIS-LOO).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data import Runs
from .exceptions import ModelMismatchError, RunDataError

if TYPE_CHECKING:
    from .fit import ScalingFit
    from .laws import ScalingLaw
    from .priors import Prior

__all__ = ["Backtest", "backtest", "score_draws", "crps_draws", "split_runs",
           "log_likelihood", "compare", "DEFAULT_LEVELS", "level_label"]

#: Band levels scored by default.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)


def level_label(prob: float) -> str:
    """Column suffix of a band level: 0.9 -> "90", 0.975 -> "97.5"."""
    return f"{100 * float(prob):.10g}"


def _check_levels(prob: float | Sequence[float]) -> tuple[float, ...]:
    levels = tuple(float(p) for p in np.atleast_1d(np.asarray(prob, dtype=float)))
    if not levels:
        raise ValueError("prob must name at least one band level, e.g. (0.5, 0.9)")
    for p in levels:
        if not 0.0 < p < 1.0:
            raise ValueError(f"band levels must be in (0, 1), got {p!r}")
    return tuple(sorted(set(levels)))


# -- scoring (pure numpy) ------------------------------------------------------------------

def crps_draws(draws: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Sample estimate of the CRPS of each forecast, in the units of the draws.

    CRPS(F, y) = E|X − y| − ½·E|X − X'| with X, X' independent draws of F. The second term
    is computed exactly over all pairs from the sorted draws,
    E|X − X'| = (2/S²)·Σᵢ (2i − S − 1)·x₍ᵢ₎, so the cost is O(S log S) per point.

    Parameters
    ----------
    draws : ndarray, shape (S, M)
        S draws of the forecast at each of M points.
    actual : ndarray, shape (M,)
        What was observed at each point.

    Returns
    -------
    ndarray, shape (M,)
        CRPS per point (0 for a point mass on the truth; lower is better).
    """
    draws = np.asarray(draws, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if draws.ndim != 2 or actual.shape != (draws.shape[1],):
        raise ValueError(f"draws must have shape (S, M) and actual (M,); got {draws.shape} "
                         f"and {actual.shape}")
    s = draws.shape[0]
    spread_to_truth = np.mean(np.abs(draws - actual[None, :]), axis=0)
    weights = (2.0 * np.arange(1, s + 1) - s - 1.0)[:, None]
    mean_pair_gap = 2.0 / s**2 * np.sum(weights * np.sort(draws, axis=0), axis=0)
    return spread_to_truth - 0.5 * mean_pair_gap


def score_draws(actual: np.ndarray, draws: np.ndarray,
                prob: float | Sequence[float] = DEFAULT_LEVELS,
                points: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Score forecast draws of loss against the losses that were observed.

    Works for any forecaster that yields draws (a Bayesian posterior predictive, a bootstrap
    of a point fit), so different methods are scored by the same code.

    Parameters
    ----------
    actual : array, shape (M,)
        Observed losses of the held-out runs (positive).
    draws : array, shape (S, M)
        Forecast draws of each run's loss (positive), e.g. ``kind="observed"`` draws.
    prob : float or sequence of float
        Levels of the central bands to score.
    points : DataFrame, optional
        Columns to put in front of the table (e.g. ``flops``, ``params``, ``tokens``).

    Returns
    -------
    table : DataFrame
        One row per held-out run: ``loss`` (actual), ``loss_median``, ``loss_lower_<p>``,
        ``loss_upper_<p>`` per level, ``log_error`` (log median − log actual), ``pit``
        (share of draws below the actual loss) and ``crps`` (on log loss).
    summary : Series
        ``n_test``, ``rmsle``, ``bias``, ``crps``, ``coverage_<p>`` and ``width_<p>`` per
        level (see the module docstring). ``attrs["prob"]`` holds the levels.
    """
    levels = _check_levels(prob)
    actual = np.atleast_1d(np.asarray(actual, dtype=np.float64))
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[1] != actual.size:
        raise ValueError(f"draws must have shape (draws, {actual.size}) to match {actual.size} "
                         f"actual losses, got {draws.shape}")
    if actual.size == 0:
        raise ValueError("no held-out runs to score")
    if not (np.isfinite(actual).all() and (actual > 0).all()):
        raise ValueError("actual losses must be finite and positive")
    if not (np.isfinite(draws).all() and (draws > 0).all()):
        raise ValueError("forecast draws must be finite and positive (a NaN or a loss <= 0 "
                         "means the forecaster failed)")
    log_draws, log_actual = np.log(draws), np.log(actual)
    table = (points.reset_index(drop=True).copy() if points is not None
             else pd.DataFrame(index=range(actual.size)))
    table["loss"] = actual
    median = np.median(draws, axis=0)
    table["loss_median"] = median
    summary: dict[str, float] = {"n_test": float(actual.size)}
    log_error = np.log(median) - log_actual
    covered, widths = {}, {}
    for p in levels:
        tail = (1.0 - p) / 2.0
        lower, upper = np.quantile(draws, [tail, 1.0 - tail], axis=0)
        label = level_label(p)
        table[f"loss_lower_{label}"] = lower
        table[f"loss_upper_{label}"] = upper
        covered[label] = float(np.mean((lower <= actual) & (actual <= upper)))
        widths[label] = float(np.mean(np.log(upper) - np.log(lower)))
    table["log_error"] = log_error
    table["pit"] = np.mean(log_draws < log_actual[None, :], axis=0)
    table["crps"] = crps_draws(log_draws, log_actual)
    summary["rmsle"] = float(np.sqrt(np.mean(log_error**2)))
    summary["bias"] = float(np.mean(log_error))
    summary["crps"] = float(table["crps"].mean())
    summary.update({f"coverage_{k}": v for k, v in covered.items()})
    summary.update({f"width_{k}": v for k, v in widths.items()})
    table.attrs["prob"] = levels
    result = pd.Series(summary, name="score")
    result.attrs["prob"] = levels
    return table, result


# -- splitting -----------------------------------------------------------------------------

def split_runs(runs: Runs, *, cutoff_flops: float | None = None,
               holdout_frac: float | None = None,
               holdout: Sequence[bool] | np.ndarray | pd.Series | None = None) -> np.ndarray:
    """Which runs to hold out: a boolean mask (True = forecast it, False = fit on it).

    Give at most one of the three; with none, ``holdout_frac=0.2``.

    Parameters
    ----------
    runs : Runs
    cutoff_flops : float, optional
        Fit on the runs with compute ≤ this many FLOPs, hold out the rest.
    holdout_frac : float, optional
        Hold out about this share of the runs, the ones with the most compute. Runs of equal
        compute stay together (all held out), so the share can be a little larger.
    holdout : array of bool, optional
        An explicit mask, e.g. ``frame["split"] == "test"``.

    Raises
    ------
    ValueError
        When more than one option is given or a value is out of range.
    RunDataError
        When the split leaves no run to forecast.
    """
    if not isinstance(runs, Runs):
        raise TypeError(f"backtest expects Runs from bayescale.load_runs, got {type(runs).__name__}")
    given = [name for name, value in (("cutoff_flops", cutoff_flops), ("holdout_frac", holdout_frac),
                                      ("holdout", holdout)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of cutoff_flops=, holdout_frac= or holdout=, not {' and '.join(given)}")
    flops = runs.column("flops")
    if cutoff_flops is not None:
        cutoff = float(cutoff_flops)
        if not (math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff_flops must be a finite positive number of FLOPs, got {cutoff_flops!r}")
        mask = flops > cutoff
        if not mask.any():
            raise RunDataError(f"no run has more than cutoff_flops={cutoff:.3g} FLOPs (the largest "
                               f"has {flops.max():.3g}): nothing to forecast; lower the cutoff")
        return mask
    if holdout is not None:
        mask = np.asarray(holdout)
        if mask.dtype != bool or mask.shape != (len(runs),):
            raise ValueError(f"holdout must be {len(runs)} booleans (one per run), got dtype "
                             f"{mask.dtype} and shape {mask.shape}")
        if not mask.any():
            raise RunDataError("holdout marks no run: nothing to forecast")
        return mask.copy()
    frac = 0.2 if holdout_frac is None else float(holdout_frac)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"holdout_frac must be in (0, 1), got {holdout_frac!r}")
    from .discrepancy import top_compute_mask

    return top_compute_mask(flops, frac)


# -- the backtest --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Backtest:
    """The result of :func:`backtest`.

    Attributes
    ----------
    fit : ScalingFit
        The law fitted to the training runs only.
    table : DataFrame
        One row per held-out run: ``flops``, ``params``, ``tokens``, ``loss`` (actual),
        ``loss_median``, ``loss_lower_<p>`` and ``loss_upper_<p>`` per level, ``log_error``
        (log median − log actual), ``pit`` (share of forecast draws below the actual) and
        ``crps`` (on log loss).
    summary : Series
        ``n_train``, ``n_test``, ``rmsle``, ``bias``, ``crps``, ``coverage_<p>``,
        ``width_<p>`` (mean log(upper/lower)), ``seconds`` (sampling wall-clock).
    train, test : Runs
        The runs fitted and the runs forecast.
    settings : dict
        How the split was made and the sampler settings.
    """

    fit: "ScalingFit"
    table: pd.DataFrame
    summary: pd.Series
    train: Runs
    test: Runs
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.summary
        level = "90" if "coverage_90" in s else level_label(self.table.attrs["prob"][-1])
        return (f"Backtest(law={self.fit.law.name!r}, likelihood={self.fit.likelihood!r}, "
                f"train={int(s['n_train'])}, test={int(s['n_test'])}, rmsle={s['rmsle']:.4f}, "
                f"bias={s['bias']:+.4f}, coverage_{level}={s[f'coverage_{level}']:.2f})")


def backtest(runs: Runs, law: "str | ScalingLaw" = "chinchilla", *,
             cutoff_flops: float | Sequence[float] | None = None, holdout_frac: float | None = None,
             holdout: Sequence[bool] | np.ndarray | pd.Series | None = None,
             prob: float | Sequence[float] = DEFAULT_LEVELS, likelihood: str = "student_t",
             priors: "Mapping[str, Prior] | None" = None, draws: int = 1000, tune: int = 1000,
             chains: int = 4, random_seed: int | None = 0, progressbar: bool = False,
             sampler: str = "nutpie", check: bool = True, parallel: str | None = None,
             client: Any = None,
             _fit: "ScalingFit | None" = None) -> "Backtest | dict[float, Backtest]":
    """Fit a law on the smaller runs and score its forecasts of the larger ones.

    Each held-out run is forecast at its own inputs — its (N, D) for a law of N and D, its
    compute for the compute law — with ``kind="observed"`` draws (law uncertainty plus
    run-to-run noise), because what is compared is one run's measured loss.

    Parameters
    ----------
    runs : Runs
        All runs, from :func:`bayescale.load_runs`.
    law : str or ScalingLaw
        ``"chinchilla"`` or ``"compute"``.
    cutoff_flops, holdout_frac, holdout
        How to split (at most one; default ``holdout_frac=0.2``): fit on compute ≤
        ``cutoff_flops`` FLOPs; or hold out the largest-compute share ``holdout_frac``; or an
        explicit boolean mask ``holdout`` (True = held out). See :func:`split_runs`.
    prob : float or sequence of float
        Levels of the central bands to score (default 0.5, 0.8, 0.9, 0.95).
    likelihood : {"student_t", "normal"}
        Noise model of the fit.
    priors : mapping of str to Prior, optional
        Prior overrides, as in :class:`bayescale.ScalingModel`.
    draws, tune, chains, random_seed, progressbar, sampler, check
        Passed to :meth:`bayescale.ScalingModel.fit`; ``random_seed`` also seeds the noise
        draws of the forecasts (default 0, so a backtest is reproducible).
    parallel : {None, "processes", "dask"}
        Where the fits run, as in :func:`bayescale.fit_many`: in this process (default), on
        a local process pool, or on a Dask client (``client=``, else the current one). With
        several ``cutoff_flops`` the splits are fitted side by side; the results do not
        depend on where they ran.

    Returns
    -------
    Backtest
        ``.table`` per held-out run, ``.summary`` (RMSLE, bias, coverage and width per level,
        CRPS), ``.fit`` on the training runs.
        With a sequence of ``cutoff_flops``: a dict {cutoff: Backtest}, each equal to
        ``backtest(..., cutoff_flops=cutoff)`` with the same seed.

    Raises
    ------
    RunDataError
        When the split leaves nothing to forecast or too few runs to fit.

    Examples
    --------
    >>> runs = bs.load_dataset("chinchilla", drop_highest_loss=5)   # doctest: +SKIP
    >>> bt = bs.backtest(runs, "chinchilla", cutoff_flops=1e21)      # doctest: +SKIP
    >>> bt.summary[["rmsle", "coverage_90"]]                         # doctest: +SKIP
    """
    from .forecast import loss_draws
    from .model import ScalingModel

    if cutoff_flops is not None and np.ndim(cutoff_flops) > 0:  # several splits, fitted together
        if holdout_frac is not None or holdout is not None:
            raise ValueError("several cutoff_flops make one backtest per cutoff; do not give "
                             "holdout_frac= or holdout= with them")
        return _backtest_cutoffs(runs, law, [float(c) for c in np.asarray(cutoff_flops, dtype=float)],
                                 parallel=parallel, client=client, prob=prob,
                                 likelihood=likelihood, priors=priors, draws=draws, tune=tune,
                                 chains=chains, random_seed=random_seed,
                                 progressbar=progressbar, sampler=sampler, check=check)
    levels = _check_levels(prob)
    mask = split_runs(runs, cutoff_flops=cutoff_flops, holdout_frac=holdout_frac, holdout=holdout)
    model = ScalingModel(law, priors=priors, likelihood=likelihood)
    model.law.check_runs(runs)
    train, test = runs.subset(~mask), runs.subset(mask)
    needed = model.law.n_parameters + 1
    if len(train) < needed:
        raise RunDataError(f"the split leaves {len(train)} runs to fit the {model.law.name} law, "
                           f"which needs at least {needed}; raise cutoff_flops or lower "
                           "holdout_frac")
    if _fit is not None:
        fit = _fit
    elif parallel is not None:
        from .fit import ScalingFit
        from .many import fit_runs

        seed = random_seed if random_seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        (fit,) = fit_runs([train], law, seeds=[seed], priors=priors, likelihood=likelihood,
                          draws=draws, tune=tune, chains=chains, sampler=sampler, check=check,
                          parallel=parallel, client=client)
        if not isinstance(fit, ScalingFit):
            raise fit.exception or RuntimeError(f"the backtest's fit failed: {fit}")
    else:
        fit = model.fit(train, draws=draws, tune=tune, chains=chains, random_seed=random_seed,
                        progressbar=progressbar, sampler=sampler, check=check)
    points = test.frame[["flops", "params", "tokens"]]
    samples = loss_draws(fit, points, kind="observed", random_seed=fit.settings["random_seed"])
    table, score = score_draws(test.column("loss"), samples, prob=levels, points=points)
    summary = pd.concat([pd.Series({"n_train": float(len(train))}), score,
                         pd.Series({"seconds": float(fit.settings["seconds"])})])
    summary.name = "score"
    summary.attrs["prob"] = levels
    split = ({"cutoff_flops": float(cutoff_flops)} if cutoff_flops is not None
             else {"holdout": "mask"} if holdout is not None
             else {"holdout_frac": 0.2 if holdout_frac is None else float(holdout_frac)})
    settings = {**split, "prob": levels, "law": model.law.name, "likelihood": likelihood,
                **{k: fit.settings[k] for k in ("draws", "tune", "chains", "random_seed", "sampler")}}
    table.attrs.update({"law": model.law.name, "kind": "observed"})
    return Backtest(fit=fit, table=table, summary=summary, train=train, test=test,
                    settings=settings)


def _backtest_cutoffs(runs: Runs, law: "str | ScalingLaw", cutoffs: list[float], *,
                      parallel: str | None, client: Any, random_seed: int | None,
                      **options: Any) -> "dict[float, Backtest]":
    """One backtest per cutoff; the fits run together through :func:`bayescale.many.fit_runs`."""
    from .fit import ScalingFit
    from .many import fit_runs
    from .model import ScalingModel

    if not cutoffs:
        raise ValueError("cutoff_flops is an empty sequence; give one or more cutoffs in FLOPs")
    model = ScalingModel(law, priors=options["priors"], likelihood=options["likelihood"])
    model.law.check_runs(runs)
    trains = []
    for cutoff in cutoffs:
        train = runs.subset(~split_runs(runs, cutoff_flops=cutoff))
        if len(train) < model.law.n_parameters + 1:
            raise RunDataError(f"cutoff_flops={cutoff:.3g} leaves {len(train)} runs to fit the "
                               f"{model.law.name} law, which needs at least "
                               f"{model.law.n_parameters + 1}; raise the cutoff")
        trains.append(train)
    seed = random_seed if random_seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    fits = fit_runs(trains, law, seeds=[seed] * len(trains), priors=options["priors"],
                    likelihood=options["likelihood"], draws=options["draws"],
                    tune=options["tune"], chains=options["chains"], sampler=options["sampler"],
                    check=options["check"], parallel=parallel, client=client,
                    progressbar=options["progressbar"] and parallel is not None)
    results = {}
    for cutoff, fit in zip(cutoffs, fits):
        if not isinstance(fit, ScalingFit):
            raise fit.exception or RuntimeError(f"the fit for cutoff_flops={cutoff:.3g} failed: {fit}")
        results[cutoff] = backtest(runs, law, cutoff_flops=cutoff, random_seed=seed, _fit=fit,
                                   **options)
    return results


# -- law comparison ------------------------------------------------------------------------

def log_likelihood(fit: "ScalingFit") -> np.ndarray:
    """Pointwise log-likelihood of each fitted run under each draw, shape (chain, draw, runs).

    The likelihood is on log loss (as in the model), so values are log densities of log L.
    On the loss scale each run's value would shift by −log L, the same for every law fitted
    to the same runs, so comparisons between laws are unchanged.
    """
    from scipy import stats

    theta = fit.theta(expand=True)
    frame = fit.runs.frame
    log_x = {name: np.log(frame[name].to_numpy(dtype=np.float64))[None, :] for name in fit.law.inputs}
    mu = fit.law.log_loss(theta, log_x, fit.reference, np)
    observed = np.log(frame["loss"].to_numpy(dtype=np.float64))[None, :]
    if fit.likelihood == "student_t":
        values = stats.t.logpdf(observed, df=theta["nu"], loc=mu, scale=theta["sigma"])
    else:
        values = stats.norm.logpdf(observed, loc=mu, scale=theta["sigma"])
    shape = (fit.posterior.sizes["chain"], fit.posterior.sizes["draw"], len(frame))
    return values.reshape(shape)


def _loo_tree(fit: "ScalingFit"):
    import arviz as az

    posterior = {name: fit.posterior[name].to_numpy() for name in fit.posterior.data_vars}
    return az.from_dict({"posterior": posterior,
                         "log_likelihood": {"log_loss": log_likelihood(fit)}},
                        dims={"log_loss": ["run"]})


def _same_runs(a: Runs, b: Runs) -> bool:
    fa, fb = a.frame, b.frame
    return len(fa) == len(fb) and all(
        np.array_equal(fa[c].to_numpy(), fb[c].to_numpy(), equal_nan=True)
        for c in ("flops", "loss"))


def compare(fits: "Mapping[str, ScalingFit | Backtest] | Sequence[ScalingFit | Backtest]") -> pd.DataFrame:
    """Rank laws fitted to the same runs by PSIS-LOO, and by backtest score when given.

    Parameters
    ----------
    fits : mapping of name to ScalingFit or Backtest, or a sequence of them
        Fits of different laws (or likelihoods, or priors) to the same runs. With
        :class:`Backtest` results (made with the same split), LOO is computed on their
        training fits and the backtest scores of the held-out runs are added. Unnamed
        entries are named ``"<law>/<likelihood>"``.

    Returns
    -------
    DataFrame
        One row per model, best LOO first, with ArviZ's columns: ``rank`` (0 = best),
        ``elpd`` (expected log predictive density of log loss, higher is better), ``se``,
        ``elpd_diff`` and its standard error ``dse``, ``p_worse``, ``p`` (effective
        parameters), ``weight`` (stacking), ``diag_elpd``/``diag_diff`` (ArviZ's warnings,
        e.g. high Pareto k); then ``law``, ``likelihood`` and, for backtests,
        ``rmsle``, ``bias``, ``crps``, the coverage columns and ``backtest_rank`` (by CRPS,
        0 = best).

    Raises
    ------
    ModelMismatchError
        When the fits were not made on the same runs (LOO values would not be comparable).
    """
    import arviz as az

    if isinstance(fits, Mapping):
        items = [(str(k), v) for k, v in fits.items()]
    else:
        items = []
        for value in fits:
            f = value.fit if isinstance(value, Backtest) else value
            items.append((f"{f.law.name}/{f.likelihood}", value))
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"two entries share the name {next(n for n in names if names.count(n) > 1)!r}; "
                             "pass a dict {name: fit} to name them")
    if len(items) < 2:
        raise ValueError(f"compare needs at least two fits, got {len(items)}")
    from .fit import ScalingFit

    for name, value in items:
        if not isinstance(value, (ScalingFit, Backtest)):
            raise TypeError(f"compare expects ScalingFit or Backtest values, got "
                            f"{type(value).__name__} for {name!r}")
    kinds = {isinstance(v, Backtest) for _, v in items}
    if len(kinds) > 1:
        raise ValueError("compare takes either all ScalingFit or all Backtest results, not a mix")
    fitted = {name: (v.fit if isinstance(v, Backtest) else v) for name, v in items}
    first_name, first = items[0][0], fitted[items[0][0]]
    for name, f in fitted.items():
        if not _same_runs(f.runs, first.runs):
            raise ModelMismatchError(f"{name!r} was fitted to different runs than {first_name!r} "
                                     f"({len(f.runs)} vs {len(first.runs)} runs); LOO compares laws "
                                     "on the same runs only")
    table = az.compare({name: _loo_tree(f) for name, f in fitted.items()}, round_to="none")
    table["law"] = [fitted[n].law.name for n in table.index]
    table["likelihood"] = [fitted[n].likelihood for n in table.index]
    if kinds == {True}:
        backtests = dict(items)
        for name, bt in backtests.items():
            if not _same_runs(bt.test, items[0][1].test):
                raise ModelMismatchError(f"{name!r} held out different runs than {first_name!r}; "
                                         "backtest scores compare on the same split only")
        columns = ["rmsle", "bias", "crps"] + [c for c in items[0][1].summary.index
                                               if c.startswith("coverage_")]
        for column in columns:
            table[column] = [float(backtests[n].summary[column]) for n in table.index]
        table["backtest_rank"] = table["crps"].rank(method="min").astype(int) - 1
    table.index.name = "model"
    return table
