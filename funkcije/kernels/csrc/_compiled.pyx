# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels behind funkcije.fast_layers.

Shapes: x (N, C, H, W); a convolution group reads channels [c0, c1) and writes a
column matrix `cols` of shape (K, nb * P) with K = (c1 - c0) * HH * WW (row
r = (c - c0) * HH * WW + kh * WW + kw) and P = H' * W' (column (n - n0) * P + i * W' + j)
for the samples [n0, n1) of one batch chunk, nb = n1 - n0. That layout lets one GEMM
`w_g (Fg, K) @ cols` produce every output of the chunk, and `col2im` accumulates a
column-shaped gradient back into dx.

Every kernel takes float32 or float64 memoryviews (fused types: all arrays of one call
share the dtype), runs without the GIL, and splits its outer loop over OpenMP threads
when the extension was compiled with OpenMP and the work is large enough to pay for
waking the threads; the convolution kernels take `nthreads` (0: choose by the work; 1
when the caller already runs them on several threads of its own). Out-of-range (padding) reads are decided by explicit index
arithmetic; nothing reads outside the arrays.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

import numpy as np

include "openmp.pxi"
include "norm.pxi"

ctypedef int int32

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
    #include <xmmintrin.h>
    /* FTZ (bit 15): subnormal results become 0; DAZ (bit 6): subnormal inputs read as 0 */
    static unsigned int funk_ftz_on(void) { unsigned int old = _mm_getcsr(); _mm_setcsr(old | 0x8040u); return old; }
    static void funk_fp_restore(unsigned int old) { _mm_setcsr(old); }
    static int funk_ftz_supported(void) { return 1; }
    #else
    static unsigned int funk_ftz_on(void) { return 0; }
    static void funk_fp_restore(unsigned int old) { (void)old; }
    static int funk_ftz_supported(void) { return 0; }
    #endif
    """
    unsigned int funk_ftz_on() nogil
    void funk_fp_restore(unsigned int old) nogil
    int funk_ftz_supported() nogil


def flush_denormals_on():
    """Make this thread's x86 floating-point unit flush subnormal numbers to zero (FTZ
    and DAZ); returns the previous control word for `restore_fp_mode`. A no-op
    returning 0 elsewhere (see `ftz_supported`)."""
    return funk_ftz_on()


def restore_fp_mode(unsigned int old):
    """Restore the control word `flush_denormals_on` returned."""
    if funk_ftz_supported():
        funk_fp_restore(old)


def ftz_supported():
    """True where `flush_denormals_on` has an effect (x86)."""
    return bool(funk_ftz_supported())


# Below this many touched elements a kernel runs on one thread. Waking the OpenMP
# pool costs microseconds on an idle machine, but on a busy one every parallel region
# can wait a whole scheduler time slice for its second thread, so only kernels that
# take about a millisecond on one thread are split.
PARALLEL_MIN_WORK = 1 << 20


# Pooling kernels sit between other kernels, not beside BLAS calls, and pay off on two
# threads from a quarter of that size.
cdef Py_ssize_t POOL_PARALLEL_MIN_WORK = 1 << 18


cdef inline int _pool_threads(Py_ssize_t work) noexcept nogil:
    if work < POOL_PARALLEL_MIN_WORK:
        return 1
    return funk_max_threads()


cdef inline int _pick_threads(int nthreads, Py_ssize_t work) noexcept nogil:
    """nthreads > 0 is the caller's choice (1 when it runs kernels on several threads
    itself); 0 picks by the amount of work."""
    if nthreads > 0:
        return nthreads
    return _threads(work)


cdef inline Py_ssize_t _range_lo(Py_ssize_t stride, Py_ssize_t off) noexcept nogil:
    """First output position o with o * stride + off >= 0."""
    if off >= 0:
        return 0
    return (-off + stride - 1) // stride


cdef inline Py_ssize_t _range_hi(Py_ssize_t size, Py_ssize_t out, Py_ssize_t stride,
                                 Py_ssize_t off) noexcept nogil:
    """One past the last output position o < out with o * stride + off < size."""
    cdef Py_ssize_t b
    if size - 1 - off < 0:
        return 0
    b = (size - 1 - off) // stride + 1
    return out if b > out else b


# Inside a prange body every per-iteration variable must be *assigned* there (not only
# written through a pointer), or Cython leaves it shared between the threads.


# ----------------------------------------------------------------------------- convolution


cdef floating *_padded_copy(const floating[:, :, :, ::1] x, Py_ssize_t n0, Py_ssize_t n1,
                            Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t ph, Py_ssize_t pw,
                            int nthreads) noexcept nogil:
    """A malloc'ed zero-padded copy (nb * Cg planes of (H + 2 ph, W + 2 pw)) of
    x[n0:n1, c0:c1], or NULL when out of memory. The caller frees it."""
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw, Cg = c1 - c0, nb = n1 - n0
    cdef Py_ssize_t t, h, j
    cdef floating *buf = <floating *> malloc(max(1, nb * Cg * Hp * Wp) * sizeof(floating))
    cdef floating *dst
    cdef const floating *src
    if buf == NULL:
        return NULL
    for t in prange(nb * Cg, schedule="static", num_threads=_pick_threads(nthreads, nb * Cg * Hp * Wp * 4)):
        dst = buf + t * Hp * Wp
        memset(dst, 0, ph * Wp * sizeof(floating))
        memset(dst + (ph + H) * Wp, 0, ph * Wp * sizeof(floating))
        for h in range(H):
            src = &x[n0 + t // Cg, c0 + t % Cg, h, 0]
            for j in range(pw):
                dst[(ph + h) * Wp + j] = 0
            for j in range(W):
                dst[(ph + h) * Wp + pw + j] = src[j]
            for j in range(pw):
                dst[(ph + h) * Wp + pw + W + j] = 0
    return buf


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
           Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0, Py_ssize_t c1,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int nthreads=0):
    """Fill cols (K, nb * Ho * Wo) with the zero-padded, dilated windows of
    x[n0:n1, c0:c1] (see the module docstring for the layout).

    With padding, the chunk's planes are first copied into a zero-padded buffer (a
    small fraction of the columns' size) so that every row of the copy loop is one
    branch-free run: clipping each row at the borders cost more than the copy itself
    on small planes."""
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Cg = c1 - c0, KK = HH * WW
    cdef Py_ssize_t K = Cg * KK, P = Ho * Wo
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t t, r, n, c, kh, kw, i, j
    cdef floating *dst
    cdef const floating *src
    cdef const floating *plane
    cdef floating *buf = NULL
    cdef const floating *base
    cdef Py_ssize_t plane_stride, sample_stride
    if cols.shape[0] != K or cols.shape[1] != nb * P:
        raise ValueError(f"im2col: cols must have shape ({K}, {nb * P}), got ({cols.shape[0]}, {cols.shape[1]})")
    if not (0 <= n0 <= n1 <= x.shape[0] and 0 <= c0 <= c1 <= x.shape[1]):
        raise ValueError("im2col: sample or channel range outside x")
    if nb == 0 or K == 0 or P == 0:
        return
    if (Ho - 1) * sh + (HH - 1) * dh >= Hp or (Wo - 1) * sw + (WW - 1) * dw >= Wp:
        raise ValueError("im2col: windows reach outside the padded input")
    with nogil:
        if ph > 0 or pw > 0:
            buf = _padded_copy(x, n0, n1, c0, c1, ph, pw, nthreads)
            if buf == NULL:
                with gil:
                    raise MemoryError("im2col: no memory for the padded copy of the input chunk")
            base = buf
            plane_stride = Hp * Wp
            sample_stride = Cg * Hp * Wp
        else:
            base = &x[n0, c0, 0, 0]
            plane_stride = H * W
            sample_stride = x.shape[1] * H * W
        for t in prange(K * nb, schedule="static", num_threads=_pick_threads(nthreads, K * nb * P)):
            r = t // nb
            n = t - r * nb
            c = r // KK
            kh = (r // WW) % HH
            kw = r % WW
            plane = base + n * sample_stride + c * plane_stride + kh * dh * Wp + kw * dw
            dst = &cols[r, n * P]
            for i in range(Ho):
                src = plane + i * sh * Wp
                if sw == 1:
                    for j in range(Wo):
                        dst[i * Wo + j] = src[j]
                else:
                    for j in range(Wo):
                        dst[i * Wo + j] = src[j * sw]
        free(buf)


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0, Py_ssize_t c1,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int nthreads=0):
    """Write into dx[n0:n1, c0:c1] the sum of the column gradient cols (K, nb * Ho * Wo)
    over the windows: the adjoint of `im2col`. The planes of one channel (for a block
    of samples) belong to one thread, which streams through that channel's rows of
    cols and accumulates in zero-padded scratch planes (no clipping in the inner loop,
    no races, scratch small enough for L1/L2); their interiors then *overwrite* the
    planes of dx, so dx needs no zeroing."""
    cdef Py_ssize_t H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Cg = c1 - c0, KK = HH * WW
    cdef Py_ssize_t K = Cg * KK, P = Ho * Wo
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t t, r, n, c, kh, kw, i, j, h, nsplit, part, na, nz
    cdef int threads
    cdef floating *acc
    cdef floating *row
    cdef floating *out
    cdef const floating *src
    cdef floating *buf
    if cols.shape[0] != K or cols.shape[1] != nb * P:
        raise ValueError(f"col2im: cols must have shape ({K}, {nb * P}), got ({cols.shape[0]}, {cols.shape[1]})")
    if not (0 <= n0 <= n1 <= dx.shape[0] and 0 <= c0 <= c1 <= dx.shape[1]):
        raise ValueError("col2im: sample or channel range outside dx")
    if nb == 0 or Cg == 0:
        return
    if P > 0 and ((Ho - 1) * sh + (HH - 1) * dh >= Hp or (Wo - 1) * sw + (WW - 1) * dw >= Wp):
        raise ValueError("col2im: windows reach outside the padded input")
    threads = _pick_threads(nthreads, K * nb * P)
    # enough (channel, sample block) tasks for the threads even with one channel
    nsplit = 1 if threads == 1 else min(nb, (4 * threads + Cg - 1) // Cg)
    with nogil:
        buf = <floating *> calloc(max(1, nb * Cg * Hp * Wp), sizeof(floating))
        if buf == NULL:
            with gil:
                raise MemoryError("col2im: no memory for the padded gradient planes")
        for t in prange(Cg * nsplit, schedule="static", num_threads=threads):
            c = t // nsplit
            part = t - c * nsplit
            na = part * nb // nsplit
            nz = (part + 1) * nb // nsplit
            for kh in range(HH):
                for kw in range(WW):
                    r = c * KK + kh * WW + kw
                    for n in range(na, nz):
                        src = &cols[r, n * P]
                        acc = buf + (n * Cg + c) * Hp * Wp + kh * dh * Wp + kw * dw
                        for i in range(Ho):
                            row = acc + i * sh * Wp
                            if sw == 1:
                                for j in range(Wo):
                                    row[j] += src[i * Wo + j]
                            else:
                                for j in range(Wo):
                                    row[j * sw] += src[i * Wo + j]
            for n in range(na, nz):
                acc = buf + (n * Cg + c) * Hp * Wp
                for h in range(H):
                    out = &dx[n0 + n, c0 + c, h, 0]
                    row = acc + (ph + h) * Wp + pw
                    for j in range(W):
                        out[j] = row[j]
        free(buf)


def cols_to_out(const floating[:, ::1] res, const floating[::1] b, floating[:, :, ::1] out,
                Py_ssize_t n0, Py_ssize_t f0, int nthreads=0):
    """out[n0 + n, f0 + f, p] = res[f, n * P + p] + b[f]: the GEMM result of one
    chunk and group (Fg, nb * P) written into the (N, F, P) output with its bias."""
    cdef Py_ssize_t Fg = res.shape[0], P = out.shape[2]
    cdef Py_ssize_t nb = res.shape[1] // P
    cdef Py_ssize_t t, n, f, p
    cdef floating bf
    cdef floating *dst
    cdef const floating *src
    if n0 + nb > out.shape[0] or f0 + Fg > out.shape[1] or b.shape[0] != Fg:
        raise ValueError("cols_to_out: shapes do not match")
    with nogil:
        for t in prange(nb * Fg, schedule="static", num_threads=_pick_threads(nthreads, nb * Fg * P)):
            n = t // Fg
            f = t - n * Fg
            bf = b[f]
            src = &res[f, n * P]
            dst = &out[n0 + n, f0 + f, 0]
            for p in range(P):
                dst[p] = src[p] + bf


def out_to_cols(const floating[:, :, ::1] dout, floating[:, ::1] res,
                Py_ssize_t n0, Py_ssize_t f0, int nthreads=0):
    """res[f, n * P + p] = dout[n0 + n, f0 + f, p]: the inverse layout change of
    `cols_to_out`, gathering the upstream gradient of one chunk and group."""
    cdef Py_ssize_t Fg = res.shape[0], P = dout.shape[2]
    cdef Py_ssize_t nb = res.shape[1] // P
    cdef Py_ssize_t t, n, f, p
    cdef floating *dst
    cdef const floating *src
    if n0 + nb > dout.shape[0] or f0 + Fg > dout.shape[1]:
        raise ValueError("out_to_cols: shapes do not match")
    with nogil:
        for t in prange(nb * Fg, schedule="static", num_threads=_pick_threads(nthreads, nb * Fg * P)):
            n = t // Fg
            f = t - n * Fg
            src = &dout[n0 + n, f0 + f, 0]
            dst = &res[f, n * P]
            for p in range(P):
                dst[p] = src[p]



# ----------------------------------------------------------------------------- direct convolution
#
# float32 kernels in C (direct_conv.h) that compute a convolution straight from a
# zero-padded copy of each sample, with register blocks of 8 output columns x 16 or 32
# filters: no column matrix at all. They need AVX-512F and FMA (checked at run time,
# `direct_available`); fast_layers uses them where im2col's column traffic dominates.

cdef extern from "direct_conv.h" nogil:
    int funk_has_avx512()
    int funk_direct_fwd(const float *x, int n0, int n1, int C, int H, int W, int c0, int Cg,
                        int ph, int pw, const float *wT, int Fp, int F, int KH, int KW,
                        int sh, int sw, int dh, int dw, int Ho, int Wo,
                        const float *bias, float *out, int Fout, int fo)
    int funk_direct_dw(const float *x, int n0, int n1, int C, int H, int W, int c0, int Cg,
                       int ph, int pw, const float *dout, int Fout, int fo, int Fp, int F,
                       int KH, int KW, int sh, int sw, int dh, int dw, int Ho, int Wo, float *dwT)
    int funk_row_mode
    int funk_fwd_row_kernel(int F, int Ho, int Wo, int K)
    void funk_row_kernel_shape(int k, int *fb, int *rb)


_ROW_MODES = ("columns", "auto", "rows")


def direct_layout(str mode=None):
    """The direct forward kernels' vector layout: "columns" (16 or 32 filters per
    vector), "rows" (16 output columns per vector, any stride, wherever a row block
    fits) or "auto" (the default: a cost model picks per layer). With a mode, sets it
    and returns the previous one. (dw always has filters along the vectors.)"""
    global funk_row_mode
    previous = _ROW_MODES[funk_row_mode]
    if mode is not None:
        if mode not in _ROW_MODES:
            raise ValueError(f"direct_layout: mode must be one of {_ROW_MODES}, got {mode!r}")
        funk_row_mode = _ROW_MODES.index(mode)
    return previous


def direct_forward_kernel(Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t K):
    """The register block the direct forward of one group takes under the current
    `direct_layout`: ("rows", filters, rows) or ("columns",), for F filters, an (Ho, Wo)
    output and K = Cg * HH * WW (for inspection and tests)."""
    cdef int k = funk_fwd_row_kernel(F, Ho, Wo, K)
    cdef int fb, rb
    if k < 0:
        return ("columns",)
    funk_row_kernel_shape(k, &fb, &rb)
    return ("rows", fb, rb)


def direct_available():
    """True when this CPU runs the direct float32 kernels (AVX-512F and FMA)."""
    return bool(funk_has_avx512())


cdef _direct_geometry(str name, Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo):
    if min(KH, KW, sh, sw, dh, dw) < 1 or min(ph, pw) < 0 or Ho < 1 or Wo < 1:
        raise ValueError(f"{name}: invalid geometry")
    if (Ho - 1) * sh + (KH - 1) * dh >= H + 2 * ph or (Wo - 1) * sw + (KW - 1) * dw >= W + 2 * pw:
        raise ValueError(f"{name}: windows reach outside the padded input")
    if not funk_has_avx512():
        raise RuntimeError(f"{name}: this CPU lacks AVX-512F/FMA")


def direct_conv_forward(const float[:, :, :, ::1] x, const float[:, ::1] wT, const float[::1] b,
                        float[:, :, :, ::1] out, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0,
                        Py_ssize_t Cg, Py_ssize_t fo, Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw):
    """out[n, fo + f] = b[fo + f] + the convolution of x[n, c0:c0 + Cg] by the filters
    wT[:, f] (wT: (Cg * KH * KW, Fp), row (c * KH + kh) * KW + kw, Fp a multiple of 32
    with zeros past F) for n in [n0, n1); b may be empty (no bias)."""
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t Fp = wT.shape[1]
    cdef int rc
    cdef const float *bp = NULL
    _direct_geometry("direct_conv_forward", x.shape[2], x.shape[3], KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo)
    if not (0 <= n0 <= n1 <= min(x.shape[0], out.shape[0]) and 0 <= c0 and c0 + Cg <= x.shape[1]
            and 0 <= fo and fo + F <= out.shape[1]):
        raise ValueError("direct_conv_forward: sample, channel or filter range outside the arrays")
    if wT.shape[0] != Cg * KH * KW or Fp % 32 != 0 or Fp < F:
        raise ValueError("direct_conv_forward: wT must be (Cg * KH * KW, Fp) with Fp >= F a multiple of 32")
    if b.shape[0] > 0:
        if b.shape[0] < fo + F:
            raise ValueError("direct_conv_forward: b is too short")
        bp = &b[0]
    if n0 == n1 or F == 0:
        return
    with nogil:
        rc = funk_direct_fwd(&x[0, 0, 0, 0], n0, n1, x.shape[1], x.shape[2], x.shape[3], c0, Cg, ph, pw,
                             &wT[0, 0], Fp, F, KH, KW, sh, sw, dh, dw, Ho, Wo, bp,
                             &out[0, 0, 0, 0], out.shape[1], fo)
    if rc:
        raise MemoryError("direct_conv_forward: no memory for a padded sample")


def direct_conv_weight_grad(const float[:, :, :, ::1] x, const float[:, :, :, ::1] dout,
                            float[:, ::1] dwT, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0,
                            Py_ssize_t Cg, Py_ssize_t fo, Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW,
                            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t dh, Py_ssize_t dw):
    """dwT[(c * KH + kh) * KW + kw, f] += the weight gradient of one group from samples
    [n0, n1): x[n, c0 + c] against dout[n, fo + f] (dout: (N, Fout, Ho, Wo); dwT:
    (Cg * KH * KW, Fp), Fp >= F a multiple of 32). KW <= 8."""
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3], Fp = dwT.shape[1]
    cdef int rc
    _direct_geometry("direct_conv_weight_grad", x.shape[2], x.shape[3], KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo)
    if KW > 8:
        raise ValueError("direct_conv_weight_grad: kernels wider than 8 are not supported")
    if not (0 <= n0 <= n1 <= min(x.shape[0], dout.shape[0]) and 0 <= c0 and c0 + Cg <= x.shape[1]
            and 0 <= fo and fo + F <= dout.shape[1]):
        raise ValueError("direct_conv_weight_grad: sample, channel or filter range outside the arrays")
    if dwT.shape[0] != Cg * KH * KW or Fp % 32 != 0 or Fp < F:
        raise ValueError("direct_conv_weight_grad: dwT must be (Cg * KH * KW, Fp), Fp >= F a multiple of 32")
    if n0 == n1 or F == 0:
        return
    with nogil:
        rc = funk_direct_dw(&x[0, 0, 0, 0], n0, n1, x.shape[1], x.shape[2], x.shape[3], c0, Cg, ph, pw,
                            &dout[0, 0, 0, 0], dout.shape[1], fo, Fp, F, KH, KW, sh, sw, dh, dw, Ho, Wo,
                            &dwT[0, 0])
    if rc:
        raise MemoryError("direct_conv_weight_grad: no memory for a padded sample")


cdef extern from "winograd4.h" nogil:
    int funk_w4_in_plane_f(const float *x, Py_ssize_t H, Py_ssize_t W, float *V, Py_ssize_t vs,
                           Py_ssize_t th, Py_ssize_t tw, Py_ssize_t ph, Py_ssize_t pw)
    int funk_w4_in_plane_d(const double *x, Py_ssize_t H, Py_ssize_t W, double *V, Py_ssize_t vs,
                           Py_ssize_t th, Py_ssize_t tw, Py_ssize_t ph, Py_ssize_t pw)
    void funk_w4_out_plane_f(const float *M, Py_ssize_t ms, float *out, Py_ssize_t Ho, Py_ssize_t Wo,
                             Py_ssize_t th, Py_ssize_t tw, float bias)
    void funk_w4_out_plane_d(const double *M, Py_ssize_t ms, double *out, Py_ssize_t Ho, Py_ssize_t Wo,
                             Py_ssize_t th, Py_ssize_t tw, double bias)
    void funk_w4_dout_plane_f(const float *dout, Py_ssize_t Ho, Py_ssize_t Wo, float *Y, Py_ssize_t ys,
                              Py_ssize_t th, Py_ssize_t tw)
    void funk_w4_dout_plane_d(const double *dout, Py_ssize_t Ho, Py_ssize_t Wo, double *Y, Py_ssize_t ys,
                              Py_ssize_t th, Py_ssize_t tw)
    void funk_w4_filter_row_f(const float *w, Py_ssize_t Cg, float *u, Py_ssize_t us)
    void funk_w4_filter_row_d(const double *w, Py_ssize_t Cg, double *u, Py_ssize_t us)
    void funk_w4_filter_grad_row_f(const float *z, Py_ssize_t zs, Py_ssize_t Cg, float *g)
    void funk_w4_filter_grad_row_d(const double *z, Py_ssize_t zs, Py_ssize_t Cg, double *g)


# ----------------------------------------------------------------------------- Winograd F(2x2, 3x3)
#
# A 3x3, stride-1, undilated convolution computed on 4x4 input tiles that overlap by
# two (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
#     Y = A^T [ (G g G^T) . (B^T d B) ] A
# with, for F(2x2, 3x3),
#     B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
#     G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
#     A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
# Summed over channels, the 16 elementwise products become 16 GEMMs
# U[xi] (F, C) @ V[xi] (C, tiles): 16 multiplies per 2x2 output block and channel
# instead of im2col's 36, so GEMM-bound layers run about twice as fast. The filter
# transform U is done in NumPy (fast_layers); these kernels are the input transform
# V and the output transform.
#
# Tiles: an output plane (Ho, Wo) is covered by th x tw tiles of 2x2 (th = ceil(Ho / 2));
# tile (ti, tj) reads input rows 2 ti - ph .. 2 ti - ph + 3 and columns likewise (zero
# outside x). Tile index within a chunk: (n - n0) * th * tw + ti * tw + tj. One plane
# per call of the inline helpers, so their local arrays are private to a thread.
# V and M may have padding between their 16 slabs (any first stride): each tile
# touches all 16, and slabs 4 KiB-multiples apart would share L1 cache sets.


cdef Py_ssize_t _wino_slabs(int m) except -1:
    """(m + 2)^2 transformed values a tile for F(m x m, 3x3); m is 2 or 4."""
    if m != 2 and m != 4:
        raise ValueError(f"Winograd tiles are 2x2 or 4x4, not {m}x{m}")
    return (m + 2) * (m + 2)


cdef enum:
    # tiles per block of the vectorised output transform: its per-block array (four
    # values a tile) lives on the thread's stack, 4 KiB in float32. (The input and dout
    # transforms were tried the same way and were no faster: they are bound by their
    # 16 stores a tile, which vectors do not reduce.)
    _WB = 256


cdef inline void _wino_in_plane(const floating *plane, Py_ssize_t H, Py_ssize_t W,
                                floating *v, Py_ssize_t vs, Py_ssize_t th, Py_ssize_t tw,
                                Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    cdef floating d[4][4]
    cdef floating s[4][4]
    cdef Py_ssize_t ti, tj, a, bb, hh, ww, h0, w0, tile = 0
    for ti in range(th):
        h0 = 2 * ti - ph
        for tj in range(tw):
            w0 = 2 * tj - pw
            if h0 >= 0 and h0 + 4 <= H and w0 >= 0 and w0 + 4 <= W:
                for a in range(4):
                    for bb in range(4):
                        d[a][bb] = plane[(h0 + a) * W + w0 + bb]
            else:
                for a in range(4):
                    hh = h0 + a
                    for bb in range(4):
                        ww = w0 + bb
                        if hh >= 0 and hh < H and ww >= 0 and ww < W:
                            d[a][bb] = plane[hh * W + ww]
                        else:
                            d[a][bb] = 0
            for bb in range(4):  # s = B^T d
                s[0][bb] = d[0][bb] - d[2][bb]
                s[1][bb] = d[1][bb] + d[2][bb]
                s[2][bb] = d[2][bb] - d[1][bb]
                s[3][bb] = d[1][bb] - d[3][bb]
            for a in range(4):  # V = s B, row xi = 4 a + column
                v[(4 * a) * vs + tile] = s[a][0] - s[a][2]
                v[(4 * a + 1) * vs + tile] = s[a][1] + s[a][2]
                v[(4 * a + 2) * vs + tile] = s[a][2] - s[a][1]
                v[(4 * a + 3) * vs + tile] = s[a][1] - s[a][3]
            tile = tile + 1


cdef inline void _wino_out_plane_tiles(const floating *m0, Py_ssize_t ms, floating *plane,
                                       Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                       floating bf) noexcept nogil:
    cdef floating m[16]
    cdef floating s[2][4]
    cdef floating y00, y01, y10, y11
    cdef Py_ssize_t ti, tj, a, i0, j0, tile = 0
    for ti in range(th):
        i0 = 2 * ti
        for tj in range(tw):
            j0 = 2 * tj
            for a in range(16):
                m[a] = m0[a * ms + tile]
            for a in range(4):  # s = A^T m
                s[0][a] = m[a] + m[4 + a] + m[8 + a]
                s[1][a] = m[4 + a] - m[8 + a] - m[12 + a]
            y00 = s[0][0] + s[0][1] + s[0][2] + bf
            y01 = s[0][1] - s[0][2] - s[0][3] + bf
            y10 = s[1][0] + s[1][1] + s[1][2] + bf
            y11 = s[1][1] - s[1][2] - s[1][3] + bf
            plane[i0 * Wo + j0] = y00
            if j0 + 1 < Wo:
                plane[i0 * Wo + j0 + 1] = y01
            if i0 + 1 < Ho:
                plane[(i0 + 1) * Wo + j0] = y10
                if j0 + 1 < Wo:
                    plane[(i0 + 1) * Wo + j0 + 1] = y11
            tile = tile + 1


cdef inline void _wino_out_plane(const floating *m0, Py_ssize_t ms, floating *plane,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                 floating bf) noexcept nogil:
    # Y = A^T m A for a block of whole tile rows at once (a loop the compiler
    # vectorises: 16 contiguous streams in, four out), then the 2x2 results scattered
    # row by row into the plane; the same operations in the same order as tile by tile.
    cdef floating y[4][_WB]
    cdef floating s00, s01, s02, s03, s10, s11, s12, s13
    cdef Py_ssize_t rows_blk, tb0, tb1, ti, tj, nt, t, half, q
    cdef const floating *m
    cdef floating *r0
    cdef floating *r1
    if tw > _WB:
        _wino_out_plane_tiles(m0, ms, plane, Ho, Wo, th, tw, bf)
        return
    rows_blk = _WB // tw
    half = Wo // 2
    tb0 = 0
    while tb0 < th:
        tb1 = min(th, tb0 + rows_blk)
        nt = (tb1 - tb0) * tw
        m = m0 + tb0 * tw
        for t in range(nt):
            s00 = m[t] + m[4 * ms + t] + m[8 * ms + t]
            s01 = m[ms + t] + m[5 * ms + t] + m[9 * ms + t]
            s02 = m[2 * ms + t] + m[6 * ms + t] + m[10 * ms + t]
            s03 = m[3 * ms + t] + m[7 * ms + t] + m[11 * ms + t]
            s10 = m[4 * ms + t] - m[8 * ms + t] - m[12 * ms + t]
            s11 = m[5 * ms + t] - m[9 * ms + t] - m[13 * ms + t]
            s12 = m[6 * ms + t] - m[10 * ms + t] - m[14 * ms + t]
            s13 = m[7 * ms + t] - m[11 * ms + t] - m[15 * ms + t]
            y[0][t] = s00 + s01 + s02 + bf
            y[1][t] = s01 - s02 - s03 + bf
            y[2][t] = s10 + s11 + s12 + bf
            y[3][t] = s11 - s12 - s13 + bf
        for ti in range(tb0, tb1):
            q = (ti - tb0) * tw
            r0 = plane + 2 * ti * Wo
            r1 = r0 + Wo
            for tj in range(half):
                r0[2 * tj] = y[0][q + tj]
                r0[2 * tj + 1] = y[1][q + tj]
            if Wo % 2 == 1:  # the last tile of an odd-width row is half outside
                r0[Wo - 1] = y[0][q + tw - 1]
            if 2 * ti + 1 < Ho:
                for tj in range(half):
                    r1[2 * tj] = y[2][q + tj]
                    r1[2 * tj + 1] = y[3][q + tj]
                if Wo % 2 == 1:
                    r1[Wo - 1] = y[2][q + tw - 1]
        tb0 = tb1


def winograd_input(const floating[:, :, :, ::1] x, floating[:, :, :] V,
                   Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0, Py_ssize_t c1,
                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw, int nthreads=0, int m=2):
    """V[xi, c - c0, tile] = (B^T d B)[xi // a, xi % a] for the a x a input tile d of
    x[n, c] (a = m + 2; F(m x m, 3x3), m 2 or 4), for every tile of the samples
    [n0, n1) and channels [c0, c1). V: (a * a, c1 - c0, (n1 - n0) * th * tw)."""
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Cg = c1 - c0, TT = th * tw
    cdef Py_ssize_t t, n, c, vs
    cdef Py_ssize_t slabs = _wino_slabs(m)
    cdef int failed = 0
    if V.shape[0] != slabs or V.shape[1] != Cg or V.shape[2] != nb * TT:
        raise ValueError(f"winograd_input: V must have shape ({slabs}, {Cg}, {nb * TT})")
    if V.shape[2] > 1 and V.strides[2] != sizeof(floating):
        raise ValueError("winograd_input: V's last axis must be contiguous")
    if not (0 <= n0 <= n1 <= x.shape[0] and 0 <= c0 <= c1 <= x.shape[1]):
        raise ValueError("winograd_input: sample or channel range outside x")
    vs = V.strides[0] // sizeof(floating)
    with nogil:
        for t in prange(nb * Cg, schedule="static", num_threads=_pick_threads(nthreads, nb * Cg * TT * 16)):
            n = t // Cg
            c = t - n * Cg
            if m == 4:
                if floating is float:
                    if funk_w4_in_plane_f(&x[n0 + n, c0 + c, 0, 0], H, W, &V[0, c, n * TT], vs, th, tw, ph, pw):
                        failed = 1
                else:
                    if funk_w4_in_plane_d(&x[n0 + n, c0 + c, 0, 0], H, W, &V[0, c, n * TT], vs, th, tw, ph, pw):
                        failed = 1
            else:
                _wino_in_plane(&x[n0 + n, c0 + c, 0, 0], H, W, &V[0, c, n * TT], vs, th, tw, ph, pw)
    if failed:
        raise MemoryError("winograd_input: no memory for a row copy of a wide plane")


def winograd_output(const floating[:, :, :] M, floating[:, :, :, ::1] out,
                    Py_ssize_t n0, Py_ssize_t f0, Py_ssize_t th, Py_ssize_t tw,
                    const floating[::1] b, int nthreads=0, int m=2):
    """out[n0 + n, f0 + f, m ti + a, m tj + bb] = (A^T p A)[a, bb] + b[f] for the
    (m + 2)^2 products p = M[:, f, tile] of every tile (b may be empty: no bias);
    positions past the output plane are dropped. M: ((m + 2)^2, Fg, nb * th * tw)."""
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t Fg = M.shape[1], TT = th * tw
    cdef Py_ssize_t nb = M.shape[2] // TT if TT > 0 else 0
    cdef Py_ssize_t t, n, f, ms
    cdef bint has_bias = b.shape[0] > 0
    if M.shape[0] != _wino_slabs(m) or M.shape[2] != nb * TT or n0 + nb > out.shape[0] \
            or f0 + Fg > out.shape[1] or th != (Ho + m - 1) // m or tw != (Wo + m - 1) // m:
        raise ValueError("winograd_output: shapes do not match")
    if M.shape[2] > 1 and M.strides[2] != sizeof(floating):
        raise ValueError("winograd_output: M's last axis must be contiguous")
    if has_bias and b.shape[0] != Fg:
        raise ValueError("winograd_output: b must be empty or have one entry per filter of the group")
    ms = M.strides[0] // sizeof(floating)
    with nogil:
        for t in prange(nb * Fg, schedule="static", num_threads=_pick_threads(nthreads, nb * Fg * TT * 16)):
            n = t // Fg
            f = t - n * Fg
            if m == 4:
                if floating is float:
                    funk_w4_out_plane_f(&M[0, f, n * TT], ms, &out[n0 + n, f0 + f, 0, 0], Ho, Wo, th, tw,
                                        b[f] if has_bias else 0)
                else:
                    funk_w4_out_plane_d(&M[0, f, n * TT], ms, &out[n0 + n, f0 + f, 0, 0], Ho, Wo, th, tw,
                                        b[f] if has_bias else 0)
            else:
                _wino_out_plane(&M[0, f, n * TT], ms, &out[n0 + n, f0 + f, 0, 0], Ho, Wo, th, tw,
                                b[f] if has_bias else 0)



cdef inline void _wino_filter_row(const floating *g, Py_ssize_t Cg, floating *u, Py_ssize_t us) noexcept nogil:
    """The 16 transformed values of the Cg 3x3 filters at g (one output channel),
    written to u[xi * us + c]."""
    cdef floating t[4][3]
    cdef floating half = 0.5
    cdef Py_ssize_t c, j, r
    for c in range(Cg):
        for j in range(3):  # t = G g
            t[0][j] = g[j]
            t[1][j] = (g[j] + g[3 + j] + g[6 + j]) * half
            t[2][j] = (g[j] - g[3 + j] + g[6 + j]) * half
            t[3][j] = g[6 + j]
        for r in range(4):  # u = t G^T
            u[(4 * r) * us + c] = t[r][0]
            u[(4 * r + 1) * us + c] = (t[r][0] + t[r][1] + t[r][2]) * half
            u[(4 * r + 2) * us + c] = (t[r][0] - t[r][1] + t[r][2]) * half
            u[(4 * r + 3) * us + c] = t[r][2]
        g = g + 9


def winograd_filters(const floating[:, :, :, ::1] w, floating[:, :, :, :] U, int nthreads=0, int m=2):
    """U[grp, xi, f, c] = (G w[grp * Fg + f, c] G^T)[xi // a, xi % a] (a = m + 2): the
    filter transform of w (F, Cg, 3, 3) in G = U.shape[0] groups; U: (G, a * a, F // G,
    Cg) with a contiguous last axis (slabs may be padded apart)."""
    cdef Py_ssize_t F = w.shape[0], Cg = w.shape[1], G = U.shape[0]
    cdef Py_ssize_t Fg = U.shape[2] if G > 0 else 0
    cdef Py_ssize_t f, us
    if w.shape[2] != 3 or w.shape[3] != 3 or U.shape[1] != _wino_slabs(m) or G * Fg != F or U.shape[3] != Cg:
        raise ValueError(f"winograd_filters: w must be (F, Cg, 3, 3) and U (G, {_wino_slabs(m)}, F // G, Cg)")
    if Cg > 1 and U.strides[3] != sizeof(floating):
        raise ValueError("winograd_filters: U's last axis must be contiguous")
    us = U.strides[1] // sizeof(floating)
    with nogil:
        for f in prange(F, schedule="static", num_threads=_pick_threads(nthreads, F * Cg * 16)):
            if m == 4:
                if floating is float:
                    funk_w4_filter_row_f(&w[f, 0, 0, 0], Cg, &U[f // Fg, 0, f % Fg, 0], us)
                else:
                    funk_w4_filter_row_d(&w[f, 0, 0, 0], Cg, &U[f // Fg, 0, f % Fg, 0], us)
            else:
                _wino_filter_row(&w[f, 0, 0, 0], Cg, &U[f // Fg, 0, f % Fg, 0], us)





# Weight gradient. With y = A^T [(G g G^T) . (B^T d B)] A, bilinearity gives
#     dg = G^T [ sum over tiles (A dy A^T) . (B^T d B) ] G
# for each 2x2 block dy of the upstream gradient (zero past the output plane): the
# input transform of the forward, a transform of dout, 16 GEMMs
# Z[xi] (F, C) = Y[xi] (F, tiles) @ V[xi]^T, and G^T Z G.


cdef inline void _wino_dout_plane(const floating *plane, Py_ssize_t Ho, Py_ssize_t Wo,
                                  floating *y, Py_ssize_t ys, Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    cdef floating e[2][2]
    cdef floating s[4][2]
    cdef Py_ssize_t ti, tj, a, i0, j0, tile = 0
    for ti in range(th):
        i0 = 2 * ti
        for tj in range(tw):
            j0 = 2 * tj
            e[0][0] = plane[i0 * Wo + j0]
            e[0][1] = plane[i0 * Wo + j0 + 1] if j0 + 1 < Wo else 0
            e[1][0] = plane[(i0 + 1) * Wo + j0] if i0 + 1 < Ho else 0
            e[1][1] = plane[(i0 + 1) * Wo + j0 + 1] if (i0 + 1 < Ho and j0 + 1 < Wo) else 0
            for a in range(2):  # s = A e, A = [[1, 0], [1, 1], [1, -1], [0, -1]]
                s[0][a] = e[0][a]
                s[1][a] = e[0][a] + e[1][a]
                s[2][a] = e[0][a] - e[1][a]
                s[3][a] = -e[1][a]
            for a in range(4):  # y = s A^T
                y[(4 * a) * ys + tile] = s[a][0]
                y[(4 * a + 1) * ys + tile] = s[a][0] + s[a][1]
                y[(4 * a + 2) * ys + tile] = s[a][0] - s[a][1]
                y[(4 * a + 3) * ys + tile] = -s[a][1]
            tile = tile + 1


def winograd_dout(const floating[:, :, :, ::1] dout, floating[:, :, :] Y,
                  Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t f0, Py_ssize_t f1,
                  Py_ssize_t th, Py_ssize_t tw, int nthreads=0, int m=2):
    """Y[xi, f - f0, tile] = (A e A^T)[xi // a, xi % a] (a = m + 2) for the m x m block
    e of dout[n, f] of every tile (zero past the plane), samples [n0, n1), filters
    [f0, f1). Y: (a * a, f1 - f0, (n1 - n0) * th * tw), last axis contiguous."""
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Fg = f1 - f0, TT = th * tw
    cdef Py_ssize_t t, n, f, ys
    if Y.shape[0] != _wino_slabs(m) or Y.shape[1] != Fg or Y.shape[2] != nb * TT:
        raise ValueError(f"winograd_dout: Y must have shape ({_wino_slabs(m)}, {Fg}, {nb * TT})")
    if Y.shape[2] > 1 and Y.strides[2] != sizeof(floating):
        raise ValueError("winograd_dout: Y's last axis must be contiguous")
    if not (0 <= n0 <= n1 <= dout.shape[0] and 0 <= f0 <= f1 <= dout.shape[1]) \
            or th != (Ho + m - 1) // m or tw != (Wo + m - 1) // m:
        raise ValueError("winograd_dout: ranges or tiles do not match dout")
    ys = Y.strides[0] // sizeof(floating)
    with nogil:
        for t in prange(nb * Fg, schedule="static", num_threads=_pick_threads(nthreads, nb * Fg * TT * 16)):
            n = t // Fg
            f = t - n * Fg
            if m == 4:
                if floating is float:
                    funk_w4_dout_plane_f(&dout[n0 + n, f0 + f, 0, 0], Ho, Wo, &Y[0, f, n * TT], ys, th, tw)
                else:
                    funk_w4_dout_plane_d(&dout[n0 + n, f0 + f, 0, 0], Ho, Wo, &Y[0, f, n * TT], ys, th, tw)
            else:
                _wino_dout_plane(&dout[n0 + n, f0 + f, 0, 0], Ho, Wo, &Y[0, f, n * TT], ys, th, tw)


cdef inline void _wino_filter_grad_row(const floating *z, Py_ssize_t zs, Py_ssize_t Cg,
                                       floating *g) noexcept nogil:
    """dg = G^T Z G for the Cg 4x4 matrices Z[xi] = z[xi * zs + c] of one output channel,
    written as Cg 3x3 filters at g."""
    cdef floating m[16]
    cdef floating t[3][4]
    cdef floating half = 0.5
    cdef Py_ssize_t c, a
    for c in range(Cg):
        for a in range(16):
            m[a] = z[a * zs + c]
        for a in range(4):  # t = G^T m, G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]]
            t[0][a] = m[a] + (m[4 + a] + m[8 + a]) * half
            t[1][a] = (m[4 + a] - m[8 + a]) * half
            t[2][a] = (m[4 + a] + m[8 + a]) * half + m[12 + a]
        for a in range(3):  # g = t G
            g[3 * a] = t[a][0] + (t[a][1] + t[a][2]) * half
            g[3 * a + 1] = (t[a][1] - t[a][2]) * half
            g[3 * a + 2] = (t[a][1] + t[a][2]) * half + t[a][3]
        g = g + 9


def winograd_filters_backward(const floating[:, :, :, :] Z, floating[:, :, :, ::1] dw, int nthreads=0, int m=2):
    """dw[grp * Fg + f, c] = G^T Z[grp, :, f, c] G (a x a -> 3x3, a = m + 2) for Z
    (G, a * a, Fg, Cg) with a contiguous last axis; dw: (G * Fg, Cg, 3, 3)."""
    cdef Py_ssize_t G = Z.shape[0], Fg = Z.shape[2], Cg = Z.shape[3]
    cdef Py_ssize_t F = G * Fg, f, zs
    if Z.shape[1] != _wino_slabs(m) or dw.shape[0] != F or dw.shape[1] != Cg or dw.shape[2] != 3 \
            or dw.shape[3] != 3:
        raise ValueError(f"winograd_filters_backward: Z must be (G, {_wino_slabs(m)}, Fg, Cg) and dw (G * Fg, Cg, 3, 3)")
    if Cg > 1 and Z.strides[3] != sizeof(floating):
        raise ValueError("winograd_filters_backward: Z's last axis must be contiguous")
    zs = Z.strides[1] // sizeof(floating)
    with nogil:
        for f in prange(F, schedule="static", num_threads=_pick_threads(nthreads, F * Cg * 16)):
            if m == 4:
                if floating is float:
                    funk_w4_filter_grad_row_f(&Z[f // Fg, 0, f % Fg, 0], zs, Cg, &dw[f, 0, 0, 0])
                else:
                    funk_w4_filter_grad_row_d(&Z[f // Fg, 0, f % Fg, 0], zs, Cg, &dw[f, 0, 0, 0])
            else:
                _wino_filter_grad_row(&Z[f // Fg, 0, f % Fg, 0], zs, Cg, &dw[f, 0, 0, 0])


# ----------------------------------------------------------------------------- pooling


cdef extern from "pool.h" nogil:
    void funk_maxpool2_row_f(const float *r0, const float *r1, float *o, int32 *g, Py_ssize_t Wo, int32 base, int32 W)
    void funk_maxpool2_row_d(const double *r0, const double *r1, double *o, int32 *g, Py_ssize_t Wo, int32 base,
                             int32 W)
    void funk_maxpool2_back_row_f(const float *d, const int32 *g, float *d0, float *d1, Py_ssize_t Wo, int32 base,
                                  int32 W)
    void funk_maxpool2_back_row_d(const double *d, const int32 *g, double *d0, double *d1, Py_ssize_t Wo,
                                  int32 base, int32 W)
    void funk_maxpool_row_f(const float *x, float *o, int32 *g, Py_ssize_t Wo, Py_ssize_t W, Py_ssize_t row0,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sw)
    void funk_maxpool_row_d(const double *x, double *o, int32 *g, Py_ssize_t Wo, Py_ssize_t W, Py_ssize_t row0,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sw)
    void funk_maxpool2_plane_f(const float *x, float *o, int32 *g, Py_ssize_t Ho, Py_ssize_t Wo, int32 W)
    void funk_maxpool2_plane_d(const double *x, double *o, int32 *g, Py_ssize_t Ho, Py_ssize_t Wo, int32 W)
    void funk_maxpool2_back_plane_f(const float *d, const int32 *g, float *dx, Py_ssize_t Ho, Py_ssize_t Wo,
                                    Py_ssize_t H, int32 W)
    void funk_maxpool2_back_plane_d(const double *d, const int32 *g, double *dx, Py_ssize_t Ho, Py_ssize_t Wo,
                                    Py_ssize_t H, int32 W)


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int32[:, :, :, ::1] arg, Py_ssize_t ph, Py_ssize_t pw,
                     Py_ssize_t sh, Py_ssize_t sw):
    """out[n, c, i, j] = max of the (ph, pw) window at (i * sh, j * sw);
    arg[n, c, i, j] = the flat position h * W + w of that maximum in its plane.

    Ties go to the first maximum in row-major window order; a NaN in the window wins
    (the first NaN), as numpy's max/argmax do in the reference.

    Each output row is seeded with its windows' first elements, then every other window
    offset (a, b) updates the whole row with selects rather than branches: on random
    data a branch per comparison is mispredicted half the time, which made this kernel
    several times slower. The row loops are C (pool.h), where gcc vectorises them;
    2x2 stride-2 pools have kernels of their own."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t t, i
    if out.shape[0] != N or out.shape[1] != C or arg.shape[0] != N or arg.shape[1] != C \
            or arg.shape[2] != Ho or arg.shape[3] != Wo:
        raise ValueError("max_pool_forward: out/arg shapes do not match x")
    if (Ho - 1) * sh + ph > H or (Wo - 1) * sw + pw > W:
        raise ValueError("max_pool_forward: windows reach outside x")
    if ph == 2 and pw == 2 and sh == 2 and sw == 2:  # the common pool: row kernels (pool.h)
        with nogil:
            for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
                if floating is float:
                    funk_maxpool2_plane_f(&x[t // C, t % C, 0, 0], &out[t // C, t % C, 0, 0],
                                          &arg[t // C, t % C, 0, 0], Ho, Wo, <int32>W)
                else:
                    funk_maxpool2_plane_d(&x[t // C, t % C, 0, 0], &out[t // C, t % C, 0, 0],
                                          &arg[t // C, t % C, 0, 0], Ho, Wo, <int32>W)
        return
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
            for i in range(Ho):
                if floating is float:
                    funk_maxpool_row_f(&x[t // C, t % C, 0, 0], &out[t // C, t % C, i, 0], &arg[t // C, t % C, i, 0],
                                       Wo, W, i * sh, ph, pw, sw)
                else:
                    funk_maxpool_row_d(&x[t // C, t % C, 0, 0], &out[t // C, t % C, i, 0], &arg[t // C, t % C, i, 0],
                                       Wo, W, i * sh, ph, pw, sw)


def max_pool_backward(const floating[:, :, :, ::1] dout, const int32[:, :, :, ::1] arg,
                      floating[:, :, :, ::1] dx):
    """dx (zero on entry) += dout scattered to the stored argmax positions; windows
    that overlap add up. One thread per (n, c) plane, so no races."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], HW = dx.shape[2] * dx.shape[3]
    cdef Py_ssize_t Q = dout.shape[2] * dout.shape[3]
    cdef Py_ssize_t t, q, pos
    cdef floating *d
    cdef const floating *g
    cdef const int32 *a
    if dout.shape[0] != N or dout.shape[1] != C or arg.shape[0] != N or arg.shape[1] != C \
            or arg.shape[2] != dout.shape[2] or arg.shape[3] != dout.shape[3]:
        raise ValueError("max_pool_backward: dout/arg/dx shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * (HW + Q))):
            d = &dx[t // C, t % C, 0, 0]
            g = &dout[t // C, t % C, 0, 0]
            a = &arg[t // C, t % C, 0, 0]
            for q in range(Q):
                pos = a[q]
                if 0 <= pos < HW:
                    d[pos] += g[q]


def max_pool2_backward(const floating[:, :, :, ::1] dout, const int32[:, :, :, ::1] arg,
                       floating[:, :, :, ::1] dx):
    """dx of a 2x2, stride-2 max pool: every element written (dout at each window's
    maximum, 0 elsewhere, also in a last odd row or column), so dx may be uninitialised."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t t
    if dout.shape[0] != N or dout.shape[1] != C or arg.shape[0] != N or arg.shape[1] != C \
            or arg.shape[2] != Ho or arg.shape[3] != Wo or Ho != H // 2 or Wo != W // 2:
        raise ValueError("max_pool2_backward: dout/arg/dx shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
            if floating is float:
                funk_maxpool2_back_plane_f(&dout[t // C, t % C, 0, 0], &arg[t // C, t % C, 0, 0],
                                           &dx[t // C, t % C, 0, 0], Ho, Wo, H, <int32>W)
            else:
                funk_maxpool2_back_plane_d(&dout[t // C, t % C, 0, 0], &arg[t // C, t % C, 0, 0],
                                           &dx[t // C, t % C, 0, 0], Ho, Wo, H, <int32>W)


def avg_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw):
    """out[n, c, i, j] = mean of the (ph, pw) window at (i * sh, j * sw), summed in double."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t t, i, j, a, bb, base
    cdef double s, scale = 1.0 / (ph * pw)
    cdef const floating *plane
    cdef floating *o
    if out.shape[0] != N or out.shape[1] != C:
        raise ValueError("avg_pool_forward: out shape does not match x")
    if (Ho - 1) * sh + ph > H or (Wo - 1) * sw + pw > W:
        raise ValueError("avg_pool_forward: windows reach outside x")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
            plane = &x[t // C, t % C, 0, 0]
            o = &out[t // C, t % C, 0, 0]
            for i in range(Ho):
                for j in range(Wo):
                    s = 0
                    base = i * sh * W + j * sw
                    for a in range(ph):
                        for bb in range(pw):
                            s = s + plane[base + a * W + bb]
                    o[i * Wo + j] = <floating>(s * scale)


def avg_pool_backward(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw):
    """dx (zero on entry) += dout / (ph * pw) spread over each window."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t t, i, j, a, bb, base
    cdef floating g, scale = <floating>(1.0 / (ph * pw))
    cdef floating *plane
    cdef const floating *d
    if dout.shape[0] != N or dout.shape[1] != C:
        raise ValueError("avg_pool_backward: dout shape does not match dx")
    if (Ho - 1) * sh + ph > H or (Wo - 1) * sw + pw > W:
        raise ValueError("avg_pool_backward: windows reach outside dx")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
            plane = &dx[t // C, t % C, 0, 0]
            d = &dout[t // C, t % C, 0, 0]
            for i in range(Ho):
                for j in range(Wo):
                    g = d[i * Wo + j] * scale
                    base = i * sh * W + j * sw
                    for a in range(ph):
                        for bb in range(pw):
                            plane[base + a * W + bb] += g
