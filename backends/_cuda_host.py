"""Host side of the CUDA backends: device arrays, the launch plan, the launches. ``CudaBackend``
is the ``backends.base.Backend`` of one CUDA compiler (``COMPILER``); the backends are its
subclasses that declare themselves (``backends/numba_cuda_backend.py``,
``backends/numba_cuda_mlir_backend.py``).

Constructing one imports no compiler: ``cuda`` (the compiler's module) and ``source`` (the
kernels, ``backends/_cuda_kernels.py``, executed for that compiler) are loaded on first use, by
``available`` or ``prepare``.

``prepare`` copies X, y and the weights to the device once, plans the launch
(``backends/_cuda_plan.py``), compiles the kernels it needs eagerly for their one signature and
configures each launch once. ``run`` is the loop alone: one launch for the whole run on the block
and grid paths (three per iteration on the multi path), then one synchronisation. The logged
losses stay on the device until ``fetch``. ``describe`` reports what a prepared run launches (path,
grid, occupancy cap, launch bound, registers, the cost model's predicted time).
"""

# The sizes are named as in SPEC.md: N rows, D inputs, H hidden units, O outputs.
# ruff: noqa: E741

from __future__ import annotations

import os
import sys
from typing import ClassVar

import numpy as np

from backends import _cuda_launch, _cuda_plan
from backends._cuda_compiler import import_cuda, load_kernels, version
from backends._cuda_launch import as_fault, ceil_div, takes_launch_bounds
from backends.base import Backend, Problem, TrainResult, UnsupportedProblem, n_logged

#: Under the simulator every GPU thread is a Python thread: blocks of this many threads at most.
SIMULATOR_THREADS = 8


def simulator_on() -> bool:
    """NUMBA_ENABLE_CUDASIM as numba-cuda reads it (set to anything but 0)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


class CudaBackend(Backend):
    """The training loop as CUDA kernels compiled by ``COMPILER`` (a subclass names it)."""

    COMPILER: ClassVar[str] = ""
    DEVICE = "gpu"

    def __init__(self) -> None:
        self.version = version(self.COMPILER)
        #: numba-cuda's simulator stands in for a GPU (NUMBA_ENABLE_CUDASIM=1); numba-cuda-mlir has none.
        self.SIMULATED = self.COMPILER == "numba-cuda" and simulator_on()
        self.COMPILES = not self.SIMULATED  # the simulator interprets the kernels' Python
        self._cuda = None
        self._source = None
        self._properties: dict | None = None
        self._compiled: dict[tuple[str, int, int, str], object] = {}

    @property
    def cuda(self):
        """The compiler's ``cuda`` module, imported on first use (ImportError when it is missing)."""
        if self._cuda is None:
            self._cuda = import_cuda(self.COMPILER)
        return self._cuda

    @property
    def source(self):
        """The kernel source executed for this compiler (``_cuda_compiler.load_kernels``)."""
        if self._source is None:
            self._source = load_kernels(self.COMPILER)
        return self._source

    # --- the device ---------------------------------------------------------------------------

    def available(self) -> str | None:
        try:
            ok = self.cuda.is_available()
        except Exception as exc:  # a broken driver install must not break the registry
            return f"CUDA check failed: {type(exc).__name__}: {exc}"
        if ok:
            return None
        if self.COMPILER == "numba-cuda":
            return "no CUDA GPU found (cuda.is_available() is False); set NUMBA_ENABLE_CUDASIM=1 to use the simulator"
        return f"no CUDA GPU found (cuda.is_available() is False); {self.COMPILER} has no simulator"

    def device_name(self) -> str:
        """The GPU's name for the machine fingerprint ('CUDA simulator' under the simulator)."""
        if self.SIMULATED:
            return "CUDA simulator (numba-cuda, no GPU)"
        try:
            name = self.cuda.get_current_device().name
        except Exception as exc:  # no driver or no device: say so instead of failing the fingerprint
            return f"no CUDA device ({type(exc).__name__})"
        return name.decode() if isinstance(name, bytes) else str(name)

    def device_properties(self) -> dict:
        """The properties a plan reads (``_cuda_plan.DEVICE_PROPERTY_NAMES``) of the current device.

        Under the simulator: one SM holding one block of SIMULATOR_THREADS threads (the
        simulator runs a cooperative grid of one block only).
        """
        if self._properties is None:
            self._properties = self._device_properties()
        return self._properties

    def _device_properties(self) -> dict:
        if self.SIMULATED:
            T = SIMULATOR_THREADS
            return {
                "max_threads_per_block": T,
                "multiprocessors": 1,
                "max_threads_per_sm": T,
                "max_blocks_per_sm": 1,
                "max_shared_per_block": 48 * 1024,
                "max_shared_per_sm": 48 * 1024,
                "warp": 1,
                "cooperative": True,
            }
        dev = self.cuda.get_current_device()

        def attr(name: str, default: int) -> int:
            try:
                return int(getattr(dev, name))
            except Exception:
                return default

        return {
            "max_threads_per_block": attr("MAX_THREADS_PER_BLOCK", 1024),
            "multiprocessors": attr("MULTIPROCESSOR_COUNT", 1),
            "max_threads_per_sm": attr("MAX_THREADS_PER_MULTIPROCESSOR", 2048),
            "max_blocks_per_sm": attr("MAX_BLOCKS_PER_MULTIPROCESSOR", 16),
            "max_shared_per_block": attr("MAX_SHARED_MEMORY_PER_BLOCK", 48 * 1024),
            "max_shared_per_sm": attr("MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", 64 * 1024),
            "warp": attr("WARP_SIZE", 32),
            "cooperative": bool(attr("COOPERATIVE_LAUNCH", 0)),
        }

    # --- kernels ------------------------------------------------------------------------------

    def kernel(self, dtype: str, D: int, O: int, name: str):
        """Kernel ``name`` compiled eagerly for its one signature (so a launch does no type dispatch)."""
        key = (dtype, D, O, name)
        if key not in self._compiled:
            spec = self.source.kernels(dtype, D, O)[name]
            options = {}
            if not self.SIMULATED and takes_launch_bounds(self.COMPILER, self.cuda):
                options["launch_bounds"] = spec.launch_bounds
            self._compiled[key] = self.cuda.jit(spec.signature, **options)(spec.pyfunc)
        return self._compiled[key]

    def compilations(self) -> tuple[int, int]:
        """Kernels compiled in this process (no disk cache: each is compiled on first use); none
        under the simulator, which interprets the kernels' Python (``COMPILES`` is False)."""
        return (0, 0) if self.SIMULATED else (len(self._compiled), 0)

    def admit(self, needed: int) -> None:
        """Refuse (UnsupportedProblem) a run whose device arrays would not fit in free device memory."""
        if self.SIMULATED:
            return
        try:
            free, _ = self.cuda.current_context().get_memory_info()
        except Exception:  # no memory query on this compiler: the allocation itself will say
            return
        if needed > 0.9 * free:
            raise UnsupportedProblem(f"needs ~{needed / 2**30:.2f} GiB of device memory, {free / 2**30:.2f} GiB free")

    def cooperative_blocks(self, kernel, threads: int, shared: int) -> int | None:
        """Most co-resident blocks of ``kernel`` (registers included), where the compiler says."""
        if self.SIMULATED:
            return 1  # the simulator runs a cooperative grid of one block only
        overloads = getattr(kernel, "overloads", None)
        if overloads:
            compiled = next(iter(overloads.values()))
            query = getattr(compiled, "max_cooperative_grid_blocks", None)
            if query:
                return int(query(threads, shared))
        # A compiler without the query: one block per SM is always resident (the launch bound
        # keeps a block of GRID_THREADS within one SM's registers and shared memory).
        return self.device_properties()["multiprocessors"]

    # --- the backend (backends/base.py) -----------------------------------------------------------------

    def prepare(self, problem: Problem) -> dict:
        try:
            return self._prepare(problem)
        except Exception as exc:
            fault = as_fault(exc, "preparing the run")
            if fault is exc:
                raise
            raise fault from exc

    def _prepare(self, problem: Problem) -> dict:
        self.check(problem)
        if len(problem.weights) > 2:
            raise UnsupportedProblem(
                f"{self.NAME} supports 1 or 2 weight layers (2- and 3-layer networks), not {len(problem.weights)}"
            )
        reason = self.available()
        if reason:
            raise UnsupportedProblem(reason)
        cuda = self.cuda
        props = self.device_properties()
        dtype, N = problem.dtype, problem.batch
        D, H, O = _cuda_plan.split_sizes(problem.sizes)
        t = np.dtype(dtype).type
        item = np.dtype(t).itemsize
        grid_name = "grid3" if H else "grid2"
        cap = None
        if props["cooperative"]:
            probe = _cuda_plan.plan(problem.sizes, N, item, props)
            if probe.path == "grid":
                cap = self.cooperative_blocks(self.kernel(dtype, D, O, grid_name), probe.threads, probe.shared_bytes)
        plan = _cuda_plan.plan(problem.sizes, N, item, props, cap)
        self.admit(_cuda_plan.device_bytes(problem.sizes, N, item, plan))
        layers = 3 if H else 2

        def flat(a) -> object:
            return cuda.to_device(np.ascontiguousarray(a, dtype=t).ravel())

        def scratch(size: int) -> object:
            return cuda.device_array(max(1, size), t)

        state = {
            "dtype": dtype,
            "N": N,
            "D": D,
            "H": H,
            "O": O,
            "alpha": t(problem.alpha),
            "count": float(N * O),
            "X": flat(problem.X),
            "y": flat(problem.y),
            "W": [flat(w) for w in problem.weights],
            "shapes": [w.shape for w in problem.weights],
            "losses": [],
            "plan": plan,
            "path": plan.path,
            "sizes": tuple(problem.sizes),
            "props": props,
            "cooperative_cap": cap,
            "compiler": f"{self.COMPILER} {self.version}",
        }
        T, k = plan.threads, lambda name: self.kernel(dtype, D, O, name)  # noqa: E731
        if plan.path == "block":
            state["kernels"] = [f"block{layers}_shared" if plan.shared_bytes else f"block{layers}_global"]
            if plan.shared_bytes:
                state["launch"] = k(state["kernels"][0])[1, T, 0, plan.shared_bytes]
            else:  # too big for shared memory: the same loop on global scratch arrays
                state["launch"] = k(state["kernels"][0])[1, T]
                state["scratch"] = [scratch(H * O), scratch(N * H), scratch(N * O)] if H else [scratch(N * O)]
                state["part"] = scratch(T)
            return state
        state["zpart"] = scratch(plan.hchunks * N * O)
        state["g0part"] = scratch(plan.rchunks * D * (H or O))
        state["g1part"] = scratch(plan.rchunks * H * O)
        state["errpart"] = scratch(plan.rchunks if H else ceil_div(N, T))
        state["d"] = scratch(N * O)  # 2-layer deltas
        if plan.path == "grid":
            state["kernels"] = [grid_name]
            state["launch"] = k(grid_name)[plan.blocks, T, 0, plan.shared_bytes]
        else:
            shared = plan.shared_bytes

            def grid(items: int) -> int:  # one block per item, or MAX_BLOCKS walking several each
                return min(items, plan.blocks) if plan.blocks else items

            names = [f"forward{layers}_phase", f"backward{layers}_phase", "update_phase"]
            state["kernels"] = names
            state["phases"] = (
                k(names[0])[grid(plan.forward_items), T, 0, shared],
                k(names[1])[grid(plan.backward_items), T, 0, shared if H else 0],
                k(names[2])[grid(plan.update_blocks), T, 0, shared],
            )
        return state

    def describe(self, state: dict) -> dict:
        """What a prepared run (``prepare``'s state) will launch: path, threads and blocks (the
        multi path: its most blocks per phase launch), the blocks the occupancy query granted
        (None where it was not asked), the launch bound ("256,2"; "" under the simulator, which
        applies none), registers and local memory per thread of the kernel used (the largest over
        the multi path's three; None where the compiler cannot say, as under the simulator:
        ``spill_bytes`` is the driver's local memory per thread, spills included), and the cost
        model's PREDICTED microseconds per iteration (``_cuda_plan.layout_seconds``)."""
        plan = state["plan"]
        item = np.dtype(state["dtype"]).itemsize
        table = self.source.kernels(state["dtype"], state["D"], state["O"])
        specs = [table[name] for name in state["kernels"]]
        bound = "" if self.SIMULATED else ",".join(str(b) for b in np.atleast_1d(specs[0].launch_bounds))
        registers = spill = None
        for name in state["kernels"]:
            regs, local = self._resources(self.kernel(state["dtype"], state["D"], state["O"], name))
            if regs is not None:
                registers = max(registers or 0, regs)
            if local is not None:
                spill = max(spill or 0, local)
        if plan.path == "multi":
            items = (plan.forward_items, plan.backward_items, plan.update_blocks)
            blocks = max(min(n, plan.blocks) if plan.blocks else n for n in items)
        else:
            blocks = plan.blocks
        seconds = _cuda_plan.layout_seconds(plan, state["sizes"], state["N"], item, state["props"])
        return {
            "path": plan.path,
            "threads": plan.threads,
            "blocks": blocks,
            "cooperative_cap": state["cooperative_cap"],
            "launch_bound": bound,
            "registers": registers,
            "spill_bytes": spill,
            "predicted_us": seconds * 1e6,
        }

    def _resources(self, kernel) -> tuple[int | None, int | None]:
        """(registers, local memory bytes) per thread of a compiled kernel; None where unknown."""
        if self.SIMULATED:
            return None, None
        try:
            compiled = next(iter(kernel.overloads.values()))
            ensure = getattr(compiled, "_ensure_kernel_attrs", None)  # numba-cuda-mlir: from the driver
            if ensure:
                ensure()
            return int(compiled.regs_per_thread), int(compiled.local_mem_per_thread)
        except Exception:  # a compiler without these attributes
            return None, None

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        """The whole loop on the device; losses stay there; synchronises before returning."""
        count = n_logged(iterations, log_every)
        losses = self.cuda.device_array(max(count, 1), np.float64)
        switch = sys.getswitchinterval()
        if self.SIMULATED:  # simulated GPU threads are Python threads: switch between them more often
            sys.setswitchinterval(1e-5)
        try:
            if iterations > 0:
                if state["path"] == "multi":
                    _cuda_launch.run_phases(state, iterations, log_every, losses)
                else:
                    _cuda_launch.run_persistent(state, iterations, log_every, losses)
            self.cuda.synchronize()
        except Exception as exc:
            fault = as_fault(exc, f"running the {state['path']} path")
            if fault is exc:
                raise
            raise fault from exc
        finally:
            if self.SIMULATED:
                sys.setswitchinterval(switch)
        state["losses"].append((losses, count))

    def fetch(self, state: dict) -> TrainResult:
        """Copy the weights and the logged losses back to the host (once, after the run)."""
        weights = [w.copy_to_host().reshape(shape) for w, shape in zip(state["W"], state["shapes"])]
        parts = [losses.copy_to_host()[:count] for losses, count in state["losses"]]
        losses = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
        return TrainResult(weights, losses)
