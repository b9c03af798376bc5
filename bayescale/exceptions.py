"""Exceptions and warnings raised by bayescale.

Every error a user can trigger with bad input derives from :class:`BayescaleError`, so a
caller can catch the package's errors without catching unrelated bugs.
"""

from __future__ import annotations

__all__ = [
    "BayescaleError",
    "RunDataError",
    "PriorError",
    "NotFittedError",
    "ModelMismatchError",
    "FitFileError",
    "ConvergenceWarning",
    "ExtrapolationWarning",
    "DesignWarning",
    "UnreachableTargetWarning",
]


class BayescaleError(Exception):
    """Base class of every error bayescale raises on purpose."""


class RunDataError(BayescaleError, ValueError):
    """The training runs given to bayescale are malformed (names column, row and value)."""


class PriorError(BayescaleError, ValueError):
    """A prior specification is invalid for the parameter it is attached to."""


class NotFittedError(BayescaleError, RuntimeError):
    """An operation needs a fitted posterior but none is available."""


class ModelMismatchError(BayescaleError, ValueError):
    """Inputs do not match the law (e.g. params/tokens asked of a compute-only law)."""


class FitFileError(BayescaleError, OSError):
    """A saved fit cannot be read: missing, truncated, corrupted or not written by bayescale."""


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (R-hat, ESS, divergences) say the posterior is unreliable."""


class ExtrapolationWarning(UserWarning):
    """A forecast lies far outside the compute range the law was fitted on."""


class DesignWarning(UserWarning):
    """The runs cannot identify some parameter well (e.g. a single model size)."""


class UnreachableTargetWarning(UserWarning):
    """A target loss cannot be reached with the asked confidence at any compute (E too high)."""
