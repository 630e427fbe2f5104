/* GELU row kernels (norm.pxi drives them over blocks). Phi in double for either dtype, as
 * the reference layer evaluates it: x Phi(x) with Phi(x) = erfc(-x / sqrt 2) / 2, or the tanh
 * form; backward dout times the slope.
 *
 * The scalar C library's erfc, exp and tanh cost most of the pass. Where the build found
 * glibc's vector math library (libmvec, glibc >= 2.35: setup.py's probe defines
 * FUNK_LIBMVEC), AVX-512 CPUs take eight doubles at a time through its _ZGVeN8v_ functions
 * (the x86-64 vector function ABI: one zmm argument, one zmm result); others, and the
 * tails, take the scalar loop.
 */
#ifndef FUNK_GELU_H
#define FUNK_GELU_H
#include <math.h>
#include <stddef.h>

#define FUNK_GELU_RSQRT2 0.70710678118654752440
#define FUNK_GELU_INV_SQRT_2PI 0.39894228040143267794
#define FUNK_GELU_S 0.79788456080286535588 /* sqrt(2 / pi) */
#define FUNK_GELU_C 0.044715

static inline double funk_gelu_phi(double v, int tanh_form)
{
    if (tanh_form)
        return 0.5 * (1.0 + tanh(FUNK_GELU_S * (v + FUNK_GELU_C * v * v * v)));
    return 0.5 * erfc(-v * FUNK_GELU_RSQRT2);
}

static inline double funk_gelu_slope(double v, int tanh_form)
{
    if (tanh_form) {
        double th = tanh(FUNK_GELU_S * (v + FUNK_GELU_C * v * v * v));
        return 0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * FUNK_GELU_S * (1.0 + 3.0 * FUNK_GELU_C * v * v);
    }
    return 0.5 * erfc(-v * FUNK_GELU_RSQRT2) + v * FUNK_GELU_INV_SQRT_2PI * exp(-0.5 * v * v);
}

#ifdef FUNK_LIBMVEC
#include <immintrin.h>
__m512d _ZGVeN8v_erfc(__m512d);
__m512d _ZGVeN8v_exp(__m512d);
__m512d _ZGVeN8v_tanh(__m512d);

#define FUNK_AVX512 __attribute__((target("avx512f")))
#define FUNK_SET(c) _mm512_set1_pd(c)

FUNK_AVX512 static inline __m512d funk_gelu_phi8(__m512d v, int tanh_form)
{
    if (tanh_form)
        return FUNK_SET(0.5) * (FUNK_SET(1.0) + _ZGVeN8v_tanh(FUNK_SET(FUNK_GELU_S) * (v + FUNK_SET(FUNK_GELU_C) * v * v * v)));
    return FUNK_SET(0.5) * _ZGVeN8v_erfc(-v * FUNK_SET(FUNK_GELU_RSQRT2));
}

FUNK_AVX512 static inline __m512d funk_gelu_slope8(__m512d v, int tanh_form)
{
    if (tanh_form) {
        __m512d th = _ZGVeN8v_tanh(FUNK_SET(FUNK_GELU_S) * (v + FUNK_SET(FUNK_GELU_C) * v * v * v));
        return FUNK_SET(0.5) * (FUNK_SET(1.0) + th)
               + FUNK_SET(0.5) * v * (FUNK_SET(1.0) - th * th) * FUNK_SET(FUNK_GELU_S)
                 * (FUNK_SET(1.0) + FUNK_SET(3.0 * FUNK_GELU_C) * v * v);
    }
    return FUNK_SET(0.5) * _ZGVeN8v_erfc(-v * FUNK_SET(FUNK_GELU_RSQRT2))
           + v * FUNK_SET(FUNK_GELU_INV_SQRT_2PI) * _ZGVeN8v_exp(FUNK_SET(-0.5) * v * v);
}

/* eight elements of T at p as doubles, and back */
#define FUNK_LOAD8_d(p) _mm512_loadu_pd(p)
#define FUNK_STORE8_d(p, v) _mm512_storeu_pd((p), (v))
#define FUNK_LOAD8_f(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
#define FUNK_STORE8_f(p, v) _mm256_storeu_ps((p), _mm512_cvtpd_ps(v))

#define FUNK_GELU_VECTOR(T, S)                                                                  \
FUNK_AVX512 static ptrdiff_t funk_gelu_fwd8_##S(const T *x, T *o, ptrdiff_t n, int tanh_form)   \
{                                                                                               \
    ptrdiff_t i = 0;                                                                            \
    for (; i + 8 <= n; i += 8) {                                                                \
        __m512d v = FUNK_LOAD8_##S(x + i);                                                      \
        FUNK_STORE8_##S(o + i, v * funk_gelu_phi8(v, tanh_form));                               \
    }                                                                                           \
    return i;                                                                                   \
}                                                                                               \
FUNK_AVX512 static ptrdiff_t funk_gelu_bwd8_##S(const T *d, const T *x, T *o, ptrdiff_t n,      \
                                               int tanh_form)                                   \
{                                                                                               \
    ptrdiff_t i = 0;                                                                            \
    for (; i + 8 <= n; i += 8) {                                                                \
        __m512d v = FUNK_LOAD8_##S(x + i);                                                      \
        FUNK_STORE8_##S(o + i, FUNK_LOAD8_##S(d + i) * funk_gelu_slope8(v, tanh_form));         \
    }                                                                                           \
    return i;                                                                                   \
}
FUNK_GELU_VECTOR(float, f)
FUNK_GELU_VECTOR(double, d)
#define FUNK_GELU_HEAD(S, call) ptrdiff_t i = __builtin_cpu_supports("avx512f") ? call : 0;
#else
#define FUNK_GELU_HEAD(S, call) ptrdiff_t i = 0;
#endif

/* funk_gelu_fwd_f/_d: o = x Phi(x); funk_gelu_bwd_f/_d: o = d * slope(x); n elements. */
#define FUNK_GELU_DEFINE(T, S)                                                                  \
static inline void funk_gelu_fwd_##S(const T *x, T *o, ptrdiff_t n, int tanh_form)              \
{                                                                                               \
    FUNK_GELU_HEAD(S, funk_gelu_fwd8_##S(x, o, n, tanh_form))                                   \
    for (; i < n; i++) {                                                                        \
        double v = (double)x[i];                                                                \
        o[i] = (T)(v * funk_gelu_phi(v, tanh_form));                                            \
    }                                                                                           \
}                                                                                               \
static inline void funk_gelu_bwd_##S(const T *d, const T *x, T *o, ptrdiff_t n, int tanh_form)  \
{                                                                                               \
    FUNK_GELU_HEAD(S, funk_gelu_bwd8_##S(d, x, o, n, tanh_form))                                \
    for (; i < n; i++)                                                                          \
        o[i] = (T)((double)d[i] * funk_gelu_slope((double)x[i], tanh_form));                    \
}
FUNK_GELU_DEFINE(float, f)
FUNK_GELU_DEFINE(double, d)

#endif
