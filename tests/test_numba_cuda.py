"""CUDA-specific checks of the `numba-cuda` backend: both launch paths, both dtypes, awkward sizes.

`make test` runs these under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where every GPU thread
is a Python thread: the runs here are short and the blocks tiny. On a machine with a real GPU the
same tests run on the device, plus the full seed reproductions marked ``gpu``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.base import Problem, UnsupportedProblem, train
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import XOR2_PUBLISHED_OUTPUT, XOR3_PUBLISHED_LOSSES, scaled, xor2, xor3

nc = pytest.importorskip("backends.numba_cuda", reason="numba-cuda is not installed")
cuda = nc.cuda  # module-level name: the simulator swaps `cuda` inside kernels' globals
WHY = nc.available()
needs_cuda = pytest.mark.skipif(WHY is not None, reason=f"numba-cuda unavailable: {WHY}")

# A device small enough that the multi-kernel path splits both the hidden units and the rows into
# several chunks even for the tiny problems the simulator can afford (valid on a real GPU too).
SMALL_DEVICE = {
    "max_threads_per_block": 4,
    "multiprocessors": 4,
    "max_threads_per_sm": 16,
    "max_shared_per_block": 48 * 1024,
    "warp": 1,
}


@pytest.fixture(params=["single", "multi"])
def path(request, monkeypatch):
    """Force one launch path through the module's threshold."""
    monkeypatch.setattr(nc, "SINGLE_BLOCK_MAX_STEPS", math.inf if request.param == "single" else 0)
    return request.param


def agree(problem: Problem, iterations: int, log_every: int, expect_path: str | None = None):
    state = nc.prepare(problem)
    if expect_path:
        assert state["path"] == expect_path
    nc.run(state, iterations, log_every)
    result = nc.fetch(state)
    reference = reference_result(problem, iterations, log_every)
    error = max_relative_error(result, reference)
    assert error <= TOLERANCE[problem.dtype], f"{problem.name} {problem.dtype}: relative error {error:.3g}"
    assert all(w.dtype == problem.X.dtype for w in result.weights)
    assert result.losses.dtype == np.float64
    return state, result


# --- module protocol, no device needed -------------------------------------------------------------


def test_protocol_attributes():
    assert nc.DEVICE == "gpu"
    assert nc.DTYPES == ("float64", "float32")
    assert isinstance(nc.SIMULATED, bool)


def test_unavailable_reason_names_the_simulator(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    reason = nc.available()
    assert "no CUDA GPU" in reason and "NUMBA_ENABLE_CUDASIM=1" in reason


def test_path_choice_follows_problem_size():
    h100ish = {
        "max_threads_per_block": 1024,
        "multiprocessors": 132,
        "max_threads_per_sm": 2048,
        "max_shared_per_block": 48 * 1024,
        "warp": 32,
    }
    assert nc.choose_path(xor3(), h100ish) == "single"
    assert nc.choose_path(xor2(), h100ish) == "single"
    assert nc.choose_path(scaled(65536, 4096), h100ish) == "multi"
    assert nc.choose_path(scaled(1000, 100), h100ish) == "multi"
    threads = nc.single_block_threads(xor3().sizes, 4, h100ish)
    assert threads % 32 == 0 and threads <= 1024


def test_launch_configuration_fills_the_device():
    props = {"multiprocessors": 132, "max_threads_per_sm": 2048}
    size, count = nc._chunks(65536, 16 * 256, props)  # backward of N=65536, H=4096
    assert count * 16 * 256 >= 132 * 2048 and size * count >= 65536 and size >= nc.MIN_CHUNK
    size, count = nc._chunks(5, 4096, props)  # nothing to split
    assert (size, count) == (5, 1)


# --- on the device (or the simulator) ---------------------------------------------------------------


@needs_cuda
def test_device_name():
    assert isinstance(nc.device_name(), str) and nc.device_name()


@needs_cuda
@pytest.mark.parametrize("layers", [3, 4])
def test_deeper_networks_are_refused(layers):
    with pytest.raises(UnsupportedProblem, match="weight layers"):
        nc.prepare(scaled(4, 3, layers=layers))


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_extremes_are_exact(dtype):
    t = np.dtype(dtype).type
    sig = nc._sigmoid(dtype)

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
    assert got[0] == 0 and got[1] == 0 and got[4] == 0.5 and got[6] == 1 and got[7] == 1  # exactly
    assert got[2] == (0 if dtype == "float32" else 1 / (1 + math.exp(400.0)))
    with np.errstate(over="ignore"):
        reference = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(got, reference, rtol=1e-15 if dtype == "float64" else 1e-6, atol=1e-37)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seed_problems_short(path, dtype):
    # the persistent kernel is cheap enough under the simulator to go well past the first log point
    iterations = (3000 if dtype == "float64" else 600) if path == "single" else 30
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
    agree(scaled(17, 33, dtype, seed=17 * 31 + 33), 6 if path == "multi" else 10, 3, path)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
def test_multi_kernel_chunked_reductions(monkeypatch, dtype, layers):
    """Several hidden chunks and row chunks: the two-phase gradient and pre-activation sums."""
    monkeypatch.setattr(nc, "SINGLE_BLOCK_MAX_STEPS", 0)
    monkeypatch.setattr(nc, "MIN_CHUNK", 2)
    monkeypatch.setattr(nc, "device_properties", lambda: SMALL_DEVICE)
    problem = scaled(11, 7, dtype, seed=3, inputs=4, outputs=2, layers=layers)
    state, _ = agree(problem, 6, 2, "multi")
    assert state["rchunks"] > 1 and state["row_blocks"] > 1
    if layers == 2:
        assert state["hchunks"] > 1 and state["hblocks"] > 1


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
def test_single_block_global_scratch(monkeypatch, dtype, layers):
    """Too big for shared memory: the persistent kernel works from global scratch instead."""
    monkeypatch.setattr(nc, "SINGLE_BLOCK_MAX_STEPS", math.inf)
    monkeypatch.setattr(nc, "device_properties", lambda: {**SMALL_DEVICE, "max_shared_per_block": 64})
    state, _ = agree(scaled(6, 5, dtype, seed=4, layers=layers, outputs=2), 20, 5, "single")
    assert state["shared_bytes"] == 0


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
def test_no_iterations_and_no_logging(path):
    problem = xor3()
    state = nc.prepare(problem)
    nc.run(state, 0, 10)
    result = nc.fetch(state)
    assert result.losses.shape == (0,)
    assert all(np.array_equal(w, w0) for w, w0 in zip(result.weights, problem.weights))
    result = train(nc, problem, 5, 0)
    assert result.losses.shape == (0,)
    assert max_relative_error(result, reference_result(problem, 5, 0)) <= TOLERANCE["float64"]


@needs_cuda
def test_run_restores_the_switch_interval():
    import sys

    before = sys.getswitchinterval()
    train(nc, xor2(), 2, 1)
    assert sys.getswitchinterval() == before


@needs_cuda
def test_initial_weights_are_not_modified(path):
    problem = xor3()
    before = [w.copy() for w in problem.weights]
    train(nc, problem, 3, 1)
    assert all(np.array_equal(w, b) for w, b in zip(problem.weights, before))


# --- launches: how many, and with which argument types ---------------------------------------------

H100_LIKE = {
    "max_threads_per_block": 1024,
    "multiprocessors": 132,
    "max_threads_per_sm": 2048,
    "max_shared_per_block": 48 * 1024,
    "warp": 32,
}


class LaunchLog:
    """Stands in for the kernel tables: records each launch (kernel, argument types), then runs it."""

    def __init__(self, monkeypatch):
        self.launches: list[tuple[str, tuple[str, ...]]] = []
        single, multi = nc._single_kernels, nc._multi_kernels
        monkeypatch.setattr(nc, "_single_kernels", lambda *key: self.wrap(single(*key)))
        monkeypatch.setattr(nc, "_multi_kernels", lambda *key: self.wrap(multi(*key)))

    def wrap(self, kernels: dict) -> dict:
        return {name: self.Kernel(self, name, kernel) for name, kernel in kernels.items()}

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

        def __getitem__(self, config):
            configured = self.kernel[config]

            def launch(*args):
                self.log.launches.append((self.name, tuple(LaunchLog.argtype(a) for a in args)))
                return configured(*args)

            return launch


@needs_cuda
@pytest.mark.parametrize("problem", [xor3, xor2], ids=["xor3", "xor2"])
def test_seed_problem_is_one_launch_per_run(monkeypatch, problem):
    """The whole run at the seed sizes is one kernel launch, with a real GPU's launch limits too."""
    monkeypatch.setattr(nc, "device_properties", lambda: H100_LIKE)
    log = LaunchLog(monkeypatch)
    state = nc.prepare(problem())
    assert state["path"] == "single" and state["threads"] == 32  # one warp covers 4 rows x 4 units
    nc.run(state, 12, 4)
    assert [name for name, _ in log.launches] == [f"single{len(problem().weights)}_shared"]
    result = nc.fetch(state)
    assert max_relative_error(result, reference_result(problem(), 12, 4)) <= TOLERANCE["float64"]


@needs_cuda
@pytest.mark.parametrize("layers", [1, 2])
def test_multi_path_launch_sequence(monkeypatch, layers):
    """Per iteration: forward (+ output when the hidden units are chunked), backward, update."""
    monkeypatch.setattr(nc, "SINGLE_BLOCK_MAX_STEPS", 0)
    monkeypatch.setattr(nc, "MIN_CHUNK", 2)
    monkeypatch.setattr(nc, "device_properties", lambda: SMALL_DEVICE)
    log = LaunchLog(monkeypatch)
    state = nc.prepare(scaled(9, 6, seed=5, layers=layers))
    nc.run(state, 3, 2)
    if layers == 2:
        assert state["hchunks"] > 1
        per_iteration = ["forward", "output", "backward", "update"]
    else:
        per_iteration = ["forward1", "backward1", "update"]
    assert [name for name, _ in log.launches] == per_iteration * 3


@needs_cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_launch_argument_types_match_the_compiled_signatures(monkeypatch, dtype):
    """harness.cuda_ptx compiles each kernel for real GPUs with these types: they must be the launched ones."""
    from harness.cuda_ptx import signatures

    expected = {name: tuple(str(t) for t in types) for name, types in signatures(dtype).items()}
    log = LaunchLog(monkeypatch)
    monkeypatch.setattr(nc, "MIN_CHUNK", 2)
    monkeypatch.setattr(nc, "device_properties", lambda: SMALL_DEVICE)
    for steps, shared in ((math.inf, 48 * 1024), (math.inf, 64), (0, 48 * 1024)):
        monkeypatch.setattr(nc, "SINGLE_BLOCK_MAX_STEPS", steps)
        monkeypatch.setattr(nc, "device_properties", lambda shared=shared: {**SMALL_DEVICE, "max_shared_per_block": shared})
        for layers in (1, 2):
            train(nc, scaled(9, 6, dtype, seed=5, layers=layers), 2, 1)
    launched = dict(log.launches)
    assert set(launched) == set(expected)  # every kernel was launched at least once
    for name, types in log.launches:
        assert types == expected[name], name


# --- the published seed runs: full length ----------------------------------------------------------

full_seed_run = pytest.mark.skipif(
    nc.SIMULATED,
    reason="the full 60000-iteration seed run takes minutes under the CUDA simulator; "
    "it runs on a real GPU (shortened runs above cover it here)",
)


@pytest.mark.gpu
@needs_cuda
@full_seed_run
def test_xor3_full_run_reproduces_published_losses(path):
    result = train(nc, xor3(), 60000, 10000)
    assert tuple(float(f"{loss:.12g}") for loss in result.losses) == XOR3_PUBLISHED_LOSSES
    assert max_relative_error(result, reference_result(xor3(), 60000, 10000)) <= TOLERANCE["float64"]


@pytest.mark.gpu
@needs_cuda
@full_seed_run
def test_xor2_full_run_reproduces_published_output(path):
    result = train(nc, xor2(), 9999, 0)
    output = 1 / (1 + np.exp(-(xor2().X @ result.weights[0])))
    assert tuple(f"{v:.8f}" for v in output.ravel()) == tuple(f"{v:.8f}" for v in XOR2_PUBLISHED_OUTPUT)
