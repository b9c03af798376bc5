"""Many fits at once: one law per group of runs, serially, on a process pool, or on Dask.

:func:`fit_many` splits a table of runs by one or more columns (a downstream task, a data
mix, an ablation) and fits the same law to every group. The fits are independent, so they
run wherever there are cores:

- ``parallel=None``: one after another in this process (no start-up cost; best for a few
  groups or when one fit already uses every core for its chains);
- ``parallel="processes"``: a local pool of fresh processes (``forkserver`` on Linux,
  ``spawn`` elsewhere, never a plain ``fork`` of a process whose nutpie or numba threads may
  be running); each fit samples its chains on one core, so the pool keeps every core busy;
- ``parallel="dask"``: the tasks of a ``dask.distributed`` client (the current one, or
  ``client=``), for when the work outgrows one machine. Dask reschedules the fits of a
  worker that dies.

Whichever way it runs, every group's seed is derived from the user's seed and the group's
key alone (:func:`group_seed`), so the posteriors are the same draw for draw.

The result is a :class:`FitCollection`: a mapping of group key to
:class:`~bayescale.ScalingFit`, with the failures kept per group (one bad group never loses
the others), tables across groups, and ``save`` / :func:`load_fits` to a directory with one
netCDF file per fit and an ``index.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data import Runs, load_runs
from .exceptions import PACKAGE_FILES, FitFileError, RunDataError

if TYPE_CHECKING:
    from .fit import ScalingFit
    from .laws import ScalingLaw
    from .priors import Prior

__all__ = ["fit_many", "fit_runs", "FitCollection", "GroupFailure", "GroupFailureWarning",
           "load_fits", "group_seed", "PARALLEL", "INDEX_NAME"]

#: Ways to run the fits.
PARALLEL = (None, "processes", "dask")
#: Name of the index file of a saved collection.
INDEX_NAME = "index.json"
_INDEX_FORMAT = "bayescale-fit-collection"
_INDEX_VERSION = 1
# Output columns a group column may not shadow.
_RESERVED = frozenset({"params", "tokens", "flops", "loss", "parameter", "prob", "mcse", "status",
                       "error", "seconds", "seed"})

Key = Any  # a scalar (one `by` column) or a tuple of scalars


class GroupFailureWarning(UserWarning):
    """Some groups of :func:`fit_many` failed; their errors are in ``FitCollection.failures``."""


@dataclass(frozen=True)
class GroupFailure:
    """Why one group could not be fitted.

    Attributes
    ----------
    key : scalar or tuple
        The group.
    error_type : str
        Class name of the exception (``RunDataError``, ``ValueError``, ...).
    message : str
        Its message.
    traceback : str
        Where it was raised (in the worker that ran the fit).
    exception : BaseException or None
        The exception itself, when it survived the trip back from the worker (and not after
        :func:`load_fits`).
    """

    key: Key
    error_type: str
    message: str
    traceback: str = ""
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


# -- seeds and keys ------------------------------------------------------------------------

def _native(value: Any, column: str) -> Any:
    """A group value as a plain Python str, int, float or bool (JSON-safe, picklable)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RunDataError(f"group column {column!r} holds {value!r}; every run needs a "
                               "finite group value")
        return value
    raise TypeError(f"group column {column!r} holds a {type(value).__name__} value ({value!r}); "
                    "groups must be str, int, float or bool: convert the column, e.g. "
                    f"df[{column!r}].astype(str)")


def _key_json(parts: tuple) -> list:
    # The type is kept so that the group "1" and the group 1 get different seeds and files.
    return [[type(v).__name__, v] for v in parts]


def _key_from_json(items: list, n_by: int) -> Key:
    types = {"str": str, "int": int, "float": float, "bool": bool}
    parts = tuple(types[t](v) for t, v in items)
    return parts[0] if n_by == 1 else parts


def group_seed(random_seed: int, key: Key) -> int:
    """The seed of one group's fit, from the user's seed and the group key only.

    The same (seed, key) gives the same seed in every process and on every machine (no use
    of Python's salted ``hash``), whatever the other groups and whichever way the fits run.

    Parameters
    ----------
    random_seed : int
        The seed given to :func:`fit_many`.
    key : scalar or tuple
        The group's key.

    Returns
    -------
    int
        A seed in [0, 2**31).
    """
    parts = key if isinstance(key, tuple) else (key,)
    digest = hashlib.sha256(json.dumps(_key_json(parts)).encode("utf-8")).digest()
    words = tuple(int(w) for w in np.frombuffer(digest[:16], dtype="<u4"))
    sequence = np.random.SeedSequence(entropy=int(random_seed), spawn_key=words)
    return int(sequence.generate_state(1, dtype=np.uint32)[0] >> 1)


# -- one fit, wherever it runs -------------------------------------------------------------

@dataclass(frozen=True)
class _Task:
    position: int
    key: Key
    runs: Runs
    law: "str | ScalingLaw"
    priors: "Mapping[str, Prior] | None"
    likelihood: str
    seed: int
    fit_kwargs: dict[str, Any]


@dataclass
class _Outcome:
    position: int
    key: Key
    fit: "ScalingFit | None"
    failure: GroupFailure | None
    warnings: list[tuple[str, str]]
    seconds: float
    worker: str
    peak_rss_mb: float


_fit_lock = threading.Lock()
_warm = False


def _lock_path() -> Path:
    """A lock file in the folder of the generated kernels (whose numba cache sits beside them)."""
    from ._derive import cache_dir

    return cache_dir() / "bayescale-jit.lock"


@contextlib.contextmanager
def _jit_cache_lock() -> Iterator[None]:
    """Hold an exclusive lock on the kernels' cache while loading or compiling them.

    numba writes each cache file atomically (temporary file, then rename), so racing
    processes cannot corrupt it; but with an empty cache every one of them would compile the
    same kernels at once. Under this lock the first compiles and the others wait and load.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; racing processes may compile twice, not corrupt
        yield
        return
    with open(_lock_path(), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_warm_laws: set[str] = set()


def warm_kernels(law: "str | ScalingLaw | None" = None) -> None:
    """Load (or, the first time, generate and compile) the sampler's numba kernel of a law.

    Also imports nutpie and the model, so that a worker's first fit times sampling only.

    Safe to call from many fresh processes at once: under a file lock one writes the
    generated source and compiles it, the others wait and load its cache. Cheap once done
    in a process.
    """
    global _warm
    name = None if law is None else (law if isinstance(law, str) else law.name)
    if _warm and name in _warm_laws | {None}:
        return
    with _jit_cache_lock():
        from . import _fastlogp

        if name is not None:
            from ._derive import NotTraceable
            from .laws import get_law

            with contextlib.suppress(NotTraceable):  # such laws sample the PyMC model instead
                _fastlogp.kernel(get_law(law))
            _warm_laws.add(name)
    if not _warm:
        import nutpie  # noqa: F401

        from . import model  # noqa: F401
        _warm = True


def _init_worker() -> None:
    # One BLAS thread per worker: the pool's processes already fill the cores.
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    warm_kernels()


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _failure(key: Key, exc: BaseException) -> GroupFailure:
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
        kept: BaseException | None = exc
    except Exception:  # some exceptions cannot cross a process boundary
        kept = None
    return GroupFailure(key=key, error_type=type(exc).__name__, message=str(exc),
                        traceback=text, exception=kept)


def _run_task(task: _Task) -> _Outcome:
    """Fit one group; never raises (errors are returned as a GroupFailure)."""
    try:
        warm_kernels(task.law)
    except Exception:  # e.g. an unknown law: the fit below reports it for this group
        pass
    from .model import ScalingModel

    # Fits in one process run one at a time: catch_warnings is process-wide, so threads
    # (a Dask worker with several) would otherwise record each other's warnings.
    with _fit_lock:
        start = time.perf_counter()
        fit, failure = None, None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = ScalingModel(task.law, priors=task.priors, likelihood=task.likelihood)
                fit = model.fit(task.runs, random_seed=task.seed, progressbar=False,
                                **task.fit_kwargs)
            except Exception as exc:  # one group's error must not lose the others
                failure = _failure(task.key, exc)
        seconds = time.perf_counter() - start
    messages = list(dict.fromkeys((w.category.__name__, str(w.message)) for w in caught))
    return _Outcome(position=task.position, key=task.key, fit=fit, failure=failure,
                    warnings=messages, seconds=seconds,
                    worker=f"{os.uname().nodename if hasattr(os, 'uname') else ''}:{os.getpid()}",
                    peak_rss_mb=_peak_rss_mb())


def _lost(task: _Task, exc: BaseException) -> _Outcome:
    return _Outcome(position=task.position, key=task.key, fit=None, failure=_failure(task.key, exc),
                    warnings=[], seconds=float("nan"), worker="", peak_rss_mb=float("nan"))


# -- executors -----------------------------------------------------------------------------

def _mp_context(start_method: str | None):
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    if start_method == "fork":
        raise ValueError("start_method='fork' is not allowed: forking a process whose nutpie or "
                         "numba threads may be running can deadlock; use 'forkserver' or 'spawn'")
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {[m for m in methods if m != 'fork']}, "
                         f"got {start_method!r}")
    context = mp.get_context(start_method)
    if start_method == "forkserver":
        # The server imports these once; each worker forks from it with them loaded (and no
        # sampler threads, which the server never starts). No effect if a server already runs.
        context.set_forkserver_preload(["bayescale.many", "bayescale.model", "nutpie"])
    return context


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _serial(tasks: list[_Task]) -> Iterator[_Outcome]:
    for task in tasks:
        yield _run_task(task)


def _processes(tasks: list[_Task], max_workers: int | None, start_method: str | None,
               retries: int = 2) -> Iterator[_Outcome]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = _mp_context(start_method)
    workers = max_workers or _available_cores()
    workers = max(1, min(int(workers), len(tasks)))
    pending = list(tasks)
    for attempt in range(retries + 1):
        broken: list[_Task] = []
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                   initializer=_init_worker)
        try:
            futures = {pool.submit(_run_task, task): task for task in pending}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory, crashed): the pool is gone. Run the
                    # groups it took with it again on a new pool.
                    if attempt < retries:
                        broken.append(task)
                        continue
                    outcome = _lost(task, exc)
                except Exception as exc:  # e.g. a result that could not be unpickled
                    outcome = _lost(task, exc)
                yield outcome
        except BaseException:
            # Interrupted (Ctrl-C, or the caller stopped): do not wait for the queued fits.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if not broken:
            return
        pending = sorted(broken, key=lambda t: t.position)


def _dask(tasks: list[_Task], client: Any) -> Iterator[_Outcome]:
    try:
        from distributed import as_completed, get_client
    except ImportError as exc:
        raise ImportError("parallel='dask' needs dask.distributed: pip install 'bayescale[dask]'") from exc
    if client is None:
        try:
            client = get_client()
        except ValueError:
            raise ValueError("parallel='dask' found no Dask client: create one first, e.g. "
                             "distributed.Client(distributed.LocalCluster()) or "
                             "distributed.Client('tcp://scheduler:8786'), or pass client=") from None
    token = uuid.uuid4().hex[:10]
    futures = [client.submit(_run_task, task, key=f"bayescale-fit-{token}-{task.position}",
                             pure=False) for task in tasks]
    by_key = {future.key: task for future, task in zip(futures, tasks)}
    # Dask reruns the fit of a worker that dies (up to the scheduler's allowed-failures);
    # only then does a future raise (KilledWorker), and that group is recorded as failed.
    try:
        for future in as_completed(futures):
            task = by_key[future.key]
            try:
                outcome = future.result()
            except Exception as exc:
                outcome = _lost(task, exc)
            future.release()
            yield outcome
    except BaseException:
        client.cancel(futures)  # interrupted: free the cluster of the fits still queued
        raise


# -- progress ------------------------------------------------------------------------------

class _Progress:
    """A one-line progress bar over groups on stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.start = total, label, time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._last = -1.0

    def update(self, done: int, failed: int) -> None:
        now = time.perf_counter()
        if not self.tty and done < self.total and now - self._last < 5:
            return
        self._last = now
        elapsed = now - self.start
        width = 30
        filled = int(width * done / max(self.total, 1))
        eta = elapsed / done * (self.total - done) if done else float("nan")
        text = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"groups, {failed} failed, {elapsed:.0f} s" +
                (f", ~{eta:.0f} s left" if done < self.total and done else ""))
        print(("\r" if self.tty else "") + text, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)
        if self.tty and done == self.total:
            print(file=sys.stderr)


# -- the shared machinery ------------------------------------------------------------------

def _execute(tasks: list[_Task], parallel: str | None, client: Any, max_workers: int | None,
             start_method: str | None, callback: Callable[[Key, bool, int, int], None] | None,
             progressbar: bool, label: str = "fitting",
             failed_before: int = 0) -> list[_Outcome]:
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be None, 'processes' or 'dask', got {parallel!r}")
    if client is not None and parallel != "dask":
        raise ValueError("client= is for parallel='dask'; pass parallel='dask' too")
    if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
        raise ValueError(f"max_workers must be a whole number >= 1, got {max_workers!r}")
    if not tasks:
        if progressbar and failed_before:
            _Progress(failed_before, label).update(failed_before, failed_before)
        return []
    if parallel is None:
        stream = _serial(tasks)
    elif parallel == "processes":
        laws = {(t.law if isinstance(t.law, str) else t.law.name): t.law for t in tasks}
        for law in laws.values():
            warm_kernels(law)  # fill the kernel cache here once, before the workers race for it
        stream = _processes(tasks, max_workers, start_method)
    else:
        stream = _dask(tasks, client)
    # Groups that failed before fitting (bad runs) count as done in the bar.
    total = len(tasks) + failed_before
    progress = _Progress(total, label) if progressbar else None
    outcomes: dict[int, _Outcome] = {}
    failed = failed_before
    for outcome in stream:
        outcomes[outcome.position] = outcome
        failed += outcome.failure is not None
        done = len(outcomes) + failed_before
        if progress is not None:
            progress.update(done, failed)
        if callback is not None:
            callback(outcome.key, outcome.failure is None, done, total)
    return [outcomes[task.position] for task in tasks]


def _fit_kwargs(draws: int, tune: int, chains: int, sampler: str, check: bool,
                cores: int | None, parallel: str | None) -> dict[str, Any]:
    # In parallel the groups fill the cores, so each fit's chains share one core.
    cores = cores if cores is not None else (1 if parallel is not None else None)
    return {"draws": draws, "tune": tune, "chains": chains, "sampler": sampler, "check": check,
            "cores": cores}


def fit_runs(runs: Sequence[Runs], law: "str | ScalingLaw" = "chinchilla", *,
             seeds: Sequence[int], priors: "Mapping[str, Prior] | None" = None,
             likelihood: str = "student_t", draws: int = 1000, tune: int = 1000, chains: int = 4,
             sampler: str = "nutpie", check: bool = True, parallel: str | None = None,
             client: Any = None, max_workers: int | None = None, cores: int | None = None,
             start_method: str | None = None,
             progressbar: bool = False) -> "list[ScalingFit | GroupFailure]":
    """Fit one law to each of several sets of runs, serially, on processes or on Dask.

    The machinery behind :func:`fit_many` and ``bs.backtest(..., parallel=...)``, for code
    that already has its runs split (e.g. the training runs of several backtest splits).

    Parameters
    ----------
    runs : sequence of Runs
    law, priors, likelihood
        As in :class:`bayescale.ScalingModel`.
    seeds : sequence of int
        One seed per set of runs.
    draws, tune, chains, sampler, check
        As in :meth:`bayescale.ScalingModel.fit`.
    parallel, client, max_workers, cores, start_method, progressbar
        As in :func:`fit_many`.

    Returns
    -------
    list of ScalingFit or GroupFailure
        In the order of ``runs``; a :class:`GroupFailure` (key: the position) where a fit
        raised.
    """
    if len(seeds) != len(runs):
        raise ValueError(f"give one seed per set of runs: {len(runs)} sets, {len(seeds)} seeds")
    kwargs = _fit_kwargs(draws, tune, chains, sampler, check, cores, parallel)
    tasks = [_Task(position=i, key=i, runs=r, law=law, priors=priors, likelihood=likelihood,
                   seed=int(s), fit_kwargs=kwargs) for i, (r, s) in enumerate(zip(runs, seeds))]
    outcomes = _execute(tasks, parallel, client, max_workers, start_method, None, progressbar)
    for outcome in outcomes:
        for category, message in outcome.warnings:
            warnings.warn(message, _warning_class(category), skip_file_prefixes=PACKAGE_FILES)
    return [o.fit if o.failure is None else o.failure for o in outcomes]


def _warning_class(name: str) -> type[Warning]:
    from . import exceptions

    found = getattr(exceptions, name, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    builtin = getattr(__import__("builtins"), name, None)
    if isinstance(builtin, type) and issubclass(builtin, Warning):
        return builtin
    return UserWarning


# -- fit_many ------------------------------------------------------------------------------

def _group_frames(data: pd.DataFrame, by: list[str], where: str) -> list[tuple[Key, pd.DataFrame]]:
    missing = [c for c in by if c not in data.columns]
    if missing:
        raise RunDataError(f"{where}: no group column {', '.join(map(repr, missing))}; columns "
                           f"are {[str(c) for c in data.columns]}")
    line_offset = data.attrs.get("csv_line_offset")
    for column in by:
        values = data[column]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            label = f"line {row + line_offset}" if line_offset is not None else f"row {data.index[row]!r}"
            raise RunDataError(f"{where}: group column {column!r}, {label}: missing group value; "
                               "every run needs one (drop the run or fill it in)")
    groups = []
    for raw_key, frame in data.groupby(by, sort=False, dropna=False):
        parts = raw_key if isinstance(raw_key, tuple) else (raw_key,)
        parts = tuple(_native(v, c) for v, c in zip(parts, by))
        key = parts[0] if len(by) == 1 else parts
        frame = frame.drop(columns=by)
        if line_offset is not None:
            # load_runs then names rows by their line in the file.
            frame = frame.set_axis(frame.index + line_offset)
            frame.attrs.pop("csv_line_offset", None)
        groups.append((key, frame))
    return groups


def fit_many(data: pd.DataFrame | str | PathLike[str], by: str | Sequence[str],
             law: "str | ScalingLaw" = "chinchilla", *, params: str | None = "params",
             tokens: str | None = "tokens", flops: str | None = "flops", loss: str = "loss",
             priors: "Mapping[str, Prior] | None" = None, likelihood: str = "student_t",
             draws: int = 1000, tune: int = 1000, chains: int = 4,
             random_seed: int | None = None, sampler: str = "nutpie", check: bool = True,
             parallel: str | None = None, client: Any = None, max_workers: int | None = None,
             cores: int | None = None, start_method: str | None = None,
             progressbar: bool = False,
             callback: Callable[[Key, bool, int, int], None] | None = None) -> "FitCollection":
    """Fit the same law to every group of runs: one fit per value of the ``by`` columns.

    Parameters
    ----------
    data : DataFrame or path to a CSV file
        One row per training run, with the group column(s) and the run columns.
    by : str or sequence of str
        Column(s) that name a group (e.g. ``"task"`` or ``["task", "mix"]``). A group's key
        is its value (one column) or the tuple of values (several), as in pandas.
    law : str or ScalingLaw
        The law fitted to every group.
    params, tokens, flops, loss : str or None
        Run columns, as in :func:`bayescale.load_runs`.
    priors, likelihood
        As in :class:`bayescale.ScalingModel` (the same for every group).
    draws, tune, chains, sampler, check
        As in :meth:`bayescale.ScalingModel.fit`.
    random_seed : int, optional
        Seed of the whole collection; each group's seed is :func:`group_seed` of it and the
        group key, so results do not depend on ``parallel``, on the order of the groups or on
        which other groups are present. A fresh one is drawn (and kept in
        ``FitCollection.settings``) when omitted.
    parallel : {None, "processes", "dask"}
        ``None``: one fit after another in this process. ``"processes"``: a local process
        pool. ``"dask"``: a ``dask.distributed`` client (``client=``, else the current one).
        Scripts that use ``"processes"`` need the usual ``if __name__ == "__main__":`` guard.
    client : distributed.Client, optional
        The Dask client for ``parallel="dask"``.
    max_workers : int, optional
        Size of the process pool (default: the cores this process may use).
    cores : int, optional
        Cores for one fit's chains. Default: nutpie's choice when serial, 1 in parallel (the
        groups keep the cores busy). The posterior does not depend on it.
    start_method : {"forkserver", "spawn"}, optional
        How the pool starts its processes (default ``"forkserver"`` where available).
    progressbar : bool
        A progress bar over groups on stderr.
    callback : callable, optional
        Called as ``callback(key, ok, done, total)`` after each group, in this process.

    Returns
    -------
    FitCollection
        Fits by group key, failures by group key, per-group warnings and timings.

    Raises
    ------
    RunDataError
        When a group column is missing or has an empty value. A group whose runs are bad (or
        whose fit fails) does not raise: it is listed in ``FitCollection.failures``.

    Warns
    -----
    GroupFailureWarning
        When any group failed.
    ConvergenceWarning, DesignWarning, ...
        One warning per kind across all groups, naming how many groups raised it (the
        messages are in ``FitCollection.warnings``).

    Notes
    -----
    Dask workers need the same bayescale installed. Fits in one worker process run one at a
    time (warnings are recorded per fit, and Python's warning filters are process-wide), so
    give workers one thread each and use more worker processes.

    Examples
    --------
    >>> fits = bs.fit_many(df, by="task", law="compute", random_seed=0,
    ...                    parallel="processes")                         # doctest: +SKIP
    >>> fits["mmlu"].forecast(flops=1e23)                               # doctest: +SKIP
    >>> fits.summary()                                                  # doctest: +SKIP
    """
    from .data import _read_csv
    from .model import ScalingModel

    by_list = [by] if isinstance(by, str) else list(by)
    if not by_list or not all(isinstance(c, str) for c in by_list):
        raise ValueError(f"by must name one or more columns, got {by!r}")
    if len(set(by_list)) != len(by_list):
        raise ValueError(f"by names a column twice: {by_list}")
    run_columns = {c for c in (params, tokens, flops, loss) if c is not None}
    clash = [c for c in by_list if c in run_columns or c in _RESERVED]
    if clash:
        raise ValueError(f"group column(s) {clash} clash with a run column or an output column "
                         f"({sorted(_RESERVED | run_columns)}); rename them")
    if isinstance(data, pd.DataFrame):
        frame, where = data, "runs DataFrame"
    elif isinstance(data, (str, PathLike)):
        frame, where = _read_csv(Path(data)), str(data)
    else:
        raise TypeError(f"fit_many expects a pandas DataFrame or a CSV path, got {type(data).__name__}")
    if len(frame) == 0:
        raise RunDataError(f"{where}: no runs (the table has a header but no rows)")
    model = ScalingModel(law, priors=priors, likelihood=likelihood)  # bad law/priors raise now
    if random_seed is None:
        random_seed = int(np.random.SeedSequence().entropy % (2**31))
    elif not isinstance(random_seed, (int, np.integer)) or random_seed < 0:
        raise ValueError(f"random_seed must be a whole number >= 0, got {random_seed!r}")
    kwargs = _fit_kwargs(draws, tune, chains, sampler, check, cores, parallel)

    groups = _group_frames(frame, by_list, where)
    tasks, early = [], {}
    for position, (key, group_frame) in enumerate(groups):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs = load_runs(group_frame, params=params, tokens=tokens, flops=flops, loss=loss)
            runs = Runs(frame=runs.frame, source=f"{where} [{_describe(key, by_list)}]",
                        extra=runs.extra)
            model.law.check_runs(runs)
        except Exception as exc:  # bad runs in one group: record, fit the others
            if isinstance(exc, RunDataError):
                lines = (" (rows are numbered by their line in the file)"
                         if frame.attrs.get("csv_line_offset") is not None else "")
                exc = RunDataError(f"group {_describe(key, by_list)}{lines}: {exc}")
            early[position] = _Outcome(position=position, key=key, fit=None,
                                       failure=_failure(key, exc), warnings=[], seconds=0.0,
                                       worker="", peak_rss_mb=float("nan"))
            continue
        task = _Task(position=position, key=key, runs=runs, law=law, priors=priors,
                     likelihood=likelihood, seed=group_seed(int(random_seed), key),
                     fit_kwargs=kwargs)
        tasks.append((task, [(w.category.__name__, str(w.message)) for w in caught]))
    started = time.perf_counter()
    fitted = _execute([t for t, _ in tasks], parallel, client, max_workers, start_method,
                      callback, progressbar, failed_before=len(early))
    wall = time.perf_counter() - started
    for (task, load_warnings), outcome in zip(tasks, fitted):
        outcome.warnings = load_warnings + outcome.warnings
        early[task.position] = outcome
    outcomes = [early[i] for i in range(len(groups))]
    settings = {"by": by_list, "law": model.law.name, "likelihood": likelihood,
                "random_seed": int(random_seed), "draws": int(draws), "tune": int(tune),
                "chains": int(chains), "sampler": sampler, "parallel": parallel,
                "wall_seconds": wall, "columns": {"params": params, "tokens": tokens,
                                                   "flops": flops, "loss": loss}}
    collection = FitCollection._from_outcomes(by_list, outcomes, settings,
                                              {t.position: t.seed for t, _ in tasks})
    collection._warn()
    return collection


def _describe(key: Key, by: Sequence[str]) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c}={v!r}" for c, v in zip(by, parts))


# -- the collection ------------------------------------------------------------------------

class FitCollection(Mapping):
    """Fits of one law to many groups of runs, by group key (see :func:`fit_many`).

    A read-only mapping of group key to :class:`~bayescale.ScalingFit` over the groups that
    were fitted; ``fits["mmlu"]`` (one ``by`` column) or ``fits[("mmlu", "mix-a")]``.

    Attributes
    ----------
    by : list of str
        The group columns.
    failures : dict
        Group key -> :class:`GroupFailure`, for the groups that could not be fitted.
    warnings : dict
        Group key -> list of "Category: message" strings raised while loading and fitting it.
    info : DataFrame
        One row per group (fitted or not): the group columns, ``status`` ("ok" or "failed"),
        ``error``, ``seed``, ``seconds`` (of its fit), ``worker`` (host:pid) and
        ``peak_rss_mb`` (of the process that fitted it, when it finished).
    settings : dict
        How the collection was made (law, seed, sampler settings, parallel, wall seconds).
    """

    def __init__(self, by: Sequence[str], fits: Mapping[Key, "ScalingFit"],
                 failures: Mapping[Key, GroupFailure] | None = None,
                 warnings_by_group: Mapping[Key, list[str]] | None = None,
                 info: pd.DataFrame | None = None, settings: Mapping[str, Any] | None = None,
                 order: Sequence[Key] | None = None) -> None:
        self.by = list(by)
        self._fits = dict(fits)
        self.failures = dict(failures or {})
        self.warnings = {k: list(v) for k, v in (warnings_by_group or {}).items()}
        self.groups = list(order) if order is not None else [*self._fits, *self.failures]
        self.info = info if info is not None else pd.DataFrame(
            [{**self._key_columns(k), "status": "ok" if k in self._fits else "failed"}
             for k in self.groups])
        self.settings = dict(settings or {})

    @classmethod
    def _from_outcomes(cls, by: list[str], outcomes: list[_Outcome], settings: dict,
                       seeds: Mapping[int, int]) -> "FitCollection":
        fits = {o.key: o.fit for o in outcomes if o.failure is None}
        failures = {o.key: o.failure for o in outcomes if o.failure is not None}
        found = {o.key: [f"{c}: {m}" for c, m in o.warnings] for o in outcomes if o.warnings}
        collection = cls(by, fits, failures, found, settings=settings,
                         order=[o.key for o in outcomes])
        collection.info = pd.DataFrame([{
            **collection._key_columns(o.key), "status": "ok" if o.failure is None else "failed",
            "error": "" if o.failure is None else str(o.failure),
            "seed": seeds.get(o.position, -1), "seconds": o.seconds, "worker": o.worker,
            "peak_rss_mb": o.peak_rss_mb} for o in outcomes])
        return collection

    # -- mapping -----------------------------------------------------------------------

    def _normalise(self, key: Key) -> Key:
        if len(self.by) == 1 and isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if isinstance(key, np.generic):
            key = key.item()
        return key

    def __getitem__(self, key: Key) -> "ScalingFit":
        key = self._normalise(key)
        if key in self._fits:
            return self._fits[key]
        if key in self.failures:
            raise KeyError(f"group {_describe(key, self.by)} was not fitted: {self.failures[key]}")
        raise KeyError(f"no group {key!r}; groups are {self.groups[:10]}"
                       + (" ..." if len(self.groups) > 10 else ""))

    def __iter__(self) -> Iterator[Key]:
        return (k for k in self.groups if k in self._fits)

    def __len__(self) -> int:
        return len(self._fits)

    def __repr__(self) -> str:
        return (f"FitCollection(by={self.by}, law={self.settings.get('law')!r}, "
                f"fitted={len(self._fits)}, failed={len(self.failures)})")

    def _key_columns(self, key: Key) -> dict[str, Any]:
        parts = key if isinstance(key, tuple) else (key,)
        return dict(zip(self.by, parts))

    def _warn(self) -> None:
        if self.failures:
            shown = "; ".join(f"{_describe(k, self.by)}: {f}" for k, f in
                              list(self.failures.items())[:3])
            more = f" and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
            warnings.warn(f"{len(self.failures)} of {len(self.groups)} groups could not be fitted "
                          f"({shown}{more}); the other fits are kept, the errors are in "
                          "FitCollection.failures", GroupFailureWarning,
                          skip_file_prefixes=PACKAGE_FILES)
        by_category: dict[str, list[Key]] = {}
        for key, messages in self.warnings.items():
            for category in dict.fromkeys(m.split(":", 1)[0] for m in messages):
                by_category.setdefault(category, []).append(key)
        for category, keys in by_category.items():
            names = ", ".join(_describe(k, self.by) for k in keys[:3])
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            warnings.warn(f"{category} in {len(keys)} of {len(self.groups)} groups ({names}{more}); "
                          "the messages are in FitCollection.warnings",
                          _warning_class(category), skip_file_prefixes=PACKAGE_FILES)

    # -- tables across groups ----------------------------------------------------------

    def _stack(self, tables: Iterable[tuple[Key, pd.DataFrame]]) -> pd.DataFrame:
        parts = []
        for key, table in tables:
            # A named index (summary's "parameter") becomes a column; a plain one is dropped.
            table = table.reset_index(drop=table.index.name is None)
            for i, (column, value) in enumerate(self._key_columns(key).items()):
                table.insert(i, column, value)
            parts.append(table)
        if not parts:
            return pd.DataFrame(columns=self.by)
        out = pd.concat(parts, ignore_index=True)
        out.attrs = dict(parts[0].attrs)
        return out

    def summary(self, prob: float = 0.94) -> pd.DataFrame:
        """Every fit's parameter summary in one long table.

        Returns
        -------
        DataFrame
            The group columns, ``parameter``, then the columns of
            :meth:`bayescale.ScalingFit.summary` (mean, sd, median, hdi_lower, hdi_upper,
            ess_bulk, ess_tail, r_hat); one row per group and parameter.
        """
        return self._stack((k, fit.summary(prob=prob)) for k, fit in self.items())

    def diagnostics(self) -> pd.DataFrame:
        """One row per fitted group: worst R-hat, lowest bulk ESS, divergences, verdict."""
        rows = []
        for key, fit in self.items():
            d = fit.diagnostics()
            rows.append({**self._key_columns(key), "ok": d.ok, "r_hat_max": d.table["r_hat"].max(),
                         "ess_bulk_min": d.table["ess_bulk"].min(), "divergences": d.divergences,
                         "problems": " ".join(d.problems)})
        return pd.DataFrame(rows, columns=[*self.by, "ok", "r_hat_max", "ess_bulk_min",
                                           "divergences", "problems"])

    def forecast(self, flops: object = None, *, params: object = None, tokens: object = None,
                 prob: float = 0.9, kind: str = "observed") -> pd.DataFrame:
        """Every fit's forecast at the same budgets (or N, D) in one long table.

        Parameters are those of :meth:`bayescale.ScalingFit.forecast`; each fit uses its own
        seed for the noise draws.

        Returns
        -------
        DataFrame
            The group columns, then ``flops``, ``params``, ``tokens``, ``loss_mean``,
            ``loss_median``, ``loss_lower``, ``loss_upper``.
        """
        return self._stack((k, fit.forecast(flops, params=params, tokens=tokens, prob=prob,
                                            kind=kind)) for k, fit in self.items())

    def prob_below(self, target: float, flops: object = None, *, params: object = None,
                   tokens: object = None, mode: str = "median", kind: str = "observed",
                   mcse: str = "iid") -> pd.DataFrame:
        """P(loss ≤ target) at the same budgets (or N, D) for every group, in one table.

        Parameters are those of :meth:`bayescale.ScalingFit.prob_below` (``mcse`` defaults
        to the fast ``"iid"`` here, as there are many fits).

        Returns
        -------
        DataFrame
            The group columns, then ``flops``, ``params``, ``tokens``, ``prob``, ``mcse``.
        """
        def as_list(value: object) -> object:
            return None if value is None else np.atleast_1d(np.asarray(value, dtype=float))

        return self._stack((k, fit.prob_below(target, as_list(flops), params=as_list(params),
                                              tokens=as_list(tokens), mode=mode, kind=kind,
                                              mcse=mcse)) for k, fit in self.items())

    # -- files -------------------------------------------------------------------------

    def save(self, directory: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Save every fit to its own netCDF file in ``directory``, with an ``index.json``.

        The directory is written beside its destination under a temporary name and renamed
        into place when complete, so a killed save leaves no half-written collection. The
        index lists every group (failed ones with their error) and each file's SHA-256.

        Parameters
        ----------
        directory : path
            Created by the save; may exist only if empty, or (with ``overwrite=True``) if it
            holds a saved collection.
        overwrite : bool
            Replace a collection saved there before. A directory that is not a saved
            collection is never replaced.

        Returns
        -------
        pathlib.Path
            The directory written.

        Raises
        ------
        FileExistsError
            When ``directory`` exists and may not be replaced.
        FileNotFoundError
            When its parent directory does not exist.
        """
        target = Path(directory)
        if not target.parent.is_dir():
            raise FileNotFoundError(f"directory {str(target.parent)!r} does not exist")
        replace_old = False
        if target.exists() or target.is_symlink():
            if not target.is_dir() or target.is_symlink():
                raise FileExistsError(f"{str(target)!r} exists and is not a directory")
            if any(target.iterdir()):
                if not (target / INDEX_NAME).is_file() or not _is_index(target / INDEX_NAME):
                    raise FileExistsError(f"{str(target)!r} is a non-empty directory that is not "
                                          "a saved FitCollection; choose another directory")
                if not overwrite:
                    raise FileExistsError(f"{str(target)!r} holds a saved FitCollection; pass "
                                          "overwrite=True (CLI: --force) to replace it")
                replace_old = True
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            entries = []
            for i, key in enumerate(self.groups):
                parts = key if isinstance(key, tuple) else (key,)
                entry: dict[str, Any] = {"key": _key_json(parts)}
                if key in self._fits:
                    name = f"{i:05d}-{_slug(parts)}.nc"
                    self._fits[key].save(staging / name)
                    entry.update(status="ok", file=name, sha256=_file_sha256(staging / name))
                else:
                    failure = self.failures[key]
                    entry.update(status="failed", error_type=failure.error_type,
                                 message=failure.message, traceback=failure.traceback)
                entry["warnings"] = self.warnings.get(key, [])
                entries.append(entry)
            columns = [c for c in self.info.columns if c not in self.by]
            index = {"format": _INDEX_FORMAT, "version": _INDEX_VERSION, "by": self.by,
                     "settings": _json_safe(self.settings), "groups": entries,
                     "info": _json_safe(self.info[columns].to_dict(orient="list"))}
            from ._version import __version__

            index["bayescale_version"] = __version__
            with open(staging / INDEX_NAME, "w", encoding="utf-8") as handle:
                json.dump(index, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(staging, 0o777 & ~_umask())
            if replace_old:
                old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if target.exists():
                    target.rmdir()  # empty: fails (and we stop) if something appeared in it
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _slug(parts: tuple) -> str:
    text = "_".join(str(p) for p in parts)
    cleaned = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in text).strip("-.")
    return cleaned[:60] or "group"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_index(path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle).get("format") == _INDEX_FORMAT
    return False


def load_fits(directory: str | PathLike[str]) -> FitCollection:
    """Load a collection written by :meth:`FitCollection.save`.

    Every fit file is checked against the SHA-256 in the index (and by
    :func:`bayescale.load_fit` against its own checksum), so a missing, swapped or damaged
    file raises rather than loading a different posterior.

    Raises
    ------
    FitFileError
        When the directory has no valid index, or a fit file is missing or damaged.
    """
    from .fit import load_fit

    source = Path(directory)
    index_path = source / INDEX_NAME
    if not index_path.is_file():
        raise FitFileError(f"no {INDEX_NAME} in {str(source)!r}: not a saved FitCollection")
    try:
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError) as exc:
        raise FitFileError(f"{str(index_path)!r} is not readable JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != _INDEX_FORMAT:
        raise FitFileError(f"{str(index_path)!r} is not the index of a saved FitCollection")
    if int(index.get("version", -1)) > _INDEX_VERSION:
        raise FitFileError(f"{str(source)!r} was written by a newer bayescale (index version "
                           f"{index['version']}); upgrade bayescale")
    try:
        by = list(index["by"])
        fits, failures, found, order = {}, {}, {}, []
        for entry in index["groups"]:
            key = _key_from_json(entry["key"], len(by))
            order.append(key)
            if entry.get("warnings"):
                found[key] = list(entry["warnings"])
            if entry["status"] == "ok":
                path = source / entry["file"]
                if Path(entry["file"]).name != entry["file"]:
                    raise ValueError(f"file name {entry['file']!r} leaves the directory")
                if not path.is_file():
                    raise FitFileError(f"{str(source)!r}: the fit of group {_describe(key, by)} "
                                       f"({entry['file']}) is missing")
                if _file_sha256(path) != entry["sha256"]:
                    raise FitFileError(f"{str(path)!r} does not match the index's SHA-256 (changed "
                                       "or damaged since it was saved)")
                fits[key] = load_fit(path)
            else:
                failures[key] = GroupFailure(key=key, error_type=entry["error_type"],
                                             message=entry["message"],
                                             traceback=entry.get("traceback", ""))
        info = pd.DataFrame({c: [k[i] if isinstance(k, tuple) else k for k in order]
                             for i, c in enumerate(by)})
        for column, values in index.get("info", {}).items():
            info[column] = [np.nan if v is None else v for v in values]
    except (KeyError, TypeError, ValueError) as exc:
        raise FitFileError(f"{str(index_path)!r} is damaged or incomplete: {exc}") from exc
    return FitCollection(by, fits, failures, found, info=info, settings=index.get("settings", {}),
                         order=order)
