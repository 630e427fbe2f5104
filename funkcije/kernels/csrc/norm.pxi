# Spatial batch norm (optionally followed by ReLU) in few passes over memory.
# Included (textually) by _compiled.pyx. x, out, dout, dx: (N, C, P) views of NCHW
# arrays (P = H * W), all of one float dtype; per-channel statistics in float64.
#
# Passes: forward train = statistics (read x) + apply (read x, write out); backward
# = sums (read dout, x, and out for ReLU's mask) + dx (read the same, write dx).
# The NumPy composition made about ten passes (mean, x - mu, variance, scale, gamma,
# beta, ReLU, and their backward), each a trip through memory on these sizes.
#
# Statistics are accumulated in float64 around a per-channel shift (the channel's
# first element): var = E[(x - s)^2] - E[x - s]^2 stays accurate when the mean is
# large against the spread, where the plain E[x^2] - E[x]^2 would cancel.
#
# Channels are split over the OpenMP threads (deterministic: each channel's sums are
# made by one thread in a fixed order), the elementwise passes over (n, c) planes.

cdef Py_ssize_t NORM_PARALLEL_MIN_WORK = 1 << 16


cdef inline int _norm_threads(Py_ssize_t work) noexcept nogil:
    if work < NORM_PARALLEL_MIN_WORK:
        return 1
    return funk_max_threads()


def bn_stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var):
    """mean[c], var[c] (biased) of x[:, c, :] over (N, P), float64."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c, n, p
    cdef double s, s1, s2, d
    cdef const floating *row
    if mean.shape[0] != C or var.shape[0] != C:
        raise ValueError("bn_stats: mean/var must have C entries")
    if N * P == 0:
        raise ValueError("bn_stats: empty channels")
    with nogil:
        for c in prange(C, schedule="static", num_threads=_norm_threads(N * C * P)):
            s = x[0, c, 0]
            s1 = 0.0
            s2 = 0.0
            for n in range(N):
                row = &x[n, c, 0]
                for p in range(P):
                    d = row[p] - s
                    s1 = s1 + d
                    s2 = s2 + d * d
            s1 = s1 / (N * P)
            mean[c] = s + s1
            d = s2 / (N * P) - s1 * s1
            var[c] = d if d > 0.0 else 0.0


def bn_apply(const floating[:, :, ::1] x, floating[:, :, ::1] out, const floating[::1] m,
             const floating[::1] scale, const floating[::1] shift, bint relu):
    """out = (x - m[c]) * scale[c] + shift[c], then max(out, 0) if relu. Subtracting
    first keeps float32 accurate when the mean is large against the spread."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t t, p
    cdef floating a, b, mc, v
    cdef const floating *src
    cdef floating *dst
    if out.shape[0] != N or out.shape[1] != C or out.shape[2] != P or scale.shape[0] != C or shift.shape[0] != C \
            or m.shape[0] != C:
        raise ValueError("bn_apply: shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_norm_threads(N * C * P)):
            a = scale[t % C]
            b = shift[t % C]
            mc = m[t % C]
            src = &x[t // C, t % C, 0]
            dst = &out[t // C, t % C, 0]
            if relu:
                for p in range(P):
                    v = (src[p] - mc) * a + b
                    dst[p] = v if v > 0 else 0
            else:
                for p in range(P):
                    dst[p] = (src[p] - mc) * a + b


def bn_backward_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                     const floating[:, :, ::1] y, const double[::1] mean, double[:, ::1] sums, bint relu):
    """sums[0, c] = sum of g, sums[1, c] = sum of g * (x - mean[c]) over (N, P), float64,
    where g = dout, or dout where y > 0 (and 0 elsewhere) if relu (y: the ReLU's output)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c, n, p
    cdef double s0, s1, m, g
    cdef const floating *dr
    cdef const floating *xr
    cdef const floating *yr
    if sums.shape[0] != 2 or sums.shape[1] != C or mean.shape[0] != C:
        raise ValueError("bn_backward_sums: shapes do not match")
    with nogil:
        for c in prange(C, schedule="static", num_threads=_norm_threads(N * C * P)):
            m = mean[c]
            s0 = 0.0
            s1 = 0.0
            for n in range(N):
                dr = &dout[n, c, 0]
                xr = &x[n, c, 0]
                if relu:
                    yr = &y[n, c, 0]
                    for p in range(P):
                        g = dr[p] if yr[p] > 0 else 0.0
                        s0 = s0 + g
                        s1 = s1 + g * (xr[p] - m)
                else:
                    for p in range(P):
                        g = dr[p]
                        s0 = s0 + g
                        s1 = s1 + g * (xr[p] - m)
            sums[0, c] = s0
            sums[1, c] = s1


def bn_backward_dx(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, const floating[:, :, ::1] y,
                   floating[:, :, ::1] dx, const floating[::1] m, const floating[::1] a,
                   const floating[::1] b, const floating[::1] k, bint relu):
    """dx = a[c] * g + b[c] * (x - m[c]) + k[c], g as in bn_backward_sums."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t t, p
    cdef floating ac, bc, kc, mc, g
    cdef const floating *dr
    cdef const floating *xr
    cdef const floating *yr
    cdef floating *o
    if dx.shape[0] != N or dx.shape[1] != C or dx.shape[2] != P or a.shape[0] != C or b.shape[0] != C \
            or k.shape[0] != C or m.shape[0] != C:
        raise ValueError("bn_backward_dx: shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_norm_threads(N * C * P)):
            ac = a[t % C]
            bc = b[t % C]
            kc = k[t % C]
            mc = m[t % C]
            dr = &dout[t // C, t % C, 0]
            xr = &x[t // C, t % C, 0]
            o = &dx[t // C, t % C, 0]
            if relu:
                yr = &y[t // C, t % C, 0]
                for p in range(P):
                    g = dr[p] if yr[p] > 0 else 0
                    o[p] = ac * g + bc * (xr[p] - mc) + kc
            else:
                for p in range(P):
                    o[p] = ac * dr[p] + bc * (xr[p] - mc) + kc


def relu_forward(const floating[::1] x, floating[::1] out):
    """out = max(x, 0) (NaN stays NaN, as np.maximum)."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating v
    if out.shape[0] != n:
        raise ValueError("relu_forward: shapes do not match")
    with nogil:
        for i in prange(n, schedule="static", num_threads=_norm_threads(n)):
            v = x[i]
            out[i] = 0 if v < 0 else v


def relu_backward(const floating[::1] dout, const floating[::1] y, floating[::1] dx):
    """dx = dout where y > 0, else 0 (y: the forward's input or output)."""
    cdef Py_ssize_t n = dout.shape[0], i
    if y.shape[0] != n or dx.shape[0] != n:
        raise ValueError("relu_backward: shapes do not match")
    with nogil:
        for i in prange(n, schedule="static", num_threads=_norm_threads(n)):
            dx[i] = dout[i] if y[i] > 0 else 0
