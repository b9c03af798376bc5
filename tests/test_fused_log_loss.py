"""The fused log-loss pass (vectorisable exp/log over points x draws) against numpy and the law."""

from __future__ import annotations

import numpy as np
import pytest

from bayescale._pointwise import fused_log_loss, log_power_sum_rows

ULP = np.finfo(float).eps


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
