"""Plots: each function draws the tables the analysis made, with readable axes and no clashes."""

from __future__ import annotations

import itertools
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.ticker import LogFormatterMathtext

import bayescale as bs
from bayescale.plotting import (
    plot_allocation,
    plot_backtest,
    plot_fit,
    plot_isoflop,
    plot_posterior,
    plot_risk,
    sci_label,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def overlapping_texts(fig):
    """Pairs of visible texts (titles, axis labels, tick labels) whose boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        candidates = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = sorted(limits)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                # only ticks inside the view limits are drawn
                if tick.get_visible() and low <= tick.get_loc() <= high:
                    candidates += [tick.label1, tick.label2]
        for text in candidates:
            if text.get_visible() and text.get_text().strip():
                box = text.get_window_extent(renderer)
                if box.width > 0:
                    texts.append((text.get_text(), box.shrunk(0.98, 0.9)))
    if fig._suptitle is not None:
        texts.append((fig._suptitle.get_text(), fig._suptitle.get_window_extent(renderer)))
    clashes = []
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        if box_a.overlaps(box_b):
            clashes.append((a, b))
    return clashes


def data(line):
    return tuple(np.asarray(v, dtype=float) for v in line.get_data())


def lines_labelled(ax, prefix):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


# -- plot_fit ------------------------------------------------------------------------------

def test_plot_fit_draws_bands_runs_and_forecasts(chinchilla_fit):
    budgets = [1e24, 1e25]
    with warnings.catch_warnings():
        warnings.simplefilter("error", bs.ExtrapolationWarning)  # the figure must not warn
        ax = plot_fit(chinchilla_fit, flops=budgets)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    runs = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(runs) == 1 and len(runs[0].get_offsets()) == len(chinchilla_fit.runs)
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 1
    x, y = data(errorbars[0].lines[0])
    table = chinchilla_fit.forecast(flops=budgets, prob=0.9)
    np.testing.assert_allclose(x, budgets)
    np.testing.assert_allclose(y, table["loss_median"])
    largest = lines_labelled(ax, "largest run")[0]
    assert largest.get_xdata()[0] == chinchilla_fit.runs.frame["flops"].max()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "FLOPs" in ax.get_xlabel() and "nats/token" in ax.get_ylabel()
    assert {"90% band", "50% band", "largest run", "forecast (median, 90%)"} <= set(legend_texts(ax))
    # the x axis reads 10^22, not 1e22
    formatter = ax.xaxis.get_major_formatter()
    assert isinstance(formatter, LogFormatterMathtext)
    assert "10^{22}" in formatter(1e22)
    # a colour bar for model size, with its own label
    assert any("model size N" in a.get_ylabel() for a in ax.figure.axes if a is not ax)
    assert overlapping_texts(ax.figure) == []


def test_plot_fit_compute_law_has_no_colour_bar(compute_fit):
    ax = plot_fit(compute_fit)
    assert len(ax.figure.axes) == 1
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert "median (compute law)" in legend_texts(ax)
    assert overlapping_texts(ax.figure) == []


def test_plot_fit_into_given_axes(chinchilla_fit):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    assert plot_fit(chinchilla_fit, ax=right) is right
    assert not left.has_data()


def test_loss_ticks_are_plain_numbers(chinchilla_fit):
    ax = plot_fit(chinchilla_fit)
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3
    for label in labels:
        float(label)  # "2.5", not "$2.5\\times10^0$"


def test_sci_label():
    assert sci_label(1e22) == r"$10^{22}$"
    assert sci_label(3e23) == r"$3\times10^{23}$"
    assert sci_label(9.99e22) == r"$10^{23}$"


# -- plot_isoflop --------------------------------------------------------------------------

def test_plot_isoflop_marks_the_optimum_from_the_allocation_table(chinchilla_fit):
    levels = [1e19, 1e20, 1e21]
    ax = plot_isoflop(chinchilla_fit, flops=levels)
    curves = [line for line in ax.get_lines() if line.get_label().startswith("C = ")]
    assert [c.get_label() for c in curves] == [f"C = {sci_label(c)} FLOPs" for c in levels]
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 1
    x, _ = data(errorbars[0].lines[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = chinchilla_fit.optimal_allocation(flops=levels, prob=0.9)
    np.testing.assert_allclose(x, table["params_median"])
    # each curve has its minimum next to the marked optimum (within one grid step of 10^(2/49))
    for curve, n_opt in zip(curves, table["params_median"]):
        n, loss = data(curve)
        assert abs(np.log10(n[np.argmin(loss)] / n_opt)) < 0.1
    assert ax.get_xscale() == "log" and "model size N" in ax.get_xlabel()
    assert overlapping_texts(ax.figure) == []


def test_plot_isoflop_default_levels_and_dashed_extrapolation(chinchilla_fit):
    largest = chinchilla_fit.runs.frame["flops"].max()
    ax = plot_isoflop(chinchilla_fit, flops=[1e20, largest * 100])
    styles = [line.get_linestyle() for line in ax.get_lines() if line.get_label().startswith("C = ")]
    assert styles == ["-", "--"]
    default = plot_isoflop(chinchilla_fit)
    assert 2 <= len([ln for ln in default.get_lines() if ln.get_label().startswith("C = ")]) <= 6


def test_plot_isoflop_needs_n_and_d(compute_fit):
    with pytest.raises(bs.ModelMismatchError, match="needs a law of N and D"):
        plot_isoflop(compute_fit)


# -- plot_allocation -----------------------------------------------------------------------

def test_plot_allocation_draws_the_allocation_table(chinchilla_fit):
    ax = plot_allocation(chinchilla_fit, flops=[1e24], n_points=20)
    medians = {line.get_label().split(":")[0]: line for line in ax.get_lines()
               if line.get_label().startswith("optimal")}
    assert set(medians) == {"optimal model size N (parameters)", "optimal training tokens D"}
    flops, n = data(medians["optimal model size N (parameters)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        table = chinchilla_fit.optimal_allocation(flops=flops, prob=0.9)
    np.testing.assert_allclose(n, table["params_median"])
    np.testing.assert_allclose(data(medians["optimal training tokens D"])[1], table["tokens_median"])
    assert flops.max() == pytest.approx(1e24)
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 2
    assert ax.get_yscale() == "log" and "count" in ax.get_ylabel()
    assert overlapping_texts(ax.figure) == []


def test_plot_allocation_needs_n_and_d(compute_fit):
    with pytest.raises(bs.ModelMismatchError):
        plot_allocation(compute_fit)


# -- plot_risk -----------------------------------------------------------------------------

def test_plot_risk_curves_and_confidence_markers(chinchilla_fit):
    targets = [2.0, 2.1]
    probs = (0.5, 0.8, 0.95)
    ax = plot_risk(chinchilla_fit, targets, flops=[3e22], probs=probs)
    for target in targets:
        curve = lines_labelled(ax, f"P(loss ≤ {target:g})")[0]
        flops, prob = data(curve)
        assert np.all(np.diff(prob) >= -1e-12)  # more compute never lowers the chance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ExtrapolationWarning)  # the grid runs past the data
            expected_prob = chinchilla_fit.prob_below(target, flops=flops)["prob"]
        np.testing.assert_allclose(prob, expected_prob)
        marks = [line for line in ax.get_lines() if line.get_color() == curve.get_color()
                 and line.get_marker() not in ("None", "", None) and len(line.get_xdata()) == 1]
        expected = [chinchilla_fit.compute_to_reach(target, prob=p) for p in probs]
        np.testing.assert_allclose(sorted(m.get_xdata()[0] for m in marks), sorted(expected))
        np.testing.assert_allclose(sorted(m.get_ydata()[0] for m in marks), sorted(probs))
    assert ax.get_ylim() == (-0.02, 1.02)
    assert "budget asked about" in legend_texts(ax)
    assert ax.get_ylabel() == "P(loss ≤ target)" and "FLOPs" in ax.get_xlabel()
    assert overlapping_texts(ax.figure) == []


def test_plot_risk_lists_unreachable_levels(compute_fit):
    e = compute_fit.summary().loc["E", "median"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot_risk(compute_fit, [e * 0.97], probs=(0.5, 0.8))
    assert any("not reached" in t for t in legend_texts(ax))


# -- plot_posterior ------------------------------------------------------------------------

def test_plot_posterior_grid(chinchilla_fit):
    axes = plot_posterior(chinchilla_fit)
    names = list(chinchilla_fit.law.paper_parameters)
    assert axes.shape == (len(names), len(names))
    summary = chinchilla_fit.summary(prob=0.94)
    for i, name in enumerate(names):
        diagonal = axes[i, i]
        assert len(diagonal.patches) == 30  # histogram bars
        medians = [line.get_xdata()[0] for line in diagonal.get_lines()]
        assert medians[0] == pytest.approx(summary.loc[name, "median"])
        assert medians[1:] == pytest.approx([summary.loc[name, "hdi_lower"], summary.loc[name, "hdi_upper"]])
        for j in range(i + 1, len(names)):
            assert not axes[i, j].axison
        for j in range(i):
            assert len(axes[i, j].collections[0].get_offsets()) <= 2 * 800
    assert axes[1, 0].get_yscale() == "log"  # A
    assert axes[-1, 0].get_xlabel().startswith("$E$")
    assert overlapping_texts(axes[0, 0].figure) == []


def test_plot_posterior_rejects_unknown_parameter(chinchilla_fit):
    with pytest.raises(ValueError, match="unknown parameter"):
        plot_posterior(chinchilla_fit, var_names=["E", "gamma"])


# -- plot_backtest -------------------------------------------------------------------------

def backtest_table():
    actual = np.array([2.00, 2.10, 2.20, 2.30])
    return pd.DataFrame({"flops": [1e21, 2e21, 4e21, 8e21], "loss": actual,
                         "loss_median": actual * [1.01, 0.99, 1.0, 1.1],
                         "loss_lower_50": actual * 0.995, "loss_upper_50": actual * 1.005,
                         "loss_lower_90": actual * [0.98, 0.97, 0.98, 1.05],
                         "loss_upper_90": actual * [1.03, 1.02, 1.02, 1.15]})


def test_plot_backtest_counts_covered_runs():
    table = backtest_table()
    ax = plot_backtest(table)
    texts = legend_texts(ax)
    assert "forecast, 90% interval covers the run (3/4)" in texts
    assert "interval misses the run (1)" in texts
    assert "perfect forecast" in texts
    covered, missed = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    np.testing.assert_allclose(data(covered.lines[0])[0], table["loss"][:3])
    np.testing.assert_allclose(data(missed.lines[0])[1], table["loss_median"][3:])
    assert "actual" in ax.get_xlabel() and "nats/token" in ax.get_ylabel()
    assert overlapping_texts(ax.figure) == []


def test_plot_backtest_accepts_a_result_object():
    class Result:
        table = backtest_table()

    ax = plot_backtest(Result())
    assert "4 held-out runs" in ax.get_title()


def test_overlap_check_can_fail():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks([0.0, 0.01], ["a long tick label", "another long label"])
    assert overlapping_texts(fig) != []


def test_plot_posterior_wide_coefficients_stay_legible(compute_fit):
    # A poorly identified fit: A spans two decades, which once crowded its tick labels.
    axes = plot_posterior(compute_fit)
    assert axes.shape == (3, 3)
    assert overlapping_texts(axes[0, 0].figure) == []
