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
from .exceptions import ArgumentTypeError, PriorError, RunDataError, SamplingError
from .laws import ScalingLaw, get_law
from .priors import Prior, default_noise_priors, priors_to_json

if TYPE_CHECKING:
    from .fit import ScalingFit

__all__ = ["ScalingModel", "LIKELIHOODS", "SAMPLERS", "default_noise_priors", "FastPathWarning"]


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

    Examples
    --------
    >>> model = ScalingModel("chinchilla", priors={"alpha": Prior("TruncatedNormal", mu=0.34, sigma=0.05, lower=0, upper=1)})
    """

    def __init__(self, law: str | ScalingLaw = "chinchilla", priors: Mapping[str, Prior] | None = None,
                 likelihood: str = "student_t") -> None:
        self.law = get_law(law)
        choice("likelihood", likelihood, LIKELIHOODS)
        self.likelihood = likelihood
        priors = mapping("priors", priors, "a dict {parameter name: bayescale.Prior}")
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
                          "each new process", FastPathWarning, stacklevel=4)
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
        """
        from .fit import ScalingFit

        choice("sampler", sampler, SAMPLERS)
        # nutpie panics (a Rust assertion, not an exception) with tune=0.
        draws = integer("draws", draws, 1)
        tune = integer("tune", tune, 0 if sampler == "pymc" else 1)
        chains = integer("chains", chains, 1)
        random_seed = seed("random_seed", random_seed)
        cores = None if cores is None else integer("cores", cores, 1)
        self._check_runs(runs)
        check_design(runs, self.law, warn=check, stacklevel=2)  # RunDataError if nothing can be fitted
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
            fit.warn_if_unreliable(stacklevel=3)
            warn_outliers(fit, stacklevel=2)
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

