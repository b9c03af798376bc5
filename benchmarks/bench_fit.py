"""Time to an uncertainty estimate: bayescale's fits against PyMC's NUTS and the point-fit bootstrap.

Fits the Chinchilla law to Epoch's 240 runs of Hoffmann et al. (2022) (the 5 highest-loss runs
dropped) by every route, side by side in one run, and writes benchmarks/results/fit_speed.csv:

- bayescale cold: a new process running ``bayescale fit runs.csv`` (process start to printed
  table), with its peak memory;
- bayescale warm: ``ScalingModel.fit`` again in the same process on new data (a bootstrap
  resample of the runs, the backtest and notebook case);
- nutpie on the PyMC-compiled model (``sampler="nutpie-pymc"``), cold (compile) and warm;
- PyMC's default NUTS on the same model (``sampler="pymc"``);
- the Hoffmann et al. / Epoch point fit (Huber δ=1e-3 on log loss, L-BFGS from the 4,500-start
  grid) and its bootstrap (200 resamples warm-started from the full fit);
- forecast, prob_below, both together and optimal_allocation over 10,000 budgets × 4,000
  draws (and prob_below with its default ESS-based Monte-Carlo error, once), and the first
  analysis in a new process with numba's cache empty and filled.

MCMC settings: 4 chains × 1000 draws after 1000 tuning steps. Times are medians of ``--repeat``
runs where the route is cheap enough (see the ``runs`` column). The machine is shared, so the
1-minute load average is recorded with every row.

Usage: python benchmarks/bench_fit.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayescale as bs
from bayescale._pointwise import worker_count
from bayescale.pointfit import bootstrap_point_fit, point_fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fit_speed.csv"
PAPER = ["E", "A", "B", "alpha", "beta"]
SETTINGS = {"draws": 1000, "tune": 1000, "chains": 4}


def load() -> float:
    return os.getloadavg()[0]


def resample(runs: bs.Runs, seed: int) -> bs.Runs:
    """New data of the same size: a bootstrap resample of the runs."""
    idx = np.random.default_rng(seed).integers(0, len(runs), len(runs))
    return bs.load_runs(runs.frame.iloc[idx].reset_index(drop=True))


def mcmc_stats(fit) -> dict:
    d = fit.diagnostics()
    draws = fit.posterior_with_derived()
    import arviz as az

    ess = az.ess(draws[PAPER], method="bulk")
    return {"ess_min": min(float(ess[n]) for n in PAPER), "mean_tree_depth": d.mean_tree_depth,
            "step_size": d.mean_step_size,
            "grad_evals": float(fit.sample_stats["n_steps"].sum()) if "n_steps" in fit.sample_stats else np.nan}


def timed_fit(model, runs, seed, sampler):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        fit = model.fit(runs, random_seed=seed, sampler=sampler, **SETTINGS)
        return time.perf_counter() - start, fit


def row(route, what, times, *, stats=None, uncertainty=True, notes="", rss_mb=np.nan, loads=()):
    stats = stats or {}
    median = statistics.median(times)
    ess = stats.get("ess_min", np.nan)
    return {"route": route, "what": what, "runs": len(times), "seconds_median": median,
            "seconds_min": min(times), "seconds_max": max(times),
            "time_to_uncertainty_s": median if uncertainty else np.nan,
            "ess_min_paper_params": ess, "ess_per_second": ess / median if ess == ess else np.nan,
            "mean_tree_depth": stats.get("mean_tree_depth", np.nan),
            "step_size": stats.get("step_size", np.nan), "grad_evals": stats.get("grad_evals", np.nan),
            "peak_rss_mb": rss_mb, "load_1min": float(np.mean(loads)) if loads else load(),
            "notes": notes}


def cold_cli(csv: Path, repeat: int) -> dict:
    """``bayescale fit`` in a new process; wall time and peak RSS from /usr/bin/time -v."""
    exe = Path(sys.executable).with_name("bayescale")
    times, rss, loads = [], [], []
    for _ in range(repeat):
        loads.append(load())
        command = [str(exe), "fit", str(csv), "--no-progress"]
        if Path("/usr/bin/time").exists():
            command = ["/usr/bin/time", "-v", *command]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        if found:
            rss.append(int(found.group(1)) / 1024)
        if "Parameters of" not in done.stdout:
            raise RuntimeError(f"bayescale fit printed no table:\n{done.stdout}\n{done.stderr}")
    return row("bayescale cold (CLI)", "new process: bayescale fit runs.csv, start to printed table",
               times, rss_mb=max(rss) if rss else np.nan, loads=loads,
               notes="includes Python, numpy/pandas/xarray/ArviZ/nutpie imports and the numba cache load")


def import_floor(repeat: int) -> dict:
    times, loads = [], []
    for _ in range(repeat):
        loads.append(load())
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import bayescale, nutpie"], check=True)
        times.append(time.perf_counter() - start)
    return row("import floor", "new process: python -c 'import bayescale, nutpie' (nutpie imports all of ArviZ)",
               times, uncertainty=False, loads=loads, notes="lower bound of any cold fit")


def one_thread(call):
    """Run ``call`` with bayescale's chunked analysis kept to the calling thread."""
    import bayescale._pointwise as pointwise

    saved, pointwise.PARALLEL_MIN = pointwise.PARALLEL_MIN, 10**18
    try:
        return call()
    finally:
        pointwise.PARALLEL_MIN = saved


def whole_array_forecast_and_prob(fit, budgets, target):
    """forecast + prob_below's statistics the straightforward numpy way, for comparison."""
    from scipy import special

    theta = fit.theta(expand=True)
    log_c = np.log(budgets)[None, :]
    log_n = np.median(fit.law.optimal_log_params(theta, fit.reference, log_c), axis=0)
    log_x = {"params": log_n[None, :], "tokens": log_c - np.log(6.0) - log_n[None, :], "flops": log_c}
    log_loss = fit.law.log_loss(theta, log_x, fit.reference, np)
    noise = np.random.default_rng(0).standard_t(theta["nu"][:, 0])[:, None] * theta["sigma"]
    observed = np.exp(log_loss + noise)
    np.quantile(observed, [0.05, 0.5, 0.95], axis=0), observed.mean(axis=0)
    z = (np.log(target) - log_loss) / theta["sigma"]
    nu = theta["nu"][:, 0]
    # scipy's t CDF, with one ν when every draw shares it (its fastest route).
    return special.stdtr(float(nu[0]) if (nu == nu[0]).all() else nu[:, None], z).mean(axis=0)


FIRST_ANALYSIS = """
import sys, time, warnings
import bayescale as bs
warnings.simplefilter("ignore")
fit = bs.load_fit(sys.argv[1])
start = time.perf_counter()
fit.forecast(flops=[1e22, 1e23]); fit.prob_below(2.05, flops=[1e22, 1e23], mcse="iid")
fit.optimal_allocation([1e22, 1e23])
print(time.perf_counter() - start)
"""


def analysis_first_use(fit, repeat: int) -> list[dict]:
    """A new process's first forecast, prob_below and optimal_allocation (3 calls, 2 budgets):
    with numba's cache empty (the compile after installing) and filled (every later process).

    Runs with NUMBA_CACHE_DIR set to a fresh folder, so the project's own cache is untouched.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.nc"
        fit.save(path)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba")}
        for route, runs in (("analysis kernels, first use after install", 1),
                            ("analysis kernels, first use in a new process", repeat)):
            times, loads = [], []
            for _ in range(runs):
                loads.append(load())
                done = subprocess.run([sys.executable, "-c", FIRST_ANALYSIS, str(path)],
                                      capture_output=True, text=True, check=True, env=env)
                times.append(float(done.stdout.strip().splitlines()[-1]))
            rows.append(row(route, "forecast + prob_below + optimal_allocation at 2 budgets, "
                            "timed after load_fit", times, uncertainty=False, loads=loads,
                            notes="numba compiles the kernels into its cache" if runs == 1
                            else "numba's import and its cached kernels"))
            print(route, f"{rows[-1]['seconds_median']:.2f} s", flush=True)
    return rows


def forecast_rows(fit, repeat: int) -> list[dict]:
    """Analysis of 10,000 budgets on the fit's draws: medians of ``repeat`` calls each.

    Each timed call starts with the fit's cache of posterior-median splits emptied, so a
    call alone pays for the split; in "forecast + prob_below" prob_below reuses the split
    that forecast just computed, as it does in a notebook.
    """
    from bayescale import forecast as forecast_module

    budgets = np.geomspace(1e20, 1e25, 10_000)
    draws = f"10,000 budgets x {fit.n_draws} draws"
    calls = [
        ("forecast", f"fit.forecast, {draws}", lambda: fit.forecast(flops=budgets)),
        ("prob_below", f"fit.prob_below(2.05, mcse='iid'), {draws}",
         lambda: fit.prob_below(2.05, flops=budgets, mcse="iid")),
        ("forecast + prob_below", f"both calls above, one after the other, {draws}",
         lambda: (fit.forecast(flops=budgets), fit.prob_below(2.05, flops=budgets, mcse="iid"))),
        ("optimal_allocation", f"fit.optimal_allocation, {draws}",
         lambda: fit.optimal_allocation(budgets)),
        ("forecast + prob_below, one thread", f"as 'forecast + prob_below' on one core, {draws}",
         lambda: one_thread(lambda: (fit.forecast(flops=budgets),
                                     fit.prob_below(2.05, flops=budgets, mcse="iid")))),
        ("forecast + prob_below, whole-array numpy",
         f"the same statistics from whole (draws x budgets) arrays: np.median, np.quantile, "
         f"scipy's stdtr, {draws}",
         lambda: whole_array_forecast_and_prob(fit, budgets, 2.05)),
        ("prob_below, ESS-based MCSE", f"fit.prob_below(2.05) with its default mcse='ess', {draws}",
         lambda: fit.prob_below(2.05, flops=budgets)),
    ]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit.forecast(flops=budgets[:3])      # numba's cached kernels load once per process
        fit.prob_below(2.05, flops=budgets[:3])
        for route, what, call in calls:
            times, loads = [], []
            once = route.endswith(("MCSE", "numpy"))
            for _ in range(1 if once else repeat):
                loads.append(load())
                forecast_module._SPLIT_CACHE.clear()
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            notes = {"prob_below, ESS-based MCSE": "ArviZ's ESS runs a Python loop per budget "
                                                   f"({1e3 * times[0] / budgets.size:.2f} ms each); "
                                                   "mcse='iid' skips it",
                     "forecast + prob_below, one thread": "1 thread",
                     "forecast + prob_below, whole-array numpy": "no chunks, no threads, no "
                                                                 "kernels: 320 MB temporaries"
                     }.get(route, f"{worker_count()} threads")
            rows.append(row(route, what, times, uncertainty=False, loads=loads, notes=notes))
            print(route, f"{rows[-1]['seconds_median']:.3f} s", flush=True)
    return rows


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per cheap route (median)")
    parser.add_argument("--slow-repeat", type=int, default=1,
                        help="runs of the slow routes (PyMC NUTS, full point-fit grid)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: small grid, 20 resamples, no PyMC NUTS, 1 run each")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    runs = bs.load_dataset("chinchilla", drop_highest_loss=5)
    rows = []
    print(f"{len(runs)} runs; {SETTINGS['chains']} chains x {SETTINGS['draws']} draws "
          f"(+{SETTINGS['tune']} tune); {os.cpu_count()} CPUs; load {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "chinchilla_240.csv"
        runs.frame.to_csv(csv, index=False)
        # One untimed run fills numba's on-disk cache (a first install compiles once).
        subprocess.run([str(Path(sys.executable).with_name("bayescale")), "fit", str(csv),
                        "--no-progress", "--draws", "50", "--tune", "50"], capture_output=True, check=True)
        rows.append(import_floor(repeat))
        rows.append(cold_cli(csv, repeat))
        print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    model = bs.ScalingModel("chinchilla")
    first_seconds, fit = timed_fit(model, runs, 0, "nutpie")
    times, loads, fits = [], [], []
    for i in range(repeat):
        loads.append(load())
        seconds, fit_i = timed_fit(model, resample(runs, i + 1), i + 1, "nutpie")
        times.append(seconds)
        fits.append(fit_i)
    stats = pd.DataFrame([mcmc_stats(f) for f in fits]).median().to_dict()
    rows.append(row("bayescale warm", "ScalingModel.fit in the same process, new data (bootstrap resample)",
                    times, stats=stats, loads=loads,
                    notes=f"first fit in this process (numba cache load): {first_seconds:.2f} s"))
    print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    # nutpie on the PyTensor-compiled PyMC model: the foundation's route.
    loads = [load()]
    cold, fit_np = timed_fit(model, runs, 0, "nutpie-pymc")
    rows.append(row("nutpie on PyMC model, cold", "compile (PyTensor + numba) + sample, in process",
                    [cold], stats=mcmc_stats(fit_np), loads=loads,
                    notes="sampler='nutpie-pymc': same sampler settings, PyTensor-generated log density"))
    times, loads, fits = [], [], []
    for i in range(repeat):
        loads.append(load())
        seconds, fit_i = timed_fit(model, resample(runs, i + 1), i + 1, "nutpie-pymc")
        times.append(seconds)
        fits.append(fit_i)
    stats = pd.DataFrame([mcmc_stats(f) for f in fits]).median().to_dict()
    rows.append(row("nutpie on PyMC model, warm", "compiled model reused with new data (with_data)",
                    times, stats=stats, loads=loads))
    print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    # The same warm fit with nutpie's default diagonal mass matrix (the foundation's setting).
    import bayescale.model as model_module

    model_module.NUTPIE_ADAPTATION, model_module.NUTPIE_TARGET_ACCEPT = "diag", 0.8
    try:
        times, loads, fits = [], [], []
        for i in range(args.slow_repeat if not args.quick else 1):
            loads.append(load())
            seconds, fit_i = timed_fit(model, resample(runs, i + 1), i + 1, "nutpie")
            times.append(seconds)
            fits.append(fit_i)
    finally:
        model_module.NUTPIE_ADAPTATION, model_module.NUTPIE_TARGET_ACCEPT = "low_rank", 0.95
    stats = pd.DataFrame([mcmc_stats(f) for f in fits]).median().to_dict()
    rows.append(row("bayescale warm, diagonal mass matrix",
                    "as 'bayescale warm' with nutpie's defaults: adaptation='diag', target_accept=0.8",
                    times, stats=stats, loads=loads))
    print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    if not args.quick:
        times, loads, fits = [], [], []
        for i in range(args.slow_repeat):
            loads.append(load())
            seconds, fit_i = timed_fit(model, runs, i, "pymc")
            times.append(seconds)
            fits.append(fit_i)
        stats = pd.DataFrame([mcmc_stats(f) for f in fits]).median().to_dict()
        rows.append(row("PyMC default NUTS", "sampler='pymc' (pm.sample, PyTensor C backend), in process",
                        times, stats=stats, loads=loads))
        print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    grid = "small" if args.quick else "default"
    times, loads = [], []
    for _ in range(1 if args.quick else args.slow_repeat):
        loads.append(load())
        full = point_fit(runs, grid=grid)
        times.append(full.seconds)
    rows.append(row("point fit (Hoffmann/Epoch)",
                    f"Huber d=1e-3 on log loss, L-BFGS-B from {full.n_starts} starts, analytic gradient",
                    times, uncertainty=False, loads=loads,
                    notes=f"E={full.params['E']:.3f} alpha={full.params['alpha']:.3f} beta={full.params['beta']:.3f}; no uncertainty"))
    print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)
    n_boot = 20 if args.quick else 200
    times, loads = [], []
    for i in range(repeat):
        loads.append(load())
        boot = bootstrap_point_fit(runs, n_resamples=n_boot, random_seed=i, full=full)
        times.append(boot.seconds)
    boot_row = row("point fit + bootstrap", f"{n_boot} resamples, each warm-started from the full fit",
                   times, loads=loads,
                   notes="time to uncertainty = grid fit + bootstrap; 'ESS' = resamples")
    boot_row["time_to_uncertainty_s"] = rows[-1]["seconds_median"] + boot_row["seconds_median"]
    boot_row["ess_min_paper_params"] = n_boot
    boot_row["ess_per_second"] = n_boot / boot_row["time_to_uncertainty_s"]
    rows.append(boot_row)
    print(rows[-1]["route"], f"{rows[-1]['seconds_median']:.2f} s", flush=True)

    rows.extend(forecast_rows(fit, repeat))
    rows.extend(analysis_first_use(fit, repeat))

    table = pd.DataFrame(rows)
    warm = table.loc[table.route == "bayescale warm", "time_to_uncertainty_s"].iloc[0]
    table["ratio_to_bayescale_warm"] = table["time_to_uncertainty_s"] / warm
    table["command"] = "python benchmarks/bench_fit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table["measured_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    if not args.quick:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.output, index=False, float_format="%.4g")
    show = table[["route", "runs", "seconds_median", "time_to_uncertainty_s", "ratio_to_bayescale_warm",
                  "ess_per_second", "mean_tree_depth", "step_size", "peak_rss_mb", "load_1min"]]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    print(markdown(show))
    return table


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (for the README)."""
    def cell(value):
        if isinstance(value, float):
            return "" if value != value else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in values) + " |" for values in table.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
