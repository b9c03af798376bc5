"""From loss to accuracy on the OLMo ladder: forecast the 3B runs' task accuracy from the ≤ 1B runs.

Data: Bhagia et al. (2024), "Establishing Task Scaling Laws via Compute-Efficient Model
Ladders" (AI2; allenai/OLMo-ladder, Apache-2.0): final checkpoints of the 190M–3B ladder
(shared/data/olmo_ladder_bhagia2024.csv; see SOURCES.md there). N is the repo's
non-embedding parameter count, D the tokens seen; the task loss is the bits per byte of the
correct answer (``<task>_bpb``), the metric the 5-shot ranked-classification accuracy
(``<task>_acc``).

Protocol: for each task, fit on every run of 190M, 370M, 760M and 1B (24 runs: 0.5–10 × 20
tokens/param and the reruns), forecast the six 3B runs at their own (N, D). Methods:

- ``two_stage``: ``ScalingModel("chinchilla", link="sigmoid", chance=c)``, law then link,
  the law's predictive task loss pushed through the link;
- ``joint``: the same model as one joint posterior (``link_method="joint"``);
- ``point``: a two-step point fit of the same forms, written here with scipy: step 1 the
  package's Huber (δ = 1e-3) point fit of the Chinchilla law to the task loss
  (:func:`bayescale.pointfit.point_fit`, small starting grid), step 2 least squares of the
  sigmoid with chance fixed and the ceiling in (chance, 1] (``scipy.optimize.least_squares``).

Scores per task (over the six 3B runs): mean absolute and relative error of the median
accuracy, coverage of the central 50% and 90% bands (``kind="observed"``: a run's measured
accuracy), mean 90% width, and whether the fit warned that the transition is not identified.

Run:  .venv/bin/python benchmarks/bench_downstream.py          (about 10 minutes on 2 busy cores)
      .venv/bin/python benchmarks/bench_downstream.py --quick  (two tasks, tiny settings)
Writes benchmarks/results/downstream_tasks.csv (per task and method),
downstream_runs.csv (per 3B run) and downstream_summary.csv (pooled over tasks).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

import bayescale as bs
from bayescale.downstream import sigmoid_link
from bayescale.pointfit import point_fit

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
LADDER = ROOT.parent.parent / "shared" / "data" / "olmo_ladder_bhagia2024.csv"
# Chance accuracy of each task's format (answer options); BoolQ and Winogrande are binary.
CHANCE = {"mmlu": 0.25, "hellaswag": 0.25, "arc_easy": 0.25, "arc_challenge": 0.25,
          "piqa": 0.5, "csqa": 0.2, "socialiqa": 1 / 3, "openbookqa": 0.25,
          "winogrande": 0.5, "boolq": 0.5}


def point_two_step(train: pd.DataFrame, test: pd.DataFrame, task: str, chance: float) -> np.ndarray:
    """Step 1 Huber fit of the law to the task loss, step 2 least-squares sigmoid."""
    runs = bs.load_runs(train, loss=f"{task}_bpb")
    step1 = point_fit(runs, "chinchilla", grid="small")
    loss_test = step1.predict(params=test["params"].to_numpy(), tokens=test["tokens"].to_numpy())
    x = train[f"{task}_bpb"].to_numpy()
    y = train[f"{task}_acc"].to_numpy()

    def residual(p):
        ceiling = chance + (1 - chance) / (1 + np.exp(-p[0]))
        return sigmoid_link(x, chance, ceiling, np.exp(p[1]), p[2]) - y

    best = None
    for k0 in (1.0, 5.0, 20.0):
        for l0 in np.quantile(x, [0.0, 0.5, 1.0]) + [-0.2, 0.0, 0.2]:
            result = least_squares(residual, [1.0, np.log(k0), l0])
            if best is None or result.cost < best.cost:
                best = result
    p = best.x
    ceiling = chance + (1 - chance) / (1 + np.exp(-p[0]))
    return sigmoid_link(np.asarray(loss_test), chance, ceiling, np.exp(p[1]), p[2])


def bayes_forecast(train, test, task, chance, method, settings, seed):
    runs = bs.load_runs(train, loss="c4_loss", metric=f"{task}_acc", task_loss=f"{task}_bpb")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = bs.ScalingModel("chinchilla", link="sigmoid", chance=chance,
                              link_method=method).fit(runs, random_seed=seed, **settings)
        n, d = test["params"].to_numpy(), test["tokens"].to_numpy()
        f50 = fit.forecast_metric(params=n, tokens=d, prob=0.5)
        f90 = fit.forecast_metric(params=n, tokens=d, prob=0.9)
    seconds = time.perf_counter() - start
    flat = any(issubclass(w.category, bs.DesignWarning) and "not identified" in str(w.message)
               for w in caught)
    unconverged = any(issubclass(w.category, bs.ConvergenceWarning) for w in caught)
    return f50, f90, flat, unconverged, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two tasks, tiny settings")
    parser.add_argument("--tasks", nargs="+", default=list(CHANCE))
    args = parser.parse_args()
    settings = ({"draws": 200, "tune": 200, "chains": 2} if args.quick
                else {"draws": 1000, "tune": 1000, "chains": 4})
    tasks = args.tasks[:2] if args.quick else args.tasks
    ladder = pd.read_csv(LADDER)
    train = ladder[ladder["size_label"] != "3B"].reset_index(drop=True)
    test = ladder[ladder["size_label"] == "3B"].reset_index(drop=True)
    run_rows, task_rows = [], []
    for task in tasks:
        chance = CHANCE[task]
        actual = test[f"{task}_acc"].to_numpy()
        point = point_two_step(train, test, task, chance)
        for i, run in enumerate(test["run"]):
            run_rows.append({"task": task, "method": "point", "run": run, "actual": actual[i],
                             "median": point[i]})
        err = np.abs(point - actual)
        task_rows.append({"task": task, "method": "point", "abs_err": err.mean(),
                          "rel_err": (err / actual).mean(), "cov50": np.nan, "cov90": np.nan,
                          "width90": np.nan, "flat_warning": False, "unconverged": False,
                          "seconds": np.nan})
        for method in ("two_stage", "joint"):
            f50, f90, flat, unconverged, seconds = bayes_forecast(train, test, task, chance,
                                                                  method, settings, seed=0)
            median = f90["metric_median"].to_numpy()
            in50 = (f50["metric_lower"] <= actual) & (actual <= f50["metric_upper"])
            in90 = (f90["metric_lower"] <= actual) & (actual <= f90["metric_upper"])
            for i, run in enumerate(test["run"]):
                run_rows.append({"task": task, "method": method, "run": run,
                                 "actual": actual[i], "median": median[i],
                                 "lower50": f50["metric_lower"][i],
                                 "upper50": f50["metric_upper"][i],
                                 "lower90": f90["metric_lower"][i],
                                 "upper90": f90["metric_upper"][i]})
            err = np.abs(median - actual)
            task_rows.append({"task": task, "method": method, "abs_err": err.mean(),
                              "rel_err": (err / actual).mean(), "cov50": in50.mean(),
                              "cov90": in90.mean(),
                              "width90": (f90["metric_upper"] - f90["metric_lower"]).mean(),
                              "flat_warning": flat, "unconverged": unconverged,
                              "seconds": seconds})
            print(f"{task:14s} {method:9s} abs {err.mean():.4f} cov50 {in50.mean():.2f} "
                  f"cov90 {in90.mean():.2f} flat={flat} {seconds:.1f} s", flush=True)
    runs_table = pd.DataFrame(run_rows)
    tasks_table = pd.DataFrame(task_rows)
    summary = tasks_table.groupby("method")[["abs_err", "rel_err", "cov50", "cov90",
                                             "width90", "seconds"]].mean()
    # Calibration: how far the coverage is from nominal, pooled over every 3B run and task.
    pooled = runs_table.dropna(subset=["lower50"]).assign(
        in50=lambda t: (t.lower50 <= t.actual) & (t.actual <= t.upper50),
        in90=lambda t: (t.lower90 <= t.actual) & (t.actual <= t.upper90))
    cov = pooled.groupby("method")[["in50", "in90"]].mean()
    summary["pooled_cov50"] = cov["in50"]
    summary["pooled_cov90"] = cov["in90"]
    summary["calibration_gap"] = (cov["in50"] - 0.5).abs() + (cov["in90"] - 0.9).abs()
    wide = tasks_table.pivot(index="task", columns="method",
                             values=["abs_err", "rel_err", "cov50", "cov90", "flat_warning"])
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):
        print(tasks_table.to_string(index=False))
        print()
        print(summary)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        tasks_table.to_csv(RESULTS / "downstream_tasks.csv", index=False)
        runs_table.to_csv(RESULTS / "downstream_runs.csv", index=False)
        summary.to_csv(RESULTS / "downstream_summary.csv")
    del wide


if __name__ == "__main__":
    main()
