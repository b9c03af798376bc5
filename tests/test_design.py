"""Degenerate designs and sampler trouble: a specific warning, honestly wide bands, or an error.

Each degenerate design is fitted for real (small, seeded MCMC) and the test checks both the
warning's message and that the posterior admits its ignorance: the band where the data are
silent is several times wider than where they speak, or than a full design's band.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import ConvergenceWarning, DesignWarning, RunDataError
from bayescale.design import check_design, design_findings, outlier_findings, prior_conflicts
from conftest import (chinchilla_loss, synthetic_chinchilla_frame,
                      synthetic_compute_frame, synthetic_posterior_fit)

DRAWS = 2000  # per chain of the synthetic posteriors: i.i.d., so R-hat ≈ 1.000
SMALL = {"draws": 300, "tune": 300, "chains": 2, "random_seed": 5}


def runs_at(params, tokens, noise=0.02, seed=2):
    params, tokens = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
    rng = np.random.default_rng(seed)
    loss = chinchilla_loss(params, tokens) * np.exp(noise * rng.standard_normal(params.size))
    return bs.load_runs(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss}))


def fit_collecting(runs, model=None, **kwargs):
    """Fit; return the fit and the warnings it raised, by category."""
    model = model or bs.ScalingModel("chinchilla")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(runs, **{**SMALL, **kwargs})
    by_kind: dict[type, list[str]] = {}
    for w in caught:
        by_kind.setdefault(w.category, []).append(str(w.message))
    return fit, by_kind


def width(table):
    return float((table["loss_upper"] - table["loss_lower"]).iloc[0])


def synthetic(runs, draws=DRAWS, **kwargs):
    """A posterior built from chosen draws (no sampling), every parameter varying."""
    fit = synthetic_posterior_fit(runs, spread=0.01, draws=draws, **kwargs)
    sigma = 0.02 * np.exp(0.01 * np.random.default_rng(1).standard_normal((2, draws)))
    return dataclasses.replace(fit, posterior=fit.posterior.assign(sigma=(("chain", "draw"), sigma)))


def hdi_width(fit, name):
    row = fit.summary().loc[name]
    return row["hdi_upper"] - row["hdi_lower"]


# -- nothing can be fitted: a clear error before any sampling -----------------------------------

def test_one_compute_budget_cannot_fit_the_compute_law():
    runs = bs.load_runs(synthetic_compute_frame().assign(flops=1e20))
    with pytest.raises(RunDataError, match=r"all 40 runs were trained at the same scale \(C ≈ 1e\+20\): "
                       r"the compute law .* nothing can be fitted; add runs at other scales"):
        bs.ScalingModel("compute").fit(runs, **SMALL)


def test_one_configuration_cannot_fit_chinchilla():
    runs = runs_at(np.full(8, 1e9), 2e10)
    with pytest.raises(RunDataError, match=r"same scale \(N ≈ 1e\+09, D ≈ 2e\+10\)"):
        bs.ScalingModel("chinchilla").fit(runs, **SMALL)


def test_a_good_design_has_no_findings(synthetic_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_design(synthetic_runs, "chinchilla") == []
        assert check_design(bs.load_runs(synthetic_compute_frame()), "compute") == []


def test_the_fitted_fixtures_raise_no_false_alarms(chinchilla_fit, compute_fit, real_fit):
    for fit in (chinchilla_fit, compute_fit, real_fit):
        diagnostics = fit.diagnostics()
        assert diagnostics.design == []
        assert prior_conflicts(fit) == []
        assert "Data design" not in diagnostics.verdict()


# -- degenerate designs: the warning, and bands as wide as the ignorance --------------------------

def test_one_model_size(chinchilla_fit):
    runs = runs_at(1e9, np.geomspace(2e9, 1e11, 12))
    fit, caught = fit_collecting(runs)
    assert any(re.match(r"all 12 runs have one model size \(N ≈ 1e\+09\): the data say nothing "
                        r"about how loss changes with N, so alpha and A come from their priors "
                        r"alone", m) for m in caught[DesignWarning])
    # At the one model size the band is tight; 100x larger it carries the prior's width.
    here = width(fit.forecast(params=1e9, tokens=2e10, kind="mean"))
    elsewhere = width(fit.forecast(params=1e11, tokens=2e10, kind="mean"))
    full = width(chinchilla_fit.forecast(params=1e11, tokens=2e10, kind="mean"))
    assert elsewhere > 5 * here and elsewhere > 4 * full
    assert hdi_width(fit, "alpha") > 0.5  # the prior's 94% interval is about 0.08–1.1
    assert any("one model size" in note for note in fit.diagnostics().design)


def test_tokens_proportional_to_params(chinchilla_fit):
    params = np.geomspace(7e7, 1.6e10, 24)
    fit, caught = fit_collecting(runs_at(params, 20 * params))
    [message] = caught[DesignWarning]
    assert message.startswith("every run has about the same tokens per parameter (D/N ≈ 20): along "
                              "one ratio the N and D terms shrink together, so alpha and beta (and "
                              "A and B) are not separately identifiable.")
    # Same compute (1.2e22 FLOPs), on the ratio and 100x off it.
    on_ratio = width(fit.forecast(params=1e10, tokens=2e11, kind="mean"))
    off_ratio = width(fit.forecast(params=1e9, tokens=2e12, kind="mean"))
    full_off = width(chinchilla_fit.forecast(params=1e9, tokens=2e12, kind="mean"))
    assert off_ratio > 5 * on_ratio and off_ratio > 4 * full_off
    # The compute-optimal split is unknown: its band spans orders of magnitude.
    split = fit.optimal_allocation(flops=[1e22]).iloc[0]
    assert split["tokens_per_param_upper"] / split["tokens_per_param_lower"] > 100
    full_split = chinchilla_fit.optimal_allocation(flops=[1e22]).iloc[0]
    assert full_split["tokens_per_param_upper"] / full_split["tokens_per_param_lower"] < 20


def test_two_model_sizes(chinchilla_fit):
    params = np.repeat([1e8, 1e9], 8)
    tokens = np.tile(np.geomspace(2e9, 1e11, 8), 2) * np.repeat([1, 10], 8)
    fit, caught = fit_collecting(runs_at(params, tokens))
    assert caught[DesignWarning] == [
        "only 2 distinct model sizes (N = 1e+08, 1e+09): a power law with an offset needs at "
        "least 3 to pin down its curvature, so alpha leans on its prior and bands away from "
        "these model sizes are wide. Add runs at a third model size or more."]
    assert hdi_width(fit, "alpha") > 2 * hdi_width(chinchilla_fit, "alpha")


def test_loss_rising_with_compute():
    rng = np.random.default_rng(3)
    params = np.geomspace(1e8, 1e10, 12)
    tokens = 20 * params * np.geomspace(1, 8, 12)[::-1]
    loss = np.linspace(2.5, 3.5, 12) * np.exp(0.02 * rng.standard_normal(12))
    runs = bs.load_runs(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss}))
    fit, caught = fit_collecting(runs)
    [message] = caught[DesignWarning]
    assert re.match(r"loss does not fall with compute \(rank correlation of loss with FLOPs "
                    r"\+0\.9\d over 12 runs\): a scaling law can only fall", message)
    assert "not accuracy" in message
    # No trend is claimed: the band at 10x the largest run spans most of the observed scatter.
    band = fit.forecast(flops=[10 * runs.frame["flops"].max()])
    assert width(band) > 0.5 * np.ptp(loss)


@pytest.mark.parametrize("likelihood", ["student_t", "normal"])
def test_one_wild_outlier(chinchilla_fit, likelihood):
    frame = synthetic_chinchilla_frame()  # the data of chinchilla_fit ...
    frame.loc[17, "loss"] *= 1.6          # ... with one run 60% too high
    fit, caught = fit_collecting(bs.load_runs(frame), bs.ScalingModel("chinchilla", likelihood=likelihood))
    [message] = caught[DesignWarning]
    assert re.match(r"a wild outlier: run 17 \(N=4\.79e\+09, D=1\.72e\+10, loss=3\.812\) lies "
                    r"5\d% above the law \(\d\d robust SDs\); the other runs scatter by about "
                    r"±2\.\d%", message)
    assert "Probably a diverged, mislabelled or mistyped run." in message
    clean = chinchilla_fit.forecast(flops=[1e22]).iloc[0]
    dirty = fit.forecast(flops=[1e22]).iloc[0]
    sigma = fit.summary().loc["sigma", "median"]
    if likelihood == "student_t":
        assert "limits the pull of such runs" in message
        # Barely moved: the median stays inside the clean fit's band, sigma near the true 2%.
        assert clean["loss_lower"] < dirty["loss_median"] < clean["loss_upper"]
        assert sigma < 0.025
    else:
        assert "they inflate sigma" not in message and "inflate sigma, widening every observed band" in message
        # The Normal likelihood pays with a wider band everywhere, as the warning says.
        assert sigma > 0.04
        assert width(fit.forecast(flops=[1e22])) > 1.5 * width(chinchilla_fit.forecast(flops=[1e22]))


def test_outlier_finding_lists_several_runs_on_real_data():
    """The 5 runs Epoch dropped from Chinchilla's 245 are flagged (from a synthetic posterior)."""
    runs = bs.load_dataset("chinchilla")
    fit = synthetic_posterior_fit(runs, paper={"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.3478,
                                               "beta": 0.3658}, sigma=0.01)
    [finding] = outlier_findings(fit)
    assert re.match(r"\d+ wild outliers: run \d+ .*and \d+ more; the other runs", finding.message)
    assert "Probably diverged, mislabelled or mistyped runs." in finding.message
    dropped = set(np.argsort(runs.column("loss"))[-5:])
    flagged = {int(i) for i in re.findall(r"run (\d+) \(", finding.message)}
    assert flagged <= dropped


def test_findings_reach_diagnostics_and_verdict():
    params = np.geomspace(7e7, 1.6e10, 24)
    fit = synthetic(runs_at(params, 20 * params))
    diagnostics = fit.diagnostics()
    assert len(diagnostics.design) == 1 and "not separately identifiable" in diagnostics.design[0]
    assert diagnostics.ok  # the sampler did nothing wrong ...
    assert "Data design: every run has about the same tokens per parameter" in diagnostics.verdict()


def test_design_warning_points_at_the_callers_line():
    runs = runs_at(1e9, np.geomspace(2e9, 1e11, 12))
    with pytest.warns(DesignWarning) as record:
        check_design(runs, "chinchilla")
    assert record[0].filename == __file__
    with pytest.warns(DesignWarning) as record:
        bs.ScalingModel("chinchilla").fit(runs, **SMALL)
    assert [w.filename for w in record if w.category is DesignWarning] == [__file__]


# -- sampler trouble: ConvergenceWarning with what to try, and diagnostics() reports it -----------

def test_tiny_tuning_gives_convergence_warnings(synthetic_runs):
    fit, caught = fit_collecting(synthetic_runs, draws=100, tune=5)
    messages = caught[ConvergenceWarning]
    assert any(re.match(r"R-hat up to \d+\.\d+ \(> 1\.01\) .*run more tuning \(tune=2000\)", m)
               for m in messages)
    assert any("bulk ESS down to" in m and "increase draws or chains" in m for m in messages)
    diagnostics = fit.diagnostics()
    assert diagnostics.problems == messages and not diagnostics.ok
    assert diagnostics.verdict().startswith("Not reliable yet: R-hat up to")


def test_nutpie_needs_some_tuning(synthetic_runs):
    with pytest.raises(ValueError, match="tune must be an integer >= 1, got 0"):
        bs.ScalingModel("chinchilla").fit(synthetic_runs, draws=100, tune=0)


def test_prior_that_excludes_the_noise(synthetic_runs):
    """σ ~ HalfNormal(0.0005) when the runs scatter by 2%: the posterior sits in the prior's tail."""
    model = bs.ScalingModel("chinchilla", priors={"sigma": bs.Prior("HalfNormal", sigma=0.0005)})
    fit, caught = fit_collecting(synthetic_runs, model)
    conflict = [m for m in caught[ConvergenceWarning] if m.startswith("the posterior of sigma")]
    assert len(conflict) == 1
    assert re.match(r"the posterior of sigma \(median 0\.00\d+\) sits in the far upper tail of "
                    r"its prior Prior\('HalfNormal', sigma=0\.0005\) \(prior quantile 1\): the "
                    r"prior excludes what the data say", conflict[0])
    assert "widen or re-centre the prior of sigma" in conflict[0]
    assert "you set the priors of sigma" in conflict[0]
    assert conflict[0] in fit.diagnostics().problems


def test_prior_that_excludes_the_exponent(synthetic_runs):
    """α pinned at 3 (truth 0.35): the coefficient a is dragged far into its prior's tail."""
    model = bs.ScalingModel("chinchilla", priors={"alpha": bs.Prior("LogNormal", mu=math.log(3), sigma=0.02)})
    fit, caught = fit_collecting(synthetic_runs, model)
    conflicts = [m for m in caught[ConvergenceWarning] if m.startswith("the posterior of")]
    assert any(m.startswith("the posterior of a (median -") and "far lower tail" in m
               and "you set the priors of alpha" in m for m in conflicts)
    assert fit.summary().loc["sigma", "median"] > 0.03  # the misfit shows up as noise


def _with(fit, **changes):
    return dataclasses.replace(fit, **changes)


def test_divergences_are_reported_with_what_to_try(synthetic_runs):
    fit = synthetic(synthetic_runs)
    diverging = np.zeros((2, DRAWS), dtype=bool)
    diverging[1, :7] = True
    fit = _with(fit, sample_stats=fit.sample_stats.assign(diverging=(("chain", "draw"), diverging)))
    diagnostics = fit.diagnostics()
    assert diagnostics.divergences == 7
    assert diagnostics.problems == [
        "7 divergent transitions out of 4000: the sampler missed part of the posterior; tighten "
        "the priors, drop runs far off the law, or try likelihood='student_t'."]
    with pytest.warns(ConvergenceWarning, match="7 divergent transitions out of 4000"):
        fit.warn_if_unreliable()


def test_chains_that_disagree_are_reported(synthetic_runs):
    fit = synthetic(synthetic_runs)
    alpha = fit.posterior["alpha"].to_numpy().copy()
    alpha[1] *= 1.2  # the second chain found another mode
    fit = _with(fit, posterior=fit.posterior.assign(alpha=(("chain", "draw"), alpha)))
    rhat, ess = fit.diagnostics().problems
    assert re.match(r"R-hat up to \d\.\d+ \(> 1\.01\) for alpha: the chains disagree; run more "
                    r"tuning \(tune=2000\) and draws", rhat)
    assert re.match(r"bulk ESS down to \d+ \(< 400\) for alpha: .*increase draws or chains", ess)


def test_convergence_and_design_problems_reach_the_report(tmp_path):
    params = np.geomspace(7e7, 1.6e10, 24)
    fit = synthetic(runs_at(params, 20 * params), draws=200)
    diverging = np.zeros((2, 200), dtype=bool)
    diverging[0, :3] = True
    fit = _with(fit, sample_stats=fit.sample_stats.assign(diverging=(("chain", "draw"), diverging)))
    path = fit.report(tmp_path / "report.md")
    text = path.read_text()
    assert "3 divergent transitions out of 400" in text
    assert "not separately identifiable" in text


def test_design_findings_of_every_axis_for_the_compute_law():
    frame = synthetic_compute_frame()
    frame["flops"] = np.where(np.arange(len(frame)) % 2, 1e18, 1e20)
    [finding] = design_findings(bs.load_runs(frame), "compute")
    assert finding.code == "few_values"
    assert finding.message.startswith("only 2 distinct compute budgets (C = 1e+18, 1e+20)")


def test_design_of_runs_without_the_laws_inputs():
    runs = bs.load_runs(synthetic_compute_frame())
    with pytest.raises(bs.ModelMismatchError, match="the chinchilla law needs column 'params'"):
        check_design(runs, "chinchilla")
