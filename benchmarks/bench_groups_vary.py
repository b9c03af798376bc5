"""Which law parameters should vary between groups? Measured on real grouped runs.

Data: Porian et al. (2024)'s IsoFLOP runs (../shared/data/porian2024_isoflops.csv), two
triples of configurations (the same model ladder under different data sets and schedules),
validation loss with the standard parameter count. The datablations runs of Muennighoff et
al. (2023) are all on one data set (C4), so they offer no groups to compare.

Candidates (partial pooling with the named parameters varying, the others one shared value),
plus pooling "complete" (one law) and "none" (each group alone); "sigma" in a candidate is
the run-to-run noise scale per group (``group_sd["sigma"]``). Scores:

- ``elpd_loo``: PSIS-LOO expected log predictive density of all runs (ArviZ), with its
  standard error and the largest Pareto k;
- ``holdout``: for each group, fit without its largest budget and forecast those runs
  (RMSLE of the median, 90% coverage and width), as benchmarks/bench_groups.py;
- ``small4``: the same, keeping only 4 small runs of that group;
- divergences and fit time.

Writes benchmarks/results/groups_vary.csv and prints the table.

    python benchmarks/bench_groups_vary.py [--draws 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bayescale as bs  # noqa: E402
from bayescale.likelihood import log_likelihood  # noqa: E402
from bench_groups import DATA, RESULTS, score, small_subset  # noqa: E402

TRIPLES = {
    "notebook": ("owt2|base|short|chinchilla|standard|val", "rw|base|short|chinchilla|standard|val",
                 "rw|tuned|short|const|standard|val"),
    "kaplan-decay": ("owt2|base|short|kaplan|standard|val", "rw|base|short|kaplan|standard|val",
                     "owt2|tuned|short|const|standard|val"),
}
ALL = ("E_fraction", "a", "b", "alpha", "beta")
CANDIDATES = {
    "all vary": ALL,
    "E, a, b vary": ("E_fraction", "a", "b"),
    "E, a, b, beta vary": ("E_fraction", "a", "b", "beta"),
    "E, a, b, beta, sigma vary": ("E_fraction", "a", "b", "beta", "sigma"),
    "E, a, beta, sigma vary": ("E_fraction", "a", "beta", "sigma"),
    "E, a, b, alpha vary": ("E_fraction", "a", "b", "alpha"),
    "E vary": ("E_fraction",),
    "complete": None,
    "none": None,
}


LABELS = {
    "all vary": "all five",
    "E, a, b vary": "E, a, b",
    "E, a, b, beta vary": "E, a, b, β",
    "E, a, b, beta, sigma vary": "E, a, b, β, sigma",
    "E, a, beta, sigma vary": "**E, a, β, sigma** (default)",
    "E, a, b, alpha vary": "E, a, b, α",
    "E vary": "E",
    "complete": "complete pooling",
    "none": "none (each alone)",
}


def markdown_table() -> str:
    """The guide's "which parameters vary" table, from the committed summaries.

    Rows of candidates with the noise per group come from ``groups_vary_subset_summary.csv``
    (run with the final sampler settings), the others from ``groups_vary_summary.csv``.

    Returns
    -------
    str
        A markdown table, one row per triple and candidate, in :data:`CANDIDATES` order.
    """
    main_rows = pd.read_csv(RESULTS / "groups_vary_summary.csv")
    subset = pd.read_csv(RESULTS / "groups_vary_subset_summary.csv")
    sigma = subset["candidate"].str.contains("sigma")
    rows = pd.concat([main_rows[~main_rows["candidate"].str.contains("sigma")], subset[sigma]])
    lines = ["| triple | parameters that vary | elpd LOO (se) | max Pareto k | holdout RMSLE "
             "| small4 RMSLE | divergences (all fits) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for triple in TRIPLES:
        for candidate in CANDIDATES:
            match = rows[(rows["triple"] == triple) & (rows["candidate"] == candidate)]
            if match.empty:
                continue
            r = match.iloc[0]
            small4 = "—" if pd.isna(r["small4_rmsle"]) else f"{r['small4_rmsle']:.3f}"
            lines.append(f"| {triple} | {LABELS[candidate]} | {r['elpd_loo']:.1f} "
                         f"({r['elpd_se']:.1f}) | {r['k_max']:.2f} | {r['holdout_rmsle']:.3f} "
                         f"| {small4} | {int(r['divergences'])} |")
    return "\n".join(lines)


def fit(frame: pd.DataFrame, candidate: str, settings: dict):
    runs = bs.load_runs(frame, group="config")
    if candidate == "complete":
        model = bs.ScalingModel("chinchilla", pooling="complete")
    else:
        if candidate == "none":
            model = bs.ScalingModel("chinchilla", pooling="none")
        else:
            vary = CANDIDATES[candidate]
            sds = {n: (bs.model.DEFAULT_GROUP_SD[n] if n in vary else 0.0) for n in ALL}
            sds["sigma"] = bs.model.SIGMA_GROUP_SD if "sigma" in vary else 0.0
            model = bs.ScalingModel("chinchilla", pooling="partial", group_sd=sds)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(runs, **settings)
    return result, time.perf_counter() - start


def loo(result) -> dict:
    """PSIS-LOO of every run (a grouped fit: each group's runs under its own parameters)."""
    import arviz as az

    views = [result.group_fit(g) for g in result.groups] if result.is_grouped else [result]
    pointwise = np.concatenate([log_likelihood(v) for v in views], axis=-1)
    chains, draws = pointwise.shape[:2]
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"sigma": (("chain", "draw"), np.zeros((chains, draws)))}),
        "log_likelihood": xr.Dataset({"log_loss": (("chain", "draw", "run"), pointwise)})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = az.loo(tree, pointwise=True)
    return {"elpd_loo": float(out.elpd), "elpd_se": float(out.se),
            "pareto_k_max": float(np.max(out.pareto_k)),
            "pointwise": np.asarray(out.elpd_i, dtype=np.float64).ravel()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--triples", nargs="+", default=list(TRIPLES))
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--cases", nargs="+", default=["loo", "holdout", "small4"])
    parser.add_argument("--table", action="store_true",
                        help="print the guide's markdown table from the committed CSVs and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table())
        return
    settings = {"draws": args.draws, "tune": args.tune, "chains": 4, "random_seed": 1}
    data = pd.read_csv(DATA)
    RESULTS.mkdir(exist_ok=True)
    rows = []
    pointwise = {}
    for triple in args.triples:
        configs = TRIPLES[triple]
        frame = data[data["config"].isin(configs)][["config", "params", "tokens", "flops", "loss"]]
        frame = frame.reset_index(drop=True)
        for candidate in args.candidates:
            base = {"triple": triple, "candidate": candidate, "load_avg_1min": os.getloadavg()[0]}
            if "loo" in args.cases:
                result, seconds = fit(frame, candidate, settings)
                scores = loo(result)
                # runs in group order (a grouped fit's views), the same for every candidate
                labels = np.asarray(result.runs.group).astype(str)
                order = np.concatenate([np.flatnonzero(labels == str(g))
                                        for g in result.runs.group_names]) \
                    if candidate == "complete" else None
                elpd_i = scores.pop("pointwise")
                pointwise[(triple, candidate)] = elpd_i[order] if order is not None else elpd_i
                rows.append({**base, "case": "loo", **scores, "fit_seconds": seconds,
                             "divergences": result.diagnostics().divergences})
                print(rows[-1], flush=True)
            for case in [c for c in args.cases if c != "loo"]:
                for config in configs:
                    mine = frame[frame["config"] == config]
                    top = mine["flops"].max()
                    test = mine[mine["flops"] == top]
                    lower = mine[mine["flops"] < top]
                    keep = lower if case == "holdout" else small_subset(lower, 4)
                    if candidate == "none" and len(keep) < 6:
                        continue   # too few runs to fit alone
                    train = pd.concat([frame[frame["config"] != config], keep])
                    result, seconds = fit(train, candidate, settings)
                    group = None if candidate == "complete" else config
                    rows.append({**base, "case": case, "config": config,
                                 **score(result, test, group), "fit_seconds": seconds,
                                 "divergences": result.diagnostics().divergences})
                    print(rows[-1], flush=True)
    # the paired difference to the best candidate of each triple, and its standard error
    for triple in args.triples:
        mine = {c: v for (t, c), v in pointwise.items() if t == triple}
        if not mine:
            continue
        best = max(mine, key=lambda c: mine[c].sum())
        for row in rows:
            if row["triple"] == triple and row["case"] == "loo":
                diff = mine[row["candidate"]] - mine[best]
                row["elpd_diff"] = float(diff.sum())
                row["elpd_diff_se"] = float(np.sqrt(diff.size * diff.var()))
    suffix = "" if set(args.cases) == {"loo", "holdout", "small4"} else "_" + "_".join(args.cases)
    if args.candidates != list(CANDIDATES):
        suffix += "_subset"
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / f"groups_vary{suffix}.csv", index=False)
    summary = []
    for (triple, candidate), part in table.groupby(["triple", "candidate"], sort=False):
        row = {"triple": triple, "candidate": candidate}
        for case, sub in part.groupby("case"):
            if case == "loo":
                row.update({"elpd_loo": sub["elpd_loo"].iloc[0], "elpd_se": sub["elpd_se"].iloc[0],
                            "elpd_diff": sub["elpd_diff"].iloc[0],
                            "diff_se": sub["elpd_diff_se"].iloc[0],
                            "k_max": sub["pareto_k_max"].iloc[0]})
            else:
                row.update({f"{case}_rmsle": sub["rmsle"].mean(), f"{case}_cover90": sub["cover90"].mean(),
                            f"{case}_width90": sub["width90"].mean()})
        row["divergences"] = int(part["divergences"].sum())
        row["fit_seconds"] = part["fit_seconds"].mean()
        summary.append(row)
    summary = pd.DataFrame(summary)
    summary.to_csv(RESULTS / f"groups_vary{suffix}_summary.csv", index=False)
    print(f"\n(load {os.getloadavg()[0]:.1f}; {args.draws} draws x 4 chains)")
    print(summary.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
