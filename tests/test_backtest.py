"""Backtests: scoring on known answers, splits, LOO comparison, CLI, and calibration."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
from bayescale.backtest import (crps_draws, log_likelihood, score_draws, split_runs)
from bayescale.cli import main
from conftest import synthetic_compute_frame, quiet_fit

FAST_ARGS = ["--draws", "300", "--tune", "300", "--chains", "2", "--no-progress"]


# -- CRPS -------------------------------------------------------------------------------------

def test_crps_matches_all_pairs_definition():
    rng = np.random.default_rng(1)
    draws = rng.gamma(2.0, size=(37, 4))
    actual = np.array([0.5, 2.0, 7.0, 1.3])
    pairs = np.abs(draws[:, None, :] - draws[None, :, :]).mean(axis=(0, 1))
    expected = np.abs(draws - actual).mean(axis=0) - 0.5 * pairs
    np.testing.assert_allclose(crps_draws(draws, actual), expected, rtol=1e-12)


def test_crps_of_normal_draws_matches_closed_form():
    # CRPS(N(0, s), y) = s * (z (2Φ(z) − 1) + 2φ(z) − 1/√π), z = y / s.
    s = 0.3
    draws = s * stats.norm.ppf((np.arange(20_000) + 0.5) / 20_000)[:, None] * np.ones((1, 3))
    y = np.array([0.0, 0.2, -0.9])
    z = y / s
    exact = s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    np.testing.assert_allclose(crps_draws(draws, y), exact, rtol=2e-3)


def test_crps_point_mass_is_absolute_error():
    np.testing.assert_allclose(crps_draws(np.full((5, 2), 3.0), np.array([3.0, 1.0])), [0.0, 2.0])


def test_crps_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"shape \(S, M\)"):
        crps_draws(np.ones((4, 3)), np.ones(2))


# -- scoring ----------------------------------------------------------------------------------

def _lognormal_forecasts(n_points=200, n_draws=4000, sigma=0.05, shift=0.0):
    """Identical log-normal forecasts; actual losses placed at evenly spaced quantiles."""
    z = stats.norm.ppf((np.arange(n_draws) + 0.5) / n_draws)
    draws = np.exp(shift + sigma * z)[:, None] * np.ones((1, n_points))
    u = (np.arange(n_points) + 0.5) / n_points
    actual = np.exp(sigma * stats.norm.ppf(u))
    return actual, draws


def test_score_calibrated_forecasts_cover_at_their_level():
    actual, draws = _lognormal_forecasts()
    table, summary = score_draws(actual, draws)
    for p in (0.5, 0.8, 0.9, 0.95):
        assert summary[f"coverage_{round(100 * p)}"] == pytest.approx(p, abs=0.011)
        # Width of a central log-normal band: 2 z_{(1+p)/2} σ in log units.
        assert summary[f"width_{round(100 * p)}"] == pytest.approx(
            2 * stats.norm.ppf((1 + p) / 2) * 0.05, rel=2e-3)
    assert summary["bias"] == pytest.approx(0.0, abs=1e-4)
    # Median 1, actual log losses ~ N(0, 0.05): RMSLE is their spread.
    assert summary["rmsle"] == pytest.approx(0.05, rel=0.03)
    np.testing.assert_allclose(table["pit"], (np.arange(200) + 0.5) / 200, atol=1e-3)
    assert list(table.columns[:2]) == ["loss", "loss_median"]
    assert table.attrs["prob"] == (0.5, 0.8, 0.9, 0.95)


def test_score_shifted_forecasts_show_bias_and_lose_coverage():
    actual, draws = _lognormal_forecasts(shift=0.1)
    _, summary = score_draws(actual, draws, prob=[0.9])
    assert summary["bias"] == pytest.approx(0.1, abs=1e-4)   # forecasts too high by ~10%
    # A 2σ shift: the 90% band covers Φ(1.645 − 2) − Φ(−1.645 − 2) ≈ 0.361 of the runs.
    expected = stats.norm.cdf(stats.norm.ppf(0.95) - 2) - stats.norm.cdf(-stats.norm.ppf(0.95) - 2)
    assert summary["coverage_90"] == pytest.approx(expected, abs=0.011)
    _, calibrated = score_draws(*_lognormal_forecasts(), prob=[0.9])
    assert summary["crps"] > calibrated["crps"]


def test_score_bands_are_nested_and_labelled():
    actual, draws = _lognormal_forecasts(n_points=10)
    table, summary = score_draws(actual, draws, prob=(0.975, 0.5))
    assert list(summary.attrs["prob"]) == [0.5, 0.975]
    assert (table["loss_lower_97.5"] <= table["loss_lower_50"]).all()
    assert (table["loss_upper_50"] <= table["loss_upper_97.5"]).all()


@pytest.mark.parametrize("draws, message", [
    (np.full((5, 3), np.nan), "finite and positive"),
    (np.ones((5, 2)), r"shape \(draws, 3\)"),
])
def test_score_rejects_bad_draws(draws, message):
    with pytest.raises(ValueError, match=message):
        score_draws(np.ones(3), draws)


@pytest.mark.parametrize("prob", [0.0, 1.0, (0.5, 1.2), ()])
def test_score_rejects_bad_levels(prob):
    with pytest.raises(ValueError, match="band level"):
        score_draws(np.ones(3), np.ones((5, 3)), prob=prob)


# -- splitting --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compute_runs():
    return bs.load_runs(synthetic_compute_frame())


def test_split_by_cutoff(compute_runs):
    flops = compute_runs.column("flops")
    mask = split_runs(compute_runs, cutoff_flops=1e20)
    assert (flops[mask] > 1e20).all() and (flops[~mask] <= 1e20).all()
    assert mask.sum() == 10


def test_split_by_fraction_holds_out_the_largest_and_keeps_ties_together():
    frame = pd.DataFrame({"flops": [1e18, 2e18, 3e18, 4e18, 5e18, 5e18, 6e18, 7e18, 8e18, 8e18],
                          "loss": np.linspace(3, 2, 10)})
    runs = bs.load_runs(frame)
    np.testing.assert_array_equal(split_runs(runs, holdout_frac=0.2), [0] * 8 + [1] * 2)
    # 30%: the third largest run has 7e18 FLOPs, so three runs are held out.
    assert split_runs(runs, holdout_frac=0.3).sum() == 3
    # 50%: the fifth largest is 5e18, and both runs at 5e18 go to the held-out side.
    assert split_runs(runs, holdout_frac=0.5).sum() == 6


def test_split_default_is_twenty_percent(compute_runs):
    assert split_runs(compute_runs).sum() == 8


def test_split_errors(compute_runs):
    with pytest.raises(ValueError, match="give one of cutoff_flops=, holdout_frac= or holdout="):
        split_runs(compute_runs, cutoff_flops=1e20, holdout_frac=0.2)
    with pytest.raises(bs.RunDataError, match="no run has more than cutoff_flops=1e\\+22"):
        split_runs(compute_runs, cutoff_flops=1e22)
    with pytest.raises(ValueError, match="holdout must be 40 booleans"):
        split_runs(compute_runs, holdout=[True, False])
    with pytest.raises(ValueError, match=r"holdout_frac must be in \(0, 1\)"):
        split_runs(compute_runs, holdout_frac=1.5)
    with pytest.raises(TypeError, match="Runs from bayescale.load_runs"):
        split_runs(pd.DataFrame({"flops": [1.0]}))


def test_backtest_refuses_a_split_leaving_too_few_runs_before_sampling(compute_runs):
    with pytest.raises(bs.RunDataError, match="leaves 2 runs to fit the compute law, which needs at least 4"):
        bs.backtest(compute_runs, "compute", cutoff_flops=1.5e17)


def test_backtest_needs_the_laws_inputs(compute_runs):
    with pytest.raises(bs.ModelMismatchError, match="needs column 'params'"):
        bs.backtest(compute_runs, "chinchilla", holdout_frac=0.2)


# -- backtests with sampling ------------------------------------------------------------------

@pytest.fixture(scope="module")
def compute_backtest(compute_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        return bs.backtest(compute_runs, "compute", holdout_frac=0.25, draws=400, tune=400,
                           chains=2, random_seed=3)


def test_backtest_forecasts_held_out_runs_of_a_known_law(compute_backtest, compute_runs):
    bt = compute_backtest
    s = bt.summary
    assert (s["n_train"], s["n_test"]) == (30, 10)
    assert len(bt.train) == 30 and len(bt.test) == 10
    assert bt.test.column("flops").min() > bt.train.column("flops").max()
    table = bt.table
    np.testing.assert_allclose(table["flops"], compute_runs.column("flops")[30:])
    np.testing.assert_allclose(table["loss"], compute_runs.column("loss")[30:])
    # Truth is the law itself with 2% noise: errors are of the noise's size, bands cover.
    assert s["rmsle"] < 0.04
    assert abs(s["bias"]) < 0.03
    assert s["coverage_95"] >= 0.8
    assert 0.02 < s["width_90"] < 0.2
    widths = [s[f"width_{p}"] for p in ("50", "80", "90", "95")]
    assert widths == sorted(widths)
    np.testing.assert_allclose(np.log(table["loss_median"] / table["loss"]), table["log_error"])
    assert bt.fit.likelihood == "student_t" and len(bt.fit.runs) == 30
    assert "coverage_90=" in repr(bt)


def test_backtest_is_reproducible_with_its_seed(compute_backtest, compute_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        again = bs.backtest(compute_runs, "compute", holdout_frac=0.25, draws=400, tune=400,
                            chains=2, random_seed=3)
    pd.testing.assert_series_equal(again.summary.drop("seconds"),
                                   compute_backtest.summary.drop("seconds"))


def test_log_likelihood_matches_student_t_density(compute_fit):
    values = log_likelihood(compute_fit)
    chains, draws = compute_fit.posterior.sizes["chain"], compute_fit.posterior.sizes["draw"]
    assert values.shape == (chains, draws, len(compute_fit.runs))
    # Draw (1, 7), run 5, by hand from the Student-t density.
    theta = {k: v.reshape(chains, draws)[1, 7] for k, v in compute_fit.theta().items()}
    frame = compute_fit.runs.frame
    mu = compute_fit.law.log_loss(theta, {"flops": math.log(frame["flops"][5])},
                                  compute_fit.reference, np)
    nu, sigma = theta["nu"], theta["sigma"]
    z = (math.log(frame["loss"][5]) - mu) / sigma
    by_hand = (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
               - math.log(sigma) - (nu + 1) / 2 * math.log1p(z * z / nu))
    assert values[1, 7, 5] == pytest.approx(by_hand, rel=1e-10)


def test_compare_ranks_the_true_law_first(chinchilla_fit, synthetic_runs):
    # Runs on a grid of (N, D): loss against compute alone cannot explain them.
    compute_on_grid = quiet_fit(bs.ScalingModel("compute"), synthetic_runs)
    table = bs.compare({"chinchilla": chinchilla_fit, "compute only": compute_on_grid})
    assert list(table.index) == ["chinchilla", "compute only"]
    assert table.loc["chinchilla", "rank"] == 0
    # With 2% noise the grid's spread at fixed compute is only a few σ, so the gap is ~2 se.
    assert table.loc["compute only", "elpd_diff"] < 0
    assert table.loc["compute only", "p_worse"] > 0.9
    assert table.loc["chinchilla", "weight"] > 0.8
    assert list(table["law"]) == ["chinchilla", "compute"]


def test_compare_refuses_fits_to_different_runs(chinchilla_fit, compute_fit):
    with pytest.raises(bs.ModelMismatchError, match="fitted to different runs"):
        bs.compare([chinchilla_fit, compute_fit])
    with pytest.raises(ValueError, match="at least two fits"):
        bs.compare([compute_fit])
    with pytest.raises(ValueError, match="share the name 'compute/student_t'"):
        bs.compare([compute_fit, compute_fit])


def test_compare_backtests_adds_backtest_scores(compute_backtest, compute_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        other = bs.backtest(compute_runs, "compute", holdout_frac=0.25, draws=400, tune=400,
                            chains=2, random_seed=4)
    table = bs.compare({"seed 3": compute_backtest, "seed 4": other})
    for column in ("elpd", "rmsle", "bias", "crps", "coverage_90", "backtest_rank"):
        assert column in table.columns
    assert table.loc["seed 3", "rmsle"] == compute_backtest.summary["rmsle"]
    assert sorted(table["backtest_rank"]) == [0, 1]
    best = table["crps"].idxmin()
    assert table.loc[best, "backtest_rank"] == 0


# -- command line -----------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::bayescale.ConvergenceWarning")
def test_cli_backtest_prints_scores_and_writes_table(tmp_path, capsys):
    runs_csv = tmp_path / "runs.csv"
    synthetic_compute_frame().to_csv(runs_csv, index=False)
    out = tmp_path / "table.csv"
    args = ["backtest", str(runs_csv), "--law", "compute", "--cutoff-flops", "1e20",
            "-o", str(out), *FAST_ARGS]
    assert main(args) == 0
    text = capsys.readouterr().out
    for needle in ("RMSLE", "bias", "CRPS", "90% band: coverage, mean width", "30 / 10"):
        assert needle in text
    table = pd.read_csv(out)
    assert len(table) == 10 and "loss_upper_95" in table.columns
    assert main(args) == 2          # refuses to overwrite without --force
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["backtest", str(runs_csv), "--law", "compute", "--holdout-frac", "0.1",
                 "--prob", "0.9", "--json", *FAST_ARGS]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["n_test"] == 4
    assert set(payload["summary"]) >= {"rmsle", "coverage_90", "width_90", "crps"}
    assert len(payload["table"]) == 4


def test_cli_backtest_error_is_one_line(tmp_path, capsys):
    runs_csv = tmp_path / "runs.csv"
    synthetic_compute_frame().to_csv(runs_csv, index=False)
    assert main(["backtest", str(runs_csv), "--law", "compute", "--cutoff-flops", "1e23",
                 *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "bayescale: error: no run has more than cutoff_flops=1e+23 FLOPs" in err
    assert "Traceback" not in err


# -- calibration in simulation ----------------------------------------------------------------

def simulate_calibration(n_sets: int, levels=(0.5, 0.8, 0.9, 0.95), seed: int = 2024) -> pd.DataFrame:
    """Backtest the compute law on ``n_sets`` synthetic data sets with known truth.

    Truths are drawn at random (so no single lucky configuration): E ~ U(1.6, 2.4),
    α ~ U(0.08, 0.3), a reducible loss of U(0.3, 1.5) nats at the smallest run, noise
    σ ~ U(0.005, 0.02) normal on log loss, fitted with the matching Normal likelihood. Each
    data set has 24 runs from 1e17 to 1e21 FLOPs; the largest 6 are held out.

    Returns one row per level: coverage of the true E and α by the central posterior
    intervals, and of the held-out runs by the observed-loss bands (mean over data sets).
    """
    rng = np.random.default_rng(seed)
    flops = np.geomspace(1e17, 1e21, 24)
    param_hits = {p: [] for p in levels}
    run_cover = {p: [] for p in levels}
    for k in range(n_sets):
        truth = {"E": rng.uniform(1.6, 2.4), "alpha": rng.uniform(0.08, 0.3)}
        truth["A"] = rng.uniform(0.3, 1.5) * 1e17 ** truth["alpha"]
        sigma = rng.uniform(0.005, 0.02)
        mean = truth["E"] + truth["A"] * flops ** -truth["alpha"]
        loss = mean * np.exp(sigma * rng.standard_normal(flops.size))
        runs = bs.load_runs(pd.DataFrame({"flops": flops, "loss": loss}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            bt = bs.backtest(runs, "compute", holdout_frac=0.25, likelihood="normal",
                             prob=levels, draws=300, tune=300, chains=2, random_seed=k)
        paper = bt.fit.paper_draws()
        for p in levels:
            tail = (1 - p) / 2
            for name in ("E", "alpha"):
                lo, hi = np.quantile(paper[name], [tail, 1 - tail])
                param_hits[p].append(lo <= truth[name] <= hi)
            run_cover[p].append(bt.summary[f"coverage_{round(100 * p)}"])
    return pd.DataFrame({"level": levels,
                         "parameter_coverage": [float(np.mean(param_hits[p])) for p in levels],
                         "held_out_coverage": [float(np.mean(run_cover[p])) for p in levels]})


@pytest.mark.slow
def test_calibration_of_parameters_and_held_out_runs():
    """Do p-bands cover p of the time, for parameters and for held-out runs?

    Tolerance: 3.3 binomial standard errors (plus 0.02 for the finite number of draws),
    counting each data set as one unit: its two parameters and six held-out runs share the
    same fit's errors, so they are not independent trials.
    """
    n_sets = 48
    table = simulate_calibration(n_sets)
    print("\n" + table.to_string(index=False))
    for row in table.itertuples():
        tolerance = 3.3 * math.sqrt(row.level * (1 - row.level) / n_sets) + 0.02
        assert abs(row.parameter_coverage - row.level) <= tolerance, row
        assert abs(row.held_out_coverage - row.level) <= tolerance, row
