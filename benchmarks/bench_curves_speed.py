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

With ``--model curves``, the same for :class:`bayescale.CurveModel` (cosine schedule term) on
simulated learning curves (runs of 100 checkpoints, the model's own noise; 30% of each run is
dropped by ``min_fraction``, so ns per point counts kept points): the generated curve kernel
(:mod:`bayescale._fastcurves`), CPU time per gradient, and full warm fits with the defaults.
Writes benchmarks/results/curves_model_speed.csv.

    .venv/bin/python benchmarks/bench_curves_speed.py [--sizes 250 2500 25000 100000] [--fit-max 25000]
    .venv/bin/python benchmarks/bench_curves_speed.py --model curves --label marginal-simd

With ``--model curves``, ``--method`` picks CurveModel.fit's method (default ``auto``: the
importance-corrected Laplace approximation from 10,000 kept checkpoints on, NUTS below); run
once with ``--method nuts --label "before: NUTS"`` and once with the default, and it prints
the before/after table of fit time and peak memory per size (both in the one CSV).
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


CURVES_CHILD = r'''
import json, resource, sys, time, warnings
import numpy as np, pandas as pd
import bayescale as bs
from bayescale import _fastcurves
from bayescale.curves import curve_layout, schedule_excess
n, do_fit, method = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]

def frame(n_points, per_run=100, seed=0, rho=0.5, sigma=0.004, srun=0.03, kappa=0.04):
    # runs of 100 checkpoints, N over two decades, 3-300 tokens per parameter; the curve
    # model's own noise (run offsets, cosine excess, AR(1) in log tokens)
    rng = np.random.default_rng(seed)
    n_runs = max(1, n_points // per_run)
    params = 10 ** rng.uniform(7.5, 9.5, n_runs)
    total = params * 10 ** rng.uniform(0.5, 2.5, n_runs)
    rows = []
    for i in range(n_runs):
        t = np.linspace(total[i] / per_run, total[i], per_run)
        e = np.empty(per_run)
        e[0] = sigma * rng.standard_normal()
        phi = rho ** np.diff(np.log(t))
        for j in range(1, per_run):
            e[j] = phi[j - 1] * e[j - 1] + sigma * np.sqrt(1 - phi[j - 1] ** 2) * rng.standard_normal()
        loss = (1.817 + 482.0 / params[i] ** 0.348 + 2085.4 / t ** 0.366) * np.exp(
            srun * rng.standard_normal() + kappa * schedule_excess(t / total[i]) + e)
        rows.append(pd.DataFrame({"run": f"r{i}", "params": params[i], "tokens": t, "loss": loss}))
    return pd.concat(rows, ignore_index=True)

runs = bs.load_runs(frame(n), run="run", flops=None)
model = bs.CurveModel("chinchilla", schedule="cosine")
layout = curve_layout(runs, None, model.min_fraction)
buf = _fastcurves.make_buffer(model.law, model.priors, True, layout, schedule_excess(layout.fraction))
u = np.full(int(buf[2]), 0.1)
_fastcurves.logp_and_grad(model.law, buf, u)
kernel = _fastcurves.kernel(model.law)
grad = np.zeros(len(u))
reps = max(20, 2_000_000 // n)
times = []
for _ in range(5):
    t = time.process_time()
    for _ in range(reps // 5):
        kernel.logp_and_grad(u, grad, buf)
    times.append((time.process_time() - t) / (reps // 5))
m = len(layout.runs)
out = {"points": n, "kept_points": m, "grad_us": 1e6 * float(np.median(times)),
       "ns_per_point": 1e9 * float(np.median(times)) / m, "buffer_mb": buf.nbytes / 1e6}
if do_fit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for warm in ("nuts", "laplace"):   # compile every kernel first
            model.fit(bs.load_runs(frame(300), run="run", flops=None), draws=30, tune=30,
                      chains=2, random_seed=0, method=warm)
        wall, cpu = time.perf_counter(), time.process_time()
        fit = model.fit(runs, random_seed=1, method=method)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = fit.sample_stats
    used = fit.settings["method"]
    # gradients per draw: NUTS's leapfrog steps; Laplace's evaluations / draws returned
    per_draw = (float(stats["n_steps"].mean()) if used == "nuts"
                else fit.settings["laplace_evaluations"] / fit.n_draws)
    out.update(method=method, method_used=used, fit_seconds=wall, cpu_seconds=cpu,
               sampler_seconds=fit.settings["seconds"], steps_per_draw=per_draw,
               tree_depth=float(stats["depth"].mean()) if "depth" in stats else float("nan"),
               pareto_k=fit.settings.get("pareto_k"), importance_ess=fit.settings.get("importance_ess"),
               **{k: v for k, v in fit.diagnostics().items() if k != "pareto_k"})
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 2500, 25000, 100000])
    parser.add_argument("--fit-max", type=int, default=25000)
    parser.add_argument("--label", default="current")
    parser.add_argument("--model", choices=("scaling", "curves"), default="scaling",
                        help="scaling: ScalingModel on final points (curves_speed.csv); curves: "
                             "CurveModel on learning curves (curves_model_speed.csv)")
    parser.add_argument("--method", choices=("auto", "nuts", "laplace"), default="auto",
                        help="CurveModel.fit's method (--model curves)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    child = CHILD if args.model == "scaling" else CURVES_CHILD
    if args.out is None:
        args.out = str(RESULTS / ("curves_speed.csv" if args.model == "scaling"
                                  else "curves_model_speed.csv"))
    rows = []
    for n in args.sizes:
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-c", child, str(n), "1" if n <= args.fit_max else "0",
                               args.method], capture_output=True, text=True, check=True)
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
    if args.model == "curves":
        print_before_after(table)


def print_before_after(table: pd.DataFrame) -> None:
    """The issue's table: fit time and peak memory per size, NUTS (before) and the default
    method (after), from the rows of every label in the CSV with a method column."""
    if "method_used" not in table:
        return
    fitted = table.dropna(subset=["fit_seconds"])
    nuts = fitted[fitted.method == "nuts"].drop_duplicates("points", keep="last").set_index("points")
    auto = fitted[fitted.method != "nuts"].drop_duplicates("points", keep="last").set_index("points")
    rows = []
    for n in sorted(set(nuts.index) | set(auto.index)):
        row = {"points": n}
        for name, part in (("nuts", nuts), ("after", auto)):
            if n in part.index:
                r = part.loc[n]
                row.update({f"{name}_wall_s": r.fit_seconds, f"{name}_cpu_s": r.cpu_seconds,
                            f"{name}_peak_mb": r.peak_rss_mb,
                            f"{name}_grads_per_draw": r.steps_per_draw})
                if name == "after":
                    row.update(after_method=r.method_used, pareto_k=r.pareto_k,
                               importance_ess=r.importance_ess)
        row["load_average"] = float(fitted[fitted.points == n].load_average.max())
        rows.append(row)
    print("\nBefore (NUTS) and after (method='auto'), warm fits, 4 x 1,000 draws; CPU seconds "
          "do not depend on the load, wall seconds do:")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
