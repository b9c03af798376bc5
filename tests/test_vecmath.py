"""The vectorisable exp and log, and the fused log-loss pass built on them, against numpy."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from bayescale._pointwise import fused_log_loss, log_power_sum_rows
from bayescale._vecmath import vexp, vlog

ULP = np.finfo(float).eps


@numba.njit(fastmath={"contract"})
def _exp_all(x, out):
    for i in range(x.size):
        out[i] = vexp(x[i])


@numba.njit(fastmath={"contract"})
def _log_all(x, out):
    for i in range(x.size):
        out[i] = vlog(x[i])


def _apply(kernel, x):
    out = np.empty_like(x)
    kernel(x, out)
    return out


def test_vexp_is_within_one_ulp_over_the_whole_range_and_exact_at_the_edges():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 709.7, 200_000), rng.uniform(-1, 1, 100_000),
                        rng.normal(0, 1e-9, 1_000), [0.0, -0.0, 1.0, -1.0, 709.78]])
    got, want = _apply(_exp_all, x), np.exp(x)
    assert np.max(np.abs(got - want) / want) <= 1.01 * ULP
    specials = np.array([np.inf, -np.inf, np.nan, 709.79, 800.0, -745.2, -1e4])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(_apply(_exp_all, specials), np.exp(specials))
    # Subnormal results: within one unit of the smallest subnormal.
    tiny = np.linspace(-745.1, -708.5, 1_000)
    assert np.max(np.abs(_apply(_exp_all, tiny) - np.exp(tiny))) <= 2 * np.nextafter(0, 1) \
        + ULP * np.exp(-708.5)


def test_vlog_is_within_one_ulp_over_the_whole_range_and_exact_at_the_edges():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.exp(rng.uniform(-744, 709, 200_000)), rng.uniform(0.5, 2.0, 100_000),
                        [2.0, np.sqrt(2.0), 1e-310, 5e-324, np.finfo(float).max]])
    got, want = _apply(_log_all, x), np.log(x)
    nonzero = want != 0
    assert np.max(np.abs(got - want)[nonzero] / np.abs(want[nonzero])) <= 1.01 * ULP
    near_one = 1.0 + rng.normal(0, 1e-9, 1_000)
    np.testing.assert_allclose(_apply(_log_all, near_one), np.log(near_one), rtol=2 * ULP, atol=0)
    specials = np.array([0.0, -0.0, 1.0, np.inf, -1.0, -np.inf, np.nan])
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(_apply(_log_all, specials), np.log(specials))


def test_log_power_sum_rows_equals_the_numpy_sum_and_reports_overflow():
    rng = np.random.default_rng(2)
    draws, points = 301, 17
    terms = [(rng.normal(0, 2, draws), rng.uniform(0.1, 0.5, draws), rng.normal(0, 3, points))
             for _ in range(3)]
    constant = rng.uniform(1.0, 2.0, draws)
    want = np.log(constant + sum(np.exp(c[None, :] - e[None, :] * x[:, None]) for c, e, x in terms))
    got = log_power_sum_rows(terms, constant, np.empty((points, draws)))
    np.testing.assert_allclose(got, want, rtol=4 * ULP, atol=0)
    huge = [(np.full(draws, 800.0), np.zeros(draws), np.zeros(points))]
    assert log_power_sum_rows(huge, constant, np.empty((points, draws))) is None


@pytest.mark.parametrize("law", ["chinchilla", "compute"])
def test_fused_log_loss_matches_the_laws_own_log_loss(law):
    import bayescale as bs
    from conftest import synthetic_posterior_fit

    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    kwargs = {"paper": {"E": 1.7, "A": 30.0, "alpha": 0.05}} if law == "compute" else {}
    fit = synthetic_posterior_fit(runs, spread=0.05, draws=40, law=law, **kwargs)
    theta = {k: v[None, :] for k, v in fit.theta().items()}
    c = np.geomspace(1e18, 1e26, 23)
    n = np.sqrt(c / 6.0)
    log_x = {"flops": np.log(c)[:, None], "params": np.log(n)[:, None],
             "tokens": np.log(c / (6.0 * n))[:, None]}
    out = np.empty((c.size, fit.n_draws))
    got = fused_log_loss(fit.law, theta, fit.reference, log_x, out)
    assert got is out
    np.testing.assert_allclose(got, fit.law.log_loss(theta, log_x, fit.reference, np),
                               rtol=1e-13, atol=1e-13)
    # Another layout (draws down a column) is not the fused pass's: the caller's numpy route.
    assert fused_log_loss(fit.law, {k: v.T for k, v in theta.items()}, fit.reference,
                          {k: v.T for k, v in log_x.items()}, out) is None
