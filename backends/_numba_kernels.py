"""The compiled training loop shared by `numba-cpu` and `numba-parallel` (harness.floor measures
its ``fexp``, which lives in ``backends/_numba_exp.py`` and is re-exported here).

One source: each SPEC step is written once below, as a small ``@njit(inline="always")`` helper,
for each of the two tile layouts at most (docs/performance.md has the measurements):

* forward hidden    ``_forward_rows`` / ``_forward_cols`` (pre-activations), then ``sigmoid_flat``
                    (in the tiled kernels through ``sigmoid_tile``, a call: see there; inlined in the
                    small kernel)
* output + loss     ``output_delta`` (SPEC 1-4 for one output value), looped by ``output_rows`` /
                    ``output_cols``
* hidden delta      ``hidden_delta`` (SPEC 5 for one value), looped by ``delta_rows`` / ``delta_cols``
* gradients         ``acc_rows`` / ``acc_cols``; ``_backward_rows`` / ``_backward_cols`` fuse SPEC 5
                    with both gradient sums into one pass over the tile when D and O are small
* update            ``update`` (W += alpha * the gradient summed over chunks, after every chunk,
                    so the hidden delta used W1 from before the update; it also re-zeroes the
                    accumulators)

``train_kernel`` composes them into five regimes, each a factory of one ``@njit`` closure: the
2-layer net (``_train_net1``: ``output_rows`` + ``acc_rows`` + ``update`` over the whole batch --
its one layer is an output layer with A = X), small 3-layer problems (``_train_small``, N*H <=
SMALL_WORK and fewer than COLUMN_MIN_BATCH rows: ``_tile_rows`` over the whole batch as one tile),
the tiled loop on one thread (``_train_serial``: ``_chunk`` of ``_tile_rows`` or ``_tile_cols``
over every tile), the parallel one (``_train_parallel``: ``prange`` over fixed chunks of tiles, one
accumulator set per chunk) and the hidden split
(``_train_hidden``: the batch one row tile, fixed chunks of hidden units, each chunk's
``_forward_rows``, ``sigmoid_tile``, ``partial_rows``, ``_backward_rows`` and ``update`` on its
own units, run by a team of threads that meet through atomic flags once an iteration, started by
``run_team``; for batches of fewer tiles than threads).

Tiles. The batch is streamed in tiles of T rows whose activations (T*H values) stay in L1/L2;
the N x H activation matrix is never built. ``prepare_net`` stores X and y tile-major (ntiles x
D x T, the last tile zero-padded), so every helper indexes a tile from 0: a view ``X[c]`` is one
C-contiguous D x T array, and no index is ``r0 + t`` (NumPy's negative-index wraparound select on
such an index kept loops scalar: docs/performance.md, step 4). Row layout (A is T x H, vectorised
over h; the backward pass four rows at a time) suits small batches and wide layers; column layout
(H x T, vectorised over the tile's rows) everything with N >= 64 and H <= 256 -- LLVM vectorises
only the innermost loop, so the two loop orders stay two.

Specialisation instead of hand-unrolled paths. D, O, the layout and the form (``fuse``: D and O
<= FUSE_MAX) are closure variables of each kernel, and so compile-time constants; small kernels
(``small_problem``) also fix H. The helpers take the sizes as arguments and are inlined at Numba
IR level, where Numba prunes the branches on constant flags (``if cols``, ``if fuse``) before
typing -- each kernel compiles one layout and one form -- and LLVM sees constant trip counts for
``range(D)``, ``range(O)`` (and ``range(H)`` when small), which it unrolls: at 4 x 4 the
iteration is unrolled over d, o and h, about twice as fast as the old scalar small-problem
kernel. (Without the IR-level inlining LLVM kept the helpers as calls, with a refcount pair per
array argument: 4x slower at 4 x 4.) A helper is inlined with everything it calls, both sides of
a flag that is an argument included (only constants -- a closure's own cells -- are pruned when
a function's IR is built, before its calls are inlined). So the layout and the form are never
arguments: the helpers that have two forms are factories whose form is a cell
(``_forward_rows(fuse)``, ``_backward_cols(fuse)``, ``_tile_rows(forward, backward)``,
``_chunk(tile)``), made once per (layout, form) below (``chunk_cols_fused``,
``tile_rows_multi``, ...), and each kernel picks one under its own ``if cols`` / ``if fuse``.
With one ``chunk`` inlining both tile layouts a tiled kernel compiled in 9-13 s instead of 4-6 s,
and with both forms in each 4-6 s instead of 3-4.5 s (2-core Zen 3; Numba's inliner deep-copies
each callee's IR), for the same LLVM IR. Where a loop needs one running sum per input or output
(the column layout's fused backward pass), the sums live in a UniTuple of length D or O
(``_filled`` + ``tuple_setitem``, the tuples DT, OT giving the length), which LLVM keeps in
registers once the loops are unrolled: the code of the old hand-written D=3/O=1 path. Above
FUSE_MAX the fused forms would not unroll, so the multi-pass forms are used (``_forward_*``
d-outer, ``acc_*`` + ``delta_*``). The kernels read the ``Net`` and ``Work``
tuples' fields once, before the loop: a field read inside it costs a refcount pair.

Disk cache. Numba caches a closure under a key that hashes its cells' values (pickled). The
kernels' cells therefore hold only ints, bools and tuples of ints: the helpers they call are
module-level globals, never captured (a helper's own cells may hold the helpers it is made of: it
is inlined, never cached itself). (A captured dispatcher pickles with a per-process random UUID, so the
key would differ in every process and the cache would never hit.) Each specialisation is its own
entry in the one index file of its closure; tests/test_numba_cpu.py checks a second process
loads every kernel. ``KERNELS`` holds every kernel made in this process, for ``compilations()``.
Numba invalidates a cached function when its own file changes, not when a file it calls into
does; so every kernel also holds ``EXP_SOURCE`` (a hash of ``_numba_exp.py``) in a cell, and an
edit of the exp or the sigmoid there changes the kernels' keys instead of leaving stale code.

Every kernel reads ``one`` (1 in the problem dtype) and ``alpha`` already cast to the dtype (in
``Net``), so float32 runs stay float32 (a Python float literal would promote the arithmetic).
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.cpython.unsafe.tuple import tuple_setitem
from numba.extending import intrinsic

from backends import _numba_atomics, _numba_exp
from backends._numba_atomics import (
    compare_swap,
    fetch_add,
    load_acquire,
    sched_yield,
    spin_pause,
    store_release,
)
from backends._numba_exp import EXP_FM, KERNEL_FM, exp32, exp64, fexp, fsigmoid  # noqa: F401 (harness.floor)

#: In every kernel's closure (see "Disk cache" above): the kernels' disk-cache keys follow the exp.
EXP_SOURCE = zlib.crc32(Path(_numba_exp.__file__).read_bytes())
#: The same for the atomics, in the hidden split's kernel (the one that uses them).
ATOMICS_SOURCE = zlib.crc32(Path(_numba_atomics.__file__).read_bytes())

FUSE_MAX = 4  # D and O up to this: fused single-pass forms (loops over d, o fully unrolled)
OPTS = dict(fastmath=KERNEL_FM, error_model="numpy")
STEP = dict(inline="always", **OPTS)  # a step: inlined (Numba IR) where it is used


# ---------------------------------------------------------------------------------------------
# The SPEC steps on one value


@njit(**STEP)
def sigmoid(z, one):
    """SPEC 1: s(z) = 1 / (1 + exp(-z)) with the vectorisable exp (``fsigmoid``: its clamps moved
    after the division; the same value)."""
    return fsigmoid(z)


@njit(**STEP)
def output_delta(z, target, one):
    """SPEC 1-4 for one output: a2 = s(z), err = target - a2; returns (|err|, err * a2 * (1 - a2))."""
    a = sigmoid(z, one)
    err = target - a
    return abs(err), err * a * (one - a)


@njit(**STEP)
def hidden_delta(back, a, one):
    """SPEC 5 for one hidden value: back = (d2 @ W1.T)[t, h] (W1 not yet updated), a = a1[t, h]."""
    return back * a * (one - a)


@intrinsic
def _filled(typingctx, value, template):
    """A UniTuple of ``value``, as long as the tuple ``template`` (a compile-time length)."""
    if not isinstance(template, types.BaseTuple):
        return None
    ret = types.UniTuple(value, len(template))

    def codegen(context, builder, signature, args):
        tup = context.get_constant_undef(ret)
        for i in range(len(template)):
            tup = builder.insert_value(tup, args[0], i)
        return tup

    return ret(value, template), codegen


# ---------------------------------------------------------------------------------------------
# The steps over one tile. Row layout: A is T x H; column layout: A is H x T. X (D x T), y and
# d2 (O x T) are the tile's; only the first ``rows`` rows are used (the last tile is partial).
# Sizes come as arguments (H, D, O, and K, a gradient's row count): constants where the kernel
# knows them, so the loops over them have constant trip counts.


@njit(**STEP)
def sigmoid_flat(buf, n, one):
    """buf[:n] = s(buf[:n]) -- the loop that holds the hidden layer's exps; vectorised."""
    for i in range(n):
        buf[i] = sigmoid(buf[i], one)


@njit(**OPTS)
def sigmoid_tile(buf, n, one):
    """``sigmoid_flat`` as a function of its own (not inlined: a call per tile), for the tiled
    kernels. Inlined into the kernel, the loop's 14 exp constants were not kept in vector registers:
    LLVM's register allocator rematerialised them inside the loop as broadcast loads, each behind a
    ``movabs`` of the constant's address (Numba's JIT uses LLVM's large code model), 49
    instructions per 4 values where GCC's twin has 37. In a function of its own the constants are
    broadcast once before the loop and the loop is GCC's: 6-9% off the whole column-layout
    iteration (docs/performance.md, "Numba against GCC on the same algorithm")."""
    sigmoid_flat(buf, n, one)


def _forward_rows(fuse):
    @njit(**STEP)
    def forward_rows(A, X, W0, rows, H, D):
        """A[t, :] = X[:, t] @ W0 (pre-activations), vectorised over h."""
        for t in range(rows):
            if fuse:
                for h in range(H):
                    z = X[0, t] * W0[0, h]
                    for d in range(1, D):
                        z += X[d, t] * W0[d, h]
                    A[t, h] = z
            else:
                x = X[0, t]
                for h in range(H):
                    A[t, h] = x * W0[0, h]
                for d in range(1, D):
                    x = X[d, t]
                    for h in range(H):
                        A[t, h] += x * W0[d, h]

    return forward_rows


def _forward_cols(fuse):
    @njit(**STEP)
    def forward_cols(A, X, W0, rows, H, D):
        """A[h, :] = W0[:, h] @ X (pre-activations), vectorised over the tile's rows."""
        for h in range(H):
            if fuse:
                for t in range(rows):
                    z = W0[0, h] * X[0, t]
                    for d in range(1, D):
                        z += W0[d, h] * X[d, t]
                    A[h, t] = z
            else:
                w = W0[0, h]
                for t in range(rows):
                    A[h, t] = w * X[0, t]
                for d in range(1, D):
                    w = W0[d, h]
                    for t in range(rows):
                        A[h, t] += w * X[d, t]

    return forward_cols


@njit(**STEP)
def output_rows(A, W, y, d2, rows, H, O, one):  # noqa: E741
    """SPEC 1-4 for the output layer, row by row: z = A[t, :] @ W[o, :], d2[o, t]; returns sum |err|.
    (Also the whole 2-layer net, with A = X, H = D and W = W0.T.)"""
    for t in range(rows):
        for o in range(O):
            z = A[t, 0] * W[o, 0]
            for h in range(1, H):
                z += A[t, h] * W[o, h]
            d2[o, t] = z
    loss = 0.0
    for o in range(O):
        for t in range(rows):
            err, d2[o, t] = output_delta(d2[o, t], y[o, t], one)
            loss += err
    return loss


@njit(**STEP)
def partial_rows(A, W1t, zp, rows, H, O):  # noqa: E741
    """zp[o, t] = A[t, :] @ W1t[o, :]: the output pre-activations' share of H hidden units (the
    hidden split sums the chunks' shares, in chunk order, before ``output_delta``)."""
    for t in range(rows):
        for o in range(O):
            z = A[t, 0] * W1t[o, 0]
            for h in range(1, H):
                z += A[t, h] * W1t[o, h]
            zp[o, t] = z


@njit(**STEP)
def output_cols(A, W1t, y, d2, rows, H, O, one):  # noqa: E741
    """SPEC 1-4 for the output layer, vectorised over the tile's rows (z accumulates in d2)."""
    loss = 0.0
    for o in range(O):
        w = W1t[o, 0]
        for t in range(rows):
            d2[o, t] = w * A[0, t]
        for h in range(1, H):
            w = W1t[o, h]
            for t in range(rows):
                d2[o, t] += w * A[h, t]
        for t in range(rows):
            err, d2[o, t] = output_delta(d2[o, t], y[o, t], one)
            loss += err
    return loss


@njit(**STEP)
def acc_rows(G, B, M, rows, K, H):
    """G[k, :] += sum over t < rows of B[k, t] * M[t, :] for k < K (a gradient, row layout), four
    rows per pass."""
    R4 = rows - rows % 4
    for k in range(K):
        for t in range(0, R4, 4):
            c0 = B[k, t]
            c1 = B[k, t + 1]
            c2 = B[k, t + 2]
            c3 = B[k, t + 3]
            for h in range(H):
                G[k, h] += (c0 * M[t, h] + c1 * M[t + 1, h]) + (c2 * M[t + 2, h] + c3 * M[t + 3, h])
        for t in range(R4, rows):
            c0 = B[k, t]
            for h in range(H):
                G[k, h] += c0 * M[t, h]


@njit(**STEP)
def acc_cols(G, B, M, rows, K, H):
    """G[k, h] += B[k, :rows] . M[h, :rows] for k < K (a gradient, column layout)."""
    for k in range(K):
        for h in range(H):
            s = B[k, 0] * M[h, 0]
            for t in range(1, rows):
                s += B[k, t] * M[h, t]
            G[k, h] += s


@njit(**STEP)
def delta_rows(A, W1t, d2, rows, H, O, one):  # noqa: E741
    """A[t, h] = hidden_delta((d2 @ W1.T)[t, h], A[t, h]) in place."""
    for t in range(rows):
        for h in range(H):
            b = d2[0, t] * W1t[0, h]
            for o in range(1, O):
                b += d2[o, t] * W1t[o, h]
            A[t, h] = hidden_delta(b, A[t, h], one)


@njit(**STEP)
def delta_cols(A, W1t, d2, rows, H, O, one):  # noqa: E741
    """A[h, t] = hidden_delta((d2 @ W1.T)[t, h], A[h, t]) in place."""
    for h in range(H):
        for t in range(rows):
            b = d2[0, t] * W1t[0, h]
            for o in range(1, O):
                b += d2[o, t] * W1t[o, h]
            A[h, t] = hidden_delta(b, A[h, t], one)


def _backward_rows(fuse):
    @njit(**STEP)
    def backward_rows(A, X, W1t, d2, g0, g1, rows, H, D, O, DT, OT, one):  # noqa: E741
        """SPEC 5-6 into the accumulators: g1 += a1.T @ d2 (as O x H), d1, g0 += X.T @ d1.

        Fused: one pass over the tile, four rows at a time, the four rows' d2 and X values held in
        tuples (registers) across the pass. Otherwise three passes (d1 in place of a1)."""
        if not fuse:
            acc_rows(g1, d2, A, rows, O, H)
            delta_rows(A, W1t, d2, rows, H, O, one)
            acc_rows(g0, X, A, rows, D, H)
            return
        zero = one - one
        R4 = rows - rows % 4
        for t in range(0, R4, 4):
            e0 = e1 = e2 = e3 = _filled(zero, OT)
            for o in range(O):
                e0 = tuple_setitem(e0, o, d2[o, t])
                e1 = tuple_setitem(e1, o, d2[o, t + 1])
                e2 = tuple_setitem(e2, o, d2[o, t + 2])
                e3 = tuple_setitem(e3, o, d2[o, t + 3])
            x0 = x1 = x2 = x3 = _filled(zero, DT)
            for d in range(D):
                x0 = tuple_setitem(x0, d, X[d, t])
                x1 = tuple_setitem(x1, d, X[d, t + 1])
                x2 = tuple_setitem(x2, d, X[d, t + 2])
                x3 = tuple_setitem(x3, d, X[d, t + 3])
            for h in range(H):
                a0 = A[t, h]
                a1 = A[t + 1, h]
                a2 = A[t + 2, h]
                a3 = A[t + 3, h]
                b0 = b1 = b2 = b3 = zero
                for o in range(O):
                    g1[o, h] += (e0[o] * a0 + e1[o] * a1) + (e2[o] * a2 + e3[o] * a3)
                    w = W1t[o, h]
                    b0 += e0[o] * w
                    b1 += e1[o] * w
                    b2 += e2[o] * w
                    b3 += e3[o] * w
                q0 = hidden_delta(b0, a0, one)
                q1 = hidden_delta(b1, a1, one)
                q2 = hidden_delta(b2, a2, one)
                q3 = hidden_delta(b3, a3, one)
                for d in range(D):
                    g0[d, h] += (x0[d] * q0 + x1[d] * q1) + (x2[d] * q2 + x3[d] * q3)
        for t in range(R4, rows):
            for h in range(H):
                a0 = A[t, h]
                b0 = a0 - a0
                for o in range(O):
                    e0 = d2[o, t]
                    g1[o, h] += e0 * a0
                    b0 += e0 * W1t[o, h]
                q0 = hidden_delta(b0, a0, one)
                for d in range(D):
                    g0[d, h] += X[d, t] * q0

    return backward_rows


def _backward_cols(fuse):
    @njit(**STEP)
    def backward_cols(A, X, W1t, d2, g0, g1, rows, H, D, O, DT, OT, one):  # noqa: E741
        """SPEC 5-6 into the accumulators, column layout. Fused: per h one pass over the tile's rows
        with D + O running sums (tuples of zeros as long as DT, OT). Otherwise three passes."""
        if not fuse:
            acc_cols(g1, d2, A, rows, O, H)
            delta_cols(A, W1t, d2, rows, H, O, one)
            acc_cols(g0, X, A, rows, D, H)
            return
        zero = one - one  # a zero of the tile's dtype (an int literal would promote float32)
        for h in range(H):
            s1 = _filled(zero, OT)
            s0 = _filled(zero, DT)
            for t in range(rows):
                a = A[h, t]
                b = zero
                for o in range(O):
                    e = d2[o, t]
                    s1 = tuple_setitem(s1, o, s1[o] + a * e)
                    b += e * W1t[o, h]
                q = hidden_delta(b, a, one)
                for d in range(D):
                    s0 = tuple_setitem(s0, d, s0[d] + X[d, t] * q)
            for o in range(O):
                g1[o, h] += s1[o]
            for d in range(D):
                g0[d, h] += s0[d]

    return backward_cols


def _tile_rows(forward, backward):
    """``tile_rows_fused`` / ``tile_rows_multi``: one row-layout tile, with one form of the steps."""

    @njit(**STEP)
    def tile_rows(X, y, W0, W1t, A, Af, d2, g0, g1, rows, H, D, O, DT, OT, one, small=False):  # noqa: E741
        """Forward and backward of one tile of the 3-layer net, row layout (A is T x H over the flat
        buffer Af); adds its gradients to g0 (D x H) and g1 (O x H); returns sum |err|. ``small``
        (a constant of the small kernel) keeps the sigmoid loop inlined, where H is a constant and
        a call per iteration would cost more than the loop (4 x 4: 0.17 against 0.14 us per
        iteration)."""
        forward(A, X, W0, rows, H, D)
        if small:
            sigmoid_flat(Af, rows * H, one)
        else:
            sigmoid_tile(Af, rows * H, one)
        loss = output_rows(A, W1t, y, d2, rows, H, O, one)
        backward(A, X, W1t, d2, g0, g1, rows, H, D, O, DT, OT, one)
        return loss

    return tile_rows


def _tile_cols(forward, backward):
    """One column-layout tile, with one form of the steps (the tile of ``chunk_cols_fused`` /
    ``chunk_cols_multi``)."""

    @njit(**STEP)
    def tile_cols(X, y, W0, W1t, A, Af, d2, g0, g1, rows, H, D, O, DT, OT, one):  # noqa: E741
        """The same tile in column layout (A is H x T over Af)."""
        forward(A, X, W0, rows, H, D)
        if rows == A.shape[1]:
            sigmoid_tile(Af, H * rows, one)
        else:
            for h in range(H):
                for t in range(rows):
                    A[h, t] = sigmoid(A[h, t], one)
        loss = output_cols(A, W1t, y, d2, rows, H, O, one)
        backward(A, X, W1t, d2, g0, g1, rows, H, D, O, DT, OT, one)
        return loss

    return tile_cols


def _chunk(tile):
    """``chunk_rows_fused`` etc.: the loop over a chunk's tiles, for one layout and form's ``tile``."""

    @njit(**STEP)
    def chunk(X, y, W0, W1t, N, A, Af, d2, g0, g1, c0, c1, H, D, O, DT, OT, one):  # noqa: E741
        """Tiles c0 .. c1-1 of X and y (tile-major) added to the accumulators g0 (D x H), g1 (O x H);
        returns sum |err|."""
        T = X.shape[2]
        loss = 0.0
        for c in range(c0, c1):
            rows = min(T, N - c * T)
            loss += tile(X[c], y[c], W0, W1t, A, Af, d2, g0, g1, rows, H, D, O, DT, OT, one)
        return loss

    return chunk


# Each (layout, form) its own helper, made from the one source above: a kernel picks one under its
# own ``if cols`` / ``if fuse``, which Numba prunes before inlining (see the top).
forward_rows_fused, forward_rows_multi = _forward_rows(True), _forward_rows(False)
forward_cols_fused, forward_cols_multi = _forward_cols(True), _forward_cols(False)
backward_rows_fused, backward_rows_multi = _backward_rows(True), _backward_rows(False)
backward_cols_fused, backward_cols_multi = _backward_cols(True), _backward_cols(False)
tile_rows_fused = _tile_rows(forward_rows_fused, backward_rows_fused)
tile_rows_multi = _tile_rows(forward_rows_multi, backward_rows_multi)
chunk_rows_fused, chunk_rows_multi = _chunk(tile_rows_fused), _chunk(tile_rows_multi)
chunk_cols_fused = _chunk(_tile_cols(forward_cols_fused, backward_cols_fused))
chunk_cols_multi = _chunk(_tile_cols(forward_cols_multi, backward_cols_multi))


@njit(**STEP)
def update(W, G, nchunks, K, H, alpha):
    """SPEC 6: W += alpha * (sum over chunks of G[c]) for W's K x H values -- the gradient is summed
    first, as in a @ b -- and the accumulators G[c] zeroed for the next iteration (they start zeroed)."""
    for k in range(K):
        for h in range(H):
            g = G[0, k, h]
            G[0, k, h] = 0
            for c in range(1, nchunks):
                g += G[c, k, h]
                G[c, k, h] = 0
            W[k, h] += alpha * g


@njit(**STEP)
def tile_views(Af, H, T, cols):
    """A chunk's activation buffer as the tile's 2-D array (H x T in column layout, else T x H)."""
    return Af.reshape((H, T)) if cols else Af.reshape((T, H))


# ---------------------------------------------------------------------------------------------
# The kernels: the steps composed per regime, specialised by closure constants (see top)


class Net(NamedTuple):
    """What the loop reads and trains, as one kernel argument.

    3-layer: X and y tile-major (ntiles x D x T, ntiles x O x T), W0 (D x H), W1t = W1.T (O x H);
    in the hidden split one tile (T = N rounded up to whole ``TEAM_LINE``s, zeros past N), and W0,
    W1t flat and chunk-major: chunk c's D x hc block of W0 (O x hc of W1t) at D * hb[c] (O * hb[c]),
    C-contiguous (``weights`` undoes it).
    2-layer: X (N x D), y = y.T (O x N), W0 = W0.T (O x D), W1t empty."""

    X: np.ndarray
    y: np.ndarray
    W0: np.ndarray
    W1t: np.ndarray
    N: int
    alpha: np.floating
    one: np.floating


class Work(NamedTuple):
    """Scratch, one slice per chunk: A (T*H activations), d2 (O x T), G0/G1 (the gradients of W0
    and W1t, zero between iterations), closs (the chunk's sum |err|), hb (the hidden split's chunk
    bounds: chunk c owns hidden units hb[c] .. hb[c+1]-1; empty in the other regimes). The 2-layer
    net uses d2 (O x N) and G0 (O x D). In the hidden split a chunk's slices hold its hc = hb[c+1] -
    hb[c] units: A (N x hc), G0 (D x hc), G1 (O x hc), each flat at the start of its slice; d2[c] the
    chunk's share of the output pre-activations for even iterations, d2[nchunks + c] for odd ones,
    and d2[2 * nchunks + c] the chunk's own copy of the output delta, each row padded to a whole
    number of cache-line pairs (``TEAM_LINE``) so that no two chunks write one line; flags (int64)
    the team's join count and one flag per chunk, ``TEAM_LINE`` words apart (``_train_hidden``;
    empty in the other regimes)."""

    A: np.ndarray
    d2: np.ndarray
    G0: np.ndarray
    G1: np.ndarray
    closs: np.ndarray
    hb: np.ndarray
    flags: np.ndarray


KERNELS: dict[tuple, object] = {}


def train_kernel(
    layers: int,
    D: int,
    O: int,  # noqa: E741
    cols: bool,
    parallel: bool,
    N: int,
    H: int,
    hidden: bool = False,
):
    """The whole loop ``kernel(net, work, iterations, log_every, losses)`` for this shape, made once
    per process (Numba's disk cache serves its compiled code across processes). H counts only
    where the kernel is specialised on it: small problems (``small_problem``). N never does: a
    kernel fixing N too was measured no faster at the sweep's small points (and up to 1.3x
    slower at 16x16 and 64x4), and would compile once more for every batch size. ``hidden``:
    the hidden split (``prepare_net(..., hidden=True)`` lays out its arguments)."""
    fuse = D <= FUSE_MAX and O <= FUSE_MAX
    if layers == 1:
        key = ("net1", D, O)
    elif hidden:
        key = ("hidden", D, O)
    elif not parallel and small_problem(N, H):
        key = ("small", D, O, H)
    else:
        key = ("parallel" if parallel else "serial", D, O, bool(cols))
    if key not in KERNELS:
        if key[0] == "net1":
            KERNELS[key] = _train_net1(D, O)
        elif key[0] == "small":
            KERNELS[key] = _train_small(H, D, O, fuse, (0,) * D, (0,) * O)
        elif key[0] == "hidden":
            KERNELS[key] = _train_hidden(D, O, fuse, (0,) * D, (0,) * O)
        else:
            make = _train_parallel if parallel else _train_serial
            KERNELS[key] = make(D, O, key[3], fuse, (0,) * D, (0,) * O)
    return KERNELS[key]


def _train_net1(D, O):  # noqa: E741
    exp_source = EXP_SOURCE  # a cell of the kernel: its cache key (see the top)

    @njit(cache=True, **OPTS)
    def train_net1(net, work, iterations, log_every, losses):
        """The 2-layer net: its one layer is an output layer over the whole batch (A = X, H = D)."""
        _key = exp_source  # (unused: it only has to be a cell)
        # (fields are read once, outside the loop: reading them inside would cost refcounting)
        X, y, W0t, _, N, alpha, one = net
        d2 = work.d2[0]
        G = work.G0
        g = G[0]
        scale = 1.0 / (N * O)
        for it in range(iterations):
            loss = output_rows(X, W0t, y, d2, N, D, O, one)
            if log_every > 0 and it % log_every == 0:
                losses[it // log_every] = loss * scale
            acc_rows(g, d2, X, N, O, D)
            update(W0t, G, 1, O, D, alpha)

    return train_net1


def _train_small(HS, D, O, fuse, DT, OT):  # noqa: E741
    exp_source = EXP_SOURCE  # a cell of the kernel: its cache key (see the top)

    @njit(cache=True, **OPTS)
    def train_small(net, work, iterations, log_every, losses):
        """The 3-layer net of a small problem (``small_problem``): one row tile holding the whole
        batch, with H a compile-time constant -- the loops over h unrolled, no vector set-up or
        remainder loops."""
        _key = exp_source  # (unused: it only has to be a cell)
        X, y, W0, W1t, N, alpha, one = net
        Abuf, d2, G0, G1, _, _, _ = work
        scale = 1.0 / (N * O)
        Af = Abuf[0]
        A = Af.reshape((N, HS))
        X0 = X[0]
        y0 = y[0]
        d20 = d2[0]
        g0 = G0[0]
        g1 = G1[0]
        for it in range(iterations):
            if fuse:
                loss = tile_rows_fused(X0, y0, W0, W1t, A, Af, d20, g0, g1, N, HS, D, O, DT, OT, one, True)
            else:
                loss = tile_rows_multi(X0, y0, W0, W1t, A, Af, d20, g0, g1, N, HS, D, O, DT, OT, one, True)
            if log_every > 0 and it % log_every == 0:
                losses[it // log_every] = loss * scale
            update(W1t, G1, 1, O, HS, alpha)
            update(W0, G0, 1, D, HS, alpha)

    return train_small


def _train_serial(D, O, cols, fuse, DT, OT):  # noqa: E741
    exp_source = EXP_SOURCE  # a cell of the kernel: its cache key (see the top)

    @njit(cache=True, **OPTS)
    def train_serial(net, work, iterations, log_every, losses):
        """The 3-layer net on one thread: one chunk holding every tile."""
        _key = exp_source  # (unused: it only has to be a cell)
        X, y, W0, W1t, N, alpha, one = net
        Abuf, d2, G0, G1, _, _, _ = work
        ntiles, _, T = X.shape
        H = W0.shape[1]
        scale = 1.0 / (N * O)
        Af = Abuf[0]
        A = tile_views(Af, H, T, cols)
        d20 = d2[0]
        g0 = G0[0]
        g1 = G1[0]
        for it in range(iterations):
            if cols and fuse:
                loss = chunk_cols_fused(X, y, W0, W1t, N, A, Af, d20, g0, g1, 0, ntiles, H, D, O, DT, OT, one)
            elif cols:
                loss = chunk_cols_multi(X, y, W0, W1t, N, A, Af, d20, g0, g1, 0, ntiles, H, D, O, DT, OT, one)
            elif fuse:
                loss = chunk_rows_fused(X, y, W0, W1t, N, A, Af, d20, g0, g1, 0, ntiles, H, D, O, DT, OT, one)
            else:
                loss = chunk_rows_multi(X, y, W0, W1t, N, A, Af, d20, g0, g1, 0, ntiles, H, D, O, DT, OT, one)
            if log_every > 0 and it % log_every == 0:
                losses[it // log_every] = loss * scale
            update(W1t, G1, 1, O, H, alpha)
            update(W0, G0, 1, D, H, alpha)

    return train_serial


def _train_parallel(D, O, cols, fuse, DT, OT):  # noqa: E741
    exp_source = EXP_SOURCE  # a cell of the kernel: its cache key (see the top)

    @njit(cache=True, parallel=True, **OPTS)
    def train_parallel(net, work, iterations, log_every, losses):
        """The 3-layer net with the tiles cut into fixed contiguous chunks, one per thread."""
        _key = exp_source  # (unused: it only has to be a cell)
        X, y, W0, W1t, N, alpha, one = net
        Abuf, d2, G0, G1, closs, _, _ = work
        ntiles, _, T = X.shape
        H = W0.shape[1]
        nchunks = closs.shape[0]
        per = (ntiles + nchunks - 1) // nchunks
        scale = 1.0 / (N * O)
        for it in range(iterations):
            for c in prange(nchunks):
                c0 = min(c * per, ntiles)
                c1 = min(c0 + per, ntiles)
                Af = Abuf[c]
                A = tile_views(Af, H, T, cols)
                if cols and fuse:
                    closs[c] = chunk_cols_fused(
                        X, y, W0, W1t, N, A, Af, d2[c], G0[c], G1[c], c0, c1, H, D, O, DT, OT, one
                    )
                elif cols:
                    closs[c] = chunk_cols_multi(
                        X, y, W0, W1t, N, A, Af, d2[c], G0[c], G1[c], c0, c1, H, D, O, DT, OT, one
                    )
                elif fuse:
                    closs[c] = chunk_rows_fused(
                        X, y, W0, W1t, N, A, Af, d2[c], G0[c], G1[c], c0, c1, H, D, O, DT, OT, one
                    )
                else:
                    closs[c] = chunk_rows_multi(
                        X, y, W0, W1t, N, A, Af, d2[c], G0[c], G1[c], c0, c1, H, D, O, DT, OT, one
                    )
            if log_every > 0 and it % log_every == 0:
                loss = 0.0
                for c in range(nchunks):
                    loss += closs[c]
                losses[it // log_every] = loss * scale
            update(W1t, G1, nchunks, O, H, alpha)
            update(W0, G0, nchunks, D, H, alpha)

    return train_parallel


@njit(**STEP)
def hidden_block(flat, hb, c, K):
    """Chunk c's K x hc block of a flat chunk-major array (the hidden split's weights)."""
    return flat[K * hb[c] : K * hb[c + 1]].reshape((K, hb[c + 1] - hb[c]))


TEAM_LINE = 16  # int64 words between two team flags: each in a cache line (and prefetch pair) of its own
TEAM_SOLO = 1 << 40  # the join word once one thread has taken every chunk
TEAM_PATIENCE = 1 << 16  # polls (most of them yielding: 0.05 s on the 2-core VM) a thread waits for the others to join before it runs every chunk itself
TEAM_SPIN = 1 << 9  # polls of a flag (each with a ``spin_pause``) before each further poll also yields the core


@njit(**STEP)
def team_join(flags, nchunks, w):
    """The chunks thread ``w`` of the hidden split's team runs, as a range: its own (w, w + 1) once
    all ``nchunks`` threads have joined (flags[0] counts them in); all of them, (0, nchunks), if
    the others have not joined after TEAM_PATIENCE polls and this thread is the one to claim them
    (it swaps the count it last saw for TEAM_SOLO); none, (0, 0), if another thread claimed them.
    So the loop never waits long for a thread that comes late (one the scheduler has not started:
    a busy machine) or never (an OpenMP region given fewer threads than asked, in the C twin),
    and every chunk is run once. The join's wait is paid once a run, not once an iteration."""
    w = np.int64(w)  # (0, 0) and (w, w + 1) must be one type
    if fetch_add(flags, 0, 1) >= TEAM_SOLO:
        return 0, 0
    polls = 0
    while True:
        seen = load_acquire(flags, 0)
        if seen == nchunks:
            return w, w + 1
        if seen >= TEAM_SOLO:
            return 0, 0
        polls += 1
        spin_pause()
        if polls > TEAM_SPIN:
            sched_yield()
        if polls > TEAM_PATIENCE and compare_swap(flags, 0, seen, TEAM_SOLO):
            return 0, nchunks


@njit(**STEP)
def team_wait(flags, nchunks, it):
    """Wait until every chunk's flag says it finished iteration ``it`` (acquire loads). Spins for
    TEAM_SPIN polls (some microseconds: an iteration's skew between threads), then yields the core
    at every poll: on a busy machine the thread waited for may be queued behind this one, and a
    spin would hold it off for a whole time slice."""
    for k in range(nchunks):
        polls = 0
        while load_acquire(flags, TEAM_LINE * (1 + k)) <= it:
            polls += 1
            spin_pause()
            if polls > TEAM_SPIN:
                sched_yield()


@njit(**STEP)
def chunk_views(Abuf, W0, W1t, G0, G1, d2, hb, c, N, D, O):  # noqa: E741
    """Chunk c's views in the hidden split (``Net``, ``Work``): its units hc, its activations (flat
    and N x hc), W0 and W1t blocks, gradient accumulators, output delta, and its share buffers of
    the even and the odd iterations."""
    nchunks = hb.shape[0] - 1
    hc = hb[c + 1] - hb[c]
    Af = Abuf[c]
    A = Af[: N * hc].reshape((N, hc))
    g0 = G0[c][: D * hc].reshape((1, D, hc))
    g1 = G1[c][: O * hc].reshape((1, O, hc))
    W0c, W1c = hidden_block(W0, hb, c, D), hidden_block(W1t, hb, c, O)
    return hc, Af, A, W0c, W1c, g0, g1, d2[2 * nchunks + c], d2[c], d2[nchunks + c]


@njit(**STEP)
def hidden_chunk(it, iterations, X0, A, Af, W0c, W1c, e, g0, g1, share, N, hc, D, O, DT, OT, one, alpha, fuse):  # noqa: E741
    """A chunk of the hidden split, one iteration: the previous iteration's backward pass (from the
    output delta ``e``) and the update of the chunk's own W0 columns and W1 rows, then, unless the
    run is over, this iteration's pre-activations, sigmoid and output pre-activation ``share``."""
    if it > 0:
        if fuse:
            backward_rows_fused(A, X0, W1c, e, g0[0], g1[0], N, hc, D, O, DT, OT, one)
        else:
            backward_rows_multi(A, X0, W1c, e, g0[0], g1[0], N, hc, D, O, DT, OT, one)
        update(W1c, g1, 1, O, hc, alpha)
        update(W0c, g0, 1, D, hc, alpha)
    if it < iterations:
        if fuse:
            forward_rows_fused(A, X0, W0c, N, hc, D)
        else:
            forward_rows_multi(A, X0, W0c, N, hc, D)
        sigmoid_tile(Af, N * hc, one)
        partial_rows(A, W1c, share, N, hc, O)


@njit(**STEP)
def hidden_output(d2, half, nchunks, e, y0, N, O, one):  # noqa: E741
    """The output delta into ``e`` from the chunks' shares d2[half .. half + nchunks - 1], summed in
    chunk order; returns sum |err|."""
    loss = 0.0
    for o in range(O):
        for t in range(N):
            z = d2[half, o, t]
            for k in range(1, nchunks):
                z += d2[half + k, o, t]
            err, e[o, t] = output_delta(z, y0[o, t], one)
            loss += err
    return loss


def _train_hidden(D, O, fuse, DT, OT):  # noqa: E741
    exp_source = EXP_SOURCE  # a cell of the kernel: its cache key (see the top)
    atomics_source = ATOMICS_SOURCE

    @njit(cache=True, nogil=True, **OPTS)
    def train_hidden(net, work, w, iterations, log_every, losses):
        """Thread ``w``'s part of the hidden split (``run_team`` starts one thread per chunk): the
        3-layer net with the hidden units cut into fixed contiguous chunks, the whole batch one row
        tile. The threads form a team (``team_join``) that meets once an iteration through flags,
        not a parallel region's fork and join. Each thread runs its chunk (``hidden_chunk``: the
        previous iteration's backward pass and the update of the chunk's own W0 columns and W1
        rows, which depend on its own hidden units only, then this iteration's forward pass and
        the chunk's share of the output pre-activations, written to the iteration's half of the
        share buffers: ``Work``), sets its flag to the iteration's number (release), waits for
        every flag (acquire), and computes the output delta into a copy of its own from the shares
        summed in chunk order (``hidden_output``); chunk 0 logs the loss. A share is rewritten two
        iterations later, after every chunk has set its flag for the iteration in between, so
        after every chunk has read it. The thread's views of its chunk are made once, before the
        loop: a view made in the loop would count references on the whole array, an atomic
        operation on a cache line every thread writes. If the team does not form, one thread runs
        every chunk, with the same sums in the same order: the result does not depend on the team."""
        _key = (exp_source, atomics_source)  # (unused: they only have to be cells)
        X, y, W0, W1t, N, alpha, one = net
        Abuf, d2, G0, G1, _, hb, flags = work
        nchunks = hb.shape[0] - 1
        scale = 1.0 / (N * O)
        X0 = X[0]
        y0 = y[0]
        first, last = team_join(flags, nchunks, w)
        team = last - first == 1
        hc, Af, A, W0c, W1c, g0, g1, e, even, odd = chunk_views(Abuf, W0, W1t, G0, G1, d2, hb, first, N, D, O)
        for it in range(iterations + 1 if first < last else 0):
            half = (it & 1) * nchunks
            for c in range(first, last):
                if not team:  # one thread runs every chunk: its views, every time
                    hc, Af, A, W0c, W1c, g0, g1, e, even, odd = chunk_views(Abuf, W0, W1t, G0, G1, d2, hb, c, N, D, O)
                share = odd if it & 1 else even
                hidden_chunk(it, iterations, X0, A, Af, W0c, W1c, e, g0, g1, share, N, hc, D, O, DT, OT, one, alpha, fuse)
                if it < iterations:
                    store_release(flags, TEAM_LINE * (1 + c), it + 1)
            if it == iterations:
                break
            team_wait(flags, nchunks, it)
            for c in range(first, last):
                loss = hidden_output(d2, half, nchunks, e if team else d2[2 * nchunks + c], y0, N, O, one)
                if c == 0 and log_every > 0 and it % log_every == 0:
                    losses[it // log_every] = loss * scale

    return train_hidden


def run_team(kernel, net, work, iterations, log_every, losses) -> None:
    """The hidden split's run: one thread per chunk, each running ``kernel`` (``_train_hidden``, a
    ``nogil`` function) for its chunk, this thread running chunk 0; returns when all are done.
    Python threads rather than a ``prange`` region: the team needs no parallel region (it meets
    through flags), and Numba's parfor lowering of the same body took 17 s to compile against
    about 8 s of the region-per-iteration kernel before it."""
    work.flags[:] = 0
    others = [threading.Thread(target=kernel, args=(net, work, w, iterations, log_every, losses))
              for w in range(1, work.hb.shape[0] - 1)]  # fmt: skip
    for thread in others:
        thread.start()
    kernel(net, work, 0, iterations, log_every, losses)
    for thread in others:
        thread.join()


# ---------------------------------------------------------------------------------------------
# Host side, shared by both backends


SMALL_WORK = 256  # N*H up to this: the whole batch is one row tile, H a compile-time constant
COLUMN_MIN_BATCH = 64  # fewest rows for the column layout (a tile fills vectors of rows)
COLUMN_LAYOUT_MAX_H = 256  # widest layer for the column layout (measured: docs/performance.md)
COLUMN_TILE_VALUES = 1 << 16  # column-layout tile T x H: 512 KiB of float64, L2-resident
HIDDEN_CHUNK_MULTIPLE = 8  # hidden split: units per chunk a multiple of this (a 32-byte vector of float32)


def small_problem(batch: int, hidden: int) -> bool:
    """N*H <= SMALL_WORK with a batch too short for the column layout: the small kernel (one row
    tile, H a constant). From COLUMN_MIN_BATCH rows the column layout's tiled kernel is faster even
    for these sizes (64 x 4: 0.89 against 1.74 us per iteration, one thread, seventh session)."""
    return batch * hidden <= SMALL_WORK and batch < COLUMN_MIN_BATCH


def tile_layout(batch: int, hidden: int) -> tuple[int, bool]:
    """(rows per tile T, column layout?). The tile's activations (T x H) stay in L1/L2.

    Column layout (vectorised over rows, T up to 512, T*H up to COLUMN_TILE_VALUES) wherever the
    batch fills a vector of rows; row layout (vectorised over h, T*H near 8192 values, T a
    multiple of 4) for small batches and very wide layers. A small problem (``small_problem``) is
    one row tile holding the whole batch."""
    if small_problem(batch, hidden):
        return batch, False
    if batch >= COLUMN_MIN_BATCH and hidden <= COLUMN_LAYOUT_MAX_H:
        t = min(512, max(32, COLUMN_TILE_VALUES // max(hidden, 1)) // 16 * 16)
        return max(1, min(batch, t)), True
    target = max(4, (8192 // max(hidden, 1)) // 4 * 4)
    return max(1, min(batch, target)), False


def hidden_bounds(hidden: int, nchunks: int) -> np.ndarray:
    """The hidden split's chunk bounds: at most ``nchunks`` fixed, contiguous ranges of hidden
    units, each but the last a multiple of HIDDEN_CHUNK_MULTIPLE units, none empty."""
    step = HIDDEN_CHUNK_MULTIPLE
    share = (hidden + max(1, nchunks) - 1) // max(1, nchunks)
    per = (share + step - 1) // step * step
    return np.array([*range(0, hidden, per), hidden], np.int64)


def prepare_net(problem, nchunks: int, hidden: bool = False) -> tuple[Net, Work, bool]:
    """Net and Work for ``problem`` (fresh copies: the problem's arrays are never written), with at
    most ``nchunks`` chunks (no more than there are tiles; with ``hidden``, the hidden split of a
    3-layer net, no more than ``hidden_bounds`` makes); returns (net, work, column layout?)."""
    t = problem.X.dtype.type
    X, y = problem.X, problem.y
    N, D = X.shape
    O = y.shape[1]  # noqa: E741
    empty = np.zeros((1, 0, 0), t)
    nobounds = noflags = np.zeros(0, np.int64)
    if len(problem.weights) == 1:
        W0t = np.array(problem.weights[0].T, order="C", copy=True)  # always a fresh copy
        net = Net(
            np.ascontiguousarray(X), np.ascontiguousarray(y.T), W0t, empty[0], N, t(problem.alpha), t(1)
        )
        work = Work(empty[0], np.zeros((1, O, N), t), np.zeros((1, O, D), t), empty, np.zeros(1), nobounds, noflags)
        return net, work, False
    H = problem.weights[0].shape[1]
    if hidden:
        return _prepare_hidden(problem, nchunks)
    T, cols = tile_layout(N, H)
    ntiles = (N + T - 1) // T
    nchunks = max(1, min(nchunks, ntiles))
    Xtiles = np.zeros((ntiles, D, T), t)
    ytiles = np.zeros((ntiles, O, T), t)
    for c in range(ntiles):
        rows = min(T, N - c * T)
        Xtiles[c, :, :rows] = X[c * T : c * T + rows].T
        ytiles[c, :, :rows] = y[c * T : c * T + rows].T
    net = Net(
        Xtiles,
        ytiles,
        np.array(problem.weights[0], order="C", copy=True),
        np.array(problem.weights[1].T, order="C", copy=True),
        N,
        t(problem.alpha),
        t(1),
    )
    work = Work(
        np.zeros((nchunks, T * H), t),
        np.zeros((nchunks, O, T), t),
        np.zeros((nchunks, D, H), t),
        np.zeros((nchunks, O, H), t),
        np.zeros(nchunks),
        nobounds,
        noflags,
    )
    return net, work, cols


def _prepare_hidden(problem, nchunks: int) -> tuple[Net, Work, bool]:
    """``prepare_net`` for the hidden split: one row tile holding the batch, the weights in chunk-major
    blocks (``Net``), per chunk room for N x hc activations and its gradients (``Work``)."""
    t = problem.X.dtype.type
    X, y = problem.X, problem.y
    N, D = X.shape
    O = y.shape[1]  # noqa: E741
    W0, W1 = problem.weights
    H = W0.shape[1]
    hb = hidden_bounds(H, nchunks)
    nchunks = len(hb) - 1
    per = int(hb[1] - hb[0])
    blocks = range(nchunks)
    line = TEAM_LINE * 8 // np.dtype(t).itemsize  # elements in TEAM_LINE int64 words
    ld = -(-N // line) * line  # the rows of X, y and the output buffers, padded (``Work``)
    Xp, yp = np.zeros((1, D, ld), t), np.zeros((1, O, ld), t)
    Xp[0, :, :N], yp[0, :, :N] = X.T, y.T
    net = Net(
        Xp,
        yp,
        np.concatenate([W0[:, hb[c] : hb[c + 1]].ravel() for c in blocks]).astype(t),
        np.concatenate([W1[hb[c] : hb[c + 1]].T.ravel() for c in blocks]).astype(t),
        N,
        t(problem.alpha),
        t(1),
    )
    work = Work(
        np.zeros((nchunks, N * per), t),
        np.zeros((3 * nchunks, O, ld), t),
        np.zeros((nchunks, D * per), t),
        np.zeros((nchunks, O * per), t),
        np.zeros(nchunks),
        hb,
        np.zeros(TEAM_LINE * (nchunks + 1), np.int64),
    )
    return net, work, False


def weights(net: Net, work: Work) -> list[np.ndarray]:
    """A 3-layer net's trained weights as the problem holds them (W0 D x H, W1 H x O), fresh arrays."""
    if net.W0.ndim == 2:
        return [net.W0.copy(), np.ascontiguousarray(net.W1t.T)]
    hb = work.hb  # the hidden split: chunk-major blocks (``Net``)
    D, O = net.X.shape[1], net.y.shape[1]  # noqa: E741
    blocks = range(len(hb) - 1)
    W0 = np.concatenate([net.W0[D * hb[c] : D * hb[c + 1]].reshape(D, -1) for c in blocks], axis=1)
    W1t = np.concatenate([net.W1t[O * hb[c] : O * hb[c + 1]].reshape(O, -1) for c in blocks], axis=1)
    return [W0, np.ascontiguousarray(W1t.T)]
