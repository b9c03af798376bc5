"""Calibration of forecasts past the largest run, on every real study the package's laws fit.

Protocol (one split per study, "fit the smaller runs, forecast the larger ones"):

- chinchilla: Hoffmann et al. (2022) Fig. 4 as digitised by Epoch AI (240 runs kept by Epoch);
  Chinchilla law; fit below the top 20% of compute, forecast the top 20%.
- porian/<config>: each of the 15 configs of Porian et al. (2024) isoFLOP points; Chinchilla
  law; fit budgets < 1.6e18 FLOPs, forecast budgets ≥ 1.6e18 (up to 2.56e19, 16x). Caveat
  (SOURCES.md): for const/kaplan-decay configs the budgets are checkpoints of the same runs.
- datablations: single-epoch runs (D ≤ U) of Muennighoff et al. (2023); Chinchilla law; fit
  below the top 20% of compute, forecast the top 20%.
- revisiting/<domain> <curve>: every learning curve of Alabdulmohsin et al. (2022) with at
  least 5 fit points; compute law in seen_examples; the benchmark authors' fit/test split.
- hitchhiker/<family>: training trajectories of Choshen et al. (2024); per family and loss
  metric with at least 4 model sizes: Chinchilla law fitted on every checkpoint after the
  first 10% of each smaller model's curve (at most 40 per model), forecast the final point
  of the largest model.
- olmo: OLMo ladder final points (Bhagia et al. 2024), c4_loss; Chinchilla law fitted on the
  190M–1B runs, forecast the 3B runs.

For leave-one-study-out (LOSO) a "study" is a source paper: chinchilla, porian, datablations,
revisiting, hitchhiker, olmo. Everything learned across studies (the discrepancy scale of
the default predictive) is learned from the other five; the number for a study comes from a
model that never saw it.

Stage 1 (slow, cached) fits today's default model (Student-t, fast sampler) to each split and
keeps, per held-out run, the posterior draws of the law's log loss, σ and ν and the run's
distance past the fitted range; and the Huber point fit + bootstrap + resampled residual on
the same split. Stage 2 (numpy) scores candidate predictives on those draws: the
discrepancy only adds a per-draw shift to the law's log loss, exactly as the package's
predictive (bayescale.discrepancy) does.

Scores (bayescale.backtest.score_draws): coverage at 50/80/90/95, RMSLE, bias, CRPS (log
loss), 90% Winkler interval score (log loss), PIT histogram (10 bins).

Run:  .venv/bin/python benchmarks/bench_calibration.py            (~15 min on 2 cores)
      .venv/bin/python benchmarks/bench_calibration.py --quick    (smoke run, ~2 min)
      .venv/bin/python benchmarks/bench_calibration.py --score-only   (stage 2 from the cache)
Writes benchmarks/results/calibration_{splits,per_study,pooled,candidates,pit,simulation}.csv.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs
from bayescale.backtest import DEFAULT_LEVELS, level_label, score_draws
from bayescale.discrepancy import (DEFAULT_FRACS, DEFAULT_PRIOR_SD, DEFAULT_TAU,
                                   GRID_LIKELIHOOD, MORE_FRACS, ROLLING_FRACS, TAU_GRID,
                                   distance_decades, evidence_model, learn_tau, tau_log_likelihood)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATA = ROOT.parent.parent / "shared" / "data"
CACHE_NAME = "calibration_cache.pkl"
#: Point fits of an earlier run by split name (``--reuse-point-fits``): they do not change.
PREVIOUS: dict[str, dict] = {}
#: Inner splits of the "more inner backtests" candidates (shares of the top compute held out).
INNER_MORE = MORE_FRACS
N_RESAMPLES = 50   # bootstrap resamples of the point fit (each an L-BFGS refit)
PIT_BINS = 10
#: The candidate the package ships as its default predictive.
DEFAULT_METHOD = ("improvement: design-chosen lik (isoFLOP grid: mixed rho 0.5, else shared-z), "
                  "8 splits + marginal-likelihood EB prior [default]")
#: The default of round 2 (bayescale's predictive before round 3: shared-z for every design,
#: prior chosen by the held-out CRPS of the other studies).
ROUND2_METHOD = "improvement: shared-z lik, 8 inner splits + EB prior [round-2 default]"
#: The default of the first round (bayescale's predictive before this benchmark's round 2).
ROUND1_METHOD = "improvement: averaged lik, 3 inner splits + EB prior [round-1 default]"


@dataclass
class Split:
    name: str          # e.g. "porian/rw|tuned|short|const|standard|val"
    study: str         # the source paper, the unit of leave-one-study-out
    group: str         # what the per-study table reports (a config, a curve domain, ...)
    law: str
    runs: bs.Runs
    holdout: np.ndarray
    probe_ratio: float | None = None   # also forecast at this multiple of the largest fitted C


# -- the studies ---------------------------------------------------------------------------

def chinchilla_splits() -> list[Split]:
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    from bayescale.backtest import split_runs
    mask = split_runs(runs, holdout_frac=0.2)
    return [Split("chinchilla", "chinchilla", "chinchilla", "chinchilla", runs, mask)]


def porian_splits() -> list[Split]:
    frame = pd.read_csv(DATA / "porian2024_isoflops.csv")
    out = []
    for config, sub in frame.groupby("config", sort=True):
        sub = sub.reset_index(drop=True)
        runs = bs.load_runs(sub[["params", "tokens", "flops", "loss"]])
        mask = (sub["flops"] >= 1.6e18).to_numpy()
        if mask.all() or not mask.any():
            continue
        out.append(Split(f"porian/{config}", "porian", f"porian/{config}", "chinchilla", runs, mask))
    return out


def datablations_splits() -> list[Split]:
    frame = pd.read_csv(DATA / "datablations_muennighoff2023_final.csv")
    single = frame[frame["epochs"] <= 1.0 + 1e-9].reset_index(drop=True)
    runs = bs.load_runs(single[["params", "tokens", "flops", "loss"]])
    from bayescale.backtest import split_runs
    return [Split("datablations", "datablations", "datablations", "chinchilla", runs,
                  split_runs(runs, holdout_frac=0.2))]


def revisiting_splits(min_fit: int = 5) -> list[Split]:
    frame = pd.read_csv(DATA / "revisiting_alabdulmohsin2022.csv")
    out = []
    for (domain, family, task), curve in frame.groupby(["domain", "model_family", "task"], sort=True):
        curve = curve.sort_values("seen_examples").reset_index(drop=True)
        mask = (curve["split"] == "test").to_numpy()
        if (~mask).sum() < min_fit or not mask.any():
            continue
        runs = bs.load_runs(curve, flops="seen_examples", params=None, tokens=None, loss="loss")
        name = f"revisiting/{domain} {family.removeprefix('revisiting_')} {task}"
        out.append(Split(name, "revisiting", f"revisiting/{domain}", "compute", runs, mask))
    return out


def hitchhiker_splits(per_model: int = 40, min_sizes: int = 4) -> list[Split]:
    frame = pd.read_csv(DATA / "hitchhiker_trajectories.csv")
    out = []
    for (family, metric), sub in frame.groupby(["model_family", "loss_metric"], sort=True):
        sizes = np.sort(sub["params"].unique())
        if len(sizes) < min_sizes:
            continue
        parts, largest = [], sizes[-1]
        for params, model in sub.groupby("params"):
            model = model.sort_values("tokens")
            model = model.iloc[int(0.1 * len(model)):]          # drop the first 10% (Hitchhiker)
            if params == largest:
                parts.append(model.iloc[[-1]].assign(_test=True))
            else:
                keep = np.unique(np.linspace(0, len(model) - 1, min(per_model, len(model))).astype(int))
                parts.append(model.iloc[keep].assign(_test=False))
        data = pd.concat(parts, ignore_index=True)
        runs = bs.load_runs(data[["params", "tokens", "flops", "loss"]])
        name = f"hitchhiker/{family} {metric}"
        out.append(Split(name, "hitchhiker", name, "chinchilla", runs, data["_test"].to_numpy()))
    return out


def olmo_splits() -> list[Split]:
    frame = pd.read_csv(DATA / "olmo_ladder_bhagia2024.csv")
    data = frame[["params", "tokens", "flops", "c4_loss"]].rename(columns={"c4_loss": "loss"})
    runs = bs.load_runs(data)
    return [Split("olmo", "olmo", "olmo", "chinchilla", runs, (frame["params"] > 2e9).to_numpy())]


#: Epoch's refit of Chinchilla (SOURCES.md): the truth of the simulation.
SIM_TRUTH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
SIM_SIGMA = 0.01


def simulation_splits(reps: int, seed: int) -> list[Split]:
    """The law exactly true: Chinchilla's 240 (N, D) with Epoch's law and normal noise of
    sd 1% on log loss; fit below the top 20% of compute, forecast the top 20% and 10x."""
    from bayescale.backtest import split_runs

    design = bs.load_dataset("chinchilla", drop_highest_loss=5).frame
    n, d = design["params"].to_numpy(), design["tokens"].to_numpy()
    t = SIM_TRUTH
    law = t["E"] + t["A"] / n ** t["alpha"] + t["B"] / d ** t["beta"]
    rng = np.random.default_rng(seed + 1000)
    out = []
    for k in range(reps):
        loss = law * np.exp(SIM_SIGMA * rng.standard_normal(law.size))
        runs = bs.load_runs(pd.DataFrame({"params": n, "tokens": d, "loss": loss}))
        out.append(Split(f"simulation/{k}", "simulation", "simulation", "chinchilla", runs,
                         split_runs(runs, holdout_frac=0.2), probe_ratio=10.0))
    return out


def all_splits(quick: bool = False) -> list[Split]:
    splits = (chinchilla_splits() + porian_splits() + datablations_splits() + revisiting_splits()
              + hitchhiker_splits() + olmo_splits())
    if quick:   # one or two of each study
        seen: dict[str, int] = {}
        kept = []
        for s in splits:
            if seen.get(s.study, 0) < 2:
                kept.append(s)
                seen[s.study] = seen.get(s.study, 0) + 1
        splits = kept
    return splits


# -- stage 1: fit and cache ----------------------------------------------------------------

def fit_split(split: Split, settings: dict, seed: int, grid: str,
              previous: dict | None = None) -> dict:
    """Today's default fit and the point fit on one split; the draws stage 2 needs."""
    from bayescale.forecast import draw_rows
    from bayescale.pointfit import bootstrap_point_fit, point_fit
    from bayescale.risk import _log_loss_rows

    train, test = split.runs.subset(~split.holdout), split.runs.subset(split.holdout)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.ScalingModel(split.law).fit(train, random_seed=seed, check=False, **settings)
    fit = fit.with_discrepancy(None)        # the law's draws alone; stage 2 adds δ
    seconds = time.perf_counter() - start
    names = fit.law.inputs
    frame = test.frame
    log_x = {name: np.log(frame[name].to_numpy(dtype=float))[:, None] for name in ("flops", *names)
             if name in ("flops", "params", "tokens")}
    mu = _log_loss_rows(fit, draw_rows(fit), log_x).T.copy()            # (draws, points)
    from bayescale.discrepancy import clip_to_range, fitted_log_max, rolling_origin_errors

    # The law at the edge of the fitted range (the "improvement" discrepancy's reference).
    mu_edge = _log_loss_rows(fit, draw_rows(fit), clip_to_range(log_x, fitted_log_max(train))).T.copy()
    medians = {name: float(np.median(v)) for name, v in fit.paper_draws().items()}
    inner = rolling_origin_errors(train, split.law, medians, fracs=ROLLING_FRACS)
    # More inner splits, for candidates that let the runs' own evidence weigh more.
    inner_more = rolling_origin_errors(train, split.law, medians, fracs=INNER_MORE)
    log_x_train = {name: np.log(train.frame[name].to_numpy(dtype=float))[:, None]
                   for name in ("flops", *names) if name in ("flops", "params", "tokens")}
    train_resid = (np.log(train.column("loss"))
                   - np.median(_log_loss_rows(fit, draw_rows(fit), log_x_train), axis=1))
    theta = fit.theta()
    train_frame = train.frame
    distance = distance_decades({k: v[:, 0] for k, v in log_x.items()},
                                {k: float(np.log(train_frame[k]).max()) for k in log_x})
    start = time.perf_counter()
    inputs = ({"params": test.column("params"), "tokens": test.column("tokens")}
              if split.law == "chinchilla" else {"flops": test.column("flops")})
    if previous is not None:      # the point fit of an earlier run of this split
        point_draws, residuals = previous["point_log_draws"], previous["point_residuals"]
        point_seconds = previous["point_seconds"]
        full = None
    else:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = point_fit(train, law=split.law, grid=grid)
        boot = bootstrap_point_fit(train, law=split.law, n_resamples=N_RESAMPLES,
                                   random_seed=seed, full=full)
      point_draws = np.log(boot.predict_draws(**inputs))
      residuals = np.log(train.column("loss")) - np.log(full.predict())
      point_seconds = time.perf_counter() - start
    probe = {}
    if split.probe_ratio:
        from bayescale.forecast import resolve_points

        at = resolve_points(fit, flops=split.probe_ratio * train.column("flops").max())
        log_p = {n: np.log(at[n].to_numpy(dtype=float))[:, None] for n in ("flops", "params", "tokens")}
        probe = {"probe_mu": _log_loss_rows(fit, draw_rows(fit), log_p)[0].copy(),
                 "probe_mu_edge": _log_loss_rows(fit, draw_rows(fit), clip_to_range(
                     log_p, fitted_log_max(train)))[0].copy(),
                 "probe_distance": float(distance_decades(
                     {k: v[:, 0] for k, v in log_p.items()},
                     {k: float(np.log(train_frame[k]).max()) for k in log_p})[0])}
    return {"inner": inner, "inner_more": inner_more, "train_resid": train_resid,
            "train_flops": train.column("flops"), "test_flops": test.column("flops"),
            "mu_edge": mu_edge, **probe, "name": split.name, "study": split.study, "group": split.group, "law": split.law,
            "n_train": len(train), "actual": test.column("loss"), "mu": mu,
            "sigma": theta["sigma"].copy(), "nu": theta["nu"].copy(),
            "distance": distance, "seconds": seconds, "point_log_draws": point_draws,
            "point_residuals": residuals, "point_seconds": point_seconds,
            "max_r_hat": float(fit.diagnostics().table["r_hat"].max())}


def stage1(splits: list[Split], settings: dict, seed: int, grid: str,
           cache: Path | None = None) -> list[dict]:
    """Fit every split; with ``cache``, splits already in it are reused and the cache is
    rewritten after each new one (an interrupted run resumes)."""
    done = {r["name"]: r for r in pickle.loads(cache.read_bytes())} if cache and cache.exists() else {}
    out = []
    for i, split in enumerate(splits):
        if split.name in done:
            out.append(done[split.name])
            continue
        record = fit_split(split, settings, seed, grid, PREVIOUS.get(split.name))
        print(f"  [{i + 1}/{len(splits)}] {split.name}: fit {record['n_train']}, forecast "
              f"{record['actual'].size} at {record['distance'].max():.2f} decades, "
              f"{record['seconds']:.1f} s + point {record['point_seconds']:.1f} s",
              file=sys.stderr, flush=True)
        out.append(record)
        if cache is not None and (len(out) % 25 == 0 or i == len(splits) - 1):
            cache.write_bytes(pickle.dumps(out + [r for n, r in done.items()
                                                  if n not in {o["name"] for o in out}]))
    return out


# -- stage 2: candidate predictives, scored ------------------------------------------------


def _noise(record: dict, rng: np.random.Generator) -> np.ndarray:
    """Run-to-run noise on log loss per draw, as bayescale.forecast.noise_factors draws it."""
    return record["sigma"] * rng.standard_t(record["nu"])


def growth(record: dict, form: str, power: float = 1.0, probe: bool = False) -> np.ndarray:
    """What δ's sd is proportional to, per draw and point (as bayescale.discrepancy): the
    law's predicted fall in log loss past the fitted edge, or the capped distance^power."""
    if form == "improvement":
        mu, edge = ((record["probe_mu"][:, None], record["probe_mu_edge"][:, None]) if probe
                    else (record["mu"], record["mu_edge"]))
        return np.maximum(edge - mu, 0.0)
    d = np.array([record["probe_distance"]]) if probe else record["distance"]
    return (np.minimum(d, 3.0) ** power)[None, :]


def predictive_log_draws(record: dict, tau: float | np.ndarray, form: str, power: float, seed: int,
                         probe: bool = False, offset_sd: float = 0.0) -> np.ndarray:
    """log L_obs draws (draws, points): law + δ (one z per draw) + ε, as the package draws.
    ``tau`` is one number or one per draw (a mixture over τ's posterior); ``offset_sd`` adds
    a per-budget offset (one normal per draw) to the points past the fitted range."""
    rng = np.random.default_rng(seed)
    eps = _noise(record, rng)
    z = rng.standard_normal(record["mu"].shape[0])
    factor = np.asarray(tau) * z
    if form == "improvement":
        factor = np.minimum(factor, 1.0)
    mu = record["probe_mu"][:, None] if probe else record["mu"]
    out = mu + factor[:, None] * growth(record, form, power, probe) + eps[:, None]
    if offset_sd > 0:
        past = (np.array([record["probe_distance"]]) if probe else record["distance"]) > 0
        out = out + offset_sd * rng.standard_normal(out.shape[0])[:, None] * past[None, :]
    return out


def budget_offset_sd(record: dict) -> float:
    """sd of a per-budget offset of the training residuals (posterior-median law), by one-way
    random-effects moments, when the training runs form an isoFLOP grid (at most one distinct
    compute per 3 runs); 0 otherwise."""
    flops, resid = record["train_flops"], record["train_resid"]
    budgets, index, counts = np.unique(flops, return_inverse=True, return_counts=True)
    if budgets.size < 3 or budgets.size > flops.size / 3:
        return 0.0
    means = np.array([resid[index == k].mean() for k in range(budgets.size)])
    within = np.mean([resid[index == k].var(ddof=1) for k in range(budgets.size) if counts[k] > 1])
    return float(np.sqrt(max(means.var(ddof=1) - within * np.mean(1.0 / counts), 0.0)))


def point_log_draws(record: dict, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = record["point_log_draws"]
    return draws - rng.choice(record["point_residuals"], size=draws.shape)


def score_points(record: dict, log_draws: np.ndarray) -> pd.DataFrame:
    """Per held-out run: log error, PIT, CRPS, coverage per level, 90% Winkler score."""
    table, _ = score_draws(record["actual"], np.exp(log_draws), prob=DEFAULT_LEVELS)
    y = np.log(record["actual"])
    out = pd.DataFrame({"split": record["name"], "study": record["study"], "group": record["group"],
                        "distance": record["distance"], "log_error": table["log_error"],
                        "pit": table["pit"], "crps": table["crps"]})
    for p in DEFAULT_LEVELS:
        lab = level_label(p)
        lo, hi = np.log(table[f"loss_lower_{lab}"]), np.log(table[f"loss_upper_{lab}"])
        out[f"covered_{lab}"] = ((lo <= y) & (y <= hi)).astype(float).to_numpy()
        out[f"width_{lab}"] = (hi - lo).to_numpy()
        if lab == "90":
            alpha = 0.1
            out["winkler_90"] = ((hi - lo) + 2 / alpha * np.maximum(lo - y, 0)
                                 + 2 / alpha * np.maximum(y - hi, 0)).to_numpy()
    return out


def add_weights(points: pd.DataFrame) -> pd.DataFrame:
    """Weights: ``w_run`` (each run once), ``w_split`` (each split once) and ``w_study``
    (each study once, its splits equal inside it)."""
    points = points.copy()
    n_split = points.groupby("split")["split"].transform("size")
    splits_in_study = points.groupby("study")["split"].transform("nunique")
    n_study = points["study"].nunique()
    points["w_run"] = 1.0
    points["w_split"] = 1.0 / n_split
    points["w_study"] = 1.0 / (n_split * splits_in_study * n_study)
    return points


def summarise(points: pd.DataFrame, weight: str) -> dict:
    w = points[weight].to_numpy(dtype=float)
    w = w / w.sum()
    e = points["log_error"].to_numpy()
    row = {"n_test": len(points), "splits": points["split"].nunique(),
           "rmsle": float(np.sqrt(np.sum(w * e**2))), "bias": float(np.sum(w * e)),
           "crps": float(np.sum(w * points["crps"])), "winkler_90": float(np.sum(w * points["winkler_90"]))}
    for p in DEFAULT_LEVELS:
        lab = level_label(p)
        row[f"coverage_{lab}"] = float(np.sum(w * points[f"covered_{lab}"]))
    row["width_90"] = float(np.sum(w * points["width_90"]))
    return row


def _study_weights(records: list[dict]) -> dict[str, float]:
    """Weight per split so every study counts once and its splits equally."""
    studies = {}
    for r in records:
        studies.setdefault(r["study"], []).append(r["name"])
    return {name: 1.0 / (len(names) * len(studies)) for names in studies.values() for name in names}


_CRPS_CACHE: dict = {}


SEARCH = TAU_GRID[::2]


def crps_by_tau(records: list[dict], form: str, power: float, seed: int) -> np.ndarray:
    """Mean CRPS of each split at each τ of TAU_GRID (common random numbers): (splits, taus)."""
    from bayescale.backtest import crps_draws

    key = (tuple(r["name"] for r in records), form, power, seed)
    if key in _CRPS_CACHE:
        return _CRPS_CACHE[key]

    out = np.empty((len(records), SEARCH.size))
    for i, r in enumerate(records):
        y = np.log(r["actual"])
        # Every 4th draw: the search needs the CRPS's shape in τ, not its last digit.
        thin = {**r, "mu": r["mu"][::4], "mu_edge": r["mu_edge"][::4], "sigma": r["sigma"][::4],
                "nu": r["nu"][::4]}
        for j, tau in enumerate(SEARCH):
            out[i, j] = crps_draws(predictive_log_draws(thin, tau, form, power, seed + i), y).mean()
    _CRPS_CACHE[key] = out
    return out


def corpus_tau(records: list[dict], crps: np.ndarray, exclude: str | None) -> float:
    """Empirical-Bayes τ: the one minimising the mean CRPS over the studies other than
    ``exclude`` (each study counts once)."""
    weights = _study_weights([r for r in records if r["study"] != exclude])
    w = np.array([weights.get(r["name"], 0.0) for r in records])
    return float(SEARCH[np.argmin(w @ crps)])


def in_data_tau(record: dict, form: str, power: float = 1.0) -> float:
    """Maximum-likelihood τ from the rolling-origin errors inside the training runs alone
    (bayescale.discrepancy.tau_log_likelihood)."""
    loglik = tau_log_likelihood(record["inner"], power, taus=TAU_GRID, form=form)
    return float(TAU_GRID[np.argmax(loglik)])


#: How each "in-data + EB prior" candidate learns τ from a split's inner backtests:
#: (inner backtests key, likelihood of bayescale.discrepancy.tau_log_likelihood, split weight).
LEARNERS = {
    ROUND1_METHOD: ("inner", "averaged", 1.0),
    "improvement: shared-z lik, 3 inner splits + EB prior": ("inner", "shared", 1.0),
    ROUND2_METHOD: ("inner_more", "shared", 1.0),
    "improvement: shared-z lik, 8 splits x 3/8 + EB prior": ("inner_more", "shared", 3 / 8),
    "improvement: averaged lik, 8 inner splits + EB prior": ("inner_more", "averaged", 1.0),
    "improvement: mixed lik (rho 0.5), 3 inner splits + EB prior": ("inner", "mixed", 1.0),
    "improvement: mixed lik (rho 0.5), 8 inner splits + EB prior": ("inner_more", "mixed", 1.0),
    "improvement: mixed lik (rho 0.5), 8 splits x 3/8 + EB prior": ("inner_more", "mixed", 3 / 8),
    "improvement: learned-rho lik, 3 inner splits + EB prior": ("inner", "learned-rho", 1.0),
    "improvement: learned-rho lik, 8 inner splits + EB prior": ("inner_more", "learned-rho", 1.0),
    "improvement: learned-rho lik, 8 splits x 3/8 + EB prior": ("inner_more", "learned-rho", 3 / 8),
    # Round 3: the evidence model declared from the design ("design": bayescale.discrepancy.
    # evidence_model; "design:<rho>" the same with another grid rho) and/or the prior fitted
    # by the marginal likelihood of the other studies' inner backtests (PRIOR_RULE).
    DEFAULT_METHOD: ("inner_more", "design", 1.0),
    "improvement: design-chosen lik, 8 splits + EB prior (CRPS)": ("inner_more", "design", 1.0),
    "improvement: shared-z lik, 8 splits + marginal-likelihood EB prior": ("inner_more", "shared", 1.0),
    "improvement: mixed lik (rho 0.5), 8 splits + marginal-likelihood EB prior":
        ("inner_more", "mixed", 1.0),
    "improvement: learned-rho lik, 8 splits + marginal-likelihood EB prior":
        ("inner_more", "learned-rho", 1.0),
    "improvement: design-chosen lik (grid rho 0.25), 8 splits + marginal-likelihood EB prior":
        ("inner_more", "design:0.25", 1.0),
    "improvement: design-chosen lik (grid rho 0.75), 8 splits + marginal-likelihood EB prior":
        ("inner_more", "design:0.75", 1.0),
}
#: How each learner's prior (median, sd) is chosen over the other studies: "crps" (the held-out
#: CRPS of the τ it gives, rounds 1-2) or "marglik" (type-II maximum likelihood: the prior
#: under which the studies' own inner backtests are most probable, each study once).
PRIOR_RULE = {learner: ("marglik" if "marginal-likelihood" in learner else "crps")
              for learner in LEARNERS}
# The package's default must be the benchmark's default.
assert (DEFAULT_FRACS, LEARNERS[DEFAULT_METHOD][1], PRIOR_RULE[DEFAULT_METHOD]) == (
    MORE_FRACS, "design", "marglik")


def resolve_likelihood(record: dict, likelihood: str) -> tuple[str, float]:
    """(likelihood, rho) of a learner on a split: "design" as the package decides it from the
    training runs' compute (bayescale.discrepancy.evidence_model), "design:<rho>" with
    another rho for grids; anything else as given (rho 0.5, the mixed default)."""
    if likelihood == "design":
        return evidence_model(record["train_flops"])
    if likelihood.startswith("design:"):
        lik, rho = evidence_model(record["train_flops"])
        return (lik, float(likelihood.split(":")[1])) if lik == GRID_LIKELIHOOD else (lik, rho)
    return likelihood, 0.5
#: Candidate sds of the prior on log τ (the empirical Bayes picks one with the median).
PRIOR_SDS = (0.5, 1.0, 2.0, 4.0)
_LIK_CACHE: dict = {}


def split_log_lik(record: dict, learner: str) -> np.ndarray:
    """τ's log likelihood on TAU_GRID[1:] from the split's inner backtests (cached: it does
    not depend on the prior)."""
    key = (record["name"], learner)
    if key not in _LIK_CACHE:
        source, likelihood, weight = LEARNERS[learner]
        likelihood, rho = resolve_likelihood(record, likelihood)
        _LIK_CACHE[key] = tau_log_likelihood(record[source], taus=TAU_GRID[1:], form="improvement",
                                             likelihood=likelihood, split_weight=weight, rho=rho)
    return _LIK_CACHE[key]


def eb_tau(record: dict, prior_tau: float, prior_sd: float,
           learner: str = DEFAULT_METHOD) -> float:
    """Posterior median of τ under the prior given the split's inner backtests, exactly as
    bayescale.discrepancy.learn_tau computes it (checked in :func:`candidates`)."""
    grid = TAU_GRID[1:]
    log_prior = -0.5 * ((np.log(grid) - np.log(max(prior_tau, 1e-4))) / prior_sd) ** 2
    log_post = split_log_lik(record, learner) + log_prior
    weights = np.exp(log_post - log_post.max()) * np.gradient(np.log(grid))
    cdf = np.cumsum(weights) / weights.sum()
    return float(grid[min(np.searchsorted(cdf, 0.5), grid.size - 1)])


def eb_prior(records: list[dict], crps: np.ndarray, exclude: str | None,
             learner: str = DEFAULT_METHOD,
             prior_sds: tuple[float, ...] = PRIOR_SDS) -> tuple[float, float]:
    """Empirical Bayes for the prior of τ: the (median, sd in log τ) whose learned τ per split
    gives the lowest mean CRPS over the studies other than ``exclude`` (each study once), or
    for a "marglik" learner (PRIOR_RULE) the one maximising their inner backtests' marginal
    likelihood (:func:`eb_prior_marglik`)."""
    if PRIOR_RULE.get(learner) == "marglik":
        return eb_prior_marglik(records, exclude, learner, prior_sds)
    weights = _study_weights([r for r in records if r["study"] != exclude])
    w = np.array([weights.get(r["name"], 0.0) for r in records])
    best, arg = np.inf, (TAU_GRID[1], 1.0)
    log_search = np.log(SEARCH[1:])
    for sd in prior_sds:
        for centre in SEARCH[1::2]:
            idx = [int(np.argmin(np.abs(log_search - np.log(eb_tau(r, centre, sd, learner))))) + 1
                   if wi else 0 for r, wi in zip(records, w)]
            score = float(np.sum(w * crps[np.arange(len(records)), idx]))
            if score < best:
                best, arg = score, (float(centre), float(sd))
    return arg


def eb_prior_marglik(records: list[dict], exclude: str | None, learner: str,
                     prior_sds: tuple[float, ...] = PRIOR_SDS) -> tuple[float, float]:
    """Empirical Bayes by type-II maximum likelihood: the log-normal prior (median on the
    search grid, sd in ``prior_sds``) maximising Σ_split w·log ∫ L(τ) p(τ) dτ over the studies
    other than ``exclude`` (each study once, its splits equal). Uses only the inner backtests
    inside each study's training runs, never its held-out runs."""
    weights = _study_weights([r for r in records if r["study"] != exclude])
    kept = [(weights[r["name"]], split_log_lik(r, learner)) for r in records if r["name"] in weights]
    grid = TAU_GRID[1:]
    dlog = np.gradient(np.log(grid))
    best, arg = -np.inf, (TAU_GRID[1], 1.0)
    for sd in prior_sds:
        for centre in SEARCH[1::2]:
            log_prior = -0.5 * ((np.log(grid) - np.log(centre)) / sd) ** 2
            log_prior -= np.log(np.sum(np.exp(log_prior) * dlog))
            score = 0.0
            for w, loglik in kept:
                a = loglik + log_prior
                top = a.max()
                score += w * (top + np.log(np.sum(np.exp(a - top) * dlog)))
            if score > best:
                best, arg = score, (float(centre), float(sd))
    return arg


#: Candidates that draw τ per posterior draw from its posterior on the grid (the Bayesian
#: predictive: a scale mixture) instead of plugging in the posterior median; value: learner.
MIXTURES = {
    "improvement: tau mixture, averaged lik, 3 splits + EB prior": ROUND1_METHOD,
    "improvement: tau mixture, shared-z lik, 8 splits + EB prior": ROUND2_METHOD,
    "improvement: tau mixture, mixed lik (rho 0.5), 8 splits + EB prior":
        "improvement: mixed lik (rho 0.5), 8 inner splits + EB prior",
}
#: The τ-mixture candidates cost a CRPS per prior and split; scored in round 2 only
#: (``--mixtures``; calibration_*_round2.csv), dropped from the default run.
RUN_MIXTURES = False
OFFSET_METHOD = "improvement: round-2 default + per-budget offset (isoFLOP grids)"


def tau_posterior_draws(record: dict, prior_tau: float, prior_sd: float, learner: str,
                        n: int, seed: int) -> np.ndarray:
    """n draws of τ from its grid posterior (prior x inner-backtest likelihood), log-uniform
    within a grid cell."""
    grid = TAU_GRID[1:]
    log_prior = -0.5 * ((np.log(grid) - np.log(max(prior_tau, 1e-4))) / prior_sd) ** 2
    log_post = split_log_lik(record, learner) + log_prior
    p = np.exp(log_post - log_post.max()) * np.gradient(np.log(grid))
    rng = np.random.default_rng([seed, 77])
    idx = rng.choice(grid.size, size=n, p=p / p.sum())
    step = np.log(grid[1] / grid[0])
    return grid[idx] * np.exp(step * (rng.random(n) - 0.5))


_MIX_CACHE: dict = {}


def crps_by_prior(records: list[dict], learner: str, seed: int) -> tuple[np.ndarray, list]:
    """Mean CRPS of each split under the τ mixture of each prior (centre, sd): (splits, priors)."""
    from bayescale.backtest import crps_draws

    # A coarser search than the plug-in candidates' (every 4th grid τ): each prior costs a CRPS.
    priors = [(float(c), float(sd)) for sd in PRIOR_SDS for c in SEARCH[1::4]]
    key = (tuple(r["name"] for r in records), learner, seed)
    if key not in _MIX_CACHE:
        out = np.empty((len(records), len(priors)))
        for i, r in enumerate(records):
            y = np.log(r["actual"])
            thin = {**r, "mu": r["mu"][::8], "mu_edge": r["mu_edge"][::8], "sigma": r["sigma"][::8],
                    "nu": r["nu"][::8]}
            for j, (c, sd) in enumerate(priors):
                taus = tau_posterior_draws(r, c, sd, learner, thin["mu"].shape[0], seed + i)
                out[i, j] = crps_draws(predictive_log_draws(thin, taus, "improvement", 1.0, seed + i),
                                       y).mean()
        _MIX_CACHE[key] = out
    return _MIX_CACHE[key], priors


def eb_prior_mixture(records: list[dict], learner: str, seed: int,
                     exclude: str | None) -> tuple[float, float]:
    """Empirical Bayes for the τ mixture's prior: lowest mean CRPS over the other studies."""
    crps, priors = crps_by_prior(records, learner, seed)
    weights = _study_weights([r for r in records if r["study"] != exclude])
    w = np.array([weights.get(r["name"], 0.0) for r in records])
    return priors[int(np.argmin(w @ crps))]


def chosen_taus(records: list[dict], r: dict, fits: dict) -> dict[str, tuple[float, str, float]]:
    """Candidate name -> (τ, form, power) for split ``r``; ``fits`` holds the corpus values
    learned without r's study (LOSO) or, for the simulation, with every real study."""
    out = {
        "today": (0.0, "distance", 1.0),
        "distance: corpus tau": (fits["corpus_distance"], "distance", 1.0),
        "distance: in-data tau": (in_data_tau(r, "distance"), "distance", 1.0),
        "improvement: corpus tau": (fits["corpus_improvement"], "improvement", 1.0),
        "improvement: in-data tau": (in_data_tau(r, "improvement"), "improvement", 1.0),
    }
    for learner in LEARNERS:
        centre, sd = fits["prior"][learner]
        out[learner] = (eb_tau(r, centre, sd, learner), "improvement", 1.0)
    for name, learner in MIXTURES.items() if RUN_MIXTURES else ():
        centre, sd = fits["mixture_prior"][name]
        out[name] = (tau_posterior_draws(r, centre, sd, learner, r["mu"].shape[0], fits["seed"]),
                     "improvement", 1.0)
    out[OFFSET_METHOD] = out[ROUND2_METHOD]
    return out


def corpus_fits(records: list[dict], seed: int, exclude: str | None) -> dict:
    crps = {key: crps_by_tau(records, form, power, seed)
            for key, form, power in (("distance", "distance", 1.0),
                                     ("improvement", "improvement", 1.0))}
    return {"corpus_distance": corpus_tau(records, crps["distance"], exclude),
            "corpus_improvement": corpus_tau(records, crps["improvement"], exclude),
            "prior": {learner: eb_prior(records, crps["improvement"], exclude, learner)
                      for learner in LEARNERS},
            "mixture_prior": {name: eb_prior_mixture(records, learner, seed, exclude)
                              for name, learner in (MIXTURES.items() if RUN_MIXTURES else ())},
            "seed": seed}


def candidates(records: list[dict], seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every candidate predictive on every split, its corpus values learned leave-one-study-out;
    τ per split and the per-run scores."""
    studies = sorted({r["study"] for r in records})
    for learner, (source, likelihood, weight) in LEARNERS.items():   # the package's own code
        for r in {r["study"]: r for r in records}.values():   # one split per study
            lik, rho = resolve_likelihood(r, likelihood)
            expected = learn_tau(r[source], 0.3, 1.0, likelihood=lik, split_weight=weight, rho=rho)
            assert eb_tau(r, 0.3, 1.0, learner) == expected, learner
    loso = {s: corpus_fits(records, seed, s) for s in studies}
    for s, values in loso.items():
        print(f"  LOSO without {s}: {values}", file=sys.stderr, flush=True)
    taus, scored = [], []
    for i, r in enumerate(records):
        for method, (tau, form, power) in chosen_taus(records, r, loso[r["study"]]).items():
            offset = budget_offset_sd(r) if method == OFFSET_METHOD else 0.0
            points = score_points(r, predictive_log_draws(r, tau, form, power, seed + i,
                                                          offset_sd=offset))
            scored.append(points.assign(method=method))
            taus.append({"split": r["name"], "study": r["study"], "method": method,
                         "tau": float(np.median(tau)), "form": form, "power": power,
                         "offset_sd": offset})
        scored.append(score_points(r, point_log_draws(r, seed + i)).assign(method="point+boot+resid"))
    return pd.DataFrame(taus), add_weights_by_method(pd.concat(scored, ignore_index=True)), loso


def simulation_table(sims: list[dict], records: list[dict], seed: int) -> tuple[pd.DataFrame, dict]:
    """The law exactly true: 90% coverage of the held-out runs and the 90% width at 10x the
    largest fitted compute, per candidate, against today's. Corpus values from every real study."""
    full = corpus_fits(records, seed, None)
    print(f"  all studies: {full}", file=sys.stderr, flush=True)
    rows = []
    for i, r in enumerate(sims):
        base = None
        for method, (tau, form, power) in chosen_taus(records, r, full).items():
            offset = budget_offset_sd(r) if method == OFFSET_METHOD else 0.0
            points = score_points(r, predictive_log_draws(r, tau, form, power, seed + i,
                                                          offset_sd=offset))
            at = predictive_log_draws(r, tau, form, power, seed + i, probe=True,
                                      offset_sd=offset)[:, 0]
            lo, hi = np.quantile(at, [0.05, 0.95])
            base = hi - lo if method == "today" else base
            rows.append({"split": r["name"], "method": method, "tau": float(np.median(tau)),
                         "coverage_90": points["covered_90"].mean(),
                         "coverage_50": points["covered_50"].mean(),
                         "width_90_at_10x": hi - lo, "width_ratio_to_today": (hi - lo) / base})
    table = pd.DataFrame(rows)
    return table.groupby("method", sort=False).mean(numeric_only=True).reset_index(), full


def add_weights_by_method(points: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([add_weights(g) for _, g in points.groupby("method", sort=False)],
                     ignore_index=True)


def tables(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_group = []
    for (method, group), g in points.groupby(["method", "group"], sort=False):
        weight = "w_split" if g["split"].nunique() > 1 else "w_run"
        per_group.append({"method": method, "study": g["study"].iloc[0], "group": group,
                          **summarise(g, weight)})
    for (method, study), g in points.groupby(["method", "study"], sort=False):
        if g["group"].nunique() > 1:
            per_group.append({"method": method, "study": study, "group": f"{study} (all)",
                              **summarise(g, "w_split")})
    pooled = []
    for method, g in points.groupby("method", sort=False):
        for weight, label in (("w_study", "studies equal"), ("w_split", "splits equal"),
                              ("w_run", "runs equal")):
            pooled.append({"method": method, "pooled": label, **summarise(g, weight)})
    return pd.DataFrame(per_group), pd.DataFrame(pooled)


def pit_table(points: pd.DataFrame) -> pd.DataFrame:
    edges = np.linspace(0, 1, PIT_BINS + 1)
    rows = []
    for (method, study), g in points.groupby(["method", "study"], sort=False):
        counts, _ = np.histogram(g["pit"], bins=edges, weights=g["w_split"])
        rows.append({"method": method, "study": study,
                     **{f"pit_{k}": v for k, v in enumerate(counts / counts.sum())}})
    return pd.DataFrame(rows)


def show(table: pd.DataFrame, title: str, columns: list[str]) -> None:
    print(f"\n{title}")
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.max_colwidth", 48):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def timing(repeat: int = 5) -> pd.DataFrame:
    """Default fit of Chinchilla's 240 runs (4 chains x 1000 draws, the defaults): cold (new
    process, ``bayescale fit``, start to printed table) and warm (in process, bootstrap
    resamples), and the part of each that learns the discrepancy."""
    import os
    import statistics
    import subprocess
    import tempfile

    from bayescale.discrepancy import learned_discrepancy

    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "runs.csv"
        runs.frame.to_csv(csv, index=False)
        exe = Path(sys.executable).with_name("bayescale")
        subprocess.run([str(exe), "fit", str(csv), "--no-progress", "--draws", "50", "--tune", "50"],
                       capture_output=True, check=True)       # fills numba's on-disk cache
        times, loads = [], []
        for _ in range(max(1, repeat // 2)):
            loads.append(os.getloadavg()[0])
            start = time.perf_counter()
            subprocess.run([str(exe), "fit", str(csv), "--no-progress"], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        rows.append({"route": "cold (bayescale fit, new process)", "seconds": statistics.median(times),
                     "load": statistics.mean(loads)})
    model = bs.ScalingModel("chinchilla")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(runs, random_seed=0)
        times, learn, loads = [], [], []
        for i in range(repeat):
            idx = np.random.default_rng(i + 1).integers(0, len(runs), len(runs))
            sample = bs.load_runs(runs.frame.iloc[idx].reset_index(drop=True))
            loads.append(os.getloadavg()[0])
            start = time.perf_counter()
            fit = model.fit(sample, random_seed=i + 1)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            learned_discrepancy(fit)
            learn.append(time.perf_counter() - start)
    rows.append({"route": "warm (ScalingModel.fit, same process)", "seconds": statistics.median(times),
                 "load": statistics.mean(loads)})
    rows.append({"route": "of which learning the discrepancy (rolling origin)",
                 "seconds": statistics.median(learn), "load": statistics.mean(loads)})
    return pd.DataFrame(rows)


def markdown(out: Path, default: str, prefix: str = "") -> str:
    """The README's tables from the CSVs: before / after / point fit per study and pooled,
    and every candidate pooled."""
    per = pd.read_csv(out / f"{prefix}calibration_per_study.csv")
    pooled = pd.read_csv(out / f"{prefix}calibration_pooled.csv")
    names = {"today": "0.1.0 (no δ)", ROUND1_METHOD: "round-1 δ", ROUND2_METHOD: "before (round-2 δ)",
             default: "after (default)",
             "point+boot+resid": "point+boot+resid"}
    groups = ["chinchilla", "porian (all)", "datablations", "revisiting (all)", "revisiting/IC",
              "revisiting/LM", "revisiting/NMT", "revisiting/BB", "hitchhiker (all)", "olmo"]

    def line(label, method, row):
        return (f"| {label} | {names.get(method, method)} | {int(row['n_test'])} | {row['rmsle']:.4f} | "
                f"{row['bias']:+.4f} | {row['coverage_50']:.2f} / {row['coverage_80']:.2f} / "
                f"**{row['coverage_90']:.2f}** / {row['coverage_95']:.2f} | {row['width_90']:.3f} | "
                f"{row['crps']:.4f} | {row['winkler_90']:.3f} |")

    head = ("| study | method | held-out | RMSLE | bias | coverage 50 / 80 / 90 / 95% | 90% width | "
            "CRPS | Winkler 90 |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for group in groups:
        for method in names:
            row = per[(per["group"] == group) & (per["method"] == method)]
            if len(row):
                lines.append(line(group, method, row.iloc[0]))
    for label in ("studies equal", "splits equal", "runs equal"):
        for method in names:
            row = pooled[(pooled["pooled"] == label) & (pooled["method"] == method)]
            if len(row):
                lines.append(line(f"pooled, {label}", method, row.iloc[0]))
    lines += ["", head.replace("| study | method |", "| pooled (studies equal) | candidate |")]
    for _, row in pooled[pooled["pooled"] == "studies equal"].iterrows():
        lines.append(line("pooled", row["method"], row))
    for method, label in ((ROUND1_METHOD, "round 1"), (ROUND2_METHOD, "before"), (default, "after")):
        configs = per[per["group"].str.startswith("porian/") & (per["method"] == method)]
        if len(configs):
            lines.append(f"\nPorian configs {label}: 90% coverage {configs['coverage_90'].min():.2f}"
                         f" (lowest) to {configs['coverage_90'].max():.2f}, "
                         f"{int((configs['coverage_90'] < 0.7).sum())} of {len(configs)} below 0.70")
    lines += ["", "| candidate | lowest 90% coverage of any study/config/domain (which) | "
              "groups below 0.70 |", "|---|---|---|"]
    groups_only = per[~per["group"].str.endswith("(all)")]
    for method, g in groups_only.groupby("method", sort=False):
        low = g.loc[g["coverage_90"].idxmin()]
        lines.append(f"| {names.get(method, method)} | {low['coverage_90']:.2f} ({low['group']}) | "
                     f"{int((g['coverage_90'] < 0.7).sum())} of {len(g)} |")
    sim_path = out / f"{prefix}calibration_simulation.csv"
    if sim_path.exists():
        sim = pd.read_csv(sim_path)
        lines += ["", "| candidate (law exactly true) | τ | 90% coverage | 50% coverage | "
                  "90% width at 10x | × 0.1.0's width |", "|---|---|---|---|---|---|"]
        for _, row in sim.iterrows():
            lines.append(f"| {names.get(row['method'], row['method'])} | {row['tau']:.3g} | "
                         f"{row['coverage_90']:.2f} | {row['coverage_50']:.2f} | "
                         f"{row['width_90_at_10x']:.3f} | {row['width_ratio_to_today']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two splits per study, tiny settings")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="small", help="point-fit starting grid")
    parser.add_argument("--score-only", action="store_true", help="stage 2 from the cached fits")
    parser.add_argument("--resume", action="store_true", help="reuse the splits already cached")
    parser.add_argument("--reuse-point-fits", default=None,
                        help="a cache of an earlier run whose point fits to reuse")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--timing", action="store_true", help="only time the default fit")
    parser.add_argument("--mixtures", action="store_true",
                        help="also score the τ-mixture candidates (slow)")
    args = parser.parse_args(argv)
    global RUN_MIXTURES
    RUN_MIXTURES = args.mixtures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.timing:
        table = timing()
        table.to_csv(out / "calibration_fit_time.csv", index=False)
        show(table, "Default fit time (Chinchilla, 240 runs)", list(table.columns))
        return 0
    cache = out / (("quick_" if args.quick else "") + CACHE_NAME)
    start = time.perf_counter()
    if args.score_only:
        records = pickle.loads(cache.read_bytes())
    else:
        settings = {"draws": args.draws, "tune": args.tune, "chains": args.chains}
        if args.quick:
            settings.update(draws=300, tune=300)
        splits = all_splits(args.quick) + simulation_splits(2 if args.quick else 6, args.seed)
        if args.reuse_point_fits:
            PREVIOUS.update({r["name"]: r for r in pickle.loads(Path(args.reuse_point_fits).read_bytes())})
        if not args.resume and cache.exists():
            cache.unlink()
        records = stage1(splits, settings, args.seed, args.grid, cache)
    sims = [r for r in records if r["study"] == "simulation"]
    records = [r for r in records if r["study"] != "simulation"]
    taus, points, loso = candidates(records, args.seed)
    per_group, pooled = tables(points)
    prefix = "quick_" if args.quick else ""
    taus.to_csv(out / f"{prefix}calibration_taus.csv", index=False)
    per_group.to_csv(out / f"{prefix}calibration_per_study.csv", index=False)
    pooled.to_csv(out / f"{prefix}calibration_pooled.csv", index=False)
    pit_table(points).to_csv(out / f"{prefix}calibration_pit.csv", index=False)
    cols = ["method", "n_test", "rmsle", "bias", "crps", "winkler_90", "coverage_50",
            "coverage_80", "coverage_90", "coverage_95", "width_90"]
    show(per_group.sort_values(["group", "method"]), "Per study", ["group"] + cols)
    show(pooled, "Pooled", ["pooled"] + cols)
    simulation, full = simulation_table(sims, records, args.seed)
    shipped = (DEFAULT_TAU, DEFAULT_PRIOR_SD)
    learned = tuple(full["prior"][DEFAULT_METHOD])
    print(f"\nDefault prior from every study: median {learned[0]:.3g}, sd {learned[1]:g}; the "
          f"package ships {shipped}" + ("" if np.allclose(learned, shipped, rtol=0.01) else
                                       "  <-- update bayescale.discrepancy"))
    (out / f"{prefix}calibration_corpus.json").write_text(json.dumps(
        {"all_studies": full, "leave_one_study_out": loso}, indent=1, default=float))
    simulation.to_csv(out / f"{prefix}calibration_simulation.csv", index=False)
    show(simulation, "Simulation (law exactly true)", list(simulation.columns))
    (out / f"{prefix}calibration_tables.md").write_text(markdown(out, DEFAULT_METHOD, prefix) + "\n")
    print(f"\nTotal {time.perf_counter() - start:.0f} s. CSVs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
