"""Compute-optimal and inference-aware allocation: known answers on synthetic posteriors,
numeric minimisation, one real fit, and the allocate CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import optimize

import bayescale as bs
from bayescale.allocation import inference_optimal_draws, optimal_allocation_draws
from bayescale.cli import main
from conftest import COMPUTE_TRUTH, synthetic_compute_frame, synthetic_posterior_fit

CHINCHILLA_FLOPS = 5.76e23


@pytest.fixture(scope="module")
def runs():
    return bs.load_dataset("chinchilla", drop_highest_loss=5)


@pytest.fixture(scope="module")
def point_fit(runs):
    return synthetic_posterior_fit(runs, spread=0.0)


@pytest.fixture(scope="module")
def spread_fit(runs):
    return synthetic_posterior_fit(runs, spread=0.05, chains=2, draws=500, seed=3)


def law_loss(p, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def draw(fit, s):
    return {k: float(v[s]) for k, v in fit.paper_draws().items()}


# -- compute-optimal -----------------------------------------------------------------------

def test_allocation_matches_numeric_minimisation(spread_fit):
    budgets = [1e19, 1e22, 5.76e23, 1e26]
    draws = optimal_allocation_draws(spread_fit, budgets)
    for s in (0, 17, 256, 499):
        p = draw(spread_fit, s)
        for j, c in enumerate(budgets):
            # Minimise the reducible loss (E does not move the optimum; dropping it keeps the
            # objective well conditioned) over log N with D = C / (6·N).
            def reducible(log_n):
                n = math.exp(log_n)
                return p["A"] / n ** p["alpha"] + p["B"] / (c / (6 * n)) ** p["beta"]
            guess = math.log(draws["params"][s, j])
            result = optimize.minimize_scalar(reducible, bracket=(guess - 3, guess + 3),
                                              method="brent", options={"xtol": 1e-14})
            n_num = math.exp(result.x)
            assert draws["params"][s, j] == pytest.approx(n_num, rel=1e-6)
            assert draws["tokens"][s, j] == pytest.approx(c / (6 * n_num), rel=1e-6)
            assert draws["loss"][s, j] == pytest.approx(p["E"] + result.fun, rel=1e-9)
    np.testing.assert_allclose(6 * draws["params"] * draws["tokens"],
                               np.broadcast_to(budgets, draws["params"].shape), rtol=1e-12)


def test_allocation_table_summarises_the_per_draw_optima(spread_fit, monkeypatch):
    """The chunked, threaded table against np.quantile over optimal_allocation_draws."""
    import bayescale._pointwise as pointwise

    monkeypatch.setattr(pointwise, "CHUNK_BYTES", 8 * spread_fit.n_draws * 9)
    monkeypatch.setattr(pointwise, "PARALLEL_MIN", 0)
    budgets = np.geomspace(1e19, 1e25, 101)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = spread_fit.optimal_allocation(budgets, prob=0.8)
    draws = optimal_allocation_draws(spread_fit, budgets)
    for name in ("params", "loss"):
        lower, median, upper = np.quantile(draws[name], [0.1, 0.5, 0.9], axis=0)
        np.testing.assert_allclose(table[f"{name}_lower"], lower, rtol=1e-13)
        np.testing.assert_allclose(table[f"{name}_median"], median, rtol=1e-13)
        np.testing.assert_allclose(table[f"{name}_upper"], upper, rtol=1e-13)
    np.testing.assert_allclose(table["tokens_upper"], budgets / (6 * table["params_lower"]), rtol=1e-13)


def test_allocation_at_chinchilla_budget_matches_epoch_point_values(point_fit):
    # Epoch's point estimates at 5.76e23 FLOPs: ≈ 72B params, 1.33T tokens, 18 tokens/param,
    # loss 1.97 (SOURCES.md).
    with pytest.warns(bs.ExtrapolationWarning):
        table = point_fit.optimal_allocation(CHINCHILLA_FLOPS)
    row = table.iloc[0]
    assert row["params_median"] == pytest.approx(7.2e10, rel=0.02)
    assert row["tokens_median"] == pytest.approx(1.33e12, rel=0.02)
    assert row["tokens_per_param_median"] == pytest.approx(18.4, abs=0.3)
    assert row["loss_median"] == pytest.approx(1.97, abs=0.01)
    assert row["params_lower"] == pytest.approx(row["params_upper"], rel=1e-9)


def test_allocation_table(spread_fit):
    table = spread_fit.optimal_allocation([1e20, 1e21], prob=0.8)
    names = ["params", "tokens", "tokens_per_param", "loss"]
    assert list(table.columns) == ["flops"] + [f"{n}_{s}" for n in names
                                               for s in ("median", "lower", "upper")]
    for n in names:
        assert (table[f"{n}_lower"] < table[f"{n}_median"]).all()
        assert (table[f"{n}_median"] < table[f"{n}_upper"]).all()
    assert table.attrs["prob"] == 0.8
    # Band ends are consistent splits: the smallest N pairs with the most tokens.
    for n_end, d_end in (("median", "median"), ("lower", "upper"), ("upper", "lower")):
        np.testing.assert_allclose(6 * table[f"params_{n_end}"] * table[f"tokens_{d_end}"],
                                   table["flops"], rtol=1e-12)
    draws = optimal_allocation_draws(spread_fit, [1e20, 1e21])
    np.testing.assert_allclose(table["tokens_per_param_median"],
                               np.median(draws["tokens_per_param"], axis=0), rtol=1e-3)
    assert (np.diff(table["params_median"]) > 0).all() and (np.diff(table["loss_median"]) < 0).all()


def test_allocation_warns_outside_observed_range(point_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        point_fit.optimal_allocation(1e20)      # N ≈ 1.4e9, D ≈ 1.2e10: inside the runs
    with pytest.warns(bs.ExtrapolationWarning) as record:
        point_fit.optimal_allocation([1e20, CHINCHILLA_FLOPS])
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith("the median optimal N (7.23e+10) lies outside the model sizes "
                                  "of the runs (5.73e+07 to 1.62e+10)")
    assert messages[1].startswith("the median optimal D (1.33e+12) lies outside the token counts")


def test_allocation_needs_params_and_tokens():
    fit = synthetic_posterior_fit(bs.load_runs(synthetic_compute_frame()), paper=COMPUTE_TRUTH,
                                  law="compute")
    with pytest.raises(bs.ModelMismatchError, match="no compute-optimal split"):
        fit.optimal_allocation(1e22)
    with pytest.raises(bs.ModelMismatchError, match="inference-aware allocation needs a law"):
        fit.inference_optimal_allocation(2.1, 1e12)


def test_allocation_errors(point_fit):
    with pytest.raises(ValueError, match=r"flops\[0\] = -1.0: must be a finite positive number"):
        point_fit.optimal_allocation(-1.0)
    with pytest.raises(ValueError, match="prob must be a probability strictly between 0 and 1"):
        point_fit.optimal_allocation(1e20, prob=1.5)


# -- inference-aware -----------------------------------------------------------------------

@pytest.mark.parametrize("inference_tokens", [0.0, 1e10, 1e12, 1e13, 1e15])
def test_inference_aware_never_costs_more_than_chinchilla(spread_fit, inference_tokens):
    d = inference_optimal_draws(spread_fit, 2.05, inference_tokens)
    ok = d["reachable"]
    assert ok.mean() > 0.9
    assert (d["total_flops"][ok] <= d["chinchilla_total_flops"][ok]).all()
    assert (d["savings"][ok] >= 0).all()
    # Both models reach the target exactly.
    p = spread_fit.paper_draws()
    for prefix in ("", "chinchilla_"):
        loss = law_loss({k: v[ok] for k, v in p.items()}, d[f"{prefix}params"][ok],
                        d[f"{prefix}tokens"][ok])
        np.testing.assert_allclose(loss, 2.05, rtol=1e-9)
    if inference_tokens == 0:
        np.testing.assert_allclose(d["params"][ok], d["chinchilla_params"][ok], rtol=1e-12)
    else:
        assert (d["params"][ok] < d["chinchilla_params"][ok]).all()


def test_inference_aware_matches_numeric_minimisation(spread_fit):
    target, t_inf = 2.05, 3e12
    d = inference_optimal_draws(spread_fit, target, t_inf)
    for s in (0, 5, 123):
        p = draw(spread_fit, s)
        r = target - p["E"]
        log_n_min = math.log(p["A"] / r) / p["alpha"]     # below this N the target is out of reach

        def cost(log_n):
            n = math.exp(log_n)
            d_needed = (p["B"] / (r - p["A"] / n ** p["alpha"])) ** (1 / p["beta"])
            return math.log(6 * n * d_needed + 2 * n * t_inf)

        result = optimize.minimize_scalar(cost, bounds=(log_n_min + 1e-9, log_n_min + 15),
                                          method="bounded", options={"xatol": 1e-12})
        assert d["params"][s] == pytest.approx(math.exp(result.x), rel=1e-5)
        assert math.log(d["total_flops"][s]) == pytest.approx(result.fun, abs=1e-10)


def test_inference_aware_table_and_trends(spread_fit):
    with pytest.warns(bs.ExtrapolationWarning) as record:
        table = spread_fit.inference_optimal_allocation(2.05, [0.0, 1e11, 1e12, 1e13])
    assert [str(w.message)[:21] for w in record] == ["the median optimal N ",
                                                      "the median optimal D "]
    assert (np.diff(table["params_median"]) < 0).all()
    assert (np.diff(table["tokens_per_param_median"]) > 0).all()
    assert (np.diff(table["savings_median"]) > 0).all()
    assert table["savings_median"].iloc[0] == 0.0
    assert (table["total_flops_median"] <= table["chinchilla_total_flops_median"]).all()
    assert table["plan_prob"].between(0.2, 0.8).all()
    assert {"p_unreachable", "train_flops_lower", "inference_flops_upper"} <= set(table.columns)


def test_inference_aware_unreachable_draws(runs):
    fit = synthetic_posterior_fit(runs, spread=0.03, seed=4)
    e = fit.paper_draws()["E"]
    target = float(np.quantile(e, 0.3))
    d = inference_optimal_draws(fit, target, 1e12)
    np.testing.assert_array_equal(d["reachable"], e < target)
    assert np.isnan(d["params"][~d["reachable"]]).all()
    with pytest.warns(bs.ExtrapolationWarning) as record:
        table = fit.inference_optimal_allocation(target, 1e12)
    assert len(record) == 2       # N and D both past the runs, said once each
    assert table["p_unreachable"].iloc[0] == pytest.approx(np.mean(e >= target))


# -- real fit ------------------------------------------------------------------------------

def test_real_fit_tokens_per_param_at_chinchilla_budget(real_fit):
    """Epoch's point fit gives ≈ 18 tokens/param at 5.76e23 FLOPs, Hoffmann's ≈ 59."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        row = real_fit.optimal_allocation(CHINCHILLA_FLOPS, prob=0.9).iloc[0]
    print(f"\ntokens/param at {CHINCHILLA_FLOPS:.3g} FLOPs: median "
          f"{row['tokens_per_param_median']:.1f}, 90% band [{row['tokens_per_param_lower']:.1f}, "
          f"{row['tokens_per_param_upper']:.1f}]; N {row['params_median']:.3g}, "
          f"D {row['tokens_median']:.3g}")
    assert 12 < row["tokens_per_param_median"] < 30
    assert row["tokens_per_param_lower"] < 18 < row["tokens_per_param_upper"]
    assert row["tokens_per_param_upper"] < 59


# -- command line --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_fit(spread_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("allocate") / "fit.nc"
    spread_fit.save(path)
    return path


def test_cli_allocate(saved_fit, capsys):
    assert main(["allocate", str(saved_fit), "--flops", "1e20", "1e24"]) == 0
    captured = capsys.readouterr()
    assert "Compute-optimal allocation" in captured.out and "tokens/param" in captured.out
    assert "bayescale: warning: the median optimal N" in captured.err


def test_cli_allocate_json_and_inference(saved_fit, spread_fit, capsys):
    assert main(["allocate", str(saved_fit), "--flops", "1e21", "--target", "2.05",
                 "--inference-tokens", "1e12", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["allocation"][0]["params_median"] == pytest.approx(
        spread_fit.optimal_allocation(1e21)["params_median"].iloc[0], rel=1e-12)
    assert data["inference_aware"][0]["savings_median"] > 0
    assert main(["allocate", str(saved_fit), "--target", "2.05", "--inference-tokens", "1e13"]) == 0
    assert "saving vs Chinchilla" in capsys.readouterr().out
    assert main(["allocate", str(saved_fit), "--target", "1.2", "--inference-tokens", "1e13"]) == 0
    assert "out of reach in every posterior draw" in capsys.readouterr().out


def test_cli_allocate_bad_arguments(saved_fit, capsys):
    assert main(["allocate", str(saved_fit)]) == 2
    assert "give --flops" in capsys.readouterr().err
    assert main(["allocate", str(saved_fit), "--target", "2.0"]) == 2
    assert "--target and --inference-tokens go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["allocate", str(saved_fit), "--flops", "lots"])
    assert "expected a number such as 1e23, got 'lots'" in capsys.readouterr().err
