"""Loss → accuracy (issue 16): validation, the link's kernel, recovery, the flat case, save/load, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.downstream import (LINK_PARAMETERS, clip_metric, default_link_priors,
                                  link_reference, sigmoid_link)

TRUTH = {"chance": 0.25, "ceiling": 0.9, "k": 8.0, "l0": 0.95}
LAW = {"E": 0.5, "A": 50.0, "B": 100.0, "alpha": 0.3, "beta": 0.3}
SETTINGS = {"draws": 500, "tune": 500, "chains": 2, "random_seed": 3}


def ladder_frame(seed=0, law=LAW, link=TRUTH, sizes=(2e7, 5e7, 1e8, 2e8, 5e8),
                 ratios=(5, 10, 20, 40), noise=0.01, questions=2000):
    """Simulated ladder: task loss from a Chinchilla law, accuracy from a known sigmoid,
    measured on a benchmark of ``questions`` questions (binomial error)."""
    rng = np.random.default_rng(seed)
    n, r = np.meshgrid(np.asarray(sizes, float), np.asarray(ratios, float))
    n, d = n.ravel(), (n * r).ravel()
    loss = (law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"])
    loss = loss * np.exp(noise * rng.standard_normal(n.size))
    acc = sigmoid_link(loss, link["chance"], link["ceiling"], link["k"], link["l0"])
    acc = rng.binomial(questions, acc) / questions
    return pd.DataFrame({"params": n, "tokens": d, "loss": 2 * loss, "bpb": loss, "acc": acc})


def quiet(model, runs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        return model.fit(runs, **{**SETTINGS, **kwargs})


@pytest.fixture(scope="module")
def linked_fit():
    runs = bs.load_runs(ladder_frame(), metric="acc", task_loss="bpb")
    return quiet(bs.ScalingModel("chinchilla", link="sigmoid", chance=0.25), runs)


# -- validation (no sampling) --------------------------------------------------------------

def test_metric_and_task_loss_are_kept_in_runs():
    runs = bs.load_runs(ladder_frame(), metric="acc", task_loss="bpb")
    assert runs.has_metric
    assert runs.outcome_names == {"metric": "acc", "task_loss": "bpb"}
    np.testing.assert_array_equal(runs.outcome("metric"), ladder_frame()["acc"])
    half = runs.subset(np.arange(len(runs)) < 5)
    assert len(half.outcomes) == 5 and half.outcome_names == runs.outcome_names
    assert "acc" not in runs.frame.columns and "acc" not in runs.input_columns
    assert not bs.load_runs(ladder_frame()).has_metric


@pytest.mark.parametrize("value, message", [
    (1.2, "runs DataFrame: column 'acc', row 3: value 1.2 is outside [0, 1]; expected an "
          "accuracy in [0, 1] (a percentage? divide by 100)"),
    (-0.1, "runs DataFrame: column 'acc', row 3: value -0.1 is outside [0, 1]; expected an "
           "accuracy in [0, 1]"),
    (np.nan, "runs DataFrame: column 'acc', row 3: value nan is outside [0, 1]; expected an "
             "accuracy in [0, 1]"),
    ("high", "runs DataFrame: column 'acc', row 3: value 'high' is not a number; expected an "
             "accuracy in [0, 1]"),
])
def test_bad_metric_names_the_row(value, message):
    frame = ladder_frame().astype({"acc": object})
    frame.loc[3, "acc"] = value
    with pytest.raises(bs.RunDataError) as info:
        bs.load_runs(frame, metric="acc")
    assert str(info.value) == message


def test_missing_metric_column_and_bad_task_loss():
    with pytest.raises(bs.RunDataError, match=r"missing column 'mmlu_acc' \(the metric of each "
                                              r"run, given as metric='mmlu_acc'\)"):
        bs.load_runs(ladder_frame(), metric="mmlu_acc")
    frame = ladder_frame()
    frame.loc[2, "bpb"] = 0.0
    with pytest.raises(bs.RunDataError, match=r"column 'bpb', row 2: value 0.0 must be positive"):
        bs.load_runs(frame, task_loss="bpb")


def test_csv_metric_error_names_the_line(tmp_path):
    path = tmp_path / "runs.csv"
    frame = ladder_frame()
    frame.loc[1, "acc"] = 55.0
    frame.to_csv(path, index=False)
    with pytest.raises(bs.RunDataError, match=r"row 1 \(line 3 of the file\): value '55.0' is "
                                              r"outside \[0, 1\]"):
        bs.load_runs(path, metric="acc")


def test_link_options_are_validated():
    with pytest.raises(bs.ArgumentError, match=r"chance must be in \[0, 1\) .*got 1.0"):
        bs.ScalingModel("chinchilla", link="sigmoid", chance=1.0)
    with pytest.raises(bs.ArgumentError, match="link must be one of"):
        bs.ScalingModel("chinchilla", link="probit")
    with pytest.raises(TypeError, match="chance= belongs to a metric link; pass link='sigmoid'"):
        bs.ScalingModel("chinchilla", chance=0.25)
    with pytest.raises(bs.PriorError, match="ceiling_frac"):
        bs.ScalingModel("chinchilla", link="sigmoid",
                        priors={"ceiling_frac": bs.Prior("Normal", mu=0, sigma=1)})
    model = bs.ScalingModel("chinchilla", link="sigmoid",
                            priors={"k_scaled": bs.Prior("LogNormal", mu=1.0, sigma=0.5)})
    assert model.link_priors["k_scaled"].params["mu"] == 1.0 and "k_scaled" not in model.priors
    with pytest.raises(bs.RunDataError, match=r"link='sigmoid' needs runs with a metric: load "
                                              r"them with load_runs\(\.\.\., metric=<column>\)"):
        model.fit(bs.load_runs(ladder_frame()), **SETTINGS)


def test_no_link_methods_refuse_plain_fits(linked_fit):
    plain = linked_fit.with_link(None)
    with pytest.raises(bs.ModelMismatchError, match="this fit has no metric link"):
        plain.forecast_metric(flops=1e22)


# -- the link's sampler kernel equals the PyMC model ------------------------------------------

def test_link_kernel_matches_its_density():
    """The kernel's value is the Beta likelihood around the link plus the priors (scipy,
    up to the priors' constants) and its gradient is the value's derivative."""
    from scipy import stats

    from bayescale import _linkkernel

    frame = ladder_frame()
    loss, acc = frame["bpb"].to_numpy(), clip_metric(frame["acc"].to_numpy())
    ref, priors = link_reference(loss), default_link_priors()
    buf, sampled = _linkkernel.make_buffer(priors, LINK_PARAMETERS, loss, acc, 0.25, ref)
    assert sampled == list(LINK_PARAMETERS)

    def reference(u):
        frac, ks, ls, phi = 1 / (1 + np.exp(-u[0])), np.exp(u[1]), u[2], np.exp(u[3])
        mu = sigmoid_link(loss, 0.25, 0.25 + 0.75 * frac, ks / ref["span"],
                          ref["center"] + ls * ref["span"])
        value = stats.beta.logpdf(acc, mu * phi, (1 - mu) * phi).sum()
        value += stats.beta.logpdf(frac, 2, 1) + np.log(frac * (1 - frac))   # logit Jacobian
        value += stats.lognorm.logpdf(ks, 1.0, scale=4.0) + u[1]              # log Jacobian
        value += stats.norm.logpdf(ls, 0, 2)
        value += stats.lognorm.logpdf(phi, 1.5, scale=1000.0) + u[3]
        return value

    rng = np.random.default_rng(0)
    offsets = []
    for _ in range(4):
        u = rng.normal(0, 0.5, 4) + np.array([0.5, np.log(4), 0.0, np.log(1000)])
        value, grad = _linkkernel.logp_and_grad(buf, u)
        offsets.append(value - reference(u))
        step = 1e-6
        numeric = [(_linkkernel.logp_and_grad(buf, u + step * e)[0]
                    - _linkkernel.logp_and_grad(buf, u - step * e)[0]) / (2 * step)
                   for e in np.eye(4)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)
    assert np.ptp(offsets) < 1e-6


# -- recovery on simulated data -------------------------------------------------------------

def test_recovers_the_link_and_forecasts_a_bigger_run(linked_fit):
    summary = linked_fit.link_summary(prob=0.98)
    for name, true in (("ceiling", TRUTH["ceiling"]), ("k", TRUTH["k"]), ("l0", TRUTH["l0"])):
        assert summary.loc[name, "lower"] <= true <= summary.loc[name, "upper"], (name, summary)
    assert linked_fit.link_findings() == []
    assert linked_fit.link.method == "two_stage" and linked_fit.link.chance == 0.25
    # A 4x bigger model at 20 tokens/param: the truth lies in the 90% band.
    n, d = 2e9, 4e10
    loss = LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]
    true_acc = sigmoid_link(loss, 0.25, TRUTH["ceiling"], TRUTH["k"], TRUTH["l0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = linked_fit.forecast_metric(params=n, tokens=d, prob=0.9)
    row = table.iloc[0]
    assert row.metric_lower <= true_acc <= row.metric_upper
    assert 0.25 < row.metric_lower < row.metric_median < row.metric_upper <= 1.0
    assert table.attrs["prob"] == 0.9 and table.attrs["metric"] == "acc"
    assert list(table.columns[-4:]) == ["metric_mean", "metric_median", "metric_lower",
                                        "metric_upper"]


def test_prob_and_compute_to_reach_agree(linked_fit):
    budgets = [1e17, 1e18, 1e19, 1e20]
    table = linked_fit.prob_metric_above(0.7, budgets)
    p = table["prob_0.7"].to_numpy()
    assert np.all(np.diff(p) >= -1e-9) and p[0] < 0.5 < p[-1]
    scalar = linked_fit.prob_metric_above(0.7, flops=1e19)
    assert isinstance(scalar, float) and scalar == pytest.approx(p[2])
    reach = linked_fit.compute_to_reach_metric(0.7, prob=0.8)
    assert linked_fit.prob_metric_above(0.7, flops=reach) >= 0.8
    assert linked_fit.prob_metric_above(0.7, flops=reach * 0.98) < 0.8
    with pytest.warns(bs.UnreachableTargetWarning):
        assert linked_fit.compute_to_reach_metric(0.995, prob=0.9) == np.inf
    with pytest.raises(bs.ArgumentError, match="target must be a metric value strictly "
                                               "between 0 and 1, got 1.5"):
        linked_fit.prob_metric_above(1.5, flops=1e20)


def test_mean_band_is_inside_observed_band(linked_fit):
    observed = linked_fit.forecast_metric(flops=[1e18, 1e19], kind="observed")
    mean = linked_fit.forecast_metric(flops=[1e18, 1e19], kind="mean")
    assert (observed.metric_upper - observed.metric_lower >
            mean.metric_upper - mean.metric_lower).all()


# -- the flat (non-identified) case ----------------------------------------------------------

def test_flat_runs_warn_and_bands_span_the_unknown():
    # Every run at chance: the rise lies far below the runs' losses.
    frame = ladder_frame(seed=1, link={**TRUTH, "l0": -0.5})
    assert frame["acc"].max() < 0.28
    runs = bs.load_runs(frame, metric="acc", task_loss="bpb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        fit = bs.ScalingModel("chinchilla", link="sigmoid", chance=0.25).fit(runs, **SETTINGS)
    messages = [str(w.message) for w in caught if issubclass(w.category, bs.DesignWarning)]
    assert any("transition point L0 is not identified" in m and "near chance" in m
               for m in messages), messages
    from bayescale.downstream import link_curve

    # Below the runs' losses the data exclude neither "still at chance" nor "jumped".
    below = link_curve(fit, loss=[0.2], prob=0.9).iloc[0]
    assert below.metric_lower < 0.26 and below.metric_upper > 0.6
    # Along compute the band widens from nothing at the runs towards the unknown jump.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = fit.forecast_metric(flops=[1e19, 1e23], prob=0.9, kind="mean")
    width = (table.metric_upper - table.metric_lower).to_numpy()
    assert width[1] > 2 * width[0] and table.metric_lower.iloc[1] < 0.26


# -- save and load ---------------------------------------------------------------------------

def test_save_load_round_trip(linked_fit, tmp_path):
    path = tmp_path / "linked.nc"
    linked_fit.save(path)
    loaded = bs.load_fit(path)
    assert loaded.link is not None and loaded.runs.outcome_names == {"metric": "acc",
                                                                     "task_loss": "bpb"}
    pd.testing.assert_frame_equal(loaded.forecast_metric(flops=[1e18, 1e19]),
                                  linked_fit.forecast_metric(flops=[1e18, 1e19]))
    np.testing.assert_array_equal(loaded.runs.outcome("metric"), linked_fit.runs.outcome("metric"))
    assert loaded.link.priors == linked_fit.link.priors
    plain = tmp_path / "plain.nc"
    linked_fit.with_link(None).save(plain)
    again = bs.load_fit(plain)
    assert again.link is None and again.runs.outcome_names == linked_fit.runs.outcome_names
    pd.testing.assert_frame_equal(again.forecast(flops=[1e19]), linked_fit.forecast(flops=[1e19]))


# -- command line ---------------------------------------------------------------------------

def test_cli_forecast_and_risk_with_metric(tmp_path, capsys, linked_fit):
    from bayescale.cli import main

    path = tmp_path / "linked.nc"
    linked_fit.save(path)
    assert main(["forecast", str(path), "--flops", "1e18", "1e19", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    metric = payload["metric_forecast"]
    assert metric["metric"] == "acc" and len(metric["forecast"]) == 2
    assert 0 < metric["forecast"][0]["metric_median"] < 1
    assert main(["risk", str(path), "--metric-target", "0.7", "--budget", "1e19",
                 "--prob", "0.8", "--json"]) == 0
    risk = json.loads(capsys.readouterr().out)["metric_risk"]
    assert risk["compute_to_reach"][0]["flops"] > 0 and 0 <= risk["prob_above"][0]["prob_0.7"] <= 1
    assert main(["risk", str(path), "--metric-target", "0.7", "--budget", "1e19"]) == 0
    text = capsys.readouterr().out
    assert "P(acc >= target)" in text and "Compute to reach the acc target" in text


def test_cli_fits_a_metric_from_csv(tmp_path, capsys):
    from bayescale.cli import main

    csv = tmp_path / "runs.csv"
    ladder_frame().to_csv(csv, index=False)
    code = main(["forecast", str(csv), "--metric-col", "acc", "--task-loss-col", "bpb",
                 "--chance", "0.25", "--flops", "1e19", "--draws", "200", "--tune", "200",
                 "--chains", "2", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Forecast of observed acc (link reads bpb; chance 0.25; two-stage fit)" in out
    assert main(["forecast", str(csv), "--chance", "0.25", "--flops", "1e19"]) == 2
    assert "--task-loss-col and --chance describe a metric: give --metric-col too" in \
        capsys.readouterr().err


# -- plots and report ----------------------------------------------------------------------

def test_plots_and_report_section(linked_fit, tmp_path):
    import matplotlib.pyplot as plt

    ax = linked_fit.plot_metric(flops=[1e20])
    assert ax.get_ylabel() == "acc" and len(ax.collections) >= 3

    left, right = linked_fit.plot_link()
    assert right.get_xlabel() == "bpb (lower is better)" and right.xaxis_inverted()
    plt.close("all")
    from bayescale.report import _Builder, _metric_section

    builder = _Builder(40)  # the section alone: the rest of a report is tested elsewhere
    _metric_section(builder, linked_fit, [1e20])
    blocks = builder.blocks
    assert blocks[0].text == "From loss to acc"
    assert sorted(b.name for b in blocks if b.kind == "figure") == ["link", "metric"]
    tables = [b.table for b in blocks if b.kind == "table"]
    assert "median acc" in tables[0].columns and len(tables[0]) == 1
    assert any("the transition point L0 lies inside their loss range" in (b.text or "")
               for b in blocks if b.kind == "paragraph")
