"""Scaling laws, each written once for numpy (analysis of draws) and pytensor (the PyMC graph).

Every law is evaluated in log space with log-sum-exp and with its inputs centred on reference
scales inside the data (geometric means of N, D or C). For Chinchilla::

    log L = LSE(a − α·(log N − log N₀), b − β·(log D − log D₀), log E)

which is L = E + A/N^α + B/D^β with A = exp(a)·N₀^α and B = exp(b)·D₀^β. Centring removes
most of the correlation between a coefficient and its exponent, which keeps NUTS fast.

E is sampled as ``E_fraction`` ∈ (0, 1) of the smallest observed loss, so the irreducible loss
can never exceed a loss that was actually reached.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from .data import Runs
from .exceptions import ModelMismatchError
from .priors import Prior

__all__ = ["ScalingLaw", "PowerTerm", "ComputeLaw", "ChinchillaLaw", "get_law", "LAWS"]

Array = Any  # numpy array or pytensor tensor


@dataclass(frozen=True)
class PowerTerm:
    """One additive term of a law, exp(c − e·(log x − log x₀)), or the constant exp(c).

    ``log_coefficient`` (c) and ``exponent`` (e) are draws or tensors; ``input`` names the
    run column x (``"params"``, ``"tokens"``, ``"flops"``), centred on its reference scale
    x₀ (the runs' geometric mean), or is None for a constant such as the irreducible loss E.
    """

    log_coefficient: Array
    exponent: Array | None = None
    input: str | None = None

    def log_value(self, log_x: Mapping[str, Array], ref: Mapping[str, Array]) -> Array:
        """c − e·(log x − log x₀), broadcasting the draws against the inputs."""
        if self.input is None:
            return self.log_coefficient
        return self.log_coefficient - self.exponent * (log_x[self.input] - ref[f"log_ref_{self.input}"])


class ScalingLaw(ABC):
    """A parametric law for loss as a function of scale.

    Subclasses declare their inputs, their sampled parameters (with domains and default
    priors) and write the law once for both numpy and pytensor: as :meth:`power_terms` when
    it is a sum of power laws, otherwise as :meth:`log_terms`.
    """

    name: ClassVar[str]
    #: Standard run columns the law reads (subset of params, tokens, flops).
    inputs: ClassVar[tuple[str, ...]]
    #: Sampled parameters -> (lower, upper) domain.
    parameter_domains: ClassVar[dict[str, tuple[float, float]]]
    #: Parameters in the paper's form, derived from the sampled ones.
    paper_parameters: ClassVar[tuple[str, ...]]
    formula: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if all(getattr(cls, name) is getattr(ScalingLaw, name)
               for name in ("power_terms", "log_terms", "log_loss")):
            raise TypeError(f"{cls.__name__} must define the law: power_terms (a sum of power "
                            "laws), or log_terms, or log_loss")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    @property
    def n_parameters(self) -> int:
        """Number of free parameters of the law itself (not counting noise)."""
        return len(self.parameter_domains)

    @abstractmethod
    def default_priors(self) -> dict[str, Prior]:
        """Weakly informative priors for the sampled parameters."""

    def reference(self, runs: Runs) -> dict[str, float]:
        """Reference scales (logs of geometric means) and the log of the smallest loss."""
        self.check_runs(runs)
        ref = {"log_min_loss": float(np.log(runs.column("loss").min()))}
        for name in self.inputs:
            ref[f"log_ref_{name}"] = float(np.mean(np.log(runs.column(name))))
        return ref

    def check_runs(self, runs: Runs) -> None:
        """Raise :class:`ModelMismatchError` if the runs lack an input this law needs."""
        for name in self.inputs:
            values = runs.column(name)
            if not np.isfinite(values).all():
                raise ModelMismatchError(
                    f"the {self.name} law needs column {name!r} for every run, but the runs "
                    f"give only {', '.join(c for c in ('params', 'tokens', 'flops') if np.isfinite(runs.column(c)).all())}; "
                    "use the 'compute' law or supply the column")

    def power_terms(self, theta: Mapping[str, Array], ref: Mapping[str, Array],
                    xp: ModuleType) -> tuple[PowerTerm, ...]:
        """The law as a sum of power-law terms, L = Σ exp(c − e·(log x − log x₀)).

        Laws of that family (Chinchilla, compute, ...) define this and get :meth:`log_terms`,
        :meth:`log_loss` and a fast :meth:`loss` from it; other laws override
        :meth:`log_terms` instead.
        """
        raise NotImplementedError(f"the {self.name} law is not a sum of power-law terms")

    def log_terms(self, theta: Mapping[str, Array], log_x: Mapping[str, Array],
                  ref: Mapping[str, Array], xp: ModuleType) -> tuple[Array, ...]:
        """The logs of the law's additive terms: L = Σ exp(term) (e.g. log(A/N^α), log E).

        ``xp`` is ``numpy`` or ``pytensor.tensor``; arrays broadcast, so theta of shape
        (S, 1) against inputs of shape (1, M) gives all draws at all points (and theta of
        shape (1, S) against inputs (M, 1) gives one row of draws per point).
        """
        return tuple(term.log_value(log_x, ref) for term in self.power_terms(theta, ref, xp))

    def log_loss(self, theta: Mapping[str, Array], log_x: Mapping[str, Array],
                 ref: Mapping[str, Array], xp: ModuleType) -> Array:
        """log L at log inputs ``log_x`` for parameters ``theta``, by log-sum-exp.

        The form the PyMC model samples (``xp`` = ``pytensor.tensor``) and the one to use
        where L itself could overflow; broadcasting as in :meth:`log_terms`.
        """
        return log_sum_exp(self.log_terms(theta, log_x, ref, xp), xp)

    def loss(self, theta: Mapping[str, np.ndarray], log_x: Mapping[str, np.ndarray],
             ref: Mapping[str, float], out: np.ndarray | None = None,
             work: np.ndarray | None = None) -> np.ndarray:
        """L itself (numpy): the sum of the exponentiated terms, broadcasting as in
        :meth:`log_terms`.

        Less work than ``exp(log_loss)`` (one exponential a term, no logarithm, no shift):
        every term is positive, so the sum loses no precision, and a loss beyond float64's
        range comes out ``inf`` either way.

        Parameters
        ----------
        out, work : numpy.ndarray, optional
            Arrays of the result's shape to write the result to and to use as scratch; a
            caller summarising chunk after chunk passes the same ones each time, because
            fresh arrays of a few hundred kB cost more in page faults than the arithmetic.
        """
        try:
            terms = self.power_terms(theta, ref, np)
        except NotImplementedError:
            # Any other law: exp of its log-sum-exp (exp(inf) is inf, as for the sum).
            log_loss = self.log_loss(theta, log_x, ref, np)
            if out is None:
                return np.exp(log_loss)
            return np.exp(log_loss, out=out)
        constant = [term for term in terms if term.input is None]
        varying = [term for term in terms if term.input is not None]
        shape = np.broadcast_shapes(*(np.shape(term.log_coefficient) for term in terms),
                                    *(np.shape(log_x[term.input]) for term in varying))
        out = np.empty(shape) if out is None else out
        if work is None and len(varying) > 1:
            work = np.empty(shape)
        with np.errstate(over="ignore"):
            # The first term is computed in ``out`` itself: one pass fewer than zeroing it.
            for k, term in enumerate(varying):
                target = out if k == 0 else work
                centred = log_x[term.input] - ref[f"log_ref_{term.input}"]
                np.multiply(term.exponent, centred, out=target)
                np.subtract(term.log_coefficient, target, out=target)
                np.exp(target, out=target)
                if k:
                    out += work
            total_constant = sum(np.exp(term.log_coefficient) for term in constant)
            if not varying:
                np.copyto(out, total_constant)
            elif constant:
                out += total_constant
        return out

    @abstractmethod
    def paper_values(self, theta: Mapping[str, np.ndarray], ref: Mapping[str, float]) -> dict[str, np.ndarray]:
        """The paper's parameters (E, A, ...) from sampled draws (numpy)."""

    def optimal_log_params(self, theta: Mapping[str, np.ndarray], ref: Mapping[str, float],
                           log_flops: np.ndarray) -> np.ndarray:
        """log N_opt(C) per draw under C = 6·N·D; only laws of N and D define it."""
        raise ModelMismatchError(f"the {self.name} law has no compute-optimal split of N and D; "
                                 "give params= and tokens=, or fit the 'chinchilla' law")

    @staticmethod
    def log_e(theta: Mapping[str, Array], ref: Mapping[str, Array], xp: ModuleType) -> Array:
        """log E from the sampled fraction of the smallest observed loss."""
        return ref["log_min_loss"] + xp.log(theta["E_fraction"])


def log_sum_exp(terms: tuple[Array, ...], xp: ModuleType) -> Array:
    """log(Σ exp(term)), shifted by the largest term so nothing overflows.

    Written with exp and log rather than nested ``logaddexp``: numpy's float64 logaddexp is
    not vectorised and was 6x slower than exp on the (draws × points) arrays of forecasts.
    """
    shift = terms[0]
    for term in terms[1:]:
        shift = xp.maximum(shift, term)
    total = xp.exp(terms[0] - shift)
    for term in terms[1:]:
        total = total + xp.exp(term - shift)
    return shift + xp.log(total)


def _exponent_prior() -> Prior:
    # Published exponents: Kaplan 0.076/0.095, Hoffmann 0.34/0.28, Epoch 0.35/0.37,
    # Muennighoff 0.35. LogNormal(log 0.3, 0.7) has 94% of its mass in about [0.08, 1.1].
    return Prior("LogNormal", mu=math.log(0.3), sigma=0.7)


def _coefficient_prior() -> Prior:
    # a = log of a reducible term at the reference scale, in loss units: exp(-1) ≈ 0.37 nats,
    # 94% of the mass between about 0.02 and 6 nats.
    return Prior("Normal", mu=-1.0, sigma=1.5)


def _e_fraction_prior() -> Prior:
    # E / (smallest observed loss): Hoffmann ≈ 0.85, Epoch ≈ 0.9 on Chinchilla's runs; far
    # below 1 for short curves. Beta(2, 1.5) allows the whole range, mean 0.57.
    return Prior("Beta", alpha=2.0, beta=1.5)


class ChinchillaLaw(ScalingLaw):
    """Hoffmann et al. (2022): L(N, D) = E + A/N^α + B/D^β."""

    name = "chinchilla"
    inputs = ("params", "tokens")
    parameter_domains = {"E_fraction": (0.0, 1.0), "a": (-math.inf, math.inf),
                         "b": (-math.inf, math.inf), "alpha": (0.0, math.inf),
                         "beta": (0.0, math.inf)}
    paper_parameters = ("E", "A", "B", "alpha", "beta")
    formula = "L(N, D) = E + A / N^alpha + B / D^beta"

    def default_priors(self) -> dict[str, Prior]:
        return {"E_fraction": _e_fraction_prior(), "a": _coefficient_prior(),
                "b": _coefficient_prior(), "alpha": _exponent_prior(), "beta": _exponent_prior()}

    def power_terms(self, theta, ref, xp):
        return (PowerTerm(theta["a"], theta["alpha"], "params"),
                PowerTerm(theta["b"], theta["beta"], "tokens"),
                PowerTerm(self.log_e(theta, ref, xp)))

    def paper_values(self, theta, ref):
        log_a = theta["a"] + theta["alpha"] * ref["log_ref_params"]
        log_b = theta["b"] + theta["beta"] * ref["log_ref_tokens"]
        return {"E": np.exp(self.log_e(theta, ref, np)), "A": np.exp(log_a), "B": np.exp(log_b),
                "alpha": np.asarray(theta["alpha"]), "beta": np.asarray(theta["beta"])}

    def optimal_log_params(self, theta, ref, log_flops):
        """Closed form under C = 6·N·D (Hoffmann et al. 2022, eq. 4).

        N_opt = G·(C/6)^(β/(α+β)) with G = (α·A / (β·B))^(1/(α+β)); computed in logs because
        A and B reach 10^3–10^5 and C reaches 10^25.
        """
        alpha, beta = np.asarray(theta["alpha"]), np.asarray(theta["beta"])
        log_a = np.asarray(theta["a"]) + alpha * ref["log_ref_params"]
        log_b = np.asarray(theta["b"]) + beta * ref["log_ref_tokens"]
        log_g = (np.log(alpha) + log_a - np.log(beta) - log_b) / (alpha + beta)
        return log_g + beta / (alpha + beta) * (np.asarray(log_flops) - math.log(6.0))


class ComputeLaw(ScalingLaw):
    """Loss against training compute: L(C) = E + A·C^(−α) (C in FLOPs).

    Sampled as E + exp(a)·(C/C₀)^(−α) with C₀ the geometric mean of the runs' compute; the
    reported A is the coefficient for C in FLOPs, A = exp(a)·C₀^α.
    """

    name = "compute"
    inputs = ("flops",)
    parameter_domains = {"E_fraction": (0.0, 1.0), "a": (-math.inf, math.inf),
                         "alpha": (0.0, math.inf)}
    paper_parameters = ("E", "A", "alpha")
    formula = "L(C) = E + A * C^-alpha"

    def default_priors(self) -> dict[str, Prior]:
        # Loss-vs-compute exponents are smaller than per-axis ones (Kaplan 0.05, Porian
        # 0.11-0.14, Chinchilla's frontier ≈ 0.15): LogNormal(log 0.15, 0.8) covers 0.03-0.7.
        return {"E_fraction": _e_fraction_prior(), "a": _coefficient_prior(),
                "alpha": Prior("LogNormal", mu=math.log(0.15), sigma=0.8)}

    def power_terms(self, theta, ref, xp):
        return (PowerTerm(theta["a"], theta["alpha"], "flops"), PowerTerm(self.log_e(theta, ref, xp)))

    def paper_values(self, theta, ref):
        log_a = theta["a"] + theta["alpha"] * ref["log_ref_flops"]
        return {"E": np.exp(self.log_e(theta, ref, np)), "A": np.exp(log_a),
                "alpha": np.asarray(theta["alpha"])}


LAWS: dict[str, type[ScalingLaw]] = {"chinchilla": ChinchillaLaw, "compute": ComputeLaw}


def get_law(law: str | ScalingLaw) -> ScalingLaw:
    """Return a law instance from its registered name (``"chinchilla"``, ``"compute"``)."""
    if isinstance(law, ScalingLaw):
        return law
    if isinstance(law, str) and law.lower() in LAWS:
        return LAWS[law.lower()]()
    raise ValueError(f"unknown law {law!r}; available: {sorted(LAWS)}")
