"""The sampler's log density and gradient, derived from each law's one formula and compiled by numba.

Building the model in PyMC and compiling it for nutpie costs ~10–40 s per new process
(importing PyMC and PyTensor, graph rewrites, numba code generation) — longer than sampling.
The models here are small and fixed (a law, one prior per parameter, a Student-t or normal
likelihood on log loss), so their log density and gradient are generated as numba source:
the law's formula is traced and differentiated by :mod:`bayescale._derive`, wrapped in the
generic prior, transform and likelihood code below, written to a cache folder and compiled with
``cache=True``. A new process loads the machine code from numba's cache instead of compiling,
and a new data set is only a new float64 buffer, so a warm fit pays no compilation at all.

The model is identical to :meth:`bayescale.model.ScalingModel.build` (same priors, same
unconstrained transforms as PyMC: log for positive parameters, log-odds for (0, 1) and
intervals); ``tests/test_law_contract.py`` checks density differences and gradients against
PyMC's for every registered law.

Buffer layout (float64): a header, one block per parameter slot (the law's parameters in
declaration order, then sigma and nu), the law's reference values, the log inputs column by
column, then the observed log losses.
"""

from __future__ import annotations

import math
import threading
from types import ModuleType
from typing import Any

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from ._derive import NotTraceable, emit_log_loss, indent, load_generated

LIKELIHOOD_CODES = {"normal": 0, "student_t": 1}
PRIOR_CODES = {"Normal": 0, "StudentT": 1, "LogNormal": 2, "HalfNormal": 3, "HalfStudentT": 4,
               "Exponential": 5, "Gamma": 6, "Beta": 7, "Uniform": 8, "TruncatedNormal": 9}
# Transforms to the unconstrained space, as PyMC chooses them.
IDENTITY, LOG, INTERVAL = 0, 1, 2

HEADER = 8          # likelihood, n, n_dim, then unused
SLOT = 10           # index (-1: fixed/absent), prior code, p0..p3, transform, lower, upper, value


@intrinsic
def _as_double(typingctx, src):
    """Reinterpret nutpie's ``void *`` user data as ``double *`` (our buffer)."""
    sig = types.CPointer(types.float64)(src)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@numba.njit(cache=True, error_model="numpy")
def _digamma(x):
    # Recurrence up to x >= 6, then the asymptotic series (|error| < 1e-12 there).
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return result + math.log(x) - 0.5 * inv - inv2 * (
        1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 / 132))))


@numba.njit(cache=True, error_model="numpy")
def _softplus(x):
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@numba.njit(cache=True, error_model="numpy")
def _constrain(u, transform, lower, upper):
    """(value, log value or nan, d value / du, log |Jacobian|, d logJ / du)."""
    if transform == LOG:
        value = math.exp(u)
        return value, u, value, u, 1.0
    if transform == INTERVAL:
        s = 1.0 / (1.0 + math.exp(-u))
        width = upper - lower
        log_s, log_1ms = -_softplus(-u), -_softplus(u)
        value = lower + width * s
        return value, math.nan, width * s * (1.0 - s), math.log(width) + log_s + log_1ms, 1.0 - 2.0 * s
    return u, math.nan, 1.0, 0.0, 0.0


@numba.njit(cache=True, error_model="numpy")
def _prior(code, p0, p1, p2, p3, x, log_x, u, transform):
    """Log prior density (up to a constant) and its derivative in x."""
    if code == 0:      # Normal(mu, sigma)
        z = (x - p0) / p1
        return -0.5 * z * z, -z / p1
    if code == 1:      # StudentT(nu, mu, sigma)
        z = (x - p1) / p2
        return -0.5 * (p0 + 1.0) * math.log1p(z * z / p0), -(p0 + 1.0) * z / (p2 * (p0 + z * z))
    if code == 2:      # LogNormal(mu, sigma)
        lx = log_x if transform == LOG else math.log(x)
        z = (lx - p0) / p1
        return -lx - 0.5 * z * z, (-1.0 - z / p1) / x
    if code == 3:      # HalfNormal(sigma)
        z = x / p0
        return -0.5 * z * z, -z / p0
    if code == 4:      # HalfStudentT(nu, sigma)
        z = x / p1
        return -0.5 * (p0 + 1.0) * math.log1p(z * z / p0), -(p0 + 1.0) * z / (p1 * (p0 + z * z))
    if code == 5:      # Exponential(lam)
        return -p0 * x, -p0
    if code == 6:      # Gamma(alpha, beta)
        lx = log_x if transform == LOG else math.log(x)
        return (p0 - 1.0) * lx - p1 * x, (p0 - 1.0) / x - p1
    if code == 7:      # Beta(alpha, beta), on the log-odds scale u for precision near 0 and 1
        log_x_, log_1mx = -_softplus(-u), -_softplus(u)
        return (p0 - 1.0) * log_x_ + (p1 - 1.0) * log_1mx, (p0 - 1.0) / x - (p1 - 1.0) / (1.0 - x)
    if code == 8:      # Uniform(lower, upper)
        return 0.0, 0.0
    # TruncatedNormal(mu, sigma, lower, upper): the truncation constant does not depend on x
    z = (x - p0) / p1
    return -0.5 * z * z, -z / p1


# -- Python side: the buffer and the nutpie model ------------------------------------------

_kernels: dict[tuple[type, str], Any] = {}
_kernels_lock = threading.Lock()


def kernel(law: Any, likelihood: str = "student_t") -> ModuleType:
    """The compiled density module of a law and likelihood (generated once per process).

    Each likelihood gets its own module with only its loop over runs, so the first fit after
    installing compiles (and numba caches) only the one it samples.

    Raises
    ------
    NotTraceable
        When the law's formula uses something the code generator does not know.
    """
    if likelihood not in LIKELIHOOD_CODES:
        raise ValueError(f"likelihood must be one of {sorted(LIKELIHOOD_CODES)}, got {likelihood!r}")
    cls = type(law)
    with _kernels_lock:
        module = _kernels.get((cls, likelihood))
        if module is None:
            pieces = emit_log_loss(law, full_simd=True)
            lower = _float_list(lo for lo, _ in law.parameter_domains.values())
            upper = _float_list(hi for _, hi in law.parameter_domains.values())
            loop = (STUDENT_T_LOOP if likelihood == "student_t" else NORMAL_LOOP).format(
                point=indent(pieces["point"], 2), point_grad=indent(pieces["point_grad"], 2))
            source = KERNEL_TEMPLATE.format(
                law=law.name, likelihood=likelihood, code=LIKELIHOOD_CODES[likelihood],
                k=len(pieces["theta"]), ni=len(pieces["inputs"]),
                nr=len(pieces["refs"]), lower=lower, upper=upper,
                xslices=indent([f"x{i} = buf[DATA_START + {i} * n:DATA_START + {i + 1} * n]"
                                for i in range(len(pieces["inputs"]))], 1),
                setup=indent(pieces["setup"], 1), loop=loop, finish=indent(pieces["finish"], 1),
                normalise=(STUDENT_T_CONSTANTS if likelihood == "student_t" else NORMAL_CONSTANTS))
            module = load_generated(f"logp_{_safe(law.name)}_{likelihood}", source)
            _kernels[cls, likelihood] = module
    return module


def _likelihood_of(buf: np.ndarray) -> str:
    code = int(buf[0])
    name = next((name for name, value in LIKELIHOOD_CODES.items() if value == code), None)
    if name is None:
        raise ValueError(f"the fast-density buffer has an unknown likelihood code {code} "
                         f"(known: {LIKELIHOOD_CODES})")
    return name


def _float_list(values) -> str:
    items = [repr(float(v)) if math.isfinite(v) else ("math.inf" if v > 0 else "-math.inf")
             for v in values]
    return "[" + ", ".join(items) + "]"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def supports(law: Any, likelihood: str) -> str | None:
    """None when the fast kernel serves this law and likelihood, else the reason it cannot."""
    if likelihood not in LIKELIHOOD_CODES:
        return f"the {likelihood} likelihood has no fast kernel"
    try:
        kernel(law, likelihood)
    except NotTraceable as exc:
        return str(exc)
    return None


def _transform(prior) -> tuple[int, float, float]:
    dist = prior.dist
    if dist in ("Normal", "StudentT"):
        return IDENTITY, 0.0, 0.0
    if dist == "Beta":
        return INTERVAL, 0.0, 1.0
    if dist in ("Uniform", "TruncatedNormal"):
        return INTERVAL, float(prior.params["lower"]), float(prior.params["upper"])
    return LOG, 0.0, 0.0


def _prior_params(prior) -> list[float]:
    order = {"Normal": ("mu", "sigma"), "StudentT": ("nu", "mu", "sigma"),
             "LogNormal": ("mu", "sigma"), "HalfNormal": ("sigma",),
             "HalfStudentT": ("nu", "sigma"), "Exponential": ("lam",),
             "Gamma": ("alpha", "beta"), "Beta": ("alpha", "beta"),
             "Uniform": ("lower", "upper"), "TruncatedNormal": ("mu", "sigma", "lower", "upper")}
    values = [float(prior.params[k]) for k in order[prior.dist]]
    return values + [0.0] * (4 - len(values))


def prior_centre(prior) -> float:
    """A central value of a prior (where the chains start, before jitter)."""
    p, dist = prior.params, prior.dist
    if dist in ("Normal", "StudentT"):
        return float(p["mu"])
    if dist == "LogNormal":
        return math.exp(p["mu"])
    if dist in ("HalfNormal", "HalfStudentT"):
        return float(p["sigma"])
    if dist == "Exponential":
        return 1.0 / p["lam"]
    if dist == "Gamma":
        return p["alpha"] / p["beta"]
    if dist == "Beta":
        return p["alpha"] / (p["alpha"] + p["beta"])
    if dist == "TruncatedNormal" and p["lower"] < p["mu"] < p["upper"]:
        return float(p["mu"])
    return 0.5 * (p["lower"] + p["upper"])


def unconstrain(value: float, transform: int, lower: float, upper: float) -> float:
    if transform == LOG:
        return math.log(value)
    if transform == INTERVAL:
        s = (value - lower) / (upper - lower)
        return math.log(s) - math.log1p(-s)
    return value


def make_buffer(law: Any, likelihood: str, priors: dict, sampled: list[str],
                data: dict[str, np.ndarray]) -> np.ndarray:
    """Pack priors, reference values and data into the float64 buffer the law's kernel reads.

    ``data`` is :meth:`ScalingModel.data_values`: the reference values by name,
    ``log_<input>`` per input and ``log_loss_observed``.
    """
    slots = [*law.parameter_domains, "sigma", "nu"]
    y = np.asarray(data["log_loss_observed"], dtype=np.float64)
    n = y.size
    refs = law.reference_names()
    inputs = law.inputs
    ref_start = HEADER + SLOT * len(slots)
    data_start = ref_start + len(refs)
    buf = np.zeros(data_start + (len(inputs) + 1) * n)
    buf[0] = LIKELIHOOD_CODES[likelihood]
    buf[1] = n
    buf[2] = len(sampled)
    for k, slot in enumerate(slots):
        base = HEADER + SLOT * k
        prior = priors.get(slot)
        if prior is None or slot not in sampled:
            buf[base] = -1
            # Absent slots: the normal likelihood has no nu.
            buf[base + 9] = prior.params["value"] if prior is not None and prior.dist == "Fixed" else 1.0
            continue
        transform, lower, upper = _transform(prior)
        buf[base:base + 10] = [sampled.index(slot), PRIOR_CODES[prior.dist], *_prior_params(prior),
                               transform, lower, upper, 0.0]
    buf[ref_start:data_start] = [float(data[name]) for name in refs]
    for i, name in enumerate(inputs):
        buf[data_start + i * n:data_start + (i + 1) * n] = data[f"log_{name}"]
    buf[data_start + len(inputs) * n:] = y
    buf.flags.writeable = False
    return buf


def logp_and_grad(law: Any, buf: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Evaluate the law's kernel from Python (the start check of a fit, and tests)."""
    grad = np.zeros(len(u))
    # A writable copy: the types nutpie's cfunc passes (numba.carray arrays are writable), so
    # numba compiles and caches one specialisation, not a second one for a read-only buffer
    # (compiling a law's kernel takes 2-6 s in the first fit after installing).
    value = kernel(law, _likelihood_of(buf)).logp_and_grad(np.array(u, dtype=np.float64), grad,
                                                           np.array(buf))
    return float(value), grad


def nutpie_model(law: Any, buf: np.ndarray, priors: dict, sampled: list[str]):
    """A nutpie compiled model that samples the law's kernel on this buffer."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    module = kernel(law, _likelihood_of(buf))

    centres = []
    for name in sampled:
        transform, lower, upper = _transform(priors[name])
        centres.append(unconstrain(prior_centre(priors[name]), transform, lower, upper))
    centres = np.array(centres)

    def initial_point(seed):
        # Like PyMC's jitter+adapt_diag: the prior's centre plus U(-1, 1) on the free scale.
        rng = np.random.default_rng(seed)
        return centres + rng.uniform(-1.0, 1.0, size=centres.size)

    n_dim = len(sampled)
    shape_info = (list(sampled), [slice(i, i + 1) for i in range(n_dim)], [()] * n_dim)
    return CompiledPyMCModel(
        _n_dim=n_dim, dims={}, _coords={"unconstrained_parameter": pd.Index(list(sampled))},
        _shapes={name: () for name in sampled}, compiled_logp_func=module.logp_cfunc,
        compiled_expand_func=module.expand_cfunc, initial_point_func=initial_point, shared_data={},
        shared_var_keys={}, user_data=buf, n_expanded=n_dim, shape_info=shape_info,
        logp_func=None, expand_func=None)


KERNEL_TEMPLATE = '''"""Generated by bayescale._fastlogp for the {law} law and the {likelihood} likelihood; do not
edit (regenerated on change)."""
import math

import numba
import numpy as np

from bayescale._fastlogp import HEADER, SLOT, _as_double, _constrain, _digamma, _prior
from bayescale._vecmath import vexp as _vexp, vexpm1 as _vexpm1, vlog as _vlog, vlog1p as _vlog1p

K = {k}          # law parameters (slots 0..K-1); slot K is sigma, K+1 is nu
NI = {ni}        # inputs
NR = {nr}        # reference values
NS = K + 2
REF_START = HEADER + SLOT * NS
DATA_START = REF_START + NR
LOWER = np.array({lower})
UPPER = np.array({upper})


# The loops over runs call no function (the law's lines use _vecmath's exp/log/expm1/log1p,
# the likelihood is chosen outside them), so LLVM vectorises them; reassociation lets it
# split the sums into SIMD lanes (no finite-math assumptions: inf and nan propagate).
@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def logp_and_grad(u, grad, buf):
    n = int(buf[1])
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
    nu = values[K + 1]
    if not (sigma > 0.0 and nu > 0.0):
        return -math.inf
    th = values[:K]
    rf = buf[REF_START:REF_START + NR]
    gth = np.zeros(K)
{xslices}
{setup}
    y = buf[DATA_START + NI * n:DATA_START + (NI + 1) * n]
    g_sigma = 0.0
    g_nu = 0.0
    inv_sigma = 1.0 / sigma
    half_nu1 = 0.5 * (nu + 1.0)
    inv_nu = 1.0 / nu
    nu_sampled = buf[HEADER + SLOT * (K + 1)] >= 0
    loglik = 0.0
{loop}
    logp += loglik
{finish}
    logp -= n * math.log(sigma)
    g_sigma -= n * inv_sigma
{normalise}
    for k in range(K):
        dtheta[k] += gth[k]
    dtheta[K] += g_sigma
    dtheta[K + 1] += g_nu
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
    n = int(head[1])
    n_dim = int(head[2])
    if dim != n_dim or int(head[0]) != {code}:
        return -1
    buf = numba.carray(_as_double(data_), (DATA_START + (NI + 1) * n,))
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

# The loop over runs of each likelihood (the law's lines indented into it).
STUDENT_T_LOOP = '''    for j in range(n):
{point}
        r = (y[j] - mu) * inv_sigma
        r2 = r * r
        log_term = _vlog1p(r2 * inv_nu)
        loglik -= half_nu1 * log_term
        scale = (nu + 1.0) / (nu + r2)
        dmu = scale * r * inv_sigma
        g_sigma += scale * r2 * inv_sigma
        g_nu += -0.5 * log_term + 0.5 * scale * r2 * inv_nu
{point_grad}
    if not nu_sampled:
        g_nu = 0.0'''

NORMAL_LOOP = '''    for j in range(n):
{point}
        r = (y[j] - mu) * inv_sigma
        r2 = r * r
        loglik -= 0.5 * r2
        dmu = r * inv_sigma
        g_sigma += r2 * inv_sigma
{point_grad}'''

STUDENT_T_CONSTANTS = '''    logp += n * (math.lgamma(half_nu1) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi))
    g_nu += n * (0.5 * _digamma(half_nu1) - 0.5 * _digamma(0.5 * nu) - 0.5 / nu)'''

NORMAL_CONSTANTS = '''    logp -= n * 0.5 * math.log(2.0 * math.pi)'''
