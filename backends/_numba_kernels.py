"""Compiled kernels shared by `numba-cpu` and `numba-parallel` (and measured by harness.floor).

What is here and why (docs/performance.md has the measurements):

* ``fexp`` -- a vectorisable exp for float64 and float32. This llvmlite has no SVML, so
  ``math.exp`` is a scalar libm call and any loop containing it stays scalar. ``fexp`` is plain
  arithmetic LLVM can vectorise: x = k*ln2 + r with a Cody-Waite two-constant split of ln2
  (the hi part has few enough bits that k*ln2_hi is exact), a near-minimax polynomial for exp(r)
  on |r| <= ln2/2 (Chebyshev fit in 40-digit arithmetic: degree 11 in float64, error 3e-18;
  degree 6 in float32, error 2e-9), and the scale 2^k built from the exponent bits of two
  floats (2^k = 2^(k>>1) * 2^(k - (k>>1)), so the whole range from gradual underflow to
  overflow is covered without a branch). x is clamped to a range just outside the finite
  results, so large arguments still overflow to +inf and very negative ones give +0 exactly,
  as libm does -- which makes ``1/(1+fexp(-z))`` give exactly 0 at z = -800 like NumPy's sigmoid.
  Accuracy (tests/test_numba_cpu.py): within 2 ulp of libm over the whole range in float64.

* ``tile2_rows`` / ``tile2_cols`` -- one row tile of the 3-layer net, *fused*: the batch is
  streamed in tiles of T rows whose activations (T*H values) stay in L1/L2; the full N x H
  activation matrix is never built. Per tile: pre-activations, the sigmoid over the flat tile
  (the expensive part, vectorised whatever the shape), the output layer and its deltas, then the
  gradient contributions gW1 += a1.T @ d2 and gW0 += X.T @ d1. Row layout (T x H, vectorised over
  h; gradients accumulated four rows per pass) suits small batches and wide layers; column layout
  (H x T, vectorised over the tile's rows) suits everything with N >= 64 and H <= 256. Both have a
  fused D=3, O=1 path. Gradients go to per-chunk accumulators (a chunk is a fixed range of
  tiles; one per thread in numba-parallel); the weights are updated once, after all chunks, so
  d1 uses W1 from before the update (SPEC step 5).

* ``train2_small`` -- tiny 3-layer problems (N*H <= 256, e.g. the xor3 seed): plain scalar loops,
  where the tiles' bookkeeping would cost more than the arithmetic.

* ``train1`` -- the 2-layer net (one weight matrix): row-by-row scalar loops (D x O is tiny).

Why this is one file of ~600 lines, and why the loop's math appears in more than one kernel:
each kernel above is the same SPEC iteration written for one regime (row vs column layout, the
fused D=3/O=1 path vs any D and O, tiles vs plain loops, 2- vs 3-layer), because whether LLVM
vectorises a loop nest depends on its exact form: indexing ``Xt[d, r0 + t]`` instead of a tile
view, or ``min``/``max`` instead of conditional expressions, kept loops scalar
(docs/performance.md, steps 3 and 4), and each layout's best loop order differs. What can be shared
without that cost is shared (``fexp``, ``sigmoid_flat``, ``_rows_times``, ``_acc_outer``,
``update``, ``chunk2``), and the kernels are kept together so the building blocks and their
callers are read side by side. tests/test_numba_cpu.py checks every regime against NumPy.

Every kernel takes ``one`` (1 in the problem dtype) and ``alpha`` already cast to the dtype, so
float32 runs stay float32 (a Python float literal would promote the arithmetic to float64).
fastmath: the kernels allow reassociation/contraction (vectorised dot products, FMAs); the exp
itself only allows contraction -- reassociation could undo the Cody-Waite split.
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
def _f64_from_bits(typingctx, bits):
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _f32_from_bits(typingctx, bits):
    """float32 whose bit pattern is the low 32 bits of an int64 (numba types int32 maths as int64)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())

    return types.float32(types.int64), codegen


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
    k = np.int64(kf)
    k1 = k >> 1
    k2 = k - k1
    return p * _f64_from_bits((k1 + 1023) << 52) * _f64_from_bits((k2 + 1023) << 52)


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
    k = np.int64(kf)
    k1 = k >> 1
    k2 = k - k1
    return p * _f32_from_bits((k1 + 127) << 23) * _f32_from_bits((k2 + 127) << 23)


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


# ---------------------------------------------------------------------------------------------
# Building blocks (all inlined into the training kernels by LLVM)


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def sigmoid_flat(buf, n, one):
    """buf[:n] = 1 / (1 + exp(-buf[:n])) -- the one loop that holds every exp; vectorised."""
    for i in range(n):
        buf[i] = one / (one + fexp(-buf[i]))


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def _rows_times(Z, Xt, r0, T, W):
    """Z[t, :] = sum_d Xt[d, r0 + t] * W[d, :] for t < T (Z is T x H, W is D x H)."""
    D = W.shape[0]
    H = W.shape[1]
    for t in range(T):
        x = Xt[0, r0 + t]
        for h in range(H):
            Z[t, h] = x * W[0, h]
        for d in range(1, D):
            x = Xt[d, r0 + t]
            for h in range(H):
                Z[t, h] += x * W[d, h]


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def _acc_outer(G, B, b0, M, T):
    """G[k, :] += sum_t B[k, b0 + t] * M[t, :] for t < T, four rows of M per pass over G."""
    K = G.shape[0]
    H = G.shape[1]
    T4 = T - T % 4
    for k in range(K):
        for t in range(0, T4, 4):
            c0 = B[k, b0 + t]
            c1 = B[k, b0 + t + 1]
            c2 = B[k, b0 + t + 2]
            c3 = B[k, b0 + t + 3]
            for h in range(H):
                G[k, h] += (c0 * M[t, h] + c1 * M[t + 1, h]) + (c2 * M[t + 2, h] + c3 * M[t + 3, h])
        for t in range(T4, T):
            c0 = B[k, b0 + t]
            for h in range(H):
                G[k, h] += c0 * M[t, h]


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def tile2_rows(Xt, yt, W0, W1t, r0, T, Abuf, d2, g0, g1, one):
    """Forward + backward of rows r0 .. r0+T-1 of the 3-layer net, row layout (vectorised over h).

    Xt (D x N), yt (O x N), W0 (D x H), W1t (O x H) = W1.T; Abuf (>= T*H) and d2 (O x >=T) are
    scratch. Adds the tile's gradients to g0 (D x H) and g1 (O x H); returns sum |err| (float64).
    """
    D = W0.shape[0]
    H = W0.shape[1]
    O = W1t.shape[0]  # noqa: E741
    A = Abuf[: T * H].reshape((T, H))
    fast = D == 3 and O == 1
    # 1. a1 = s(X @ W0) for the tile, then the exps over one flat contiguous buffer
    if fast:
        for t in range(T):
            x0 = Xt[0, r0 + t]
            x1 = Xt[1, r0 + t]
            x2 = Xt[2, r0 + t]
            for h in range(H):
                A[t, h] = x0 * W0[0, h] + x1 * W0[1, h] + x2 * W0[2, h]
    else:
        _rows_times(A, Xt, r0, T, W0)
    sigmoid_flat(Abuf, T * H, one)
    # 1-4. a2 = s(a1 @ W1), err, |err|, d2 = err * a2 * (1 - a2)
    loss = 0.0
    for t in range(T):
        for o in range(O):
            z = A[t, 0] * W1t[o, 0]
            for h in range(1, H):
                z += A[t, h] * W1t[o, h]
            a2 = one / (one + fexp(-z))
            err = yt[o, r0 + t] - a2
            loss += abs(err)
            d2[o, t] = err * a2 * (one - a2)
    if fast:
        # 5-6 fused, four rows per pass: g1 += a1.T @ d2; d1 = d2 * W1.T * a1 * (1 - a1); g0 += X.T @ d1
        T4 = T - T % 4
        for t in range(0, T4, 4):
            e0 = d2[0, t]
            e1 = d2[0, t + 1]
            e2 = d2[0, t + 2]
            e3 = d2[0, t + 3]
            x00 = Xt[0, r0 + t]
            x01 = Xt[0, r0 + t + 1]
            x02 = Xt[0, r0 + t + 2]
            x03 = Xt[0, r0 + t + 3]
            x10 = Xt[1, r0 + t]
            x11 = Xt[1, r0 + t + 1]
            x12 = Xt[1, r0 + t + 2]
            x13 = Xt[1, r0 + t + 3]
            x20 = Xt[2, r0 + t]
            x21 = Xt[2, r0 + t + 1]
            x22 = Xt[2, r0 + t + 2]
            x23 = Xt[2, r0 + t + 3]
            for h in range(H):
                a0 = A[t, h]
                a1 = A[t + 1, h]
                a2 = A[t + 2, h]
                a3 = A[t + 3, h]
                w = W1t[0, h]
                g1[0, h] += (e0 * a0 + e1 * a1) + (e2 * a2 + e3 * a3)
                q0 = (e0 * w) * a0 * (one - a0)
                q1 = (e1 * w) * a1 * (one - a1)
                q2 = (e2 * w) * a2 * (one - a2)
                q3 = (e3 * w) * a3 * (one - a3)
                g0[0, h] += (x00 * q0 + x01 * q1) + (x02 * q2 + x03 * q3)
                g0[1, h] += (x10 * q0 + x11 * q1) + (x12 * q2 + x13 * q3)
                g0[2, h] += (x20 * q0 + x21 * q1) + (x22 * q2 + x23 * q3)
        for t in range(T4, T):
            e0 = d2[0, t]
            x00 = Xt[0, r0 + t]
            x10 = Xt[1, r0 + t]
            x20 = Xt[2, r0 + t]
            for h in range(H):
                a0 = A[t, h]
                g1[0, h] += e0 * a0
                q0 = (e0 * W1t[0, h]) * a0 * (one - a0)
                g0[0, h] += x00 * q0
                g0[1, h] += x10 * q0
                g0[2, h] += x20 * q0
        return loss
    # 6a. g1 += a1.T @ d2 (W1.T layout), before A is overwritten by d1
    _acc_outer(g1, d2, 0, A, T)
    # 5. d1 = (d2 @ W1.T) * a1 * (1 - a1), in place of a1; W1 not yet updated
    for t in range(T):
        for h in range(H):
            b = d2[0, t] * W1t[0, h]
            for o in range(1, O):
                b += d2[o, t] * W1t[o, h]
            a = A[t, h]
            A[t, h] = b * a * (one - a)
    # 6b. g0 += X.T @ d1
    _acc_outer(g0, Xt, r0, A, T)
    return loss


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def tile2_cols(Xt, yt, W0, W1t, r0, T, Abuf, d2, g0, g1, one):
    """The same tile in column layout (H x T, vectorised over the tile's rows): for small H,
    where a row of H values is too short to fill SIMD lanes. Arguments as tile2_rows."""
    D = W0.shape[0]
    H = W0.shape[1]
    O = W1t.shape[0]  # noqa: E741
    A = Abuf[: T * H].reshape((H, T))
    # (rows of the tile as 1-D contiguous views: indexing Xt[d, r0 + t] directly would make LLVM
    # keep NumPy's negative-index wraparound select, which blocks vectorisation)
    fast = D == 3 and O == 1
    # 1. a1.T = W0.T @ X.T
    if fast:
        x0 = Xt[0, r0 : r0 + T]
        x1 = Xt[1, r0 : r0 + T]
        x2 = Xt[2, r0 : r0 + T]
        for h in range(H):
            w0 = W0[0, h]
            w1 = W0[1, h]
            w2 = W0[2, h]
            for t in range(T):
                A[h, t] = w0 * x0[t] + w1 * x1[t] + w2 * x2[t]
    for h in range(H if not fast else 0):
        x = Xt[0, r0 : r0 + T]
        w = W0[0, h]
        for t in range(T):
            A[h, t] = w * x[t]
        for d in range(1, D):
            x = Xt[d, r0 : r0 + T]
            w = W0[d, h]
            for t in range(T):
                A[h, t] += w * x[t]
    sigmoid_flat(Abuf, T * H, one)
    # 1-4. z2 = W1.T @ a1.T into d2, then a2, err, |err|, d2 -- all vectorised over rows
    loss = 0.0
    for o in range(O):
        e = d2[o, :T]
        yo = yt[o, r0 : r0 + T]
        w = W1t[o, 0]
        for t in range(T):
            e[t] = w * A[0, t]
        for h in range(1, H):
            w = W1t[o, h]
            for t in range(T):
                e[t] += w * A[h, t]
        for t in range(T):
            a2 = one / (one + fexp(-e[t]))
            err = yo[t] - a2
            loss += abs(err)
            e[t] = err * a2 * (one - a2)
    if fast:
        # 5-6 fused, one pass over the tile per h: g1 += a1.T @ d2, d1 = d2 * W1.T * a1 * (1 - a1),
        # g0 += X.T @ d1 -- four dot products over the rows in one loop
        e = d2[0, :T]
        x0 = Xt[0, r0 : r0 + T]
        x1 = Xt[1, r0 : r0 + T]
        x2 = Xt[2, r0 : r0 + T]
        for h in range(H):
            w = W1t[0, h]
            s1 = one - one  # a zero of the tile's dtype (an int literal would promote float32)
            s00 = s1
            s01 = s1
            s02 = s1
            for t in range(T):
                a = A[h, t]
                s1 += a * e[t]
                q = (e[t] * w) * a * (one - a)
                s00 += x0[t] * q
                s01 += x1[t] * q
                s02 += x2[t] * q
            g1[0, h] += s1
            g0[0, h] += s00
            g0[1, h] += s01
            g0[2, h] += s02
        return loss
    # 6a. g1[o, h] += a1[:, h] . d2[:, o]
    for o in range(O):
        e = d2[o, :T]
        for h in range(H):
            s = A[h, 0] * e[0]
            for t in range(1, T):
                s += A[h, t] * e[t]
            g1[o, h] += s
    # 5. d1 = (d2 @ W1.T) * a1 * (1 - a1) in place
    for h in range(H):
        if O == 1:
            e = d2[0, :T]
            w = W1t[0, h]
            for t in range(T):
                a = A[h, t]
                A[h, t] = (e[t] * w) * a * (one - a)
        else:
            for t in range(T):
                b = d2[0, t] * W1t[0, h]
                for o in range(1, O):
                    b += d2[o, t] * W1t[o, h]
                a = A[h, t]
                A[h, t] = b * a * (one - a)
    # 6b. g0[d, h] += X[:, d] . d1[:, h]
    for d in range(D):
        x = Xt[d, r0 : r0 + T]
        for h in range(H):
            s = x[0] * A[h, 0]
            for t in range(1, T):
                s += x[t] * A[h, t]
            g0[d, h] += s
    return loss


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def _zero(G):
    """G[:, :] = 0 as a plain loop (numba's slice assignment costs ~0.5 us a call on tiny arrays)."""
    for k in range(G.shape[0]):
        for h in range(G.shape[1]):
            G[k, h] = 0


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def chunk2(Xt, yt, W0, W1t, c0, c1, T, N, A, d2, g0, g1, one, cols):
    """Tiles c0 .. c1-1 (rows c*T ..) into zeroed accumulators g0 (D x H), g1 (O x H); returns sum |err|."""
    _zero(g0)
    _zero(g1)
    loss = 0.0
    for c in range(c0, c1):
        r0 = c * T
        rows = min(T, N - r0)
        if cols:
            loss += tile2_cols(Xt, yt, W0, W1t, r0, rows, A, d2, g0, g1, one)
        else:
            loss += tile2_rows(Xt, yt, W0, W1t, r0, rows, A, d2, g0, g1, one)
    return loss


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def update(W, G, nchunks, alpha):
    """W += alpha * (sum over chunks of G[c]) -- the gradient is summed first, as in a @ b."""
    K = W.shape[0]
    H = W.shape[1]
    for k in range(K):
        for h in range(H):
            g = G[0, k, h]
            for c in range(1, nchunks):
                g += G[c, k, h]
            W[k, h] += alpha * g


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def train2_serial(
    Xt, yt, W0, W1t, A, d2, G0, G1, T, cols, iterations, log_every, losses, alpha, one
):
    """The whole loop for the 3-layer net, one thread: one chunk holding every tile."""
    N = Xt.shape[1]
    O = yt.shape[0]  # noqa: E741
    ntiles = (N + T - 1) // T
    scale = 1.0 / (N * O)
    for it in range(iterations):
        loss = chunk2(Xt, yt, W0, W1t, 0, ntiles, T, N, A[0], d2[0], G0[0], G1[0], one, cols)
        if log_every > 0 and it % log_every == 0:
            losses[it // log_every] = loss * scale
        update(W1t, G1, 1, alpha)
        update(W0, G0, 1, alpha)


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def train2_small(Xt, yt, W0, W1t, A, d2, g0, g1, iterations, log_every, losses, alpha, one):
    """The whole loop for tiny 3-layer problems (N*H up to SMALL_WORK): plain scalar loops over
    whole-batch buffers A (N x H) and d2 (O x N), no tiles, views or reshapes -- at N=H=4 their
    bookkeeping costs more than the arithmetic."""
    D = W0.shape[0]
    H = W0.shape[1]
    O = W1t.shape[0]  # noqa: E741
    N = Xt.shape[1]
    scale = 1.0 / (N * O)
    for it in range(iterations):
        loss = 0.0
        for r in range(N):
            for h in range(H):
                z = Xt[0, r] * W0[0, h]
                for d in range(1, D):
                    z += Xt[d, r] * W0[d, h]
                A[r, h] = one / (one + fexp(-z))
            for o in range(O):
                z = A[r, 0] * W1t[o, 0]
                for h in range(1, H):
                    z += A[r, h] * W1t[o, h]
                a2 = one / (one + fexp(-z))
                err = yt[o, r] - a2
                loss += abs(err)
                d2[o, r] = err * a2 * (one - a2)
        if log_every > 0 and it % log_every == 0:
            losses[it // log_every] = loss * scale
        for o in range(O):
            for h in range(H):
                s = A[0, h] * d2[o, 0]
                for r in range(1, N):
                    s += A[r, h] * d2[o, r]
                g1[o, h] = s
        for r in range(N):
            for h in range(H):
                b = d2[0, r] * W1t[0, h]
                for o in range(1, O):
                    b += d2[o, r] * W1t[o, h]
                a = A[r, h]
                A[r, h] = b * a * (one - a)
        for d in range(D):
            for h in range(H):
                s = Xt[d, 0] * A[0, h]
                for r in range(1, N):
                    s += Xt[d, r] * A[r, h]
                W0[d, h] += alpha * s
        for o in range(O):
            for h in range(H):
                W1t[o, h] += alpha * g1[o, h]


@njit(cache=True, fastmath=KERNEL_FM, error_model="numpy")
def train1(Xt, yt, W0, z, g0, iterations, log_every, losses, alpha, one):
    """The whole loop for the 2-layer net (one weight matrix W0, D x O), row by row."""
    D = W0.shape[0]
    O = W0.shape[1]  # noqa: E741
    N = Xt.shape[1]
    scale = 1.0 / (N * O)
    for it in range(iterations):
        _zero(g0)
        loss = 0.0
        for r in range(N):
            for o in range(O):
                s = Xt[0, r] * W0[0, o]
                for d in range(1, D):
                    s += Xt[d, r] * W0[d, o]
                a = one / (one + fexp(-s))
                err = yt[o, r] - a
                loss += abs(err)
                z[o] = err * a * (one - a)
            for d in range(D):
                x = Xt[d, r]
                for o in range(O):
                    g0[d, o] += x * z[o]
        if log_every > 0 and it % log_every == 0:
            losses[it // log_every] = loss * scale
        for d in range(D):
            for o in range(O):
                W0[d, o] += alpha * g0[d, o]


# ---------------------------------------------------------------------------------------------
# Host-side helpers shared by both backends


SMALL_WORK = 256  # N*H up to this: train2_small (scalar loops, no tiling)
COLUMN_LAYOUT_MAX_H = 256  # widest layer for the column layout (measured: docs/performance.md)
COLUMN_TILE_VALUES = 1 << 16  # column-layout tile T x H: 512 KiB of float64, L2-resident


def tile_layout(batch: int, hidden: int) -> tuple[int, bool]:
    """(rows per tile T, column layout?). The tile's activations (T x H) stay in L1/L2.

    Column layout (vectorised over rows, T up to 512, T*H up to COLUMN_TILE_VALUES) wherever the
    batch fills a vector of rows; row layout (vectorised over h, T*H near 8192 values, T a
    multiple of 4) for small batches and very wide layers."""
    if batch >= 64 and hidden <= COLUMN_LAYOUT_MAX_H:
        t = min(512, max(32, COLUMN_TILE_VALUES // max(hidden, 1)) // 16 * 16)
        return max(1, min(batch, t)), True
    target = max(4, (8192 // max(hidden, 1)) // 4 * 4)
    return max(1, min(batch, target)), False


def check_problem(problem, backend: str, dtypes) -> None:
    from backends.base import UnsupportedProblem, check_dtype

    check_dtype(dtypes, problem, backend)
    if len(problem.weights) > 2:
        raise UnsupportedProblem(
            f"{backend} supports 1 or 2 weight layers (2- and 3-layer nets), not {len(problem.weights)}"
        )
