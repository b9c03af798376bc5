"""Learning-curve input: the design check on dense designs, the run column, and save/load."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import RunDataError
from bayescale.design import design_findings
from conftest import chinchilla_loss, synthetic_posterior_fit


def dense_frame(n, seed=0):
    """n runs with N and D spread continuously over two decades each."""
    rng = np.random.default_rng(seed)
    params = 10 ** rng.uniform(7.5, 9.5, n)
    tokens = params * 10 ** rng.uniform(0.5, 2.5, n)
    loss = chinchilla_loss(params, tokens) * np.exp(0.01 * rng.standard_normal(n))
    return pd.DataFrame({"params": params, "tokens": tokens, "loss": loss})


def single_scale_frame(n, seed=0):
    """n runs at one N and one D, up to float noise (0.1%)."""
    rng = np.random.default_rng(seed)
    params = 5e7 * (1 + 1e-3 * rng.uniform(-1, 1, n))
    tokens = 1e9 * (1 + 1e-3 * rng.uniform(-1, 1, n))
    loss = 3.0 * np.exp(0.01 * rng.standard_normal(n))
    return pd.DataFrame({"params": params, "tokens": tokens, "loss": loss})


@pytest.mark.parametrize("n", [10, 1_000, 100_000])
def test_dense_designs_of_any_size_pass(n):
    findings = design_findings(bs.load_runs(dense_frame(n)), "chinchilla")
    assert [f.code for f in findings] == []


@pytest.mark.parametrize("n", [10, 1_000, 100_000])
def test_single_scale_designs_are_still_refused(n):
    runs = bs.load_runs(single_scale_frame(n))
    with pytest.raises(RunDataError, match=rf"all {n} runs were trained at the same scale "
                                           r"\(N ≈ 5e\+07, D ≈ 1e\+09\)"):
        design_findings(runs, "chinchilla")


def test_two_sizes_with_jitter_count_as_two():
    frame = dense_frame(1000)
    rng = np.random.default_rng(3)
    frame["params"] = np.where(rng.random(1000) < 0.5, 1e8, 1e9) * (1 + 1e-3 * rng.uniform(-1, 1, 1000))
    findings = design_findings(bs.load_runs(frame), "chinchilla")
    assert [f.code for f in findings] == ["few_values"]
    assert "only 2 distinct model sizes" in findings[0].message


# -- the run column -------------------------------------------------------------------


def curve_frame():
    return pd.DataFrame({"run_id": ["a", "a", "a", "b", "b", "c"],
                         "params": [1e8, 1e8, 1e8, 4e8, 4e8, 1e9],
                         "tokens": [1e9, 2e9, 4e9, 2e9, 8e9, 2e10],
                         "loss": [3.5, 3.3, 3.1, 3.2, 2.9, 2.6]})


def test_run_column_groups_rows_and_final_points():
    runs = bs.load_runs(curve_frame(), run="run_id")
    assert list(runs.run) == ["a", "a", "a", "b", "b", "c"]
    assert runs.has_curves
    assert "run_id" not in (runs.extra.columns if runs.extra is not None else [])
    final = runs.final_points()
    assert list(final.run) == ["a", "b", "c"]
    np.testing.assert_array_equal(final.column("tokens"), [4e9, 8e9, 2e10])
    assert list(runs.subset(np.array([0, 1, 0, 1, 0, 0], bool)).run) == ["a", "b"]


def test_one_row_per_run_is_final_points():
    frame = curve_frame().drop_duplicates("run_id", keep="last")
    runs = bs.load_runs(frame, run="run_id")
    assert not runs.has_curves
    assert len(runs.final_points()) == 3


def test_runs_without_a_run_column_are_unchanged():
    runs = bs.load_runs(curve_frame())
    assert runs.run is None and not runs.has_curves
    assert list(runs.run_ids()) == ["0", "1", "2", "3", "4", "5"]


def test_tokens_going_down_are_named_by_row():
    frame = curve_frame()
    frame.loc[2, "tokens"] = 1.5e9
    with pytest.raises(RunDataError, match=re.escape(
            "runs DataFrame: run 'a': tokens go down from 2e+09 at row 1 to 1.5e+09 at row 2; "
            "a run's checkpoints must be in training order")):
        bs.load_runs(frame, run="run_id")


def test_repeated_tokens_are_refused():
    frame = curve_frame()
    frame.loc[4, "tokens"] = 2e9
    with pytest.raises(RunDataError, match=re.escape(
            "run 'b': tokens repeat from 2e+09 at row 3 to 2e+09 at row 4")):
        bs.load_runs(frame, run="run_id")


def test_tokens_repeated_up_to_rounding_are_refused_at_load():
    # equal in log tokens (one ulp apart): they used to pass here and fail later as a vague
    # SamplingError (the AR(1) term divides by the gap in log tokens)
    frame = curve_frame()
    frame.loc[4, "tokens"] = np.nextafter(frame.loc[3, "tokens"], np.inf)
    with pytest.raises(RunDataError, match=re.escape(
            "run 'b': tokens repeat (to within one part in 1e+09) from 2e+09 at row 3 to "
            "2e+09 at row 4")):
        bs.load_runs(frame, run="run_id")


def test_missing_run_id_is_named_by_row_and_line(tmp_path):
    frame = curve_frame()
    frame.loc[3, "run_id"] = ""
    path = tmp_path / "curves.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(RunDataError, match=re.escape(
            "column 'run_id', row 3 (line 5 of the file): missing run id; every checkpoint "
            "needs the id of the run it belongs to")):
        bs.load_runs(path, run="run_id")
    frame.loc[3, "run_id"] = None
    with pytest.raises(RunDataError, match=r"column 'run_id', row 3: missing run id"):
        bs.load_runs(frame, run="run_id")


def test_missing_run_column_and_params_changing():
    with pytest.raises(RunDataError, match=r"missing column 'run' \(the run each checkpoint "
                                           r"belongs to, given as run='run'\)"):
        bs.load_runs(curve_frame(), run="run")
    frame = curve_frame()
    frame.loc[1, "params"] = 2e8
    with pytest.raises(RunDataError, match=re.escape(
            "run 'a': params changes from 1e+08 at row 0 to 2e+08 at row 1")):
        bs.load_runs(frame, run="run_id")


def test_curves_fitted_as_independent_runs_are_flagged():
    runs = bs.load_runs(curve_frame(), run="run_id")
    codes = [f.code for f in design_findings(runs, "chinchilla")]
    assert "curves" in codes
    assert "curves" not in [f.code for f in design_findings(runs.final_points(), "chinchilla")]


def test_run_ids_survive_save_and_load(tmp_path):
    frame = dense_frame(40, seed=4).sort_values("tokens").reset_index(drop=True)
    frame["run"] = [f"r{i % 7}" for i in range(40)]
    frame["params"] = frame.groupby("run")["params"].transform("first")
    runs = bs.load_runs(frame, run="run")
    fit = synthetic_posterior_fit(runs, draws=50)
    fit.save(tmp_path / "fit.nc")
    loaded = bs.load_fit(tmp_path / "fit.nc")
    assert list(loaded.runs.run) == list(runs.run)
    # a fit without run ids saves and loads without them, as before
    plain = synthetic_posterior_fit(bs.load_runs(frame.drop(columns="run")), draws=50)
    plain.save(tmp_path / "plain.nc")
    assert bs.load_fit(tmp_path / "plain.nc").runs.run is None
