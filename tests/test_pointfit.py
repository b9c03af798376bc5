"""The Hoffmann et al. / Epoch point-fit baseline (no PyMC)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

import bayescale as bs
from bayescale.pointfit import (POINT_LAWS, bootstrap_point_fit, huber_objective, point_fit,
                                starting_grid)

from conftest import COMPUTE_TRUTH, EPOCH_TRUTH, synthetic_chinchilla_frame, synthetic_compute_frame


@pytest.fixture(scope="module")
def real_runs():
    return bs.load_dataset("chinchilla", drop_highest_loss=5)


@pytest.fixture(scope="module")
def real_point_fit(real_runs):
    return point_fit(real_runs, grid="small")


def test_default_grid_is_the_published_one():
    grid = starting_grid("chinchilla")
    names = POINT_LAWS["chinchilla"]
    assert set(names) == {"e", "a", "b", "alpha", "beta"}
    assert grid.shape == (4500, 5)
    assert set(np.unique(grid[:, names.index("alpha")])) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert set(np.unique(grid[:, names.index("a")])) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(np.unique(grid[:, names.index("e")])) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert starting_grid("compute", "small").shape[1] == len(POINT_LAWS["compute"])


@pytest.mark.parametrize("law", ["chinchilla", "compute"])
def test_analytic_gradient_matches_finite_differences(law):
    frame = synthetic_chinchilla_frame(noise=0.02) if law == "chinchilla" else synthetic_compute_frame()
    runs = bs.load_runs(frame)
    inputs = ("params", "tokens") if law == "chinchilla" else ("flops",)
    log_x = np.log(np.vstack([runs.column(c) for c in inputs]))
    log_y = np.log(runs.column("loss"))
    rng = np.random.default_rng(3)
    for x0 in starting_grid(law, "small")[:4]:
        x = x0 + 0.05 * rng.standard_normal(x0.size)
        _, grad = huber_objective(x, law, log_x, log_y)
        numeric = approx_fprime(x, lambda z: huber_objective(z, law, log_x, log_y)[0], 1e-7)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)


def test_recovers_known_chinchilla_parameters_without_noise():
    fit = point_fit(bs.load_runs(synthetic_chinchilla_frame(noise=0.0)), grid="small")
    for name, truth in EPOCH_TRUTH.items():
        assert fit.params[name] == pytest.approx(truth, rel=1e-4), name
    assert fit.objective < 1e-12
    assert fit.converged


def test_recovers_known_compute_parameters_without_noise():
    runs = bs.load_runs(synthetic_compute_frame(noise=0.0))
    fit = point_fit(runs, law="compute", grid="small")
    for name, truth in COMPUTE_TRUTH.items():
        assert fit.params[name] == pytest.approx(truth, rel=1e-5), name
    np.testing.assert_allclose(fit.predict(), runs.column("loss"), rtol=1e-6)


def test_reproduces_epochs_refit_of_chinchilla(real_point_fit):
    # Epoch AI (Besiroglu et al. 2024): E=1.817, α=0.348, β=0.366 on these 240 runs.
    p = real_point_fit.params
    assert p["E"] == pytest.approx(1.817, abs=0.01)
    assert p["alpha"] == pytest.approx(0.348, abs=0.01)
    assert p["beta"] == pytest.approx(0.366, abs=0.01)
    assert 400 < p["A"] < 560 and 1700 < p["B"] < 2600


def test_predict_matches_the_law(real_point_fit):
    p = real_point_fit.params
    n, d = np.array([1e9, 7e10]), np.array([2e10, 1.4e12])
    expected = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    np.testing.assert_allclose(real_point_fit.predict(params=n, tokens=d), expected, rtol=1e-10)
    with pytest.raises(bs.ModelMismatchError, match="missing tokens"):
        real_point_fit.predict(params=n)


def test_bootstrap_gives_epochs_standard_errors(real_runs, real_point_fit):
    boot = bootstrap_point_fit(real_runs, n_resamples=60, random_seed=1, full=real_point_fit)
    assert boot.params.shape == (60, 5)
    se = boot.params.std()
    # Epoch's bootstrap SEs: E 0.026, α 0.015, β 0.021. A warm start that never moved (the
    # L-BFGS-B ftol trap) would give SEs near zero.
    assert 0.012 < se["E"] < 0.05
    assert 0.007 < se["alpha"] < 0.03
    assert 0.01 < se["beta"] < 0.04
    draws = boot.predict_draws(params=[7e10, 1e9], tokens=[1.4e12, 2e10])
    assert draws.shape == (60, 2)
    assert np.all(draws[:, 0] < draws[:, 1])
    summary = boot.summary(level=0.9)
    assert (summary["lower"] <= summary["estimate"]).all() and (summary["estimate"] <= summary["upper"]).all()


def test_bootstrap_is_reproducible_with_a_seed():
    runs = bs.load_runs(synthetic_compute_frame())
    a = bootstrap_point_fit(runs, law="compute", n_resamples=10, random_seed=5, grid="small")
    b = bootstrap_point_fit(runs, law="compute", n_resamples=10, random_seed=5, grid="small")
    np.testing.assert_array_equal(a.x, b.x)
    assert a.params["alpha"].std() > 0


def test_point_fit_input_errors():
    compute_only = bs.load_runs(synthetic_compute_frame())
    with pytest.raises(bs.ModelMismatchError, match="needs column 'params'"):
        point_fit(compute_only, law="chinchilla", grid="small")
    with pytest.raises(ValueError, match="grid must have shape"):
        point_fit(compute_only, law="compute", grid=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="grid must be"):
        point_fit(compute_only, law="compute", grid="huge")
    with pytest.raises(bs.RunDataError, match="cannot fit"):
        point_fit(compute_only.subset(np.arange(len(compute_only)) < 3), law="compute", grid="small")
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_point_fit(compute_only, law="compute", n_resamples=1)
