"""Where a law's fit time goes: density cost per point, gradients per draw, sampler and CPU time.

For each law on the data ``bench_laws.py`` times it on (its default row and the extra rows
of ``EXTRA_DATA``), in one process with the kernels compiled first:

- ``ns_per_point_grad``: one evaluation of the generated log density and gradient
  (``bayescale._fastlogp``), in nanoseconds per run of the data, timed in a compiled loop
  of many calls (no Python overhead; CPU time, so independent of other processes);
- ``grads_per_draw``, ``tree_depth``: nutpie's mean leapfrog steps (gradient evaluations)
  and tree depth per post-warmup draw of a default fit (4 chains x 1000 draws, 1000 tuning);
- ``divergences``: of that fit;
- ``sampler_s``: nutpie's wall time; ``fit_s``: the whole ``fit()`` call (sampling plus
  building the fit: sample statistics, the learned discrepancy); ``fit_cpu_s``: CPU seconds
  of that call over all threads (``time.process_time``), which a loaded machine inflates far
  less than wall time; ``kernel_cpu_s``: the density's share of it, estimated as
  ns_per_point_grad x runs x grads_per_draw x (draws + tune) x chains (tuning draws counted
  at the post-warmup rate).

The fit timed is the second one on the data (a different seed), so compilation is excluded.
The 1-minute load average is printed with every row: wall times on a shared machine are
inflated by it, the ns and gradient counts are not.

Usage: python benchmarks/bench_laws_profile.py [--laws data_constrained broken_power]
Writes benchmarks/results/laws_profile.csv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import pandas as pd

import bayescale as bs
from bayescale import _fastlogp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_laws import EXTRA_DATA, SHARED_DATA, case_runs, default_label  # noqa: E402

RESULTS = HERE / "results" / "laws_profile.csv"
DRAWS = TUNE = 1000
CHAINS = 4


@numba.njit
def _repeat(kernel, u, grad, buf, times):
    total = 0.0
    for _ in range(times):
        total += kernel(u, grad, buf)
    return total


def ns_per_point(model: bs.ScalingModel, runs: bs.Runs) -> float:
    """CPU nanoseconds per run of one log density + gradient evaluation at the prior centre."""
    sampled = model.sampled_parameters()
    buf = _fastlogp.make_buffer(model.law, model.likelihood, model.priors, sampled,
                                model.data_values(runs))
    u = np.array([_fastlogp.unconstrain(_fastlogp.prior_centre(model.priors[name]),
                                        *_fastlogp._transform(model.priors[name]))
                  for name in sampled])
    grad = np.zeros(len(u))
    kernel = _fastlogp.kernel(model.law, model.likelihood).logp_and_grad
    _repeat(kernel, u, grad, buf, 10)
    times = max(200, int(2e7 / len(runs)))
    best = np.inf
    for _ in range(5):
        start = time.process_time()
        _repeat(kernel, u, grad, buf, times)
        best = min(best, time.process_time() - start)
    return 1e9 * best / times / len(runs)


def profile(name: str, data: str, label: str) -> dict:
    law = bs.get_law(name)
    runs = case_runs(law, data)
    model = bs.ScalingModel(law)
    ns = ns_per_point(model, runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(runs, random_seed=0, draws=50, tune=50)      # compile and warm everything
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        fit = model.fit(runs, random_seed=1, draws=DRAWS, tune=TUNE, chains=CHAINS)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = fit.sample_stats
    steps = float(stats["n_steps"].mean())
    return {"law": name, "data": label, "runs": len(runs), "ns_per_point_grad": round(ns, 1),
            "grads_per_draw": round(steps, 1), "tree_depth": round(float(stats["tree_depth"].mean()), 2),
            "divergences": int(stats["diverging"].sum()),
            "sampler_s": round(fit.settings["seconds"], 2), "fit_s": round(wall, 2),
            "fit_cpu_s": round(cpu, 2),
            "kernel_cpu_s": round(ns * 1e-9 * len(runs) * steps * (DRAWS + TUNE) * CHAINS, 2),
            "load_1min": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", nargs="*", default=bs.available_laws())
    args = parser.parse_args()
    cases = [(law, "default", default_label(law)) for law in args.laws]
    cases += [(law, data, label) for law, (label, data) in EXTRA_DATA.items()
              if law in args.laws and (data == "chinchilla" or SHARED_DATA.exists())]
    rows = []
    for law, data, label in sorted(cases, key=lambda case: case[0]):
        rows.append(profile(law, data, label))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if RESULTS.exists() and set(args.laws) != set(bs.available_laws()):
        kept = pd.read_csv(RESULTS)
        kept = kept[~kept.set_index(["law", "data"]).index.isin(table.set_index(["law", "data"]).index)]
        table = pd.concat([kept, table]).sort_values(["law", "data"], kind="stable")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
