"""Does the run planner pick pilots that pin the forecast down? And how fast is it?

Three parts, each printing a table and writing a CSV to benchmarks/results/:

1. ``plan_speed.csv``: ``fit.plan_runs`` on 100 candidates × 4,000 draws (a 4 × 1000 fit of
   the Chinchilla law on Epoch's 240 runs), median of 5 calls after one warm-up, with the
   load average.
2. ``plan_simulation.csv``: a known law (Epoch's refit of Chinchilla, 2% log-normal noise)
   and a small design of 9 runs; from each replicate's fit, train (simulate from the true
   law) one pilot chosen four ways — the planner's top pick, a random affordable candidate,
   the largest affordable one, the D-optimal one (largest gain in log det of the Fisher
   information at the posterior median) — refit, and measure how much the 90% band of one
   run's loss at the target shrank. The planner's predicted reduction for each chosen pilot
   is compared with the realised one.
3. ``plan_pool.csv``: a pool of real runs — Hoffmann et al.'s Chinchilla runs as digitised
   by Epoch AI (Besiroglu et al. 2024), the 240 Epoch keeps — with the runs at or above
   1e21 FLOPs held out as the target region. From the same 8 seed runs (random, below
   2e19 FLOPs; their cost is not counted), runs are added until 1%, 5% and 10% of the pool's
   total cost is spent: sequentially by the planner (at most 3 rounds per level of a greedy
   batch of up to 6 picks, refit, plan again), at
   random, cheapest first, and greedily by D-optimal gain per FLOP. Each selection is
   scored by the R² and RMSLE of its fit's median forecasts of the held-out runs.

The planner's objective in part 3 is the mean 90% band of the law's loss over 4 held-out
configurations spread over model size (``target_points=``); ``PLAN_REGION=0`` uses the band
at the compute-optimal point of the region's geometric-mean budget instead (results in
``plan_pool_onepoint.csv``).

Usage: python benchmarks/bench_plan.py [--quick] [--only speed|simulation|pool]
(--quick: fewer replicates, a smoke run)
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs

RESULTS = Path(__file__).resolve().parent / "results"
KIND = os.environ.get("PLAN_KIND", "mean")
GREEDY = os.environ.get("PLAN_GREEDY", "best")
REGION = os.environ.get("PLAN_REGION", "1") == "1"
TRUTH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}


def true_loss(params, tokens):
    return TRUTH["E"] + TRUTH["A"] / np.asarray(params) ** TRUTH["alpha"] + \
        TRUTH["B"] / np.asarray(tokens) ** TRUTH["beta"]


def quiet_fit(frame: pd.DataFrame, seed: int, draws: int, chains: int = 2) -> "bs.ScalingFit":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bs.ScalingModel("chinchilla").fit(bs.load_runs(frame), draws=draws, tune=draws,
                                                 chains=chains, random_seed=seed,
                                                 progressbar=False)


def band_width(fit: "bs.ScalingFit", target_flops: float) -> float:
    """Width of the 90% band of one run's loss at the target, as ``forecast`` reports it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = fit.forecast(flops=[target_flops], prob=0.9).iloc[0]
    return float(row["loss_upper"] - row["loss_lower"])


def d_optimal_gain(fit: "bs.ScalingFit", design: pd.DataFrame, pool: pd.DataFrame) -> np.ndarray:
    """Gain in log det of the Fisher information of the sampled parameters (at the posterior
    median) from adding each pool row to ``design``; noise scale cancels in the gain."""
    theta = {k: float(np.median(v)) for k, v in fit.theta().items()}
    names = [n for n in fit.posterior.data_vars if n not in ("sigma", "nu")]

    def jacobian(frame: pd.DataFrame) -> np.ndarray:
        log_x = {c: np.log(frame[c].to_numpy(dtype=float)) for c in ("params", "tokens")}
        log_x["flops"] = log_x["params"] + log_x["tokens"] + math.log(6.0)
        columns = []
        for name in names:
            step = 1e-5 * max(1.0, abs(theta[name]))
            up, down = dict(theta), dict(theta)
            up[name] += step
            down[name] -= step
            columns.append((fit.law.log_loss(up, log_x, fit.reference, np)
                            - fit.law.log_loss(down, log_x, fit.reference, np)) / (2 * step))
        return np.column_stack(columns)

    j = jacobian(design)
    inverse = np.linalg.inv(j.T @ j + 1e-9 * np.eye(len(names)))
    jp = jacobian(pool)
    # Matrix determinant lemma: log det(I + j jᵀ) − log det(I) = log(1 + jᵀ I⁻¹ j).
    return np.log1p(np.einsum("ij,jk,ik->i", jp, inverse, jp))


# -- 1. speed ------------------------------------------------------------------------------

def bench_speed(quick: bool) -> pd.DataFrame:
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.ScalingModel("chinchilla").fit(runs, random_seed=0, progressbar=False)
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1e10), 100))
    pool = pd.DataFrame({"params": n, "tokens": n * np.exp(rng.uniform(np.log(5), np.log(60), 100))})
    rows = []
    for objective, extra in (("band", {}), ("prob", {"target": 2.0}), ("split", {})):
        fit.plan_runs(1e24, candidates=pool, objective=objective, **extra)   # compile / warm
        times = []
        for _ in range(3 if quick else 5):
            start = time.perf_counter()
            table = fit.plan_runs(1e24, candidates=pool, objective=objective, **extra)
            times.append(time.perf_counter() - start)
        rows.append({"objective": objective, "candidates": len(pool), "draws": fit.n_draws,
                     "outcomes": table.attrs["n_outcomes"], "seconds_median": np.median(times),
                     "seconds_min": min(times), "seconds_max": max(times),
                     "load_1min": os.getloadavg()[0]})
    start = time.perf_counter()
    fit.plan_runs(1e24, candidates=pool, k=3)
    rows.append({"objective": "band, k=3 greedy", "candidates": len(pool), "draws": fit.n_draws,
                 "outcomes": 100, "seconds_median": time.perf_counter() - start,
                 "seconds_min": math.nan, "seconds_max": math.nan,
                 "load_1min": os.getloadavg()[0]})
    return pd.DataFrame(rows)


# -- 2. simulation: predicted against realised ---------------------------------------------

def small_design(seed: int) -> pd.DataFrame:
    sizes, ratios = np.meshgrid([7e7, 1.5e8, 3e8], [5.0, 20.0, 80.0])
    params = sizes.ravel()
    tokens = (sizes * ratios).ravel()
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"params": params, "tokens": tokens,
                         "loss": true_loss(params, tokens) * np.exp(0.02 * rng.standard_normal(9))})


def bench_simulation(quick: bool, target_flops: float = 1e22, budget: float = 1e20) -> pd.DataFrame:
    replicates = 4 if quick else 20
    draws = 500 if quick else 1000
    rows = []
    for rep in range(replicates):
        design = small_design(100 + rep)
        fit = quiet_fit(design, seed=rep, draws=draws, chains=4)
        before = band_width(fit, target_flops)
        plan = fit.plan_runs(target_flops, budget=budget, random_seed=rep)
        rng = np.random.default_rng(1000 + rep)
        gains = d_optimal_gain(fit, design, plan)
        choice = {"planner top pick": 0,
                  "random affordable": int(rng.integers(len(plan))),
                  "largest affordable": int(np.argmax(plan["cost"].to_numpy())),
                  "D-optimal": int(np.argmax(gains))}
        noise = rng.standard_normal()
        for strategy, index in choice.items():
            pilot = plan.iloc[index]
            # The same noise draw for every strategy's pilot: the comparison is paired.
            loss = float(true_loss(pilot["params"], pilot["tokens"]) * np.exp(0.02 * noise))
            new = pd.concat([design, pd.DataFrame({"params": [pilot["params"]],
                                                   "tokens": [pilot["tokens"]],
                                                   "loss": [loss]})], ignore_index=True)
            after = band_width(quiet_fit(new, seed=rep, draws=draws, chains=4), target_flops)
            rows.append({"replicate": rep, "strategy": strategy, "params": pilot["params"],
                         "tokens": pilot["tokens"], "flops": pilot["flops"],
                         "width_before": before, "width_after": after,
                         "realised": before - after, "predicted": pilot["expected_reduction"],
                         "predicted_mcse": pilot["mcse"], "ess": pilot["ess"]})
        print(f"  replicate {rep + 1}/{replicates} done", flush=True)
    return pd.DataFrame(rows)


def summarise_simulation(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    for strategy, group in table.groupby("strategy", sort=False):
        n = len(group)
        out.append({"strategy": strategy, "replicates": n,
                    "mean pilot FLOPs": group["flops"].mean(),
                    "band before": group["width_before"].mean(),
                    "realised reduction": group["realised"].mean(),
                    "realised SE": group["realised"].std(ddof=1) / math.sqrt(n),
                    "predicted reduction": group["predicted"].mean(),
                    "predicted MCSE": math.sqrt((group["predicted_mcse"] ** 2).sum()) / n,
                    "realised share": (group["realised"] / group["width_before"]).mean()})
    return pd.DataFrame(out)


# -- 3. pool selection on real runs --------------------------------------------------------

def r2_rmsle(fit: "bs.ScalingFit", target: pd.DataFrame) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = fit.forecast(params=target["params"], tokens=target["tokens"])["loss_median"].to_numpy()
    actual = target["loss"].to_numpy()
    r2 = 1 - np.sum((actual - pred) ** 2) / np.sum((actual - actual.mean()) ** 2)
    return float(r2), float(np.sqrt(np.mean(np.log(pred / actual) ** 2)))


def bench_pool(quick: bool, levels=(0.01, 0.05, 0.10)) -> pd.DataFrame:
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5).frame[["params", "tokens", "flops", "loss"]]
    target = runs[runs["flops"] >= 1e21].reset_index(drop=True)
    pool = runs[runs["flops"] < 1e21].reset_index(drop=True)
    pool = pool.assign(cost=pool["flops"])
    total = float(pool["cost"].sum())
    target_flops = float(np.exp(np.log(target["flops"]).mean()))
    # The planner's target region: 4 held-out configurations spread over model size.
    region = target.sort_values("params").iloc[np.linspace(0, len(target) - 1, 4).round().astype(int)]
    region = region[["params", "tokens"]] if REGION else None
    repeats = 2 if quick else 10
    draws = 300 if quick else 500
    rows = []
    for rep in range(repeats):
        rng = np.random.default_rng(rep)
        small = np.flatnonzero(pool["flops"].to_numpy() < 2e19)
        seed_set = list(rng.choice(small, 8, replace=False))
        seed_fit = quiet_fit(pool.loc[seed_set], seed=rep, draws=draws)
        for method in ("planner", "random", "cheapest first", "D-optimal"):
            chosen = list(seed_set)
            fit = seed_fit
            order = rng.permutation(len(pool)) if method == "random" else None
            for level in levels:
                allowance = level * total

                def spent() -> float:
                    return float(pool.loc[chosen, "cost"].sum() - pool.loc[seed_set, "cost"].sum())

                rounds = 0
                while True:
                    left = allowance - spent()
                    free = pool.index.difference(chosen)
                    free = free[pool.loc[free, "cost"].to_numpy() <= left]
                    if len(free) == 0:
                        break
                    if method == "planner":
                        if rounds >= (2 if quick else 3):
                            break
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")   # few-ESS and partial-k notes
                            plan = fit.plan_runs(target_flops,
                                                 candidates=pool.loc[free].reset_index(),
                                                 budget=left, k=6, n_outcomes=50, kind=KIND,
                                                 greedy=GREEDY, target_points=region,
                                                 random_seed=rep)
                        picks = plan[plan["pick"] > 0]
                        chosen += list(picks["index"].astype(int))
                        fit = quiet_fit(pool.loc[chosen], seed=rep, draws=draws)
                        rounds += 1
                        continue
                    if method == "random":
                        nxt = next(i for i in order if i in set(free))
                    elif method == "cheapest first":
                        nxt = int(pool.loc[free, "cost"].idxmin())
                    else:
                        gain = d_optimal_gain(fit, pool.loc[chosen], pool.loc[free])
                        nxt = int(free[np.argmax(gain / pool.loc[free, "cost"].to_numpy())])
                    chosen.append(nxt)
                if method != "planner":
                    fit = quiet_fit(pool.loc[chosen], seed=rep, draws=draws)
                elif rounds == 0 and len(chosen) > len(seed_set):
                    fit = quiet_fit(pool.loc[chosen], seed=rep, draws=draws)
                r2, rmsle = r2_rmsle(fit, target)
                rows.append({"repeat": rep, "method": method, "budget_share": level,
                             "runs": len(chosen), "spent_share": spent() / total,
                             "r2": r2, "rmsle": rmsle})
            print(f"  repeat {rep + 1}/{repeats}: {method} done", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer replicates (smoke run)")
    parser.add_argument("--only", choices=["speed", "simulation", "pool"], help="one part only")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    pd.set_option("display.width", 160)
    if args.only in (None, "speed"):
        speed = bench_speed(args.quick)
        speed.to_csv(RESULTS / f"plan_speed{suffix}.csv", index=False)
        print("\nplan_runs speed (seconds per call)\n" + speed.to_string(index=False))
    if args.only in (None, "simulation"):
        start = time.perf_counter()
        sim = bench_simulation(args.quick)
        sim.to_csv(RESULTS / f"plan_simulation{suffix}.csv", index=False)
        print(f"\nSimulation ({time.perf_counter() - start:.0f} s): 90% band of loss at 1e22 FLOPs, "
              "nats\n" + summarise_simulation(sim).to_string(index=False, float_format="%.4g"))
    if args.only in (None, "pool"):
        start = time.perf_counter()
        pool = bench_pool(args.quick)
        suffix += "" if REGION else "_onepoint"   # PLAN_REGION=0: the one-point objective
        pool.to_csv(RESULTS / f"plan_pool{suffix}.csv", index=False)
        summary = (pool.groupby(["budget_share", "method"], sort=False)
                   .agg(runs=("runs", "mean"), r2=("r2", "mean"), r2_sd=("r2", "std"),
                        rmsle=("rmsle", "mean"), rmsle_sd=("rmsle", "std")).reset_index())
        summary.to_csv(RESULTS / f"plan_pool_summary{suffix}.csv", index=False)
        print(f"\nPool selection on Chinchilla runs ({time.perf_counter() - start:.0f} s; "
              "target region: runs >= 1e21 FLOPs)\n"
              + summary.to_string(index=False, float_format="%.4g"))
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
