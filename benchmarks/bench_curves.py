"""Learning curves vs final points: forecast the final loss of a larger run.

Data (../shared/data; see SOURCES.md there):
- OLMo model ladder (Bhagia et al. 2024), every checkpoint of 190M-1B runs at 0.5-10xC
  (reruns included): forecast the five 3B runs' final C4 loss.
- Hitchhiker's guide trajectories (Choshen et al. 2024): for each family with at least three
  model sizes below its largest (OPT, GPT-3 digitised validation loss), forecast the largest
  model's final loss from the smaller models' curves. OLMo, K2 and RedPajama have fewer
  than three sizes and are listed as skipped.

Variants, all Chinchilla's law:
- ``curves``: CurveModel (run offsets, cosine schedule term, AR(1) residuals);
- ``curves_no_schedule``: the same with schedule="none";
- ``checkpoints_independent``: ScalingModel on the same checkpoints as if each were a run;
- ``final_points``: ScalingModel on each run's last checkpoint only.

Scores per case and variant: RMSLE of the posterior median, coverage of the central 50% and
90% observed-loss intervals, wall-clock seconds. Writes benchmarks/results/curves_forecast.csv
(per run) and curves_summary.csv (width90: mean width of the 90% band relative to the median).

    .venv/bin/python benchmarks/bench_curves.py [--draws 500] [--tune 500] [--chains 2]
    .venv/bin/python benchmarks/bench_curves.py --in-progress   # 3B runs seen to 30%: forecast_run
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
from bayescale.curves import curve_layout

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATA = ROOT.parent.parent / "shared" / "data"
VARIANTS = ("curves", "curves_no_schedule", "checkpoints_independent", "final_points")


def ladder_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.read_csv(DATA / "olmo_ladder_bhagia2024_curves.csv")
    train = df[df.size_label != "3B"]
    test = df[(df.size_label == "3B") & ~df.is_rerun]
    frame = train.rename(columns={"c4_loss": "loss"})[["run", "params", "tokens", "loss"]]
    final = test.sort_values("tokens").groupby("run").last().reset_index()
    return frame, final.rename(columns={"c4_loss": "loss"})[["run", "params", "tokens", "loss"]]


def hitchhiker_cases() -> tuple[dict, list[str]]:
    df = pd.read_csv(DATA / "hitchhiker_trajectories.csv")
    cases, skipped = {}, []
    for family, part in df.groupby("model_family"):
        metrics = part.loss_metric.value_counts()
        valid = [m for m in metrics.index if "validation" in m]
        metric = valid[0] if valid else metrics.index[0]
        part = part[part.loss_metric == metric]
        # digitised curves repeat token counts: one checkpoint per (model, tokens), mean loss
        part = (part.groupby(["model_name", "params", "tokens"], as_index=False)["loss"].mean()
                .sort_values(["model_name", "tokens"]))
        sizes = np.sort(part.params.unique())
        if sizes.size < 4:
            skipped.append(f"{family}: {sizes.size} model size(s), need 3 below the largest")
            continue
        largest = part.params == sizes[-1]
        frame = part[~largest].rename(columns={"model_name": "run"})[["run", "params", "tokens", "loss"]]
        test = part[largest].groupby("model_name").last().reset_index()
        test = test.rename(columns={"model_name": "run"})[["run", "params", "tokens", "loss"]]
        cases[f"hitchhiker_{family}"] = (frame, test)
    return cases, skipped


def score(case: str, variant: str, test: pd.DataFrame, lo50, hi50, lo90, hi90, median,
          seconds: float, n_points: int) -> list[dict]:
    rows = []
    for i, row in enumerate(test.itertuples()):
        rows.append({"case": case, "variant": variant, "run": row.run, "params": row.params,
                     "tokens": row.tokens, "actual": row.loss, "median": median[i],
                     "lower50": lo50[i], "upper50": hi50[i], "lower90": lo90[i], "upper90": hi90[i],
                     "log_error": np.log(median[i]) - np.log(row.loss),
                     "in50": float(lo50[i] <= row.loss <= hi50[i]) if np.isfinite(median[i]) else np.nan,
                     "in90": float(lo90[i] <= row.loss <= hi90[i]) if np.isfinite(median[i]) else np.nan,
                     "seconds": seconds, "points": n_points})
    return rows


def run_variant(case, variant, frame, test, settings) -> list[dict]:
    runs = bs.load_runs(frame, params="params", tokens="tokens", flops=None, loss="loss", run="run")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant.startswith("curves"):
            schedule = "none" if variant == "curves_no_schedule" else "cosine"
            fit = bs.CurveModel("chinchilla", schedule=schedule).fit(runs, **settings)
            t50 = fit.forecast(test.params.values, test.tokens.values, prob=0.5)
            t90 = fit.forecast(test.params.values, test.tokens.values, prob=0.9)
            n_points = len(fit.runs)
        else:
            if variant == "final_points":
                used = runs.final_points()
            else:
                used = curve_layout(runs).runs
            used = bs.Runs(frame=used.frame, source=used.source)   # plain runs
            try:
                fit = bs.ScalingModel("chinchilla").fit(used, check=False, **settings)
            except bs.RunDataError as exc:   # e.g. 5 final points for a 5-parameter law
                print(f"{case:24s} {variant:24s} cannot be fitted: {exc}", flush=True)
                nan = np.full(len(test), np.nan)
                return score(case, variant, test, nan, nan, nan, nan, nan, np.nan, len(used))
            t50 = fit.forecast(params=test.params.values, tokens=test.tokens.values, prob=0.5)
            t90 = fit.forecast(params=test.params.values, tokens=test.tokens.values, prob=0.9)
            n_points = len(used)
    seconds = time.perf_counter() - start
    return score(case, variant, test, t50.loss_lower.values, t50.loss_upper.values,
                 t90.loss_lower.values, t90.loss_upper.values, t90.loss_median.values,
                 seconds, n_points)


def summarise(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per case and variant: RMSLE, coverage, mean relative width of the 90% band."""
    per_run = per_run.assign(width90=(per_run.upper90 - per_run.lower90) / per_run["median"])
    return (per_run.groupby(["case", "variant"], sort=False)
            .agg(runs=("run", "size"), points=("points", "first"),
                 rmsle=("log_error", lambda e: float(np.sqrt(np.mean(e ** 2)))),
                 coverage50=("in50", "mean"), coverage90=("in90", "mean"),
                 width90=("width90", "mean"), seconds=("seconds", "first")).reset_index())


def in_progress(settings: dict, out: Path, share: float = 0.3, schedule: str = "cosine",
                runs_to_check: tuple[str, ...] = ("3B-0.5xC", "3B-1xC", "3B-2xC")) -> pd.DataFrame:
    """Each 3B ladder run cut at ``share`` of its tokens, fitted with every <= 1B curve:
    its final loss by forecast_run (own offset + AR(1)) vs by forecast (a new run)."""
    df = pd.read_csv(DATA / "olmo_ladder_bhagia2024_curves.csv").rename(columns={"c4_loss": "loss"})
    rows = []
    for run, part in df[df.run.isin(runs_to_check)].groupby("run"):
        total = float(part.tokens.max())
        actual = float(part.sort_values("tokens").loss.iloc[-1])
        frame = pd.concat([df[df.size_label != "3B"], part[part.tokens <= share * total]])
        runs = bs.load_runs(frame[["run", "params", "tokens", "loss"]], flops=None, run="run")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bs.CurveModel("chinchilla", schedule=schedule).fit(
                runs, planned_tokens={run: total}, **settings)
        seconds = time.perf_counter() - start
        for method, table in (("forecast_run", fit.forecast_run(run, prob=0.9)),
                              ("forecast_new_run", fit.forecast(part.params.iloc[0], total, prob=0.9))):
            row = table.iloc[0]
            rows.append({"run": run, "seen_share": share, "schedule": schedule,
                         "method": method, "actual": actual,
                         "median": row.loss_median, "lower90": row.loss_lower,
                         "upper90": row.loss_upper,
                         "log_error": np.log(row.loss_median) - np.log(actual),
                         "in90": float(row.loss_lower <= actual <= row.loss_upper),
                         "seconds": seconds})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "curves_in_progress.csv", index=False)
    print(table.groupby("method").agg(rmsle=("log_error", lambda e: float(np.sqrt(np.mean(e ** 2)))),
                                      coverage90=("in90", "mean")).to_string())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--in-progress", action="store_true",
                        help="only the runs-in-progress check (writes curves_in_progress.csv)")
    args = parser.parse_args()
    settings = {"draws": args.draws, "tune": args.tune, "chains": args.chains,
                "random_seed": args.seed}
    if args.in_progress:
        in_progress(settings, Path(args.out))
        return
    cases = {"olmo_ladder_3B": ladder_case()}
    hitchhiker, skipped = hitchhiker_cases()
    cases.update(hitchhiker)
    rows = []
    for case, (frame, test) in cases.items():
        for variant in VARIANTS:
            rows += run_variant(case, variant, frame, test, settings)
            last = pd.DataFrame(rows[-len(test):])
            if last["median"].isna().all():
                continue
            print(f"{case:24s} {variant:24s} RMSLE {np.sqrt(np.mean(last.log_error ** 2)):.4f} "
                  f"cov50 {last.in50.mean():.2f} cov90 {last.in90.mean():.2f} "
                  f"{last.seconds.iloc[0]:6.1f} s", flush=True)
    per_run = pd.DataFrame(rows)
    summary = summarise(per_run)
    load = os.getloadavg()[0]
    summary["load_average"] = round(load, 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(out / "curves_forecast.csv", index=False)
    summary.to_csv(out / "curves_summary.csv", index=False)
    print()
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for line in skipped:
        print("skipped:", line)
    print(f"(draws={args.draws}, tune={args.tune}, chains={args.chains}; load average {load:.1f})")


if __name__ == "__main__":
    main()
