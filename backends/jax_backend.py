"""`jax`: the whole loop as one jitted XLA computation (lax.fori_loop), on JAX's default device.

JAX is imported on first use (``_jax``: ``available``, ``prepare``), not with this file, so the
backend's declarations are readable where JAX is not installed. That first import turns on
``jax_enable_x64`` for the whole process: without it JAX silently computes float64 problems in
float32. That is process-global (every JAX user in this process sees 64-bit defaults); the
harness runs each backend in its own worker process, so nothing else is affected there.

Compilation: ``iterations`` and ``log_every`` are traced loop bounds, not static arguments, so
calibrating with different T reuses one executable. What is static: the shapes, the dtype, the
depth (the number of weight matrices), the number of logged losses (the length of the loss
buffer) and the unroll factor -- so runs with ``log_every=0`` never recompile when only T changes.
The jitted function is built once per process (``_train``).

Threads: XLA's CPU runtime sizes its intra-op pool from the CPUs the process may run on, and in
jaxlib 0.10 no flag changes that (``--xla_cpu_multi_thread_eigen=false`` and
``intra_op_parallelism_threads`` in ``XLA_FLAGS`` were measured to have no effect). The one
working control is CPU affinity: ``set_threads(n)`` confines every thread of this process to n CPUs.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np

from backends.base import Backend, Problem, TrainResult, missing_library, n_logged

# XLA compilations in this process, counted by jax.monitoring listeners (registered by ``_jax``):
# [executables built (compiled, or loaded from the persistent compilation cache), of which loaded
# from that cache].
_BUILT = [0, 0]


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":  # jax._src.dispatch.BACKEND_COMPILE_EVENT
        _BUILT[0] += 1


def _on_event(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _BUILT[1] += 1


@cache
def _jax():
    """JAX, imported once per process with the settings that must come first.

    Raises ImportError where JAX is not installed (not cached: a later call tries again).
    """
    # On a GPU, JAX reserves 75% of the device's memory when it first touches it. The sweep keeps
    # one worker process per backend alive at once (numba-cuda, cupy and torch beside this one), so
    # JAX allocates on demand instead, unless the user chose otherwise.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy  # noqa: F401  (jax.numpy and jax.lax as attributes below)
    from jax import lax  # noqa: F401

    jax.config.update("jax_enable_x64", True)  # process-global: see the module docstring
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)
    return jax


def sigmoid(z):
    return 1.0 / (1.0 + _jax().numpy.exp(-z))  # exp(-z) -> inf for z < -709 gives s = 0, as in numpy


def _mm(a, b):
    # On NVIDIA GPUs JAX's default precision runs float32 matmuls in TF32 (10-bit mantissa), which
    # alone can use up the float32 agreement budget; "highest" asks for true float32 (no-op on CPU).
    jax = _jax()
    return jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _step(X, y, W, alpha):
    """One iteration: the new weights and this iteration's error (before the update)."""
    a = [X]
    for w in W:
        a.append(sigmoid(_mm(a[-1], w)))
    err = y - a[-1]
    delta = err * a[-1] * (1 - a[-1])
    W = list(W)
    for layer in reversed(range(len(W))):
        grad = _mm(a[layer].T, delta)
        if layer > 0:  # uses W[layer] before this iteration's update
            delta = _mm(delta, W[layer].T) * a[layer] * (1 - a[layer])
        W[layer] = W[layer] + alpha * grad
    return tuple(W), err


def _loop(n, body, W, unroll: int):
    """``n`` (traced) applications of ``body`` to W, ``unroll`` of them per loop trip."""
    lax = _jax().lax
    if unroll == 1:
        return lax.fori_loop(0, n, lambda _, W: body(W), W)

    def trip(_, W):
        for _ in range(unroll):  # traced ``unroll`` times: one loop trip runs them back to back
            W = body(W)
        return W

    W = lax.fori_loop(0, n // unroll, trip, W)
    return lax.fori_loop(0, n % unroll, lambda _, W: body(W), W)


def _train_loop(X, y, W, alpha, iterations, log_every, n_log, unroll=1):
    """``iterations`` steps; the loss of iteration k*log_every goes to losses[k], on the device.

    With logging the loop is chunked: chunk k runs one logged step, then the unlogged rest of its
    ``log_every`` iterations, so no iteration pays for a branch or an unused reduction. ``unroll``
    (static) steps run per trip of the unlogged loops (``backends.jax_unrolled_backend``).
    """
    jax = _jax()
    jnp, lax = jax.numpy, jax.lax
    losses = jnp.zeros(n_log, X.dtype)

    def unlogged(W):
        return _step(X, y, W, alpha)[0]

    if n_log == 0:
        return _loop(iterations, unlogged, W, unroll), losses

    def chunk(k, carry):
        W, losses = carry
        W, err = _step(X, y, W, alpha)
        losses = losses.at[k].set(jnp.mean(jnp.abs(err)))
        rest = jnp.minimum(log_every, iterations - k * log_every) - 1
        return _loop(rest, unlogged, W, unroll), losses

    return lax.fori_loop(0, n_log, chunk, (W, losses))


@cache
def _train():
    """``_train_loop`` under ``jax.jit``, built once per process (its executables cached on it)."""
    return _jax().jit(_train_loop, static_argnames=("n_log", "unroll"))


class Jax(Backend):
    NAME = "jax"
    SUMMARY = "JAX jit with the whole loop in lax.fori_loop"
    PACKAGE = "jax"
    DEVICE = "any"
    COLOUR, MARKER = "#CC79A7", "v"
    FAMILY = "jax"
    LEVEL = "plain"

    def available(self) -> str | None:
        try:
            _jax()
        except ImportError as exc:
            return missing_library("jax", exc)
        return None

    def runs_on(self) -> str:
        """JAX's default device: "gpu" where the process has one JAX can use, else "cpu"."""
        return "gpu" if _jax().default_backend() in ("gpu", "cuda", "rocm") else "cpu"

    def unroll_for(self, state: dict) -> int:
        """Iterations traced back to back per loop trip (1: a plain fori_loop)."""
        return 1

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        put = _jax().device_put
        return {
            "X": put(problem.X),
            "y": put(problem.y),
            "W": tuple(put(np.array(w, copy=True)) for w in problem.weights),
            "alpha": put(problem.X.dtype.type(problem.alpha)),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        n_log = n_logged(iterations, log_every)
        W, losses = _train()(
            state["X"], state["y"], state["W"], state["alpha"], iterations, max(log_every, 1), n_log,
            self.unroll_for(state),
        )  # fmt: skip
        state["W"] = _jax().block_until_ready(W)  # JAX dispatches asynchronously: finish before returning
        state["losses"].append(losses)

    def fetch(self, state: dict) -> TrainResult:
        losses = [np.asarray(x, dtype=np.float64) for x in state["losses"]]
        return TrainResult([np.array(w) for w in state["W"]], np.concatenate(losses) if losses else np.empty(0))

    def compilations(self) -> tuple[int, int]:
        """XLA executables built in this process, and how many came from the persistent cache."""
        return _BUILT[0], _BUILT[1]

    def threads(self) -> int | None:
        """CPUs XLA's thread pool can use (None on a GPU, where host threads only dispatch)."""
        return len(os.sched_getaffinity(0)) if self.runs_on() == "cpu" else None

    def set_threads(self, n: int) -> None:
        """Confine every thread of this process (XLA's pool included) to the first ``n`` allowed CPUs.

        ``os.sched_setaffinity(0, ...)`` would move only the calling thread; XLA's pool threads
        already exist, so each thread of the process is moved. This also binds NumPy's BLAS
        threads, which the harness limits to the same count anyway.
        """
        if self.runs_on() != "cpu":
            return
        allowed = sorted(os.sched_getaffinity(0))
        if n < 1:
            raise ValueError(f"thread count must be >= 1, got {n}")
        cpus = set(allowed[:n])
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
                pass
