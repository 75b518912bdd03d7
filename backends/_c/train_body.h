/* The training loop over REAL (included twice by train.c: double, then float). Each function is
 * the _numba_kernels.py helper of the same name; arrays are flat, with the strides of the Numba
 * arrays (a tile's X is D x T, y and d2 O x T, A T x H in row layout and H x T in column layout).
 * Loss sums are double, as Numba's `loss = 0.0`. */

static inline REAL SFX(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + FEXP(-z)); }

static inline REAL SFX(hidden_delta)(REAL back, REAL a) { return back * a * ((REAL)1 - a); }

static inline void SFX(sigmoid_flat)(REAL *restrict buf, int64_t n) {
    for (int64_t i = 0; i < n; i++) buf[i] = SFX(sigmoid)(buf[i]);
}

static inline void SFX(forward_rows)(REAL *restrict A, const REAL *restrict X, const REAL *restrict W0,
                                     int64_t rows, int64_t H, int64_t T) {
    for (int64_t t = 0; t < rows; t++) {
        if (FUSE) {
            for (int64_t h = 0; h < H; h++) {
                REAL z = X[t] * W0[h];
                for (int d = 1; d < ND; d++) z += X[d * T + t] * W0[d * H + h];
                A[t * H + h] = z;
            }
        } else {
            REAL x = X[t];
            for (int64_t h = 0; h < H; h++) A[t * H + h] = x * W0[h];
            for (int d = 1; d < ND; d++) {
                x = X[d * T + t];
                for (int64_t h = 0; h < H; h++) A[t * H + h] += x * W0[d * H + h];
            }
        }
    }
}

static inline void SFX(forward_cols)(REAL *restrict A, const REAL *restrict X, const REAL *restrict W0,
                                     int64_t rows, int64_t H, int64_t T) {
    for (int64_t h = 0; h < H; h++) {
        if (FUSE) {
            for (int64_t t = 0; t < rows; t++) {
                REAL z = W0[h] * X[t];
                for (int d = 1; d < ND; d++) z += W0[d * H + h] * X[d * T + t];
                A[h * T + t] = z;
            }
        } else {
            REAL w = W0[h];
            for (int64_t t = 0; t < rows; t++) A[h * T + t] = w * X[t];
            for (int d = 1; d < ND; d++) {
                w = W0[d * H + h];
                for (int64_t t = 0; t < rows; t++) A[h * T + t] += w * X[d * T + t];
            }
        }
    }
}

/* SPEC 1-4 for the row layout; A is rows x H (stride H), y and d2 are O x ys. Also the 2-layer net.
   The pre-activations (one dot per row) go into d2 first; then the output delta, vectorised over rows. */
static inline double SFX(output_rows)(const REAL *restrict A, const REAL *restrict W, const REAL *restrict y,
                                      REAL *restrict d2, int64_t rows, int64_t H, int64_t ys) {
    for (int64_t t = 0; t < rows; t++) {
        for (int o = 0; o < NO; o++) {
            REAL z = A[t * H] * W[o * H];
            SIMD_SUM(z)
            for (int64_t h = 1; h < H; h++) z += A[t * H + h] * W[o * H + h];
            d2[o * ys + t] = z;
        }
    }
    double loss = 0.0;
    for (int o = 0; o < NO; o++) {
        SIMD_SUM(loss)
        for (int64_t t = 0; t < rows; t++) {
            REAL a = SFX(sigmoid)(d2[o * ys + t]);
            REAL err = y[o * ys + t] - a;
            d2[o * ys + t] = err * a * ((REAL)1 - a);
            loss += fabs(err);
        }
    }
    return loss;
}

/* zp[o, t] = A[t, :] . W1t[o, :] (A is rows x H): a hidden chunk's share of the output pre-activations. */
static inline void SFX(partial_rows)(const REAL *restrict A, const REAL *restrict W1t, REAL *restrict zp,
                                     int64_t rows, int64_t H, int64_t ys) {
    for (int64_t t = 0; t < rows; t++) {
        for (int o = 0; o < NO; o++) {
            REAL z = A[t * H] * W1t[o * H];
            SIMD_SUM(z)
            for (int64_t h = 1; h < H; h++) z += A[t * H + h] * W1t[o * H + h];
            zp[o * ys + t] = z;
        }
    }
}

static inline double SFX(output_cols)(const REAL *restrict A, const REAL *restrict W1t, const REAL *restrict y,
                                      REAL *restrict d2, int64_t rows, int64_t H, int64_t T) {
    double loss = 0.0;
    for (int o = 0; o < NO; o++) {
        REAL w = W1t[o * H];
        for (int64_t t = 0; t < rows; t++) d2[o * T + t] = w * A[t];
        for (int64_t h = 1; h < H; h++) {
            w = W1t[o * H + h];
            for (int64_t t = 0; t < rows; t++) d2[o * T + t] += w * A[h * T + t];
        }
        SIMD_SUM(loss)
        for (int64_t t = 0; t < rows; t++) {
            REAL a = SFX(sigmoid)(d2[o * T + t]);
            REAL err = y[o * T + t] - a;
            d2[o * T + t] = err * a * ((REAL)1 - a);
            loss += fabs(err);
        }
    }
    return loss;
}

/* G[k, :] += sum over t < rows of B[k, t] * M[t, :] (B is K x bs, M rows x H), four rows a pass. */
static inline void SFX(acc_rows)(REAL *restrict G, const REAL *restrict B, const REAL *restrict M, int64_t rows,
                                 int64_t K, int64_t H, int64_t bs) {
    int64_t R4 = rows - rows % 4;
    for (int64_t k = 0; k < K; k++) {
        for (int64_t t = 0; t < R4; t += 4) {
            REAL c0 = B[k * bs + t], c1 = B[k * bs + t + 1], c2 = B[k * bs + t + 2], c3 = B[k * bs + t + 3];
            for (int64_t h = 0; h < H; h++)
                G[k * H + h] += (c0 * M[t * H + h] + c1 * M[(t + 1) * H + h]) +
                                (c2 * M[(t + 2) * H + h] + c3 * M[(t + 3) * H + h]);
        }
        for (int64_t t = R4; t < rows; t++) {
            REAL c0 = B[k * bs + t];
            for (int64_t h = 0; h < H; h++) G[k * H + h] += c0 * M[t * H + h];
        }
    }
}

/* G[k, h] += B[k, :rows] . M[h, :rows] (B is K x T, M H x T). */
static inline void SFX(acc_cols)(REAL *restrict G, const REAL *restrict B, const REAL *restrict M, int64_t rows,
                                 int64_t K, int64_t H, int64_t T) {
    for (int64_t k = 0; k < K; k++) {
        for (int64_t h = 0; h < H; h++) {
            REAL s = B[k * T] * M[h * T];
            SIMD_SUM(s)
            for (int64_t t = 1; t < rows; t++) s += B[k * T + t] * M[h * T + t];
            G[k * H + h] += s;
        }
    }
}

static inline void SFX(delta_rows)(REAL *restrict A, const REAL *restrict W1t, const REAL *restrict d2,
                                   int64_t rows, int64_t H, int64_t T) {
    for (int64_t t = 0; t < rows; t++) {
        for (int64_t h = 0; h < H; h++) {
            REAL b = d2[t] * W1t[h];
            for (int o = 1; o < NO; o++) b += d2[o * T + t] * W1t[o * H + h];
            A[t * H + h] = SFX(hidden_delta)(b, A[t * H + h]);
        }
    }
}

static inline void SFX(delta_cols)(REAL *restrict A, const REAL *restrict W1t, const REAL *restrict d2,
                                   int64_t rows, int64_t H, int64_t T) {
    for (int64_t h = 0; h < H; h++) {
        for (int64_t t = 0; t < rows; t++) {
            REAL b = d2[t] * W1t[h];
            for (int o = 1; o < NO; o++) b += d2[o * T + t] * W1t[o * H + h];
            A[h * T + t] = SFX(hidden_delta)(b, A[h * T + t]);
        }
    }
}

/* SPEC 5-6 into g1 (O x H) and g0 (D x H), row layout; fused: one pass, four rows at a time. */
static inline void SFX(backward_rows)(REAL *restrict A, const REAL *restrict X, const REAL *restrict W1t,
                                      const REAL *restrict d2, REAL *restrict g0, REAL *restrict g1, int64_t rows,
                                      int64_t H, int64_t T) {
    if (!FUSE) {
        SFX(acc_rows)(g1, d2, A, rows, NO, H, T);
        SFX(delta_rows)(A, W1t, d2, rows, H, T);
        SFX(acc_rows)(g0, X, A, rows, ND, H, T);
        return;
    }
    int64_t R4 = rows - rows % 4;
    for (int64_t t = 0; t < R4; t += 4) {
        REAL e0[NO], e1[NO], e2[NO], e3[NO], x0[ND], x1[ND], x2[ND], x3[ND];
        for (int o = 0; o < NO; o++) {
            e0[o] = d2[o * T + t];
            e1[o] = d2[o * T + t + 1];
            e2[o] = d2[o * T + t + 2];
            e3[o] = d2[o * T + t + 3];
        }
        for (int d = 0; d < ND; d++) {
            x0[d] = X[d * T + t];
            x1[d] = X[d * T + t + 1];
            x2[d] = X[d * T + t + 2];
            x3[d] = X[d * T + t + 3];
        }
        for (int64_t h = 0; h < H; h++) {
            REAL a0 = A[t * H + h], a1 = A[(t + 1) * H + h], a2 = A[(t + 2) * H + h], a3 = A[(t + 3) * H + h];
            REAL b0 = 0, b1 = 0, b2 = 0, b3 = 0;
            for (int o = 0; o < NO; o++) {
                g1[o * H + h] += (e0[o] * a0 + e1[o] * a1) + (e2[o] * a2 + e3[o] * a3);
                REAL w = W1t[o * H + h];
                b0 += e0[o] * w;
                b1 += e1[o] * w;
                b2 += e2[o] * w;
                b3 += e3[o] * w;
            }
            REAL q0 = SFX(hidden_delta)(b0, a0), q1 = SFX(hidden_delta)(b1, a1);
            REAL q2 = SFX(hidden_delta)(b2, a2), q3 = SFX(hidden_delta)(b3, a3);
            for (int d = 0; d < ND; d++) g0[d * H + h] += (x0[d] * q0 + x1[d] * q1) + (x2[d] * q2 + x3[d] * q3);
        }
    }
    for (int64_t t = R4; t < rows; t++) {
        for (int64_t h = 0; h < H; h++) {
            REAL a0 = A[t * H + h];
            REAL b0 = 0;
            for (int o = 0; o < NO; o++) {
                REAL e0 = d2[o * T + t];
                g1[o * H + h] += e0 * a0;
                b0 += e0 * W1t[o * H + h];
            }
            REAL q0 = SFX(hidden_delta)(b0, a0);
            for (int d = 0; d < ND; d++) g0[d * H + h] += X[d * T + t] * q0;
        }
    }
}

/* The same, column layout; fused: per h one pass over the tile's rows with D + O running sums. */
static inline void SFX(backward_cols)(REAL *restrict A, const REAL *restrict X, const REAL *restrict W1t,
                                      const REAL *restrict d2, REAL *restrict g0, REAL *restrict g1, int64_t rows,
                                      int64_t H, int64_t T) {
    if (!FUSE) {
        SFX(acc_cols)(g1, d2, A, rows, NO, H, T);
        SFX(delta_cols)(A, W1t, d2, rows, H, T);
        SFX(acc_cols)(g0, X, A, rows, ND, H, T);
        return;
    }
    for (int64_t h = 0; h < H; h++) {
        REAL s1[NO], s0[ND];
        for (int o = 0; o < NO; o++) s1[o] = 0;
        for (int d = 0; d < ND; d++) s0[d] = 0;
        SIMD_SUM(s1[:NO], s0[:ND])
        for (int64_t t = 0; t < rows; t++) {
            REAL a = A[h * T + t];
            REAL b = 0;
            for (int o = 0; o < NO; o++) {
                REAL e = d2[o * T + t];
                s1[o] += a * e;
                b += e * W1t[o * H + h];
            }
            REAL q = SFX(hidden_delta)(b, a);
            for (int d = 0; d < ND; d++) s0[d] += X[d * T + t] * q;
        }
        for (int o = 0; o < NO; o++) g1[o * H + h] += s1[o];
        for (int d = 0; d < ND; d++) g0[d * H + h] += s0[d];
    }
}

static inline double SFX(tile_rows)(const REAL *restrict X, const REAL *restrict y, const REAL *restrict W0,
                                    const REAL *restrict W1t, REAL *restrict A, REAL *restrict d2, REAL *restrict g0,
                                    REAL *restrict g1, int64_t rows, int64_t H, int64_t T) {
    SFX(forward_rows)(A, X, W0, rows, H, T);
    SFX(sigmoid_flat)(A, rows * H);
    double loss = SFX(output_rows)(A, W1t, y, d2, rows, H, T);
    SFX(backward_rows)(A, X, W1t, d2, g0, g1, rows, H, T);
    return loss;
}

static inline double SFX(tile_cols)(const REAL *restrict X, const REAL *restrict y, const REAL *restrict W0,
                                    const REAL *restrict W1t, REAL *restrict A, REAL *restrict d2, REAL *restrict g0,
                                    REAL *restrict g1, int64_t rows, int64_t H, int64_t T) {
    SFX(forward_cols)(A, X, W0, rows, H, T);
    if (rows == T) {
        SFX(sigmoid_flat)(A, H * rows);
    } else {
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < rows; t++) A[h * T + t] = SFX(sigmoid)(A[h * T + t]);
    }
    double loss = SFX(output_cols)(A, W1t, y, d2, rows, H, T);
    SFX(backward_cols)(A, X, W1t, d2, g0, g1, rows, H, T);
    return loss;
}

/* Tiles c0 .. c1-1 into one chunk's accumulators; returns sum |err|. */
static inline double SFX(chunk)(const REAL *restrict X, const REAL *restrict y, const REAL *restrict W0,
                                const REAL *restrict W1t, int64_t N, REAL *restrict A, REAL *restrict d2,
                                REAL *restrict g0, REAL *restrict g1, int64_t c0, int64_t c1, int64_t H, int64_t T,
                                int cols) {
    double loss = 0.0;
    for (int64_t c = c0; c < c1; c++) {
        int64_t rows = N - c * T < T ? N - c * T : T;
        const REAL *Xc = X + c * ND * T, *yc = y + c * NO * T;
        if (cols)
            loss += SFX(tile_cols)(Xc, yc, W0, W1t, A, d2, g0, g1, rows, H, T);
        else
            loss += SFX(tile_rows)(Xc, yc, W0, W1t, A, d2, g0, g1, rows, H, T);
    }
    return loss;
}

/* W += alpha * (sum over chunks of G[c]); the accumulators are zeroed for the next iteration. */
static inline void SFX(update)(REAL *restrict W, REAL *restrict G, int64_t nchunks, int64_t K, int64_t H,
                               REAL alpha) {
    int64_t size = K * H;
    for (int64_t i = 0; i < size; i++) {
        REAL g = G[i];
        G[i] = 0;
        for (int64_t c = 1; c < nchunks; c++) {
            g += G[c * size + i];
            G[c * size + i] = 0;
        }
        W[i] += alpha * g;
    }
}

int SFX(nn_train_net1)(const REAL *X, const REAL *y, REAL *W0t, REAL *d2, REAL *G, int64_t N, REAL alpha,
                       int64_t iterations, int64_t log_every, double *losses) {
    double scale = 1.0 / (double)(N * NO);
    for (int64_t it = 0; it < iterations; it++) {
        double loss = SFX(output_rows)(X, W0t, y, d2, N, ND, N);
        if (log_every > 0 && it % log_every == 0) losses[it / log_every] = loss * scale;
        SFX(acc_rows)(G, d2, X, N, NO, ND, N);
        SFX(update)(W0t, G, 1, NO, ND, alpha);
    }
    return 0;
}

int SFX(nn_train3)(const REAL *X, const REAL *y, REAL *W0, REAL *W1t, int64_t N, int64_t H, int64_t T,
                   int64_t ntiles, int cols, int64_t nchunks, REAL *A, REAL *d2, REAL *G0, REAL *G1,
                   double *closs, REAL alpha, int64_t iterations, int64_t log_every, double *losses) {
    double scale = 1.0 / (double)(N * NO);
    if (nchunks <= 1) { /* _train_serial (and _train_small: one row tile holding the batch) */
        for (int64_t it = 0; it < iterations; it++) {
            double loss = SFX(chunk)(X, y, W0, W1t, N, A, d2, G0, G1, 0, ntiles, H, T, cols);
            if (log_every > 0 && it % log_every == 0) losses[it / log_every] = loss * scale;
            SFX(update)(W1t, G1, 1, NO, H, alpha);
            SFX(update)(W0, G0, 1, ND, H, alpha);
        }
        return 0;
    }
    /* _train_parallel: fixed contiguous chunks of tiles, one per thread, one accumulator set each */
    int64_t per = (ntiles + nchunks - 1) / nchunks;
    for (int64_t it = 0; it < iterations; it++) {
        PRAGMA(omp parallel for num_threads(nchunks) schedule(static, 1))
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t c0 = c * per < ntiles ? c * per : ntiles;
            int64_t c1 = c0 + per < ntiles ? c0 + per : ntiles;
            closs[c] = SFX(chunk)(X, y, W0, W1t, N, A + c * T * H, d2 + c * NO * T, G0 + c * ND * H,
                                  G1 + c * NO * H, c0, c1, H, T, cols);
        }
        if (log_every > 0 && it % log_every == 0) {
            double loss = 0.0;
            for (int64_t c = 0; c < nchunks; c++) loss += closs[c];
            losses[it / log_every] = loss * scale;
        }
        SFX(update)(W1t, G1, nchunks, NO, H, alpha);
        SFX(update)(W0, G0, nchunks, ND, H, alpha);
    }
    return 0;
}

/* _train_hidden: the hidden units in fixed contiguous chunks hb[c] .. hb[c+1]-1, one per thread, the
 * batch one row tile (X, y: D x ld, O x ld, the rows N padded to ld). W0, W1t are chunk-major: chunk
 * c's D x hc block of W0 at D * hb[c], its O x hc block of W1t at O * hb[c]. Per chunk, slices of
 * hb[1] - hb[0] units: A (N x hc), G0 (D x hc), G1 (O x hc); d2 (3 * nchunks slices of O x ld): the
 * chunk's share of the output pre-activations at d2[c] on even iterations, d2[nchunks + c] on odd ones,
 * and its own copy of the output delta at d2[2 * nchunks + c]. One parallel region for the run, a
 * persistent team meeting once an iteration through flags (team_join, release stores and acquire
 * loads of __atomic builtins), as in the Numba kernel; the shares summed in chunk order. */
int SFX(nn_train_hidden)(const REAL *X, const REAL *y, REAL *W0, REAL *W1t, int64_t N, int64_t ld,
                         int64_t nchunks, const int64_t *hb, REAL *A, REAL *d2, REAL *G0, REAL *G1, int64_t *flags,
                         REAL alpha, int64_t iterations, int64_t log_every, double *losses) {
    double scale = 1.0 / (double)(N * NO);
    int64_t per = hb[1] - hb[0], slice = NO * ld;
    memset(flags, 0, sizeof(int64_t) * TEAM_LINE * (nchunks + 1));
    PRAGMA(omp parallel for num_threads(nchunks) schedule(static, 1))
    for (int64_t w = 0; w < nchunks; w++) {
        int64_t first, last;
        team_join(flags, nchunks, w, &first, &last);
        for (int64_t it = 0; first < last && it <= iterations; it++) {
            int64_t half = (it & 1) * nchunks;
            for (int64_t c = first; c < last; c++) {
                int64_t hc = hb[c + 1] - hb[c];
                REAL *Ac = A + c * N * per, *W0c = W0 + ND * hb[c], *W1c = W1t + NO * hb[c];
                if (it > 0) {
                    REAL *g0 = G0 + c * ND * per, *g1 = G1 + c * NO * per;
                    SFX(backward_rows)(Ac, X, W1c, d2 + (2 * nchunks + c) * slice, g0, g1, N, hc, ld);
                    SFX(update)(W1c, g1, 1, NO, hc, alpha);
                    SFX(update)(W0c, g0, 1, ND, hc, alpha);
                }
                if (it < iterations) {
                    SFX(forward_rows)(Ac, X, W0c, N, hc, ld);
                    SFX(sigmoid_flat)(Ac, N * hc);
                    SFX(partial_rows)(Ac, W1c, d2 + (half + c) * slice, N, hc, ld);
                    __atomic_store_n(flags + TEAM_LINE * (1 + c), it + 1, __ATOMIC_RELEASE);
                }
            }
            if (it == iterations) break;
            team_wait(flags, nchunks, it);
            const REAL *shares = d2 + half * slice;
            for (int64_t c = first; c < last; c++) {
                REAL *delta = d2 + (2 * nchunks + c) * slice;
                double loss = 0.0;
                for (int o = 0; o < NO; o++) {
                    for (int64_t t = 0; t < N; t++) {
                        REAL z = shares[o * ld + t];
                        for (int64_t k = 1; k < nchunks; k++) z += shares[k * slice + o * ld + t];
                        REAL a = SFX(sigmoid)(z);
                        REAL err = y[o * ld + t] - a;
                        delta[o * ld + t] = err * a * ((REAL)1 - a);
                        loss += fabs(err);
                    }
                }
                if (c == 0 && log_every > 0 && it % log_every == 0) losses[it / log_every] = loss * scale;
            }
        }
    }
    return 0;
}
