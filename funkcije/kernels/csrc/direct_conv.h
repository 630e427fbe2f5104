/* Direct float32 convolution kernels (AVX-512), used by fast_layers for layers whose
   C_g * HH * WW is small: there im2col's column matrix costs as much memory traffic as
   the GEMM does arithmetic. The forward (and dx, a convolution of dout) has two layouts:
   vectors along filters (funk_fwd_*: a block of output columns broadcast from the input)
   and vectors along output rows (funk_row_*: a block of filters broadcast from the
   weights), picked per layer by funk_fwd_row_kernel; dw has filters along its vectors
   (funk_dw_*). Compiled for AVX-512F + FMA via target attributes and called only when
   the CPU has them (funk_has_avx512). */
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


/* Zero-padded copy of x[n, c0:c0+Cg] into xp (Cg, Hp, Wp), x plane (H, W) at (ph, pw),
   ph, pw >= 0 and Wp >= W + pw. Row by row (memset/memcpy): for a layer with one or a
   few filters this copy costs as much as the convolution. */
static void funk_pad_planes(const float *xn, int Cg, int H, int W, int ph, int pw,
                            int Hp, int Wp, float *xp) {
    for (int c = 0; c < Cg; c++)
        for (int hh = 0; hh < Hp; hh++) {
            float *dst = xp + ((size_t)c * Hp + hh) * Wp;
            int h = hh - ph;
            if (h < 0 || h >= H) {
                memset(dst, 0, sizeof(float) * Wp);
                continue;
            }
            memset(dst, 0, sizeof(float) * pw);
            memcpy(dst + pw, xn + ((size_t)c * H + h) * W, sizeof(float) * W);
            memset(dst + pw + W, 0, sizeof(float) * (Wp - pw - W));
        }
}

/* The padded planes for the row kernels, with column stride sw folded in: each padded
   row (Wp columns) is stored as sw phases of Wq = ceil(Wp / sw) columns, phase p holding
   columns p, p + sw, p + 2 sw, ... So padded column j * sw + t is at phase t % sw, index
   j + t / sw: consecutive output columns read consecutive floats (one vector load) for
   any stride. sw = 1 is funk_pad_planes with Wp = Wq. Rows are sw * Wq floats long. */
static void funk_pad_phased(const float *xn, int Cg, int H, int W, int ph, int pw, int Hp,
                            int Wp, int sw, int Wq, float *xp) {
    if (sw == 1) {
        funk_pad_planes(xn, Cg, H, W, ph, pw, Hp, Wq, xp);
        return;
    }
    size_t Wr = (size_t)sw * Wq;
    for (int c = 0; c < Cg; c++)
        for (int hh = 0; hh < Hp; hh++) {
            float *dst = xp + ((size_t)c * Hp + hh) * Wr;
            memset(dst, 0, sizeof(float) * Wr);
            int h = hh - ph;
            if (h < 0 || h >= H) continue;
            const float *src = xn + ((size_t)c * H + h) * W;
            /* phase by phase, no division per element: padded column q * sw + p is
               input column q * sw + p - pw */
            for (int p = 0; p < sw; p++) {
                float *d = dst + (size_t)p * Wq;
                for (int q = 0, w = p - pw; q < Wq; q++, w += sw)
                    if (w >= 0 && w < W) d[q] = src[w];
            }
        }
}

/* Offsets, within a phased row, of kernel columns kw = 0 .. KW - 1 (dilation dw). */
static void funk_phase_offsets(int KW, int dw, int sw, int Wq, int *koff) {
    for (int kw = 0; kw < KW; kw++) koff[kw] = (kw * dw) % sw * Wq + (kw * dw) / sw;
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

#ifdef FUNK_X86
/* Row kernels: vectors run along an output row (16 columns), so filters need not fill
   the lanes (dx of a layer with 1 or 3 input channels has 1 or 3 "filters"). One call
   computes an FB filters x RB rows x 16 columns block: out[f][i0 + r][j0 + t] for the
   lanes in `mask`, from the phased planes xp (Cg, Hp, Wr) (funk_pad_phased; kernel
   column kw at offset koff[kw]) and wB (Cg * KH * KW, FB), the block's filters packed
   side by side. Lanes outside the mask read past the row (into the next row, or the
   buffer's slack) and are not stored. */
#define FUNK_ROW_BLOCK(FB, RB)                                                                 \
__attribute__((target("avx512f,fma")))                                                         \
static void funk_row_##FB##_##RB(const float *xp, int Cg, int Hp, int Wp, const float *wB,     \
                                 int KH, int KW, int sh, int dh, const int *koff, int i0, int j0, \
                                 __mmask16 mask, const float *bias, float *out, int Ho, int Wo) { \
    __m512 acc[FB][RB];                                                                        \
    for (int f = 0; f < FB; f++) {                                                             \
        __m512 b0 = bias ? _mm512_set1_ps(bias[f]) : _mm512_setzero_ps();                      \
        for (int r = 0; r < RB; r++) acc[f][r] = b0;                                           \
    }                                                                                          \
    const float *wr = wB;                                                                      \
    const size_t rs = (size_t)sh * Wp;                                                         \
    for (int c = 0; c < Cg; c++)                                                               \
        for (int kh = 0; kh < KH; kh++) {                                                      \
            const float *xr = xp + ((size_t)c * Hp + i0 * sh + kh * dh) * Wp + j0;             \
            for (int kw = 0; kw < KW; kw++, wr += FB) {                                        \
                __m512 wv[FB];                                                                 \
                for (int f = 0; f < FB; f++) wv[f] = _mm512_set1_ps(wr[f]);                   \
                const float *xx = xr + koff[kw];                                               \
                for (int r = 0; r < RB; r++) {                                                 \
                    __m512 xv = _mm512_loadu_ps(xx + r * rs);                                  \
                    /* one load per row, reused by the FB filters: without this gcc folds \
                       the load into every FMA, and each unaligned load crosses a line */ \
                    __asm__("" : "+v"(xv));                                                    \
                    for (int f = 0; f < FB; f++) acc[f][r] = _mm512_fmadd_ps(xv, wv[f], acc[f][r]); \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    for (int f = 0; f < FB; f++)                                                               \
        for (int r = 0; r < RB; r++)                                                           \
            _mm512_mask_storeu_ps(out + ((size_t)f * Ho + i0 + r) * Wo + j0, mask, acc[f][r]); \
}
FUNK_ROW_BLOCK(1, 8)
FUNK_ROW_BLOCK(1, 14)
FUNK_ROW_BLOCK(2, 7)
FUNK_ROW_BLOCK(2, 8)
FUNK_ROW_BLOCK(3, 7)
FUNK_ROW_BLOCK(3, 8)
FUNK_ROW_BLOCK(4, 4)
FUNK_ROW_BLOCK(4, 5)
FUNK_ROW_BLOCK(4, 6)
FUNK_ROW_BLOCK(6, 4)
FUNK_ROW_BLOCK(8, 3)

typedef void (*funk_row_fn)(const float *, int, int, int, const float *, int, int, int, int,
                            const int *, int, int, __mmask16, const float *, float *, int, int);
typedef struct { int fb, rb; funk_row_fn fn; } funk_row_kernel;
static const funk_row_kernel funk_row_kernels[] = {
    {1, 8, funk_row_1_8}, {1, 14, funk_row_1_14}, {2, 7, funk_row_2_7}, {2, 8, funk_row_2_8},
    {3, 7, funk_row_3_7}, {3, 8, funk_row_3_8}, {4, 4, funk_row_4_4}, {4, 5, funk_row_4_5},
    {4, 6, funk_row_4_6}, {6, 4, funk_row_6_4}, {8, 3, funk_row_8_3},
};
#define FUNK_N_ROW_KERNELS ((int)(sizeof(funk_row_kernels) / sizeof(funk_row_kernels[0])))

/* Blocks of `b` covering n items: starts 0, b, 2b, ... and a last one ending at n
   (it may overlap the one before; overlapping blocks recompute identical values). */
static int funk_blocks(int n, int b) { return (n + b - 1) / b; }
static int funk_block_start(int k, int n, int b) { int s = k * b; return s + b > n ? n - b : s; }

/* Estimated cycles for the whole output of one sample, K = Cg * KH * KW steps per
   block: two FMAs and two loads per cycle, a cycle of loop overhead per step, and the
   block's stores (the column kernels transpose theirs through scalar copies, which is
   what makes them lose on layers with a short K). */
static double funk_row_cost(int fb, int rb, int F, int Ho, int Wo, int K) {
    /* the row loads are unaligned: most cross a cache line and take two load slots */
    double fma = fb * rb / 2.0, ld = (fb + 2.0 * rb) / 2.0;
    double per = (fma > ld ? fma : ld) + 1.0;
    return (per * K + fb * rb) * funk_blocks(F, fb) * funk_blocks(Ho, rb) * funk_blocks(Wo, 16);
}
static double funk_col_cost(int F, int Ho, int Wo, int jb, int nv, int K) {
    /* two cycles of overhead per step: on the small benchmark layers the column
       kernels reach 60-65 % of the FMA peak where the row kernels reach 70-75 % */
    double fma = nv * jb / 2.0, ld = (nv + jb) / 2.0;
    double per = (fma > ld ? fma : ld) + 2.0;
    int nf = F < 16 * nv ? F : 16 * nv;
    return (per * K + jb * nf) * (double)Ho * funk_blocks(Wo, jb) * funk_blocks(F, 16 * nv);
}
static int funk_pick_row(int F, int Ho, int Wo, int K) {
    int best = -1;
    double bc = 0;
    for (int k = 0; k < FUNK_N_ROW_KERNELS; k++) {
        const funk_row_kernel *kk = &funk_row_kernels[k];
        if (kk->fb > F || kk->rb > Ho) continue;
        double c = funk_row_cost(kk->fb, kk->rb, F, Ho, Wo, K);
        if (best < 0 || c < bc) { best = k; bc = c; }
    }
    return best;
}
#endif

/* 0: column-vector kernels only, 1: choose by the cost model, 2: row kernels whenever
   they apply (tests use 0 and 2 to cover both). */
static int funk_row_mode = 1;

#ifdef FUNK_X86
/* funk_direct_fwd with the row kernel kk. */
static int funk_direct_fwd_rows(const funk_row_kernel *kk, const float *x, int n0, int n1, int C,
                                int H, int W, int c0, int Cg, int ph, int pw, const float *wT,
                                int Fp, int F, int KH, int KW, int sh, int sw, int dh, int dw,
                                int Ho, int Wo, const float *bias, float *out, int Fout, int fo) {
    int fb = kk->fb, rb = kk->rb, nfb = funk_blocks(F, fb), K = Cg * KH * KW;
    int Hp = H + 2 * ph, Wp = W + 2 * pw, Wq = (Wp + sw - 1) / sw, Wr = sw * Wq;
    size_t plane = (size_t)Cg * Hp * Wr, slack = 32;
    float *wB = (float *)malloc(sizeof(float) * (size_t)nfb * K * fb);
    float *xp = (float *)malloc(sizeof(float) * (plane + slack));
    int *koff = (int *)malloc(sizeof(int) * KW);
    if (!wB || !xp || !koff) { free(wB); free(xp); free(koff); return -1; }
    funk_phase_offsets(KW, dw, sw, Wq, koff);
    for (int b = 0; b < nfb; b++) {
        int f0 = funk_block_start(b, F, fb);
        for (int k = 0; k < K; k++)
            for (int q = 0; q < fb; q++) wB[((size_t)b * K + k) * fb + q] = wT[(size_t)k * Fp + f0 + q];
    }
    memset(xp + plane, 0, sizeof(float) * slack);
    int nj = Wo >= 16 ? funk_blocks(Wo, 16) : 1;
    __mmask16 mask = Wo >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << Wo) - 1);
    for (int n = n0; n < n1; n++) {
        funk_pad_phased(x + ((size_t)n * C + c0) * H * W, Cg, H, W, ph, pw, Hp, Wp, sw, Wq, xp);
        float *on = out + ((size_t)n * Fout + fo) * Ho * Wo;
        /* filter blocks innermost: the block's input rows (unaligned vector loads, the
           costly ones) stay in L1 while the packed filters (scalar broadcasts) stream.
           Measured on dx of x (50, 16, 14, 14) x w (32, 16, 5, 5): 3.2 ms with filter
           blocks outermost, 2.0 ms so. */
        for (int rbk = 0; rbk < funk_blocks(Ho, rb); rbk++) {
            int i0 = funk_block_start(rbk, Ho, rb);
            for (int jv = 0; jv < nj; jv++) {
                int j0 = Wo >= 16 ? funk_block_start(jv, Wo, 16) : 0;
                for (int b = 0; b < nfb; b++) {
                    int f0 = funk_block_start(b, F, fb);
                    kk->fn(xp, Cg, Hp, Wr, wB + (size_t)b * K * fb, KH, KW, sh, dh, koff, i0, j0, mask,
                           bias ? bias + fo + f0 : NULL, on + (size_t)f0 * Ho * Wo, Ho, Wo);
                }
            }
        }
    }
    free(wB);
    free(xp);
    free(koff);
    return 0;
}
#endif

/* The row kernel (index into funk_row_kernels) the forward of a group with F filters,
   an (Ho, Wo) output and K = Cg * KH * KW takes, or -1 for the column kernels. */
static int funk_fwd_row_kernel(int F, int Ho, int Wo, int K) {
#ifdef FUNK_X86
    if (!funk_row_mode) return -1;
    funk_fwd_fn fn1, fn2;
    int jb1 = funk_pick_jb(1, Wo, &fn1), jb2 = funk_pick_jb(2, Wo, &fn2);
    int k = funk_pick_row(F, Ho, Wo, K);
    if (k < 0 || funk_row_mode == 2) return k;
    double col = F > 16 ? funk_col_cost(F, Ho, Wo, jb2, 2, K) : funk_col_cost(F, Ho, Wo, jb1, 1, K);
    return funk_row_cost(funk_row_kernels[k].fb, funk_row_kernels[k].rb, F, Ho, Wo, K) < col ? k : -1;
#else
    return -1;
#endif
}

/* The register block (filters, rows) of row kernel k. */
static void funk_row_kernel_shape(int k, int *fb, int *rb) {
#ifdef FUNK_X86
    *fb = funk_row_kernels[k].fb;
    *rb = funk_row_kernels[k].rb;
#else
    *fb = *rb = 0;
#endif
}

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
    int k = funk_fwd_row_kernel(F, Ho, Wo, Cg * KH * KW);
    if (k >= 0)
        return funk_direct_fwd_rows(&funk_row_kernels[k], x, n0, n1, C, H, W, c0, Cg, ph, pw, wT, Fp, F,
                                    KH, KW, sh, sw, dh, dw, Ho, Wo, bias, out, Fout, fo);
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
   for a kernel KW columns wide (a compile-time constant, so the accumulators stay in
   registers). FUNK_DW_ROWS does KHB kernel rows kh .. kh + KHB - 1 of channel c at once:
   kernel rows in pairs give twice the accumulators per dout load (one filter vector and
   a single row would have only KW of them, too few to cover the FMA latency); measured
   on one thread, 3x3 with 32 filters 1.06 -> 0.88 ms, 7x7 with 32 filters 6.5 -> 6.1 ms.
   Pairs wherever 2 * NV * KW accumulators fit in the 32 registers (for two filter
   vectors, KW <= 7). */
#define FUNK_DW_ROWS(NV, KWC, KHB)                                                            \
__attribute__((target("avx512f,fma"))) static inline void                                     \
funk_dwr_##NV##_##KWC##_##KHB(const float *xp, int c, int kh, int KH, int Hp, int Wp,          \
                              const float *dT, int Fp, int f0, int sh, int sw, int dh, int dw, \
                              int Ho, int Wo, float *dwT) {                                    \
    __m512 acc[KHB][KWC][NV];                                                                  \
    for (int b = 0; b < KHB; b++)                                                              \
        for (int k = 0; k < KWC; k++)                                                          \
            for (int v = 0; v < NV; v++) acc[b][k][v] = _mm512_setzero_ps();                   \
    for (int i = 0; i < Ho; i++) {                                                             \
        const float *xr = xp + ((size_t)c * Hp + i * sh + kh * dh) * Wp;                       \
        const float *dr = dT + (size_t)i * Wo * Fp + f0;                                       \
        for (int j = 0; j < Wo; j++, dr += Fp) {                                               \
            __m512 dv[NV];                                                                     \
            for (int v = 0; v < NV; v++) dv[v] = _mm512_loadu_ps(dr + 16 * v);                 \
            for (int b = 0; b < KHB; b++) {                                                    \
                const float *xx = xr + (size_t)b * dh * Wp + j * sw;                           \
                for (int k = 0; k < KWC; k++) {                                                \
                    __m512 xb = _mm512_set1_ps(xx[k * dw]);                                    \
                    for (int v = 0; v < NV; v++)                                               \
                        acc[b][k][v] = _mm512_fmadd_ps(xb, dv[v], acc[b][k][v]);               \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    for (int b = 0; b < KHB; b++)                                                              \
        for (int k = 0; k < KWC; k++) {                                                        \
            float *o = dwT + ((size_t)(c * KH + kh + b) * KWC + k) * Fp + f0;                  \
            for (int v = 0; v < NV; v++)                                                       \
                _mm512_storeu_ps(o + 16 * v, _mm512_add_ps(_mm512_loadu_ps(o + 16 * v), acc[b][k][v])); \
        }                                                                                      \
}
#define FUNK_DW_BLOCK(NV, KWC, KHB)                                                            \
__attribute__((target("avx512f,fma")))                                                         \
static void funk_dw_##NV##_##KWC(const float *xp, int Cg, int Hp, int Wp, const float *dT, int Fp, \
                                 int f0, int KH, int sh, int sw, int dh, int dw,              \
                                 int Ho, int Wo, float *dwT) {                                 \
    for (int c = 0; c < Cg; c++) {                                                             \
        int kh = 0;                                                                            \
        for (; kh + KHB <= KH; kh += KHB)                                                      \
            funk_dwr_##NV##_##KWC##_##KHB(xp, c, kh, KH, Hp, Wp, dT, Fp, f0, sh, sw, dh, dw, Ho, Wo, dwT); \
        for (; kh < KH; kh++)                                                                  \
            funk_dwr_##NV##_##KWC##_1(xp, c, kh, KH, Hp, Wp, dT, Fp, f0, sh, sw, dh, dw, Ho, Wo, dwT); \
    }                                                                                          \
}
/* kernel rows in pairs while 2 * NV * KW accumulators fit in the registers */
#define FUNK_DW_KW(KWC) FUNK_DW_ROWS(1, KWC, 1) FUNK_DW_ROWS(1, KWC, 2) FUNK_DW_ROWS(2, KWC, 1) \
    FUNK_DW_ROWS(2, KWC, 2) FUNK_DW_BLOCK(1, KWC, 2) FUNK_DW_BLOCK(2, KWC, 2)
#define FUNK_DW_KW_WIDE(KWC) FUNK_DW_ROWS(1, KWC, 1) FUNK_DW_ROWS(1, KWC, 2) FUNK_DW_ROWS(2, KWC, 1) \
    FUNK_DW_BLOCK(1, KWC, 2) FUNK_DW_BLOCK(2, KWC, 1)
FUNK_DW_KW(1) FUNK_DW_KW(2) FUNK_DW_KW(3) FUNK_DW_KW(4)
FUNK_DW_KW(5) FUNK_DW_KW(6) FUNK_DW_KW(7) FUNK_DW_KW_WIDE(8)

typedef void (*funk_dw_fn)(const float *, int, int, int, const float *, int, int, int, int, int,
                           int, int, int, int, float *);
static const funk_dw_fn funk_dw_fns[2][8] = {
    {funk_dw_1_1, funk_dw_1_2, funk_dw_1_3, funk_dw_1_4, funk_dw_1_5, funk_dw_1_6, funk_dw_1_7, funk_dw_1_8},
    {funk_dw_2_1, funk_dw_2_2, funk_dw_2_3, funk_dw_2_4, funk_dw_2_5, funk_dw_2_6, funk_dw_2_7, funk_dw_2_8},
};
#endif


#ifdef FUNK_X86
/* dT[q][f] = dn[f][q] for f < F, q < P (dT rows Fp floats apart, Fp a multiple of 16;
   columns F .. Fp - 1 are left alone): 16 x 16 blocks transposed in registers (unpack
   32-bit, unpack 64-bit, then two 128-bit lane shuffles), several times faster than
   element by element, which cost 10-30 % of dw for the small benchmark layers. */
__attribute__((target("avx512f")))
static void funk_transpose_dout(const float *dn, int F, int P, float *dT, int Fp) {
    for (int f0 = 0; f0 < F; f0 += 16) {
        int nf = F - f0 < 16 ? F - f0 : 16;
        for (int q0 = 0; q0 < P; q0 += 16) {
            int nq = P - q0 < 16 ? P - q0 : 16;
            __mmask16 m = nq == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nq) - 1);
            __m512 r[16], t[16];
            for (int k = 0; k < 16; k++)
                r[k] = k < nf ? _mm512_maskz_loadu_ps(m, dn + (size_t)(f0 + k) * P + q0) : _mm512_setzero_ps();
            for (int k = 0; k < 16; k += 2) {
                t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
                t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
            }
            for (int k = 0; k < 16; k += 4) {
                r[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
                r[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
                r[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
                r[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
            }
            /* each 128-bit lane now holds a 4 x 4 block transposed; the lane shuffles
               put the blocks in place, leaving column k of the input in r[k] */
            for (int k = 0; k < 4; k++) {
                t[k] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0x88);
                t[k + 4] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0xdd);
                t[k + 8] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0x88);
                t[k + 12] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0xdd);
            }
            for (int k = 0; k < 4; k++) {
                r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
                r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
                r[k + 4] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0x88);
                r[k + 12] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0xdd);
            }
            __mmask16 fm = nf == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nf) - 1);
            for (int k = 0; k < nq; k++) _mm512_mask_storeu_ps(dT + (size_t)(q0 + k) * Fp + f0, fm, r[k]);
        }
    }
}
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
        funk_transpose_dout(dn, F, P, dT, Fp);
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
