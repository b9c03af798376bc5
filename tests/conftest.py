"""Shared fixtures: synthetic runs with known truth and small seeded fits (sampled once)."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

import bayescale as bs

matplotlib.use("Agg")

# Epoch AI's refit of Chinchilla (Besiroglu et al. 2024): the truth for synthetic data.
EPOCH_TRUTH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
COMPUTE_TRUTH = {"E": 2.0, "A": 130.0, "alpha": 0.11}
# Small but converging sampler settings for tests.
FAST = {"draws": 500, "tune": 500, "chains": 2}


def chinchilla_loss(params, tokens, truth=EPOCH_TRUTH):
    params, tokens = np.asarray(params, float), np.asarray(tokens, float)
    return truth["E"] + truth["A"] / params ** truth["alpha"] + truth["B"] / tokens ** truth["beta"]


def synthetic_chinchilla_frame(noise=0.02, seed=0, n_sizes=10, n_ratios=8):
    """Runs on a grid of model sizes and tokens-per-parameter, loss with log-normal noise."""
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(7e7, 1.6e10, n_sizes)
    ratios = np.geomspace(2, 120, n_ratios)
    params, ratio = np.meshgrid(sizes, ratios)
    params, tokens = params.ravel(), (params * ratio).ravel()
    loss = chinchilla_loss(params, tokens) * np.exp(noise * rng.standard_normal(params.size))
    return pd.DataFrame({"params": params, "tokens": tokens, "loss": loss})


def synthetic_compute_frame(noise=0.02, seed=0, n=40):
    rng = np.random.default_rng(seed)
    flops = np.geomspace(1e17, 1e21, n)
    t = COMPUTE_TRUTH
    loss = (t["E"] + t["A"] * flops ** -t["alpha"]) * np.exp(noise * rng.standard_normal(n))
    return pd.DataFrame({"flops": flops, "loss": loss})


def quiet_fit(model, runs, **kwargs):
    """Fit with test settings; small draws make ESS warnings expected, so silence them."""
    settings = {**FAST, "random_seed": 11, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        return model.fit(runs, **settings)


@pytest.fixture(scope="session")
def synthetic_runs():
    return bs.load_runs(synthetic_chinchilla_frame())


@pytest.fixture(scope="session")
def chinchilla_fit(synthetic_runs):
    return quiet_fit(bs.ScalingModel("chinchilla"), synthetic_runs)


@pytest.fixture(scope="session")
def compute_fit():
    return quiet_fit(bs.ScalingModel("compute"), bs.load_runs(synthetic_compute_frame()))


@pytest.fixture(scope="session")
def real_fit():
    """The Chinchilla law on Epoch's 240 runs (the 5 highest-loss runs dropped)."""
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    return quiet_fit(bs.ScalingModel("chinchilla"), runs, draws=600, tune=600, chains=2)


def synthetic_posterior_fit(runs, paper=EPOCH_TRUTH, spread=0.0, sigma=0.02, chains=2,
                            draws=500, seed=0, likelihood="student_t", law="chinchilla"):
    """A ScalingFit built directly from chosen draws (no sampling): answers are known.

    Each paper parameter is ``paper[name]·exp(spread·z)`` with z standard normal, independent
    across draws (so the ESS is about the number of draws); ``spread=0`` gives identical draws.
    """
    import xarray as xr

    from bayescale.fit import ScalingFit
    from bayescale.model import default_noise_priors

    law = bs.get_law(law)
    ref = law.reference(runs)
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    p = {k: v * np.exp(spread * rng.standard_normal(shape)) for k, v in paper.items()}
    post = {"E_fraction": p["E"] / np.exp(ref["log_min_loss"]), "alpha": p["alpha"],
            "sigma": np.full(shape, float(sigma))}
    if law.name == "chinchilla":
        post["a"] = np.log(p["A"]) - p["alpha"] * ref["log_ref_params"]
        post["b"] = np.log(p["B"]) - p["beta"] * ref["log_ref_tokens"]
        post["beta"] = p["beta"]
    else:
        post["a"] = np.log(p["A"]) - p["alpha"] * ref["log_ref_flops"]
    dataset = xr.Dataset({k: (("chain", "draw"), np.asarray(v, dtype=float)) for k, v in post.items()},
                         coords={"chain": np.arange(chains), "draw": np.arange(draws)})
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(shape, dtype=bool))},
                       coords={"chain": np.arange(chains), "draw": np.arange(draws)})
    priors = {**law.default_priors(), **default_noise_priors(likelihood)}
    settings = {"draws": draws, "tune": 0, "chains": chains, "sampler": "synthetic",
                "random_seed": seed, "seconds": 0.0}
    return ScalingFit(law=law, priors=priors, likelihood=likelihood, runs=runs, reference=ref,
                      posterior=dataset, sample_stats=stats, settings=settings)
