/* Row kernels of 2x2, stride-2 max pooling, the networks' common pool (FER MNIST, VGG,
 * ResNet9). The general kernel in _compiled.pyx takes a window offset at a time with
 * strided loads and ran at under 1 element per ns; here each output row reads its two
 * input rows once, in a loop gcc vectorises (pairs of neighbours by shuffles), and the
 * backward writes every dx element of the window rows itself (dout at the maximum, 0
 * elsewhere), so dx needs no zeroing pass first.
 *
 * Same results as the general kernel: the first maximum in row-major window order wins,
 * a NaN wins over numbers (the first NaN), positions are flat h * W + w in the plane.
 */
#ifndef FUNK_POOL_H
#define FUNK_POOL_H
#include <stddef.h>
#include <stdint.h>

#define FUNK_POOL_DEFINE(T, S)                                                                  \
static inline void funk_maxpool2_row_##S(const T *r0, const T *r1, T *o, int32_t *g,            \
                                         ptrdiff_t Wo, int32_t base, int32_t W)                 \
{                                                                                               \
    /* the window's 4 candidates in order; a later one wins if strictly greater, or if it \
       is the first NaN (written with ifs: gcc if-converts and vectorises this form) */     \
    for (ptrdiff_t j = 0; j < Wo; j++) {                                                        \
        T b0 = r0[2 * j], b1 = r0[2 * j + 1], c0 = r1[2 * j], c1 = r1[2 * j + 1];               \
        T best = b0;                                                                            \
        int32_t k = 0;                                                                          \
        if (b1 > best || (b1 != b1 && best == best)) { best = b1; k = 1; }                      \
        if (c0 > best || (c0 != c0 && best == best)) { best = c0; k = W; }                      \
        if (c1 > best || (c1 != c1 && best == best)) { best = c1; k = W + 1; }                  \
        o[j] = best;                                                                            \
        g[j] = base + 2 * (int32_t)j + k;                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* dx rows 2i and 2i + 1 (d0, d1; W wide) from output row i: dout d, argmax g. Columns      \
   past 2 Wo (an odd W) are zero. */                                                        \
static inline void funk_maxpool2_back_row_##S(const T *d, const int32_t *g, T *d0, T *d1,       \
                                              ptrdiff_t Wo, int32_t base, int32_t W)            \
{                                                                                               \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t j = 0; j < Wo; j++) {                                                        \
        T dv = d[j];                                                                            \
        int32_t at = g[j] - base - 2 * (int32_t)j; /* 0, 1, W or W + 1 */                       \
        d0[2 * j] = at == 0 ? dv : (T)0;                                                        \
        d0[2 * j + 1] = at == 1 ? dv : (T)0;                                                    \
        d1[2 * j] = at == W ? dv : (T)0;                                                        \
        d1[2 * j + 1] = at == W + 1 ? dv : (T)0;                                                \
    }                                                                                           \
    for (ptrdiff_t w = 2 * Wo; w < W; w++) {                                                    \
        d0[w] = 0;                                                                              \
        d1[w] = 0;                                                                              \
    }                                                                                           \
}

#define FUNK_POOL_GENERIC(T, S)                                                                 \
/* output row i of any (ph, pw) pool with column stride sw over plane x (W wide), window \
   rows from row0: one window offset at a time over the whole row, the update written with \
   an if that gcc turns into selects (the Cython loop it replaces branched) */             \
static inline void funk_maxpool_row_##S(const T *x, T *o, int32_t *g, ptrdiff_t Wo, ptrdiff_t W, \
                                        ptrdiff_t row0, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t sw) \
{                                                                                               \
    for (ptrdiff_t j = 0; j < Wo; j++) {                                                        \
        o[j] = x[row0 * W + j * sw];                                                            \
        g[j] = (int32_t)(row0 * W + j * sw);                                                    \
    }                                                                                           \
    for (ptrdiff_t a = 0; a < ph; a++)                                                          \
        for (ptrdiff_t b = 0; b < pw; b++) {                                                    \
            if (a == 0 && b == 0)                                                               \
                continue;                                                                       \
            const T *src = x + (row0 + a) * W + b;                                              \
            int32_t off = (int32_t)((row0 + a) * W + b);                                        \
            if (sw == 2) { /* a constant stride: loads by shuffles, not element by element */  \
                for (ptrdiff_t j = 0; j < Wo; j++) {                                            \
                    T v = src[2 * j], best = o[j];                                              \
                    int32_t k = g[j];                                                           \
                    if (v > best || (v != v && best == best)) { best = v; k = off + (int32_t)(2 * j); } \
                    o[j] = best;                                                                \
                    g[j] = k;                                                                   \
                }                                                                               \
                continue;                                                                       \
            }                                                                                   \
            for (ptrdiff_t j = 0; j < Wo; j++) {                                                \
                T v = src[j * sw], best = o[j];                                                 \
                int32_t k = g[j];                                                               \
                if (v > best || (v != v && best == best)) { best = v; k = off + (int32_t)(j * sw); } \
                o[j] = best;                                                                    \
                g[j] = k;                                                                       \
            }                                                                                   \
        }                                                                                       \
}

#define FUNK_POOL_PLANES(T, S)                                                                  \
/* whole (n, c) planes: x (H, W) -> out, arg (Ho, Wo); dout, arg (Ho, Wo) -> dx (H, W) */      \
static inline void funk_maxpool2_plane_##S(const T *x, T *o, int32_t *g, ptrdiff_t Ho, ptrdiff_t Wo, \
                                           int32_t W)                                           \
{                                                                                               \
    for (ptrdiff_t i = 0; i < Ho; i++)                                                          \
        funk_maxpool2_row_##S(x + 2 * i * W, x + (2 * i + 1) * W, o + i * Wo, g + i * Wo, Wo,   \
                              (int32_t)(2 * i * W), W);                                         \
}                                                                                               \
                                                                                                \
static inline void funk_maxpool2_back_plane_##S(const T *d, const int32_t *g, T *dx, ptrdiff_t Ho, \
                                                ptrdiff_t Wo, ptrdiff_t H, int32_t W)           \
{                                                                                               \
    for (ptrdiff_t i = 0; i < Ho; i++)                                                          \
        funk_maxpool2_back_row_##S(d + i * Wo, g + i * Wo, dx + 2 * i * W, dx + (2 * i + 1) * W, \
                                   Wo, (int32_t)(2 * i * W), W);                                \
    for (ptrdiff_t w = 2 * Ho * W; w < H * W; w++)  /* a last odd row */                       \
        dx[w] = 0;                                                                              \
}

FUNK_POOL_DEFINE(float, f)
FUNK_POOL_DEFINE(double, d)
FUNK_POOL_PLANES(float, f)
FUNK_POOL_PLANES(double, d)
FUNK_POOL_GENERIC(float, f)
FUNK_POOL_GENERIC(double, d)

#endif
