"""Learning curves: fit every checkpoint of many runs without trusting them as independent runs.

A run's checkpoints share its seed, data order and schedule, so treating each as its own run
around the law gives bands far too narrow. The curve model is, on log loss::

    log L(run i, tokens t) = law(θ; N_i, t) + r_i + κ·s(t / T_i) + e_i(t)

- ``law``: the law's one formula (:meth:`ScalingLaw.log_loss`), with D = tokens seen so far;
- ``r_i ~ Normal(0, σ_run)``: the run's own offset, partially pooled (non-centred);
- ``κ·s(f)``: the schedule term. A checkpoint at fraction f = t/T_i of a run with a cosine
  schedule sits above the loss a run of length t would reach, because its learning rate has
  not been annealed yet; s(f) = (1 + cos πf)/2 is the share of the decay still ahead, 0 at the
  end of the run, so the law describes final losses. ``schedule="none"`` drops it (for
  schedules without decay, where every checkpoint is comparable);
- ``e_i(t)``: within-run correlation, a stationary AR(1) process in log tokens
  (Ornstein-Uhlenbeck): corr(e(t), e(t')) = ρ^|log t − log t'|, marginal sd σ.

Checkpoints before ``min_fraction`` of a run are dropped (warm-up and the first steep part
carry little about the final loss; the Hitchhiker's guide found dropping them helps); a run's
last checkpoint is always kept.

A new run's final loss is law + δ + r_new + e with r_new ~ Normal(0, σ_run), e ~ Normal(0, σ)
and δ the discrepancy past the fitted range (:mod:`bayescale.discrepancy`). A run in progress
(:meth:`CurveFit.forecast_run`) uses its own offset and the AR(1) continuation from its last
checkpoint. PyMC builds and nutpie samples the model (the law's fast kernel has no per-run
terms), so a first fit in a process spends some seconds compiling.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import _laplace
from ._validate import choice, integer, seed
from .data import Runs
from .exceptions import (PACKAGE_FILES, ArgumentError, ArgumentTypeError, ConvergenceWarning,
                         RunDataError, SamplingError)
from .laws import ScalingLaw
from .priors import Prior

__all__ = ["CurveModel", "CurveFit", "load_curve_fit", "schedule_excess", "SCHEDULES",
           "curve_layout"]

SCHEDULES = ("cosine", "none")
METHODS = ("auto", "nuts", "laplace")
#: ``method="auto"`` uses the Laplace approximation from this many kept checkpoints on.
#: On simulated curves of 100 checkpoints a run it passed its checks (k-hat ≤ 0.7, ESS ≥ 20%)
#: on 3 of 3 data sets of 10,600 kept checkpoints but 1 of 3 of 5,600, and at 1,770 never;
#: on 17,700 and 70,900 its means and sds matched NUTS's within their MCSE
#: (tests/test_curves_laplace.py, benchmarks/bench_curves_speed.py).
LAPLACE_MIN_POINTS = 10_000
#: Priors of the curve terms (log-loss units): run offsets of a few percent, a schedule
#: excess of up to ~0.5 in log loss, AR(1) correlation per e-fold of tokens.
CURVE_PRIORS = {
    "sigma_run": Prior("HalfNormal", sigma=0.05),
    "kappa": Prior("HalfNormal", sigma=0.3),
    "rho": Prior("Beta", alpha=2.0, beta=2.0),
}


def schedule_excess(fraction: np.ndarray) -> np.ndarray:
    """s(f) = (1 + cos πf)/2: the share of a cosine decay still ahead at fraction f of a run."""
    f = np.clip(np.asarray(fraction, dtype=np.float64), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * f))


@dataclass(frozen=True)
class _Layout:
    """Where each kept checkpoint sits: its run, schedule position and predecessor."""

    runs: Runs                 # kept rows
    names: np.ndarray          # run ids, one per run (object)
    index: np.ndarray          # run index of each kept row
    total: np.ndarray          # planned tokens T per run
    fraction: np.ndarray       # t / T per kept row
    prev: np.ndarray           # position of the previous kept row of the same run, or -1
    dlog: np.ndarray           # log t − log t_prev (0 for a run's first kept row)


def curve_layout(runs: Runs, planned_tokens: Mapping[str, float] | None = None,
                 min_fraction: float = 0.3) -> _Layout:
    """Group checkpoints by run, keep those past ``min_fraction`` of their run, and link each
    to its predecessor (for the AR(1) term).

    ``planned_tokens`` gives the planned length of runs still in progress; other runs are
    taken as finished at their last checkpoint.
    """
    if not isinstance(runs, Runs):
        raise ArgumentTypeError(f"expected Runs from bayescale.load_runs, got {type(runs).__name__}")
    if not runs.has_params_and_tokens:
        raise RunDataError("learning curves need params and tokens for every row")
    if not (isinstance(min_fraction, (int, float)) and 0.0 <= min_fraction < 1.0):
        raise ArgumentError(f"min_fraction must be a number in [0, 1), got {min_fraction!r}")
    ids = runs.run_ids()
    names, index = np.unique(ids, return_inverse=True)
    tokens = runs.column("tokens")
    last = np.zeros(names.size)
    np.maximum.at(last, index, tokens)
    total = last.copy()
    planned = dict(planned_tokens or {})
    for name, value in planned.items():
        hits = np.flatnonzero(names == str(name))
        if hits.size == 0:
            raise ArgumentError(f"planned_tokens names run {name!r}, which is not among the "
                                f"runs ({', '.join(map(str, names[:5]))}{', ...' if names.size > 5 else ''})")
        value = float(value)
        k = int(hits[0])
        if not (math.isfinite(value) and value >= last[k]):
            raise ArgumentError(f"planned_tokens[{name!r}] = {value!r} is below the run's last "
                                f"checkpoint ({last[k]:.6g} tokens); give the run's planned length")
        total[k] = value
    fraction = tokens / total[index]
    is_last = tokens == last[index]
    keep = (fraction >= min_fraction) | is_last
    kept = runs.subset(keep)
    index = index[keep]
    fraction = fraction[keep]
    log_t = np.log(kept.column("tokens"))
    prev = np.full(index.size, -1, dtype=np.intp)
    latest = np.full(names.size, -1, dtype=np.intp)
    order = np.lexsort((log_t, index))
    for position in order:   # rows within a run are in token order (load_runs checks)
        prev[position] = latest[index[position]]
        latest[index[position]] = position
    dlog = np.where(prev >= 0, log_t - log_t[np.maximum(prev, 0)], 0.0)
    return _Layout(kept, names.astype(object), index, total, fraction, prev, dlog)


class CurveModel:
    """A scaling law fitted to learning curves: run offsets, a schedule term, AR(1) residuals.

    Parameters
    ----------
    law : str or ScalingLaw
        A law of params and tokens (e.g. ``"chinchilla"``).
    priors : mapping of str to Prior, optional
        Overrides for the law's parameters, ``sigma`` (the within-run residual sd) and the
        curve terms ``sigma_run``, ``kappa``, ``rho`` (defaults in :data:`CURVE_PRIORS`).
    schedule : {"cosine", "none"}
        ``"cosine"``: checkpoints before the end of a cosine decay sit above the law by
        κ·(1 + cos πf)/2 (κ learned). ``"none"``: every checkpoint is comparable with a
        finished run of that length (constant or WSD schedules measured before decay).
    min_fraction : float
        Checkpoints before this fraction of their run are left out (the last one never).

    Examples
    --------
    >>> runs = bs.load_runs(df, params="params", tokens="tokens", loss="loss", run="run")
    >>> fit = bs.CurveModel("chinchilla").fit(runs, random_seed=0)
    >>> fit.forecast(params=3e9, tokens=6e10)          # a new, larger run's final loss
    >>> fit.forecast_run("3B-1xC", tokens=6e10)        # a run in progress, to its planned end
    """

    def __init__(self, law: str | ScalingLaw = "chinchilla", priors: Mapping[str, Prior] | None = None,
                 *, schedule: str = "none", min_fraction: float = 0.3) -> None:
        from .model import ScalingModel

        choice("schedule", schedule, SCHEDULES)
        priors = dict(priors or {})
        curve = {k: priors.pop(k) for k in list(priors) if k in CURVE_PRIORS}
        for name, prior in curve.items():
            if not isinstance(prior, Prior):
                raise ArgumentTypeError(f"prior for {name!r} must be a bayescale.Prior, got {prior!r}")
        self._base = ScalingModel(law, priors, likelihood="normal")
        self.law = self._base.law
        if set(self.law.inputs) != {"params", "tokens"}:
            raise ArgumentError(f"the curve model needs a law of params and tokens; the "
                                f"{self.law.name} law reads {self.law.inputs}")
        self.priors: dict[str, Prior] = {**self._base.priors, **CURVE_PRIORS, **curve}
        self.schedule = schedule
        self.min_fraction = float(min_fraction)

    def __repr__(self) -> str:
        return f"CurveModel({self.law.name!r}, schedule={self.schedule!r})"

    def build(self, layout: _Layout, marginal: bool = False):
        """The PyMC model of these curves (no sampling).

        ``marginal=False``: the run offsets are sampled (non-centred, ``z_run``);
        ``marginal=True``: they are integrated out, each run's log losses being multivariate
        normal with covariance σ²·ρ^|Δlog t| + σ_run² (the density the fast kernel computes;
        one MvNormal per run, so for tests and small data).
        """
        import pymc as pm
        import pytensor.tensor as pt

        runs = layout.runs
        ref = self.law.reference(runs)
        log_x = {name: np.log(runs.column(name)) for name in self.law.inputs}
        y = np.log(runs.column("loss"))
        rv = self._base._random_variable
        has_prev = layout.prev >= 0
        prev = np.maximum(layout.prev, 0)
        with pm.Model() as model:
            theta = {name: rv(pm, pt, name, self.priors[name]) for name in self.law.parameter_domains}
            mu = self.law.log_loss(theta, log_x, ref, pt)
            sigma_run = rv(pm, pt, "sigma_run", self.priors["sigma_run"])
            if not marginal:
                z = pm.Normal("z_run", 0.0, 1.0, shape=layout.names.size)
                mu = mu + sigma_run * z[layout.index]
            if self.schedule == "cosine":
                kappa = rv(pm, pt, "kappa", self.priors["kappa"])
                mu = mu + kappa * schedule_excess(layout.fraction)
            sigma = rv(pm, pt, "sigma", self.priors["sigma"])
            rho = rv(pm, pt, "rho", self.priors["rho"])
            if marginal:
                log_t = np.log(runs.column("tokens"))
                for k in range(layout.names.size):
                    rows = np.flatnonzero(layout.index == k)
                    gap = np.abs(log_t[rows][:, None] - log_t[rows][None, :])
                    cov = sigma**2 * rho**gap + sigma_run**2
                    pm.MvNormal(f"run_{k}", mu=mu[rows], cov=cov, observed=y[rows])
                return model
            e = y - mu
            log_phi = layout.dlog * pt.log(rho)
            phi = pt.exp(log_phi)
            mean = pt.where(has_prev, phi * e[prev], 0.0)
            # 1 − φ² without cancellation for close checkpoints
            scale = sigma * pt.sqrt(pt.where(has_prev, -pt.expm1(2.0 * log_phi), 1.0))
            pm.Potential("curves", pm.logp(pm.Normal.dist(mean, scale), e).sum())
        return model

    def sampled_parameters(self, offsets: bool = True) -> list[str]:
        """Posterior variables; ``offsets=False``: without ``z_run`` (the fast kernel
        integrates the offsets out and draws them afterwards)."""
        names = [*self.law.parameter_domains, "sigma", "sigma_run", "rho"] + (["z_run"] if offsets else [])
        if self.schedule == "cosine":
            names.append("kappa")
        return [n for n in names if n == "z_run" or self.priors[n].dist != "Fixed"]

    def fit(self, runs: Runs, *, planned_tokens: Mapping[str, float] | None = None,
            draws: int = 1000, tune: int = 1000, chains: int = 4, random_seed: int | None = None,
            cores: int | None = None, progressbar: bool = False,
            sampler: str = "nutpie", method: str = "auto") -> "CurveFit":
        """Sample the posterior given the curves.

        Parameters
        ----------
        runs : Runs
            From ``load_runs(..., run=<column>)`` (one row per run works too: final points).
        planned_tokens : mapping of run id to float, optional
            Planned total tokens of runs still in progress (others ended at their last row).
        draws, tune, chains, random_seed, cores, progressbar
            As in :meth:`ScalingModel.fit`. With ``method="laplace"`` the fit returns
            ``chains x draws`` equally weighted draws (arranged as chains so every summary
            works) and ``tune`` is used only by the NUTS fallback; ``cores`` threads evaluate
            the proposals.
        sampler : {"nutpie", "nutpie-pymc"}
            ``"nutpie"``: the density generated from the law's formula
            (:mod:`bayescale._fastcurves`, compiled once and cached on disk);
            ``"nutpie-pymc"``: :meth:`build`'s PyMC model compiled by PyTensor (slow to
            compile; for comparison; NUTS only).
        method : {"auto", "nuts", "laplace"}
            ``"nuts"``: NUTS (nutpie) on the scalar parameters, the run offsets integrated
            out. ``"laplace"``: an importance-corrected Laplace approximation
            (:mod:`bayescale._laplace`): the posterior mode and Hessian in unconstrained
            coordinates, ``chains x draws`` Student-t proposals weighted by the exact density
            and smoothed by PSIS, then resampled; when PSIS's Pareto k-hat is above 0.7 or
            the importance ESS below 20% of the draws (the approximation cannot be trusted)
            it warns (:class:`ConvergenceWarning`) and falls back to NUTS (started as with
            ``method="nuts"``). ``"auto"``: ``"laplace"`` from :data:`LAPLACE_MIN_POINTS` kept
            checkpoints on (where the posterior of the few scalar parameters is close to
            Gaussian and NUTS costs a thousand gradients of every checkpoint per draw),
            ``"nuts"`` below. The method used, the k-hat and the importance ESS are in
            ``fit.settings`` (``method``, ``pareto_k``, ``importance_ess``) and saved.

        Returns
        -------
        CurveFit

        Raises
        ------
        SamplingError
            When NUTS fails, or the density is not finite at any starting point.
        """
        import nutpie

        from .discrepancy import default_discrepancy

        draws = integer("draws", draws, 1)
        tune = integer("tune", tune, 1)
        chains = integer("chains", chains, 1)
        random_seed = seed("random_seed", random_seed)
        choice("sampler", sampler, ("nutpie", "nutpie-pymc"))
        choice("method", method, METHODS)
        if sampler == "nutpie-pymc" and method == "laplace":
            raise ArgumentError("method='laplace' needs the generated density (sampler='nutpie'); "
                                "sampler='nutpie-pymc' samples with NUTS only")
        layout = curve_layout(runs, planned_tokens, self.min_fraction)
        needed = self.law.n_parameters + 4
        if len(layout.runs) < needed:
            raise RunDataError(f"{len(layout.runs)} checkpoints cannot fit the curve model "
                               f"({needed} or more are needed)")
        if random_seed is None:
            random_seed = int(np.random.SeedSequence().entropy % (2**31))
        cores = cores or max(1, min(chains, os.cpu_count() or 1))
        requested = method
        from . import _fastcurves

        if sampler == "nutpie" and not self._fast_path_serves():
            if method == "laplace":
                raise ArgumentError(f"method='laplace' needs the generated density, which the "
                                    f"{self.law.name} law's formula does not allow")
            sampler = "nutpie-pymc"
        if method == "auto":
            method = ("laplace" if sampler == "nutpie" and len(layout.runs) >= LAPLACE_MIN_POINTS
                      else "nuts")
        start = time.perf_counter()
        schedule = self.schedule == "cosine"

        if sampler == "nutpie":
            buf = _fastcurves.make_buffer(self.law, self.priors, schedule, layout,
                                          schedule_excess(layout.fraction))
            compiled = _fastcurves.nutpie_model(self.law, buf, self.priors, schedule)
            _check_start(self.law, buf, compiled)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                compiled = nutpie.compile_pymc_model(self.build(layout), backend="numba")
        compile_seconds = time.perf_counter() - start
        settings: dict[str, Any] = {
            "draws": draws, "tune": tune, "chains": chains, "random_seed": int(random_seed),
            "compile_seconds": compile_seconds, "sampler": sampler, "schedule": self.schedule,
            "min_fraction": self.min_fraction, "method_requested": requested}
        if method == "laplace":
            try:
                approx, failure = self._laplace(buf, draws * chains, random_seed, cores), None
            except _laplace.LaplaceFailure as exc:
                approx, failure = None, str(exc)
            settings.update(pareto_k=None if approx is None else approx.pareto_k,
                            importance_ess=None if approx is None else approx.ess,
                            laplace_evaluations=0 if approx is None else approx.evaluations)
            if approx is not None and approx.reliable:
                names = _fastcurves.coordinates(self.law, self.priors, schedule)
                values = _fastcurves.constrain(self.priors, names, approx.draws)
                posterior = xr.Dataset({name: (("chain", "draw"), v.reshape(chains, draws))
                                        for name, v in values.items()})
                stats = xr.Dataset({"lp": (("chain", "draw"),
                                           approx.log_density.reshape(chains, draws))})
                settings.update(method="laplace", seconds=time.perf_counter() - start)
                return self._curve_fit(layout, posterior, stats, settings, default_discrepancy)
            reason = (failure if approx is None else
                      f"PSIS's Pareto k-hat is {approx.pareto_k:.2f} (reliable ≤ "
                      f"{_laplace.khat_threshold(draws * chains):.2f}), importance ESS "
                      f"{approx.ess:.0f} of {draws * chains} (needed ≥ "
                      f"{_laplace.MIN_RELATIVE_ESS:.0%})")
            warnings.warn(f"the Laplace approximation of the curve posterior is not reliable "
                          f"({reason}); sampling with NUTS instead", ConvergenceWarning,
                          skip_file_prefixes=PACKAGE_FILES)
            # NUTS starts as method="nuts" does, not at the mode: nutpie sets its first mass
            # matrix from the gradient at the start, which is ~0 at a mode (measured: R-hat
            # 1.12 against 1.02 at 2 x 300 tuning steps on 25 simulated runs).
        posterior, stats = self._nuts(compiled, draws, tune, chains, cores, random_seed,
                                      progressbar, self.sampled_parameters(sampler != "nutpie"))
        settings.update(method="nuts", seconds=time.perf_counter() - start)
        return self._curve_fit(layout, posterior, stats, settings, default_discrepancy)

    def _fast_path_serves(self) -> bool:
        """Whether the curve kernel can be derived from the law; if not, a one-line
        :class:`~bayescale.model.FastPathWarning` says so (the fit then samples PyMC's model)."""
        from . import _fastcurves
        from .model import FastPathWarning

        reason = _fastcurves.supports(self.law)
        if reason is None:
            return True
        warnings.warn(f"no fast curve density for the {self.law.name} law ({reason}); sampling "
                      "PyMC's compiled curve model instead, which takes 10-40 s to compile in "
                      "each new process", FastPathWarning, skip_file_prefixes=PACKAGE_FILES)
        return False

    def _laplace(self, buf: np.ndarray, n_draws: int, random_seed: int,
                 threads: int) -> "_laplace.LaplaceResult":
        """The importance-corrected Laplace approximation, its draws and mode in the kernel's
        unconstrained coordinates (raises :class:`_laplace.LaplaceFailure` when it cannot be
        formed)."""
        from . import _fastcurves

        names = _fastcurves.coordinates(self.law, self.priors, self.schedule == "cosine")
        space = _fastcurves.RateSpace(self.law, buf, self.priors, names)
        centre = _fastcurves.centres(self.priors, names)
        rng = np.random.default_rng([random_seed, 21])
        starts = [space.from_unconstrained(centre + jitter) for jitter in
                  [0.0] + [rng.uniform(-1.0, 1.0, centre.size) for _ in range(2)]]
        result = _laplace.importance_sample(space.logp_and_grad, starts, n_draws, rng,
                                            logp_many=space.logp_many, threads=threads)
        u, _ = space.to_unconstrained(result.draws)
        mode, _ = space.to_unconstrained(result.mode)
        return dataclasses.replace(result, draws=u, mode=mode)

    @staticmethod
    def _nuts(compiled: Any, draws: int, tune: int, chains: int, cores: int, random_seed: int,
              progressbar: bool, variables: list[str]) -> tuple[xr.Dataset, xr.Dataset]:
        import nutpie

        from .model import NUTPIE_ADAPTATION, NUTPIE_TARGET_ACCEPT, _sample_nutpie

        tree, failure = _sample_nutpie(nutpie, compiled, draws=draws, tune=tune, chains=chains,
                                       cores=cores, seed=random_seed, progress_bar=progressbar,
                                       save_warmup=False, adaptation=NUTPIE_ADAPTATION,
                                       target_accept=NUTPIE_TARGET_ACCEPT)
        if failure is not None:
            raise SamplingError(f"nutpie failed on the curve model ({failure})")
        posterior = tree["posterior"].to_dataset()[variables]
        posterior = posterior.drop_vars([c for c in posterior.coords if c not in ("chain", "draw")])
        stats = tree["sample_stats"].to_dataset()
        keep = [n for n in ("diverging", "depth", "n_steps", "step_size") if n in stats]
        return posterior, stats[keep]

    def _curve_fit(self, layout: _Layout, posterior: xr.Dataset, stats: xr.Dataset,
                   settings: dict[str, Any], default_discrepancy: Any) -> "CurveFit":
        final = layout.runs.final_points()
        return CurveFit(law=self.law, priors=dict(self.priors), layout=layout,
                        reference=self.law.reference(layout.runs), posterior=posterior,
                        sample_stats=stats, settings=settings,
                        discrepancy=default_discrepancy(final), likelihood="normal")


@dataclass(frozen=True, eq=False)
class CurveFit:
    """Posterior of a law fitted to learning curves (:class:`CurveModel`).

    Attributes
    ----------
    posterior : xarray.Dataset
        Law parameters, ``sigma`` (within-run residual sd), ``sigma_run`` (sd of run
        offsets), ``z_run`` (standardised offsets, one per run; only with ``sampler="nutpie-pymc"``:
        the fast kernel integrates the offsets out, see :meth:`run_offsets`), ``rho`` (AR(1) correlation
        per e-fold of tokens) and ``kappa`` (schedule excess at the start of a cosine decay).
    layout
        The checkpoints used and their runs (``layout.runs``, ``layout.names``).
    discrepancy : Discrepancy
        The law's error past the largest fitted run (corpus scale), added to forecasts.
    """

    law: ScalingLaw
    priors: dict[str, Prior]
    layout: _Layout
    reference: dict[str, float]
    posterior: xr.Dataset
    sample_stats: xr.Dataset
    settings: dict[str, Any]
    discrepancy: Any = None
    likelihood: str = "normal"
    _cache: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"CurveFit(law={self.law.name!r}, runs={self.layout.names.size}, "
                f"checkpoints={len(self.layout.runs)}, schedule={self.settings['schedule']!r})")

    @property
    def runs(self) -> Runs:
        return self.layout.runs

    @property
    def n_draws(self) -> int:
        return int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])

    def theta(self, expand: bool = False) -> dict[str, np.ndarray]:
        """Scalar parameters as flat arrays (``(draws, 1)`` with ``expand``)."""
        if "theta" not in self._cache:
            out = {n: self.posterior[n].to_numpy().reshape(-1) for n in self.posterior.data_vars
                   if n != "z_run"}
            for name, prior in self.priors.items():
                if prior.dist == "Fixed":
                    out[name] = np.full(self.n_draws, prior.params["value"])
            if "kappa" not in out:
                out["kappa"] = np.zeros(self.n_draws)
            self._cache["theta"] = out
        theta = dict(self._cache["theta"])
        return {k: v[:, None] for k, v in theta.items()} if expand else theta

    def run_offsets(self) -> np.ndarray:
        """r_i per draw and run, shape (draws, runs).

        When the offsets were integrated out in sampling (the fast kernel), each draw's r_i
        is drawn from its exact conditional Normal given that draw's parameters and the data
        (seeded by the fit's ``random_seed``; computed once, then cached).
        """
        if "z_run" in self.posterior:
            z = self.posterior["z_run"].to_numpy().reshape(self.n_draws, -1)
            return self.theta()["sigma_run"][:, None] * z
        if "offsets" not in self._cache:
            from . import _fastcurves

            schedule = self.settings["schedule"] == "cosine"
            layout = self.layout
            buf = _fastcurves.make_buffer(self.law, self.priors, schedule, layout,
                                          schedule_excess(layout.fraction))
            theta = self.theta()
            values = np.column_stack([theta[n] for n in (*self.law.parameter_domains,
                                                         *_fastcurves.SCALARS)])
            mean, var = _fastcurves.run_conditionals(self.law, buf, values)
            rng = np.random.default_rng([int(self.settings["random_seed"]), 20])
            self._cache["offsets"] = mean + np.sqrt(var) * rng.standard_normal(mean.shape)
        return self._cache["offsets"]

    def paper_draws(self) -> dict[str, np.ndarray]:
        return self.law.paper_values(self.theta(), self.reference)

    def _log_law(self, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        log_x = {"params": np.log(params)[None, :], "tokens": np.log(tokens)[None, :]}
        return self.law.log_loss(self.theta(expand=True), log_x, self.reference, np)

    def _delta(self, params: np.ndarray, tokens: np.ndarray, log_law: np.ndarray) -> np.ndarray:
        from .discrepancy import discrepancy_shift

        log_x = {"params": np.log(params)[None, :], "tokens": np.log(tokens)[None, :],
                 "flops": np.log(6.0 * params * tokens)[None, :]}
        shift = discrepancy_shift(self, log_x, self.theta(expand=True)["sigma"],
                                  self.theta(expand=True), log_law)
        return 0.0 if shift is None else shift

    def _rng(self, random_seed: int | None) -> np.random.Generator:
        return np.random.default_rng(self.settings["random_seed"] if random_seed is None else random_seed)

    def loss_draws(self, params: object, tokens: object, kind: str = "observed",
                   random_seed: int | None = None) -> np.ndarray:
        """Final loss of new runs at (params, tokens), per draw: shape (draws, points).

        ``kind="observed"``: what a new run would measure (law + δ + its own offset + noise);
        ``"mean"``: the law + δ (the typical run).
        """
        choice("kind", kind, ("observed", "mean"))
        params, tokens = _points(params, tokens)
        log_law = self._log_law(params, tokens)
        out = log_law + self._delta(params, tokens, log_law)
        if kind == "observed":
            rng = self._rng(random_seed)
            theta = self.theta()
            out = out + (theta["sigma_run"] * rng.standard_normal(self.n_draws)
                         + theta["sigma"] * rng.standard_normal(self.n_draws))[:, None]
        return np.exp(out)

    def forecast(self, params: object, tokens: object, *, prob: float = 0.9,
                 kind: str = "observed", random_seed: int | None = None) -> pd.DataFrame:
        """Final loss of new runs trained to ``tokens`` (a full schedule) at size ``params``.

        Returns
        -------
        pandas.DataFrame
            params, tokens, flops, loss_mean, loss_median, loss_lower, loss_upper (central
            ``prob`` interval); attrs ``prob`` and ``kind``.
        """
        params_, tokens_ = _points(params, tokens)
        return _table(self.loss_draws(params_, tokens_, kind, random_seed), params_, tokens_,
                      prob, kind)

    def forecast_run(self, run: str, tokens: object = None, *, prob: float = 0.9,
                     random_seed: int | None = None) -> pd.DataFrame:
        """Loss of a fitted run (typically one in progress) at later tokens of its schedule.

        Uses the run's own offset r_i (learned from its checkpoints and pooled with the
        others), the schedule term at t/T (T: its planned length, from ``planned_tokens`` at
        fit time, else its last checkpoint) and the AR(1) continuation of its residual at the
        last checkpoint, so a run running above the law stays above it, less so the further
        ahead.

        The one-parameter schedule term does not capture a real schedule's excess early in a
        run (on the OLMo ladder's 3B runs seen to 30% it left forecasts 1-3% high, with bands
        of ±1%). So the forecast is corrected by what the same procedure gets wrong on the
        fit's other finished runs cut at the same fraction of their length: their mean log
        error is subtracted and their spread added as noise (attrs ``cut_shift``,
        ``cut_spread``, ``cut_runs``; no correction with fewer than two such runs).

        Parameters
        ----------
        run : str
            The run's id (as in the run column).
        tokens : float or array, optional
            Tokens at which to forecast, each after the run's last checkpoint and at most its
            planned length; default: the planned length (the final loss).
        prob : float
            Central interval probability.

        Returns
        -------
        pandas.DataFrame
            As :meth:`forecast`, with ``run`` and ``fraction`` (t/T) columns.
        """
        layout = self.layout
        hits = np.flatnonzero(layout.names == str(run))
        if hits.size == 0:
            raise ArgumentError(f"no run {run!r} in this fit; runs are "
                                f"{', '.join(map(str, layout.names[:8]))}{', ...' if layout.names.size > 8 else ''}")
        k = int(hits[0])
        total = float(layout.total[k])
        rows = np.flatnonzero(layout.index == k)
        last = int(rows[np.argmax(layout.runs.column("tokens")[rows])])
        t_last = float(layout.runs.column("tokens")[last])
        n_run = float(layout.runs.column("params")[last])
        t = np.atleast_1d(np.asarray(total if tokens is None else tokens, dtype=np.float64))
        if not (np.isfinite(t).all() and (t > t_last).all() and (t <= total * (1 + 1e-9)).all()):
            raise ArgumentError(f"run {run!r}: tokens must lie after its last checkpoint "
                                f"({t_last:.6g}) and at most at its planned length ({total:.6g}); "
                                f"got {t.tolist()} (refit with planned_tokens={{{run!r}: ...}} "
                                "to extend it)")
        theta = self.theta(expand=True)
        r = self.run_offsets()[:, k:k + 1]
        excess = schedule_excess(np.array([layout.fraction[last]]))
        y_last = math.log(float(layout.runs.column("loss")[last]))
        e_last = (y_last - self._log_law(np.array([n_run]), np.array([t_last]))
                  - r - theta["kappa"] * excess)
        params = np.full(t.size, n_run)
        log_law = self._log_law(params, t)
        phi = theta["rho"] ** np.log(t / t_last)[None, :]
        rng = self._rng(random_seed)
        noise = theta["sigma"] * np.sqrt(1.0 - phi**2) * rng.standard_normal((self.n_draws, 1))
        out = (log_law + self._delta(params, t, log_law) + r
               + theta["kappa"] * schedule_excess(t / total)[None, :] + phi * e_last + noise)
        # The schedule term is one shape for every run; what it misses at this point of a
        # schedule, learned from the other finished runs cut at the same fraction, shifts
        # and widens the forecast (see _cut_errors).
        errors = self._cut_errors(float(layout.fraction[last]), k)
        shift, spread = 0.0, 0.0
        if errors.size >= 2:
            shift, spread = -float(errors.mean()), float(errors.std(ddof=1))
            out = out + shift + spread * rng.standard_normal((self.n_draws, 1))
        table = _table(np.exp(out), params, t, prob, "observed")
        table.insert(0, "run", str(run))
        table["fraction"] = t / total
        table.attrs.update(cut_shift=shift, cut_spread=spread, cut_runs=int(errors.size))
        return table

    def _cut_errors(self, fraction: float, exclude: int) -> np.ndarray:
        """Log errors of forecast_run's point forecast (posterior-median parameters) of the
        final loss of every other finished run, cut at ``fraction`` of its length: what the
        model misses at that point of a schedule, as seen on runs whose end is known."""
        layout = self.layout
        theta = {n: float(np.median(v)) for n, v in self.theta().items()}
        sigma, srun, rho, kappa = (theta[n] for n in ("sigma", "sigma_run", "rho", "kappa"))
        tokens = layout.runs.column("tokens")
        y = np.log(layout.runs.column("loss"))
        log_x = {"params": np.log(layout.runs.column("params")), "tokens": np.log(tokens)}
        law = self.law.log_loss(theta, log_x, self.reference, np)
        w = y - law - kappa * schedule_excess(layout.fraction)
        errors = []
        for k in range(layout.names.size):
            rows = np.flatnonzero(layout.index == k)
            rows = rows[np.argsort(tokens[rows])]
            end = rows[-1]
            early = rows[layout.fraction[rows] <= fraction + 1e-9]
            if early.size == 0 and layout.fraction[rows[0]] <= fraction + 0.05:
                early = rows[:1]   # a cut just below min_fraction: its first kept checkpoint
            if k == exclude or early.size == 0 or early[-1] == end or layout.fraction[end] < 1 - 1e-9:
                continue
            log_t = np.log(tokens[early])
            prec = np.linalg.inv(sigma**2 * rho ** np.abs(log_t[:, None] - log_t[None, :]))
            ones = np.ones(early.size)
            # the offset's conditional Normal(S·B/(1 + S·A), S/(1 + S·A)), S = σ_run² (finite
            # at σ_run = 0: no offsets)
            s2 = srun * srun
            var = s2 / (1.0 + s2 * (ones @ prec @ ones))
            offset = var * (ones @ prec @ w[early])
            phi = rho ** (np.log(tokens[end]) - log_t[-1])
            forecast = law[end] + offset + phi * (w[early[-1]] - offset)
            errors.append(forecast - y[end])
        return np.asarray(errors)

    def curve_attributes(self) -> dict[str, Any]:
        """What a saved file needs beyond a ScalingFit's to rebuild the layout: each run's
        planned length (the kept checkpoints and their run ids are the saved runs)."""
        return {"names": [str(n) for n in self.layout.names],
                "total": [float(t) for t in self.layout.total]}

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Save the fit (posterior, kept checkpoints, law, priors, planned lengths) to a
        netCDF file, atomically; :func:`load_curve_fit` reads it back.

        Raises
        ------
        FileExistsError
            When ``path`` exists and ``overwrite`` is False.
        """
        from .io import save_fit

        save_fit(self, path, overwrite=overwrite)

    def run_effects(self, prob: float = 0.9) -> pd.DataFrame:
        """Each run's offset from the law (log loss) with a central ``prob`` interval."""
        r = self.run_offsets()
        q = [(1 - prob) / 2, 0.5, (1 + prob) / 2]
        lower, median, upper = np.quantile(r, q, axis=0)
        counts = np.bincount(self.layout.index, minlength=self.layout.names.size)
        return pd.DataFrame({"run": self.layout.names.astype(str), "checkpoints": counts,
                             "offset_median": median, "offset_lower": lower,
                             "offset_upper": upper})

    def summary(self, prob: float = 0.94) -> pd.DataFrame:
        """Posterior summary of the scalar parameters (ArviZ), paper values included.

        For a Laplace fit the resampled draws look independent to ArviZ, but they are worth
        no more than the importance ESS of their weights: the ``ess_*`` columns are capped
        at ``settings["importance_ess"]`` and the ``mcse_*`` columns grown by
        sqrt(ArviZ's bulk ESS / the cap) to match.
        """
        import arviz as az

        shape = (self.posterior.sizes["chain"], self.posterior.sizes["draw"])
        derived = {n: (("chain", "draw"), np.asarray(v).reshape(shape))
                   for n, v in self.paper_draws().items() if n not in self.posterior}
        data = self.posterior.drop_vars("z_run", errors="ignore").assign(derived)
        table = (az.summary(data, ci_prob=prob) if _has_ci_prob()
                 else az.summary(data, hdi_prob=prob))
        cap = self.settings.get("importance_ess")
        if self.settings.get("method") == "laplace" and cap and "ess_bulk" in table:
            bulk = table["ess_bulk"].astype(float)
            factor = np.sqrt(np.maximum(bulk / float(cap), 1.0))
            for column in table.columns:
                if column.startswith("mcse_"):
                    table[column] = table[column].astype(float) * factor
            for column in table.columns:
                if column.startswith("ess_"):
                    table[column] = np.minimum(table[column].astype(float), float(cap))
        return table

    def diagnostics(self) -> dict[str, float]:
        """Largest R-hat, smallest bulk ESS (over every sampled value) and divergences.

        For a Laplace fit (``settings["method"] == "laplace"``) the draws are resampled
        importance draws: the ESS is at most the importance ESS of their weights (so that is
        the bound reported), R-hat is near 1 by construction, and ``pareto_k`` (PSIS k-hat
        of the weights, reliable ≤ 0.7) is added.
        """
        import arviz as az

        rhat = az.rhat(self.posterior)
        ess = az.ess(self.posterior)
        divergences = int(self.sample_stats["diverging"].sum()) if "diverging" in self.sample_stats else 0
        out = {"r_hat_max": float(max(float(rhat[v].max()) for v in rhat.data_vars)),
               "ess_bulk_min": float(min(float(ess[v].min()) for v in ess.data_vars)),
               "divergences": divergences}
        if self.settings.get("method") == "laplace":
            out["ess_bulk_min"] = min(out["ess_bulk_min"], float(self.settings["importance_ess"]))
            out["pareto_k"] = float(self.settings["pareto_k"])
        return out


def load_curve_fit(path: str | os.PathLike[str]) -> CurveFit:
    """Load a fit written by :meth:`CurveFit.save`; its forecasts equal the saved fit's.

    Raises
    ------
    FitFileError
        When the file is missing, damaged, or not a learning-curve fit.
    """
    from .exceptions import FitFileError
    from .io import read_fit

    fields = read_fit(path, curves=True)
    settings = fields["settings"]
    curves = fields["curves"]
    try:
        layout = curve_layout(fields["runs"], dict(zip(curves["names"], curves["total"])),
                              float(settings["min_fraction"]))
    except (ArgumentError, RunDataError, KeyError) as exc:
        raise FitFileError(f"{str(path)!r} is damaged or incomplete: its runs do not match its "
                           f"curve layout ({exc})") from exc
    if len(layout.runs) != len(fields["runs"]) or list(layout.names) != list(curves["names"]):
        raise FitFileError(f"{str(path)!r} is damaged or incomplete: its runs do not match its "
                           "curve layout")
    return CurveFit(law=fields["law"], priors=fields["priors"], layout=layout,
                    reference=fields["reference"], posterior=fields["posterior"],
                    sample_stats=fields["sample_stats"], settings=settings,
                    discrepancy=fields["discrepancy"], likelihood=fields["likelihood"])


def _check_start(law: ScalingLaw, buf: np.ndarray, compiled: Any, tries: int = 20) -> None:
    """SamplingError when no jittered starting point has a finite density (see
    ScalingModel._check_initial_points: a failed nutpie start can crash the process)."""
    from . import _fastcurves

    for attempt in range(tries):
        u = np.asarray(compiled.initial_point_func(attempt), dtype=np.float64)
        with np.errstate(all="ignore"):
            value, grad = _fastcurves.logp_and_grad(law, buf, u)
        if np.isfinite(value) and np.isfinite(grad).all():
            return
    raise SamplingError(f"the curve model's log density is not finite at any of {tries} "
                        "jittered starting points; check the priors against the data")


def _has_ci_prob() -> bool:
    import inspect

    import arviz as az

    return "ci_prob" in inspect.signature(az.summary).parameters


def _points(params: object, tokens: object) -> tuple[np.ndarray, np.ndarray]:
    try:
        n, d = np.broadcast_arrays(np.atleast_1d(np.asarray(params, dtype=np.float64)),
                                   np.atleast_1d(np.asarray(tokens, dtype=np.float64)))
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"params and tokens must be positive numbers or arrays of one "
                            f"length, got params={params!r}, tokens={tokens!r}") from exc
    for name, values in (("params", n), ("tokens", d)):
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ArgumentError(f"{name} must be finite positive numbers, got {values.tolist()}")
    return n.astype(np.float64), d.astype(np.float64)


def _table(loss: np.ndarray, params: np.ndarray, tokens: np.ndarray, prob: float,
           kind: str) -> pd.DataFrame:
    if not (isinstance(prob, (int, float)) and 0 < prob < 1):
        raise ArgumentError(f"prob must be a number in (0, 1), got {prob!r}")
    q = np.quantile(loss, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    table = pd.DataFrame({"params": params, "tokens": tokens, "flops": 6.0 * params * tokens,
                          "loss_mean": loss.mean(axis=0), "loss_median": q[1],
                          "loss_lower": q[0], "loss_upper": q[2]})
    table.attrs.update(prob=prob, kind=kind)
    return table
