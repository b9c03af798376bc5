"""What the analysis modules need of a fit, as a Protocol low in the import order.

forecast, risk, allocation, design, plotting and report work on a fit's draws and law; the
concrete :class:`bayescale.fit.ScalingFit` sits above them (its methods delegate to them), so
they type their arguments with :class:`FitLike` instead of importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xarray as xr

    from .data import Runs
    from .laws.base import ScalingLaw
    from .priors import Prior

__all__ = ["FitLike", "ModelLike"]


class FitLike(Protocol):
    """A fitted law: its draws, the runs, the reference scales and the sampler settings."""

    law: "ScalingLaw"
    priors: "Mapping[str, Prior]"
    likelihood: str
    runs: "Runs"
    reference: Mapping[str, float]
    posterior: "xr.Dataset"
    sample_stats: "xr.Dataset"
    settings: dict[str, Any]

    @property
    def n_draws(self) -> int: ...

    def theta(self, expand: bool = False) -> "dict[str, np.ndarray]": ...

    def paper_draws(self) -> "dict[str, np.ndarray]": ...

    def summary(self, prob: float = 0.94, include_sampled: bool = False) -> "pd.DataFrame": ...


class ModelLike(Protocol):
    """What a fit keeps of the model that sampled it (:class:`bayescale.ScalingModel`)."""

    law: "ScalingLaw"
    priors: "Mapping[str, Prior]"
    likelihood: str

    def sampled_parameters(self) -> list[str]: ...
