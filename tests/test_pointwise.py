"""Per-point summaries: exact against numpy/scipy references, in every chunking and thread mode."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
import bayescale._pointwise as pointwise
from bayescale._pointwise import map_point_chunks, noise_cdf_rows, row_quantiles, t_cdf_integer
from bayescale.forecast import loss_draws, resolve_points
from conftest import EPOCH_TRUTH, synthetic_posterior_fit

LEVELS = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]


def smooth_rows(n_points=400, n_draws=1000, seed=0):
    """Rows like a forecast grid: every draw a smooth curve, the curves crossing."""
    rng = np.random.default_rng(seed)
    intercept, slope = rng.normal(0, 1, n_draws), rng.normal(0.5, 0.2, n_draws)
    u = np.linspace(0, 12, n_points)[:, None]
    return intercept + slope * u + 0.01 * np.sin(3 * u + intercept)


# -- row_quantiles -------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["smooth", "shuffled", "reversed", "random", "ties", "constant"])
def test_row_quantiles_equal_numpy_to_the_bit(case):
    rng = np.random.default_rng(1)
    values = smooth_rows()
    if case == "shuffled":
        values = values[rng.permutation(len(values))]
    elif case == "reversed":
        values = values[::-1]
    elif case == "random":                       # no neighbour predicts the next row
        values = rng.standard_t(2, size=(300, 777))
    elif case == "ties":
        values = np.round(values, 1)
    elif case == "constant":
        values = np.full((50, 400), 2.5)
    expected = np.quantile(values, LEVELS, axis=1).T
    np.testing.assert_array_equal(row_quantiles(values, LEVELS), expected)


@pytest.mark.parametrize("n_draws", [1, 2, 3, 8, 1001])
def test_row_quantiles_small_and_odd_draw_counts(n_draws):
    values = np.random.default_rng(n_draws).normal(size=(40, n_draws)).cumsum(axis=0)
    np.testing.assert_array_equal(row_quantiles(values, LEVELS), np.quantile(values, LEVELS, axis=1).T)


def test_row_quantiles_nan_and_inf_like_numpy():
    values = smooth_rows(30, 200)
    values[4, 7] = np.nan                        # numpy's answer: NaN for that row
    got = row_quantiles(values, [0.05, 0.5, 0.99])
    np.testing.assert_array_equal(got, np.quantile(values, [0.05, 0.5, 0.99], axis=1).T)
    assert np.isnan(got[4]).all() and np.isfinite(np.delete(got, 4, axis=0)).all()
    values = smooth_rows(30, 200)
    values[9:, :3] = np.inf                      # a loss beyond float64 in three draws
    got = row_quantiles(values, [0.5, 0.98])
    np.testing.assert_array_equal(got, np.quantile(values, [0.5, 0.98], axis=1).T)
    assert np.isfinite(got).all()


def test_row_quantiles_bad_arguments():
    with pytest.raises(ValueError, match=r"values must be \(points, draws\) with draws ≥ 1, got shape \(3,\)"):
        row_quantiles(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="probs must be levels in"):
        row_quantiles(np.ones((2, 3)), [0.5, 1.5])


# -- noise CDF -----------------------------------------------------------------------------

@pytest.mark.parametrize("nu", [1, 2, 3, 4, 5, 10, 31, 200, None])
def test_noise_cdf_rows_match_scipy(nu):
    rng = np.random.default_rng(2)
    log_loss = rng.normal(0.7, 0.05, size=(37, 501))
    sigma = rng.uniform(0.005, 0.05, 501)
    p, mean, sd = noise_cdf_rows(log_loss, math.log(2.0), sigma, nu)
    z = (math.log(2.0) - log_loss) / sigma
    expected = stats.norm.cdf(z) if nu is None else stats.t.cdf(z, nu)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-13)
    np.testing.assert_allclose(mean, expected.mean(axis=1), rtol=0, atol=1e-13)
    np.testing.assert_allclose(sd, expected.std(axis=1, ddof=1), rtol=1e-10, atol=1e-15)


def test_noise_cdf_rows_extremes_and_equal_draws():
    log_loss = np.array([[-1e300, 1e300, 0.7, 0.7], [0.7, 0.7, 0.7, 0.7]])
    p, mean, sd = noise_cdf_rows(log_loss, 0.7, np.full(4, 1e-3), 4)
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.5, 0.5])
    assert sd[1] == 0.0 and mean[1] == 0.5     # identical draws: no Monte-Carlo error at all
    with pytest.raises(ValueError, match="out must not overlap log_loss"):
        noise_cdf_rows(log_loss, 0.7, np.ones(4), 4, out=log_loss)
    with pytest.raises(ValueError, match=r"nu must be a whole number in \[1, 200\] or None, got 0"):
        noise_cdf_rows(log_loss, 0.7, np.ones(4), 0)


def test_t_cdf_integer_any_shape():
    z = np.linspace(-50, 50, 1001).reshape(7, 11, 13)
    for nu in (1, 4, 7):
        np.testing.assert_allclose(t_cdf_integer(z, nu), stats.t.cdf(z, nu), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(t_cdf_integer(np.array([-np.inf, np.inf, np.nan]), 4)[:2], [0.0, 1.0])
    assert np.isnan(t_cdf_integer(np.array([np.nan]), 4)[0])
    with pytest.raises(ValueError, match=r"nu must be a whole number in \[1, 200\], got 201"):
        t_cdf_integer(z, 201)
    with pytest.raises(ValueError, match=r"nu must be a whole number in \[1, 200\], got 4.5"):
        t_cdf_integer(z, 4.5)


# -- chunks and threads --------------------------------------------------------------------

def test_map_point_chunks_order_and_threads(monkeypatch):
    calls = []

    def chunk(part, workspace):
        buffer = workspace.array("x", part.stop - part.start, 5)
        buffer[:] = np.arange(part.start, part.stop)[:, None]
        calls.append(part)
        return buffer[:, 0].copy()

    monkeypatch.setattr(pointwise, "CHUNK_BYTES", 8 * 5 * 7)       # 7 points a chunk
    serial = np.concatenate(map_point_chunks(chunk, 100, 5))
    monkeypatch.setattr(pointwise, "PARALLEL_MIN", 0)
    monkeypatch.setattr(pointwise, "worker_count", lambda: 3)
    threaded = np.concatenate(map_point_chunks(chunk, 100, 5))
    np.testing.assert_array_equal(serial, np.arange(100))
    np.testing.assert_array_equal(threaded, np.arange(100))
    assert len(calls) == 2 * 15 and calls[14] == slice(98, 100)


@pytest.fixture(scope="module")
def spread_fit():
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    return synthetic_posterior_fit(runs, spread=0.03, sigma=0.02, chains=4, draws=500, seed=3)


@pytest.mark.parametrize("threads", [False, True])
def test_forecast_and_prob_below_equal_whole_array_references(spread_fit, monkeypatch, threads):
    """Chunked, threaded summaries against the plain computation on the full (draws × points) array."""
    monkeypatch.setattr(pointwise, "CHUNK_BYTES", 8 * spread_fit.n_draws * 13)
    if threads:
        monkeypatch.setattr(pointwise, "PARALLEL_MIN", 0)
        monkeypatch.setattr(pointwise, "worker_count", lambda: 3)
    budgets = np.geomspace(1e20, 1e24, 150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = spread_fit.forecast(flops=budgets, prob=0.8)
        probs = spread_fit.prob_below(2.0, flops=budgets, mcse="iid")
    theta = spread_fit.theta(expand=True)
    log_n = spread_fit.law.optimal_log_params(theta, spread_fit.reference, np.log(budgets)[None, :])
    np.testing.assert_allclose(table["params"], np.exp(np.median(log_n, axis=0)), rtol=1e-13)
    points = table[["flops", "params", "tokens"]]
    samples = loss_draws(spread_fit, points)
    lower, median, upper = np.quantile(samples, [0.1, 0.5, 0.9], axis=0)
    np.testing.assert_allclose(table["loss_lower"], lower, rtol=1e-13)
    np.testing.assert_allclose(table["loss_median"], median, rtol=1e-13)
    np.testing.assert_allclose(table["loss_upper"], upper, rtol=1e-13)
    np.testing.assert_allclose(table["loss_mean"], samples.mean(axis=0), rtol=1e-12)
    mu = np.log(loss_draws(spread_fit, points, kind="mean"))
    per_draw = stats.t.cdf((math.log(2.0) - mu) / 0.02, 4)
    np.testing.assert_allclose(probs["prob"], per_draw.mean(axis=0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(probs["mcse"], per_draw.std(axis=0, ddof=1) / math.sqrt(2000),
                               rtol=1e-9, atol=1e-15)


def test_prob_below_stays_finite_where_the_loss_overflows():
    # α = 2.5 and N = 1e-300 parameters: A/N^α is beyond 1e308, so the linear form of the
    # law overflows to inf; log-sum-exp takes over and the probability is an honest 0.
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    steep = synthetic_posterior_fit(runs, paper={**EPOCH_TRUTH, "alpha": 2.5}, spread=0.01)
    assert np.isinf(loss_draws(steep, pd.DataFrame({"flops": 6e-290, "params": [1e-300],
                                                    "tokens": [1e10]}), kind="mean")).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        got = steep.prob_below(2.0, params=[1e-300, 1e9], tokens=[1e10, 1e10])["prob"]
    assert np.isfinite(got).all() and got.iloc[0] < 1e-12 and 0 < got.iloc[1] < 1


def test_resolve_points_median_split_in_threads(spread_fit, monkeypatch):
    monkeypatch.setattr(pointwise, "PARALLEL_MIN", 0)
    monkeypatch.setattr(pointwise, "CHUNK_BYTES", 8 * spread_fit.n_draws * 4)
    budgets = np.geomspace(1e19, 1e25, 97)
    points = resolve_points(spread_fit, flops=budgets)
    log_n = spread_fit.law.optimal_log_params(spread_fit.theta(expand=True), spread_fit.reference,
                                              np.log(budgets)[None, :])
    np.testing.assert_allclose(points["params"], np.exp(np.median(log_n, axis=0)), rtol=1e-13)
    np.testing.assert_allclose(6 * points["params"] * points["tokens"], budgets, rtol=1e-13)
    assert isinstance(points, pd.DataFrame)


def test_median_split_is_remembered_per_fit_and_budgets(spread_fit):
    from bayescale import forecast

    budgets = np.log(np.geomspace(1e20, 1e23, 40))
    first = forecast.median_optimal_log_params(spread_fit, budgets)
    assert forecast.median_optimal_log_params(spread_fit, budgets.copy()) is first
    assert not first.flags.writeable
    other = forecast.median_optimal_log_params(spread_fit, budgets + 1.0)
    assert other is not first and (other > first).all()
    for shift in range(2, 2 + forecast._SPLIT_CACHE_SIZE):     # pushes the first one out
        forecast.median_optimal_log_params(spread_fit, budgets + shift)
    again = forecast.median_optimal_log_params(spread_fit, budgets)
    assert again is not first
    np.testing.assert_array_equal(again, first)


def test_threaded_ess_leaves_the_warning_filters_alone(monkeypatch):
    """ArviZ's ESS in two threads at once must not leave an 'ignore' filter behind."""
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    fit = synthetic_posterior_fit(runs, spread=0.05, chains=4, draws=1000)
    monkeypatch.setattr(pointwise, "worker_count", lambda: 2)
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        for _ in range(3):
            fit.prob_below(2.1, flops=np.geomspace(1e20, 1e23, 3000))   # 12M values: threads
    assert warnings.filters == filters
    with pytest.warns(bs.ExtrapolationWarning):
        fit.forecast(flops=[1e30])


def test_no_budgets_give_empty_tables(spread_fit):
    table = spread_fit.forecast(flops=[])
    assert len(table) == 0 and "loss_upper" in table
    assert len(spread_fit.prob_below(2.0, flops=[])) == 0
    assert len(spread_fit.optimal_allocation([])) == 0
