"""prob_below's Monte-Carlo error with mcse="ess" on 10,000 budgets: vectorised ESS vs ArviZ's loop.

``mcse="ess"`` divides the sd of the per-draw probabilities by sqrt(ESS), with ArviZ's ESS of
the mean. ArviZ computes it one point at a time in Python (``az.ess`` on a (points, chain,
draw) array loops over the points); :mod:`bayescale._ess` is the same estimator compiled
(numba, lags only as far as Geyer's sequence goes) and :func:`bayescale.risk.ess_mean_rows`
the same in vectorised numpy (both tested equal to ArviZ's to 1e-10). This script times
``fit.prob_below(target, flops=10,000 budgets)`` with each, and with ``mcse="iid"`` (no ESS)
for reference, on a posterior of 4 chains × 1000 draws (the default fit size) built from the
real fit's parameters (no sampling needed), and checks that both ESS routes give the same
numbers; then once more with the discrepancy δ a default fit carries (the law evaluated again
at the edge of the fitted range for every budget past it). Medians of ``--repeat`` runs; the 1-minute load average is recorded with every row
(the machine is shared). Writes benchmarks/results/mcse_ess.csv.

Usage: python benchmarks/bench_mcse.py [--repeat 5] [--points 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bayescale as bs  # noqa: E402
from bayescale import risk  # noqa: E402
from conftest import EPOCH_TRUTH, synthetic_posterior_fit  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mcse_ess.csv"


def arviz_per_point_ess(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The previous route: ArviZ's ESS of the mean on the stacked (points, chain, draw) cube."""
    import arviz as az

    cube = values.reshape(values.shape[0], *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(az.ess(cube, method="mean", chain_axis=1, draw_axis=2)).reshape(-1)


def timed(call, repeat: int) -> tuple[float, float, object]:
    times, loads, result = [], [], None
    for _ in range(repeat):
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), statistics.mean(loads), result


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--points", type=int, default=10_000)
    args = parser.parse_args(argv)
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    fit = synthetic_posterior_fit(runs, paper=EPOCH_TRUTH, spread=0.05, chains=4, draws=1000)
    budgets = np.geomspace(1e20, 1e25, args.points)
    target = 2.05
    warnings.simplefilter("ignore")
    fit.prob_below(target, flops=budgets[:100])       # numba compiled, split cached
    rows = []
    fast_t, fast_load, fast = timed(lambda: fit.prob_below(target, flops=budgets), args.repeat)
    iid_t, iid_load, _ = timed(lambda: fit.prob_below(target, flops=budgets, mcse="iid"),
                               args.repeat)
    # A default fit's predictive also carries the discrepancy δ past the fitted range (the law
    # evaluated again at the edge): the corpus prior's median τ stands in for a learned one.
    from bayescale.discrepancy import default_discrepancy

    with_delta = fit.with_discrepancy(default_discrepancy(runs))
    with_delta.prob_below(target, flops=budgets[:100])
    delta_t, delta_load, _ = timed(lambda: with_delta.prob_below(target, flops=budgets),
                                   args.repeat)
    original = risk._ess
    try:
        risk._ess = risk.ess_mean_rows
        numpy_t, numpy_load, _ = timed(lambda: fit.prob_below(target, flops=budgets),
                                       max(1, min(args.repeat, 3)))
        risk._ess = arviz_per_point_ess
        slow_t, slow_load, slow = timed(lambda: fit.prob_below(target, flops=budgets),
                                        max(1, min(args.repeat, 3)))
    finally:
        risk._ess = original
    agree = float(np.max(np.abs(fast["mcse"].to_numpy() - slow["mcse"].to_numpy())))
    for route, seconds, load in (
            ("mcse='ess', compiled ESS (bayescale._ess, the default)", fast_t, fast_load),
            ("mcse='ess', numpy-vectorised ESS (bayescale.risk.ess_mean_rows)", numpy_t,
             numpy_load),
            ("mcse='ess', ArviZ's ESS per point (before)", slow_t, slow_load),
            ("mcse='iid' (no ESS)", iid_t, iid_load),
            ("mcse='ess' with the discrepancy δ (as a default fit)", delta_t, delta_load)):
        # The agreement with ArviZ was checked on the fit without δ only.
        rows.append({"route": route, "points": args.points, "draws": fit.n_draws,
                     "seconds": seconds, "load_1min": load,
                     "max_abs_mcse_difference_vs_arviz": np.nan if "δ" in route else agree})
    table = pd.DataFrame(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False, float_format="%.4g")
    with pd.option_context("display.width", 160, "display.max_colwidth", 70):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return table


if __name__ == "__main__":
    main()
