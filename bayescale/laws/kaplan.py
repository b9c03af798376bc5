"""Kaplan et al. (2020), "Scaling Laws for Neural Language Models": loss without an
irreducible term, as powers of model size N and data D.

Three registered laws, one file because they are one family with shared priors:

``kaplan``
    The joint law (their eq. 1.5), L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D.
``kaplan_n``
    Model size alone, for models trained to convergence: L(N) = (N_c/N)^α_N.
``kaplan_d``
    Data alone, for large models stopped early: L(D) = (D_c/D)^α_D.

They are separate laws rather than options of one, because a law's inputs are declared
statically: each form reads different columns, so each gets its own registry name, CLI
choice and saved-fit identity, and the contract test checks each. (``load_runs`` needs N and D
or C, so runs for the one-variable forms still carry both columns; the simulations give the
unused one a constant value, which the law ignores.)

Sampling. N_c and D_c are 10^13-scale numbers whose logs are tied to the exponents, so the
joint law is sampled at the reference point (N₀, D₀), the geometric means of the runs::

    log L = log L₀ + α_D · LSE(log w − (α_N/α_D)·(log N − log N₀), log(1 − w) − (log D − log D₀))

with L₀ the loss at the reference point (``l0`` = log L₀ − log of the smallest observed loss)
and w ∈ (0, 1) the model-size term's share of the bracket there. The one-variable forms are
log L = log L₀ − α·(log x − log x₀).

Priors (grounded in Kaplan et al.'s Table 2 and Section 1.2 fits on WebText2, non-embedding
parameters, nats/token): α_N = 0.076 in both L(N) and L(N, D); α_D = 0.095 in L(D) and 0.103
in L(N, D); N_c = 8.8e13 (L(N)) and 6.4e13 (L(N, D)); D_c = 5.4e13 (L(D)) and 1.8e13
(L(N, D)). The exponents get LogNormal priors centred there with σ = 0.7 (94% of the mass
within a factor of 3.7 either way), wide enough for other data sets, where loss-vs-size slopes
without an irreducible term are 0.03–0.3. ``l0`` ~ Normal(0.2, 0.5): the loss at the
geometric-mean run is typically 5–50% above the smallest loss; w ~ Beta(2, 2).

Compute-optimal split (``kaplan`` only), closed form under C = 6·N·D: minimising the bracket
gives N_opt^(1+r) = r·N_c^r·C / (6·D_c) with r = α_N/α_D.
"""

from __future__ import annotations

import math

import numpy as np

from ..priors import Prior
from .base import PaperParameter, Parameter, PowerTerm, ScalingLaw, Simulation, log_sum_exp

__all__ = ["KaplanLaw", "KaplanParamsLaw", "KaplanTokensLaw"]

_LOG6 = math.log(6.0)
_GRID_N, _GRID_R = np.meshgrid(np.geomspace(7e7, 1.6e10, 8), np.geomspace(2, 120, 6))


def _l0_parameter() -> Parameter:
    return Parameter("l0", Prior("Normal", mu=0.2, sigma=0.5), label=r"$\log L_0 - \log L_{min}$",
                     meaning="log loss at the reference scale, relative to the smallest loss")


def _alpha_n_parameter() -> Parameter:
    # Kaplan et al. 2020: alpha_N = 0.076 (Table 2, both L(N) and L(N, D)).
    return Parameter("alpha_N", Prior("LogNormal", mu=math.log(0.076), sigma=0.7), 0.0, math.inf,
                     r"$\alpha_N$", "exponent of model size")


def _alpha_d_parameter(centre: float) -> Parameter:
    # Kaplan et al. 2020: alpha_D = 0.095 in L(D), 0.103 in L(N, D).
    return Parameter("alpha_D", Prior("LogNormal", mu=math.log(centre), sigma=0.7), 0.0, math.inf,
                     r"$\alpha_D$", "exponent of data")


class KaplanLaw(ScalingLaw):
    """Kaplan et al. (2020), eq. 1.5: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D."""

    name = "kaplan"
    formula = "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D"
    inputs = ("params", "tokens")
    parameters = (
        _l0_parameter(),
        Parameter("w", Prior("Beta", alpha=2.0, beta=2.0), 0.0, 1.0, r"$w$",
                  "share of the model-size term in the bracket at the reference scale"),
        _alpha_n_parameter(),
        _alpha_d_parameter(0.103),
    )
    paper = (PaperParameter("N_c", r"$N_c$", True, "model-size scale (parameters)"),
             PaperParameter("D_c", r"$D_c$", True, "data scale (tokens)"),
             PaperParameter("alpha_N", r"$\alpha_N$", False, "model-size exponent"),
             PaperParameter("alpha_D", r"$\alpha_D$", False, "data exponent"))
    compute_optimal = "closed_form"
    axes = {"params": ("alpha_N", "N_c"), "tokens": ("alpha_D", "D_c")}
    # Kaplan et al.'s joint fit (Table 2) on a grid of model sizes and tokens per parameter.
    simulation = Simulation(inputs={"params": _GRID_N.ravel(), "tokens": (_GRID_N * _GRID_R).ravel()},
                            truth={"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103},
                            noise=0.01)

    def log_loss(self, theta, log_x, ref, xp):
        ratio = theta["alpha_N"] / theta["alpha_D"]
        x_n = log_x["params"] - ref["log_ref_params"]
        x_d = log_x["tokens"] - ref["log_ref_tokens"]
        bracket = log_sum_exp((xp.log(theta["w"]) - ratio * x_n, xp.log1p(-theta["w"]) - x_d), xp)
        return ref["log_min_loss"] + theta["l0"] + theta["alpha_D"] * bracket

    def paper_values(self, theta, ref):
        alpha_n, alpha_d = np.asarray(theta["alpha_N"]), np.asarray(theta["alpha_D"])
        w = np.asarray(theta["w"])
        log_s = (ref["log_min_loss"] + np.asarray(theta["l0"])) / alpha_d  # log of the bracket at the reference
        log_nc = ref["log_ref_params"] + (alpha_d / alpha_n) * (np.log(w) + log_s)
        log_dc = ref["log_ref_tokens"] + np.log1p(-w) + log_s
        return {"N_c": np.exp(log_nc), "D_c": np.exp(log_dc), "alpha_N": alpha_n, "alpha_D": alpha_d}

    def sampled_values(self, paper, ref):
        alpha_n = np.asarray(paper["alpha_N"], dtype=np.float64)
        alpha_d = np.asarray(paper["alpha_D"], dtype=np.float64)
        log_u = (alpha_n / alpha_d) * (np.log(paper["N_c"]) - ref["log_ref_params"])
        log_v = np.log(paper["D_c"]) - ref["log_ref_tokens"]
        log_s = np.logaddexp(log_u, log_v)
        return {"l0": alpha_d * log_s - ref["log_min_loss"], "w": np.exp(log_u - log_s),
                "alpha_N": alpha_n, "alpha_D": alpha_d}

    def optimal_log_params(self, theta, ref, log_flops, fixed=None):
        """Closed form under C = 6·N·D: (1 + r)·log N_opt = log r + r·log N_c − log D_c + log(C/6).

        With N_c and D_c written through the sampled w (r = α_N/α_D), r·log N_c − log D_c =
        r·log N₀ + log w − log D₀ − log(1 − w): no 10^13-scale numbers are formed.
        """
        ratio = np.asarray(theta["alpha_N"]) / np.asarray(theta["alpha_D"])
        w = np.asarray(theta["w"])
        top = (np.log(ratio) + ratio * ref["log_ref_params"] + np.log(w) - np.log1p(-w)
               - ref["log_ref_tokens"] + np.asarray(log_flops) - _LOG6)
        return top / (1.0 + ratio)


class _OneVariable:
    """Formula of the one-variable forms, L(x) = (x_c/x)^α, sampled as
    log L = log L₀ − α·(log x − log x₀); mixed into each law class."""

    _input: str
    _exponent: str
    _scale: str

    def power_terms(self, theta, ref, xp):
        return (PowerTerm(ref["log_min_loss"] + theta["l0"], theta[self._exponent], self._input),)

    def paper_values(self, theta, ref):
        alpha = np.asarray(theta[self._exponent])
        log_scale = ref[f"log_ref_{self._input}"] + (ref["log_min_loss"] + np.asarray(theta["l0"])) / alpha
        return {self._scale: np.exp(log_scale), self._exponent: alpha}

    def sampled_values(self, paper, ref):
        alpha = np.asarray(paper[self._exponent], dtype=np.float64)
        l0 = alpha * (np.log(paper[self._scale]) - ref[f"log_ref_{self._input}"]) - ref["log_min_loss"]
        return {"l0": l0, self._exponent: alpha}


class KaplanParamsLaw(_OneVariable, ScalingLaw):
    """Kaplan et al. (2020), eq. 1.1: L(N) = (N_c/N)^α_N, for models trained to convergence."""

    name = "kaplan_n"
    formula = "L(N) = (N_c / N)^alpha_N"
    inputs = ("params",)
    parameters = (_l0_parameter(), _alpha_n_parameter())
    paper = (PaperParameter("N_c", r"$N_c$", True, "model-size scale (parameters)"),
             PaperParameter("alpha_N", r"$\alpha_N$", False, "model-size exponent"))
    compute_optimal = "none"
    axes = {"params": ("alpha_N", "N_c")}
    simulation = Simulation(inputs={"params": np.geomspace(1e6, 1e10, 30), "tokens": np.full(30, 2.3e10)},
                            truth={"N_c": 8.8e13, "alpha_N": 0.076}, noise=0.01)
    _input, _exponent, _scale = "params", "alpha_N", "N_c"


class KaplanTokensLaw(_OneVariable, ScalingLaw):
    """Kaplan et al. (2020), eq. 1.2: L(D) = (D_c/D)^α_D, for large models stopped early."""

    name = "kaplan_d"
    formula = "L(D) = (D_c / D)^alpha_D"
    inputs = ("tokens",)
    parameters = (_l0_parameter(), _alpha_d_parameter(0.095))
    paper = (PaperParameter("D_c", r"$D_c$", True, "data scale (tokens)"),
             PaperParameter("alpha_D", r"$\alpha_D$", False, "data exponent"))
    compute_optimal = "none"
    axes = {"tokens": ("alpha_D", "D_c")}
    simulation = Simulation(inputs={"tokens": np.geomspace(1e8, 1e11, 30), "params": np.full(30, 1.5e9)},
                            truth={"D_c": 5.4e13, "alpha_D": 0.095}, noise=0.01)
    _input, _exponent, _scale = "tokens", "alpha_D", "D_c"
