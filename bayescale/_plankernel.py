"""Compiled kernel of the run planner: reweight the draws by one simulated pilot outcome and
summarise a per-draw quantity under the new weights (numba, imported on first use).

The formulas are the ones :mod:`bayescale.plan` writes in numpy for a single outcome
(:func:`bayescale.plan.reweighted_objective`); tests check the two agree.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["reweighted_rows", "OBJECTIVE_WIDTH", "OBJECTIVE_VARIANCE"]

OBJECTIVE_WIDTH = 0     # width of a central band: upper minus lower weighted quantile
OBJECTIVE_VARIANCE = 1  # weighted variance


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _band_width(sorted_values, w, total, low, high):
    """Width between two weighted quantiles of values already in increasing order.

    The inverse of the weighted empirical CDF with linear interpolation, each draw sitting at
    the midpoint of its weight mass (the weighted analogue of the Hazen plotting position), so
    equal weights give numpy's "hazen" quantile. One scan finds both ends.
    """
    targets = (low * total, high * total)
    found = np.empty(2)
    k = 0
    cumulative = 0.0
    previous_mid = -1.0
    previous_value = sorted_values[0]
    for j in range(sorted_values.size):
        weight = w[j]
        if weight <= 0.0:
            continue
        mid = cumulative + 0.5 * weight
        while k < 2 and mid >= targets[k]:
            if previous_mid < 0.0:
                found[k] = sorted_values[j]
            else:
                t = (targets[k] - previous_mid) / (mid - previous_mid)
                found[k] = previous_value + t * (sorted_values[j] - previous_value)
            k += 1
        if k == 2:
            return found[1] - found[0]
        cumulative += weight
        previous_mid = mid
        previous_value = sorted_values[j]
    while k < 2:
        found[k] = previous_value
        k += 1
    return found[1] - found[0]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def reweighted_rows(first, stop, mu, outcomes, base, log_norm, inv_sigma, half_nu1, inv_nu,
                    student, values, objective, low, high, out, ess):
    """Objective and Kish ESS for rows ``first..stop`` of the flattened (candidate, outcome) grid.

    Every per-draw array comes in the same order of draws, that of increasing ``values``, so
    that band ends are found in one sequential scan.

    Parameters
    ----------
    mu : (candidates, draws) the law's log loss of each candidate pilot, per draw.
    outcomes : (candidates, outcomes) simulated log loss of each pilot.
    base : (outcomes, draws) log likelihood of the pilots already chosen (zeros if none).
    log_norm : (draws,) the noise density's log normalising constant minus log sigma.
    inv_sigma, half_nu1, inv_nu : (draws,) 1/sigma, (nu + 1)/2 and 1/nu (Student-t only).
    student : bool, Student-t (True) or normal noise.
    values : (draws,) the quantity whose uncertainty is the objective, sorted.
    objective : OBJECTIVE_WIDTH (band between levels ``low``, ``high``) or OBJECTIVE_VARIANCE.
    out, ess : (candidates·outcomes,) results, written at the rows' flat indices.
    """
    n_outcomes = outcomes.shape[1]
    n_draws = values.size
    w = np.empty(n_draws)
    for row in range(first, stop):
        c = row // n_outcomes
        s = row - c * n_outcomes
        y = outcomes[c, s]
        top = -math.inf
        for i in range(n_draws):
            z = (y - mu[c, i]) * inv_sigma[i]
            if student:
                lw = log_norm[i] - half_nu1[i] * math.log1p(z * z * inv_nu[i])
            else:
                lw = log_norm[i] - 0.5 * z * z
            lw += base[s, i]
            w[i] = lw
            top = max(top, lw)
        total = 0.0
        total2 = 0.0
        for i in range(n_draws):
            weight = math.exp(w[i] - top)
            w[i] = weight
            total += weight
            total2 += weight * weight
        ess[row] = total * total / total2
        if objective == OBJECTIVE_VARIANCE:
            mean = 0.0
            for i in range(n_draws):
                mean += w[i] * values[i]
            mean /= total
            var = 0.0
            for i in range(n_draws):
                d = values[i] - mean
                var += w[i] * d * d
            out[row] = var / total
        else:
            out[row] = _band_width(values, w, total, low, high)
