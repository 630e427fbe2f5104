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
# The row loops are C (norm.h, which says why). Channels are split over the OpenMP threads (deterministic: each channel's sums are
# made by one thread in a fixed order), the elementwise passes over (n, c) planes.

cdef extern from "norm.h" nogil:
    void funk_bn_sums_f(const float *x, Py_ssize_t n, double shift, double *s1, double *s2)
    void funk_bn_sums_d(const double *x, Py_ssize_t n, double shift, double *s1, double *s2)
    void funk_bn_apply_f(const float *x, float *o, Py_ssize_t n, float m, float a, float b, int relu)
    void funk_bn_apply_d(const double *x, double *o, Py_ssize_t n, double m, double a, double b, int relu)
    void funk_bn_grad_sums_f(const float *d, const float *x, const float *y, Py_ssize_t n, double m, int relu,
                             double *s0, double *s1)
    void funk_bn_grad_sums_d(const double *d, const double *x, const double *y, Py_ssize_t n, double m, int relu,
                             double *s0, double *s1)
    void funk_bn_dx_f(const float *d, const float *x, const float *y, float *o, Py_ssize_t n, float m, float a,
                      float b, float k, int relu)
    void funk_bn_dx_d(const double *d, const double *x, const double *y, double *o, Py_ssize_t n, double m, double a,
                      double b, double k, int relu)
    void funk_relu_fwd_f(const float *x, float *o, Py_ssize_t n)
    void funk_relu_fwd_d(const double *x, double *o, Py_ssize_t n)
    void funk_relu_bwd_f(const float *d, const float *y, float *o, Py_ssize_t n)
    void funk_relu_bwd_d(const double *d, const double *y, double *o, Py_ssize_t n)


cdef Py_ssize_t NORM_PARALLEL_MIN_WORK = 1 << 16


cdef inline int _norm_threads(Py_ssize_t work) noexcept nogil:
    if work < NORM_PARALLEL_MIN_WORK:
        return 1
    return funk_max_threads()


def bn_stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var):
    """mean[c], var[c] (biased) of x[:, c, :] over (N, P), float64."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double s, s1, s2, d
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
                if floating is float:
                    funk_bn_sums_f(&x[n, c, 0], P, s, &s1, &s2)
                else:
                    funk_bn_sums_d(&x[n, c, 0], P, s, &s1, &s2)
            s1 = s1 / (N * P)
            mean[c] = s + s1
            d = s2 / (N * P) - s1 * s1
            var[c] = d if d > 0.0 else 0.0


def bn_apply(const floating[:, :, ::1] x, floating[:, :, ::1] out, const floating[::1] m,
             const floating[::1] scale, const floating[::1] shift, bint relu):
    """out = (x - m[c]) * scale[c] + shift[c], then max(out, 0) if relu. Subtracting
    first keeps float32 accurate when the mean is large against the spread."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t t
    if out.shape[0] != N or out.shape[1] != C or out.shape[2] != P or scale.shape[0] != C or shift.shape[0] != C \
            or m.shape[0] != C:
        raise ValueError("bn_apply: shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_norm_threads(N * C * P)):
            if floating is float:
                funk_bn_apply_f(&x[t // C, t % C, 0], &out[t // C, t % C, 0], P, m[t % C], scale[t % C],
                                shift[t % C], relu)
            else:
                funk_bn_apply_d(&x[t // C, t % C, 0], &out[t // C, t % C, 0], P, m[t % C], scale[t % C],
                                shift[t % C], relu)


def bn_backward_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                     const floating[:, :, ::1] y, const double[::1] mean, double[:, ::1] sums, bint relu):
    """sums[0, c] = sum of g, sums[1, c] = sum of g * (x - mean[c]) over (N, P), float64,
    where g = dout, or dout where y > 0 (and 0 elsewhere) if relu (y: the ReLU's output)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double s0, s1
    if sums.shape[0] != 2 or sums.shape[1] != C or mean.shape[0] != C:
        raise ValueError("bn_backward_sums: shapes do not match")
    if dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != P or y.shape[0] != N or y.shape[1] != C \
            or y.shape[2] != P:
        raise ValueError("bn_backward_sums: shapes do not match")
    with nogil:
        for c in prange(C, schedule="static", num_threads=_norm_threads(N * C * P)):
            s0 = 0.0
            s1 = 0.0
            for n in range(N):
                if floating is float:
                    funk_bn_grad_sums_f(&dout[n, c, 0], &x[n, c, 0], &y[n, c, 0], P, mean[c], relu, &s0, &s1)
                else:
                    funk_bn_grad_sums_d(&dout[n, c, 0], &x[n, c, 0], &y[n, c, 0], P, mean[c], relu, &s0, &s1)
            sums[0, c] = s0
            sums[1, c] = s1


def bn_backward_dx(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, const floating[:, :, ::1] y,
                   floating[:, :, ::1] dx, const floating[::1] m, const floating[::1] a,
                   const floating[::1] b, const floating[::1] k, bint relu):
    """dx = a[c] * g + b[c] * (x - m[c]) + k[c], g as in bn_backward_sums."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t t
    if dx.shape[0] != N or dx.shape[1] != C or dx.shape[2] != P or a.shape[0] != C or b.shape[0] != C \
            or k.shape[0] != C or m.shape[0] != C:
        raise ValueError("bn_backward_dx: shapes do not match")
    if dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != P or y.shape[0] != N or y.shape[1] != C \
            or y.shape[2] != P:
        raise ValueError("bn_backward_dx: shapes do not match")
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=_norm_threads(N * C * P)):
            if floating is float:
                funk_bn_dx_f(&dout[t // C, t % C, 0], &x[t // C, t % C, 0], &y[t // C, t % C, 0],
                             &dx[t // C, t % C, 0], P, m[t % C], a[t % C], b[t % C], k[t % C], relu)
            else:
                funk_bn_dx_d(&dout[t // C, t % C, 0], &x[t // C, t % C, 0], &y[t // C, t % C, 0],
                             &dx[t // C, t % C, 0], P, m[t % C], a[t % C], b[t % C], k[t % C], relu)


cdef Py_ssize_t RELU_BLOCK = 1 << 14


def relu_forward(const floating[::1] x, floating[::1] out):
    """out = max(x, 0) (NaN stays NaN, as np.maximum)."""
    cdef Py_ssize_t n = x.shape[0], t, lo, hi, nb = (x.shape[0] + RELU_BLOCK - 1) // RELU_BLOCK
    if out.shape[0] != n:
        raise ValueError("relu_forward: shapes do not match")
    with nogil:
        for t in prange(nb, schedule="static", num_threads=_norm_threads(n)):
            lo = t * RELU_BLOCK
            hi = lo + RELU_BLOCK if lo + RELU_BLOCK < n else n
            if floating is float:
                funk_relu_fwd_f(&x[lo], &out[lo], hi - lo)
            else:
                funk_relu_fwd_d(&x[lo], &out[lo], hi - lo)


def relu_backward(const floating[::1] dout, const floating[::1] y, floating[::1] dx):
    """dx = dout where y > 0, else 0 (y: the forward's input or output)."""
    cdef Py_ssize_t n = dout.shape[0], t, lo, hi, nb = (dout.shape[0] + RELU_BLOCK - 1) // RELU_BLOCK
    if y.shape[0] != n or dx.shape[0] != n:
        raise ValueError("relu_backward: shapes do not match")
    with nogil:
        for t in prange(nb, schedule="static", num_threads=_norm_threads(n)):
            lo = t * RELU_BLOCK
            hi = lo + RELU_BLOCK if lo + RELU_BLOCK < n else n
            if floating is float:
                funk_relu_bwd_f(&dout[lo], &y[lo], &dx[lo], hi - lo)
            else:
                funk_relu_bwd_d(&dout[lo], &y[lo], &dx[lo], hi - lo)


# GELU: Phi evaluated in double for either dtype, as the reference does; the row loops are C
# (gelu.h: the C library's erfc, or glibc's vector erfc on AVX-512 where the build found it).
cdef extern from "gelu.h" nogil:
    void funk_gelu_fwd_f(const float *x, float *o, Py_ssize_t n, int tanh_form)
    void funk_gelu_fwd_d(const double *x, double *o, Py_ssize_t n, int tanh_form)
    void funk_gelu_bwd_f(const float *d, const float *x, float *o, Py_ssize_t n, int tanh_form)
    void funk_gelu_bwd_d(const double *d, const double *x, double *o, Py_ssize_t n, int tanh_form)


# an element costs an erfc (or tanh) and an exp, about as much as 16 of ReLU's: the
# threading threshold (_norm_threads, in elementwise work) counts each element 16 times
cdef Py_ssize_t GELU_WORK = 16


def gelu_forward(const floating[::1] x, floating[::1] out, bint tanh_form):
    """out = x Phi(x) (Phi = erfc(-x / sqrt 2) / 2, or the tanh form), in double, rounded to x's dtype."""
    cdef Py_ssize_t n = x.shape[0], t, lo, hi, nb = (x.shape[0] + RELU_BLOCK - 1) // RELU_BLOCK
    if out.shape[0] != n:
        raise ValueError("gelu_forward: shapes do not match")
    with nogil:
        for t in prange(nb, schedule="static", num_threads=_norm_threads(GELU_WORK * n)):
            lo = t * RELU_BLOCK
            hi = lo + RELU_BLOCK if lo + RELU_BLOCK < n else n
            if floating is float:
                funk_gelu_fwd_f(&x[lo], &out[lo], hi - lo, tanh_form)
            else:
                funk_gelu_fwd_d(&x[lo], &out[lo], hi - lo, tanh_form)


def gelu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] dx, bint tanh_form):
    """dx = dout (Phi(x) + x phi(x)) (or the tanh form's slope), in double, rounded to x's dtype."""
    cdef Py_ssize_t n = x.shape[0], t, lo, hi, nb = (x.shape[0] + RELU_BLOCK - 1) // RELU_BLOCK
    if dout.shape[0] != n or dx.shape[0] != n:
        raise ValueError("gelu_backward: shapes do not match")
    with nogil:
        for t in prange(nb, schedule="static", num_threads=_norm_threads(GELU_WORK * n)):
            lo = t * RELU_BLOCK
            hi = lo + RELU_BLOCK if lo + RELU_BLOCK < n else n
            if floating is float:
                funk_gelu_bwd_f(&dout[lo], &x[lo], &dx[lo], hi - lo, tanh_form)
            else:
                funk_gelu_bwd_d(&dout[lo], &x[lo], &dx[lo], hi - lo, tanh_form)
