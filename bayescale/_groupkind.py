"""How each law parameter varies between groups under partial pooling (one rule, used by the
PyMC model in :mod:`bayescale.model` and the generated kernel in :mod:`bayescale._fastgroups`)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["group_kind"]


def group_kind(law: Any, name: str) -> str:
    """How a parameter varies between groups: ``"log"`` (positive: log value = population
    log value + sd·z), ``"linear"`` (value = population value + sd·z) or ``"shared"``."""
    if name == "E_fraction":
        return "log"   # E_g = E_pop·exp(sd·z): log E per group
    if name == "sigma":
        return "log"   # the noise scale, when it varies between groups
    lower, upper = law.parameter_domains[name]
    if lower == 0.0 and upper == math.inf:
        return "log"
    if lower == -math.inf and upper == math.inf:
        return "linear"
    return "shared"
