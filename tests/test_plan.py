"""The run planner (bayescale.plan): preposterior analysis on posterior draws."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
from bayescale import plan as planmod
from conftest import EPOCH_TRUTH, synthetic_posterior_fit


@pytest.fixture(scope="module")
def spread_fit(synthetic_runs):
    # Independent draws around the truth: an ESS of about the number of draws.
    return synthetic_posterior_fit(synthetic_runs, spread=0.05, sigma=0.02, draws=1000)


# -- the definition and its compiled kernel -----------------------------------------------

@pytest.mark.parametrize("objective", ["band", "prob", "split"])
def test_kernel_matches_numpy_definition(spread_fit, objective):
    rng = np.random.default_rng(3)
    n = spread_fit.n_draws
    values = rng.gamma(2.0, size=n) if objective != "prob" else rng.uniform(size=n)
    mu = np.log(2.0) + 0.05 * rng.standard_normal((3, n))
    outcomes = np.log(2.0) + 0.05 * rng.standard_normal((3, 5))
    base = 0.3 * rng.standard_normal((5, n))
    after, ess = planmod._expected_objectives(spread_fit, mu, outcomes, base, values,
                                              objective, 0.9)
    for c in range(3):
        for s in range(5):
            log_w = planmod.pilot_log_likelihood(spread_fit, mu[c], outcomes[c, s:s + 1])[0] + base[s]
            expected = planmod.reweighted_objective(log_w, values, objective, 0.9)
            assert after[c, s] == pytest.approx(expected, rel=1e-9, abs=1e-12)
            w = np.exp(log_w - log_w.max())
            assert ess[c, s] == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-9)


def test_equal_weights_give_numpy_quantiles_and_variance():
    values = np.random.default_rng(0).normal(size=801)
    width = planmod.reweighted_objective(np.zeros(801), values, "band", 0.9)
    low, high = np.quantile(values, [0.05, 0.95], method="hazen")
    assert width == pytest.approx(high - low, rel=1e-12)
    assert planmod.reweighted_objective(np.zeros(801), values, "prob") == pytest.approx(values.var())


def test_pilot_likelihood_is_the_fits_student_t_on_log_loss(spread_fit):
    mu = np.log(spread_fit.forecast(params=1e9, tokens=2e10, kind="mean")["loss_median"].iloc[0])
    mu = np.full(spread_fit.n_draws, mu)
    log_y = np.array([mu[0] + 0.01, mu[0] - 0.05])
    got = planmod.pilot_log_likelihood(spread_fit, mu, log_y)
    sigma, nu = spread_fit.theta()["sigma"], spread_fit.theta()["nu"]
    want = stats.t.logpdf(log_y[:, None], df=nu, loc=mu, scale=sigma)
    np.testing.assert_allclose(got, want, rtol=1e-10)


# -- behaviour ----------------------------------------------------------------------------

def test_identical_draws_leave_nothing_to_learn(synthetic_runs):
    fit = synthetic_posterior_fit(synthetic_runs, spread=0.0)
    table = fit.plan_runs(target_flops=1e24, budget=1e21, n_outcomes=20)
    np.testing.assert_allclose(table["expected_reduction"], 0.0, atol=1e-12)


def test_prob_reduction_obeys_the_law_of_total_variance(spread_fit):
    """E_y[Var(p | y)] = Var(p) − Var_y(E[p | y]): the expected reduction of the variance of
    P(loss ≤ target) equals the spread of the reweighted means, if the outcomes really come
    from the predictive and the weights are its likelihood."""
    target = float(spread_fit.forecast(flops=1e23)["loss_median"].iloc[0])
    pool = pd.DataFrame({"params": [3e9], "tokens": [6e10]})
    table = spread_fit.plan_runs(1e23, candidates=pool, objective="prob", target=target,
                                 n_outcomes=400, random_seed=5)
    values, _ = planmod.objective_draws(spread_fit, "prob", 1e23, target, random_seed=5 + 7919)
    rows = np.sort(np.random.default_rng(5).choice(spread_fit.n_draws, 400, replace=False))
    pool_full = planmod._pool(spread_fit, pool)
    mu = planmod._log_law_at(spread_fit, pool_full)[0]
    y = planmod._simulate(spread_fit, pool_full, rows, 5 + 1)[0]
    log_w = planmod.pilot_log_likelihood(spread_fit, mu, y)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    means = (w * values).sum(axis=1) / w.sum(axis=1)
    reduction = table["expected_reduction"].iloc[0]
    assert reduction > 0
    # Var_y of the reweighted means estimates the same quantity from the same outcomes.
    assert reduction == pytest.approx(means.var(ddof=1), rel=0.25)
    assert reduction < table.attrs["current"]


def _fixed_tau(fit):
    """The fit with the corpus prior's median discrepancy: these tests are about the planner,
    so they should not move with how the default learns τ from the runs."""
    from bayescale.discrepancy import default_discrepancy

    return fit.with_discrepancy(default_discrepancy(fit.runs))


def test_a_pilot_near_the_target_informs_more_than_a_tiny_one(chinchilla_fit):
    # Without δ: a refit does not learn δ's z from a pilot (only the law), so with δ the
    # band at 1e24 is mostly what no pilot removes and the two reductions differ by less
    # than their MCSE (1e-3); the law's own band is what the pilots inform.
    from bayescale.discrepancy import default_discrepancy

    chinchilla_fit = chinchilla_fit.with_discrepancy(default_discrepancy(chinchilla_fit.runs,
                                                                         tau=0.0))
    pool = pd.DataFrame({"params": [7e7, 2e10], "tokens": [1.4e9, 4e11]})
    # kind="mean": the law's band, without the run-to-run noise that no pilot removes.
    table = chinchilla_fit.plan_runs(target_flops=1e24, candidates=pool, kind="mean",
                                     n_outcomes=100)
    by_size = table.set_index("params")
    assert by_size.loc[2e10, "expected_reduction"] > by_size.loc[7e7, "expected_reduction"] + \
        2 * (by_size.loc[2e10, "mcse"] + by_size.loc[7e7, "mcse"])
    assert table["per_flop"].equals(table["expected_reduction"] / table["flops"])
    assert (table["ess"] > 1).all() and (table["ess"] <= chinchilla_fit.n_draws).all()
    # The pick's PSIS Pareto k: one pilot among 80 runs moves the posterior little.
    assert table.loc[0, "khat"] < 0.5 and table["khat"].iloc[1:].isna().all()


def test_default_grid_is_cheaper_than_the_budget_and_in_range(chinchilla_fit):
    table = chinchilla_fit.plan_runs(target_flops=1e24, budget=1e21, n_outcomes=20)
    runs = chinchilla_fit.runs.frame
    ratio = runs["tokens"] / runs["params"]
    assert len(table) > 20
    assert (table["flops"] <= 1e21).all()
    assert (table["params"] >= runs["params"].min() * (1 - 1e-12)).all()
    assert (table["tokens"] / table["params"]).between(0.5 * ratio.min(), 2 * ratio.max()).all()
    assert table["pick"].sum() == 1 and table.loc[0, "pick"] == 1
    assert table["per_cost"].iloc[1:].is_monotonic_decreasing
    # One pilot under a budget: the one with the largest expected reduction that fits.
    assert table.loc[0, "expected_reduction"] == table["expected_reduction"].max()
    assert table.attrs["objective"] == "band" and table.attrs["current"] > 0


def test_greedy_picks_respect_the_budget_and_condition_on_earlier_picks(chinchilla_fit):
    chinchilla_fit = _fixed_tau(chinchilla_fit)
    # Rows 1 and 2 are the same configuration: the second copy can only add what the first
    # one's outcome left unknown.
    pool = pd.DataFrame({"params": [1e9, 2e10, 2e10, 5e10], "tokens": [2e10, 4e11, 4e11, 1e12],
                         "cost": [0.5, 1.0, 1.0, 3.0], "name": ["a", "b", "b2", "c"]})
    table = chinchilla_fit.plan_runs(target_flops=1e24, candidates=pool, budget=2.5, k=3,
                                     kind="mean", n_outcomes=100)
    picked = table[table["pick"] > 0].sort_values("pick")
    assert list(table["pick"].iloc[:len(picked)]) == list(range(1, len(picked) + 1))
    assert picked["cost"].sum() <= 2.5 and len(picked) == 3
    assert set(table["name"]) == {"a", "b", "b2"}   # own columns ride along; c is over budget
    assert (table["per_cost"] == table["expected_reduction"] / table["cost"]).all()
    np.testing.assert_allclose(picked["cumulative_reduction"], picked["pick_reduction"].cumsum())
    first = picked.iloc[0]
    assert first["pick_reduction"] == first["expected_reduction"]
    copies = picked[picked["name"].isin(["b", "b2"])]
    assert len(copies) == 2
    alone = table.loc[table["name"] == copies["name"].iloc[1], "expected_reduction"].iloc[0]
    assert copies["pick_reduction"].iloc[1] < alone + 2 * copies["pick_mcse"].iloc[1]


def test_target_region_of_one_point_is_the_target_budget(spread_fit):
    pool = pd.DataFrame({"params": [3e8, 3e9], "tokens": [6e9, 6e10]})
    at_budget = spread_fit.plan_runs(1e23, candidates=pool, n_outcomes=30)
    point = spread_fit.forecast(flops=[1e23])[["params", "tokens"]]
    region = spread_fit.plan_runs(1e23, candidates=pool, n_outcomes=30, target_points=point)
    np.testing.assert_allclose(region["expected_reduction"], at_budget["expected_reduction"])
    wide = spread_fit.plan_runs(1e23, candidates=pool, n_outcomes=30,
                                target_points=pd.concat([point, point * [0.3, 3.0]]))
    assert wide.attrs["target_points"] == 2 and wide.attrs["current"] != at_budget.attrs["current"]
    with pytest.raises(ValueError, match="target_points= works with objective='band'"):
        spread_fit.plan_runs(1e23, candidates=pool, objective="split", target_points=point)


def test_split_objective_and_compute_law(chinchilla_fit, compute_fit):
    split = chinchilla_fit.plan_runs(target_flops=1e24, budget=1e21, objective="split",
                                     n_outcomes=20, grid_size=6)
    assert split.attrs["units"] == "tokens/param" and split.attrs["current"] > 0
    table = compute_fit.plan_runs(target_flops=1e24, budget=1e22, n_outcomes=20, grid_size=8)
    assert table["params"].isna().all() and (table["flops"] <= 1e22).all()
    with pytest.raises(bs.ModelMismatchError, match="split"):
        compute_fit.plan_runs(target_flops=1e24, objective="split")


@pytest.mark.parametrize("kwargs, message", [
    ({"objective": "width"}, "objective must be one of"),
    ({"objective": "prob"}, "needs target="),
    ({"target_flops": -1.0}, "target_flops must be a finite positive number"),
    ({"k": 0}, "k must be a whole number"),
    ({"budget": 1e10}, "buys no pilot"),
    ({"candidates": pd.DataFrame({"params": [1e9]})}, r"lacks column\(s\) \['tokens'\]"),
    ({"candidates": pd.DataFrame({"params": [1e9, -2.0], "tokens": [2e10, 3e10]})},
     "column 'params', row 1"),
    ({"candidates": pd.DataFrame({"params": [1e9], "tokens": [2e10], "cost": [0.0]})},
     "column 'cost', row 0"),
    ({"candidates": pd.DataFrame({"params": [1e9], "tokens": [2e10]}), "budget": 1e3},
     "no candidate costs at most"),
])
def test_bad_input_is_named(spread_fit, kwargs, message):
    args = {"target_flops": 1e24, **kwargs}
    with pytest.raises(ValueError, match=message):
        spread_fit.plan_runs(**args)


def test_plot_report_and_cli(chinchilla_fit, tmp_path):
    import matplotlib.pyplot as plt

    from bayescale.cli import main
    from bayescale.plotting import plot_plan
    from bayescale.report import build_report

    table = chinchilla_fit.plan_runs(target_flops=1e24, budget=1e21, k=2, n_outcomes=20)
    ax = plot_plan(table, chinchilla_fit)
    assert len(ax.collections) >= 3 and "per FLOP" in ax.get_title()
    plt.close(ax.figure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = build_report(chinchilla_fit, plan=table)
    assert "plan" in report.figures
    assert any(b.kind == "heading" and b.text == "Plan the next runs" for b in report.blocks)
    path = tmp_path / "fit.nc"
    chinchilla_fit.save(path)
    assert main(["plan", str(path), "--target-flops", "1e24", "--budget", "1e21", "--k", "2",
                 "--outcomes", "20", "--plot", str(tmp_path / "plan.png")]) == 0
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    assert main(["plan", str(path), "--target-flops", "1e24", "--objective", "prob"]) == 2


@pytest.mark.slow
def test_predicted_reduction_matches_refits_in_simulation():
    """Known law, a 9-run design: train (simulate) the planner's pick and the cheapest
    candidate, refit, and compare the realised shrinkage of the 90% band at 1e22 FLOPs with
    the prediction (the benchmark does this with 20 replicates and four strategies)."""
    from conftest import chinchilla_loss, quiet_fit

    sizes, ratios = np.meshgrid([7e7, 1.5e8, 3e8], [5.0, 20.0, 80.0])
    params, tokens = sizes.ravel(), (sizes * ratios).ravel()
    pool = pd.DataFrame({"params": [7e7, 3e8, 1.2e9, 2e9], "tokens": [1.4e9, 6e9, 2.4e10, 8e9]})
    predicted, realised, cheap = [], [], []
    for rep in range(4):
        rng = np.random.default_rng(rep)
        design = pd.DataFrame({"params": params, "tokens": tokens,
                               "loss": chinchilla_loss(params, tokens)
                               * np.exp(0.02 * rng.standard_normal(9))})
        fit = quiet_fit(bs.ScalingModel("chinchilla"), bs.load_runs(design), random_seed=rep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            width = fit.forecast(flops=[1e22]).eval("loss_upper - loss_lower").iloc[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", planmod.PlanWarning)   # 1,000 draws, 9 runs: low ESS
            table = fit.plan_runs(1e22, candidates=pool, n_outcomes=100, random_seed=rep)
        noise = np.exp(0.02 * rng.standard_normal())
        for row, sink in ((table.iloc[0], realised),
                          (table.loc[table["cost"].idxmin()], cheap)):
            loss = chinchilla_loss(row["params"], row["tokens"]) * noise
            new = pd.concat([design, pd.DataFrame({"params": [row["params"]],
                                                   "tokens": [row["tokens"]], "loss": [loss]})])
            refit = quiet_fit(bs.ScalingModel("chinchilla"), bs.load_runs(new), random_seed=rep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                after = refit.forecast(flops=[1e22]).eval("loss_upper - loss_lower").iloc[0]
            sink.append(width - after)
        predicted.append(table.iloc[0]["expected_reduction"])
    realised, predicted, cheap = map(np.array, (realised, predicted, cheap))
    assert realised.mean() > cheap.mean()
    # Predicted and realised agree within their errors (replicate spread dominates).
    error = np.sqrt(realised.var(ddof=1) / 4 + predicted.var(ddof=1) / 4)
    assert abs(realised.mean() - predicted.mean()) < 3 * error + 0.1 * predicted.mean()
