"""One backend in its own process, so a crash, a hang or an abort costs one point, not the sweep.

The parent (``harness.bench``) sends typed requests over a pipe and the worker answers each with
a typed reply (``harness.protocol``: the messages; ``harness.timing``: what each measurement does):

  PointRequest   -> Calibrated (validated, first call timed, T calibrated) or Failure
  RepeatRequest  -> Timed (one timed run of T iterations from fresh initial weights) or Failure
  CloseRequest   -> the worker ends

Its first message is Ready (the backend imported; its library and device) or Unavailable.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback

from backends.base import DeviceFault
from harness import timing
from harness.protocol import (
    Calibrated,
    CloseRequest,
    Failure,
    PointRequest,
    Ready,
    RepeatRequest,
    Reply,
    Timed,
    Unavailable,
)
from harness.schema import Status


class _Runner:
    def __init__(self, backend: str, threads: int | None):
        import backends

        self.backend = backends.load(backend)  # availability was checked by _serve
        self.loaded = time.perf_counter()  # before the harness's thread settings (threadpoolctl, numba)
        if threads:
            apply_threads(self.backend, threads)
        self.problem = None
        self.rows = None  # the problem's distinct rows, for the health of each repeat's end state
        self.iterations = 1
        self.served = 0  # points asked of this process so far

    def point(self, request: PointRequest) -> Calibrated | Failure:
        """The problem is rebuilt here from the seed; the request carries only the reference's weights."""
        from harness.health import distinct_rows
        from harness.problems import scaled

        self.problem = scaled(request.batch, request.hidden, request.dtype, request.seed)
        self.rows = distinct_rows(self.problem)
        fresh, self.served = self.served == 0, self.served + 1
        reply = timing.measure_point(self.backend, self.problem, request, self.backend.threads(), fresh, self.rows)
        if isinstance(reply, Calibrated):
            self.iterations = reply.iterations
        return reply

    def repeat(self) -> Timed | Failure:
        seconds, e2e, result = timing.timed_run(self.backend, self.problem, self.iterations)
        return timing.unhealthy(self.problem, result, self.iterations, self.rows) or Timed(seconds, e2e)


def apply_threads(backend, threads: int) -> None:
    """Give every CPU library the same thread count (BLAS, Numba, and the backend's own pool)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    backend.set_threads(threads)


def device_of(backend) -> str:
    """The ``device`` of the backend's rows: its ``runs_on()``, or ``sim`` while the CUDA simulator
    stands in for the GPU (``SIMULATED``): a simulator timing is never a GPU result."""
    return "sim" if getattr(backend, "SIMULATED", False) else backend.runs_on()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends (prctl PR_SET_PDEATHSIG); elsewhere
    nothing (a worker then ends at its next read of the closed pipe)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _serve(conn, backend: str, threads: int | None) -> None:
    import signal

    # Ctrl-C, a closed terminal (SIGHUP) and a SIGTERM to the process group reach us too: they are
    # the parent's to handle (it stops us; dying first would record the point it was measuring as
    # crashed). If the parent dies without stopping us (SIGKILL), Linux ends us too.
    for name in ("SIGINT", "SIGHUP", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    _die_with_parent()
    start = time.perf_counter()
    import backends

    # Checked here, not in the parent: the parent then never imports a backend's library (and
    # torch-compile's trial compilation runs once, in the process that uses it).
    why = backends.availability(backend)
    if why:
        conn.send(Unavailable(why))
        return
    try:
        runner = _Runner(backend, threads)
        ready = Ready(backends.library(backend), device_of(runner.backend), runner.loaded - start)  # in this process
    except Exception as exc:
        conn.send(Failure(Status.FAILED, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(ready)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if isinstance(request, CloseRequest):
            return
        try:
            if isinstance(request, PointRequest):
                reply = runner.point(request)
            elif isinstance(request, RepeatRequest):
                reply = runner.repeat()
            else:
                reply = Failure(Status.FAILED, f"unknown request {type(request).__name__}")
        except DeviceFault as exc:
            # The device's state is unknown: answer, then end this worker (the parent starts a
            # fresh one, with a fresh device context, for the next point).
            conn.send(Failure(Status.CRASHED, f"device fault: {exc}", fatal=True))
            return
        except MemoryError:
            reply = Failure(Status.FAILED, "out of memory (MemoryError)")
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reply = Failure(Status.FAILED, f"{type(exc).__name__}: {exc} ({os.path.basename(last.filename)}:{last.lineno})")
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

    def call(self, request, timeout: float) -> Reply:
        """Send a request (None: just wait for the greeting) and wait at most ``timeout`` seconds."""
        try:
            if request is not None:
                self.conn.send(request)
            if not self.conn.poll(timeout):
                self.kill()
                return Failure(Status.TIMEOUT, f"no answer within {timeout:.0f} s; worker killed")
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            return Failure(Status.CRASHED, f"worker process died (exit code {code})")

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
                self.conn.send(CloseRequest())
            except OSError:
                pass
            self.process.join(5)
        self.kill()
