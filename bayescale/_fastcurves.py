"""The curve model's log density and gradient, derived from the law's one formula (numba).

The same construction as :mod:`bayescale._fastlogp`: :func:`bayescale._derive.emit_log_loss`
writes the law's log loss at one checkpoint and its reverse-mode gradient, and the template
below wraps it in the curve model of :class:`bayescale.curves.CurveModel` (run offsets,
schedule term, AR(1) residuals in log tokens), written to the kernel cache and compiled once
with ``cache=True``. ``tests/test_curves_model.py`` checks it against PyMC's density of
:meth:`CurveModel.build`.

The run offsets r_i ~ Normal(0, σ_run) are integrated out analytically: given the law, the
schedule term and ρ, a run's AR(1) innovations are linear in r_i, so the marginal density is
closed-form (a Gaussian integral per run) and r_i given everything else is Normal, drawn after
sampling (:func:`run_conditionals`). Sampling the offsets instead (non-centred) gave NUTS a
funnel: with tens of checkpoints a run, 40-60 leapfrog steps a draw and divergences.

The checkpoints are stored sorted by run, then tokens, so that a run is a contiguous block and
a checkpoint's predecessor is the row before it. Every loop over checkpoints is free of calls
(exp and log are :mod:`bayescale._vecmath`'s polynomial versions) and is compiled with
reassociation, so LLVM vectorises it: residuals w = y − μ − κs; the innovations; per run the
offset's moments and the adjoints; then the law's gradient (its forward lines recomputed rather
than stored, which costs less memory than it costs time).

Unconstrained coordinates: the law's parameters (declaration order), sigma, sigma_run, rho,
kappa (when the schedule term is on).
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import numpy as np

from ._derive import NotTraceable, emit_log_loss, indent, load_generated
from ._fastlogp import (INTERVAL, PRIOR_CODES, _constrain, _float_list, _prior_params, _transform, prior_centre,
                        unconstrain)

__all__ = ["kernel", "make_buffer", "nutpie_model", "logp_and_grad", "logp_many", "centres",
           "constrain", "RateSpace", "SCALARS"]

HEADER = 8            # n, runs, n_dim, then unused
SLOT = 10             # as in _fastlogp
#: The curve model's scalar parameters after the law's, in slot order.
SCALARS = ("sigma", "sigma_run", "rho", "kappa")

_kernels: dict[type, ModuleType] = {}
_lock = threading.Lock()


def kernel(law: Any) -> ModuleType:
    """The compiled curve density of a law (generated once per law class and process)."""
    cls = type(law)
    with _lock:
        module = _kernels.get(cls)
        if module is None:
            pieces = emit_log_loss(law, simd=True)
            lower = _float_list(lo for lo, _ in law.parameter_domains.values())
            upper = _float_list(hi for _, hi in law.parameter_domains.values())
            xslices = [f"x{i} = buf[DATA_START + {i} * n:DATA_START + {i + 1} * n]"
                       for i in range(len(pieces["inputs"]))]
            source = TEMPLATE.format(
                law=law.name, k=len(pieces["theta"]), ni=len(pieces["inputs"]),
                nr=len(pieces["refs"]), lower=lower, upper=upper, xslices=indent(xslices, 1),
                setup=indent(pieces["setup"], 1), point=indent(pieces["point"], 3),
                point_grad=indent(pieces["point_grad"], 3), finish=indent(pieces["finish"], 1))
            module = load_generated(f"curves_{''.join(c if c.isalnum() else '_' for c in law.name)}",
                                    source)
            _kernels[cls] = module
    return module


def supports(law: Any) -> str | None:
    """None when the curve kernel serves this law, else the reason it cannot."""
    try:
        kernel(law)
    except NotTraceable as exc:
        return str(exc)
    return None


def coordinates(law: Any, priors: dict, schedule: bool) -> list[str]:
    """Names of the unconstrained coordinates (the run offsets are integrated out)."""
    names = [*law.parameter_domains, "sigma", "sigma_run", "rho"] + (["kappa"] if schedule else [])
    return [n for n in names if priors[n].dist != "Fixed"]


def make_buffer(law: Any, priors: dict, schedule: bool, layout: Any,
                excess: np.ndarray) -> np.ndarray:
    """Pack priors, reference values and the checkpoints of ``layout`` into the buffer;
    ``excess`` is the schedule term's s(f) per checkpoint (:func:`curves.schedule_excess`)."""
    runs = layout.runs
    names = coordinates(law, priors, schedule)
    slots = [*law.parameter_domains, *SCALARS]
    refs = law.reference_names()
    ref_values = law.reference(runs)
    n, n_runs = len(runs), int(layout.names.size)
    ni = len(law.inputs)
    ref_start = HEADER + SLOT * len(slots)
    data_start = ref_start + len(refs)
    buf = np.zeros(data_start + (ni + 4) * n + n_runs + 1)
    buf[0], buf[1], buf[2] = n, n_runs, len(names)
    for k, slot in enumerate(slots):
        base = HEADER + SLOT * k
        prior = priors.get(slot)
        if slot not in names:
            buf[base] = -1
            fixed = prior is not None and prior.dist == "Fixed"
            buf[base + 9] = prior.params["value"] if fixed else 0.0   # kappa off: 0
            continue
        transform, lower, upper = _transform(prior)
        buf[base:base + 10] = [names.index(slot), PRIOR_CODES[prior.dist], *_prior_params(prior),
                               transform, lower, upper, 0.0]
    buf[ref_start:data_start] = [float(ref_values[name]) for name in refs]
    # The kernel reads runs as contiguous blocks in token order (predecessor = previous row).
    log_t = np.log(runs.column("tokens"))
    order = np.lexsort((log_t, layout.index))
    index = layout.index[order]
    first = np.ones(n, dtype=bool)
    first[1:] = index[1:] != index[:-1]
    dlog = np.where(first, 0.0, np.diff(log_t[order], prepend=0.0))
    starts = np.searchsorted(index, np.arange(n_runs + 1))
    columns = [np.log(runs.column(name))[order] for name in law.inputs]
    columns += [np.log(runs.column("loss"))[order], dlog,
                (np.asarray(excess, dtype=np.float64) if schedule else np.zeros(n))[order],
                first.astype(np.float64)]
    for i, column in enumerate(columns):
        buf[data_start + i * n:data_start + (i + 1) * n] = column
    buf[data_start + (ni + 4) * n:] = starts
    buf.flags.writeable = False
    return buf


def logp_and_grad(law: Any, buf: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Evaluate the kernel from Python (tests, start checks)."""
    grad = np.zeros(len(u))
    value = kernel(law).logp_and_grad(np.asarray(u, dtype=np.float64), grad, buf)
    return float(value), grad


def logp_many(law: Any, buf: np.ndarray, us: np.ndarray) -> np.ndarray:
    """Log density at each row of ``us`` (m x coordinates); releases the GIL, so threads
    evaluating disjoint rows run in parallel."""
    us = np.ascontiguousarray(us, dtype=np.float64)
    out = np.empty(us.shape[0])
    kernel(law).logp_many(us, buf, out)
    return out


def centres(priors: dict, names: list[str]) -> np.ndarray:
    """The priors' centres in unconstrained coordinates (where the chains start)."""
    values = []
    for name in names:
        transform, lower, upper = _transform(priors[name])
        values.append(unconstrain(prior_centre(priors[name]), transform, lower, upper))
    return np.array(values)


def constrain(priors: dict, names: list[str], us: np.ndarray) -> dict[str, np.ndarray]:
    """Unconstrained rows (m x coordinates) to parameter values by name (the kernel's own
    transforms)."""
    out = {}
    for i, name in enumerate(names):
        transform, lower, upper = _transform(priors[name])
        out[name] = np.array([_constrain(float(x), transform, lower, upper)[0] for x in us[:, i]])
    return out


class RateSpace:
    """The curve density in coordinates where its posterior is close to Gaussian (for the
    Laplace approximation, :mod:`bayescale._laplace`): ρ's logit replaced by w = log θ,
    θ = −log ρ (the AR(1) decay rate per e-fold of tokens), every other coordinate as the
    kernel's.

    With checkpoints close in log tokens the data fix the innovation variance
    ≈ 2σ²θ·Δlog t much better than σ and θ apart, a ridge straight in (log σ, log θ) but
    bent in (log σ, logit ρ): there a Gaussian missed it (PSIS k-hat 0.96 on 25,000
    simulated checkpoints against 0.28 here; benchmarks/bench_curves_speed.py).
    The density here includes the Jacobian, |du/dw| = θ / (1 − e^−θ).
    """

    def __init__(self, law: Any, buf: np.ndarray, priors: dict, names: list[str]) -> None:
        self.law, self.buf = law, buf
        index = names.index("rho") if "rho" in names else None
        if index is not None and _transform(priors["rho"]) != (INTERVAL, 0.0, 1.0):
            index = None      # a prior on a sub-interval: its own logit stays
        self.index = index

    def to_unconstrained(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, log |du/dv|) for points v (one or many rows)."""
        v = np.asarray(v, dtype=np.float64)
        u = v.copy()
        if self.index is None:
            return u, np.zeros(v.shape[:-1])
        w = v[..., self.index]
        theta = np.exp(w)
        log_one_minus_rho = np.log(-np.expm1(-theta))
        u[..., self.index] = -theta - log_one_minus_rho        # logit ρ, ρ = e^−θ
        return u, w - log_one_minus_rho

    def from_unconstrained(self, u: np.ndarray) -> np.ndarray:
        """v for points u (the inverse of :meth:`to_unconstrained`)."""
        v = np.array(u, dtype=np.float64)
        if self.index is not None:
            # −log ρ = log(1 + e^−u) = softplus(−u)
            v[..., self.index] = np.log(np.logaddexp(0.0, -v[..., self.index]))
        return v

    def logp_and_grad(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        u, log_jac = self.to_unconstrained(v)
        value, grad = logp_and_grad(self.law, self.buf, u)
        if self.index is not None:
            # numpy, not math: a line search that overshoots to θ = −log ρ ≈ e^7 must get a
            # non-finite value to step back from, not an OverflowError
            with np.errstate(over="ignore", invalid="ignore"):
                theta = np.exp(v[self.index])
                one_minus_rho = -np.expm1(-theta)
                ratio = theta * np.exp(-theta) / one_minus_rho       # θ/(e^θ − 1), stable
                # du/dw = −θ/(1 − e^−θ); d log|du/dw| / dw = 1 − θ/(e^θ − 1)
                grad[self.index] = -grad[self.index] * theta / one_minus_rho + 1.0 - ratio
        return value + float(log_jac), grad

    def logp_many(self, vs: np.ndarray) -> np.ndarray:
        u, log_jac = self.to_unconstrained(vs)
        return logp_many(self.law, self.buf, u) + log_jac


def nutpie_model(law: Any, buf: np.ndarray, priors: dict, schedule: bool):
    """A nutpie compiled model sampling the curve kernel on this buffer (the run offsets are
    integrated out, so only the scalar parameters are sampled)."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    module = kernel(law)
    names = coordinates(law, priors, schedule)
    start = centres(priors, names)

    def initial_point(seed):
        rng = np.random.default_rng(seed)
        return start + rng.uniform(-1.0, 1.0, size=start.size)

    n_dim = start.size
    shape_info = (list(names), [slice(i, i + 1) for i in range(n_dim)], [()] * n_dim)
    return CompiledPyMCModel(
        _n_dim=n_dim, dims={}, _coords={"unconstrained_parameter": pd.Index(list(names))},
        _shapes={name: () for name in names}, compiled_logp_func=module.logp_cfunc,
        compiled_expand_func=module.expand_cfunc, initial_point_func=initial_point,
        shared_data={}, shared_var_keys={}, user_data=buf, n_expanded=n_dim,
        shape_info=shape_info, logp_func=None, expand_func=None)


def run_conditionals(law: Any, buf: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every run's offset given the data, per row of ``values``
    (draws x slots: the law's parameters, then :data:`SCALARS`), shape (draws, runs)."""
    return kernel(law).run_conditionals(np.ascontiguousarray(values, dtype=np.float64), buf)


TEMPLATE = '''\"\"\"Generated by bayescale._fastcurves for the {law} law; do not edit (regenerated on change).\"\"\"
import math

import numba
import numpy as np

from bayescale._fastlogp import _as_double, _constrain, _prior
from bayescale._vecmath import vexp as _vexp, vexpm1_small as _vexpm1_small, vlog as _vlog

HEADER = 8
SLOT = 10
K = {k}          # law parameters; then sigma, sigma_run, rho, kappa
NI = {ni}
NR = {nr}
NS = K + 4
REF_START = HEADER + SLOT * NS
DATA_START = REF_START + NR
LOWER = np.array({lower})
UPPER = np.array({upper})


@numba.njit(cache=True)
def size(n, n_runs):
    return DATA_START + (NI + 4) * n + n_runs + 1


@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def _residuals(th, rf, kappa, buf, w):
    """Pass 1: w[j + 1] = y_j − law_j − κ·s_j (padded: w[0] = 0)."""
    n = int(buf[0])
    n_runs = int(buf[1])
{xslices}
    y = buf[DATA_START + NI * n:DATA_START + (NI + 1) * n]
    sch = buf[DATA_START + (NI + 2) * n:DATA_START + (NI + 3) * n]
    starts = buf[DATA_START + (NI + 4) * n:DATA_START + (NI + 4) * n + n_runs + 1]
{setup}
    w[0] = 0.0
    for r in range(n_runs):
        for j in range(int(starts[r]), int(starts[r + 1])):
{point}
            w[j + 1] = y[j] - (mu + kappa * sch[j])


@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def _innovations(sigma, rho, buf, w, ut, c, inv, phi_a, om_a):
    """Per checkpoint: ũ_j = w_j − φ_j w_(j−1), c_j = 1 − φ_j (what the run offset adds to
    the innovation), 1/(σ²(1 − φ_j²)); φ = 0 at a run's first checkpoint. Returns
    Σ ũ²/var and Σ log(1 − φ²)."""
    n = int(buf[0])
    dlog = buf[DATA_START + (NI + 1) * n:DATA_START + (NI + 2) * n]
    first = buf[DATA_START + (NI + 3) * n:DATA_START + (NI + 4) * n]
    log_rho = math.log(rho)
    inv_s2 = 1.0 / (sigma * sigma)
    sum_q = 0.0
    sum_log = 0.0
    for j in range(n):
        lphi = dlog[j] * log_rho
        two = 2.0 * lphi
        om_small = -_vexpm1_small(two)      # 1 − φ² without cancellation for close checkpoints
        phi_raw = _vexp(lphi)
        om_raw = om_small if abs(two) < 0.34 else 1.0 - phi_raw * phi_raw
        is_first = first[j] > 0.5
        phi = 0.0 if is_first else phi_raw
        om = 1.0 if is_first else om_raw
        iv = inv_s2 / om
        u = w[j + 1] - phi * w[j]
        phi_a[j] = phi
        om_a[j] = om
        ut[j] = u
        c[j] = 1.0 - phi
        inv[j] = iv
        sum_q += u * u * iv
        sum_log += _vlog(om)
    return sum_q, sum_log


@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def _offset_moments(lo, hi, ut, c, inv):
    """A = Σ c²/var and B = Σ c·ũ/var over one run's checkpoints."""
    big_a = 0.0
    big_b = 0.0
    for j in range(lo, hi):
        big_a += c[j] * c[j] * inv[j]
        big_b += c[j] * ut[j] * inv[j]
    return big_a, big_b


# Sums over checkpoints are written so LLVM vectorises them (reassoc: their order changes,
# ~1e-16 each; contract: fused multiply-adds). The run offsets r_i ~ Normal(0, σ_run) are
# integrated out: the innovations are linear in r_i, so per run, with A, B as above,
# S = σ_run² and D = 1 + S·A, ∫ p(y | r) p(r) dr adds ½·S·B²/D − ½·log D, and r_i given
# everything else is Normal(S·B/D, S/D).
@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def logp_and_grad(u, grad, buf):
    n = int(buf[0])
    n_runs = int(buf[1])
    values = np.empty(NS)
    dvalue = np.empty(NS)
    dtheta = np.zeros(NS)
    logp = 0.0
    for i in range(grad.shape[0]):
        grad[i] = 0.0
    for k in range(NS):
        base = HEADER + SLOT * k
        index = int(buf[base])
        if index < 0:
            values[k] = buf[base + 9]
            dvalue[k] = 0.0
            continue
        transform = int(buf[base + 6])
        x, log_x, dx, log_jac, dlog_jac = _constrain(u[index], transform, buf[base + 7], buf[base + 8])
        values[k] = x
        dvalue[k] = dx
        lp, dlp = _prior(int(buf[base + 1]), buf[base + 2], buf[base + 3], buf[base + 4],
                         buf[base + 5], x, log_x, u[index], transform)
        logp += lp + log_jac
        dtheta[k] += dlp
        grad[index] += dlog_jac
    for k in range(K):
        if not (values[k] > LOWER[k] and values[k] < UPPER[k]):
            return -math.inf
    sigma = values[K]
    srun = values[K + 1]
    rho = values[K + 2]
    kappa = values[K + 3]
    if not (sigma > 0.0 and srun >= 0.0 and rho > 0.0 and rho < 1.0):
        return -math.inf
    th = values[:K]
    rf = buf[REF_START:REF_START + NR]
    gth = np.zeros(K)
{xslices}
    dlog = buf[DATA_START + (NI + 1) * n:DATA_START + (NI + 2) * n]
    sch = buf[DATA_START + (NI + 2) * n:DATA_START + (NI + 3) * n]
    starts = buf[DATA_START + (NI + 4) * n:DATA_START + (NI + 4) * n + n_runs + 1]
    w = np.empty(n + 1)
    _residuals(th, rf, kappa, buf, w)
    ut = np.empty(n)
    c = np.empty(n)
    inv = np.empty(n)
    phi_a = np.empty(n + 1)
    om_a = np.empty(n)
    sum_q, sum_log = _innovations(sigma, rho, buf, w, ut, c, inv, phi_a, om_a)
    phi_a[n] = 0.0
    logp -= 0.5 * sum_q + 0.5 * sum_log + n * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))
    # gu[j] = d logp / d ũ_j (padded: gu[n] = 0)
    gu = np.empty(n + 1)
    gu[n] = 0.0
    s2 = srun * srun
    g_s2 = 0.0
    g_inv_inv = 0.0
    g_rho = 0.0
    for r in range(n_runs):
        lo = int(starts[r])
        hi = int(starts[r + 1])
        big_a, big_b = _offset_moments(lo, hi, ut, c, inv)
        d = 1.0 + s2 * big_a
        beta = s2 * big_b / d          # E[r_i | ...]
        var = s2 / d                   # Var[r_i | ...]
        logp += 0.5 * s2 * big_b * big_b / d - 0.5 * math.log(d)
        g_s2 += 0.5 * big_b * big_b / (d * d) - 0.5 * big_a / d
        m2 = beta * beta + var
        for j in range(lo, hi):
            iv = inv[j]
            uh = ut[j] - beta * c[j]
            g_u = -uh * iv
            gu[j] = g_u
            g_c = beta * ut[j] * iv - m2 * c[j] * iv
            g_inv = -0.5 * (uh * uh + var * c[j] * c[j])
            g_inv_inv += g_inv * iv
            phi = phi_a[j]
            g_phi = -w[j] * g_u - g_c + (2.0 * g_inv * iv + 1.0) * phi / om_a[j]
            g_rho += g_phi * dlog[j] * phi
    g_sigma = -2.0 * g_inv_inv / sigma - n / sigma
    g_rho = g_rho / rho
    g_srun = 2.0 * srun * g_s2
    # The law's gradient: d logp / d μ_j = −(gu_j − φ_(j+1) gu_(j+1)).
{setup}
    g_kappa = 0.0
    for r in range(n_runs):
        for j in range(int(starts[r]), int(starts[r + 1])):
{point}
            dmu = phi_a[j + 1] * gu[j + 1] - gu[j]
            g_kappa += dmu * sch[j]
{point_grad}
{finish}
    for k in range(K):
        dtheta[k] += gth[k]
    dtheta[K] += g_sigma
    dtheta[K + 1] += g_srun
    dtheta[K + 2] += g_rho
    dtheta[K + 3] += g_kappa
    for k in range(NS):
        index = int(buf[HEADER + SLOT * k])
        if index >= 0:
            grad[index] += dtheta[k] * dvalue[k]
    return logp


@numba.njit(cache=True, error_model="numpy", nogil=True)
def logp_many(us, buf, out):
    """out[i] = log density at row i of ``us`` (releases the GIL: callers split rows
    across threads)."""
    grad = np.empty(us.shape[1])
    for i in range(us.shape[0]):
        out[i] = logp_and_grad(us[i], grad, buf)


@numba.njit(cache=True, error_model="numpy")
def run_conditionals(values, buf):
    """Mean and variance of each run's offset given the data and each row of ``values``
    (draws x (K + 4) constrained parameters: the law's, sigma, sigma_run, rho, kappa)."""
    n = int(buf[0])
    n_runs = int(buf[1])
    rf = buf[REF_START:REF_START + NR]
    starts = buf[DATA_START + (NI + 4) * n:DATA_START + (NI + 4) * n + n_runs + 1]
    draws = values.shape[0]
    mean = np.empty((draws, n_runs))
    var = np.empty((draws, n_runs))
    w = np.empty(n + 1)
    ut = np.empty(n)
    c = np.empty(n)
    inv = np.empty(n)
    phi_a = np.empty(n + 1)
    om_a = np.empty(n)
    for dd in range(draws):
        th = values[dd, :K].copy()
        sigma = values[dd, K]
        s2 = values[dd, K + 1] ** 2
        _residuals(th, rf, values[dd, K + 3], buf, w)
        _innovations(sigma, values[dd, K + 2], buf, w, ut, c, inv, phi_a, om_a)
        for r in range(n_runs):
            big_a, big_b = _offset_moments(int(starts[r]), int(starts[r + 1]), ut, c, inv)
            d = 1.0 + s2 * big_a
            mean[dd, r] = s2 * big_b / d
            var[dd, r] = s2 / d
    return mean, var


@numba.cfunc(numba.types.int64(numba.types.uint64, numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double), numba.types.voidptr),
             cache=True, error_model="numpy")
def logp_cfunc(dim, x_, out_, logp_, data_):
    head = numba.carray(_as_double(data_), (HEADER,))
    n = int(head[0])
    n_dim = int(head[2])
    if dim != n_dim:
        return -1
    buf = numba.carray(_as_double(data_), (size(n, int(head[1])),))
    x = numba.carray(x_, (n_dim,))
    out = numba.carray(out_, (n_dim,))
    logp = numba.carray(logp_, (1,))
    value = logp_and_grad(x, out, buf)
    logp[0] = value
    if not np.isfinite(value):
        return 4
    for i in range(n_dim):
        if not np.isfinite(out[i]):
            return 3
    return 0


@numba.cfunc(numba.types.int64(numba.types.uint64, numba.types.uint64,
                               numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double), numba.types.voidptr),
             cache=True, error_model="numpy")
def expand_cfunc(dim, expanded, x_, out_, data_):
    buf = numba.carray(_as_double(data_), (REF_START,))
    n_dim = int(buf[2])
    if dim != n_dim or expanded != n_dim:
        return -1
    x = numba.carray(x_, (n_dim,))
    out = numba.carray(out_, (n_dim,))
    for k in range(NS):
        base = HEADER + SLOT * k
        index = int(buf[base])
        if index >= 0:
            value, _, _, _, _ = _constrain(x[index], int(buf[base + 6]), buf[base + 7], buf[base + 8])
            out[index] = value
    return 0
'''
