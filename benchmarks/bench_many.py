"""Many laws at once: fits per minute serially, on 2 processes and on a 2-worker Dask cluster.

Two workloads of simulated runs (each group its own truth near published values, lognormal
noise of 1.5% on the loss):

- ``compute``: 200 groups of 30 runs each, the compute law L = E + A·C^−α;
- ``chinchilla``: 50 groups of 120 runs each (12 model sizes × 10 tokens-per-parameter
  ratios), L = E + A/N^α + B/D^β.

Each is fitted by :func:`bayescale.fit_many` (4 chains × 1000 draws after 1000 tuning steps,
the defaults) three ways: serially; on a local process pool of 2 (forkserver); and on a
``dask.distributed.LocalCluster`` of 2 worker processes with one thread each. Every way runs in
a fresh Python process, so start-up (pool, cluster, the workers' imports) is counted as a user
would pay it, and peak memory is clean. The table reports:

- ``wall_s``: from the call to the returned collection (for Dask plus ``startup_s``, the
  cluster's start, which a user with a running cluster does not pay again);
- ``fits_per_min``: groups / (wall_s + startup_s) × 60;
- ``fit_s_mean``: mean seconds inside ``ScalingModel.fit`` per group (in the workers);
- ``overhead_s_per_fit``: (workers × (wall_s + startup_s) − Σ fit seconds) / groups, the
  worker time per fit spent on anything but sampling (start-up, imports, pickling, scheduling,
  idle at the end);
- ``peak_rss_mb``: peak resident memory of the calling process and of the largest worker.

A second table times only the start of a 2-process pool with each start method (two tiny
fits, one per worker, from a fresh process).

The machine is shared: the 1-minute load average is recorded before and after every row.

``--race`` instead starts 4 fresh processes at once on an empty numba cache, with and without
bayescale's lock, and counts how many compiled the sampler's kernels.

Usage: python benchmarks/bench_many.py [--quick] [--only compute|chinchilla] | --race
Writes benchmarks/results/many_throughput.csv and many_startup.csv (many_cache_race.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKLOADS = {"compute": (200, 30), "chinchilla": (50, 120)}
SETTINGS = {"draws": 1000, "tune": 1000, "chains": 4}
QUICK = {"draws": 300, "tune": 300, "chains": 2}


def simulate(law: str, n_groups: int, n_runs: int, seed: int = 0) -> pd.DataFrame:
    """Runs of many groups, each with its own truth near published values."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(n_groups):
        if law == "compute":
            E, A, alpha = 2.0 * np.exp(0.1 * rng.standard_normal()), 130.0, 0.11 * np.exp(
                0.15 * rng.standard_normal())
            flops = np.geomspace(1e17, 1e21, n_runs) * np.exp(0.1 * rng.standard_normal(n_runs))
            loss = E + A * flops ** -alpha
            frame = pd.DataFrame({"flops": flops})
        else:
            E, A, B = 1.817 * np.exp(0.05 * rng.standard_normal()), 482.0, 2085.4
            alpha, beta = (0.348 * np.exp(0.1 * rng.standard_normal()),
                           0.366 * np.exp(0.1 * rng.standard_normal()))
            sizes, ratios = np.geomspace(7e7, 1.6e10, 12), np.geomspace(2, 120, n_runs // 12)
            params, ratio = (a.ravel() for a in np.meshgrid(sizes, ratios))
            tokens = params * ratio
            loss = E + A / params**alpha + B / tokens**beta
            frame = pd.DataFrame({"params": params, "tokens": tokens})
        frame["loss"] = loss * np.exp(0.015 * rng.standard_normal(len(frame)))
        frame.insert(0, "group", f"g{g:03d}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(law: str, mode: str, quick: bool) -> dict:
    """One workload, one way, in this (fresh) process."""
    import bayescale as bs

    n_groups, n_runs = WORKLOADS[law]
    if quick:
        n_groups = max(8, n_groups // 10)
    data = simulate(law, n_groups, n_runs)
    settings = QUICK if quick else SETTINGS
    kwargs = {"by": "group", "law": law, "random_seed": 0, **settings}
    startup, cluster, client = 0.0, None, None
    if mode == "dask":
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        startup = time.perf_counter() - start
        kwargs.update(parallel="dask", client=client)
    elif mode == "processes":
        kwargs.update(parallel="processes", max_workers=2)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = bs.fit_many(data, **kwargs)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    if client is not None:
        client.close()
        cluster.close()
    workers = 1 if mode == "serial" else 2
    info = fits.info
    total = wall + startup
    fit_seconds = float(info["seconds"].sum())
    diagnostics = fits.diagnostics()
    return {"workload": law, "mode": mode, "groups": n_groups, "runs_per_group": n_runs,
            "chains": settings["chains"], "draws": settings["draws"], "tune": settings["tune"],
            "workers": workers, "failed": len(fits.failures), "startup_s": startup,
            "wall_s": wall, "fits_per_min": 60 * n_groups / total,
            "fit_s_mean": fit_seconds / n_groups,
            "overhead_s_per_fit": (workers * total - fit_seconds) / n_groups,
            "peak_rss_mb_caller": peak_rss_mb(),
            "peak_rss_mb_worker": float(info["peak_rss_mb"].max()) if mode != "serial" else float("nan"),
            "converged_share": float(diagnostics["ok"].mean()),
            "load_before": load_before, "load_after": load_after}


def startup_one(method: str) -> dict:
    """Seconds for a fresh 2-process pool to return one tiny fit from each worker."""
    import bayescale as bs

    data = simulate("compute", 2, 12)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = bs.fit_many(data, by="group", law="compute", draws=50, tune=50, chains=1,
                           random_seed=0, parallel="processes", max_workers=2,
                           start_method=method)
    seconds = time.perf_counter() - start
    return {"start_method": method, "seconds": seconds,
            "fit_s_mean": float(fits.info["seconds"].mean()),
            "workers_used": fits.info["worker"].nunique(), "load_before": load_before,
            "load_after": os.getloadavg()[0]}


RACER = r"""
import json, sys, time
gate, locked = float(sys.argv[1]), sys.argv[2] == "lock"
while time.time() < gate:
    time.sleep(0.001)
start = time.perf_counter()
from bayescale import _fastlogp, get_law
if locked:
    from bayescale import many
    many.warm_kernels("compute")
else:  # the same work, without the lock
    import bayescale.model, nutpie
kernel = _fastlogp.kernel(get_law("compute"))
print(json.dumps({"compiled": kernel.logp_cfunc.cache_hits == 0,
                  "seconds": time.perf_counter() - start}))
"""


def cache_race(n: int = 4) -> list[dict]:
    """n fresh processes load the sampler's kernels at once from an empty numba cache."""
    import tempfile

    rows = []
    for mode in ("no lock", "lock"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "BAYESCALE_CACHE_DIR": cache}
            gate, load_before = time.time() + 4, os.getloadavg()[0]
            racers = [subprocess.Popen([sys.executable, "-c", RACER, str(gate),
                                        "lock" if mode == "lock" else "none"], env=env,
                                       stdout=subprocess.PIPE, text=True) for _ in range(n)]
            results = [json.loads(r.communicate()[0].strip().splitlines()[-1]) for r in racers]
            rows.append({"mode": mode, "processes": n,
                         "compiled": sum(r["compiled"] for r in results),
                         "seconds_max": max(r["seconds"] for r in results),
                         "all_done_s": time.time() - gate, "load_before": load_before,
                         "load_after": os.getloadavg()[0]})
    return rows


def in_fresh_process(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the groups, short chains")
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="one workload")
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--startup", metavar="METHOD", help=argparse.SUPPRESS)
    parser.add_argument("--race", action="store_true",
                        help="only: 4 fresh processes and an empty numba cache, with and "
                             "without bayescale's lock")
    args = parser.parse_args()
    if args.race:
        rows = cache_race()
        RESULTS.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(RESULTS / "many_cache_race.csv", index=False)
        print(pd.DataFrame(rows).to_string(index=False))
        return
    if args.one:
        print(json.dumps(run_one(*args.one, quick=args.quick)))
        return
    if args.startup:
        print(json.dumps(startup_one(args.startup)))
        return

    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
    startup = []
    for method in ("forkserver", "spawn"):
        row = in_fresh_process("--startup", method)
        print(row, flush=True)
        startup.append(row)
    rows = []
    for law in ([args.only] if args.only else list(WORKLOADS)):
        for mode in ("serial", "processes", "dask"):
            row = in_fresh_process("--one", law, mode, *(["--quick"] if args.quick else []))
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)
            rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / f"many_throughput{suffix}.csv", index=False)
    pd.DataFrame(startup).to_csv(RESULTS / f"many_startup{suffix}.csv", index=False)
    columns = ["workload", "mode", "groups", "startup_s", "wall_s", "fits_per_min", "fit_s_mean",
               "overhead_s_per_fit", "peak_rss_mb_caller", "peak_rss_mb_worker", "load_before",
               "load_after"]
    print()
    print(table[columns].to_markdown(index=False, floatfmt=".3g") if _has_tabulate()
          else table[columns].to_string(index=False))
    print()
    print(pd.DataFrame(startup).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
