"""Argument checks shared by the analysis calls, plotting, reports and the command line.

Every check raises an error that is both a :class:`~bayescale.BayescaleError` and the
built-in type a caller would expect (:class:`ArgumentError` is a ``ValueError``,
:class:`ArgumentTypeError` a ``TypeError``), and its message names the argument, the value
given and what was expected. Booleans, complex numbers and strings are not numbers here:
``True`` silently becoming 1.0 is how a wrong flag turns into a wrong forecast.

This module imports nothing of bayescale's but the exceptions, so every layer may use it.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import (ArgumentError, ArgumentTypeError, OutputExistsError,
                         OutputFolderMissingError, OutputPathError)

__all__ = ["real", "reals", "positive", "positives", "nonnegative", "nonnegatives",
           "probability", "probabilities", "integer", "seed", "choice", "mapping",
           "output_path", "axes", "SEED_MAX", "finite_or_none", "is_scalar"]

#: Largest accepted random seed (every sampler and numpy take 32-bit seeds).
SEED_MAX = 2**32 - 1

_EXPECT = {
    "real": "a finite number",
    "positive": "a finite positive number",
    "nonnegative": "a finite number >= 0",
    "probability": "a probability strictly between 0 and 1",
}


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _not_a_number(value: Any) -> str | None:
    """Why ``value`` (one element) is not a real number, or None when it is one."""
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, (complex, np.complexfloating)):
        return "a complex number"
    if isinstance(value, (str, bytes)):
        return "a string"
    if value is None:
        return "None"
    if not isinstance(value, (numbers.Real, np.number)):
        return f"a {type(value).__name__}"
    return None


def _as_floats(name: str, values: Any, expected: str) -> np.ndarray:
    """``values`` as a float64 array (any shape), refusing anything that is not real numbers."""
    if isinstance(values, (str, bytes, Mapping, set, frozenset)) or values is None or \
            isinstance(values, (bool, np.bool_, complex, np.complexfloating)):
        raise ArgumentTypeError(f"{name} = {_shown(values)} is {_not_a_number(values) or 'not a number'}: "
                                f"expected {expected}")
    if isinstance(values, (list, tuple)):
        for i, item in enumerate(values):
            if np.ndim(item) == 0 and (why := _not_a_number(item)):
                raise ArgumentTypeError(f"{name}[{i}] = {_shown(item)} is {why}: expected {expected}")
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ArgumentError(f"{name} = {_shown(values)} is not an array of numbers ({exc}): "
                            f"expected {expected}") from None
    kind = raw.dtype.kind
    if kind in "biuf":
        if kind == "b":
            raise ArgumentTypeError(f"{name} = {_shown(values)} holds booleans: expected {expected}")
        return raw.astype(np.float64, copy=False)
    if kind != "O":
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "M": "dates",
                "m": "time spans"}.get(kind, f"values of type {raw.dtype}")
        raise ArgumentTypeError(f"{name} = {_shown(values)} holds {what}: expected {expected}")
    out = np.empty(raw.shape, dtype=np.float64)
    for index, item in np.ndenumerate(raw):
        where = name if raw.ndim == 0 else f"{name}[{', '.join(map(str, index))}]"
        if why := _not_a_number(item):
            raise ArgumentTypeError(f"{where} = {_shown(item)} is {why}: expected {expected}")
        try:
            out[index] = float(item)
        except OverflowError:
            raise ArgumentError(f"{where} = {_shown(item)} is too large for a float64 "
                                f"(max ~1.8e308): expected {expected}") from None
    return out


def _check_values(name: str, array: np.ndarray, what: str, scalar: bool) -> None:
    """Raise for the first value outside ``what``: ``name[i] = v: must be ...`` for a
    sequence, ``name must be ..., got v`` for one number (and for probabilities)."""
    if what == "real":
        bad = ~np.isfinite(array)
    elif what == "positive":
        bad = ~(np.isfinite(array) & (array > 0))
    elif what == "nonnegative":
        bad = ~(np.isfinite(array) & (array >= 0))
    else:
        bad = ~((array > 0) & (array < 1))
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        value = float(array.reshape(-1)[i])
        if scalar or what == "probability":
            raise ArgumentError(f"{name} must be {_EXPECT[what]}, got {value!r}")
        raise ArgumentError(f"{name}[{i}] = {value!r}: must be {_EXPECT[what]}")


def reals(name: str, values: Any, what: str = "real", *, allow_empty: bool = True) -> np.ndarray:
    """A scalar or 1-D sequence of numbers as a float64 array of shape (n,).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    values : number or sequence of numbers
    what : {"real", "positive", "nonnegative", "probability"}
        What every value must be.
    allow_empty : bool
        Accept an empty sequence (giving an empty array).

    Raises
    ------
    ArgumentTypeError
        For booleans, complex numbers, strings, None or other non-numbers.
    ArgumentError
        For a value outside ``what``, an array of more than one dimension, or an empty one
        when ``allow_empty`` is False.
    """
    expected = _EXPECT[what]
    array = _as_floats(name, values, expected)
    scalar = array.ndim == 0
    array = np.atleast_1d(array)
    scalar = False  # a scalar is the sequence's element 0
    if array.ndim != 1:
        raise ArgumentError(f"{name} has shape {array.shape}: expected one number or a 1-D "
                            f"sequence of {expected.removeprefix('a ')}s")
    if not allow_empty and array.size == 0:
        raise ArgumentError(f"{name} is empty: expected at least one value ({expected})")
    _check_values(name, array, what, scalar)
    return array


def real(name: str, value: Any, what: str = "real") -> float:
    """One number as a float; ``what`` as in :func:`reals`."""
    expected = _EXPECT[what]
    array = _as_floats(name, value, expected)
    if array.ndim != 0 and array.size != 1:
        raise ArgumentError(f"{name} must be one number ({expected}; e.g. one band level), "
                            f"got {array.size} values: {_shown(value)}")
    array = array.reshape(())
    _check_values(name, array, what, True)
    return float(array)


def positive(name: str, value: Any) -> float:
    """One finite positive number."""
    return real(name, value, "positive")


def positives(name: str, values: Any, *, allow_empty: bool = True) -> np.ndarray:
    """Finite positive numbers as a 1-D float64 array."""
    return reals(name, values, "positive", allow_empty=allow_empty)


def nonnegative(name: str, value: Any) -> float:
    """One finite number ≥ 0."""
    return real(name, value, "nonnegative")


def nonnegatives(name: str, values: Any, *, allow_empty: bool = True) -> np.ndarray:
    """Finite numbers ≥ 0 as a 1-D float64 array."""
    return reals(name, values, "nonnegative", allow_empty=allow_empty)


def probability(name: str, value: Any) -> float:
    """One probability strictly between 0 and 1."""
    return real(name, value, "probability")


def probabilities(name: str, values: Any, *, allow_empty: bool = True) -> np.ndarray:
    """Probabilities strictly between 0 and 1 as a 1-D float64 array."""
    return reals(name, values, "probability", allow_empty=allow_empty)


def integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """A whole number (``int`` or numpy integer; not a bool or float) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        why = _not_a_number(value) or f"a {type(value).__name__}"
        raise ArgumentTypeError(f"{name} = {_shown(value)} is {why}: expected a whole number (int)")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"in [{low}, {high}]" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        raise ArgumentError(f"{name} must be an integer {bounds}, got {number!r}")
    return number


def seed(name: str, value: Any) -> int | None:
    """None, or a random seed: a whole number in [0, 2**32 − 1]."""
    if value is None:
        return None
    return integer(name, value, 0, SEED_MAX)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (compared exactly; a non-string is refused with a TypeError)."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be one of {choices}, got {_shown(value)} "
                                f"(a {type(value).__name__})")
    if value not in choices:
        raise ArgumentError(f"{name} must be one of {choices}, got {value!r}")
    return value


def mapping(name: str, value: Any, what: str = "a mapping (dict)") -> Mapping:
    """A mapping, or None as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} = {_shown(value)} is a {type(value).__name__}: expected {what}")
    return value


def axes(name: str, ax: Any) -> Any:
    """None or a matplotlib Axes (a Figure or an array of Axes is refused)."""
    if ax is None:
        return None
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        hint = " (use fig.add_subplot() or fig.axes[0])" if hasattr(ax, "add_subplot") else ""
        raise ArgumentTypeError(f"{name} = {_shown(ax)} is a {type(ax).__name__}: expected a "
                                f"matplotlib Axes{hint}")
    return ax


def output_path(path: Any, *, overwrite: bool, name: str = "path", directory: bool = False,
                force_hint: str = "overwrite=True (CLI: --force)") -> Path:
    """Check, before any work starts, that an output can be written at ``path``.

    The folder must exist and accept a new file (tested by creating and removing one, which
    also catches read-only and special file systems); ``path`` must not be a folder (or, with
    ``directory=True``, a file); an existing output needs ``overwrite``.

    Raises
    ------
    ArgumentTypeError
        When ``path`` is not a string or path-like.
    ArgumentError
        When ``path`` is empty.
    OutputExistsError
        When it exists and ``overwrite`` is False (a ``FileExistsError``).
    OutputFolderMissingError
        When the folder does not exist (a ``FileNotFoundError``).
    OutputPathError
        When the folder is not a folder or not writable, or ``path`` is a folder
        where a file is expected (or the reverse).
    """
    if isinstance(path, bool) or not isinstance(path, (str, PathLike)):
        raise ArgumentTypeError(f"{name} = {_shown(path)}: expected a file path (str or "
                                "pathlib.Path)")
    if str(os.fspath(path)).strip() == "":
        raise ArgumentError(f"{name} is empty: expected a file path such as 'fit.nc'")
    target = Path(path)
    kind = "folder" if directory else "file"
    if target.exists() or target.is_symlink():
        if target.is_dir() and not directory:
            raise OutputPathError(f"{name} = {str(target)!r} is a folder: expected a file path "
                                  "(give a file name inside it)")
        if directory and not target.is_dir():
            raise OutputPathError(f"{name} = {str(target)!r} is a file: expected a folder")
        if not overwrite:
            raise OutputExistsError(f"{str(target)!r} exists; pass {force_hint} to replace it")
    parent = target.parent
    if not parent.exists():
        raise OutputFolderMissingError(f"{name} = {str(target)!r}: directory {str(parent)!r} "
                                       "does not exist (create it first)")
    if not parent.is_dir():
        raise OutputPathError(f"{name} = {str(target)!r}: {str(parent)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{name} = {str(target)!r}: cannot write a {kind} in "
                              f"{str(parent)!r} ({exc.strerror or exc})") from None
    return target


def is_scalar(value: Any) -> bool:
    """True for one value (not a sequence); False for a ragged or other non-array input,
    which the checks then refuse with a clear message."""
    try:
        return np.ndim(value) == 0
    except (ValueError, TypeError):
        return False


def finite_or_none(value: Any) -> Any:
    """A JSON-ready scalar: NaN and ±inf become None, numpy scalars Python ones."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
