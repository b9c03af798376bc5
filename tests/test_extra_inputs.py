"""A law's extra inputs (unique tokens of the data-constrained law) reach every analysis.

Built on a posterior of chosen draws around Muennighoff et al.'s published fit (no sampling),
so the answers can be checked against direct evaluations of the law.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayescale as bs
from bayescale.exceptions import ArgumentError, ModelMismatchError, UnreachableTargetWarning
from bayescale.fit import ScalingFit
from bayescale.laws.data_constrained import PUBLISHED
from bayescale.model import default_noise_priors


def _runs() -> bs.Runs:
    law = bs.get_law("data_constrained")
    sim = law.simulation
    frame = pd.DataFrame(sim.inputs)
    ref_runs = bs.load_runs(frame.assign(loss=3.0), unique_tokens="unique_tokens")
    ref = law.reference(ref_runs)
    theta = {k: np.asarray(v) for k, v in law.sampled_values(sim.truth, ref).items()}
    log_x = {k: np.log(frame[k].to_numpy()) for k in law.inputs}
    loss = np.exp(law.log_loss(theta, log_x, ref, np))
    return bs.load_runs(frame.assign(loss=loss), unique_tokens="unique_tokens")


@pytest.fixture(scope="module")
def dc_fit() -> ScalingFit:
    runs = _runs()
    law = bs.get_law("data_constrained")
    ref = law.reference(runs)
    rng = np.random.default_rng(0)
    shape = (2, 300)
    paper = {k: v * np.exp(0.02 * rng.standard_normal(shape)) for k, v in PUBLISHED.items()}
    post = {k: np.asarray(v, dtype=float) for k, v in law.sampled_values(paper, ref).items()}
    post["sigma"] = np.full(shape, 0.01)
    coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
    posterior = xr.Dataset({k: (("chain", "draw"), v) for k, v in post.items()}, coords=coords)
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(shape, dtype=bool))},
                       coords=coords)
    return ScalingFit(law=law, priors={**law.default_priors(), **default_noise_priors("student_t")},
                      likelihood="student_t", runs=runs, reference=ref, posterior=posterior,
                      sample_stats=stats,
                      settings={"draws": shape[1], "tune": 0, "chains": shape[0],
                                "sampler": "synthetic", "random_seed": 0, "seconds": 0.0})


def test_compute_to_reach_holds_unique_tokens_and_matches_prob_below(dc_fit):
    target = float(dc_fit.forecast(flops=1e21, unique_tokens=1e11)["loss_median"].iloc[0]) + 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        need = dc_fit.compute_to_reach(target, 0.8, unique_tokens=1e11)
        assert dc_fit.prob_below(target, flops=need * 1.001, unique_tokens=1e11) >= 0.8
        assert dc_fit.prob_below(target, flops=need * 0.98, unique_tokens=1e11) < 0.8
        # Less unique data can only make the target dearer.
        scarce = dc_fit.compute_to_reach(target, 0.8, unique_tokens=1e10)
    assert scarce > need


def test_a_target_below_the_data_limited_floor_is_out_of_reach(dc_fit):
    # With U fixed the loss levels off above E: a target just above E cannot be reached.
    low = PUBLISHED["E"] + 0.02
    with pytest.warns(UnreachableTargetWarning, match="unique_tokens = 1e\\+09 held fixed"):
        table = dc_fit.compute_to_reach([low, 3.5], 0.8, unique_tokens=1e9)
    assert not table["reachable"].iloc[0] and math.isinf(table["flops"].iloc[0])
    assert table["reachable"].iloc[1]
    assert (table["unique_tokens"] == 1e9).all()


def test_risk_table_and_distribution_and_allocation_take_the_inputs(dc_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = dc_fit.risk_table([2.6, 3.0], [1e20, 1e21], unique_tokens=1e11)
        direct = dc_fit.prob_below(3.0, flops=[1e20, 1e21], unique_tokens=1e11)
        spread = dc_fit.compute_distribution([3.0], unique_tokens=1e11)
        alloc = dc_fit.optimal_allocation([1e20, 1e21], unique_tokens=1e11)
    np.testing.assert_allclose(grid.loc[3.0].to_numpy(), direct["prob"].to_numpy(), atol=1e-12)
    assert grid.attrs["unique_tokens"] == [1e11, 1e11]
    assert spread["unique_tokens"].iloc[0] == 1e11
    assert 0 < spread["flops_lower"].iloc[0] < spread["flops_median"].iloc[0] < spread["flops_upper"].iloc[0]
    np.testing.assert_allclose(alloc["unique_tokens"], 1e11)
    # The split holds U fixed: the table's median N equals the forecast's.
    point = dc_fit.forecast(flops=[1e20, 1e21], unique_tokens=1e11)
    np.testing.assert_allclose(alloc["params_median"], point["params"], rtol=1e-6)


def test_missing_or_foreign_inputs_are_refused_by_name(dc_fit):
    with pytest.raises(ModelMismatchError, match="needs unique_tokens="):
        dc_fit.compute_to_reach(3.0, 0.8)
    with pytest.raises(ArgumentError, match="takes no input 'unique'"):
        dc_fit.risk_table([3.0], [1e20], unique=1e11)
    with pytest.raises(ArgumentError, match=r"unique_tokens\[0\] = -1.0"):
        dc_fit.optimal_allocation([1e20], unique_tokens=-1)
    with pytest.raises(ModelMismatchError, match="also depends on unique_tokens"):
        dc_fit.inference_optimal_allocation(3.0, 1e12)


def test_holding_sets_defaults_that_calls_can_override(dc_fit):
    held = dc_fit.holding(unique_tokens=1e10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = held.forecast(flops=[1e21])
        b = dc_fit.forecast(flops=[1e21], unique_tokens=1e10)
        c = held.forecast(flops=[1e21], unique_tokens=1e12)
    pd.testing.assert_frame_equal(a, b)
    assert c["loss_median"].iloc[0] < a["loss_median"].iloc[0]   # more unique data helps
    with pytest.raises(ArgumentError, match="takes no input 'tokens_unique'"):
        dc_fit.holding(tokens_unique=1e10)
    presented, note = dc_fit.for_presentation()
    assert presented.held_inputs == {"unique_tokens": pytest.approx(dc_fit.runs.frame["unique_tokens"].max())}
    assert "the largest in the runs" in note
    assert held.for_presentation() == (held, None)


def test_plot_and_cli_say_which_value_they_hold(dc_fit, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = dc_fit.plot_forecast()
    assert "unique_tokens = " in ax.get_title()
    path = tmp_path / "dc.nc"
    dc_fit.save(path)
    from bayescale.cli import main

    assert main(["forecast", str(path), "--flops", "1e21", "--unique-tokens", "1e10"]) == 0
    out = capsys.readouterr()
    assert "Forecasts hold" not in out.err
    assert main(["forecast", str(path), "--flops", "1e21"]) == 0
    assert "Forecasts hold unique_tokens = " in capsys.readouterr().err


def test_compute_to_reach_in_hours_with_uncertain_utilization_takes_inputs_per_target(dc_fit):
    # Per-target unique tokens with a utilization range: the chip-hours search must hold each
    # target's own U (it once passed every target's U to each target's search and failed).
    hw = bs.Hardware.named("H100 SXM", utilization=(0.3, 0.5), chips=8)
    targets = [3.0, 3.2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = dc_fit.compute_to_reach(targets, 0.8, units=["flops", "gpu_hours"], hardware=hw,
                                        unique_tokens=[1e10, 1e11])
        for row, u in zip(table.itertuples(), [1e10, 1e11]):
            alone = dc_fit.compute_to_reach(row.target, 0.8, units="gpu_hours", hardware=hw,
                                            unique_tokens=u)
            assert alone == pytest.approx(row.gpu_hours, rel=1e-8)
            # The hours found meet the confidence once utilization is integrated over.
            budget = bs.Budget(row.gpu_hours * 1.001, "gpu_hours", hw)
            assert dc_fit.prob_below(row.target, budget, unique_tokens=u) >= 0.8
    assert list(table["unique_tokens"]) == [1e10, 1e11]


def test_headline_of_an_unreachable_target_names_the_data_held_not_e(dc_fit):
    # With unique tokens held fixed the loss levels off above E: the report must say so,
    # not blame an irreducible loss the posterior puts well below the target.
    from bayescale.report import headline

    fit = dc_fit.holding(unique_tokens=1e9)
    low = PUBLISHED["E"] + 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sentence = headline(fit, low)
    assert "out of reach" in sentence
    assert "unique_tokens = 1e+09 held fixed" in sentence and "irreducible" not in sentence
