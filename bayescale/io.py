"""Saving and loading fits as netCDF, and atomic file writing.

This is the one module that knows the on-disk container: an ``xarray.DataTree`` with groups
``posterior``, ``sample_stats`` and ``observed_data`` (the runs), and the law, priors,
likelihood, reference scales and sampler settings as JSON attributes of the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ._protocols import FitLike
from ._validate import output_path
from ._version import __version__
from .data import STANDARD_COLUMNS, Runs
from .exceptions import FitFileError, OutputPathError
from .laws import get_law
from .priors import Prior

__all__ = ["save_fit", "read_fit", "atomic_write", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
_FORMAT_NAME = "bayescale-fit"
_ENGINE = "netcdf4"


@contextlib.contextmanager
def atomic_write(path: str | PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it over ``path``.

    Write the whole output to the yielded path. An interrupted write (exception, kill)
    leaves any existing file untouched; at worst a ``.<name>.*.tmp`` file remains beside it.

    Raises
    ------
    OutputExistsError
        When ``path`` exists and ``overwrite`` is False (a ``FileExistsError``).
    OutputPathError
        When the folder of ``path`` is missing or unwritable, or ``path`` is a folder; the
        message names ``path``, never the temporary file.
    """
    target = output_path(path, overwrite=overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    # mkstemp creates the file 0600; give the result the permissions a plain open() would.
    current_umask = os.umask(0)
    os.umask(current_umask)
    os.chmod(tmp_name, 0o666 & ~current_umask)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(tmp_name, target)
        except OSError as exc:
            raise OutputPathError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _checksum(attrs: dict, groups: dict[str, xr.Dataset]) -> str:
    """SHA-256 of the attributes and every data value, in a canonical byte form.

    netCDF/HDF5 keep no checksum of the data, so a flipped byte in a posterior chunk would
    otherwise load silently as a different posterior (or as NaN runs).
    """
    digest = hashlib.sha256()
    for key in sorted(k for k in attrs if k != "checksum"):
        digest.update(f"{key}={attrs[key]}\n".encode("utf-8"))
    for group in sorted(groups):
        dataset = groups[group]
        for name in sorted(dataset.data_vars):
            values = np.ascontiguousarray(np.asarray(dataset[name].values, dtype="<f8"))
            digest.update(f"{group}/{name}{values.shape}\n".encode("utf-8"))
            digest.update(values.tobytes())
    return digest.hexdigest()


def _to_tree(fit: FitLike) -> xr.DataTree:
    runs = fit.runs.frame
    observed = xr.Dataset({name: ("run", runs[name].to_numpy()) for name in runs.columns})
    attrs = {
        "format": _FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "law": fit.law.name,
        "likelihood": fit.likelihood,
        "priors": json.dumps({k: v.to_dict() for k, v in fit.priors.items()}, sort_keys=True),
        "reference": json.dumps(fit.reference, sort_keys=True),
        "settings": json.dumps(fit.settings, sort_keys=True),
        "runs_source": fit.runs.source,
    }
    if getattr(fit, "discrepancy", None) is not None:
        # Optional: files without it (bayescale 0.1.0) load with no discrepancy.
        attrs["discrepancy"] = json.dumps(fit.discrepancy.to_dict(), sort_keys=True)
    if getattr(fit.runs, "run", None) is not None:
        # Optional: which run each row (checkpoint) belongs to; files without it load as
        # one run per row, as before.
        attrs["run_ids"] = json.dumps([str(r) for r in fit.runs.run])
    if getattr(fit.runs, "group", None) is not None:
        # Optional: the runs' group labels (str or numbers), absent for ungrouped runs.
        attrs["run_groups"] = json.dumps({"column": fit.runs.group_column,
                                          "labels": list(fit.runs.group.tolist())})
    curves = getattr(fit, "curve_attributes", None)
    if curves is not None:
        # Optional: a learning-curve fit (bayescale.CurveFit): its runs' planned lengths.
        attrs["curves"] = json.dumps(curves(), sort_keys=True)
    attrs["bayescale_version"] = __version__
    groups = {"posterior": fit.posterior, "sample_stats": fit.sample_stats,
              "observed_data": observed}
    groups.update(_downstream_groups(fit, attrs))
    attrs["checksum"] = _checksum(attrs, groups)
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **groups})


def save_fit(fit: FitLike, path: str | PathLike[str], *, overwrite: bool = False) -> None:
    """Write a fit to a netCDF file atomically (temporary file, then rename).

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is False.
    """
    output_path(path, overwrite=overwrite)  # a bad path fails before any work
    tree = _to_tree(fit)
    with atomic_write(path, overwrite=overwrite) as tmp_path:
        tree.to_netcdf(tmp_path, engine=_ENGINE)


def _check_contents(law, priors: dict, likelihood: str, posterior: xr.Dataset,
                    frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> None:
    """What a checksum cannot promise (files written before checksums have none): the law's
    parameters are all there, the draws are finite, the runs are positive. ``extra``: further
    parameters the fit's model has (a curve fit's)."""
    noise = ["sigma"] + (["nu"] if likelihood == "student_t" else []) + list(extra)
    expected = [*law.parameter_domains, *noise]
    sampled = [n for n in expected if n not in priors or priors[n].dist != "Fixed"]
    missing = [n for n in sampled if n not in posterior.data_vars]
    missing += [n for n in posterior.data_vars if n not in expected   # another law's draws
                and not n.startswith(("pop_", "popsd_"))]  # a grouped fit's population
    if missing or any(n not in priors for n in expected):
        raise ValueError(f"it says law={law.name!r} but its posterior has "
                         f"{sorted(posterior.data_vars)} and priors {sorted(priors)} "
                         f"(mismatched: {missing or sorted(set(expected) - set(priors))}); the law "
                         "attribute does not match the draws")
    for name in sampled:
        values = np.asarray(posterior[name].values, dtype=np.float64)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"posterior draws of {name!r} are empty or not all finite "
                             "(NaN or inf); the file was damaged or written by hand")
    for column in ("loss", "flops"):
        if not (np.isfinite(frame[column]) & (frame[column] > 0)).all():
            raise ValueError(f"the runs' {column} column has values that are not finite "
                             "positive numbers")


def read_fit(path: str | PathLike[str], *, curves: bool = False) -> dict[str, Any]:
    """Read a fit file written by :func:`save_fit` into the fields of a ScalingFit.

    :func:`bayescale.load_fit` builds the fit from them. Run columns beyond the standard
    four (declared inputs such as ``unique_tokens``) come back as saved. ``curves=True``
    reads a learning-curve fit (:meth:`bayescale.CurveFit.save`; its ``curves`` field holds
    the runs' planned lengths) and refuses any other.

    Raises
    ------
    FitFileError
        When the file is missing, truncated, corrupted, or not a bayescale fit.
    """
    source = Path(path)
    if not source.is_file():
        raise FitFileError(f"no fit file at {str(source)!r}")
    try:
        with xr.open_datatree(source, engine=_ENGINE) as opened:
            tree = opened.load()
    except Exception as exc:  # h5py/netCDF raise many types for damaged files
        raise FitFileError(f"{str(source)!r} is not a readable netCDF fit file (truncated or "
                           f"corrupted?): {type(exc).__name__}: {exc}") from exc
    attrs = tree.attrs
    if attrs.get("format") != _FORMAT_NAME:
        raise FitFileError(f"{str(source)!r} is a netCDF file but not a bayescale fit "
                           f"(no format={_FORMAT_NAME!r} attribute)")
    try:
        version = int(attrs.get("schema_version", -1))
    except (TypeError, ValueError):
        raise FitFileError(f"{str(source)!r} has schema_version="
                           f"{attrs.get('schema_version')!r}: expected a whole number "
                           f"(≤ {SCHEMA_VERSION})") from None
    if version > SCHEMA_VERSION:
        raise FitFileError(f"{str(source)!r} was written by a newer bayescale (schema {version}); "
                           f"this version reads schema ≤ {SCHEMA_VERSION}: upgrade bayescale")
    try:
        for group in ("posterior", "sample_stats", "observed_data"):
            if group not in tree.children:
                raise KeyError(f"group {group!r} missing")
        law = get_law(str(attrs["law"]))
        priors = {k: Prior.from_dict(v) for k, v in json.loads(attrs["priors"]).items()}
        reference = {k: float(v) for k, v in json.loads(attrs["reference"]).items()}
        settings = json.loads(attrs["settings"])
        observed = tree["observed_data"].to_dataset()
        names = [*STANDARD_COLUMNS, *(n for n in observed.data_vars if n not in STANDARD_COLUMNS)]
        frame = pd.DataFrame({name: np.asarray(observed[name].values, dtype=np.float64)
                              for name in names})
        run_ids = None
        if "run_ids" in attrs:
            run_ids = np.array(json.loads(attrs["run_ids"]), dtype=object)
            if run_ids.shape != (len(frame),):
                raise ValueError(f"it has {run_ids.size} run ids for {len(frame)} runs")
        group_labels, group_column = None, None
        if "run_groups" in attrs:
            stored = json.loads(attrs["run_groups"])
            group_labels = np.empty(len(stored["labels"]), dtype=object)
            group_labels[:] = stored["labels"]
            group_column = stored.get("column")
            if group_labels.size != len(frame):
                raise ValueError(f"it has {group_labels.size} group labels for {len(frame)} runs")
        runs = Runs(frame=frame, source=str(attrs.get("runs_source", "saved fit")),
                    run=run_ids, group=group_labels, group_column=group_column)
        posterior = tree["posterior"].to_dataset()
        sample_stats = tree["sample_stats"].to_dataset()
        likelihood = str(attrs["likelihood"])
        discrepancy = None
        if "discrepancy" in attrs:
            from .discrepancy import Discrepancy

            discrepancy = Discrepancy.from_dict(json.loads(attrs["discrepancy"]))
        extra_groups = {name: tree[name].to_dataset() for name in _DOWNSTREAM_GROUPS
                        if name in tree.children}
        # Files written before checksums were added have none; they load unchecked.
        if "checksum" in attrs and attrs["checksum"] != _checksum(
                dict(attrs), {"posterior": posterior, "sample_stats": sample_stats,
                              "observed_data": observed, **extra_groups}):
            raise ValueError("its checksum does not match its contents (corrupted on disk or "
                             "in transfer); save the fit again")
        if ("curves" in attrs) != curves:
            raise FitFileError(
                f"{str(source)!r} is a learning-curve fit: load it with bayescale.load_curve_fit"
                if not curves else
                f"{str(source)!r} is not a learning-curve fit: load it with bayescale.load_fit")
        # a curve fit's own parameters (kappa only with the cosine schedule term)
        extra = (("sigma_run", "rho") + (("kappa",) if settings.get("schedule") == "cosine" else ())
                 if curves else ())
        _check_contents(law, priors, likelihood, posterior.drop_vars("z_run", errors="ignore")
                        if curves else posterior, frame, extra)
        runs, link = _read_downstream(attrs, extra_groups, runs)
    except (KeyError, ValueError, TypeError) as exc:
        raise FitFileError(f"{str(source)!r} is damaged or incomplete: {exc}") from exc
    fields = {"law": law, "priors": priors, "likelihood": likelihood, "runs": runs,
              "reference": reference, "posterior": posterior, "sample_stats": sample_stats,
              "settings": settings, "discrepancy": discrepancy}
    if link is not None:
        fields["link"] = link
    if curves:
        fields["curves"] = json.loads(attrs["curves"])
    return fields


# -- downstream metric (issue 16): optional, so older files load unchanged ----------------
_DOWNSTREAM_GROUPS = ("outcomes", "link_posterior")


def _downstream_groups(fit: FitLike, attrs: dict) -> dict[str, xr.Dataset]:
    """The runs' metric/task loss and the link's draws as groups; their names in ``attrs``."""
    groups = {}
    runs = fit.runs
    if getattr(runs, "outcomes", None) is not None:
        groups["outcomes"] = xr.Dataset({name: ("run", runs.outcomes[name].to_numpy())
                                         for name in runs.outcomes.columns})
        attrs["outcome_names"] = json.dumps(runs.outcome_names or {}, sort_keys=True)
    link = getattr(fit, "link", None)
    if link is not None:
        groups["link_posterior"] = link.posterior
        attrs["link"] = json.dumps(link.to_dict(), sort_keys=True)
    return groups


def _read_downstream(attrs: Any, groups: dict[str, xr.Dataset], runs: Runs):
    """Inverse of :func:`_downstream_groups`: runs with their outcomes, and the link."""
    from dataclasses import replace

    if "outcomes" in groups:
        data = groups["outcomes"]
        outcomes = pd.DataFrame({name: np.asarray(data[name].values, dtype=np.float64)
                                 for name in data.data_vars})
        names = json.loads(attrs.get("outcome_names", "{}"))
        runs = replace(runs, outcomes=outcomes, outcome_names=names or None)
    link = None
    if "link" in attrs:
        from .downstream import LINK_PARAMETERS, LinkPosterior

        if "link_posterior" not in groups:
            raise KeyError("group 'link_posterior' missing (the file has a link)")
        posterior = groups["link_posterior"]
        missing = [n for n in LINK_PARAMETERS if n not in posterior.data_vars]
        if missing:
            raise ValueError(f"the link's draws lack {missing}")
        link = LinkPosterior.from_dict(json.loads(attrs["link"]), posterior)
    return runs, link
