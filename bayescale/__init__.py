"""bayescale: Bayesian neural scaling laws with honest uncertainty.

Fit a scaling law (Chinchilla's L = E + A/N^α + B/D^β, or loss against compute) to your
training runs by MCMC, then forecast loss at larger compute with bands, the chance of reaching
a target within a budget, and the compute-optimal split of a budget between N and D.

>>> import bayescale as bs
>>> runs = bs.load_dataset("chinchilla")
>>> fit = bs.ScalingModel("chinchilla").fit(runs, random_seed=0)   # doctest: +SKIP
>>> fit.forecast(flops=[1e23, 1e24])                               # doctest: +SKIP
"""

from __future__ import annotations

from .backtest import Backtest, backtest, compare
from .budget import Budget, Hardware
from .curves import CurveFit, CurveModel, load_curve_fit
from .data import Runs, load_runs
from .datasets import load_dataset
from .design import check_design
from .exceptions import (
    ArgumentError,
    ArgumentTypeError,
    BayescaleError,
    ConvergenceWarning,
    DesignWarning,
    ExtrapolationWarning,
    FitFileError,
    ModelMismatchError,
    NonFiniteWarning,
    NotFittedError,
    OutputExistsError,
    OutputFolderMissingError,
    OutputPathError,
    PriorError,
    RunDataError,
    SamplingError,
    UnreachableTargetWarning,
)
from ._version import __version__
from .fit import Diagnostics, ScalingFit, load_fit
from .laws import ChinchillaLaw, ComputeLaw, ScalingLaw, available_laws, get_law
from .many import FitCollection, GroupFailure, GroupFailureWarning, fit_many, load_fits
from .model import ScalingModel
from .priors import Prior
from .report import write_report


__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "Backtest",
    "BayescaleError",
    "Budget",
    "ChinchillaLaw",
    "ComputeLaw",
    "ConvergenceWarning",
    "DesignWarning",
    "Diagnostics",
    "ExtrapolationWarning",
    "FitFileError",
    "Hardware",
    "ModelMismatchError",
    "NonFiniteWarning",
    "NotFittedError",
    "OutputExistsError",
    "OutputFolderMissingError",
    "OutputPathError",
    "Prior",
    "PriorError",
    "RunDataError",
    "SamplingError",
    "Runs",
    "ScalingFit",
    "ScalingLaw",
    "ScalingModel",
    "UnreachableTargetWarning",
    "__version__",
    "available_laws",
    "backtest",
    "check_design",
    "compare",
    "get_law",
    "load_dataset",
    "load_fit",
    "load_runs",
    "write_report",
    # many fits at once (bayescale.many)
    "FitCollection",
    "GroupFailure",
    "GroupFailureWarning",
    "fit_many",
    "load_fits",
    # learning curves (bayescale.curves)
    "CurveFit",
    "CurveModel",
    "load_curve_fit",
]
