# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The `cython` backend's training loop (effort level: plain -- what a Cython user writes).

Typed memoryviews, the whole loop in one call without the GIL, ``prange`` over the rows with the
harness's thread count, libc ``exp``. Each row goes forward, back and into its thread's gradient
accumulators in one pass (the usual Cython way to reduce into an array: one slice per
``threadid()``); after the parallel loop the slices are summed and the weights updated once.
No tiling, no hand-written exp: the compiler (-O3, OpenMP where it has it) does the rest.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport exp, expf, fabs

cdef extern from *:
    """
    #ifdef _OPENMP
    #define NNBENCH_HAVE_OPENMP 1
    #else
    #define NNBENCH_HAVE_OPENMP 0
    #endif
    """
    int NNBENCH_HAVE_OPENMP

#: True when this module was compiled with OpenMP (prange runs on several threads).
OPENMP = NNBENCH_HAVE_OPENMP == 1

ctypedef fused real:
    float
    double


cdef inline real sigmoid(real z) noexcept nogil:
    cdef real one = 1
    if real is float:
        return one / (one + expf(-z))
    else:
        return one / (one + exp(-z))


def team(int n):
    """Distinct OpenMP threads a ``prange`` of ``n`` iterations on ``n`` threads ran on (1 without
    OpenMP): how the tests see that the thread count is honoured."""
    cdef int i
    ids = bytearray(n)
    cdef unsigned char[::1] seen = ids
    for i in prange(n, nogil=True, num_threads=n, schedule="static", chunksize=1):
        seen[threadid()] = 1
    return sum(ids)


def train1(real[:, ::1] X, real[:, ::1] y, real[:, ::1] W0, real alpha, long iterations,
           long log_every, double[::1] losses, real[:, ::1] out, real[:, :, ::1] g0):
    """The 2-layer net: W0 (D x O). ``out`` (threads x O) and ``g0`` (threads x D x O) are
    per-thread scratch; their first dimension is the number of threads."""
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], O = W0.shape[1], T = g0.shape[0]
    cdef Py_ssize_t i, k, o, t
    cdef long it
    cdef real a, e, x, s, one = 1
    cdef double loss
    with nogil:
        for it in range(iterations):
            g0[:, :, :] = 0
            loss = 0
            for i in prange(N, num_threads=T, schedule="static"):
                t = threadid()
                for o in range(O):
                    out[t, o] = 0
                for k in range(D):
                    x = X[i, k]
                    for o in range(O):
                        out[t, o] += x * W0[k, o]
                for o in range(O):
                    a = sigmoid(out[t, o])
                    e = y[i, o] - a
                    loss += fabs(e)
                    out[t, o] = e * a * (one - a)
                for k in range(D):
                    x = X[i, k]
                    for o in range(O):
                        g0[t, k, o] += x * out[t, o]
            if log_every > 0 and it % log_every == 0:
                losses[it // log_every] = loss / (N * O)
            for k in range(D):
                for o in range(O):
                    s = 0
                    for t in range(T):
                        s += g0[t, k, o]
                    W0[k, o] += alpha * s


def train2(real[:, ::1] X, real[:, ::1] y, real[:, ::1] W0, real[:, ::1] W1, real alpha,
           long iterations, long log_every, double[::1] losses, real[:, ::1] hid,
           real[:, ::1] out, real[:, :, ::1] g0, real[:, :, ::1] g1):
    """The 3-layer net: W0 (D x H), W1 (H x O). Per-thread scratch: ``hid`` (threads x H),
    ``out`` (threads x O), ``g0`` (threads x D x H), ``g1`` (threads x H x O)."""
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], H = W0.shape[1], O = W1.shape[1], T = g0.shape[0]
    cdef Py_ssize_t i, j, k, o, t
    cdef long it
    cdef real a, e, x, s, one = 1
    cdef double loss
    with nogil:
        for it in range(iterations):
            g0[:, :, :] = 0
            g1[:, :, :] = 0
            loss = 0
            for i in prange(N, num_threads=T, schedule="static"):
                t = threadid()
                # forward: hidden row, then output row
                for j in range(H):
                    hid[t, j] = 0
                for k in range(D):
                    x = X[i, k]
                    for j in range(H):
                        hid[t, j] += x * W0[k, j]
                for j in range(H):
                    hid[t, j] = sigmoid(hid[t, j])
                for o in range(O):
                    s = 0
                    for j in range(H):
                        s = s + hid[t, j] * W1[j, o]  # not `+=`: that would make s a prange reduction
                    a = sigmoid(s)
                    e = y[i, o] - a
                    loss += fabs(e)
                    out[t, o] = e * a * (one - a)  # the output delta
                # backward: W1's gradient, then the hidden delta (W1 before this iteration's update)
                for j in range(H):
                    s = 0
                    for o in range(O):
                        g1[t, j, o] += hid[t, j] * out[t, o]
                        s = s + out[t, o] * W1[j, o]
                    hid[t, j] = s * hid[t, j] * (one - hid[t, j])
                for k in range(D):
                    x = X[i, k]
                    for j in range(H):
                        g0[t, k, j] += x * hid[t, j]
            if log_every > 0 and it % log_every == 0:
                losses[it // log_every] = loss / (N * O)
            for j in range(H):
                for o in range(O):
                    s = 0
                    for t in range(T):
                        s += g1[t, j, o]
                    W1[j, o] += alpha * s
            for k in range(D):
                for j in range(H):
                    s = 0
                    for t in range(T):
                        s += g0[t, k, j]
                    W0[k, j] += alpha * s
