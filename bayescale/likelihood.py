"""Pointwise log-likelihood of fitted runs under the posterior draws (numpy and scipy only).

Used by PSIS-LOO in :func:`bayescale.backtest.compare` and by
:meth:`bayescale.ScalingFit.to_datatree`; it sits below both so neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._protocols import FitLike

__all__ = ["log_likelihood"]


def log_likelihood(fit: "FitLike") -> np.ndarray:
    """Pointwise log-likelihood of each fitted run under each draw, shape (chain, draw, runs).

    The likelihood is on log loss (as in the model), so values are log densities of log L.
    On the loss scale each run's value would shift by −log L, the same for every law fitted
    to the same runs, so comparisons between laws are unchanged.

    Parameters
    ----------
    fit : ScalingFit
        A fitted law.

    Returns
    -------
    numpy.ndarray
        Log densities of the observed log losses, shape (chain, draw, runs).
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
