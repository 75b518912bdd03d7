"""Host side of the CUDA-graph backends (``torch-cudagraph``, ``cupy-graph``): which captured
graph to replay, how often, so that a run is exactly iterations 0..T-1 in order.

Three graphs per problem shape, captured once:

* ``unrolled``: K unlogged iterations back to back (one replay = K iterations);
* ``single``: one unlogged iteration (the remainder of a stretch that K does not divide);
* ``logged``: one iteration that also writes its mean |err| into a static device scalar, which the
  host then copies (device to device, asynchronously) into ``losses[k]``.

Unrolling K iterations into one graph cuts the host's share (one graph launch per K iterations
instead of one per iteration) at the price of a graph K times longer to capture. ``unroll_for``
picks K from the problem's size: many iterations per graph where an iteration is a few
microseconds of GPU work, one where the kernels themselves dominate.

Pure Python, no GPU library: the schedule is tested on any machine (tests/test_gpu_peers.py), and
each backend's step runs eagerly through the same schedule in tests with a stand-in "capture".
"""

from __future__ import annotations

from collections.abc import Callable

from backends.base import n_logged

#: K = UNROLL_WORK // (N*H), clamped to [1, MAX_UNROLL]: ~64 iterations per graph at the seed
#: size, one from N*H = 2^16 up, where one iteration's kernels take longer than a graph launch.
#: An estimate (no GPU session has measured it yet; docs/cuda.md, "GPU peers").
UNROLL_WORK = 1 << 16
MAX_UNROLL = 64


def unroll_for(batch: int, hidden: int) -> int:
    return max(1, min(MAX_UNROLL, UNROLL_WORK // max(1, batch * hidden)))


def schedule(iterations: int, log_every: int, unroll: int) -> list[tuple[str, int]]:
    """Replays that run iterations 0..iterations-1 in order.

    ``("logged", k)``: one logged iteration whose loss goes to losses[k]; ``("unrolled", n)``: n
    replays of the K-iteration graph; ``("single", n)``: n replays of the one-iteration graph.
    Iteration i is logged when ``log_every`` > 0 and i % log_every == 0 (base.logged_iterations).
    """
    if iterations < 0 or log_every < 0 or unroll < 1:
        raise ValueError(
            f"bad schedule request: iterations={iterations}, log_every={log_every}, unroll={unroll}"
        )
    out: list[tuple[str, int]] = []

    def stretch(length: int) -> None:  # `length` unlogged iterations
        if length // unroll:
            out.append(("unrolled", length // unroll))
        if length % unroll:
            out.append(("single", length % unroll))

    if log_every == 0:
        stretch(iterations)
        return out
    for k in range(n_logged(iterations, log_every)):
        out.append(("logged", k))
        stretch(min(log_every, iterations - k * log_every) - 1)
    return out


def replay(plan: list[tuple[str, int]], unrolled: Callable[[], None], single: Callable[[], None],
           logged: Callable[[int], None]) -> None:  # fmt: skip
    """Carry out ``schedule``'s plan with the three graphs' replay functions."""
    for kind, count in plan:
        if kind == "logged":
            logged(count)
        else:
            step = unrolled if kind == "unrolled" else single
            for _ in range(count):
                step()
