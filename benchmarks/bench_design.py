"""What degenerate run designs do to the bands: the numbers quoted in the README.

Fits the Chinchilla law (2 chains x 300 draws, as in tests/test_design.py) to synthetic runs
from Epoch's refit with 2% noise: a full grid design, then one model size, one tokens/param
ratio, two model sizes, loss rising with compute, and one run 60% too high under each
likelihood. Prints a table and writes benchmarks/results/design.csv.

Usage: python benchmarks/bench_design.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs

RESULTS = Path(__file__).resolve().parent / "results" / "design.csv"
TRUTH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
SAMPLER = {"draws": 300, "tune": 300, "chains": 2, "random_seed": 5}


def loss_at(params, tokens, noise=0.02, seed=2):
    params, tokens = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
    rng = np.random.default_rng(seed)
    mean = TRUTH["E"] + TRUTH["A"] / params ** TRUTH["alpha"] + TRUTH["B"] / tokens ** TRUTH["beta"]
    return pd.DataFrame({"params": params, "tokens": tokens,
                         "loss": mean * np.exp(noise * rng.standard_normal(params.size))})


def full_grid():
    sizes, ratios = np.meshgrid(np.geomspace(7e7, 1.6e10, 10), np.geomspace(2, 120, 8))
    return loss_at(sizes.ravel(), (sizes * ratios).ravel(), seed=0)


def designs() -> dict[str, tuple[pd.DataFrame, str]]:
    params = np.geomspace(7e7, 1.6e10, 24)
    two = np.repeat([1e8, 1e9], 8)
    rising_params = np.geomspace(1e8, 1e10, 12)
    rising = pd.DataFrame({"params": rising_params,
                           "tokens": 20 * rising_params * np.geomspace(1, 8, 12)[::-1],
                           "loss": np.linspace(2.5, 3.5, 12)
                           * np.exp(0.02 * np.random.default_rng(3).standard_normal(12))})
    outlier = full_grid()
    outlier.loc[17, "loss"] *= 1.6
    return {
        "full grid (10 sizes x 8 ratios)": (full_grid(), "student_t"),
        "one model size": (loss_at(1e9, np.geomspace(2e9, 1e11, 12)), "student_t"),
        "tokens = 20 x params": (loss_at(params, 20 * params), "student_t"),
        "two model sizes": (loss_at(two, np.tile(np.geomspace(2e9, 1e11, 8), 2) * np.repeat([1, 10], 8)),
                            "student_t"),
        "loss rising with compute": (rising, "student_t"),
        "one run 60% high, Student-t": (outlier, "student_t"),
        "one run 60% high, Normal": (outlier, "normal"),
    }


def width(table: pd.DataFrame) -> float:
    return float((table["loss_upper"] - table["loss_lower"]).iloc[0])


def measure(name: str, frame: pd.DataFrame, likelihood: str) -> dict:
    runs = bs.load_runs(frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = bs.ScalingModel("chinchilla", likelihood=likelihood).fit(runs, **SAMPLER)
        summary = fit.summary()
        split = fit.optimal_allocation(flops=[1e22]).iloc[0]
        row = {
            "design": name,
            "runs": len(runs),
            "design_warnings": sum(issubclass(w.category, bs.DesignWarning) for w in caught),
            # Mean-loss band (90%) at 1.2e22 FLOPs, on Chinchilla's 20 tokens/param and 100x off it.
            "band_at_N1e10_D2e11": width(fit.forecast(params=1e10, tokens=2e11, kind="mean")),
            "band_at_N1e9_D2e12": width(fit.forecast(params=1e9, tokens=2e12, kind="mean")),
            "band_at_N1e11_D2e10": width(fit.forecast(params=1e11, tokens=2e10, kind="mean")),
            "band_at_N1e9_D2e10": width(fit.forecast(params=1e9, tokens=2e10, kind="mean")),
            "observed_band_at_1e22": width(fit.forecast(flops=[1e22])),
            "alpha_hdi_lower": summary.loc["alpha", "hdi_lower"],
            "alpha_hdi_upper": summary.loc["alpha", "hdi_upper"],
            "sigma_median": summary.loc["sigma", "median"],
            "tokens_per_param_lower_1e22": split["tokens_per_param_lower"],
            "tokens_per_param_upper_1e22": split["tokens_per_param_upper"],
        }
    return row


def main() -> None:
    rows = [measure(name, frame, likelihood) for name, (frame, likelihood) in designs().items()]
    table = pd.DataFrame(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
