"""`numba-cuda`: the training loop as Numba ``@cuda.jit`` kernels on an NVIDIA GPU.

Two launch paths, chosen per problem from its size and the device's properties (see
``choose_path``; docs/cuda.md explains the design):

* **single** -- one persistent kernel launch for the whole run. One thread block keeps X, y, the
  weights and the activations in shared memory (or in global scratch when they do not fit) and
  iterates inside the kernel, with ``cuda.syncthreads()`` between phases. Two barriers per
  iteration: a hidden-unit phase (thread j owns hidden unit j: its d1 column, its row of W1,
  its column of W0 and its a1 column, so the backward pass of iteration t-1 and the forward pass
  of iteration t need no barrier between them) and an output phase over (row, output) items.
* **multi** -- a launch sequence per iteration for sizes one block cannot carry: fused forward
  (the hidden activations are recomputed in the backward kernel instead of being stored: a1 is
  N x H, the largest array of the problem), output/err/delta, fused backward with per-chunk
  gradient partials, and an update kernel that combines the partials in a fixed order (so float64
  results are deterministic and do not depend on atomics' ordering) and writes the logged loss.

Every reduction is a fixed-order sum, so a run is bit-reproducible for a given launch
configuration. The logged losses stay on the device until ``fetch``; ``run`` synchronises before it
returns. Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run as Python
threads: correct, but thousands of times slower (see ``SIMULATED``).
"""

# The sizes are named as in SPEC.md: N rows, D inputs, H hidden units, O outputs.
# ruff: noqa: E741

from __future__ import annotations

import inspect
import math
import sys
from functools import cache, lru_cache

import numpy as np
from numba import config, cuda

from backends.base import Problem, TrainResult, UnsupportedProblem, check_dtype, n_logged

DTYPES = ("float64", "float32")
DEVICE = "gpu"

#: True when Numba's CUDA simulator stands in for a GPU (NUMBA_ENABLE_CUDASIM=1): the harness
#: shortens its runs there, and the launch defaults below pick tiny blocks.
SIMULATED: bool = bool(getattr(config, "ENABLE_CUDASIM", 0))

# --- Tunables (module attributes so tests and experiments can monkeypatch them) -----------------
#: Largest estimated critical path of one iteration, in dependent multiply-add steps of one thread,
#: for which the single persistent-kernel path is used (see ``single_block_steps``). Above it the
#: multi-kernel path runs. 0 forces the multi-kernel path; ``math.inf`` forces the single block.
#: The default is a heuristic (a few microseconds of one block versus the fixed cost of four
#: kernel launches per iteration); it has not been tuned on a real GPU yet.
SINGLE_BLOCK_MAX_STEPS: float = 4096
#: Threads per block; None picks them from the device (MAX_THREADS_PER_BLOCK, the work size).
THREADS_PER_BLOCK: int | None = None
#: Under the simulator every GPU thread is a Python thread: default to small blocks there.
SIMULATOR_THREADS_PER_BLOCK = 8
#: Multi-kernel path: default block size, fewest rows (hidden units) per chunk, most chunks.
MULTI_THREADS_PER_BLOCK = 256
MIN_CHUNK = 16
MAX_CHUNKS = 1024
#: Largest block the per-iteration kernels are compiled for (their launch bound).
MAX_BLOCK = 1024
#: Largest block of the persistent kernel, and its launch bound. A bound of 1024 caps a thread at
#: 64 registers (65536 per SM / 1024), and the persistent kernel then spills (84 bytes per thread
#: in float64 on sm_90, by ``python -m harness.cuda_ptx``); at 256 it needs no spill. The single
#: path only runs problems small enough that 256 threads cover them in a few thousand steps.
SINGLE_MAX_BLOCK = 256


def available() -> str | None:
    try:
        ok = cuda.is_available()
    except Exception as exc:  # a broken driver install must not break the registry
        return f"CUDA check failed: {type(exc).__name__}: {exc}"
    if ok:
        return None
    return "no CUDA GPU found (cuda.is_available() is False); set NUMBA_ENABLE_CUDASIM=1 to use the simulator"


def device_name() -> str:
    """The GPU's name for the machine fingerprint ('CUDA simulator' under the simulator)."""
    if SIMULATED:
        return "CUDA simulator (numba-cuda, no GPU)"
    try:
        name = cuda.get_current_device().name
    except Exception as exc:  # no driver or no device: say so instead of failing the fingerprint
        return f"no CUDA device ({type(exc).__name__})"
    return name.decode() if isinstance(name, bytes) else str(name)


@lru_cache(maxsize=1)
def device_properties() -> dict:
    """The launch-relevant properties of the current device (fixed stand-ins under the simulator)."""
    if SIMULATED:
        return {
            "max_threads_per_block": SIMULATOR_THREADS_PER_BLOCK,
            "multiprocessors": 1,
            "max_threads_per_sm": SIMULATOR_THREADS_PER_BLOCK,
            "max_shared_per_block": 48 * 1024,
            "warp": 1,
        }
    dev = cuda.get_current_device()

    def attr(name: str, default: int) -> int:
        try:
            return int(getattr(dev, name))
        except Exception:
            return default

    return {
        "max_threads_per_block": attr("MAX_THREADS_PER_BLOCK", 1024),
        "multiprocessors": attr("MULTIPROCESSOR_COUNT", 1),
        "max_threads_per_sm": attr("MAX_THREADS_PER_MULTIPROCESSOR", 2048),
        "max_shared_per_block": attr("MAX_SHARED_MEMORY_PER_BLOCK", 48 * 1024),
        "warp": attr("WARP_SIZE", 32),
    }


# --- Kernels ------------------------------------------------------------------------------------


def _kernel_decorator(bound: int):
    """``cuda.jit`` with the launch bound ``bound`` where this numba-cuda supports one.

    A kernel is launched with at most ``bound`` threads per block, and the compiler is told so (it
    then keeps the register count within what a block that size can have). The simulator's jit has
    no ``launch_bounds`` option, nor do older numba-cuda releases: plain ``cuda.jit`` there.
    """
    if SIMULATED or "launch_bounds" not in inspect.signature(cuda.jit).parameters:
        return cuda.jit
    return cuda.jit(launch_bounds=bound)


_kernel = _kernel_decorator(MAX_BLOCK)
_single_kernel = _kernel_decorator(SINGLE_MAX_BLOCK)


def _nbtype(dtype: str):
    return np.float64 if dtype == "float64" else np.float32


@cache
def _sigmoid(dtype: str):
    """s(z) = 1 / (1 + exp(-z)) in ``dtype``; exp(-z) overflowing gives exactly 0, as NumPy does."""
    t = _nbtype(dtype)
    one, zero = t(1.0), t(0.0)
    # Largest argument with a finite exp: beyond it exp(-z) = inf on the GPU and s = 0. The explicit
    # branch gives the same 0 under the simulator, where math.exp raises OverflowError instead.
    limit = t(709.78) if dtype == "float64" else t(88.72)

    @cuda.jit(device=True)
    def sig(z):
        u = -z
        if u > limit:
            return zero
        return one / (one + math.exp(u))

    return sig


@cache
def _single_kernels(dtype: str):
    """The persistent one-block kernels (shared-memory and global-scratch variants) for ``dtype``."""
    t = _nbtype(dtype)
    st = np.dtype(t)  # shared arrays take a dtype instance (the simulator needs its itemsize)
    one, zero = t(1.0), t(0.0)
    sig = _sigmoid(dtype)

    @cuda.jit(device=True)
    def train2(X, y, W0, W1, a1, d1, d2, part, losses, N, D, H, O, alpha, iterations, log_every):
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        for it in range(iterations + 1):
            # Hidden-unit phase: thread j owns hidden unit j. First the backward pass of the previous
            # iteration for unit j (d1 column with W1 row j *before* its update, then W1 row j and
            # W0 column j), then the forward pass of this iteration for unit j (a1 column j).
            for j in range(tid, H, T):
                if it > 0:
                    for n in range(N):
                        back = zero
                        for o in range(O):
                            back += d2[n * O + o] * W1[j * O + o]
                        a = a1[n * H + j]
                        d1[n * H + j] = back * a * (one - a)
                    for o in range(O):
                        g = zero
                        for n in range(N):
                            g += a1[n * H + j] * d2[n * O + o]
                        W1[j * O + o] += alpha * g
                    for k in range(D):
                        g = zero
                        for n in range(N):
                            g += X[n * D + k] * d1[n * H + j]
                        W0[k * H + j] += alpha * g
                if it < iterations:
                    for n in range(N):
                        z = zero
                        for k in range(D):
                            z += X[n * D + k] * W0[k * H + j]
                        a1[n * H + j] = sig(z)
            if it == iterations:  # the last update is done (same branch in every thread)
                break
            # waits for: every a1 column of this iteration and every W1 row update, which the
            # output phase below reads across all hidden units
            cuda.syncthreads()
            # Output phase over (row, output) items: a2, err, d2 and this thread's share of sum|err|.
            acc = zero
            for idx in range(tid, N * O, T):
                n = idx // O
                o = idx - n * O
                z = zero
                for j in range(H):
                    z += a1[n * H + j] * W1[j * O + o]
                a = sig(z)
                e = y[idx] - a
                d2[idx] = e * a * (one - a)
                acc += abs(e)
            logged = log_every > 0 and it % log_every == 0
            if logged:
                part[tid] = acc
            # waits for: all of d2 (and the |err| partials) before the hidden-unit phase and the
            # loss sum read them; also every read of a1 and W1 before the hidden phase rewrites them
            cuda.syncthreads()
            if logged and tid == 0:
                # part is next written after the next iteration's first barrier, which thread 0
                # reaches only after this sum: no extra barrier needed.
                s = zero
                for i in range(T):
                    s += part[i]
                losses[it // log_every] = s / (N * O)

    @cuda.jit(device=True)
    def train1(X, y, W0, d, part, losses, N, D, O, alpha, iterations, log_every):
        # 2-layer network: thread o owns output o (column o of W0 and of d): no barrier is needed
        # inside an iteration, only around the loss sum of a logged iteration.
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        for it in range(iterations):
            acc = zero
            for o in range(tid, O, T):
                for n in range(N):
                    z = zero
                    for k in range(D):
                        z += X[n * D + k] * W0[k * O + o]
                    a = sig(z)
                    e = y[n * O + o] - a
                    d[n * O + o] = e * a * (one - a)
                    acc += abs(e)
                for k in range(D):
                    g = zero
                    for n in range(N):
                        g += X[n * D + k] * d[n * O + o]
                    W0[k * O + o] += alpha * g
            if log_every > 0 and it % log_every == 0:
                part[tid] = acc
                # waits for: every thread's |err| partial of this iteration before thread 0 sums them
                cuda.syncthreads()
                if tid == 0:
                    s = zero
                    for i in range(T):
                        s += part[i]
                    losses[it // log_every] = s / (N * O)
                # waits for: thread 0 to finish reading the partials before any thread rewrites
                # them at the next logged iteration
                cuda.syncthreads()

    @_single_kernel
    def single2_global(X, y, W0, W1, a1, d1, d2, part, losses, N, D, H, O, alpha, iterations, log_every):
        train2(X, y, W0, W1, a1, d1, d2, part, losses, N, D, H, O, alpha, iterations, log_every)

    @_single_kernel
    def single2_shared(X, y, W0, W1, losses, N, D, H, O, alpha, iterations, log_every):
        sm = cuda.shared.array(0, dtype=st)
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        o1 = N * D
        o2 = o1 + N * O
        o3 = o2 + D * H
        o4 = o3 + H * O
        o5 = o4 + N * H
        o6 = o5 + N * H
        o7 = o6 + N * O
        sX, sy, sW0, sW1 = sm[0:o1], sm[o1:o2], sm[o2:o3], sm[o3:o4]
        sa1, sd1, sd2, spart = sm[o4:o5], sm[o5:o6], sm[o6:o7], sm[o7 : o7 + T]
        for i in range(tid, N * D, T):
            sX[i] = X[i]
        for i in range(tid, N * O, T):
            sy[i] = y[i]
        for i in range(tid, D * H, T):
            sW0[i] = W0[i]
        for i in range(tid, H * O, T):
            sW1[i] = W1[i]
        # waits for: X, y and the weights to be staged in shared memory
        cuda.syncthreads()
        train2(sX, sy, sW0, sW1, sa1, sd1, sd2, spart, losses, N, D, H, O, alpha, iterations, log_every)
        # waits for: the final weight update of every hidden unit before the weights are copied out
        cuda.syncthreads()
        for i in range(tid, D * H, T):
            W0[i] = sW0[i]
        for i in range(tid, H * O, T):
            W1[i] = sW1[i]

    @_single_kernel
    def single1_global(X, y, W0, d, part, losses, N, D, O, alpha, iterations, log_every):
        train1(X, y, W0, d, part, losses, N, D, O, alpha, iterations, log_every)

    @_single_kernel
    def single1_shared(X, y, W0, losses, N, D, O, alpha, iterations, log_every):
        sm = cuda.shared.array(0, dtype=st)
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        o1 = N * D
        o2 = o1 + N * O
        o3 = o2 + D * O
        o4 = o3 + N * O
        sX, sy, sW0, sd, spart = sm[0:o1], sm[o1:o2], sm[o2:o3], sm[o3:o4], sm[o4 : o4 + T]
        for i in range(tid, N * D, T):
            sX[i] = X[i]
        for i in range(tid, N * O, T):
            sy[i] = y[i]
        for i in range(tid, D * O, T):
            sW0[i] = W0[i]
        # waits for: X, y and W0 to be staged in shared memory
        cuda.syncthreads()
        train1(sX, sy, sW0, sd, spart, losses, N, D, O, alpha, iterations, log_every)
        # waits for: the final update of every W0 column before W0 is copied out
        cuda.syncthreads()
        for i in range(tid, D * O, T):
            W0[i] = sW0[i]

    return {
        "single2_global": single2_global,
        "single2_shared": single2_shared,
        "single1_global": single1_global,
        "single1_shared": single1_shared,
    }


@cache
def _multi_kernels(dtype: str, D: int, O: int):
    """The per-iteration kernels for ``dtype``, specialised on the input and output widths.

    D and O are compile-time constants here, so the per-thread vectors (an X row, the O output
    pre-activations, the D + O gradient accumulators) are fixed-size local arrays that the compiler
    can keep in registers for the usual small widths.
    """
    t = _nbtype(dtype)
    st = np.dtype(t)  # shared arrays take a dtype instance (the simulator needs its itemsize)
    one, zero = t(1.0), t(0.0)
    sig = _sigmoid(dtype)

    @cuda.jit(device=True)
    def block_sum(value, out, slot):
        """Deterministic tree sum of ``value`` over the block into ``out[slot]`` (all threads call)."""
        # Dynamic shared memory, one word per thread (launches pass blockDim * itemsize). Not a
        # static shared array: the simulator allocates those with a check-then-set race between
        # its threads, which occasionally gives threads different buffers.
        sh = cuda.shared.array(0, dtype=st)
        tid = cuda.threadIdx.x
        width = cuda.blockDim.x
        sh[tid] = value
        # waits for: every thread's value before the tree reads them
        cuda.syncthreads()
        while width > 1:
            half = (width + 1) // 2
            if tid < width - half:
                sh[tid] += sh[tid + half]
            # waits for: this level of the tree before the next level reads it
            cuda.syncthreads()
            width = half
        if tid == 0:
            out[slot] = sh[0]

    @cuda.jit(device=True)
    def finish_row(y, d2, n, z):
        """a2 = s(z), err, d2 for the O outputs of row n; returns sum |err| of the row."""
        acc = zero
        for o in range(O):
            a = sig(z[o])
            e = y[n * O + o] - a
            d2[n * O + o] = e * a * (one - a)
            acc += abs(e)
        return acc

    @_kernel
    def forward(X, y, W0, W1, zpart, d2, errpart, N, H, hchunk, logged):
        # grid (row blocks, hidden chunks); thread = one row, looping over its chunk of hidden units.
        # a1 is never stored: the backward kernel recomputes it.
        n = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        c = cuda.blockIdx.y
        xr = cuda.local.array(D, dtype=t)
        z = cuda.local.array(O, dtype=t)
        acc = zero
        if n < N:
            for k in range(D):
                xr[k] = X[n * D + k]
            for o in range(O):
                z[o] = zero
            for j in range(c * hchunk, min(H, (c + 1) * hchunk)):
                s = zero
                for k in range(D):
                    s += xr[k] * W0[k * H + j]  # same j across the warp: a broadcast load
                a = sig(s)
                for o in range(O):
                    z[o] += a * W1[j * O + o]
            if cuda.gridDim.y == 1:  # one chunk: finish the row here, no second kernel
                acc = finish_row(y, d2, n, z)
            else:
                for o in range(O):
                    zpart[(c * N + n) * O + o] = z[o]
        if cuda.gridDim.y == 1 and logged:
            block_sum(acc, errpart, cuda.blockIdx.x)

    @_kernel
    def output(y, zpart, d2, errpart, N, chunks, logged):
        # thread = one row: combine the hidden chunks' partial pre-activations in chunk order.
        n = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        z = cuda.local.array(O, dtype=t)
        acc = zero
        if n < N:
            for o in range(O):
                s = zero
                for c in range(chunks):
                    s += zpart[(c * N + n) * O + o]
                z[o] = s
            acc = finish_row(y, d2, n, z)
        if logged:
            block_sum(acc, errpart, cuda.blockIdx.x)

    @_kernel
    def backward(X, W0, W1, d2, g0part, g1part, N, H, rchunk):
        # grid (hidden blocks, row chunks); thread = one hidden unit j over one chunk of rows:
        # recompute a1[n, j], d1[n, j] (with W1 before its update) and accumulate this chunk's
        # gradient of W0[:, j] and W1[j, :]. Consecutive threads write consecutive j: coalesced.
        j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        c = cuda.blockIdx.y
        if j >= H:
            return
        w0 = cuda.local.array(D, dtype=t)
        w1 = cuda.local.array(O, dtype=t)
        g0 = cuda.local.array(D, dtype=t)
        g1 = cuda.local.array(O, dtype=t)
        for k in range(D):
            w0[k] = W0[k * H + j]
            g0[k] = zero
        for o in range(O):
            w1[o] = W1[j * O + o]
            g1[o] = zero
        for n in range(c * rchunk, min(N, (c + 1) * rchunk)):
            s = zero
            for k in range(D):
                s += X[n * D + k] * w0[k]  # same n across the warp: a broadcast load
            a = sig(s)
            back = zero
            for o in range(O):
                dv = d2[n * O + o]
                back += dv * w1[o]
                g1[o] += a * dv
            d1 = back * a * (one - a)
            for k in range(D):
                g0[k] += X[n * D + k] * d1
        for k in range(D):
            g0part[(c * D + k) * H + j] = g0[k]
        for o in range(O):
            g1part[(c * H + j) * O + o] = g1[o]

    @_kernel
    def forward1(X, y, W0, d, errpart, N, logged):
        # 2-layer network, thread = one row: a = s(X[n] @ W0), err, d = err * a * (1 - a).
        n = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        z = cuda.local.array(O, dtype=t)
        acc = zero
        if n < N:
            for o in range(O):
                s = zero
                for k in range(D):
                    s += X[n * D + k] * W0[k * O + o]
                z[o] = s
            acc = finish_row(y, d, n, z)
        if logged:
            block_sum(acc, errpart, cuda.blockIdx.x)

    @_kernel
    def backward1(X, d, g0part, N, rchunk):
        # 2-layer network: grid (weight blocks, row chunks); thread = one W0 entry (k, o) summed
        # over one chunk of rows.
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        c = cuda.blockIdx.y
        if e >= D * O:
            return
        k = e // O
        o = e - k * O
        g = zero
        for n in range(c * rchunk, min(N, (c + 1) * rchunk)):
            g += X[n * D + k] * d[n * O + o]
        g0part[c * D * O + e] = g

    @_kernel
    def update(W0, g0part, W1, g1part, n1, chunks, alpha, errpart, nerr, losses, log_slot, count):
        # thread = one weight entry: W += alpha * (sum of the chunks' partial gradients, in chunk
        # order). Thread 0 also turns the blocks' |err| partials into the logged mean.
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        n0 = W0.size
        if i < n0:
            g = zero
            for c in range(chunks):
                g += g0part[c * n0 + i]
            W0[i] += alpha * g
        elif i < n0 + n1:
            m = i - n0
            g = zero
            for c in range(chunks):
                g += g1part[c * n1 + m]
            W1[m] += alpha * g
        if i == 0 and log_slot >= 0:
            s = zero
            for b in range(nerr):
                s += errpart[b]
            losses[log_slot] = s / count

    return {
        "forward": forward,
        "output": output,
        "backward": backward,
        "forward1": forward1,
        "backward1": backward1,
        "update": update,
    }


# --- Launch configuration -----------------------------------------------------------------------


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _cap_threads(props: dict, default: int | None = None) -> int:
    """THREADS_PER_BLOCK if set, else ``default`` (else the device maximum), within device limits."""
    cap = THREADS_PER_BLOCK or default or props["max_threads_per_block"]
    return max(1, min(int(cap), props["max_threads_per_block"], MAX_BLOCK))


def single_block_threads(sizes: tuple[int, ...], batch: int, props: dict) -> int:
    """Block size of the persistent kernel: enough threads for the widest phase, a warp multiple."""
    D, *hidden, O = sizes
    items = max(hidden[0], batch * O) if hidden else O
    cap = min(_cap_threads(props), SINGLE_MAX_BLOCK)
    return max(1, min(cap, _round_up(items, props["warp"])))


def single_block_steps(sizes: tuple[int, ...], batch: int, threads: int) -> int:
    """Estimated critical path of one iteration of the persistent kernel, in dependent steps."""
    N = batch
    D, *hidden, O = sizes
    if not hidden:
        return -(-O // threads) * N * (2 * D + 3)
    H = hidden[0]
    barrier = 32  # a __syncthreads of a full block costs on the order of tens of cycles
    return -(-H // threads) * N * (2 * D + 3 * O + 2) + -(-(N * O) // threads) * (H + 3) + 2 * barrier


def choose_path(problem: Problem, props: dict | None = None) -> str:
    """'single' (one persistent kernel) or 'multi' (a launch sequence per iteration)."""
    props = props or device_properties()
    threads = single_block_threads(problem.sizes, problem.batch, props)
    steps = single_block_steps(problem.sizes, problem.batch, threads)
    return "single" if steps <= SINGLE_BLOCK_MAX_STEPS else "multi"


def _chunks(length: int, others: int, props: dict) -> tuple[int, int]:
    """Split ``length`` items into chunks so that ``others`` x chunks threads fill the device.

    Returns (chunk size, number of chunks); chunks hold at least MIN_CHUNK items and there are at
    most MAX_CHUNKS of them (the update kernel sums the chunks' partials serially).
    """
    fill = props["multiprocessors"] * props["max_threads_per_sm"]
    want = max(1, -(-fill // max(1, others)))
    count = max(1, min(want, -(-length // MIN_CHUNK), MAX_CHUNKS))
    size = -(-length // count)
    return size, -(-length // size)


# --- Backend protocol ---------------------------------------------------------------------------


def prepare(problem: Problem) -> dict:
    check_dtype(DTYPES, problem, "numba-cuda")
    if len(problem.weights) > 2:
        raise UnsupportedProblem(
            f"numba-cuda supports 1 or 2 weight layers (2- and 3-layer networks), not {len(problem.weights)}"
        )
    reason = available()
    if reason:
        raise UnsupportedProblem(reason)
    props = device_properties()
    t = _nbtype(problem.dtype)
    N, sizes = problem.batch, problem.sizes
    D, O = sizes[0], sizes[-1]
    H = sizes[1] if len(sizes) == 3 else 0
    flat = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=t).ravel())  # noqa: E731
    state = {
        "dtype": problem.dtype,
        "N": N,
        "D": D,
        "H": H,
        "O": O,
        "layers": len(problem.weights),
        "alpha": t(problem.alpha),
        "X": flat(problem.X),
        "y": flat(problem.y),
        "W": [flat(w.copy()) for w in problem.weights],
        "shapes": [w.shape for w in problem.weights],
        "losses": [],
        "props": props,
    }
    path = choose_path(problem, props)
    state["path"] = path
    item = np.dtype(t).itemsize
    if path == "single":
        threads = single_block_threads(sizes, N, props)
        if H:
            words = N * D + N * O + D * H + H * O + 2 * N * H + N * O + threads
        else:
            words = N * D + N * O + D * O + N * O + threads
        shared = words * item
        state["threads"] = threads
        state["shared_bytes"] = shared if shared <= props["max_shared_per_block"] else 0
        if not state["shared_bytes"]:  # too big for shared memory: global scratch
            if H:
                state["scratch"] = [cuda.device_array(n, t) for n in (N * H, N * H, N * O)]
            else:
                state["scratch"] = [cuda.device_array(N * O, t)]
            state["part"] = cuda.device_array(threads, t)
        _single_kernels(problem.dtype)  # build (compile lazily at the first launch)
        return state

    tpb = _cap_threads(props, SIMULATOR_THREADS_PER_BLOCK if SIMULATED else MULTI_THREADS_PER_BLOCK)
    row_blocks = -(-N // tpb)
    state["tpb"] = tpb
    state["row_blocks"] = row_blocks
    state["errpart"] = cuda.device_array(row_blocks, t)
    state["d2"] = cuda.device_array(N * O, t)
    if H:
        hchunk, hchunks = _chunks(H, row_blocks * tpb, props)  # forward: rows x hidden chunks
        hblocks = -(-H // tpb)
        rchunk, rchunks = _chunks(N, hblocks * tpb, props)  # backward: hidden units x row chunks
        state.update(hchunk=hchunk, hchunks=hchunks, hblocks=hblocks, rchunk=rchunk, rchunks=rchunks)
        state["zpart"] = cuda.device_array(max(1, hchunks * N * O) if hchunks > 1 else 1, t)
        state["g0part"] = cuda.device_array(rchunks * D * H, t)
        state["g1part"] = cuda.device_array(rchunks * H * O, t)
    else:
        wblocks = -(-(D * O) // tpb)
        rchunk, rchunks = _chunks(N, wblocks * tpb, props)
        state.update(wblocks=wblocks, rchunk=rchunk, rchunks=rchunks)
        state["g0part"] = cuda.device_array(rchunks * D * O, t)
        state["g1part"] = cuda.device_array(1, t)
    _multi_kernels(problem.dtype, D, O)
    return state


def _run_single(state: dict, iterations: int, log_every: int, losses) -> None:
    k = _single_kernels(state["dtype"])
    N, D, H, O, alpha = state["N"], state["D"], state["H"], state["O"], state["alpha"]
    threads, shared = state["threads"], state["shared_bytes"]
    W = state["W"]
    if H:
        if shared:
            k["single2_shared"][1, threads, 0, shared](
                state["X"], state["y"], W[0], W[1], losses, N, D, H, O, alpha, iterations, log_every
            )
        else:
            a1, d1, d2 = state["scratch"]
            k["single2_global"][1, threads](
                state["X"],
                state["y"],
                W[0],
                W[1],
                a1,
                d1,
                d2,
                state["part"],
                losses,
                N,
                D,
                H,
                O,
                alpha,
                iterations,
                log_every,
            )
    elif shared:
        k["single1_shared"][1, threads, 0, shared](
            state["X"], state["y"], W[0], losses, N, D, O, alpha, iterations, log_every
        )
    else:
        k["single1_global"][1, threads](
            state["X"],
            state["y"],
            W[0],
            state["scratch"][0],
            state["part"],
            losses,
            N,
            D,
            O,
            alpha,
            iterations,
            log_every,
        )


def _run_multi(state: dict, iterations: int, log_every: int, losses) -> None:
    k = _multi_kernels(state["dtype"], state["D"], state["O"])
    N, H, O, alpha, tpb = state["N"], state["H"], state["O"], state["alpha"], state["tpb"]
    X, y, W, d2, errpart = state["X"], state["y"], state["W"], state["d2"], state["errpart"]
    row_blocks, rchunk, rchunks = state["row_blocks"], state["rchunk"], state["rchunks"]
    g0part, g1part = state["g0part"], state["g1part"]
    count = float(N * O)
    sums = tpb * np.dtype(_nbtype(state["dtype"])).itemsize  # block_sum's dynamic shared memory
    n_weights = sum(w.size for w in W)
    update = k["update"][-(-n_weights // tpb), tpb]
    if H:
        hchunk, hchunks = state["hchunk"], state["hchunks"]
        forward = k["forward"][(row_blocks, hchunks), tpb, 0, sums]
        output = k["output"][row_blocks, tpb, 0, sums]
        backward = k["backward"][(state["hblocks"], rchunks), tpb]
        zpart, n1 = state["zpart"], W[1].size
        for it in range(iterations):
            logged = log_every > 0 and it % log_every == 0
            forward(X, y, W[0], W[1], zpart, d2, errpart, N, H, hchunk, logged)
            if hchunks > 1:
                output(y, zpart, d2, errpart, N, hchunks, logged)
            backward(X, W[0], W[1], d2, g0part, g1part, N, H, rchunk)
            slot = it // log_every if logged else -1
            update(W[0], g0part, W[1], g1part, n1, rchunks, alpha, errpart, row_blocks, losses, slot, count)
    else:
        forward1 = k["forward1"][row_blocks, tpb, 0, sums]
        backward1 = k["backward1"][(state["wblocks"], rchunks), tpb]
        for it in range(iterations):
            logged = log_every > 0 and it % log_every == 0
            forward1(X, y, W[0], d2, errpart, N, logged)
            backward1(X, d2, g0part, N, rchunk)
            slot = it // log_every if logged else -1
            update(W[0], g0part, g1part, g1part, 0, rchunks, alpha, errpart, row_blocks, losses, slot, count)


def run(state: dict, iterations: int, log_every: int) -> None:
    """The whole loop on the device; losses stay there; synchronises before returning."""
    count = n_logged(iterations, log_every)
    losses = cuda.device_array(max(count, 1), np.float64)
    switch = sys.getswitchinterval()
    if SIMULATED:  # simulated GPU threads are Python threads: switch between them more often
        sys.setswitchinterval(1e-5)
    try:
        if iterations > 0:
            if state["path"] == "single":
                _run_single(state, iterations, log_every, losses)
            else:
                _run_multi(state, iterations, log_every, losses)
        cuda.synchronize()
    finally:
        if SIMULATED:
            sys.setswitchinterval(switch)
    state["losses"].append((losses, count))


def fetch(state: dict) -> TrainResult:
    """Copy the weights and the logged losses back to the host (once, after the run)."""
    weights = [w.copy_to_host().reshape(shape) for w, shape in zip(state["W"], state["shapes"])]
    parts = [losses.copy_to_host()[:count] for losses, count in state["losses"]]
    losses = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    return TrainResult(weights, losses)
