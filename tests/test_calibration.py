"""The calibrated predictive: law + discrepancy δ + noise, on synthetic posteriors (no sampling)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import bayescale as bs
from bayescale.discrepancy import (Discrepancy, default_discrepancy, discrepancy_normals,
                                   distance_decades)
from conftest import chinchilla_loss, synthetic_chinchilla_frame, synthetic_posterior_fit

TAU = 0.02


@pytest.fixture(scope="module")
def runs():
    return bs.load_runs(synthetic_chinchilla_frame())


@pytest.fixture(scope="module")
def plain(runs):
    """A point posterior (every draw the truth) without a discrepancy: today's predictive."""
    return synthetic_posterior_fit(runs, spread=0.0, sigma=0.01, draws=2000)


@pytest.fixture(scope="module")
def widened(runs, plain):
    return plain.with_discrepancy(default_discrepancy(runs, tau=TAU, form="distance"))


@pytest.fixture(scope="module")
def improving(runs, plain):
    return plain.with_discrepancy(default_discrepancy(runs, tau=0.3, form="improvement"))


def _largest(runs):
    return float(runs.column("flops").max())


def test_distance_is_decades_past_the_largest_input():
    log_max = {"flops": math.log(1e21), "params": math.log(1e9), "tokens": math.log(1e11)}
    log_x = {"flops": np.log([1e20, 1e22, 1e21]), "params": np.log([1e8, 1e9, 1e11]),
             "tokens": np.log([1e10, 1e11, 1e11])}
    np.testing.assert_allclose(distance_decades(log_x, log_max), [0.0, 1.0, 2.0])
    # An input the fit has no range for (a compute law's N) is ignored.
    np.testing.assert_allclose(distance_decades({"flops": np.log([1e23])}, log_max), [2.0])


def test_discrepancy_sd_zero_inside_growing_then_capped():
    d = Discrepancy(tau=0.01, log_max={"flops": 0.0}, cap_decades=3.0, form="distance")
    log_c = np.log(10.0) * np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    sd = d.sd({"flops": log_c})
    np.testing.assert_allclose(sd, [0, 0, 0.005, 0.01, 0.02, 0.03, 0.03])
    walk = Discrepancy(tau=0.01, log_max={"flops": 0.0}, power=0.5, form="distance")
    assert walk.sd({"flops": np.array([np.log(100.0)])})[0] == pytest.approx(0.01 * math.sqrt(2))


def test_discrepancy_round_trip_and_bad_values():
    d = Discrepancy(tau=0.004, log_max={"flops": 40.0, "params": 20.0}, power=0.5,
                    cap_decades=2.0, source="test")
    assert Discrepancy.from_dict(d.to_dict()) == d
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        Discrepancy(tau=-0.1)
    with pytest.raises(ValueError, match="power must be > 0"):
        Discrepancy(tau=0.1, power=0.0)
    with pytest.raises(ValueError, match="form must be one of"):
        Discrepancy(tau=0.1, form="gp")


def test_normals_are_standard_and_seeded(widened, runs):
    z = discrepancy_normals(widened)
    assert z.shape == (widened.n_draws,)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    again = synthetic_posterior_fit(runs, spread=0.0, sigma=0.01, draws=2000)
    np.testing.assert_array_equal(discrepancy_normals(again.with_discrepancy(widened.discrepancy)), z)


def test_no_discrepancy_is_todays_predictive(plain, widened):
    """Inside the fitted range δ is zero: the two predictives agree exactly."""
    c = _largest(plain.runs) / 10
    a = plain.forecast(flops=[c, c / 3], kind="observed")
    b = widened.forecast(flops=[c, c / 3], kind="observed")
    np.testing.assert_array_equal(a[["loss_lower", "loss_median", "loss_upper"]].to_numpy(),
                                  b[["loss_lower", "loss_median", "loss_upper"]].to_numpy())


def test_mean_band_is_the_discrepancy_band(widened):
    """A point posterior: the kind="mean" band is the law · exp(±z·τ·d) and nothing else."""
    largest = _largest(widened.runs)
    table = widened.forecast(params=[3e10], tokens=[largest * 100 / (6 * 3e10)], kind="mean")
    row = table.iloc[0]
    d = max(math.log10(row["flops"] / largest), math.log10(3e10 / widened.runs.column("params").max()),
            math.log10(row["tokens"] / widened.runs.column("tokens").max()))
    law = chinchilla_loss(3e10, row["tokens"])
    z = np.quantile(discrepancy_normals(widened), [0.05, 0.95])
    np.testing.assert_allclose([row["loss_lower"], row["loss_upper"]],
                               law * np.exp(TAU * d * z), rtol=1e-9)


def test_bands_widen_with_distance(widened, plain):
    largest = _largest(widened.runs)
    ratios = np.array([2.0, 10.0, 100.0])
    for kind in ("mean", "observed"):
        table = widened.forecast(flops=largest * ratios, kind=kind)
        width = np.log(table["loss_upper"] / table["loss_lower"]).to_numpy()
        assert np.all(np.diff(width) > 0), width
        base = plain.forecast(flops=largest * ratios, kind=kind)
        assert np.all(width >= np.log(base["loss_upper"] / base["loss_lower"]).to_numpy() - 1e-12)


def test_loss_draws_match_forecast_table(widened):
    from bayescale.forecast import loss_draws, resolve_points

    points = resolve_points(widened, flops=_largest(widened.runs) * np.array([3.0, 30.0]))
    draws = loss_draws(widened, points, kind="observed")
    table = widened.forecast(flops=points["flops"], kind="observed")
    np.testing.assert_allclose(np.quantile(draws, [0.05, 0.5, 0.95], axis=0).T,
                               table[["loss_lower", "loss_median", "loss_upper"]].to_numpy(),
                               rtol=1e-12)


def _exact_prob(fit, target, flops):
    """mean over draws of F_t((log target − law − δ) / σ): the definition, by hand."""
    from bayescale.forecast import resolve_points

    point = resolve_points(fit, flops=[flops]).iloc[0]
    law = math.log(chinchilla_loss(point["params"], point["tokens"]))
    d = fit.discrepancy.distance({"flops": np.log([flops]), "params": np.log([point["params"]]),
                                  "tokens": np.log([point["tokens"]])})[0]
    mu = law + fit.discrepancy.tau * d * discrepancy_normals(fit)
    return float(np.mean(stats.t.cdf((math.log(target) - mu) / 0.01, df=4))), float(np.mean(mu <= math.log(target)))


def test_prob_below_is_exact_given_the_draws(widened):
    flops = _largest(widened.runs) * 30
    target = float(widened.forecast(flops=[flops])["loss_median"].iloc[0]) * 1.01
    observed, mean = _exact_prob(widened, target, flops)
    assert widened.prob_below(target, flops=flops) == pytest.approx(observed, abs=1e-12)
    assert widened.prob_below(target, flops=flops, kind="mean") == pytest.approx(mean, abs=1e-12)
    # The discrepancy moves the answer: today's point posterior is near-certain here.
    plain = widened.with_discrepancy(None)
    assert plain.prob_below(target, flops=flops) > observed + 0.05


def test_compute_to_reach_risk_table_and_distribution_share_the_predictive(widened):
    flops = _largest(widened.runs) * 20
    target = float(widened.forecast(flops=[flops], kind="mean")["loss_median"].iloc[0])
    need = widened.compute_to_reach(target, prob=0.8)
    assert widened.prob_below(target, flops=need) == pytest.approx(0.8, abs=2e-3)
    table = widened.risk_table([target], [flops, need])
    expected = [widened.prob_below(target, flops=c, mcse="none") for c in (flops, need)]
    np.testing.assert_allclose(table.to_numpy()[0], expected, atol=1e-12)
    spread = widened.compute_distribution(target)
    today = widened.with_discrepancy(None).compute_distribution(target)
    width = np.log(spread["flops_upper"] / spread["flops_lower"]).iloc[0]
    assert width > np.log(today["flops_upper"] / today["flops_lower"]).iloc[0] + 0.1


def test_allocation_loss_band_includes_the_discrepancy(widened):
    flops = _largest(widened.runs) * np.array([10.0, 100.0])
    wide = widened.optimal_allocation(flops)
    narrow = widened.with_discrepancy(None).optimal_allocation(flops)
    # The split is the law's: unchanged. Its loss carries the law's error.
    np.testing.assert_array_equal(wide["params_median"], narrow["params_median"])
    w = np.log(wide["loss_upper"] / wide["loss_lower"]).to_numpy()
    assert np.all(w > np.log(narrow["loss_upper"] / narrow["loss_lower"]).to_numpy() + 0.01)
    assert w[1] > w[0]
    from bayescale.allocation import optimal_allocation_draws

    draws = optimal_allocation_draws(widened, flops)["loss"]
    np.testing.assert_allclose(np.quantile(draws, [0.05, 0.95], axis=0).T,
                               wide[["loss_lower", "loss_upper"]].to_numpy(), rtol=1e-9)


def test_saved_fit_keeps_its_discrepancy(widened, plain, tmp_path):
    widened.save(tmp_path / "wide.nc")
    loaded = bs.load_fit(tmp_path / "wide.nc")
    assert loaded.discrepancy == widened.discrepancy
    flops = _largest(widened.runs) * np.array([5.0, 50.0])
    np.testing.assert_array_equal(loaded.forecast(flops=flops).to_numpy(),
                                  widened.forecast(flops=flops).to_numpy())
    plain.save(tmp_path / "plain.nc")
    assert bs.load_fit(tmp_path / "plain.nc").discrepancy is None


def test_extrapolation_share_in_the_report_line(widened):
    from bayescale.report import trust_line

    largest = _largest(widened.runs)
    near, far = (trust_line(widened, largest * r) for r in (2.0, 100.0))
    assert near.startswith("2x the largest run's compute") and far.startswith("100x")
    share = [float(s.split("discrepancy ")[1].split("%")[0]) for s in (near, far)]
    assert 0 < share[0] < share[1] <= 100
    assert "inside the fitted range" in trust_line(widened, largest / 10)


def test_edge_of_the_range_takes_compute_off_n_and_d():
    from bayescale.discrepancy import clip_to_range

    log_max = {"params": 0.0, "tokens": 0.0, "flops": 0.0}
    # N 1 e-fold past its range, D inside, C 3 e-folds past: N loses 1 + 1, D loses 1.
    edge = clip_to_range({"params": np.array(1.0), "tokens": np.array(-0.5),
                          "flops": np.array(3.0)}, log_max)
    np.testing.assert_allclose([edge["params"], edge["tokens"], edge["flops"]], [-1.0, -1.5, 0.0])
    inside = {"params": np.array(-1.0), "tokens": np.array(-1.0), "flops": np.array(-0.2)}
    assert all(np.array_equal(clip_to_range(inside, log_max)[k], inside[k]) for k in inside)


def test_improvement_band_scales_the_laws_fall_past_the_edge(improving):
    """A point posterior: log L = law + min(z·τ, 1)·(law at the edge − law), exactly."""
    from bayescale.discrepancy import clip_to_range

    largest = _largest(improving.runs)
    table = improving.forecast(flops=[largest * 30], kind="mean")
    row = table.iloc[0]
    log_x = {n: np.log([row[n]]) for n in ("flops", "params", "tokens")}
    edge = clip_to_range(log_x, improving.discrepancy.log_max)
    law = math.log(chinchilla_loss(row["params"], row["tokens"]))
    fall = math.log(chinchilla_loss(math.exp(edge["params"][0]), math.exp(edge["tokens"][0]))) - law
    assert fall > 0
    factor = np.minimum(0.3 * discrepancy_normals(improving), 1.0)
    expected = np.exp(law + np.quantile(factor, [0.05, 0.5, 0.95]) * fall)
    np.testing.assert_allclose(row[["loss_lower", "loss_median", "loss_upper"]].to_numpy(dtype=float),
                               expected, rtol=1e-9)


@pytest.mark.parametrize("kind", ["observed", "mean"])
def test_improvement_form_keeps_risk_monotone_in_compute(improving, kind):
    """Every draw's loss still falls with compute, so P(loss ≤ target) never falls."""
    largest = _largest(improving.runs)
    budgets = largest * np.geomspace(0.5, 1e4, 60)
    for target in (2.0, 2.1, 2.3):
        p = improving.prob_below(target, flops=budgets, kind=kind, mcse="none")["prob"].to_numpy()
        assert np.all(np.diff(p) >= -1e-12), target
    need = improving.compute_to_reach(2.1, prob=0.8)
    assert improving.prob_below(2.1, flops=need) == pytest.approx(0.8, abs=2e-3)


def test_improvement_bands_widen_with_distance(improving):
    largest = _largest(improving.runs)
    table = improving.forecast(flops=largest * np.array([2.0, 10.0, 100.0]), kind="mean")
    width = np.log(table["loss_upper"] / table["loss_lower"]).to_numpy()
    assert np.all(np.diff(width) > 0) and width[0] > 0


# -- learning τ from the inner backtests ------------------------------------------------------

def _inner(errors, improvement, noise=0.01, origin=None):
    errors = np.asarray(errors, dtype=float)
    return {"errors": errors, "improvement": np.asarray(improvement, dtype=float),
            "noise": np.full(errors.size, noise),
            "origin": np.zeros(errors.size) if origin is None else np.asarray(origin, dtype=float)}


@pytest.mark.parametrize("likelihood, rho", [("shared", 1.0), ("mixed", 0.5), ("mixed", 0.0)])
def test_tau_likelihood_is_the_multivariate_normal_density(likelihood, rho):
    """e = τ·(shared z and per-error parts)·g + noise: the closed form equals SciPy's density
    of N(0, s²I + τ²(ρggᵀ + (1−ρ)diag(g²))) up to a constant, summed over inner splits."""
    from bayescale.discrepancy import tau_log_likelihood

    rng = np.random.default_rng(4)
    n = 9
    origin = np.repeat([0, 1, 2], 3)
    inner = _inner(rng.normal(0, 0.02, n), rng.uniform(0.01, 0.1, n), origin=origin)
    taus = np.array([0.05, 0.3, 1.5])
    got = tau_log_likelihood(inner, taus=taus, likelihood=likelihood, rho=rho)
    expected = []
    for tau in taus:
        total = 0.0
        for k in range(3):
            sel = origin == k
            g = inner["improvement"][sel]
            cov = 0.01**2 * np.eye(3) + tau**2 * (rho * np.outer(g, g) + (1 - rho) * np.diag(g**2))
            total += stats.multivariate_normal(np.zeros(3), cov).logpdf(inner["errors"][sel])
        expected.append(total)
    np.testing.assert_allclose(got - got[0], np.array(expected) - expected[0], rtol=1e-6, atol=1e-6)


def test_learned_rho_likelihood_averages_the_mixed_one_over_its_grid():
    """ρ uniform on RHO_GRID, marginalised: the likelihood is the mean of the "mixed" ones."""
    from bayescale.discrepancy import RHO_GRID, tau_log_likelihood

    rng = np.random.default_rng(5)
    inner = _inner(rng.normal(0, 0.05, 12), rng.uniform(0.01, 0.1, 12),
                   origin=np.repeat([0, 1, 2, 3], 3))
    taus = np.array([0.05, 0.4, 2.0])
    got = tau_log_likelihood(inner, taus=taus, likelihood="learned-rho")
    each = np.stack([tau_log_likelihood(inner, taus=taus, likelihood="mixed", rho=r)
                     for r in RHO_GRID])
    np.testing.assert_allclose(got, np.log(np.exp(each).mean(axis=0)), rtol=1e-12)


def test_learned_tau_follows_the_inner_evidence():
    """Inner forecasts as good as the noise pull τ below the prior median; forecasts off by
    about half the law's promised improvement (in common and per run) push it above."""
    from bayescale.discrepancy import learn_tau

    rng = np.random.default_rng(5)
    g = np.tile(np.linspace(0.02, 0.1, 12), 4)
    origin = np.repeat(np.arange(4), 12)
    exact = _inner(rng.normal(0, 0.01, g.size), g, origin=origin)
    wrong = _inner(g * (0.5 + 0.5 * rng.standard_normal(g.size)) + rng.normal(0, 0.01, g.size), g,
                   origin=origin)
    for likelihood in ("shared", "mixed"):
        low = learn_tau(exact, prior_tau=0.4, prior_sd=1.0, likelihood=likelihood)
        high = learn_tau(wrong, prior_tau=0.4, prior_sd=1.0, likelihood=likelihood)
        assert low < 0.2 < 0.4 < high, (likelihood, low, high)
    assert learn_tau(_inner([], []), prior_tau=0.4, prior_sd=1.0) == pytest.approx(0.4, rel=0.07)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        learn_tau(exact, likelihood="gp")


def test_evidence_model_follows_the_design():
    """An isoFLOP grid (many sizes at each of a few budgets) gets the mixed evidence model;
    learning curves, digitised or scattered runs, and grids of fewer than 3 budgets get the
    shared-z one."""
    from bayescale.discrepancy import (DEFAULT_LIKELIHOOD, GRID_LIKELIHOOD, GRID_RHO,
                                       evidence_model, is_isoflop_grid)

    grid = np.repeat(1.25e16 * 2.0 ** np.arange(5), 8)
    assert is_isoflop_grid(grid)
    assert evidence_model(grid) == (GRID_LIKELIHOOD, GRID_RHO) == ("mixed", 0.5)
    curve = np.geomspace(1e15, 1e18, 40)
    chinchilla = bs.load_dataset("chinchilla", drop_highest_loss=5).column("flops")
    two_budgets = np.repeat([1e17, 1e18], 10)
    for flops in (curve, chinchilla, two_budgets, grid[:6]):
        assert not is_isoflop_grid(flops)
        assert evidence_model(flops) == (DEFAULT_LIKELIHOOD, 1.0)
    # A grid whose compute is 6·N·D of rounded sizes: budgets equal to within 0.5% are one.
    jitter = np.random.default_rng(0).uniform(-0.005, 0.005, grid.size)
    assert is_isoflop_grid(grid * (1.0 + jitter))
    # Three budgets of three runs each is the smallest grid; NaN compute is ignored.
    assert is_isoflop_grid(np.append(np.repeat([1e16, 2e16, 4e16], 3), np.nan))
