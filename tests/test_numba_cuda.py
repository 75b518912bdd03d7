"""CUDA-specific checks of the `numba-cuda` backend: its declarations, the launch plan, all three
launch paths, both dtypes, awkward sizes, determinism and launch counts.

`make test` runs these under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where every GPU thread
is a Python thread and a cooperative grid is one block: the runs here are short and the blocks
tiny (a small run of every launch path stays in the fast tier; the full published seed runs are
marked slow). On a machine with a real GPU the same tests run on the device.
The plan tests need no CUDA at all: they use an H100's properties (``_cuda_plan.H100``).
"""

# ruff: noqa: E741

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import backends
from backends import _cuda_plan
from backends._cuda_plan import H100, plan
from backends.base import Backend, Problem, UnsupportedProblem, train
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled, xor2, xor3
from tests.helpers import XOR2_UPDATES, assert_xor2_published, assert_xor3_published, usable

backend = backends.load("numba-cuda")
try:
    cuda = backend.cuda
except ImportError:
    pytest.skip("numba-cuda is not installed", allow_module_level=True)
WHY = backend.available()
needs_cuda = pytest.mark.skipif(WHY is not None, reason=f"numba-cuda unavailable: {WHY}")


@pytest.fixture(autouse=True)
def _simulator_on_one_core():
    """Under the simulator, run each test's threads on one core of this process's set.

    The simulator runs a block as one Python thread per GPU thread, handing the GIL from thread to
    thread at every barrier, while its launching thread polls them. When those threads may move
    between cores, every hand-off is a cross-core wake-up: with the other core busy (as it is under
    pytest-xdist) the simulated xor3 run measured 41 s, and 21 s with the test on one core. The
    threads the simulator starts inherit the launching thread's core; an xdist worker takes the
    core of its own number, so two workers simulating at once do not share one. What the kernels
    compute is not changed; on a real GPU (not simulated) nothing is pinned.
    """
    if not backend.SIMULATED or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)  # 0: this thread, whose affinity new threads inherit
    cores = sorted(before)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    os.sched_setaffinity(0, {cores[int(worker) % len(cores)] if worker.isdigit() else cores[0]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


#: The sweep's grid (preset gpu): every point must get a one-launch path on an H100.
GPU_BATCHES = (4, 16, 64, 256, 1024, 4096, 16384, 65536)
GPU_HIDDEN = (4, 64, 1024, 4096)

# A device small enough that the grid and multi paths split the hidden units and the rows into
# several chunks even for the tiny problems the simulator can afford (valid on a real GPU too).
SMALL_DEVICE = {
    "max_threads_per_block": 4,
    "multiprocessors": 4,
    "max_threads_per_sm": 16,
    "max_blocks_per_sm": 4,
    "max_shared_per_block": 48 * 1024,
    "max_shared_per_sm": 48 * 1024,
    "warp": 1,
    "cooperative": True,
}


def use_device(monkeypatch, props: dict) -> None:
    monkeypatch.setattr(backend, "device_properties", lambda: props)


@pytest.fixture(params=["block", "grid", "multi"])
def path(request, monkeypatch):
    """Force one launch path (``_cuda_plan.FORCE_PATH``)."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", request.param)
    return request.param


def agree(problem: Problem, iterations: int, log_every: int, expect_path: str | None = None):
    state = backend.prepare(problem)
    if expect_path:
        assert state["path"] == expect_path
    backend.run(state, iterations, log_every)
    result = backend.fetch(state)
    reference = reference_result(problem, iterations, log_every)
    error = max_relative_error(result, reference)
    assert error <= TOLERANCE[problem.dtype], f"{problem.name} {problem.dtype}: relative error {error:.3g}"
    assert all(w.dtype == problem.X.dtype for w in result.weights)
    assert result.losses.dtype == np.float64
    return state, result


# --- the launch plan: pure functions of sizes and device properties, no CUDA needed --------------


def test_declarations():
    nc, mlir = backends.info("numba-cuda"), backends.info("numba-cuda-mlir")
    assert issubclass(nc, Backend) and issubclass(mlir, nc)
    assert (nc.NAME, nc.PACKAGE, nc.DEVICE, nc.COLOUR, nc.MARKER, nc.FAMILY, nc.LEVEL) == (
        "numba-cuda", "numba-cuda", "gpu", "#009E73", "^", "numba", "tuned")  # fmt: skip
    assert nc.SUMMARY == "Numba @cuda.jit kernels on an NVIDIA GPU, compiled by numba-cuda"
    assert (mlir.NAME, mlir.PACKAGE, mlir.DEVICE, mlir.COLOUR, mlir.MARKER, mlir.FAMILY, mlir.LEVEL) == (
        "numba-cuda-mlir", "numba-cuda-mlir", "gpu", "#44AA99", "<", "numba", "tuned")  # fmt: skip
    assert mlir.SUMMARY == "the numba-cuda kernels compiled by numba-cuda-mlir"
    assert nc.DTYPES == mlir.DTYPES == ("float64", "float32")


def test_instance_attributes():
    assert backend is backends.load("numba-cuda")
    assert backend.runs_on() == "gpu"
    assert isinstance(backend.SIMULATED, bool) and backend.COMPILES is not backend.SIMULATED
    assert backend.SIMULATED == _simulator()  # NUMBA_ENABLE_CUDASIM, read when constructed
    assert backend.version and backend.version != "unknown"
    mlir = backends.load("numba-cuda-mlir")
    assert mlir.SIMULATED is False and mlir.COMPILES is True and mlir.runs_on() == "gpu"


def _simulator() -> bool:
    from backends._cuda_host import simulator_on

    return simulator_on()


def test_construction_imports_no_compiler():
    """Loading both backends and reading their declarations imports neither CUDA compiler."""
    code = (
        "import sys, backends\n"
        "for name in ('numba-cuda', 'numba-cuda-mlir'):\n"
        "    b = backends.load(name); b.NAME, b.SIMULATED, b.COMPILES, b.version, b.runs_on()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'numba_cuda_mlir')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_one_shared_memory_layout():
    """The plan sizes shared memory with the same layout functions the kernels carve it with."""
    for N, D, H, O, T in ((4, 3, 4, 1, 32), (9, 5, 6, 2, 8), (13, 5, 0, 2, 8)):
        offsets = _cuda_plan.block_shared(N, D, H, O, T)
        assert len(offsets) == len(_cuda_plan.BLOCK_SHARED) and offsets[0] == 0
        sizes = dict(zip(_cuda_plan.BLOCK_SHARED, np.diff(offsets)))
        W0 = D * H if H else D * O
        assert sizes == {"X": N * D, "y": N * O, "W0": W0, "W1": H * O, "W1b": H * O, "a1": N * H, "d": N * O, "part": T}
        sizes_arg = (D, H, O) if H else (D, O)
        assert _cuda_plan.block_words(sizes_arg, N, T) == offsets[-1]
        grid = _cuda_plan.grid_shared(D, O, T)
        assert dict(zip(_cuda_plan.GRID_SHARED, np.diff(grid))) == {"sums": T, "d2": T * O, "red": T * (D + O)}
        assert _cuda_plan.grid_words(sizes_arg, T) == grid[-1]


def test_unavailable_reason_names_the_simulator(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    reason = backend.available()
    assert "no CUDA GPU" in reason and "NUMBA_ENABLE_CUDASIM=1" in reason


@pytest.mark.parametrize("problem", [xor3, xor2], ids=["xor3", "xor2"])
def test_seed_problems_are_one_warp_on_an_h100(problem):
    p = problem()
    layout = plan(p.sizes, p.batch, 8, H100)
    assert layout.path == "block" and layout.threads == 32 and layout.blocks == 1
    assert 0 < layout.shared_bytes <= H100["max_shared_per_block"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_gpu_sweep_point_is_one_launch_on_an_h100(dtype):
    item = np.dtype(dtype).itemsize
    for N in GPU_BATCHES:
        for H in GPU_HIDDEN:
            layout = plan((3, H, 1), N, item, H100)
            assert layout.path in ("block", "grid"), (N, H, layout)
            assert layout.launches_per_iteration == 0
            assert layout.threads <= H100["max_threads_per_block"]
            assert layout.shared_bytes <= H100["max_shared_per_block"]
            if layout.path == "grid":
                # every block resident (a grid sync cannot deadlock), and no block without work
                assert layout.blocks <= _cuda_plan.resident_blocks(H100, layout.threads, layout.shared_bytes)
                assert layout.blocks <= max(layout.forward_items, layout.backward_items, layout.update_blocks)
                assert layout.hchunk * layout.hchunks >= H and layout.rchunk * layout.rchunks >= N
                assert layout.rchunks <= _cuda_plan.MAX_CHUNKS


def test_path_and_grid_follow_the_problem_size():
    small, mid, large = (plan((3, H, 1), N, 8, H100) for N, H in ((4, 4), (1024, 1024), (65536, 4096)))
    assert small.path == "block"
    # mid-size work: at most one block per SM (the cheapest grid sync), nearly every SM busy
    assert mid.path == "grid" and 0.9 * H100["multiprocessors"] <= mid.blocks <= H100["multiprocessors"]
    # large work: as many blocks as are resident, to hide latency
    assert large.path == "grid" and large.blocks == _cuda_plan.resident_blocks(H100, large.threads, large.shared_bytes)
    assert large.blocks > mid.blocks


def test_the_compiled_kernels_occupancy_caps_the_grid():
    free = plan((3, 4096, 1), 65536, 8, H100)
    capped = plan((3, 4096, 1), 65536, 8, H100, cooperative_blocks=264)
    assert free.blocks > 264 and capped.blocks == 264
    # the work is still cut for the full grid: capped blocks take several items each
    assert capped.backward_items == free.backward_items


def test_a_device_without_cooperative_launch_takes_the_phase_launches():
    layout = plan((3, 1024, 1), 1024, 8, {**H100, "cooperative": False})
    assert layout.path == "multi" and layout.launches_per_iteration == 3
    assert layout.forward_items * layout.threads >= 1024 and layout.backward_items >= 1


def test_resident_blocks_respect_threads_and_shared_memory():
    assert _cuda_plan.resident_blocks(H100, 256, 0) == 132 * 8
    assert _cuda_plan.resident_blocks(H100, 1024, 0) == 132 * 2
    assert _cuda_plan.resident_blocks(H100, 256, 100 * 1024) == 132 * 2  # 228 KiB / 100 KiB


def test_too_large_for_shared_memory_goes_to_global_scratch():
    props = {**H100, "max_shared_per_block": 256}
    assert plan((3, 4, 1), 4, 8, props).shared_bytes == 0


def test_forced_paths(monkeypatch):
    """``FORCE_PATH`` overrides the cost model (for probes and tests); "grid" needs cooperative launch."""
    for N, H in ((4, 4), (1024, 1024)):
        for force in ("block", "grid", "multi"):
            monkeypatch.setattr(_cuda_plan, "FORCE_PATH", force)
            assert plan((3, H, 1), N, 8, H100).path == force
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "grid")
    with pytest.raises(ValueError, match="cooperative launch"):
        plan((3, 4, 1), 4, 8, {**H100, "cooperative": False})
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "fast")
    with pytest.raises(ValueError, match="FORCE_PATH"):
        plan((3, 4, 1), 4, 8, H100)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_switch_is_the_cheaper_predicted_path(dtype):
    """Block or grid: whichever ``predicted_seconds`` says is faster on an H100, at every sweep point."""
    item = np.dtype(dtype).itemsize
    paths = {}
    for N in GPU_BATCHES:
        for H in GPU_HIDDEN:
            block = _cuda_plan.predicted_seconds((3, H, 1), N, item, H100, "block")
            grid = _cuda_plan.predicted_seconds((3, H, 1), N, item, H100, "grid")
            paths[N, H] = plan((3, H, 1), N, item, H100).path
            assert paths[N, H] == ("block" if block <= grid else "grid"), (N, H, block, grid)
    # the seed shape and small problems stay on one block; 256 x 4, which the old constant
    # threshold (2048 steps: 2010) kept on one block, is predicted faster on the grid
    assert paths[4, 4] == paths[64, 64] == "block"
    assert paths[256, 4] == paths[256, 64] == paths[1024, 1024] == paths[65536, 4096] == "grid"


def test_predicted_seconds_use_the_h100_figures():
    """The cost model's pieces: the measured grid syncs, three per grid iteration, and launches."""
    sync = _cuda_plan.grid_sync_seconds
    assert sync(132, 132) == pytest.approx(1.48e-6) and sync(64, 132) == pytest.approx(1.48e-6)
    assert sync(264, 132) == pytest.approx(2.20e-6) and sync(528, 132) == pytest.approx(3.32e-6)
    assert sync(396, 132) == pytest.approx((2.20e-6 + 3.32e-6) / 2)
    predict = _cuda_plan.predicted_seconds
    for N, H in ((4, 4), (1024, 1024), (65536, 4096)):
        grid = predict((3, H, 1), N, 8, H100, "grid")
        blocks = plan((3, H, 1), N, 8, {**H100}, None)
        assert grid > 3 * sync(max(blocks.blocks, 1), 132)
        # the multi path pays three launches from Python instead of three grid syncs
        assert predict((3, H, 1), N, 8, H100, "multi") > 3 * _cuda_plan.LAUNCH_SECONDS
    # the block path grows with the work of its one block; 4 x 4 is under a microsecond
    assert predict((3, 4, 1), 4, 8, H100, "block") < 1e-6 < predict((3, 64, 1), 1024, 8, H100, "block")
    # the occupancy cap: one block per SM (no launch bound) against two ((256, 2)) at 65536 x 4096
    large = (3, 4096, 1)
    assert predict(large, 65536, 8, H100, "grid", 264) < predict(large, 65536, 8, H100, "grid", 132)
    assert predict((3, 4, 1), 4, 8, H100, "grid") == predict((3, 4, 1), 4, 8, H100, "grid", None)
    with pytest.raises(ValueError, match="path"):
        predict((3, 4, 1), 4, 8, H100, "warp")


def test_tree_width():
    """Threads per tree sum: a power of two, at most a warp, the block, the spare threads and
    what the count needs."""
    for count in (1, 2, 3, 16, 33, 264, 1024):
        for T in (4, 8, 256):
            for spare in (0, 1, 3, 8, 1000):
                G = _cuda_plan.tree_width(count, T, spare)
                assert G & (G - 1) == 0 and 1 <= G <= _cuda_plan.TREE_WIDTH
                assert G == 1 or (G <= T and G <= spare and G * _cuda_plan.TREE_MIN_PER_LANE <= count)
                if 2 * G <= min(_cuda_plan.TREE_WIDTH, T, spare):  # as wide as the partials allow
                    assert 2 * G * _cuda_plan.TREE_MIN_PER_LANE > count
    assert _cuda_plan.tree_width(264, 256, 132) == 32 and _cuda_plan.tree_width(16, 256, 132) == 4
    assert _cuda_plan.tree_width(4, 256, 132) == 1 and _cuda_plan.tree_width(264, 256, 1) == 1


def test_a_block_cap_gives_several_items_per_block(monkeypatch):
    """The cap that ``test_chunked_reductions`` relies on, with a real GPU's occupancy answer: the
    device's own cap leaves a block (or more) per item (11 rows x 7 units: 12 forward items),
    ``MAX_BLOCKS = 2`` gives two blocks walking several items each, the work cut as before."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "grid")
    monkeypatch.setattr(_cuda_plan, "MIN_CHUNK", 2)
    device = {**SMALL_DEVICE, "multiprocessors": 16}
    sizes = (4, 7, 2)
    granted = _cuda_plan.resident_blocks(device, 4, 0)  # what an occupancy query grants 4-thread blocks
    free = plan(sizes, 11, 8, device, granted)
    assert free.blocks >= free.forward_items == 12
    monkeypatch.setattr(_cuda_plan, "MAX_BLOCKS", 2)
    capped = plan(sizes, 11, 8, device, granted)
    assert capped.blocks == 2 and capped.forward_items >= 4 and capped.backward_items >= 4
    assert (capped.forward_items, capped.backward_items, capped.hchunks, capped.rchunks) == (
        free.forward_items, free.backward_items, free.hchunks, free.rchunks)  # fmt: skip
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "multi")
    assert plan(sizes, 11, 8, device).blocks == 2  # each phase launch: at most two blocks


# --- on the device (or the simulator) ---------------------------------------------------------------


@needs_cuda
def test_device_name():
    assert isinstance(backend.device_name(), str) and backend.device_name()


@needs_cuda
@pytest.mark.parametrize("layers", [3, 4])
def test_deeper_networks_are_refused(layers):
    with pytest.raises(UnsupportedProblem, match="weight layers"):
        backend.prepare(scaled(4, 3, layers=layers))


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_extremes_are_exact(dtype):
    t = np.dtype(dtype).type
    sig = backend.source.sigmoid(dtype)

    @cuda.jit
    def apply(z, out):
        i = cuda.grid(1)
        if i < z.size:
            out[i] = sig(z[i])

    z = np.array([-800, -710, -400, -100, 0, 100, 400, 800], dtype=t)
    out = cuda.to_device(np.full_like(z, np.nan))
    apply[1, z.size](cuda.to_device(z), out)
    got = out.copy_to_host()
    assert np.all(np.isfinite(got))
    # exactly: exp(-z) beyond the largest finite one gives 0 by the branch; 1 + exp(-z) rounds to 1
    assert got[0] == 0 and got[1] == 0 and got[4] == 0.5 and got[6] == 1 and got[7] == 1
    if dtype == "float32":
        assert got[2] == 0  # exp(400) overflows float32: the branch
    else:  # libdevice's exp promises 1 ulp, not correct rounding: s(-400) = 1 / (1 + e), e within 1 ulp
        e = math.exp(400.0)
        assert 1 / (1 + np.nextafter(e, np.inf)) <= got[2] <= 1 / (1 + np.nextafter(e, 0))
    with np.errstate(over="ignore"):
        reference = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(got, reference, rtol=1e-15 if dtype == "float64" else 1e-6, atol=1e-37)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seed_problems_short(path, dtype):
    iterations = 600 if path == "block" else 30
    agree(xor3().astype(dtype), iterations, iterations // 6, path)
    agree(xor2().astype(dtype), iterations, iterations // 6, path)


SIZES = [
    pytest.param(dict(batch=1, hidden=1), id="N1-H1"),
    pytest.param(dict(batch=5, hidden=3), id="N5-H3"),
    pytest.param(dict(batch=3, hidden=1), id="N3-H1"),
    pytest.param(dict(batch=1, hidden=7), id="N1-H7"),
    pytest.param(dict(batch=9, hidden=6, inputs=5, outputs=2), id="N9-H6-D5-O2"),
    pytest.param(dict(batch=13, hidden=4, inputs=5, outputs=2, layers=1), id="2layer-N13-D5-O2"),
]


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", SIZES)
def test_awkward_sizes(path, dtype, size):
    agree(scaled(dtype=dtype, seed=7, **size), 12, 4, path)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_non_power_of_two_17x33(path, dtype):
    agree(scaled(17, 33, dtype, seed=17 * 31 + 33), 6, 3, path)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cooperative", [True, False], ids=["grid", "multi"])
def test_chunked_reductions(monkeypatch, dtype, layers, cooperative):
    """Several hidden chunks and row chunks, several blocks with several work items each (across
    grid syncs on the grid path): the fixed-order partial sums and the blocks' loops over items.
    ``MAX_BLOCKS = 2`` caps the grid below the items on a GPU as under the simulator (whose
    cooperative grid is one block: its occupancy answer, ``cooperative_blocks``, is 1 there, so
    only the multi path runs two blocks under it; ``test_a_block_cap_gives_several_items_per_block``
    checks the grid plan's two blocks)."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "grid" if cooperative else "multi")
    monkeypatch.setattr(_cuda_plan, "MIN_CHUNK", 2)
    monkeypatch.setattr(_cuda_plan, "MAX_BLOCKS", 2)
    use_device(monkeypatch, {**SMALL_DEVICE, "multiprocessors": 16, "cooperative": cooperative})
    log = LaunchLog(monkeypatch)
    problem = scaled(11, 7, dtype, seed=3, inputs=4, outputs=2, layers=layers)
    state, _ = agree(problem, 6, 2, "grid" if cooperative else "multi")
    layout = state["plan"]
    assert layout.rchunks > 1
    if layers == 2:
        assert layout.hchunks > 1
    granted = 1 if backend.SIMULATED else 2  # a GPU holds two blocks of 4 threads of any kernel
    blocks = {name: grid for name, grid in log.grids}
    if cooperative:
        assert layout.blocks == granted == blocks["grid3" if layers == 2 else "grid2"]
    else:
        assert max(blocks.values()) == 2
    # several items per block in the forward and backward phases
    assert layout.forward_items >= 2 * granted and layout.backward_items >= 2 * granted


#: A device whose grid kernels have blocks of 16 threads, cut into several chunks.
TREE_DEVICE = {**SMALL_DEVICE, "multiprocessors": 16, "max_threads_per_block": 16, "max_threads_per_sm": 64,
               "max_blocks_per_sm": 8}  # fmt: skip


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("force", ["grid", "multi"])
@pytest.mark.parametrize("layers", [1, 2])
def test_tree_sums_with_spare_threads(monkeypatch, dtype, force, layers):
    """Groups of threads add the chunks' partials in a fixed tree (``tree_width`` > 1): the update
    phase's weight partials (few weights, many row chunks) and, for the 3-layer net, the backward
    phase's hidden-chunk partials of a row (few rows per chunk, several hidden chunks)."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", force)
    monkeypatch.setattr(_cuda_plan, "MIN_CHUNK", 1)
    monkeypatch.setattr(_cuda_plan, "MAX_BLOCKS", 1)  # one block, as the simulator runs a grid
    use_device(monkeypatch, {**TREE_DEVICE, "cooperative": force == "grid"})
    if layers == 1:  # 3 weights (16 threads: 5 per weight to spare), 32 rows in 16 chunks
        problem = scaled(32, 1, dtype, seed=21, layers=1)
    else:  # 3 rows in chunks of one, 80 hidden units in 16 chunks
        problem = scaled(3, 80, dtype, seed=22)
    state, _ = agree(problem, 4, 1, force)
    layout, T = state["plan"], state["plan"].threads
    assert T == 16
    if layers == 1:  # the update phase: one block for 3 weights
        assert layout.rchunks >= 16 and _cuda_plan.tree_width(layout.rchunks, T, T // 3) == 4
    else:  # the backward phase: one row per chunk
        assert layout.hchunks >= 16 and layout.rchunk == 1
        assert _cuda_plan.tree_width(layout.hchunks, T, T) >= 4


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("N", "H"), [(3, 2), (2, 3), (1, 5), (7, 1)])
def test_spare_threads_become_lanes(monkeypatch, dtype, N, H):
    """Fewer rows (forward) or hidden units (backward) than threads: the block's spare threads
    split the chunk as lanes, including a T that is not a multiple of the rows or units."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "grid")
    T = backend.device_properties()["max_threads_per_block"]
    assert T // min(T, N) > 1 or T // min(T, H) > 1
    agree(scaled(N, H, dtype, seed=N * 10 + H), 5, 2, "grid")


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
def test_one_block_on_global_scratch(monkeypatch, dtype, layers):
    """Too big for shared memory: the one-block kernel works from global scratch instead."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "block")
    use_device(monkeypatch, {**SMALL_DEVICE, "max_shared_per_block": 64})
    # an odd number of iterations: the last W1 update lands in the second W1 buffer
    state, _ = agree(scaled(6, 5, dtype, seed=4, layers=layers, outputs=2), 21, 5, "block")
    assert state["plan"].shared_bytes == 0


@needs_cuda
@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_odd_and_even_iteration_counts_in_shared_memory(monkeypatch, iterations):
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "block")
    agree(scaled(5, 3, seed=9), iterations, 1, "block")


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_weights_saturate_without_nan(path, dtype):
    """Pre-activations of +-400 and -800: s gives exactly 0 or 1 and training stays finite."""
    X = np.eye(3)
    y = np.array([[1.0], [0.0], [1.0]])
    W0 = np.array([[400.0, -800.0], [-400.0, 400.0], [-800.0, -400.0]])
    W1 = np.array([[800.0], [-800.0]])
    problem = Problem(X, y, (W0, W1), 1.0, "extreme").astype(dtype)
    _, result = agree(problem, 8, 2, path)
    assert np.all(np.isfinite(result.losses))
    # rows 0 and 1 are saturated and exact (err 0); row 2 sits at s(0) = 0.5
    assert result.losses[0] == pytest.approx(0.5 / 3, rel=1e-6)


@needs_cuda
def test_float64_runs_are_bit_reproducible(path):
    problem = scaled(13, 9, seed=11)
    first, second = train(backend, problem, 5, 1), train(backend, problem, 5, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, second.weights))
    assert np.array_equal(first.losses, second.losses)


@needs_cuda
def test_no_iterations_and_no_logging(path):
    problem = xor3()
    state = backend.prepare(problem)
    backend.run(state, 0, 10)
    result = backend.fetch(state)
    assert result.losses.shape == (0,)
    assert all(np.array_equal(w, w0) for w, w0 in zip(result.weights, problem.weights))
    result = train(backend, problem, 5, 0)
    assert result.losses.shape == (0,)
    assert max_relative_error(result, reference_result(problem, 5, 0)) <= TOLERANCE["float64"]


@needs_cuda
def test_run_restores_the_switch_interval():

    before = sys.getswitchinterval()
    train(backend, xor2(), 2, 1)
    assert sys.getswitchinterval() == before


@needs_cuda
def test_initial_weights_are_not_modified(path):
    problem = xor3()
    before = [w.copy() for w in problem.weights]
    train(backend, problem, 3, 1)
    assert all(np.array_equal(w, b) for w, b in zip(problem.weights, before))


@needs_cuda
@pytest.mark.parametrize("force", ["block", "grid", "multi"])
def test_describe_a_prepared_run(monkeypatch, force):
    """``describe``: what a prepared run launches, for the bounded GPU check's plan probes."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", force)
    if force == "multi":
        use_device(monkeypatch, {**backend.device_properties(), "cooperative": False})
    problem = xor3()
    state = backend.prepare(problem)
    info = backend.describe(state)
    layout = state["plan"]
    assert set(info) == {"path", "threads", "blocks", "cooperative_cap", "launch_bound", "registers",
                         "spill_bytes", "predicted_us"}  # fmt: skip
    assert info["path"] == force and info["threads"] == layout.threads
    props = backend.device_properties()
    if force == "grid":
        assert info["blocks"] == layout.blocks and isinstance(info["cooperative_cap"], int)
        assert info["blocks"] <= info["cooperative_cap"]
    else:
        assert info["cooperative_cap"] is None
        assert info["blocks"] == (1 if force == "block" else max(layout.forward_items, layout.backward_items,
                                                                   layout.update_blocks))  # fmt: skip
    cap = info["cooperative_cap"]
    expected = _cuda_plan.predicted_seconds(problem.sizes, problem.batch, 8, props, force, cap)
    assert info["predicted_us"] == pytest.approx(expected * 1e6)
    if backend.SIMULATED:  # no compiler: no launch bound applied, no registers to report
        assert info["launch_bound"] == "" and info["registers"] is None and info["spill_bytes"] is None
    else:
        assert info["launch_bound"] == ("256,2" if force == "grid" else "256")
        assert isinstance(info["registers"], int) and info["registers"] > 0
        assert info["spill_bytes"] is not None


# --- faults -----------------------------------------------------------------------------------------


def _error(module: str, name: str) -> Exception:
    return type(name, (Exception,), {"__module__": module})("[720] CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE")


@needs_cuda
@pytest.mark.parametrize(("module", "name"), [
    ("numba.cuda.cudadrv.driver", "CudaAPIError"),
    ("numba_cuda_mlir.numba_cuda.cudadrv.driver", "CudaAPIError"),
    ("cuda.core._utils.cuda_utils", "CUDAError"),
])  # fmt: skip
def test_a_cuda_error_in_a_run_is_a_device_fault(monkeypatch, module, name):
    from backends import _cuda_launch
    from backends.base import DeviceFault

    state = backend.prepare(xor3())

    def refused(*args):
        raise _error(module, name)

    monkeypatch.setattr(_cuda_launch, "run_persistent", refused)
    with pytest.raises(DeviceFault, match=r"^" + name + r" while running the block path: \[720\] CUDA_ERROR_COOPERATIVE"):
        backend.run(state, 3, 1)


@needs_cuda
def test_other_errors_are_not_device_faults(monkeypatch):
    from backends import _cuda_launch
    from backends.base import DeviceFault

    state = backend.prepare(xor3())
    monkeypatch.setattr(_cuda_launch, "run_persistent", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError) as info:
        backend.run(state, 3, 1)
    assert not isinstance(info.value, DeviceFault)


def test_device_memory_is_admitted_before_allocating(monkeypatch):
    class Context:
        @staticmethod
        def get_memory_info():
            return 1 << 20, 80 << 30  # 1 MiB free

    monkeypatch.setattr(backend, "SIMULATED", False)
    monkeypatch.setattr(cuda, "current_context", lambda: Context, raising=False)
    with pytest.raises(UnsupportedProblem, match=r"needs ~\d+\.\d+ GiB of device memory, 0\.00 GiB free"):
        backend.admit(1 << 30)
    backend.admit(1 << 10)  # fits


# --- launches: how many, and with which argument types ---------------------------------------------


class LaunchLog:
    """Stands in for the compiled kernels: records each launch (kernel, argument types), then runs
    it (or, with ``execute=False``, only records it: for sizes the simulator cannot afford)."""

    def __init__(self, monkeypatch, execute: bool = True):
        self.launches: list[tuple[str, tuple[str, ...]]] = []
        self.grids: list[tuple[str, int]] = []  # (kernel, blocks) of each launch configuration
        self.execute = execute
        compiled = backend.kernel
        monkeypatch.setattr(backend, "kernel", lambda dtype, D, O, name: self.Kernel(self, name, compiled(dtype, D, O, name)))

    def names(self) -> list[str]:
        return [name for name, _ in self.launches]

    @staticmethod
    def argtype(value) -> str:
        import numba

        if hasattr(value, "dtype") and hasattr(value, "ndim") and value.ndim:  # a device array
            assert value.flags["C_CONTIGUOUS"]
            return str(numba.types.Array(numba.from_dtype(value.dtype), value.ndim, "C"))
        return str(numba.typeof(value))

    class Kernel:
        def __init__(self, log, name, kernel):
            self.log, self.name, self.kernel = log, name, kernel

        def __getattr__(self, attr):  # overloads etc.: the compiled kernel's
            return getattr(self.kernel, attr)

        def __getitem__(self, config):
            configured = self.kernel[config]
            self.log.grids.append((self.name, config[0]))

            def launch(*args):
                self.log.launches.append((self.name, tuple(LaunchLog.argtype(a) for a in args)))
                if self.log.execute:
                    configured(*args)

            return launch


#: (N, H) at the three scales, and the path an H100 gets for each.
SCALES = [
    pytest.param(4, 4, "block", id="small-4x4"),
    pytest.param(256, 64, "grid", id="medium-256x64", marks=pytest.mark.slow),  # ~15 s simulated
    pytest.param(65536, 4096, "grid", id="large-65536x4096"),
]


@needs_cuda
@pytest.mark.parametrize(("N", "H", "expect"), SCALES)
def test_one_launch_per_run_whatever_the_iteration_count(monkeypatch, N, H, expect):
    """With an H100's properties, a run is one kernel launch at small, medium and large sizes, for
    1 iteration and for 9. The simulator runs the small and medium ones (blocks of 8 threads
    for the grid kernel: it cannot afford 256 Python threads); the large one it cannot, so
    there the launches are recorded, not executed."""
    use_device(monkeypatch, H100)
    # blocks of 8 threads would change the cost model's choice: the path is the one an H100 gets
    # with 256 (test_the_switch_is_the_cheaper_predicted_path)
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", expect)
    monkeypatch.setattr(_cuda_plan, "GRID_THREADS", 8)
    execute = N * H <= 1 << 14
    log = LaunchLog(monkeypatch, execute=execute)
    problem = xor3() if N == 4 else scaled(N, H, seed=5)
    counts = []
    for iterations in (1, 9):
        state = backend.prepare(problem)
        assert state["path"] == expect
        before = len(log.launches)
        backend.run(state, iterations, 3)
        counts.append(len(log.launches) - before)
        if execute:
            result = backend.fetch(state)
            assert max_relative_error(result, reference_result(problem, iterations, 3)) <= TOLERANCE["float64"]
    assert counts == [1, 1]
    assert set(log.names()) == {"block3_shared" if expect == "block" else "grid3"}


@needs_cuda
@pytest.mark.parametrize("layers", [1, 2])
def test_phase_launches_only_without_cooperative_launch(monkeypatch, layers):
    """The fallback: forward, backward and update launched per iteration."""
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", "multi")
    use_device(monkeypatch, {**SMALL_DEVICE, "cooperative": False})
    log = LaunchLog(monkeypatch)
    train(backend, scaled(9, 6, seed=5, layers=layers), 3, 2)
    n = "3" if layers == 2 else "2"
    assert log.names() == [f"forward{n}_phase", f"backward{n}_phase", "update_phase"] * 3


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_launch_argument_types_match_the_signatures(monkeypatch, dtype):
    """Kernels are compiled eagerly for one signature (and harness.cuda_ptx compiles the same
    table for real GPUs): every launch must pass exactly those types."""
    from numba.core import sigutils

    table = backend.source.kernels(dtype, 3, 1)
    expected = {name: tuple(str(t) for t in sigutils.normalize_signature(k.signature)[0]) for name, k in table.items()}
    log = LaunchLog(monkeypatch)
    for force, shared, cooperative in (("block", 48 * 1024, True), ("block", 64, True), ("grid", 48 * 1024, True),
                                       ("multi", 48 * 1024, False)):  # fmt: skip
        monkeypatch.setattr(_cuda_plan, "FORCE_PATH", force)
        use_device(monkeypatch, {**SMALL_DEVICE, "max_shared_per_block": shared, "cooperative": cooperative})
        for layers in (1, 2):
            train(backend, scaled(9, 6, dtype, seed=5, layers=layers), 2, 1)
    assert set(log.names()) == set(expected)  # every kernel was launched at least once
    for name, types in log.launches:
        assert types == expected[name], name


# --- the published seed runs: full length (slow under the simulator) ------------------------------


@pytest.mark.slow
def test_xor3_full_run_reproduces_published_losses():
    """60000 iterations on the one-block kernel, to the last printed digit. Under the simulator the
    first 10001 (two published losses: 0 and 10000): the simulator runs the same kernel code in
    Python threads with NumPy's arithmetic, not libdevice's, so the remaining 50000 iterations
    (~30 s of one core per 10000) would show nothing the first 10001 do not; `make gpu-check`
    runs all 60000."""
    iterations = 10001 if backend.SIMULATED else 60000
    result = train(usable("numba-cuda"), xor3(), iterations, 10000)
    assert_xor3_published(result.losses, prefix=backend.SIMULATED)
    assert max_relative_error(result, reference_result(xor3(), iterations, 10000)) <= TOLERANCE["float64"]


@pytest.mark.slow
def test_xor2_full_run_reproduces_published_output():
    assert_xor2_published(train(usable("numba-cuda"), xor2(), XOR2_UPDATES, 0))


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(backend.SIMULATED, reason="the grid and multi paths at 60000 iterations take too long under the simulator")
@pytest.mark.parametrize("forced", ["grid", "multi"])
def test_xor3_full_run_on_the_grid_paths(monkeypatch, forced):
    b = usable("numba-cuda")
    monkeypatch.setattr(_cuda_plan, "FORCE_PATH", forced)
    assert_xor3_published(train(b, xor3(), 60000, 10000).losses)
