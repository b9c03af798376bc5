"""The discrepancy's edge evaluation (once per distinct edge point) equals the law's own."""

from __future__ import annotations

import numpy as np
import pytest

import bayescale as bs
from bayescale.discrepancy import _edge_log_loss, clip_to_range, default_discrepancy
from conftest import EPOCH_TRUTH, synthetic_posterior_fit


@pytest.mark.parametrize("law", ["chinchilla", "compute"])
def test_edge_log_loss_matches_the_law_in_every_layout(law):
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    paper = EPOCH_TRUTH if law == "chinchilla" else {"E": 1.7, "A": 30.0, "alpha": 0.05}
    fit = synthetic_posterior_fit(runs, paper=paper, spread=0.05, draws=50, law=law)
    fit = fit.with_discrepancy(default_discrepancy(runs))
    theta_rows = {k: v[None, :] for k, v in fit.theta().items()}      # (1, draws)
    theta_cols = {k: v[:, None] for k, v in fit.theta().items()}      # (draws, 1)
    c = np.geomspace(1e18, 1e26, 40)
    n = np.sqrt(c / 6.0) * np.linspace(0.5, 2.0, c.size)
    def inputs(flops, params):
        x = {"flops": np.log(flops)[:, None]}
        if law == "chinchilla":
            x.update(params=np.log(params)[:, None], tokens=np.log(flops / (6.0 * params))[:, None])
        return x

    many = np.full(fit.n_draws, 1e25)
    layouts = [(theta_rows, inputs(c, n)),                      # one row of draws per point
               (theta_rows, inputs(np.full(30, 1e26), np.full(30, 4e11))),   # repeated edges
               (theta_cols, inputs(many, np.sqrt(many / 6.0)))]  # one row per draw
    for theta, log_x in layouts:
        edge_x = clip_to_range(log_x, fit.discrepancy.log_max)
        expected = fit.law.log_loss(theta, edge_x, fit.reference, np)
        got = _edge_log_loss(fit, theta, edge_x)
        np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form, tau", [("improvement", 0.5), ("distance", 0.05)])
def test_compute_law_on_runs_with_sizes_forecasts_finite_bands(form, tau):
    # A compute-law point has no N or D (NaN in the table): the discrepancy must measure its
    # distance by C alone. It once took NaN for the distance and every band became inf.
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    fit = synthetic_posterior_fit(runs, paper={"E": 1.7, "A": 30.0, "alpha": 0.05},
                                  spread=0.01, draws=200, law="compute")
    plain = fit.with_discrepancy(default_discrepancy(runs, tau=0.0, form=form))
    fit = fit.with_discrepancy(default_discrepancy(runs, tau=tau, form=form))
    flops = [1e20, 1e22, 1e24, 1e26]
    bands = fit.forecast(flops=flops)[["loss_lower", "loss_median", "loss_upper"]].to_numpy()
    assert np.isfinite(bands).all()
    base = plain.forecast(flops=flops)[["loss_lower", "loss_upper"]].to_numpy()
    widening = (bands[:, 2] - bands[:, 0]) / (base[:, 1] - base[:, 0])
    # Inside the fitted range (largest run ~1.3e22 FLOPs) δ adds nothing; past it, more and more.
    np.testing.assert_allclose(widening[0], 1.0, atol=0.02)
    assert widening[3] > widening[2] > 1.05
    prob = fit.prob_below(2.5, flops=[1e22, 1e26])["prob"].to_numpy()
    assert np.isfinite(prob).all() and prob[1] > prob[0]


@pytest.mark.parametrize("law", ["chinchilla", "compute"])
def test_add_discrepancy_evaluates_only_points_past_the_range_and_equals_the_full_shift(law):
    # add_discrepancy skips the edge evaluation at points within the fitted range (δ is zero
    # there); the result must equal log L + discrepancy_shift at every point and draw.
    from bayescale.discrepancy import add_discrepancy, discrepancy_shift

    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    paper = EPOCH_TRUTH if law == "chinchilla" else {"E": 1.7, "A": 30.0, "alpha": 0.05}
    fit = synthetic_posterior_fit(runs, paper=paper, spread=0.05, draws=60, law=law)
    fit = fit.with_discrepancy(default_discrepancy(runs, tau=0.5))
    theta = {k: v[None, :] for k, v in fit.theta().items()}
    c = np.geomspace(1e18, 1e26, 41)
    x = {"flops": np.log(c)[:, None]}
    if law == "chinchilla":
        n = np.sqrt(c / 120.0)
        x.update(params=np.log(n)[:, None], tokens=np.log(c / (6.0 * n))[:, None])
    else:
        x.update(params=np.full((c.size, 1), np.nan), tokens=np.full((c.size, 1), np.nan))
    like = theta["sigma"]
    log_loss = fit.law.log_loss(theta, x, fit.reference, np)
    shift = discrepancy_shift(fit, x, like, theta, log_loss)
    inside = c < 1e21
    # Within the range the full route's δ is zero up to the last bit of two law evaluations.
    assert np.abs(shift[inside]).max() < 1e-15 and np.all(np.abs(shift[c > 1e24]).max(axis=1) > 0)
    got = add_discrepancy(fit, x, like, theta, log_loss.copy())
    np.testing.assert_allclose(got, log_loss + shift, rtol=1e-14, atol=1e-14)
    assert np.array_equal(got[inside], log_loss[inside])        # exactly: not evaluated again
    # All points inside: the law's log loss comes back untouched (no second evaluation).
    few = {k: v[inside] for k, v in x.items()}
    untouched = log_loss[inside].copy()
    assert np.array_equal(add_discrepancy(fit, few, like, theta, untouched), log_loss[inside])
