"""Wall time of the risk and allocation analysis on a saved fit (numpy on draws, no sampling).

Usage: python benchmarks/bench_risk.py fit.nc  (a fit with, e.g., 4 chains × 1000 draws)
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

import bayescale as bs


def timed(label: str, func) -> None:
    start = time.perf_counter()
    func()
    print(f"{label:<55}{time.perf_counter() - start:8.2f} s")


def main(path: str) -> None:
    fit = bs.load_fit(path)
    budgets = np.geomspace(1e20, 1e25, 10_000)
    print(f"{fit.n_draws} draws, {len(budgets)} budgets")
    warnings.simplefilter("ignore")
    timed("prob_below, 10k budgets, mcse='none'", lambda: fit.prob_below(2.05, flops=budgets, mcse="none"))
    timed("prob_below, 10k budgets, mcse='iid'", lambda: fit.prob_below(2.05, flops=budgets, mcse="iid"))
    timed("prob_below, 10k budgets, mcse='ess' (ArviZ)", lambda: fit.prob_below(2.05, flops=budgets))
    timed("prob_below, 10k budgets, mode='oracle', mcse='none'",
          lambda: fit.prob_below(2.05, flops=budgets, mode="oracle", mcse="none"))
    timed("prob_below, 3 budgets", lambda: fit.prob_below(2.05, flops=[1e22, 1e23, 3e23]))
    timed("risk_table, 5 targets x 6 budgets",
          lambda: fit.risk_table(np.linspace(1.95, 2.15, 5), np.geomspace(1e21, 1e24, 6)))
    timed("compute_to_reach, 1 target", lambda: fit.compute_to_reach(2.05, 0.8))
    timed("compute_to_reach, 4 targets x 3 probs",
          lambda: fit.compute_to_reach(np.repeat([1.95, 2.0, 2.05, 2.1], 3), [0.5, 0.8, 0.9] * 4))
    timed("compute_distribution, 4 targets", lambda: fit.compute_distribution([1.95, 2.0, 2.05, 2.1]))
    timed("optimal_allocation, 10k budgets", lambda: fit.optimal_allocation(budgets))
    timed("inference_optimal_allocation, 4 serving volumes",
          lambda: fit.inference_optimal_allocation(2.0, [0, 1e11, 1e12, 1e13]))


if __name__ == "__main__":
    main(sys.argv[1])
