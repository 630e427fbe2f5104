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

import numpy as np

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int funk_openmp(void) { return 1; }
    static int funk_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int funk_openmp(void) { return 0; }
    static int funk_max_threads(void) { return 1; }
    #endif
    """
    int funk_openmp() nogil
    int funk_max_threads() nogil

ctypedef int int32


# Below this many touched elements a kernel runs on one thread. Waking the OpenMP
# pool costs microseconds on an idle machine, but on a busy one every parallel region
# can wait a whole scheduler time slice for its second thread, so only kernels that
# take about a millisecond on one thread are split.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 20


def get_parallel_threshold():
    """Elements a kernel must touch before it uses more than one OpenMP thread."""
    return PARALLEL_MIN_WORK


def set_parallel_threshold(Py_ssize_t elements):
    """Set the single-thread threshold (elements); returns the previous value."""
    global PARALLEL_MIN_WORK
    if elements < 0:
        raise ValueError(f"set_parallel_threshold: elements must be >= 0, got {elements}")
    previous = PARALLEL_MIN_WORK
    PARALLEL_MIN_WORK = elements
    return previous


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(funk_openmp())


def max_threads():
    """Threads an OpenMP region may use (OMP_NUM_THREADS, else the core count)."""
    return funk_max_threads()


cdef inline int _threads(Py_ssize_t work) noexcept nogil:
    if work < PARALLEL_MIN_WORK:
        return 1
    return funk_max_threads()


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


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
           Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0, Py_ssize_t c1,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int nthreads=0):
    """Fill cols (K, nb * Ho * Wo) with the zero-padded, dilated windows of
    x[n0:n1, c0:c1] (see the module docstring for the layout)."""
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Cg = c1 - c0, KK = HH * WW
    cdef Py_ssize_t K = Cg * KK, P = Ho * Wo
    cdef Py_ssize_t t, r, n, c, kh, kw, i, j, h, off_w, jlo, jhi, base
    cdef floating *dst
    cdef const floating *src
    if cols.shape[0] != K or cols.shape[1] != nb * P:
        raise ValueError(f"im2col: cols must have shape ({K}, {nb * P}), got ({cols.shape[0]}, {cols.shape[1]})")
    if not (0 <= n0 <= n1 <= x.shape[0] and 0 <= c0 <= c1 <= x.shape[1]):
        raise ValueError("im2col: sample or channel range outside x")
    with nogil:
        for t in prange(K * nb, schedule="static", num_threads=_pick_threads(nthreads, K * nb * P)):
            r = t // nb
            n = t - r * nb
            c = r // KK
            kh = (r // WW) % HH
            kw = r % WW
            off_w = kw * dw - pw
            jlo = _range_lo(sw, off_w)
            jhi = _range_hi(W, Wo, sw, off_w)
            if jlo > jhi:
                jlo = jhi
            base = n * P
            for i in range(Ho):
                dst = &cols[r, base + i * Wo]
                h = i * sh - ph + kh * dh
                if h < 0 or h >= H:
                    for j in range(Wo):
                        dst[j] = 0
                    continue
                src = &x[n0 + n, c0 + c, h, 0]
                for j in range(jlo):
                    dst[j] = 0
                if sw == 1:
                    for j in range(jlo, jhi):
                        dst[j] = src[j + off_w]
                else:
                    for j in range(jlo, jhi):
                        dst[j] = src[j * sw + off_w]
                for j in range(jhi, Wo):
                    dst[j] = 0


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t c0, Py_ssize_t c1,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int nthreads=0):
    """Add the column gradient cols (K, nb * Ho * Wo) into dx[n0:n1, c0:c1]: the
    adjoint of `im2col`. Overlapping windows accumulate; padding positions are dropped.
    Each (n, c) plane belongs to one thread, so the additions never race."""
    cdef Py_ssize_t H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t nb = n1 - n0, Cg = c1 - c0, KK = HH * WW
    cdef Py_ssize_t K = Cg * KK, P = Ho * Wo
    cdef Py_ssize_t t, r, n, c, kh, kw, i, j, h, off_w, jlo, jhi, base
    cdef floating *dst
    cdef const floating *src
    if cols.shape[0] != K or cols.shape[1] != nb * P:
        raise ValueError(f"col2im: cols must have shape ({K}, {nb * P}), got ({cols.shape[0]}, {cols.shape[1]})")
    if not (0 <= n0 <= n1 <= dx.shape[0] and 0 <= c0 <= c1 <= dx.shape[1]):
        raise ValueError("col2im: sample or channel range outside dx")
    with nogil:
        for t in prange(nb * Cg, schedule="static", num_threads=_pick_threads(nthreads, K * nb * P)):
            n = t // Cg
            c = t - n * Cg
            base = n * P
            for kh in range(HH):
                for kw in range(WW):
                    r = c * KK + kh * WW + kw
                    off_w = kw * dw - pw
                    jlo = _range_lo(sw, off_w)
                    jhi = _range_hi(W, Wo, sw, off_w)
                    if jlo > jhi:
                        jlo = jhi
                    for i in range(Ho):
                        h = i * sh - ph + kh * dh
                        if h < 0 or h >= H:
                            continue
                        src = &cols[r, base + i * Wo]
                        dst = &dx[n0 + n, c0 + c, h, 0]
                        if sw == 1:
                            for j in range(jlo, jhi):
                                dst[j + off_w] += src[j]
                        else:
                            for j in range(jlo, jhi):
                                dst[j * sw + off_w] += src[j]


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


# ----------------------------------------------------------------------------- pooling


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
    several times slower."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t t, i, j, a, bb, row, pos
    cdef floating v, cur
    cdef bint take
    cdef const floating *plane
    cdef const floating *src
    cdef floating *o
    cdef int32 *g
    if out.shape[0] != N or out.shape[1] != C or arg.shape[0] != N or arg.shape[1] != C \
            or arg.shape[2] != Ho or arg.shape[3] != Wo:
        raise ValueError("max_pool_forward: out/arg shapes do not match x")
    if (Ho - 1) * sh + ph > H or (Wo - 1) * sw + pw > W:
        raise ValueError("max_pool_forward: windows reach outside x")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_pool_threads(N * C * H * W)):
            plane = &x[t // C, t % C, 0, 0]
            for i in range(Ho):
                o = &out[t // C, t % C, i, 0]
                g = &arg[t // C, t % C, i, 0]
                row = i * sh * W
                src = plane + row
                for j in range(Wo):
                    o[j] = src[j * sw]
                    g[j] = <int32>(row + j * sw)
                for a in range(ph):
                    for bb in range(pw):
                        if a == 0 and bb == 0:
                            continue
                        pos = row + a * W + bb
                        src = plane + pos
                        for j in range(Wo):
                            v = src[j * sw]
                            cur = o[j]
                            # strictly greater (first maximum wins), or the first NaN
                            take = (v > cur) | ((v != v) & (cur == cur))
                            o[j] = v if take else cur
                            g[j] = <int32>(pos + j * sw) if take else g[j]


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
