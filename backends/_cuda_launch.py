"""The launches of the CUDA backends, path by path: the argument list of each kernel as the host
passes it (``backends/_cuda_kernels.py`` defines the kernels, ``backends/_cuda_host.py`` prepares
the state these read), and a driver error turned into a ``DeviceFault``.
"""

# The sizes are named as in SPEC.md: N rows, D inputs, H hidden units, O outputs.
# ruff: noqa: E741

from __future__ import annotations

import inspect

from backends.base import DeviceFault, UnsupportedProblem


def as_fault(exc: Exception, doing: str) -> Exception:
    """A CUDA driver or launch error as a DeviceFault (one line, what was being done); other
    exceptions (UnsupportedProblem, a bug) unchanged."""
    if isinstance(exc, (UnsupportedProblem, DeviceFault)):
        return exc
    module, name = type(exc).__module__ or "", type(exc).__name__
    # numba-cuda's and numba-cuda-mlir's driver errors (.cudadrv.), cuda-python's (cuda.core,
    # cuda.bindings: CUDAError), whichever layer raised them
    if "cudadrv" in module or module.startswith("cuda.") or name.lower().startswith("cuda"):
        message = " ".join(str(exc).split())
        return DeviceFault(f"{type(exc).__name__} while {doing}: {message}")
    return exc


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def takes_launch_bounds(compiler: str, cuda) -> bool:
    """Whether ``cuda.jit`` takes a launch bound: numba-cuda names the option in its signature where
    it has it; numba-cuda-mlir takes ``**kws`` and validates them itself (it has the option)."""
    if compiler == "numba-cuda-mlir":
        return True
    try:
        return "launch_bounds" in inspect.signature(cuda.jit).parameters
    except (TypeError, ValueError):
        return False


def run_persistent(state: dict, iterations: int, log_every: int, losses) -> None:
    """Block and grid paths: one launch runs every iteration."""
    plan, N, H, alpha, count = state["plan"], state["N"], state["H"], state["alpha"], state["count"]
    X, y, W = state["X"], state["y"], state["W"]
    launch = state["launch"]
    if plan.path == "block":
        if "scratch" not in state:
            if H:
                launch(X, y, W[0], W[1], losses, N, H, alpha, iterations, log_every, count)
            else:
                launch(X, y, W[0], losses, N, alpha, iterations, log_every, count)
        elif H:
            W1b, a1, d2 = state["scratch"]
            launch(X, y, W[0], W[1], W1b, a1, d2, state["part"], losses, N, H, alpha, iterations, log_every, count)
        else:
            launch(X, y, W[0], state["scratch"][0], state["part"], losses, N, alpha, iterations, log_every, count)
    elif H:
        launch(X, y, W[0], W[1], state["zpart"], state["g0part"], state["g1part"], state["errpart"], losses,
               N, H, plan.hchunk, plan.hchunks, plan.rchunk, alpha, iterations, log_every, count)  # fmt: skip
    else:
        launch(X, y, W[0], state["d"], state["g0part"], state["errpart"], losses,
               N, plan.rchunk, alpha, iterations, log_every, count)  # fmt: skip


def run_phases(state: dict, iterations: int, log_every: int, losses) -> None:
    """Multi path: the grid path's three phases as three launches per iteration."""
    plan, N, H, O, alpha, count = state["plan"], state["N"], state["H"], state["O"], state["alpha"], state["count"]
    X, y, W = state["X"], state["y"], state["W"]
    zpart, g0part, g1part, errpart, d = state["zpart"], state["g0part"], state["g1part"], state["errpart"], state["d"]
    forward, backward, update = state["phases"]
    nerr = plan.rchunks if H else ceil_div(N, plan.threads)
    for it in range(iterations):
        logged = log_every > 0 and it % log_every == 0
        slot = it // log_every if logged else -1
        if H:
            forward(X, W[0], W[1], zpart, N, H, plan.hchunk, plan.hchunks)
            backward(X, y, W[0], W[1], zpart, g0part, g1part, errpart, N, H, plan.hchunks, plan.rchunk, logged)
            update(W[0], g0part, W[1], g1part, H * O, plan.rchunks, alpha, errpart, nerr, losses, slot, count)
        else:
            forward(X, y, W[0], d, errpart, N, logged)
            backward(X, d, g0part, N, plan.rchunk)
            update(W[0], g0part, W[0], g0part, 0, plan.rchunks, alpha, errpart, nerr, losses, slot, count)
