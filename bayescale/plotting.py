"""Figures drawn from tables the analysis made (matplotlib only, imported lazily).

Every function takes ``ax=None`` (a new figure when omitted) and returns the Axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .fit import ScalingFit

__all__ = ["plot_fit"]

BAND_COLOR = "#1f5fa8"


def _new_axes(ax: "Axes | None", figsize: tuple[float, float] = (7.5, 5.0)) -> "Axes":
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _log_axes(ax: "Axes") -> None:
    from matplotlib.ticker import LogFormatterMathtext, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(LogFormatterMathtext(base=10))
    ax.grid(True, which="major", alpha=0.3)


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
        Budgets to extrapolate to (marked with their median forecast).
    kind : {"observed", "mean"}
        Band kind, as in :meth:`ScalingFit.forecast`.
    ax : matplotlib Axes, optional
    n_points : int
        Points along the curve.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import warnings

    from matplotlib.colors import LogNorm

    from .exceptions import ExtrapolationWarning

    ax = _new_axes(ax)
    frame = fit.runs.frame
    budgets = np.atleast_1d(np.asarray(flops, dtype=float)) if flops is not None else np.array([])
    low = frame["flops"].min()
    high = max(frame["flops"].max(), budgets.max() if budgets.size else 0.0)
    grid = np.geomspace(low, high, n_points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)  # the figure shows the distance
        wide = fit.forecast(flops=grid, prob=0.9, kind=kind)
        narrow = fit.forecast(flops=grid, prob=0.5, kind=kind)
        marked = fit.forecast(flops=budgets, prob=0.9, kind=kind) if budgets.size else None

    ax.fill_between(wide["flops"], wide["loss_lower"], wide["loss_upper"], color=BAND_COLOR,
                    alpha=0.18, lw=0, label="90% band")
    ax.fill_between(narrow["flops"], narrow["loss_lower"], narrow["loss_upper"], color=BAND_COLOR,
                    alpha=0.35, lw=0, label="50% band")
    frontier = "compute-optimal " if "params" in fit.law.inputs else ""
    ax.plot(wide["flops"], wide["loss_median"], color=BAND_COLOR, lw=1.8,
            label=f"median ({frontier}{fit.law.name} law)")
    if np.isfinite(frame["params"]).all():
        points = ax.scatter(frame["flops"], frame["loss"], c=frame["params"], cmap="viridis",
                            norm=LogNorm(), s=14, edgecolor="none", alpha=0.85, zorder=3,
                            label=f"runs (n={len(frame)})")
        colorbar = ax.figure.colorbar(points, ax=ax, pad=0.01)
        colorbar.set_label("model size N (parameters)")
    else:
        ax.scatter(frame["flops"], frame["loss"], color="0.25", s=14, zorder=3,
                   label=f"runs (n={len(frame)})")
    ax.axvline(frame["flops"].max(), color="0.4", ls="--", lw=1, label="largest run")
    if marked is not None:
        ax.errorbar(marked["flops"], marked["loss_median"],
                    yerr=[marked["loss_median"] - marked["loss_lower"],
                          marked["loss_upper"] - marked["loss_median"]],
                    fmt="D", color="#c0392b", ms=5, capsize=3, zorder=4,
                    label="forecast (median, 90%)")
    _log_axes(ax)
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.1f"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title(f"{fit.law.name} law fitted to {len(frame)} runs ({kind} bands)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return ax
