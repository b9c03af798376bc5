"""ArviZ's effective sample size of the mean, compiled and computed for many rows at once.

``prob_below(..., mcse="ess")`` needs the ESS of the per-draw probabilities at every budget.
ArviZ (``arviz_stats``) computes it one point at a time in Python, with an FFT of every lag.
This kernel follows ArviZ's estimator step by step — split chains, autocovariance, Geyer's
initial positive then initial monotone sequence, the same floor on tau — but computes each
lag's autocovariance only when Geyer's sequence reaches it (for per-draw probabilities a
handful of lags), in numba without the GIL. :func:`bayescale.risk.ess_mean_rows` is the
vectorised numpy form of the same estimator; both are tested equal to ``az.ess``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["ess_mean_rows_compiled"]

_RESOLUTION = float(np.finfo(float).resolution)


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _mean_acov(centred, t):
    # Mean over split chains of the lag-t autocovariance (centred rows: contiguous, so the
    # sum vectorises; reassociating it changes only the last bits).
    m, n = centred.shape
    total = 0.0
    for k in range(m):
        c = centred[k]
        acc = 0.0
        for i in range(n - t):
            acc += c[i] * c[i + t]
        total += acc / n
    return total / m


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ess_row(row, chains, draws, means, rho, centred):
    half = draws // 2
    m = 2 * chains
    n = half
    low, high = math.inf, -math.inf
    # Split chain k: the first halves of the chains, then their last halves (ArviZ's order).
    for k in range(m):
        start = k * draws if k < chains else (k - chains) * draws + draws - half
        acc = 0.0
        for i in range(n):
            v = row[start + i]
            if not math.isfinite(v):
                return math.nan
            acc += v
            low = min(low, v)
            high = max(high, v)
        means[k] = acc / n
        for i in range(n):
            centred[k, i] = row[start + i] - means[k]
    size = m * n
    if high - low < _RESOLUTION:
        return float(size)
    mean_var = _mean_acov(centred, 0) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        grand = 0.0
        for k in range(m):
            grand += means[k]
        grand /= m
        between = 0.0
        for k in range(m):
            between += (means[k] - grand) ** 2
        var_plus += between / (m - 1)
    for t in range(n):
        rho[t] = 0.0
    rho_even = 1.0
    rho[0] = rho_even
    rho_odd = 1.0 - (mean_var - _mean_acov(centred, 1)) / var_plus
    rho[1] = rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0.0:
        rho_even = 1.0 - (mean_var - _mean_acov(centred, t + 1)) / var_plus
        rho_odd = 1.0 - (mean_var - _mean_acov(centred, t + 2)) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1] = rho_even
            rho[t + 2] = rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
            rho[t + 2] = rho[t + 1]
        t += 2
    tau = -1.0
    for i in range(max_t + 1):
        tau += 2.0 * rho[i]
    if max_t + 1 < n:
        tau += rho[max_t + 1]
    tau = max(tau, 1.0 / math.log10(size))
    for i in range(max_t + 2):
        if math.isnan(rho[i]):
            return math.nan
    return size / tau


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ess_rows(values, chains, draws, out):
    half = draws // 2
    means = np.empty(2 * chains)
    rho = np.empty(max(half, 2))
    centred = np.empty((2 * chains, half))
    for r in range(values.shape[0]):
        out[r] = _ess_row(values[r], chains, draws, means, rho, centred)


def ess_mean_rows_compiled(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """ArviZ's ESS of the mean for each row of ``values`` (points, chains·draws), chain-major.

    NaN where ArviZ gives NaN (fewer than 4 draws per chain, non-finite values).
    """
    chains, draws = int(shape[0]), int(shape[1])
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.full(values.shape[0], np.nan)
    if draws >= 4 and values.shape[0]:
        _ess_rows(values, chains, draws, out)
    return out
