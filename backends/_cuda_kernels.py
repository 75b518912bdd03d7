"""The CUDA kernels of the training loop: one source for numba-cuda and numba-cuda-mlir.

This file is not imported by name: ``backends._cuda_compiler.load_kernels(compiler)`` executes it
once per CUDA compiler with the module global ``cuda`` bound to that compiler's ``cuda`` module
(``numba.cuda`` or ``numba_cuda_mlir.cuda``). ``cuda`` has to be a module global, not a closure
variable: the CUDA simulator runs a kernel by swapping that global for its per-thread fake.

``kernels(dtype, D, O)`` returns every kernel as a plain Python function with its signature (a
string both compilers parse) and launch bound; the host (``backends/_cuda_host.py``) compiles
them eagerly with ``cuda.jit(signature)``, and ``harness.cuda_ptx`` compiles the same functions
for real GPU architectures without a GPU. D and O are compile-time constants, so the per-thread
vectors (an X row, O pre-activations, D + O gradient accumulators) are small local arrays that
live in registers.

The file has three layers, each written once:

* the math of one element, as device functions every path calls: ``sig`` (SPEC step 1's
  sigmoid), ``dot`` (a pre-activation, or a gradient entry summed over rows), ``output_delta``
  (steps 2-4 for one output: d2 and |err|), ``hidden_delta`` (step 5), ``updated`` (step 6 for
  one weight), ``loss_mean`` (step 3: the logged mean from the |err| partials, added in order;
  the grid path adds them with ``group_sum`` instead);
* the layout of dynamic shared memory: ``_cuda_plan.block_shared`` and ``_cuda_plan.grid_shared``,
  which the plan sizes the allocation with, compiled here as device functions that carve it;
* the phases, and the kernels that sequence them, one per launch path
  (``backends/_cuda_plan.py`` chooses; docs/cuda.md has the design):

  * ``block3_*`` / ``block2_*``: one persistent block for the whole run; phases (``block_output``,
    ``block_gradient``, ...) separated by ``cuda.syncthreads()``; every phase spreads its items
    over all threads. The 2-layer kernel is the 3-layer one's output and update phases with X in
    place of a1.
  * ``grid3`` / ``grid2``: one persistent cooperative grid for the whole run; phases
    (``forward3``, ``backward3``, ``update``, ...) separated by ``cuda.cg.this_grid().sync()``;
    three per iteration. Their sums over other threads' partials are fixed-order trees through
    shared memory: ``block_sum`` (a block's |err|), ``lane_sum`` (the lanes of a chunk) and
    ``group_sum`` (a group of up to a warp adding the chunks' partials of a row or a weight).
  * ``*_phase`` kernels: the grid kernels' phases as separate launches (devices without
    cooperative launch), calling the same phase functions.

Why one file of this length: the kernels are closures over one compiler's ``cuda`` and over the
compile-time constants D and O, made by one call of ``kernels``, and every device function is
made in that call too (``sig`` by ``sigmoid``, cached likewise), so that none compiled for one
architecture is reused for another (``harness.cuda_ptx`` clears both caches between them); the
file has to be executed as a whole by the loader.

Every sum has a fixed order that depends only on the launch layout (the plan), never on thread
scheduling: no atomics, no warp shuffles (numba-cuda's simulator has none; a shared-memory tree
computes the same on both compilers and under it). A float64 run is bit-reproducible for a given
plan. The grid kernels' launch bound asks for two blocks per SM where that spills nothing
(``_cuda_plan.GRID_MIN_BLOCKS``).
"""

# The sizes are named as in SPEC.md: N rows, D inputs, H hidden units, O outputs.
# ruff: noqa: E741

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import numpy as np

from backends._cuda_plan import (
    BLOCK_MAX_THREADS,
    GRID_MIN_BLOCKS,
    GRID_MIN_BLOCKS_WIDTH,
    GRID_THREADS,
    block_shared,
    grid_shared,
    tree_width,
)

if "cuda" not in globals():
    raise ImportError("backends._cuda_kernels is loaded by backends._cuda_compiler.load_kernels(compiler)")
cuda = globals()["cuda"]  # bound by the loader before this body runs (see the module docstring)


class Kernel(NamedTuple):
    pyfunc: object  # the Python function, for cuda.jit(signature) or cuda.compile_ptx
    signature: str
    bound: int  # launch bound: the most threads per block it is launched with
    min_blocks: int = 1  # launch bound: blocks per SM the registers must allow (1: no constraint)

    @property
    def launch_bounds(self) -> int | tuple[int, int]:
        """The ``launch_bounds`` option of ``cuda.jit`` and ``cuda.compile_ptx``."""
        return self.bound if self.min_blocks == 1 else (self.bound, self.min_blocks)


#: Names by path (harness.cuda_ptx and the tests iterate over these).
BLOCK_KERNELS = ("block3_shared", "block3_global", "block2_shared", "block2_global")
GRID_KERNELS = ("grid3", "grid2")
PHASE_KERNELS = ("forward3_phase", "backward3_phase", "forward2_phase", "backward2_phase", "update_phase")
ALL_KERNELS = BLOCK_KERNELS + GRID_KERNELS + PHASE_KERNELS


def _signature(dtype: str, *args: str) -> str:
    names = {"a": f"{dtype}[::1]", "L": "float64[::1]", "i": "int64", "f": dtype, "c": "float64", "b": "boolean"}
    return "void(" + ", ".join(names[a] for a in args) + ")"


#: Whether ``cuda`` is numba-cuda's simulator (NUMBA_ENABLE_CUDASIM=1), which runs kernels as Python.
SIMULATOR = cuda.jit.__module__.startswith("numba.cuda.simulator")


def device(fn):
    """``fn`` as a device function. Under the simulator, a function that uses no ``cuda`` API stays
    plain Python: the simulator's device-function wrapper swaps module globals on every call,
    which made the simulated runs about 1.5 times as long; what it computes is the same."""
    if SIMULATOR and "cuda" not in fn.__code__.co_names:
        return fn
    return cuda.jit(device=True)(fn)


@cache
def sigmoid(dtype: str):
    """s(z) = 1 / (1 + exp(-z)) in ``dtype``; exp(-z) overflowing gives exactly 0, as NumPy does."""
    t = np.float64 if dtype == "float64" else np.float32
    one, zero = t(1.0), t(0.0)
    # Largest argument with a finite exp: beyond it exp(-z) = inf on the GPU and s = 0. The explicit
    # branch gives the same 0 under the simulator, where math.exp raises OverflowError instead.
    limit = t(709.78) if dtype == "float64" else t(88.72)

    @device
    def sig(z):
        u = -z
        if u > limit:
            return zero
        return one / (one + math.exp(u))

    return sig


@cache
def kernels(dtype: str, D: int, O: int) -> dict[str, Kernel]:
    """Every kernel for ``dtype`` and input/output widths D and O (see the module docstring)."""
    t = np.float64 if dtype == "float64" else np.float32
    st = np.dtype(t)  # shared arrays take a dtype instance (the simulator needs its itemsize)
    one, zero = t(1.0), t(0.0)
    DO = D + O  # a constant of this compilation (a local array's size must be one)
    sig = sigmoid(dtype)

    # --- the math of one element: every path calls these ----------------------------------------
    # Flat row-major arrays: entry (r, c) of an R x C matrix is A[r * C + c]; a row is stride 1
    # from r * C, a column stride C from c.

    @device
    def dot(A, a, sa, B, b, sb, start, stop):
        """sum_i A[a + i sa] B[b + i sb] for i = start, ..., stop - 1, in that order: a
        pre-activation (a row of X or a1 times a column of a weight matrix) or a gradient entry
        (a column of X or a1 times a column of deltas, over a range of rows)."""
        s = zero
        for i in range(start, stop):
            s += A[a + i * sa] * B[b + i * sb]
        return s

    @device
    def output_delta(z, y, i):
        """SPEC steps 1-4 for output entry i with pre-activation z: (d2, |err|), where
        a = s(z), err = y[i] - a and d2 = err a (1 - a)."""
        a = sig(z)
        err = y[i] - a
        return err * a * (one - a), abs(err)

    @device
    def hidden_delta(back, a):
        """SPEC step 5 for one hidden entry: d1 = back a (1 - a), back = (d2 W1.T)[n, j] with W1
        as it was before this iteration's update, a = a1[n, j]."""
        return back * a * (one - a)

    @device
    def updated(w, alpha, g):
        """SPEC step 6 for one weight entry: w + alpha * its gradient g."""
        return w + alpha * g

    @device
    def loss_mean(part, n, count, losses, slot):
        """SPEC step 3: the logged mean |err| from n partial sums, added in order."""
        s = zero
        for i in range(n):
            s += part[i]
        losses[slot] = s / count

    # --- shared memory: the layout the plan sizes it with (backends/_cuda_plan.py) -------------

    block_layout = device(block_shared)
    grid_layout = device(grid_shared)
    group_width = device(tree_width)

    @device
    def block_arrays(sm, N, H, T):
        """The one-block kernels' arrays in shared memory ``sm`` (H = 0: the 2-layer network)."""
        x, y, w0, w1, w1b, a1, d, part, end = block_layout(N, D, H, O, T)
        return sm[x:y], sm[y:w0], sm[w0:w1], sm[w1:w1b], sm[w1b:a1], sm[a1:d], sm[d:part], sm[part:end]

    @device
    def grid_arrays(sm, T):
        """A grid (or multi) kernel's block's arrays in shared memory ``sm``: (d2, sums, red)."""
        sums, d2, red, end = grid_layout(D, O, T)
        return sm[d2:red], sm[sums:d2], sm[red:end]

    # --- one block: the whole run in one thread block -------------------------------------------

    @device
    def block_output(A, W, y, d, N, K, tid, T):
        """Output phase, one (row, output) pair per thread: d[n, o] = d2 of s(A[n] W[:, o]) for
        the N x K inputs A of the last layer; returns this thread's sum of |err|."""
        acc = zero
        for e in range(tid, N * O, T):
            n = e // O
            o = e - n * O
            delta, abserr = output_delta(dot(A, n * K, 1, W, o, O, 0, K), y, e)
            d[e] = delta
            acc += abserr
        return acc

    @device
    def block_gradient(A, d, W, nxt, alpha, N, K, e):
        """Weight entry e = (k, o) of the last layer: nxt[e] = W[e] + alpha sum_n A[n, k] d[n, o]."""
        k = e // O
        o = e - k * O
        nxt[e] = updated(W[e], alpha, dot(A, k, K, d, o, O, 0, N))

    @device
    def block_log(part, losses, it, log_every, count, tid, T):
        """Thread 0 of a block adds the threads' |err| partials into the logged mean."""
        if log_every > 0 and it % log_every == 0 and tid == 0:
            loss_mean(part, T, count, losses, it // log_every)

    @device
    def block3(X, y, W0, W1, W1b, a1, d2, part, losses, N, H, alpha, iterations, log_every, count):
        # 3-layer network. W1 and W1b take turns as this iteration's W1 and the next one's: the
        # W0 gradient needs W1 as it was before this iteration's update (SPEC step 5), and the
        # threads updating W1 run at the same time as those reading it.
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        cur = W1
        nxt = W1b
        for it in range(iterations):
            # Hidden phase: one (row, hidden unit) pair per thread.
            for e in range(tid, N * H, T):
                n = e // H
                j = e - n * H
                a1[e] = sig(dot(X, n * D, 1, W0, j, H, 0, D))
            # waits for: every a1 entry before the output phase reads whole rows of it
            cuda.syncthreads()
            acc = block_output(a1, cur, y, d2, N, H, tid, T)
            if log_every > 0 and it % log_every == 0:
                part[tid] = acc
            # waits for: every d2 entry and |err| partial before the update phase reads them
            cuda.syncthreads()
            # Update phase: one weight entry per thread, its gradient summed over the rows in order.
            for e in range(tid, H * O + D * H, T):
                if e < H * O:  # W1[j, o] += alpha * sum_n a1[n, j] d2[n, o]
                    block_gradient(a1, d2, cur, nxt, alpha, N, H, e)
                else:  # W0[k, j] += alpha * sum_n X[n, k] d1[n, j], d1 with W1 before the update
                    m = e - H * O
                    k = m // H
                    j = m - k * H
                    g = zero
                    for n in range(N):
                        back = dot(d2, n * O, 1, cur, j * O, 1, 0, O)
                        g += X[n * D + k] * hidden_delta(back, a1[n * H + j])
                    W0[m] = updated(W0[m], alpha, g)
            block_log(part, losses, it, log_every, count, tid, T)
            cur, nxt = nxt, cur
            # waits for: the updated W0 and W1 before the next hidden phase reads them, and every
            # read of a1, d2 and the partials before the next iteration rewrites them
            cuda.syncthreads()
        if iterations % 2 == 1:  # the last update went to W1b
            for i in range(tid, H * O, T):
                W1[i] = W1b[i]
        # waits for: the final W1 in place before a caller copies it out
        cuda.syncthreads()

    @device
    def block2(X, y, W0, d, part, losses, N, alpha, iterations, log_every, count):
        # 2-layer network: the 3-layer network's output and update phases, with X for a1.
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        for it in range(iterations):
            acc = block_output(X, W0, y, d, N, D, tid, T)
            if log_every > 0 and it % log_every == 0:
                part[tid] = acc
            # waits for: every delta and |err| partial before the update phase reads them
            cuda.syncthreads()
            for e in range(tid, D * O, T):
                block_gradient(X, d, W0, W0, alpha, N, D, e)
            block_log(part, losses, it, log_every, count, tid, T)
            # waits for: the updated W0 before the next output phase reads it, and every read of d
            # and the partials before the next iteration rewrites them
            cuda.syncthreads()

    @device
    def stage(src, dst, size, tid, T):
        for i in range(tid, size, T):
            dst[i] = src[i]

    def block3_shared(X, y, W0, W1, losses, N, H, alpha, iterations, log_every, count):
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        sX, sy, sW0, sW1, sW1b, sa1, sd2, spart = block_arrays(cuda.shared.array(0, dtype=st), N, H, T)
        stage(X, sX, N * D, tid, T)
        stage(y, sy, N * O, tid, T)
        stage(W0, sW0, D * H, tid, T)
        stage(W1, sW1, H * O, tid, T)
        # waits for: X, y and the weights staged in shared memory
        cuda.syncthreads()
        block3(sX, sy, sW0, sW1, sW1b, sa1, sd2, spart, losses, N, H, alpha, iterations, log_every, count)
        stage(sW0, W0, D * H, tid, T)  # block3 ends with a barrier: the final weights are in place
        stage(sW1, W1, H * O, tid, T)

    def block3_global(X, y, W0, W1, W1b, a1, d2, part, losses, N, H, alpha, iterations, log_every, count):
        block3(X, y, W0, W1, W1b, a1, d2, part, losses, N, H, alpha, iterations, log_every, count)

    def block2_shared(X, y, W0, losses, N, alpha, iterations, log_every, count):
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        sX, sy, sW0, _, _, _, sd, spart = block_arrays(cuda.shared.array(0, dtype=st), N, 0, T)
        stage(X, sX, N * D, tid, T)
        stage(y, sy, N * O, tid, T)
        stage(W0, sW0, D * O, tid, T)
        # waits for: X, y and W0 staged in shared memory
        cuda.syncthreads()
        block2(sX, sy, sW0, sd, spart, losses, N, alpha, iterations, log_every, count)
        stage(sW0, W0, D * O, tid, T)  # block2 ends with a barrier: the final W0 is in place

    def block2_global(X, y, W0, d, part, losses, N, alpha, iterations, log_every, count):
        block2(X, y, W0, d, part, losses, N, alpha, iterations, log_every, count)

    # --- grid phases: device functions shared by the cooperative and the per-phase kernels -------
    # Work is handed out in block-sized items, item = block, block + blocks, ...: every thread of a
    # block walks the same items, so the barriers inside the phases are reached by all of them.

    @device
    def block_sum(value, sums, out, slot, tid, T):
        """Fixed-order tree sum of ``value`` over the block into ``out[slot]`` (all threads call)."""
        sums[tid] = value
        # waits for: every thread's value before the tree reads them
        cuda.syncthreads()
        width = T
        while width > 1:
            half = (width + 1) // 2
            if tid < width - half:
                sums[tid] += sums[tid + half]
            # waits for: this level of the tree before the next level reads it
            cuda.syncthreads()
            width = half
        if tid == 0:
            out[slot] = sums[0]

    @device
    def lane_sum(values, red, lanes, width, tid, K):
        """Adds the K ``values`` of the threads that share an index mod ``width`` (thread tid is
        lane tid // width) into lane 0's ``values`` in a fixed tree: at each level the upper half
        of the lanes is added into the lower half (all threads call; the others' are left as they
        are)."""
        for q in range(K):
            red[tid * K + q] = values[q]
        # waits for: every lane's values before the tree reads them
        cuda.syncthreads()
        lane = tid // width
        span = lanes
        while span > 1:
            half = (span + 1) // 2
            if lane < span - half:
                for q in range(K):
                    red[tid * K + q] += red[(tid + half * width) * K + q]
            # waits for: this level of the tree before the next level reads it
            cuda.syncthreads()
            span = half
        if tid < width:
            for q in range(K):
                values[q] = red[tid * K + q]
        # waits for: lane 0's reads before the next call overwrites the buffer
        cuda.syncthreads()

    @device
    def group_sum(A, first, step, count, live, red, G, lane, tid):
        """sum_c A[first + c step] for c = 0, ..., count - 1, by a group of G consecutive threads
        (G a power of two, this thread its ``lane``): lane l adds c = l, l + G, ... in order, then
        the lanes' sums are added in a fixed tree through ``red`` (one slot per thread). Every
        thread of the block calls it (barriers); lane 0 returns the sum. A group that is not
        ``live`` adds nothing."""
        s = zero
        if live:
            for c in range(lane, count, G):
                s += A[first + c * step]
        if G > 1:  # the same for every thread of the block: all reach the barriers
            red[tid] = s
            # waits for: every lane's sum before the tree reads them
            cuda.syncthreads()
            half = G // 2
            while half > 0:
                if lane < half:
                    red[tid] += red[tid + half]
                # waits for: this level of the tree before the next level reads it (and, after
                # the last, every read before a later call rewrites the slots)
                cuda.syncthreads()
                half //= 2
            s = red[tid]
        return s

    @device
    def forward3(X, W0, W1, zpart, red, N, H, hchunk, hchunks, block, blocks, tid, T):
        # Item (row block rb, hidden chunk c). A block holds RT = min(T, N) rows and T / RT lanes:
        # thread (row, lane) sums its lane's share of the chunk's hidden units,
        # zpart[c, n, :] = sum_{j in c} s(X[n] W0[:, j]) W1[j, :], and the lanes' sums are added
        # in lane order. a1 is not stored (N x H, the largest array): the backward phase
        # recomputes it.
        xr = cuda.local.array(D, dtype=t)
        z = cuda.local.array(O, dtype=t)
        RT = min(T, N)
        lanes = T // RT
        r = tid % RT
        lane = tid // RT
        rblocks = (N + RT - 1) // RT
        for item in range(block, rblocks * hchunks, blocks):
            rb = item // hchunks
            c = item - rb * hchunks
            n = rb * RT + r
            for o in range(O):
                z[o] = zero
            if n < N and lane < lanes:
                for k in range(D):
                    xr[k] = X[n * D + k]
                for j in range(c * hchunk + lane, min(H, (c + 1) * hchunk), lanes):
                    # same j across the warp (lanes = 1): W0's column is a broadcast
                    a = sig(dot(xr, 0, 1, W0, j, H, 0, D))
                    for o in range(O):
                        z[o] += a * W1[j * O + o]
            if lanes > 1:  # the same for every thread of the block: all reach the barriers
                lane_sum(z, red, lanes, RT, tid, O)
            if n < N and lane == 0:
                for o in range(O):
                    zpart[(c * N + n) * O + o] = z[o]

    @device
    def backward3(X, y, W0, W1, zpart, g0part, g1part, errpart, d2s, sums, red, N, H, hchunks, rchunk, logged, block, blocks, tid, T):
        # Item (hidden block hb, row chunk c). A block holds HT = min(T, H) hidden units and T / HT
        # lanes: thread (unit j, lane) takes its lane's share of the chunk's rows. The block first
        # finishes a batch of up to T rows (a2, err, d2 from the hidden chunks' partial
        # pre-activations, each row's added by a group of threads, group_sum) into shared memory;
        # then every thread recomputes a1[n, j] and
        # d1[n, j] (with W1 before its update) and accumulates its gradient partials, and the
        # lanes' partials are added in lane order. Every hidden block finishes the same rows the
        # same way: identical d2, and only blocks with hb = 0 record the rows' |err|.
        w0 = cuda.local.array(D, dtype=t)
        w1 = cuda.local.array(O, dtype=t)
        g = cuda.local.array(DO, dtype=t)  # gradient partials: W0[:, j] then W1[j, :]
        HT = min(T, H)
        lanes = T // HT
        jj = tid % HT
        lane = tid // HT
        hblocks = (H + HT - 1) // HT
        rchunks = (N + rchunk - 1) // rchunk
        for item in range(block, hblocks * rchunks, blocks):
            hb = item // rchunks
            c = item - hb * rchunks
            j = hb * HT + jj
            live = j < H and lane < lanes
            for k in range(D):
                w0[k] = W0[k * H + j] if live else zero
            for o in range(O):
                w1[o] = W1[j * O + o] if live else zero
            for q in range(D + O):
                g[q] = zero
            acc = zero
            n0 = c * rchunk
            n1 = min(N, n0 + rchunk)
            for base in range(n0, n1, T):
                rows = min(T, n1 - base)
                G = group_width(hchunks, T, T // rows)  # threads per row: the spare ones help
                row = tid // G  # this thread's row of the batch, and its place in the row's group
                place = tid - row * G
                n = base + row
                for o in range(O):
                    s = group_sum(zpart, n * O + o, N * O, hchunks, row < rows, red, G, place, tid)
                    if row < rows and place == 0:
                        delta, abserr = output_delta(s, y, n * O + o)
                        d2s[row * O + o] = delta
                        acc += abserr
                # waits for: this batch's d2 rows in shared memory
                cuda.syncthreads()
                if live:
                    for m in range(lane, min(T, n1 - base), lanes):
                        r = base + m
                        # same row across a lane's threads: X's row is a broadcast
                        a = sig(dot(X, r * D, 1, w0, 0, 1, 0, D))
                        back = zero
                        for o in range(O):
                            dv = d2s[m * O + o]
                            back += dv * w1[o]
                            g[D + o] += a * dv
                        d1 = hidden_delta(back, a)
                        for k in range(D):
                            g[k] += X[r * D + k] * d1
                # waits for: every thread's reads of this batch before the next batch overwrites it
                cuda.syncthreads()
            if lanes > 1:  # the same for every thread of the block: all reach the barriers
                lane_sum(g, red, lanes, HT, tid, D + O)
            if j < H and lane == 0:  # consecutive threads write consecutive j: coalesced
                for k in range(D):
                    g0part[(c * D + k) * H + j] = g[k]
                for o in range(O):
                    g1part[(c * H + j) * O + o] = g[D + o]
            if logged and hb == 0:
                block_sum(acc, sums, errpart, c, tid, T)

    @device
    def forward2(X, y, W0, d, errpart, sums, N, logged, block, blocks, tid, T):
        # 2-layer network. Item = a block of T rows; thread = one row: a = s(X[n] W0), err, d.
        rblocks = (N + T - 1) // T
        for rb in range(block, rblocks, blocks):
            n = rb * T + tid
            acc = zero
            if n < N:
                for o in range(O):
                    delta, abserr = output_delta(dot(X, n * D, 1, W0, o, O, 0, D), y, n * O + o)
                    d[n * O + o] = delta
                    acc += abserr
            if logged:
                block_sum(acc, sums, errpart, rb, tid, T)

    @device
    def backward2(X, d, g0part, N, rchunk, block, blocks, tid, T):
        # 2-layer network. Item (weight block, row chunk c); thread = one W0 entry (k, o) summed
        # over the chunk's rows.
        wblocks = (D * O + T - 1) // T
        rchunks = (N + rchunk - 1) // rchunk
        for item in range(block, wblocks * rchunks, blocks):
            wb = item // rchunks
            c = item - wb * rchunks
            e = wb * T + tid
            if e < D * O:
                k = e // O
                o = e - k * O
                g0part[c * D * O + e] = dot(X, k, D, d, o, O, c * rchunk, min(N, (c + 1) * rchunk))

    @device
    def update(W0, g0part, W1, g1part, n1, chunks, alpha, errpart, nerr, losses, slot, count, red, block, blocks,
               tid, T):  # fmt: skip
        # A group of G threads per weight entry (tree_width: up to a warp, as many as the grid
        # has to spare): W += alpha * (the chunks' partial gradients, added by group_sum). Block 0
        # also adds the |err| partials into the logged mean the same way.
        n0 = W0.size
        total = n0 + n1
        G = group_width(chunks, T, (blocks * T) // total)
        groups = T // G
        m = tid // G
        lane = tid - m * G
        for base in range(block * groups, total, blocks * groups):  # the same for the whole block
            i = base + m
            live = m < groups and i < total
            first = i if i < n0 else i - n0
            parts = g0part if i < n0 else g1part
            g = group_sum(parts, first, n0 if i < n0 else n1, chunks, live, red, G, lane, tid)
            if live and lane == 0:
                if i < n0:
                    W0[i] = updated(W0[i], alpha, g)
                else:
                    W1[first] = updated(W1[first], alpha, g)
        if block == 0 and slot >= 0:  # the same for the whole block
            G = group_width(nerr, T, T)
            s = group_sum(errpart, 0, 1, nerr, tid < G, red, G, tid, tid)
            if tid == 0:
                losses[slot] = s / count

    # --- one cooperative grid: the whole run in one launch ---------------------------------------

    def grid3(X, y, W0, W1, zpart, g0part, g1part, errpart, losses, N, H, hchunk, hchunks, rchunk, alpha, iterations, log_every, count):
        grid = cuda.cg.this_grid()
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        block = cuda.blockIdx.x
        blocks = cuda.gridDim.x
        d2s, sums, red = grid_arrays(cuda.shared.array(0, dtype=st), T)
        rchunks = (N + rchunk - 1) // rchunk
        for it in range(iterations):
            logged = log_every > 0 and it % log_every == 0
            forward3(X, W0, W1, zpart, red, N, H, hchunk, hchunks, block, blocks, tid, T)
            # waits for: every hidden chunk's partial pre-activations before any row is finished
            grid.sync()
            backward3(X, y, W0, W1, zpart, g0part, g1part, errpart, d2s, sums, red, N, H, hchunks, rchunk, logged, block, blocks, tid, T)
            # waits for: every row chunk's gradient (and |err|) partials before they are added, and
            # every read of W0 and W1 before the update rewrites them
            grid.sync()
            slot = it // log_every if logged else -1
            update(W0, g0part, W1, g1part, H * O, rchunks, alpha, errpart, rchunks, losses, slot, count,
                   red, block, blocks, tid, T)  # fmt: skip
            # waits for: the updated weights before the next forward phase reads them (the partial
            # arrays are next written after this barrier, and read only before it)
            grid.sync()

    def grid2(X, y, W0, d, g0part, errpart, losses, N, rchunk, alpha, iterations, log_every, count):
        grid = cuda.cg.this_grid()
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        block = cuda.blockIdx.x
        blocks = cuda.gridDim.x
        _, sums, red = grid_arrays(cuda.shared.array(0, dtype=st), T)
        rchunks = (N + rchunk - 1) // rchunk
        rblocks = (N + T - 1) // T
        for it in range(iterations):
            logged = log_every > 0 and it % log_every == 0
            forward2(X, y, W0, d, errpart, sums, N, logged, block, blocks, tid, T)
            # waits for: every row's delta (and the blocks' |err| sums) before the gradient reads them
            grid.sync()
            backward2(X, d, g0part, N, rchunk, block, blocks, tid, T)
            # waits for: every row chunk's gradient partials, and every read of W0 and d
            grid.sync()
            slot = it // log_every if logged else -1
            update(W0, g0part, W0, g0part, 0, rchunks, alpha, errpart, rblocks, losses, slot, count,
                   red, block, blocks, tid, T)  # fmt: skip
            # waits for: the updated W0 before the next forward phase reads it
            grid.sync()

    # --- the same phases as separate launches (no cooperative launch on this device) -------------

    def forward3_phase(X, W0, W1, zpart, N, H, hchunk, hchunks):
        T = cuda.blockDim.x
        _, _, red = grid_arrays(cuda.shared.array(0, dtype=st), T)
        forward3(X, W0, W1, zpart, red, N, H, hchunk, hchunks, cuda.blockIdx.x, cuda.gridDim.x, cuda.threadIdx.x, T)

    def backward3_phase(X, y, W0, W1, zpart, g0part, g1part, errpart, N, H, hchunks, rchunk, logged):
        T = cuda.blockDim.x
        d2s, sums, red = grid_arrays(cuda.shared.array(0, dtype=st), T)
        backward3(X, y, W0, W1, zpart, g0part, g1part, errpart, d2s, sums, red, N, H, hchunks, rchunk, logged,
                  cuda.blockIdx.x, cuda.gridDim.x, cuda.threadIdx.x, T)  # fmt: skip

    def forward2_phase(X, y, W0, d, errpart, N, logged):
        T = cuda.blockDim.x
        _, sums, _ = grid_arrays(cuda.shared.array(0, dtype=st), T)
        forward2(X, y, W0, d, errpart, sums, N, logged, cuda.blockIdx.x, cuda.gridDim.x, cuda.threadIdx.x, T)

    def backward2_phase(X, d, g0part, N, rchunk):
        backward2(X, d, g0part, N, rchunk, cuda.blockIdx.x, cuda.gridDim.x, cuda.threadIdx.x, cuda.blockDim.x)

    def update_phase(W0, g0part, W1, g1part, n1, chunks, alpha, errpart, nerr, losses, slot, count):
        T = cuda.blockDim.x
        _, _, red = grid_arrays(cuda.shared.array(0, dtype=st), T)
        update(W0, g0part, W1, g1part, n1, chunks, alpha, errpart, nerr, losses, slot, count, red,
               cuda.blockIdx.x, cuda.gridDim.x, cuda.threadIdx.x, T)  # fmt: skip

    s = lambda *args: _signature(dtype, *args)  # noqa: E731
    B, G = BLOCK_MAX_THREADS, GRID_THREADS
    per_sm = GRID_MIN_BLOCKS if D + O <= GRID_MIN_BLOCKS_WIDTH else 1  # the grid kernels' blocks per SM
    return {
        # X, y, W0, W1, losses, N, H, alpha, iterations, log_every, count
        "block3_shared": Kernel(block3_shared, s(*"aaaaLiifiic"), B),
        # X, y, W0, W1, W1b, a1, d2, part, losses, N, H, alpha, iterations, log_every, count
        "block3_global": Kernel(block3_global, s(*"aaaaaaaaLiifiic"), B),
        # X, y, W0, losses, N, alpha, iterations, log_every, count
        "block2_shared": Kernel(block2_shared, s(*"aaaLifiic"), B),
        # X, y, W0, d, part, losses, N, alpha, iterations, log_every, count
        "block2_global": Kernel(block2_global, s(*"aaaaaLifiic"), B),
        # X, y, W0, W1, zpart, g0part, g1part, errpart, losses, N, H, hchunk, hchunks, rchunk,
        # alpha, iterations, log_every, count
        "grid3": Kernel(grid3, s(*"aaaaaaaaLiiiiifiic"), G, per_sm),
        # X, y, W0, d, g0part, errpart, losses, N, rchunk, alpha, iterations, log_every, count
        "grid2": Kernel(grid2, s(*"aaaaaaLiifiic"), G, per_sm),
        # X, W0, W1, zpart, N, H, hchunk, hchunks
        "forward3_phase": Kernel(forward3_phase, s(*"aaaaiiii"), G),
        # X, y, W0, W1, zpart, g0part, g1part, errpart, N, H, hchunks, rchunk, logged
        "backward3_phase": Kernel(backward3_phase, s(*"aaaaaaaaiiiib"), G),
        # X, y, W0, d, errpart, N, logged
        "forward2_phase": Kernel(forward2_phase, s(*"aaaaaib"), G),
        # X, d, g0part, N, rchunk
        "backward2_phase": Kernel(backward2_phase, s(*"aaaii"), G),
        # W0, g0part, W1, g1part, n1, chunks, alpha, errpart, nerr, losses, slot, count
        "update_phase": Kernel(update_phase, s(*"aaaaiifaiLic"), G),
    }
