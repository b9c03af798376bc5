"""The curve model's importance-corrected Laplace approximation (CurveModel.fit(method=...)):
recovery and coverage on simulated curves with known truth, agreement with NUTS, the
fallback where it is not reliable, the method recorded and saved; and the defects around
it (a fixed sigma_run = 0, a curve file missing a curve parameter)."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayescale as bs
from bayescale import ConvergenceWarning, _laplace
from bayescale.curves import LAPLACE_MIN_POINTS, schedule_excess
from conftest import EPOCH_TRUTH, chinchilla_loss
from test_curves_model import SETTINGS, load, simulate

TRUTH = {"sigma_run": 0.03, "kappa": 0.04, "rho": 0.5, "sigma": 0.004}


def dense_curves(n_runs, per_run=100, seed=0, truth=TRUTH):
    """n_runs runs (N over two decades, 3-300 tokens per parameter) of ``per_run``
    checkpoints each: the law x run offset x cosine excess x AR(1) noise in log tokens."""
    rng = np.random.default_rng(seed)
    params = 10 ** rng.uniform(7.5, 9.5, n_runs)
    total = params * 10 ** rng.uniform(0.5, 2.5, n_runs)
    frames = []
    for i in range(n_runs):
        t = np.linspace(total[i] / per_run, total[i], per_run)
        phi = truth["rho"] ** np.diff(np.log(t))
        e = np.empty(per_run)
        e[0] = truth["sigma"] * rng.standard_normal()
        for j in range(1, per_run):
            e[j] = phi[j - 1] * e[j - 1] + truth["sigma"] * np.sqrt(1 - phi[j - 1] ** 2) * rng.standard_normal()
        loss = chinchilla_loss(params[i], t) * np.exp(
            truth["sigma_run"] * rng.standard_normal() + truth["kappa"] * schedule_excess(t / total[i]) + e)
        frames.append(pd.DataFrame({"run": f"r{i}", "params": params[i], "tokens": t, "loss": loss}))
    return pd.concat(frames, ignore_index=True)


MODEL = bs.CurveModel("chinchilla", schedule="cosine")


@pytest.fixture(scope="module")
def laplace_fits():
    return [MODEL.fit(load(dense_curves(150, seed=seed)), random_seed=seed, method="laplace")
            for seed in range(3)]


def test_auto_uses_laplace_on_many_checkpoints_and_it_is_reliable(laplace_fits):
    for fit in laplace_fits:
        assert len(fit.layout.runs) >= LAPLACE_MIN_POINTS
        assert fit.settings["method"] == "laplace"
        assert fit.settings["pareto_k"] <= _laplace.khat_threshold(fit.n_draws)
        assert fit.settings["importance_ess"] >= _laplace.MIN_RELATIVE_ESS * fit.n_draws
        diagnostics = fit.diagnostics()
        assert diagnostics["pareto_k"] == fit.settings["pareto_k"]
        assert diagnostics["ess_bulk_min"] <= fit.settings["importance_ess"]
        # the summary's ESS is capped at the importance ESS (ArviZ alone sees ~n_draws
        # independent draws) and its MCSE grown to match
        table = fit.summary()
        assert (table["ess_bulk"] <= fit.settings["importance_ess"] + 1e-9).all()
        assert (table["ess_tail"] <= fit.settings["importance_ess"] + 1e-9).all()
        raw = az.summary(fit.posterior.drop_vars("z_run", errors="ignore"))
        assert (table.loc[raw.index, "mcse_mean"] > raw["mcse_mean"]).all()
    auto = MODEL.fit(load(dense_curves(150, seed=0)), random_seed=0)
    assert auto.settings["method"] == "laplace" and auto.settings["method_requested"] == "auto"


def test_laplace_recovers_the_truth_with_calibrated_intervals(laplace_fits):
    # three simulated data sets x nine parameters: the 90% intervals cover the truth at
    # about their nominal rate (≥ 21 of 27: P(fewer | 90% coverage) ≈ 2%)
    truth = {**{k: EPOCH_TRUTH[k] for k in ("E", "A", "B", "alpha", "beta")}, **TRUTH}
    covered = []
    for fit in laplace_fits:
        draws = {**fit.paper_draws(), **fit.theta()}
        for name, value in truth.items():
            lower, upper = np.quantile(draws[name], [0.05, 0.95])
            covered.append(lower <= value <= upper)
    assert sum(covered) >= 21, covered
    # and the scalar curve parameters are pinned down: within 30% of the truth
    for fit in laplace_fits:
        theta = fit.theta()
        for name in ("sigma", "sigma_run", "kappa"):
            assert np.median(theta[name]) == pytest.approx(TRUTH[name], rel=0.3)


def test_laplace_run_offsets_and_forecasts_work(laplace_fits):
    fit = laplace_fits[0]
    offsets = fit.run_offsets()
    assert offsets.shape == (fit.n_draws, 150) and np.isfinite(offsets).all()
    table = fit.forecast(3e9, 6e10)
    assert np.isfinite(table[["loss_lower", "loss_upper"]].to_numpy()).all()


@pytest.mark.slow
def test_laplace_matches_nuts():
    # the same data, both methods: means and sds within MCSE-scaled tolerances. The Laplace
    # draws are resampled importance draws, so their MCSE uses the importance ESS.
    runs = load(dense_curves(150, seed=7))
    laplace = MODEL.fit(runs, random_seed=1, method="laplace")
    nuts = MODEL.fit(runs, random_seed=1, method="nuts", draws=600, tune=600, chains=2)
    assert laplace.settings["method"] == "laplace" and nuts.settings["method"] == "nuts"
    names = list(nuts.posterior.data_vars)
    a = az.summary(laplace.posterior[names], kind="all")
    b = az.summary(nuts.posterior[names], kind="all")
    inflate = np.sqrt(laplace.n_draws / laplace.settings["importance_ess"])
    for name in names:
        mcse_mean = np.hypot(inflate * a.loc[name, "mcse_mean"], b.loc[name, "mcse_mean"])
        mcse_sd = np.hypot(inflate * a.loc[name, "mcse_sd"], b.loc[name, "mcse_sd"])
        assert abs(a.loc[name, "mean"] - b.loc[name, "mean"]) <= 4 * mcse_mean + 1e-12, name
        assert abs(a.loc[name, "sd"] - b.loc[name, "sd"]) <= 4 * mcse_sd + 0.05 * b.loc[name, "sd"], name


def test_laplace_falls_back_to_nuts_where_it_is_not_reliable():
    # 2,500 simulated checkpoints (25 runs, 1,770 kept): σ's posterior has a long right
    # tail, the importance ESS is about a tenth of the draws, so the fit warns and samples
    # with NUTS
    runs = load(dense_curves(25, seed=0))
    with pytest.warns(ConvergenceWarning, match="the Laplace approximation of the curve "
                                                "posterior is not reliable"):
        fit = MODEL.fit(runs, method="laplace", draws=500, tune=300, chains=2, random_seed=0)
    assert fit.settings["method"] == "nuts" and fit.settings["method_requested"] == "laplace"
    assert not (fit.settings["pareto_k"] <= _laplace.khat_threshold(1000)
                and fit.settings["importance_ess"] >= _laplace.MIN_RELATIVE_ESS * 1000)
    assert fit.diagnostics()["r_hat_max"] < 1.05
    small = MODEL.fit(runs, draws=50, tune=50, chains=2, random_seed=0)   # auto: NUTS here
    assert small.settings["method"] == "nuts" and "pareto_k" not in small.settings


def test_method_is_validated():
    runs = load(dense_curves(3, per_run=10))
    with pytest.raises(bs.ArgumentError, match="method"):
        MODEL.fit(runs, method="vi")
    with pytest.raises(bs.ArgumentError, match="method='laplace' needs the generated density"):
        MODEL.fit(runs, method="laplace", sampler="nutpie-pymc")


def test_laplace_fit_saves_and_loads(laplace_fits, tmp_path):
    fit = laplace_fits[0]
    fit.save(tmp_path / "laplace.nc")
    loaded = bs.load_curve_fit(tmp_path / "laplace.nc")
    for key in ("method", "pareto_k", "importance_ess"):
        assert loaded.settings[key] == fit.settings[key]
    pd.testing.assert_frame_equal(loaded.forecast(3e9, 6e10, random_seed=2),
                                  fit.forecast(3e9, 6e10, random_seed=2))


def test_fixed_sigma_run_of_zero_fits_and_forecasts_a_run():
    # used to raise ZeroDivisionError in forecast_run (1 / σ_run² in the cut-run errors)
    frame, _ = simulate(seed=2)
    target, total = "4e+08-40", 4e8 * 40
    runs = load(frame[(frame.run != target) | (frame.tokens <= 0.5 * total)])
    model = bs.CurveModel("chinchilla", {"sigma_run": bs.Prior("Fixed", value=0.0)},
                          schedule="cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(runs, planned_tokens={target: total}, **SETTINGS)
    assert (fit.run_offsets() == 0).all()
    table = fit.forecast_run(target)
    assert np.isfinite(table[["loss_lower", "loss_median", "loss_upper"]].to_numpy()).all()
    assert table.attrs["cut_runs"] >= 2


@pytest.mark.parametrize("name", ["sigma_run", "rho", "kappa"])
def test_curve_file_missing_a_curve_parameter_is_refused(laplace_fits, tmp_path, name):
    # a file written without checksums (older files load unchecked) and without one of the
    # curve model's parameters: refused at load, naming it (it used to load and fail later)
    path = tmp_path / "curves.nc"
    laplace_fits[0].save(path)
    with xr.open_datatree(path) as opened:
        tree = opened.load()
    del tree.attrs["checksum"]
    tree["posterior"] = xr.DataTree(tree["posterior"].to_dataset().drop_vars(name))
    damaged = tmp_path / "damaged.nc"
    tree.to_netcdf(damaged)
    with pytest.raises(bs.FitFileError, match=rf"damaged or incomplete.*mismatched: \['{name}'\]"):
        bs.load_curve_fit(damaged)


def test_rate_space_survives_a_line_search_that_overshoots_rho_to_zero():
    # with little within-run correlation (ρ → 0) L-BFGS tries θ = −log ρ of e^7 and more:
    # math.expm1 raised OverflowError there and ended the fit; now such a point gets a
    # value (−inf past what doubles hold) that the line search steps back from
    from bayescale import _fastcurves
    from bayescale.curves import curve_layout

    layout = curve_layout(load(dense_curves(5, seed=0)), None, MODEL.min_fraction)
    buf = _fastcurves.make_buffer(MODEL.law, MODEL.priors, True, layout,
                                  schedule_excess(layout.fraction))
    names = _fastcurves.coordinates(MODEL.law, MODEL.priors, True)
    space = _fastcurves.RateSpace(MODEL.law, buf, MODEL.priors, names)
    v = space.from_unconstrained(_fastcurves.centres(MODEL.priors, names))
    v[space.index] = 3.0                                   # ρ = e^−20: still finite
    value, grad = space.logp_and_grad(v)
    assert np.isfinite(value) and np.isfinite(grad).all()
    for w in (8.0, 800.0):                                 # ρ = 0 in doubles, θ = inf
        v[space.index] = w
        with np.errstate(all="ignore"):
            value, _ = space.logp_and_grad(v)
        assert not np.isfinite(value) or value < -1e3
