"""`jax-unrolled`: the `jax` loop with K iterations traced back to back in each loop trip.

XLA keeps a ``lax.fori_loop`` with a traced trip count as a while loop. On a GPU its runtime
evaluates the loop condition and launches the body's kernels once per trip, a fixed host-side
cost per iteration (on the H100 in ../shared/gpu-h100, `jax` stayed at ~22 us per iteration up to
256 x 4). Tracing K iterations into one trip divides that by K. ``lax.fori_loop``'s own
``unroll`` needs a static trip count; the timed loop's T is traced (calibration must not
recompile), so ``backends.jax_backend._loop`` unrolls by hand and runs the remainder in a plain loop.

K comes from ``backends._replay.unroll_for`` (the CUDA-graph backends' choice): 64 at the seed
size, 1 from N*H = 2^16 up, where one trip's kernels outweigh its overhead. K is static, so each
K is one compilation per shape. Everything but K is the `jax` backend's (the subclass overrides
``unroll_for`` alone).

The same code runs on the CPU (it is validated in CI there); what unrolling buys on a GPU is
unmeasured until a GPU session runs `make gpu-bench` (docs/cuda.md, "GPU peers").
"""

from __future__ import annotations

from backends import _replay
from backends.jax_backend import Jax


class JaxUnrolled(Jax):
    NAME = "jax-unrolled"
    SUMMARY = "the jax loop with K iterations unrolled per loop trip"
    COLOUR, MARKER = "#AA4499", "1"
    LEVEL = "tuned"

    def unroll_for(self, state: dict) -> int:
        batch, hidden = state["X"].shape[0], state["W"][0].shape[1]
        return _replay.unroll_for(batch, hidden)
