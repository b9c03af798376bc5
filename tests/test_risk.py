"""Budget risk on synthetic posteriors (no sampling) with known answers, and the risk CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

import bayescale as bs
from bayescale.cli import main
from bayescale.risk import compute_to_target_draws, noise_cdf
from conftest import COMPUTE_TRUTH, EPOCH_TRUTH, synthetic_compute_frame, synthetic_posterior_fit


@pytest.fixture(scope="module")
def runs():
    return bs.load_dataset("chinchilla", drop_highest_loss=5)


@pytest.fixture(scope="module")
def point_fit(runs):
    """Every draw at Epoch's point estimate: the posterior is a single point."""
    return synthetic_posterior_fit(runs, spread=0.0, sigma=0.02)


@pytest.fixture(scope="module")
def spread_fit(runs):
    """Independent draws scattered 3% (log scale) around Epoch's values."""
    return synthetic_posterior_fit(runs, spread=0.03, sigma=0.02, chains=4, draws=1000, seed=1)


def epoch_optimum(flops, truth=EPOCH_TRUTH):
    """Closed-form compute-optimal N, D and loss, written independently of the package."""
    e, a, b, al, be = (truth[k] for k in ("E", "A", "B", "alpha", "beta"))
    g = (al * a / (be * b)) ** (1 / (al + be))
    n = g * (np.asarray(flops) / 6) ** (be / (al + be))
    d = np.asarray(flops) / (6 * n)
    return n, d, e + a / n ** al + b / d ** be


# -- the noise CDF -------------------------------------------------------------------------

@pytest.mark.parametrize("nu", [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 30.0, 4.5])
def test_noise_cdf_matches_scipy_student_t(nu):
    z = np.linspace(-40, 40, 4001)
    np.testing.assert_allclose(noise_cdf(z, np.full((1,), nu)), stats.t.cdf(z, nu), atol=1e-13)


def test_noise_cdf_normal_and_per_draw_nu():
    z = np.linspace(-8, 8, 101)
    np.testing.assert_allclose(noise_cdf(z, None), stats.norm.cdf(z), atol=1e-15)
    nu = np.array([[3.0], [6.5]])
    np.testing.assert_allclose(noise_cdf(z[None, :], nu), stats.t.cdf(z[None, :], nu), atol=1e-12)


# -- prob_below ----------------------------------------------------------------------------

def test_prob_below_exact_for_a_point_posterior(point_fit):
    budgets = np.array([1e21, 1e22, 3e22])
    _, _, loss = epoch_optimum(budgets)
    table = point_fit.prob_below(2.1, flops=budgets)
    expected = stats.t.cdf((math.log(2.1) - np.log(loss)) / 0.02, 4)
    np.testing.assert_allclose(table["prob"], expected, rtol=1e-9, atol=1e-12)
    assert (table["mcse"] < 1e-12).all()       # identical draws: no Monte-Carlo error
    n, d, _ = epoch_optimum(budgets)
    np.testing.assert_allclose(table["params"], n, rtol=1e-9)
    np.testing.assert_allclose(table["tokens"], d, rtol=1e-9)


def test_prob_below_normal_likelihood(runs):
    fit = synthetic_posterior_fit(runs, likelihood="normal", sigma=0.03)
    n, d = 2e9, 4e10
    loss = EPOCH_TRUTH["E"] + EPOCH_TRUTH["A"] / n ** EPOCH_TRUTH["alpha"] \
        + EPOCH_TRUTH["B"] / d ** EPOCH_TRUTH["beta"]
    got = fit.prob_below(2.3, params=n, tokens=d)
    assert isinstance(got, float)
    assert got == pytest.approx(stats.norm.cdf((math.log(2.3) - math.log(loss)) / 0.03), rel=1e-10)


def test_prob_below_limits(spread_fit):
    budgets = [1e21, 1e22, 1e23]
    assert (spread_fit.prob_below(3.5, flops=budgets)["prob"] > 0.999).all()
    # Far below the irreducible loss E ≈ 1.82: no chance at any budget.
    assert (spread_fit.prob_below(1.2, flops=budgets)["prob"] < 1e-3).all()
    assert spread_fit.prob_below(1.2, flops=1e23, mode="oracle", kind="mean") == 0.0


@pytest.mark.parametrize("mode", ["median", "oracle"])
@pytest.mark.parametrize("kind", ["observed", "mean"])
def test_prob_below_monotone_in_budget_and_target(spread_fit, mode, kind):
    budgets = np.geomspace(1e19, 1e24, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        probs = spread_fit.prob_below(2.05, flops=budgets, mode=mode, kind=kind, mcse="none")["prob"]
        assert (np.diff(probs) >= 0).all()
        assert probs.iloc[0] < 0.01 and probs.iloc[-1] > 0.7
        by_target = [spread_fit.prob_below(t, flops=3e22, mode=mode, kind=kind)
                     for t in np.linspace(1.9, 2.4, 30)]
    assert (np.diff(by_target) >= 0).all()
    assert by_target[0] < by_target[-1]


def test_oracle_never_below_median_allocation(spread_fit):
    budgets = np.geomspace(1e20, 1e23, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        median = spread_fit.prob_below(2.05, flops=budgets, mcse="none")["prob"]
        oracle = spread_fit.prob_below(2.05, flops=budgets, mode="oracle", mcse="none")["prob"]
    assert (oracle.to_numpy() >= median.to_numpy() - 1e-12).all()
    assert (oracle.to_numpy() > median.to_numpy()).any()


def test_prob_below_table_and_mcse(spread_fit):
    table = spread_fit.prob_below(2.05, flops=[1e22, 1e23])
    assert list(table.columns) == ["flops", "params", "tokens", "prob", "mcse"]
    assert table.attrs == {"target": 2.05, "mode": "median", "kind": "observed",
                           "mcse_method": "ess", "law": "chinchilla"}
    iid = spread_fit.prob_below(2.05, flops=[1e22, 1e23], mcse="iid")
    # Independent draws: ArviZ's ESS is close to the number of draws, so both errors agree.
    np.testing.assert_allclose(table["mcse"], iid["mcse"], rtol=0.25)
    assert (table["mcse"] > 0).all() and (table["mcse"] < 0.02).all()
    assert spread_fit.prob_below(2.05, flops=[1e22], mcse="none")["mcse"].isna().all()


def test_prob_below_compute_law(runs):
    frame = synthetic_compute_frame()
    fit = synthetic_posterior_fit(bs.load_runs(frame), paper=COMPUTE_TRUTH, law="compute")
    c = 1e20
    loss = COMPUTE_TRUTH["E"] + COMPUTE_TRUTH["A"] * c ** -COMPUTE_TRUTH["alpha"]
    expected = stats.t.cdf((math.log(2.3) - math.log(loss)) / 0.02, 4)
    assert fit.prob_below(2.3, flops=c) == pytest.approx(expected, rel=1e-9)
    assert fit.prob_below(2.3, flops=c, mode="oracle") == pytest.approx(expected, rel=1e-9)
    # Symmetric noise: the median run reaches the target where the law's loss equals it.
    assert fit.compute_to_reach(2.5, 0.5) == pytest.approx(
        ((2.5 - COMPUTE_TRUTH["E"]) / COMPUTE_TRUTH["A"]) ** (-1 / COMPUTE_TRUTH["alpha"]), rel=1e-8)


def test_prob_below_errors(point_fit):
    with pytest.raises(ValueError, match="target must be a finite positive loss, got -1"):
        point_fit.prob_below(-1, flops=1e22)
    with pytest.raises(ValueError, match=r"mode must be one of \('median', 'oracle'\), got 'best'"):
        point_fit.prob_below(2.0, flops=1e22, mode="best")
    with pytest.raises(ValueError, match="cannot be combined with explicit params= and tokens="):
        point_fit.prob_below(2.0, params=1e9, tokens=2e10, mode="oracle")
    with pytest.raises(ValueError, match=r"flops\[1\] = 0.0: must be a finite positive number"):
        point_fit.prob_below(2.0, flops=[1e22, 0])
    with pytest.raises(ValueError, match="give flops="):
        point_fit.prob_below(2.0)
    with pytest.raises(ValueError, match=r"mcse must be one of"):
        point_fit.prob_below(2.0, flops=1e22, mcse="bootstrap")


def test_prob_below_warns_far_past_the_data(point_fit):
    with pytest.warns(bs.ExtrapolationWarning, match="decades of compute past the largest run"):
        point_fit.prob_below(2.0, flops=1e26)


# -- compute_to_reach ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["median", "oracle"])
@pytest.mark.parametrize("kind", ["observed", "mean"])
def test_compute_to_reach_consistent_with_prob_below(spread_fit, mode, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        for target, prob in [(2.05, 0.8), (2.2, 0.5), (2.0, 0.9), (2.6, 0.99)]:
            c = spread_fit.compute_to_reach(target, prob, mode=mode, kind=kind)
            assert np.isfinite(c)
            assert spread_fit.prob_below(target, flops=c, mode=mode, kind=kind) >= prob
            assert spread_fit.prob_below(target, flops=c * (1 - 1e-6), mode=mode, kind=kind) < prob


def test_compute_to_reach_known_answer(point_fit):
    # One point posterior, kind="mean": the budget where the law's optimum loss equals target.
    c = point_fit.compute_to_reach(2.1, 0.5, kind="mean")
    _, _, loss = epoch_optimum(c)
    assert loss == pytest.approx(2.1, rel=1e-9)


def test_compute_to_reach_monotone_and_table(spread_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = spread_fit.compute_to_reach([2.2, 2.1, 2.05, 2.0], 0.8)
        by_prob = spread_fit.compute_to_reach(2.05, [0.5, 0.8, 0.9, 0.95])
    assert list(table.columns) == ["target", "prob", "flops", "params", "tokens", "prob_limit",
                                   "reachable"]
    assert (np.diff(table["flops"]) > 0).all()
    assert (np.diff(by_prob["flops"]) > 0).all()
    np.testing.assert_allclose(6 * table["params"] * table["tokens"], table["flops"], rtol=1e-9)


def test_compute_to_reach_unreachable(spread_fit):
    e = spread_fit.paper_draws()["E"]
    target = float(np.quantile(e, 0.5))           # half the draws have E ≥ target
    with pytest.warns(bs.UnreachableTargetWarning,
                      match=rf"target loss {target:g} is out of reach with probability 0.8"):
        assert spread_fit.compute_to_reach(target, 0.8) == math.inf
    with pytest.warns(bs.UnreachableTargetWarning) as record:
        table = spread_fit.compute_to_reach([1.5, 1.5, 1.6], [0.9, 0.5, 0.7])
    assert np.isinf(table["flops"]).all()
    assert sorted(str(w.message)[:55] for w in record) == [
        "target loss 1.5 is out of reach with probability 0.5 (o",
        "target loss 1.6 is out of reach with probability 0.7 (o"]
    # kind="mean": out of reach exactly when P(E ≥ target) > 1 − prob.
    for prob in (0.3, 0.45, 0.55, 0.7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = spread_fit.compute_to_reach([target], prob, kind="mean").iloc[0]
        assert row["prob_limit"] == pytest.approx(np.mean(e < target))
        assert bool(row["reachable"]) == (np.mean(e >= target) <= 1 - prob)
        assert np.isfinite(row["flops"]) == bool(row["reachable"])


def test_compute_to_reach_errors(point_fit):
    with pytest.raises(ValueError, match="prob must be a probability strictly between 0 and 1, got 1.0"):
        point_fit.compute_to_reach(2.0, 1.0)
    with pytest.raises(ValueError, match="target has 2 values and prob 3"):
        point_fit.compute_to_reach([2.0, 2.1], [0.5, 0.6, 0.7])


# -- per-draw compute ----------------------------------------------------------------------

def test_compute_to_target_draws_closed_form(spread_fit):
    # At the optimum L*(C) = E + K·(C/6)^(−γ), γ = αβ/(α+β), K = A·G^(−α) + B·G^β.
    p = spread_fit.paper_draws()
    al, be = p["alpha"], p["beta"]
    g = (al * p["A"] / (be * p["B"])) ** (1 / (al + be))
    k = p["A"] * g ** -al + p["B"] * g ** be
    target = 2.0
    with np.errstate(invalid="ignore"):
        expected = np.where(p["E"] < target,
                            6 * (k / (target - p["E"])) ** ((al + be) / (al * be)), np.inf)
    got = compute_to_target_draws(spread_fit, target)
    finite = np.isfinite(expected) & (expected < 1e290)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-8)
    assert (np.isinf(got) == ~(p["E"] < target) | (expected >= 1e300)).all()


def test_compute_distribution(spread_fit):
    table = spread_fit.compute_distribution([2.2, 2.05, 1.85], prob=0.8)
    assert list(table.columns) == ["target", "flops_median", "flops_lower", "flops_upper",
                                   "p_unreachable"]
    assert (table["flops_lower"] <= table["flops_median"]).all()
    assert (table["flops_median"] <= table["flops_upper"]).all()
    assert (np.diff(table["flops_median"]) > 0).all()
    e = spread_fit.paper_draws()["E"]
    np.testing.assert_allclose(table["p_unreachable"], [np.mean(e >= t) for t in (2.2, 2.05, 1.85)])
    assert table["p_unreachable"].iloc[-1] > 0.1
    assert table["flops_upper"].iloc[-1] == math.inf
    assert table.attrs["prob"] == 0.8


# -- risk_table ----------------------------------------------------------------------------

def test_risk_table_matches_prob_below(spread_fit):
    targets, budgets = [2.0, 2.05, 2.1], [1e21, 1e22, 1e23]
    table = spread_fit.risk_table(targets, budgets)
    assert table.shape == (3, 3)
    assert list(table.index) == targets and list(table.columns) == budgets
    for t in targets:
        np.testing.assert_allclose(table.loc[t].to_numpy(),
                                   spread_fit.prob_below(t, flops=budgets, mcse="none")["prob"],
                                   rtol=1e-12)
    assert (np.diff(table.to_numpy(), axis=0) >= 0).all()
    assert (np.diff(table.to_numpy(), axis=1) >= 0).all()
    assert len(table.attrs["params"]) == 3 and 0 < table.attrs["mcse_max"] < 0.02


# -- command line --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_fit(spread_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("risk") / "fit.nc"
    spread_fit.save(path)
    return path


def test_cli_risk_tables(saved_fit, capsys):
    assert main(["risk", str(saved_fit), "--target", "2.05", "2.1", "--budget", "1e22", "3e22",
                 "--prob", "0.5", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "P(loss <= target)" in out and "3e+22" in out
    assert "Compute to reach" in out and "80%" in out
    assert "posterior-median compute-optimal allocation" in out


def test_cli_risk_json(saved_fit, spread_fit, capsys):
    assert main(["risk", str(saved_fit), "--target", "2.05", "--budget", "3e22", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["risk"][0]["target"] == 2.05
    assert data["risk"][0]["prob"] == pytest.approx(spread_fit.prob_below(2.05, flops=3e22), rel=1e-12)
    reach = {row["prob"]: row["flops"] for row in data["compute_to_reach"]}
    assert sorted(reach) == [0.5, 0.8, 0.9]
    assert reach[0.8] == pytest.approx(spread_fit.compute_to_reach(2.05, 0.8), rel=1e-9)
    assert {"flops_median", "p_unreachable"} <= set(data["compute_distribution"][0])


def test_cli_risk_unreachable_and_bad_arguments(saved_fit, capsys):
    assert main(["risk", str(saved_fit), "--target", "1.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["compute_to_reach"][0]["flops"] is None and not data["compute_to_reach"][0]["reachable"]
    with pytest.raises(SystemExit) as exc:
        main(["risk", str(saved_fit), "--target", "-2"])
    assert exc.value.code == 2
    assert "expected a finite positive number, got '-2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["risk", str(saved_fit)])
    assert "--target" in capsys.readouterr().err
