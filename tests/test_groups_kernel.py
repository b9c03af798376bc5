"""The grouped kernel (bayescale._fastgroups) is PyMC's partial-pooling model, to 1e-9.

For several laws, centred and non-centred groups, shared and fixed parameters and both
likelihoods: log density differences and gradients at random points against
``build_partial``'s PyMC model, and the recorded values (population, spreads, each group's
parameters) against PyMC's deterministics.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import bayescale as bs
from bayescale import _fastgroups
from bayescale import model as model_module
from bayescale.priors import Prior

from test_groups import grouped_frame


def _runs_for(law_name: str, sizes=(30, 30, 4)):
    frame = grouped_frame(n_runs=sizes[:3])
    if len(sizes) == 4:  # four groups: ten of mixB's runs become a group of their own
        frame.loc[frame.index[frame["mix"] == "mixB"][:10], "mix"] = "mixD"
    if law_name == "compute":
        frame = frame.assign(flops=6.0 * frame["params"] * frame["tokens"])[["flops", "loss", "mix"]]
    return bs.load_runs(frame, group="mix")


CASES = [   # law, likelihood, group_sd, priors, groups' sizes
    # two large groups and a small one: all non-centred (fewer than 3 large groups)
    ("chinchilla", "student_t", None, None, (30, 30, 4)),
    # three large groups (E, a centred, a's population value an offset) and a small one
    ("chinchilla", "student_t", None, None, (30, 30, 4, "split")),
    # a shared exponent, a fixed exponent, a fixed nu, four groups
    ("chinchilla", "student_t", {"alpha": 0.0, "E_fraction": 0.3},
     {"nu": Prior("Fixed", value=5.0), "beta": Prior("Fixed", value=0.3)}, (12, 30, 4, "split")),
    # one input, its exponent varying (centred: a log-scale offset), normal likelihood
    ("compute", "normal", {"alpha": 0.3}, None, (30, 30, 4, "split")),
    # b varying too (an offset population value); the noise shared
    ("chinchilla", "student_t", {"b": 0.5, "sigma": 0.0}, None, (30, 30, 4, "split")),
    # the noise per group with a normal likelihood
    ("compute", "normal", {"sigma": 0.1}, None, (30, 4, 30)),
]


def _point(pm_model, layout, u):
    """PyMC's value-variable point for the kernel's free vector ``u``."""
    names = {pm_model.values_to_rvs[v].name: v for v in pm_model.value_vars}
    point, at = {}, 0
    for stem, size in layout:
        value = names[stem]
        point[value.name] = (u[at] if pm_model.values_to_rvs[value].ndim == 0
                             else u[at:at + size].copy())
        at += size
    return point


@pytest.mark.parametrize("law_name, likelihood, group_sd, priors, sizes", CASES)
def test_grouped_kernel_matches_pymc(law_name, likelihood, group_sd, priors, sizes):
    runs = _runs_for(law_name, sizes)
    model = bs.ScalingModel(law_name, likelihood=likelihood, pooling="partial",
                            group_sd=group_sd, priors=priors)
    law = model.law
    assert _fastgroups.supports(law, likelihood) is None
    names, index = model_module.group_index(runs)
    centred = model_module.centred_groups(model, index, len(names))
    if len(sizes) == 3:
        assert not any(c.any() for c in centred.values())
    elif law_name == "chinchilla":
        assert any(c.any() for c in centred.values()) and not all(c.all() for c in centred.values())
    buf = _fastgroups.make_buffer(law, likelihood, model.priors, model.group_sd,
                                  model.data_values(runs), index, centred)
    layout = _fastgroups.variable_layout(law, model.priors, model.group_sd, len(names),
                                         centred, likelihood)
    stems = [s for s, _ in layout]
    if law_name == "chinchilla" and group_sd is None and len(sizes) == 4:
        # a: an offset from the centred groups' mean; the noise per group, non-centred
        assert "popw_a" in stems and "pop_E_fraction" in stems and "popsd_b" not in stems
        assert "z_sigma" in stems and "raw_sigma" not in stems
    if law_name == "compute" and group_sd.get("alpha"):
        assert "popw_alpha" in stems
    if group_sd and "b" in group_sd:
        assert "popw_b" in stems and "sigma" in stems
    if group_sd and group_sd.get("sigma"):
        assert "popsd_sigma" in stems and "sigma" not in stems
    pm_model = model_module.build_partial(model, runs)
    assert sorted(s for s, _ in layout) == sorted(pm_model.values_to_rvs[v].name
                                                  for v in pm_model.value_vars)
    # the kernel starts where PyMC does (initial_centres), but for LogNormal priors' values
    start = _point(pm_model, layout, _fastgroups.initial_centres(law, model.priors,
                                                                 model.group_sd, layout))
    for value in pm_model.value_vars:
        stem = pm_model.values_to_rvs[value].name
        if not (stem.startswith("pop_") and model.priors[stem[4:]].dist == "LogNormal"):
            np.testing.assert_allclose(pm_model.initial_point()[value.name], start[value.name],
                                       rtol=1e-6, err_msg=stem)
    # FAST_COMPILE: a handful of evaluations, no C compilation; without the rewrites that
    # merge additions (Python-mode Elemwise takes at most 32 operands)
    from pytensor.compile.mode import Mode

    fast = Mode(linker="cvm", optimizer="fast_compile")
    logp = pm_model.compile_logp(mode=fast)
    dlogp = pm_model.compile_dlogp(mode=fast)
    recorded = _fastgroups.expanded_layout(law, model.priors, model.group_sd, len(names),
                                           likelihood)
    outs = pm_model.replace_rvs_by_values([pm_model[s] for s, _ in recorded])
    deterministic = pm_model.compile_fn(outs, mode=fast,
                                        inputs=pm_model.value_vars, on_unused_input="ignore")
    order = [v for v in pm_model.value_vars]
    rng = np.random.default_rng(2)
    offset = None
    n_free = sum(size for _, size in layout)
    for _ in range(4):
        u = rng.normal(0.0, 0.5, n_free)
        u[[i for i, (s, size) in enumerate(_positions(layout)) if s == "sigma"]] = math.log(0.03)
        point = _point(pm_model, layout, u)
        lp_pymc = float(logp(point))
        grad_flat = np.asarray(dlogp(point))
        # dlogp is concatenated in value_vars order: map it to the kernel's layout
        by_name, at = {}, 0
        for value in order:
            size = int(np.size(point[value.name]))
            by_name[pm_model.values_to_rvs[value].name] = grad_flat[at:at + size]
            at += size
        grad_pymc = np.concatenate([by_name[s] for s, _ in layout])
        lp, grad = _fastgroups.logp_and_grad(law, buf, u)
        offset = lp - lp_pymc if offset is None else offset   # priors' constants are dropped
        assert lp - lp_pymc == pytest.approx(offset, abs=1e-9 * max(1.0, abs(lp)))
        np.testing.assert_allclose(grad, grad_pymc, rtol=1e-9, atol=1e-9)
        expected = np.concatenate([np.atleast_1d(v) for v in deterministic(point)])
        np.testing.assert_allclose(_fastgroups.expand(law, buf, u), expected, rtol=1e-12)


def _positions(layout):
    for stem, size in layout:
        for _ in range(size):
            yield stem, size


def test_a_law_the_kernel_cannot_serve_falls_back_with_a_notice(monkeypatch):
    runs = _runs_for("chinchilla", (8, 8, 4))
    model = bs.ScalingModel("chinchilla", pooling="partial")
    monkeypatch.setattr(_fastgroups, "supports", lambda law, likelihood: "the formula uses xp.erf")

    class Compiled(Exception):
        pass

    def pymc_route(model, runs):
        raise Compiled

    monkeypatch.setattr(model_module, "_compiled_partial", pymc_route)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.DesignWarning)
        with pytest.warns(model_module.FastPathWarning,
                          match=r"no fast grouped density for the chinchilla law \(the formula "
                                r"uses xp.erf\); sampling PyMC's compiled model"):
            with pytest.raises(Compiled):
                model.fit(runs, draws=10, tune=10, chains=1)


def test_the_loop_over_runs_is_vectorised():
    """exp and log are _vecmath's polynomials and the sums may be reordered, so LLVM turns
    the loop over a group's runs into SIMD code (5.0 µs a gradient for 3 x 80 runs on a
    quiet machine: benchmarks/results/groups_speed_quiet.csv)."""
    runs = _runs_for("chinchilla", (8, 8, 4))
    model = bs.ScalingModel("chinchilla", pooling="partial")
    compiled = model_module._fast_partial(model, runs)
    import numba

    cached = _fastgroups.kernel(model.law).logp_and_grad
    # a fresh compile of the same source and options (a cache-loaded one has no LLVM IR)
    fn = numba.njit(**{k: v for k, v in cached.targetoptions.items() if k != "cache"})(
        cached.py_func)
    u = np.asarray(compiled.initial_point_func(0), dtype=np.float64)
    fn(u, np.zeros_like(u), compiled.user_data)
    llvm = fn.inspect_llvm(fn.signatures[0])
    # 8 lanes on AVX-512 machines (or 4, LLVM's choice on Zen 4), 4 on AVX2, 2 on SSE.
    assert any(f"<{lanes} x double>" in llvm for lanes in (8, 4, 2))


@pytest.mark.parametrize("law_name, group_sd", [("chinchilla", {"b": 0.5}),
                                                ("compute", {"alpha": 0.3})])
def test_population_offset_jacobian(monkeypatch, law_name, group_sd):
    """The offset model is the direct model (population value sampled as itself) after the
    change of variables c = mean(raw) + s/sqrt(n)·w: their log densities differ by exactly
    log|dc/dw| = log(s/sqrt(n)) per offset parameter, not merely by a constant."""
    from pytensor.compile.mode import Mode

    runs = _runs_for(law_name, (30, 30, 4, "split"))   # 4 groups, 3 of them large
    model = bs.ScalingModel(law_name, likelihood="normal", pooling="partial", group_sd=group_sd)
    new = model_module.build_partial(model, runs)
    with monkeypatch.context() as patch:
        patch.setattr(_fastgroups, "population_offset", lambda *args, **kwargs: False)
        old = model_module.build_partial(model, runs)
    offsets = [v.name[len("popw_"):] for v in new.value_vars if v.name.startswith("popw_")]
    assert offsets and not any(v.name.startswith("popw_") for v in old.value_vars)
    old_pop = {old.values_to_rvs[v].name: v.name for v in old.value_vars}
    fast = Mode(linker="cvm", optimizer="fast_compile")
    logp_new, logp_old = new.compile_logp(mode=fast), old.compile_logp(mode=fast)
    rng = np.random.default_rng(0)
    start = new.initial_point()
    for _ in range(4):
        point = {k: np.asarray(v) + rng.normal(0.0, 0.3, np.shape(v)) for k, v in start.items()}
        mapped = {k: v for k, v in point.items() if not k.startswith("popw_")}
        expected = 0.0
        for name in offsets:
            raw = point[f"raw_{name}"]
            scale = math.exp(point[f"popsd_{name}_log__"]) / math.sqrt(raw.size)
            # the direct model's coordinate: the value itself (linear) or its log (log scale)
            mapped[old_pop[f"pop_{name}"]] = raw.mean() + scale * point[f"popw_{name}"]
            expected += math.log(scale)
        lp_new, lp_old = float(logp_new(point)), float(logp_old(mapped))
        assert lp_new - lp_old == pytest.approx(expected, rel=1e-10, abs=1e-11 * abs(lp_new))
