"""Pure-NumPy versions of the compiled kernels (`funkcije/kernels/csrc/_compiled.pyx`).

Same function names, arguments, layouts and results, so `funkcije.fast_layers`
drives either one (`nthreads` is accepted and ignored). They run when the compiled extension is absent (or when the
NumPy path is forced), and for floating dtypes other than float32/float64. The
loops here run over kernel or window positions only (HH * WW, ph * pw iterations),
each one vectorised over the whole batch chunk via strided views.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "im2col",
    "col2im",
    "cols_to_out",
    "out_to_cols",
    "max_pool_forward",
    "max_pool_backward",
    "max_pool2_backward",
    "avg_pool_forward",
    "avg_pool_backward",
    "bn_stats",
    "bn_apply",
    "bn_backward_sums",
    "bn_backward_dx",
    "relu_forward",
    "relu_backward",
    "gelu_forward",
    "gelu_backward",
]


def openmp_enabled():
    return False


def max_threads():
    return 1


def _windows(a, HH, WW, sh, sw, dh, dw, Ho, Wo):
    """View of a (nb, Cg, Hp, Wp) as (Cg, HH, WW, nb, Ho, Wo): element
    [c, kh, kw, n, i, j] = a[n, c, i * sh + kh * dh, j * sw + kw * dw]."""
    sN, sC, sH, sW = a.strides
    return as_strided(
        a,
        shape=(a.shape[1], HH, WW, a.shape[0], Ho, Wo),
        strides=(sC, dh * sH, dw * sW, sN, sh * sH, sw * sW),
        writeable=False,
    )


def im2col(x, cols, n0, n1, c0, c1, HH, WW, sh, sw, ph, pw, dh, dw, Ho, Wo, nthreads=0):
    """cols (Cg * HH * WW, nb * Ho * Wo) <- windows of x[n0:n1, c0:c1] (zero padding)."""
    xs = x[n0:n1, c0:c1]
    if ph or pw:
        xs = np.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    nb, Cg = n1 - n0, c1 - c0
    np.copyto(cols.reshape(Cg, HH, WW, nb, Ho, Wo), _windows(xs, HH, WW, sh, sw, dh, dw, Ho, Wo))


def col2im(cols, dx, n0, n1, c0, c1, HH, WW, sh, sw, ph, pw, dh, dw, Ho, Wo, nthreads=0):
    """dx[n0:n1, c0:c1] = the adjoint of `im2col` applied to cols (overwritten, as
    the compiled kernel does); one strided slice-add per kernel position into a padded
    scratch, so overlapping windows accumulate."""
    nb, Cg = n1 - n0, c1 - c0
    H, W = dx.shape[2:]
    c6 = cols.reshape(Cg, HH, WW, nb, Ho, Wo)
    dxp = np.zeros((nb, Cg, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
    for kh in range(HH):
        for kw in range(WW):
            h0, w0 = kh * dh, kw * dw
            dxp[:, :, h0 : h0 + sh * (Ho - 1) + 1 : sh, w0 : w0 + sw * (Wo - 1) + 1 : sw] += c6[
                :, kh, kw
            ].transpose(1, 0, 2, 3)
    dx[n0:n1, c0:c1] = dxp[:, :, ph : ph + H, pw : pw + W]


def cols_to_out(res, b, out, n0, f0, nthreads=0):
    """out[n0 + n, f0 + f, p] = res[f, n * P + p] + b[f]."""
    Fg = res.shape[0]
    P = out.shape[2]
    nb = res.shape[1] // P
    np.add(res.reshape(Fg, nb, P).transpose(1, 0, 2), b[:, None], out=out[n0 : n0 + nb, f0 : f0 + Fg])


def out_to_cols(dout, res, n0, f0, nthreads=0):
    """res[f, n * P + p] = dout[n0 + n, f0 + f, p]."""
    Fg = res.shape[0]
    P = dout.shape[2]
    nb = res.shape[1] // P
    np.copyto(res.reshape(Fg, nb, P), dout[n0 : n0 + nb, f0 : f0 + Fg].transpose(1, 0, 2))


def _pool_view(x, a, b, sh, sw, Ho, Wo):
    """x[:, :, a + i * sh, b + j * sw] for i < Ho, j < Wo."""
    return x[:, :, a : a + sh * (Ho - 1) + 1 : sh, b : b + sw * (Wo - 1) + 1 : sw]


def max_pool_forward(x, out, arg, ph, pw, sh, sw):
    """out <- window maxima, arg <- flat plane position h * W + w of each maximum
    (first maximum on ties; the first NaN if the window holds one)."""
    Ho, Wo = out.shape[2:]
    W = x.shape[3]
    best = _pool_view(x, 0, 0, sh, sw, Ho, Wo).copy()
    k = np.zeros(best.shape, dtype=np.int32)
    seen_nan = np.isnan(best)
    for a in range(ph):
        for b in range(pw):
            if a == 0 and b == 0:
                continue
            v = _pool_view(x, a, b, sh, sw, Ho, Wo)
            take = (v > best) & ~seen_nan
            v_nan = np.isnan(v)
            take |= v_nan & ~seen_nan
            seen_nan |= v_nan
            np.copyto(best, v, where=take)
            k[take] = a * W + b
    np.copyto(out, best)
    rows = (np.arange(Ho, dtype=np.int32) * (sh * W))[:, None]
    cols = (np.arange(Wo, dtype=np.int32) * sw)[None, :]
    np.add(k, rows + cols, out=arg)


def max_pool_backward(dout, arg, dx):
    """dx (zero on entry) += dout scattered to the argmax positions; overlapping
    windows add up."""
    N, C, H, W = dx.shape
    HW = H * W
    planes = np.arange(N * C, dtype=np.int64).reshape(N, C, 1, 1) * HW
    flat = (arg + planes).ravel()
    # bincount sums duplicates (overlapping windows) in float64, then one cast back
    summed = np.bincount(flat, weights=dout.ravel(), minlength=N * C * HW)
    dx += summed.reshape(dx.shape).astype(dx.dtype, copy=False)


def max_pool2_backward(dout, arg, dx):
    """dx (any contents on entry) of a 2x2, stride-2 max pool."""
    dx[...] = 0
    max_pool_backward(dout, arg, dx)


def avg_pool_forward(x, out, ph, pw, sh, sw):
    Ho, Wo = out.shape[2:]
    acc = np.zeros(out.shape, dtype=np.float64)
    for a in range(ph):
        for b in range(pw):
            acc += _pool_view(x, a, b, sh, sw, Ho, Wo)
    np.multiply(acc, 1.0 / (ph * pw), out=out, casting="same_kind")


def avg_pool_backward(dout, dx, ph, pw, sh, sw):
    Ho, Wo = dout.shape[2:]
    g = dout * (1.0 / (ph * pw))
    for a in range(ph):
        for b in range(pw):
            _pool_view(dx, a, b, sh, sw, Ho, Wo)[...] += g


# ----------------------------------------------------------------------------- batch norm, ReLU
# x, out, dout, dx: (N, C, P); per-channel statistics float64 (as in csrc/norm.pxi).


def bn_stats(x, mean, var):
    s = x[:1, :, :1].astype(np.float64)  # each channel's first element: the shift
    d = x - s
    s1 = d.sum(axis=(0, 2), dtype=np.float64) / (x.shape[0] * x.shape[2])
    s2 = np.einsum("ncp,ncp->c", d, d, dtype=np.float64) / (x.shape[0] * x.shape[2])
    mean[:] = s.reshape(-1) + s1
    var[:] = np.maximum(s2 - s1 * s1, 0.0)


def bn_apply(x, out, m, scale, shift, relu):
    np.subtract(x, m[:, None], out=out)
    out *= scale[:, None]
    out += shift[:, None]
    if relu:
        np.maximum(out, 0, out=out)


def _masked(dout, y, relu):
    return np.where(y > 0, dout, 0).astype(dout.dtype, copy=False) if relu else dout


def bn_backward_sums(dout, x, y, mean, sums, relu):
    g = _masked(dout, y, relu)
    sums[0] = g.sum(axis=(0, 2), dtype=np.float64)
    sums[1] = np.einsum("ncp,ncp->c", g, x - mean[:, None].astype(x.dtype), dtype=np.float64)


def bn_backward_dx(dout, x, y, dx, m, a, b, k, relu):
    g = _masked(dout, y, relu)
    t = x - m[:, None]
    t *= b[:, None]
    t += k[:, None]
    np.multiply(g, a[:, None], out=dx)
    dx += t


def relu_forward(x, out):
    np.maximum(x, 0, out=out)


def relu_backward(dout, y, dx):
    dx[...] = np.where(y > 0, dout, 0)


def gelu_forward(x, out, tanh_form):
    from .. import layers as L  # the reference's float64 formulas

    out[...] = L.gelu_forward(x, "tanh" if tanh_form else "none")[0]


def gelu_backward(dout, x, dx, tanh_form):
    from .. import layers as L

    cache = L.Cache((x, "tanh" if tanh_form else "none"), "gelu_forward")
    dx[...] = L.gelu_backward(dout, cache)
