"""The GPU floor: the least time one training iteration can take on this GPU, from measured ceilings.

``measure`` runs small probe kernels (numba-cuda by default) on the current device, each timed
with a synchronisation before the clock is read, best of several runs:

- ``gpu_sigmoid_per_s_<dtype>``: ``1/(1+exp(-z))`` per second over every SM (8 independent
  chains of dependent sigmoids per thread, as many threads as are resident);
- ``gpu_fma_per_s_<dtype>``: multiply-adds per second over every SM (8 chains per thread);
- ``gpu_sigmoid_latency_s_<dtype>``: one dependent sigmoid in one thread (the critical path);
- ``gpu_bytes_per_s``: device memory bandwidth, a STREAM triad over arrays far larger than L2;
- ``gpu_block_sync_s``: one ``cuda.syncthreads()`` in a block of 256 threads;
- ``gpu_grid_sync_s``: one ``cuda.cg.this_grid().sync()`` with one block of 256 threads per SM
  (the grid path's layout at mid sizes);
- ``gpu_launch_s``: one empty kernel launch from Python, back to back (asynchronous).

``gpu_floor_seconds`` is pure arithmetic on those figures, for an (N, D, H, O) iteration:

- compute: N*(H+O) sigmoids and 2*N*H*(D+O) multiply-adds share the SMs, so the times add;
- memory: X and y read once, every weight matrix read and written once;
- dependencies: an iteration has two all-to-all dependencies (a row's output needs every hidden
  unit; a weight's gradient needs every row), each at least a dependent sigmoid and a barrier:
  a block barrier while one block can hold the iteration (N*H <= ``ONE_BLOCK_PAIRS``), a grid
  sync beyond that;
- floor = max(compute, memory, dependencies). Optimistic on purpose (perfect overlap).

    python -m harness.gpu_floor [--json] [--compiler numba-cuda-mlir]

Needs a real GPU: under the CUDA simulator it refuses (exit 2), since the simulator's timings are
Python's, not the hardware's.
"""

# ruff: noqa: E741

from __future__ import annotations

import argparse
import json
import math
import sys
import time

DTYPE_BYTES = {"float64": 8, "float32": 4}
#: (row, hidden unit) pairs one block holds with one pair per thread: above it, an iteration's
#: reductions cross blocks and the cheapest barrier between blocks is a grid sync.
ONE_BLOCK_PAIRS = 1024
KEYS = ("gpu_bytes_per_s", "gpu_block_sync_s", "gpu_grid_sync_s", "gpu_launch_s") + tuple(
    f"gpu_{what}_{dtype}" for dtype in ("float64", "float32")
    for what in ("sigmoid_per_s", "fma_per_s", "sigmoid_latency_s")
)  # fmt: skip


def gpu_floor_parts(batch, hidden, dtype, ceilings, inputs=3, outputs=1) -> dict:
    """The GPU floor's ingredients and the floor itself (seconds per iteration)."""
    N, H, D, O = batch, hidden, inputs, outputs
    sigmoids = N * (H + O)
    macs = 2 * N * H * (D + O)
    nbytes = DTYPE_BYTES[dtype] * (N * (D + O) + 2 * (D * H + H * O))
    compute = sigmoids / ceilings[f"gpu_sigmoid_per_s_{dtype}"] + macs / ceilings[f"gpu_fma_per_s_{dtype}"]
    memory = nbytes / ceilings["gpu_bytes_per_s"]
    barrier = ceilings["gpu_block_sync_s"] if N * max(H, O) <= ONE_BLOCK_PAIRS else ceilings["gpu_grid_sync_s"]
    dependencies = 2 * (ceilings[f"gpu_sigmoid_latency_s_{dtype}"] + barrier)
    return {"compute_s": compute, "memory_s": memory, "dependencies_s": dependencies,
            "floor_s": max(compute, memory, dependencies)}  # fmt: skip


def gpu_floor_seconds(batch, hidden, dtype, ceilings, inputs=3, outputs=1) -> float:
    return gpu_floor_parts(batch, hidden, dtype, ceilings, inputs, outputs)["floor_s"]


def has_gpu_ceilings(ceilings: dict | None) -> bool:
    return bool(ceilings) and all(isinstance(ceilings.get(k), (int, float)) for k in KEYS)


cuda = None  # the measuring compiler's ``cuda`` module, bound by _probes (a module global, as the
#             simulator needs: it runs a kernel by swapping this global for its per-thread fake)


def _probes(module):
    """The probe kernels, compiled lazily by ``module`` (numba-cuda's or numba-cuda-mlir's ``cuda``)."""
    global cuda
    cuda = module

    def chains(out, reps, one, scale):
        # starting values come from ``out``, so every chain has the array's dtype
        i = cuda.grid(1)
        a0 = out[i]
        a1, a2, a3, a4, a5, a6, a7 = a0 + one, a0 - one, a0 + scale, a0 - scale, -a0, a0 * scale, a0 + a0
        for _ in range(reps):
            a0 = one / (one + math.exp(-a0))
            a1 = one / (one + math.exp(-a1))
            a2 = one / (one + math.exp(-a2))
            a3 = one / (one + math.exp(-a3))
            a4 = one / (one + math.exp(-a4))
            a5 = one / (one + math.exp(-a5))
            a6 = one / (one + math.exp(-a6))
            a7 = one / (one + math.exp(-a7))
        out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7

    def fmas(out, reps, c, d):
        i = cuda.grid(1)
        a0 = out[i]
        a1, a2, a3, a4, a5, a6, a7 = a0 + d, a0 - d, a0 + c, a0 - c, -a0, a0 * c, a0 + a0
        for _ in range(reps):  # x -> 0.5 x + 0.25 converges to 0.5: no overflow, no subnormals
            a0 = a0 * c + d
            a1 = a1 * c + d
            a2 = a2 * c + d
            a3 = a3 * c + d
            a4 = a4 * c + d
            a5 = a5 * c + d
            a6 = a6 * c + d
            a7 = a7 * c + d
        out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7

    def latency(out, reps, one):
        a = out[0]
        for _ in range(reps):
            a = one / (one + math.exp(-a))
        out[0] = a

    def triad(a, b, c, s):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, a.size, stride):
            a[i] = b[i] + s * c[i]

    def block_sync(out, reps):
        for _ in range(reps):
            # waits for: every thread of the block (the barrier is what is timed)
            cuda.syncthreads()
        out[cuda.threadIdx.x] = reps

    def grid_sync(out, reps):
        grid = cuda.cg.this_grid()
        for _ in range(reps):
            # waits for: every thread of the grid (the grid sync is what is timed)
            grid.sync()
        out[cuda.grid(1)] = reps

    def empty():
        pass

    return {name: module.jit(fn) for name, fn in (("chains", chains), ("fmas", fmas), ("latency", latency),
            ("triad", triad), ("block_sync", block_sync), ("grid_sync", grid_sync), ("empty", empty))}  # fmt: skip


def _best(fn, sync, runs: int = 5) -> float:
    fn()  # compile and warm up
    sync()
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure(compiler: str = "numba-cuda") -> dict:
    """Every ``KEYS`` figure for the current device (see the module docstring)."""
    import numpy as np

    from backends._cuda_compiler import import_cuda

    cu = import_cuda(compiler)
    k = _probes(cu)
    dev = cu.get_current_device()
    sms = int(dev.MULTIPROCESSOR_COUNT)
    per_sm = int(dev.MAX_THREADS_PER_MULTIPROCESSOR) // 256
    sync = cu.synchronize
    out: dict = {"gpu_method": "harness/gpu_floor.py", "gpu_compiler": compiler}
    threads = sms * per_sm * 256
    for dtype in ("float64", "float32"):
        t = np.dtype(dtype).type
        buf = cu.to_device(np.linspace(-2, 2, threads).astype(dtype))
        reps = 2000
        seconds = _best(lambda: k["chains"][sms * per_sm, 256](buf, reps, t(1), t(0.25)), sync)  # noqa: B023
        out[f"gpu_sigmoid_per_s_{dtype}"] = 8 * reps * threads / seconds
        seconds = _best(lambda: k["fmas"][sms * per_sm, 256](buf, 20 * reps, t(0.5), t(0.25)), sync)  # noqa: B023
        out[f"gpu_fma_per_s_{dtype}"] = 8 * 20 * reps * threads / seconds
        one = cu.to_device(np.zeros(1, t))
        seconds = _best(lambda: k["latency"][1, 1](one, reps, t(1)), sync)  # noqa: B023
        out[f"gpu_sigmoid_latency_s_{dtype}"] = seconds / reps
    n = 1 << 25  # 3 arrays x 256 MiB of float64: far past any L2
    a, b, c = (cu.to_device(np.full(n, v)) for v in (0.0, 1.0, 2.0))
    out["gpu_bytes_per_s"] = 24 * n / _best(lambda: k["triad"][sms * per_sm, 256](a, b, c, 3.0), sync)
    reps = 100_000
    flags = cu.device_array(sms * 256, np.int64)
    out["gpu_block_sync_s"] = _best(lambda: k["block_sync"][1, 256](flags, reps), sync) / reps
    reps = 10_000
    out["gpu_grid_sync_s"] = _best(lambda: k["grid_sync"][sms, 256](flags, reps), sync) / reps
    launches = 2000

    def many() -> None:
        launch = k["empty"][1, 1]
        for _ in range(launches):
            launch()

    out["gpu_launch_s"] = _best(many, sync, 3) / launches
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gpu_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--compiler", choices=("numba-cuda", "numba-cuda-mlir"), default="numba-cuda")
    parser.add_argument("--json", action="store_true", help="the ceilings as one JSON object")
    args = parser.parse_args(argv)
    from backends._cuda_host import simulator_on

    if simulator_on():
        parser.exit(2, "error: GPU ceilings need a real GPU: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) times Python\n")
    try:
        from backends._cuda_compiler import import_cuda

        if not import_cuda(args.compiler).is_available():
            parser.exit(2, f"error: no CUDA GPU found ({args.compiler}: cuda.is_available() is False)\n")
        ceilings = measure(args.compiler)
    except ImportError as exc:
        parser.exit(2, f"error: {args.compiler} is not installed ({exc})\n")
    if args.json:
        print(json.dumps(ceilings))
        return 0
    for key in KEYS:
        print(f"{key:<32} {ceilings[key]:.4g}")
    for n, h in ((4, 4), (1024, 1024), (65536, 4096)):
        for dtype in ("float64", "float32"):
            parts = gpu_floor_parts(n, h, dtype, ceilings)
            print(f"N={n} H={h} {dtype}: floor {parts['floor_s'] * 1e6:.3f} us "
                  f"(compute {parts['compute_s'] * 1e6:.3f}, memory {parts['memory_s'] * 1e6:.3f}, "
                  f"dependencies {parts['dependencies_s'] * 1e6:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
