"""Speed of a partial-pooling fit: the grouped kernel (default) against PyMC's compiled model.

Data: 3 groups x 80 simulated Chinchilla-law runs (the issue's target case: <= 5 s warm on
2 cores) and the three Porian et al. (2024) configurations of benchmarks/bench_groups.py.
For each route: a cold fit (a new process: import, compile or load the kernel, sample), a
warm fit (the same process again, another seed), the cost of one log density + gradient,
gradient evaluations per draw, tree depth, step size and divergences. 4 chains x 1000 draws
after 1000 tuning steps, as a default fit. Writes benchmarks/results/groups_speed.csv.

``--divergences``: instead, divergences of default partial-pooling fits on the bundled cases
(the synthetic 3 x 80, notebook 04's Porian triple, and its "four small runs of one group"
fit), several seeds each, with gradients per draw and CPU seconds; writes
benchmarks/results/groups_divergences.csv.

    python benchmarks/bench_groups_speed.py [--routes nutpie nutpie-pymc] [--data synthetic porian]
    python benchmarks/bench_groups_speed.py --divergences [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "porian2024_isoflops.csv"
RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = ("owt2|base|short|chinchilla|standard|val", "rw|base|short|chinchilla|standard|val",
           "rw|tuned|short|const|standard|val")
# Three data mixes: one pair of exponents, different E and coefficients.
TRUTHS = ({"E": 1.80, "A": 482.0, "B": 2085.0}, {"E": 1.95, "A": 420.0, "B": 2500.0},
          {"E": 1.70, "A": 600.0, "B": 1800.0})
SETTINGS = {"draws": 1000, "tune": 1000, "chains": 4}


def frame(data: str) -> pd.DataFrame:
    if data == "porian":
        table = pd.read_csv(DATA)
        return table[table["config"].isin(CONFIGS)][["config", "params", "tokens", "loss"]]
    if data == "porian-few4":   # notebook 04: keep only 4 small runs of the last config
        table = pd.read_csv(DATA)
        table = table[table["config"].isin(CONFIGS)]
        mine = table[table["config"] == CONFIGS[2]]
        small = mine[mine["flops"].isin(np.sort(mine["flops"].unique())[:4])]
        small = small.loc[small.groupby("flops")["loss"].idxmin()]
        return pd.concat([table[table["config"] != CONFIGS[2]], small])[
            ["config", "params", "tokens", "loss"]]
    rng = np.random.default_rng(3)
    parts = []
    for k, truth in enumerate(TRUTHS):
        params = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 80))
        tokens = params * np.exp(rng.uniform(np.log(5), np.log(60), 80))
        loss = (truth["E"] + truth["A"] / params ** 0.348 + truth["B"] / tokens ** 0.366)
        parts.append(pd.DataFrame({"params": params, "tokens": tokens,
                                   "loss": loss * np.exp(0.01 * rng.standard_normal(80)),
                                   "config": f"mix{k}"}))
    return pd.concat(parts, ignore_index=True)


def one_fit(data: str, route: str, seed: int) -> dict:
    import bayescale as bs

    runs = bs.load_runs(frame(data), group="config")
    model = bs.ScalingModel("chinchilla", pooling="partial")
    wall, cpu = time.perf_counter(), _cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(runs, sampler=route, random_seed=seed, **SETTINGS)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    stats = fit.sample_stats
    table = fit.diagnostics().table
    return {"fit_seconds": wall, "fit_cpu_seconds": cpu, "sampling_seconds": fit.settings["seconds"],
            "route_used": fit.settings["sampler"],
            "divergences": int(stats["diverging"].sum()),
            "grads_per_draw": float(stats["n_steps"].mean()),
            "tree_depth": float(stats["tree_depth"].mean()),
            "step_size": float(stats["step_size"].mean()),
            "max_rhat": float(table["r_hat"].max()),
            "min_ess_bulk": float(table["ess_bulk"].min())}


def _cpu() -> float:
    self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime


def gradient_cost(data: str, route: str, repeats: int = 20000) -> float:
    """Seconds per log density + gradient at a typical point (called from Python)."""
    import bayescale as bs
    from bayescale import model as M

    runs = bs.load_runs(frame(data), group="config")
    model = bs.ScalingModel("chinchilla", pooling="partial")
    if route == "nutpie":
        compiled = M._fast_partial(model, runs)
    else:
        compiled = M._compiled_partial(model, runs)
    u = np.asarray(compiled.initial_point_func(0), dtype=np.float64)
    if route == "nutpie":
        from bayescale import _fastgroups

        def call():
            return _fastgroups.logp_and_grad(model.law, compiled.user_data, u)
    else:
        func = compiled.logp_func

        def call():
            return func(u)
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def cold(data: str, route: str) -> dict:
    """A fit in a new process: import, kernel load or compile, sampling."""
    code = ("import json, sys, time; t = time.perf_counter(); sys.path.insert(0, %r); "
            "import bench_groups_speed as b; r = b.one_fit(%r, %r, 0); "
            "r['process_seconds'] = time.perf_counter() - t; print(json.dumps(r))"
            % (str(Path(__file__).resolve().parent), data, route))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["cold_wall_seconds"] = time.perf_counter() - start
    row["cold_cpu_seconds"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return row


def divergences(seeds) -> pd.DataFrame:
    """Default partial-pooling fits (the kernel) of the bundled cases, one row per seed."""
    rows = []
    one_fit("synthetic", "nutpie", 99)   # load the kernel once
    for data in ("synthetic", "porian", "porian-few4"):
        for seed in seeds:
            load = os.getloadavg()[0]
            row = {"data": data, "seed": seed, "load_avg_1min": load,
                   **one_fit(data, "nutpie", seed)}
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / "groups_divergences.csv", index=False)
    print("\ndivergences per 4,000 draws, by seed:")
    print(table.pivot(index="data", columns="seed", values="divergences").to_string())
    print("\nmedians:")
    print(table.groupby("data")[["grads_per_draw", "fit_cpu_seconds", "fit_seconds",
                                 "load_avg_1min"]].median().round(3).to_string())
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", nargs="+", default=["nutpie", "nutpie-pymc"])
    parser.add_argument("--data", nargs="+", default=["synthetic", "porian"])
    parser.add_argument("--warm", type=int, default=3, help="warm fits per route (seeds 1..)")
    parser.add_argument("--divergences", action="store_true",
                        help="divergences of the bundled cases over --seeds instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--output", default="groups_speed.csv",
                        help="file name in benchmarks/results (default groups_speed.csv)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if args.divergences:
        divergences(args.seeds)
        return
    rows = []
    for data in args.data:
        if data == "porian" and not DATA.exists():
            print(f"skipping porian: {DATA} not found")
            continue
        for route in args.routes:
            load = os.getloadavg()[0]
            first = cold(data, route)
            rows.append({"data": data, "route": route, "kind": "cold", "load_avg_1min": load,
                         **first})
            print(rows[-1], flush=True)
            one_fit(data, route, 0)   # this process: compile or load once
            for seed in range(1, args.warm + 1):
                load = os.getloadavg()[0]
                rows.append({"data": data, "route": route, "kind": "warm", "seed": seed,
                             "load_avg_1min": load, **one_fit(data, route, seed)})
                print(rows[-1], flush=True)
            rows.append({"data": data, "route": route, "kind": "gradient",
                         "load_avg_1min": os.getloadavg()[0],
                         "gradient_microseconds": 1e6 * gradient_cost(data, route)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / args.output, index=False)
    warm = table[table["kind"] == "warm"].groupby(["data", "route"])[
        ["fit_seconds", "fit_cpu_seconds", "grads_per_draw", "tree_depth", "divergences",
         "load_avg_1min"]].median()
    print("\nwarm fits (median):")
    print(warm.round(3).to_string())
    print("\ncold fits:")
    print(table[table["kind"] == "cold"][["data", "route", "cold_wall_seconds", "cold_cpu_seconds",
                                          "fit_seconds", "divergences", "load_avg_1min"]]
          .round(3).to_string(index=False))
    print("\nper gradient (µs):")
    print(table[table["kind"] == "gradient"][["data", "route", "gradient_microseconds"]]
          .round(2).to_string(index=False))


if __name__ == "__main__":
    main()
