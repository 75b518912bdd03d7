"""`torch-compile`: the `torch` backend with each iteration under ``torch.compile`` (Inductor).

The step function is ``backends.torch_backend.step`` itself, so the two backends cannot drift apart;
only the call is compiled (the subclass overrides ``run``, ``available`` and ``compilations``;
the tensors, their device and ``fetch`` are `torch`'s). The loop over iterations stays in Python:
compiling it whole would unroll T iterations into one graph. Kernels are compiled on first use
(the harness reports that first call as compile time). torch.compile's default "automatic
dynamic" shapes: the first size gets static kernels, the first change of size recompiles with
symbolic sizes that then serve every later size, as a user of torch.compile would see. Two
graphs: one iteration that logs its loss, one that does not.

``torch.compile`` wraps the step once per process (``compiled_step``), on first use.
"""

from __future__ import annotations

from functools import cache

from backends.torch_backend import Torch, _torch, step

# Dynamo gives up on a function after this many recompilations (8 by default) and silently runs
# it eagerly; every problem size is one recompilation, so a validation pass needs more.
RECOMPILE_LIMIT = 256


@cache
def compiled_step():
    """``step`` under torch.compile (default: automatic dynamic shapes), wrapped once per process."""
    return _torch().compile(step, fullgraph=True)


@cache
def _trial_compile(device: str) -> str | None:
    """None when torch.compile works here (tried once per process), else a one-line reason."""
    torch = _torch()
    try:
        X, y, W = (torch.ones(shape, dtype=torch.float64, device=device) for shape in ((2, 2), (2, 1), (2, 1)))
        with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            torch.compile(step, dynamic=False, fullgraph=True)(X, y, [W], 1.0, True)
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        return f"torch.compile failed: {type(exc).__name__}: {lines[0][:160]}"
    return None


class TorchCompile(Torch):
    NAME = "torch-compile"
    SUMMARY = "PyTorch with the iteration under torch.compile"
    COLOUR, MARKER = "#56B4E9", "*"
    LEVEL = "plain"
    COMPILES = True

    def available(self) -> str | None:
        """`torch`'s check, then one trial compilation (lazily, once per process)."""
        return super().available() or _trial_compile(str(self.device()))

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        torch = _torch()
        # alpha as a 0-d tensor: a Python float would be baked into the graph, one compile per value.
        alpha = torch.tensor(state["alpha"], dtype=state["X"].dtype, device=state["X"].device)
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            self.loop(dict(state, alpha=alpha), iterations, log_every, compiled_step())

    def compilations(self) -> tuple[int, int]:
        """Inductor graphs built in this process (its FX-graph cache's misses, bypasses and hits),
        and how many were hits of that on-disk cache."""
        from torch._dynamo.utils import counters

        inductor = counters["inductor"]
        hits = inductor["fxgraph_cache_hit"]
        return inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"] + hits, hits
