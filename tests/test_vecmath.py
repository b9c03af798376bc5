"""The vectorisable exp/log/log1p/expm1 against libm: ~1 ulp everywhere, libm's special values, and
the loops that call them compile to SIMD code."""

from __future__ import annotations

import numba
import numpy as np

from bayescale._vecmath import vexp, vexpm1, vlog, vlog1p


@numba.njit(error_model="numpy")
def _map_exp(a, out):
    for j in range(a.size):
        out[j] = vexp(a[j])


@numba.njit(error_model="numpy")
def _map_log(a, out):
    for j in range(a.size):
        out[j] = vlog(a[j])


@numba.njit(error_model="numpy")
def _map_log1p(a, out):
    for j in range(a.size):
        out[j] = vlog1p(a[j])


@numba.njit(error_model="numpy")
def _map_expm1(a, out):
    for j in range(a.size):
        out[j] = vexpm1(a[j])


def _ulp(ours, ref):
    ok = np.isfinite(ref) & (ref != 0)
    return np.max(np.abs(ours[ok] - ref[ok]) / np.spacing(np.abs(ref[ok])))


def test_exp_within_an_ulp_and_special_values():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 709, 20000), rng.uniform(-3, 3, 20000)])
    out = np.empty_like(x)
    _map_exp(x, out)
    assert _ulp(out, np.exp(x)) <= 1.0
    special = np.array([np.inf, -np.inf, np.nan, 0.0, 709.78, 710.0, -745.1, -746.0, -720.0])
    out = np.empty_like(special)
    _map_exp(special, out)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out, np.exp(special))   # subnormals and overflow too


def test_log_within_an_ulp_and_special_values():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 20000)), rng.uniform(0.5, 2.0, 20000)])
    out = np.empty_like(x)
    _map_log(x, out)
    assert _ulp(out, np.log(x)) <= 1.0
    special = np.array([np.inf, np.nan, 0.0, -0.0, -1.0, 1e-310, 5e-324, 1.0])
    out = np.empty_like(special)
    _map_log(special, out)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(out, np.log(special))


def test_log1p_keeps_small_arguments_exact_and_special_values():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1e-8, 1e-8, 2000), rng.uniform(-0.3, 0.42, 20000),
                        rng.uniform(-1.0, 2.0, 20000), np.expm1(rng.uniform(-700, 700, 20000)),
                        [-0.29, 0.41, -0.29 - 1e-16, 0.41 + 1e-16, 5e-324, -5e-324, 1e-310]])
    out = np.empty_like(x)
    _map_log1p(x, out)
    with np.errstate(divide="ignore"):    # expm1(-700) is -1: log1p(-1) = -inf on both sides
        ref = np.log1p(x)
    assert np.array_equal(np.isinf(out), np.isinf(ref))
    ok = np.isfinite(ref) & (ref != 0)
    assert np.max(np.abs(out[ok] - ref[ok]) / np.abs(ref[ok])) < 1e-15
    assert _ulp(out, ref) <= 2.0
    special = np.array([np.inf, np.nan, 0.0, -0.0, -1.0, -1.5, -np.inf])
    out = np.empty_like(special)
    _map_log1p(special, out)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(out, np.log1p(special))


def test_expm1_keeps_small_arguments_exact():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-1, 1, 20000), rng.uniform(-1e-8, 1e-8, 2000),
                        rng.uniform(-40, 40, 2000)])
    out = np.empty_like(x)
    _map_expm1(x, out)
    assert _ulp(out, np.expm1(x)) <= 4.0


def test_loops_calling_them_are_vectorised():
    a = np.ones(8)
    out = np.empty(8)
    _map_exp(a, out)
    _map_log(a, out)
    _map_log1p(a, out)
    _map_expm1(a, out)
    for fn in (_map_exp, _map_log, _map_log1p, _map_expm1):
        llvm = fn.inspect_llvm(fn.signatures[0])
        # 8 lanes on AVX-512 machines, 4 on AVX2, 2 on SSE.
        assert any(f"<{lanes} x double>" in llvm for lanes in (8, 4, 2))
