"""`numba-cpu`: the whole training loop in one serial @njit call, fused per row tile, fast exp.

The loop (backends/_numba_kernels.py) streams the batch through in tiles of T rows: each tile's
hidden activations (T x H) stay in cache, every exp runs vectorised (``fexp``: llvmlite here has
no SVML, so libm's exp would keep the loop scalar), and the gradients are accumulated as the
tiles go by; the weights are updated once per iteration. ``prepare`` allocates every buffer, so
``run`` allocates nothing per iteration. Supports 2- and 3-layer nets (1 or 2 weight matrices),
any D and O, float64 and float32.
"""

from __future__ import annotations

import numpy as np

from backends.base import Problem, TrainResult, n_logged, numba_compilations

DTYPES = ("float64", "float32")
DEVICE = "cpu"
NAME = "numba-cpu"


def available() -> str | None:
    try:
        import numba  # noqa: F401

        from backends import _numba_kernels  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        return f"numba unusable: {type(exc).__name__}: {exc}"
    return None


def make_state(problem: Problem, nchunks: int, name: str) -> dict:
    """Everything the loop touches, allocated once (shared with numba-parallel)."""
    from backends import _numba_kernels as K

    K.check_problem(problem, name, DTYPES)
    t = problem.X.dtype.type
    X, y = problem.X, problem.y
    N = X.shape[0]
    state = {
        "Xt": np.ascontiguousarray(X.T),
        "yt": np.ascontiguousarray(y.T),
        "alpha": t(problem.alpha),
        "one": t(1),
        "layers": len(problem.weights),
        "losses": [],
        "nchunks": nchunks,
    }
    if len(problem.weights) == 1:
        W0 = problem.weights[0].copy()
        state.update(W0=W0, z=np.zeros(W0.shape[1], t), g0=np.zeros_like(W0))
    else:
        W0 = np.array(problem.weights[0], order="C", copy=True)
        W1t = np.array(problem.weights[1].T, order="C", copy=True)  # (O x H), always a fresh copy
        D, H = W0.shape
        O = W1t.shape[0]  # noqa: E741
        T, cols = K.tile_layout(N, H)
        ntiles = (N + T - 1) // T
        nchunks = max(1, min(nchunks, ntiles))
        state.update(
            W0=W0,
            W1t=W1t,
            small=N * H <= K.SMALL_WORK,
            T=T,
            nchunks=nchunks,
            cols=cols,
            A=np.zeros((nchunks, T * H), t),
            d2=np.zeros((nchunks, O, T), t),
            G0=np.zeros((nchunks, D, H), t),
            G1=np.zeros((nchunks, O, H), t),
            closs=np.zeros(nchunks),
        )
    return state


def prepare(problem: Problem) -> dict:
    return make_state(problem, 1, NAME)


def run(state: dict, iterations: int, log_every: int) -> None:
    from backends import _numba_kernels as K

    losses = np.zeros(n_logged(iterations, log_every))
    s = state
    if s["layers"] == 1:
        K.train1(
            s["Xt"], s["yt"], s["W0"], s["z"], s["g0"], iterations, log_every, losses, s["alpha"], s["one"]
        )
    elif s["small"]:
        N, H = s["Xt"].shape[1], s["W0"].shape[1]
        K.train2_small(
            s["Xt"],
            s["yt"],
            s["W0"],
            s["W1t"],
            s["A"][0, : N * H].reshape(N, H),
            s["d2"][0],
            s["G0"][0],
            s["G1"][0],
            iterations,
            log_every,
            losses,
            s["alpha"],
            s["one"],
        )
    else:
        K.train2_serial(
            s["Xt"],
            s["yt"],
            s["W0"],
            s["W1t"],
            s["A"],
            s["d2"],
            s["G0"],
            s["G1"],
            s["T"],
            s["cols"],
            iterations,
            log_every,
            losses,
            s["alpha"],
            s["one"],
        )
    s["losses"].append(losses)


def fetch(state: dict) -> TrainResult:
    losses = np.concatenate(state["losses"]) if state["losses"] else np.empty(0)
    weights = [state["W0"].copy()]
    if state["layers"] == 2:
        weights.append(np.ascontiguousarray(state["W1t"].T))
    return TrainResult(weights, losses)


def threads() -> int:
    return 1  # the loop is one compiled call on the calling thread (numba-parallel is the threaded one)


def compilations() -> tuple[int, int]:
    """Signatures the kernels have built in this process, and how many came from Numba's disk cache."""
    from backends import _numba_kernels

    return numba_compilations(_numba_kernels)
