"""The numba log density derived from each law must be the PyMC model's, to the last digit."""

from __future__ import annotations

import numpy as np
import pytest

import bayescale as bs
from bayescale import _fastlogp
from bayescale.priors import Prior
from conftest import synthetic_chinchilla_frame, synthetic_compute_frame

CUSTOM_PRIORS = {
    "nu": Prior("Uniform", lower=1, upper=30),
    "alpha": Prior("TruncatedNormal", mu=0.3, sigma=0.1, lower=0, upper=1),
    "a": Prior("StudentT", nu=3, mu=0, sigma=2),
    "sigma": Prior("HalfStudentT", nu=3, sigma=0.1),
    "E_fraction": Prior("Beta", alpha=3, beta=2),
}


def _pymc_and_kernel(model, runs):
    pm_model = model.build(runs)
    logp, dlogp = pm_model.compile_logp(), pm_model.compile_dlogp()
    value_names = [v.name for v in pm_model.value_vars]
    rv_names = [pm_model.values_to_rvs[v].name for v in pm_model.value_vars]
    sampled = model.sampled_parameters()
    order = [rv_names.index(name) for name in sampled]
    buf = _fastlogp.make_buffer(model.law, model.likelihood, model.priors, sampled,
                                model.data_values(runs))

    def pymc(u):
        point = {value_names[order[i]]: u[i] for i in range(len(sampled))}
        grad = np.asarray(dlogp(point))
        return float(logp(point)), np.array([grad[order[i]] for i in range(len(sampled))])

    return pymc, (lambda u: _fastlogp.logp_and_grad(model.law, buf, u)), sampled


@pytest.mark.parametrize("law, likelihood, priors", [
    ("chinchilla", "student_t", None),
    ("chinchilla", "normal", {"sigma": Prior("Exponential", lam=10),
                              "beta": Prior("Gamma", alpha=2, beta=5)}),
    ("chinchilla", "student_t", {**CUSTOM_PRIORS, "beta": Prior("Uniform", lower=0, upper=2),
                                 "b": Prior("Fixed", value=0.5)}),
    ("compute", "student_t", None),
    ("compute", "normal", {"alpha": Prior("HalfNormal", sigma=0.5)}),
])
def test_kernel_matches_pymc_log_density_and_gradient(law, likelihood, priors):
    frame = synthetic_chinchilla_frame() if law == "chinchilla" else synthetic_compute_frame()
    model = bs.ScalingModel(law, likelihood=likelihood, priors=priors)
    pymc, kernel, sampled = _pymc_and_kernel(model, bs.load_runs(frame))
    rng = np.random.default_rng(0)
    offset = None
    for _ in range(6):
        u = rng.normal(0.0, 0.7, len(sampled))
        u[sampled.index("sigma")] = np.log(0.05) + 0.3 * rng.standard_normal()
        lp_pymc, grad_pymc = pymc(u)
        lp, grad = kernel(u)
        # Equal up to one constant (the kernel drops normalising constants of priors).
        offset = lp - lp_pymc if offset is None else offset
        assert lp - lp_pymc == pytest.approx(offset, abs=1e-11 * max(1.0, abs(lp)))
        np.testing.assert_allclose(grad, grad_pymc, rtol=1e-9, atol=1e-9)


def test_kernel_rejects_values_outside_the_support():
    model = bs.ScalingModel("compute")
    runs = bs.load_runs(synthetic_compute_frame())
    buf = _fastlogp.make_buffer(model.law, "student_t", model.priors, model.sampled_parameters(),
                                model.data_values(runs))
    lp, grad = _fastlogp.logp_and_grad(model.law, buf, np.array([0.0, 0.0, np.log(0.1), np.log(0.02)]))
    assert np.isfinite(lp) and np.isfinite(grad).all()
    # E_fraction's log-odds at +800 rounds to exactly 1: not a valid fraction.
    lp, _ = _fastlogp.logp_and_grad(model.law, buf, np.array([800.0, 0.0, np.log(0.1), np.log(0.02)]))
    assert lp == -np.inf


@pytest.mark.slow  # compiles the PyMC model for nutpie (tens of seconds)
def test_fast_and_pymc_compiled_samplers_agree(synthetic_runs, chinchilla_fit):
    from conftest import quiet_fit

    other = quiet_fit(bs.ScalingModel("chinchilla"), synthetic_runs, sampler="nutpie-pymc")
    a, b = chinchilla_fit.summary(), other.summary()
    for name in ("E", "alpha", "beta"):
        assert abs(a.loc[name, "median"] - b.loc[name, "median"]) < 0.5 * a.loc[name, "sd"] + 0.5 * b.loc[name, "sd"]


def _fresh_llvm(function, *args) -> str:
    """LLVM IR of a (possibly cached) numba function, recompiled with the same options.

    numba cannot show the IR of code it loaded from its cache, so the Python source is
    compiled again, uncached, with the options the kernel declares (fastmath included).
    """
    import numba

    options = {k: v for k, v in function.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(function.py_func)
    fresh(*args)
    return fresh.inspect_llvm(fresh.signatures[0])


# exp/log-only laws are like chinchilla: checked in the slow suite (each compile takes 2-5 s)
_EXP_LOG_ONLY = {"compute", "kaplan", "kaplan_d", "kaplan_n", "overtrained"}


@pytest.mark.parametrize("likelihood", ["student_t", "normal"])
@pytest.mark.parametrize("law", [pytest.param(name, marks=pytest.mark.slow) if name in _EXP_LOG_ONLY
                                 else name for name in bs.available_laws()])
def test_kernel_loop_over_runs_is_vectorised(law, likelihood):
    # The loop over runs must compile to SIMD code: a libm call, a branch on the likelihood or
    # a function call left in it stops that and costs 2-3x (benchmarks/bench_laws_profile.py).
    # A vectorised loop's body is one basic block "vector.body<n>"; vexp's rounding in vector
    # form there shows it is the law's own lines (LLVM can also vectorise a loop around scalar
    # libm calls). 8 lanes on AVX-512 machines, 4 on AVX2, 2 on SSE.
    import re

    module = _fastlogp.kernel(bs.get_law(law), likelihood)
    llvm = _fresh_llvm(module.logp_and_grad, np.zeros(1), np.zeros(1), np.zeros(1000))
    pieces = re.split(r"^([\w.]+):", llvm, flags=re.M)
    blocks = dict(zip(pieces[1::2], pieces[2::2]))
    simd = [label for label, body in blocks.items() if label.startswith("vector.body")
            and any(f"@llvm.rint.v{lanes}f64" in body for lanes in (8, 4, 2))]
    assert simd, "the loop over runs is not vectorised"


def test_kernel_file_names_follow_the_bayescale_code_they_use(tmp_path):
    # numba's cache would serve machine code with an old vexp or _prior inlined: the name of
    # a generated file must change when a module the source imports changes.
    from bayescale._derive import source_digest

    source = "from bayescale._helper import f\n\ndef g(x):\n    return f(x)\n"
    (tmp_path / "_helper.py").write_text("def f(x):\n    return x\n")
    before = source_digest(source, tmp_path)
    assert source_digest(source, tmp_path) == before
    (tmp_path / "_helper.py").write_text("def f(x):\n    return 2 * x\n")
    after = source_digest(source, tmp_path)
    assert after != before
    (tmp_path / "_other.py").write_text("x = 1\n")     # a module it does not import
    assert source_digest(source, tmp_path) == after


def test_a_buffer_with_an_unknown_likelihood_code_is_refused_by_name():
    # was a bare StopIteration from next()
    from bayescale import _fastlogp as fast

    buf = np.zeros(4)
    buf[0] = 99.0
    with pytest.raises(ValueError, match="unknown likelihood code 99"):
        fast._likelihood_of(buf)
