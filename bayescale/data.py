"""Loading and validating training runs: the boundary where bad input is caught.

A *run* is one trained model: its parameter count N (``params``), training tokens D
(``tokens``), training compute C in FLOPs (``flops``) and final loss (``loss``, nats/token or
any positive metric that falls with scale).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import RunDataError

__all__ = ["Runs", "load_runs", "STANDARD_COLUMNS", "STANDARD_INPUTS", "InputSpec",
           "register_input", "input_spec", "declared_inputs"]

STANDARD_COLUMNS = ("params", "tokens", "flops", "loss")
#: The inputs every run has (params and tokens may be NaN when only compute was given).
STANDARD_INPUTS = ("params", "tokens", "flops")


@dataclass(frozen=True)
class InputSpec:
    """A run column a law can read: its name and how to talk about it.

    Attributes
    ----------
    name : str
        Column name in :class:`Runs` and keyword of :func:`load_runs` (e.g. ``"unique_tokens"``).
    symbol : str
        Letter in formulas and messages (``"U"``).
    label, plural : str
        Words for messages and axes (``"unique token count"``, ``"unique token counts"``).
    unit : str
        Unit for axes (``"tokens"``).
    """

    name: str
    symbol: str
    label: str
    plural: str
    unit: str = ""


_INPUTS: dict[str, InputSpec] = {
    "params": InputSpec("params", "N", "model size", "model sizes", "parameters"),
    "tokens": InputSpec("tokens", "D", "token count", "token counts", "tokens"),
    "flops": InputSpec("flops", "C", "compute budget", "compute budgets", "FLOPs"),
}


def register_input(spec: InputSpec) -> None:
    """Declare an extra run column (laws do this for inputs beyond params/tokens/flops)."""
    if spec.name in (*STANDARD_COLUMNS, "source", "runs"):
        if _INPUTS.get(spec.name) == spec:
            return
        raise ValueError(f"input name {spec.name!r} is reserved")
    existing = _INPUTS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"input {spec.name!r} is already declared as {existing}; a second law "
                         "using it must declare the same InputSpec (or import it)")
    _INPUTS[spec.name] = spec


def input_spec(name: str) -> InputSpec:
    """The declaration of an input column."""
    try:
        return _INPUTS[name]
    except KeyError:
        raise KeyError(f"no input column {name!r} is declared; declared: {sorted(_INPUTS)}") from None


def declared_inputs() -> tuple[str, ...]:
    """Names of every declared input column (standard ones first)."""
    return tuple(_INPUTS)

# A flops column further than this factor from 6·N·D is probably in other units.
_FLOPS_MISMATCH_FACTOR = 2.0


@dataclass(frozen=True, eq=False)
class Runs:
    """Validated, immutable training runs.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns ``params``, ``tokens``, ``flops``, ``loss`` (float64), then any declared
        extra inputs that were loaded (e.g. ``unique_tokens``). ``params`` and ``tokens``
        are NaN when only compute was given.
    source : str
        Where the runs came from (a path or ``"DataFrame"``), for messages and reports.
    """

    frame: pd.DataFrame
    source: str = "DataFrame"
    extra: pd.DataFrame | None = field(default=None, repr=False)
    #: One label per run (object array of str or numbers) when loaded with ``group=``;
    #: the pooling models of :class:`bayescale.ScalingModel` read it.
    group: np.ndarray | None = field(default=None, repr=False)
    #: Name of the column the group labels came from.
    group_column: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        f = self.frame
        return (
            f"Runs(n={len(f)}, flops={f.flops.min():.3g}..{f.flops.max():.3g}, "
            f"loss={f.loss.min():.4g}..{f.loss.max():.4g}, source={self.source!r})"
        )

    @property
    def has_params_and_tokens(self) -> bool:
        """True when every run has both N and D (needed by laws of N and D)."""
        return bool(np.isfinite(self.frame["params"]).all() and np.isfinite(self.frame["tokens"]).all())

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Every input column of the frame: params, tokens, flops and declared extras."""
        return tuple(c for c in self.frame.columns if c != "loss")

    def available_inputs(self) -> tuple[str, ...]:
        """Input columns with a finite value for every run."""
        return tuple(c for c in self.input_columns
                     if np.isfinite(self.frame[c].to_numpy(dtype=np.float64)).all())

    def column(self, name: str) -> np.ndarray:
        """Return one column (standard or declared extra input) as a read-only float64 array."""
        if name not in STANDARD_COLUMNS and name not in self.frame.columns:
            raise KeyError(f"unknown column {name!r}; expected one of "
                           f"{(*STANDARD_COLUMNS, *self.input_columns[3:])}")
        values = self.frame[name].to_numpy(dtype=np.float64, copy=True)
        values.flags.writeable = False
        return values

    def subset(self, mask: np.ndarray | pd.Series) -> "Runs":
        """Return the runs where ``mask`` is true, as new validated :class:`Runs`."""
        mask = np.asarray(mask, dtype=bool)
        frame = self.frame.loc[mask].reset_index(drop=True)
        extra = None if self.extra is None else self.extra.loc[mask].reset_index(drop=True)
        group = None if self.group is None else self.group[mask]
        return Runs(frame=frame, source=self.source, extra=extra, group=group,
                    group_column=self.group_column)

    @property
    def group_names(self) -> tuple:
        """The distinct group labels (sorted when they can be; ``()`` without groups)."""
        if self.group is None:
            return ()
        return _group_order(self.group)

    def group_mask(self, name: object) -> np.ndarray:
        """True for the runs of group ``name`` (matched by value or by its text)."""
        if self.group is None:
            raise KeyError("these runs have no group column; load them with "
                           "load_runs(..., group='<column>')")
        labels = np.array([str(g) for g in self.group], dtype=object)
        return labels == str(name)

    def describe(self) -> pd.DataFrame:
        """Min, max and number of distinct values of each column, for reports."""
        f = self.frame
        rows = {}
        for name in self.frame.columns:
            col = f[name]
            if col.notna().any():
                rows[name] = {"min": col.min(), "max": col.max(), "distinct": col.nunique()}
        return pd.DataFrame(rows).T


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        if not path.exists():
            raise RunDataError(f"no such file: {str(path)!r}")
        if path.is_dir():
            raise RunDataError(f"{str(path)!r} is a directory, expected a CSV file")
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # e.g. name too long, embedded NUL, no permission
        if isinstance(exc, RunDataError):
            raise
        reason = getattr(exc, "strerror", None) or exc
        raise RunDataError(f"cannot read {str(path)!r}: {reason}") from exc
    return _parse_csv_bytes(raw, str(path))


def _parse_csv_bytes(raw: bytes, name: str) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RunDataError(f"{name}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from exc
    if not text.strip():
        raise RunDataError(f"{name}: the file is empty; expected a header row and one row per run")
    header = text.lstrip().splitlines()[0]
    # Excel in many locales writes semicolons; pick the separator the header uses.
    sep = ";" if header.count(";") > header.count(",") else ","
    try:
        # header=None: pandas would otherwise rename a repeated column ("loss.1") and treat
        # rows one field longer than the header as an index, silently shifting every column.
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            skipinitialspace=True, header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise RunDataError(f"{name}: cannot parse as CSV: {exc}") from exc
    frame = table.iloc[1:].reset_index(drop=True)
    frame.columns = ["" if isinstance(c, float) else str(c) for c in table.iloc[0]]
    frame.attrs["csv_line_offset"] = 2  # header is line 1, first data row is line 2
    return frame


def _row_label(frame: pd.DataFrame, position: int) -> str:
    offset = frame.attrs.get("csv_line_offset")
    if offset is not None:
        return f"row {position} (line {position + offset} of the file)"
    return f"row {frame.index[position]!r}"


def _numeric_column(frame: pd.DataFrame, source_name: str, standard_name: str, where: str) -> np.ndarray:
    column = frame[source_name]
    if isinstance(column, pd.DataFrame):
        raise RunDataError(f"{where}: column {source_name!r} appears {column.shape[1]} times; "
                           "keep one")
    values = np.empty(len(column), dtype=np.float64)
    for position, raw in enumerate(column.tolist()):
        label = _row_label(frame, position)
        if raw is None or raw is pd.NA or raw is pd.NaT:
            raise RunDataError(f"{where}: column {source_name!r}, {label}: missing value "
                               f"({raw}); drop the run or fill it in")
        if isinstance(raw, (bool, np.bool_)):
            raise RunDataError(f"{where}: column {source_name!r}, {label}: value {raw!r} is a "
                               "boolean, expected a number")
        if isinstance(raw, str):
            text = raw.strip()
            if text == "":
                raise RunDataError(f"{where}: column {source_name!r}, {label}: empty cell, "
                                   f"expected a number ({standard_name})")
            try:
                number = float(text)
            except ValueError:
                raise RunDataError(f"{where}: column {source_name!r}, {label}: value {raw!r} is "
                                   f"not a number ({standard_name}); write plain numbers such as "
                                   "7e10, without thousands separators or units") from None
        else:
            try:
                number = float(raw)
            except (TypeError, ValueError, OverflowError):
                raise RunDataError(f"{where}: column {source_name!r}, {label}: value {raw!r} is "
                                   f"not a number ({standard_name})") from None
        if math.isnan(number):
            raise RunDataError(f"{where}: column {source_name!r}, {label}: missing value (NaN); "
                               "drop the run or fill it in")
        if math.isinf(number):
            raise RunDataError(f"{where}: column {source_name!r}, {label}: value {raw!r} is "
                               "infinite or too large for a float")
        if number <= 0:
            raise RunDataError(f"{where}: column {source_name!r}, {label}: value {raw!r} must be "
                               f"positive ({standard_name} > 0)")
        values[position] = number
    return values


def load_runs(
    source: pd.DataFrame | str | PathLike[str],
    *,
    params: str | None = "params",
    tokens: str | None = "tokens",
    flops: str | None = "flops",
    loss: str = "loss",
    group: str | None = None,
    **inputs: str | None,
) -> Runs:
    """Load and validate training runs from a DataFrame or a CSV file.

    Parameters
    ----------
    source : pandas.DataFrame or path
        One row per training run. CSV files may be comma- or semicolon-separated and may
        start with a byte-order mark.
    params, tokens, flops, loss : str or None
        Names of the columns holding N (parameters), D (training tokens), C (training FLOPs)
        and the final loss. ``flops`` is derived as 6·N·D (in float64) when its column is
        absent; ``params`` and ``tokens`` may be absent when ``flops`` is present (only
        compute laws can then be fitted). Pass ``None`` to ignore a column.
    **inputs : str or None
        Declared extra inputs a law needs, as ``name=column``, e.g.
        ``unique_tokens="U"`` for the data-constrained law. Validated like the others
        (numbers, finite, positive); the names are those the registered laws declare.
    group : str, optional
        Column of group labels (data mix, model family, setting; strings or numbers), for
        the pooling models of :class:`~bayescale.ScalingModel` (``pooling="partial"``,
        ``"none"``). Every run needs a label; a group may hold few runs.

    Returns
    -------
    Runs
        Validated runs with the standard columns ``params``, ``tokens``, ``flops``, ``loss``.

    Raises
    ------
    RunDataError
        Naming the column, row and value when a column is missing or duplicated, a value is
        not a number, NaN, infinite or not positive, or the table has no rows.

    Warns
    -----
    UserWarning
        When a given flops column disagrees with 6·N·D by more than a factor of 2.
    """
    if isinstance(source, pd.DataFrame):
        frame = source
        where = "runs DataFrame"
        source_name = "DataFrame"
    elif isinstance(source, (str, PathLike)):
        path = Path(source)
        frame = _read_csv(path)
        where = str(path)
        source_name = str(path)
    else:
        raise TypeError(f"load_runs expects a pandas DataFrame or a CSV path, got {type(source).__name__}")

    columns = [str(c) for c in frame.columns]
    line_offset = frame.attrs.get("csv_line_offset")
    frame = frame.copy()
    frame.columns = columns
    if line_offset is not None:
        frame.attrs["csv_line_offset"] = line_offset
    if len(frame) == 0:
        raise RunDataError(f"{where}: no runs (the table has a header but no rows)")

    def present(name: str | None) -> bool:
        return name is not None and name in columns

    if not present(loss):
        raise RunDataError(f"{where}: missing column {loss!r} (the loss of each run); "
                           f"columns are {columns}")
    have_n, have_d, have_c = present(params), present(tokens), present(flops)
    if not have_c and not (have_n and have_d):
        missing = [repr(n) for n, ok in ((params, have_n), (tokens, have_d)) if not ok and n]
        raise RunDataError(
            f"{where}: missing column {' and '.join(missing) or repr(flops)}; need either "
            f"{params!r} and {tokens!r} (N and D) or {flops!r} (C); columns are {columns}")

    if group is not None and not present(group):
        raise RunDataError(f"{where}: missing column {group!r} (the group of each run, given "
                           f"as group={group!r}); columns are {columns}")
    extras = {}
    for name, column in inputs.items():
        if name in STANDARD_COLUMNS or name not in _INPUTS:
            known = [n for n in _INPUTS if n not in STANDARD_INPUTS]
            raise TypeError(f"load_runs got an unexpected keyword {name!r}; extra inputs the "
                            f"registered laws declare: {known or 'none'}")
        if column is None:
            continue
        if not present(column):
            raise RunDataError(f"{where}: missing column {column!r} ({_INPUTS[name].label}, "
                               f"given as {name}={column!r}); columns are {columns}")
        extras[name] = column

    n_rows = len(frame)
    loss_values = _numeric_column(frame, loss, "loss", where)
    n_values = _numeric_column(frame, params, "params", where) if have_n else np.full(n_rows, np.nan)
    d_values = _numeric_column(frame, tokens, "tokens", where) if have_d else np.full(n_rows, np.nan)
    if have_c:
        c_values = _numeric_column(frame, flops, "flops", where)
        if have_n and have_d:
            with np.errstate(over="ignore", under="ignore", divide="ignore"):
                implied = 6.0 * n_values * d_values
                ratio = c_values / implied
            bad = np.flatnonzero((ratio > _FLOPS_MISMATCH_FACTOR) | (ratio < 1 / _FLOPS_MISMATCH_FACTOR))
            if bad.size:
                first = int(bad[0])
                warnings.warn(
                    f"{where}: column {flops!r} disagrees with 6·N·D by more than "
                    f"{_FLOPS_MISMATCH_FACTOR:g}x in {bad.size} of {n_rows} rows (first: "
                    f"{_row_label(frame, first)}, flops={c_values[first]:.4g} vs "
                    f"6·N·D={implied[first]:.4g}); check the units of {flops!r}",
                    UserWarning, stacklevel=2)
    else:
        with np.errstate(over="ignore", under="ignore"):
            c_values = 6.0 * n_values * d_values
        bad = np.flatnonzero(~np.isfinite(c_values) | (c_values <= 0))
        if bad.size:
            first = int(bad[0])
            problem = "overflows" if np.isinf(c_values[first]) else "underflows to zero in"
            raise RunDataError(f"{where}: {_row_label(frame, first)}: 6·N·D {problem} float64 "
                               f"(params={n_values[first]:.4g}, tokens={d_values[first]:.4g})")

    standard = pd.DataFrame({"params": n_values, "tokens": d_values, "flops": c_values,
                             "loss": loss_values})
    for name, column in extras.items():
        standard[name] = _numeric_column(frame, column, name, where)
    used = {c for c in (params, tokens, flops, loss, group, *extras.values())
            if c is not None and c in columns}
    extra_cols = [c for c in columns if c not in used]
    extra = frame[extra_cols].reset_index(drop=True) if extra_cols else None
    labels = _group_column(frame, group, where) if group is not None else None
    return Runs(frame=standard, source=source_name, extra=extra, group=labels,
                group_column=group)


def _group_column(frame: pd.DataFrame, name: str, where: str) -> np.ndarray:
    """Validated group labels: strings (stripped) or finite numbers, none missing."""
    column = frame[name]
    if isinstance(column, pd.DataFrame):
        raise RunDataError(f"{where}: column {name!r} appears {column.shape[1]} times; keep one")
    labels = np.empty(len(column), dtype=object)
    for position, raw in enumerate(column.tolist()):
        label = _row_label(frame, position)
        if isinstance(raw, str):
            text = raw.strip()
            if text == "":
                raise RunDataError(f"{where}: column {name!r}, {label}: empty group label; "
                                   "give every run a group (a name or a number)")
            labels[position] = text
            continue
        if raw is None or raw is pd.NA or raw is pd.NaT or (
                isinstance(raw, (float, np.floating)) and math.isnan(raw)):
            raise RunDataError(f"{where}: column {name!r}, {label}: missing group label "
                               f"({raw}); give every run a group (a name or a number)")
        if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, float, np.integer,
                                                                     np.floating)):
            raise RunDataError(f"{where}: column {name!r}, {label}: group label {raw!r} is a "
                               f"{type(raw).__name__}, expected a string or a number")
        if isinstance(raw, (float, np.floating)) and math.isinf(raw):
            raise RunDataError(f"{where}: column {name!r}, {label}: group label {raw!r} is "
                               "infinite")
        labels[position] = raw.item() if isinstance(raw, np.generic) else raw
    return labels


def _group_order(labels: np.ndarray) -> tuple:
    """Distinct labels, sorted when comparable, else in order of first appearance."""
    distinct = list(dict.fromkeys(labels.tolist()))
    try:
        return tuple(sorted(distinct))
    except TypeError:
        return tuple(distinct)


def runs_from_arrays(**columns: Any) -> Runs:
    """Build :class:`Runs` from arrays (``params``, ``tokens``, ``flops``, ``loss`` and any
    declared extra input such as ``unique_tokens``)."""
    extras = {k: k for k in columns if k not in STANDARD_COLUMNS}
    return load_runs(pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in columns.items()}),
                     **extras)
