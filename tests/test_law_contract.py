"""Every registered law passes the same checks: a new law is tested by being registered.

For each law in ``bs.available_laws()``: the numpy and pytensor forms of its one formula
agree; the sampler's generated density and gradient match PyMC's log density; a fit to runs
simulated from the law recovers the truth; forecast, prob_below and a save/load round trip
work; where the law declares a compute-optimal split, it matches a numeric minimiser; and
where it declares a point-fit grid, the point fit's generated gradient is its objective's.
Designs and truths come from the law's ``simulation`` declaration (or its prior centres on
a default design).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytensor.tensor as pt
import pytest
from scipy.optimize import approx_fprime, minimize_scalar

import bayescale as bs
from bayescale import _fastlogp
from bayescale.pointfit import POINT_LAWS, huber_objective, starting_grid

LAWS = bs.available_laws()
SETTINGS = {"draws": 400, "tune": 400, "chains": 2, "random_seed": 3}


def _design(law) -> dict[str, np.ndarray]:
    """Inputs of the simulated runs: the law's declared design, or a default grid."""
    if law.simulation is not None:
        design = {k: np.asarray(v, dtype=float) for k, v in law.simulation.inputs.items()}
    else:
        n, ratio = np.meshgrid(np.geomspace(7e7, 1.6e10, 8), np.geomspace(2, 120, 6))
        design = {"params": n.ravel(), "tokens": (n * ratio).ravel()}
        missing = [name for name in law.inputs if name not in (*design, "flops")]
        assert not missing, (f"the {law.name} law reads {missing}: declare a Simulation with "
                             "a design for them")
    if "flops" not in design:
        design["flops"] = 6.0 * design["params"] * design["tokens"]
    return design


def _truth(law):
    """(sampled theta, provisional reference, paper values) of the simulation's truth."""
    design = _design(law)
    provisional = bs.data.runs_from_arrays(**design, loss=np.ones(len(design["flops"])))
    ref0 = law.reference(provisional)
    if law.simulation is not None and law.simulation.truth:
        theta = {k: np.asarray(v, dtype=float) for k, v in law.sampled_values(law.simulation.truth, ref0).items()}
    else:
        theta = {name: np.asarray(_fastlogp.prior_centre(prior))
                 for name, prior in law.default_priors().items()}
    return theta, ref0, law.paper_values(theta, ref0)


def _simulated_runs(law, seed=0):
    design = _design(law)
    theta, ref0, _ = _truth(law)
    log_x = {name: np.log(design[name]) for name in law.inputs}
    noise = law.simulation.noise if law.simulation is not None else 0.01
    rng = np.random.default_rng(seed)
    loss = law.loss(theta, log_x, ref0) * np.exp(noise * rng.standard_normal(len(design["flops"])))
    return bs.data.runs_from_arrays(**design, loss=loss)


_FITS: dict[str, bs.ScalingFit] = {}


def _fit(name):
    if name not in _FITS:
        law = bs.get_law(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            warnings.simplefilter("ignore", bs.DesignWarning)
            _FITS[name] = bs.ScalingModel(law).fit(_simulated_runs(law), **SETTINGS)
    return _FITS[name]


def _extra_point_inputs(fit):
    return {name: float(np.median(fit.runs.column(name))) for name in fit.law.extra_inputs}


@pytest.mark.parametrize("name", LAWS)
def test_declarations_are_complete(name):
    law = bs.get_law(name)
    assert law.name == name
    assert law.compute_optimal in bs.laws.COMPUTE_OPTIMAL
    assert set(law.default_priors()) == set(law.parameter_domains)
    for parameter in law.parameters:
        parameter.prior.check_support(parameter.name, parameter.lower, parameter.upper)
    labels = law.labels()
    assert all(p in labels for p in law.paper_parameters)
    for spec in law.input_specs():
        assert spec.symbol and spec.label and spec.plural


@pytest.mark.parametrize("name", LAWS)
def test_numpy_and_pytensor_agree(name):
    law = bs.get_law(name)
    theta, ref, _ = _truth(law)
    design = _design(law)
    log_x = {k: np.log(design[k]) for k in law.inputs}
    expected = law.log_loss(theta, log_x, ref, np)
    def const(v):
        return pt.constant(np.asarray(v, dtype=np.float64), dtype="float64")

    symbolic = law.log_loss({k: const(v) for k, v in theta.items()},
                            {k: const(v) for k, v in log_x.items()},
                            {k: const(v) for k, v in ref.items()}, pt).eval()
    np.testing.assert_allclose(symbolic, expected, rtol=1e-12)
    np.testing.assert_allclose(law.loss(theta, log_x, ref), np.exp(expected), rtol=1e-12)


@pytest.mark.parametrize("name", LAWS)
def test_fast_density_and_gradient_match_pymc(name):
    law = bs.get_law(name)
    assert _fastlogp.supports(law, "student_t") is None, "the fast path must serve built-in laws"
    model = bs.ScalingModel(law)
    runs = _simulated_runs(law)
    pm_model = model.build(runs)
    logp, dlogp = pm_model.compile_logp(), pm_model.compile_dlogp()
    value_names = [v.name for v in pm_model.value_vars]
    rv_names = [pm_model.values_to_rvs[v].name for v in pm_model.value_vars]
    sampled = model.sampled_parameters()
    order = [rv_names.index(n) for n in sampled]
    buf = _fastlogp.make_buffer(law, model.likelihood, model.priors, sampled, model.data_values(runs))
    rng = np.random.default_rng(1)
    offset = None
    for _ in range(5):
        u = rng.normal(0.0, 0.5, len(sampled))
        u[sampled.index("sigma")] = math.log(0.03) + 0.3 * rng.standard_normal()
        point = {value_names[order[i]]: u[i] for i in range(len(sampled))}
        lp_pymc = float(logp(point))
        grad_pymc = np.asarray(dlogp(point))[order]
        lp, grad = _fastlogp.logp_and_grad(law, buf, u)
        offset = lp - lp_pymc if offset is None else offset  # priors' constants are dropped
        assert lp - lp_pymc == pytest.approx(offset, abs=1e-9 * max(1.0, abs(lp)))
        np.testing.assert_allclose(grad, grad_pymc, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LAWS)
def test_parameters_are_recovered_from_simulated_runs(name):
    fit = _fit(name)
    _, _, truth = _truth(fit.law)
    draws = fit.paper_draws()
    for parameter, value in truth.items():
        lower, upper = np.quantile(draws[parameter], [0.005, 0.995])
        assert lower <= float(value) <= upper, (parameter, float(value), lower, upper)


@pytest.mark.parametrize("name", LAWS)
def test_forecast_risk_and_save_load_round_trip(name, tmp_path):
    fit = _fit(name)
    extra = _extra_point_inputs(fit)
    largest = float(fit.runs.column("flops").max())
    if fit.law.splits_compute or fit.law.inputs == ("flops",):
        query = {"flops": [largest, 10 * largest]}
    else:  # a law of N and D without a declared split: ask at explicit N and D
        frame = fit.runs.frame
        query = {"params": [frame["params"].max()], "tokens": [frame["tokens"].max()]}
    table = fit.forecast(**query, **extra)
    assert np.isfinite(table[["loss_median", "loss_lower", "loss_upper"]].to_numpy()).all()
    assert (table["loss_lower"] < table["loss_median"]).all()
    assert (table["loss_median"] < table["loss_upper"]).all()
    first = {k: v[0] for k, v in query.items()}
    median = float(table["loss_median"].iloc[0])
    low = fit.prob_below(median * 0.97, **first, **extra)
    high = fit.prob_below(median * 1.03, **first, **extra)
    assert 0.0 <= low < 0.5 < high <= 1.0
    path = tmp_path / f"{name}.nc"
    fit.save(path)
    loaded = bs.load_fit(path)
    pd.testing.assert_frame_equal(loaded.runs.frame, fit.runs.frame)
    pd.testing.assert_frame_equal(loaded.forecast(**query, **extra), table)
    assert loaded.prob_below(median * 0.97, **first, **extra) == low


@pytest.mark.parametrize("name", [n for n in LAWS if bs.get_law(n).splits_compute])
def test_compute_optimal_split_matches_a_numeric_minimiser(name):
    law = bs.get_law(name)
    theta, ref, _ = _truth(law)
    design = _design(law)
    fixed = {k: math.log(float(np.median(design[k]))) for k in law.extra_inputs}
    for flops in (1e20, 1e23):
        log_c6 = math.log(flops / 6.0)
        log_n = float(np.asarray(law.optimal_log_params(theta, ref, math.log(flops), fixed or None)))

        def along_budget(x):
            log_x = {"params": x, "tokens": log_c6 - x, **fixed}
            return float(law.log_loss(theta, log_x, ref, np))

        numeric = minimize_scalar(along_budget, bounds=(0.5 * log_c6 - 12, 0.5 * log_c6 + 12),
                                  method="bounded", options={"xatol": 1e-10}).x
        assert log_n == pytest.approx(numeric, abs=1e-5)


@pytest.mark.parametrize("name", [n for n in LAWS if n in POINT_LAWS])
def test_point_fit_gradient_is_the_objectives(name):
    law = bs.get_law(name)
    runs = _simulated_runs(law)
    log_x = np.log(np.vstack([runs.column(c) for c in law.inputs]))
    log_y = np.log(runs.column("loss"))
    rng = np.random.default_rng(3)
    for x0 in starting_grid(law, "small")[:3]:
        x = x0 + 0.05 * rng.standard_normal(x0.size)
        _, grad = huber_objective(x, law, log_x, log_y)
        numeric = approx_fprime(x, lambda z: huber_objective(z, law, log_x, log_y)[0], 1e-7)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)
