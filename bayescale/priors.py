"""Prior specifications: small, JSON-serialisable descriptions of distributions.

A :class:`Prior` names a distribution and its parameters; :mod:`bayescale.model` turns it into
a PyMC random variable. Keeping priors as plain data lets a saved fit record exactly which
priors produced it, and lets the analysis code stay free of PyMC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import PriorError

__all__ = ["Prior", "SUPPORTED_DISTRIBUTIONS", "priors_to_json", "priors_from_json",
           "default_noise_priors"]

# Distribution name -> (required parameter names, support as (lower, upper)).
SUPPORTED_DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "Normal": (("mu", "sigma"), (-math.inf, math.inf)),
    "StudentT": (("nu", "mu", "sigma"), (-math.inf, math.inf)),
    "LogNormal": (("mu", "sigma"), (0.0, math.inf)),
    "HalfNormal": (("sigma",), (0.0, math.inf)),
    "HalfStudentT": (("nu", "sigma"), (0.0, math.inf)),
    "Exponential": (("lam",), (0.0, math.inf)),
    "Gamma": (("alpha", "beta"), (0.0, math.inf)),
    "Beta": (("alpha", "beta"), (0.0, 1.0)),
    "Uniform": (("lower", "upper"), (math.nan, math.nan)),
    "TruncatedNormal": (("mu", "sigma", "lower", "upper"), (math.nan, math.nan)),
    "Fixed": (("value",), (math.nan, math.nan)),
}

_POSITIVE_PARAMETERS = {"sigma", "nu", "lam", "alpha", "beta"}


@dataclass(frozen=True)
class Prior:
    """A prior distribution for one model parameter.

    Parameters
    ----------
    dist : str
        One of :data:`SUPPORTED_DISTRIBUTIONS` (PyMC's names), or ``"Fixed"`` for a constant.
    **params : float
        The distribution's parameters, e.g. ``Prior("Normal", mu=0.0, sigma=1.0)``.

    Examples
    --------
    >>> Prior("LogNormal", mu=-1.2, sigma=0.7)
    Prior('LogNormal', mu=-1.2, sigma=0.7)
    """

    dist: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __init__(self, dist: str, **params: float) -> None:
        if dist not in SUPPORTED_DISTRIBUTIONS:
            raise PriorError(f"unknown prior distribution {dist!r}; supported: "
                             f"{sorted(SUPPORTED_DISTRIBUTIONS)}")
        required, _ = SUPPORTED_DISTRIBUTIONS[dist]
        missing = [p for p in required if p not in params]
        unknown = [p for p in params if p not in required]
        if missing or unknown:
            raise PriorError(f"{dist} prior takes parameters {list(required)}; "
                             f"missing {missing}, unknown {unknown}")
        clean: dict[str, float] = {}
        for key in required:
            try:
                value = float(params[key])
            except (TypeError, ValueError):
                raise PriorError(f"{dist} prior: {key}={params[key]!r} is not a number") from None
            if not math.isfinite(value):
                raise PriorError(f"{dist} prior: {key}={value} must be finite")
            if key in _POSITIVE_PARAMETERS and dist != "Fixed" and value <= 0:
                raise PriorError(f"{dist} prior: {key}={value} must be positive")
            clean[key] = value
        if dist in ("Uniform", "TruncatedNormal") and not clean["lower"] < clean["upper"]:
            raise PriorError(f"{dist} prior: lower={clean['lower']} must be below upper={clean['upper']}")
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "params", clean)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"Prior({self.dist!r}, {args})"

    def __hash__(self) -> int:
        return hash((self.dist, tuple(sorted(self.params.items()))))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prior) and self.dist == other.dist and dict(self.params) == dict(other.params)

    @property
    def support(self) -> tuple[float, float]:
        """The interval (lower, upper) where the prior puts mass."""
        if self.dist in ("Uniform", "TruncatedNormal"):
            return self.params["lower"], self.params["upper"]
        if self.dist == "Fixed":
            return self.params["value"], self.params["value"]
        return SUPPORTED_DISTRIBUTIONS[self.dist][1]

    def check_support(self, name: str, lower: float, upper: float) -> None:
        """Raise :class:`PriorError` unless the prior's support lies inside [lower, upper]."""
        lo, hi = self.support
        inside = lo >= lower and hi <= upper
        if self.dist == "Fixed":
            inside = lower < lo < upper or (lo == lower == upper)
        if not inside:
            hint = ""
            if lower == 0.0 and upper == math.inf:
                hint = "; use a positive prior such as LogNormal, HalfNormal or TruncatedNormal with lower=0"
            elif (lower, upper) == (0.0, 1.0):
                hint = "; use Beta or TruncatedNormal with lower=0, upper=1"
            raise PriorError(f"prior for {name!r} is {self!r} with support [{lo:g}, {hi:g}], "
                             f"but {name} must lie in ({lower:g}, {upper:g}){hint}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``{"dist": ..., "params": {...}}``."""
        return {"dist": self.dist, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Prior":
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["dist"], **dict(data["params"]))
        except (KeyError, TypeError) as exc:
            raise PriorError(f"not a prior specification: {data!r}") from exc


def priors_to_json(priors: Mapping[str, Prior]) -> str:
    """Serialise a mapping of parameter name to :class:`Prior` as sorted JSON."""
    return json.dumps({name: prior.to_dict() for name, prior in priors.items()}, sort_keys=True)


def priors_from_json(text: str) -> dict[str, Prior]:
    """Inverse of :func:`priors_to_json`."""
    return {name: Prior.from_dict(spec) for name, spec in json.loads(text).items()}


def default_noise_priors(likelihood: str) -> dict[str, Prior]:
    """Priors of the noise on log loss: scale ``sigma`` and, for Student-t, degrees ``nu``.

    Repeated runs of one configuration differ by about 0.5–2% in loss, so HalfNormal(0.1)
    on log loss is weak. ``nu`` is fixed at 4: heavy enough tails to shrug off a digitising
    slip or a diverged run (the role the Huber loss plays in Hoffmann et al. and Epoch),
    without the sampling cost of a free ``nu``. Override with e.g. ``Prior("Gamma", alpha=2,
    beta=0.1)``.
    """
    priors = {"sigma": Prior("HalfNormal", sigma=0.1)}
    if likelihood == "student_t":
        priors["nu"] = Prior("Fixed", value=4.0)
    return priors
