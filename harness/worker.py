"""One backend in its own process, so a crash, a hang or an abort costs one point, not the sweep.

The parent (``harness.bench``) sends requests over a pipe; the worker answers each with a dict.
Requests:
  ("point", Point, reference)  -> validate against the reference, measure first call, calibrate T
  ("repeat",)                  -> one timed run of T iterations from fresh initial weights
  ("close",)
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass

import numpy as np

from backends.base import DeviceFault, TrainResult, UnsupportedProblem, set_threads_of, threads_of


@dataclass(frozen=True)
class Point:
    backend: str
    dtype: str
    batch: int
    hidden: int
    seed: int
    validate_iterations: int
    log_every: int
    min_time: float  # a timed run shorter than this is too short to trust: T is raised until it is not
    max_iterations: int


def _finite(result: TrainResult) -> bool:
    return all(np.all(np.isfinite(w)) for w in result.weights) and bool(np.all(np.isfinite(result.losses)))


class _Runner:
    def __init__(self, backend: str, threads: int | None):
        import backends

        self.module = backends.load(backend)  # availability was checked by _serve
        if threads:
            apply_threads(self.module, threads)
        self.problem = None
        self.iterations = 1

    def threads(self) -> int | None:
        return threads_of(self.module)

    def timed_run(self, iterations: int) -> tuple[float, float, TrainResult]:
        """Seconds of run() alone and of prepare+run+fetch; preparation is a fresh copy each time."""
        m = self.module
        start = time.perf_counter()
        state = m.prepare(self.problem)
        begin = time.perf_counter()
        m.run(state, iterations, 0)  # returns only when finished (backends synchronise)
        end = time.perf_counter()
        result = m.fetch(state)
        done = time.perf_counter()
        return end - begin, done - start, result

    def point(self, point: Point, reference: TrainResult) -> dict:
        from harness.agreement import TOLERANCE, max_relative_error
        from harness.problems import scaled

        self.problem = scaled(point.batch, point.hidden, point.dtype, point.seed)
        m = self.module
        start = time.perf_counter()
        try:
            state = m.prepare(self.problem)
            m.run(state, point.validate_iterations, point.log_every)
            result = m.fetch(state)
        except UnsupportedProblem as exc:
            return {"status": "skipped", "reason": f"unsupported: {exc}"}
        first_call = time.perf_counter() - start
        if not _finite(result):
            return {"status": "unhealthy", "reason": "NaN or inf in weights or losses", "compile_seconds": first_call}
        error = max_relative_error(result, reference)
        if not error <= TOLERANCE[point.dtype]:
            return {
                "status": "invalid",
                "reason": f"max relative error {error:.3g} > {TOLERANCE[point.dtype]:g} vs float64 numpy",
                "compile_seconds": first_call,
                "max_rel_error": error,
            }
        # The timed runs log nothing (log_every = 0), a branch of its own in some backends (jax
        # compiles a variant, numba-cuda launches other kernels): validate that path too, on the
        # same iterations, against the reference's weights.
        state = m.prepare(self.problem)
        m.run(state, point.validate_iterations, 0)
        unlogged = m.fetch(state)
        silent = max_relative_error(unlogged, TrainResult(reference.weights, np.empty(0)))
        if not (_finite(unlogged) and silent <= TOLERANCE[point.dtype]):
            return {
                "status": "invalid",
                "reason": f"the unlogged (timed) path: max relative error {silent:.3g} > {TOLERANCE[point.dtype]:g} vs float64 numpy",
                "compile_seconds": first_call,
                "max_rel_error": silent,
            }
        error = max(error, silent)
        # Calibrate: one iteration tells the cost; raise T until one timed run lasts min_time. The
        # first short run is a warm-up: the timed path (log_every = 0) may compile a variant of
        # its own (JAX specialises on the number of logged losses).
        self.timed_run(1)
        one, _, _ = self.timed_run(1)
        if one < 5 * point.min_time:
            # One run can hit a hiccup (a descheduled thread) and set T far too low; every repeat
            # would then be a few iterations at the mercy of the next one: fastest of three (the
            # two extra runs cost at most 10 x min_time, and nothing where T is large anyway).
            one = min(one, self.timed_run(1)[0], self.timed_run(1)[0])
        iterations = max(1, min(point.max_iterations, math.ceil(point.min_time / max(one, 1e-9))))
        seconds = one
        if iterations > 1:
            seconds, _, _ = self.timed_run(iterations)
        while seconds < point.min_time and iterations < point.max_iterations:
            iterations = min(point.max_iterations, iterations * 2)
            seconds, _, _ = self.timed_run(iterations)
        self.iterations = iterations
        return {
            "status": "ok",
            "compile_seconds": first_call,
            "max_rel_error": error,
            "iterations": iterations,
            "seconds_per_iteration": seconds / iterations,
            "threads": self.threads(),
        }

    def repeat(self) -> dict:
        seconds, e2e, result = self.timed_run(self.iterations)
        if not _finite(result):
            return {"status": "unhealthy", "reason": "NaN or inf in weights after a timed run"}
        return {"status": "ok", "seconds": seconds, "seconds_e2e": e2e}


def apply_threads(module, threads: int) -> None:
    """Give every CPU library the same thread count (BLAS, Numba, and the backend's own pool)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    set_threads_of(module, threads)


def _serve(conn, backend: str, threads: int | None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    import backends

    # Checked here, not in the parent: the parent then never imports a backend's library (and
    # torch-compile's trial compilation runs once, in the process that uses it).
    why = backends.availability(backend)
    if why:
        conn.send({"status": "unavailable", "reason": why})
        return
    try:
        runner = _Runner(backend, threads)
    except Exception as exc:
        conn.send({"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
        return
    device = runner.module.DEVICE  # where this backend runs in this process
    conn.send({"status": "ready", "library": backends.library(backend), "device": device})
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request[0] == "close":
            return
        try:
            reply = runner.point(*request[1:]) if request[0] == "point" else runner.repeat()
        except DeviceFault as exc:
            # The device's state is unknown: answer, then end this worker (the parent starts a
            # fresh one, with a fresh device context, for the next point).
            conn.send({"status": "crashed", "reason": f"device fault: {exc}", "fatal": True})
            return
        except MemoryError:
            reply = {"status": "failed", "reason": "out of memory (MemoryError)"}
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reply = {"status": "failed", "reason": f"{type(exc).__name__}: {exc} ({os.path.basename(last.filename)}:{last.lineno})"}
        conn.send(reply)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of process ``pid`` so far, in seconds, at nanosecond resolution.

    Reads /proc/<pid>/task/*/schedstat (Linux); elsewhere psutil's clock-tick resolution. A vanished
    process or thread counts as idle.
    """
    tasks = f"/proc/{pid}/task"
    try:
        names = os.listdir(tasks)
    except OSError:
        try:
            import psutil

            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
        except Exception:
            return 0.0
    total = 0
    for name in names:
        try:
            with open(f"{tasks}/{name}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total * 1e-9


def wait_until_idle(pid: int, max_wait: float = 0.5, window: float = 0.005) -> float:
    """Wait until process ``pid`` stops burning CPU (at most ``max_wait`` s); returns the seconds waited.

    BLAS and OpenMP pools busy-wait after a parallel call (OpenBLAS for ~0.1 s here): a timed run
    that starts meanwhile shares the cores with those spinning threads, and a multi-threaded one
    then waits a scheduler time slice at every barrier (seen: torch at 64 x 4 timed 50x slower
    right after NumPy). Idle means less than a fifth of a core used in each of two consecutive
    ``window``-second windows (one quiet window could be a spinning thread that was descheduled).
    """
    start = time.perf_counter()
    before = cpu_seconds(pid)
    quiet = 0
    while True:
        time.sleep(window)
        now = cpu_seconds(pid)
        waited = time.perf_counter() - start
        quiet = quiet + 1 if now - before < 0.2 * window else 0
        if quiet >= 2 or waited >= max_wait:
            return waited
        before = now


class Worker:
    """Parent-side handle: a spawned process serving one backend. Restarted after a crash."""

    def __init__(self, backend: str, threads: int | None, start_timeout: float = 120.0):
        self.backend = backend
        ctx = multiprocessing.get_context("spawn")  # fork + Numba/BLAS threads is unsafe
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, backend, threads), daemon=True)
        self.process.start()
        child.close()
        self.ready = self.call(None, start_timeout)

    def call(self, request, timeout: float) -> dict:
        """Send a request (None: just wait for the greeting) and wait at most ``timeout`` seconds."""
        try:
            if request is not None:
                self.conn.send(request)
            if not self.conn.poll(timeout):
                self.kill()
                return {"status": "timeout", "reason": f"no answer within {timeout:.0f} s; worker killed"}
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            return {"status": "crashed", "reason": f"worker process died (exit code {code})"}

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def settle(self, max_wait: float = 0.5) -> float:
        """Wait until this worker's threads have stopped spinning (see ``wait_until_idle``)."""
        return wait_until_idle(self.process.pid, max_wait) if self.process.is_alive() else 0.0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("close",))
            except OSError:
                pass
            self.process.join(5)
        self.kill()
