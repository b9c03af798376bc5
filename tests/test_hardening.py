"""Issue 14: every public call and CLI command refuses bad input clearly (one test per item).

Synthetic posteriors (no sampling) keep these fast; the sampler's failures are tested in
test_hardening_sampler.py, the property-based sweep in test_hardening_props.py.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import _validate
from bayescale.cli import main
from bayescale.exceptions import (ArgumentError, ArgumentTypeError, NonFiniteWarning,
                                  OutputExistsError, OutputPathError)
from conftest import (COMPUTE_TRUTH, EPOCH_TRUTH, synthetic_chinchilla_frame,
                      synthetic_compute_frame, synthetic_posterior_fit)


@pytest.fixture(scope="module")
def runs():
    return bs.load_runs(synthetic_chinchilla_frame())


@pytest.fixture(scope="module")
def fit(runs):
    return synthetic_posterior_fit(runs, spread=0.03, draws=200)


@pytest.fixture(scope="module")
def compute_fit():
    runs = bs.load_runs(synthetic_compute_frame())
    return synthetic_posterior_fit(runs, paper=COMPUTE_TRUTH, spread=0.03, draws=200,
                                   law="compute")


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity tokens, as strict parsers do."""
    def refuse(token):
        raise ValueError(f"invalid JSON token {token}")
    return json.loads(text, parse_constant=refuse)


# -- the validators themselves ---------------------------------------------------------------

@pytest.mark.parametrize("value, error, text", [
    (True, ArgumentTypeError, "flops = True is a boolean"),
    ([1e22, False], ArgumentTypeError, r"flops\[1\] = False is a boolean"),
    (np.array([True]), ArgumentTypeError, "holds booleans"),
    (1 + 2j, ArgumentTypeError, "is a complex number"),
    ("1e22", ArgumentTypeError, "is a string"),
    (None, ArgumentTypeError, "is None"),
    ({"a": 1}, ArgumentTypeError, "flops = "),
    (10**400, ArgumentError, "too large for a float64"),
    ([[1.0, 2.0]], ArgumentError, r"has shape \(1, 2\)"),
    ([1.0, -1.0], ArgumentError, r"flops\[1\] = -1.0: must be a finite positive number"),
    (float("nan"), ArgumentError, r"flops\[0\] = nan"),
])
def test_positives_refuses_with_name_value_and_expectation(value, error, text):
    with pytest.raises(error, match=text) as caught:
        _validate.positives("flops", value)
    assert isinstance(caught.value, bs.BayescaleError)
    assert isinstance(caught.value, ValueError if error is ArgumentError else TypeError)


def test_integer_seed_choice_mapping():
    with pytest.raises(ArgumentTypeError, match="draws = True is a boolean"):
        _validate.integer("draws", True, 1)
    with pytest.raises(ArgumentTypeError, match="draws = 2.0 is a float"):
        _validate.integer("draws", 2.0, 1)
    with pytest.raises(ArgumentError, match=r"random_seed must be an integer in \[0, 4294967295\], got -1"):
        _validate.seed("random_seed", -1)
    with pytest.raises(ArgumentError, match="got 1180591620717411303424"):
        _validate.seed("random_seed", 2**70)
    with pytest.raises(ArgumentTypeError, match="random_seed = 'x' is a string"):
        _validate.seed("random_seed", "x")
    assert _validate.seed("random_seed", np.int64(5)) == 5
    with pytest.raises(ArgumentTypeError, match=r"kind must be one of \('a', 'b'\), got 3"):
        _validate.choice("kind", 3, ("a", "b"))
    with pytest.raises(ArgumentTypeError, match=r"priors = \[\('alpha', 1\)\] is a list"):
        _validate.mapping("priors", [("alpha", 1)])


# -- silent wrong answers and invalid output ----------------------------------------------

def test_report_tables_distinguish_small_scale_targets(runs):
    frame = synthetic_chinchilla_frame()
    frame["loss"] *= 1e-8
    small = bs.load_runs(frame)
    paper = {**EPOCH_TRUTH, "E": EPOCH_TRUTH["E"] * 1e-8, "A": EPOCH_TRUTH["A"] * 1e-8,
             "B": EPOCH_TRUTH["B"] * 1e-8}
    small_fit = synthetic_posterior_fit(small, paper=paper, spread=0.05, draws=200)
    from bayescale.report import build_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = build_report(small_fit, target=2.05e-8, budget=1e22, dpi=20)
    table = next(b.table for b in report.blocks if b.kind == "table" and "P(loss" in b.text)
    column = table.columns[1]
    assert len(table) == 5 and table[column].nunique() == 5   # not one probability for all
    # the same numbers as the grid at loss scale 1 (the law is exactly scaled by 1e-8)
    grid = small_fit.risk_table([2.05e-8], [1e22])
    assert table.loc[2, column] == f"{float(grid.iloc[0, 0]):.2f}"


def test_cli_json_is_strict_with_null_for_undefined(compute_fit, tmp_path, capsys):
    path = tmp_path / "compute.nc"
    compute_fit.save(path)
    assert main(["forecast", str(path), "--flops", "1e22", "1e23", "--json"]) == 0
    data = strict_json(capsys.readouterr().out)
    assert [row["params"] for row in data["forecast"]] == [None, None]
    assert all(math.isfinite(row["loss_median"]) for row in data["forecast"])
    assert main(["risk", str(path), "--target", "1.5", "2.3", "--budget", "1e22", "--json"]) == 0
    data = strict_json(capsys.readouterr().out)
    assert data["compute_to_reach"][0]["flops"] is None      # 1.5 < E: unreachable -> null
    assert main(["allocate", str(path), "--flops", "1e22", "--json"]) == 2   # no split: refused
    assert "compute-optimal split" in capsys.readouterr().err


def test_cli_json_helper_turns_every_nan_and_inf_into_null():
    from bayescale.cli import _json_ready

    frame = pd.DataFrame({"a": [np.nan, np.inf], "b": [np.float32(1.5), -np.inf]})
    payload = {"t": frame, "s": pd.Series({"x": np.nan}), "v": np.array([1.0, np.nan]),
               "k": (np.int64(3), np.bool_(True))}
    text = json.dumps(_json_ready(payload), allow_nan=False)
    assert strict_json(text) == {"t": [{"a": None, "b": 1.5}, {"a": None, "b": None}],
                                 "s": {"x": None}, "v": [1.0, None], "k": [3, True]}


def test_compute_law_refuses_params_and_tokens(compute_fit):
    with pytest.raises(bs.ModelMismatchError, match="law of compute alone"):
        compute_fit.forecast(params=7e10, tokens=1.4e12)
    with pytest.raises(bs.ModelMismatchError, match="law of compute alone"):
        compute_fit.prob_below(2.0, params=7e10, tokens=1.4e12)


def test_overflowing_draws_give_inf_with_a_warning_never_nan(runs):
    overflow = synthetic_posterior_fit(runs, spread=0.03, draws=200)
    a = overflow.posterior["a"].values.copy()
    a[:, ::2] = 800.0                              # exp(800) overflows: half the draws
    overflow = bs.ScalingFit(**{**overflow.__dict__, "posterior": overflow.posterior.assign(
        a=(("chain", "draw"), a))})
    with pytest.warns(NonFiniteWarning, match="overflows float64"):
        table = overflow.forecast(params=[1e9, 1e10], tokens=[2e10, 2e11], prob=0.2)
    values = table[["loss_mean", "loss_median", "loss_lower", "loss_upper"]].to_numpy()
    assert not np.isnan(values).any() and np.isinf(values[:, 0]).all()
    probs = overflow.prob_below(3.0, params=[1e9, 1e10], tokens=[2e10, 2e11])
    assert probs["prob"].notna().all() and (probs["prob"] <= 0.5 + 1e-9).all()
    assert probs["mcse"].notna().all() and (probs["mcse"] > 0).all()


def test_overflowing_inputs_are_refused_or_stay_finite(fit):
    with pytest.raises(ArgumentError, match=r"6·N·D = inf FLOPs"):
        fit.forecast(params=1e308, tokens=1e308)
    with pytest.raises(ArgumentError, match=r"6·N·D = 0.0 FLOPs"):
        fit.forecast(params=1e-308, tokens=1e-308)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        alloc = fit.optimal_allocation(1e308)
        aware = fit.inference_optimal_allocation(2.0, 1e308)
    ratio = alloc.loc[0, ["tokens_per_param_lower", "tokens_per_param_median",
                          "tokens_per_param_upper"]].to_numpy(dtype=float)
    assert (np.isfinite(ratio) & (ratio > 0)).all()
    # with D/N from the closed form: C/(6N²) = (C/6)^((α−β)/(α+β)) / G²
    assert np.isfinite(aware[["savings_median", "savings_lower", "savings_upper"]].to_numpy()).all()
    assert 0 < aware.loc[0, "savings_median"] < 1
    with pytest.warns(bs.ExtrapolationWarning, match="bottom of the search range"):
        assert fit.compute_to_reach(1e308) == 1.0


@pytest.mark.parametrize("call", [
    lambda f: f.forecast(flops=True),
    lambda f: f.forecast(flops=[1e22, True]),
    lambda f: f.forecast(flops=1e22 + 0j),
    lambda f: f.prob_below(True, flops=1e22),
    lambda f: f.prob_below(2.0, flops=1e22 + 1j),
    lambda f: f.compute_to_reach(2.0, prob=True),
    lambda f: f.optimal_allocation(flops=[False]),
    lambda f: f.inference_optimal_allocation(2.0, inference_tokens=True),
    lambda f: f.forecast(flops=1e22, random_seed=True),
])
def test_booleans_and_complex_are_not_numbers(fit, call):
    with pytest.raises(ArgumentTypeError, match="boolean|complex"):
        call(fit)


def test_fit_arguments_are_checked_before_sampling(runs):
    model = bs.ScalingModel("chinchilla")
    for kwargs, error, text in [
            ({"draws": True}, ArgumentTypeError, "draws = True is a boolean"),
            ({"chains": 2.0}, ArgumentTypeError, "chains = 2.0 is a float"),
            ({"random_seed": -1}, ArgumentError, "random_seed must be an integer"),
            ({"random_seed": 2**70}, ArgumentError, "random_seed must be an integer"),
            ({"random_seed": "x"}, ArgumentTypeError, "random_seed = 'x' is a string"),
            ({"cores": -1}, ArgumentError, "cores must be an integer >= 1, got -1"),
            ({"sampler": "stan"}, ArgumentError, "sampler must be one of")]:
        start = time.perf_counter()
        with pytest.raises(error, match=text):
            model.fit(runs, **kwargs)
        assert time.perf_counter() - start < 5     # refused, not sampled


# -- crashes from deep inside ----------------------------------------------------------------

def test_report_default_targets_keep_small_targets(fit):
    from bayescale.report import _default_targets

    targets = _default_targets(2e-5)
    assert len(targets) == 5 and min(targets) > 0 and len(set(targets)) == 5
    assert _default_targets(2.05) == [2.01, 2.03, 2.05, 2.07, 2.09]   # unchanged at loss ~2


def test_outputs_are_checked_before_work(fit, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cases = [(tmp_path / "afile" / "fit.nc", OutputPathError, "is not a folder"),
             (tmp_path / "adir", OutputPathError, "is a folder"),
             (tmp_path / "nope" / "fit.nc", FileNotFoundError, "does not exist"),
             ("", ArgumentError, "path is empty"),
             (None, ArgumentTypeError, "expected a file path")]
    for path, error, text in cases:
        with pytest.raises(error, match=text):
            fit.save(path, overwrite=True)
    with pytest.raises(OutputPathError, match="is a folder"):
        fit.report(tmp_path / "adir", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]   # no temp files
    readonly = "/proc/bayescale_test.nc"
    if os.path.isdir("/proc"):   # no one, root included, can create files there
        with pytest.raises(OutputPathError, match=r"cannot write a file in '/proc'"):
            fit.save(readonly)
    (tmp_path / "old.nc").write_text("mine")
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        fit.save(tmp_path / "old.nc")
    assert (tmp_path / "old.nc").read_text() == "mine"


def test_cli_refuses_outputs_before_fitting(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    synthetic_chinchilla_frame().to_csv(csv, index=False)
    (tmp_path / "existing.nc").write_text("mine")
    (tmp_path / "afile").write_text("x")
    for command in (["fit", str(csv), "-o", str(tmp_path / "existing.nc")],
                    ["fit", str(csv), "-o", str(tmp_path / "afile" / "x.nc"), "--force"],
                    ["fit", str(csv), "-o", str(tmp_path), "--force"],
                    ["backtest", str(csv), "-o", str(tmp_path / "missing" / "t.csv")],
                    ["report", str(csv), "-o", str(tmp_path / "afile" / "r.html")],
                    ["demo", "--output-dir", str(tmp_path / "afile")]):
        start = time.perf_counter()
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("bayescale: error:") and "Fitting" not in err, err
        assert "Traceback" not in err and ".tmp" not in err
        assert time.perf_counter() - start < 5
    assert (tmp_path / "existing.nc").read_text() == "mine"


def test_cli_seed_and_inference_tokens(fit, tmp_path, capsys):
    path = tmp_path / "fit.nc"
    fit.save(path)
    with pytest.raises(SystemExit):
        main(["fit", "runs.csv", "--seed", "-1"])
    assert "expected a seed from 0 to 4294967295" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "runs.csv", "--seed", str(2**70)])
    capsys.readouterr()
    assert main(["allocate", str(path), "--target", "2.0", "--inference-tokens", "0",
                 "--json"]) == 0
    row = strict_json(capsys.readouterr().out)["inference_aware"][0]
    assert row["inference_tokens"] == 0 and abs(row["savings_median"]) < 1e-9


def test_cli_risk_with_a_repeated_target(fit, tmp_path, capsys):
    path = tmp_path / "fit.nc"
    fit.save(path)
    assert main(["risk", str(path), "--target", "2.0", "2.0", "--budget", "1e22",
                 "--prob", "0.8", "0.8"]) == 0
    assert "Compute to reach" in capsys.readouterr().out
    assert main(["risk", str(path), "--target", "2.0", "2.0", "--budget", "1e22",
                 "--prob", "0.8", "0.8", "--json"]) == 0
    data = strict_json(capsys.readouterr().out)
    assert len(data["risk"]) == 1 and len(data["compute_to_reach"]) == 1   # asked once


def test_empty_and_huge_arguments(fit):
    grid = fit.risk_table([2.0, 2.1], [])
    assert grid.shape == (2, 0) and list(grid.index) == [2.0, 2.1]
    assert fit.risk_table([], [1e22]).shape == (0, 1)
    assert fit.forecast(flops=[]).empty and fit.prob_below(2.0, flops=[]).empty
    with pytest.raises(ArgumentError, match="budgets is empty"):
        fit.report("r.html", budgets=[])
    with pytest.raises(ArgumentError, match="too large for a float64"):
        fit.forecast(flops=10**400)
    with pytest.raises(ArgumentError, match="too large for a float64"):
        fit.compute_to_reach(10**400)


def test_bad_arguments_anywhere_raise_package_errors(fit, tmp_path):
    import matplotlib.pyplot as plt

    from bayescale import plotting

    figure = plt.figure()
    cases = [
        (lambda: bs.ScalingModel("chinchilla", priors=[("alpha", bs.Prior("HalfNormal", sigma=1))]),
         ArgumentTypeError, "priors = .* is a list: expected a dict"),
        (lambda: fit.summary(prob=1.5), ArgumentError, "prob must be a probability"),
        (lambda: bs.compare("ab"), ArgumentTypeError, "fits = 'ab' is a str"),
        (lambda: fit.save(None), ArgumentTypeError, "expected a file path"),
        (lambda: plotting.plot_backtest(pd.DataFrame()), ArgumentError, "expected held-out runs"),
        (lambda: plotting.plot_backtest("table"), ArgumentTypeError, "expected the value of"),
        (lambda: plotting.plot_isoflop(fit, span=0), ArgumentError, "span = 0.0: expected a factor > 1"),
        (lambda: plotting.plot_fit(fit, ax=figure), ArgumentTypeError,
         r"ax = .* is a Figure: expected a matplotlib Axes \(use fig.add_subplot"),
        (lambda: plotting.plot_fit(fit, n_points=1), ArgumentError, "n_points must be an integer"),
        (lambda: fit.report(tmp_path / "r.html", dpi=0), ArgumentError, "dpi must be an integer"),
        (lambda: fit.report(tmp_path / "r.html", title=3), ArgumentTypeError, "title = 3"),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=text):
            call()
    plt.close(figure)
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_one_draw_fit(runs, tmp_path):
    one = synthetic_posterior_fit(runs, chains=1, draws=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = one.report(tmp_path / "one.html", target=2.2, budget=1e22, dpi=20)
    import re

    text = re.sub(r"data:image/png;base64,[^\"]+", "", path.read_text())
    assert "R-hat needs at least 2 chains" in text and "ESS cannot be estimated" in text
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


# -- unclear messages ------------------------------------------------------------------------

def test_messages_name_the_argument(fit, runs):
    from bayescale.backtest import split_runs

    cases = [(lambda: fit.forecast(flops=1e22, prob="x"), "prob = 'x' is a string"),
             (lambda: fit.prob_below("x", flops=1e22), "target = 'x' is a string"),
             (lambda: split_runs(runs, cutoff_flops="x"), "cutoff_flops = 'x' is a string"),
             (lambda: split_runs(runs, holdout_frac="x"), "holdout_frac = 'x' is a string"),
             (lambda: fit.inference_optimal_allocation(2.0, "x"), "inference_tokens = 'x'"),
             (lambda: fit.compute_distribution(2.0, prob="x"), "prob = 'x' is a string")]
    for call, text in cases:
        with pytest.raises(ArgumentTypeError, match=text):
            call()
    with pytest.raises(ArgumentError, match="path is empty"):
        fit.save("")


def test_one_chain_diagnostics_say_so(runs):
    one = synthetic_posterior_fit(runs, chains=1, draws=200, spread=0.03)
    problems = " ".join(one.diagnostics().problems)
    assert "R-hat needs at least 2 chains and this fit has 1" in problems
    assert "nan" not in problems and "chains disagree" not in problems


def _rewrite(path, out, edit):
    import xarray as xr

    with xr.open_datatree(path, engine="netcdf4") as opened:
        tree = opened.load()
    groups = {name: tree[name].to_dataset() for name in tree.children}
    attrs = dict(tree.attrs)
    edit(attrs, groups)
    xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **groups}).to_netcdf(out, engine="netcdf4")


def test_files_without_checksum_are_checked(fit, compute_fit, tmp_path):
    good = tmp_path / "good.nc"
    fit.save(good)

    def no_checksum(attrs, groups):
        del attrs["checksum"]

    def nan_posterior(attrs, groups):
        no_checksum(attrs, groups)
        values = groups["posterior"]["alpha"].values.copy()
        values[0, 0] = np.nan
        groups["posterior"] = groups["posterior"].assign(alpha=(("chain", "draw"), values))

    def relabel(attrs, groups):
        no_checksum(attrs, groups)
        attrs["law"] = "compute"

    def bad_schema(attrs, groups):
        no_checksum(attrs, groups)
        attrs["schema_version"] = "abc"

    _rewrite(good, tmp_path / "plain.nc", no_checksum)
    assert bs.load_fit(tmp_path / "plain.nc").forecast(flops=1e22).equals(fit.forecast(flops=1e22))
    for name, edit, text in [("nan.nc", nan_posterior, "'alpha' are empty or not all finite"),
                             ("law.nc", relabel, "says law='compute' but its posterior has"),
                             ("schema.nc", bad_schema, "schema_version='abc': expected a whole")]:
        _rewrite(good, tmp_path / name, edit)
        with pytest.raises(bs.FitFileError, match=text):
            bs.load_fit(tmp_path / name)


# -- ArviZ interoperability and the prior predictive ------------------------------------------

def test_to_datatree_works_with_arviz(chinchilla_fit):
    import arviz as az
    import matplotlib.pyplot as plt
    import xarray as xr

    tree = chinchilla_fit.to_datatree()
    assert isinstance(tree, xr.DataTree)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood",
            "posterior_predictive"} <= set(tree.children)
    n_runs = len(chinchilla_fit.runs)
    assert tree["posterior_predictive"]["log_loss"].shape == (2, 500, n_runs)
    assert tree["log_likelihood"]["log_loss"].shape == (2, 500, n_runs)
    summary = az.summary(tree, var_names=["alpha", "beta", "E"])
    assert summary.loc["alpha", "mean"] == pytest.approx(EPOCH_TRUTH["alpha"], rel=0.25)
    loo = az.loo(tree)
    assert np.isfinite(loo.elpd) and loo.n_data_points == n_runs
    # the replicated data cover the observed: mean log loss matches closely
    replicated = tree["posterior_predictive"]["log_loss"].mean(("chain", "draw")).values
    observed = tree["observed_data"]["log_loss"].values
    assert np.abs(replicated - observed).mean() < 0.03
    # ArviZ 1.x names: plot_trace, and plot_ppc_dist for the posterior predictive check
    az.plot_trace(tree, var_names=["alpha"])
    az.plot_ppc_dist(tree)
    plt.close("all")


def test_prior_predictive(synthetic_runs):
    import xarray as xr

    model = bs.ScalingModel("chinchilla")
    tree = model.prior_predictive(synthetic_runs, draws=200, random_seed=3)
    assert isinstance(tree, xr.DataTree)
    predicted = tree["prior_predictive"]["log_loss"]
    assert predicted.shape[-1] == len(synthetic_runs) and predicted.sizes["draw"] == 200
    # the default priors allow the data: observed losses sit inside the prior's 1–99% range
    low, high = np.quantile(np.exp(predicted.values.reshape(-1, len(synthetic_runs))),
                            [0.01, 0.99], axis=0)
    loss = synthetic_runs.frame["loss"].to_numpy()
    assert ((low <= loss) & (loss <= high)).mean() > 0.95
    with pytest.raises(ArgumentTypeError, match="draws = True"):
        model.prior_predictive(synthetic_runs, draws=True)


# -- mcse="ess": ArviZ's estimator, vectorised -----------------------------------------------

def test_vectorised_ess_equals_arviz():
    import arviz as az

    from bayescale._ess import ess_mean_rows_compiled
    from bayescale.risk import ess_mean_rows

    rng = np.random.default_rng(4)
    for chains, draws in [(4, 250), (2, 101), (1, 9), (3, 4)]:
        phi = rng.uniform(-0.8, 0.98, 60)
        values = np.empty((60, chains, draws))
        values[..., 0] = rng.standard_normal((60, chains))
        for t in range(1, draws):
            values[..., t] = phi[:, None] * values[..., t - 1] + rng.standard_normal((60, chains))
        values[:5] = values[:5] > 0          # 0/1 rows, like per-draw indicators
        values[5] = 0.5                      # constant row
        expected = np.asarray(az.ess(values, method="mean", chain_axis=1, draw_axis=2)).ravel()
        for route in (ess_mean_rows, ess_mean_rows_compiled):
            got = route(values.reshape(60, -1), (chains, draws))
            np.testing.assert_allclose(got, expected, rtol=1e-10)
    for route in (ess_mean_rows, ess_mean_rows_compiled):
        assert np.isnan(route(np.ones((2, 6)), (2, 3))).all()   # < 4 draws: ArviZ's nan
        with_nan = np.ones((1, 40))
        with_nan[0, 3] = np.nan
        assert np.isnan(route(with_nan, (2, 20))).all()


def test_prob_below_mcse_uses_the_vectorised_ess(fit):
    table = fit.prob_below(2.1, flops=np.geomspace(1e20, 1e23, 7), mcse="ess")
    iid = fit.prob_below(2.1, flops=np.geomspace(1e20, 1e23, 7), mcse="iid")
    # independent synthetic draws: ESS ≈ number of draws, so both errors agree closely
    np.testing.assert_allclose(table["mcse"], iid["mcse"], rtol=0.35)
    assert (table["mcse"] > 0).all()
