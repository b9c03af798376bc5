"""The new laws on real data, against the Chinchilla and compute laws on the same runs.

Data (../shared/data; see SOURCES.md there):

1. OLMo model ladder (Bhagia et al. 2024), final C4 loss of 30 runs: fit on the runs of
   ≤ 1B parameters (24), forecast the six 3B runs. Laws: chinchilla, overtrained (Gadre et al.
   2024), kaplan (Kaplan et al. 2020).
2. Revisiting learning curves (Alabdulmohsin et al. 2022), the five NMT curves: fit on
   split == "fit", forecast split == "test". Laws: compute, broken_power (Caballero et al.).
3. Datablations (Muennighoff et al. 2023), the 209 runs with loss < 6 (the ~20 above are
   tiny-data runs repeated thousands of times): the data-constrained law's posterior against
   the published fit, and a backtest (fit on C ≤ 1e20 FLOPs, forecast the larger runs)
   against the Chinchilla law, which ignores repetition.
4. Chinchilla (Hoffmann et al. 2022 via Epoch AI, 240 runs): chinchilla, kaplan, overtrained,
   fit at or below 1e21 FLOPs, forecast above.

Every comparison ranks the laws by PSIS-LOO on the training runs and scores the held-out
runs (``bs.compare`` on the backtests). Then fit times per law on its data set: cold (a new
process, import to finished fit, numba's cache filled) and warm (same process, second fit).

Run:  .venv/bin/python benchmarks/bench_laws_data.py            (about 10 minutes on 2 cores)
      .venv/bin/python benchmarks/bench_laws_data.py --quick    (smoke run, tiny settings)
Writes benchmarks/results/laws_olmo.csv, laws_nmt.csv, laws_datablations.csv,
laws_chinchilla.csv, laws_compare.csv and laws_timing.csv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs
from bayescale.backtest import score_draws

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATA = ROOT.parent.parent / "shared" / "data"
PUBLISHED_DC = {"E": 1.869, "A": 520.4, "B": 1488.0, "alpha": 0.3527, "beta": 0.3527,
                "rd_star": 15.39, "rn_star": 5.31}


def load_olmo() -> tuple[bs.Runs, np.ndarray]:
    frame = pd.read_csv(DATA / "olmo_ladder_bhagia2024.csv")
    runs = bs.load_runs(frame[["params", "tokens", "c4_loss"]], flops=None, loss="c4_loss")
    return runs, (frame["params"] > 2e9).to_numpy()


def load_nmt() -> list[tuple[str, bs.Runs, np.ndarray]]:
    frame = pd.read_csv(DATA / "revisiting_alabdulmohsin2022.csv")
    out = []
    for family, curve in frame[frame["domain"] == "NMT"].groupby("model_family"):
        curve = curve.sort_values("seen_examples").reset_index(drop=True)
        runs = bs.load_runs(curve, flops="seen_examples", params=None, tokens=None, loss="loss")
        out.append((family.removeprefix("revisiting_NMT_"), runs, (curve["split"] == "test").to_numpy()))
    return out


def load_datablations() -> tuple[pd.DataFrame, bs.Runs]:
    frame = pd.read_csv(DATA / "datablations_muennighoff2023_final.csv")
    frame = frame[frame["loss"] < 6].reset_index(drop=True)
    runs = bs.load_runs(frame[["params", "tokens", "unique_tokens", "flops", "loss"]],
                        unique_tokens="unique_tokens")
    return frame, runs


def load_chinchilla() -> tuple[bs.Runs, np.ndarray]:
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    return runs, runs.column("flops") > 1e21


def run_backtest(runs, law, mask, settings, seed):
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bs.ConvergenceWarning)
        warnings.simplefilter("ignore", bs.ExtrapolationWarning)
        warnings.simplefilter("ignore", bs.DesignWarning)
        result = bs.backtest(runs, law, holdout=mask, random_seed=seed, **settings)
    seconds = time.perf_counter() - start
    notes = "; ".join(sorted({str(w.message).split(":")[0] for w in caught
                              if issubclass(w.category, bs.ConvergenceWarning)}))
    return result, seconds, notes


def summary_row(data: str, law: str, result, seconds: float, notes: str) -> dict:
    s = result.summary
    table = result.table
    return {"data": data, "law": law, "n_train": int(s["n_train"]), "n_test": int(s["n_test"]),
            "rmsle": s["rmsle"], "bias": s["bias"],
            "mean_abs_pct": 100 * float(np.mean(np.abs(np.expm1(table["log_error"])))),
            "crps": s["crps"], "coverage_90": s.get("coverage_90", np.nan),
            "width_90": s.get("width_90", np.nan), "seconds": seconds, "warnings": notes}


def compare_rows(data: str, backtests: dict) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = bs.compare(backtests)
    keep = [c for c in ("rank", "elpd", "se", "elpd_diff", "dse", "p", "weight", "rmsle", "crps",
                        "coverage_90", "backtest_rank") if c in table.columns]
    out = table[keep].copy()
    out.insert(0, "data", data)
    out.insert(1, "model", table.index)
    return out.reset_index(drop=True)


def olmo_benchmark(settings, seed):
    runs, mask = load_olmo()
    rows, per_run, backtests = [], [], {}
    for law in ("chinchilla", "overtrained", "kaplan"):
        result, seconds, notes = run_backtest(runs, law, mask, settings, seed)
        backtests[law] = result
        rows.append(summary_row("olmo", law, result, seconds, notes))
        for _, r in result.table.iterrows():
            per_run.append({"law": law, "params": r["params"], "tokens": r["tokens"],
                            "loss": r["loss"], "loss_median": r["loss_median"],
                            "error_pct": 100 * np.expm1(r["log_error"])})
        print(f"  olmo {law}: mean |error| {rows[-1]['mean_abs_pct']:.2f}% ({seconds:.1f} s)",
              file=sys.stderr, flush=True)
    return pd.DataFrame(rows), pd.DataFrame(per_run), compare_rows("olmo", backtests)


def nmt_benchmark(settings, seed):
    rows, compares = [], []
    for curve, runs, mask in load_nmt():
        backtests = {}
        for law in ("compute", "broken_power"):
            result, seconds, notes = run_backtest(runs, law, mask, settings, seed)
            backtests[law] = result
            row = summary_row("nmt", law, result, seconds, notes)
            row["curve"] = curve
            rows.append(row)
            print(f"  nmt {curve} {law}: error {100 * np.expm1(result.table['log_error'].iloc[0]):+.2f}%",
                  file=sys.stderr, flush=True)
        compares.append(compare_rows(f"nmt {curve}", backtests))
    return pd.DataFrame(rows), pd.concat(compares, ignore_index=True)


def _held_out_draws(fit, test: bs.Runs, rng) -> np.ndarray:
    """kind="observed" draws of each held-out run's loss, straight from the law's formula."""
    theta = {k: v[:, None] for k, v in fit.theta().items()}
    log_x = {name: np.log(test.column(name))[None, :] for name in fit.law.inputs}
    mu = fit.law.log_loss(theta, log_x, fit.reference, np)
    sigma = theta["sigma"]
    noise = rng.standard_t(4.0, size=mu.shape) if fit.likelihood == "student_t" else rng.standard_normal(mu.shape)
    return np.exp(mu + sigma * noise)


def datablations_benchmark(settings, seed, cutoff=1e20):
    frame, runs = load_datablations()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        full = bs.ScalingModel("data_constrained").fit(runs, random_seed=seed, **settings)
    summary = full.summary()
    for name, value in PUBLISHED_DC.items():
        rows.append({"kind": "parameter", "name": name, "published": value,
                     "median": summary.loc[name, "median"], "lower_94": summary.loc[name, "hdi_lower"],
                     "upper_94": summary.loc[name, "hdi_upper"], "r_hat": summary.loc[name, "r_hat"]})
    # How well each parameter set reproduces the runs (median |log error|).
    law = full.law
    log_x = {name: np.log(runs.column(name)) for name in law.inputs}
    actual = np.log(runs.column("loss"))
    pub = law.sampled_values(PUBLISHED_DC, full.reference)
    post = {k: np.median(v) for k, v in full.theta().items()}
    for name, theta in (("published", pub), ("posterior_median", post)):
        err = law.log_loss(theta, log_x, full.reference, np) - actual
        rows.append({"kind": "reproduction", "name": name, "median_abs_log_error": float(np.median(np.abs(err))),
                     "mean_log_error": float(np.mean(err))})
    # Backtest: data_constrained vs chinchilla, fit C <= cutoff, forecast the rest.
    mask = runs.column("flops") > cutoff
    train = bs.load_runs(frame.loc[~mask, ["params", "tokens", "unique_tokens", "flops", "loss"]],
                         unique_tokens="unique_tokens")
    test = bs.load_runs(frame.loc[mask, ["params", "tokens", "unique_tokens", "flops", "loss"]],
                        unique_tokens="unique_tokens")
    rng = np.random.default_rng(seed)
    fits = {}
    for law_name in ("data_constrained", "chinchilla"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            warnings.simplefilter("ignore", bs.DesignWarning)
            fit = bs.ScalingModel(law_name).fit(train, random_seed=seed, **settings)
        seconds = time.perf_counter() - start
        fits[law_name] = fit
        _, s = score_draws(test.column("loss"), _held_out_draws(fit, test, rng))
        rows.append({"kind": "backtest", "name": law_name, "n_train": len(train), "n_test": len(test),
                     "rmsle": s["rmsle"], "bias": s["bias"], "crps": s["crps"],
                     "coverage_90": s.get("coverage_90", np.nan), "seconds": seconds})
        print(f"  datablations {law_name}: RMSLE {s['rmsle']:.4f}, bias {s['bias']:+.4f}",
              file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = bs.compare(fits)
    loo_rows = loo[[c for c in ("rank", "elpd", "se", "elpd_diff", "dse", "p", "weight") if c in loo]].copy()
    loo_rows.insert(0, "data", "datablations")
    loo_rows.insert(1, "model", loo.index)
    return pd.DataFrame(rows), loo_rows.reset_index(drop=True)


def chinchilla_benchmark(settings, seed):
    runs, mask = load_chinchilla()
    rows, backtests = [], {}
    for law in ("chinchilla", "kaplan", "overtrained"):
        result, seconds, notes = run_backtest(runs, law, mask, settings, seed)
        backtests[law] = result
        rows.append(summary_row("chinchilla", law, result, seconds, notes))
        print(f"  chinchilla {law}: RMSLE {rows[-1]['rmsle']:.4f}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows), compare_rows("chinchilla", backtests)


# -- timing -------------------------------------------------------------------------------

_TIMING_SNIPPET = """
import sys, time, warnings
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
import bench_laws_data as b
import bayescale as bs
runs = b.runs_for({law!r})
warnings.simplefilter("ignore")
fit = bs.ScalingModel({law!r}).fit(runs, random_seed=0)
cold = time.perf_counter() - t0
t1 = time.perf_counter()
bs.ScalingModel({law!r}).fit(runs, random_seed=1)
print(f"{{cold}} {{time.perf_counter() - t1}}")
"""


def runs_for(law: str) -> bs.Runs:
    """The data set each law is timed on."""
    if law in ("overtrained",):
        return load_olmo()[0]
    if law == "data_constrained":
        return load_datablations()[1]
    if law in ("broken_power", "compute"):
        return load_nmt()[0][1]
    return bs.load_dataset("chinchilla", drop_highest_loss=5)


def timing(laws: list[str], repeats: int) -> pd.DataFrame:
    rows = []
    for law in laws:
        for k in range(repeats):
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", _TIMING_SNIPPET.format(bench=str(ROOT), law=law)],
                                 capture_output=True, text=True, check=True)
            cold, warm = (float(v) for v in out.stdout.split()[-2:])
            rows.append({"law": law, "repeat": k, "cold_s": cold, "warm_s": warm,
                         "load_avg_1min": load})
            print(f"  timing {law}: cold {cold:.2f} s, warm {warm:.2f} s (load {load:.1f})",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sampler settings (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=["olmo", "nmt", "datablations", "chinchilla", "timing"])
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per law")
    args = parser.parse_args(argv)
    settings = ({"draws": 200, "tune": 200, "chains": 2} if args.quick
                else {"draws": 1000, "tune": 1000, "chains": 2})
    RESULTS.mkdir(exist_ok=True)
    compares = []
    if "olmo" in args.only:
        summary, per_run, cmp = olmo_benchmark(settings, args.seed)
        summary.to_csv(RESULTS / "laws_olmo.csv", index=False)
        per_run.to_csv(RESULTS / "laws_olmo_runs.csv", index=False)
        compares.append(cmp)
        print(summary.to_string(index=False), "\n", per_run.round(3).to_string(index=False))
    if "nmt" in args.only:
        summary, cmp = nmt_benchmark(settings, args.seed)
        summary.to_csv(RESULTS / "laws_nmt.csv", index=False)
        compares.append(cmp)
        print(summary.to_string(index=False))
    if "datablations" in args.only:
        table, cmp = datablations_benchmark(settings, args.seed)
        table.to_csv(RESULTS / "laws_datablations.csv", index=False)
        compares.append(cmp)
        print(table.to_string(index=False))
    if "chinchilla" in args.only:
        summary, cmp = chinchilla_benchmark(settings, args.seed)
        summary.to_csv(RESULTS / "laws_chinchilla.csv", index=False)
        compares.append(cmp)
        print(summary.to_string(index=False))
    if compares:
        table = pd.concat(compares, ignore_index=True)
        name = "laws_compare.csv" if set(args.only) >= {"olmo", "nmt", "datablations", "chinchilla"} \
            else f"laws_compare_{'_'.join(a for a in args.only if a != 'timing')}.csv"
        table.to_csv(RESULTS / name, index=False)
        print(table.round(4).to_string(index=False))
    if "timing" in args.only:
        # chinchilla and compute as the reference at the same machine load.
        laws = ["chinchilla", "compute", "kaplan", "kaplan_n", "broken_power", "data_constrained",
                "overtrained"]
        table = timing(laws, 1 if args.quick else args.repeats)
        table.to_csv(RESULTS / "laws_timing.csv", index=False)
        print(table.groupby("law")[["cold_s", "warm_s", "load_avg_1min"]].median().round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
