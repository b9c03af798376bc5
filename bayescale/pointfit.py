"""The point-estimate baseline: Hoffmann et al. (2022) / Epoch AI (2024) Huber fits.

The recipe fits the law in log space by minimising the summed Huber loss (δ = 1e-3) of the
log-loss residuals, starting a quasi-Newton optimiser from every point of a grid and keeping
the best. For Chinchilla the parameters are (a, b, e, α, β) = (log A, log B, log E, α, β)::

    log L̂ = LSE(a − α·log N, b − β·log D, e)

and for the one-dimensional compute law (also used on learning curves, x = compute or
examples seen) (a, e, α) with log L̂ = LSE(a − α·log C, e). Uncertainty comes from a bootstrap:
resample the runs with replacement and refit, warm-started at the full-data optimum.

Two details decide whether this gives the published numbers (see DESIGN.md, "Performance
design"): the summed objective is only ~4e-3 at the optimum, so scipy's L-BFGS-B default
``ftol`` (absolute below 1) stops almost at once — a warm-started bootstrap then barely moves
and its intervals are far too narrow. We use ``ftol=1e-13``, ``gtol=1e-9`` and an analytic
gradient.

This module needs numpy, scipy and numba (for the objective); it does not import PyMC.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from .data import Runs
from .exceptions import ModelMismatchError, RunDataError
from .laws import get_law

__all__ = ["PointFit", "PointFitBootstrap", "point_fit", "bootstrap_point_fit",
           "huber_objective", "starting_grid", "POINT_LAWS"]

#: Optimiser coordinates per law, in order.
POINT_LAWS: dict[str, tuple[str, ...]] = {
    "chinchilla": ("a", "b", "e", "alpha", "beta"),
    "compute": ("a", "e", "alpha"),
}
_INPUTS = {"chinchilla": ("params", "tokens"), "compute": ("flops",)}
_OPTIONS = {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 10_000, "maxfun": 20_000}


def _law_name(law: Any) -> str:
    name = get_law(law).name
    if name not in POINT_LAWS:
        raise ModelMismatchError(f"no point fit for the {name} law; available: {sorted(POINT_LAWS)}")
    return name


def starting_grid(law: str = "chinchilla", grid: str = "default") -> np.ndarray:
    """Starting points of the optimiser, one row per start, columns as in ``POINT_LAWS[law]``.

    Parameters
    ----------
    law : {"chinchilla", "compute"}
    grid : {"default", "small"}
        ``"default"`` is Hoffmann et al.'s / Epoch's grid for Chinchilla (α, β ∈ {0, 0.5, …,
        2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}: 4,500 starts). ``"small"`` keeps a
        few values per coordinate (for tests and quick looks); it finds the same optimum on
        well-behaved data but is not the published recipe.

    Returns
    -------
    numpy.ndarray of shape (n_starts, n_parameters)
    """
    law = _law_name(law)
    if grid not in ("default", "small"):
        raise ValueError(f"grid must be 'default', 'small' or an array of starting points, got {grid!r}")
    if law == "chinchilla":
        if grid == "default":
            exps, es, coefs = np.arange(0, 2.5, 0.5), np.arange(-1, 1.5, 0.5), np.arange(0, 30, 5)
        else:
            exps, es, coefs = np.array([0.25, 0.5]), np.array([0.0, 0.5]), np.array([5.0, 10.0])
        axes = {"a": coefs, "b": coefs, "e": es, "alpha": exps, "beta": exps}
    else:
        # Compute/learning-curve exponents are small and the metric may be below 1 (error
        # rates), so the grid reaches lower exponents and lower e than Chinchilla's.
        if grid == "default":
            exps, es, coefs = (np.array([0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]),
                               np.arange(-3, 1.5, 0.5), np.arange(0, 30, 5))
        else:
            exps, es, coefs = np.array([0.1, 0.3]), np.array([-1.0, 0.5]), np.array([0.0, 5.0])
        axes = {"a": coefs, "e": es, "alpha": exps}
    names = POINT_LAWS[law]
    return np.array(list(itertools.product(*(axes[n] for n in names))), dtype=np.float64)


def _log_inputs(law: str, runs: Runs) -> np.ndarray:
    """Log inputs as a (n_inputs, n_runs) array; raises if the runs lack one."""
    get_law(law).check_runs(runs)
    return np.log(np.vstack([runs.column(name) for name in _INPUTS[law]]))


def huber_objective(x: np.ndarray, law: str, log_x: np.ndarray, log_y: np.ndarray,
                    delta: float = 1e-3) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log-loss residuals and its analytic gradient.

    Parameters
    ----------
    x : numpy.ndarray
        Parameters in the order of ``POINT_LAWS[law]``.
    law : {"chinchilla", "compute"}
    log_x : numpy.ndarray of shape (n_inputs, n_runs)
        Natural logs of the inputs (N and D, or C).
    log_y : numpy.ndarray of shape (n_runs,)
        Natural log of the observed losses.
    delta : float
        Huber threshold on the log-loss residual (1e-3 in the published recipe).

    Returns
    -------
    value : float
    gradient : numpy.ndarray, same shape as ``x``
    """
    value, grad = _huber_kernel(np.asarray(x, dtype=np.float64), law == "chinchilla",
                                np.ascontiguousarray(log_x, dtype=np.float64),
                                np.ascontiguousarray(log_y, dtype=np.float64), float(delta))
    return value, grad


@numba.njit(cache=True, error_model="numpy")
def _huber_kernel(x, chinchilla, log_x, log_y, delta):
    # One pass over the runs in compiled code: the grid fit calls this ~5·10^5 times.
    n = log_y.shape[0]
    grad = np.zeros(x.shape[0])
    value = 0.0
    if chinchilla:
        a, b, e, alpha, beta = x[0], x[1], x[2], x[3], x[4]
    else:
        a, e, alpha = x[0], x[1], x[2]
        b = beta = 0.0
    for j in range(n):
        t1 = a - alpha * log_x[0, j]
        if chinchilla:
            t2 = b - beta * log_x[1, j]
            top = max(t1, t2, e)
            w2 = math.exp(t2 - top)
        else:
            t2 = 0.0
            top = max(t1, e)
            w2 = 0.0
        w1 = math.exp(t1 - top)
        w3 = math.exp(e - top)
        total = w1 + w2 + w3
        resid = top + math.log(total) - log_y[j]
        if abs(resid) <= delta:
            value += 0.5 * resid * resid
            psi = resid
        else:
            value += delta * (abs(resid) - 0.5 * delta)
            psi = delta if resid > 0 else -delta
        psi /= total                       # dHuber/dresid times the softmax normaliser
        grad[0] += psi * w1
        if chinchilla:
            grad[1] += psi * w2
            grad[2] += psi * w3
            grad[3] -= psi * w1 * log_x[0, j]
            grad[4] -= psi * w2 * log_x[1, j]
        else:
            grad[1] += psi * w3
            grad[2] -= psi * w1 * log_x[0, j]
    return value, grad


def _minimise(x0: np.ndarray, law: str, log_x: np.ndarray, log_y: np.ndarray, delta: float):
    return minimize(huber_objective, x0, args=(law, log_x, log_y, delta), jac=True,
                    method="L-BFGS-B", options=_OPTIONS)


def _paper_params(law: str, x: np.ndarray) -> dict[str, float]:
    if law == "chinchilla":
        a, b, e, alpha, beta = x
        return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
                "alpha": float(alpha), "beta": float(beta)}
    a, e, alpha = x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha)}


def _query_inputs(law: str, params, tokens, flops, runs: Runs) -> np.ndarray:
    """Log inputs (n_inputs, M) for predictions; defaults to the fitted runs."""
    given = {"params": params, "tokens": tokens, "flops": flops}
    needed = _INPUTS[law]
    if all(v is None for v in given.values()):
        return _log_inputs(law, runs)
    missing = [n for n in needed if given[n] is None]
    if missing:
        hint = ("give params= and tokens=" if law == "chinchilla" else "give flops=")
        raise ModelMismatchError(f"the {law} point fit predicts from {' and '.join(needed)}; "
                                 f"missing {', '.join(missing)}: {hint}")
    arrays = [np.atleast_1d(np.asarray(given[n], dtype=np.float64)) for n in needed]
    try:
        arrays = np.broadcast_arrays(*arrays)
    except ValueError:
        raise ModelMismatchError(f"{' and '.join(needed)} must have the same length, got "
                                 f"{[a.shape for a in arrays]}") from None
    for name, values in zip(needed, arrays):
        if not (np.isfinite(values) & (values > 0)).all():
            raise RunDataError(f"{name} must be positive and finite to predict loss")
    return np.log(np.vstack([a.ravel() for a in arrays]))


def _predict_log(law: str, x: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log L for parameter rows x of shape (R, P) at inputs (n_inputs, M): shape (R, M)."""
    x = np.atleast_2d(x)
    cols = dict(zip(POINT_LAWS[law], x.T))
    e = cols["e"][:, None] + np.zeros(log_x.shape[1])
    if law == "chinchilla":
        return np.logaddexp(np.logaddexp(cols["a"][:, None] - cols["alpha"][:, None] * log_x[0],
                                         cols["b"][:, None] - cols["beta"][:, None] * log_x[1]), e)
    return np.logaddexp(cols["a"][:, None] - cols["alpha"][:, None] * log_x[0], e)


@dataclass(frozen=True, eq=False)
class PointFit:
    """Best Huber fit of a law to runs (Hoffmann et al. / Epoch recipe).

    Attributes
    ----------
    law : str
        ``"chinchilla"`` or ``"compute"``.
    params : dict of str to float
        The paper's parameters: ``E``, ``A``, ``alpha`` and for Chinchilla ``B``, ``beta``.
    objective : float
        Summed Huber loss at the optimum.
    seconds : float
        Wall-clock time of the fit (all starts).
    x : numpy.ndarray
        Optimiser coordinates (``POINT_LAWS[law]``: log A, log B, log E, α, β).
    delta : float
        Huber threshold used.
    n_starts : int
        Grid points the optimiser was started from.
    converged : bool
        Whether scipy reported success for the best start.
    runs : Runs
        The runs fitted (predictions default to them).
    """

    law: str
    params: dict[str, float]
    objective: float
    seconds: float
    x: np.ndarray = field(repr=False)
    delta: float = 1e-3
    n_starts: int = 1
    converged: bool = True
    runs: Runs | None = field(default=None, repr=False)

    def predict(self, params=None, tokens=None, flops=None) -> np.ndarray:
        """Predicted loss (same units as the runs' loss) at N and D, or at C.

        Parameters
        ----------
        params, tokens : array_like, optional
            Parameters N and training tokens D (Chinchilla law).
        flops : array_like, optional
            Training compute C in FLOPs, or the x of a learning curve (compute law).
            With no inputs at all, predicts at the fitted runs.

        Returns
        -------
        numpy.ndarray of shape (M,)
        """
        log_x = _query_inputs(self.law, params, tokens, flops, self.runs)
        return np.exp(_predict_log(self.law, self.x, log_x))[0]


@dataclass(frozen=True, eq=False)
class PointFitBootstrap:
    """Bootstrap of a :class:`PointFit`: refits on runs resampled with replacement.

    Attributes
    ----------
    full : PointFit
        The fit to all runs (every resample starts from its optimum).
    params : pandas.DataFrame
        One row per resample, columns the paper's parameters (E, A, [B], alpha, [beta]).
    x : numpy.ndarray of shape (n_resamples, n_parameters)
        Optimiser coordinates per resample.
    seconds : float
        Wall-clock time of the resamples (excluding ``full.seconds`` when ``full`` was given).
    random_seed : int
    """

    full: PointFit
    params: pd.DataFrame
    x: np.ndarray = field(repr=False)
    seconds: float = 0.0
    random_seed: int = 0

    @property
    def law(self) -> str:
        return self.full.law

    def __len__(self) -> int:
        return len(self.params)

    def predict_draws(self, params=None, tokens=None, flops=None) -> np.ndarray:
        """Predicted loss per resample: array of shape (n_resamples, M).

        Parameters as in :meth:`PointFit.predict`.
        """
        log_x = _query_inputs(self.law, params, tokens, flops, self.full.runs)
        return np.exp(_predict_log(self.law, self.x, log_x))

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """Point estimate, bootstrap standard error and percentile interval per parameter."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        tail = (1 - level) / 2
        return pd.DataFrame({
            "estimate": pd.Series(self.full.params),
            "se": self.params.std(ddof=1),
            "lower": self.params.quantile(tail),
            "upper": self.params.quantile(1 - tail),
        })


def _prepare(runs: Runs, law: Any) -> tuple[str, np.ndarray, np.ndarray]:
    if not isinstance(runs, Runs):
        raise TypeError(f"point_fit expects Runs from bayescale.load_runs, got {type(runs).__name__}")
    name = _law_name(law)
    n_params = len(POINT_LAWS[name])
    if len(runs) <= n_params:
        raise RunDataError(f"{len(runs)} runs cannot fit the {name} law's {n_params} parameters; "
                           f"need at least {n_params + 1}")
    return name, _log_inputs(name, runs), np.log(runs.column("loss"))


def point_fit(runs: Runs, law: str = "chinchilla", delta: float = 1e-3,
              grid: str | np.ndarray = "default") -> PointFit:
    """Fit a law by Huber loss on log loss from a grid of starts (Hoffmann et al. / Epoch).

    Parameters
    ----------
    runs : Runs
        From :func:`bayescale.load_runs`.
    law : {"chinchilla", "compute"}
    delta : float
        Huber threshold on log-loss residuals (1e-3 in the published recipe).
    grid : {"default", "small"} or array of shape (n_starts, n_parameters)
        Starting points; see :func:`starting_grid`. The default grid costs tens of seconds
        for Chinchilla (4,500 starts).

    Returns
    -------
    PointFit

    Examples
    --------
    >>> fit = point_fit(bs.load_dataset("chinchilla", drop_highest_loss=5))  # doctest: +SKIP
    >>> fit.params["alpha"]                                                  # doctest: +SKIP
    0.348...
    """
    start = time.perf_counter()
    name, log_x, log_y = _prepare(runs, law)
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    starts = starting_grid(name, grid) if isinstance(grid, str) else np.atleast_2d(np.asarray(grid, float))
    if starts.shape[1] != len(POINT_LAWS[name]) or len(starts) == 0:
        raise ValueError(f"grid must have shape (n_starts, {len(POINT_LAWS[name])}) with columns "
                         f"{POINT_LAWS[name]}, got {starts.shape}")
    best = None
    # One BLAS thread: L-BFGS-B's tiny matrix ops are ~10x slower when OpenBLAS spins up
    # threads on a busy machine.
    with threadpool_limits(1, user_api="blas"):
        for x0 in starts:
            result = _minimise(x0, name, log_x, log_y, delta)
            if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
                best = result
    if best is None:
        raise RunDataError(f"the {name} point fit failed from every start (objective not finite)")
    return PointFit(law=name, params=_paper_params(name, best.x), objective=float(best.fun),
                    seconds=time.perf_counter() - start, x=np.asarray(best.x), delta=delta,
                    n_starts=len(starts), converged=bool(best.success), runs=runs)


def bootstrap_point_fit(runs: Runs, law: str = "chinchilla", n_resamples: int = 200,
                        random_seed: int = 0, delta: float = 1e-3,
                        grid: str | np.ndarray = "default",
                        full: PointFit | None = None) -> PointFitBootstrap:
    """Bootstrap the point fit: refit on runs resampled with replacement.

    Each resample starts from the full-data optimum (a single start, as Epoch did), with the
    tight tolerances that make the refit actually move.

    Parameters
    ----------
    runs : Runs
    law : {"chinchilla", "compute"}
    n_resamples : int
        Bootstrap replicates (Epoch used thousands; 200 gives usable standard errors).
    random_seed : int
        Seed of the resampling.
    delta : float
        Huber threshold.
    grid : {"default", "small"} or array
        Starting grid of the full fit when ``full`` is not given.
    full : PointFit, optional
        An existing fit of these runs to start from (saves refitting the grid).

    Returns
    -------
    PointFitBootstrap
        ``seconds`` counts the full fit too when it was computed here.
    """
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    start = time.perf_counter()
    name, log_x, log_y = _prepare(runs, law)
    if full is None:
        full = point_fit(runs, law=name, delta=delta, grid=grid)
    elif full.law != name:
        raise ModelMismatchError(f"full fit is of the {full.law} law, not {name}")
    rng = np.random.default_rng(random_seed)
    n = len(runs)
    xs = np.empty((n_resamples, len(full.x)))
    with threadpool_limits(1, user_api="blas"):
        for i in range(n_resamples):
            idx = rng.integers(0, n, size=n)
            xs[i] = _minimise(full.x, name, log_x[:, idx], log_y[idx], delta).x
    params = pd.DataFrame([_paper_params(name, x) for x in xs])
    return PointFitBootstrap(full=full, params=params, x=xs, seconds=time.perf_counter() - start,
                             random_seed=int(random_seed))
