"""ScalingFit: the immutable result of fitting a law — posterior draws, runs and spec.

Analysis lives in other modules (forecast, risk, allocation); the methods here are thin
delegations so that a notebook user finds everything on the fit object.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from .data import Runs
from .exceptions import PACKAGE_FILES, ArgumentError, ConvergenceWarning
from .laws import ScalingLaw
from .priors import Prior

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._protocols import ModelLike
    from .budget import Hardware
    from .discrepancy import Discrepancy
    from .downstream import LinkPosterior

__all__ = ["ScalingFit", "Diagnostics", "load_fit", "RHAT_MAX", "ESS_MIN"]

RHAT_MAX = 1.01
ESS_MIN = 400

def _groupwise(method: Any) -> Any:
    """Give an analysis method a ``group=`` keyword: the answer for that group's view (its
    draws as an ordinary fit, :func:`bayescale.groups.group_view`), unchanged otherwise."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: "ScalingFit", *args: Any, group: object = None, **kwargs: Any) -> Any:
        if group is None and not self.is_grouped:
            return method(self, *args, **kwargs)
        return getattr(self.group_fit(group), name)(*args, **kwargs)

    signature = inspect.signature(method)
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("group", inspect.Parameter.KEYWORD_ONLY, default=None))
    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__doc__ = (method.__doc__ or "") + (
        "\n\n        ``group=``: for a fit of runs with groups, the answer for that group (a name "
        "not in the data: the population's new group, partial pooling only).\n")
    return wrapper


# Sampler statistics kept in a fit, under one name whichever sampler produced them.
_STAT_NAMES = {"diverging": "diverging", "depth": "tree_depth", "tree_depth": "tree_depth",
               "step_size": "step_size", "mean_tree_accept": "acceptance_rate",
               "acceptance_rate": "acceptance_rate", "n_steps": "n_steps", "energy": "energy"}


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of a fit.

    Attributes
    ----------
    table : pandas.DataFrame
        Per sampled parameter: ``r_hat``, ``ess_bulk``, ``ess_tail``.
    divergences : int
        Post-warmup divergent transitions (any is a warning sign).
    n_draws : int
        Total posterior draws (chains × draws).
    mean_tree_depth, mean_step_size : float
        Average NUTS tree depth and step size (long trees mean a hard geometry).
    problems : list of str
        Plain-language findings with what to try (sampler trouble, or a prior that excludes
        the data); empty when all is well.
    design : list of str
        What the runs cannot support (one model size, one tokens/param ratio, a wild
        outlier, ...) and what it means for the bands; see :mod:`bayescale.design`.
    """

    table: pd.DataFrame
    divergences: int
    n_draws: int
    mean_tree_depth: float
    mean_step_size: float
    problems: list[str] = field(default_factory=list)
    design: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no diagnostic failed."""
        return not self.problems

    def verdict(self) -> str:
        """One sentence for a report (and the design caveats, if any)."""
        if self.ok:
            text = (f"Converged: R-hat ≤ {RHAT_MAX}, bulk ESS ≥ {ESS_MIN} for every parameter, "
                    "no divergences.")
        else:
            text = "Not reliable yet: " + " ".join(self.problems)
        return text + "".join(f" Data design: {note}" for note in self.design)


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """Posterior of a scaling law fitted to runs.

    Attributes
    ----------
    law : ScalingLaw
    priors : dict of str to Prior
        Every prior used, defaults included.
    likelihood : str
    runs : Runs
        The runs the law was fitted to.
    reference : dict of str to float
        Reference scales (log geometric means) and log of the smallest loss.
    posterior : xarray.Dataset
        Sampled parameters with dims (chain, draw).
    sample_stats : xarray.Dataset
        Sampler statistics (divergences, tree depth, step size) with dims (chain, draw).
    settings : dict
        draws, tune, chains, sampler, random_seed and wall-clock seconds.
    discrepancy : Discrepancy or None
        The law's own error past the fitted range, added to every forecast
        (:mod:`bayescale.discrepancy`); None for fits saved by bayescale 0.1.0, whose
        forecasts are law + run-to-run noise only.
    held_inputs : dict of str to float or None
        Values of the law's extra inputs that every analysis uses unless a call gives its
        own (set by :meth:`holding`; not saved).
    """

    law: ScalingLaw
    priors: dict[str, Prior]
    likelihood: str
    runs: Runs
    reference: dict[str, float]
    posterior: xr.Dataset
    sample_stats: xr.Dataset
    settings: dict[str, Any]
    discrepancy: "Discrepancy | None" = None
    held_inputs: dict[str, float] | None = field(default=None, repr=False)
    #: The posterior of a link to a downstream metric (``ScalingModel(..., link="sigmoid")``,
    #: :mod:`bayescale.downstream`); None for a plain law fit.
    link: "LinkPosterior | None" = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_sampler_output(cls, model: "ModelLike", runs: Runs, tree: Any,
                            settings: dict[str, Any]) -> "ScalingFit":
        """Build a fit from the DataTree that nutpie or PyMC returned."""
        posterior = tree["posterior"].to_dataset()[model.sampled_parameters()]
        posterior = posterior.drop_vars([c for c in posterior.coords if c not in ("chain", "draw")])
        raw_stats = tree["sample_stats"].to_dataset()
        stats = {}
        for raw_name, name in _STAT_NAMES.items():
            if raw_name in raw_stats and name not in stats:
                stats[name] = raw_stats[raw_name].astype(bool if name == "diverging" else np.float64)
        sample_stats = xr.Dataset(stats)
        sample_stats = sample_stats.drop_vars([c for c in sample_stats.coords if c not in ("chain", "draw")])
        from .discrepancy import default_discrepancy, learned_discrepancy

        fit = cls(law=model.law, priors=dict(model.priors), likelihood=model.likelihood,
                  runs=runs, reference=model.law.reference(runs), posterior=posterior,
                  sample_stats=sample_stats, settings=dict(settings))
        # The law's error past the fitted range, learned from the runs (rolling origin)
        # under the corpus prior: every forecast of the fit carries it.
        try:
            discrepancy = learned_discrepancy(fit)
        except Exception as exc:  # a failed inner backtest must not lose the posterior
            discrepancy = replace(default_discrepancy(runs),
                                  source=f"corpus prior median (learning failed: {exc})")
        return replace(fit, discrepancy=discrepancy)

    def __repr__(self) -> str:
        s = self.settings
        return (f"ScalingFit(law={self.law.name!r}, likelihood={self.likelihood!r}, "
                f"runs={len(self.runs)}, chains={s['chains']}, draws={s['draws']}, "
                f"seed={s['random_seed']})")

    def with_discrepancy(self, discrepancy: "Discrepancy | None") -> "ScalingFit":
        """The same posterior with another discrepancy (None: law + noise only, as 0.1.0)."""
        return replace(self, discrepancy=discrepancy)

    def with_link(self, link: "LinkPosterior | None") -> "ScalingFit":
        """The same law posterior with another metric link (None: a plain law fit)."""
        return replace(self, link=link)

    def holding(self, **inputs: object) -> "ScalingFit":
        """The same fit with the law's extra inputs held at the given values.

        Every analysis, plot and report of the returned fit uses them unless a call gives
        its own, e.g. ``fit.holding(unique_tokens=1e11).report("r.html", target=2.3)`` for
        the data-constrained law.

        Raises
        ------
        ArgumentError
            For a name the law does not declare, or a value that is not one finite positive
            number.
        """
        from ._validate import positive

        unknown = sorted(set(inputs) - set(self.law.extra_inputs))
        if unknown:
            raise ArgumentError(f"the {self.law.name} law takes no input {unknown[0]!r}; its "
                                f"extra inputs are {list(self.law.extra_inputs) or 'none'}")
        held = dict(self.held_inputs or {})
        held.update({name: positive(name, value) for name, value in inputs.items()})
        return replace(self, held_inputs=held or None)

    def for_presentation(self) -> tuple["ScalingFit", str | None]:
        """This fit, with any extra input the law needs and nothing holds set to its largest
        value in the runs, and a sentence saying so (None when nothing was filled in).

        Plots and reports draw curves over compute, which a law of extra inputs (unique
        tokens, say) cannot do without a value for them.
        """
        missing = [name for name in self.law.extra_inputs if name not in (self.held_inputs or {})]
        if not missing:
            return self, None
        values = {name: float(self.runs.frame[name].max()) for name in missing}
        said = ", ".join(f"{name} = {value:.3g}" for name, value in values.items())
        return self.holding(**values), (f"Forecasts hold {said} (the largest in the runs); "
                                        "use fit.holding(...) for other values.")

    # -- draws -------------------------------------------------------------------------

    @property
    def n_draws(self) -> int:
        """Total posterior draws (chains × draws)."""
        return int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])

    # -- groups ------------------------------------------------------------------------

    @property
    def pooling(self) -> str:
        """``"partial"``, ``"none"`` or ``"complete"`` (one law for all runs)."""
        return str(self.settings.get("pooling", "complete"))

    @property
    def is_grouped(self) -> bool:
        """True for a fit with parameters per group (``pooling`` partial or none)."""
        return bool(self.settings.get("groups"))

    @property
    def groups(self) -> tuple:
        """The groups of a grouped fit (``()`` otherwise)."""
        return tuple(self.settings.get("groups", ()))

    @cached_property
    def _group_views(self) -> dict[str, "ScalingFit"]:
        return {}

    def group_fit(self, group: object) -> "ScalingFit":
        """One group's fit as an ordinary :class:`ScalingFit` (its draws, runs and
        discrepancy); a name not in the data: the population's new group (partial pooling).
        For a fit with ``pooling="complete"`` every group is the whole fit."""
        if not self.is_grouped:
            if group is not None and self.runs.group is None and "group" not in self.settings:
                from .exceptions import ArgumentError

                raise ArgumentError(f"group={group!r} given but this fit has no groups: load "
                                    "the runs with load_runs(..., group='<column>')")
            return self
        if group is None:
            from .exceptions import ArgumentError

            raise ArgumentError(f"this fit has one law per group ({self.pooling} pooling): "
                                f"pass group= one of {list(self.groups)} (or a new name for the "
                                "population's predictive)")
        key = str(group)
        view = self._group_views.get(key)
        if view is None:
            from .groups import group_view

            view = self._group_views[key] = group_view(self, group)
        return view

    def compare_groups(self, flops: float = 1e22, **kwargs: Any) -> pd.DataFrame:
        """Which group wins at ``flops``: P(A < B) per pair, the expected difference and its
        band, and the budget from which the ranking is confident. See
        :func:`bayescale.groups.compare_groups` (keywords ``groups``, ``prob``,
        ``confident``, ``kind``, ``max_flops``, ``grid_size``)."""
        from .groups import compare_groups

        return compare_groups(self, flops, **kwargs)

    @cached_property
    def _flat_theta(self) -> dict[str, np.ndarray]:
        if self.is_grouped:
            from .exceptions import ArgumentError

            raise ArgumentError(f"this fit has one law per group ({self.pooling} pooling): "
                                "use fit.group_fit(name) or the analyses' group= keyword")
        theta = {name: self.posterior[name].to_numpy().reshape(-1) for name in self.posterior.data_vars}
        for name, prior in self.priors.items():
            if prior.dist == "Fixed":
                theta[name] = np.full(self.n_draws, prior.params["value"])
        for value in theta.values():
            value.flags.writeable = False
        return theta

    def theta(self, expand: bool = False) -> dict[str, np.ndarray]:
        """Sampled (and fixed) parameters as flat arrays of length ``n_draws``.

        Parameters
        ----------
        expand : bool
            Return column vectors of shape (n_draws, 1), ready to broadcast against points.
        """
        if expand:
            return {k: v[:, None] for k, v in self._flat_theta.items()}
        return dict(self._flat_theta)

    @_groupwise
    def paper_draws(self) -> dict[str, np.ndarray]:
        """Draws of the paper's parameters (E, A, B, alpha, beta for Chinchilla)."""
        return self.law.paper_values(self._flat_theta, self.reference)

    @_groupwise
    def posterior_with_derived(self) -> xr.Dataset:
        """The posterior plus the paper's parameters as (chain, draw) variables."""
        shape = (self.posterior.sizes["chain"], self.posterior.sizes["draw"])
        derived = {name: (("chain", "draw"), np.asarray(values).reshape(shape))
                   for name, values in self.paper_draws().items() if name not in self.posterior}
        return self.posterior.assign(derived)

    # -- tables ------------------------------------------------------------------------

    def summary(self, prob: float = 0.94, include_sampled: bool = False) -> pd.DataFrame:
        """Posterior summary of the paper's parameters and the noise scale.

        Parameters
        ----------
        prob : float
            Mass of the highest-density interval (columns ``hdi_lower``, ``hdi_upper``).
        include_sampled : bool
            Also list the internal sampled parameters (E_fraction, a, b).

        Returns
        -------
        pandas.DataFrame
            Index: parameter; columns ``mean``, ``sd``, ``median``, ``hdi_lower``,
            ``hdi_upper``, ``ess_bulk``, ``ess_tail``, ``r_hat``.
        """
        import arviz as az

        from ._validate import probability

        prob = probability("prob", prob)
        if self.is_grouped:  # one block of rows per group
            return pd.concat({g: self.group_fit(g).summary(prob, include_sampled)
                              for g in self.groups}, names=["group", "parameter"])
        dataset = self.posterior_with_derived()
        names = list(self.law.paper_parameters) + [n for n in ("sigma", "nu") if n in dataset]
        if include_sampled:
            names += [n for n in self.posterior.data_vars if n not in names]
        table = az.summary(dataset[names], ci_prob=prob, ci_kind="hdi", round_to="none")
        lower = next(c for c in table.columns if c.endswith("_lb"))
        upper = next(c for c in table.columns if c.endswith("_ub"))
        table = table.rename(columns={lower: "hdi_lower", upper: "hdi_upper"})
        table["median"] = [float(dataset[n].median()) for n in table.index]
        table = table[["mean", "sd", "median", "hdi_lower", "hdi_upper", "ess_bulk", "ess_tail", "r_hat"]]
        table = table.astype(float)
        # Identical draws in every chain (a fixed-looking parameter): the chains agree, R-hat
        # is 1, not ArviZ's 0/0.
        if self.posterior.sizes["chain"] > 1:
            table.loc[(table["sd"] == 0) & table["r_hat"].isna(), "r_hat"] = 1.0
        table.index.name = "parameter"
        table.attrs["prob"] = prob
        return table

    def diagnostics(self) -> Diagnostics:
        """R-hat, ESS, divergences and tree depth, with plain-language problems."""
        # Computed once per fit (fit() checks them and reports print them again); a copy so
        # callers cannot change the cached table.
        cached = self._diagnostics
        return replace(cached, table=cached.table.copy(), problems=list(cached.problems),
                       design=list(cached.design))

    @cached_property
    def _diagnostics(self) -> Diagnostics:
        import arviz as az

        posterior = self.posterior
        rhat = az.rhat(posterior)
        ess_bulk = az.ess(posterior, method="bulk")
        ess_tail = az.ess(posterior, method="tail")
        table = pd.DataFrame({
            # worst over groups for a parameter per group
            "r_hat": {n: float(rhat[n].max()) for n in posterior.data_vars},
            "ess_bulk": {n: float(ess_bulk[n].min()) for n in posterior.data_vars},
            "ess_tail": {n: float(ess_tail[n].min()) for n in posterior.data_vars},
        })
        table.index.name = "parameter"
        stats = self.sample_stats
        divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
        depth = float(stats["tree_depth"].mean()) if "tree_depth" in stats else float("nan")
        step = float(stats["step_size"].mean()) if "step_size" in stats else float("nan")
        problems = []
        chains = int(posterior.sizes["chain"])
        bad_rhat = table.index[~(table["r_hat"] <= RHAT_MAX)].tolist()
        if chains < 2:
            problems.append(f"R-hat needs at least 2 chains and this fit has {chains}: "
                            "convergence cannot be checked; fit with chains=4.")
        elif bad_rhat:
            worst = table.loc[bad_rhat, "r_hat"].max()
            problems.append(f"R-hat up to {worst:.3f} (> {RHAT_MAX}) for {', '.join(bad_rhat)}: the "
                            "chains disagree; run more tuning (tune=2000) and draws, and check "
                            "that the priors do not fight the data.")
        low_ess = table.index[~(table["ess_bulk"] >= ESS_MIN)].tolist()
        if low_ess and table["ess_bulk"].isna().all():
            problems.append(f"ESS cannot be estimated from {self.posterior.sizes['draw']} "
                            "draws per chain (ArviZ needs at least 4): increase draws.")
        elif low_ess:
            worst = table.loc[low_ess, "ess_bulk"].min()
            problems.append(f"bulk ESS down to {worst:.0f} (< {ESS_MIN}) for {', '.join(low_ess)}: "
                            "too few effective draws for stable intervals; increase draws or "
                            "chains.")
        if divergences:
            problems.append(f"{divergences} divergent transitions out of {self.n_draws}: the "
                            "sampler missed part of the posterior; tighten the priors, drop "
                            "runs far off the law, or try likelihood='student_t'.")
        from .design import fit_design_findings, prior_conflicts

        if self.is_grouped:  # per group, on its view (an ordinary fit)
            design = []
            for g in self.groups:
                view = self.group_fit(g)
                problems += [f"group {g!r}: {p}" for p in prior_conflicts(view)]
                design += [f"group {g!r}: {f.message}" for f in fit_design_findings(view)]
            return Diagnostics(table=table, divergences=divergences, n_draws=self.n_draws,
                               mean_tree_depth=depth, mean_step_size=step, problems=problems,
                               design=design)
        problems += prior_conflicts(self)
        return Diagnostics(table=table, divergences=divergences, n_draws=self.n_draws,
                           mean_tree_depth=depth, mean_step_size=step, problems=problems,
                           design=[finding.message for finding in fit_design_findings(self)])

    def warn_if_unreliable(self) -> Diagnostics:
        """Emit one :class:`ConvergenceWarning` per failed diagnostic (pointing at the first
        line outside the package); return the diagnostics."""
        diagnostics = self.diagnostics()
        for problem in diagnostics.problems:
            warnings.warn(problem, ConvergenceWarning, skip_file_prefixes=PACKAGE_FILES)
        return diagnostics

    # -- analysis (delegating) ---------------------------------------------------------

    @_groupwise
    def forecast(self, flops: object = None, *, params: object = None, tokens: object = None,
                 prob: float = 0.9, kind: str = "observed",
                 random_seed: int | None = None, **inputs: object) -> pd.DataFrame:
        """Forecast loss at compute budgets, or at explicit model size and tokens.

        Parameters
        ----------
        flops : float, sequence of float or Budget, optional
            Training compute budgets in FLOPs. For a law of N and D each budget is trained at
            the posterior-median compute-optimal split (C = 6·N·D). A
            :class:`~bayescale.Budget` (dollars, GPU-hours, days) is converted on its
            hardware; with uncertain utilization the bands are the mixture over it (see
            :mod:`bayescale.budget`), and the budget's amounts lead the table.
        params, tokens : float or sequence of float, optional
            Explicit model sizes N (parameters) and training tokens D, instead of ``flops``.
        prob : float
            Mass of the central (equal-tailed) band, e.g. 0.9 for 5%–95%.
        kind : {"observed", "mean"}
            ``"observed"``: the loss one training run would measure: the posterior's
            parameter uncertainty, the law's own error past the fitted range (the
            discrepancy, :mod:`bayescale.discrepancy`; zero inside the range) and run-to-run
            noise. ``"mean"``: the law's expected loss: parameter uncertainty and the
            discrepancy, no run-to-run noise.
        random_seed : int, optional
            Seed for the noise draws of ``kind="observed"``; defaults to the fit's seed so the
            same fit always gives the same table.
        **inputs : float or sequence of float
            The law's declared extra inputs, e.g. ``unique_tokens=1e11`` for the
            data-constrained law (one value, or one per point); the compute-optimal split
            holds them fixed.

        Returns
        -------
        pandas.DataFrame
            Columns ``flops``, ``params``, ``tokens``, ``loss_mean``, ``loss_median``,
            ``loss_lower``, ``loss_upper``; ``attrs`` holds ``prob`` and ``kind``.

        Warns
        -----
        ExtrapolationWarning
            When a budget lies more than two decades of compute past the largest run.
        """
        if _is_budget(flops):
            from . import budget

            _no_plan_with_budget(params, tokens)
            return budget.forecast(self, flops, prob=prob, kind=kind, random_seed=random_seed,
                                   inputs=inputs)
        from .forecast import forecast_table

        return forecast_table(self, flops=flops, params=params, tokens=tokens, prob=prob,
                              kind=kind, random_seed=random_seed, inputs=inputs)

    @_groupwise
    def prob_below(self, target: float, flops: object = None, *, params: object = None,
                   tokens: object = None, mode: str = "median", kind: str = "observed",
                   mcse: str = "ess", **inputs: object) -> float | pd.DataFrame:
        """P(loss ≤ target) for a run at each budget (or explicit N, D), noise included
        (``kind="mean"``: the law's expected loss, with parameter uncertainty and the law's
        own error past the fitted range, δ, but no run-to-run noise).

        The run trains at the posterior-median compute-optimal split (``mode="median"``, the
        allocation one would pick now) or, with ``mode="oracle"``, each draw at its own
        optimum. Exact given the draws. ``**inputs``: the law's declared extra inputs, as
        in :meth:`forecast`. See :func:`bayescale.risk.prob_below`. ``flops`` may be a
        :class:`~bayescale.Budget`: with uncertain utilization the probability is
        integrated over it (:func:`bayescale.budget.prob_below`).
        """
        if _is_budget(flops):
            from . import budget

            _no_plan_with_budget(params, tokens)
            return budget.prob_below(self, target, flops, mode=mode, kind=kind, mcse=mcse,
                                     inputs=inputs)
        from .risk import prob_below

        return prob_below(self, target, flops, params=params, tokens=tokens, mode=mode,
                          kind=kind, mcse=mcse, inputs=inputs)

    @_groupwise
    def compute_to_reach(self, target: object, prob: object = 0.8, *, mode: str = "median",
                         kind: str = "observed", units: str | Sequence[str] = "flops",
                         hardware: Hardware | None = None,
                         **inputs: object) -> float | pd.DataFrame:
        """Smallest budget in FLOPs with P(loss ≤ target) ≥ prob; ``inf`` when out of reach.

        ``units`` (``"flops"``, ``"gpu_hours"``, ``"usd"``, ``"days"``, or several) reports
        the budget on ``hardware`` as well; with uncertain utilization those columns are the
        smallest budget whose utilization-integrated probability reaches ``prob``. The
        conversion is stated in ``attrs["conversion"]``. A scalar target and prob with one
        unit give a float in that unit. A law with extra inputs takes them as keywords, held
        fixed while the budget grows (``unique_tokens=1e11``). See
        :func:`bayescale.risk.compute_to_reach` and :func:`bayescale.budget.compute_to_reach`.
        """
        if units != "flops" or hardware is not None:
            from . import budget

            return budget.compute_to_reach(self, target, prob, mode=mode, kind=kind,
                                           units=units, hardware=hardware,
                                           inputs=inputs or None)
        from .risk import compute_to_reach

        return compute_to_reach(self, target, prob, mode=mode, kind=kind, inputs=inputs or None)

    @_groupwise
    def compute_distribution(self, target: object, prob: float = 0.9, *,
                             units: str | Sequence[str] = "flops",
                             hardware: Hardware | None = None, **inputs: object) -> pd.DataFrame:
        """Posterior median and band of the compute (FLOPs) the law needs to reach each target,
        and the probability that it is unreachable (E ≥ target).

        ``units`` with ``hardware`` adds ``<unit>_median``, ``<unit>_lower``,
        ``<unit>_upper`` columns (utilization uncertainty included). A law's extra inputs
        are keywords, one value each (``unique_tokens=1e11``). See
        :func:`bayescale.risk.compute_distribution` and
        :func:`bayescale.budget.compute_distribution`.
        """
        if units != "flops" or hardware is not None:
            from . import budget

            return budget.compute_distribution(self, target, prob, units=units,
                                               hardware=hardware, inputs=inputs or None)
        from .risk import compute_distribution

        return compute_distribution(self, target, prob, inputs=inputs or None)

    @_groupwise
    def risk_table(self, targets: object, budgets: object, *, mode: str = "median",
                   kind: str = "observed", **inputs: object) -> pd.DataFrame:
        """P(loss ≤ target) for every target (rows) and budget in FLOPs (columns).

        ``budgets`` may be a :class:`~bayescale.Budget`; the columns are then its amounts.
        A law's extra inputs are keywords (``unique_tokens=1e11``). See
        :func:`bayescale.risk.risk_table` and :func:`bayescale.budget.risk_table`.
        """
        if _is_budget(budgets):
            from . import budget

            return budget.risk_table(self, targets, budgets, mode=mode, kind=kind,
                                     inputs=inputs or None)
        from .risk import risk_table

        return risk_table(self, targets, budgets, mode=mode, kind=kind, inputs=inputs or None)

    @_groupwise
    def optimal_allocation(self, flops: object, prob: float = 0.9,
                           **inputs: object) -> pd.DataFrame:
        """Compute-optimal N, D, tokens per parameter and loss at each budget, with bands.

        ``flops`` may be a :class:`~bayescale.Budget` (split planned at the median
        utilization). A law's extra inputs are keywords, held fixed by the split
        (``unique_tokens=1e11``). See :func:`bayescale.allocation.optimal_allocation` and
        :func:`bayescale.budget.optimal_allocation`.
        """
        if _is_budget(flops):
            from . import budget

            return budget.optimal_allocation(self, flops, prob=prob, inputs=inputs or None)
        from .allocation import optimal_allocation

        return optimal_allocation(self, flops, prob, inputs=inputs or None)

    @_groupwise
    def inference_optimal_allocation(self, target: object, inference_tokens: object,
                                     prob: float = 0.9, *, units: str | Sequence[str] = "flops",
                                     hardware: Hardware | None = None) -> pd.DataFrame:
        """N and D reaching ``target`` at least training + inference cost (Sardana et al.
        2023), with bands and the savings over the Chinchilla-optimal model.

        ``units`` with ``hardware`` also gives the costs in GPU-hours, dollars or days
        (``train_usd_median``, ...). See
        :func:`bayescale.allocation.inference_optimal_allocation` and
        :func:`bayescale.budget.inference_optimal_allocation`.
        """
        if units != "flops" or hardware is not None:
            from . import budget

            return budget.inference_optimal_allocation(self, target, inference_tokens, prob,
                                                       units=units, hardware=hardware)
        from .allocation import inference_optimal_allocation

        return inference_optimal_allocation(self, target, inference_tokens, prob)

    # -- interoperability --------------------------------------------------------------

    @_groupwise
    def to_datatree(self, random_seed: int | None = None) -> xr.DataTree:
        """The fit as an ArviZ DataTree, for ArviZ's own diagnostics and plots.

        Groups: ``posterior`` (sampled and paper parameters, dims chain, draw),
        ``sample_stats`` (``diverging``, ``tree_depth``, ``step_size``, ...),
        ``observed_data`` (``log_loss`` of each run, dim ``run``), ``constant_data`` (the
        runs' ``params``, ``tokens``, ``flops``), ``log_likelihood`` (pointwise, of
        ``log_loss``) and ``posterior_predictive`` (one replicated ``log_loss`` per draw and
        run, run-to-run noise included). So ``az.summary``, ``az.loo``, ``az.plot_trace``
        and ``az.plot_ppc_dist`` (ArviZ 1.x's posterior predictive plot) work on it.

        Parameters
        ----------
        random_seed : int, optional
            Seed of the posterior-predictive noise; defaults to the fit's seed.

        Returns
        -------
        xarray.DataTree
        """
        from ._validate import seed
        from .likelihood import log_likelihood

        random_seed = seed("random_seed", random_seed)
        rng = np.random.default_rng(self.settings.get("random_seed", 0)
                                    if random_seed is None else random_seed)
        frame = self.runs.frame
        shape = (self.posterior.sizes["chain"], self.posterior.sizes["draw"], len(frame))
        coords = {"chain": self.posterior["chain"].to_numpy(),
                  "draw": self.posterior["draw"].to_numpy(), "run": np.arange(len(frame))}
        theta = self.theta(expand=True)
        log_x = {name: np.log(frame[name].to_numpy(dtype=np.float64))[None, :]
                 for name in self.law.inputs}
        mu = self.law.log_loss(theta, log_x, self.reference, np)
        noise = (rng.standard_t(theta["nu"], size=mu.shape) if self.likelihood == "student_t"
                 else rng.standard_normal(mu.shape))
        replicated = (mu + theta["sigma"] * noise).reshape(shape)
        dims = ("chain", "draw", "run")
        observed = np.log(frame["loss"].to_numpy(dtype=np.float64))
        groups = {
            "posterior": self.posterior_with_derived(),
            "sample_stats": self.sample_stats,
            "observed_data": xr.Dataset({"log_loss": ("run", observed)},
                                        coords={"run": coords["run"]}),
            "constant_data": xr.Dataset({name: ("run", frame[name].to_numpy(dtype=np.float64))
                                         for name in ("params", "tokens", "flops")},
                                        coords={"run": coords["run"]}),
            "log_likelihood": xr.Dataset({"log_loss": (dims, log_likelihood(self))},
                                         coords=coords),
            "posterior_predictive": xr.Dataset({"log_loss": (dims, replicated)}, coords=coords),
        }
        tree = xr.DataTree.from_dict(groups)
        tree.attrs.update({"law": self.law.name, "likelihood": self.likelihood,
                           "inference_library": "bayescale"})
        return tree

    @_groupwise
    def plan_runs(self, target_flops: float, candidates: pd.DataFrame | None = None,
                  budget: float | None = None, objective: str = "band", k: int = 1, *,
                  target: float | None = None, prob: float = 0.9, kind: str = "observed",
                  greedy: str = "best", n_outcomes: int = 100, grid_size: int = 12,
                  target_points: pd.DataFrame | None = None,
                  random_seed: int | None = None) -> pd.DataFrame:
        """Which pilot runs to train first: expected reduction of an uncertainty per FLOP.

        Preposterior analysis on the draws (no new sampling): each candidate's loss is
        simulated from the predictive, the draws are reweighted by its likelihood, and the
        objective is averaged over the simulated outcomes. See :mod:`bayescale.plan`.

        Parameters
        ----------
        target_flops : float or Budget
            The budget (FLOPs) of the big run the pilots should inform; a
            :class:`~bayescale.Budget` (dollars, GPU-hours, days) is converted to FLOPs at its
            median utilization.
        candidates : pandas.DataFrame, optional
            A pool of runnable experiments: ``params``, ``tokens`` (``flops`` for a compute
            law) and an optional ``cost`` (default 6·N·D FLOPs). Default: a log grid of (N, D)
            cheaper than ``budget`` within the runs' range (:func:`bayescale.plan.default_candidates`).
        budget : float or Budget, optional
            Most a pilot may cost (a :class:`~bayescale.Budget` is converted to FLOPs at its
            median utilization, so it goes with costs in FLOPs) and, with ``k`` > 1, the total for all picks (in the units
            of ``cost``). Default for the grid: ``target_flops / 100``; no limit for a pool.
            The greedy picks aim at the largest total expected reduction (see ``greedy``).
        objective : {"band", "prob", "split"}
            ``"band"``: width of the ``prob`` band of one run's loss at ``target_flops``;
            ``"prob"``: posterior variance of P(loss ≤ ``target``) there; ``"split"``: width
            of the ``prob`` band of the compute-optimal tokens per parameter.
        k : int
            Number of pilots to pick greedily, each given the ones before it.
        target : float, optional
            Target loss, required for ``objective="prob"``.
        prob : float
            Band level of the width objectives.
        kind : {"observed", "mean"}
            The band of ``objective="band"``: one run's measured loss (as ``forecast``) or
            the law's expected loss.
        greedy : {"best", "ratio", "gain"}
            How each pick is chosen: by expected reduction per unit cost (``"ratio"``), by
            expected reduction among the affordable (``"gain"``), or both, keeping the set with
            the larger total (``"best"``, the usual rule for budgeted greedy selection).
        n_outcomes : int
            Simulated outcomes per candidate (the MCSE falls as 1/√n_outcomes).
        grid_size : int
            Points per axis of the default grid.
        target_points : pandas.DataFrame, optional
            A target region instead of one point: ``params`` and ``tokens`` of the runs the
            forecast is for; the ``"band"`` objective is then the mean band width over them
            (each costs one more pass over the candidates).
        random_seed : int, optional
            Seed of the simulated outcomes; defaults to the fit's seed.

        Returns
        -------
        pandas.DataFrame
            One row per candidate, the picks first (in order), then the rest by
            ``per_cost``: ``params``, ``tokens``,
            ``flops``, ``cost``, ``expected_reduction`` (objective units, ``attrs["units"]``),
            ``relative_reduction`` (share of today's value, ``attrs["current"]``),
            ``per_flop``, ``per_cost``, ``mcse``, ``ess`` (median Kish effective sample size
            of the reweighted draws), ``pick`` (1..k for the greedy picks, else 0), ``khat``
            (the picks' median PSIS Pareto k; above 0.7 the reweighting is unreliable),
            ``pick_reduction`` and ``pick_mcse`` (given the earlier picks) and
            ``cumulative_reduction``.
        """
        from .plan import plan_runs

        target_flops = _budget_as_flops("target_flops", target_flops)
        if budget is not None:
            if _is_budget(budget) and candidates is not None and "cost" in candidates:
                raise ValueError("budget= is a Budget (converted to FLOPs) but the candidates "
                                 "carry their own 'cost' column: give budget in the units of "
                                 "that column")
            budget = _budget_as_flops("budget", budget)
        return plan_runs(self, target_flops, candidates=candidates, budget=budget,
                         objective=objective, k=k, target=target, prob=prob, kind=kind,
                         greedy=greedy, n_outcomes=n_outcomes, grid_size=grid_size,
                         target_points=target_points, random_seed=random_seed)

    def save(self, path: str | PathLike[str], *, overwrite: bool = False) -> None:
        """Save the fit (posterior, runs, law, priors) to a netCDF file, atomically.

        Raises
        ------
        FileExistsError
            When ``path`` exists and ``overwrite`` is False.
        """
        from .io import save_fit

        save_fit(self, path, overwrite=overwrite)

    # -- presentation (delegating) -----------------------------------------------------

    @_groupwise
    def plot_forecast(self, flops: object = None, *, kind: str = "observed", ax: Any = None) -> Any:
        """Runs, the law's median with 50%/90% bands, and forecasts at ``flops`` (FLOPs).

        See :func:`bayescale.plotting.plot_fit`; returns the matplotlib Axes.
        """
        from .plotting import plot_fit

        return plot_fit(self, flops=flops, kind=kind, ax=ax)

    def report(self, path: str | PathLike[str], *, target: float | None = None,
               budget: float | None = None, overwrite: bool = False, group: object = None,
               **kwargs: Any) -> Any:
        """Write a report for people who will not open a notebook.

        ``*.html``: one self-contained file (figures embedded, works offline); ``*.md``:
        Markdown with its figures in ``<stem>_files/``. Headline: P(loss ≤ ``target`` at
        ``budget`` FLOPs) and the compute needed at 80% confidence; a
        :class:`~bayescale.Budget` as ``budget`` puts it in dollars, GPU-hours or days.
        Never replaces an existing report unless ``overwrite=True``. For a grouped fit:
        one section per group and a comparison (``group=``: that group's report alone). Other keywords
        (``budgets``, ``targets``, ``prob``, ``backtest``, ``title``, ``dpi``) as in
        :func:`bayescale.report.write_report`.

        Returns
        -------
        pathlib.Path
            The report written.
        """
        from .report import write_report

        if group is not None:   # one group's report; a grouped fit alone: all groups
            return self.group_fit(group).report(path, target=target, budget=budget,
                                                overwrite=overwrite, **kwargs)
        return write_report(self, path, target=target, budget=budget, overwrite=overwrite,
                            **kwargs)

    # -- downstream metric (delegating to bayescale.downstream) ------------------------

    def forecast_metric(self, flops: object = None, *, params: object = None,
                        tokens: object = None, prob: float = 0.9, kind: str = "observed",
                        random_seed: int | None = None, **inputs: object) -> pd.DataFrame:
        """Forecast the downstream metric (e.g. accuracy) at budgets or explicit N, D.

        Each draw of the law's predictive task loss (parameter uncertainty, the discrepancy
        past the fitted range and, for ``kind="observed"``, run-to-run noise) goes through a
        draw of the link; ``kind="observed"`` adds the metric's own Beta noise (the accuracy
        one run would measure), ``"mean"`` gives the expected metric.

        Parameters
        ----------
        flops : float or sequence of float, optional
            Budgets in FLOPs, trained at the posterior-median compute-optimal split.
        params, tokens : float or sequence of float, optional
            Explicit N and D instead of ``flops``.
        prob : float
            Mass of the central band (0.9: 5%–95%).
        kind : {"observed", "mean"}
        random_seed : int, optional
            Seed of the noise draws; defaults to the fit's seed.
        **inputs : float or sequence of float
            The law's declared extra inputs, as in :meth:`forecast`.

        Returns
        -------
        pandas.DataFrame
            Columns ``flops``, ``params``, ``tokens``, ``loss_median`` (the loss the link
            reads), ``metric_mean``, ``metric_median``, ``metric_lower``, ``metric_upper``;
            ``attrs``: ``prob``, ``kind``, ``metric``, ``loss``, ``chance``, ``method``.

        Raises
        ------
        ModelMismatchError
            When the fit has no link.
        """
        from .downstream import forecast_metric_table

        return forecast_metric_table(self, flops=flops, params=params, tokens=tokens,
                                     prob=prob, kind=kind, random_seed=random_seed,
                                     inputs=inputs)

    def prob_metric_above(self, target: object, flops: object = None, *, params: object = None,
                          tokens: object = None, kind: str = "observed",
                          **inputs: object) -> float | pd.DataFrame:
        """P(metric ≥ target) for a run at each budget (or explicit N, D).

        A scalar target at one point gives a float. See
        :func:`bayescale.downstream.prob_metric_above`.
        """
        from .downstream import prob_metric_above

        return prob_metric_above(self, target, flops, params=params, tokens=tokens, kind=kind,
                                 inputs=inputs)

    def compute_to_reach_metric(self, target: object, prob: object = 0.8, *,
                                kind: str = "observed") -> float | pd.DataFrame:
        """Smallest budget (FLOPs) with P(metric ≥ target) ≥ prob; ``inf`` when out of reach.

        See :func:`bayescale.downstream.compute_to_reach_metric`.
        """
        from .downstream import compute_to_reach_metric

        return compute_to_reach_metric(self, target, prob, kind=kind)

    def link_summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Median and band of the link's ceiling, k, L0 and φ (with R-hat and ESS)."""
        from .downstream import _link

        return _link(self).summary(prob)

    def link_findings(self) -> list[str]:
        """What the runs cannot tell about the sigmoid (empty when the transition is pinned)."""
        from .downstream import _link, link_findings

        return link_findings(_link(self))

    def plot_metric(self, flops: object = None, *, kind: str = "observed", ax: Any = None) -> Any:
        """The metric against compute: runs, median, 50%/90% bands (see
        :func:`bayescale.plotting.plot_metric_forecast`)."""
        from .plotting import plot_metric_forecast

        return plot_metric_forecast(self, flops=flops, kind=kind, ax=ax)

    def plot_link(self, *, axes: Any = None, kind: str = "mean") -> Any:
        """Step 1 (the law for the loss the link reads) and step 2 (the link) side by side
        (see :func:`bayescale.plotting.plot_link`); returns the two Axes."""
        from .plotting import plot_link

        return plot_link(self, axes=axes, kind=kind)


def _budget_as_flops(name: str, value: object) -> object:
    """A one-amount :class:`bayescale.Budget` as FLOPs at its median utilization; anything
    else unchanged (the planner checks numbers itself)."""
    if not _is_budget(value):
        return value
    flops = np.asarray(value.to("flops"), dtype=np.float64).reshape(-1)
    if flops.size != 1:
        raise ValueError(f"{name} must be one budget, got a Budget of {flops.size} amounts")
    return float(flops[0])


def _is_budget(value: object) -> bool:
    """True for a :class:`bayescale.Budget` (imported only when a budget could be one)."""
    if value is None or isinstance(value, (int, float, list, tuple, np.ndarray, np.number)):
        return False
    from .budget import is_budget

    return is_budget(value)


def _no_plan_with_budget(params: object, tokens: object) -> None:
    if params is not None or tokens is not None:
        raise ValueError("give a Budget alone (flops=budget): it sets the compute, and the run "
                         "trains at the posterior-median optimal split; params= and tokens= "
                         "describe a plan in FLOPs instead")


def load_fit(path: str | PathLike[str]) -> ScalingFit:
    """Load a fit written by :meth:`ScalingFit.save`.

    Forecasts from the loaded fit equal those of the saved one exactly; declared extra run
    inputs (e.g. ``unique_tokens``) are kept.

    Raises
    ------
    FitFileError
        When the file is missing, truncated, corrupted, or not a bayescale fit.
    """
    from .io import read_fit

    return ScalingFit(**read_fit(path))
