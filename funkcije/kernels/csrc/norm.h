/* Row kernels of the batch-norm and ReLU passes (norm.pxi drives them over (n, c) rows).
 *
 * Written in C for two reasons the Cython versions measured: (1) the sums are
 * reductions, which gcc vectorises only when told the order may change
 * (`omp simd reduction`; deterministic for a given build); the scalar chains ran at
 * about 1 element per 4 cycles. (2) ReLU's mask must not be a branch: Cython's
 * `dout if y > 0 else 0` became one (a conditional load gcc may not hoist),
 * mispredicted half the time on real activations: 7-18x slower backward. The mask
 * selects (0 where dout is inf or NaN and the unit is off, as PyTorch).
 */
#ifndef FUNK_NORM_H
#define FUNK_NORM_H
#include <stddef.h>

#define FUNK_NORM_BLOCK 256

#define FUNK_NORM_DEFINE(T, S)                                                                  \
static inline void funk_bn_sums_##S(const T *x, ptrdiff_t n, double shift, double *s1, double *s2) \
{                                                                                               \
    double a = 0.0, b = 0.0;                                                                    \
    _Pragma("omp simd reduction(+:a,b)")                                                        \
    for (ptrdiff_t i = 0; i < n; i++) {                                                         \
        double d = (double)x[i] - shift;                                                        \
        a += d;                                                                                 \
        b += d * d;                                                                             \
    }                                                                                           \
    *s1 += a;                                                                                   \
    *s2 += b;                                                                                   \
}                                                                                               \
                                                                                                \
static inline void funk_bn_apply_##S(const T *x, T *o, ptrdiff_t n, T m, T a, T b, int relu)     \
{                                                                                               \
    if (relu) {                                                                                 \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            T v = (x[i] - m) * a + b;                                                           \
            o[i] = v < 0 ? (T)0 : v; /* NaN passes, as in relu_fwd */                           \
        }                                                                                       \
    } else {                                                                                    \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < n; i++)                                                       \
            o[i] = (x[i] - m) * a + b;                                                          \
    }                                                                                           \
}                                                                                               \
                                                                                                \
static inline void funk_bn_grad_sums_##S(const T *d, const T *x, const T *y, ptrdiff_t n, double m, \
                                         int relu, double *s0, double *s1)                      \
{                                                                                               \
    double a = 0.0, b = 0.0;                                                                    \
    T g[FUNK_NORM_BLOCK];                                                                       \
    if (!relu) {                                                                                \
        _Pragma("omp simd reduction(+:a,b)")                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            double gv = d[i];                                                                   \
            a += gv;                                                                            \
            b += gv * ((double)x[i] - m);                                                       \
        }                                                                                       \
        *s0 += a;                                                                               \
        *s1 += b;                                                                               \
        return;                                                                                 \
    }                                                                                           \
    for (ptrdiff_t i0 = 0; i0 < n; i0 += FUNK_NORM_BLOCK) {                                     \
        ptrdiff_t nb = n - i0 < FUNK_NORM_BLOCK ? n - i0 : FUNK_NORM_BLOCK;                     \
        const T *dr = d + i0, *xr = x + i0, *yr = y + i0;                                       \
        /* the mask as a select into a block (vectorises), then the sums over it: in one loop \
           gcc 12 sees the select as control flow and leaves the reduction scalar */            \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < nb; i++) {                                                    \
            T dv = dr[i];                                                                       \
            g[i] = yr[i] > 0 ? dv : (T)0;                                                       \
        }                                                                                       \
        _Pragma("omp simd reduction(+:a,b)")                                                    \
        for (ptrdiff_t i = 0; i < nb; i++) {                                                    \
            double gv = g[i];                                                                   \
            a += gv;                                                                            \
            b += gv * ((double)xr[i] - m);                                                      \
        }                                                                                       \
    }                                                                                           \
    *s0 += a;                                                                                   \
    *s1 += b;                                                                                   \
}                                                                                               \
                                                                                                \
static inline void funk_bn_dx_##S(const T *d, const T *x, const T *y, T *o, ptrdiff_t n, T m, T a, \
                                  T b, T k, int relu)                                           \
{                                                                                               \
    if (relu) {                                                                                 \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            T dv = d[i];                                                                        \
            T g = y[i] > 0 ? dv : (T)0;                                                         \
            o[i] = a * g + b * (x[i] - m) + k;                                                  \
        }                                                                                       \
    } else {                                                                                    \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < n; i++)                                                       \
            o[i] = a * d[i] + b * (x[i] - m) + k;                                               \
    }                                                                                           \
}                                                                                               \
                                                                                                \
static inline void funk_relu_fwd_##S(const T *x, T *o, ptrdiff_t n)                              \
{                                                                                               \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t i = 0; i < n; i++) {                                                         \
        T v = x[i];                                                                             \
        o[i] = v < 0 ? (T)0 : v;                                                                \
    }                                                                                           \
}                                                                                               \
                                                                                                \
static inline void funk_relu_bwd_##S(const T *d, const T *y, T *o, ptrdiff_t n)                  \
{                                                                                               \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t i = 0; i < n; i++) {                                                         \
        T dv = d[i];                                                                            \
        o[i] = y[i] > 0 ? dv : (T)0;                                                            \
    }                                                                                           \
}

FUNK_NORM_DEFINE(float, f)
FUNK_NORM_DEFINE(double, d)

#endif
