"""Caballero, Gupta, Rish, Krueger (2023), "Broken Neural Scaling Laws" (ICLR; arXiv 2210.14891),
with one break, in one scale variable x (training compute, or examples seen for a learning
curve, given as the ``flops`` column)::

    L(x) = E + b·x^(−c₀)·(1 + (x/d₁)^(1/f₁))^(−c₁·f₁)

Well below the break d₁ the reducible loss falls as x^(−c₀); well above it as x^(−(c₀+c₁)),
so c₁ < 0 is a curve that flattens (as machine-translation learning curves do) and c₁ > 0
one that steepens; f₁ > 0 is how sharp the bend is (in units of ln x: the bend takes about
2·f₁ of ln x, f₁ → 0 is a corner).

Sampling. With x₀ the geometric mean and s the standard deviation of the runs' ln x::

    log(L − E) = a − α·(ln x − ln x₀) − (α_after − α)·f·[softplus((ln x − ln x₀ − z·s)/f) − softplus(−z·s/f)]

so ``a`` is the log reducible loss at x₀, ``alpha`` = c₀ and ``alpha_after`` = c₀ + c₁ are
the slopes before and after the break, and the break sits ``z`` standard deviations of the
data's ln x from x₀ (d₁ = x₀·e^(z·s)). Sampling the slopes after and before (both positive)
rather than c₁ keeps the law falling everywhere.

Priors. Both slopes: LogNormal(log 0.15, 0.8), as for the compute law (loss-vs-compute
exponents 0.05–0.15: Kaplan et al. 2020, Porian et al. 2024), since a broken law is a compute
law on each side of its break. z ~ Normal(0, 1): the data can place a break only where there
are runs, and Caballero et al. fit breaks inside the observed range. f ~ LogNormal(log 0.5,
1.0): their fitted bends range from near-corners to bends over a few decades (f of 0.05 to a
few). E_fraction as for the other laws (Beta(2, 1.5) on E / smallest loss).
"""

from __future__ import annotations

import math

import numpy as np

from ..priors import Prior
from .base import (PaperParameter, Parameter, ScalingLaw, Simulation, coefficient_prior,
                   e_fraction_parameter, log_sum_exp)

__all__ = ["BrokenPowerLaw"]


def _softplus(t, xp):
    return xp.logaddexp(0.0, t)


class BrokenPowerLaw(ScalingLaw):
    """Caballero et al. (2023): L(x) = E + b·x^(−c₀)·(1 + (x/d₁)^(1/f₁))^(−c₁·f₁), one break."""

    name = "broken_power"
    formula = "L(C) = E + b * C^-c0 * (1 + (C / d1)^(1 / f1))^(-c1 * f1)"
    inputs = ("flops",)
    parameters = (
        e_fraction_parameter(),
        Parameter("a", coefficient_prior(), label=r"$a$",
                  meaning="log of the reducible loss at the reference scale (nats)"),
        Parameter("alpha", Prior("LogNormal", mu=math.log(0.15), sigma=0.8), 0.0, math.inf,
                  r"$c_0$", "exponent before the break"),
        Parameter("alpha_after", Prior("LogNormal", mu=math.log(0.15), sigma=0.8), 0.0, math.inf,
                  r"$c_0 + c_1$", "exponent after the break"),
        Parameter("z", Prior("Normal", mu=0.0, sigma=1.0), label=r"$z$",
                  meaning="break position: standard deviations of the runs' log x from their mean"),
        Parameter("f", Prior("LogNormal", mu=math.log(0.5), sigma=1.0), 0.0, math.inf, r"$f_1$",
                  "sharpness of the break (width in ln x; small = sharp)"),
    )
    paper = (PaperParameter("E", r"$E$", False, "irreducible loss"),
             PaperParameter("b", r"$b$", True, "coefficient"),
             PaperParameter("c0", r"$c_0$", False, "exponent before the break"),
             PaperParameter("c1", r"$c_1$", False, "change of exponent at the break"),
             PaperParameter("d1", r"$d_1$", True, "break location (units of x)"),
             PaperParameter("f1", r"$f_1$", False, "sharpness of the break"))
    compute_optimal = "none"
    # A law of one curve: benchmarked on the flattening NMT curve it was made for (on a 2-D
    # isoFLOP grid such as Chinchilla's the break is not identified).
    dataset = "revisiting_nmt"
    axes = {"flops": ("alpha", "alpha_after", "b")}
    # A learning curve that flattens, like the NMT curves of Alabdulmohsin et al. (2022), but
    # followed three decades past its break: on a shorter curve a steepening break with a
    # larger E explains the same points nearly as well (the posterior then has two modes).
    simulation = Simulation(inputs={"flops": np.geomspace(5e5, 5e10, 40)},
                            truth={"E": 0.25, "b": 63.0, "c0": 0.35, "c1": -0.25, "d1": 3e7,
                                   "f1": 0.5}, noise=0.01)

    def reference_names(self):
        return (*super().reference_names(), "log_spread_flops")

    def reference(self, runs):
        ref = super().reference(runs)
        ref["log_spread_flops"] = _spread(np.log(runs.column("flops")))
        return ref

    def log_loss(self, theta, log_x, ref, xp):
        x = log_x["flops"] - ref["log_ref_flops"]
        f = theta["f"]
        m = theta["z"] * ref["log_spread_flops"]
        bend = _softplus((x - m) / f, xp) - _softplus(-m / f, xp)
        reducible = theta["a"] - theta["alpha"] * x - (theta["alpha_after"] - theta["alpha"]) * f * bend
        return log_sum_exp((reducible, self.log_e(theta, ref, xp)), xp)

    def paper_values(self, theta, ref):
        alpha, after, f = (np.asarray(theta[k]) for k in ("alpha", "alpha_after", "f"))
        m = np.asarray(theta["z"]) * ref["log_spread_flops"]
        c1 = after - alpha
        log_b = (np.asarray(theta["a"]) + alpha * ref["log_ref_flops"]
                 + c1 * f * _softplus(-m / f, np))
        return {"E": np.exp(self.log_e(theta, ref, np)), "b": np.exp(log_b), "c0": alpha,
                "c1": c1, "d1": np.exp(ref["log_ref_flops"] + m), "f1": f}

    def sampled_values(self, paper, ref):
        c0, c1, f = (np.asarray(paper[k], dtype=np.float64) for k in ("c0", "c1", "f1"))
        m = np.log(paper["d1"]) - ref["log_ref_flops"]
        a = np.log(paper["b"]) - c0 * ref["log_ref_flops"] - c1 * f * _softplus(-m / f, np)
        return {"E_fraction": np.asarray(paper["E"]) / np.exp(ref["log_min_loss"]), "a": a,
                "alpha": c0, "alpha_after": c0 + c1, "z": m / ref["log_spread_flops"], "f": f}


def _spread(log_values: np.ndarray) -> float:
    # One run (or identical runs) has no spread; 1 nat keeps the break's prior scale usable.
    spread = float(np.std(log_values))
    return spread if spread > 0 else 1.0
