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

from .exceptions import PACKAGE_FILES, RunDataError

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
    #: Downstream outcomes (issue 16): columns ``metric`` (accuracy in [0, 1]) and/or
    #: ``task_loss`` (a positive task loss), one row per run; None when not loaded.
    outcomes: pd.DataFrame | None = field(default=None, repr=False)
    #: The user's column names of the outcomes, e.g. {"metric": "mmlu_acc"}, for labels.
    outcome_names: dict[str, str] | None = field(default=None, repr=False)
    #: Learning curves: the id of the run each row (checkpoint) belongs to, as strings, or
    #: None when every row is its own run (final points). Set by ``load_runs(run=...)``.
    run: np.ndarray | None = field(default=None, repr=False)
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
        outcomes = (None if self.outcomes is None
                    else self.outcomes.loc[mask].reset_index(drop=True))
        run = None if self.run is None else self.run[mask]
        group = None if self.group is None else self.group[mask]
        return Runs(frame=frame, source=self.source, extra=extra, outcomes=outcomes,
                    outcome_names=self.outcome_names, run=run, group=group,
                    group_column=self.group_column)

    @property
    def has_metric(self) -> bool:
        """True when the runs carry a downstream metric (``load_runs(..., metric=)``)."""
        return self.outcomes is not None and "metric" in self.outcomes.columns

    def outcome(self, name: str) -> np.ndarray:
        """The ``"metric"`` or ``"task_loss"`` column as a read-only float64 array."""
        if self.outcomes is None or name not in self.outcomes.columns:
            given = [] if self.outcomes is None else list(self.outcomes.columns)
            raise KeyError(f"the runs carry no {name!r} column (loaded: {given or 'none'}); "
                           f"load them with load_runs(..., {name}=<column>)")
        values = self.outcomes[name].to_numpy(dtype=np.float64, copy=True)
        values.flags.writeable = False
        return values

    @property
    def has_curves(self) -> bool:
        """True when a run column was given and some run has more than one row."""
        return self.run is not None and len(np.unique(self.run)) < len(self.run)

    def run_ids(self) -> np.ndarray:
        """The run id of every row: the ``run`` column, or ``"0"``, ``"1"``, ... (one run per
        row) when none was given."""
        if self.run is not None:
            return self.run
        return np.array([str(i) for i in range(len(self.frame))], dtype=object)

    def final_points(self) -> "Runs":
        """One row per run: its last checkpoint (the row with the most tokens)."""
        if self.run is None:
            return self
        last = pd.Series(np.arange(len(self.frame))).groupby(self.run, sort=False).max()
        mask = np.zeros(len(self.frame), dtype=bool)
        mask[last.to_numpy()] = True
        return self.subset(mask)

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
    metric: str | None = None,
    task_loss: str | None = None,
    run: str | None = None,
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
    metric : str, optional
        Column of a downstream metric per run, e.g. ``"mmlu_acc"``: an accuracy in [0, 1]
        (a percentage is refused, not rescaled). Fitted by ``ScalingModel(..., link="sigmoid")``.
    task_loss : str, optional
        Column of a task loss per run (e.g. ``"mmlu_bpb"``, bits per byte of the correct
        answers): positive. With a metric, the linked model's first step fits the law to this
        loss instead of ``loss``.
    run : str, optional
        Learning curves: the column naming the run each row belongs to. Each row is then one
        checkpoint (``tokens`` = tokens seen so far, ``loss`` = the loss there); a run's rows
        must be in training order (tokens strictly increasing) and share one ``params``. One
        row per run is fine (final points). :class:`bayescale.CurveModel` fits such data.
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
                    UserWarning, skip_file_prefixes=PACKAGE_FILES)
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
    outcomes, outcome_names = _load_outcomes(frame, where, columns, metric, task_loss)
    used |= set(outcome_names.values())
    run_ids = None
    if run is not None:
        run_ids = _run_column(frame, run, standard, where, columns)
        used.add(run)
    extra_cols = [c for c in columns if c not in used]
    extra = frame[extra_cols].reset_index(drop=True) if extra_cols else None
    labels = _group_column(frame, group, where) if group is not None else None
    return Runs(frame=standard, source=source_name, extra=extra, outcomes=outcomes,
                outcome_names=outcome_names or None, run=run_ids, group=labels,
                group_column=group)


def _load_outcomes(frame: pd.DataFrame, where: str, columns: list[str], metric: str | None,
                   task_loss: str | None) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """The downstream columns (issue 16): a metric in [0, 1] and a positive task loss."""
    names: dict[str, str] = {}
    values: dict[str, np.ndarray] = {}
    for key, column in (("metric", metric), ("task_loss", task_loss)):
        if column is None:
            continue
        if not isinstance(column, str):
            raise TypeError(f"load_runs: {key} must be a column name (str), got "
                            f"{type(column).__name__}")
        if column not in columns:
            raise RunDataError(f"{where}: missing column {column!r} (the {key.replace('_', ' ')} "
                               f"of each run, given as {key}={column!r}); columns are {columns}")
        names[key] = column
    if "task_loss" in names:
        values["task_loss"] = _numeric_column(frame, names["task_loss"], "task_loss", where)
    if "metric" in names:
        values["metric"] = _metric_column(frame, names["metric"], where)
    if not values:
        return None, names
    return pd.DataFrame(values), names


def _metric_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A metric column: numbers in [0, 1], the row named on error."""
    series = frame[column]
    if isinstance(series, pd.DataFrame):
        raise RunDataError(f"{where}: column {column!r} appears {series.shape[1]} times; keep one")
    out = np.empty(len(series), dtype=np.float64)
    for position, raw in enumerate(series.tolist()):
        label = _row_label(frame, position)
        text = raw.strip() if isinstance(raw, str) else raw
        if isinstance(raw, (bool, np.bool_)) or text is None or text == "":
            raise RunDataError(f"{where}: column {column!r}, {label}: value {raw!r} is not a "
                               "number; expected an accuracy in [0, 1]")
        try:
            number = float(text)
        except (TypeError, ValueError):
            raise RunDataError(f"{where}: column {column!r}, {label}: value {raw!r} is not a "
                               "number; expected an accuracy in [0, 1]") from None
        if not (0.0 <= number <= 1.0):  # also catches NaN
            hint = (" (a percentage? divide by 100)" if 1.0 < number <= 100.0 else "")
            raise RunDataError(f"{where}: column {column!r}, {label}: value {raw!r} is outside "
                               f"[0, 1]; expected an accuracy in [0, 1]{hint}")
        out[position] = number
    return out


#: Consecutive checkpoints of a run whose tokens differ by less than this relative amount
#: count as the same checkpoint logged twice.
REPEAT_TOLERANCE = 1e-9


def _run_column(frame: pd.DataFrame, run: str, standard: pd.DataFrame, where: str,
                columns: list[str]) -> np.ndarray:
    """Validated run ids (strings) for ``load_runs(run=...)``: every row has one, and within
    a run the tokens increase row by row and params stay the same."""
    if not isinstance(run, str):
        raise TypeError(f"load_runs: run= must be a column name (str), got {type(run).__name__}")
    if run not in columns:
        raise RunDataError(f"{where}: missing column {run!r} (the run each checkpoint belongs "
                           f"to, given as run={run!r}); columns are {columns}")
    raw = frame[run]
    if isinstance(raw, pd.DataFrame):
        raise RunDataError(f"{where}: column {run!r} appears {raw.shape[1]} times; keep one")
    ids = np.empty(len(raw), dtype=object)
    for position, value in enumerate(raw.tolist()):
        missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
        text = "" if missing else str(value).strip()
        if text == "":
            raise RunDataError(f"{where}: column {run!r}, {_row_label(frame, position)}: missing "
                               "run id; every checkpoint needs the id of the run it belongs to")
        ids[position] = text
    tokens = standard["tokens"].to_numpy()
    params = standard["params"].to_numpy()
    if not np.isfinite(tokens).all():
        raise RunDataError(f"{where}: run={run!r} needs a tokens column (tokens seen at each "
                           "checkpoint); learning curves are indexed by tokens")
    positions = pd.Series(np.arange(len(ids))).groupby(ids, sort=False)
    for name, rows in positions:
        rows = rows.to_numpy()
        if rows.size < 2:
            continue
        t = tokens[rows]
        # a repeat up to rounding (one part in 10⁹) is a repeat: the curve model's AR(1)
        # term needs a gap in log tokens between checkpoints
        bad = np.flatnonzero(t[1:] <= t[:-1] * (1.0 + REPEAT_TOLERANCE))
        if bad.size:
            k = int(bad[0])
            verb = ("go down" if t[k + 1] < t[k] else "repeat" if t[k + 1] == t[k] else
                    f"repeat (to within one part in {1 / REPEAT_TOLERANCE:.0e})")
            raise RunDataError(
                f"{where}: run {name!r}: tokens {verb} from {t[k]:.6g} at "
                f"{_row_label(frame, int(rows[k]))} to {t[k + 1]:.6g} at "
                f"{_row_label(frame, int(rows[k + 1]))}; a run's checkpoints must be in "
                "training order with tokens seen increasing (sort by step, drop repeated "
                "checkpoints, or check the run ids)")
        p = params[rows]
        if np.isfinite(p).all() and np.ptp(p) > 0:
            k = int(np.flatnonzero(p != p[0])[0])
            raise RunDataError(
                f"{where}: run {name!r}: params changes from {p[0]:.6g} at "
                f"{_row_label(frame, int(rows[0]))} to {p[k]:.6g} at "
                f"{_row_label(frame, int(rows[k]))}; one run trains one model, so its rows "
                "must share one params (are two runs under one id?)")
    return ids


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
