"""The curve model: its generated density against PyMC's, recovery of run offsets, honest
bands for a held-out larger run, and forecasts of a run in progress (simulated curves)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import ArgumentError, _fastcurves
from bayescale.curves import curve_layout, schedule_excess
from conftest import chinchilla_loss

TRUTH = {"sigma_run": 0.03, "kappa": 0.04, "rho": 0.5, "sigma": 0.004}
SETTINGS = {"draws": 250, "tune": 400, "chains": 2, "random_seed": 3}
IN_PROGRESS = "1e+08-10"


def simulate(sizes=(1e8, 2e8, 4e8, 8e8, 1.6e9), ratios=(10, 20, 40), checkpoints=12, seed=0,
             truth=TRUTH):
    """Curves of runs at every (size, tokens-per-param): law x run offset x schedule excess x
    AR(1) noise in log tokens. Returns the frame and the true offsets by run."""
    rng = np.random.default_rng(seed)
    rows, offsets = [], {}
    for n in sizes:
        for ratio in ratios:
            name = f"{n:.0e}-{ratio}"
            total = n * ratio
            tokens = np.geomspace(0.05 * total, total, checkpoints)
            r = truth["sigma_run"] * rng.standard_normal()
            offsets[name] = r
            e = np.empty(checkpoints)
            e[0] = truth["sigma"] * rng.standard_normal()
            for j in range(1, checkpoints):
                phi = truth["rho"] ** np.log(tokens[j] / tokens[j - 1])
                e[j] = phi * e[j - 1] + truth["sigma"] * np.sqrt(1 - phi**2) * rng.standard_normal()
            loss = chinchilla_loss(n, tokens) * np.exp(
                r + truth["kappa"] * schedule_excess(tokens / total) + e)
            rows.append(pd.DataFrame({"run": name, "params": n, "tokens": tokens, "loss": loss}))
    return pd.concat(rows, ignore_index=True), offsets


def load(frame):
    return bs.load_runs(frame, run="run", flops=None)


def test_generated_density_matches_pymc():
    # The kernel integrates the run offsets out: PyMC's per-run multivariate normal
    runs = load(simulate(sizes=(1e8, 4e8, 1.6e9), ratios=(10, 40), checkpoints=6)[0])
    model = bs.CurveModel("chinchilla", schedule="cosine")
    layout = curve_layout(runs, None, model.min_fraction)
    buf = _fastcurves.make_buffer(model.law, model.priors, True, layout,
                                  schedule_excess(layout.fraction))
    names = _fastcurves.coordinates(model.law, model.priors, True)
    pm_model = model.build(layout, marginal=True)
    logp, dlogp = pm_model.compile_logp(), pm_model.compile_dlogp()
    value_names = {v.name.split("_log")[0].split("_interval")[0]: v.name for v in pm_model.value_vars}
    rng = np.random.default_rng(1)
    results = []
    for _ in range(3):
        u = rng.uniform(-0.5, 0.5, len(names))
        point = {value_names[name]: u[i] for i, name in enumerate(names)}
        ours, grad = _fastcurves.logp_and_grad(model.law, buf, u)
        theirs = float(logp(point))
        flat = dlogp(point)
        by_name = {var.name: flat[k] for k, var in enumerate(pm_model.value_vars)}
        expected = np.array([by_name[value_names[n]] for n in names])
        np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-7)
        results.append((ours, theirs))
    # equal up to the constant PyMC keeps and we drop: differences agree
    (a0, b0), *rest = results
    for a, b in rest:
        assert a - a0 == pytest.approx(b - b0, rel=1e-9, abs=1e-8)


def test_run_conditionals_match_the_gaussian_posterior():
    # r_i | θ, y is Normal: check mean and variance against the dense Gaussian formula
    runs = load(simulate(sizes=(1e8, 4e8), ratios=(10, 40), checkpoints=6)[0])
    model = bs.CurveModel("chinchilla", schedule="cosine")
    layout = curve_layout(runs, None, model.min_fraction)
    buf = _fastcurves.make_buffer(model.law, model.priors, True, layout,
                                  schedule_excess(layout.fraction))
    theta = {"E_fraction": 0.7, "a": 1.0, "b": 1.5, "alpha": 0.3, "beta": 0.35}
    scalars = {"sigma": 0.005, "sigma_run": 0.03, "rho": 0.6, "kappa": 0.05}
    values = np.array([[*theta.values(), *scalars.values()]])
    mean, var = _fastcurves.run_conditionals(model.law, buf, values)
    log_x = {n: np.log(layout.runs.column(n)) for n in ("params", "tokens")}
    mu = model.law.log_loss(theta, log_x, model.law.reference(layout.runs), np)
    w = np.log(layout.runs.column("loss")) - mu - scalars["kappa"] * schedule_excess(layout.fraction)
    log_t = np.log(layout.runs.column("tokens"))
    for k in range(layout.names.size):
        rows = np.flatnonzero(layout.index == k)
        corr = scalars["rho"] ** np.abs(log_t[rows][:, None] - log_t[rows][None, :])
        prec = np.linalg.inv(scalars["sigma"] ** 2 * corr)
        ones = np.ones(rows.size)
        post_var = 1.0 / (ones @ prec @ ones + scalars["sigma_run"] ** -2)
        assert var[0, k] == pytest.approx(post_var, rel=1e-9)
        assert mean[0, k] == pytest.approx(post_var * ones @ prec @ w[rows], rel=1e-8)


@pytest.fixture(scope="module")
def curve_fit():
    frame, offsets = simulate()
    held_out = frame.params == 1.6e9
    # one run still in progress (seen to half its planned length), so forecast_run has a
    # run to continue
    in_progress = (frame.run == IN_PROGRESS) & (frame.tokens > 0.5 * 1e8 * 10)
    runs = load(frame[~held_out & ~in_progress])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.CurveModel("chinchilla", schedule="cosine").fit(
            runs, planned_tokens={IN_PROGRESS: 1e8 * 10}, **SETTINGS)
    return fit, frame, offsets


def test_run_offsets_are_recovered(curve_fit):
    fit, _, offsets = curve_fit
    effects = fit.run_effects(prob=0.9)
    truth = pd.Series([offsets[r] for r in effects.run])
    # the law's N term absorbs the mean offset of each size: compare within sizes
    size = effects.run.str.split("-").str[0]
    centred = effects.offset_median - effects.offset_median.groupby(size).transform("mean")
    true_centred = truth - truth.groupby(size).transform("mean")
    assert np.corrcoef(centred, true_centred)[0, 1] > 0.8
    shift = (effects.offset_median - truth).groupby(size).transform("mean")
    inside = (effects.offset_lower - shift <= truth) & (truth <= effects.offset_upper - shift)
    assert inside.mean() >= 0.75
    sd = fit.theta()["sigma_run"]
    assert np.quantile(sd, 0.02) < TRUTH["sigma_run"] < np.quantile(sd, 0.98)
    kappa = fit.theta()["kappa"]
    assert np.quantile(kappa, 0.02) < TRUTH["kappa"] < np.quantile(kappa, 0.98)
    assert fit.diagnostics()["divergences"] <= 5


def test_held_out_larger_run_is_covered(curve_fit):
    fit, frame, _ = curve_fit
    final = frame[frame.params == 1.6e9].groupby("run").last()
    table = fit.forecast(final.params.values, final.tokens.values, prob=0.9)
    assert ((table.loss_lower.values <= final.loss.values)
            & (final.loss.values <= table.loss_upper.values)).all()
    # the band carries a new run's offset: wider than the law's own ("mean") band
    mean = fit.forecast(final.params.values, final.tokens.values, prob=0.9, kind="mean")
    assert ((table.loss_upper - table.loss_lower) > (mean.loss_upper - mean.loss_lower)).all()


def test_save_load_round_trip(curve_fit, tmp_path):
    fit, frame, _ = curve_fit
    path = tmp_path / "curves.nc"
    fit.save(path)
    with pytest.raises(FileExistsError):
        fit.save(path)
    loaded = bs.load_curve_fit(path)
    assert list(loaded.layout.names) == list(fit.layout.names)
    np.testing.assert_array_equal(loaded.layout.total, fit.layout.total)
    np.testing.assert_array_equal(loaded.run_offsets(), fit.run_offsets())
    pd.testing.assert_frame_equal(loaded.run_effects(), fit.run_effects())
    a = fit.forecast(3.2e9, 6.4e10, random_seed=1)
    b = loaded.forecast(3.2e9, 6.4e10, random_seed=1)
    pd.testing.assert_frame_equal(a, b)
    k = list(fit.layout.names).index(IN_PROGRESS)
    rows = fit.layout.runs.run_ids() == IN_PROGRESS
    assert float(fit.layout.runs.column("tokens")[rows].max()) < float(fit.layout.total[k])
    assert loaded.layout.total[k] == fit.layout.total[k] == 1e9
    pd.testing.assert_frame_equal(fit.forecast_run(IN_PROGRESS), loaded.forecast_run(IN_PROGRESS))
    assert loaded.settings["method"] == fit.settings["method"] == "nuts"
    fit.save(path, overwrite=True)
    with pytest.raises(bs.FitFileError, match="learning-curve fit: load it with"):
        bs.load_fit(path)


def test_run_in_progress_uses_its_own_offset():
    frame, offsets = simulate(seed=5)
    target = "4e+08-40"
    total = 4e8 * 40
    early = frame[(frame.run != target) | (frame.tokens <= 0.5 * total)]
    runs = load(early)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.CurveModel("chinchilla", schedule="cosine").fit(
            runs, planned_tokens={target: total}, **SETTINGS)
    actual = float(frame[frame.run == target].loss.iloc[-1])
    own = fit.forecast_run(target, prob=0.9).iloc[0]
    assert own.loss_lower <= actual <= own.loss_upper
    assert own.fraction == pytest.approx(1.0)
    new = fit.forecast(4e8, total, prob=0.9).iloc[0]
    assert own.loss_upper - own.loss_lower < 0.7 * (new.loss_upper - new.loss_lower)
    with pytest.raises(ArgumentError, match=re.escape(
            f"run '{target}': tokens must lie after its last checkpoint (")):
        fit.forecast_run(target, tokens=1e9)
    with pytest.raises(ArgumentError, match=r"no run 'nope' in this fit; runs are 1e\+08-10"):
        fit.forecast_run("nope")


def test_planned_tokens_are_validated():
    runs = load(simulate(sizes=(1e8, 4e8, 1.6e9), ratios=(10,), checkpoints=4)[0])
    with pytest.raises(ArgumentError, match=r"planned_tokens names run 'x', which is not among"):
        curve_layout(runs, {"x": 1e12})
    with pytest.raises(ArgumentError, match=r"planned_tokens\['1e\+08-10'\] = 100.0 is below the "
                                            r"run's last checkpoint \(1e\+09 tokens\)"):
        curve_layout(runs, {"1e+08-10": 100.0})


def test_a_law_the_curve_kernel_cannot_derive_falls_back_with_a_one_line_notice():
    # the curve model used to raise NotTraceable from deep inside the code generator
    from bayescale.laws.chinchilla import ChinchillaLaw
    from bayescale.model import FastPathWarning

    class ArctanChinchilla(ChinchillaLaw, register_law=False):
        name = "arctan-chinchilla-test"

        def log_loss(self, theta, log_x, ref, xp):
            return super().log_loss(theta, log_x, ref, xp) + 0.0 * xp.arctan(theta["alpha"])

    model = bs.CurveModel(ArctanChinchilla())
    with pytest.warns(FastPathWarning, match=r"no fast curve density for the "
                                             r"arctan-chinchilla-test law .*xp\.arctan") as record:
        assert model._fast_path_serves() is False
    assert "\n" not in str(record[0].message)
    assert bs.CurveModel("chinchilla")._fast_path_serves() is True
    frame, _ = simulate(seed=0)
    with pytest.warns(FastPathWarning), pytest.raises(
            bs.ArgumentError, match="method='laplace' needs the generated density, which the "
                                    "arctan-chinchilla-test law's formula does not allow"):
        model.fit(load(frame), method="laplace")
