"""The curve model's log density and gradient, derived from the law's one formula (numba).

The same construction as :mod:`bayescale._fastlogp`: :func:`bayescale._derive.emit_log_loss`
writes the law's log loss at one checkpoint and its reverse-mode gradient, and the template
below wraps it in the curve model of :class:`bayescale.curves.CurveModel` (run offsets,
schedule term, AR(1) residuals in log tokens), written to the kernel cache and compiled once
with ``cache=True``. ``tests/test_curves_model.py`` checks it against PyMC's density of
:meth:`CurveModel.build`.

Three passes over the checkpoints: the residuals e = y − μ; the AR(1) innovations, whose
derivative in e_j has a share from checkpoint j and one from its successor; then the law's
gradient with d/dμ_j = −d/de_j (the law's forward lines are recomputed there rather than
stored, which costs less memory than it costs time).

Unconstrained coordinates: the law's parameters (declaration order), sigma, sigma_run, rho,
kappa (when the schedule term is on), then one standardised offset z per run.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import numpy as np

from ._derive import emit_log_loss, indent, load_generated
from ._fastlogp import PRIOR_CODES, _float_list, _prior_params, _transform, prior_centre, unconstrain

__all__ = ["kernel", "make_buffer", "nutpie_model", "logp_and_grad", "SCALARS"]

HEADER = 8            # n, runs, n_dim, z_start, then unused
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
            pieces = emit_log_loss(law)
            lower = _float_list(lo for lo, _ in law.parameter_domains.values())
            upper = _float_list(hi for _, hi in law.parameter_domains.values())
            xslices = [f"x{i} = buf[DATA_START + {i} * n:DATA_START + {i + 1} * n]"
                       for i in range(len(pieces["inputs"]))]
            source = TEMPLATE.format(
                law=law.name, k=len(pieces["theta"]), ni=len(pieces["inputs"]),
                nr=len(pieces["refs"]), lower=lower, upper=upper, xslices=indent(xslices, 1),
                setup=indent(pieces["setup"], 1), point=indent(pieces["point"], 2),
                point_grad=indent(pieces["point_grad"], 2), finish=indent(pieces["finish"], 1))
            module = load_generated(f"curves_{''.join(c if c.isalnum() else '_' for c in law.name)}",
                                    source)
            _kernels[cls] = module
    return module


def coordinates(law: Any, priors: dict, schedule: bool) -> list[str]:
    """Names of the scalar unconstrained coordinates (z_run follows them)."""
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
    buf = np.zeros(data_start + (ni + 6) * n)
    buf[0], buf[1], buf[2], buf[3] = n, n_runs, len(names) + n_runs, len(names)
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
    columns = [np.log(runs.column(name)) for name in law.inputs]
    columns += [np.log(runs.column("loss")), layout.index.astype(np.float64),
                layout.prev.astype(np.float64), layout.dlog,
                np.asarray(excess, dtype=np.float64) if schedule else np.zeros(n), np.zeros(n)]
    for i, column in enumerate(columns):
        buf[data_start + i * n:data_start + (i + 1) * n] = column
    buf.flags.writeable = False
    return buf


def logp_and_grad(law: Any, buf: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Evaluate the kernel from Python (tests, start checks)."""
    grad = np.zeros(len(u))
    value = kernel(law).logp_and_grad(np.asarray(u, dtype=np.float64), grad, buf)
    return float(value), grad


def nutpie_model(law: Any, buf: np.ndarray, priors: dict, schedule: bool):
    """A nutpie compiled model sampling the curve kernel on this buffer."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    module = kernel(law)
    names = coordinates(law, priors, schedule)
    n_runs = int(buf[1])
    centres = []
    for name in names:
        transform, lower, upper = _transform(priors[name])
        centres.append(unconstrain(prior_centre(priors[name]), transform, lower, upper))
    centres = np.concatenate([centres, np.zeros(n_runs)])

    def initial_point(seed):
        rng = np.random.default_rng(seed)
        return centres + rng.uniform(-1.0, 1.0, size=centres.size)

    n_dim = centres.size
    all_names = [*names, "z_run"]
    slices = [slice(i, i + 1) for i in range(len(names))] + [slice(len(names), n_dim)]
    shapes = [()] * len(names) + [(n_runs,)]
    coords = [f"z_run[{i}]" for i in range(n_runs)]
    return CompiledPyMCModel(
        _n_dim=n_dim, dims={}, _coords={"unconstrained_parameter": pd.Index([*names, *coords])},
        _shapes=dict(zip(all_names, shapes)), compiled_logp_func=module.logp_cfunc,
        compiled_expand_func=module.expand_cfunc, initial_point_func=initial_point,
        shared_data={}, shared_var_keys={}, user_data=buf, n_expanded=n_dim,
        shape_info=(all_names, slices, shapes), logp_func=None, expand_func=None)


TEMPLATE = '''"""Generated by bayescale._fastcurves for the {law} law; do not edit (regenerated on change)."""
import math

import numba
import numpy as np

from bayescale._fastlogp import _as_double, _constrain, _prior

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


@numba.njit(cache=True, error_model="numpy")
def logp_and_grad(u, grad, buf):
    n = int(buf[0])
    n_runs = int(buf[1])
    z_start = int(buf[3])
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
    z = u[z_start:z_start + n_runs]
    for r in range(n_runs):
        logp -= 0.5 * z[r] * z[r]
        grad[z_start + r] -= z[r]
    th = values[:K]
    rf = buf[REF_START:REF_START + NR]
    gth = np.zeros(K)
{xslices}
    y = buf[DATA_START + NI * n:DATA_START + (NI + 1) * n]
    ridx = buf[DATA_START + (NI + 1) * n:DATA_START + (NI + 2) * n]
    prev = buf[DATA_START + (NI + 2) * n:DATA_START + (NI + 3) * n]
    dlog = buf[DATA_START + (NI + 3) * n:DATA_START + (NI + 4) * n]
    sch = buf[DATA_START + (NI + 4) * n:DATA_START + (NI + 5) * n]
{setup}
    e = np.empty(n)
    de = np.zeros(n)
    for j in range(n):
{point}
        e[j] = y[j] - (mu + srun * z[int(ridx[j])] + kappa * sch[j])
    log_rho = math.log(rho)
    inv_s2 = 1.0 / (sigma * sigma)
    g_sigma = 0.0
    g_rho = 0.0
    for j in range(n):
        p = int(prev[j])
        if p >= 0:
            lphi = dlog[j] * log_rho
            phi = math.exp(lphi)
            om = -math.expm1(2.0 * lphi)
            inv = inv_s2 / om
            uj = e[j] - phi * e[p]
            q = uj * uj * inv
            logp -= 0.5 * q + 0.5 * math.log(om)
            de[j] -= uj * inv
            de[p] += uj * phi * inv
            g_sigma += (q - 1.0) / sigma
            dphi = uj * e[p] * inv - (q - 1.0) * phi / om
            g_rho += dphi * dlog[j] * phi / rho
        else:
            q = e[j] * e[j] * inv_s2
            logp -= 0.5 * q
            de[j] -= e[j] * inv_s2
            g_sigma += (q - 1.0) / sigma
    logp -= n * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))
    g_srun = 0.0
    g_kappa = 0.0
    for j in range(n):
{point}
        dmu = -de[j]
        r = int(ridx[j])
        g_srun += dmu * z[r]
        grad[z_start + r] += dmu * srun
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
    buf = numba.carray(_as_double(data_), (DATA_START + (NI + 6) * n,))
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
    z_start = int(buf[3])
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
    for i in range(z_start, n_dim):
        out[i] = x[i]
    return 0
'''
