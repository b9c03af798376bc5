"""Issue 14: a sampler that cannot run becomes a SamplingError naming the priors and data, and
the process exits cleanly (it used to segfault at exit after nutpie's "All initialization
points failed")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bayescale as bs
from bayescale.exceptions import SamplingError

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import bayescale as bs
    from conftest import synthetic_chinchilla_frame
    runs = bs.load_runs(synthetic_chinchilla_frame())
    priors = {{{prior}}}
    try:
        bs.ScalingModel("chinchilla", priors=priors).fit(runs, draws=50, tune=50, chains=2,
                                                         random_seed=1)
    except bs.SamplingError as exc:
        print("SamplingError:", exc)
""")


@pytest.mark.parametrize("prior, named", [
    ('"a": bs.Prior("Normal", mu=1e308, sigma=1e308)', "a=Prior('Normal', mu=1e+308"),
    ('"alpha": bs.Prior("LogNormal", mu=0, sigma=1e-300)', "alpha=Prior('LogNormal', mu=0, sigma=1e-300)"),
])
def test_extreme_priors_fail_cleanly_in_a_subprocess(prior, named):
    for _ in range(1):   # nutpie is not reached now; the crash at exit came in 4 of 6 runs
        done = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=str(TESTS), prior=prior)],
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "SamplingError: the sampler could not start" in done.stdout
        assert named in done.stdout and "80 runs" in done.stdout
        assert "Traceback" not in done.stderr


def test_a_panic_in_nutpie_becomes_a_sampling_error(synthetic_runs, monkeypatch):
    import nutpie

    class PanicException(BaseException):   # what pyo3 raises for a Rust panic
        pass

    def panic(*args, **kwargs):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(nutpie, "sample", panic)
    with pytest.raises(SamplingError, match=r"nutpie failed \(PanicException: called `Option"):
        bs.ScalingModel("chinchilla").fit(synthetic_runs, draws=50, tune=50, chains=2,
                                          random_seed=1)


def test_sampler_errors_exit_the_cli_with_a_message(tmp_path, capsys, monkeypatch):
    import nutpie

    from bayescale.cli import main
    from conftest import synthetic_chinchilla_frame

    def fail(*args, **kwargs):
        raise RuntimeError("All initialization points failed\\n\\nCaused by: ...")

    monkeypatch.setattr(nutpie, "sample", fail)
    csv = tmp_path / "runs.csv"
    synthetic_chinchilla_frame().to_csv(csv, index=False)
    assert main(["fit", str(csv), "--draws", "50", "--tune", "50"]) == 2
    err = capsys.readouterr().err
    assert "bayescale: error: the sampler could not start: nutpie failed (RuntimeError: All " \
           "initialization points failed" in err
