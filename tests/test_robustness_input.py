"""Property tests of load_runs: hostile tables either load into valid runs or raise RunDataError.

Each generated cell carries the value it *should* load as (or ``None`` when no honest loader
would accept it), so the tests check the outcome exactly — right values in the right columns,
or an error — not merely that nothing crashed. Run with ``--hypothesis-show-statistics`` to
see how many inputs each property tried.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis import given

import bayescale as bs
from bayescale import RunDataError

settings.register_profile(
    "bayescale-robustness",
    max_examples=400,
    derandomize=True,  # the same examples on every run, so CI never flakes
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROBUST = settings.get_profile("bayescale-robustness")

#: Inputs tried per property (printed at the end of the module with ``-s``).
TRIED: Counter[str] = Counter()

COLUMNS = ("params", "tokens", "flops", "loss")

# -- cells: (value as it sits in the table, the float it must load as, or None if invalid) --

positive_floats = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False,
                            allow_infinity=False)
valid_cells = st.one_of(
    positive_floats.map(lambda x: (x, x)),
    st.integers(min_value=1, max_value=10**30).map(lambda i: (i, float(i))),
    positive_floats.map(lambda x: (repr(x), x)),                       # "3.25"
    positive_floats.map(lambda x: (f"  {x:.6e} ", float(f"{x:.6e}"))),  # padded, scientific
    st.integers(min_value=1, max_value=10**18).map(lambda i: (np.int64(i), float(i))),
    st.floats(min_value=1e-20, max_value=1e20).map(
        lambda x: (np.float32(x), float(np.float32(x)))),
)
invalid_cells = st.one_of(
    st.sampled_from([
        "abc", "", "   ", "1,000", "1.000,5", "1 000", "2e9 tokens", "7B", "1e400", "-1e400",
        "inf", "-inf", "nan", "NaN", "NA", "null", "None", "-0", "-0.0", "0", "0.0", "-3.5",
        "True", "0x10", "1e", "--1", "½",
    ]),
    st.sampled_from([None, True, False, np.True_, float("nan"), float("inf"), -float("inf"),
                     0, 0.0, -0.0, -1, -2.5, 10**400, -(10**400), pd.NA, complex(1, 1),
                     [1.0], {"a": 1}, b"\xff"]),
    st.floats(max_value=0.0, allow_nan=False).map(lambda x: x),       # zero, negatives, -inf
    st.integers(max_value=0),
).map(lambda v: (v, None))
any_cell = st.one_of(valid_cells, valid_cells, invalid_cells)         # mostly valid rows
junk_cell = st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.none(),
                      st.booleans()).map(lambda v: (v, None))


extreme_cells = st.sampled_from([5e-324, 1e-310, 1e-200, 1e-160, 1e160, 1e200, 1.7e308]).map(
    lambda x: (x, x))


@st.composite
def tables(draw, cells=any_cell, valid=valid_cells, max_rows=6):
    """A header (standard names, extras, possibly repeated) and rows of tagged cells.

    A third of the tables are all valid cells (so duplicated or missing columns, extreme
    magnitudes and 6·N·D overflow get exercised), a third have one bad cell, a third are mixed.
    """
    names = draw(st.lists(st.sampled_from(COLUMNS + ("notes", "step")), min_size=1, max_size=6))
    n_rows = draw(st.integers(min_value=0, max_value=max_rows))
    mode = draw(st.sampled_from(["clean", "one bad", "mixed"]))
    good = st.one_of(valid, valid, valid, extreme_cells)
    rows = [[draw(cells if mode == "mixed" else good) for _ in names] for _ in range(n_rows)]
    if mode == "one bad" and rows:
        i = draw(st.integers(0, n_rows - 1))
        j = draw(st.integers(0, len(names) - 1))
        rows[i][j] = draw(cells)
    return names, rows


def expected_outcome(names, rows):
    """The runs frame a correct loader must return, or None when it must raise RunDataError."""
    counts = Counter(names)
    present = {c for c in COLUMNS if c in counts}
    if not rows or "loss" not in present:
        return None
    if "flops" not in present and not {"params", "tokens"} <= present:
        return None
    if any(counts[c] > 1 for c in present):
        return None
    values = {}
    for name in present:
        column = [row[names.index(name)][1] for row in rows]
        if any(v is None for v in column):
            return None
        values[name] = np.array(column, dtype=np.float64)
    n = len(rows)
    params = values.get("params", np.full(n, np.nan))
    tokens = values.get("tokens", np.full(n, np.nan))
    if "flops" in values:
        flops = values["flops"]
    else:
        with np.errstate(over="ignore", under="ignore"):
            flops = 6.0 * params * tokens
        if not (np.isfinite(flops) & (flops > 0)).all():
            return None
    return pd.DataFrame({"params": params, "tokens": tokens, "flops": flops, "loss": values["loss"]})


def frame_of(names, rows, raw=lambda cell: cell[0]):
    return pd.DataFrame([[raw(cell) for cell in row] for row in rows], columns=names,
                        dtype=object if rows else None)


def load(source) -> tuple[str, object]:
    """Call load_runs; return ("runs", Runs) or ("error", message). Anything else propagates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            runs = bs.load_runs(source)
        except RunDataError as exc:
            outcome = ("error", str(exc))
        else:
            outcome = ("runs", runs)
    noisy = [w for w in caught if not (w.category is UserWarning and "6·N·D" in str(w.message))]
    assert not noisy, [f"{w.category.__name__}: {w.message}" for w in noisy]
    if outcome[0] == "error":
        assert len(outcome[1]) > 10
    else:
        assert_valid_runs(outcome[1])
    return outcome


def assert_valid_runs(runs: bs.Runs) -> None:
    frame = runs.frame
    assert list(frame.columns) == list(COLUMNS)
    assert (frame.dtypes == np.float64).all()
    assert len(frame) >= 1
    for name in ("flops", "loss"):
        assert (np.isfinite(frame[name]) & (frame[name] > 0)).all(), name
    for name in ("params", "tokens"):
        column = frame[name].to_numpy()
        assert np.isnan(column).all() or (np.isfinite(column) & (column > 0)).all(), name


def assert_matches(outcome, expected) -> None:
    kind, value = outcome
    if expected is None:
        assert kind == "error", f"loaded runs that should have been rejected:\n{value.frame}"
    else:
        assert kind == "runs", f"rejected valid runs: {value}"
        pd.testing.assert_frame_equal(value.frame, expected, check_exact=True)


# -- properties ------------------------------------------------------------------------------

@ROBUST
@given(tables())
def test_dataframes_load_exactly_or_raise(table):
    TRIED["DataFrame of mixed cells"] += 1
    names, rows = table
    assert_matches(load(frame_of(names, rows)), expected_outcome(names, rows))


@ROBUST
@given(tables(cells=st.one_of(any_cell, junk_cell)))
def test_dataframes_with_pandas_inferred_dtypes(table):
    """Columns as pandas infers them (int64, float64, bool, object with None or huge ints)."""
    TRIED["DataFrame, inferred dtypes"] += 1
    names, rows = table
    if len(set(names)) != len(names):
        frame = frame_of(names, rows)
    else:
        frame = pd.DataFrame({name: [row[i][0] for row in rows] for i, name in enumerate(names)})
    load(frame)


def csv_bytes(names, rows, sep, newline, bom, cell_text=lambda cell: cell[0]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator=newline)
    writer.writerow(names)
    for row in rows:
        writer.writerow([cell_text(cell) for cell in row])
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode("utf-8")


string_valid = st.one_of(
    positive_floats.map(lambda x: (repr(x), x)),                       # "3.25"
    positive_floats.map(lambda x: (f"  {x:.6e} ", float(f"{x:.6e}"))),  # padded, scientific
    st.integers(min_value=1, max_value=10**30).map(lambda i: (str(i), float(i))),
    st.sampled_from(["5e-324", "1e-200", "1e160", "1e200", "1.7e308"]).map(lambda x: (x, float(x))),
)
string_invalid = st.one_of(
    st.sampled_from(["abc", "", "   ", "1,000", "1.000,5", "1 000", "2e9 tokens", "7B", "1e400",
                     "-1e400", "inf", "nan", "NA", "None", "-0", "-0.0", "0", "-3.5", "True",
                     "0x10", "1e", "½", "1,5", "1;5", '"3"', "3\n4", "3\r\n4"]),
    st.text(max_size=6).filter(lambda t: not _is_positive_number(t)),
).map(lambda v: (v, None))


def _is_positive_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@ROBUST
@given(table=tables(cells=st.one_of(string_valid, string_valid, string_invalid), valid=string_valid).filter(lambda t: len(t[0]) >= 2),
       sep=st.sampled_from([",", ";"]), newline=st.sampled_from(["\n", "\r\n", "\r"]),
       bom=st.booleans(), ragged=st.sampled_from([None, None, "extra field", "trailing separator"]))
def test_csv_files_load_exactly_or_raise(scratch, table, sep, newline, bom, ragged):
    """Comma/semicolon, CRLF or CR line ends, BOM, quoted separators: same as the DataFrame.

    ``ragged`` makes the first data row one field longer than the header (a stray value, or
    the trailing separator some exporters write): that must be an error, never a shift.
    """
    TRIED["CSV of mixed cells"] += 1
    names, rows = table
    text = csv_bytes(names, rows, sep, newline, bom).decode("utf-8")
    expected = expected_outcome(names, rows)
    if ragged and rows:
        header, first, rest = text.split(newline, 2)
        first = f"7{sep}{first}" if ragged == "extra field" else f"{first}{sep}"
        text = newline.join([header, first, rest])
        expected = None
    path = scratch / "runs.csv"
    path.write_bytes(text.encode("utf-8"))
    assert_matches(load(path), expected)


@ROBUST
@given(text=st.text(alphabet=st.sampled_from(list("params tokens flops loss,;\"\n\r\t.e+-0123456789x\ufeff")),
                    max_size=120))
def test_arbitrary_csv_text_never_crashes(scratch, text):
    TRIED["arbitrary CSV-like text"] += 1
    path = scratch / "text.csv"
    path.write_text(text, encoding="utf-8", newline="")
    load(path)


@ROBUST
@given(header=st.sampled_from(["params,tokens,loss\n", "flops;loss\n", "loss,flops,params,tokens\n"]),
       body=st.binary(max_size=80))
def test_arbitrary_bytes_never_crash(scratch, header, body):
    TRIED["arbitrary bytes after a header"] += 1
    path = scratch / "bytes.csv"
    path.write_bytes(header.encode() + body)
    load(path)


@ROBUST
@given(n=st.integers(min_value=1, max_value=10**200), d=st.integers(min_value=1, max_value=10**200))
def test_six_n_d_overflow_is_an_error_not_inf(n, d):
    """Integer N and D whose product overflows int64 or float64: exact float, or an error."""
    TRIED["huge integer N and D"] += 1
    outcome = load(pd.DataFrame({"params": [n], "tokens": [d], "loss": [2.0]}, dtype=object))
    product = 6.0 * float(n) * float(d) if max(n, d) < 10**308 else math.inf
    if math.isfinite(product):
        assert outcome[0] == "runs"
        assert outcome[1].frame["flops"].iloc[0] == 6.0 * float(n) * float(d)
    else:
        assert outcome[0] == "error" and "6·N·D overflows float64" in outcome[1]


def test_every_property_tried_its_full_quota(capsys):
    """Each property above ran the profile's number of inputs (printed; see also -s)."""
    if not TRIED:
        pytest.skip("run together with the property tests of this module")
    with capsys.disabled():
        print("\nload_runs property inputs tried:", dict(TRIED), "total", sum(TRIED.values()))
    assert set(TRIED.values()) == {ROBUST.max_examples}, dict(TRIED)


# -- the named hostile cases, with their exact messages ----------------------------------------

def write(scratch: Path, name: str, content: str | bytes) -> Path:
    path = scratch / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("\n\n  \n", "the file is empty"),
    ("params,tokens,loss\n", "no runs"),
    ("params,tokens,loss\n1e8,2e9,abc\n", r"column 'loss', row 0 \(line 2 of the file\): value 'abc' is not a number"),
    ('params,tokens,loss\n"1,000",2e9,3\n', r"column 'params', row 0 .*value '1,000' is not a number.*without thousands separators"),
    ("params,tokens,loss\n1,000,2e9,3\n", r"cannot parse as CSV: .*Expected 3 fields in line 2, saw 4"),
    ("params,tokens,loss\n1e8,2e9,3,\n", r"Expected 3 fields in line 2, saw 4"),
    ("params,tokens,loss\n1e400,2e9,3\n", r"column 'params', row 0 .*value '1e400' is infinite or too large"),
    ("params,tokens,loss\n-0,2e9,3\n", r"column 'params', row 0 .*value '-0' must be positive"),
    ("params,tokens,loss,loss\n1e8,2e9,3,3.1\n", r"column 'loss' appears 2 times; keep one"),
    ("params,tokens,loss\n1e200,1e200,3\n", r"row 0 \(line 2 of the file\): 6·N·D overflows float64"),
    ("params,tokens,loss\n1e-200,1e-200,3\n", r"6·N·D underflows to zero in float64"),
    ("params;tokens;loss\n1e8;2e9;3,5\n", r"value '3,5' is not a number"),
    (b"params,tokens,loss\n1e8,2e9,\xff\n", r"not UTF-8 text \(byte 27\)"),
    ("params,tokens,loss\n1e8,2e9,TRUE\n", r"value 'TRUE' is not a number"),
])
def test_hostile_csv_files(scratch, content, message):
    path = write(scratch, "hostile.csv", content)
    with pytest.raises(RunDataError, match=message):
        bs.load_runs(path)


def test_bom_semicolon_crlf_file_loads(scratch):
    path = write(scratch, "excel.csv", "\ufeffparams;tokens;loss\r\n1e8;2e9;3.0\r\n2e8;4e9;2.9\r\n")
    runs = bs.load_runs(path)
    np.testing.assert_array_equal(runs.frame["flops"], [6 * 1e8 * 2e9, 6 * 2e8 * 4e9])


def test_row_longer_than_header_is_not_shifted(scratch):
    """pandas would take the extra first field as an index and shift every column."""
    path = write(scratch, "shifted.csv", "params,tokens,loss\n7,1e8,2e9,3.0\n")
    with pytest.raises(RunDataError, match="Expected 3 fields in line 2, saw 4"):
        bs.load_runs(path)
    # A stray field in the middle: pandas alone would read N=2e9 (the tokens) and D=7.
    path = write(scratch, "stray.csv", "params,tokens,loss\n1e8,2e9,7,3.0\n2e8,4e9,7,2.9\n")
    with pytest.raises(RunDataError, match="Expected 3 fields in line 2, saw 4"):
        bs.load_runs(path)


def test_unreadable_paths_are_run_data_errors(scratch):
    with pytest.raises(RunDataError, match="cannot read .*File name too long"):
        bs.load_runs("x" * 5000 + ".csv")
    with pytest.raises(RunDataError, match="is a directory"):
        bs.load_runs(scratch)


@pytest.mark.parametrize("column, value, message", [
    ("loss", None, r"column 'loss', row 1: missing value \(None\)"),
    ("loss", True, r"column 'loss', row 1: value True is a boolean"),
    ("params", 10**400, r"column 'params', row 1: value 1000.* is not a number"),
    ("tokens", "2,000", r"column 'tokens', row 1: value '2,000' is not a number"),
    ("tokens", -0.0, r"column 'tokens', row 1: value -0.0 must be positive"),
    ("params", pd.NA, r"column 'params', row 1: missing value \(<NA>\)"),
    ("loss", "3.0 nats", r"value '3.0 nats' is not a number \(loss\)"),
])
def test_hostile_dataframe_cells(column, value, message):
    frame = pd.DataFrame({"params": [1e8, 2e8], "tokens": [2e9, 4e9], "loss": [3.0, 2.9]}, dtype=object)
    frame.loc[1, column] = value
    with pytest.raises(RunDataError, match=message):
        bs.load_runs(frame)


def test_mixed_type_column_loads_exact_values():
    frame = pd.DataFrame({"params": [100_000_000, "2e8", np.float32(4e8), 10**9],
                          "tokens": [2e9, " 4e9 ", np.int64(8_000_000_000), 2 * 10**10],
                          "loss": ["3.0", 2.9, 2.8, 2.7]})
    runs = bs.load_runs(frame)
    np.testing.assert_array_equal(runs.frame["params"], [1e8, 2e8, float(np.float32(4e8)), 1e9])
    np.testing.assert_array_equal(runs.frame["flops"], 6.0 * runs.frame["params"] * runs.frame["tokens"])


def test_duplicate_dataframe_columns_and_name_collisions():
    frame = pd.DataFrame([[1e8, 2e9, 3.0, 2.0]], columns=["params", "tokens", "loss", "loss"])
    with pytest.raises(RunDataError, match="column 'loss' appears 2 times"):
        bs.load_runs(frame)
    # Column labels 7 and "7" both read as "7".
    frame = pd.DataFrame([[1e8, 2e9, 3.0, 2.0]], columns=["params", "tokens", 7, "7"])
    with pytest.raises(RunDataError, match="column '7' appears 2 times"):
        bs.load_runs(frame, loss="7")
