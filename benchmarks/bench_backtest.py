"""Backtests on real data: bayescale (Student-t, Normal) against the Huber point fit + bootstrap.

Two protocols, every method on exactly the same splits:

1. Chinchilla (Hoffmann et al. 2022, digitised by Epoch AI; the 240 runs Epoch kept): fit the
   Chinchilla law on the runs at or below a compute cutoff (1e20, 3e20, 1e21 FLOPs) and
   forecast every run above it at its own (N, D).
2. Learning curves of Alabdulmohsin et al. (2022), "Revisiting Neural Scaling Laws": fit the
   compute law L = E + A·x^−α (x = examples seen) on split == "fit", forecast split == "test"
   (the benchmark authors' split). All LM and NMT curves plus a fixed sample of IC and BB.

Methods:

- ``bayescale/student_t``, ``bayescale/normal``: :func:`bayescale.backtest`; bands are
  ``kind="observed"`` (law uncertainty plus run-to-run noise).
- ``point+boot``: Huber (δ = 1e-3) fit from the published starting grid, with a bootstrap of
  the runs (200 resamples) — the bands the published recipe gives (parameter uncertainty only).
- ``point+boot+resid``: the same plus a training residual (in log loss) resampled onto each
  bootstrap draw: a fairer baseline for forecasting one run's measured loss.

Scores (see bayescale.backtest): RMSLE, bias (mean log median/actual), CRPS on log loss,
coverage and mean width (log upper/lower) of the 50/80/90/95% central bands, time (s).

Run:  .venv/bin/python benchmarks/bench_backtest.py          (about 10 minutes on 2 cores)
      .venv/bin/python benchmarks/bench_backtest.py --quick  (smoke test, tiny settings)
Writes benchmarks/results/backtest_chinchilla.csv, backtest_curves.csv, backtest_summary.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs
from bayescale.backtest import DEFAULT_LEVELS, level_label, score_draws, split_runs

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CURVES_CSV = ROOT.parent.parent / "shared" / "data" / "revisiting_alabdulmohsin2022.csv"
CUTOFFS = (1e20, 3e20, 1e21)
METHODS = ("bayescale/student_t", "bayescale/normal", "point+boot", "point+boot+resid")
N_RESAMPLES = 200


def bayes_rows(runs, law, mask, settings, seed):
    rows = []
    for likelihood in ("student_t", "normal"):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", bs.ConvergenceWarning)
            warnings.simplefilter("ignore", bs.ExtrapolationWarning)
            result = bs.backtest(runs, law, holdout=mask, likelihood=likelihood,
                                 random_seed=seed, **settings)
        seconds = time.perf_counter() - start
        diagnostics = result.fit.diagnostics()
        row = {"method": f"bayescale/{likelihood}", **result.summary.drop("seconds").to_dict(),
               "seconds": seconds, "max_r_hat": float(diagnostics.table["r_hat"].max()),
               "divergences": diagnostics.divergences,
               "convergence_warnings": sum(issubclass(w.category, bs.ConvergenceWarning)
                                           for w in caught)}
        rows.append(row)
    return rows


def point_rows(runs, law, mask, seed, grid):
    from bayescale.pointfit import bootstrap_point_fit, point_fit

    train, test = runs.subset(~mask), runs.subset(mask)
    start = time.perf_counter()
    full = point_fit(train, law=law, grid=grid)
    boot = bootstrap_point_fit(train, law=law, n_resamples=N_RESAMPLES, random_seed=seed, full=full)
    seconds = time.perf_counter() - start
    inputs = ({"params": test.column("params"), "tokens": test.column("tokens")}
              if law == "chinchilla" else {"flops": test.column("flops")})
    draws = boot.predict_draws(**inputs)
    residuals = np.log(train.column("loss")) - np.log(full.predict())
    rng = np.random.default_rng(seed)
    noisy = draws * np.exp(rng.choice(residuals, size=draws.shape))
    rows = []
    for method, d in (("point+boot", draws), ("point+boot+resid", noisy)):
        _, score = score_draws(test.column("loss"), d, prob=DEFAULT_LEVELS)
        rows.append({"method": method, "n_train": float(len(train)), **score.to_dict(),
                     "seconds": seconds})
    return rows


def chinchilla_benchmark(settings, seed, grid):
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    rows = []
    for cutoff in CUTOFFS:
        mask = split_runs(runs, cutoff_flops=cutoff)
        print(f"  chinchilla cutoff {cutoff:.0e}: fit {int((~mask).sum())}, forecast "
              f"{int(mask.sum())}", file=sys.stderr, flush=True)
        for row in bayes_rows(runs, "chinchilla", mask, settings, seed) + \
                point_rows(runs, "chinchilla", mask, seed, grid):
            rows.append({"cutoff_flops": cutoff, **row})
    return pd.DataFrame(rows)


def select_curves(frame: pd.DataFrame, n_other: int, seed: int) -> list[tuple[str, str]]:
    keys = frame[["domain", "model_family", "task"]].drop_duplicates()
    chosen = keys[keys["domain"].isin(["LM", "NMT"])]
    others = keys[~keys["domain"].isin(["LM", "NMT"])]
    if n_other:
        # A fixed sample of image-classification and BIG-bench curves, in proportion.
        chosen = pd.concat([chosen, others.sample(n=n_other, random_state=seed)])
    return list(zip(chosen["model_family"], chosen["task"]))


def curves_benchmark(settings, seed, grid, n_other):
    frame = pd.read_csv(CURVES_CSV)
    rows = []
    for family, task in select_curves(frame, n_other, seed):
        curve = frame[(frame["model_family"] == family) & (frame["task"] == task)]
        curve = curve.sort_values("seen_examples").reset_index(drop=True)
        runs = bs.load_runs(curve, flops="seen_examples", params=None, tokens=None, loss="loss")
        mask = (curve["split"] == "test").to_numpy()
        domain = curve["domain"].iloc[0]
        print(f"  {family} {task}: fit {int((~mask).sum())}, forecast {int(mask.sum())}",
              file=sys.stderr, flush=True)
        for row in bayes_rows(runs, "compute", mask, settings, seed) + \
                point_rows(runs, "compute", mask, seed, grid):
            rows.append({"domain": domain, "curve": f"{family.removeprefix('revisiting_')} {task}",
                         **row})
    return pd.DataFrame(rows)


def pooled(sub: pd.DataFrame, cols: list[str], per_split: bool = False) -> pd.DataFrame:
    """Scores over all held-out runs of several splits, each held-out run counting once
    (or, with ``per_split``, each split counting once whatever its number of runs)."""
    out = {}
    for method, g in sub.groupby("method", sort=False):
        n = g["n_test"].to_numpy(dtype=float)
        w = np.ones_like(n) if per_split else n
        row = {"splits": len(g), "n_test": int(n.sum())}
        for c in cols:
            values = g[c].to_numpy(dtype=float)
            if c == "rmsle":
                row[c] = float(np.sqrt(np.sum(w * values**2) / w.sum()))
            elif c == "seconds":
                row[c] = float(values.sum())
            else:
                row[c] = float(np.sum(w * values) / w.sum())
        out[method] = row
    return pd.DataFrame(out).T.rename_axis("method").reset_index()


def summarise(chinchilla: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Scores per method over every held-out run of the Chinchilla cutoffs, and of the curves.

    Each held-out run counts once (RMSLE pooled as the root of the mean squared log error);
    "curves: per curve" instead weighs every curve equally (a few image-classification curves
    hold most of the held-out points). ``seconds`` is the total over the splits.
    """
    cols = (["rmsle", "bias", "crps"] + [f"coverage_{level_label(p)}" for p in DEFAULT_LEVELS]
            + [f"width_{level_label(p)}" for p in DEFAULT_LEVELS] + ["seconds"])
    parts = []
    if len(chinchilla):
        parts.append(pooled(chinchilla, cols).assign(data=f"chinchilla ({len(CUTOFFS)} cutoffs)"))
    if len(curves):
        parts.append(pooled(curves, cols).assign(data="curves: all runs"))
        parts.append(pooled(curves, cols, per_split=True).assign(data="curves: per curve"))
        for domain, sub in curves.groupby("domain"):
            parts.append(pooled(sub, cols).assign(data=f"curves: {domain}"))
    table = pd.concat(parts, ignore_index=True)
    return table[["data", "method", *[c for c in table.columns if c not in ("data", "method")]]]


def show(table: pd.DataFrame, title: str) -> None:
    print(f"\n{title}")
    shown = table.copy()
    keep = [c for c in shown.columns if not c.startswith("width_") or c == "width_90"]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(shown[keep].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _tau_for_unit_errors(errors, sd, distance):
    """τ ≥ 0 with mean(e² / (sd² + τ²·d²)) = 1 (0 when the bands are already wide enough)."""
    from scipy.optimize import brentq

    def excess(tau):
        return float(np.mean(errors**2 / (sd**2 + (tau * distance) ** 2))) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    return float(brentq(excess, 0.0, 10.0))


def recalibration_experiment(settings, seed):
    """Do bands widened with factors learned inside the training runs fix coverage?

    For each Chinchilla cutoff an inner backtest on the training runs alone (fit the lower
    runs, forecast the top share, the same share the outer split holds out) gives

    - ``stretch``: s = sqrt(mean z²), z the inner held-out log errors over their predictive
      SD; the outer draws are stretched about their median by s (in log loss);
    - ``distance``: τ with mean(e² / (sd² + τ²·d²)) = 1, d = ln(C / largest fitted C); each
      outer draw gets extra normal noise of SD τ·d — a discrepancy growing with extrapolation.

    No held-out run is used to choose s or τ.
    """
    from bayescale.forecast import loss_draws

    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    rng = np.random.default_rng(seed)
    rows = []
    for cutoff in CUTOFFS:
        mask = split_runs(runs, cutoff_flops=cutoff)
        train = runs.subset(~mask)
        frac = float(mask.mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inner = bs.backtest(train, "chinchilla", holdout_frac=frac, random_seed=seed, **settings)
            outer = bs.backtest(runs, "chinchilla", holdout=mask, random_seed=seed, **settings)
        inner_draws = np.log(loss_draws(inner.fit, inner.test.frame, random_seed=seed))
        inner_error = np.log(inner.test.column("loss")) - np.median(inner_draws, axis=0)
        inner_sd = inner_draws.std(axis=0)
        scale = float(np.sqrt(np.mean((inner_error / inner_sd) ** 2)))
        inner_distance = np.log(inner.test.column("flops") / inner.train.column("flops").max())
        tau = _tau_for_unit_errors(inner_error, inner_sd, inner_distance)
        log_draws = np.log(loss_draws(outer.fit, outer.test.frame, random_seed=seed))
        centre = np.median(log_draws, axis=0)
        distance = np.log(outer.test.column("flops") / outer.train.column("flops").max())
        variants = {"raw": log_draws,
                    "stretch": centre + scale * (log_draws - centre),
                    "distance": log_draws + tau * distance * rng.standard_normal(log_draws.shape)}
        for name, draws in variants.items():
            _, score = score_draws(outer.test.column("loss"), np.exp(draws), prob=DEFAULT_LEVELS)
            rows.append({"cutoff_flops": cutoff, "variant": name,
                         "inner_n_train": int(inner.summary["n_train"]),
                         "inner_n_test": int(inner.summary["n_test"]), "scale": scale, "tau": tau,
                         **score.to_dict()})
        print(f"  cutoff {cutoff:.0e}: stretch {scale:.2f}, tau {tau:.4f}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    cols = (["rmsle", "bias", "crps"] + [f"coverage_{level_label(p)}" for p in DEFAULT_LEVELS]
            + [f"width_{level_label(p)}" for p in DEFAULT_LEVELS])
    total = pooled(table.rename(columns={"variant": "method"}).assign(seconds=0.0), cols + ["seconds"])
    total = total.drop(columns="seconds").rename(columns={"method": "variant"}).assign(cutoff_flops="pooled")
    return pd.concat([table, total], ignore_index=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--other-curves", type=int, default=8,
                        help="IC/BB curves sampled besides all LM and NMT curves")
    parser.add_argument("--skip-chinchilla", action="store_true")
    parser.add_argument("--skip-curves", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--recalibration", action="store_true",
                        help="run only the band-recalibration experiment on Chinchilla")
    parser.add_argument("--summarise-only", action="store_true",
                        help="rebuild the summary from the per-split CSVs already in --out")
    args = parser.parse_args(argv)
    if args.recalibration:
        settings = {"draws": args.draws, "tune": args.tune, "chains": args.chains, "check": False}
        table = recalibration_experiment(settings, args.seed)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(args.out) / "backtest_recalibration.csv", index=False)
        show(table, "Chinchilla, Student-t bands stretched by a factor learned inside the training runs")
        return 0
    if args.summarise_only:
        out = Path(args.out)
        chinchilla = pd.read_csv(out / "backtest_chinchilla.csv")
        curves = pd.read_csv(out / "backtest_curves.csv")
        summary = summarise(chinchilla, curves)
        summary.to_csv(out / "backtest_summary.csv", index=False)
        show(summary, "Summary over all held-out runs (each run counts once)")
        return 0
    settings = {"draws": args.draws, "tune": args.tune, "chains": args.chains, "check": False}
    grid = "default"
    if args.quick:
        settings.update(draws=200, tune=200)
        grid, args.other_curves = "small", 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chinchilla = pd.DataFrame() if args.skip_chinchilla else chinchilla_benchmark(settings, args.seed, grid)
    curves = pd.DataFrame() if args.skip_curves else curves_benchmark(settings, args.seed, grid, args.other_curves)
    summary = summarise(chinchilla, curves)
    if len(chinchilla):
        chinchilla.to_csv(out / "backtest_chinchilla.csv", index=False)
        show(chinchilla.drop(columns=["max_r_hat", "divergences", "convergence_warnings"], errors="ignore"),
             "Chinchilla, fit at or below the cutoff, forecast every run above it")
    if len(curves):
        curves.to_csv(out / "backtest_curves.csv", index=False)
    summary.to_csv(out / "backtest_summary.csv", index=False)
    show(summary, "Summary over all held-out runs (each run counts once)")
    print(f"\nTotal {time.perf_counter() - start:.0f} s; settings {settings}, grid {grid!r}, "
          f"{N_RESAMPLES} bootstrap resamples. CSVs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
