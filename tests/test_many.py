"""fit_many and FitCollection: groups, seeds, failures, files, process pool, Dask, cache races."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import many
from bayescale.cli import main

from conftest import synthetic_compute_frame

# Small, fast fits: the tests compare posteriors draw for draw, not their quality.
SMALL = {"law": "compute", "draws": 150, "tune": 150, "chains": 2}
N_GROUPS = 20


def groups_frame(n_groups: int = N_GROUPS, n_runs: int = 12) -> pd.DataFrame:
    frames = []
    for i in range(n_groups):
        frame = synthetic_compute_frame(seed=100 + i, n=n_runs)
        frame.insert(0, "task", f"task-{i:02d}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def quiet_many(data, **kwargs):
    settings = {**SMALL, "by": "task", "random_seed": 7, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        return bs.fit_many(data, **settings)


def same_posteriors(a: bs.FitCollection, b: bs.FitCollection) -> bool:
    assert list(a) == list(b)
    return all(np.array_equal(a[k].posterior[v].to_numpy(), b[k].posterior[v].to_numpy())
               for k in a for v in a[k].posterior.data_vars)


@pytest.fixture(scope="module")
def frame20():
    return groups_frame()


@pytest.fixture(scope="module")
def serial20(frame20):
    return quiet_many(frame20)


# -- seeds ---------------------------------------------------------------------------------

def test_group_seed_depends_on_seed_and_key_only():
    assert many.group_seed(7, "mmlu") == many.group_seed(7, "mmlu")
    assert many.group_seed(7, "mmlu") != many.group_seed(8, "mmlu")
    assert many.group_seed(7, "1") != many.group_seed(7, 1)          # the type is part of the key
    assert many.group_seed(7, ("a", 1)) != many.group_seed(7, ("a", 2))
    seeds = {many.group_seed(0, f"task-{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert many.group_seed(0, "task") == many.group_seed(0, ("task",))
    # Pinned values: the derivation must not change between versions (old runs reproduce).
    assert many.group_seed(0, "task") == 1678725940
    assert many.group_seed(7, ("a", 1)) == 296845257


def test_a_group_gets_the_same_posterior_whatever_the_other_groups(frame20, serial20):
    alone = quiet_many(frame20[frame20["task"].isin(["task-03", "task-11"])])
    assert list(alone) == ["task-03", "task-11"]
    for key in alone:
        assert alone[key].settings["random_seed"] == serial20[key].settings["random_seed"]
        assert np.array_equal(alone[key].posterior["alpha"].to_numpy(),
                              serial20[key].posterior["alpha"].to_numpy())
    # And the seed is the one derived from the user's seed and the key.
    assert serial20["task-03"].settings["random_seed"] == many.group_seed(7, "task-03")


# -- the collection ------------------------------------------------------------------------

def test_collection_is_indexable_and_tables_stack_every_group(serial20):
    fits = serial20
    assert len(fits) == N_GROUPS and not fits.failures
    assert fits["task-05"] is fits[("task-05",)]
    assert fits.info["status"].eq("ok").all() and fits.info["seconds"].gt(0).all()

    summary = fits.summary()
    assert list(summary.columns[:2]) == ["task", "parameter"]
    assert len(summary) == N_GROUPS * len(fits["task-00"].summary())
    one = summary[summary["task"] == "task-05"].set_index("parameter")
    pd.testing.assert_frame_equal(one.drop(columns="task"), fits["task-05"].summary(),
                                  check_names=False)

    table = fits.forecast(flops=[1e22, 1e23])
    assert len(table) == 2 * N_GROUPS and table.attrs["prob"] == 0.9
    mine = table[table["task"] == "task-07"].drop(columns="task").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, fits["task-07"].forecast(flops=[1e22, 1e23]))

    probs = fits.prob_below(2.3, flops=1e22)
    assert len(probs) == N_GROUPS
    assert probs.loc[probs["task"] == "task-07", "prob"].item() == pytest.approx(
        fits["task-07"].prob_below(2.3, flops=1e22, mcse="iid"))

    diag = fits.diagnostics()
    assert len(diag) == N_GROUPS and {"r_hat_max", "ess_bulk_min", "divergences"} <= set(diag)


def test_bad_groups_are_collected_and_the_others_kept():
    frame = groups_frame(n_groups=3)
    bad = frame["task"] == "task-01"
    frame.loc[bad & (frame.index % 12 == 4), "loss"] = -1.0               # a negative loss
    tiny = pd.DataFrame({"task": "tiny", "flops": [1e18, 1e19, 1e20], "loss": [3.0, 2.8, 2.6]})
    frame = pd.concat([frame, tiny], ignore_index=True)
    with pytest.warns(bs.GroupFailureWarning, match=r"2 of 4 groups could not be fitted"):
        fits = quiet_many(frame)
    assert list(fits) == ["task-00", "task-02"]
    assert fits.groups == ["task-00", "task-01", "task-02", "tiny"]
    failure = fits.failures["task-01"]
    assert failure.error_type == "RunDataError" and "'loss'" in failure.message
    assert failure.message.startswith("group task='task-01': runs DataFrame: column 'loss', row 16")
    assert "must be positive" in failure.message
    assert fits.failures["tiny"].error_type == "RunDataError"
    assert "at least 4 runs" in fits.failures["tiny"].message
    with pytest.raises(KeyError, match="task='task-01' was not fitted: RunDataError"):
        fits["task-01"]
    with pytest.raises(KeyError, match="no group 'task-99'"):
        fits["task-99"]
    info = fits.info.set_index("task")
    assert info.loc["task-01", "status"] == "failed" and info.loc["task-00", "status"] == "ok"


def test_warnings_are_summarised_once_per_kind():
    frame = groups_frame(n_groups=2)
    with pytest.warns(bs.ConvergenceWarning, match=r"in 2 of 2 groups") as record:
        fits = bs.fit_many(frame, by="task", random_seed=1, **{**SMALL, "draws": 20, "tune": 20})
    assert sum(issubclass(w.category, bs.ConvergenceWarning) for w in record) == 1
    assert all(m.startswith("ConvergenceWarning: ") for m in fits.warnings["task-00"])


def test_several_group_columns_give_tuple_keys():
    frame = groups_frame(n_groups=2)
    frame["mix"] = np.where(frame.index % 2 == 0, "a", "b")
    fits = quiet_many(frame, by=["task", "mix"], draws=100, tune=100)
    assert list(fits) == [("task-00", "a"), ("task-00", "b"), ("task-01", "a"), ("task-01", "b")]
    assert list(fits.summary().columns[:3]) == ["task", "mix", "parameter"]
    assert len(fits[("task-01", "b")].runs) == 6


def test_bad_arguments_are_named():
    frame = groups_frame(n_groups=2)
    with pytest.raises(bs.RunDataError, match=r"no group column 'dataset'; columns are"):
        bs.fit_many(frame, by="dataset", law="compute")
    holed = frame.copy()
    holed.loc[5, "task"] = None
    with pytest.raises(bs.RunDataError, match=r"group column 'task', row 5: missing group value"):
        bs.fit_many(holed, by="task", law="compute")
    with pytest.raises(ValueError, match=r"clash with a run column"):
        bs.fit_many(frame, by="loss", law="compute")
    with pytest.raises(ValueError, match=r"parallel must be None, 'processes' or 'dask', got 'threads'"):
        bs.fit_many(frame, by="task", law="compute", parallel="threads")
    with pytest.raises(ValueError, match=r"client= is for parallel='dask'"):
        bs.fit_many(frame, by="task", law="compute", client=object())
    with pytest.raises(ValueError, match=r"start_method='fork' is not allowed"):
        bs.fit_many(frame, by="task", law="compute", parallel="processes", start_method="fork")
    with pytest.raises(ValueError, match=r"random_seed must be a whole number"):
        bs.fit_many(frame, by="task", law="compute", random_seed=-1)


# -- files ---------------------------------------------------------------------------------

def test_save_and_load_round_trip_with_failures(tmp_path):
    frame = pd.concat([groups_frame(n_groups=2),
                       pd.DataFrame({"task": "tiny", "flops": [1e18, 1e19], "loss": [3.0, 2.8]})])
    with pytest.warns(bs.GroupFailureWarning):
        fits = quiet_many(frame, draws=100, tune=100)
    target = tmp_path / "fits"
    assert fits.save(target) == target
    index = json.loads((target / "index.json").read_text())
    assert [g["status"] for g in index["groups"]] == ["ok", "ok", "failed"]
    assert sorted(p.name for p in target.iterdir()) == [
        "00000-task-00.nc", "00001-task-01.nc", "index.json"]

    loaded = bs.load_fits(target)
    assert list(loaded) == list(fits) and loaded.groups == fits.groups
    assert same_posteriors(fits, loaded)
    pd.testing.assert_frame_equal(loaded.forecast(flops=1e22), fits.forecast(flops=1e22))
    assert str(loaded.failures["tiny"]) == str(fits.failures["tiny"])
    assert loaded.settings["random_seed"] == 7
    assert list(loaded.info["status"]) == ["ok", "ok", "failed"]

    # No clobbering: an existing collection needs overwrite=True; other directories never go.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fits.save(target)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved FitCollection"):
        fits.save(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    fits.save(target, overwrite=True)
    assert bs.load_fits(target).groups == fits.groups
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits", "mine"]  # no leftovers


def test_interrupted_save_leaves_nothing_and_damage_is_caught(tmp_path, monkeypatch, serial20):
    fits = bs.FitCollection(["task"], {k: serial20[k] for k in ("task-00", "task-01")})
    calls = []
    original = bs.ScalingFit.save

    def dying_save(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed half-way
        return original(self, path, **kwargs)

    monkeypatch.setattr(bs.ScalingFit, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        fits.save(tmp_path / "fits")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    target = fits.save(tmp_path / "fits")
    victim = target / "00001-task-01.nc"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(bs.FitFileError, match="does not match the index's SHA-256"):
        bs.load_fits(target)
    victim.unlink()
    with pytest.raises(bs.FitFileError, match="task='task-01'.*is missing"):
        bs.load_fits(target)
    with pytest.raises(bs.FitFileError, match="no index.json"):
        bs.load_fits(tmp_path)


# -- processes, backtest, CLI --------------------------------------------------------------

def test_process_pool_gives_the_serial_posteriors(frame20, serial20):
    eight = frame20[frame20["task"] < "task-08"]
    pooled = quiet_many(eight, parallel="processes", max_workers=2)
    assert list(pooled) == list(serial20)[:8]
    assert same_posteriors(bs.FitCollection(["task"], {k: serial20[k] for k in pooled}), pooled)
    workers = set(pooled.info["worker"])
    assert len(workers) == 2 and f"{os.uname().nodename}:{os.getpid()}" not in workers


def test_backtest_several_cutoffs_in_parallel_equals_one_at_a_time():
    runs = bs.load_runs(synthetic_compute_frame(n=30))
    settings = {"draws": 150, "tune": 150, "chains": 2, "random_seed": 3, "check": False}
    together = bs.backtest(runs, "compute", cutoff_flops=[1e19, 1e20], parallel="processes",
                           **settings)
    assert list(together) == [1e19, 1e20]
    for cutoff, result in together.items():
        alone = bs.backtest(runs, "compute", cutoff_flops=cutoff, **settings)
        pd.testing.assert_series_equal(result.summary.drop("seconds"), alone.summary.drop("seconds"))
        pd.testing.assert_frame_equal(result.table, alone.table)
    with pytest.raises(ValueError, match="do not give holdout_frac"):
        bs.backtest(runs, "compute", cutoff_flops=[1e19], holdout_frac=0.2)


def test_cli_fit_many_saves_a_collection(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    frame = groups_frame(n_groups=3)
    frame = frame.astype({"loss": object})
    frame.loc[30, "loss"] = "n/a"   # task-02 has a bad row: that group fails, the others not
    frame.to_csv(csv, index=False)
    args = ["fit-many", str(csv), "--by", "task", "--law", "compute", "--draws", "100",
            "--tune", "100", "--chains", "2", "-o", str(tmp_path / "fits")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(args)
    out, err = capsys.readouterr()
    assert status == 1                                     # one group failed
    assert "task-00" in out and "alpha" in out
    assert "failed: 'task-02'" in err and "numbered by their line in the file" in err
    assert "'loss', row 32: value 'n/a' is not a number" in err
    assert "3/3 groups, 1 failed" in err                   # the progress bar over groups
    loaded = bs.load_fits(tmp_path / "fits")
    assert list(loaded) == ["task-00", "task-01"] and list(loaded.failures) == ["task-02"]
    assert main(args) == 2                                 # never replaces it without --force
    assert "pass --force" in capsys.readouterr().err


# -- Dask ----------------------------------------------------------------------------------

def test_dask_without_a_client_says_how_to_get_one(frame20):
    distributed = pytest.importorskip("distributed")
    try:
        distributed.get_client()
        pytest.skip("a Dask client is already running")
    except ValueError:
        pass
    with pytest.raises(ValueError, match="found no Dask client"):
        bs.fit_many(frame20, by="task", law="compute", parallel="dask")


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_dask_local_cluster_gives_the_serial_posteriors(frame20, serial20, dask_client):
    on_dask = quiet_many(frame20, parallel="dask")   # the current client
    assert same_posteriors(serial20, on_dask)
    assert len(set(on_dask.info["worker"])) == 2


@pytest.mark.slow
def test_dask_retries_the_fits_of_a_killed_worker(frame20, serial20, dask_client):
    killed = []

    def kill_a_busy_worker(key, ok, done, total):
        if killed or done < 3:
            return
        processing = {addr: tasks for addr, tasks in dask_client.processing().items() if tasks}
        address = next(iter(processing))
        pid = dask_client.run(os.getpid, workers=[address])[address]
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, processing[address], done))

    fits = quiet_many(frame20, parallel="dask", client=dask_client, callback=kill_a_busy_worker)
    _, lost_keys, done = killed[0]
    assert done < N_GROUPS and lost_keys                  # killed mid-run, with fits on it
    assert not fits.failures and same_posteriors(serial20, fits)   # they were redone, same draws
    deadline = time.time() + 30
    while len(dask_client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
        time.sleep(0.2)                                   # the nanny restarts it


# -- the numba cache under racing processes ------------------------------------------------

RACER = textwrap.dedent("""
    import json, sys, time, warnings
    start = float(sys.argv[1])
    while time.time() < start:      # every racer leaves the gate at the same moment
        time.sleep(0.001)
    from bayescale import many
    many.warm_kernels("compute")
    from bayescale import _fastlogp
    import bayescale as bs, numpy as np, pandas as pd
    flops = np.geomspace(1e17, 1e21, 12)
    loss = (2 + 130 * flops ** -0.11) * np.exp(0.02 * np.sin(np.arange(12)))
    runs = bs.load_runs(pd.DataFrame({"flops": flops, "loss": loss}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.ScalingModel("compute").fit(runs, draws=100, tune=100, chains=2, random_seed=1)
    kernel = _fastlogp.kernel(bs.get_law("compute"))
    print(json.dumps({"hits": [kernel.logp_cfunc.cache_hits, kernel.expand_cfunc.cache_hits],
                      "alpha": fit.posterior["alpha"].to_numpy().ravel().tolist()}))
""")


@pytest.mark.slow
def test_four_fresh_processes_share_one_compilation(tmp_path):
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "BAYESCALE_CACHE_DIR": str(tmp_path / "kernels")}
    gate = time.time() + 3.0
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(gate)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=240)
        assert racer.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    hits = sorted(tuple(r["hits"]) for r in results)
    # Exactly one racer compiled (no cache hits); the other three loaded its cache.
    assert hits == [(0, 0), (1, 1), (1, 1), (1, 1)]
    assert all(r["alpha"] == results[0]["alpha"] for r in results)   # same posterior
    files = list(cache.rglob("*.nbi")) + list(cache.rglob("*.nbc"))
    assert files and not list(cache.rglob("*.tmp.*"))                 # complete, no debris
