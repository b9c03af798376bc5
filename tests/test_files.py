"""Files: damaged fits give FitFileError, writes are atomic and never clobber a user's file."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import bayescale as bs
from bayescale import FitFileError
from bayescale.io import atomic_write
from conftest import synthetic_posterior_fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, synthetic_runs):
    """A small fit saved once; tests copy its bytes."""
    fit = synthetic_posterior_fit(synthetic_runs, spread=0.02, draws=200)
    path = tmp_path_factory.mktemp("saved") / "fit.nc"
    fit.save(path)
    return fit, path.read_bytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_round_trip_is_exact(saved, tmp_path):
    fit, data = saved
    loaded = bs.load_fit(write(tmp_path / "fit.nc", data))
    for name in fit.posterior.data_vars:
        np.testing.assert_array_equal(loaded.posterior[name], fit.posterior[name])
    assert loaded.forecast(flops=[1e22]).equals(fit.forecast(flops=[1e22]))


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, tmp_path, keep):
    _, data = saved
    path = write(tmp_path / "cut.nc", data[: int(len(data) * keep)])
    with pytest.raises(FitFileError, match=r"cut\.nc' is not a readable netCDF fit file \(truncated "
                                           r"or corrupted\?\)"):
        bs.load_fit(path)


def test_every_corrupted_region_is_detected_or_harmless(saved, tmp_path):
    """Flip 64 bytes at 40 places: each load fails cleanly or gives the saved posterior exactly.

    netCDF keeps no checksum of the data: without the fit's own SHA-256 a flipped byte in a
    posterior chunk loads silently as a different posterior (seen before the checksum existed).
    """
    fit, data = saved
    reference = fit.forecast(flops=[1e22])
    outcomes = {"error": 0, "intact": 0}
    for fraction in np.linspace(0.01, 0.99, 40):
        damaged = bytearray(data)
        start = int(fraction * len(data))
        for k in range(start, min(start + 64, len(data))):
            damaged[k] ^= 0xA5
        path = write(tmp_path / "flipped.nc", bytes(damaged))
        try:
            loaded = bs.load_fit(path)
        except FitFileError as exc:
            assert "flipped.nc" in str(exc)
            outcomes["error"] += 1
        else:  # the bytes were padding or unused header space
            assert loaded.forecast(flops=[1e22]).equals(reference)
            outcomes["intact"] += 1
    assert outcomes["error"] >= 25, outcomes


def test_checksum_mismatch_message(saved, tmp_path):
    fit, data = saved
    path = write(tmp_path / "fit.nc", data)
    with xr.open_datatree(path) as opened:
        tree = opened.load()
    posterior = tree["posterior"].to_dataset()
    tree["posterior"] = xr.DataTree(posterior.assign(alpha=posterior["alpha"] * 1.0001))
    tampered = tmp_path / "tampered.nc"
    tree.to_netcdf(tampered, engine="netcdf4")
    with pytest.raises(FitFileError, match=r"tampered\.nc' is damaged or incomplete: its checksum "
                                           r"does not match its contents"):
        bs.load_fit(tampered)


def test_foreign_and_junk_files(tmp_path):
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(foreign, engine="netcdf4")
    with pytest.raises(FitFileError, match="is a netCDF file but not a bayescale fit"):
        bs.load_fit(foreign)
    with pytest.raises(FitFileError, match="not a readable netCDF fit file"):
        bs.load_fit(write(tmp_path / "text.nc", b"params,tokens,loss\n1,2,3\n"))
    with pytest.raises(FitFileError, match="not a readable netCDF fit file"):
        bs.load_fit(write(tmp_path / "empty.nc", b""))
    with pytest.raises(FitFileError, match="no fit file at"):
        bs.load_fit(tmp_path)


def test_newer_schema_and_missing_group(saved, tmp_path):
    _, data = saved
    with xr.open_datatree(write(tmp_path / "fit.nc", data)) as opened:
        tree = opened.load()
    newer = tree.copy()
    newer.attrs = {**tree.attrs, "schema_version": 99}
    newer.to_netcdf(tmp_path / "newer.nc", engine="netcdf4")
    with pytest.raises(FitFileError, match=r"newer bayescale \(schema 99\).*upgrade bayescale"):
        bs.load_fit(tmp_path / "newer.nc")
    partial = xr.DataTree.from_dict({"/": xr.Dataset(attrs=dict(tree.attrs)),
                                     "posterior": tree["posterior"].to_dataset()})
    partial.to_netcdf(tmp_path / "partial.nc", engine="netcdf4")
    with pytest.raises(FitFileError, match=r"damaged or incomplete: \"group 'sample_stats' missing\""):
        bs.load_fit(tmp_path / "partial.nc")


# -- writing: atomic, and never over a user's file unless asked --------------------------------

def test_save_refuses_to_overwrite(saved, tmp_path):
    fit, _ = saved
    path = write(tmp_path / "mine.nc", b"my precious results")
    with pytest.raises(FileExistsError, match=r"mine\.nc' exists; pass overwrite=True \(CLI: --force\)"):
        fit.save(path)
    assert path.read_bytes() == b"my precious results"
    fit.save(path, overwrite=True)
    assert bs.load_fit(path).n_draws == fit.n_draws
    assert [p.name for p in tmp_path.iterdir()] == ["mine.nc"]  # no temporary file left


def test_save_into_missing_directory(saved, tmp_path):
    fit, _ = saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit.save(tmp_path / "nope" / "fit.nc")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write(tmp_path / "out.txt", b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path, overwrite=True) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_report_refuses_to_overwrite(saved, tmp_path):
    fit, _ = saved
    path = write(tmp_path / "report.html", b"<p>the lead's copy</p>")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        fit.report(path)
    assert path.read_bytes() == b"<p>the lead's copy</p>"


WRITER = textwrap.dedent("""
    import sys, time
    from bayescale.io import atomic_write

    with atomic_write(sys.argv[1], overwrite=True) as tmp:
        with open(tmp, "wb") as handle:
            for i in range(100_000):           # ~6 GB if never killed
                handle.write(b"x" * 65536)
                handle.flush()
                if i == 20:
                    print("writing", tmp, flush=True)
                time.sleep(0.001)
""")


def test_killed_writer_leaves_the_old_file_intact(tmp_path):
    """SIGKILL a process in the middle of an atomic write: the old file is untouched."""
    path = write(tmp_path / "fit.nc", b"the old fit, byte for byte")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        line = writer.stdout.readline()
        assert line.startswith("writing "), line
        temporary = Path(line.split(" ", 1)[1].strip())
        deadline = time.monotonic() + 30
        while temporary.stat().st_size < 4 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.01)  # let it get well into the write
        assert temporary.stat().st_size >= 4 * 2**20
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"the old fit, byte for byte"
    # What a kill can leave: the documented hidden temporary file beside the target, never
    # a half-written target.
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "fit.nc")
    assert leftovers == [temporary.name] and temporary.name.startswith(".fit.nc.")
    assert temporary.name.endswith(".tmp")
    temporary.unlink()
