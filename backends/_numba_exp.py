"""The fast, vectorisable exp of the Numba CPU kernels (``backends/_numba_kernels.py``), and the
fastmath flags they compile with.

``fexp`` -- a vectorisable exp for float64 and float32. This llvmlite has no SVML, so
``math.exp`` is a scalar libm call and any loop containing it stays scalar. ``fexp`` is plain
arithmetic LLVM can vectorise: x = k*ln2 + r with a Cody-Waite two-constant split of ln2
(the hi part has few enough bits that k*ln2_hi is exact), a near-minimax polynomial for exp(r)
on |r| <= ln2/2 (Chebyshev fit in 40-digit arithmetic: degree 11 in float64, error 3e-18;
degree 6 in float32, error 2e-9), and the scale 2^k built from the exponent bits of two
floats (2^k = 2^floor(k/2) * 2^(k - floor(k/2)), so the whole range from gradual underflow to
overflow is covered without a branch). x is clamped to a range just outside the finite
results, so large arguments still overflow to +inf and very negative ones give +0 exactly,
as libm does -- which makes ``1/(1+fexp(-z))`` give exactly 0 at z = -800 like NumPy's sigmoid.
Accuracy (tests/test_numba_cpu.py): within 2 ulp of libm over the whole range in float64.

fastmath: the kernels allow reassociation/contraction (``KERNEL_FM``: vectorised dot products,
FMAs); the exp itself only allows contraction (``EXP_FM``) -- reassociation could undo the
Cody-Waite split.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# Fastmath for the training kernels: no 'nnan'/'ninf' (exp overflows to inf on purpose), no 'afn'.
KERNEL_FM = {"reassoc", "contract", "nsz", "arcp"}
EXP_FM = {"contract"}


@intrinsic
def _scale(typingctx, k):
    """2^k for an integer-valued float k in [-1022, 1023] (float32: [-126, 127]) from exponent bits.

    k plus the exponent bias lands exactly in the low bits of the mantissa of
    k + bias + 1.5 * 2^52 (2^23 in float32); shifting those bits into the exponent field drops the
    rest. A float add and an integer shift: it vectorises without AVX-512's float-to-int64
    conversions (an AVX2 machine's GCC left the C twin's exp scalar with ``(int64_t)kf``).
    """
    if k == types.float64:
        width, magic, shift = 64, 6755399441056767.0, 52  # 0x1.8p52 + 1023
    elif k == types.float32:
        width, magic, shift = 32, 12583039.0, 23  # 0x1.8p23 + 127
    else:
        return None

    def codegen(context, builder, signature, args):
        real = args[0].type
        biased = builder.fadd(args[0], ir.Constant(real, magic))  # exact: no fastmath flags
        bits = builder.shl(builder.bitcast(biased, ir.IntType(width)), ir.Constant(ir.IntType(width), shift))
        return builder.bitcast(bits, real)

    return k(k), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931467056274414  # ln2 rounded to 21 significant bits: k * _LN2_HI is exact
_LN2_LO = 4.7493250390316726e-07
# exp(r) on |r| <= ln2/2, Chebyshev fit (degree 11), coefficients of r^0 .. r^11
_C64 = (
    1.0,
    1.0,
    0.5000000000000019,
    0.1666666666666668,
    0.0416666666664881,
    0.008333333333319601,
    0.0013888888952314775,
    0.00019841269890047113,
    2.4801485482328494e-05,
    2.755724091857897e-06,
    2.763263963904103e-07,
    2.5110037605963777e-08,
)


@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def exp64(x):
    """exp(x) in float64, branch-free (vectorisable), ~1 ulp; +inf above 709.78, +0 below -745.1."""
    x = x if x > -746.0 else -746.0  # (not min/max: their NaN handling branches, blocking SIMD)
    x = x if x < 710.0 else 710.0
    return _exp64_in_range(x)


@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def _exp64_in_range(x):
    """``exp64`` for -746 <= x <= 710, without the clamps."""
    kf = np.floor(x * _LOG2E + 0.5)
    r = x - kf * _LN2_HI
    r = r - kf * _LN2_LO
    p = _C64[11]
    p = p * r + _C64[10]
    p = p * r + _C64[9]
    p = p * r + _C64[8]
    p = p * r + _C64[7]
    p = p * r + _C64[6]
    p = p * r + _C64[5]
    p = p * r + _C64[4]
    p = p * r + _C64[3]
    p = p * r + _C64[2]
    p = p * r + 1.0
    p = p * r + 1.0
    k1 = np.floor(kf * 0.5)
    return p * _scale(k1) * _scale(kf - k1)


_LOG2E32 = np.float32(1.4426950408889634)
_LN2_HI32 = np.float32(0.693359375)  # 9 significant bits: k * hi exact for |k| < 2^15
_LN2_LO32 = np.float32(-0.00021219444170128554)
_C32_2 = np.float32(0.5)
_C32_3 = np.float32(0.16666415333747864)
_C32_4 = np.float32(0.04166635125875473)
_C32_5 = np.float32(0.00837512593716383)
_C32_6 = np.float32(0.0013941108481958508)
_ONE32 = np.float32(1.0)
_HALF32 = np.float32(0.5)
_LO32 = np.float32(-104.0)
_HI32 = np.float32(89.0)


@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def exp32(x):
    """exp(x) in float32 (all arithmetic float32), branch-free, ~1 ulp; +inf above 88.72, +0 below -103.97."""
    x = x if x > _LO32 else _LO32
    x = x if x < _HI32 else _HI32
    return _exp32_in_range(x)


@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def _exp32_in_range(x):
    """``exp32`` for -104 <= x <= 89, without the clamps."""
    kf = np.floor(x * _LOG2E32 + _HALF32)
    r = x - kf * _LN2_HI32
    r = r - kf * _LN2_LO32
    p = _C32_6
    p = p * r + _C32_5
    p = p * r + _C32_4
    p = p * r + _C32_3
    p = p * r + _C32_2
    p = p * r + _ONE32
    p = p * r + _ONE32
    k1 = np.floor(kf * _HALF32)
    return p * _scale(k1) * _scale(kf - k1)


def fexp(x):
    """exp in the argument's float type (dispatches to exp64 / exp32 inside compiled code)."""
    raise NotImplementedError("fexp is only callable from compiled code")


@overload(fexp)
def _fexp_overload(x):
    if x == types.float32:
        return lambda x: exp32(x)
    if x == types.float64:
        return lambda x: exp64(x)
    return None


# The sigmoid of the kernels, s(z) = 1 / (1 + exp(-z)), with exp's clamps moved to the end: the
# exp runs on the unclamped -z, and outside the clamps' range the result is the constant the
# clamped exp gives there (0 above x = 710, where exp overflows to +inf; 1 below x = -746, where
# it underflows to +0; NaN goes to 1, as through the clamps). Bit for bit the value of
# ``1 / (1 + fexp(-z))``, with the selects off the exp's dependent chain: GCC makes this move by
# itself in the C twin (backends/_c/train.c), LLVM does not; 10-15% off the hidden layer's
# sigmoid loop on an AMD Zen 3 (docs/performance.md, "Numba against GCC on an AVX2 machine").
@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def sigmoid64(z):
    x = -z
    s = 1.0 / (1.0 + _exp64_in_range(x))
    s = s if x < 710.0 else 0.0
    return s if x > -746.0 else 1.0


_ZERO32 = np.float32(0.0)


@njit(cache=True, fastmath=EXP_FM, error_model="numpy")
def sigmoid32(z):
    x = -z
    s = _ONE32 / (_ONE32 + _exp32_in_range(x))
    s = s if x < _HI32 else _ZERO32
    return s if x > _LO32 else _ONE32


def fsigmoid(z):
    """1 / (1 + fexp(-z)) in the argument's float type (sigmoid64 / sigmoid32 in compiled code)."""
    raise NotImplementedError("fsigmoid is only callable from compiled code")


@overload(fsigmoid)
def _fsigmoid_overload(z):
    if z == types.float32:
        return lambda z: sigmoid32(z)
    if z == types.float64:
        return lambda z: sigmoid64(z)
    return None
