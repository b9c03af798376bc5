"""load_runs: every malformed input gets a RunDataError naming column, row and value."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import RunDataError


def good_frame(n=8):
    params = np.geomspace(1e8, 1e10, n)
    return pd.DataFrame({"params": params, "tokens": 20 * params, "loss": np.linspace(3.0, 2.2, n)})


def test_flops_derived_in_float64_without_overflow():
    frame = pd.DataFrame({"params": np.array([10**12, 10**13], dtype=np.int64),
                          "tokens": np.array([10**13, 10**14], dtype=np.int64), "loss": [2.0, 1.9]})
    runs = bs.load_runs(frame)
    # 6·N·D = 6e27 overflows int64 (max 9.2e18): must come out exact in float64.
    np.testing.assert_allclose(runs.frame["flops"], [6e25, 6e27])
    assert runs.frame["flops"].dtype == np.float64


def test_custom_column_names_and_csv(tmp_path):
    frame = good_frame().rename(columns={"params": "N", "tokens": "D", "loss": "val_loss"})
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    runs = bs.load_runs(path, params="N", tokens="D", loss="val_loss")
    assert len(runs) == 8
    np.testing.assert_allclose(runs.frame["flops"], 6 * frame["N"] * frame["D"])


def test_missing_loss_column():
    with pytest.raises(RunDataError, match=r"missing column 'loss'.*columns are \['params', 'tokens'\]"):
        bs.load_runs(good_frame().drop(columns="loss"))


def test_missing_inputs():
    with pytest.raises(RunDataError, match=r"missing column 'tokens'; need either 'params' and 'tokens'"):
        bs.load_runs(good_frame().drop(columns="tokens"))


def test_non_numeric_value_names_column_row_and_value(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss\n1e8,2e9,3.0\n2e8,4e9,abc\n")
    with pytest.raises(RunDataError, match=r"column 'loss', row 1 \(line 3 of the file\): value 'abc' is not a number"):
        bs.load_runs(path)


def test_nan_and_inf_rejected():
    frame = good_frame()
    frame.loc[3, "loss"] = np.nan
    with pytest.raises(RunDataError, match=r"column 'loss', row 3: missing value \(NaN\)"):
        bs.load_runs(frame)
    frame = good_frame()
    frame.loc[2, "params"] = np.inf
    with pytest.raises(RunDataError, match=r"column 'params', row 2: value inf is infinite"):
        bs.load_runs(frame)


@pytest.mark.parametrize("column", ["params", "tokens", "loss", "flops"])
def test_non_positive_rejected(column):
    frame = good_frame().assign(flops=lambda f: 6 * f.params * f.tokens)
    frame.loc[5, column] = 0.0 if column != "loss" else -1.0
    with pytest.raises(RunDataError, match=rf"column '{column}', row 5: value .* must be positive"):
        bs.load_runs(frame)


def test_flops_mismatch_warns_but_loads():
    frame = good_frame().assign(flops=lambda f: 6 * f.params * f.tokens)
    frame.loc[0, "flops"] *= 3
    with pytest.warns(UserWarning, match=r"'flops' disagrees with 6·N·D by more than 2x in 1 of 8 rows"):
        runs = bs.load_runs(frame)
    assert len(runs) == 8


def test_flops_within_factor_two_is_silent():
    frame = good_frame().assign(flops=lambda f: 7 * f.params * f.tokens)  # 8·N·D conventions differ
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bs.load_runs(frame)


def test_too_few_runs_for_the_law():
    runs = bs.load_runs(good_frame(5))
    with pytest.raises(RunDataError, match=r"5 runs cannot fit the chinchilla law: it has 5 parameters, so at least 6"):
        bs.ScalingModel("chinchilla").fit(runs)


def test_chinchilla_law_needs_params_and_tokens():
    frame = pd.DataFrame({"flops": np.geomspace(1e18, 1e21, 10), "loss": np.linspace(3, 2, 10)})
    runs = bs.load_runs(frame)
    with pytest.raises(bs.ModelMismatchError, match=r"needs column 'params'.*use the 'compute' law"):
        bs.ScalingModel("chinchilla").fit(runs)


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(RunDataError, match="the file is empty"):
        bs.load_runs(empty)
    header = tmp_path / "header.csv"
    header.write_text("params,tokens,loss\n")
    with pytest.raises(RunDataError, match="no runs"):
        bs.load_runs(header)


def test_missing_file():
    with pytest.raises(RunDataError, match="no such file: 'nope.csv'"):
        bs.load_runs("nope.csv")


def test_semicolon_and_bom(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffparams;tokens;loss\n1e8;2e9;3.0\n2e8;4e9;2.9\n".encode("utf-8"))
    runs = bs.load_runs(path)
    np.testing.assert_allclose(runs.frame["loss"], [3.0, 2.9])


def test_runs_are_read_only():
    runs = bs.load_runs(good_frame())
    with pytest.raises(ValueError):
        runs.column("loss")[0] = 1.0


def test_bundled_dataset():
    runs = bs.load_dataset("chinchilla")
    assert len(runs) == 245
    epoch = bs.load_dataset("chinchilla", drop_highest_loss=5)
    assert len(epoch) == 240
    five_highest = np.sort(runs.frame["loss"])[-5:]
    assert epoch.frame["loss"].max() < five_highest.min()
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        bs.load_dataset("nope")


def test_bundled_nmt_curve():
    runs = bs.load_dataset("revisiting_nmt")
    assert len(runs) == 11
    assert runs.frame["flops"].iloc[0] == 5e5 and runs.frame["flops"].iloc[-1] == 5.12e8
    assert np.all(np.diff(runs.frame["loss"]) < 0)          # a learning curve, still falling
    assert "Alabdulmohsin" in runs.source
    assert runs.frame["params"].isna().all()                 # one scale variable only
