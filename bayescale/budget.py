"""Budgets in the units a lead uses: dollars, GPU-hours, days on a cluster, or FLOPs.

A :class:`Hardware` says what a chip-hour buys: a chip's dense BF16 peak FLOP/s, the share of
it a training run achieves (model FLOPs utilization, MFU) and, optionally, the price of a
chip-hour and the number of chips. A :class:`Budget` is an amount in one unit on that
hardware. The conversions are::

    FLOPs     = chip-hours · 3600 · peak_flops · utilization
    dollars   = chip-hours · price_per_hour
    days      = chip-hours / (24 · chips)

FLOPs are training compute in the 6·N·D convention the fits use, so the utilization must be
MFU measured the same way (6·N per token, no rematerialisation counted), not hardware
utilization.

Uncertain utilization
---------------------
The utilization may be a range (``(0.35, 0.45)``, read as uniform) or a frozen scipy.stats
distribution on (0, 1]. A budget in dollars (or hours, or days) then buys an uncertain
amount of compute ``C(u)``. The utilization is independent of the law's parameters and of
run-to-run noise, so

    P(loss ≤ target | budget) = ∫ P(loss ≤ target | C(u)) dF(u)

exactly. bayescale evaluates this integral with Gauss–Legendre quadrature over the
utilization's quantiles (:data:`UTILIZATION_NODES` nodes): the inner probability is the
ordinary FLOP-budget answer, so every predictive the FLOP calls use (noise, and whatever
else they include) is carried through unchanged. For ``kind="observed"`` the integrand is
smooth and the quadrature error is far below the Monte-Carlo error of the draws; for
``kind="mean"`` it is a step function of the draws and the error is of the order of one draw's
weight. A distribution's quantile function is steep near its ends, so there 16 nodes are
good to about 1e-5 relative (a beta's mean), not to rounding. Forecast bands, per-draw compute bands and cost bands are quantiles of the same
mixture: the draws at every node, weighted by the node's weight. With a single utilization
value there is one node of weight 1, and every answer equals the FLOP-budget answer at
``budget.flops`` exactly.

Where the run sits in (N, D) when utilization is uncertain: the model size is chosen now,
from the compute the budget buys at the median utilization (the posterior-median optimal N,
as for a FLOP budget); the utilization actually reached then sets how many tokens the budget
pays for, D = C(u) / (6·N). (``mode="oracle"`` and compute laws use C(u) directly.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._validate import positive as _positive

if TYPE_CHECKING:
    from ._protocols import FitLike as ScalingFit  # what fit.ScalingFit provides

__all__ = ["Hardware", "Budget", "ACCELERATORS", "UNITS", "UTILIZATION_NODES",
           "known_accelerators", "fmt_usd", "fmt_price", "fmt_hours", "fmt_days"]

#: Dense BF16 peak FLOP/s per chip (no structured sparsity), from the vendors' own pages.
#:
#: - ``A100``: NVIDIA A100 Tensor Core GPU datasheet (SXM, 40 and 80 GB): BF16 Tensor Core
#:   312 TFLOPS (624 with sparsity).
#: - ``H100 SXM``: NVIDIA H100 Tensor Core GPU datasheet: BF16 Tensor Core 1,979 TFLOPS
#:   "with sparsity", i.e. 989.4 dense (the NVIDIA H100 architecture whitepaper's figure).
#: - ``H100 PCIe``: the same datasheet, 1,513 TFLOPS with sparsity: 756 dense.
#: - ``H200``: NVIDIA H200 Tensor Core GPU datasheet (SXM): 1,979 TFLOPS with sparsity,
#:   989.4 dense (the H100's compute with more memory).
#: - ``B200``: NVIDIA HGX B200 datasheet: FP16/BF16 Tensor Core 4.5 PFLOPS per GPU with
#:   sparsity, 2.25 dense (the 1,000 W HGX part; GB200 parts run faster).
#: - ``MI300X``: AMD Instinct MI300X datasheet: peak BF16 1,307.4 TFLOPS dense (2,614.9
#:   with sparsity).
#: - ``TPU v5e``: Google Cloud TPU v5e documentation: peak compute per chip (bf16) 197 TFLOPs.
#: - ``TPU v5p``: Google Cloud TPU v5p documentation: peak compute per chip (bf16) 459 TFLOPs.
#:
#: No prices are bundled: they differ by provider, contract and month; give your own.
ACCELERATORS: dict[str, float] = {
    "A100": 312e12,
    "H100 SXM": 989.4e12,
    "H100 PCIe": 756e12,
    "H200": 989.4e12,
    "B200": 2.25e15,
    "MI300X": 1307.4e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}

#: Units a budget can be given in and compute can be reported in.
UNITS = ("flops", "gpu_hours", "usd", "days")
_UNIT_ALIASES = {"flops": "flops", "flop": "flops", "gpu_hours": "gpu_hours",
                 "chip_hours": "gpu_hours", "gpu-hours": "gpu_hours", "usd": "usd",
                 "dollars": "usd", "$": "usd", "days": "days"}
#: Gauss–Legendre nodes over the utilization's quantiles when it is uncertain.
UTILIZATION_NODES = 16
_SECONDS_PER_HOUR = 3600
_HOURS_PER_DAY = 24


def known_accelerators() -> list[str]:
    """Names of the bundled accelerators (see :data:`ACCELERATORS`)."""
    return list(ACCELERATORS)


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _unit(name: object) -> str:
    key = str(name).lower() if isinstance(name, str) else None
    if key not in _UNIT_ALIASES:
        raise ValueError(f"units must be one of {UNITS}, got {name!r}")
    return _UNIT_ALIASES[key]


def _utilization_fraction(value: float, name: str = "utilization") -> float:
    if not math.isfinite(value) or not 0 < value <= 1:
        hint = (" (a fraction: 40% MFU is 0.4)" if 1 < value <= 100 else "")
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}{hint}")
    return value


@dataclass(frozen=True)
class Hardware:
    """What a chip-hour buys: peak FLOP/s, achieved utilization, price, cluster size.

    Parameters
    ----------
    name : str
        A label (any text; :meth:`named` looks up the bundled table).
    peak_flops : float
        Dense BF16 peak FLOP/s of one chip (no sparsity).
    utilization : float, (low, high) or scipy.stats frozen distribution
        Model FLOPs utilization (MFU) the training run achieves, in (0, 1]: one value; a
        range, read as uniform between its ends; or a distribution on (0, 1] (anything with a
        ``ppf`` method, e.g. ``scipy.stats.beta(40, 60)``).
    price_per_hour : float, optional
        Dollars per chip-hour (needed for budgets and answers in dollars).
    chips : int, optional
        Chips the run uses (needed for days).

    Raises
    ------
    ValueError
        For a non-positive peak, utilization outside (0, 1], a reversed range, a
        non-positive price or a chip count below 1.

    Examples
    --------
    >>> hw = Hardware.named("H100 SXM", utilization=(0.35, 0.45), price_per_hour=2.5, chips=1024)
    >>> hw.peak_flops
    989400000000000.0
    """

    name: str
    peak_flops: float
    utilization: Any
    price_per_hour: float | None = None
    chips: int | None = None
    _nodes: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "peak_flops", _positive("peak_flops", self.peak_flops))
        if self.price_per_hour is not None:
            object.__setattr__(self, "price_per_hour",
                               _positive("price_per_hour", self.price_per_hour))
        if self.chips is not None:
            chips = self.chips
            if isinstance(chips, bool) or not float(chips).is_integer() or chips < 1:
                raise ValueError(f"chips must be a whole number >= 1, got {chips!r}")
            object.__setattr__(self, "chips", int(chips))
        object.__setattr__(self, "_nodes", self._utilization_nodes())

    def _utilization_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        u = self.utilization
        if isinstance(u, (int, float, np.integer, np.floating)) and not isinstance(u, bool):
            value = _utilization_fraction(float(u))
            object.__setattr__(self, "utilization", value)
            return np.array([value]), np.array([1.0])
        p, w = np.polynomial.legendre.leggauss(UTILIZATION_NODES)
        p, w = 0.5 * (p + 1.0), 0.5 * w          # nodes and weights on (0, 1)
        if isinstance(u, (tuple, list)) and len(u) == 2:
            low = _utilization_fraction(_as_float(u[0], "utilization[0]"), "utilization[0]")
            high = _utilization_fraction(_as_float(u[1], "utilization[1]"), "utilization[1]")
            if low > high:
                raise ValueError(f"utilization range must be (low, high) with low <= high, "
                                 f"got {tuple(u)!r}")
            object.__setattr__(self, "utilization", (low, high))
            if low == high:
                return np.array([low]), np.array([1.0])
            return low + (high - low) * p, w
        if hasattr(u, "ppf"):
            nodes = np.asarray(u.ppf(p), dtype=np.float64)
            upper = float(u.ppf(1.0))
            if not (np.all(np.isfinite(nodes)) and np.all(nodes > 0) and upper <= 1.0):
                raise ValueError("a utilization distribution must lie within (0, 1] (MFU is a "
                                 f"fraction); this one has support up to {upper!r}")
            return nodes, w
        raise ValueError("utilization must be a fraction in (0, 1], a (low, high) range or a "
                         f"scipy.stats distribution, got {u!r}")

    @classmethod
    def named(cls, name: str, utilization: Any, price_per_hour: float | None = None,
              chips: int | None = None) -> "Hardware":
        """Hardware from the bundled table of accelerators (:data:`ACCELERATORS`).

        Names match without regard to case, spaces, hyphens or underscores ("h100-sxm").

        Raises
        ------
        ValueError
            For a name not in the table; the message lists the known names.
        """
        wanted = _normalise(str(name))
        for known, peak in ACCELERATORS.items():
            if _normalise(known) == wanted:
                return cls(known, peak, utilization, price_per_hour, chips)
        raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)} "
                         "(or give Hardware(name, peak_flops, utilization, price_per_hour) "
                         "with your chip's dense BF16 peak FLOP/s)")

    # -- utilization -------------------------------------------------------------------

    @property
    def uncertain(self) -> bool:
        """True when the utilization is a range or a distribution (more than one value)."""
        return self._nodes[0].size > 1

    @property
    def median_utilization(self) -> float:
        """The utilization's median (its value, when it is one number)."""
        u = self.utilization
        if not self.uncertain:
            return float(self._nodes[0][0])
        if isinstance(u, tuple):
            return 0.5 * (u[0] + u[1])
        return float(u.ppf(0.5))

    def utilization_quantile(self, level: float) -> float:
        """The utilization's quantile at ``level`` in [0, 1] (its value, when certain)."""
        u = self.utilization
        if not self.uncertain:
            return float(self._nodes[0][0])
        if isinstance(u, tuple):
            return u[0] + (u[1] - u[0]) * float(level)
        return float(u.ppf(level))

    def utilization_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Quadrature nodes (utilizations) and weights summing to 1; one node when certain."""
        nodes, weights = self._nodes
        return nodes.copy(), weights.copy()

    def describe(self) -> str:
        """One line stating the conversion, e.g. for a table's attrs."""
        u = self.utilization
        if not self.uncertain:
            mfu = f"{100 * self._nodes[0][0]:.4g}% MFU"
        elif isinstance(u, tuple):
            mfu = f"{100 * u[0]:.4g}–{100 * u[1]:.4g}% MFU (uniform)"
        else:
            mfu = f"MFU distributed as {getattr(u.dist, 'name', 'given')} (median {100 * self.median_utilization:.3g}%)"
        parts = [f"{self.name}: {self.peak_flops:.4g} peak FLOP/s (dense BF16) at {mfu}"]
        if self.price_per_hour is not None:
            parts.append(f"{fmt_price(self.price_per_hour)} per chip-hour")
        if self.chips is not None:
            parts.append(f"{self.chips:,} chips")
        return "; ".join(parts) + (". FLOPs = chip-hours · 3600 · peak · MFU; dollars = "
                                   "chip-hours · price; days = chip-hours / (24 · chips)")

    # -- conversion --------------------------------------------------------------------

    def _factor(self, unit: str, utilization: float) -> Fraction:
        """Amount in ``unit`` per chip-hour, as an exact rational."""
        if unit == "gpu_hours":
            return Fraction(1)
        if unit == "flops":
            return Fraction(_SECONDS_PER_HOUR) * Fraction(self.peak_flops) * Fraction(utilization)
        if unit == "usd":
            if self.price_per_hour is None:
                raise ValueError(f"dollars need a price: give price_per_hour (dollars per "
                                 f"chip-hour) for {self.name}")
            return Fraction(self.price_per_hour)
        if unit == "days":
            if self.chips is None:
                raise ValueError(f"days need a cluster size: give chips= for {self.name}")
            return Fraction(1, _HOURS_PER_DAY * self.chips)
        raise ValueError(f"units must be one of {UNITS}, got {unit!r}")

    def convert(self, values: object, from_unit: str, to_unit: str,
                utilization: float | None = None) -> np.ndarray:
        """Convert amounts between units, at one utilization (default: the median).

        Exact rational arithmetic with one rounding per value, so a conversion and its
        inverse return the original to within one unit in the last place (most often
        exactly).
        """
        from_unit, to_unit = _unit(from_unit), _unit(to_unit)
        u = self.median_utilization if utilization is None else float(utilization)
        ratio = self._factor(to_unit, u) / self._factor(from_unit, u)
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
        return np.array([float(Fraction(v) * ratio) if math.isfinite(v) else v * float(ratio)
                         for v in array.ravel()], dtype=np.float64).reshape(array.shape)

    def scale(self, from_unit: str, to_unit: str, utilization: float) -> float:
        """The conversion factor as one float (for arrays of draws, where speed matters)."""
        return float(self._factor(_unit(to_unit), utilization)
                     / self._factor(_unit(from_unit), utilization))


def _as_float(value: object, name: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True, eq=False)
class Budget:
    """A training budget: amounts in one unit on given hardware.

    Build one with :meth:`from_dollars`, :meth:`from_gpu_hours`, :meth:`from_days` or
    :meth:`from_flops`; pass it wherever a call takes FLOPs (``fit.forecast``,
    ``fit.prob_below``, ``fit.risk_table``, ``fit.optimal_allocation``).

    Attributes
    ----------
    amount : numpy.ndarray
        The amounts as given (read-only), 1-D.
    unit : str
        One of :data:`UNITS`.
    hardware : Hardware or None
        None only for a FLOP budget given without hardware.
    scalar : bool
        Whether one amount was given as a scalar (calls then return floats where they would
        for one FLOP value).
    """

    amount: np.ndarray
    unit: str
    hardware: Hardware | None = None
    scalar: bool = False

    def __post_init__(self) -> None:
        unit = _unit(self.unit)
        object.__setattr__(self, "unit", unit)
        scalar = np.ndim(self.amount) == 0
        array = np.atleast_1d(np.asarray(self.amount, dtype=np.float64)).copy()
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"a budget is a number or a non-empty 1-D sequence, got shape "
                             f"{array.shape}")
        bad = np.flatnonzero(~np.isfinite(array) | (array <= 0))
        if bad.size:
            raise ValueError(f"budget[{bad[0]}] = {float(array[bad[0]])!r} {unit}: must be a "
                             "finite positive number")
        array.flags.writeable = False
        object.__setattr__(self, "amount", array)
        object.__setattr__(self, "scalar", bool(self.scalar or scalar))
        if self.hardware is not None and not isinstance(self.hardware, Hardware):
            raise ValueError(f"hardware must be a bayescale.Hardware, got {self.hardware!r}")
        if self.hardware is None and unit != "flops":
            raise ValueError(f"a budget in {unit} needs hardware= (a bayescale.Hardware)")
        if self.hardware is not None and unit != "flops":
            self.hardware._factor(unit, self.hardware.median_utilization)  # price/chips given?

    @classmethod
    def from_dollars(cls, usd: object, hardware: Hardware) -> "Budget":
        """A budget in dollars; needs ``hardware.price_per_hour``."""
        return cls(usd, "usd", _need_hardware(hardware))

    @classmethod
    def from_gpu_hours(cls, hours: object, hardware: Hardware) -> "Budget":
        """A budget in chip-hours (GPU-hours or TPU chip-hours)."""
        return cls(hours, "gpu_hours", _need_hardware(hardware))

    @classmethod
    def from_days(cls, days: object, hardware: Hardware) -> "Budget":
        """A budget in days of wall-clock time on ``hardware.chips`` chips."""
        return cls(days, "days", _need_hardware(hardware))

    @classmethod
    def from_flops(cls, flops: object, hardware: Hardware | None = None) -> "Budget":
        """A budget in FLOPs (known compute); hardware only to express it in other units."""
        return cls(flops, "flops", hardware)

    # -- what the budget buys ------------------------------------------------------------

    @property
    def uncertain(self) -> bool:
        """True when the compute bought is uncertain (time or money on uncertain MFU)."""
        return self.unit != "flops" and self.hardware is not None and self.hardware.uncertain

    @property
    def flops(self) -> np.ndarray | float:
        """The compute bought, at the median utilization (exact for a FLOP budget)."""
        return self._maybe_scalar(self.to("flops"))

    def to(self, unit: str) -> np.ndarray:
        """The amounts in another unit, at the median utilization."""
        unit = _unit(unit)
        if unit == self.unit:
            return self.amount.copy()
        if self.hardware is None:
            raise ValueError(f"converting FLOPs to {unit} needs hardware= (a bayescale.Hardware)")
        return self.hardware.convert(self.amount, self.unit, unit)

    def flops_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Compute bought at each utilization node, (budgets, nodes), and the node weights."""
        if self.unit == "flops" or self.hardware is None or not self.hardware.uncertain:
            return self.to("flops")[:, None], np.array([1.0])
        nodes, weights = self.hardware.utilization_nodes()
        flops = np.column_stack([self.hardware.convert(self.amount, self.unit, "flops", u)
                                 for u in nodes])
        return flops, weights

    def flops_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The compute bought at the low and high ends of the utilization: the range's ends,
        or a distribution's 5% and 95% quantiles (equal to :attr:`flops` when certain)."""
        if not self.uncertain:
            flops = self.to("flops")
            return flops, flops
        hw = self.hardware
        levels = (0.0, 1.0) if isinstance(hw.utilization, tuple) else (0.05, 0.95)
        low, high = (hw.convert(self.amount, self.unit, "flops", hw.utilization_quantile(q))
                     for q in levels)
        return low, high

    def _maybe_scalar(self, values: np.ndarray) -> np.ndarray | float:
        return float(values[0]) if self.scalar else values

    def describe(self) -> str:
        """The budget and its conversion in one line (for a table's attrs)."""
        amounts = ", ".join(_fmt_unit(v, self.unit, self.hardware) for v in self.amount)
        if self.hardware is None:
            return f"{amounts} (FLOPs)"
        return f"{amounts} on {self.hardware.describe()}"

    def __len__(self) -> int:
        return int(self.amount.size)


def _need_hardware(hardware: object) -> Hardware:
    if not isinstance(hardware, Hardware):
        raise ValueError(f"hardware must be a bayescale.Hardware (e.g. Hardware.named('H100 SXM', "
                         f"utilization=0.4, price_per_hour=2.5)), got {hardware!r}")
    return hardware


def is_budget(value: object) -> bool:
    """True for a :class:`Budget` (the fit's methods branch on it)."""
    return isinstance(value, Budget)


# -- number formatting ---------------------------------------------------------------------

def _compact(value: float, digits: int = 2) -> str:
    text = f"{value:.{digits}g}"
    return text if "e" not in text else f"{value:,.0f}"


def fmt_usd(value: float) -> str:
    """Dollars for a sentence: $850, $3.1M, $5M, $1.2B; "∞" for inf."""
    value = float(value)
    if not math.isfinite(value):
        return "∞ (unreachable)" if value > 0 else "n/a"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"${_compact(value / size)}{suffix}"
    return f"${_compact(value, 3)}"


def fmt_price(value: float) -> str:
    """A price per chip-hour: $2.50, $12, $0.85."""
    value = float(value)
    return f"${value:,.0f}" if value >= 100 or value.is_integer() else f"${value:,.2f}"


def fmt_hours(value: float) -> str:
    """Chip-hours for a sentence: 1.2M GPU-hours."""
    value = float(value)
    if not math.isfinite(value):
        return "∞ (unreachable)"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{_compact(value / size)}{suffix} GPU-hours"
    return f"{_compact(value, 3)} GPU-hours"


def fmt_days(value: float, chips: int | None = None) -> str:
    """Days for a sentence: "41 days on 1,024 chips"."""
    value = float(value)
    if not math.isfinite(value):
        return "∞ days (unreachable)"
    text = f"{value:,.0f}" if value >= 10 else f"{value:.2g}"
    unit = "day" if text == "1" else "days"
    return f"{text} {unit}" + (f" on {chips:,} chips" if chips else "")


def _fmt_unit(value: float, unit: str, hardware: Hardware | None = None) -> str:
    if unit == "usd":
        return fmt_usd(value)
    if unit == "gpu_hours":
        return fmt_hours(value)
    if unit == "days":
        return fmt_days(value, hardware.chips if hardware is not None else None)
    return f"{_fmt_flops(value)} FLOPs"


def _fmt_flops(value: float) -> str:
    if not math.isfinite(value):
        return "∞"
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.2g}")


# -- analysis with budgets (called by ScalingFit's methods) --------------------------------
#
# Every function here answers through the fit's FLOP-budget methods, so the predictive they
# use is the only one: a certain budget is one call at ``budget.flops``; an uncertain one is
# the same call at each utilization node, combined with the node weights.

def _unit_list(units: object) -> list[str]:
    names = [units] if isinstance(units, str) else list(units)  # type: ignore[call-overload]
    if not names:
        raise ValueError(f"units must name at least one of {UNITS}")
    out: list[str] = []
    for name in names:
        unit = _unit(name)
        if unit not in out:
            out.append(unit)
    return out


def _label(table: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    """Put the budget as given in front of a FLOP table and state the conversion."""
    table = table.copy()
    if budget.unit != "flops":
        table.insert(0, budget.unit, budget.amount)
    table.attrs.update({"budget_unit": budget.unit, "budget": budget.describe()})
    if budget.uncertain:
        table.attrs["utilization"] = _mixture_note(budget.hardware)
    return table


def _mixture_note(hardware: Hardware) -> str:
    return (f"integrated over the utilization ({hardware.describe().split(': ', 1)[1].split(';')[0]})"
            f" by {UTILIZATION_NODES}-node Gauss–Legendre quadrature; flops, params and tokens "
            "are the plan at the median utilization")


def _node_plan(fit: "ScalingFit", budget: Budget, mode: str,
               inputs: dict[str, object] | None = None) -> dict[str, Any]:
    """Compute at each utilization node and where the run sits there (see the module notes).

    ``inputs``: the law's declared extra inputs (one value, or one per budget), held fixed.
    """
    from .forecast import resolve_points

    flops, weights = budget.flops_nodes()
    nominal = np.asarray(budget.to("flops"), dtype=np.float64)
    if mode == "median" and "params" in fit.law.inputs:
        plan = resolve_points(fit, flops=nominal, inputs=inputs or None)
        params = np.repeat(plan["params"].to_numpy()[:, None], flops.shape[1], axis=1)
        return {"flops": flops, "weights": weights, "params": params,
                "tokens": flops / (6.0 * params), "nominal": plan}
    nominal_frame = pd.DataFrame({"flops": nominal, "params": np.nan, "tokens": np.nan})
    return {"flops": flops, "weights": weights, "params": None, "tokens": None,
            "nominal": nominal_frame}


def _per_node(inputs: dict[str, object] | None, nodes: int) -> dict[str, object]:
    """Extra inputs given per budget, repeated for each utilization node (budget-major)."""
    return {name: value if np.ndim(value) == 0 else np.repeat(np.asarray(value), nodes)
            for name, value in (inputs or {}).items()}


def _mixture_prob(fit: "ScalingFit", target: float, budget: Budget, mode: str, kind: str,
                  mcse: str, inputs: dict[str, object] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """P(loss ≤ target) per budget, integrated over utilization; MCSE bounded by the
    weighted sum of the nodes' (the nodes share draws, so their errors are correlated)."""
    plan = _node_plan(fit, budget, mode, inputs)
    shape = plan["flops"].shape
    extra = _per_node(inputs, shape[1])
    if plan["params"] is not None:
        table = fit.prob_below(target, params=plan["params"].ravel(),
                               tokens=plan["tokens"].ravel(), kind=kind, mcse=mcse, **extra)
    else:
        table = fit.prob_below(target, plan["flops"].ravel(), mode=mode, kind=kind, mcse=mcse,
                               **extra)
    weights = plan["weights"]
    # Row by row (not a matrix product, whose summation order depends on the number of
    # budgets): one budget gets the same answer alone as in a table.
    prob = (table["prob"].to_numpy().reshape(shape) * weights).sum(axis=1)
    error = (table["mcse"].to_numpy().reshape(shape) * weights).sum(axis=1)
    return prob, error, plan["nominal"]


def forecast(fit: "ScalingFit", budget: Budget, *, prob: float = 0.9, kind: str = "observed",
             random_seed: int | None = None,
             inputs: dict[str, object] | None = None) -> pd.DataFrame:
    """:meth:`ScalingFit.forecast` at a :class:`Budget`.

    A certain budget is the FLOP forecast at ``budget.flops`` with the budget's column in
    front. With uncertain utilization the loss draws of every node are pooled with the node
    weights (their mixture), and the mean, median and band are the mixture's.
    """
    table = fit.forecast(np.asarray(budget.to("flops")), prob=prob, kind=kind,
                         random_seed=random_seed, **(inputs or {}))
    if not budget.uncertain:
        return _label(table, budget)
    from .forecast import loss_draws

    plan = _node_plan(fit, budget, "median", inputs)
    flops, weights = plan["flops"], plan["weights"]
    extras = plan["nominal"].drop(columns=["flops", "params", "tokens"])  # held fixed
    draws = []
    for k in range(flops.shape[1]):
        points = pd.DataFrame({
            "flops": flops[:, k],
            "params": plan["params"][:, k] if plan["params"] is not None else np.nan,
            "tokens": plan["tokens"][:, k] if plan["tokens"] is not None else np.nan,
            **{name: extras[name].to_numpy() for name in extras.columns}})
        draws.append(loss_draws(fit, points, kind=kind, random_seed=random_seed))
    stack = np.stack(draws)                                  # (nodes, draws, budgets)
    sample_weights = np.repeat(weights / stack.shape[1], stack.shape[1])
    pooled = stack.reshape(-1, stack.shape[2])               # (nodes·draws, budgets)
    tail = (1.0 - table.attrs["prob"]) / 2.0
    levels = np.array([tail, 0.5, 1.0 - tail])
    quantiles = np.column_stack([_weighted_quantiles(pooled[:, j], sample_weights, levels)
                                 for j in range(pooled.shape[1])])
    table["loss_mean"] = sample_weights @ pooled
    table["loss_lower"], table["loss_median"], table["loss_upper"] = quantiles
    return _label(table, budget)


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels: np.ndarray,
                        step: bool = False) -> np.ndarray:
    """Quantiles of a weighted sample. ``step=False``: interpolated between the midpoints of
    each value's weight (np.quantile's 'hazen' rule for equal weights); ``step=True``: the
    smallest value whose cumulative weight reaches the level (no interpolation, so
    quantiles among infinite values stay infinite)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order] / weights.sum()
    cumulative = np.cumsum(w)
    if step:
        index = np.searchsorted(cumulative, levels * (1.0 - 1e-12), side="left")
        return v[np.minimum(index, v.size - 1)]
    return np.interp(levels, cumulative - 0.5 * w, v)


def prob_below(fit: "ScalingFit", target: float, budget: Budget, *, mode: str = "median",
               kind: str = "observed", mcse: str = "ess",
               inputs: dict[str, object] | None = None) -> float | pd.DataFrame:
    """:meth:`ScalingFit.prob_below` at a :class:`Budget` (see the module notes)."""
    if not budget.uncertain:
        result = fit.prob_below(target, budget.flops, mode=mode, kind=kind, mcse=mcse,
                                **(inputs or {}))
        return result if budget.scalar else _label(result, budget)
    prob, error, nominal = _mixture_prob(fit, target, budget, mode, kind, mcse, inputs)
    if budget.scalar:
        return float(prob[0])
    table = nominal.assign(prob=prob, mcse=error)
    table.attrs.update({"target": float(target), "mode": mode, "kind": kind,
                        "mcse_method": f"{mcse} (upper bound: weighted sum over utilization "
                                       "nodes)", "law": fit.law.name})
    return _label(table, budget)


def risk_table(fit: "ScalingFit", targets: object, budget: Budget, *, mode: str = "median",
               kind: str = "observed", inputs: dict[str, object] | None = None) -> pd.DataFrame:
    """:meth:`ScalingFit.risk_table` with budgets as a :class:`Budget`: columns are the
    budget's amounts (in its unit, named by ``columns.name``); ``attrs["flops"]`` the compute
    at the median utilization."""
    if not budget.uncertain:
        table = fit.risk_table(targets, budget.to("flops"), mode=mode, kind=kind,
                               **(inputs or {}))
    else:
        from ._validate import positives

        values, mcse_max, nominal = [], 0.0, None
        for target in positives("targets", targets):
            prob, error, nominal = _mixture_prob(fit, float(target), budget, mode, kind, "ess",
                                                 inputs)
            values.append(prob)
            mcse_max = max(mcse_max, float(np.max(error)))
        table = pd.DataFrame(values, index=pd.Index(positives("targets", targets),
                                                    name="target"),
                             columns=pd.Index(budget.to("flops"), name="flops"))
        allocated = nominal["params"].notna().all()
        table.attrs.update({"mode": mode, "kind": kind, "law": fit.law.name,
                            "mcse_max": mcse_max,
                            "params": nominal["params"].tolist() if allocated else [],
                            "tokens": nominal["tokens"].tolist() if allocated else [],
                            "utilization": _mixture_note(budget.hardware)})
    table.attrs["flops"] = [float(c) for c in budget.to("flops")]
    table.attrs.update({"budget_unit": budget.unit, "budget": budget.describe()})
    if budget.unit != "flops":
        table.columns = pd.Index(budget.amount, name=budget.unit)
    return table


def optimal_allocation(fit: "ScalingFit", budget: Budget, *, prob: float = 0.9,
                       inputs: dict[str, object] | None = None) -> pd.DataFrame:
    """:meth:`ScalingFit.optimal_allocation` at a :class:`Budget`.

    The split is planned for the compute bought at the median utilization (one chooses N
    before knowing the MFU reached). With uncertain utilization, ``flops_lower`` and
    ``flops_upper`` give the central ``prob`` band of the compute the budget buys.
    """
    table = _label(fit.optimal_allocation(budget.to("flops"), prob=prob, **(inputs or {})),
                   budget)
    if budget.uncertain:
        hw = budget.hardware
        tail = (1.0 - float(prob)) / 2.0
        for name, level in (("flops_lower", tail), ("flops_upper", 1.0 - tail)):
            u = hw.utilization_quantile(level)
            position = table.columns.get_loc("flops") + (1 if name == "flops_lower" else 2)
            table.insert(position, name, hw.convert(budget.amount, budget.unit, "flops", u))
    return table


# -- compute in other units ----------------------------------------------------------------

def _reach_hours(fit: "ScalingFit", targets: np.ndarray, probs: np.ndarray,
                 flops: np.ndarray, hardware: Hardware, mode: str, kind: str,
                 inputs: dict[str, object] | None = None) -> np.ndarray:
    """Smallest chip-hours with P(loss ≤ target) ≥ prob when utilization is uncertain:
    bisection in log hours on the utilization-integrated probability (monotone in the
    budget), per target, vectorised over its confidence levels. ``inputs``: one value, or
    one per element of ``targets``."""
    import warnings

    from .exceptions import ExtrapolationWarning

    nodes, _ = hardware.utilization_nodes()
    hours = np.full(targets.shape, np.inf)
    per_hour = _SECONDS_PER_HOUR * hardware.peak_flops
    for target in np.unique(targets[np.isfinite(flops)]):
        idx = np.flatnonzero((targets == target) & np.isfinite(flops))
        need = probs[idx]
        held = {name: value if np.ndim(value) == 0 else np.asarray(value)[idx]
                for name, value in (inputs or {}).items()}

        def p_at(log_h: np.ndarray) -> np.ndarray:
            budget = Budget(np.exp(log_h), "gpu_hours", hardware)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExtrapolationWarning)  # the FLOP answer warned
                return _mixture_prob(fit, float(target), budget, mode, kind, "none", held)[0]

        lo = np.log(flops[idx] / (per_hour * nodes.max()))
        hi = np.log(flops[idx] / (per_hour * nodes.min()))
        for _ in range(200):           # widen until the bracket holds the answer
            short = p_at(hi) < need
            if not short.any():
                break
            hi = np.where(short, hi + math.log(2.0), hi)
        for _ in range(200):
            over = p_at(lo) >= need
            if not over.any():
                break
            lo = np.where(over, lo - math.log(2.0), lo)
        while np.max(hi - lo) > 1e-10:
            mid = 0.5 * (lo + hi)
            up = p_at(mid) >= need
            hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
        hours[idx] = np.exp(hi)
    return hours


def _conversion_attrs(table: pd.DataFrame, units: list[str], hardware: Hardware) -> None:
    table.attrs["units"] = units
    table.attrs["conversion"] = hardware.describe()
    if hardware.uncertain:
        table.attrs["utilization"] = (
            f"uncertain: the {', '.join(u for u in units if u != 'flops')} columns integrate "
            f"over it ({UTILIZATION_NODES}-node Gauss–Legendre quadrature); the flops columns "
            "are the compute needed if it were known exactly")


def compute_to_reach(fit: "ScalingFit", target: object, prob: object, *, mode: str,
                     kind: str, units: object, hardware: Hardware | None,
                     inputs: dict[str, object] | None = None) -> Any:
    """:meth:`ScalingFit.compute_to_reach` in other units.

    With one utilization value the FLOPs found are converted exactly. With uncertain
    utilization the answer in chip-hours (and so dollars and days) is the smallest budget
    whose utilization-integrated P(loss ≤ target) is at least ``prob``, found by bisection.
    """
    unit_list = _unit_list(units)
    result = fit.compute_to_reach(target, prob, mode=mode, kind=kind, **(inputs or {}))
    if unit_list == ["flops"]:
        return result
    hardware = _need_hardware(hardware)
    scalar = not isinstance(result, pd.DataFrame)
    if scalar:
        table = pd.DataFrame({"target": [float(target)], "prob": [float(prob)],  # type: ignore[arg-type]
                              "flops": [float(result)]})
    else:
        table = result.copy()
    flops = table["flops"].to_numpy(dtype=np.float64)
    if hardware.uncertain:
        # The extra inputs as the table holds them: one value per (target, prob) row.
        per_row = {name: table[name].to_numpy() if name in table else value
                   for name, value in (inputs or {}).items()}
        hours = _reach_hours(fit, table["target"].to_numpy(dtype=np.float64),
                             table["prob"].to_numpy(dtype=np.float64), flops, hardware, mode,
                             kind, per_row)
        for unit in unit_list:
            if unit != "flops":
                table[unit] = hardware.convert(hours, "gpu_hours", unit)
    else:
        for unit in unit_list:
            if unit != "flops":
                table[unit] = hardware.convert(flops, "flops", unit)
    if scalar and len(unit_list) == 1:
        return float(table[unit_list[0]].iloc[0])
    _conversion_attrs(table, unit_list, hardware)
    return table


def _pooled_band(per_draw_flops: np.ndarray, hardware: Hardware,
                 levels: np.ndarray) -> np.ndarray:
    """Quantiles (no interpolation) of chip-hours = flops / (3600·peak·u), pooled over the
    utilization nodes with their weights."""
    nodes, weights = hardware.utilization_nodes()
    hours = per_draw_flops[:, None] / (_SECONDS_PER_HOUR * hardware.peak_flops * nodes[None, :])
    sample_weights = np.broadcast_to(weights[None, :] / per_draw_flops.size, hours.shape)
    return _weighted_quantiles(hours.ravel(), sample_weights.ravel(), levels, step=True)


def compute_distribution(fit: "ScalingFit", target: object, prob: float, *, units: object,
                         hardware: Hardware | None,
                         inputs: dict[str, object] | None = None) -> pd.DataFrame:
    """:meth:`ScalingFit.compute_distribution` with ``<unit>_median``, ``<unit>_lower``,
    ``<unit>_upper`` columns for each unit; with uncertain utilization the bands are those
    of the per-draw compute divided by the utilization at each node (pooled, weighted)."""
    unit_list = _unit_list(units)
    table = fit.compute_distribution(target, prob, **(inputs or {}))
    if unit_list == ["flops"]:
        return table
    hardware = _need_hardware(hardware)
    suffixes = ("median", "lower", "upper")
    if hardware.uncertain:
        from .risk import compute_to_target_draws

        tail = (1.0 - table.attrs["prob"]) / 2.0
        levels = np.array([0.5, tail, 1.0 - tail])
        hours = np.array([_pooled_band(compute_to_target_draws(fit, float(t), inputs), hardware,
                                       levels) for t in table["target"]])
        for unit in unit_list:
            if unit != "flops":
                for j, suffix in enumerate(suffixes):
                    table[f"{unit}_{suffix}"] = hardware.convert(hours[:, j], "gpu_hours", unit)
    else:
        for unit in unit_list:
            if unit != "flops":
                for suffix in suffixes:
                    table[f"{unit}_{suffix}"] = hardware.convert(
                        table[f"flops_{suffix}"].to_numpy(), "flops", unit)
    _conversion_attrs(table, unit_list, hardware)
    return table


_COST_COLUMNS = ("train_flops", "inference_flops", "total_flops", "chinchilla_total_flops")


def inference_optimal_allocation(fit: "ScalingFit", target: object, inference_tokens: object,
                                 prob: float, *, units: object,
                                 hardware: Hardware | None) -> pd.DataFrame:
    """:meth:`ScalingFit.inference_optimal_allocation` with its costs also in other units.

    ``train_flops``, ``inference_flops``, ``total_flops`` and ``chinchilla_total_flops``
    each get ``<unit>`` columns (``train_usd_median``, ...). One hardware prices training and
    serving alike; serving usually reaches a different utilization, so for serving costs
    convert ``inference_flops`` with your serving hardware's :meth:`Hardware.convert`.
    """
    unit_list = _unit_list(units)
    table = fit.inference_optimal_allocation(target, inference_tokens, prob)
    if unit_list == ["flops"]:
        return table
    hardware = _need_hardware(hardware)
    suffixes = ("median", "lower", "upper")
    tail = (1.0 - table.attrs["prob"]) / 2.0
    levels = np.array([0.5, tail, 1.0 - tail])
    if hardware.uncertain:
        from .allocation import inference_optimal_draws

        bands = {name: np.full((len(table), 3), np.nan) for name in _COST_COLUMNS}
        for i, row in table.iterrows():
            draws = inference_optimal_draws(fit, float(row["target"]),
                                            float(row["inference_tokens"]))
            ok = draws["reachable"]
            if ok.any():
                for name in _COST_COLUMNS:
                    bands[name][i] = _pooled_band(draws[name][ok], hardware, levels)
    for unit in unit_list:
        if unit == "flops":
            continue
        for name in _COST_COLUMNS:
            stem = name.replace("flops", unit)
            for j, suffix in enumerate(suffixes):
                if hardware.uncertain:
                    values = hardware.convert(bands[name][:, j], "gpu_hours", unit)
                else:
                    values = hardware.convert(table[f"{name}_{suffix}"].to_numpy(), "flops", unit)
                table[f"{stem}_{suffix}"] = values
    _conversion_attrs(table, unit_list, hardware)
    return table
