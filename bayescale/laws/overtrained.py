"""Gadre et al. (2024), "Language models scale reliably with over-training and on downstream
tasks" (arXiv 2403.08540): loss in training compute C = 6·N·D and the token multiplier
M = D/N (tokens per parameter; 20 is about Chinchilla-optimal)::

    L(C, M) = E + (a·M^η + b·M^(−η))·C^(−η)

It is the Chinchilla law with equal exponents on N and D (α = β = 2η), which Gadre et al.
argue for and which makes the reducible loss at fixed M a pure power law in C: over-training
by a constant factor shifts the line, it does not bend it. The OLMo ladder's "multiplier"
column is M/20.

Sampled with C and M centred on the runs' reference scales (C₀ = 6·N₀·D₀, M₀ = D₀/N₀, the
geometric means)::

    log L = LSE(log E, a + η·(log M − log M₀) − η·(log C − log C₀), b − η·(log M − log M₀) − η·(log C − log C₀))

so the paper's coefficients are a·C₀^η·M₀^(−η) and b·C₀^η·M₀^η (reported as ``a_paper`` and
``b_paper``).

Priors. η ~ LogNormal(log 0.17, 0.5): half the common Chinchilla exponent (Hoffmann et al.
2022: α = 0.34, β = 0.28; Besiroglu et al. 2024: 0.35, 0.37; Muennighoff et al. 2023 fit
α = β = 0.353, i.e. η = 0.176); 94% of the mass in 0.07–0.44. a, b, E_fraction as for the
Chinchilla law.

Compute-optimal split, closed form: at fixed C the bracket a·M^η + b·M^(−η) is smallest at
M* = (b/a)^(1/(2η)), the same for every budget, so N_opt = (C / (6·M*))^(1/2).
"""

from __future__ import annotations

import math

import numpy as np

from ..priors import Prior
from .base import (PaperParameter, Parameter, ScalingLaw, Simulation, coefficient_prior,
                   e_fraction_parameter, log_sum_exp)

__all__ = ["OvertrainedLaw"]

_LOG6 = math.log(6.0)
_SIZES, _MULTIPLIERS = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 7e9, 6),
                                                       [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0]))


class OvertrainedLaw(ScalingLaw):
    """Gadre et al. (2024): L(C, M) = E + (a·M^η + b·M^(−η))·C^(−η), C = 6·N·D, M = D/N."""

    name = "overtrained"
    formula = "L(C, M) = E + (a * M^eta + b * M^-eta) * C^-eta,  C = 6 N D,  M = D / N"
    inputs = ("params", "tokens")
    parameters = (
        e_fraction_parameter(),
        Parameter("a", coefficient_prior(), label=r"$\log a_0$",
                  meaning="log of the M^eta term at the reference scale (nats)"),
        Parameter("b", coefficient_prior(), label=r"$\log b_0$",
                  meaning="log of the M^-eta term at the reference scale (nats)"),
        Parameter("eta", Prior("LogNormal", mu=math.log(0.17), sigma=0.5), 0.0, math.inf,
                  r"$\eta$", "exponent of compute"),
    )
    paper = (PaperParameter("E", r"$E$ (nats/token)", False, "irreducible loss"),
             PaperParameter("a_paper", r"$a$", True, "coefficient of M^eta C^-eta"),
             PaperParameter("b_paper", r"$b$", True, "coefficient of M^-eta C^-eta"),
             PaperParameter("eta", r"$\eta$", False, "compute exponent"))
    compute_optimal = "closed_form"
    axes = {"params": ("eta", "a_paper"), "tokens": ("eta", "b_paper")}
    # Gadre et al.'s design: sizes 11M to 6.9B at M = 10..640; truth near Chinchilla's
    # (alpha = beta = 0.34 means eta = 0.17).
    simulation = Simulation(inputs={"params": _SIZES, "tokens": _SIZES * _MULTIPLIERS},
                            truth={"E": 1.8, "a_paper": 60.0, "b_paper": 600.0, "eta": 0.17},
                            noise=0.01)

    def log_loss(self, theta, log_x, ref, xp):
        eta = theta["eta"]
        log_n, log_d = log_x["params"], log_x["tokens"]
        x_m = (log_d - log_n) - (ref["log_ref_tokens"] - ref["log_ref_params"])
        x_c = (log_d + log_n) - (ref["log_ref_tokens"] + ref["log_ref_params"])
        return log_sum_exp((theta["a"] + eta * x_m - eta * x_c,
                            theta["b"] - eta * x_m - eta * x_c,
                            self.log_e(theta, ref, xp)), xp)

    @staticmethod
    def _log_c0_m0(ref):
        log_c0 = _LOG6 + ref["log_ref_params"] + ref["log_ref_tokens"]
        log_m0 = ref["log_ref_tokens"] - ref["log_ref_params"]
        return log_c0, log_m0

    def paper_values(self, theta, ref):
        eta = np.asarray(theta["eta"])
        log_c0, log_m0 = self._log_c0_m0(ref)
        return {"E": np.exp(self.log_e(theta, ref, np)),
                "a_paper": np.exp(np.asarray(theta["a"]) + eta * (log_c0 - log_m0)),
                "b_paper": np.exp(np.asarray(theta["b"]) + eta * (log_c0 + log_m0)),
                "eta": eta}

    def sampled_values(self, paper, ref):
        eta = np.asarray(paper["eta"], dtype=np.float64)
        log_c0, log_m0 = self._log_c0_m0(ref)
        return {"E_fraction": np.asarray(paper["E"]) / np.exp(ref["log_min_loss"]),
                "a": np.log(paper["a_paper"]) - eta * (log_c0 - log_m0),
                "b": np.log(paper["b_paper"]) - eta * (log_c0 + log_m0), "eta": eta}

    def optimal_log_params(self, theta, ref, log_flops, fixed=None):
        """log N_opt = (log(C/6) − log M*)/2 with log M* = log M₀ + (b − a)/(2η) (sampled a, b)."""
        eta = np.asarray(theta["eta"])
        log_m_star = (ref["log_ref_tokens"] - ref["log_ref_params"]
                      + (np.asarray(theta["b"]) - np.asarray(theta["a"])) / (2.0 * eta))
        return 0.5 * (np.asarray(log_flops) - _LOG6 - log_m_star)
