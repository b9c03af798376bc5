"""The partial-pooling model's log density and gradient, derived from the law's formula.

:func:`bayescale.model.build_partial` is the one definition of the grouped model; compiling
it through PyMC and PyTensor for nutpie costs 20-70 CPU seconds in every new process. This
module writes the same density as numba source, as :mod:`bayescale._fastlogp` does for one
group: the law's log loss and its gradient come from :func:`bayescale._derive.emit_log_loss`
(run once per group inside a loop over groups), and the population layer (each parameter's
population value with the law's prior, its spread with a HalfNormal prior, and per group a
centred value or a non-centred offset; the population value itself is an offset from the
centred groups' mean where :func:`population_offset` says so) is generic code below. It is compiled with
``cache=True``, so a new process loads machine code, and a new data set or a new number of
groups is only a new float64 buffer. ``tests/test_groups_kernel.py`` checks log density and
gradient against PyMC's model of the same runs.

Coordinates: a parameter that varies on the log scale (``group_kind`` "log": E and the
exponents) enters the law's code as its log (``emit_log_loss(law, log_params)``), so a
group's value is exp(log population value + spread·z) without an exp and a log in between.

The noise scale sigma varies between groups like a "log" parameter when ``group_sd["sigma"]``
is above 0: it is then population slot K, after the law's K parameters, and each group's
likelihood uses its own sigma.

Buffer layout (float64): a header; one slot per law parameter, then sigma and nu; per
slot (the law's parameters and sigma) and group the position of that group's free variable
(its centred value or its offset z) and whether it is centred; the start of each group's runs; the law's reference
values; the log inputs column by column and the observed log losses, the runs sorted by
group.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numba
import numpy as np

from ._groupkind import group_kind
from ._derive import NotTraceable, emit_log_loss, indent, load_generated
from ._fastlogp import (IDENTITY, LIKELIHOOD_CODES, LOG, PRIOR_CODES, _constrain, _prior,
                        _prior_params, _transform, prior_centre, unconstrain)

__all__ = ["supports", "make_buffer", "logp_and_grad", "nutpie_model", "variable_layout",
           "expand", "population_offset"]

HEADER = 8   # likelihood, n, n_dim, G, n_expanded, population slots (K, or K + 1 with sigma)
SLOT = 18
# Slot fields: 0 free index of the population value (-1: fixed), 1 prior code, 2-5 prior
# parameters, 6 transform, 7 lower, 8 upper, 9 fixed value, 10 varies between groups,
# 11 on the log scale, 12 free index of the spread, 13 the spread prior's sd,
# 14 expanded index of the value, 15 of the spread, 16 of the first group's value,
# 17 the population value is an offset w from the centred groups' mean (population_offset).


def population_offset(kind: str, prior: Any, sd: float, centred: np.ndarray) -> bool:
    """Whether the population value of a varying parameter is sampled as an offset ``w``
    from the mean of the groups sampled centred: value = mean + spread·w/sqrt(n centred).

    With few groups the spread is poorly known, and a population value sampled directly is
    pinned to the centred groups' mean within spread/sqrt(n): a funnel in (value, log
    spread) that NUTS diverges in. In ``w`` the layer is a standard normal whatever the
    spread. Done where the value's unconstrained coordinate is the scale it varies on (a
    Normal or StudentT prior for a linear parameter, a log-transformed prior for a log one),
    so the law's prior applies unchanged; else (E_fraction's Beta prior) the value is
    sampled directly. ``kind`` is :func:`~bayescale._groupkind.group_kind`.
    """
    if sd <= 0 or prior.dist == "Fixed" or not np.any(centred):
        return False
    transform = _transform(prior)[0]
    return transform == (IDENTITY if kind == "linear" else LOG)



@numba.njit(cache=True, error_model="numpy")
def _population(u, grad, buf, K, G, th, dcentre, spread, tables, pop):
    """Log density of the population layer and every group's coordinate ``th[g, k]``.

    Adds the layer's gradient to ``grad``; ``dcentre[k]`` is d(centre)/du of the population
    value and ``spread[k]`` the spread (kept for the chain rule after the law's part). For a
    population value sampled as an offset (slot field 17) the gradient of its unconstrained
    coordinate collects in ``grad[index]`` until :func:`_population_offsets` converts it;
    ``pop[0, k]`` is that coordinate, ``pop[1, k]`` d coordinate / dw, ``pop[2, k]`` the
    coordinate minus the centred groups' mean. Returns -inf for a value outside its support
    (an overflowed transform).
    """
    logp = 0.0
    KT = K + 1
    for k in range(int(buf[5])):
        base = HEADER + SLOT * k
        index = int(buf[base])
        log_scale = buf[base + 11] > 0
        if index < 0:
            x = buf[base + 9]
            centre = math.log(x) if log_scale else x
            dcentre[k] = 0.0
        else:
            transform = int(buf[base + 6])
            upop = u[index]
            if buf[base + 17] > 0:      # offset from the centred groups' mean
                sd_index = int(buf[base + 12])
                mean = 0.0
                count = 0
                for g in range(G):
                    if buf[tables + KT * G + k * G + g] > 0:
                        mean += u[int(buf[tables + k * G + g])]
                        count += 1
                mean /= count
                scale = math.exp(u[sd_index]) / math.sqrt(count)
                upop = mean + scale * u[index]
                logp += math.log(scale)       # log |d upop / dw|
                grad[sd_index] += 1.0
                pop[1, k] = scale
                pop[2, k] = upop - mean
            pop[0, k] = upop
            x, log_x, dx, log_jac, dlog_jac = _constrain(upop, transform, buf[base + 7],
                                                         buf[base + 8])
            lp, dlp = _prior(int(buf[base + 1]), buf[base + 2], buf[base + 3], buf[base + 4],
                             buf[base + 5], x, log_x, upop, transform)
            logp += lp + log_jac
            grad[index] += dlp * dx + dlog_jac
            if log_scale:
                if not x > 0.0:
                    return -math.inf
                if transform == LOG:
                    centre, dcentre[k] = upop, 1.0
                else:
                    centre, dcentre[k] = math.log(x), dx / x
            else:
                centre, dcentre[k] = x, dx
        if buf[base + 10] <= 0:
            spread[k] = 0.0
            for g in range(G):
                th[g, k] = centre
            continue
        sd_index = int(buf[base + 12])
        s = math.exp(u[sd_index])
        spread[k] = s
        prior_sd = buf[base + 13]
        # HalfNormal(prior_sd) on s = exp(u): density plus log Jacobian u
        logp += -0.5 * (s / prior_sd) ** 2 + u[sd_index]
        grad[sd_index] += 1.0 - (s / prior_sd) ** 2
        inv_s = 1.0 / s
        for g in range(G):
            free = int(buf[tables + k * G + g])
            if buf[tables + KT * G + k * G + g] > 0:     # centred: Normal(centre, s)
                value = u[free]
                r = (value - centre) * inv_s
                logp += -0.5 * r * r - u[sd_index]
                grad[free] -= r * inv_s
                if index >= 0:
                    grad[index] += r * inv_s * dcentre[k]
                grad[sd_index] += r * r - 1.0
                th[g, k] = value
            else:                                       # non-centred: centre + s·z
                z = u[free]
                logp += -0.5 * z * z
                grad[free] -= z
                th[g, k] = centre + s * z
    return logp


@numba.njit(cache=True, error_model="numpy")
def _population_offsets(grad, buf, K, G, tables, pop):
    """Chain rule from d logp / d (population coordinate), collected in ``grad[index]``, to
    the offset w, the spread and the centred groups (slot field 17)."""
    KT = K + 1
    for k in range(int(buf[5])):
        base = HEADER + SLOT * k
        if buf[base + 17] <= 0:
            continue
        index = int(buf[base])
        d = grad[index]
        grad[index] = d * pop[1, k]
        grad[int(buf[base + 12])] += d * pop[2, k]
        count = 0
        for g in range(G):
            if buf[tables + KT * G + k * G + g] > 0:
                count += 1
        for g in range(G):
            if buf[tables + KT * G + k * G + g] > 0:
                grad[int(buf[tables + k * G + g])] += d / count


@numba.njit(cache=True, error_model="numpy")
def _population_grad(u, grad, buf, K, G, gth, dcentre, spread, tables):
    """Chain rule from d logp / d th[g, k] (the law's part) to the free variables."""
    KT = K + 1
    for k in range(int(buf[5])):
        base = HEADER + SLOT * k
        index = int(buf[base])
        varies = buf[base + 10] > 0
        sd_index = int(buf[base + 12])
        for g in range(G):
            d = gth[g, k]
            if not varies:
                if index >= 0:
                    grad[index] += d * dcentre[k]
                continue
            free = int(buf[tables + k * G + g])
            if buf[tables + KT * G + k * G + g] > 0:
                grad[free] += d
            else:
                grad[free] += d * spread[k]
                grad[sd_index] += d * spread[k] * u[free]
                if index >= 0:
                    grad[index] += d * dcentre[k]


@numba.njit(cache=True, error_model="numpy")
def _noise(u, buf, K):
    """sigma, nu, their d/du, and their prior terms (log density, and gradient added later)."""
    out = np.empty(8)
    lp_total = 0.0
    for j in range(2):
        base = HEADER + SLOT * (K + j)
        index = int(buf[base])
        if index < 0 or (j == 0 and buf[5] > K):   # fixed, or sigma per group (slot K)
            out[j] = buf[base + 9] if index < 0 else 1.0
            out[2 + j] = 0.0
            out[4 + j] = 0.0
            continue
        transform = int(buf[base + 6])
        x, log_x, dx, log_jac, dlog_jac = _constrain(u[index], transform, buf[base + 7],
                                                     buf[base + 8])
        lp, dlp = _prior(int(buf[base + 1]), buf[base + 2], buf[base + 3], buf[base + 4],
                         buf[base + 5], x, log_x, u[index], transform)
        lp_total += lp + log_jac
        out[j] = x
        out[2 + j] = dx
        out[4 + j] = dlp * dx + dlog_jac   # prior's share of d logp / du
    out[6] = lp_total
    return out


# -- Python side ----------------------------------------------------------------------------

_kernels: dict[type, ModuleType] = {}
_lock = threading.Lock()


def log_parameters(law: Any) -> list[str]:
    """Parameters whose coordinate in the law's code is their log (they vary on log scale)."""
    return [name for name in law.parameter_domains if group_kind(law, name) == "log"]


def kernel(law: Any) -> ModuleType:
    """The compiled grouped density of a law (generated once per law class and process).

    Raises
    ------
    NotTraceable
        When the law's formula uses something the code generator does not know.
    """
    cls = type(law)
    with _lock:
        module = _kernels.get(cls)
        if module is None:
            pieces = emit_log_loss(law, log_parameters(law), simd=True)
            ni = len(pieces["inputs"])
            source = KERNEL_TEMPLATE.format(
                law=law.name, k=len(pieces["theta"]), ni=ni, nr=len(pieces["refs"]),
                xslices=indent([f"x{i} = buf[data + {i} * n + lo:data + {i} * n + hi]"
                                for i in range(ni)], 2),
                setup=indent(pieces["setup"], 2), point=indent(pieces["point"], 3),
                point_grad=indent(pieces["point_grad"], 3), finish=indent(pieces["finish"], 2))
            module = load_generated(f"groups_{''.join(c if c.isalnum() else '_' for c in law.name)}",
                                    source)
            _kernels[cls] = module
    return module


def supports(law: Any, likelihood: str) -> str | None:
    """None when the grouped kernel serves this law and likelihood, else the reason."""
    if likelihood not in LIKELIHOOD_CODES:
        return f"the {likelihood} likelihood has no fast kernel"
    try:
        kernel(law)
    except NotTraceable as exc:
        return str(exc)
    return None


def sigma_varies(group_sd: Mapping[str, float], priors: Mapping[str, Any]) -> bool:
    """Whether the noise scale sigma is one per group (``group_sd["sigma"]`` above 0)."""
    return group_sd.get("sigma", 0.0) > 0 and priors["sigma"].dist != "Fixed"


def population_names(law: Any, priors: Mapping[str, Any],
                     group_sd: Mapping[str, float]) -> list[str]:
    """The population layer's slots: the law's parameters, then sigma when it varies."""
    return [*law.parameter_domains, *(["sigma"] if sigma_varies(group_sd, priors) else [])]


def _noise_names(likelihood: str, priors: Mapping[str, Any],
                 group_sd: Mapping[str, float]) -> list[str]:
    names = ["sigma", "nu"] if likelihood == "student_t" else ["sigma"]
    return [n for n in names if priors[n].dist != "Fixed"
            and not (n == "sigma" and sigma_varies(group_sd, priors))]


def variable_layout(law: Any, priors: Mapping[str, Any], group_sd: Mapping[str, float],
                    n_groups: int, centred: Mapping[str, np.ndarray],
                    likelihood: str) -> list[tuple[str, int]]:
    """The free variables in kernel order, as (PyMC value-variable stem, size).

    Names follow :func:`bayescale.model.build_partial`: ``pop_<name>`` (or ``popw_<name>``,
    an offset: :func:`population_offset`), ``popsd_<name>``, ``z_<name>`` (non-centred
    groups), ``raw_<name>`` (centred groups), then ``sigma`` (unless it varies: it is then
    a population slot like a law parameter) and ``nu``.
    """
    layout: list[tuple[str, int]] = []
    for name in population_names(law, priors, group_sd):
        prior = priors[name]
        if prior.dist != "Fixed":
            offset = population_offset(group_kind(law, name), prior, group_sd[name],
                                       centred[name])
            layout.append((f"popw_{name}" if offset else f"pop_{name}", 1))
        if group_sd[name] > 0 and prior.dist != "Fixed":
            many = int(np.count_nonzero(centred[name]))
            layout.append((f"popsd_{name}", 1))
            if n_groups - many:
                layout.append((f"z_{name}", n_groups - many))
            if many:
                layout.append((f"raw_{name}", many))
    layout += [(name, 1) for name in _noise_names(likelihood, priors, group_sd)]
    return layout


def expanded_layout(law: Any, priors: Mapping[str, Any], group_sd: Mapping[str, float],
                    n_groups: int, likelihood: str) -> list[tuple[str, int]]:
    """What each draw records, in order: the posterior variables of :func:`fit_grouped`'s
    PyMC route (``pop_``, ``popsd_``, ``group_<name>`` per group, ``sigma``, ``nu``)."""
    layout: list[tuple[str, int]] = []
    for name in population_names(law, priors, group_sd):
        prior = priors[name]
        if prior.dist == "Fixed":
            continue
        layout.append((f"pop_{name}", 1))
        if group_sd[name] > 0:
            layout.append((f"popsd_{name}", 1))
            layout.append((f"group_{name}", n_groups))
    layout += [(name, 1) for name in _noise_names(likelihood, priors, group_sd)]
    return layout


def make_buffer(law: Any, likelihood: str, priors: Mapping[str, Any],
                group_sd: Mapping[str, float], data: Mapping[str, np.ndarray],
                index: np.ndarray, centred: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pack priors, the population layout, reference values and data into the buffer.

    ``data`` is :meth:`ScalingModel.data_values` (runs in their order), ``index`` each run's
    group position, ``centred[name]`` a boolean per group (ignored for shared parameters).
    """
    names = list(law.parameter_domains)
    slots = population_names(law, priors, group_sd)
    n_groups = int(index.max()) + 1 if index.size else 0
    k_law = len(names)
    layout = variable_layout(law, priors, group_sd, n_groups, centred, likelihood)
    free_start, position = {}, 0
    for stem, size in layout:
        free_start[stem] = position
        position += size
    n_dim = position
    expanded, position = {}, 0
    for stem, size in expanded_layout(law, priors, group_sd, n_groups, likelihood):
        expanded[stem] = position
        position += size
    n_expanded = position
    order = np.argsort(index, kind="stable")
    y = np.asarray(data["log_loss_observed"], dtype=np.float64)[order]
    n = y.size
    refs = law.reference_names()
    inputs = law.inputs
    tables = HEADER + SLOT * (k_law + 2)
    starts_at = tables + 2 * (k_law + 1) * n_groups
    ref_start = starts_at + n_groups + 1
    data_start = ref_start + len(refs)
    buf = np.zeros(data_start + (len(inputs) + 1) * n)
    buf[:6] = [LIKELIHOOD_CODES[likelihood], n, n_dim, n_groups, n_expanded, len(slots)]
    for k, name in enumerate([*names, "sigma", "nu"]):
        base = HEADER + SLOT * k
        prior = priors.get(name)
        buf[base + 14] = buf[base + 15] = buf[base + 16] = -1
        in_population = k < len(slots)
        if prior is None or prior.dist == "Fixed" or (name == "nu" and likelihood != "student_t"):
            buf[base] = -1
            buf[base + 9] = prior.params["value"] if prior is not None and prior.dist == "Fixed" else 1.0
        else:
            transform, lower, upper = _transform(prior)
            offset = in_population and population_offset(group_kind(law, name), prior,
                                                          group_sd[name], centred[name])
            buf[base + 17] = 1.0 if offset else 0.0
            stem = f"popw_{name}" if offset else f"pop_{name}" if in_population else name
            buf[base:base + 9] = [free_start[stem],
                                  PRIOR_CODES[prior.dist], *_prior_params(prior), transform,
                                  lower, upper]
            buf[base + 14] = expanded[f"pop_{name}" if in_population else name]
        if not in_population:
            continue
        buf[base + 11] = 1.0 if group_kind(law, name) == "log" else 0.0
        if group_sd[name] > 0 and prior.dist != "Fixed":
            buf[base + 10] = 1.0
            buf[base + 12] = free_start[f"popsd_{name}"]
            buf[base + 13] = group_sd[name]
            buf[base + 15] = expanded[f"popsd_{name}"]
            buf[base + 16] = expanded[f"group_{name}"]
            few_at, many_at = free_start.get(f"z_{name}"), free_start.get(f"raw_{name}")
            for g in range(n_groups):
                if centred[name][g]:
                    buf[tables + k * n_groups + g] = many_at
                    many_at += 1
                    buf[tables + (k_law + 1) * n_groups + k * n_groups + g] = 1.0
                else:
                    buf[tables + k * n_groups + g] = few_at
                    few_at += 1
    counts = np.bincount(index, minlength=n_groups)
    buf[starts_at:ref_start] = np.concatenate([[0], np.cumsum(counts)])
    buf[ref_start:data_start] = [float(data[name]) for name in refs]
    for i, name in enumerate(inputs):
        buf[data_start + i * n:data_start + (i + 1) * n] = np.asarray(data[f"log_{name}"])[order]
    buf[data_start + len(inputs) * n:] = y
    buf.flags.writeable = False
    return buf


def logp_and_grad(law: Any, buf: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Evaluate the grouped kernel from Python (tests, starting-point checks)."""
    grad = np.zeros(len(u))
    value = kernel(law).logp_and_grad(np.asarray(u, dtype=np.float64), grad, buf)
    return float(value), grad


def expand(law: Any, buf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The recorded values (:func:`expanded_layout`) of one free point."""
    out = np.zeros(int(buf[4]))
    kernel(law).expand(np.asarray(u, dtype=np.float64), out, buf)
    return out


def initial_centres(law: Any, priors: Mapping[str, Any], group_sd: Mapping[str, float],
                    layout: Sequence[tuple[str, int]]) -> np.ndarray:
    """Free coordinates at the priors' centres (populations), the prior sd (spreads), the
    population value (centred groups) and 0 (offsets, so an offset population value starts
    at the centred groups' mean, which is the prior's centre). This is
    :func:`~bayescale.model.build_partial`'s initial point, except for a population value
    with a LogNormal prior: PyMC starts that at the prior's mean, this at its median."""
    values = []
    for stem, size in layout:
        kind, _, name = stem.partition("_")
        if stem in ("sigma", "nu"):
            kind, name = "noise", stem
        if kind in ("pop", "noise"):
            transform, lower, upper = _transform(priors[name])
            values += [unconstrain(prior_centre(priors[name]), transform, lower, upper)] * size
        elif kind == "popsd":
            values.append(math.log(group_sd[name]))
        elif kind in ("z", "popw"):
            values += [0.0] * size
        else:   # raw: the population value on the scale it varies on
            values += [centre_on_group_scale(law, name, priors[name])] * size
    return np.array(values, dtype=np.float64)


def centre_on_group_scale(law: Any, name: str, prior: Any) -> float:
    """The prior's centre of parameter ``name`` on the scale it varies on between groups
    (its log for a log-scale parameter): the initial value of the centred groups' values."""
    centre = prior_centre(prior)
    return math.log(centre) if group_kind(law, name) == "log" else centre


def nutpie_model(law: Any, buf: np.ndarray, priors: Mapping[str, Any],
                 group_sd: Mapping[str, float], layout: Sequence[tuple[str, int]],
                 likelihood: str):
    """A nutpie compiled model sampling the grouped kernel on this buffer."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    module = kernel(law)
    centres = initial_centres(law, priors, group_sd, layout)
    n_groups = int(buf[3])

    def initial_point(seed):
        # Like PyMC's jitter+adapt_diag: the initial point plus U(-1, 1) on the free scale.
        rng = np.random.default_rng(seed)
        return centres + rng.uniform(-1.0, 1.0, size=centres.size)

    recorded = expanded_layout(law, priors, group_sd, n_groups, likelihood)
    names = [stem for stem, _ in recorded]
    slices, shapes, at = [], [], 0
    for _, size in recorded:
        slices.append(slice(at, at + size))
        at += size
    shapes = [() if stem.startswith(("pop", "sigma", "nu")) else (size,) for stem, size in recorded]
    n_dim = int(buf[2])
    coords = {"unconstrained_parameter": pd.Index([f"{s}[{i}]" for s, size in layout
                                                   for i in range(size)])}
    return CompiledPyMCModel(
        _n_dim=n_dim, dims={}, _coords=coords, _shapes=dict(zip(names, shapes)),
        compiled_logp_func=module.logp_cfunc, compiled_expand_func=module.expand_cfunc,
        initial_point_func=initial_point, shared_data={}, shared_var_keys={}, user_data=buf,
        n_expanded=at, shape_info=(names, slices, shapes), logp_func=None, expand_func=None)


KERNEL_TEMPLATE = '''"""Generated by bayescale._fastgroups for the {law} law; do not edit (regenerated on change)."""
import math

import numba
import numpy as np

from bayescale._fastgroups import (HEADER, SLOT, _noise, _population, _population_grad,
                                   _population_offsets)
from bayescale._fastlogp import _as_double, _constrain, _digamma
from bayescale._vecmath import vexp as _vexp, vlog as _vlog

K = {k}          # law parameters (slots 0..K-1); slot K is sigma, K+1 is nu
NI = {ni}        # inputs
NR = {nr}        # reference values


# reassoc: the sums over runs may be reordered, so the loop over a group's runs vectorises
# (exp and log are _vecmath's inlined polynomials); the log density moves by ~1e-15.
@numba.njit(cache=True, error_model="numpy", fastmath={{"reassoc", "contract"}})
def logp_and_grad(u, grad, buf):
    likelihood = int(buf[0])
    n = int(buf[1])
    G = int(buf[3])
    tables = HEADER + SLOT * (K + 2)
    starts = tables + 2 * (K + 1) * G
    ref_start = starts + G + 1
    data = ref_start + NR
    for i in range(grad.shape[0]):
        grad[i] = 0.0
    TH = np.empty((G, K + 1))
    GTH = np.zeros((G, K + 1))
    dcentre = np.empty(K + 1)
    spread = np.empty(K + 1)
    pop = np.zeros((3, K + 1))
    logp = _population(u, grad, buf, K, G, TH, dcentre, spread, tables, pop)
    if not math.isfinite(logp):
        return -math.inf
    noise = _noise(u, buf, K)
    sigma = noise[0]
    nu = noise[1]
    if not (sigma > 0.0 and nu > 0.0):
        return -math.inf
    logp += noise[6]
    rf = buf[ref_start:ref_start + NR]
    g_sigma = 0.0
    g_nu = 0.0
    half_nu1 = 0.5 * (nu + 1.0)
    nu_sampled = buf[HEADER + SLOT * (K + 1)] >= 0
    sigma_varies = buf[5] > K
    for grp in range(G):
        lo = int(buf[starts + grp])
        hi = int(buf[starts + grp + 1])
        th = TH[grp]
        gth = GTH[grp]
        sigma_g = math.exp(th[K]) if sigma_varies else sigma
        inv_sigma = 1.0 / sigma_g
        g_sigma_g = 0.0
{xslices}
        y = buf[data + NI * n + lo:data + NI * n + hi]
{setup}
        for j in range(hi - lo):
{point}
            r = (y[j] - mu) * inv_sigma
            r2 = r * r
            if likelihood == 1:
                log_term = _vlog(1.0 + r2 / nu)
                logp -= half_nu1 * log_term
                scale = (nu + 1.0) / (nu + r2)
                dmu = scale * r * inv_sigma
                g_sigma_g += scale * r2 * inv_sigma
                if nu_sampled:
                    g_nu += -0.5 * log_term + 0.5 * scale * r2 / nu
            else:
                logp -= 0.5 * r2
                dmu = r * inv_sigma
                g_sigma_g += r2 * inv_sigma
{point_grad}
{finish}
        logp -= (hi - lo) * math.log(sigma_g)
        g_sigma_g -= (hi - lo) * inv_sigma
        if sigma_varies:
            gth[K] += g_sigma_g * sigma_g     # d / d log sigma_g
        else:
            g_sigma += g_sigma_g
    if likelihood == 1:
        logp += n * (math.lgamma(half_nu1) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi))
        g_nu += n * (0.5 * _digamma(half_nu1) - 0.5 * _digamma(0.5 * nu) - 0.5 / nu)
    else:
        logp -= n * 0.5 * math.log(2.0 * math.pi)
    _population_grad(u, grad, buf, K, G, GTH, dcentre, spread, tables)
    _population_offsets(grad, buf, K, G, tables, pop)
    index = int(buf[HEADER + SLOT * K])
    if index >= 0 and not sigma_varies:
        grad[index] += g_sigma * noise[2] + noise[4]
    index = int(buf[HEADER + SLOT * (K + 1)])
    if index >= 0:
        grad[index] += g_nu * noise[3] + noise[5]
    return logp


@numba.njit(cache=True, error_model="numpy")
def expand(u, out, buf):
    G = int(buf[3])
    tables = HEADER + SLOT * (K + 2)
    TH = np.empty((G, K + 1))
    dcentre = np.empty(K + 1)
    spread = np.empty(K + 1)
    scratch = np.zeros(u.shape[0])
    pop = np.zeros((3, K + 1))
    KP = int(buf[5])
    _population(u, scratch, buf, K, G, TH, dcentre, spread, tables, pop)
    for k in range(K + 2):
        base = HEADER + SLOT * k
        index = int(buf[base])
        at = int(buf[base + 14])
        if index >= 0 and at >= 0:
            coordinate = pop[0, k] if k < KP else u[index]
            value, _, _, _, _ = _constrain(coordinate, int(buf[base + 6]), buf[base + 7],
                                           buf[base + 8])
            out[at] = value
        if k < KP and buf[base + 10] > 0:
            out[int(buf[base + 15])] = spread[k]
            first = int(buf[base + 16])
            for g in range(G):
                out[first + g] = math.exp(TH[g, k]) if buf[base + 11] > 0 else TH[g, k]


@numba.cfunc(numba.types.int64(numba.types.uint64, numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double),
                               numba.types.CPointer(numba.types.double), numba.types.voidptr),
             cache=True, error_model="numpy")
def logp_cfunc(dim, x_, out_, logp_, data_):
    head = numba.carray(_as_double(data_), (HEADER,))
    n = int(head[1])
    n_dim = int(head[2])
    G = int(head[3])
    if dim != n_dim:
        return -1
    size = HEADER + SLOT * (K + 2) + 2 * (K + 1) * G + G + 1 + NR + (NI + 1) * n
    buf = numba.carray(_as_double(data_), (size,))
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
    head = numba.carray(_as_double(data_), (HEADER,))
    n = int(head[1])
    n_dim = int(head[2])
    G = int(head[3])
    if dim != n_dim or expanded != int(head[4]):
        return -1
    size = HEADER + SLOT * (K + 2) + 2 * (K + 1) * G + G + 1 + NR + (NI + 1) * n
    buf = numba.carray(_as_double(data_), (size,))
    x = numba.carray(x_, (n_dim,))
    out = numba.carray(out_, (expanded,))
    expand(x, out, buf)
    return 0
'''
