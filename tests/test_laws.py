"""Laws: one definition for numpy and pytensor; closed forms agree with numerics."""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt
import pytest
from scipy.optimize import minimize_scalar

import bayescale as bs
from bayescale.laws import ChinchillaLaw, ComputeLaw

REF = {"log_min_loss": math.log(2.0), "log_ref_params": math.log(1e9),
       "log_ref_tokens": math.log(2e10), "log_ref_flops": math.log(1.2e20)}
THETA = {"E_fraction": 0.9, "a": -1.1, "b": -0.9, "alpha": 0.34, "beta": 0.28}


def paper_loss(law, theta, n, d):
    p = law.paper_values(theta, REF)
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def test_numpy_and_pytensor_agree():
    law = ChinchillaLaw()
    n, d = np.array([1e8, 7e10]), np.array([3e9, 1.4e12])
    log_x = {"params": np.log(n), "tokens": np.log(d)}
    expected = law.log_loss(THETA, log_x, REF, np)
    symbolic = law.log_loss({k: pt.constant(v) for k, v in THETA.items()},
                            {k: pt.constant(v) for k, v in log_x.items()}, REF, pt)
    np.testing.assert_allclose(symbolic.eval(), expected, rtol=1e-12)


def test_log_space_form_equals_paper_form():
    law = ChinchillaLaw()
    n, d = np.array([1e8, 7e10]), np.array([3e9, 1.4e12])
    log_loss = law.log_loss(THETA, {"params": np.log(n), "tokens": np.log(d)}, REF, np)
    np.testing.assert_allclose(np.exp(log_loss), paper_loss(law, THETA, n, d), rtol=1e-12)
    assert law.paper_values(THETA, REF)["E"] == pytest.approx(1.8)


def test_compute_law_paper_form():
    law = ComputeLaw()
    theta = {"E_fraction": 0.8, "a": -0.5, "alpha": 0.12}
    c = np.array([1e18, 1e24])
    p = law.paper_values(theta, REF)
    log_loss = law.log_loss(theta, {"flops": np.log(c)}, REF, np)
    np.testing.assert_allclose(np.exp(log_loss), p["E"] + p["A"] * c ** -p["alpha"], rtol=1e-12)


@pytest.mark.parametrize("flops", [1e19, 5.76e23, 1e26])
def test_optimal_split_matches_numeric_minimum(flops):
    law = ChinchillaLaw()
    log_n = float(law.optimal_log_params(THETA, REF, np.log(flops)))

    def loss_at(log_params):
        n = math.exp(log_params)
        return float(paper_loss(law, THETA, n, flops / (6 * n)))

    numeric = minimize_scalar(loss_at, bounds=(math.log(1e3), math.log(flops / 6)),
                              method="bounded", options={"xatol": 1e-10}).x
    assert log_n == pytest.approx(numeric, abs=1e-6)


def test_get_law():
    assert isinstance(bs.get_law("Chinchilla"), ChinchillaLaw)
    assert {"chinchilla", "compute"} <= set(bs.available_laws())
    assert bs.available_laws() == sorted(bs.available_laws())
    with pytest.raises(ValueError, match=r"unknown law 'no-such-law'; available: \[.*'chinchilla', "):
        bs.get_law("no-such-law")


def test_prior_validation():
    with pytest.raises(bs.PriorError, match="unknown prior distribution 'Cauchy'"):
        bs.Prior("Cauchy", alpha=0, beta=1)
    with pytest.raises(bs.PriorError, match=r"Normal prior takes parameters \['mu', 'sigma'\]; missing \['sigma'\]"):
        bs.Prior("Normal", mu=0)
    with pytest.raises(bs.PriorError, match="sigma=-1.0 must be positive"):
        bs.Prior("Normal", mu=0, sigma=-1)
    with pytest.raises(bs.PriorError, match=r"prior for 'alpha' is Prior\('Normal'.*must lie in \(0, inf\)"):
        bs.ScalingModel("chinchilla", priors={"alpha": bs.Prior("Normal", mu=0.3, sigma=0.1)})
    with pytest.raises(bs.PriorError, match="no parameter 'gamma' in the chinchilla law"):
        bs.ScalingModel("chinchilla", priors={"gamma": bs.Prior("Normal", mu=0, sigma=1)})
    model = bs.ScalingModel("chinchilla", priors={"alpha": bs.Prior("TruncatedNormal", mu=0.34, sigma=0.05, lower=0, upper=1)})
    assert model.priors["alpha"].dist == "TruncatedNormal"
    assert model.priors["beta"] == ChinchillaLaw().default_priors()["beta"]


def test_prior_json_round_trip():
    from bayescale.priors import priors_from_json, priors_to_json

    priors = bs.ScalingModel("chinchilla").priors
    assert priors_from_json(priors_to_json(priors)) == priors


@pytest.mark.parametrize("law", [ChinchillaLaw(), ComputeLaw()])
def test_linear_loss_equals_exp_of_log_loss_in_both_layouts(law):
    rng = np.random.default_rng(0)
    draws = {"E_fraction": rng.uniform(0.5, 0.95, 300), "a": rng.normal(-1, 0.3, 300),
             "b": rng.normal(-1, 0.3, 300), "alpha": rng.uniform(0.1, 0.6, 300),
             "beta": rng.uniform(0.1, 0.6, 300)}
    x = {"params": np.log(np.geomspace(1e6, 1e13, 50)), "tokens": np.log(np.geomspace(1e8, 1e15, 50)),
         "flops": np.log(np.geomspace(1e15, 1e27, 50))}
    columns = {k: v[:, None] for k, v in x.items()}                  # one row of draws per point
    rows = {k: v[None, :] for k, v in draws.items()}
    expected = np.exp(law.log_loss(rows, columns, REF, np))
    np.testing.assert_allclose(law.loss(rows, columns, REF), expected, rtol=1e-13)
    out, work = np.full((50, 300), np.nan), np.full((50, 300), np.nan)
    assert law.loss(rows, columns, REF, out=out, work=work) is out
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    transposed = law.loss({k: v[:, None] for k, v in draws.items()}, {k: v[None, :] for k, v in x.items()}, REF)
    np.testing.assert_allclose(transposed, expected.T, rtol=1e-13)


def test_power_terms_are_the_law():
    terms = ChinchillaLaw().power_terms(THETA, REF, np)
    assert [t.input for t in terms] == ["params", "tokens", None]
    p = ChinchillaLaw().paper_values(THETA, REF)
    n = 3e9
    assert math.exp(terms[0].log_value({"params": math.log(n)}, REF)) == pytest.approx(p["A"] / n ** p["alpha"], rel=1e-12)
    assert math.exp(terms[2].log_value({}, REF)) == pytest.approx(p["E"], rel=1e-12)


def test_a_law_written_as_log_terms_gets_a_linear_loss_too():
    class Shifted(ComputeLaw, register_law=False):
        """Not a sum of power terms: log_terms written directly."""

        name = "shifted"

        def power_terms(self, theta, ref, xp):
            raise NotImplementedError

        def log_terms(self, theta, log_x, ref, xp):
            return (theta["a"] - theta["alpha"] * xp.log1p(xp.exp(log_x["flops"] - ref["log_ref_flops"])),
                    self.log_e(theta, ref, xp))

    law = Shifted()
    theta = {"E_fraction": 0.8, "a": -0.5, "alpha": 0.12}
    log_x = {"flops": np.log(np.array([1e18, 1e22, 1e26]))}
    np.testing.assert_allclose(law.loss(theta, log_x, REF), np.exp(law.log_loss(theta, log_x, REF, np)), rtol=1e-13)
    out = np.empty(3)
    assert law.loss(theta, log_x, REF, out=out) is out


def test_a_law_written_as_log_loss_alone_still_forecasts():
    class OldStyle(ComputeLaw, register_law=False):
        """Overrides log_loss only, the contract before power_terms existed."""

        name = "old-style"

        def power_terms(self, theta, ref, xp):
            raise NotImplementedError

        def log_loss(self, theta, log_x, ref, xp):
            return xp.log(xp.exp(self.log_e(theta, ref, xp))
                          + xp.exp(theta["a"] - theta["alpha"] * (log_x["flops"] - ref["log_ref_flops"])))

    theta = {"E_fraction": 0.8, "a": -0.5, "alpha": 0.12}
    log_x = {"flops": np.log(np.array([1e18, 1e26]))}
    np.testing.assert_allclose(OldStyle().loss(theta, log_x, REF),
                               np.exp(ComputeLaw().log_loss(theta, log_x, REF, np)), rtol=1e-13)


def test_a_law_must_say_what_it_is():
    with pytest.raises(TypeError, match="Empty must define the law: power_terms"):
        class Empty(bs.ScalingLaw, register_law=False):
            name = "empty"
