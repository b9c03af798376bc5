"""Muennighoff et al. (2023), "Scaling Data-Constrained Language Models" (NeurIPS): the
Chinchilla law with repeated data, in model size N, training tokens D and unique tokens U::

    L(N, D, U) = E + A/N'^α + B/D'^β
    D' = U_D + U_D·R_D*·(1 − exp(−R_D/R_D*)),   U_D = min(U, D),  R_D = D/U_D − 1
    N' = U_N + U_N·R_N*·(1 − exp(−R_N/R_N*)),   U_N = min(N, N_opt(U_D)),  R_N = N/U_N − 1

R_D is the number of repetitions past the first epoch; repeated tokens are worth less and
less, and D' never exceeds U_D·(1 + R_D*). N_opt(U_D) is the Chinchilla-optimal model size for
U_D tokens under this law's own A, B, α, β: N_opt(D) = G·(D·G)^(β/α) with
G = (α·A/(β·B))^(1/(α+β)); parameters beyond it are "excess" and decay the same way with
R_N*. Sampled like the Chinchilla law (log coefficients at the runs' geometric means,
``E_fraction``), plus R_D* and R_N*.

Priors. E_fraction, a, b, α, β as for the Chinchilla law. R_D*, R_N* ~ LogNormal centred
on the published fit to the C4 runs (the authors' repository README: E = 1.869, A = 520.4,
B = 1488.0, α = β = 0.3527, R_D* = 15.39, R_N* = 5.31), σ = 1.0: 94% of the mass within a
factor of 6.6 either way, because the decay constants are poorly pinned by few epochs.

Runs need a ``unique_tokens`` column (``load_runs(..., unique_tokens="U")``). The
compute-optimal split for a given U has no closed form: it is found numerically along
C = 6·N·D per draw (``compute_optimal = "numeric"``), holding U fixed. Where the budget buys
thousands of epochs of U (e.g. U = 1.4e9 tokens at C = 1e23 FLOPs), both D' and N' have
saturated and the loss is flat in N to machine precision: any N on that plateau is optimal,
and the one returned is arbitrary within it.
"""

from __future__ import annotations

import math

import numpy as np

from ..data import InputSpec
from ..priors import Prior
from .base import (PaperParameter, Parameter, ScalingLaw, Simulation, coefficient_prior,
                   e_fraction_parameter, exponent_prior, log_sum_exp)

__all__ = ["DataConstrainedLaw", "UNIQUE_TOKENS"]

#: The extra run column this law reads.
UNIQUE_TOKENS = InputSpec("unique_tokens", "U", "unique token count", "unique token counts", "tokens")

#: Muennighoff et al.'s fit to their C4 runs (repository README), for tests and docs.
PUBLISHED = {"E": 1.869, "A": 520.4, "B": 1488.0, "alpha": 0.3527, "beta": 0.3527,
             "rd_star": 15.39, "rn_star": 5.31}

# Simulated design, like the datablations grid: sizes up to 8B, at 20 and 80 tokens per
# parameter, on 1 to 32 epochs of the unique data.
_N, _RATIO, _EPOCHS = (a.ravel() for a in np.meshgrid(np.geomspace(1e8, 8e9, 5), [20.0, 80.0],
                                                      [1.0, 2.0, 8.0, 32.0], indexing="ij"))


class DataConstrainedLaw(ScalingLaw):
    """Muennighoff et al. (2023): L = E + A/N'^α + B/D'^β with repeated data and excess parameters."""

    name = "data_constrained"
    formula = ("L(N, D, U) = E + A / N'^alpha + B / D'^beta, D' = U_D (1 + R_D* (1 - exp(-R_D / R_D*))), "
               "N' = U_N (1 + R_N* (1 - exp(-R_N / R_N*)))")
    inputs = ("params", "tokens", "unique_tokens")
    new_inputs = (UNIQUE_TOKENS,)
    parameters = (
        e_fraction_parameter(),
        Parameter("a", coefficient_prior(), label=r"$a$",
                  meaning="log of the model-size term at the reference scale (nats)"),
        Parameter("b", coefficient_prior(), label=r"$b$",
                  meaning="log of the data term at the reference scale (nats)"),
        Parameter("alpha", exponent_prior(), 0.0, math.inf, r"$\alpha$", "exponent α"),
        Parameter("beta", exponent_prior(), 0.0, math.inf, r"$\beta$", "exponent β"),
        Parameter("rd_star", Prior("LogNormal", mu=math.log(15.39), sigma=1.0), 0.0, math.inf,
                  r"$R_D^*$", "repetitions of the data after which its value has decayed by 1/e"),
        Parameter("rn_star", Prior("LogNormal", mu=math.log(5.31), sigma=1.0), 0.0, math.inf,
                  r"$R_N^*$", "excess-parameter ratio after which their value has decayed by 1/e"),
    )
    paper = (PaperParameter("E", r"$E$ (nats/token)", False, "irreducible loss"),
             PaperParameter("A", r"$A$", True, "model-size coefficient"),
             PaperParameter("B", r"$B$", True, "data coefficient"),
             PaperParameter("alpha", r"$\alpha$", False, "model-size exponent"),
             PaperParameter("beta", r"$\beta$", False, "data exponent"),
             PaperParameter("rd_star", r"$R_D^*$", True, "decay constant of repeated data"),
             PaperParameter("rn_star", r"$R_N^*$", True, "decay constant of excess parameters"))
    compute_optimal = "numeric"
    axes = {"params": ("alpha", "A"), "tokens": ("beta", "B"), "unique_tokens": ("rd_star",)}
    simulation = Simulation(inputs={"params": _N, "tokens": _N * _RATIO,
                                    "unique_tokens": _N * _RATIO / _EPOCHS},
                            truth=PUBLISHED, noise=0.01)

    def log_loss(self, theta, log_x, ref, xp):
        alpha, beta = theta["alpha"], theta["beta"]
        log_n, log_d = log_x["params"], log_x["tokens"]
        log_a = theta["a"] + alpha * ref["log_ref_params"]
        log_b = theta["b"] + beta * ref["log_ref_tokens"]
        log_g = (xp.log(alpha) + log_a - xp.log(beta) - log_b) / (alpha + beta)
        log_ud = xp.minimum(log_x["unique_tokens"], log_d)
        log_un = xp.minimum(log_n, (beta / alpha) * (log_ud + log_g) + log_g)
        r_d = xp.expm1(log_d - log_ud)
        r_n = xp.expm1(log_n - log_un)
        rd_star, rn_star = theta["rd_star"], theta["rn_star"]
        log_d_eff = log_ud + xp.log1p(-rd_star * xp.expm1(-r_d / rd_star))
        log_n_eff = log_un + xp.log1p(-rn_star * xp.expm1(-r_n / rn_star))
        return log_sum_exp((theta["a"] - alpha * (log_n_eff - ref["log_ref_params"]),
                            theta["b"] - beta * (log_d_eff - ref["log_ref_tokens"]),
                            self.log_e(theta, ref, xp)), xp)

    def paper_values(self, theta, ref):
        alpha, beta = np.asarray(theta["alpha"]), np.asarray(theta["beta"])
        return {"E": np.exp(self.log_e(theta, ref, np)),
                "A": np.exp(np.asarray(theta["a"]) + alpha * ref["log_ref_params"]),
                "B": np.exp(np.asarray(theta["b"]) + beta * ref["log_ref_tokens"]),
                "alpha": alpha, "beta": beta, "rd_star": np.asarray(theta["rd_star"]),
                "rn_star": np.asarray(theta["rn_star"])}

    def sampled_values(self, paper, ref):
        alpha = np.asarray(paper["alpha"], dtype=np.float64)
        beta = np.asarray(paper["beta"], dtype=np.float64)
        return {"E_fraction": np.asarray(paper["E"]) / np.exp(ref["log_min_loss"]),
                "a": np.log(paper["A"]) - alpha * ref["log_ref_params"],
                "b": np.log(paper["B"]) - beta * ref["log_ref_tokens"],
                "alpha": alpha, "beta": beta,
                "rd_star": np.asarray(paper["rd_star"], dtype=np.float64),
                "rn_star": np.asarray(paper["rn_star"], dtype=np.float64)}
