"""Groups: the group column, pooling none/partial/complete, group= analyses, compare_groups."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.exceptions import ArgumentError, DesignWarning, PriorError, RunDataError

from conftest import FAST, chinchilla_loss, quiet_fit

# Three data mixes: same exponents, different E and coefficients (truth of the simulation).
TRUTHS = {
    "mixA": {"E": 1.80, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366},
    "mixB": {"E": 1.95, "A": 420.0, "B": 2500.0, "alpha": 0.348, "beta": 0.366},
    "small": {"E": 1.70, "A": 600.0, "B": 1800.0, "alpha": 0.348, "beta": 0.366},
}


def grouped_frame(n_runs=(30, 30, 4), noise=0.01, seed=3):
    rng = np.random.default_rng(seed)
    parts = []
    for (name, truth), n in zip(TRUTHS.items(), n_runs):
        top = 1.6e10 if n > 10 else 4e8   # the small group: only small models
        params = np.exp(rng.uniform(np.log(7e7), np.log(top), n))
        tokens = params * np.exp(rng.uniform(np.log(5), np.log(60), n))
        loss = chinchilla_loss(params, tokens, truth) * np.exp(noise * rng.standard_normal(n))
        parts.append(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss,
                                   "mix": name}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def partial_fit():
    # the grouped kernel (bayescale._fastgroups): loaded from numba's cache, a few seconds
    runs = bs.load_runs(grouped_frame(), group="mix")
    with pytest.warns(DesignWarning, match=r"'small' \(4 runs\)"):
        # The truths' B differ by 20-40% between mixes: b varies here (by default it is
        # shared, as Porian et al.'s configurations measured: bench_groups_vary.py).
        return quiet_fit(bs.ScalingModel("chinchilla", pooling="partial", group_sd={"b": 0.5}),
                         runs, draws=300, tune=800)


# -- the group column ---------------------------------------------------------------------

def test_group_column_kept_and_validated():
    frame = grouped_frame(n_runs=(8, 8, 4))
    runs = bs.load_runs(frame, group="mix")
    assert runs.group_names == ("mixA", "mixB", "small")
    assert runs.group_column == "mix"
    assert runs.subset(runs.group_mask("small")).group.tolist() == ["small"] * 4
    numbers = bs.load_runs(frame.assign(mix=frame["mix"].map({"mixA": 1, "mixB": 2, "small": 3})),
                           group="mix")
    assert numbers.group_names == (1, 2, 3)
    bad = frame.astype({"mix": object})
    bad.loc[5, "mix"] = None
    with pytest.raises(RunDataError, match=r"^runs DataFrame: column 'mix', row 5: missing "
                                           r"group label \(None\); give every run a group"):
        bs.load_runs(bad, group="mix")
    with pytest.raises(RunDataError, match=r"missing column 'family' \(the group of each run, "
                                           r"given as group='family'\)"):
        bs.load_runs(frame, group="family")


def test_group_label_errors_in_csv(tmp_path):
    path = tmp_path / "runs.csv"
    frame = grouped_frame(n_runs=(8, 8, 4))
    frame.loc[2, "mix"] = " "
    frame.to_csv(path, index=False)
    with pytest.raises(RunDataError, match=r"column 'mix', row 2 \(line 4 of the file\): empty "
                                           "group label"):
        bs.load_runs(path, group="mix")


def test_pooling_arguments_are_checked():
    with pytest.raises(ValueError, match="pooling"):
        bs.ScalingModel("chinchilla", pooling="some")
    with pytest.raises(PriorError, match=r"group_sd: no parameter 'gamma' in the chinchilla law"):
        bs.ScalingModel("chinchilla", pooling="partial", group_sd={"gamma": 0.1})
    with pytest.raises(PriorError, match=r"group_sd\['a'\] must be a finite number >= 0"):
        bs.ScalingModel("chinchilla", pooling="partial", group_sd={"a": -1.0})
    runs = bs.load_runs(grouped_frame(n_runs=(8, 8, 4)))
    with pytest.raises(RunDataError, match=r"pooling='partial' needs runs with a group column"):
        bs.ScalingModel("chinchilla", pooling="partial").fit(runs, **FAST)
    grouped = bs.load_runs(grouped_frame(n_runs=(8, 8, 4)), group="mix")
    with pytest.raises(RunDataError, match=r"needs at least 6 runs per group; too few in: "
                                           r"'small' \(4 runs\)\. Use pooling='partial'"):
        bs.ScalingModel("chinchilla", pooling="none").fit(grouped, **FAST)
    frame = grouped_frame(n_runs=(8, 8, 4)).assign(acc=0.5)
    linked = bs.load_runs(frame, group="mix", metric="acc")
    with pytest.raises(ArgumentError, match=r"a metric link is fitted to one group of runs at a "
                                            r"time: pooling across groups \(3 groups"):
        bs.ScalingModel("chinchilla", link="sigmoid", chance=0.25).fit(linked, **FAST)
    # PyMC's own NUTS does not sample the hierarchical model: said, not silently nutpie.
    with pytest.raises(ArgumentError, match=r"sampler='pymc' is not available with "
                                            r"pooling='partial'"):
        bs.ScalingModel("chinchilla", pooling="partial").fit(grouped, sampler="pymc", tune=0)


# -- complete and none ----------------------------------------------------------------------

def test_complete_pooling_is_todays_fit():
    frame = grouped_frame(n_runs=(12, 12, 4))
    plain = quiet_fit(bs.ScalingModel("chinchilla"), bs.load_runs(frame), draws=200, tune=200)
    grouped_runs = bs.load_runs(frame, group="mix")
    complete = quiet_fit(bs.ScalingModel("chinchilla", pooling="complete"), grouped_runs,
                         draws=200, tune=200)
    for name in plain.posterior.data_vars:
        np.testing.assert_array_equal(plain.posterior[name], complete.posterior[name])
    assert not complete.is_grouped
    pd.testing.assert_frame_equal(complete.forecast(1e22, group="mixA"), plain.forecast(1e22))
    with pytest.raises(ArgumentError, match="this fit has no groups"):
        plain.forecast(1e22, group="mixA")


def test_none_pooling_equals_separate_fits(tmp_path):
    frame = grouped_frame(n_runs=(12, 12, 10))
    runs = bs.load_runs(frame, group="mix")
    none = quiet_fit(bs.ScalingModel("chinchilla", pooling="none"), runs, draws=200, tune=200)
    assert none.groups == ("mixA", "mixB", "small")
    for name in ("small",):
        alone = quiet_fit(bs.ScalingModel("chinchilla"),
                          bs.load_runs(frame[frame["mix"] == name]), draws=200, tune=200)
        view = none.group_fit(name)
        for var in alone.posterior.data_vars:
            np.testing.assert_array_equal(alone.posterior[var].to_numpy(),
                                          view.posterior[var].to_numpy())
        pd.testing.assert_frame_equal(none.forecast([1e21, 1e23], group=name),
                                      alone.forecast([1e21, 1e23]))
        assert none.prob_below(2.1, 1e22, group=name) == pytest.approx(alone.prob_below(2.1, 1e22))
    with pytest.raises(ArgumentError, match="pass group= one of"):
        none.forecast(1e22)
    with pytest.raises(ArgumentError, match="has no population distribution"):
        none.forecast(1e22, group="unseen")
    # A saved and loaded fit rebuilds the same views.
    none.save(tmp_path / "none.nc")
    loaded = bs.load_fit(tmp_path / "none.nc")
    pd.testing.assert_frame_equal(loaded.forecast(1e22, group="mixB"),
                                  none.forecast(1e22, group="mixB"))


# -- partial pooling ------------------------------------------------------------------------

@pytest.mark.slow
def test_partial_recovers_group_parameters(partial_fit):
    fit = partial_fit
    assert fit.pooling == "partial" and fit.groups == ("mixA", "mixB", "small")
    assert fit.diagnostics().divergences <= 0.005 * fit.n_draws   # tiny tuning in tests
    table = fit.summary(prob=0.95)
    for name in ("mixA", "mixB"):
        row = table.loc[(name, "E")]
        assert row["hdi_lower"] <= TRUTHS[name]["E"] <= row["hdi_upper"], (name, row)
        assert row["sd"] < 0.1
    # mixB's E is above mixA's in (almost) every joint draw
    e_a = fit.group_fit("mixA").paper_draws()["E"]
    e_b = fit.group_fit("mixB").paper_draws()["E"]
    assert np.mean(e_b > e_a) > 0.95
    # the small group's exponent borrows from the others: near the shared truth
    alpha = fit.group_fit("small").paper_draws()["alpha"]
    assert abs(np.median(alpha) - 0.348) < 0.1


@pytest.mark.slow
def test_group_analyses_and_population(partial_fit):
    fit = partial_fit
    known = fit.forecast(1e22, group="mixA", prob=0.9)
    new = fit.forecast(1e22, group="an unseen mix", prob=0.9)
    assert (new["loss_upper"] - new["loss_lower"]).iloc[0] > \
        (known["loss_upper"] - known["loss_lower"]).iloc[0]
    assert fit.optimal_allocation(1e22, group="mixB")["flops"].iloc[0] == 1e22
    assert fit.prob_below(2.3, 1e22, group="mixB") < fit.prob_below(2.6, 1e22, group="mixB")
    reach = fit.compute_to_reach(2.2, 0.8, group="mixA")
    assert np.isfinite(reach) and reach > 0
    # the discrepancy of each group's view applies past its range
    assert fit.group_fit("mixA").discrepancy is not None


@pytest.mark.slow
def test_compare_groups_matches_direct_monte_carlo(partial_fit):
    fit = partial_fit
    budget = 1e19    # inside the fitted range: law + discrepancy (zero here) only
    table = fit.compare_groups(budget, groups=["mixA", "mixB"], kind="mean")
    row = table.iloc[0]
    law = fit.law
    losses = {}
    for k, name in enumerate(["mixA", "mixB"]):
        runs = fit.runs.subset(fit.runs.group_mask(name))
        ref = law.reference(runs)
        theta = {v: fit.posterior[v].isel(group=fit.groups.index(name)).to_numpy().reshape(-1)
                 for v in law.parameter_domains}
        log_n = np.median(law.optimal_log_params(theta, ref, np.log(budget)))
        log_x = {"params": np.full(1, log_n), "tokens": np.full(1, np.log(budget / 6) - log_n)}
        losses[name] = law.loss({k2: v[:, None] for k2, v in theta.items()},
                                {k2: v[None, :] for k2, v in log_x.items()}, ref)[:, 0]
    direct = np.mean(losses["mixA"] < losses["mixB"])
    assert row["p_a_better"] == pytest.approx(direct, abs=1e-12)
    diff = losses["mixA"] - losses["mixB"]
    assert row["diff_mean"] == pytest.approx(diff.mean(), rel=1e-9)
    assert row["leader"] == ("mixA" if direct >= 0.5 else "mixB")
    far = fit.compare_groups(1e22)
    assert len(far) == 3 and far["p_a_better"].between(0, 1).all()
    assert ((far["confident_flops"] > 0) | np.isinf(far["confident_flops"])).all()


@pytest.mark.slow
def test_partial_round_trip_and_cli(partial_fit, tmp_path, capsys):
    path = tmp_path / "partial.nc"
    partial_fit.save(path)
    loaded = bs.load_fit(path)
    assert loaded.groups == partial_fit.groups
    assert loaded.runs.group.tolist() == partial_fit.runs.group.tolist()
    for group in ("small", "an unseen mix"):
        pd.testing.assert_frame_equal(loaded.forecast([1e21, 1e23], group=group),
                                      partial_fit.forecast([1e21, 1e23], group=group))
    # the noise per group survives the round trip and reaches every view
    for fit in (partial_fit, loaded):
        assert fit.posterior["sigma"].dims == ("chain", "draw", "group")
        for k, group in enumerate(fit.groups):
            np.testing.assert_array_equal(fit.group_fit(group).posterior["sigma"],
                                          fit.posterior["sigma"].isel(group=k))
        new_sigma = fit.group_fit("an unseen mix").posterior["sigma"].to_numpy()
        assert new_sigma.shape == fit.posterior["pop_sigma"].shape
        assert not np.allclose(new_sigma, fit.posterior["pop_sigma"].to_numpy())
    observed = loaded.compare_groups(1e22, kind="observed")
    numbers = observed[["p_a_better", "diff_mean", "diff_lower", "diff_upper"]].to_numpy()
    assert len(observed) == 3 and np.isfinite(numbers).all()
    from bayescale.cli import main

    assert main(["compare-groups", str(path), "--group-col", "mix", "--flops", "1e22",
                 "--json", "--law", "kaplan", "--draws", "50"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["pooling"] == "partial" and len(payload["pairs"]) == 3
    # flags that only a fit from a CSV uses are named, in one line, as ignored
    notes = [line for line in captured.err.splitlines() if line.startswith("bayescale: note:")]
    assert notes == [f"bayescale: note: {path} is a saved fit: ignoring --group-col, --law, "
                     "--draws (they apply to fitting a CSV of runs)"], captured.err
    assert main(["compare-groups", str(path)]) == 0     # a saved fit keeps its groups
    captured = capsys.readouterr()
    assert "P(A<B) own split" in captured.out and "ignoring" not in captured.err


def test_compare_groups_cli_errors_are_one_line(tmp_path, capsys):
    """Bad input to ``bayescale compare-groups`` fails before any sampling, in one line that
    names the column, row or argument."""
    from bayescale.cli import main

    frame = grouped_frame(n_runs=(8, 8, 4))
    good = tmp_path / "runs.csv"
    frame.to_csv(good, index=False)
    blank = tmp_path / "blank.csv"
    frame.astype({"mix": object}).assign(mix=lambda f: f["mix"].where(f.index != 5)).to_csv(
        blank, index=False)
    one = tmp_path / "one.csv"
    frame.assign(mix="only").to_csv(one, index=False)
    cases = [
        (["compare-groups", str(good), "--group-col", "family"],
         r"missing column 'family' \(the group of each run"),
        (["compare-groups", str(blank), "--group-col", "mix"],
         r"column 'mix', row 5 \(line 7 of the file\): empty group label"),
        (["compare-groups", str(good)], r"--group-col is required with a CSV of runs"),
        (["compare-groups", str(one), "--group-col", "mix"],
         r"column 'mix' has one group \('only'\); compare-groups needs at least two"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("bayescale: error: "), err
        assert re.search(message, err), err
    with pytest.raises(SystemExit):
        main(["compare-groups", str(good), "--group-col", "mix", "--flops", "lots"])
    assert "argument --flops: expected a number" in capsys.readouterr().err


def test_compare_groups_cli_on_an_ungrouped_saved_fit(tmp_path, capsys):
    from bayescale.cli import main

    runs = bs.load_runs(grouped_frame(n_runs=(12, 12, 4)).drop(columns="mix"))
    fit = quiet_fit(bs.ScalingModel("chinchilla"), runs, **FAST)
    path = tmp_path / "plain.nc"
    fit.save(path)
    assert main(["compare-groups", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bayescale: error: {path} is a fit without groups: run compare-groups on "
                   "the runs' CSV with --group-col <column>")


@pytest.mark.slow
def test_grouped_report_has_a_section_per_group(partial_fit, tmp_path):
    path = partial_fit.report(tmp_path / "groups.md", budgets=[1e21, 1e22])
    text = path.read_text()
    for group in partial_fit.groups:
        assert f"## Group {group}" in text
    assert "## Comparison of the groups" in text and "Which group wins" in text
    one = partial_fit.report(tmp_path / "one.html", group="mixA")
    assert "mixB" not in one.read_text()
