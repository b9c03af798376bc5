"""The base of every scaling law: what a law declares, and the one place its formula lives.

How to add a law
================

Write one file ``bayescale/laws/<name>.py`` with one subclass of :class:`ScalingLaw`, and add
its module name to ``_BUILTIN`` in ``bayescale/laws/__init__.py`` (the package imports it at
import time; a law defined anywhere else registers itself the moment its class is defined).
Defining the class registers it: ``bs.available_laws()`` lists it, ``bs.get_law(name)`` and
``ScalingModel(name)`` use it, the CLI offers it in ``--law``, and ``tests/test_law_contract.py``
tests it. Declare, as class attributes:

``name``
    The registry name (lower case, e.g. ``"broken_power"``).
``formula``
    The law as a human reads it, for reports (``"L(N, D) = E + A/N^alpha + B/D^beta"``).
``inputs``
    The run columns the formula reads, e.g. ``("params", "tokens")`` or ``("flops",)``.
    A column that is not one of params/tokens/flops is declared once as an
    :class:`~bayescale.data.InputSpec` in ``new_inputs`` (e.g. ``unique_tokens``, symbol U);
    ``load_runs(..., unique_tokens="U")`` then reads and validates it like the others, saved
    fits keep it, and design checks and labels use its declared names.
``parameters``
    The sampled parameters, a tuple of :class:`Parameter`: name, default prior (cite the
    published fits it comes from in the docstring), domain ``(lower, upper)``, a plot label
    and a one-line meaning for reports. Sample well-scaled quantities (log coefficients at a
    reference scale, fractions) rather than raw coefficients: NUTS is faster on them.
``paper``
    The parameters as the paper writes them, a tuple of :class:`PaperParameter` (name, label,
    whether a log axis suits it); :meth:`paper_values` computes their draws.
``compute_optimal``
    How the law splits a compute budget C = 6·N·D into N and D: ``"closed_form"`` (then
    override :meth:`optimal_log_params`), ``"numeric"`` (the base class minimises the law
    along C = 6·N·D per draw, holding any other inputs fixed) or ``"none"`` (a law without
    both N and D, e.g. of compute alone). Declared, never guessed from the inputs.
``axes`` (optional)
    For design messages: input name -> the parameters that the data along that input
    identify, e.g. ``{"params": ("alpha", "A")}``.
``simulation`` (optional)
    For the contract test's recovery check: a :class:`Simulation` with true paper values and
    a design; without one the test simulates from the prior centres on a default design.
``dataset`` (optional)
    The name of a bundled data set (:func:`bayescale.load_dataset`) the law is benchmarked
    on (``benchmarks/bench_laws.py``).
``Parameter.point_grid`` (optional)
    Starting values of the Hoffmann/Epoch-style point fit, per parameter; with them the law
    gets :func:`bayescale.pointfit.point_fit` (objective and gradient derived from the formula).

and write the formula ONCE, in one of three ways (each gives the others):

:meth:`power_terms`
    For a sum of power laws L = Σ exp(c − e·(log x − log x₀)) (+ constants): return
    :class:`PowerTerm` s. Gives :meth:`log_terms`, :meth:`log_loss` and a fast :meth:`loss`.
:meth:`log_terms`
    For L = Σ exp(term) with other terms: return the logs of the additive terms.
:meth:`log_loss`
    Anything else: log L itself.

The formula gets ``theta`` (parameter name -> value), ``log_x`` (input name -> natural log of
the input), ``ref`` (from :meth:`reference`: ``log_min_loss`` and ``log_ref_<input>``, the log
geometric mean of each input) and ``xp``, the array namespace: ``numpy``,
``pytensor.tensor``, or the fast path's tracer. Use only arithmetic operators and
``xp.exp, log, log1p, expm1, sqrt, abs, tanh, sigmoid, maximum, minimum, logaddexp, power,
square`` (no ``if`` on values, no ``np.`` calls): then the sampler's density and gradient
(:mod:`bayescale._fastlogp`) and the point fit's objective (:mod:`bayescale.pointfit`) are
derived from it automatically. A formula outside that set still works through PyMC, with a
one-line notice that the fast path is not available.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..data import STANDARD_INPUTS, InputSpec, Runs, input_spec, register_input
from ..exceptions import ModelMismatchError
from ..priors import Prior

__all__ = ["ScalingLaw", "Parameter", "PaperParameter", "PowerTerm", "Simulation",
           "COMPUTE_OPTIMAL", "log_sum_exp", "register", "available_laws", "get_law",
           "registered_laws", "LAWS"]

Array = Any  # numpy array, pytensor tensor or tracer node

#: Ways a law may split a compute budget between N and D.
COMPUTE_OPTIMAL = ("closed_form", "numeric", "none")


@dataclass(frozen=True)
class Parameter:
    """One sampled parameter of a law.

    Attributes
    ----------
    name : str
        Key in ``theta`` (e.g. ``"alpha"``).
    prior : Prior
        The default prior.
    lower, upper : float
        The domain; the prior's support must lie inside it.
    label : str
        Matplotlib mathtext for axes, e.g. ``r"$\\alpha$"``.
    meaning : str
        One line for reports, e.g. ``"exponent of model size"``.
    point_grid, point_grid_small : tuple of float
        Starting values of the point fit (:mod:`bayescale.pointfit`) in its coordinate; a law
        whose parameters all declare a grid gets a point fit. The point fit evaluates the
        formula with every reference scale at zero, so coefficients are uncentred there.
    point_log : bool
        The point fit's coordinate is the log of the parameter (e.g. e = log E).
    point_name : str
        Name of that coordinate (default: the parameter's name).
    """

    name: str
    prior: Prior
    lower: float = -math.inf
    upper: float = math.inf
    label: str = ""
    meaning: str = ""
    point_grid: tuple[float, ...] = ()
    point_grid_small: tuple[float, ...] = ()
    point_log: bool = False
    point_name: str = ""


@dataclass(frozen=True)
class PaperParameter:
    """A parameter as the paper reports it, derived from the sampled ones."""

    name: str
    label: str = ""
    log_scale: bool = False
    meaning: str = ""


@dataclass(frozen=True)
class Simulation:
    """A design and truth for the contract test's parameter-recovery check.

    Attributes
    ----------
    inputs : dict of str to sequence of float
        One value per simulated run for every input.
    truth : dict of str to float
        True values of the paper parameters (``paper``); the law's
        :meth:`ScalingLaw.sampled_values` turns them into sampled ones.
    noise : float
        Standard deviation of the normal noise on log loss.
    """

    inputs: Mapping[str, Any]
    truth: Mapping[str, float] = field(default_factory=dict)
    noise: float = 0.01


@dataclass(frozen=True)
class PowerTerm:
    """One additive term of a law, exp(c − e·(log x − log x₀)), or the constant exp(c).

    ``log_coefficient`` (c) and ``exponent`` (e) are draws or tensors; ``input`` names the
    run column x, centred on its reference scale x₀ (the runs' geometric mean), or is None
    for a constant such as the irreducible loss E.
    """

    log_coefficient: Array
    exponent: Array | None = None
    input: str | None = None

    def log_value(self, log_x: Mapping[str, Array], ref: Mapping[str, Array]) -> Array:
        """c − e·(log x − log x₀), broadcasting the draws against the inputs."""
        if self.input is None:
            return self.log_coefficient
        return self.log_coefficient - self.exponent * (log_x[self.input] - ref[f"log_ref_{self.input}"])


_REGISTRY: dict[str, type["ScalingLaw"]] = {}
#: The registry (name -> law class); read-only use, register by defining a subclass.
LAWS = _REGISTRY


def register(cls: type["ScalingLaw"]) -> type["ScalingLaw"]:
    """Add a law class to the registry (done automatically when a subclass is defined)."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"a law named {cls.name!r} is already registered ({existing.__module__}."
                         f"{existing.__qualname__}); pick another name")
    _REGISTRY[cls.name] = cls
    return cls


def available_laws() -> list[str]:
    """Names of the registered laws, sorted."""
    return sorted(_REGISTRY)


def registered_laws() -> dict[str, type["ScalingLaw"]]:
    """A copy of the registry: name -> law class."""
    return dict(_REGISTRY)


def get_law(law: "str | ScalingLaw") -> "ScalingLaw":
    """Return a law instance from its registered name (see :func:`available_laws`)."""
    if isinstance(law, ScalingLaw):
        return law
    if isinstance(law, str) and law.lower() in _REGISTRY:
        return _REGISTRY[law.lower()]()
    raise ValueError(f"unknown law {law!r}; available: {available_laws()}")


class ScalingLaw(ABC):
    """A parametric law for loss as a function of scale; see the module docstring."""

    name: ClassVar[str]
    formula: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    parameters: ClassVar[tuple[Parameter, ...]]
    paper: ClassVar[tuple[PaperParameter, ...]]
    compute_optimal: ClassVar[str] = "none"
    new_inputs: ClassVar[tuple[InputSpec, ...]] = ()
    axes: ClassVar[dict[str, tuple[str, ...]]] = {}
    simulation: ClassVar[Simulation | None] = None
    dataset: ClassVar[str | None] = None
    # Derived by __init_subclass__ (kept for code written against the first API):
    parameter_domains: ClassVar[dict[str, tuple[float, float]]]
    paper_parameters: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, register_law: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if all(getattr(cls, m) is getattr(ScalingLaw, m) for m in ("power_terms", "log_terms", "log_loss")):
            raise TypeError(f"{cls.__name__} must define the law: power_terms (a sum of power "
                            "laws), or log_terms, or log_loss")
        for attr in ("name", "formula", "inputs", "parameters", "paper"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} must declare {attr!r} (see bayescale.laws.base)")
        if cls.compute_optimal not in COMPUTE_OPTIMAL:
            raise TypeError(f"{cls.__name__}.compute_optimal must be one of {COMPUTE_OPTIMAL}, "
                            f"got {cls.compute_optimal!r}")
        if cls.compute_optimal != "none" and not {"params", "tokens"} <= set(cls.inputs):
            raise TypeError(f"{cls.__name__} declares a compute-optimal split but its inputs "
                            f"{cls.inputs} lack params and tokens")
        if cls.compute_optimal == "closed_form" and cls.optimal_log_params is ScalingLaw.optimal_log_params:
            raise TypeError(f"{cls.__name__} declares compute_optimal='closed_form' but does not "
                            "override optimal_log_params")
        for spec in cls.new_inputs:
            register_input(spec)
        for name in cls.inputs:
            input_spec(name)  # KeyError-style TypeError below if undeclared
        cls.parameter_domains = {p.name: (p.lower, p.upper) for p in cls.parameters}
        cls.paper_parameters = tuple(p.name for p in cls.paper)
        if register_law:
            register(cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    # -- declarations, as convenient views ---------------------------------------------

    @property
    def n_parameters(self) -> int:
        """Number of free parameters of the law itself (not counting noise)."""
        return len(self.parameters)

    @property
    def splits_compute(self) -> bool:
        """Whether the law has a compute-optimal split of C = 6·N·D (``compute_optimal``)."""
        return self.compute_optimal != "none"

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Inputs beyond params/tokens/flops (held fixed when a budget is split)."""
        return tuple(name for name in self.inputs if name not in STANDARD_INPUTS)

    def default_priors(self) -> dict[str, Prior]:
        """The declared default priors of the sampled parameters."""
        return {p.name: p.prior for p in self.parameters}

    def input_specs(self) -> tuple[InputSpec, ...]:
        """The declared inputs (names, symbols, labels)."""
        return tuple(input_spec(name) for name in self.inputs)

    def labels(self) -> dict[str, tuple[str, bool]]:
        """Plot labels of every parameter, sampled and paper: name -> (mathtext, log axis)."""
        labels = {p.name: (p.label or p.name, False) for p in self.parameters}
        labels.update({p.name: (p.label or p.name, p.log_scale) for p in self.paper})
        return labels

    def meanings(self) -> dict[str, str]:
        """One-line meanings of every parameter, for reports."""
        out = {p.name: p.meaning for p in self.paper if p.meaning}
        out.update({p.name: p.meaning for p in self.parameters if p.meaning})
        return out

    def reference_names(self) -> tuple[str, ...]:
        """Keys of :meth:`reference` (the formula's ``ref``), in a fixed order."""
        return ("log_min_loss", *(f"log_ref_{name}" for name in self.inputs))

    def reference(self, runs: Runs) -> dict[str, float]:
        """Reference scales (logs of geometric means) and the log of the smallest loss."""
        self.check_runs(runs)
        ref = {"log_min_loss": float(np.log(runs.column("loss").min()))}
        for name in self.inputs:
            ref[f"log_ref_{name}"] = float(np.mean(np.log(runs.column(name))))
        return ref

    def check_runs(self, runs: Runs) -> None:
        """Raise :class:`ModelMismatchError` if the runs lack an input this law needs."""
        available = runs.available_inputs()
        for name in self.inputs:
            if name not in available:
                spec = input_spec(name)
                hint = ("use the 'compute' law or supply the column" if name in STANDARD_INPUTS
                        else f"load the runs with load_runs(..., {name}=<column>)")
                raise ModelMismatchError(
                    f"the {self.name} law needs column {name!r} ({spec.label}, {spec.symbol}) "
                    f"for every run, but the runs give only {', '.join(available) or 'none'}; "
                    f"{hint}")

    # -- the formula (write one of the three) ------------------------------------------

    def power_terms(self, theta: Mapping[str, Array], ref: Mapping[str, Array],
                    xp: ModuleType) -> tuple[PowerTerm, ...]:
        """The law as a sum of power-law terms, L = Σ exp(c − e·(log x − log x₀))."""
        raise NotImplementedError(f"the {self.name} law is not a sum of power-law terms")

    def log_terms(self, theta: Mapping[str, Array], log_x: Mapping[str, Array],
                  ref: Mapping[str, Array], xp: ModuleType) -> tuple[Array, ...]:
        """The logs of the law's additive terms: L = Σ exp(term).

        Arrays broadcast: theta of shape (S, 1) against inputs of shape (1, M) gives all
        draws at all points (and (1, S) against (M, 1) one row of draws per point).
        """
        return tuple(term.log_value(log_x, ref) for term in self.power_terms(theta, ref, xp))

    def log_loss(self, theta: Mapping[str, Array], log_x: Mapping[str, Array],
                 ref: Mapping[str, Array], xp: ModuleType) -> Array:
        """log L at log inputs ``log_x`` for parameters ``theta`` (the form that is sampled)."""
        return log_sum_exp(self.log_terms(theta, log_x, ref, xp), xp)

    def loss(self, theta: Mapping[str, np.ndarray], log_x: Mapping[str, np.ndarray],
             ref: Mapping[str, float], out: np.ndarray | None = None,
             work: np.ndarray | None = None) -> np.ndarray:
        """L itself (numpy), broadcasting as in :meth:`log_terms`.

        For power-term laws, the sum of the exponentiated terms (one exponential a term, no
        logarithm); otherwise exp of :meth:`log_loss`.

        Parameters
        ----------
        out, work : numpy.ndarray, optional
            Arrays of the result's shape for the result and as scratch; reused chunk after
            chunk by callers, because fresh arrays cost more in page faults than arithmetic.
        """
        try:
            terms = self.power_terms(theta, ref, np)
        except NotImplementedError:
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

    def paper_values(self, theta: Mapping[str, np.ndarray], ref: Mapping[str, float]) -> dict[str, np.ndarray]:
        """The paper's parameters (E, A, ...) from sampled draws (numpy).

        The default returns the sampled parameters named in ``paper`` unchanged (and E from
        ``E_fraction``); laws with derived coefficients override it.
        """
        out = {}
        for p in self.paper:
            if p.name in theta:
                out[p.name] = np.asarray(theta[p.name])
            elif p.name == "E" and "E_fraction" in theta:
                out["E"] = np.exp(self.log_e(theta, ref, np))
            else:
                raise NotImplementedError(f"the {self.name} law must override paper_values "
                                          f"to compute {p.name!r}")
        return out

    def sampled_values(self, paper: Mapping[str, Any], ref: Mapping[str, float]) -> dict[str, np.ndarray]:
        """Inverse of :meth:`paper_values`: sampled parameters from paper values (numpy).

        Used to simulate runs and to build posteriors from chosen draws. The default copies
        parameters that share a name and turns ``E`` into ``E_fraction``; laws with derived
        coefficients override it.
        """
        out = {}
        for p in self.parameters:
            if p.name in paper:
                out[p.name] = np.asarray(paper[p.name], dtype=np.float64)
            elif p.name == "E_fraction" and "E" in paper:
                out[p.name] = np.asarray(paper["E"], dtype=np.float64) / np.exp(ref["log_min_loss"])
            else:
                raise NotImplementedError(f"the {self.name} law must override sampled_values "
                                          f"to compute {p.name!r}")
        return out

    # -- capabilities ------------------------------------------------------------------

    def optimal_log_params(self, theta: Mapping[str, np.ndarray], ref: Mapping[str, float],
                           log_flops: np.ndarray,
                           fixed: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """log N_opt(C) per draw under C = 6·N·D.

        ``"numeric"`` laws get a golden-section search of the law's log loss in log N along
        C = 6·N·D (see :func:`numeric_optimal_log_params`), broadcasting
        ``theta`` against ``log_flops``; ``fixed`` holds any other inputs (log values, e.g.
        ``unique_tokens``), broadcasting likewise. ``"closed_form"`` laws override this.
        """
        if self.compute_optimal == "none":
            raise ModelMismatchError(f"the {self.name} law has no compute-optimal split of N and D; "
                                     "give params= and tokens=, or fit a law of N and D such as "
                                     "'chinchilla'")
        return numeric_optimal_log_params(self, theta, ref, log_flops, fixed)

    @staticmethod
    def log_e(theta: Mapping[str, Array], ref: Mapping[str, Array], xp: ModuleType) -> Array:
        """log E from the sampled fraction of the smallest observed loss."""
        return ref["log_min_loss"] + xp.log(theta["E_fraction"])


_LOG6 = math.log(6.0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def numeric_optimal_log_params(law: ScalingLaw, theta: Mapping[str, np.ndarray],
                               ref: Mapping[str, float], log_flops: np.ndarray,
                               fixed: Mapping[str, np.ndarray] | None = None,
                               iterations: int = 80) -> np.ndarray:
    """Golden-section search for the log N minimising the law at C = 6·N·D, elementwise.

    The bracket is log N ∈ [log(C/6)/2 − 12, log(C/6)/2 + 12] (N/D from e^−24 to e^24);
    80 iterations narrow it to 24·0.618^80 ≈ 4e-16 of a nat. Assumes the loss is unimodal in
    log N along the budget, as every law of a model-size and a data term is.
    """
    log_c6 = np.asarray(log_flops, dtype=np.float64) - _LOG6
    fixed = dict(fixed or {})
    missing = [name for name in law.inputs if name not in ("params", "tokens", "flops", *fixed)]
    if missing:
        raise ModelMismatchError(f"the {law.name} law's compute-optimal split holds "
                                 f"{', '.join(missing)} fixed: give a value for it (e.g. "
                                 f"fit.forecast(flops=..., {missing[0]}=...))")
    if "flops" in law.inputs:  # a law that also reads C itself: C is the budget
        fixed.setdefault("flops", np.asarray(log_flops, dtype=np.float64))

    def f(log_n: np.ndarray) -> np.ndarray:
        log_x = {"params": log_n, "tokens": log_c6 - log_n, **fixed}
        return law.log_loss(theta, log_x, ref, np)

    shape = np.broadcast_shapes(np.shape(log_c6), *(np.shape(v) for v in theta.values()),
                                *(np.shape(v) for v in fixed.values()))
    lo = np.broadcast_to(0.5 * log_c6 - 12.0, shape).astype(np.float64)
    hi = np.broadcast_to(0.5 * log_c6 + 12.0, shape).astype(np.float64)
    x1 = hi - _GOLDEN * (hi - lo)
    x2 = lo + _GOLDEN * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iterations):
        left = f1 <= f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        new = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        f_new = f(new)
        x2, f2, x1, f1 = (np.where(left, x1, new), np.where(left, f1, f_new),
                          np.where(left, new, x2), np.where(left, f_new, f2))
    return 0.5 * (lo + hi)


def log_sum_exp(terms: tuple[Array, ...], xp: ModuleType) -> Array:
    """log(Σ exp(term)), shifted by the largest term so nothing overflows.

    Written with exp and log rather than nested ``logaddexp``: numpy's float64 logaddexp is
    not vectorised and was 6x slower than exp on the (draws × points) arrays of forecasts.
    """
    if hasattr(xp, "log_sum_exp"):  # the fast path's tracer: one node, softmax gradient
        return xp.log_sum_exp(terms)
    shift = terms[0]
    for term in terms[1:]:
        shift = xp.maximum(shift, term)
    total = xp.exp(terms[0] - shift)
    for term in terms[1:]:
        total = total + xp.exp(term - shift)
    return shift + xp.log(total)


# -- shared default priors (published exponents and coefficients) ----------------------------

def exponent_prior() -> Prior:
    """LogNormal(log 0.3, 0.7): 94% of its mass in about [0.08, 1.1].

    Published exponents: Kaplan 0.076/0.095, Hoffmann 0.34/0.28, Epoch 0.35/0.37,
    Muennighoff 0.35.
    """
    return Prior("LogNormal", mu=math.log(0.3), sigma=0.7)


def coefficient_prior() -> Prior:
    """Normal(−1, 1.5) on the log of a reducible term at the reference scale, in loss units:
    exp(−1) ≈ 0.37 nats, 94% of the mass between about 0.02 and 6 nats."""
    return Prior("Normal", mu=-1.0, sigma=1.5)


def e_fraction_prior() -> Prior:
    """Beta(2, 1.5) on E / (smallest observed loss): Hoffmann ≈ 0.85, Epoch ≈ 0.9 on
    Chinchilla's runs, far below 1 for short curves; mean 0.57, the whole range allowed."""
    return Prior("Beta", alpha=2.0, beta=1.5)


def e_fraction_parameter() -> Parameter:
    """The irreducible loss E, sampled as a fraction of the smallest observed loss."""
    return Parameter("E_fraction", e_fraction_prior(), 0.0, 1.0, r"$E/L_{min}$",
                     "irreducible loss E as a fraction of the smallest observed loss")
