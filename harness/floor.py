"""The floor: the least time one training iteration can take on this machine, from measured ceilings.

Method (docs/performance.md discusses it with the numbers):

1. ``measure_ceilings`` times three small calibrated Numba kernels (``nogil``), each on one thread
   and on all threads (the same kernel started in ``threads`` Python threads at once, one private
   buffer each), best of several repeats:
   - ``sigmoid_per_s_<dtype>`` -- ``1/(1+exp(-z))`` over an L1/L2-resident buffer with the same fast,
     vectorised exp the Numba backends use (``backends._numba_kernels.fexp``), and
     ``exp_per_s_<dtype>`` -- the exp alone. The sigmoid rate is the one the floor uses: the
     division is as unavoidable as the exp.
   - ``fma_per_s_<dtype>`` -- multiply-adds per second: 16 dependent ``x = x*c + d`` per element of an
     L1-resident array; independent elements give the out-of-order core enough chains to reach
     the FMA ports' peak, with no memory traffic in the way.
   - ``bytes_per_s`` -- memory bandwidth: a STREAM triad ``a = b + s*c`` over arrays far larger than
     the last-level cache, counting 3 x itemsize bytes per element (the STREAM convention).
   Keys ending ``_1t`` are one thread; the others are all ``threads`` threads together.

2. ``floor_seconds`` is pure arithmetic on that dict. For a (N, D, H, O) iteration:
   - compute: the unavoidable work is N*(H+O) sigmoids and about 2*N*H*(D+O) multiply-adds
     (forward X@W0 and a1@W1: N*H*(D+O); backward d2@W1.T, a1.T@d2, X.T@d1: N*H*(D+2O), rounded
     to the same count), and the two share the floating-point ports, so the times add:
     t_compute = N*(H+O)/sigmoid_rate + 2*N*H*(D+O)/fma_rate.
   - memory: the fewest bytes are X and y read once and each weight matrix read and written once:
     itemsize * (N*(D+O) + 2*(D*H + H*O)); t_memory = bytes / bandwidth. (Activations need never
     leave the cache when the loop is fused per row tile, so they are not counted.)
   - latency: one iteration is also a chain of dependent steps (the next iteration reads the
     weights this one updated), which no number of cores or vector lanes shortens: see
     ``critical_path``. t_latency = 2 * sigmoid_latency + depth * fma_latency, from the
     ``sigmoid_latency_s_<dtype>`` and ``fma_latency_s_<dtype>`` ceilings (3. below).
   - floor = max(t_compute, t_memory, t_latency). Throughput bounds the large points, latency the
     small ones (at 4 x 4 the chain is several times the throughput time).
   - more than one thread: the next iteration needs every thread's share of this one (the W0
     gradient sums the rows the threads hold; a split of the hidden units sums the output
     pre-activation across them), so an iteration's chain crosses cores at least once:
     t_latency + handoff, with ``handoff_latency_s`` the measured one-way hand-off of a cache line
     (4. below). The machine's floor is the lesser of the one-thread floor and the all-thread one
     with that chain: where one iteration is shorter than a hand-off, one thread is the faster way.

3. The two latencies are measured on one thread as dependent chains: ``x = sigmoid(x)`` as the
   kernels compute it (``fsigmoid(x)``, the value of ``1 / (1 + fexp(-x))``), and ``x = x*c + d``
   (a multiply-add, whose latency the model also uses for an add: equal on current x86 cores,
   within one cycle on others). A folder whose ceilings predate them (no ``*_latency_*`` keys) gets the throughput
   floor alone, and ``floor_parts`` says so (``latency_s`` None).

4. ``handoff_latency_s`` (machines with more than one thread): two threads play ping-pong on one
   64-bit word, each waiting for its turn with atomic acquire loads and passing it with a release
   store (``measure_handoff``); a round trip is two hand-offs. Folders measured before it was
   have no such key, nor does a measurement in which no ping-pong run finished (another process
   kept taking one of the two cores); their all-thread floor has no hand-off in it.

The floor is optimistic on purpose (perfect overlap, no loop or reduction overhead): a backend
within 2x of it is close to what this machine can do. This module imports Numba (to measure);
``floor_seconds`` touches only the dict.
"""

from __future__ import annotations

import time
from functools import partial

DTYPE_BYTES = {"float64": 8, "float32": 4}
LONG = 100  # all-thread measurements repeat the kernel this many times more per call

_kernels = None


def _build():
    """Compile the measuring kernels once (lazily: importing this module compiles nothing)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numpy as np
    from numba import njit

    # The fast exp the backends use: the shared compiled-kernel library, not a backend module.
    from backends._numba_kernels import EXP_SOURCE, KERNEL_FM, fexp, fsigmoid

    exp_source = EXP_SOURCE  # a cell of the kernels using the exp: their cache keys follow its source

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def sigmoid(buf, src, reps, one):
        _key = exp_source
        for _ in range(reps):
            for i in range(buf.size):
                buf[i] = fsigmoid(src[i])

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def exp(buf, src, reps, one):
        _key = exp_source
        for _ in range(reps):
            for i in range(buf.size):
                buf[i] = fexp(-src[i])

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def fma16(buf, reps, c, d):
        for _ in range(reps):
            for i in range(buf.size):
                x = buf[i]
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                x = x * c + d
                buf[i] = x

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def sigmoid_chain(x, reps, one):
        _key = exp_source
        for _ in range(reps):
            x = fsigmoid(x)  # x -> about 0.659: no overflow, no subnormals
        return x

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def fma_chain(x, reps, c, d):
        for _ in range(reps):
            x = x * c + d
            x = x * c + d
            x = x * c + d
            x = x * c + d
        return x

    @njit(cache=True, nogil=True, fastmath=KERNEL_FM, error_model="numpy")
    def triad(a, b, c, s, lo, hi):
        for i in range(lo, hi):
            a[i] = b[i] + s * c[i]

    from backends._numba_atomics import load_acquire, store_release

    @njit(nogil=True)
    def pingpong(flags, me, rounds, patience):
        """Player ``me`` (0 or 1) of a ping-pong on flags[0]: wait for its turn, pass it on. Gives up
        (and tells the other through flags[1]) after ``patience`` polls of one turn: the other
        thread was descheduled, and the run measures the scheduler, not the cores."""
        for r in range(rounds):
            turn = 2 * r + me
            polls = 0
            while load_acquire(flags, 0) != turn:
                polls += 1
                if polls > patience or load_acquire(flags, 1) != 0:
                    store_release(flags, 1, 1)
                    return False
            store_release(flags, 0, turn + 1)
        return True

    _kernels = dict(
        np=np, sigmoid=sigmoid, exp=exp, fma16=fma16, triad=triad, sigmoid_chain=sigmoid_chain, fma_chain=fma_chain,
        pingpong=pingpong,
    )  # fmt: skip
    return _kernels


def _on_threads(fns):
    """Run the nogil kernels ``fns`` (one per thread) at once; returns when all are done."""
    import threading

    workers = [threading.Thread(target=f) for f in fns]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _best(fn, seconds: float, repeats_min: int = 3) -> float:
    """Best wall time of ``fn()`` over repeats filling about ``seconds`` (at least repeats_min)."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    n = 0
    while n < repeats_min or time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        n += 1
    return best


def measure_ceilings(seconds_budget: float = 2.0) -> dict:
    """Measure sigmoid/exp, multiply-add and memory-bandwidth ceilings here (see module doc)."""
    import numba

    k = _build()
    np = k["np"]
    threads = numba.get_num_threads()
    # 12 compute measurements, 4 latency ones, 2 bandwidth ones (counted double) and the hand-off
    # share the budget
    slot = max(seconds_budget, 0.2) / 21
    out: dict = {"threads": threads, "method": "see harness/floor.py"}
    elems = 4096  # 32 KiB of float64: L1-resident
    for dtype in ("float64", "float32"):
        t = np.dtype(dtype).type
        one = t(1)
        src = np.linspace(-8, 8, elems).astype(dtype)
        bufs = np.empty((threads, elems), dtype)
        reps = 10  # ~0.1 ms a call: many calls per slot, so the best one is an undisturbed one
        for name in ("sigmoid", "exp"):
            kern = k[name]
            kern(bufs[0], src, 1, one)
            out[f"{name}_per_s_{dtype}_1t"] = elems * reps / _best(partial(kern, bufs[0], src, reps, one), slot)
            # All threads: calls long enough (~10 ms) that starting the threads costs nothing.
            calls = [partial(kern, b, src, reps * LONG, one) for b in bufs]
            out[f"{name}_per_s_{dtype}"] = threads * elems * reps * LONG / _best(partial(_on_threads, calls), slot, 2)
        c, d = t(0.5), t(0.25)  # x -> 0.5x + 0.25 converges to 0.5: no overflow, no subnormals
        fbufs = np.full((threads, 1024), 0.5, dtype)
        reps = 40
        k["fma16"](fbufs[0], 1, c, d)
        out[f"fma_per_s_{dtype}_1t"] = 16 * 1024 * reps / _best(partial(k["fma16"], fbufs[0], reps, c, d), slot)
        calls = [partial(k["fma16"], b, reps * LONG, c, d) for b in fbufs]
        out[f"fma_per_s_{dtype}"] = threads * 16 * 1024 * reps * LONG / _best(partial(_on_threads, calls), slot, 2)
        chain = 20000  # dependent steps per call (~0.1-1 ms)
        k["sigmoid_chain"](t(0.5), 1, one)
        out[f"sigmoid_latency_s_{dtype}"] = _best(partial(k["sigmoid_chain"], t(0.5), chain, one), slot) / chain
        k["fma_chain"](t(0.5), 1, c, d)
        out[f"fma_latency_s_{dtype}"] = _best(partial(k["fma_chain"], t(0.5), chain // 4, c, d), slot) / chain
    n = 8 << 20  # 3 arrays x 64 MiB: well past the 48 MiB L3 here
    a, b, c = np.zeros(n), np.ones(n), np.ones(n)
    k["triad"](a, b, c, 3.0, 0, 1024)
    parts = [
        lambda lo=lo: k["triad"](a, b, c, 3.0, lo * n // threads, (lo + 1) * n // threads)
        for lo in range(threads)
    ]
    out["bytes_per_s_1t"] = 24 * n / _best(lambda: k["triad"](a, b, c, 3.0, 0, n), 2 * slot)
    out["bytes_per_s"] = 24 * n / _best(lambda: _on_threads(parts), 2 * slot)
    if threads > 1:
        handoff = measure_handoff(slot)
        if handoff is not None:
            out["handoff_latency_s"] = handoff
    return out


def measure_handoff(seconds: float, rounds: int = 50000, patience: int = 1 << 20) -> float | None:
    """One-way latency of handing a cache line to another core: two threads play ping-pong on one
    int64 (atomic acquire loads, release stores) for ``rounds`` round trips, and a round trip is
    two hand-offs; best of the runs filling ``seconds``. A run's time includes starting the two
    threads (tens of microseconds against ~6 ms of 50000 round trips here: the hand-off reads
    about 1% long, which can only raise the floor). None when no run finished: each gives up when
    a turn takes more than ``patience`` polls (the other thread is not running)."""
    k = _build()
    flags = k["np"].zeros(8, k["np"].int64)  # one cache line: flags[0] the turn, flags[1] give up
    k["pingpong"](flags, 0, 1, patience)  # compile (one round, one player: the turn is its own)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    tries = 0
    while tries < 3 or (time.perf_counter() < deadline and tries < 100):
        flags[:] = 0
        t = time.perf_counter()
        _on_threads([partial(k["pingpong"], flags, me, rounds, patience) for me in (0, 1)])
        elapsed = time.perf_counter() - t
        if flags[1] == 0:
            best = min(best, elapsed)
        tries += 1
    return best / (2 * rounds) if best < float("inf") else None


def best_ceiling(key: str, a: float, b: float) -> float:
    """The better of two measurements of ceiling ``key``: the higher rate, the shorter latency."""
    return min(a, b) if "_latency_" in key else max(a, b)


def better_ceilings(first: dict, second: dict) -> dict:
    """Two measurements of the ceilings merged: for each measured one (a positive float) the better
    where both have it, the one measurement's where only one does (a hand-off that finished in
    one of them only; a ceiling a newer harness measured); every other entry is ``first``'s where
    it has one, else ``second``'s."""
    merged = {**second, **first}
    for key, value in second.items():
        if _is_rate(value):
            merged[key] = best_ceiling(key, value, first[key]) if _is_rate(first.get(key)) else value
    return merged


def _is_rate(value) -> bool:
    return isinstance(value, float) and value > 0


def _levels(n: int) -> int:
    """Depth of a pairwise sum of n terms: ceil(log2(n))."""
    return max(int(n) - 1, 0).bit_length()


def critical_path(batch, hidden, inputs=3, outputs=1) -> dict:
    """The dependent chain of one 3-layer iteration, in sigmoids and multiply-add (or add) steps.

    From the weights the last iteration wrote back to the weights this one writes, along the
    longest path (through W0), every sum taken as a pairwise tree (the least depth any order
    could have; a kernel summing serially has a longer chain):

    - hidden pre-activation z1 = x . W0[:, h]: one multiply, lg D adds;
    - a1 = sigmoid(z1): one sigmoid;
    - output pre-activation z2 = a1 . W1[:, o]: one multiply, lg H adds;
    - a2 = sigmoid(z2): one sigmoid;
    - output delta (y - a2) * a2 * (1 - a2): three steps (1 - a2, the product, times err);
    - hidden delta (d2 . W1[h, :]) * a1 * (1 - a1): one multiply, lg O adds, one multiply
      (a1 * (1 - a1) is ready by then, off the chain);
    - gradient of W0, X.T @ d1: one multiply, lg N adds;
    - the update W0 += alpha * g: one multiply-add.

    lg n = ceil(log2(n)). Returns {"sigmoids": 2, "steps": ...}."""
    N, H, D, O = batch, hidden, inputs, outputs  # noqa: E741
    steps = (1 + _levels(D)) + (1 + _levels(H)) + 3 + (2 + _levels(O)) + (1 + _levels(N)) + 1
    return {"sigmoids": 2, "steps": steps}


def latency_seconds(batch, hidden, dtype, ceilings, inputs=3, outputs=1) -> float | None:
    """Least seconds the critical path of one iteration takes (None: no latency ceilings)."""
    sig, fma = ceilings.get(f"sigmoid_latency_s_{dtype}"), ceilings.get(f"fma_latency_s_{dtype}")
    if not sig or not fma:
        return None
    path = critical_path(batch, hidden, inputs, outputs)
    return path["sigmoids"] * sig + path["steps"] * fma


def floor_parts(batch, hidden, dtype, ceilings, inputs=3, outputs=1, one_thread=False) -> dict:
    """The floor's ingredients: work counts, bytes, and the compute, memory and latency times (pure
    arithmetic); ``latency_s`` is None for ceilings measured before the latencies were."""
    sfx = "_1t" if one_thread else ""
    N, H, D, O = batch, hidden, inputs, outputs  # noqa: E741
    sigmoids = N * (H + O)
    macs = 2 * N * H * (D + O)
    nbytes = DTYPE_BYTES[dtype] * (N * (D + O) + 2 * (D * H + H * O))
    t_compute = (
        sigmoids / ceilings[f"sigmoid_per_s_{dtype}{sfx}"] + macs / ceilings[f"fma_per_s_{dtype}{sfx}"]
    )
    t_memory = nbytes / ceilings[f"bytes_per_s{sfx}"]
    t_latency = latency_seconds(N, H, dtype, ceilings, D, O)
    floor = max(t_compute, t_memory, t_latency or 0.0)
    several = not one_thread and ceilings.get("threads", 1) > 1 and t_latency is not None
    handoff = ceilings.get("handoff_latency_s") if several else None  # None: not in this floor
    if handoff:
        # More than one thread: the chain crosses cores at least once an iteration (the W0
        # gradient sums rows, or the output pre-activation hidden units, held by two threads).
        # The floor is the better of one thread and all of them with that hand-off.
        alone = floor_parts(N, H, dtype, ceilings, D, O, one_thread=True)["floor_s"]
        floor = min(alone, max(t_compute, t_memory, t_latency + handoff))
    return {
        "sigmoids": sigmoids,
        "macs": macs,
        "bytes": nbytes,
        "compute_s": t_compute,
        "memory_s": t_memory,
        "latency_s": t_latency,
        "handoff_s": handoff,
        "floor_s": floor,
    }


def floor_seconds(batch, hidden, dtype, ceilings, inputs=3, outputs=1, one_thread=False) -> float:
    """Least seconds one training iteration can take: max(compute, memory, latency time).

    ``one_thread=True`` uses the single-thread ceilings (the floor for a serial backend);
    the default is the floor for the machine: the lesser of that and the all-thread floor, whose
    chain includes one hand-off between cores (without a ``handoff_latency_s`` ceiling: the
    all-thread floor alone, as before that ceiling was measured).
    """
    return floor_parts(batch, hidden, dtype, ceilings, inputs, outputs, one_thread)["floor_s"]


if __name__ == "__main__":
    import json

    ceil = measure_ceilings()
    print(json.dumps({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in ceil.items()}, indent=1))
    for n, h in ((4, 4), (64, 64), (4096, 1024), (65536, 4096)):
        for dt in ("float64", "float32"):
            parts = floor_parts(n, h, dt, ceil, one_thread=True)
            print(
                f"N={n} H={h} {dt}: floor {floor_seconds(n, h, dt, ceil) * 1e6:.4g} us (all threads), "
                f"{parts['floor_s'] * 1e6:.4g} us (one thread: compute {parts['compute_s'] * 1e6:.3g}, "
                f"memory {parts['memory_s'] * 1e6:.3g}, latency {parts['latency_s'] * 1e6:.3g})"
            )
