"""Hoffmann et al. (2022)'s law of model size and data: L(N, D) = E + A/N^α + B/D^β.

Sampled with the inputs centred on the runs' geometric means N₀, D₀::

    log L = LSE(a − α·(log N − log N₀), b − β·(log D − log D₀), log E)

so A = exp(a)·N₀^α and B = exp(b)·D₀^β; centring removes most of the correlation between a
coefficient and its exponent, which keeps NUTS fast. E is sampled as ``E_fraction`` ∈ (0, 1)
of the smallest observed loss. Priors: see :func:`~bayescale.laws.base.exponent_prior` and
:func:`~bayescale.laws.base.coefficient_prior` (Kaplan et al. 2020, Hoffmann et al. 2022,
Besiroglu et al. 2024, Muennighoff et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .base import (PaperParameter, Parameter, PowerTerm, ScalingLaw, Simulation,
                   coefficient_prior, e_fraction_parameter, exponent_prior)

__all__ = ["ChinchillaLaw"]

_EXP_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
_E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)
_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GRID_N, _GRID_R = np.meshgrid(np.geomspace(7e7, 1.6e10, 8), np.geomspace(2, 120, 6))


class ChinchillaLaw(ScalingLaw):
    """Hoffmann et al. (2022): L(N, D) = E + A/N^α + B/D^β."""

    name = "chinchilla"
    formula = "L(N, D) = E + A / N^alpha + B / D^beta"
    inputs = ("params", "tokens")
    # Point-fit grid: Hoffmann et al.'s / Epoch's (e = log E, a = log A, b = log B).
    parameters = (
        replace(e_fraction_parameter(), point_grid=_E_GRID, point_grid_small=(0.0, 0.5),
                point_log=True, point_name="e"),
        Parameter("a", coefficient_prior(), label=r"$a$",
                  meaning="log of the model-size term at the reference scale (nats)",
                  point_grid=_COEF_GRID, point_grid_small=(5.0, 10.0)),
        Parameter("b", coefficient_prior(), label=r"$b$",
                  meaning="log of the data term at the reference scale (nats)",
                  point_grid=_COEF_GRID, point_grid_small=(5.0, 10.0)),
        Parameter("alpha", exponent_prior(), 0.0, math.inf, r"$\alpha$", "exponent α",
                  point_grid=_EXP_GRID, point_grid_small=(0.25, 0.5)),
        Parameter("beta", exponent_prior(), 0.0, math.inf, r"$\beta$", "exponent β",
                  point_grid=_EXP_GRID, point_grid_small=(0.25, 0.5)),
    )
    paper = (PaperParameter("E", r"$E$ (nats/token)", False, "irreducible loss"),
             PaperParameter("A", r"$A$", True, "model-size coefficient"),
             PaperParameter("B", r"$B$", True, "data coefficient"),
             PaperParameter("alpha", r"$\alpha$", False, "model-size exponent"),
             PaperParameter("beta", r"$\beta$", False, "data exponent"))
    compute_optimal = "closed_form"
    dataset = "chinchilla"
    axes = {"params": ("alpha", "A"), "tokens": ("beta", "B")}
    # Epoch AI's refit of Chinchilla (Besiroglu et al. 2024) on a grid of sizes and ratios.
    simulation = Simulation(inputs={"params": _GRID_N.ravel(), "tokens": (_GRID_N * _GRID_R).ravel()},
                            truth={"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348,
                                   "beta": 0.366}, noise=0.01)

    def power_terms(self, theta, ref, xp):
        return (PowerTerm(theta["a"], theta["alpha"], "params"),
                PowerTerm(theta["b"], theta["beta"], "tokens"),
                PowerTerm(self.log_e(theta, ref, xp)))

    def paper_values(self, theta, ref):
        log_a = theta["a"] + theta["alpha"] * ref["log_ref_params"]
        log_b = theta["b"] + theta["beta"] * ref["log_ref_tokens"]
        return {"E": np.exp(self.log_e(theta, ref, np)), "A": np.exp(log_a), "B": np.exp(log_b),
                "alpha": np.asarray(theta["alpha"]), "beta": np.asarray(theta["beta"])}

    def sampled_values(self, paper, ref):
        """Inverse of :meth:`paper_values` (for simulations and synthetic posteriors)."""
        return {"E_fraction": np.asarray(paper["E"]) / np.exp(ref["log_min_loss"]),
                "a": np.log(paper["A"]) - np.asarray(paper["alpha"]) * ref["log_ref_params"],
                "b": np.log(paper["B"]) - np.asarray(paper["beta"]) * ref["log_ref_tokens"],
                "alpha": np.asarray(paper["alpha"]), "beta": np.asarray(paper["beta"])}

    def optimal_log_params(self, theta, ref, log_flops, fixed=None):
        """Closed form under C = 6·N·D (Hoffmann et al. 2022, eq. 4).

        N_opt = G·(C/6)^(β/(α+β)) with G = (α·A / (β·B))^(1/(α+β)); computed in logs because
        A and B reach 10^3–10^5 and C reaches 10^25.
        """
        alpha, beta = np.asarray(theta["alpha"]), np.asarray(theta["beta"])
        log_a = np.asarray(theta["a"]) + alpha * ref["log_ref_params"]
        log_b = np.asarray(theta["b"]) + beta * ref["log_ref_tokens"]
        log_g = (np.log(alpha) + log_a - np.log(beta) - log_b) / (alpha + beta)
        return log_g + beta / (alpha + beta) * (np.asarray(log_flops) - math.log(6.0))
