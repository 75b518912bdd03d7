/* The C twin of backends/_numba_kernels.py: declarations (the cdef of backends/c_backend.py).
 *
 * Layouts are those of _numba_kernels.prepare_net (the same arrays are passed in):
 *   3-layer: X, y tile-major (ntiles x D x T, ntiles x O x T), W0 (D x H), W1t = W1.T (O x H);
 *            scratch per chunk: A (T*H), d2 (O x T), G0 (D x H), G1 (O x H), closs (nchunks).
 *   2-layer: X (N x D), y = y.T (O x N), W0t = W0.T (O x D); scratch d2 (O x N), G (O x D).
 * D and O are compile-time constants of the module (NN_D, NN_O), as they are closure constants of
 * the Numba kernels. nn_train_hidden is the hidden split (_numba_kernels._train_hidden; its layouts:
 * _numba_kernels.Net and Work, and train_body.h). Every function returns 0. */
#include <stdint.h>

int nn_train_net1_f64(const double *X, const double *y, double *W0t, double *d2, double *G, int64_t N,
                      double alpha, int64_t iterations, int64_t log_every, double *losses);
int nn_train_net1_f32(const float *X, const float *y, float *W0t, float *d2, float *G, int64_t N,
                      float alpha, int64_t iterations, int64_t log_every, double *losses);
int nn_train3_f64(const double *X, const double *y, double *W0, double *W1t, int64_t N, int64_t H, int64_t T,
                  int64_t ntiles, int cols, int64_t nchunks, double *A, double *d2, double *G0, double *G1,
                  double *closs, double alpha, int64_t iterations, int64_t log_every, double *losses);
int nn_train3_f32(const float *X, const float *y, float *W0, float *W1t, int64_t N, int64_t H, int64_t T,
                  int64_t ntiles, int cols, int64_t nchunks, float *A, float *d2, float *G0, float *G1,
                  double *closs, float alpha, int64_t iterations, int64_t log_every, double *losses);
int nn_train_hidden_f64(const double *X, const double *y, double *W0, double *W1t, int64_t N, int64_t ld, int64_t nchunks,
                        const int64_t *hb, double *A, double *d2, double *G0, double *G1, int64_t *flags, double alpha,
                        int64_t iterations, int64_t log_every, double *losses);
int nn_train_hidden_f32(const float *X, const float *y, float *W0, float *W1t, int64_t N, int64_t ld, int64_t nchunks,
                        const int64_t *hb, float *A, float *d2, float *G0, float *G1, int64_t *flags, float alpha,
                        int64_t iterations, int64_t log_every, double *losses);
double nn_exp64(double x);
float nn_exp32(float x);
