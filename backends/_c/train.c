/* `c` and `c-openmp`: the training loop of backends/_numba_kernels.py, step for step, in C.
 *
 * The same regimes (the 2-layer net over the whole batch; the 3-layer net over row tiles, in row or
 * column layout, fused or multi-pass, serial or in fixed chunks of tiles, one per thread, or with
 * its hidden units in fixed chunks, one per thread: the hidden split), the
 * same tiles and buffers (the Python side calls _numba_kernels.prepare_net), the same exp
 * (_numba_exp: Cody-Waite split, the same polynomial coefficients, the same clamps and 2^k from
 * exponent bits), and the same loop orders and partial sums: the ratio to numba-cpu /
 * numba-parallel is the compiler's (GCC against LLVM through Numba).
 *
 * What differs, because a C file is compiled before the problem is known:
 *  - D and O are compile-time constants (NN_D, NN_O: one module per (D, O), built on first use and
 *    cached, as Numba compiles and caches one kernel per (D, O)); H is not, where Numba also fixes
 *    H for small problems (N*H <= 256), where LLVM then unrolls the loops over h. The small
 *    regime is otherwise the same (one row tile), but there the ratio to numba-cpu measures that
 *    specialisation too: a rough check on the loaded development machine had C 2x slower at 4x4
 *    and 1.35x at 16x16, and within 10% either way from 64x64 up. (A module per H as well would
 *    cost a build of ~3 s for every small H met.)
 *  - fastmath: Numba gives the kernels reassoc/contract/nsz/arcp (_numba_exp.KERNEL_FM) and the
 *    exp contract only (EXP_FM), per instruction. GCC's options are per file, so the file gets
 *    the kernels' flags (-fassociative-math -ffp-contract=fast -fno-signed-zeros
 *    -freciprocal-math, with -fno-trapping-math which reassociation needs, and -fno-math-errno)
 *    and the exp keeps its order with association barriers (NN_KEEP: GCC >= 12's
 *    __builtin_assoc_barrier, clang's __arithmetic_fence); reassociated, its Cody-Waite split
 *    folds into one ln2 and it is off by up to ~200 ulp. A compiler with neither barrier compiles
 *    the whole file without reassociation (the pragma below), which is correct but gives up the
 *    vectorised sums; the reductions carry `#pragma omp simd reduction` (-fopenmp-simd /
 *    -fopenmp) so that they still vectorise there.
 * The included train_body.h is the loop, written once over REAL (double, then float). */
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "train.h"

#if !defined(NN_D) || !defined(NN_O)
#error "NN_D and NN_O (the input and output widths) must be defined"
#endif
#define ND NN_D
#define NO NN_O
#define FUSE (ND <= 4 && NO <= 4) /* _numba_kernels.FUSE_MAX */

#if defined(__has_builtin)
#if defined(__clang__) && __has_builtin(__arithmetic_fence)
#define NN_KEEP(x) __arithmetic_fence(x)
#elif __has_builtin(__builtin_assoc_barrier)
#define NN_KEEP(x) __builtin_assoc_barrier(x)
#endif
#endif
#ifndef NN_KEEP
#define NN_KEEP(x) (x)
#pragma GCC optimize("no-associative-math")
#endif

#define PRAGMA(x) _Pragma(#x)

/* ---- the hidden split's team (_numba_kernels.team_join, TEAM_*) ---------------------------- */

#define TEAM_LINE 16
#define TEAM_SOLO ((int64_t)1 << 40)
#define TEAM_PATIENCE ((int64_t)1 << 16)
#define TEAM_SPIN ((int64_t)1 << 9)
#if defined(__x86_64__) || defined(__i386__)
#define SPIN_PAUSE() __builtin_ia32_pause()
#else
#define SPIN_PAUSE() ((void)0)
#endif

/* The chunks thread w runs, [*first, *last): its own once all nchunks threads have joined (flags[0]
 * counts them in); all of them if the others have not joined after TEAM_PATIENCE polls and this
 * thread claims them (it swaps the count it last saw for TEAM_SOLO); none if another one did. OpenMP
 * may give the region fewer threads than asked for: then no thread waits for one that never comes. */
static void team_join(int64_t *flags, int64_t nchunks, int64_t w, int64_t *first, int64_t *last) {
    *first = *last = 0;
    if (__atomic_fetch_add(flags, 1, __ATOMIC_SEQ_CST) >= TEAM_SOLO) return;
    for (int64_t polls = 0;; polls++) {
        int64_t seen = __atomic_load_n(flags, __ATOMIC_ACQUIRE);
        if (seen == nchunks) {
            *first = w;
            *last = w + 1;
            return;
        }
        if (seen >= TEAM_SOLO) return;
        SPIN_PAUSE();
        if (polls >= TEAM_SPIN) sched_yield();
        if (polls >= TEAM_PATIENCE &&
            __atomic_compare_exchange_n(flags, &seen, TEAM_SOLO, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            *last = nchunks;
            return;
        }
    }
}

/* Until every chunk's flag says it finished iteration it (_numba_kernels.team_wait): spin (with
 * x86's pause), then yield the core at every poll after TEAM_SPIN. */
static void team_wait(int64_t *flags, int64_t nchunks, int64_t it) {
    for (int64_t k = 0; k < nchunks; k++)
        for (int64_t polls = 0; __atomic_load_n(flags + TEAM_LINE * (1 + k), __ATOMIC_ACQUIRE) <= it; polls++) {
            SPIN_PAUSE();
            if (polls >= TEAM_SPIN) sched_yield();
        }
}
#define SIMD_SUM(...) PRAGMA(omp simd reduction(+ : __VA_ARGS__))

/* ---- the exp of backends/_numba_exp.py ---------------------------------------------------- */

/* 2^k for an integer-valued k in [-1022, 1023] (float: [-126, 127]), from exponent bits: k plus
 * the bias lands exactly in the low bits of the mantissa of k + bias + 1.5 * 2^52 (2^23), and
 * shifting those bits into the exponent field drops the rest. Floating-point adds and integer
 * shifts only, so it vectorises without AVX-512's float-to-int64 conversions. */
static inline double f64_scale(double k) {
    double biased = NN_KEEP(k + 6755399441056767.0); /* 0x1.8p52 + 1023 */
    uint64_t bits;
    memcpy(&bits, &biased, sizeof bits);
    bits <<= 52;
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline float f32_scale(float k) {
    float biased = NN_KEEP(k + 12583039.0f); /* 0x1.8p23 + 127 */
    uint32_t bits;
    memcpy(&bits, &biased, sizeof bits);
    bits <<= 23;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline double fexp64(double x) {
    x = x > -746.0 ? x : -746.0;
    x = x < 710.0 ? x : 710.0;
    double kf = floor(x * 1.4426950408889634 + 0.5);
    double r = NN_KEEP(x - kf * 0.6931467056274414);
    r = NN_KEEP(r - kf * 4.7493250390316726e-07);
    double p = 2.5110037605963777e-08;
    p = NN_KEEP(p * r + 2.763263963904103e-07);
    p = NN_KEEP(p * r + 2.755724091857897e-06);
    p = NN_KEEP(p * r + 2.4801485482328494e-05);
    p = NN_KEEP(p * r + 0.00019841269890047113);
    p = NN_KEEP(p * r + 0.0013888888952314775);
    p = NN_KEEP(p * r + 0.008333333333319601);
    p = NN_KEEP(p * r + 0.0416666666664881);
    p = NN_KEEP(p * r + 0.1666666666666668);
    p = NN_KEEP(p * r + 0.5000000000000019);
    p = NN_KEEP(p * r + 1.0);
    p = NN_KEEP(p * r + 1.0);
    double k1 = floor(kf * 0.5);
    double k2 = NN_KEEP(kf - k1);
    return NN_KEEP(p * f64_scale(k1)) * f64_scale(k2);
}

static inline float fexp32(float x) {
    x = x > -104.0f ? x : -104.0f;
    x = x < 89.0f ? x : 89.0f;
    float kf = floorf(x * 1.4426950408889634f + 0.5f);
    float r = NN_KEEP(x - kf * 0.693359375f);
    r = NN_KEEP(r - kf * -0.00021219444170128554f);
    float p = 0.0013941108481958508f;
    p = NN_KEEP(p * r + 0.00837512593716383f);
    p = NN_KEEP(p * r + 0.04166635125875473f);
    p = NN_KEEP(p * r + 0.16666415333747864f);
    p = NN_KEEP(p * r + 0.5f);
    p = NN_KEEP(p * r + 1.0f);
    p = NN_KEEP(p * r + 1.0f);
    float k1 = floorf(kf * 0.5f);
    float k2 = NN_KEEP(kf - k1);
    return NN_KEEP(p * f32_scale(k1)) * f32_scale(k2);
}

double nn_exp64(double x) { return fexp64(x); }
float nn_exp32(float x) { return fexp32(x); }

/* ---- the loop, once per dtype --------------------------------------------------------------- */

#define REAL double
#define FEXP fexp64
#define SFX(name) name##_f64
#include "train_body.h"
#undef REAL
#undef FEXP
#undef SFX

#define REAL float
#define FEXP fexp32
#define SFX(name) name##_f32
#include "train_body.h"
#undef REAL
#undef FEXP
#undef SFX
