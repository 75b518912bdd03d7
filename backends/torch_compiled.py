"""`torch-compile`: the `torch` backend with each iteration under ``torch.compile`` (Inductor).

The step function is ``backends.torch_eager.step`` itself, so the two backends cannot drift apart;
only the call is compiled. The loop over iterations stays in Python: compiling it whole would
unroll T iterations into one graph. Kernels are compiled on first use (the harness reports that first call as compile time). torch.compile's
default "automatic dynamic" shapes: the first size gets static kernels, the first change of size
recompiles with symbolic sizes that then serve every later size, as a user of torch.compile would
see. Two graphs: one iteration that logs its loss, one that does not.
"""

from __future__ import annotations

import torch

from backends import torch_eager

DTYPES = torch_eager.DTYPES
DEVICE = torch_eager.DEVICE
# Dynamo gives up on a function after this many recompilations (8 by default) and silently runs
# it eagerly; every problem size is one recompilation, so a validation pass needs more.
RECOMPILE_LIMIT = 256

_compiled_step = torch.compile(torch_eager.step, fullgraph=True)  # default: automatic dynamic shapes
_unavailable: list[str | None] = []  # the cached result of the one trial compilation


def _try_compile() -> str | None:
    try:
        X, y, W = (
            torch.ones(shape, dtype=torch.float64, device=torch_eager._TORCH_DEVICE)
            for shape in ((2, 2), (2, 1), (2, 1))
        )
        with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            torch.compile(torch_eager.step, dynamic=False, fullgraph=True)(X, y, [W], 1.0, True)
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        return f"torch.compile failed: {type(exc).__name__}: {lines[0][:160]}"
    return None


def available() -> str | None:
    """None when torch.compile works here (tried once, lazily), else a one-line reason."""
    if not _unavailable:
        _unavailable.append(_try_compile())
    return _unavailable[0]


prepare = torch_eager.prepare  # the same tensors on the same device; only run() differs


def run(state: dict, iterations: int, log_every: int) -> None:
    # alpha as a 0-d tensor: a Python float would be baked into the graph, one compile per value.
    alpha = torch.tensor(state["alpha"], dtype=state["X"].dtype, device=state["X"].device)
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        torch_eager.run(dict(state, alpha=alpha), iterations, log_every, step=_compiled_step)


fetch = torch_eager.fetch


def compilations() -> tuple[int, int]:
    """Inductor graphs built in this process (its FX-graph cache's misses, bypasses and hits), and
    how many were hits of that on-disk cache."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    hits = inductor["fxgraph_cache_hit"]
    return inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"] + hits, hits
threads = torch_eager.threads
set_threads = torch_eager.set_threads
