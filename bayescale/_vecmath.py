"""exp, log, log1p and expm1 as plain arithmetic, so numba loops that call them vectorise.

numba's ``math.exp`` / ``math.log`` are calls into libm; without SVML, LLVM cannot vectorise a
loop that contains a call, so a density's loop over points runs one point at a time. The
functions here are range reduction plus a polynomial, written with branch-free selects and a
bit cast (an integer exponent placed into a double's exponent field), which LLVM inlines and
turns into SIMD code. Accuracy: within 2 ulp of libm over the whole double range, with libm's
special values (``exp(±inf)``, ``exp(nan)``, ``log(0) = -inf``, ``log(x < 0) = nan``, ``log(inf)``,
subnormal inputs and outputs); ``tests/test_vecmath.py`` checks both.

They are inlined into their callers (``inline="always"``), so in a loop compiled with
``fastmath={"reassoc"}`` (to vectorise sums) their sums may be reordered; the steps whose
order matters (rounding, the Cody-Waite reduction) are LLVM intrinsics reassociation
leaves alone, so they stay within a few ulp there for |x| < 708.

The exp polynomial is the Taylor series of exp(r) on |r| ≤ ln2/2 to degree 13; the log one is
the classic atanh-based reduction with minimax coefficients on s = f/(2 + f) (as in fdlibm).
"""

from __future__ import annotations

import math

import numba
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["vexp", "vlog", "vlog1p", "vexpm1", "vexpm1_small"]


@intrinsic
def _f2i(typingctx, x):
    """The bits of a double as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return sig, codegen


@intrinsic
def _i2f(typingctx, x):
    """An int64's bits as a double."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def _shift52(typingctx, x):
    """Logical right shift by 52 (the exponent field; AVX2 has no 64-bit arithmetic shift)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.lshr(args[0], context.get_constant(types.int64, 52))

    return sig, codegen


@intrinsic
def _rint(typingctx, x):
    """Round to the nearest integer (llvm.rint: one SIMD instruction, opaque to reassociation)."""
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.rint", [args[0].type])
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c rounded once (llvm.fma; kept intact in loops compiled with reassociation)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [ty], ir.FunctionType(ty, [ty, ty, ty]))
        return builder.call(fn, args)

    return sig, codegen


# Adding 1.5·2^52 rounds a double to an integer and leaves that integer in the low bits
# (AVX2 has no double <-> int64 conversion; this stays in SIMD registers).
_MAGIC = 6755399441055744.0
_MAGIC_BITS = 0x4338000000000000
_TWO52 = 4503599627370496.0
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LN2 = 0.6931471805599453              # ln 2 rounded, and the rest
_LN2_REST = 2.3190468138462996e-17
_SQRT2 = 1.4142135623730951
# 1/k! for k = 2..13
_C2, _C3, _C4, _C5 = 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120
_C6, _C7, _C8, _C9 = 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880
_C10, _C11, _C12, _C13 = 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_TINY = 2.2250738585072014e-308
_TWO54 = 18014398509481984.0
_INF = float("inf")
_NAN = float("nan")


@numba.njit(inline="always", error_model="numpy")
def vexp(x):
    """exp(x) without a libm call (vectorisable)."""
    # Clamp so the integer exponent stays in range; outside it the result is 0 or inf anyway.
    c = x if x > -746.0 else -746.0
    c = c if c < 710.0 else 710.0
    c = c if x == x else 0.0          # nan: computed on 0, restored below
    k = _rint(c * _LOG2E)                          # nearest integer to x / ln 2
    r = _fma(-k, _LN2_REST, _fma(-k, _LN2, c))    # x − k·ln 2, exact to ~1e-19·|k|
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    # 2^k as two normal powers of two (k may be below -1022 or reach 1024)
    k1 = _rint(0.5 * k)                           # any split keeps both halves normal
    k2 = k - k1
    s1 = _i2f((_f2i(k1 + _MAGIC) - _MAGIC_BITS + 1023) << 52)
    s2 = _i2f((_f2i(k2 + _MAGIC) - _MAGIC_BITS + 1023) << 52)
    out = p * s1 * s2
    return out if x == x else x


@numba.njit(inline="always", error_model="numpy")
def _log_terms(f):
    # fdlibm's log kernel on f = m − 1: s = f/(2 + f), f²/2 and the two halves of the series in s².
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    return s, 0.5 * f * f, t1, t2


@numba.njit(inline="always", error_model="numpy")
def vlog(x):
    """log(x) without a libm call (vectorisable)."""
    sub = x < _TINY
    xs = x * _TWO54 if sub else x
    bits = _f2i(xs)
    field = _i2f(_shift52(bits) | 0x4330000000000000) - _TWO52   # biased exponent, as a double
    m = _i2f((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)   # in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = field - 1023.0 + (1.0 if big else 0.0) - (54.0 if sub else 0.0)
    f = m - 1.0
    s, hfsq, t1, t2 = _log_terms(f)
    out = k * _LN2_HI - ((hfsq - (s * (hfsq + t2 + t1) + k * _LN2_LO)) - f)
    out = out if x < _INF else x          # inf and nan pass through
    out = -_INF if x == 0.0 else out
    return _NAN if x < 0.0 else out


@numba.njit(inline="always", error_model="numpy")
def _log1p_reduced(f):
    # log(1 + f) for f in vlog's reduced range (k = 0): fdlibm's kernel, with no rounding of 1 + f.
    s, hfsq, t1, t2 = _log_terms(f)
    return f - (hfsq - s * (hfsq + t2 + t1))


@numba.njit(inline="always", error_model="numpy")
def vlog1p(x):
    """log(1 + x) without a libm call (vectorisable).

    For −0.29 ≤ x ≤ 0.41 (where 1 + x lies in vlog's reduced range) the polynomial runs on x
    itself, so small x keep full relative precision; elsewhere ``vlog(1 + x)``, whose rounding
    of 1 + x costs at most an ulp there (|log1p(x)| ≥ 0.34). Both are computed and one
    selected, so the function stays branch-free and needs no compensated sum that
    reassociation could undo.
    """
    near = (x >= -0.29) & (x <= 0.41)
    small = _log1p_reduced(x if near else 0.0)
    large = vlog(1.0 + x)
    return small if near else large


@numba.njit(inline="always", error_model="numpy")
def vexpm1_small(x):
    """exp(x) − 1 for |x| < 0.35 (a series: no cancellation near 0)."""
    p = _C13 * (1.0 / 14.0)
    p = p * x + _C12 * (1.0 / 13.0)
    p = p * x + _C11 * (1.0 / 12.0)
    p = p * x + _C10 * (1.0 / 11.0)
    p = p * x + _C9 * (1.0 / 10.0)
    p = p * x + _C8 * (1.0 / 9.0)
    p = p * x + _C7 * (1.0 / 8.0)
    p = p * x + _C6 * (1.0 / 7.0)
    p = p * x + _C5 * (1.0 / 6.0)
    p = p * x + _C4 * (1.0 / 5.0)
    p = p * x + _C3 * (1.0 / 4.0)
    p = p * x + _C2 * (1.0 / 3.0)
    p = p * x + 0.5
    p = p * x + 1.0
    return x * p


@numba.njit(inline="always", error_model="numpy")
def vexpm1(x):
    """exp(x) − 1 without a libm call. In a hot loop, call :func:`vexpm1_small` and
    :func:`vexp` there and select (this function is too large for LLVM to inline)."""
    small = vexpm1_small(x)
    large = vexp(x) - 1.0     # both computed: a select, not a branch
    return small if abs(x) < 0.34 else large
