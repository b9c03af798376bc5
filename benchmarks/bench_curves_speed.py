"""Where the time of a warm Chinchilla fit goes on many points.

For each size (dense synthetic designs: N and D spread continuously over two decades), in a
fresh subprocess so peak memory is per size:
- the cost of one log-density gradient of the generated numba kernel (median of repeats;
  load-independent enough to compare sizes: ns per point);
- a full warm fit (defaults: 4 chains x 1,000 draws + 1,000 tuning steps) for sizes up to
  ``--fit-max``: wall and CPU seconds, mean leapfrog steps per draw, peak RSS;
- above ``--fit-max`` an estimate: gradient cost x gradients a fit of the smaller sizes
  needed per draw, / cores.

Writes benchmarks/results/curves_speed.csv and prints the table with the load average.

    .venv/bin/python benchmarks/bench_curves_speed.py [--sizes 250 2500 25000 100000] [--fit-max 25000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

CHILD = r'''
import json, resource, sys, time, warnings
import numpy as np, pandas as pd
import bayescale as bs
from bayescale import _fastlogp
n, do_fit = int(sys.argv[1]), sys.argv[2] == "1"
rng = np.random.default_rng(0)
params = 10 ** rng.uniform(7.5, 9.5, n)
tokens = params * 10 ** rng.uniform(0.5, 2.5, n)
loss = (1.817 + 482.0 / params ** 0.348 + 2085.4 / tokens ** 0.366) * np.exp(0.02 * rng.standard_normal(n))
runs = bs.load_runs(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss}))
model = bs.ScalingModel("chinchilla")
sampled = model.sampled_parameters()
buf = _fastlogp.make_buffer(model.law, model.likelihood, model.priors, sampled, model.data_values(runs))
kernel = _fastlogp.kernel(model.law)
u = np.full(len(sampled), 0.1)
grad = np.zeros(len(u))
kernel.logp_and_grad(u, grad, buf)
reps = max(20, 2_000_000 // n)
times = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(reps // 5):
        kernel.logp_and_grad(u, grad, buf)
    times.append((time.perf_counter() - t) / (reps // 5))
out = {"points": n, "grad_us": 1e6 * float(np.median(times)),
       "ns_per_point": 1e9 * float(np.median(times)) / n, "buffer_mb": buf.nbytes / 1e6}
if do_fit:
    bs.ScalingModel("chinchilla").fit(bs.load_runs(pd.DataFrame({"params": params[:50], "tokens": tokens[:50], "loss": loss[:50]})), draws=50, tune=50, chains=2, check=False, random_seed=0)  # warm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        fit = model.fit(runs, random_seed=1, check=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = fit.sample_stats
    out.update(fit_seconds=wall, cpu_seconds=cpu, sampler_seconds=fit.settings["seconds"],
               steps_per_draw=float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan"),
               tree_depth=float(stats["tree_depth"].mean()) if "tree_depth" in stats else float("nan"))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 2500, 25000, 100000])
    parser.add_argument("--fit-max", type=int, default=25000)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", default=str(RESULTS / "curves_speed.csv"))
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-c", CHILD, str(n), "1" if n <= args.fit_max else "0"],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(label=args.label, load_average=round(load, 2))
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    fitted = table.dropna(subset=["steps_per_draw"]) if "steps_per_draw" in table else table.iloc[:0]
    if len(fitted):
        # gradients per fit (4 chains x 2,000 steps x steps/draw), spread over 2 cores
        grads = 4 * 2000 * float(fitted.steps_per_draw.iloc[-1])
        table["estimated_fit_seconds"] = table.grad_us * 1e-6 * grads / 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        previous = pd.read_csv(out)
        table = pd.concat([previous[previous.label != args.label], table], ignore_index=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
