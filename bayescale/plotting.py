"""Figures drawn from tables the analysis made (matplotlib only, imported lazily).

Every function takes ``ax=None`` (a new figure when omitted) and returns the Axes
(:func:`plot_posterior` returns its grid of Axes). The functions ask the fit for tables —
:meth:`~bayescale.ScalingFit.forecast`, :meth:`~bayescale.ScalingFit.prob_below`,
:meth:`~bayescale.ScalingFit.optimal_allocation`, a backtest's ``table`` — and draw them; they
compute no statistics of their own.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["plot_fit", "plot_isoflop", "plot_allocation", "plot_risk", "plot_posterior",
           "plot_backtest", "plot_plan", "plot_metric_forecast", "plot_link"]

BAND_COLOR = "#1f5fa8"
ACCENT = "#c0392b"
LEVEL_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
# Noise parameters: axis label (mathtext) and whether a log axis suits them; each law
# declares the labels of its own parameters (ScalingLaw.labels).
_PARAMETER_LABELS = {
    "sigma": (r"$\sigma$ (log loss)", False),
    "nu": (r"$\nu$", False),
}


# -- shared helpers ------------------------------------------------------------------------

def _new_axes(ax: "Axes | None", figsize: tuple[float, float] = (7.5, 5.0)) -> "Axes":
    import matplotlib.pyplot as plt

    from ._validate import axes

    if axes("ax", ax) is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _log_axis(axis: Any) -> None:
    """Decade ticks written as 10^k on a log axis (an Axis, e.g. ``ax.xaxis``)."""
    from matplotlib.ticker import LogFormatterMathtext, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_major_formatter(LogFormatterMathtext(base=10))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(NullFormatter())


def _log_axes(ax: "Axes") -> None:
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)


def _loss_axis(ax: "Axes") -> None:
    """Log-scale loss axis with plain round numbers (2.0, 2.5, ...) as ticks.

    Loss rarely spans a decade, so decade ticks would leave the axis bare; round values
    chosen by MaxNLocator read better.
    """
    from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())


def _budgets(values: Any, name: str = "flops") -> np.ndarray:
    from ._validate import positives

    if values is None:
        return np.array([])
    return positives(name, values)


def _grid_points(n_points: Any) -> int:
    from ._validate import integer

    return integer("n_points", n_points, 2, 100_000)


@contextlib.contextmanager
def _quiet_extrapolation() -> Iterator[None]:
    """Silence ExtrapolationWarning: a figure shows the distance past the data itself."""
    from .exceptions import ExtrapolationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        yield


def _compute_grid(fit: "ScalingFit", flops: np.ndarray, n_points: int) -> np.ndarray:
    frame = fit.runs.frame
    low = float(frame["flops"].min())
    high = max(float(frame["flops"].max()), float(flops.max()) if flops.size else 0.0)
    return np.geomspace(low, high, n_points)


def _mark_largest_run(ax: "Axes", fit: "ScalingFit") -> None:
    ax.axvline(float(fit.runs.frame["flops"].max()), color="0.4", ls="--", lw=1,
               label="largest run")


def sci_label(value: float, digits: int = 2) -> str:
    """A number as mathtext ``m×10^k`` (``"3×10^{23}"``), for annotations."""
    if not np.isfinite(value):
        return "∞" if value > 0 else "n/a"
    exponent = int(math.floor(math.log10(abs(value)))) if value else 0
    mantissa = value / 10 ** exponent
    text = f"{mantissa:.{digits}g}"
    if text == "10":
        text, exponent = "1", exponent + 1
    if text == "1":
        return rf"$10^{{{exponent}}}$"
    return rf"${text}\times10^{{{exponent}}}$"


# -- loss vs compute -----------------------------------------------------------------------

def plot_fit(fit: "ScalingFit", flops: Any = None, *, kind: str = "observed",
             ax: "Axes | None" = None, n_points: int = 60) -> "Axes":
    """Runs (loss vs compute, coloured by model size) with the law's median and bands.

    The law is drawn along the posterior-median compute-optimal frontier (or against compute
    for a compute law), from the smallest run to the largest budget in ``flops``; a dashed
    vertical line marks the largest run, beyond which the curve is a forecast.

    Parameters
    ----------
    fit : ScalingFit
    flops : sequence of float, optional
        Budgets in FLOPs to extrapolate to (marked with their median and 90% band).
    kind : {"observed", "mean"}
        Band kind, as in :meth:`ScalingFit.forecast`.
    ax : matplotlib Axes, optional
    n_points : int
        Points along the curve.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.colors import LogNorm

    ax = _new_axes(ax)
    fit, held_note = fit.for_presentation()   # a law of extra inputs: hold them, and say so
    frame = fit.runs.frame
    budgets = _budgets(flops)
    grid = _compute_grid(fit, budgets, _grid_points(n_points))
    with _quiet_extrapolation():
        wide = fit.forecast(flops=grid, prob=0.9, kind=kind)
        narrow = fit.forecast(flops=grid, prob=0.5, kind=kind)
        marked = fit.forecast(flops=budgets, prob=0.9, kind=kind) if budgets.size else None

    ax.fill_between(wide["flops"], wide["loss_lower"], wide["loss_upper"], color=BAND_COLOR,
                    alpha=0.18, lw=0, label="90% band")
    ax.fill_between(narrow["flops"], narrow["loss_lower"], narrow["loss_upper"], color=BAND_COLOR,
                    alpha=0.35, lw=0, label="50% band")
    frontier = "compute-optimal " if fit.law.splits_compute else ""
    ax.plot(wide["flops"], wide["loss_median"], color=BAND_COLOR, lw=1.8,
            label=f"median ({frontier}{fit.law.name} law)")
    if np.isfinite(frame["params"]).all():
        points = ax.scatter(frame["flops"], frame["loss"], c=frame["params"], cmap="viridis",
                            norm=LogNorm(), s=14, edgecolor="none", alpha=0.85, zorder=3,
                            label=f"runs (n={len(frame)})")
        colorbar = ax.figure.colorbar(points, ax=ax, pad=0.01)
        colorbar.set_label("model size N (parameters)")
        _log_axis(colorbar.ax.yaxis)
    else:
        ax.scatter(frame["flops"], frame["loss"], color="0.25", s=14, zorder=3,
                   label=f"runs (n={len(frame)})")
    _mark_largest_run(ax, fit)
    if marked is not None:
        ax.errorbar(marked["flops"], marked["loss_median"],
                    yerr=[marked["loss_median"] - marked["loss_lower"],
                          marked["loss_upper"] - marked["loss_median"]],
                    fmt="D", color=ACCENT, ms=5, capsize=3, zorder=4,
                    label="forecast (median, 90%)")
    _log_axes(ax)
    _loss_axis(ax)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("final loss (nats/token)")
    held = ", ".join(f"{name} = {value:.3g}" for name, value in (fit.held_inputs or {}).items())
    ax.set_title(f"{fit.law.name} law fitted to {len(frame)} runs ({kind} bands)"
                 + (f"\nat {held}" if held else ""), fontsize=None if not held else 10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return ax


# -- IsoFLOP profiles ----------------------------------------------------------------------

def _default_levels(fit: "ScalingFit", budgets: np.ndarray) -> np.ndarray:
    """Whole decades of compute covering the runs, plus the budgets asked for (at most 6)."""
    flops = fit.runs.frame["flops"]
    low = math.ceil(math.log10(flops.min()))
    high = math.floor(math.log10(flops.max()))
    levels = 10.0 ** np.arange(low, high + 1)
    if levels.size > 4:  # keep the figure legible: every other decade, ending at the largest
        levels = levels[::-1][::2][::-1]
    return np.unique(np.concatenate([levels, budgets]))[-6:]


def plot_isoflop(fit: "ScalingFit", flops: Any = None, *, kind: str = "mean",
                 prob: float = 0.9, span: float = 10.0, ax: "Axes | None" = None,
                 n_points: int = 50) -> "Axes":
    """IsoFLOP profiles: loss against model size at fixed compute, with the optimum.

    For each compute level C the law's loss is drawn against N with D = C / (6·N), as median
    and ``prob`` band; the compute-optimal N (median and band over the posterior, from
    :meth:`ScalingFit.optimal_allocation`) is marked on each curve. Runs whose compute lies
    within a factor 1.4 of a level are drawn in its colour.

    Parameters
    ----------
    fit : ScalingFit
        A fit of a law of N and D (e.g. ``"chinchilla"``).
    flops : sequence of float, optional
        Compute levels in FLOPs; by default whole decades inside the runs' range.
    kind : {"mean", "observed"}
        Band kind, as in :meth:`ScalingFit.forecast`; ``"mean"`` shows the law's expected
        loss (parameter uncertainty and, past the fitted range, the discrepancy δ; no noise).
    prob : float
        Band mass.
    span : float
        Each curve covers N_opt/span to N_opt·span.
    ax : matplotlib Axes, optional
    n_points : int
        Points per curve.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ModelMismatchError
        When the law has no model size input (a compute law).
    """
    from ._validate import real
    from .exceptions import ArgumentError, ModelMismatchError

    n_points = _grid_points(n_points)
    span = real("span", span)
    if not span > 1.0:
        raise ArgumentError(f"span = {span!r}: expected a factor > 1 (each curve covers "
                            "N_opt/span to N_opt·span)")
    if not fit.law.splits_compute:
        raise ModelMismatchError(f"an IsoFLOP plot needs a law of N and D; the {fit.law.name} "
                                 "law has no model size: fit the 'chinchilla' law")
    ax = _new_axes(ax)
    levels = _budgets(flops) if flops is not None else _default_levels(fit, np.array([]))
    frame = fit.runs.frame
    with _quiet_extrapolation():
        optimum = fit.optimal_allocation(flops=levels, prob=prob)
        curves = []
        for level, n_opt in zip(levels, optimum["params_median"]):
            n_grid = np.geomspace(n_opt / span, n_opt * span, n_points)
            curves.append(fit.forecast(params=n_grid, tokens=level / (6.0 * n_grid), prob=prob,
                                       kind=kind))
        at_optimum = fit.forecast(flops=levels, prob=prob, kind=kind)

    largest = float(frame["flops"].max())
    level_pct = round(100 * prob)
    for i, (level, curve) in enumerate(zip(levels, curves)):
        color = LEVEL_COLORS[i % len(LEVEL_COLORS)]
        style = "-" if level <= largest * 1.4 else "--"
        ax.fill_between(curve["params"], curve["loss_lower"], curve["loss_upper"], color=color,
                        alpha=0.15, lw=0)
        ax.plot(curve["params"], curve["loss_median"], color=color, lw=1.6, ls=style,
                label=f"C = {sci_label(level)} FLOPs")
        near = frame[np.abs(np.log10(frame["flops"] / level)) < 0.15]
        if len(near):
            ax.scatter(near["params"], near["loss"], color=color, s=16, edgecolor="white",
                       linewidth=0.4, zorder=3)
    lower_n, upper_n = optimum["params_lower"].to_numpy(), optimum["params_upper"].to_numpy()
    median_n = optimum["params_median"].to_numpy()
    ax.errorbar(median_n, at_optimum["loss_median"],
                xerr=[median_n - lower_n, upper_n - median_n],
                yerr=[at_optimum["loss_median"] - at_optimum["loss_lower"],
                      at_optimum["loss_upper"] - at_optimum["loss_median"]],
                fmt="o", color="black", ms=5, capsize=3, lw=1.2, zorder=4,
                label=f"compute-optimal N ({level_pct}% band)")
    ax.scatter([], [], color="0.5", s=16, label="runs within ×1.4 of a level")
    _log_axes(ax)
    _loss_axis(ax)
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title(f"IsoFLOP profiles of the {fit.law.name} law ({kind} loss, {level_pct}% bands)",
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="compute level\n(dashed: past the\nlargest run)", title_fontsize=8)
    return ax


# -- allocation ----------------------------------------------------------------------------

def plot_allocation(fit: "ScalingFit", flops: Any = None, *, prob: float = 0.9,
                    ax: "Axes | None" = None, n_points: int = 40) -> "Axes":
    """Compute-optimal model size N_opt and tokens D_opt against compute, with bands.

    Drawn from :meth:`ScalingFit.optimal_allocation` on a grid from the smallest run to the
    largest budget in ``flops``; the budgets themselves are marked and the runs' N and D are
    shown faintly for reference.

    Parameters
    ----------
    fit : ScalingFit
        A fit of a law of N and D.
    flops : sequence of float, optional
        Budgets in FLOPs to extend to and mark.
    prob : float
        Band mass.
    ax : matplotlib Axes, optional
    n_points : int
        Points along the curves.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from .exceptions import ModelMismatchError

    if not fit.law.splits_compute:
        raise ModelMismatchError(f"the {fit.law.name} law has no split of compute into N and D; "
                                 "fit the 'chinchilla' law")
    ax = _new_axes(ax)
    budgets = _budgets(flops)
    grid = _compute_grid(fit, budgets, _grid_points(n_points))
    with _quiet_extrapolation():
        table = fit.optimal_allocation(flops=grid, prob=prob)
        marked = fit.optimal_allocation(flops=budgets, prob=prob) if budgets.size else None
    frame = fit.runs.frame
    level = round(100 * prob)
    for column, color, name in (("params", "#1f5fa8", "model size N (parameters)"),
                                ("tokens", "#d95f02", "training tokens D")):
        ax.fill_between(table["flops"], table[f"{column}_lower"], table[f"{column}_upper"],
                        color=color, alpha=0.2, lw=0)
        ax.plot(table["flops"], table[f"{column}_median"], color=color, lw=1.8,
                label=f"optimal {name}: median, {level}% band")
        ax.scatter(frame["flops"], frame[column], color=color, s=6, alpha=0.25, lw=0)
        if marked is not None:
            ax.errorbar(marked["flops"], marked[f"{column}_median"],
                        yerr=[marked[f"{column}_median"] - marked[f"{column}_lower"],
                              marked[f"{column}_upper"] - marked[f"{column}_median"]],
                        fmt="D", color=color, mec="black", mew=0.6, ms=5, capsize=3, zorder=4)
    ax.scatter([], [], color="0.5", s=6, alpha=0.5, label="runs' N and D (faint)")
    _mark_largest_run(ax, fit)
    _log_axes(ax)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("parameters N / tokens D (count)")
    ax.set_title(f"Compute-optimal allocation (C = 6·N·D), {fit.law.name} law", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return ax


# -- risk ----------------------------------------------------------------------------------

def plot_risk(fit: "ScalingFit", targets: float | Sequence[float], flops: Any = None, *,
              probs: Sequence[float] = (0.5, 0.8, 0.95), ax: "Axes | None" = None,
              n_points: int = 60) -> "Axes":
    """P(loss ≤ target) against the compute budget, one curve per target.

    Curves come from :meth:`ScalingFit.prob_below`; the budget that reaches each target with
    confidence 50/80/95% (:meth:`ScalingFit.compute_to_reach`) is marked on its curve
    (unreachable levels are listed in the legend instead).

    Parameters
    ----------
    fit : ScalingFit
    targets : float or sequence of float
        Target losses (nats/token).
    flops : sequence of float, optional
        Budgets to mark; the x range runs from the smallest run to past every budget and
        every marked compute-to-reach (capped at 10^4 × the largest run).
    probs : sequence of float
        Confidence levels whose compute-to-reach is marked.
    ax : matplotlib Axes, optional
    n_points : int
        Points along each curve.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax)
    targets = [float(t) for t in np.atleast_1d(np.asarray(targets, dtype=float))]
    budgets = _budgets(flops)
    frame = fit.runs.frame
    largest = float(frame["flops"].max())
    with _quiet_extrapolation():
        reach = {t: [float(fit.compute_to_reach(t, prob=p)) for p in probs] for t in targets}
        finite = [c for row in reach.values() for c in row if np.isfinite(c)]
        # Frame the part of the curves that moves: from a decade below the earliest marked
        # budget (or the largest run) to past the last one, capped at 10^4 × the largest run.
        low = min([largest, *budgets, *finite]) / 10
        high = min(max([largest * 10, *(c * 3 for c in finite)]), largest * 1e4)
        if budgets.size:
            high = max(high, budgets.max() * 3)
        grid = np.geomspace(max(low, float(frame["flops"].min())), high, _grid_points(n_points))
        curves = {t: fit.prob_below(t, flops=grid) for t in targets}

    markers = ("o", "s", "^", "v", "P", "X")
    for i, target in enumerate(targets):
        color = LEVEL_COLORS[i % len(LEVEL_COLORS)]
        curve = curves[target]
        ax.plot(curve["flops"], curve["prob"], color=color, lw=1.8,
                label=f"P(loss ≤ {target:g})")
        unreachable = []
        for j, (p, c) in enumerate(zip(probs, reach[target])):
            if np.isfinite(c) and c <= grid[-1]:
                ax.plot([c], [p], marker=markers[j % len(markers)], color=color, mec="black",
                        mew=0.6, ms=7, ls="none", zorder=4)
            else:
                unreachable.append(f"{round(100 * p)}%")
        if unreachable:
            ax.plot([], [], ls="none",
                    label=f"  {'/'.join(unreachable)} not reached in this range")
    for j, p in enumerate(probs):
        ax.axhline(p, color="0.6", lw=0.8, ls=":")
        ax.plot([], [], marker=markers[j % len(markers)], color="0.5", mec="black", mew=0.6,
                ls="none", label=f"budget for {round(100 * p)}% confidence")
    for budget in budgets:
        ax.axvline(budget, color=ACCENT, lw=1, ls="-.")
    if budgets.size:
        ax.plot([], [], color=ACCENT, lw=1, ls="-.", label="budget asked about")
    _mark_largest_run(ax, fit)
    _log_axes(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("training compute budget C (FLOPs)")
    ax.set_ylabel("P(loss ≤ target)")
    ax.set_title(f"Chance of reaching each target loss, {fit.law.name} law "
                 "(one run, run-to-run noise included)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return ax


# -- posterior -----------------------------------------------------------------------------

def plot_posterior(fit: "ScalingFit", var_names: Sequence[str] | None = None, *,
                   ax: Any = None, max_points: int = 800, prob: float = 0.94) -> np.ndarray:
    """Marginals (diagonal) and pairwise scatter (lower triangle) of the paper's parameters.

    Each diagonal panel is a histogram of the draws with the median and the ``prob`` HDI from
    :meth:`ScalingFit.summary` marked; A and B go on log axes. Strong pairwise correlations
    (the ridge between a coefficient and its exponent) show in the scatter panels.

    Parameters
    ----------
    fit : ScalingFit
    var_names : sequence of str, optional
        Parameters to show; default the law's paper parameters (E, A, B, alpha, beta).
    ax : array of matplotlib Axes, optional
        A (k, k) grid to draw into; a new figure when omitted.
    max_points : int
        Draws shown in each scatter panel (evenly thinned).
    prob : float
        HDI mass marked on the marginals.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (k, k)
    """
    import matplotlib.pyplot as plt

    names = list(var_names) if var_names is not None else list(fit.law.paper_parameters)
    draws = fit.paper_draws()
    draws.update({k: v for k, v in fit.theta().items() if k not in draws})
    unknown = [n for n in names if n not in draws]
    if unknown:
        from .exceptions import ArgumentError

        raise ArgumentError(f"unknown parameter(s) {unknown}; available: {sorted(draws)}")
    summary = fit.summary(prob=prob, include_sampled=True)
    k = len(names)
    if ax is None:
        size = 1.9 * k + 0.6
        _, ax = plt.subplots(k, k, figsize=(size, size), layout="constrained", squeeze=False)
    axes = np.asarray(ax).reshape(k, k)
    step = max(1, len(draws[names[0]]) // max_points)
    labels = {**_PARAMETER_LABELS, **fit.law.labels()}  # the law declares its own
    for i, y_name in enumerate(names):
        for j, x_name in enumerate(names):
            panel = axes[i, j]
            if j > i:
                panel.set_axis_off()
                continue
            x_label, x_log = labels.get(x_name, (x_name, False))
            y_label, y_log = labels.get(y_name, (y_name, False))
            x = draws[x_name]
            if i == j:
                # Identical draws (a one-draw fit) have no spread to put log bins on.
                bins = np.geomspace(x.min(), x.max(), 31) if x_log and x.max() > x.min() else 30
                panel.hist(x, bins=bins, color=BAND_COLOR, alpha=0.55, edgecolor="white",
                           linewidth=0.3)
                if x_name in summary.index:
                    row = summary.loc[x_name]
                    panel.axvline(row["median"], color="black", lw=1.2)
                    for edge in (row["hdi_lower"], row["hdi_upper"]):
                        panel.axvline(edge, color="black", lw=0.9, ls="--")
                    symbol = x_label.split(" (")[0]
                    panel.set_title(f"{symbol} = {_short(row['median'])} "
                                    f"[{_short(row['hdi_lower'])}, {_short(row['hdi_upper'])}]",
                                    fontsize=8)
                panel.set_yticks([])
            else:
                panel.scatter(x[::step], draws[y_name][::step], s=3, color=BAND_COLOR,
                              alpha=0.35, lw=0, rasterized=True)
                _parameter_axis(panel.yaxis, y_log, "y", draws[y_name])
                if j == 0:
                    panel.set_ylabel(y_label)
                else:
                    panel.tick_params(axis="y", which="both", labelleft=False)
            _parameter_axis(panel.xaxis, x_log, "x", x)
            if i == k - 1:
                panel.set_xlabel(x_label)
            else:
                panel.tick_params(axis="x", which="both", labelbottom=False)
            panel.tick_params(labelsize=7)
    # share x limits down each column so the grid reads as one picture
    for j in range(k):
        limits = axes[j, j].get_xlim()
        for i in range(j + 1, k):
            axes[i, j].set_xlim(limits)
        for jj in range(j):
            axes[j, jj].set_ylim(limits)
    fig = axes[0, 0].figure
    level = round(100 * prob)
    fig.suptitle(f"Posterior of the {fit.law.name} law ({fit.n_draws} draws; "
                 f"lines: median and {level}% HDI)", fontsize=10)
    return axes


def _short(value: float) -> str:
    """Compact number for panel titles: 1950 rather than 1.95e+03."""
    if 1e3 <= abs(value) < 1e6:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _parameter_axis(axis: Any, log: bool, which: str, values: np.ndarray) -> None:
    """Few, plainly written ticks on one axis of a posterior panel (log for A and B)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    if log:
        axis.axes.set_xscale("log") if which == "x" else axis.axes.set_yscale("log")
        # 1-2-5 steps within a decade; whole decades only (at most four) when the draws
        # span more, so the labels of a narrow panel never run into each other
        decades = math.log10(float(np.max(values)) / float(np.min(values)))
        subs = (1.0, 2.0, 5.0) if decades <= 1.0 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=5))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_locator(MaxNLocator(nbins=3))


# -- backtest ------------------------------------------------------------------------------

def plot_backtest(result: Any, *, ax: "Axes | None" = None) -> "Axes":
    """Forecast against actual loss for held-out runs, with the forecast intervals.

    Parameters
    ----------
    result : backtest result or pandas.DataFrame
        The value of :func:`bayescale.backtest` (its ``table``) or that table itself: one row
        per held-out run with ``loss`` (actual), ``loss_median`` and ``loss_lower_<p>`` /
        ``loss_upper_<p>`` bounds (or ``loss_lower``/``loss_upper``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import pandas as pd

    from .exceptions import ArgumentError, ArgumentTypeError

    table = getattr(result, "table", result)
    if not isinstance(table, pd.DataFrame):
        raise ArgumentTypeError(f"result is a {type(result).__name__}: expected the value of "
                                "bayescale.backtest (or its .table)")
    medians = [c for c in ("loss_median", "median", "forecast") if c in table.columns]
    actuals = [c for c in ("actual", "loss") if c in table.columns]
    if not medians or not actuals or table.empty:
        raise ArgumentError(f"result has {len(table)} rows and columns {list(table.columns)}: "
                            "expected held-out runs with 'loss' and 'loss_median' columns")
    bands = _band_columns(table)
    ax = _new_axes(ax, figsize=(6.5, 5.5))
    actual_col = "actual" if "actual" in table.columns else "loss"
    median_col = next(c for c in ("loss_median", "median", "forecast") if c in table.columns)
    actual = table[actual_col].to_numpy(dtype=float)
    median = table[median_col].to_numpy(dtype=float)
    widest = max(bands) if bands else None
    if widest is not None:
        lower, upper = (table[c].to_numpy(dtype=float) for c in bands[widest])
        inside = (lower <= actual) & (actual <= upper)
        ax.errorbar(actual[inside], median[inside],
                    yerr=[median[inside] - lower[inside], upper[inside] - median[inside]],
                    fmt="o", color=BAND_COLOR, ms=4, capsize=2, lw=1, alpha=0.8,
                    label=f"forecast, {round(100 * widest)}% interval covers the run "
                          f"({inside.sum()}/{inside.size})")
        if (~inside).any():
            ax.errorbar(actual[~inside], median[~inside],
                        yerr=[median[~inside] - lower[~inside], upper[~inside] - median[~inside]],
                        fmt="o", color=ACCENT, ms=4, capsize=2, lw=1, alpha=0.9,
                        label=f"interval misses the run ({(~inside).sum()})")
    else:
        ax.scatter(actual, median, color=BAND_COLOR, s=16, label="forecast median")
    span = np.concatenate([actual, median])
    low, high = float(span.min()), float(span.max())
    pad = 0.05 * (high - low or high)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.4", lw=1, ls="--",
            label="perfect forecast")
    ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel("actual loss of the held-out run (nats/token)")
    ax.set_ylabel("forecast loss (nats/token)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Backtest: forecasts of {len(table)} held-out runs", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return ax


def _band_columns(table: Any) -> dict[float, tuple[str, str]]:
    """Map band mass → (lower, upper) column names found in a backtest table."""
    bands: dict[float, tuple[str, str]] = {}
    for column in table.columns:
        if column.startswith("loss_lower_"):
            suffix = column[len("loss_lower_"):]
            upper = f"loss_upper_{suffix}"
            if upper in table.columns:
                try:
                    mass = float(suffix) / (100.0 if float(suffix) > 1 else 1.0)
                except ValueError:
                    continue
                bands[mass] = (column, upper)
    if not bands and {"loss_lower", "loss_upper"} <= set(table.columns):
        bands[float(getattr(table, "attrs", {}).get("prob", 0.9))] = ("loss_lower", "loss_upper")
    return bands


def plot_plan(plan: Any, fit: "ScalingFit | None" = None, *, ax: "Axes | None" = None) -> "Axes":
    """Expected reduction per unit cost of every candidate pilot, over the (N, D) plane.

    Draws the table of :meth:`~bayescale.ScalingFit.plan_runs`: each candidate is a square
    coloured by its expected reduction per unit cost (per FLOP unless the pool gave its own
    cost); the greedy picks are circled and numbered, and with ``fit`` the runs already
    trained are shown as dots. For a compute law (no N, D) it draws reduction per cost
    against the pilot's FLOPs instead.

    Parameters
    ----------
    plan : pandas.DataFrame
        The result of ``fit.plan_runs(...)``.
    fit : ScalingFit, optional
        The fit the plan came from, to show its runs.
    ax : matplotlib Axes, optional
    """
    import matplotlib.colors as mcolors

    ax = _new_axes(ax)
    attrs = plan.attrs
    objective = {"band": f"{round(100 * attrs.get('prob', 0.9))}% band of loss",
                 "prob": "variance of P(loss ≤ target)",
                 "split": "tokens/param band"}.get(attrs.get("objective"), "objective")
    value = plan["per_cost"].to_numpy(dtype=float)
    picks = plan[plan["pick"] > 0].sort_values("pick")
    unit = "FLOP" if np.allclose(plan["cost"], plan["flops"]) else "unit cost"
    where = f"at {sci_label(attrs['target_flops'])} FLOPs" if "target_flops" in attrs else ""
    title = f"Expected reduction of the {objective} {where} per {unit}"
    if plan["params"].isna().all():
        order = np.argsort(plan["flops"].to_numpy())
        ax.plot(plan["flops"].to_numpy()[order], value[order], "o-", color=BAND_COLOR)
        ax.plot(picks["flops"], picks["per_cost"], "o", ms=14, mfc="none", mec=ACCENT, mew=2)
        for _, row in picks.iterrows():
            ax.annotate(str(int(row["pick"])), (row["flops"], row["per_cost"]),
                        textcoords="offset points", xytext=(9, 9), color=ACCENT)
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlabel("pilot compute C (FLOPs)")
        ax.set_ylabel(f"expected reduction per {unit}")
        ax.set_title(title, fontsize=10)
        return ax
    positive = value[value > 0]
    norm = (mcolors.LogNorm(vmin=positive.min(), vmax=positive.max())
            if positive.size and positive.max() > positive.min() else None)
    shown = np.where(value > 0, value, positive.min() if positive.size else 1.0)
    points = ax.scatter(plan["params"], plan["tokens"], c=shown, norm=norm, cmap="viridis",
                        marker="s", s=70, edgecolors="none", zorder=2)
    ax.figure.colorbar(points, ax=ax, label=f"expected reduction per {unit}")
    nonpositive = value <= 0
    if nonpositive.any():
        ax.scatter(plan["params"][nonpositive], plan["tokens"][nonpositive], marker="x",
                   color="0.4", s=25, zorder=3, label="no expected reduction")
    if fit is not None and "params" in fit.law.inputs:
        runs = fit.runs.frame
        ax.scatter(runs["params"], runs["tokens"], s=8, color="0.15", zorder=3,
                   label=f"trained runs ({len(runs)})")
    ax.scatter(picks["params"], picks["tokens"], s=260, facecolors="none", edgecolors=ACCENT,
               linewidths=2, zorder=4, label="greedy picks (in order)")
    for _, row in picks.iterrows():
        ax.annotate(str(int(row["pick"])), (row["params"], row["tokens"]),
                    textcoords="offset points", xytext=(9, 7), color=ACCENT,
                    fontweight="bold", zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    n_lim, d_lim = ax.get_xlim(), ax.get_ylim()
    c_budget = attrs.get("budget")
    if c_budget and unit == "FLOP":
        n_line = np.geomspace(*n_lim, 50)
        ax.plot(n_line, c_budget / (6 * n_line), "--", color="0.5", lw=1,
                label=f"budget {sci_label(c_budget)} FLOPs (6·N·D)")
    ax.set_xlim(n_lim)
    ax.set_ylim(d_lim)
    _log_axes(ax)
    _log_axis(ax.yaxis)
    ax.set_xlabel("pilot model size N (parameters)")
    ax.set_ylabel("pilot training tokens D")
    if "target_params" in attrs and np.isfinite(attrs["target_params"]):
        title += (f"\n(target run: N ≈ {sci_label(attrs['target_params'])}, "
                  f"D ≈ {sci_label(attrs['target_tokens'])})")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return ax


# -- downstream metric (issue 16) ------------------------------------------------------------

def plot_metric_forecast(fit: "ScalingFit", flops: Any = None, *, kind: str = "observed",
                         ax: "Axes | None" = None, n_points: int = 60) -> "Axes":
    """The metric (accuracy) against compute: runs, median, 50% and 90% bands.

    The curve follows the posterior-median compute-optimal frontier, as :func:`plot_fit`;
    a dashed line marks the largest run and a dotted one the chance level.

    Parameters
    ----------
    fit : ScalingFit
        A fit with a link (``ScalingModel(..., link="sigmoid")``).
    flops : sequence of float, optional
        Budgets in FLOPs to extrapolate to (marked with their median and 90% band).
    kind : {"observed", "mean"}
        Band kind, as in :meth:`ScalingFit.forecast_metric`.
    ax : matplotlib Axes, optional
    n_points : int
        Points along the curve.

    Returns
    -------
    matplotlib.axes.Axes
    """
    fit, _ = fit.for_presentation()   # a law of extra inputs: held as in plot_fit
    ax = _new_axes(ax)
    budgets = _budgets(flops)
    grid = _compute_grid(fit, budgets, _grid_points(n_points))
    with _quiet_extrapolation():
        wide = fit.forecast_metric(flops=grid, prob=0.9, kind=kind)
        narrow = fit.forecast_metric(flops=grid, prob=0.5, kind=kind)
        marked = fit.forecast_metric(flops=budgets, prob=0.9, kind=kind) if budgets.size else None
    name = wide.attrs["metric"]
    ax.fill_between(wide["flops"], wide["metric_lower"], wide["metric_upper"], color=BAND_COLOR,
                    alpha=0.18, lw=0, label="90% band")
    ax.fill_between(narrow["flops"], narrow["metric_lower"], narrow["metric_upper"],
                    color=BAND_COLOR, alpha=0.35, lw=0, label="50% band")
    ax.plot(wide["flops"], wide["metric_median"], color=BAND_COLOR, lw=1.8, label="median")
    ax.scatter(fit.runs.frame["flops"], fit.link.observed_metric, color="0.25", s=14, zorder=3,
               label=f"runs (n={len(fit.runs)})")
    ax.axhline(fit.link.chance, color="0.5", ls=":", lw=1, label=f"chance ({fit.link.chance:g})")
    _mark_largest_run(ax, fit)
    if marked is not None:
        ax.errorbar(marked["flops"], marked["metric_median"],
                    yerr=[marked["metric_median"] - marked["metric_lower"],
                          marked["metric_upper"] - marked["metric_median"]],
                    fmt="D", color=ACCENT, ms=5, capsize=3, zorder=4,
                    label="forecast (median, 90%)")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_ylim(min(fit.link.chance, float(np.min(fit.link.observed_metric))) - 0.02, 1.0)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(name)
    ax.set_title(f"{name}: {fit.law.name} law → sigmoid link ({kind} bands)")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return ax


def plot_link(fit: "ScalingFit", *, axes: Sequence["Axes"] | None = None,
              kind: str = "mean") -> list["Axes"]:
    """The two steps side by side: step 1 the law for the loss the link reads (vs compute),
    step 2 the link from that loss to the metric (median and 50%/90% bands, with the runs).

    Parameters
    ----------
    fit : ScalingFit
        A fit with a link.
    axes : two matplotlib Axes, optional
        Where to draw; a new 1×2 figure when omitted.
    kind : {"mean", "observed"}
        Band kind of the link panel (``"observed"`` adds the metric's noise).

    Returns
    -------
    list of matplotlib.axes.Axes
    """
    from .downstream import link_curve

    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    axes = list(axes)
    if len(axes) != 2:
        raise ValueError(f"axes must be two matplotlib Axes (step 1, step 2), got {len(axes)}")
    plot_fit(fit, ax=axes[0])
    axes[0].set_ylabel(fit.link.loss_name)
    axes[0].set_title(f"step 1: {fit.law.name} law for {fit.link.loss_name}")
    wide = link_curve(fit, prob=0.9, kind=kind)
    narrow = link_curve(fit, prob=0.5, kind=kind)
    ax = axes[1]
    ax.fill_between(wide["loss"], wide["metric_lower"], wide["metric_upper"], color=BAND_COLOR,
                    alpha=0.18, lw=0, label="90% band")
    ax.fill_between(narrow["loss"], narrow["metric_lower"], narrow["metric_upper"],
                    color=BAND_COLOR, alpha=0.35, lw=0, label="50% band")
    ax.plot(wide["loss"], wide["metric_median"], color=BAND_COLOR, lw=1.8, label="median link")
    ax.scatter(fit.link.observed_loss, fit.link.observed_metric, color="0.25", s=14, zorder=3,
               label="runs")
    ax.axhline(fit.link.chance, color="0.5", ls=":", lw=1, label="chance")
    ax.invert_xaxis()  # lower loss (bigger models) to the right, as on the compute axis
    ax.set_xlabel(f"{fit.link.loss_name} (lower is better)")
    ax.set_ylabel(fit.link.metric_name)
    ax.set_title(f"step 2: sigmoid link ({kind} bands)")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return axes
