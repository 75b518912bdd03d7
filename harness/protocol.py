"""The worker protocol: the typed messages between the sweep (``harness.bench``) and a backend's
worker process (``harness.worker``), over a pipe (pickled).

  (start)        -> Ready (the backend imported: its library, device, start-up) or Unavailable
                    or Failure
  PointRequest   -> Calibrated (first call timed, validated, T calibrated) or Failure
  RepeatRequest  -> Timed (one timed run of T iterations from fresh initial weights) or Failure
  CloseRequest   -> the worker ends

What a reply measured is typed, and named as the columns of runs.csv: each reply's ``fields()``
gives the ``harness.schema.Row`` fields it determines, so the sweep builds each row from the
replies alone (``Row(**point, **ready.fields(fresh), **calibrated.fields(), **timed.fields())``).

The request carries the float64 NumPy reference (``PointRequest.reference``) rather than letting
the worker rebuild it from the seed, as it rebuilds the problem: the reference is a float64 run of
``validate_iterations`` iterations over N x H arrays, which the parent computes once per point and
each worker would otherwise compute again, once per backend (at N*H = 2^28, one iteration is
seconds and ~10 GiB of float64 arrays next to the backend's own, which the memory admission does
not count), while what it sends is small: the final weights ((D + O) x H values) and a few losses.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import TrainResult
from harness.schema import Status


@dataclass(frozen=True)
class PointRequest:
    """Measure one point: the worker builds ``harness.problems.scaled(batch, hidden, dtype, seed)``."""

    backend: str
    dtype: str
    batch: int
    hidden: int
    seed: int
    validate_iterations: int
    log_every: int
    min_time: float  # a timed run shorter than this is too short to trust: T is raised until it is not
    max_iterations: int
    reference: TrainResult  # the float64 NumPy run of validate_iterations (see the module docstring)

    def __repr__(self) -> str:  # without the reference's arrays
        return (f"PointRequest({self.backend}, {self.dtype}, N={self.batch}, H={self.hidden}, seed={self.seed}, "
                f"validate={self.validate_iterations})")  # fmt: skip


@dataclass(frozen=True)
class RepeatRequest:
    """One more timed run of the calibrated T iterations."""


@dataclass(frozen=True)
class CloseRequest:
    pass


@dataclass(frozen=True)
class Ready:
    """The worker's greeting: it imported the backend, which runs ``library`` on ``device`` (its
    ``runs_on()``); ``startup_seconds``: from the worker's start (Python and the harness, NumPy
    included, already imported) to this greeting: the backend's imports and its availability check."""

    library: str
    device: str
    startup_seconds: float | None = None

    def fields(self, fresh: bool | None) -> dict:
        """Row fields: the start-up is on the row of the worker's first call only."""
        return dict(library=self.library, device=self.device, startup_seconds=self.startup_seconds if fresh else None)


@dataclass(frozen=True)
class Unavailable:
    reason: str


@dataclass(frozen=True)
class FirstCall:
    """The first call at a point (prepare + one iteration on the timed path + fetch):
    ``compile_seconds``, what it built (``cache``: ``harness.timing.cache_state``) and whether it
    was the worker process's first call (``fresh``)."""

    compile_seconds: float
    cache: str
    fresh: bool

    def fields(self) -> dict:
        return dict(compile_seconds=self.compile_seconds, cache=self.cache, fresh=self.fresh)


@dataclass(frozen=True)
class Calibrated:
    first: FirstCall
    max_rel_error: float
    iterations: int  # T, the iterations of one timed run
    seconds_per_iteration: float
    threads: int | None

    def fields(self) -> dict:
        return dict(iterations=self.iterations, max_rel_error=self.max_rel_error, threads=self.threads,
                    **self.first.fields())  # fmt: skip


@dataclass(frozen=True)
class Timed:
    seconds: float
    seconds_e2e: float

    def fields(self) -> dict:
        return dict(seconds=self.seconds, seconds_e2e=self.seconds_e2e)


@dataclass(frozen=True)
class Failure:
    """Any answer that is not a timing: its row's status and reason (and the first call and error,
    when it got that far). ``fatal``: the worker ended after answering (a device fault) and must
    be replaced."""

    status: Status
    reason: str
    first: FirstCall | None = None
    max_rel_error: float | None = None
    fatal: bool = False

    def fields(self) -> dict:
        return dict(status=self.status, reason=self.reason, max_rel_error=self.max_rel_error,
                    **(self.first.fields() if self.first else {}))  # fmt: skip


Reply = Ready | Unavailable | Calibrated | Timed | Failure


def as_failure(reply) -> Failure:
    """A reply where a Failure is all that can be used (anything unexpected is one)."""
    return reply if isinstance(reply, Failure) else Failure(Status.FAILED, f"unexpected reply {type(reply).__name__}")
