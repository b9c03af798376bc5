"""The bayescale command: demo, fit, forecast and its error messages."""

from __future__ import annotations

import json

import pytest

from bayescale.cli import main
from conftest import synthetic_chinchilla_frame

FAST_ARGS = ["--draws", "300", "--tune", "300", "--chains", "2", "--no-progress"]


@pytest.fixture
def runs_csv(tmp_path):
    path = tmp_path / "runs.csv"
    synthetic_chinchilla_frame().to_csv(path, index=False)
    return path


def test_demo_prints_tables_and_writes_png(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), *FAST_ARGS]) == 0
    text = capsys.readouterr().out
    for needle in ("E ", "alpha", "beta", "94% interval", "R-hat", "ESS bulk", "50% band",
                   "90% band", "1e+22", "1e+25"):
        assert needle in text
    png = out / "chinchilla_fit.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run refuses to replace the figure without --force.
    assert main(["demo", "--output-dir", str(out), *FAST_ARGS]) == 2


def test_fit_save_then_forecast_from_file(runs_csv, tmp_path, capsys):
    fit_path = tmp_path / "fit.nc"
    assert main(["fit", str(runs_csv), "-o", str(fit_path), *FAST_ARGS]) == 0
    assert fit_path.exists()
    capsys.readouterr()
    assert main(["forecast", str(fit_path), "--flops", "1e21", "1e22", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["kind"] == "observed" and len(payload["forecast"]) == 2
    assert payload["forecast"][0]["loss_median"] > payload["forecast"][1]["loss_median"]
    # Budgets and an explicit plan together: refused, not one of them silently dropped.
    assert main(["forecast", str(fit_path), "--flops", "1e21", "--params", "1e9"]) == 2
    assert ("give either --flops or --params with --tokens, not both"
            in capsys.readouterr().err)


def test_bad_csv_row_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("params,tokens,loss\n1e8,2e9,3.0\n2e8,4e9,oops\n")
    assert main(["fit", str(path), *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "bayescale: error:" in err and "column 'loss', row 1 (line 3 of the file): value 'oops'" in err
    assert "Traceback" not in err


def test_wrong_argument_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["forecast", "runs.csv", "--flops", "lots"])
    assert exc.value.code == 2
    assert "expected a number such as 1e23, got 'lots'" in capsys.readouterr().err
