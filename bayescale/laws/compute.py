"""Loss against training compute alone: L(C) = E + A·C^(−α) (C in FLOPs).

Sampled as E + exp(a)·(C/C₀)^(−α) with C₀ the geometric mean of the runs' compute; the
reported A is the coefficient for C in FLOPs, A = exp(a)·C₀^α. Also the law for learning
curves (x = compute or examples seen). Loss-vs-compute exponents are smaller than per-axis
ones (Kaplan et al. 2020: 0.05; Porian et al. 2024: 0.11–0.14; Chinchilla's frontier ≈ 0.15),
so α's prior is LogNormal(log 0.15, 0.8), covering 0.03–0.7.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..priors import Prior
from .base import (PaperParameter, Parameter, PowerTerm, ScalingLaw, Simulation,
                   coefficient_prior, e_fraction_parameter)

__all__ = ["ComputeLaw"]


class ComputeLaw(ScalingLaw):
    """Loss against training compute: L(C) = E + A·C^(−α) (C in FLOPs)."""

    name = "compute"
    formula = "L(C) = E + A * C^-alpha"
    inputs = ("flops",)
    # Point-fit grid: compute and learning-curve exponents are small and the metric may be
    # below 1 (error rates), so lower exponents and lower e = log E than Chinchilla's.
    parameters = (
        replace(e_fraction_parameter(), point_grid=tuple(np.arange(-3.0, 1.5, 0.5)),
                point_grid_small=(-1.0, 0.5), point_log=True, point_name="e"),
        Parameter("a", coefficient_prior(), label=r"$a$",
                  meaning="log of the compute term at the reference scale (nats)",
                  point_grid=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0), point_grid_small=(0.0, 5.0)),
        Parameter("alpha", Prior("LogNormal", mu=math.log(0.15), sigma=0.8), 0.0, math.inf,
                  r"$\alpha$", "exponent α of compute",
                  point_grid=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0), point_grid_small=(0.1, 0.3)),
    )
    paper = (PaperParameter("E", r"$E$ (nats/token)", False, "irreducible loss"),
             PaperParameter("A", r"$A$", True, "compute coefficient"),
             PaperParameter("alpha", r"$\alpha$", False, "compute exponent"))
    compute_optimal = "none"
    dataset = "chinchilla"
    axes = {"flops": ("alpha", "A")}
    simulation = Simulation(inputs={"flops": np.geomspace(1e17, 1e21, 40)},
                            truth={"E": 2.0, "A": 130.0, "alpha": 0.11}, noise=0.01)

    def power_terms(self, theta, ref, xp):
        return (PowerTerm(theta["a"], theta["alpha"], "flops"), PowerTerm(self.log_e(theta, ref, xp)))

    def paper_values(self, theta, ref):
        log_a = theta["a"] + theta["alpha"] * ref["log_ref_flops"]
        return {"E": np.exp(self.log_e(theta, ref, np)), "A": np.exp(log_a),
                "alpha": np.asarray(theta["alpha"])}

    def sampled_values(self, paper, ref):
        """Inverse of :meth:`paper_values` (for simulations and synthetic posteriors)."""
        return {"E_fraction": np.asarray(paper["E"]) / np.exp(ref["log_min_loss"]),
                "a": np.log(paper["A"]) - np.asarray(paper["alpha"]) * ref["log_ref_flops"],
                "alpha": np.asarray(paper["alpha"])}
