"""ScalingModel: a law, its priors and a likelihood, turned into a PyMC model and sampled.

This is the only module that imports PyMC. The default sampler, nutpie, does not need PyMC at
all: each law's log density and gradient are generated from its formula by
:mod:`bayescale._fastlogp` and compiled once by numba into its on-disk cache, so a new process
starts sampling in about a second and a new data set is only a new buffer (no compilation).
A law whose formula the generator cannot handle is sampled through PyMC instead, with a
one-line :class:`FastPathWarning`.
The same model built in PyMC (:meth:`ScalingModel.build`) is what PyMC's own sampler uses and
what the tests compare the kernel with; ``sampler="nutpie-pymc"`` samples that PyMC model with
nutpie, compiling it once per structure (law, priors, likelihood) and swapping data into the
compiled model (every data-dependent quantity is a ``pm.Data`` container).
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import Runs
from .design import check_design, warn_outliers
from ._validate import choice, integer, mapping, seed
from .exceptions import (PACKAGE_FILES, ArgumentError, ArgumentTypeError, PriorError, RunDataError,
                         SamplingError)
from .laws import ScalingLaw, get_law
from ._groupkind import group_kind
from .priors import Prior, default_noise_priors, priors_to_json

if TYPE_CHECKING:
    from .fit import ScalingFit

__all__ = ["ScalingModel", "LIKELIHOODS", "SAMPLERS", "POOLINGS", "DEFAULT_GROUP_SD",
           "DEFAULT_SHARED_WITH", "SIGMA_GROUP_SD", "default_noise_priors", "FastPathWarning"]


class FastPathWarning(UserWarning):
    """The law's fast sampler density could not be derived; PyMC's model is used instead."""

LIKELIHOODS = ("student_t", "normal")
SAMPLERS = ("nutpie", "pymc", "nutpie-pymc")

# nutpie's mass-matrix adaptation. A low-rank one learns the a–α and b–β correlations the
# reference scales leave: on Chinchilla's runs 5–8x fewer gradient evaluations than a diagonal
# one (mean tree depth ~2.5 vs 4.2) and 4x the ESS. Its larger steps gave a few divergences
# per 4,000 draws at the usual target acceptance of 0.8 (none with the diagonal one); at 0.95
# none in 30 fits of real, synthetic and noisy data, still 1.5–5x fewer evaluations.
NUTPIE_ADAPTATION = "low_rank"
NUTPIE_TARGET_ACCEPT = 0.95

_compiled_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()


class ScalingModel:
    """A Bayesian scaling law: law + priors + likelihood on log loss.

    Parameters
    ----------
    law : str or ScalingLaw
        ``"chinchilla"`` (L = E + A/N^α + B/D^β) or ``"compute"`` (L = E + A·C^−α), or a
        law instance.
    priors : mapping of str to Prior, optional
        Overrides for any of the law's sampled parameters (``E_fraction``, ``a``, ``b``,
        ``alpha``, ``beta``) or the noise (``sigma``, ``nu``). The rest keep their defaults.
    likelihood : {"student_t", "normal"}
        Noise model for log loss. Student-t (ν = 4 by default) is robust to outlying runs.
    link : {"sigmoid"}, optional
        Also model a downstream metric (benchmark accuracy) of runs loaded with
        ``load_runs(..., metric=, task_loss=)``: the law fits the task loss (or the loss),
        and ``Acc = chance + (ceiling − chance)·sigmoid(−k·(L − L₀))`` links it to the metric
        (:mod:`bayescale.downstream`). Link priors (``ceiling_frac``, ``k_scaled``,
        ``l0_scaled``, ``phi``) may be overridden in ``priors``.
    chance : float, optional
        The metric's floor, in [0, 1): 0.25 for 4-way multiple choice. Default 0.
    link_method : {"two_stage", "joint"}, optional
        Fit the two steps in stages (the law, then the link on the runs' losses; default,
        better calibrated on the OLMo ladder) or as one joint posterior.
    pooling : {"partial", "none", "complete"}, optional
        For runs loaded with ``group=``: one hierarchical fit (each group's parameters
        around a population value; the default with two or more groups), each group alone,
        or one law for all runs (the default without groups). See ``docs/guide/groups.md``.
    group_sd : mapping of str to float, optional
        Under ``pooling="partial"``, the sd of the HalfNormal prior on each parameter's
        spread between groups (0: one shared value). Defaults: :data:`DEFAULT_GROUP_SD`,
        with the model-size exponent ``alpha`` shared in a law that also has ``beta`` and the
        coefficient ``b`` in one that also has ``a`` (:data:`DEFAULT_SHARED_WITH`; measured
        with the ``chinchilla`` law only, the same rule also shares b in ``overtrained`` and
        ``data_constrained`` and alpha in ``data_constrained``, untested there). ``"sigma"``
        is the run-to-run noise scale (log scale): by default each group has its own,
        partially pooled (:data:`SIGMA_GROUP_SD`); 0 shares it.

    Examples
    --------
    >>> model = ScalingModel("chinchilla", priors={"alpha": Prior("TruncatedNormal", mu=0.34, sigma=0.05, lower=0, upper=1)})
    """

    def __init__(self, law: str | ScalingLaw = "chinchilla", priors: Mapping[str, Prior] | None = None,
                 likelihood: str = "student_t", *, link: str | None = None,
                 chance: float | None = None, link_method: str | None = None,
                 pooling: str | None = None,
                 group_sd: Mapping[str, float] | None = None) -> None:
        self.law = get_law(law)
        # Groups (runs loaded with group=): see _group_settings and fit_grouped below.
        self.pooling, self.group_sd = _group_settings(self.law, pooling, group_sd)
        choice("likelihood", likelihood, LIKELIHOODS)
        self.likelihood = likelihood
        priors = mapping("priors", priors, "a dict {parameter name: bayescale.Prior}")
        # A link to a downstream metric (issue 16); its priors are kept apart from the law's.
        self.link, self.chance, self.link_method, self.link_priors, priors = _link_settings(
            link, chance, link_method, priors)
        merged = {**self.law.default_priors(), **default_noise_priors(likelihood)}
        for name, prior in priors.items():
            if name not in merged:
                raise PriorError(f"no parameter {name!r} in the {self.law.name} law with a "
                                 f"{likelihood} likelihood; parameters are {sorted(merged)}")
            if not isinstance(prior, Prior):
                raise PriorError(f"prior for {name!r} must be a bayescale.Prior, got {prior!r}")
            merged[name] = prior
        domains = {**self.law.parameter_domains, "sigma": (0.0, math.inf), "nu": (1.0, math.inf)}
        for name, prior in merged.items():
            prior.check_support(name, *domains[name])
        self.priors: dict[str, Prior] = merged

    def __repr__(self) -> str:
        return f"ScalingModel({self.law.name!r}, likelihood={self.likelihood!r})"

    @property
    def structure_key(self) -> tuple:
        """What determines the compiled model: law, priors and likelihood (not the data)."""
        return (self.law.name, priors_to_json(self.priors), self.likelihood)

    # -- model construction ------------------------------------------------------------

    def _check_runs(self, runs: Runs) -> None:
        if not isinstance(runs, Runs):
            raise ArgumentTypeError(f"fit expects Runs from bayescale.load_runs, got {type(runs).__name__}")
        self.law.check_runs(runs)
        needed = self.law.n_parameters + 1
        if len(runs) < needed:
            raise RunDataError(f"{len(runs)} runs cannot fit the {self.law.name} law: it has "
                               f"{self.law.n_parameters} parameters, so at least {needed} runs "
                               "are needed (and many more for useful bands)")

    def data_values(self, runs: Runs) -> dict[str, np.ndarray]:
        """The values of every ``pm.Data`` container for these runs."""
        ref = self.law.reference(runs)
        values = {name: np.asarray(ref[name], dtype=np.float64) for name in self.law.reference_names()}
        for name in self.law.inputs:
            values[f"log_{name}"] = np.log(runs.column(name))
        values["log_loss_observed"] = np.log(runs.column("loss"))
        return values

    def build(self, runs: Runs):
        """Build the PyMC model for these runs (no sampling).

        Returns
        -------
        pymc.Model
        """
        import pymc as pm
        import pytensor.tensor as pt

        self._check_runs(runs)
        values = self.data_values(runs)
        with pm.Model() as model:
            data = {name: pm.Data(name, value) for name, value in values.items()}
            theta = {name: self._random_variable(pm, pt, name, self.priors[name])
                     for name in self.law.parameter_domains}
            ref = {name: data[name] for name in self.law.reference_names()}
            log_x = {name: data[f"log_{name}"] for name in self.law.inputs}
            mu = self.law.log_loss(theta, log_x, ref, pt)
            sigma = self._random_variable(pm, pt, "sigma", self.priors["sigma"])
            observed = data["log_loss_observed"]
            if self.likelihood == "student_t":
                nu = self._random_variable(pm, pt, "nu", self.priors["nu"])
                pm.StudentT("log_loss", nu=nu, mu=mu, sigma=sigma, observed=observed,
                            shape=observed.shape)
            else:
                pm.Normal("log_loss", mu=mu, sigma=sigma, observed=observed, shape=observed.shape)
        return model

    @staticmethod
    def _random_variable(pm, pt, name: str, prior: Prior):
        if prior.dist == "Fixed":
            return pt.constant(prior.params["value"], dtype="float64")
        return getattr(pm, prior.dist)(name, **prior.params)

    def resolved_pooling(self, runs: Runs) -> str:
        """The pooling a fit of these runs uses: the one given, else ``"partial"`` for runs
        with two or more groups and ``"complete"`` (one law for all runs) otherwise."""
        groups = getattr(runs, "group_names", ())
        if self.pooling is None:
            return "partial" if len(groups) >= 2 else "complete"
        if self.pooling != "complete" and getattr(runs, "group", None) is None:
            raise RunDataError(f"pooling={self.pooling!r} needs runs with a group column: load "
                               "them with load_runs(..., group='<column>')")
        return self.pooling

    def sampled_parameters(self) -> list[str]:
        """Names of the parameters that get posterior draws (fixed priors excluded)."""
        names = [*self.law.parameter_domains, "sigma"] + (["nu"] if self.likelihood == "student_t" else [])
        return [n for n in names if self.priors[n].dist != "Fixed"]

    # -- sampling ----------------------------------------------------------------------

    def _compiled(self, runs: Runs):
        """nutpie model of the PyMC graph, compiled once per structure and data shape."""
        import nutpie

        values = self.data_values(runs)
        key = (self.structure_key, len(runs))
        with _cache_lock:
            compiled = _compiled_cache.get(key)
            if compiled is None:
                compiled = nutpie.compile_pymc_model(self.build(runs), backend="numba")
                _compiled_cache[key] = compiled
                return compiled
        return compiled.with_data(**values)

    def _fast_compiled(self, runs: Runs):
        """nutpie model of the kernel derived from the law (numba, cached on disk).

        None, with a one-line :class:`FastPathWarning`, when the kernel cannot serve the law
        (its formula uses an operation the code generator does not know).
        """
        from . import _fastlogp

        reason = _fastlogp.supports(self.law, self.likelihood)
        if reason is not None:
            warnings.warn(f"no fast density for the {self.law.name} law ({reason}); sampling "
                          "PyMC's compiled model instead, which takes 10-40 s to compile in "
                          "each new process", FastPathWarning, skip_file_prefixes=PACKAGE_FILES)
            return None
        sampled = self.sampled_parameters()
        buf = _fastlogp.make_buffer(self.law, self.likelihood, self.priors, sampled,
                                    self.data_values(runs))
        compiled = _fastlogp.nutpie_model(self.law, buf, self.priors, sampled)
        self._check_initial_points(runs, buf, compiled)
        return compiled

    _INITIAL_TRIES = 20

    def _check_initial_points(self, runs: Runs, buf: np.ndarray, compiled: Any) -> None:
        """Raise :class:`SamplingError` when no starting point nutpie would try is finite.

        nutpie reports "All initialization points failed" itself, but a process whose nutpie
        failed that way could crash at exit; trying the same jittered starting points here
        (microseconds) catches it before nutpie runs.
        """
        from . import _fastlogp

        for attempt in range(self._INITIAL_TRIES):
            u = np.asarray(compiled.initial_point_func(attempt), dtype=np.float64)
            with np.errstate(all="ignore"):
                value, grad = _fastlogp.logp_and_grad(self.law, buf, u)
            if np.isfinite(value) and np.isfinite(grad).all():
                return
        raise SamplingError(self._failure_message(
            runs, f"the log density is not finite at any of {self._INITIAL_TRIES} jittered "
                  "starting points"))

    def fit(self, runs: Runs, *, draws: int = 1000, tune: int = 1000, chains: int = 4,
            random_seed: int | None = None, progressbar: bool = False, sampler: str = "nutpie",
            cores: int | None = None, check: bool = True) -> "ScalingFit":
        """Sample the posterior of the law's parameters given the runs.

        Parameters
        ----------
        runs : Runs
            From :func:`bayescale.load_runs`.
        draws, tune : int
            Posterior draws and tuning steps per chain.
        chains : int
            Independent chains (run in parallel on ``cores`` cores).
        random_seed : int, optional
            Seed for reproducible posteriors; a fresh one is drawn and recorded when omitted.
        progressbar : bool
            Show the sampler's progress.
        sampler : {"nutpie", "pymc", "nutpie-pymc"}
            ``"nutpie"``: Rust NUTS on a numba-compiled log density derived from the law's
            formula (compiled once, cached on disk; laws it cannot serve fall back to
            ``"nutpie-pymc"`` with a :class:`FastPathWarning`). ``"pymc"``: PyMC's own NUTS on the PyMC model.
            ``"nutpie-pymc"``: nutpie on the PyMC model compiled by PyTensor (slower to start;
            for comparison). All three sample the same posterior.
        cores : int, optional
            Parallel chains; defaults to min(chains, CPU count).
        check : bool
            Emit a :class:`ConvergenceWarning` when diagnostics fail.

        Returns
        -------
        ScalingFit
            With ``link=`` (a model of a downstream metric): the law's posterior for the
            task loss (or the loss) plus ``fit.link``, the link's posterior; see
            :mod:`bayescale.downstream`.
        """
        from .fit import ScalingFit

        if self.link is not None:
            if isinstance(runs, Runs) and self.resolved_pooling(runs) != "complete":
                raise ArgumentError(
                    "a metric link is fitted to one group of runs at a time: pooling across "
                    f"groups ({len(runs.group_names)} groups in the runs) is not available with "
                    "link=; fit each group's runs (runs.subset(runs.group_mask(name))) or give "
                    "pooling='complete' to ignore the groups")
            return _fit_linked(self, runs, draws=draws, tune=tune, chains=chains,
                               random_seed=random_seed, progressbar=progressbar,
                               sampler=sampler, cores=cores, check=check)
        choice("sampler", sampler, SAMPLERS)
        # nutpie panics (a Rust assertion, not an exception) with tune=0.
        draws = integer("draws", draws, 1)
        tune = integer("tune", tune, 0 if sampler == "pymc" else 1)
        chains = integer("chains", chains, 1)
        random_seed = seed("random_seed", random_seed)
        cores = None if cores is None else integer("cores", cores, 1)
        self._check_runs(runs)
        pooling = self.resolved_pooling(runs)
        if pooling != "complete":
            return fit_grouped(self, runs, pooling, draws=draws, tune=tune, chains=chains,
                               random_seed=random_seed, progressbar=progressbar,
                               sampler=sampler, cores=cores, check=check)
        check_design(runs, self.law, warn=check)  # RunDataError if nothing can be fitted
        self._check_start(runs)
        if random_seed is None:
            random_seed = int(np.random.SeedSequence().entropy % (2**31))
        cores = cores or max(1, min(chains, os.cpu_count() or 1))
        start = time.perf_counter()
        if sampler in ("nutpie", "nutpie-pymc"):
            import nutpie

            compiled = self._fast_compiled(runs) if sampler == "nutpie" else None
            if compiled is None:
                compiled = self._compiled(runs)
            tree, failure = _sample_nutpie(nutpie, compiled, draws=draws, tune=tune,
                                           chains=chains, cores=cores, seed=random_seed,
                                           progress_bar=progressbar, save_warmup=False,
                                           adaptation=NUTPIE_ADAPTATION,
                                           target_accept=NUTPIE_TARGET_ACCEPT)
            if failure is not None:
                raise SamplingError(self._failure_message(runs, f"nutpie failed ({failure})"))
        else:
            import pymc as pm

            with self.build(runs):
                tree = pm.sample(draws=draws, tune=tune, chains=chains, cores=cores,
                                 random_seed=random_seed, progressbar=progressbar,
                                 nuts_sampler="pymc", compute_convergence_checks=False)
        seconds = time.perf_counter() - start
        settings = {"draws": int(draws), "tune": int(tune), "chains": int(chains),
                    "sampler": sampler, "random_seed": int(random_seed), "seconds": seconds}
        fit = ScalingFit.from_sampler_output(self, runs, tree, settings)
        if check:
            fit.warn_if_unreliable()
            warn_outliers(fit)
        return fit

    # -- sampler failures --------------------------------------------------------------

    def _log_density_at_start(self, runs: Runs) -> tuple[float, dict[str, float]]:
        """Log posterior (up to a constant) at the priors' medians, and those values.

        nutpie starts near there; a non-finite value means no chain can start.
        """
        import scipy.stats as st

        point = {name: _prior_center(prior) for name, prior in self.priors.items()}
        theta = {name: np.array([[value]]) for name, value in point.items()}
        frame = runs.frame
        log_x = {name: np.log(frame[name].to_numpy(dtype=np.float64))[None, :]
                 for name in self.law.inputs}
        with np.errstate(all="ignore"):
            mu = self.law.log_loss(theta, log_x, self.law.reference(runs), np)
            observed = np.log(frame["loss"].to_numpy(dtype=np.float64))[None, :]
            sigma = point["sigma"]
            if self.likelihood == "student_t":
                value = st.t.logpdf(observed, df=point["nu"], loc=mu, scale=sigma).sum()
            else:
                value = st.norm.logpdf(observed, loc=mu, scale=sigma).sum()
        return float(value), point

    def _check_start(self, runs: Runs) -> None:
        """Refuse, before sampling, priors whose central values make the density non-finite."""
        value, point = self._log_density_at_start(runs)
        if np.isfinite(value):
            return
        raise SamplingError(self._failure_message(runs, None, point))

    def _failure_message(self, runs: Runs, exc: str | None,
                         point: dict[str, float] | None = None) -> str:
        if point is None:
            _, point = self._log_density_at_start(runs)
        defaults = {**self.law.default_priors(), **default_noise_priors(self.likelihood)}
        changed = [f"{name}={prior!r}" for name, prior in self.priors.items()
                   if prior != defaults.get(name)]
        def extreme(value: float) -> bool:
            return not np.isfinite(value) or abs(value) > 1e100 or 0 < abs(value) < 1e-100

        suspects = [f"{name}={value:.3g}" for name, value in point.items() if extreme(value)]
        suspects += [f"{name}={prior!r}" for name, prior in self.priors.items()
                     if any(extreme(v) for v in prior.params.values())]
        loss = runs.frame["loss"]
        if exc is None:
            what = (f"the log density of the {self.law.name} law is not finite at the priors' "
                    "central values")
        else:
            what = exc
        return (f"the sampler could not start: {what}. Priors changed from the "
                f"defaults: {', '.join(changed) or 'none'}; extreme values: "
                f"{', '.join(suspects) or 'none'}; data: {len(runs)} runs from {runs.source}, "
                f"loss {loss.min():.4g} to {loss.max():.4g}. Use priors on the scale of the "
                "defaults (see ScalingModel's docs) and check the runs for outliers.")

    def prior_predictive(self, runs: Runs, draws: int = 500,
                         random_seed: int | None = None) -> Any:
        """Prior predictive check: draws of every parameter and of each run's loss from the
        priors alone, before seeing the losses.

        Parameters
        ----------
        runs : Runs
            The runs whose inputs (N, D or C) are used; their losses fill ``observed_data``.
        draws : int
            Number of prior draws.
        random_seed : int, optional

        Returns
        -------
        xarray.DataTree
            Groups ``prior`` (the sampled parameters), ``prior_predictive`` (``log_loss``,
            dims chain, draw, run) and ``observed_data`` (``log_loss`` of the runs): ArviZ's
            ``az.plot_ppc(tree, group="prior_predictive")`` compares them.
        """
        draws = integer("draws", draws, 1)
        random_seed = seed("random_seed", random_seed)
        return self.sample_prior_predictive(runs, draws=draws, random_seed=random_seed)

    def sample_prior_predictive(self, runs: Runs, draws: int = 500, random_seed: int | None = None):
        """Draw from the prior predictive of log loss at the runs' inputs (a prior check).

        Returns
        -------
        xarray.DataTree
            With groups ``prior`` and ``prior_predictive``; compare ``exp(log_loss)`` with
            the observed losses to see whether the priors allow the data.
        """
        import pymc as pm

        with self.build(runs):
            return pm.sample_prior_predictive(draws=draws, random_seed=random_seed)


def _sample_nutpie(nutpie: Any, compiled: Any, **settings: Any) -> tuple[Any, str | None]:
    """Run nutpie; on failure return (None, what it said) with its sampler already gone.

    A failed nutpie sampler left to the garbage collector (it sits in a reference cycle with
    the exception's traceback) is freed at interpreter exit, after numba's runtime, and the
    process then crashed with a segfault. So the failure is turned into text, the sampler
    cancelled and every reference dropped here, while everything it needs is still alive.
    """
    import gc

    sampler = None
    failure = None
    try:
        sampler = nutpie.sample(compiled, blocking=False, **settings)
        return sampler.wait(), None
    except (KeyboardInterrupt, SystemExit):
        if sampler is not None:
            sampler.cancel()
        raise
    except BaseException as exc:  # nutpie's Rust panics are BaseExceptions, not Exceptions
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        failure = f"{type(exc).__name__}: {text}"
        exc.__traceback__ = None
    if sampler is not None:
        try:
            sampler.cancel()
        except BaseException:  # already stopped
            pass
    del sampler
    gc.collect()
    return None, failure


def _prior_center(prior: Prior) -> float:
    """A central value of a prior (its median, or the midpoint of a bounded support)."""
    p = prior.params
    with np.errstate(all="ignore"):
        if prior.dist == "Fixed":
            return p["value"]
        if prior.dist in ("Normal", "StudentT"):
            return p["mu"]
        if prior.dist == "LogNormal":
            return float(np.exp(p["mu"]))
        if prior.dist in ("HalfNormal", "HalfStudentT"):
            return 0.674 * p["sigma"]
        if prior.dist == "Exponential":
            return math.log(2.0) / p["lam"]
        if prior.dist == "Gamma":
            return p["alpha"] / p["beta"]
        if prior.dist == "Beta":
            return p["alpha"] / (p["alpha"] + p["beta"])
        if prior.dist == "Uniform":
            return 0.5 * (p["lower"] + p["upper"])
        lo, hi = p["lower"], p["upper"]  # TruncatedNormal
        return min(max(p["mu"], lo), hi)


def clear_compiled_cache() -> None:
    """Forget every compiled model (frees memory; the next fit compiles again)."""
    with _cache_lock:
        _compiled_cache.clear()



# -- downstream metric (issue 16): the link's PyMC model and the two-step fit -------------

def _link_settings(link: str | None, chance: float | None, link_method: str | None,
                   priors: Mapping[str, Prior]):
    """Validate the link options; split the link's priors from the law's."""
    from ._validate import real
    from .downstream import (DEFAULT_LINK_METHOD, LINK_DOMAINS, LINK_METHODS, LINKS,
                             default_link_priors)

    given = {n: p for n, p in priors.items() if n in LINK_DOMAINS}
    rest = {n: p for n, p in priors.items() if n not in LINK_DOMAINS}
    if link is None:
        if given or chance is not None or link_method is not None:
            what = (f"prior for {sorted(given)[0]!r}" if given else
                    "chance=" if chance is not None else "link_method=")
            raise ArgumentTypeError(f"{what} belongs to a metric link; pass link='sigmoid'")
        return None, None, None, {}, rest
    choice("link", link, LINKS)
    method = DEFAULT_LINK_METHOD if link_method is None else choice("link_method", link_method,
                                                                    LINK_METHODS)
    floor = 0.0 if chance is None else real("chance", chance, "nonnegative")
    if not floor < 1.0:
        from .exceptions import ArgumentError

        raise ArgumentError(f"chance must be in [0, 1) (the metric's floor, e.g. 0.25 for "
                            f"4-way multiple choice), got {floor!r}")
    merged = default_link_priors()
    for name, prior in given.items():
        if not isinstance(prior, Prior):
            raise PriorError(f"prior for {name!r} must be a bayescale.Prior, got {prior!r}")
        prior.check_support(name, *LINK_DOMAINS[name])
        merged[name] = prior
    return link, floor, method, merged, rest


def _step1_runs(runs: Runs) -> Runs:
    """The runs the law fits: their task loss as ``loss`` when one was loaded."""
    from dataclasses import replace

    if runs.outcomes is None or "task_loss" not in runs.outcomes.columns:
        return runs
    frame = runs.frame.copy()
    frame["loss"] = runs.outcome("task_loss")
    return replace(runs, frame=frame)


def _add_link(pm, pt, priors: Mapping[str, Prior], loss, metric: np.ndarray, chance: float,
              ref: Mapping[str, float]) -> None:
    """The link's parameters and the Beta likelihood of the metric, in the current model."""
    from .downstream import _EDGE, clip_metric, sigmoid_link

    rv = {name: ScalingModel._random_variable(pm, pt, name, prior)
          for name, prior in priors.items()}
    ceiling = chance + (1.0 - chance) * rv["ceiling_frac"]
    k = rv["k_scaled"] / ref["span"]
    l0 = ref["center"] + rv["l0_scaled"] * ref["span"]
    mu = pt.clip(sigmoid_link(loss, chance, ceiling, k, l0, xp=pt), _EDGE, 1.0 - _EDGE)
    observed = clip_metric(metric)
    pm.Beta("metric", alpha=mu * rv["phi"], beta=(1.0 - mu) * rv["phi"], observed=observed,
            shape=observed.shape)


def _sample_pymc_model(model, sampler: str, *, draws: int, tune: int, chains: int,
                       cores: int, random_seed: int, progressbar: bool, what: str):
    """Sample a PyMC model with nutpie (compiled by PyTensor) or PyMC's NUTS."""
    if sampler == "pymc":
        import pymc as pm

        with model:
            return pm.sample(draws=draws, tune=tune, chains=chains, cores=cores,
                             random_seed=random_seed, progressbar=progressbar,
                             nuts_sampler="pymc", compute_convergence_checks=False)
    import nutpie

    compiled = nutpie.compile_pymc_model(model, backend="numba")
    tree, failure = _sample_nutpie(nutpie, compiled, draws=draws, tune=tune, chains=chains,
                                   cores=cores, seed=random_seed, progress_bar=progressbar,
                                   save_warmup=False, target_accept=NUTPIE_TARGET_ACCEPT)
    if failure is not None:
        raise SamplingError(f"the sampler failed on the {what}: {failure}")
    return tree


def _sample_link(model: ScalingModel, loss: np.ndarray, metric: np.ndarray,
                 ref: Mapping[str, float], sampler: str, **settings: Any):
    """Sample the link alone (the second stage): the numba kernel for nutpie, else PyMC."""
    from .downstream import LINK_PARAMETERS, clip_metric

    if sampler == "nutpie":
        import nutpie

        from . import _linkkernel

        buf, sampled = _linkkernel.make_buffer(model.link_priors, LINK_PARAMETERS, loss,
                                               clip_metric(metric), float(model.chance), ref)
        compiled = _linkkernel.nutpie_model(buf, model.link_priors, sampled)
        tree, failure = _sample_nutpie(
            nutpie, compiled, draws=settings["draws"], tune=settings["tune"],
            chains=settings["chains"], cores=settings["cores"], seed=settings["random_seed"],
            progress_bar=settings["progressbar"], save_warmup=False,
            target_accept=NUTPIE_TARGET_ACCEPT)
        if failure is not None:
            raise SamplingError(f"the sampler failed on the metric link: {failure}")
        return tree
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as link_model:
        _add_link(pm, pt, model.link_priors, loss, metric, model.chance, ref)
    return _sample_pymc_model(link_model, "pymc" if sampler == "pymc" else "nutpie",
                              what="metric link", **settings)


def _fit_linked(model: ScalingModel, runs: Runs, *, draws: int, tune: int, chains: int,
                random_seed: int | None, progressbar: bool, sampler: str, cores: int | None,
                check: bool) -> "ScalingFit":
    """Fit the law and the link (two stages, or jointly); see :mod:`bayescale.downstream`."""
    from dataclasses import replace

    import pymc as pm
    import pytensor.tensor as pt

    from .downstream import LINK_PARAMETERS, LinkPosterior, link_reference, warn_link_findings
    from .exceptions import ConvergenceWarning
    from .fit import RHAT_MAX, ScalingFit

    if not isinstance(runs, Runs):
        raise ArgumentTypeError(f"fit expects Runs from bayescale.load_runs, got {type(runs).__name__}")
    if not runs.has_metric:
        raise RunDataError(f"link={model.link!r} needs runs with a metric: load them with "
                           "load_runs(..., metric=<column>) (and task_loss=<column> for a "
                           "task loss)")
    choice("sampler", sampler, SAMPLERS)
    draws = integer("draws", draws, 1)
    tune = integer("tune", tune, 0 if sampler == "pymc" else 1)
    chains = integer("chains", chains, 1)
    random_seed = seed("random_seed", random_seed)
    if random_seed is None:
        random_seed = int(np.random.SeedSequence().entropy % (2**31))
    cores = integer("cores", cores, 1) if cores is not None else max(1, min(chains, os.cpu_count() or 1))
    # One law for all runs (the link refuses groups unless pooling="complete" was asked for).
    plain = ScalingModel(model.law, priors=model.priors, likelihood=model.likelihood,
                         pooling="complete")
    step1 = _step1_runs(runs)
    loss = step1.column("loss")
    metric = runs.outcome("metric")
    ref = link_reference(loss)
    names = runs.outcome_names or {}
    settings = {"draws": draws, "tune": tune, "chains": chains, "cores": cores,
                "random_seed": random_seed, "progressbar": progressbar}
    start = time.perf_counter()
    if model.link_method == "two_stage":
        fit = plain.fit(step1, sampler=sampler, check=check, **settings)
        tree = _sample_link(model, loss, metric, ref, sampler,
                            **{**settings, "random_seed": random_seed + 1})
    else:
        plain._check_runs(step1)
        check_design(step1, plain.law, warn=check)
        plain._check_start(step1)
        joint = plain.build(step1)
        with joint:
            theta = {name: (pt.constant(plain.priors[name].params["value"], dtype="float64")
                            if plain.priors[name].dist == "Fixed" else joint[name])
                     for name in plain.law.parameter_domains}
            data = {name: joint[name] for name in plain.data_values(step1)}
            law_ref = {name: data[name] for name in plain.law.reference_names()}
            log_x = {name: data[f"log_{name}"] for name in plain.law.inputs}
            law_loss = pt.exp(plain.law.log_loss(theta, log_x, law_ref, pt))
            _add_link(pm, pt, model.link_priors, law_loss, metric, model.chance, ref)
        tree = _sample_pymc_model(joint, "pymc" if sampler == "pymc" else "nutpie",
                                  what="joint law and link", **settings)
        fit = ScalingFit.from_sampler_output(
            plain, step1, tree, {"draws": draws, "tune": tune, "chains": chains,
                                 "sampler": sampler, "random_seed": random_seed,
                                 "seconds": time.perf_counter() - start})
        if check:
            fit.warn_if_unreliable()
            warn_outliers(fit)
    posterior = tree["posterior"].to_dataset()[list(LINK_PARAMETERS)]
    posterior = posterior.drop_vars([c for c in posterior.coords if c not in ("chain", "draw")])
    link = LinkPosterior(posterior=posterior, chance=float(model.chance),
                         center=ref["center"], span=ref["span"], method=model.link_method,
                         metric_name=names.get("metric", "metric"),
                         loss_name=names.get("task_loss", "loss"),
                         observed_loss=np.asarray(loss), observed_metric=np.asarray(metric),
                         link=model.link, priors=dict(model.link_priors))
    fit = replace(fit, link=link, settings={**fit.settings,
                                            "seconds": time.perf_counter() - start})
    if check:
        import arviz as az

        rhat = az.rhat(link.posterior)
        bad = [n for n in LINK_PARAMETERS if not float(rhat[n]) <= RHAT_MAX]
        if chains > 1 and bad:
            warnings.warn(f"the metric link's R-hat exceeds {RHAT_MAX} for {', '.join(bad)}: "
                          "its chains disagree; run more tuning and draws", ConvergenceWarning,
                          skip_file_prefixes=PACKAGE_FILES)
        warn_link_findings(link)
    return fit


# -- groups: one fit across data mixes, families or settings ----------------------------------

#: How a fit shares the law's parameters between groups of runs.
POOLINGS = ("partial", "none", "complete")
#: Scale (sd of a HalfNormal prior) of each parameter's spread between groups under
#: ``pooling="partial"``, on the scale it varies on: log E and log of the exponents (a share),
#: the log coefficients a, b (nats, additive). Chosen on Porian et al.'s configurations
#: (benchmarks/bench_groups.py): E and the coefficients differ between data sets and
#: schedules by 5-40%, the exponents by a few per cent.
DEFAULT_GROUP_SD = {"E_fraction": 0.2, "a": 0.5, "b": 0.5, "alpha": 0.1, "beta": 0.1}
_DEFAULT_SD_BY_KIND = {"log": 0.1, "linear": 0.5}
#: Shared by default (key) in a law that also has the value's partner: on two triples of
#: Porian et al.'s configurations (benchmarks/bench_groups_vary.py,
#: benchmarks/results/groups_vary_summary.csv), letting alpha vary as well as beta gained no
#: PSIS-LOO (506.1 vs 506.9, 597.8 vs 598.8) nor holdout accuracy; with the noise per group,
#: letting b vary as well as a gained 0.3 ± 2.3 and 4.1 ± 5.1 in PSIS-LOO, lost holdout
#: accuracy (RMSLE 0.025 vs 0.021, 0.028 vs 0.026) and cost 86 divergences against 1.
DEFAULT_SHARED_WITH = {"alpha": "beta", "b": "a"}
#: Scale of the spread of log sigma (the run-to-run noise) between groups. The noise varies
#: by default: Porian et al.'s configurations differ in noise (data sets, schedules), and a
#: shared sigma is the wrong noise for every group. Per-group noise raised PSIS-LOO from
#: 506.9 to 583.9 and 598.8 to 629.1 (pooling "none": 585.0, 632.1) and lowered holdout RMSLE
#: from 0.030 to 0.021 and 0.031 to 0.026 at 90% coverage 0.93 and 1.0
#: (benchmarks/bench_groups_vary.py). ``group_sd={"sigma": 0}`` shares it.
SIGMA_GROUP_SD = 0.5


def _group_settings(law: ScalingLaw, pooling: str | None,
                    group_sd: Mapping[str, float] | None) -> tuple[str | None, dict[str, float]]:
    if pooling is not None:
        choice("pooling", pooling, POOLINGS)
    given = mapping("group_sd", group_sd, "a dict {parameter name: sd >= 0 (0: shared)}")
    sds = {}
    for name in law.parameter_domains:
        kind = group_kind(law, name)
        sds[name] = 0.0 if kind == "shared" else DEFAULT_GROUP_SD.get(name, _DEFAULT_SD_BY_KIND[kind])
        if DEFAULT_SHARED_WITH.get(name) in law.parameter_domains:
            sds[name] = 0.0
    sds["sigma"] = SIGMA_GROUP_SD
    for name, value in given.items():
        if name not in sds:
            raise PriorError(f"group_sd: no parameter {name!r} in the {law.name} law; "
                             f"parameters are {sorted(sds)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise PriorError(f"group_sd[{name!r}] must be a finite number >= 0 (0: the same "
                             f"value in every group), got {value!r}")
        if value > 0 and group_kind(law, name) == "shared":
            raise PriorError(f"group_sd[{name!r}]: {name} is bounded on both sides and cannot "
                             "vary between groups; give 0")
        sds[name] = float(value)
    return pooling, sds


def group_index(runs: Runs) -> tuple[tuple, np.ndarray]:
    """The runs' distinct groups and each run's position among them."""
    names = runs.group_names
    labels = np.array([str(g) for g in runs.group], dtype=object)
    position = {str(name): k for k, name in enumerate(names)}
    return names, np.array([position[label] for label in labels], dtype=np.int64)


def build_partial(model: ScalingModel, runs: Runs):
    """The partial-pooling PyMC model: each group's parameters drawn around a population
    value (the law's own prior) with a learned spread: non-centred (z per group) for small
    groups and tight spreads, centred for groups with many runs (when at least
    :data:`CENTRED_MIN_GROUPS` have many), and then the population
    value an offset from the centred groups' mean where
    :func:`bayescale._fastgroups.population_offset` allows (no funnel in the population
    value and its spread with few groups).

    A parameter with ``group_sd`` 0 is one value for all groups. The noise scale sigma varies
    between groups the same way (always non-centred) when ``group_sd["sigma"]`` is above 0;
    nu is shared.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from . import _fastgroups

    names, index = group_index(runs)
    few_runs, many_runs = _centring(model, index, len(names))
    values = model.data_values(runs)
    law = model.law
    with pm.Model() as pm_model:
        data = {name: pm.Data(name, value) for name, value in values.items()}
        where = pm.Data("group_index", index)
        theta = {}
        for name in _fastgroups.population_names(law, model.priors, model.group_sd):
            sd = model.group_sd[name]
            prior = model.priors[name]
            if sd == 0 or prior.dist == "Fixed":
                theta[name] = model._random_variable(pm, pt, f"pop_{name}", prior)
                continue
            kind = group_kind(law, name)
            linear = kind == "linear"
            # Many runs pin a group's value down: centred there (the non-centred z would be
            # tied to the population's value and spread, a ridge NUTS crawls along);
            # non-centred for small groups, whose values the population sets (a funnel).
            # A tight spread (the exponents) sits near zero, where centred is a funnel.
            few, many = (few_runs, many_runs) if _centres_large_groups(model, name) else (
                np.arange(len(names)), np.arange(0))
            flags = np.zeros(len(names), dtype=bool)
            flags[many] = True
            spread = pm.HalfNormal(f"popsd_{name}", sigma=sd)
            if _fastgroups.population_offset(kind, prior, sd, flags):
                # The population value as an offset from the centred groups' mean (see
                # population_offset): the law's prior and the groups' normal as potentials.
                # initial point: the prior's centre and w = 0, as the kernel's initial_centres
                raw = pm.Flat(f"raw_{name}", shape=many.size, initval=np.full(
                    many.size, _fastgroups.centre_on_group_scale(law, name, prior)))
                w = pm.Flat(f"popw_{name}", initval=0.0)
                scale = spread / math.sqrt(many.size)
                centre = raw.mean() + scale * w
                pop = pm.Deterministic(f"pop_{name}", centre if linear else pt.exp(centre))
                prior_rv = getattr(pm, prior.dist).dist(**prior.params)
                pm.Potential(f"prior_pop_{name}", pm.logp(prior_rv, pop) + pt.log(scale)
                             + (0.0 if linear else centre))
                pm.Potential(f"groups_{name}",
                             pm.logp(pm.Normal.dist(centre, spread), raw).sum())
            else:
                pop = model._random_variable(pm, pt, f"pop_{name}", prior)
                centre = pop if linear else pt.log(pop)
                raw = pm.Normal(f"raw_{name}", centre, spread, shape=many.size) if many.size else None
            per_group = pt.zeros(len(names))
            if few.size:
                z = pm.Normal(f"z_{name}", 0.0, 1.0, shape=few.size)
                per_group = pt.set_subtensor(per_group[few], centre + spread * z)
            if many.size:
                per_group = pt.set_subtensor(per_group[many], raw)
            per_group = pm.Deterministic(f"group_{name}", per_group if linear
                                         else pt.exp(per_group))
            theta[name] = per_group[where]
        ref = {name: data[name] for name in law.reference_names()}
        log_x = {name: data[f"log_{name}"] for name in law.inputs}
        sigma = theta.pop("sigma", None)    # one per run's group, when it varies
        mu = law.log_loss(theta, log_x, ref, pt)
        if sigma is None:
            sigma = model._random_variable(pm, pt, "sigma", model.priors["sigma"])
        observed = data["log_loss_observed"]
        if model.likelihood == "student_t":
            nu = model._random_variable(pm, pt, "nu", model.priors["nu"])
            pm.StudentT("log_loss", nu=nu, mu=mu, sigma=sigma, observed=observed,
                        shape=observed.shape)
        else:
            pm.Normal("log_loss", mu=mu, sigma=sigma, observed=observed, shape=observed.shape)
    return pm_model


#: nutpie's target acceptance for the hierarchical model: a smaller step than a single fit's
#: (0.95), because with two or three groups each spread is barely known and the layer keeps
#: some curvature. 3 groups x 80 simulated runs and notebook 04's Porian triple, 5 seeds each
#: x 4,000 draws: 0-1 and 0 divergences at 0.98 (benchmarks/bench_groups_speed.py
#: --divergences, benchmarks/results/groups_divergences.csv); at 0.95, 1-13 for 1/1.4 the
#: gradients per draw in development runs (not committed).
GROUPED_TARGET_ACCEPT = 0.98
#: Groups with at least this many runs per law parameter are sampled centred.
CENTRED_RUNS_PER_PARAMETER = 2
#: ... when at least this many groups are large: with one or two, the spread has nothing to
#: hold it off zero, where centred is a funnel (notebook 04's "four small runs" fit: 0
#: divergences per 4,000 draws non-centred, groups_divergences.csv "porian-few4"; 0-5
#: centred at 1/2.8 the gradients a draw in development runs, not committed).
CENTRED_MIN_GROUPS = 3
#: ... and only for parameters whose spread prior is at least this wide.
CENTRED_MIN_SD = 0.2


def _centring(model: ScalingModel, index: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the groups sampled non-centred (few runs) and centred (many)."""
    counts = np.bincount(index, minlength=n_groups)
    many = counts >= CENTRED_RUNS_PER_PARAMETER * model.law.n_parameters
    if np.count_nonzero(many) < CENTRED_MIN_GROUPS:
        many[:] = False
    return np.flatnonzero(~many), np.flatnonzero(many)


def _centres_large_groups(model: ScalingModel, name: str) -> bool:
    """Whether groups with many runs sample this parameter centred. Never the noise scale:
    groups' noise is often alike (a spread near 0, where centred is a funnel: in development
    runs, not committed, 5-126 divergences per 4,000 draws against 0-3 non-centred on 3 x 80
    simulated runs)."""
    return name != "sigma" and model.group_sd[name] >= CENTRED_MIN_SD


def centred_groups(model: ScalingModel, index: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per law parameter and the noise scale ``"sigma"``, which groups :func:`build_partial`
    samples centred (a boolean per group; all False for a parameter shared between groups,
    and always for sigma)."""
    _, many = _centring(model, index, n_groups)
    flags = {}
    for name in [*model.law.parameter_domains, "sigma"]:
        flag = np.zeros(n_groups, dtype=bool)
        if _centres_large_groups(model, name):
            flag[many] = True
        flags[name] = flag
    return flags


def _fast_partial(model: ScalingModel, runs: Runs):
    """nutpie model of the grouped kernel derived from the law (:mod:`bayescale._fastgroups`),
    the same density as :func:`build_partial`; None, with a one-line
    :class:`FastPathWarning`, when the kernel cannot serve the law."""
    from . import _fastgroups

    reason = _fastgroups.supports(model.law, model.likelihood)
    if reason is not None:
        warnings.warn(f"no fast grouped density for the {model.law.name} law ({reason}); "
                      "sampling PyMC's compiled model instead, which takes 20-70 s to compile "
                      "in each new process", FastPathWarning, skip_file_prefixes=PACKAGE_FILES)
        return None
    names, index = group_index(runs)
    centred = centred_groups(model, index, len(names))
    buf = _fastgroups.make_buffer(model.law, model.likelihood, model.priors, model.group_sd,
                                  model.data_values(runs), index, centred)
    layout = _fastgroups.variable_layout(model.law, model.priors, model.group_sd, len(names),
                                         centred, model.likelihood)
    compiled = _fastgroups.nutpie_model(model.law, buf, model.priors, model.group_sd, layout,
                                        model.likelihood)
    for attempt in range(ScalingModel._INITIAL_TRIES):
        u = np.asarray(compiled.initial_point_func(attempt), dtype=np.float64)
        with np.errstate(all="ignore"):
            value, grad = _fastgroups.logp_and_grad(model.law, buf, u)
        if np.isfinite(value) and np.isfinite(grad).all():
            return compiled
    raise SamplingError(model._failure_message(
        runs, f"the log density is not finite at any of {ScalingModel._INITIAL_TRIES} "
              "jittered starting points"))


def _compiled_partial(model: ScalingModel, runs: Runs):
    """nutpie model of :func:`build_partial`, compiled once per structure, group count and
    number of runs; new data of the same shape is swapped in."""
    import nutpie

    names, index = group_index(runs)
    values = {**model.data_values(runs), "group_index": index}
    few, _ = _centring(model, index, len(names))
    # Not keyed by the number of runs: the graph's shapes are symbolic, so any data set with
    # the same groups layout reuses the compiled model.
    key = ("partial", model.structure_key, tuple(sorted(model.group_sd.items())), len(names),
           few.tobytes())
    with _cache_lock:
        compiled = _compiled_cache.get(key)
        if compiled is None:
            compiled = nutpie.compile_pymc_model(build_partial(model, runs), backend="numba")
            _compiled_cache[key] = compiled
            return compiled
    return compiled.with_data(**values)


def group_values(law: ScalingLaw, theta: Mapping[str, np.ndarray], ref_from: Mapping[str, float],
                 ref_to: Mapping[str, float]) -> dict[str, np.ndarray]:
    """The same law parameters under another reference (paper values are unchanged)."""
    return {name: np.asarray(v, dtype=np.float64)
            for name, v in law.sampled_values(law.paper_values(theta, ref_from), ref_to).items()}


def fit_grouped(model: ScalingModel, runs: Runs, pooling: str, *, draws: int, tune: int,
                chains: int, random_seed: int | None, progressbar: bool, sampler: str,
                cores: int | None, check: bool) -> "ScalingFit":
    """Fit with ``pooling="partial"`` (one hierarchical model) or ``"none"`` (each group
    alone, exactly :meth:`ScalingModel.fit` on its runs with the same seed).

    The fit's posterior holds each law parameter per group (dim ``group``), under each
    group's own reference scales, so a group's draws are those of an ordinary fit of that
    group; ``pop_<name>`` and ``popsd_<name>`` are the population's value and spread.
    """
    import xarray as xr

    from .exceptions import DesignWarning
    from .fit import ScalingFit

    names, index = group_index(runs)
    needed = model.law.n_parameters + 1
    counts = np.bincount(index, minlength=len(names))
    small = [f"{name!r} ({count} runs)" for name, count in zip(names, counts) if count < needed]
    if small and pooling == "none":
        raise RunDataError(f"pooling='none' fits each group alone and the {model.law.name} law "
                           f"needs at least {needed} runs per group; too few in: "
                           f"{', '.join(small)}. Use pooling='partial' (small groups borrow "
                           "strength from the others)")
    if small and check:
        warnings.warn(f"group(s) {', '.join(small)} have fewer runs than the {model.law.name} "
                      f"law has parameters ({model.law.n_parameters}): their parameters come "
                      "mostly from the other groups (partial pooling); their bands say so",
                      DesignWarning, skip_file_prefixes=PACKAGE_FILES)
    if random_seed is None:
        random_seed = int(np.random.SeedSequence().entropy % (2**31))
    base = {"draws": int(draws), "tune": int(tune), "chains": int(chains),
            "random_seed": int(random_seed)}
    group_settings = {"pooling": pooling, "groups": [_json_label(n) for n in names],
                      "group_column": runs.group_column}
    start = time.perf_counter()
    if pooling == "none":
        plain = ScalingModel(model.law, model.priors, model.likelihood, pooling="complete")
        fits = [plain.fit(runs.subset(index == k), draws=draws, tune=tune, chains=chains,
                          random_seed=random_seed, progressbar=progressbar, sampler=sampler,
                          cores=cores, check=check) for k in range(len(names))]
        posterior = xr.concat([f.posterior for f in fits], dim="group")
        stats = xr.concat([f.sample_stats for f in fits], dim="group")
        settings = {**base, "sampler": sampler, "seconds": time.perf_counter() - start,
                    **group_settings}
        fit = ScalingFit(law=model.law, priors=dict(model.priors), likelihood=model.likelihood,
                         runs=runs, reference=model.law.reference(runs), posterior=posterior,
                         sample_stats=stats, settings=settings, discrepancy=None)
        # The group fits are the fit's group views (a loaded fit rebuilds the same ones).
        fit.__dict__["_group_views"] = {str(n): replace_settings(f, fit, n)
                                        for n, f in zip(names, fits)}
        if check:
            fit.warn_if_unreliable()
        return fit
    if sampler == "pymc":
        raise ArgumentError("sampler='pymc' is not available with pooling='partial': the "
                            "hierarchical model is sampled by nutpie; use sampler='nutpie' (the "
                            "default) or 'nutpie-pymc' (nutpie on the PyMC model)")
    import nutpie

    cores = cores or max(1, min(chains, os.cpu_count() or 1))
    check_design(runs, model.law, warn=False)
    compiled = _fast_partial(model, runs) if sampler == "nutpie" else None
    route = "nutpie" if compiled is not None else "nutpie-pymc"
    if compiled is None:
        compiled = _compiled_partial(model, runs)
    tree, failure = _sample_nutpie(nutpie, compiled, draws=draws, tune=tune, chains=chains,
                                   cores=cores, seed=random_seed, progress_bar=progressbar,
                                   save_warmup=False, adaptation=NUTPIE_ADAPTATION,
                                   target_accept=GROUPED_TARGET_ACCEPT)
    if failure is not None:
        raise SamplingError(model._failure_message(runs, f"nutpie failed ({failure})"))
    seconds = time.perf_counter() - start
    raw = tree["posterior"].to_dataset()
    shared_ref = model.law.reference(runs)
    law_names = list(model.law.parameter_domains)
    shape = (raw.sizes["chain"], raw.sizes["draw"])
    pop = {}
    for name in law_names:
        prior = model.priors[name]
        pop[name] = (np.full(shape, prior.params["value"]) if prior.dist == "Fixed"
                     else raw[f"pop_{name}"].to_numpy())
    per_group = {name: np.empty((*shape, len(names))) for name in law_names}
    for k in range(len(names)):
        theta = {}
        for name in law_names:
            if f"group_{name}" in raw:
                theta[name] = raw[f"group_{name}"].to_numpy()[..., k]
            else:
                theta[name] = pop[name]
        own_ref = model.law.reference(runs.subset(index == k))
        for name, value in group_values(model.law, theta, shared_ref, own_ref).items():
            per_group[name][..., k] = value
    variables = {name: (("chain", "draw", "group"), per_group[name]) for name in law_names}
    for name in law_names:
        if model.priors[name].dist != "Fixed":
            variables[f"pop_{name}"] = (("chain", "draw"), pop[name])
        if f"popsd_{name}" in raw:
            variables[f"popsd_{name}"] = (("chain", "draw"), raw[f"popsd_{name}"].to_numpy())
    for name in ("sigma", "nu"):
        if name in raw:
            variables[name] = (("chain", "draw"), raw[name].to_numpy())
    if "group_sigma" in raw:    # the noise scale per group
        variables["sigma"] = (("chain", "draw", "group"), raw["group_sigma"].to_numpy())
        variables["pop_sigma"] = (("chain", "draw"), raw["pop_sigma"].to_numpy())
        variables["popsd_sigma"] = (("chain", "draw"), raw["popsd_sigma"].to_numpy())
    posterior = xr.Dataset(variables)
    stats_raw = tree["sample_stats"].to_dataset()
    from .fit import _STAT_NAMES

    stats = {}
    for raw_name, name in _STAT_NAMES.items():
        if raw_name in stats_raw and name not in stats:
            stats[name] = (("chain", "draw"), stats_raw[raw_name].to_numpy().astype(
                bool if name == "diverging" else np.float64))
    settings = {**base, "sampler": route, "seconds": seconds, **group_settings,
                "group_sd": dict(model.group_sd),
                "group_kinds": {n: group_kind(model.law, n) for n in law_names}}
    fit = ScalingFit(law=model.law, priors=dict(model.priors), likelihood=model.likelihood,
                     runs=runs, reference=shared_ref, posterior=posterior,
                     sample_stats=xr.Dataset(stats), settings=settings, discrepancy=None)
    if check:
        fit.warn_if_unreliable()
    return fit


def replace_settings(group_fit: "ScalingFit", parent: "ScalingFit", name: object) -> "ScalingFit":
    """A group's own fit relabelled as a view of ``parent`` (as :mod:`bayescale.groups` builds)."""
    from dataclasses import replace

    from .groups import view_settings

    return replace(group_fit, settings=view_settings(parent, name))


def _json_label(label: object) -> object:
    return label.item() if isinstance(label, np.generic) else label
