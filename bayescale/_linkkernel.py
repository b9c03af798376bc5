"""The metric link's log density and gradient for nutpie, compiled by numba (two-stage fits).

Compiling the link's PyMC model for nutpie costs 10-30 s per process, far more than sampling
its four parameters. This is the same density as :func:`bayescale.model._add_link` (priors
of ``bayescale.downstream.default_link_priors`` or the user's, PyMC's transforms, the Beta
likelihood of the metric around :func:`bayescale.downstream.sigmoid_link`), with the gradient
written out by hand; ``tests/test_downstream.py`` checks value and gradient against PyMC's
compiled model. Priors and transforms come from :mod:`bayescale._fastlogp`.

Buffer (float64): a header (n, n_dim), one slot per link parameter (the layout of
:mod:`bayescale._fastlogp`), chance, center, span, then the runs' losses and metrics.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._fastlogp import (HEADER, SLOT, _as_double, _constrain, _digamma, _prior, _transform,
                        PRIOR_CODES, _prior_params, prior_centre, unconstrain)

__all__ = ["make_buffer", "logp_and_grad", "nutpie_model"]

NS = 4                       # ceiling_frac, k_scaled, l0_scaled, phi
CONST_START = HEADER + SLOT * NS
DATA_START = CONST_START + 3
EDGE = 1e-6                  # as downstream._EDGE: the metric's mean is kept inside (0, 1)


@numba.njit(cache=True, error_model="numpy")
def _logp_and_grad(u, grad, buf):
    n = int(buf[0])
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
    frac, ks, ls, phi = values[0], values[1], values[2], values[3]
    if not (frac > 0.0 and frac <= 1.0 and ks > 0.0 and phi > 0.0):
        return -math.inf
    chance, center, span = buf[CONST_START], buf[CONST_START + 1], buf[CONST_START + 2]
    ceiling = chance + (1.0 - chance) * frac
    k = ks / span
    l0 = center + ls * span
    rise = ceiling - chance
    loss = buf[DATA_START:DATA_START + n]
    y = buf[DATA_START + n:DATA_START + 2 * n]
    lg_phi = math.lgamma(phi)
    dg_phi = _digamma(phi)
    for j in range(n):
        z = k * (loss[j] - l0)
        if z > 0:
            e = math.exp(-z)
            s = e / (1.0 + e)
        else:
            s = 1.0 / (1.0 + math.exp(z))
        mu = chance + rise * s
        clipped = False
        if mu < EDGE:
            mu = EDGE
            clipped = True
        elif mu > 1.0 - EDGE:
            mu = 1.0 - EDGE
            clipped = True
        a = mu * phi
        b = (1.0 - mu) * phi
        log_y = math.log(y[j])
        log_1my = math.log1p(-y[j])
        logp += lg_phi - math.lgamma(a) - math.lgamma(b) + (a - 1.0) * log_y + (b - 1.0) * log_1my
        dg_a = _digamma(a)
        dg_b = _digamma(b)
        dtheta[3] += dg_phi - mu * dg_a - (1.0 - mu) * dg_b + mu * log_y + (1.0 - mu) * log_1my
        if not clipped:
            dmu = phi * (dg_b - dg_a + log_y - log_1my)
            ds = -s * (1.0 - s)  # d s / d z
            dtheta[0] += dmu * (1.0 - chance) * s
            dtheta[1] += dmu * rise * ds * (loss[j] - l0) / span
            dtheta[2] += dmu * rise * ds * (-k * span)
    for k2 in range(NS):
        index = int(buf[HEADER + SLOT * k2])
        if index >= 0:
            grad[index] += dtheta[k2] * dvalue[k2]
    return logp


@numba.cfunc(numba.types.int64(numba.types.uint64, numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double), numba.types.voidptr),
             cache=True, error_model="numpy")
def _logp_cfunc(dim, x_, out_, logp_, data_):
    head = numba.carray(_as_double(data_), (HEADER,))
    n = int(head[0])
    n_dim = int(head[1])
    if dim != n_dim:
        return -1
    buf = numba.carray(_as_double(data_), (DATA_START + 2 * n,))
    x = numba.carray(x_, (n_dim,))
    out = numba.carray(out_, (n_dim,))
    logp = numba.carray(logp_, (1,))
    value = _logp_and_grad(x, out, buf)
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
def _expand_cfunc(dim, expanded, x_, out_, data_):
    buf = numba.carray(_as_double(data_), (CONST_START,))
    n_dim = int(buf[1])
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


def make_buffer(priors: dict, names: tuple[str, ...], loss: np.ndarray, metric: np.ndarray,
                chance: float, ref: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """The kernel's buffer for these runs, and the names of the sampled parameters."""
    loss = np.asarray(loss, dtype=np.float64)
    metric = np.asarray(metric, dtype=np.float64)
    n = loss.size
    buf = np.zeros(DATA_START + 2 * n)
    sampled = [name for name in names if priors[name].dist != "Fixed"]
    buf[0] = n
    buf[1] = len(sampled)
    for k, name in enumerate(names):
        base = HEADER + SLOT * k
        prior = priors[name]
        if prior.dist == "Fixed":
            buf[base] = -1
            buf[base + 9] = prior.params["value"]
            continue
        buf[base] = sampled.index(name)
        buf[base + 1] = PRIOR_CODES[prior.dist]
        params = _prior_params(prior)
        buf[base + 2:base + 2 + len(params)] = params
        transform, lower, upper = _transform(prior)
        buf[base + 6:base + 9] = (transform, lower, upper)
    buf[CONST_START:DATA_START] = (chance, ref["center"], ref["span"])
    buf[DATA_START:DATA_START + n] = loss
    buf[DATA_START + n:] = metric
    return buf, sampled


def logp_and_grad(buf: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Evaluate the kernel from Python (for tests)."""
    grad = np.zeros(len(u))
    value = _logp_and_grad(np.asarray(u, dtype=np.float64), grad, buf)
    return float(value), grad


def nutpie_model(buf: np.ndarray, priors: dict, sampled: list[str]):
    """A nutpie compiled model that samples the link's kernel on this buffer."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    centres = []
    for name in sampled:
        transform, lower, upper = _transform(priors[name])
        centres.append(unconstrain(prior_centre(priors[name]), transform, lower, upper))
    centres = np.array(centres)

    def initial_point(seed):
        rng = np.random.default_rng(seed)
        return centres + rng.uniform(-1.0, 1.0, size=centres.size)

    n_dim = len(sampled)
    shape_info = (list(sampled), [slice(i, i + 1) for i in range(n_dim)], [()] * n_dim)
    return CompiledPyMCModel(
        _n_dim=n_dim, dims={}, _coords={"unconstrained_parameter": pd.Index(list(sampled))},
        _shapes={name: () for name in sampled}, compiled_logp_func=_logp_cfunc,
        compiled_expand_func=_expand_cfunc, initial_point_func=initial_point, shared_data={},
        shared_var_keys={}, user_data=buf, n_expanded=n_dim, shape_info=shape_info,
        logp_func=None, expand_func=None)
