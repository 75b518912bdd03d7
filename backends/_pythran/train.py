"""The `pythran` backend's training loop (effort level: naive -- the NumPy code compiled as it stands).

This is backends/numpy_backend.py's loop with the three changes Pythran needs:
- the ``#pythran export`` lines: one per dtype, C-ordered arrays (each extra layout would be one
  more compiled variant), a list of weight matrices for the 2- and 3-layer nets alike;
- the weights and losses are returned: Pythran converts a list argument, so the caller's list
  would not see the new matrices (the arrays' data is shared, but a return is what Pythran
  promises);
- ``sigmoid`` has no ``np.errstate`` (Pythran has no such context manager; exp(-z) overflowing to
  inf still gives 0, without a warning).
The matmuls run on OpenBLAS (scipy-openblas64), the element-wise expressions on the loops Pythran
fuses them into (vectorised with xsimd).
"""

import numpy as np

#pythran export train(float64[:,:] order(C), float64[:,:] order(C), float64[:,:] order(C) list, float64, int, int, float64[:])
#pythran export train(float32[:,:] order(C), float32[:,:] order(C), float32[:,:] order(C) list, float32, int, int, float64[:])


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def train(X, y, W, alpha, iterations, log_every, losses):
    for it in range(iterations):
        a = [X]
        for w in W:
            a.append(sigmoid(a[-1] @ w))
        err = y - a[-1]
        if log_every and it % log_every == 0:
            losses[it // log_every] = np.mean(np.abs(err))
        delta = err * a[-1] * (1 - a[-1])
        for layer in reversed(range(len(W))):
            grad = a[layer].T @ delta
            if layer > 0:  # uses W[layer] before this iteration's update
                delta = (delta @ W[layer].T) * a[layer] * (1 - a[layer])
            W[layer] += alpha * grad
    return W, losses
