"""Budgets in dollars, GPU-hours and days: conversions, equivalence with FLOP budgets,
uncertain utilization, bad input, and the CLI end to end on the bundled runs."""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
from bayescale import cli
from bayescale.budget import ACCELERATORS, UTILIZATION_NODES, fmt_days, fmt_price, fmt_usd

from conftest import synthetic_chinchilla_frame, synthetic_compute_frame, synthetic_posterior_fit

H100 = 989.4e12


@pytest.fixture(scope="module")
def fit():
    runs = bs.load_runs(synthetic_chinchilla_frame())
    return synthetic_posterior_fit(runs, spread=0.02, sigma=0.02, seed=3)


@pytest.fixture(scope="module")
def compute_law_fit():
    runs = bs.load_runs(synthetic_compute_frame())
    return synthetic_posterior_fit(runs, paper={"E": 2.0, "A": 130.0, "alpha": 0.11},
                                   spread=0.02, law="compute")


@pytest.fixture
def hw():
    return bs.Hardware.named("H100 SXM", utilization=0.4, price_per_hour=2.5, chips=1024)


@pytest.fixture
def hw_range():
    return bs.Hardware.named("H100 SXM", utilization=(0.35, 0.45), price_per_hour=2.5,
                             chips=1024)


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        yield


# -- hardware ------------------------------------------------------------------------------

def test_bundled_table_and_lookup():
    assert ACCELERATORS["H100 SXM"] == H100 and ACCELERATORS["A100"] == 312e12
    for name, peak in ACCELERATORS.items():
        assert bs.Hardware.named(name.lower().replace(" ", "-"), 0.4).peak_flops == peak
    hw = bs.Hardware.named("tpu_v5p", 0.5)
    assert hw.name == "TPU v5p" and hw.price_per_hour is None and not hw.uncertain


def test_unknown_chip_lists_the_known_names():
    with pytest.raises(ValueError) as info:
        bs.Hardware.named("H100", 0.4)
    for name in ACCELERATORS:
        assert name in str(info.value)
    assert "'H100'" in str(info.value)


@pytest.mark.parametrize("utilization, words", [
    (0.0, "utilization must be a fraction in (0, 1], got 0.0"),
    (-0.2, "got -0.2"),
    (1.2, "got 1.2"),
    (40, "40% MFU is 0.4"),
    (float("nan"), "got nan"),
    ((0.5, 0.3), "low <= high"),
    ((0.0, 0.4), "utilization[0] must be a fraction in (0, 1]"),
    ((0.3, 1.5), "utilization[1]"),
    ("0.4", "a (low, high) range or a scipy.stats distribution"),
    (stats.norm(0.4, 0.2), "must lie within (0, 1]"),
])
def test_bad_utilization(utilization, words):
    with pytest.raises(ValueError) as info:
        bs.Hardware("chip", 1e15, utilization)
    assert words in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"peak_flops": 0.0}, "peak_flops must be a finite positive number, got 0.0"),
    ({"peak_flops": -1e15}, "peak_flops must be a finite positive"),
    ({"price_per_hour": 0}, "price_per_hour must be a finite positive number, got 0"),
    ({"chips": 0}, "chips must be a whole number >= 1, got 0"),
    ({"chips": 2.5}, "chips must be a whole number >= 1, got 2.5"),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_bad_hardware(kwargs, words):
    base = {"name": "chip", "peak_flops": 1e15, "utilization": 0.4}
    with pytest.raises(ValueError) as info:
        bs.Hardware(**{**base, **kwargs})
    assert words in str(info.value)


def test_utilization_nodes():
    point = bs.Hardware("chip", 1e15, 0.4)
    assert point.utilization_nodes()[0].tolist() == [0.4]
    ranged = bs.Hardware("chip", 1e15, (0.35, 0.45))
    nodes, weights = ranged.utilization_nodes()
    assert nodes.size == UTILIZATION_NODES and math.isclose(weights.sum(), 1.0)
    assert 0.35 < nodes.min() < nodes.max() < 0.45
    assert math.isclose(weights @ nodes, 0.4) and ranged.median_utilization == 0.4
    # Gauss–Legendre on quantiles: a beta's quantile function is steep near 0 and 1, so its
    # mean comes out to about 1e-5 relative (not to rounding, as for a range).
    beta = bs.Hardware("chip", 1e15, stats.beta(40, 60))
    nodes, weights = beta.utilization_nodes()
    assert 1e-8 < abs(weights @ nodes - 0.4) < 2e-5
    assert bs.Hardware("chip", 1e15, (0.4, 0.4)).uncertain is False


# -- conversions ---------------------------------------------------------------------------

def test_conversion_formulas(hw):
    budget = bs.Budget.from_dollars(5e6, hw)
    hours = 5e6 / 2.5
    assert budget.to("gpu_hours")[0] == hours
    assert math.isclose(budget.flops, hours * 3600 * H100 * 0.4, rel_tol=1e-15)
    assert math.isclose(budget.to("days")[0], hours / (24 * 1024), rel_tol=1e-15)
    assert isinstance(budget.flops, float) and budget.scalar
    assert bs.Budget.from_gpu_hours([1.0, 2.0], hw).flops.tolist() == [
        3600 * H100 * 0.4, 2 * 3600 * H100 * 0.4]


@pytest.mark.parametrize("unit", ["usd", "gpu_hours", "days"])
def test_conversions_round_trip(hw, unit):
    amounts = np.geomspace(1e3, 1e9, 500) * np.random.default_rng(0).uniform(0.5, 2, 500)
    budget = bs.Budget(amounts, unit, hw)
    assert np.array_equal(budget.to(unit), amounts)
    for other in ("flops", "usd", "gpu_hours", "days"):
        back = bs.Budget(budget.to(other), other, hw).to(unit)
        # One correctly rounded step each way: at most one unit in the last place.
        assert np.all(np.abs(back - amounts) <= np.spacing(amounts)), other
    via = bs.Budget.from_flops(budget.flops, hw).to(unit)
    assert np.mean(via == amounts) > 0.7   # most values come back bit for bit


def test_budget_errors(hw):
    bare = bs.Hardware.named("A100", 0.5)
    with pytest.raises(ValueError, match="dollars need a price: give price_per_hour"):
        bs.Budget.from_dollars(1e6, bare)
    with pytest.raises(ValueError, match="days need a cluster size: give chips="):
        bs.Budget.from_days(30, bare)
    with pytest.raises(ValueError, match=r"budget\[1\] = -5.0 usd: must be a finite positive"):
        bs.Budget.from_dollars([1e6, -5], hw)
    with pytest.raises(ValueError, match="non-empty"):
        bs.Budget.from_dollars([], hw)
    with pytest.raises(ValueError, match="hardware must be a bayescale.Hardware"):
        bs.Budget.from_dollars(1e6, "H100 SXM")
    with pytest.raises(ValueError, match="needs hardware="):
        bs.Budget(1e6, "usd")
    with pytest.raises(ValueError, match="units must be one of"):
        bs.Budget(1e6, "euro", hw)


def test_formatting():
    assert [fmt_usd(v) for v in (850, 3.1e6, 5e6, 1.25e9, 12e3)] == [
        "$850", "$3.1M", "$5M", "$1.2B", "$12k"]
    assert fmt_days(41.3, 1024) == "41 days on 1,024 chips"
    assert fmt_days(1.0) == "1 day"
    assert [fmt_price(v) for v in (2.5, 12, 0.85, 1234.5)] == ["$2.50", "$12", "$0.85", "$1,234"]


# -- same answers as FLOPs -----------------------------------------------------------------

def test_dollar_budget_gives_the_flop_answers(fit, hw):
    budget = bs.Budget.from_dollars([1e5, 3e5, 1e6], hw)
    flops = budget.to("flops")
    with quiet():
        table = fit.forecast(budget)
        reference = fit.forecast(flops)
        assert table["usd"].tolist() == [1e5, 3e5, 1e6]
        pd.testing.assert_frame_equal(table.drop(columns="usd"), reference, check_like=False)
        assert "H100 SXM" in table.attrs["budget"] and "$2.50 per chip-hour" in table.attrs["budget"]

        one = bs.Budget.from_dollars(3e5, hw)
        assert fit.prob_below(2.0, one) == fit.prob_below(2.0, flops=one.flops)
        probs = fit.prob_below(2.0, budget, mode="oracle", kind="mean")
        np.testing.assert_array_equal(probs["prob"],
                                      fit.prob_below(2.0, flops, mode="oracle", kind="mean")["prob"])

        grid = fit.risk_table([1.95, 2.0], budget)
        assert list(grid.columns) == [1e5, 3e5, 1e6] and grid.columns.name == "usd"
        np.testing.assert_array_equal(grid.to_numpy(), fit.risk_table([1.95, 2.0], flops).to_numpy())
        assert grid.attrs["flops"] == flops.tolist()

        split = fit.optimal_allocation(budget)
        pd.testing.assert_frame_equal(split.drop(columns="usd"), fit.optimal_allocation(flops))


def test_compute_in_other_units_is_the_flop_answer_converted(fit, hw):
    with quiet():
        flops = fit.compute_to_reach(2.0, 0.8)
        usd = fit.compute_to_reach(2.0, 0.8, units="usd", hardware=hw)
        assert usd == hw.convert(flops, "flops", "usd")[0]
        assert math.isclose(usd, flops / (3600 * H100 * 0.4) * 2.5, rel_tol=1e-15)
        table = fit.compute_to_reach([2.0, 1.95], [0.8, 0.5], units=["usd", "days"], hardware=hw)
        base = fit.compute_to_reach([2.0, 1.95], [0.8, 0.5])
        np.testing.assert_array_equal(table["days"], hw.convert(base["flops"], "flops", "days"))
        assert "MFU" in table.attrs["conversion"] and table.attrs["units"] == ["usd", "days"]

        spread = fit.compute_distribution([2.0, 1.95], units="gpu_hours", hardware=hw)
        for suffix in ("median", "lower", "upper"):
            np.testing.assert_array_equal(
                spread[f"gpu_hours_{suffix}"],
                hw.convert(spread[f"flops_{suffix}"], "flops", "gpu_hours"))
        aware = fit.inference_optimal_allocation(2.0, 1e12, units="usd", hardware=hw)
        np.testing.assert_array_equal(aware["train_usd_median"],
                                      hw.convert(aware["train_flops_median"], "flops", "usd"))
    with pytest.raises(ValueError, match="hardware must be a bayescale.Hardware"):
        fit.compute_to_reach(2.0, 0.8, units="usd")
    with pytest.raises(ValueError, match="units must be one of"):
        fit.compute_distribution(2.0, units="watts", hardware=hw)
    with pytest.raises(ValueError, match="give a Budget alone"):
        fit.forecast(bs.Budget.from_dollars(1e6, hw), params=1e9, tokens=2e10)


# -- uncertain utilization -----------------------------------------------------------------

def _brute_force_prob(fit, target, usd, hw_range, nodes=400, kind="observed"):
    """Midpoint rule over the uniform utilization, the plan fixed at the median MFU."""
    u = 0.35 + 0.1 * (np.arange(nodes) + 0.5) / nodes
    flops = usd / 2.5 * 3600 * H100 * u
    n = fit.forecast(usd / 2.5 * 3600 * H100 * 0.4)["params"].iloc[0]
    probs = fit.prob_below(target, params=np.full(nodes, n), tokens=flops / (6 * n),
                           kind=kind, mcse="none")
    return float(probs["prob"].mean())


def test_uncertain_utilization_integrates_the_probability(fit, hw_range):
    with quiet():
        p = fit.prob_below(2.0, bs.Budget.from_dollars(3e5, hw_range))
        assert abs(p - _brute_force_prob(fit, 2.0, 3e5, hw_range)) < 1e-5
        low = bs.Hardware.named("H100 SXM", 0.35, price_per_hour=2.5)
        high = bs.Hardware.named("H100 SXM", 0.45, price_per_hour=2.5)
        p_low = fit.prob_below(2.0, bs.Budget.from_dollars(3e5, low))
        p_high = fit.prob_below(2.0, bs.Budget.from_dollars(3e5, high))
        assert p_low < p < p_high
        # A range of width zero is the point answer.
        thin = bs.Hardware.named("H100 SXM", (0.4, 0.4), price_per_hour=2.5)
        point = bs.Hardware.named("H100 SXM", 0.4, price_per_hour=2.5)
        assert (fit.prob_below(2.0, bs.Budget.from_dollars(3e5, thin))
                == fit.prob_below(2.0, bs.Budget.from_dollars(3e5, point)))
        table = fit.prob_below(2.0, bs.Budget.from_dollars([1e5, 3e5], hw_range))
        assert table["prob"].iloc[1] == p and "upper bound" in table.attrs["mcse_method"]
        assert "Gauss–Legendre" in table.attrs["utilization"]


def test_uncertain_forecast_is_the_mixture(fit, hw_range):
    budget = bs.Budget.from_dollars(3e5, hw_range)
    with quiet():
        table = fit.forecast(budget, prob=0.9)
        row = table.iloc[0]
        point = fit.forecast(budget.flops, prob=0.9).iloc[0]
        # The MFU spread widens the band and leaves the median close to the median MFU's.
        assert row["loss_upper"] - row["loss_lower"] > point["loss_upper"] - point["loss_lower"]
        assert abs(row["loss_median"] - point["loss_median"]) < 0.002
        # The band agrees with the exact probability of the same mixture.
        p_lo = fit.prob_below(row["loss_lower"], budget)
        p_med = fit.prob_below(row["loss_median"], budget)
        p_hi = fit.prob_below(row["loss_upper"], budget)
        assert abs(p_med - 0.5) < 0.03 and abs(p_lo - 0.05) < 0.02 and abs(p_hi - 0.95) < 0.02


def test_uncertain_compute_to_reach_and_bands(fit, hw_range):
    with quiet():
        usd = fit.compute_to_reach(2.0, 0.8, units="usd", hardware=hw_range)
        at = fit.prob_below(2.0, bs.Budget.from_dollars(usd, hw_range), mcse="none")
        below = fit.prob_below(2.0, bs.Budget.from_dollars(usd * (1 - 1e-6), hw_range),
                               mcse="none")
        assert below < 0.8 <= at + 1e-9 and abs(at - 0.8) < 1e-6
        table = fit.compute_to_reach([2.0, 2.0], [0.5, 0.9], units=["flops", "usd", "days"],
                                     hardware=hw_range)
        assert table["usd"].is_monotonic_increasing
        np.testing.assert_allclose(table["days"], table["usd"] / 2.5 / (24 * 1024), rtol=1e-15)
        assert "uncertain" in table.attrs["utilization"]

        spread = fit.compute_distribution(2.0, units="usd", hardware=hw_range)
        row = spread.iloc[0]
        at_u = lambda u, col: row[col] / (3600 * H100 * u) * 2.5  # noqa: E731
        assert at_u(0.45, "flops_median") < row["usd_median"] < at_u(0.35, "flops_median")
        # The MFU spread widens the band beyond the posterior's alone at the median MFU.
        assert row["usd_upper"] > at_u(0.4, "flops_upper")
        assert row["usd_lower"] < at_u(0.4, "flops_lower")

        split = fit.optimal_allocation(bs.Budget.from_dollars([1e5, 1e6], hw_range), prob=0.9)
        assert (split["flops_lower"] < split["flops"]).all()
        assert (split["flops"] < split["flops_upper"]).all()
        aware = fit.inference_optimal_allocation(2.0, 1e12, units="usd", hardware=hw_range)
        row = aware.iloc[0]
        at_u = lambda u, col: row[col] / (3600 * H100 * u) * 2.5  # noqa: E731
        assert at_u(0.45, "train_flops_median") < row["train_usd_median"] < at_u(
            0.35, "train_flops_median")
        assert row["total_usd_upper"] > at_u(0.4, "total_flops_upper")
        grid = fit.risk_table([2.0], bs.Budget.from_dollars([1e5, 3e5], hw_range))
        assert grid.iloc[0, 1] == fit.prob_below(2.0, bs.Budget.from_dollars(3e5, hw_range),
                                                 mcse="none")


def test_compute_law_and_distribution_utilization(compute_law_fit):
    hw = bs.Hardware.named("TPU v5p", stats.beta(40, 60), price_per_hour=4.2)
    budget = bs.Budget.from_gpu_hours([1e3, 1e5], hw)
    with quiet():
        table = compute_law_fit.prob_below(2.5, budget, mcse="iid")
        assert table["params"].isna().all() and table["prob"].is_monotonic_increasing
        assert table["gpu_hours"].tolist() == [1e3, 1e5]


# -- command line --------------------------------------------------------------------------

SMALL = ["--draws", "200", "--tune", "300", "--chains", "2", "--no-progress"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    frame = bs.load_dataset("chinchilla").frame
    csv = tmp_path_factory.mktemp("runs") / "runs.csv"
    frame.to_csv(csv, index=False)
    path = csv.parent / "fit.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", str(csv), *SMALL, "-o", str(path)]) == 0
    return path


MONEY = ["--gpu", "H100 SXM", "--mfu", "0.35", "0.45", "--usd-per-hour", "2.5",
         "--chips", "1024"]


def test_cli_risk_in_dollars(saved, capsys):
    assert cli.main(["risk", str(saved), "--target", "2.05", "--budget-usd", "1e6", "5e6",
                     "--prob", "0.8", *MONEY]) == 0
    out = capsys.readouterr().out
    assert "budget in dollars" in out and "$5M" in out and "$1M" in out
    assert "in dollars (MFU uncertainty included)" in out and "days on 1,024 chips" in out
    assert "Hardware: H100 SXM" in out and "35–45% MFU" in out


def test_cli_risk_json_and_forecast_allocate(saved, capsys):
    assert cli.main(["risk", str(saved), "--target", "2.05", "--budget-gpu-hours", "1e6",
                     "--gpu", "a100", "--mfu", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["risk"][0]["gpu_hours"] == 1e6 and "A100" in data["hardware"]
    assert data["compute_to_reach"][0]["gpu_hours"] > 0
    assert cli.main(["forecast", str(saved), "--budget-usd", "5e6", *MONEY]) == 0
    out = capsys.readouterr().out
    assert "dollars" in out and "$5M" in out
    assert cli.main(["allocate", str(saved), "--budget-usd", "5e6", "--target", "2.0",
                     "--inference-tokens", "1e13", *MONEY]) == 0
    out = capsys.readouterr().out
    assert "$5M" in out and "training dollars" in out and "total days" in out


def test_cli_report_headline_in_dollars(saved, tmp_path, capsys):
    out_path = tmp_path / "report.md"
    assert cli.main(["report", str(saved), "--target", "2.05", "--budget-usd", "5e6", *MONEY,
                     "-o", str(out_path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("P(loss ≤ 2.05 for $5M) ")
    assert "80% confidence needs $" in line and "days on 1,024 chips" in line
    assert "buys" in line and "H100 SXM at 35–45% MFU" in line
    # Markdown escapes "$" so that renderers with TeX math leave the amounts alone.
    assert line.replace("$", "\\$") in out_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("argv, words", [
    (["--budget-usd", "5e6"], "need the chip: --gpu NAME"),
    (["--budget-usd", "5e6", "--gpu", "H100", "--mfu", "0.4", "--usd-per-hour", "2"],
     "unknown --gpu 'H100'; known: A100, H100 SXM"),
    (["--budget-usd", "5e6", "--gpu", "B200", "--mfu", "40", "--usd-per-hour", "2"],
     "--mfu is a fraction in (0, 1], got 40 (40% MFU is --mfu 0.4)"),
    (["--budget-usd", "5e6", "--gpu", "B200", "--mfu", "0.4"], "--budget-usd needs --usd-per-hour"),
    (["--budget-usd", "5e6", "--gpu", "B200", "--usd-per-hour", "2"], "give --mfu"),
    (["--budget-usd", "5e6", "--gpu", "B200", "--mfu", "0.3", "0.4", "0.5",
      "--usd-per-hour", "2"], "--mfu takes one value or a range of two"),
    (["--budget", "1e23", "--budget-usd", "5e6", "--gpu", "B200", "--mfu", "0.4",
      "--usd-per-hour", "2"], "give --budget (FLOPs) or a budget in money"),
    (["--budget-gpu-hours", "1e5", "--gpu", "B200", "--peak-flops", "1e15", "--mfu", "0.4"],
     "give --gpu or --peak-flops, not both"),
])
def test_cli_wrong_budget_arguments(saved, capsys, argv, words):
    assert cli.main(["risk", str(saved), "--target", "2.05", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayescale: error: ") and words in err


def test_headline_in_each_unit(fit, hw):
    from bayescale.report import headline

    with quiet():
        days = headline(fit, 2.0, bs.Budget.from_days(3, hw))
        flops = headline(fit, 2.0, bs.Budget.from_flops(3e23, hw))
        plain = headline(fit, 2.0, 3e23)
    p = fit.prob_below(2.0, bs.Budget.from_days(3, hw))
    assert days.startswith(f"P(loss ≤ 2 for 3 days on 1,024 chips) = {p:.2f}; 80% confidence "
                           "needs ")
    assert "days on 1,024 chips, $" in days and "buys" in days and "at 40% MFU" in days
    assert flops.startswith("P(loss ≤ 2 for 3e23 FLOPs)") and "needs $" in flops
    assert plain.startswith("P(loss ≤ 2 at 3e23 FLOPs)")   # FLOPs alone: unchanged
    with pytest.raises(ValueError, match="the report's budget is one amount, got 2"):
        headline(fit, 2.0, bs.Budget.from_dollars([1e5, 1e6], hw))


def test_plan_runs_takes_budgets_as_their_flops(fit, hw):
    target = bs.Budget.from_dollars(1e6, hw)
    pilots = bs.Budget.from_dollars(2e3, hw)
    with quiet():
        planned = fit.plan_runs(target, budget=pilots, n_outcomes=10, grid_size=5)
        reference = fit.plan_runs(float(target.to("flops")[0]),
                                  budget=float(pilots.to("flops")[0]), n_outcomes=10, grid_size=5)
    pd.testing.assert_frame_equal(planned, reference)
    assert (planned["cost"] <= float(pilots.to("flops")[0])).all()
    with pytest.raises(ValueError, match="one budget"):
        fit.plan_runs(bs.Budget.from_dollars([1e6, 2e6], hw))
    pool = pd.DataFrame({"params": [1e8, 2e8], "tokens": [2e9, 4e9], "cost": [1.0, 2.0]})
    with pytest.raises(ValueError, match="'cost' column"):
        fit.plan_runs(target, candidates=pool, budget=pilots)
