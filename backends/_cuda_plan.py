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
  iteration (``this_grid().sync()`` between phases). Every other size.
* ``multi``: the grid path's three phases as three launches per iteration, only where a
  cooperative launch is impossible (the device lacks cooperative launch support).
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
#: The block path runs while its estimated critical path per iteration (``block_steps``, in
#: dependent arithmetic steps of ~8 cycles) is at most this. The grid path pays three grid-wide
#: syncs per iteration: 3 x 1.48 us on an H100 (shared/gpu-h100) is ~8800 cycles, ~1100 steps,
#: before any work; so does a one-block iteration of ~2000 steps. An estimate, not yet tuned.
BLOCK_MAX_STEPS = 2048
#: Cost model of one-block phases, in dependent steps: a sigmoid (0.115 us per dependent float64
#: sigmoid on an H100 is ~230 cycles) and a block barrier (0.06 us).
SIGMOID_STEPS = 28
BARRIER_STEPS = 14
#: Grid path: one block per SM until each thread has at least this many (row, hidden unit) pairs
#: per phase; beyond that, more blocks per SM (up to what is resident) to hide latency. Fewer
#: blocks make the grid sync cheaper (1.48 us at 132 blocks, 2.20 at 264, 3.32 at 528 on an H100).
GRID_PAIRS_PER_THREAD = 64
#: Fewest rows (hidden units) per chunk of a split reduction, and most chunks: the update phase
#: adds the chunks' partials serially, so their number bounds its length.
MIN_CHUNK = 16
MAX_CHUNKS = 1024


@dataclass(frozen=True)
class Plan:
    """One run's launch layout. Chunk fields are those of the grid and multi paths."""

    path: str  # "block", "grid" or "multi"
    threads: int  # per block
    blocks: int  # grid size (1 for the block path; per-phase grids of the multi path are below)
    shared_bytes: int  # dynamic shared memory per block; 0 on the block path = global scratch
    hchunk: int = 1  # hidden units per chunk of the forward phase (3-layer network)
    hchunks: int = 1
    rchunk: int = 1  # rows per chunk of the backward phase
    rchunks: int = 1
    forward_items: int = 1  # blocks' work items per phase (the multi path launches one block each)
    backward_items: int = 1
    update_blocks: int = 1

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


def plan(sizes: tuple[int, ...], N: int, itemsize: int, props: dict, cooperative_blocks: int | None = None) -> Plan:
    """The launch layout for a problem of ``sizes`` and ``N`` rows on a device with ``props``.

    ``cooperative_blocks``: the most blocks of the grid kernel that can be co-resident, as the
    compiled kernel reports it (registers included); None uses ``resident_blocks`` alone.
    """
    D, H, O = split_sizes(sizes)
    T = block_threads(sizes, N, props)
    if block_steps(sizes, N, T) <= BLOCK_MAX_STEPS:
        shared = block_words(sizes, N, T) * itemsize
        return Plan("block", T, 1, shared if shared <= props["max_shared_per_block"] else 0)

    T = max(1, min(GRID_THREADS, props["max_threads_per_block"]))
    shared = grid_words(sizes, T) * itemsize
    cooperative = bool(props["cooperative"])
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
    update_blocks = _ceil(n_weights, T)
    if cooperative:  # no more blocks than any phase has work for: idle blocks only slow the sync
        blocks = max(1, min(want, max(forward_items, backward_items, update_blocks)))
        if cooperative_blocks is not None:
            blocks = min(blocks, max(1, cooperative_blocks))
        path = "grid"
    else:
        blocks = 0
        path = "multi"
    return Plan(path, T, blocks, shared, hchunk, hchunks, rchunk, rchunks, forward_items, backward_items, update_blocks)
