"""`python`: the training loop in plain Python lists and `math` -- the executable specification.

Matrices are lists of rows. Every step below is one numbered step of SPEC.md, written for any
number of layers; the other backends compute exactly this, faster.
"""

from __future__ import annotations

import math

from backends.base import Backend, Problem, TrainResult, logged_iterations


def sigmoid(z: float) -> float:
    try:
        e = math.exp(-z)
    except OverflowError:  # z < -709: NumPy gives exp = inf and so s = 0 exactly; match it
        e = math.inf
    return 1.0 / (1.0 + e)


def matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    cols = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in cols] for row in a]


def transpose(a: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*a)]


class Python(Backend):
    NAME = "python"
    SUMMARY = "pure Python lists and math: the definition of the loop"
    PACKAGE = "python"
    COLOUR, MARKER = "#7f7f7f", "x"
    LEVEL = "spec"
    DTYPES = ("float64",)  # Python floats are IEEE doubles
    COMPILES = False
    BYTES_PER_ELEMENT = 40 * 6  # a few N x H lists of Python floats, ~40 B each, in any dtype

    @classmethod
    def memory_bytes(cls, dtype: str, batch: int, hidden: int) -> float:
        return cls.BYTES_PER_ELEMENT * batch * hidden

    def prepare(self, problem: Problem) -> dict:
        self.check(problem)
        return {
            "X": problem.X.tolist(),
            "y": problem.y.tolist(),
            "W": [w.tolist() for w in problem.weights],
            "alpha": float(problem.alpha),
            "losses": [],
        }

    def run(self, state: dict, iterations: int, log_every: int) -> None:
        X, y, W, alpha = state["X"], state["y"], state["W"], state["alpha"]
        logged = set(logged_iterations(iterations, log_every))
        for it in range(iterations):
            # 1. forward: a[l+1] = s(a[l] @ W[l]), a[0] = X
            a = [X]
            for w in W:
                a.append([[sigmoid(z) for z in row] for row in matmul(a[-1], w)])
            out = a[-1]
            # 2. err = y - output
            err = [[t - o for t, o in zip(trow, orow)] for trow, orow in zip(y, out)]
            # 3. mean |err| over all N*O entries, before this iteration's update
            if it in logged:
                state["losses"].append(sum(abs(e) for row in err for e in row) / (len(err) * len(err[0])))
            # 4. output delta, slope taken from the output: s * (1 - s)
            delta = [[e * o * (1.0 - o) for e, o in zip(erow, orow)] for erow, orow in zip(err, out)]
            # 5-6. walk back: the next delta uses W[l] *before* its update, then W[l] += alpha * a[l].T @ delta
            for layer in reversed(range(len(W))):
                grad = matmul(transpose(a[layer]), delta)
                if layer > 0:
                    back = matmul(delta, transpose(W[layer]))
                    delta = [
                        [b * h * (1.0 - h) for b, h in zip(brow, hrow)] for brow, hrow in zip(back, a[layer])
                    ]
                W[layer] = [[w + alpha * g for w, g in zip(wrow, grow)] for wrow, grow in zip(W[layer], grad)]

    def fetch(self, state: dict) -> TrainResult:
        import numpy as np  # only to hand results back in the shared format; the loop uses none

        return TrainResult([np.array(w, dtype=np.float64) for w in state["W"]], np.array(state["losses"], dtype=np.float64))

    def threads(self) -> int:
        return 1  # one interpreter thread runs the loop
