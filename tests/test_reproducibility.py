"""The same random_seed gives identical posteriors and forecasts, within and across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bayescale as bs

REPO = Path(__file__).resolve().parents[1]
TINY = {"draws": 200, "tune": 200, "chains": 2}

# A separate Python process: fit, forecast, and write every number to an .npz file.
SCRIPT = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    sys.path.insert(0, "tests")
    import bayescale as bs
    from conftest import synthetic_chinchilla_frame

    out, seed = sys.argv[1], int(sys.argv[2])
    runs = bs.load_runs(synthetic_chinchilla_frame())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bs.ScalingModel("chinchilla").fit(runs, draws=200, tune=200, chains=2,
                                                random_seed=seed)
        table = fit.forecast(flops=[1e21, 1e23])
    arrays = {f"posterior/{n}": fit.posterior[n].to_numpy() for n in fit.posterior.data_vars}
    arrays.update({f"forecast/{c}": table[c].to_numpy() for c in table.columns})
    np.savez(out, **arrays)
""")


def fit_in_new_process(tmp_path: Path, name: str, seed: int) -> dict[str, np.ndarray]:
    out = tmp_path / f"{name}.npz"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(seed)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def fit_here(runs, seed):
    return bs.ScalingModel("chinchilla").fit(runs, **TINY, random_seed=seed, check=False)


def test_same_seed_same_posterior_and_forecast_in_one_process(synthetic_runs):
    first, second = fit_here(synthetic_runs, 123), fit_here(synthetic_runs, 123)
    for name in first.posterior.data_vars:
        np.testing.assert_array_equal(first.posterior[name], second.posterior[name])
    assert first.forecast(flops=[1e21, 1e23]).equals(second.forecast(flops=[1e21, 1e23]))
    other = fit_here(synthetic_runs, 124)
    assert not np.array_equal(first.posterior["alpha"], other.posterior["alpha"])


@pytest.mark.slow
def test_same_seed_same_posterior_and_forecast_across_processes(tmp_path):
    first = fit_in_new_process(tmp_path, "first", 2024)
    second = fit_in_new_process(tmp_path, "second", 2024)
    assert sorted(first) == sorted(second)
    assert {"posterior/alpha", "posterior/beta", "forecast/loss_median"} <= set(first)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert first["posterior/alpha"].shape == (2, 200)
