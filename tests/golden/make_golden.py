"""Write the golden saved fits and what they gave when they were made.

Run once with the release whose saved fits must stay readable (0.1.0):

    python tests/golden/make_golden.py

It fits the chinchilla and compute laws to the bundled Chinchilla runs (2 chains × 200
draws, fixed seeds), saves each fit with ``ScalingFit.save`` and records its summary,
forecasts and ``prob_below`` as CSV. ``tests/test_golden.py`` loads the saved fits with the
current code and asserts the same numbers. Do not rerun it after changing the code: the
point is that these files come from the old release.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import bayescale as bs

HERE = Path(__file__).resolve().parent
FLOPS = [1e21, 1e22, 1e23, 1e24]
TARGETS = {"chinchilla": 2.05, "compute": 2.1}
SEEDS = {"chinchilla": 1, "compute": 2}


def outputs(fit: bs.ScalingFit) -> dict:
    """Everything the golden test compares, as DataFrames."""
    law = fit.law.name
    return {
        "summary": fit.summary(),
        "forecast_observed": fit.forecast(flops=FLOPS),
        "forecast_mean": fit.forecast(flops=FLOPS, kind="mean", prob=0.5),
        "prob_below": fit.prob_below(TARGETS[law], flops=FLOPS),
    }


def main() -> None:
    runs = bs.load_dataset("chinchilla")
    meta = {"bayescale_version": bs.__version__, "flops": FLOPS, "targets": TARGETS,
            "seeds": SEEDS, "draws": 200, "tune": 200, "chains": 2}
    for law in ("chinchilla", "compute"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bs.ScalingModel(law).fit(runs, draws=200, tune=200, chains=2,
                                           random_seed=SEEDS[law], check=False)
            fit.save(HERE / f"{law}_v0.1.0.nc", overwrite=True)
            for name, table in outputs(fit).items():
                table.to_csv(HERE / f"{law}_{name}.csv", float_format="%.17g")
    (HERE / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
