"""Groups of runs (data mixes, model families, settings): one group's fit, the population's
predictive for a new group, and which group wins at a budget (numpy on draws, no PyMC).

A grouped fit (``pooling="partial"`` or ``"none"``, see :func:`bayescale.model.fit_grouped`)
holds every law parameter per group, under each group's own reference scales. A *group view*
is an ordinary :class:`~bayescale.ScalingFit` of one group: its draws, its runs, its
discrepancy (learned from its own runs, as a fit of that group alone would) and the parent's
noise. Every analysis (forecast, risk, allocation, plots, report) runs unchanged on a view.

A group not in the data gets the *population view*: per posterior draw, new group
parameters drawn from the population distribution (value and spread of that draw), so its
bands carry the spread between groups.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from .exceptions import ArgumentError

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["group_view", "population_view", "view_settings", "compare_groups",
           "GROUP_KEYS", "CONFIDENT"]

#: Settings of a grouped fit that a group view does not carry.
GROUP_KEYS = ("groups", "group_sd", "group_kinds")
#: Default probability at which a ranking counts as confident.
CONFIDENT = 0.9
# Salt of the generator of a new group's z, independent of the noise and discrepancy draws.
_NEW_GROUP_SALT = 0x6E3C
_LAW_PREFIXES = ("pop_", "popsd_")


def view_settings(parent: "ScalingFit", name: object) -> dict[str, Any]:
    """The settings of one group's view: the parent's, with the group named."""
    settings = {k: v for k, v in parent.settings.items() if k not in GROUP_KEYS}
    settings["group"] = name
    return settings


def _position(fit: "ScalingFit", group: object) -> int | None:
    names = [str(g) for g in fit.settings["groups"]]
    return names.index(str(group)) if str(group) in names else None


def group_view(fit: "ScalingFit", group: object) -> "ScalingFit":
    """The fit of one group as an ordinary (ungrouped) :class:`~bayescale.ScalingFit`.

    A name not among the fit's groups gets :func:`population_view`.
    """
    k = _position(fit, group)
    if k is None:
        return population_view(fit, group)
    from .discrepancy import default_discrepancy, learned_discrepancy

    law_names = list(fit.law.parameter_domains)
    keep = [n for n in fit.posterior.data_vars if not n.startswith(_LAW_PREFIXES)]
    posterior = fit.posterior[keep]
    posterior = xr.Dataset({n: (posterior[n].isel(group=k) if "group" in posterior[n].dims
                                else posterior[n]) for n in keep})
    posterior = posterior.transpose("chain", "draw")
    stats = fit.sample_stats
    if "group" in stats.dims:
        stats = stats.isel(group=k)
    label = fit.settings["groups"][k]
    runs = fit.runs.subset(fit.runs.group_mask(label))
    view = replace(fit, runs=runs, reference=fit.law.reference(runs), posterior=posterior,
                   sample_stats=stats, settings=view_settings(fit, label), discrepancy=None)
    missing = [n for n in law_names if fit.priors[n].dist != "Fixed" and n not in posterior]
    if missing:
        raise ValueError(f"the grouped posterior has no draws of {missing} for group {label!r}")
    try:
        discrepancy = learned_discrepancy(view)
    except Exception as exc:  # as ScalingFit.from_sampler_output: keep the posterior
        discrepancy = replace(default_discrepancy(runs),
                              source=f"corpus prior median (learning failed: {exc})")
    return replace(view, discrepancy=discrepancy)


def population_view(fit: "ScalingFit", group: object = "new group") -> "ScalingFit":
    """The predictive of a group with no runs: per draw, its parameters drawn from the
    population distribution of that draw (``pooling="partial"`` only).

    Its reference scales and fitted range are those of all runs; its discrepancy scale is
    the largest of the groups' (a new group is at least as far from any group's law).

    Raises
    ------
    ArgumentError
        For ``pooling="none"``, which has no population distribution.
    """
    if fit.settings.get("pooling") != "partial":
        raise ArgumentError(f"group {group!r} is not in the fit (groups: "
                            f"{list(fit.settings['groups'])}) and pooling="
                            f"{fit.settings.get('pooling')!r} has no population distribution to "
                            "draw a new group from; fit with pooling='partial'")
    from .discrepancy import default_discrepancy

    kinds = fit.settings["group_kinds"]
    shape = (fit.posterior.sizes["chain"], fit.posterior.sizes["draw"])
    rng = np.random.default_rng([int(fit.settings.get("random_seed", 0)), _NEW_GROUP_SALT])
    variables = {}
    for name in fit.law.parameter_domains:
        if fit.priors[name].dist == "Fixed":
            continue
        pop = fit.posterior[f"pop_{name}"].to_numpy()
        spread_name = f"popsd_{name}"
        if spread_name in fit.posterior:
            spread = fit.posterior[spread_name].to_numpy()
            z = rng.standard_normal(shape)
            value = pop + spread * z if kinds[name] == "linear" else pop * np.exp(spread * z)
        else:
            value = pop
        variables[name] = (("chain", "draw"), value)
    for name in ("sigma", "nu"):
        if name in fit.posterior:
            variables[name] = (("chain", "draw"), fit.posterior[name].to_numpy())
    if "popsd_sigma" in fit.posterior:   # a noise scale per group: a new group's own
        variables["sigma"] = (("chain", "draw"), fit.posterior["pop_sigma"].to_numpy() * np.exp(
            fit.posterior["popsd_sigma"].to_numpy() * rng.standard_normal(shape)))
    taus = [fit.group_fit(g).discrepancy.tau for g in fit.settings["groups"]]
    discrepancy = replace(default_discrepancy(fit.runs, tau=max(taus)),
                          source="largest of the groups' learned scales (a new group)")
    settings = view_settings(fit, group)
    settings["new_group"] = True
    return replace(fit, posterior=xr.Dataset(variables), settings=settings,
                   discrepancy=discrepancy)


# -- which group wins -------------------------------------------------------------------------

def _views(fit: "ScalingFit", groups: object) -> dict[object, "ScalingFit"]:
    if not fit.is_grouped:
        raise ArgumentError("compare_groups needs a fit with groups: load the runs with "
                            "load_runs(..., group='<column>') and fit with pooling='partial' "
                            "or 'none'")
    names = list(fit.settings["groups"]) if groups is None else list(groups)
    if len(names) < 2:
        raise ArgumentError(f"compare_groups needs at least two groups, got {names}")
    return {name: fit.group_fit(name) for name in names}


def _loss_at(view: "ScalingFit", log_flops: np.ndarray, log_params: np.ndarray | None,
             kind: str, seed: int) -> np.ndarray:
    """Loss draws (draws, budgets) of one group at budgets and (optionally) model sizes."""
    from .forecast import loss_draws

    flops = np.exp(log_flops)
    if log_params is None:
        points = pd.DataFrame({"flops": flops, "params": np.nan, "tokens": np.nan})
    else:
        params = np.exp(log_params)
        points = pd.DataFrame({"flops": flops, "params": params, "tokens": flops / (6 * params)})
    return loss_draws(view, points, kind=kind, random_seed=seed)


def _optimal_log_params(view: "ScalingFit", log_flops: np.ndarray) -> np.ndarray | None:
    if not view.law.splits_compute:
        return None
    from .forecast import median_optimal_log_params

    return np.asarray(median_optimal_log_params(view, log_flops))


def compare_groups(fit: "ScalingFit", flops: float = 1e22, *, groups: object = None,
                   prob: float = 0.9, confident: float = CONFIDENT, kind: str = "mean",
                   max_flops: float | None = None, grid_size: int = 61) -> pd.DataFrame:
    """For each pair of groups: P(group A's loss < group B's) at ``flops``, the expected
    difference with its band, and the budget from which the ranking is confident.

    Draws are paired by index (one joint posterior draw gives both groups' parameters, so
    what the groups share cancels), and each group carries its own discrepancy; with
    ``kind="observed"`` each group also gets its own run-to-run noise.

    Parameters
    ----------
    fit : ScalingFit
        A grouped fit (``pooling="partial"`` or ``"none"``).
    flops : float
        The budget in FLOPs.
    groups : sequence, optional
        Groups to compare (default: all); a name not in the data is the population's new
        group (partial pooling).
    prob : float
        Mass of the band of the difference.
    confident : float
        Probability at which a ranking counts as confident.
    kind : {"mean", "observed"}
        ``"mean"``: the law's expected loss (parameters and discrepancy); ``"observed"``:
        the loss one run of each would measure (noise added).
    max_flops : float, optional
        Largest budget searched for the confident ranking (default: 1000x ``flops``).
    grid_size : int
        Budgets on the log grid from the smallest run's compute to ``max_flops``.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``group_a``, ``group_b``, ``flops``; ``p_a_better`` (each trained
        at its own posterior-median compute-optimal split) and ``p_a_better_common`` (both
        at one split: the geometric mean of the two optimal model sizes; equal to
        ``p_a_better`` for a law of compute alone); ``diff_mean``, ``diff_lower``,
        ``diff_upper`` (loss A − loss B at own splits; band of mass ``prob``);
        ``leader`` (the group more likely lower at ``flops``); ``p_leader`` and
        ``confident_flops``: the smallest budget on the grid from which, up to
        ``max_flops``, the leader is lower with probability ≥ ``confident`` (``inf`` when
        never). ``attrs`` holds ``kind``, ``prob``, ``confident`` and ``max_flops``.
    """
    from ._validate import positive, probability

    flops = positive("flops", flops)
    prob = probability("prob", prob)
    confident = probability("confident", confident)
    if kind not in ("mean", "observed"):
        raise ArgumentError(f"kind must be 'mean' or 'observed', got {kind!r}")
    views = _views(fit, groups)
    max_flops = 1000.0 * flops if max_flops is None else positive("max_flops", max_flops)
    low = min(float(v.runs.column("flops").min()) for v in views.values()
              if len(v.runs) and not v.settings.get("new_group"))
    low = min(low, flops, max_flops)
    grid = np.unique(np.concatenate([np.geomspace(low, max(max_flops, flops), grid_size),
                                     [flops]]))
    log_grid = np.log(grid)
    at = int(np.flatnonzero(grid == flops)[0])
    seed = int(fit.settings.get("random_seed", 0))
    own, split = {}, {}
    for k, (name, view) in enumerate(views.items()):
        split[name] = _optimal_log_params(view, log_grid)
        own[name] = _loss_at(view, log_grid, split[name], kind, seed + k)
    rows = []
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    names = list(views)
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        la, lb = own[a], own[b]
        diff = la[:, at] - lb[:, at]
        p_grid = np.mean(la < lb, axis=0)
        if split[a] is None:
            p_common = float(p_grid[at])
        else:
            log_n = 0.5 * (split[a][at] + split[b][at])
            log_c = log_grid[at:at + 1]
            ca = _loss_at(views[a], log_c, np.array([log_n]), kind, seed + i)
            cb = _loss_at(views[b], log_c, np.array([log_n]), kind, seed + j)
            p_common = float(np.mean(ca[:, 0] < cb[:, 0]))
        leader_is_a = p_grid[at] >= 0.5
        p_leader = p_grid if leader_is_a else 1.0 - p_grid
        ok = p_leader >= confident
        # Smallest budget from which the leader stays confidently ahead up to max_flops.
        tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok)))
        confident_flops = float(grid[np.argmax(tail_ok)]) if tail_ok.any() else math.inf
        rows.append({"group_a": a, "group_b": b, "flops": flops,
                     "p_a_better": float(p_grid[at]), "p_a_better_common": p_common,
                     "diff_mean": float(np.mean(diff)),
                     "diff_lower": float(np.quantile(diff, lo_q)),
                     "diff_upper": float(np.quantile(diff, hi_q)),
                     "leader": a if leader_is_a else b, "p_leader": float(p_leader[at]),
                     "confident_flops": confident_flops})
    table = pd.DataFrame(rows)
    table.attrs.update({"kind": kind, "prob": prob, "confident": confident,
                        "max_flops": float(max_flops)})
    return table
