"""Scaling laws: one file per law, each registered by being defined.

See :mod:`bayescale.laws.base` for how to add one. Every module of this package except
``base`` and private ones (``_*``) is a law file and is imported here, so a new file is found
without editing anything else and ``bs.available_laws()`` lists it as soon as bayescale is
imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (COMPUTE_OPTIMAL, LAWS, PaperParameter, Parameter, PowerTerm, ScalingLaw,
                   Simulation, available_laws, get_law, log_sum_exp, register, registered_laws)

#: The law modules found in this package, in name order (each registers its law).
BUILTIN_MODULES = tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                               if info.name != "base" and not info.name.startswith("_")))

for _module in BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

from .chinchilla import ChinchillaLaw  # noqa: E402
from .compute import ComputeLaw  # noqa: E402

__all__ = ["ScalingLaw", "Parameter", "PaperParameter", "PowerTerm", "Simulation",
           "COMPUTE_OPTIMAL", "LAWS", "ChinchillaLaw", "ComputeLaw", "available_laws",
           "get_law", "register", "registered_laws", "log_sum_exp"]
