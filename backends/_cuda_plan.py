"""How a CUDA run is laid out: which launch path, how many blocks and threads, how work is split.

Pure functions of the problem's sizes and a device's properties (a plain dict, see
``DEVICE_PROPERTY_NAMES``), with no CUDA import, so the choice can be tested with any device's
figures (``H100`` below) on a machine without a GPU. ``backends/numba_cuda_backend.py`` reads the
properties of the real device and caps the grid with the compiled kernel's own occupancy query.

Three paths (docs/cuda.md explains the design):

* ``block``: one persistent thread block runs every iteration (``cuda.syncthreads`` between
  phases). Small problems: the seed problems and anything whose iteration is a few microseconds
  of one block's work.
* ``grid``: one persistent *cooperative* launch of up to the device's resident blocks runs every
  iteration (``this_grid().sync()`` between phases).
* ``multi``: the grid path's three phases as three launches per iteration, only where a
  cooperative launch is impossible (the device lacks cooperative launch support).

``plan`` takes the block path or the other one, whichever the cost model (``layout_seconds``,
``predicted_seconds``: PREDICTED from H100 figures, not measured) says is faster per iteration;
``FORCE_PATH`` overrides it.
"""

# The sizes are named as in SPEC.md: N rows, D inputs, H hidden units, O outputs.
# ruff: noqa: E741

from __future__ import annotations

from dataclasses import dataclass

#: The device properties a plan reads (``backends.numba_cuda_backend.device_properties`` fills them).
DEVICE_PROPERTY_NAMES = (
    "max_threads_per_block",
    "multiprocessors",
    "max_threads_per_sm",
    "max_blocks_per_sm",
    "max_shared_per_block",
    "max_shared_per_sm",
    "warp",
    "cooperative",
)

#: An NVIDIA H100 SXM5 80GB, as ``cuda.get_current_device()`` reports it (for tests and examples).
H100 = {
    "max_threads_per_block": 1024,
    "multiprocessors": 132,
    "max_threads_per_sm": 2048,
    "max_blocks_per_sm": 32,
    "max_shared_per_block": 48 * 1024,  # without opting in to more (the kernels need far less)
    "max_shared_per_sm": 228 * 1024,
    "warp": 32,
    "cooperative": True,
}

# --- Tunables (module attributes, so tests and tuning runs can change them) ----------------------
#: Most threads of the one-block kernels, and their launch bound.
BLOCK_MAX_THREADS = 256
#: Threads per block of the grid (and multi) kernels, and their launch bound: a power of two, so
#: the per-block |err| sums are a balanced tree.
GRID_THREADS = 256
#: The grid kernels' launch bound asks the compiler for registers that let this many blocks of
#: GRID_THREADS share an SM (launch bounds (256, 2): at most 128 registers per thread), where the
#: inputs and outputs are few enough (D + O <= GRID_MIN_BLOCKS_WIDTH); with more they spilled
#: (``python -m harness.cuda_ptx``, docs/cuda.md), so they keep the bound (256) alone.
GRID_MIN_BLOCKS = 2
GRID_MIN_BLOCKS_WIDTH = 4
#: Force a path ("block", "grid" or "multi"; None: the cheaper one by ``predicted_seconds``), for
#: probes and tests. "grid" needs a device with cooperative launch.
FORCE_PATH: str | None = None
#: Most blocks of the grid path's launch and of each multi-path phase launch (None: as many as the
#: plan wants and the device holds). Work is still cut for the full grid: with fewer blocks, each
#: walks several items. For probes and tests ("several blocks, several items each").
MAX_BLOCKS: int | None = None
#: Cost model of one-block phases, in dependent steps: a sigmoid (0.115 us per dependent float64
#: sigmoid on an H100 is ~230 cycles) and a block barrier (0.06 us).
SIGMOID_STEPS = 28
BARRIER_STEPS = 14
#: Grid path: one block per SM until each thread has at least this many (row, hidden unit) pairs
#: per phase; beyond that, more blocks per SM (up to what is resident) to hide latency. Fewer
#: blocks make the grid sync cheaper (1.48 us at 132 blocks, 2.20 at 264, 3.32 at 528 on an H100).
GRID_PAIRS_PER_THREAD = 64
#: Fewest rows (hidden units) per chunk of a split reduction, and most chunks.
MIN_CHUNK = 16
MAX_CHUNKS = 1024
#: Most threads that add one sum's partials together (``tree_width``): a warp; and the fewest
#: partials each of them adds (with fewer, the tree's barriers cost more than the serial loads).
TREE_WIDTH = 32
TREE_MIN_PER_LANE = 4

# --- Cost model (``predicted_seconds``): PREDICTIONS from H100 figures, not measurements --------
# Measured on an H100 (shared/gpu-h100/README.md): a dependent float64 sigmoid 0.115 us, a block
# barrier 0.064 us, a grid sync 1.48 / 2.20 / 3.32 us at 132 / 264 / 528 blocks of 256 threads,
# sigmoid throughput 386 (float64) and 943 (float32) G/s over 132 SMs, an empty launch from Python
# 28.8 us. Estimated, not measured: the dependent load latency and the loads in flight.
#: Seconds of one dependent step (a dependent float64 sigmoid is SIGMOID_STEPS steps).
STEP_SECONDS = 0.115e-6 / SIGMOID_STEPS
#: One grid sync by blocks per SM: (blocks per SM, seconds), linear between and beyond the points.
GRID_SYNC_SECONDS = ((1, 1.48e-6), (2, 2.20e-6), (4, 3.32e-6))
#: Sigmoids per second of one SM, by itemsize.
SIGMOIDS_PER_SM_SECOND = {8: 386e9 / 132, 4: 943e9 / 132}
#: A kernel launch from Python (the multi path's three per iteration).
LAUNCH_SECONDS = 28.8e-6
#: A global load that misses L1 (the partial sums, written by other blocks), in steps (~0.2 us),
#: and how many of a serial loop's loads are in flight at once (an unroll by 4): estimates.
LOAD_STEPS = 48
LOADS_IN_FLIGHT = 4
#: A shared-memory load, in steps (~30 cycles): an estimate.
SHARED_STEPS = 4


@dataclass(frozen=True)
class Plan:
    """One run's launch layout. Chunk fields are those of the grid and multi paths."""

    path: str  # "block", "grid" or "multi"
    threads: int  # per block
    blocks: int  # grid size (1: block path); multi path: most blocks per phase launch (0: one per item)
    shared_bytes: int  # dynamic shared memory per block; 0 on the block path = global scratch
    hchunk: int = 1  # hidden units per chunk of the forward phase (3-layer network)
    hchunks: int = 1
    rchunk: int = 1  # rows per chunk of the backward phase
    rchunks: int = 1
    forward_items: int = 1  # blocks' work items per phase (the multi path launches a block per item)
    backward_items: int = 1
    update_blocks: int = 1  # blocks the update phase can use (a tree_width group per weight entry)

    @property
    def launches_per_iteration(self) -> int:
        return 3 if self.path == "multi" else 0


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(value: int, multiple: int) -> int:
    return _ceil(value, multiple) * multiple


def split_sizes(sizes: tuple[int, ...]) -> tuple[int, int, int]:
    """(D, H, O) of a network with 1 or 2 weight layers; H = 0 for the 2-layer network."""
    if len(sizes) == 2:
        return sizes[0], 0, sizes[1]
    if len(sizes) == 3:
        return sizes
    raise ValueError(f"1 or 2 weight layers supported, got sizes {sizes}")


def block_threads(sizes: tuple[int, ...], N: int, props: dict) -> int:
    """Block size of the one-block kernels: the widest phase, rounded up to a warp, capped."""
    D, H, O = split_sizes(sizes)
    widest = max(N * H, N * O, H * O + D * H) if H else max(N * O, D * O)
    cap = min(BLOCK_MAX_THREADS, props["max_threads_per_block"])
    return max(1, min(cap, _round_up(widest, props["warp"])))


def block_steps(sizes: tuple[int, ...], N: int, T: int) -> int:
    """Estimated critical path of one iteration of the one-block kernel, in dependent steps."""
    D, H, O = split_sizes(sizes)
    if not H:
        return _ceil(N * O, T) * (2 * D + SIGMOID_STEPS + 4) + _ceil(D * O, T) * 2 * N + 2 * BARRIER_STEPS
    hidden = _ceil(N * H, T) * (2 * D + SIGMOID_STEPS)  # a1 = s(X W0), one (row, unit) per thread
    output = _ceil(N * O, T) * (2 * H + SIGMOID_STEPS + 4)  # a2, err, d2
    update = _ceil(H * O + D * H, T) * N * (2 * O + 5)  # one weight entry per thread, over all rows
    return hidden + output + update + 3 * BARRIER_STEPS


# --- Shared memory: the one layout of every kernel's dynamic shared memory -----------------------
# The plan sizes the allocation with these functions, and the kernels (backends/_cuda_kernels.py)
# carve it with the same functions compiled as device functions. Offsets are in elements; plain
# tuples, as numba-cuda-mlir 0.6 cannot build a NamedTuple in a kernel.

#: What ``block_shared`` returns: where each array of the one-block kernels starts, then the end.
BLOCK_SHARED = ("X", "y", "W0", "W1", "W1b", "a1", "d", "part", "end")
#: What ``grid_shared`` returns: where each array of a grid (or multi) kernel's block starts, then the end.
GRID_SHARED = ("sums", "d2", "red", "end")


def block_shared(N: int, D: int, H: int, O: int, T: int) -> tuple[int, ...]:
    """Shared-memory layout of the one-block kernels for T threads (``BLOCK_SHARED``): X (N x D),
    y (N x O), W0 (D x H), W1 and W1b (H x O: this iteration's and the other buffer), a1 (N x H),
    d (N x O output deltas), part (T |err| partials). H = 0 is the 2-layer network: W0 is D x O,
    W1, W1b and a1 are empty."""
    y = N * D
    W0 = y + N * O
    W1 = W0 + D * (H if H > 0 else O)
    W1b = W1 + H * O
    a1 = W1b + H * O
    d = a1 + N * H
    part = d + N * O
    return 0, y, W0, W1, W1b, a1, d, part, part + T


def grid_shared(D: int, O: int, T: int) -> tuple[int, ...]:
    """Shared-memory layout per block of the grid and multi kernels for T threads (``GRID_SHARED``):
    sums (the |err| tree sum, T), d2 (a batch of T rows' output deltas, T x O), red (the lanes'
    partial sums, T x (D + O)). This order took fewer registers than d2 first (docs/cuda.md)."""
    d2 = T
    red = d2 + T * O
    return 0, d2, red, red + T * (D + O)


def block_words(sizes: tuple[int, ...], N: int, T: int) -> int:
    """Shared-memory words of the one-block kernel (``block_shared``)."""
    D, H, O = split_sizes(sizes)
    return block_shared(N, D, H, O, T)[-1]


def grid_words(sizes: tuple[int, ...], T: int) -> int:
    """Shared-memory words per block of the grid and multi kernels (``grid_shared``)."""
    D, _, O = split_sizes(sizes)
    return grid_shared(D, O, T)[-1]


def device_bytes(sizes: tuple[int, ...], N: int, itemsize: int, layout: Plan) -> int:
    """Device memory a run allocates: inputs, weights, scratch and partial sums (losses aside)."""
    D, H, O = split_sizes(sizes)
    words = N * D + N * O + D * max(H, O) + H * O  # X, y, weights
    if layout.path == "block":
        if not layout.shared_bytes:
            words += H * O + N * H + N * O + layout.threads if H else N * O + layout.threads
    else:
        words += layout.hchunks * N * O + layout.rchunks * (D * max(H, O) + H * O) + layout.rchunks + 2 * N * O
    return words * itemsize


def resident_blocks(props: dict, threads: int, shared_bytes: int) -> int:
    """Blocks of ``threads`` threads the whole device holds at once (registers aside: the host
    caps this with the compiled kernel's occupancy, ``max_cooperative_grid_blocks``)."""
    per_sm = min(props["max_threads_per_sm"] // threads, props["max_blocks_per_sm"])
    if shared_bytes:
        per_sm = min(per_sm, props["max_shared_per_sm"] // shared_bytes)
    return max(1, per_sm) * props["multiprocessors"]


def tree_width(count: int, T: int, spare: int) -> int:
    """Threads (a group of consecutive lanes) that add one sum of ``count`` partials: the update
    phase's chunk partials of a weight, the backward phase's hidden-chunk partials of a row. The
    largest power of two that is at most TREE_WIDTH, the block's T threads and ``spare`` (threads
    per sum that would otherwise idle), and leaves each lane at least TREE_MIN_PER_LANE partials.
    Lane l adds partials l, l + G, ... in order, then the G lanes' sums are added in a fixed tree:
    the order depends only on these numbers, so a run is reproducible. The kernels compile this
    function, so they and the plan agree on G."""
    G = 1
    while 2 * G <= TREE_WIDTH and 2 * G <= T and 2 * G <= spare and 2 * G * TREE_MIN_PER_LANE <= count:
        G *= 2
    return G


def _chunks(length: int, others: int, want_items: int, lanes: int = 1) -> tuple[int, int]:
    """Split ``length`` into chunks so that ``others`` x chunks work items come as close to
    ``want_items`` (the grid's blocks) as they can without exceeding it: a phase whose blocks
    take one more item than others lasts twice as long.

    Returns (chunk size, number of chunks); at most MAX_CHUNKS chunks, and at least MIN_CHUNK
    items per chunk, or with ``lanes`` > 1 threads sharing a chunk, at least one per lane.
    """
    smallest = MIN_CHUNK if lanes == 1 else lanes
    count = max(1, min(want_items // max(1, others), _ceil(length, smallest), MAX_CHUNKS))
    size = _ceil(length, count)
    return size, _ceil(length, size)


def _block(sizes: tuple[int, ...], N: int, itemsize: int, props: dict) -> Plan:
    T = block_threads(sizes, N, props)
    shared = block_words(sizes, N, T) * itemsize
    return Plan("block", T, 1, shared if shared <= props["max_shared_per_block"] else 0)


def _grid(sizes: tuple[int, ...], N: int, itemsize: int, props: dict, cooperative_blocks: int | None,
          cooperative: bool) -> Plan:  # fmt: skip
    """The grid path's layout (``cooperative``) or the multi path's."""
    D, H, O = split_sizes(sizes)
    T = max(1, min(GRID_THREADS, props["max_threads_per_block"]))
    shared = grid_words(sizes, T) * itemsize
    if cooperative:
        # Work items are cut for the grid the device could hold; if the compiled kernel's
        # occupancy allows fewer blocks (``cooperative_blocks``), blocks take several items each.
        pairs = N * max(H, 1)  # (row, hidden unit) pairs of a phase
        want = min(resident_blocks(props, T, shared), max(props["multiprocessors"], _ceil(pairs, GRID_PAIRS_PER_THREAD * T)))
    else:  # one block per work item, enough items to fill the device
        want = props["multiprocessors"] * max(1, props["max_threads_per_sm"] // T)
    rblocks = _ceil(N, T)
    n_weights = D * H + H * O if H else D * O
    if H:
        # A forward item is min(T, N) rows x a chunk of hidden units, a backward item min(T, H)
        # hidden units x a chunk of rows; spare threads of a block become lanes that split the chunk.
        RT, HT = min(T, N), min(T, H)
        hchunk, hchunks = _chunks(H, _ceil(N, RT), want, T // RT)
        forward_items = _ceil(N, RT) * hchunks
        rchunk, rchunks = _chunks(N, _ceil(H, HT), want, T // HT)
        backward_items = _ceil(H, HT) * rchunks
    else:
        hchunk, hchunks = 1, 1
        forward_items = rblocks
        rchunk, rchunks = _chunks(N, _ceil(D * O, T), want)
        backward_items = _ceil(D * O, T) * rchunks
    # the update phase: a group of tree_width threads per weight entry
    update_blocks = _ceil(n_weights, T // tree_width(rchunks, T, T))
    if cooperative:  # no more blocks than any phase has work for: idle blocks only slow the sync
        blocks = max(1, min(want, max(forward_items, backward_items, update_blocks)))
        if cooperative_blocks is not None:
            blocks = min(blocks, max(1, cooperative_blocks))
        if MAX_BLOCKS is not None:
            blocks = min(blocks, max(1, MAX_BLOCKS))
        path = "grid"
    else:  # blocks: 0 = one per item; MAX_BLOCKS caps each phase's launch
        blocks = 0 if MAX_BLOCKS is None else max(1, MAX_BLOCKS)
        path = "multi"
    return Plan(path, T, blocks, shared, hchunk, hchunks, rchunk, rchunks, forward_items, backward_items, update_blocks)


def plan(sizes: tuple[int, ...], N: int, itemsize: int, props: dict, cooperative_blocks: int | None = None) -> Plan:
    """The launch layout for a problem of ``sizes`` and ``N`` rows on a device with ``props``: the
    one-block path or, on a cooperative device, the grid path (else the multi path), whichever
    ``predicted_seconds`` predicts cheaper per iteration (ties: the block path); ``FORCE_PATH``
    overrides the choice.

    ``cooperative_blocks``: the most blocks of the grid kernel that can be co-resident, as the
    compiled kernel reports it (registers included); None uses ``resident_blocks`` alone.
    """
    if FORCE_PATH not in (None, "block", "grid", "multi"):
        raise ValueError(f"FORCE_PATH must be None, 'block', 'grid' or 'multi', not {FORCE_PATH!r}")
    block = _block(sizes, N, itemsize, props)
    if FORCE_PATH == "block":
        return block
    cooperative = bool(props["cooperative"])
    if FORCE_PATH == "grid" and not cooperative:
        raise ValueError("FORCE_PATH = 'grid' needs a device with cooperative launch")
    other = _grid(sizes, N, itemsize, props, cooperative_blocks, cooperative and FORCE_PATH != "multi")
    if FORCE_PATH is not None:
        return other
    block_s = layout_seconds(block, sizes, N, itemsize, props)
    return block if block_s <= layout_seconds(other, sizes, N, itemsize, props) else other


# --- the cost model: PREDICTED seconds per iteration (constants above), not measurements --------


def grid_sync_seconds(blocks: int, sms: int) -> float:
    """One grid sync of ``blocks`` blocks on ``sms`` SMs (GRID_SYNC_SECONDS, linear between and
    beyond its points; fewer blocks than SMs cost as much as one per SM)."""
    points = GRID_SYNC_SECONDS
    per_sm = max(blocks / max(1, sms), points[0][0])
    i = 0
    while i + 2 < len(points) and per_sm > points[i + 1][0]:
        i += 1
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return y0 + (per_sm - x0) * (y1 - y0) / (x1 - x0)


def _serial_loads(count: int) -> int:
    """Steps of a loop that adds ``count`` loaded partials one after another."""
    return _ceil(count, LOADS_IN_FLIGHT) * LOAD_STEPS + count


def _tree_steps(G: int) -> int:
    """Steps of a group_sum tree of G lanes after the lanes' own sums: a barrier per level and one."""
    return 0 if G == 1 else G.bit_length() * (BARRIER_STEPS + SHARED_STEPS)


def _lane_steps(lanes: int, K: int) -> int:
    """Steps of a lane_sum of K values over ``lanes`` lanes: a barrier per tree level and two."""
    if lanes == 1:
        return 0
    return (lanes - 1).bit_length() * (BARRIER_STEPS + K * SHARED_STEPS) + 2 * BARRIER_STEPS


def _update_steps(n_weights: int, chunks: int, T: int, grid: int) -> int:
    G = tree_width(chunks, T, grid * T // max(1, n_weights))
    rounds = _ceil(n_weights, grid * (T // G))
    return rounds * (_serial_loads(_ceil(chunks, G)) + _tree_steps(G) + 4)


def layout_seconds(layout: Plan, sizes: tuple[int, ...], N: int, itemsize: int, props: dict) -> float:
    """PREDICTED seconds per iteration of ``layout`` (a ``plan`` result): per phase, the longer of
    its critical path (a block's items one after another, each in dependent steps of
    STEP_SECONDS) and its sigmoids at the SMs' throughput; plus three grid syncs (grid path) or
    three launches (multi path). Only as good as its constants (above)."""
    D, H, O = split_sizes(sizes)
    T, sms = layout.threads, props["multiprocessors"]
    rate = SIGMOIDS_PER_SM_SECOND.get(itemsize, SIGMOIDS_PER_SM_SECOND[8])
    if layout.path == "block":
        sigmoids = N * (H + O)
        return max(block_steps(sizes, N, T) * STEP_SECONDS, sigmoids / rate)

    def grid_of(items: int) -> int:
        if layout.path == "grid":
            return layout.blocks
        return min(items, layout.blocks) if layout.blocks else items

    def phase(items: int, steps: int, sigmoids: int) -> float:
        grid = grid_of(items)
        return max(_ceil(items, grid) * steps * STEP_SECONDS, sigmoids / (rate * min(grid, sms)))

    if H:
        RT, HT = min(T, N), min(T, H)
        lanes = T // RT
        steps = _ceil(layout.hchunk, lanes) * (2 * D + SIGMOID_STEPS + 2 * O) + _lane_steps(lanes, O)
        forward = phase(layout.forward_items, steps, N * H)
        lanes = T // HT
        rows = min(layout.rchunk, N)
        batch = min(T, rows)
        G = tree_width(layout.hchunks, T, T // batch)
        finish = O * (_serial_loads(_ceil(layout.hchunks, G)) + _tree_steps(G) + SIGMOID_STEPS + 4)
        per_batch = finish + 2 * BARRIER_STEPS + _ceil(batch, lanes) * (4 * D + SIGMOID_STEPS + 4 * O + 4)
        steps = _ceil(rows, T) * per_batch + _lane_steps(lanes, D + O)
        backward = phase(layout.backward_items, steps, N * H + N * O * _ceil(H, HT))
        n_weights = D * H + H * O
    else:
        forward = phase(layout.forward_items, O * (2 * D + SIGMOID_STEPS + 4), N * O)
        backward = phase(layout.backward_items, _serial_loads(layout.rchunk) + 2 * layout.rchunk, 0)
        n_weights = D * O
    update = _update_steps(n_weights, layout.rchunks, T, grid_of(layout.update_blocks)) * STEP_SECONDS
    if layout.path == "grid":
        overhead = 3 * grid_sync_seconds(layout.blocks, sms)
    else:
        overhead = 3 * LAUNCH_SECONDS
    return forward + backward + update + overhead


def predicted_seconds(sizes: tuple[int, ...], N: int, itemsize: int, props: dict, path: str,
                      blocks: int | None = None) -> float:  # fmt: skip
    """PREDICTED seconds per iteration of ``path`` ("block", "grid" or "multi") for this problem on a
    device with ``props`` (``layout_seconds`` of the layout ``plan`` would build for that path).
    ``blocks``: for the grid path, the most blocks its grid may have (the occupancy query's cap,
    as ``plan``'s ``cooperative_blocks``); None: as many as the plan wants."""
    if path == "block":
        layout = _block(sizes, N, itemsize, props)
    elif path in ("grid", "multi"):
        layout = _grid(sizes, N, itemsize, props, blocks, path == "grid")
    else:
        raise ValueError(f"path must be 'block', 'grid' or 'multi', not {path!r}")
    return layout_seconds(layout, sizes, N, itemsize, props)
