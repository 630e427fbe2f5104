/* Direct float32 convolution kernels (AVX-512), used by fast_layers for layers whose
   C_g * HH * WW is small: there im2col's column matrix costs as much memory traffic as
   the GEMM does arithmetic. Compiled for AVX-512F + FMA via target attributes and
   called only when the CPU has them (funk_has_avx512). */
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FUNK_X86 1
#endif

static int funk_has_avx512(void) {
#ifdef FUNK_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}


/* Zero-padded copy of x[n, c0:c0+Cg] into xp (Cg, Hp, Wp), x plane (H, W) at (ph, pw). */
static void funk_pad_planes(const float *xn, int Cg, int H, int W, int ph, int pw,
                            int Hp, int Wp, float *xp) {
    memset(xp, 0, sizeof(float) * (size_t)Cg * Hp * Wp);
    for (int c = 0; c < Cg; c++)
        for (int h = 0; h < H; h++) {
            int hh = h + ph;
            if (hh < 0 || hh >= Hp) continue;
            const float *src = xn + ((size_t)c * H + h) * W;
            float *dst = xp + ((size_t)c * Hp + hh) * Wp;
            for (int w = 0; w < W; w++) {
                int ww = w + pw;
                if (ww >= 0 && ww < Wp) dst[ww] = src[w];
            }
        }
}

#ifdef FUNK_X86
/* One sample, filters [f0, f0 + 16 * NV), output columns in blocks of JB (NV * JB
   accumulator registers): out[f][i][j] = bias[f] + sum over c, kh, kw of
   wT[(c * KH + kh) * KW + kw][f] * xp[c][i * sh + kh * dh][j * sw + kw * dw]. */
#define FUNK_FWD_BLOCK(NV, JB)                                                                \
__attribute__((target("avx512f,fma")))                                                         \
static void funk_fwd_##NV##_##JB(const float *xp, int Cg, int Hp, int Wp, const float *wT, int Fp, \
                               int f0, int nf, int KH, int KW, int sh, int sw, int dh, int dw,  \
                               int Ho, int Wo, const float *bias, float *out) {               \
    float tmp[JB][16 * NV];                                                                    \
    for (int i = 0; i < Ho; i++)                                                               \
        for (int j0 = 0; j0 < Wo; j0 += JB) {                                                  \
            __m512 acc[JB][NV];                                                                \
            for (int j = 0; j < JB; j++)                                                       \
                for (int v = 0; v < NV; v++) acc[j][v] = _mm512_setzero_ps();                  \
            const float *wr = wT + f0;                                                         \
            for (int c = 0; c < Cg; c++)                                                       \
                for (int kh = 0; kh < KH; kh++) {                                              \
                    const float *xr = xp + ((size_t)c * Hp + i * sh + kh * dh) * Wp + j0 * sw; \
                    for (int kw = 0; kw < KW; kw++, wr += Fp) {                                \
                        __m512 wv[NV];                                                         \
                        for (int v = 0; v < NV; v++) wv[v] = _mm512_loadu_ps(wr + 16 * v);     \
                        const float *xx = xr + kw * dw;                                        \
                        for (int j = 0; j < JB; j++) {                                         \
                            __m512 xb = _mm512_set1_ps(xx[j * sw]);                            \
                            for (int v = 0; v < NV; v++)                                       \
                                acc[j][v] = _mm512_fmadd_ps(xb, wv[v], acc[j][v]);             \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
            for (int j = 0; j < JB; j++)                                                       \
                for (int v = 0; v < NV; v++) _mm512_storeu_ps(&tmp[j][16 * v], acc[j][v]);     \
            int jn = Wo - j0 < JB ? Wo - j0 : JB;                                              \
            for (int f = 0; f < nf; f++) {                                                     \
                float *o = out + ((size_t)(f0 + f) * Ho + i) * Wo + j0;                        \
                float bf = bias ? bias[f0 + f] : 0.0f;                                         \
                for (int j = 0; j < jn; j++) o[j] = tmp[j][f] + bf;                            \
            }                                                                                  \
        }                                                                                      \
}
FUNK_FWD_BLOCK(1, 8)
FUNK_FWD_BLOCK(1, 12)
FUNK_FWD_BLOCK(1, 14)
FUNK_FWD_BLOCK(1, 16)
FUNK_FWD_BLOCK(2, 6)
FUNK_FWD_BLOCK(2, 7)
FUNK_FWD_BLOCK(2, 8)
FUNK_FWD_BLOCK(2, 12)

typedef void (*funk_fwd_fn)(const float *, int, int, int, const float *, int, int, int, int, int,
                            int, int, int, int, int, int, const float *, float *);

/* The column block for Wo with NV filter vectors: fewest computed columns
   (ceil(Wo / JB) * JB), then the largest block. */
static int funk_pick_jb(int NV, int Wo, funk_fwd_fn *fn) {
    static const int jb1[] = {16, 14, 12, 8};
    static const int jb2[] = {12, 8, 7, 6};
    static const funk_fwd_fn f1[] = {funk_fwd_1_16, funk_fwd_1_14, funk_fwd_1_12, funk_fwd_1_8};
    static const funk_fwd_fn f2[] = {funk_fwd_2_12, funk_fwd_2_8, funk_fwd_2_7, funk_fwd_2_6};
    const int *jb = NV == 1 ? jb1 : jb2;
    const funk_fwd_fn *fs = NV == 1 ? f1 : f2;
    int best = 0;
    for (int k = 1; k < 4; k++) {
        int cb = (Wo + jb[best] - 1) / jb[best] * jb[best], ck = (Wo + jb[k] - 1) / jb[k] * jb[k];
        if (ck < cb) best = k;
    }
    *fn = fs[best];
    return jb[best];
}
#endif

/* Forward for samples [n0, n1) of x (N, C, H, W), channels [c0, c0 + Cg), into out
   (N, Fout, Ho, Wo) filters [fo, fo + F) (one group): wT (Cg * KH * KW, Fp) with Fp a
   multiple of 16 and zeros past F. Returns 0, or -1 when out of memory. */
static int funk_direct_fwd(const float *x, int n0, int n1, int C, int H, int W, int c0, int Cg,
                           int ph, int pw, const float *wT, int Fp, int F, int KH, int KW,
                           int sh, int sw, int dh, int dw, int Ho, int Wo,
                           const float *bias, float *out, int Fout, int fo) {
#ifdef FUNK_X86
    funk_fwd_fn fn1, fn2;
    int jb1 = funk_pick_jb(1, Wo, &fn1), jb2 = funk_pick_jb(2, Wo, &fn2);
    int jb = jb1 > jb2 ? jb1 : jb2;
    int Hp = H + 2 * ph, Wp = W + 2 * pw;
    /* the last column block may compute past Wo: room for its reads */
    int need_w = ((Wo + jb - 1) / jb * jb - 1) * sw + (KW - 1) * dw + 1;
    int need_w2 = ((Wo + jb1 - 1) / jb1 * jb1 - 1) * sw + (KW - 1) * dw + 1;
    int need_w3 = ((Wo + jb2 - 1) / jb2 * jb2 - 1) * sw + (KW - 1) * dw + 1;
    if (need_w2 > need_w) need_w = need_w2;
    if (need_w3 > need_w) need_w = need_w3;
    if (Wp < need_w) Wp = need_w;
    float *xp = (float *)malloc(sizeof(float) * (size_t)Cg * Hp * Wp);
    if (!xp) return -1;
    for (int n = n0; n < n1; n++) {
        funk_pad_planes(x + ((size_t)n * C + c0) * H * W, Cg, H, W, ph, pw, Hp, Wp, xp);
        float *on = out + ((size_t)n * Fout + fo) * Ho * Wo;
        const float *bn = bias ? bias + fo : NULL;
        for (int f0 = 0; f0 < F; f0 += 32) {
            int nf = F - f0 < 32 ? F - f0 : 32;
            if (nf > 16) fn2(xp, Cg, Hp, Wp, wT, Fp, f0, nf, KH, KW, sh, sw, dh, dw, Ho, Wo, bn, on);
            else fn1(xp, Cg, Hp, Wp, wT, Fp, f0, nf, KH, KW, sh, sw, dh, dw, Ho, Wo, bn, on);
        }
    }
    free(xp);
    return 0;
#else
    return -1;
#endif
}

#ifdef FUNK_X86
/* dwT[(c * KH + kh) * KW + kw][f] += sum over i, j of one sample's
   doutT[i][j][f] * xp[c][i * sh + kh * dh][j * sw + kw * dw], filters [f0, f0 + 16 NV),
   for a kernel KW columns wide (a compile-time constant, so the NV * KW accumulators
   stay in registers). */
#define FUNK_DW_BLOCK(NV, KWC)                                                                \
__attribute__((target("avx512f,fma")))                                                         \
static void funk_dw_##NV##_##KWC(const float *xp, int Cg, int Hp, int Wp, const float *dT, int Fp, \
                                 int f0, int KH, int sh, int sw, int dh, int dw,              \
                                 int Ho, int Wo, float *dwT) {                                 \
    for (int c = 0; c < Cg; c++)                                                               \
        for (int kh = 0; kh < KH; kh++) {                                                      \
            __m512 acc[KWC][NV];                                                               \
            for (int k = 0; k < KWC; k++)                                                      \
                for (int v = 0; v < NV; v++) acc[k][v] = _mm512_setzero_ps();                  \
            for (int i = 0; i < Ho; i++) {                                                     \
                const float *xr = xp + ((size_t)c * Hp + i * sh + kh * dh) * Wp;               \
                const float *dr = dT + (size_t)i * Wo * Fp + f0;                               \
                for (int j = 0; j < Wo; j++, dr += Fp) {                                       \
                    __m512 dv[NV];                                                             \
                    for (int v = 0; v < NV; v++) dv[v] = _mm512_loadu_ps(dr + 16 * v);         \
                    const float *xx = xr + j * sw;                                             \
                    for (int k = 0; k < KWC; k++) {                                            \
                        __m512 xb = _mm512_set1_ps(xx[k * dw]);                                \
                        for (int v = 0; v < NV; v++)                                           \
                            acc[k][v] = _mm512_fmadd_ps(xb, dv[v], acc[k][v]);                 \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            for (int k = 0; k < KWC; k++) {                                                    \
                float *o = dwT + ((size_t)(c * KH + kh) * KWC + k) * Fp + f0;                  \
                for (int v = 0; v < NV; v++)                                                   \
                    _mm512_storeu_ps(o + 16 * v, _mm512_add_ps(_mm512_loadu_ps(o + 16 * v), acc[k][v])); \
            }                                                                                  \
        }                                                                                      \
}
#define FUNK_DW_KW(KWC) FUNK_DW_BLOCK(1, KWC) FUNK_DW_BLOCK(2, KWC)
FUNK_DW_KW(1) FUNK_DW_KW(2) FUNK_DW_KW(3) FUNK_DW_KW(4)
FUNK_DW_KW(5) FUNK_DW_KW(6) FUNK_DW_KW(7) FUNK_DW_KW(8)

typedef void (*funk_dw_fn)(const float *, int, int, int, const float *, int, int, int, int, int,
                           int, int, int, int, float *);
static const funk_dw_fn funk_dw_fns[2][8] = {
    {funk_dw_1_1, funk_dw_1_2, funk_dw_1_3, funk_dw_1_4, funk_dw_1_5, funk_dw_1_6, funk_dw_1_7, funk_dw_1_8},
    {funk_dw_2_1, funk_dw_2_2, funk_dw_2_3, funk_dw_2_4, funk_dw_2_5, funk_dw_2_6, funk_dw_2_7, funk_dw_2_8},
};
#endif

/* dw of one group for samples [n0, n1): dwT (Cg * KH * KW, Fp) accumulates; dout
   (N, Fout, Ho, Wo), the group's filters [fo, fo + F) (copied per sample into a buffer
   with filters last, zeros past F, so the kernels load 16 filters at once). KW <= 8.
   Returns 0, or -1 when out of memory. */
static int funk_direct_dw(const float *x, int n0, int n1, int C, int H, int W, int c0, int Cg,
                          int ph, int pw, const float *dout, int Fout, int fo, int Fp, int F,
                          int KH, int KW, int sh, int sw, int dh, int dw, int Ho, int Wo,
                          float *dwT) {
#ifdef FUNK_X86
    int Hp = H + 2 * ph, Wp = W + 2 * pw, P = Ho * Wo;
    if (KW < 1 || KW > 8) return -1;
    float *xp = (float *)malloc(sizeof(float) * (size_t)Cg * Hp * Wp);
    float *dT = (float *)calloc((size_t)P * Fp, sizeof(float));
    if (!xp || !dT) { free(xp); free(dT); return -1; }
    for (int n = n0; n < n1; n++) {
        funk_pad_planes(x + ((size_t)n * C + c0) * H * W, Cg, H, W, ph, pw, Hp, Wp, xp);
        const float *dn = dout + ((size_t)n * Fout + fo) * P;
        for (int f = 0; f < F; f++)
            for (int q = 0; q < P; q++) dT[(size_t)q * Fp + f] = dn[(size_t)f * P + q];
        for (int f0 = 0; f0 < F; f0 += 32)
            funk_dw_fns[F - f0 > 16][KW - 1](xp, Cg, Hp, Wp, dT, Fp, f0, KH, sh, sw, dh, dw, Ho, Wo, dwT);
    }
    free(xp);
    free(dT);
    return 0;
#else
    return -1;
#endif
}
