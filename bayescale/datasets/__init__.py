"""Real scaling-law data sets shipped with bayescale (attribution in SOURCES.md here)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..data import Runs, load_runs

__all__ = ["load_dataset", "DATASETS"]

#: name -> (file, one-line citation)
DATASETS: dict[str, tuple[str, str]] = {
    "chinchilla": (
        "chinchilla_hoffmann2022_epoch.csv",
        "Hoffmann et al. (2022), Chinchilla Fig. 4, digitised by Besiroglu et al. (Epoch AI, 2024)",
    ),
    "revisiting_nmt": (
        "revisiting_nmt_6enc6dec_alabdulmohsin2022.csv",
        "Alabdulmohsin, Neyshabur, Zhai (2022), Revisiting Neural Scaling Laws, NMT curve '6 Enc, 6 Dec'",
    ),
}

# How a data set's columns map onto load_runs (default: params, tokens, flops, loss).
# A learning curve has one scale variable, examples seen, which 1-D laws read as ``flops``.
_COLUMNS: dict[str, dict[str, str | None]] = {
    "revisiting_nmt": {"params": None, "tokens": None, "flops": "seen_examples"},
}


def load_dataset(name: str, *, drop_highest_loss: int = 0) -> Runs:
    """Load a bundled data set as validated runs.

    Parameters
    ----------
    name : str
        ``"chinchilla"``: the 245 runs of Hoffmann et al. (2022), Figure 4, as digitised by
        Epoch AI (Besiroglu et al. 2024). ``"revisiting_nmt"``: the learning curve of the
        "6 Enc, 6 Dec" machine-translation model of Alabdulmohsin et al. (2022), 11 points of
        log-perplexity against training examples seen (in the ``flops`` column, the scale
        variable of 1-D laws such as ``broken_power``). See ``bayescale/datasets/SOURCES.md``.
    drop_highest_loss : int
        Drop this many runs with the highest loss first. Epoch's replication drops 5
        (undertrained runs far off the law), leaving 240.

    Returns
    -------
    Runs
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {sorted(DATASETS)}")
    if drop_highest_loss < 0:
        raise ValueError(f"drop_highest_loss must be >= 0, got {drop_highest_loss}")
    filename, citation = DATASETS[name]
    with resources.as_file(resources.files(__package__) / filename) as path:
        runs = load_runs(path, **_COLUMNS.get(name, {}))
    runs = Runs(frame=runs.frame, source=f"{name}: {citation}", extra=runs.extra)
    if drop_highest_loss:
        order = np.argsort(runs.column("loss"), kind="stable")
        keep = np.zeros(len(runs), dtype=bool)
        keep[order[: len(runs) - drop_highest_loss]] = True
        runs = runs.subset(keep)
    return runs
