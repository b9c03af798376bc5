"""Groups benchmark: pooling none / partial / complete on real grouped runs.

Data: Porian et al. (2024)'s IsoFLOP runs (../shared/data/porian2024_isoflops.csv), the same
models trained under different data sets (RefinedWeb, OpenWebText2) and schedules; each
config is a group. (The datablations runs of Muennighoff et al. 2023 are all on C4: one data
set, so there is nothing to group there.)

Cases, for each group:
- ``holdout``: hold out the group's largest budget (every run at it) and forecast those runs
  from the rest (the group's smaller budgets and all other groups);
- ``small``: keep only 4 runs of the group (the best run at each of its 4 smallest budgets)
  and forecast its largest budget. ``pooling="none"`` cannot fit 4 runs with the 5
  parameters of the Chinchilla law; it is scored on ``small6`` (6 runs) instead.

Scores: RMSLE of the median forecast, coverage of the 50% and 90% bands, mean width of the
90% band (log loss), and the fit's wall time. Writes benchmarks/results/groups_<case>.csv.

    python benchmarks/bench_groups.py [--configs N] [--draws 500]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "porian2024_isoflops.csv"
RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = ("owt2|base|short|chinchilla|standard|val", "rw|base|short|chinchilla|standard|val",
           "rw|tuned|short|const|standard|val")


def load(configs):
    frame = pd.read_csv(DATA)
    frame = frame[frame["config"].isin(configs)].reset_index(drop=True)
    return frame[["config", "params", "tokens", "flops", "loss"]]


def score(fit, test, group):
    kw = {} if group is None else {"group": group}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prob in (0.5, 0.9):
            table = fit.forecast(params=test["params"].to_numpy(), tokens=test["tokens"].to_numpy(),
                                 prob=prob, **kw)
            inside = (test["loss"].to_numpy() >= table["loss_lower"].to_numpy()) & (
                test["loss"].to_numpy() <= table["loss_upper"].to_numpy())
            out[f"cover{int(prob * 100)}"] = float(inside.mean())
            if prob == 0.9:
                out["width90"] = float(np.mean(np.log(table["loss_upper"] / table["loss_lower"])))
                out["rmsle"] = float(np.sqrt(np.mean(np.log(table["loss_median"].to_numpy()
                                                            / test["loss"].to_numpy()) ** 2)))
    return out


def fit_with(pooling, train, settings):
    grouped = pooling != "complete"
    runs = bs.load_runs(train, group="config" if grouped else None)
    model = bs.ScalingModel("chinchilla", pooling=pooling if grouped else None)
    start = time.perf_counter()
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(runs, **settings)
    return fit, time.perf_counter() - start, time.process_time() - cpu


def small_subset(group_frame, k):
    budgets = np.sort(group_frame["flops"].unique())[:k]
    best = group_frame[group_frame["flops"].isin(budgets)]
    return best.loc[best.groupby("flops")["loss"].idxmin()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--configs", type=int, default=len(CONFIGS))
    parser.add_argument("--cases", nargs="+", default=["holdout", "small"])
    args = parser.parse_args()
    settings = {"draws": args.draws, "tune": args.tune, "chains": 2, "random_seed": 1}
    configs = CONFIGS[:args.configs]
    frame = load(configs)
    RESULTS.mkdir(exist_ok=True)
    load_avg = os.getloadavg()[0]
    for case in args.cases:
        rows = []
        for config in configs:
            mine = frame[frame["config"] == config]
            top = mine["flops"].max()
            test = mine[mine["flops"] == top]
            others = frame[frame["config"] != config]
            if case == "holdout":
                variants = {"": pd.concat([others, mine[mine["flops"] < top]])}
            else:
                lower = mine[mine["flops"] < top]
                variants = {"4": pd.concat([others, small_subset(lower, 4)]),
                            "6": pd.concat([others, small_subset(lower, 6)])}
            for label, train in variants.items():
                for pooling in ("none", "partial", "complete"):
                    if pooling == "none" and label == "4":
                        continue   # 4 runs cannot fit 5 parameters alone
                    fit, wall, cpu = fit_with(pooling, train, settings)
                    group = config if pooling != "complete" else None
                    row = {"case": case + label, "config": config, "pooling": pooling,
                           "train_runs_group": int((train["config"] == config).sum()),
                           "test_runs": len(test), **score(fit, test, group),
                           "divergences": fit.diagnostics().divergences,
                           "fit_seconds": wall, "fit_cpu_seconds": cpu,
                           "load_avg_1min": load_avg}
                    rows.append(row)
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                          flush=True)
        table = pd.DataFrame(rows)
        table.to_csv(RESULTS / f"groups_{case}.csv", index=False)
        summary = table.groupby(["case", "pooling"])[["rmsle", "cover50", "cover90", "width90",
                                                      "fit_seconds", "fit_cpu_seconds"]].mean()
        print(f"\n{case} (means over {len(configs)} configs, load {load_avg:.1f}):")
        print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
