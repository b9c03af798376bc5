"""Exceptions and warnings raised by bayescale.

Every error a user can trigger with bad input derives from :class:`BayescaleError`, so a
caller can catch the package's errors without catching unrelated bugs.
"""

from __future__ import annotations

import os

#: Warnings skip the frames of the package's own files, so that a warning points at the
#: user's line whatever the depth of the call inside the package (``warnings.warn``'s
#: ``skip_file_prefixes``, Python ≥ 3.12).
PACKAGE_FILES = (os.path.dirname(os.path.abspath(__file__)) + os.sep,)

__all__ = [
    "BayescaleError",
    "RunDataError",
    "PriorError",
    "NotFittedError",
    "ModelMismatchError",
    "FitFileError",
    "ArgumentError",
    "ArgumentTypeError",
    "OutputPathError",
    "OutputExistsError",
    "OutputFolderMissingError",
    "SamplingError",
    "ConvergenceWarning",
    "NonFiniteWarning",
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


class ArgumentError(BayescaleError, ValueError):
    """An argument has the right type but a value outside what the call accepts.

    The message names the argument, the value given and what was expected.
    """


class ArgumentTypeError(BayescaleError, TypeError):
    """An argument has the wrong type (a string, boolean or complex number for a real, ...)."""


class OutputPathError(BayescaleError, OSError):
    """An output path cannot be written: missing or unwritable folder, a folder given as a file.

    Checked before any work starts, so a long fit is not lost to a bad ``-o``.
    """


class OutputExistsError(OutputPathError, FileExistsError):
    """The output exists and replacing it was not asked for (``overwrite=True`` / ``--force``)."""


class OutputFolderMissingError(OutputPathError, FileNotFoundError):
    """The folder an output should go into does not exist."""


class SamplingError(BayescaleError, RuntimeError):
    """The sampler could not run at all (no valid starting point, an internal panic).

    The message names the priors and data that make the log density non-finite.
    """


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (R-hat, ESS, divergences) say the posterior is unreliable."""


class NonFiniteWarning(UserWarning):
    """Some posterior draws give an infinite (overflowing) loss or compute at the inputs asked.

    Results stay finite or are ``inf`` where the quantity itself is infinite; never NaN.
    """


class ExtrapolationWarning(UserWarning):
    """A forecast lies far outside the compute range the law was fitted on."""


class DesignWarning(UserWarning):
    """The runs cannot identify some parameter well (e.g. a single model size)."""


class UnreachableTargetWarning(UserWarning):
    """A target loss cannot be reached with the asked confidence at any compute (E too high)."""
