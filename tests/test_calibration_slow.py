"""Calibration of the default fit past the largest run: real studies and a simulation (slow).

The limits are looser than the benchmark's targets (benchmarks/bench_calibration.py runs
the full protocol); they catch a predictive that has gone back to bands that only know the
scatter inside the fitted range, or one that balloons when the law is true.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.backtest import score_draws, split_runs
from bayescale.forecast import loss_draws
from conftest import EPOCH_TRUTH, chinchilla_loss

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SETTINGS = {"draws": 500, "tune": 500, "chains": 2, "random_seed": 3, "check": False}

pytestmark = pytest.mark.slow


def _fit(runs, law="chinchilla"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bs.ScalingModel(law).fit(runs, **SETTINGS)


def _coverage(fit, test):
    points = test.frame[["flops", "params", "tokens"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = loss_draws(fit, points, kind="observed")
    _, score = score_draws(test.column("loss"), draws, prob=(0.5, 0.9))
    return score


def _studies():
    if not DATA.is_dir():
        pytest.skip("shared data folder absent")
    chinchilla = bs.load_dataset("chinchilla", drop_highest_loss=5)
    yield "chinchilla", chinchilla, split_runs(chinchilla, holdout_frac=0.2)
    olmo = pd.read_csv(DATA / "olmo_ladder_bhagia2024.csv")
    runs = bs.load_runs(olmo[["params", "tokens", "flops", "c4_loss"]].rename(columns={"c4_loss": "loss"}))
    yield "olmo", runs, (olmo["params"] > 2e9).to_numpy()
    porian = pd.read_csv(DATA / "porian2024_isoflops.csv")
    head = porian[porian["config"] == "rw|tuned|short|const|standard|val"].reset_index(drop=True)
    runs = bs.load_runs(head[["params", "tokens", "flops", "loss"]])
    yield "porian headline", runs, (head["flops"] >= 1.6e18).to_numpy()
    # "Reproducing Kaplan" (long warm-up): the law misses its larger budgets by up to 25%
    # (warm-up dominates the small budgets; docs/trust.md).
    kaplan = porian[porian["config"] == "rw|base|long|kaplan|standard|val"].reset_index(drop=True)
    runs = bs.load_runs(kaplan[["params", "tokens", "flops", "loss"]])
    yield "porian kaplan", runs, (kaplan["flops"] >= 1.6e18).to_numpy()


def test_default_bands_cover_held_out_larger_runs():
    rows = {}
    for name, runs, mask in _studies():
        fit = _fit(runs.subset(~mask))
        rows[name] = {**_coverage(fit, runs.subset(mask)).to_dict(),
                      "today_90": _coverage(fit.with_discrepancy(None), runs.subset(mask))["coverage_90"]}
    table = pd.DataFrame(rows).T
    print(table[["n_test", "coverage_50", "coverage_90", "today_90", "rmsle"]])
    # Every study equally: the 90% band covers most held-out runs, more than today's did.
    assert table["coverage_90"].mean() >= 0.75
    assert table["coverage_90"].mean() >= table["today_90"].mean() + 0.05
    assert table["coverage_90"].min() >= 0.5
    assert 0.2 <= table["coverage_50"].mean() <= 0.8
    # The isoFLOP grid's evidence model: 0.875 here; the shared-z model alone gave 0.625
    # (and 0.43 in the benchmark's leave-one-study-out run).
    assert table.loc["porian kaplan", "coverage_90"] >= 0.75


def test_law_exactly_true_bands_do_not_balloon():
    """Chinchilla's design, Epoch's law, 1% normal noise: held-out 90% coverage ≤ 97% (plus
    sampling slack) and a 90% width at 10x the largest fitted compute at most 2x the width
    without δ (the benchmark's target is 1.5x; it measures 1.3x over six data sets, README
    "Does it forecast well?"): eight inner backtests that forecast as well as the noise pull
    τ well below the corpus prior's median.
    """
    design = bs.load_dataset("chinchilla", drop_highest_loss=5).frame
    n, d = design["params"].to_numpy(), design["tokens"].to_numpy()
    rng = np.random.default_rng(7)
    covered, ratios = [], []
    for _ in range(3):
        loss = chinchilla_loss(n, d, EPOCH_TRUTH) * np.exp(0.01 * rng.standard_normal(n.size))
        runs = bs.load_runs(pd.DataFrame({"params": n, "tokens": d, "loss": loss}))
        mask = split_runs(runs, holdout_frac=0.2)
        fit = _fit(runs.subset(~mask))
        covered.append(_coverage(fit, runs.subset(mask))["coverage_90"])
        at = 10 * float(runs.subset(~mask).column("flops").max())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wide = fit.forecast(flops=[at])
            narrow = fit.with_discrepancy(None).forecast(flops=[at])
        ratios.append(float(np.log(wide["loss_upper"] / wide["loss_lower"]).iloc[0]
                            / np.log(narrow["loss_upper"] / narrow["loss_lower"]).iloc[0]))
    print(covered, ratios)
    assert np.mean(covered) <= 0.99
    assert np.mean(ratios) <= 2.0
    assert min(ratios) >= 1.0    # δ only ever adds
