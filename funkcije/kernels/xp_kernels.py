"""The fast layers written against the Array API standard: one code path for NumPy,
CuPy (GPU) and any other conforming array library.

`funkcije.fast_layers` hands its validated arguments here when the arrays are not
NumPy arrays (CuPy's, or array-api-strict's in the tests), and for NumPy arrays when
`use_implementation("namespace")` forces it (how CI checks this code on the CPU against
the reference, on the same grids as the compiled kernels). Only standard calls are used
(`xp.matmul`, `xp.sum(dtype=)`, `xp.where`, slicing with steps, `permute_dims`), so
array-api-strict, which rejects anything else, proves the code portable; on CuPy the
GEMMs are cuBLAS's and each loop below is over kernel or window positions (a handful of
whole-batch array operations), never over images.

Layouts. A convolution's columns are (G, K, nb * P): groups, K = Cg * HH * WW rows in
the order of w.reshape(F, K), and nb * P columns (images of the chunk times output
positions), so the forward is one batched matmul (G, Fg, K) @ (G, K, nb * P), dw the
product with the columns transposed and dx the filters' transpose times dout, scattered
back by one strided slice-add per kernel position (`ConvSteps`: the steps around the
GEMMs, which `cuda_kernels` replaces with one kernel each). The batch is processed in chunks
whose columns stay under the engine's workspace bound (`runtime.get_workspace_limit`).

Batch-norm statistics accumulate in float64, as the compiled kernels do; the max-pool
argmax positions are flat plane positions h * W + w (int32), the compiled kernels' own
format, so a cache made by either path is read correctly by the other.
"""
from __future__ import annotations

from .. import backend
from . import runtime as R


def _xp(*arrays):
    return backend.array_api(*arrays)


def _dtype_size(xp, dtype) -> int:
    return xp.finfo(dtype).bits // 8


def _zero(xp, dtype):
    return xp.zeros((), dtype=dtype)


def _padded(xp, x, ph, pw):
    """x (..., H, W) with ph zero rows and pw zero columns on each side."""
    if not (ph or pw):
        return x
    H, W = x.shape[-2:]
    out = xp.zeros(x.shape[:-2] + (H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    out[..., ph:ph + H, pw:pw + W] = x
    return out


def _taps(HH, WW, g):
    """(kh, kw, rows, cols) of each kernel position: the slices of the padded input
    that position reads for every output."""
    (sh, sw), (dh, dw), Ho, Wo = g.stride, g.dilation, g.out_h, g.out_w
    for kh in range(HH):
        for kw in range(WW):
            h0, w0 = kh * dh, kw * dw
            yield slice(h0, h0 + sh * (Ho - 1) + 1, sh), slice(w0, w0 + sw * (Wo - 1) + 1, sw)


def _chunks(N, per_sample_bytes):
    nb = max(1, min(N, R.get_workspace_limit() // max(1, per_sample_bytes)))
    return [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)]


class ConvSteps:
    """The memory-bound steps around a convolution's GEMMs, in standard calls: building
    the columns, laying the product out as (N, F, H', W') with the bias added, and
    scattering the columns' gradients back onto the image. `cuda_kernels` replaces them
    with one CUDA kernel each; the chunking and the GEMMs stay here, shared."""

    @staticmethod
    def columns(xp, x, G, HH, WW, g):
        """x (nb, C, H, W) -> columns (G, K, nb * P)."""
        nb, C, H, W = x.shape
        Cg = C // G
        xg = xp.permute_dims(xp.reshape(x, (nb, G, Cg, H, W)), (1, 2, 0, 3, 4))  # (G, Cg, nb, H, W)
        xg = _padded(xp, xg, *g.pad)
        taps = xp.stack([xg[..., hs, ws] for hs, ws in _taps(HH, WW, g)], axis=2)  # (G, Cg, T, nb, Ho, Wo)
        return xp.reshape(taps, (G, Cg * HH * WW, nb * g.out_h * g.out_w))

    @staticmethod
    def outputs(xp, res, b, out, n0, n1):
        """out[n0:n1] = res (G, Fg, nb * P) as (nb, F, H', W'), plus b (F,); nb = n1 - n0."""
        nb, F = n1 - n0, out.shape[1]
        res = xp.permute_dims(xp.reshape(res, (F, nb, out.shape[2] * out.shape[3])), (1, 0, 2))
        out[n0:n1, ...] = xp.reshape(res, (nb, F) + out.shape[2:]) + xp.reshape(b, (1, F, 1, 1))

    @staticmethod
    def image_grads(xp, dcols, dx, n0, n1, G, HH, WW, g):
        """dx[n0:n1] = the gradient of the images under the columns' gradient dcols
        (G, K, nb * P): each kernel position's slice added back (overlaps add up)."""
        C, H, W = dx.shape[1:]
        nb = n1 - n0
        ph, pw = g.pad
        dcols = xp.reshape(dcols, (G, C // G, HH * WW, nb, g.out_h, g.out_w))
        dxp = xp.zeros((G, C // G, nb, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
        for t, (hs, ws) in enumerate(_taps(HH, WW, g)):
            dxp[..., hs, ws] += dcols[:, :, t, ...]
        dxc = xp.permute_dims(dxp[..., ph:ph + H, pw:pw + W], (2, 0, 1, 3, 4))
        dx[n0:n1, ...] = xp.reshape(dxc, (nb, C, H, W))


def _dout_matrix(xp, dout, G):
    """dout (nb, F, Ho, Wo) -> (G, Fg, nb * P)."""
    nb, F, Ho, Wo = dout.shape
    d = xp.permute_dims(xp.reshape(dout, (nb, G, F // G, Ho * Wo)), (1, 2, 0, 3))
    return xp.reshape(d, (G, F // G, nb * Ho * Wo))


def conv_forward(x, w, b, g, steps=ConvSteps):
    """out (N, F, H', W') of x (N, C, H, W), w (F, C // groups, HH, WW), b (F,), geometry g."""
    xp = _xp(x, w, b)
    N = x.shape[0]
    F, Cg, HH, WW = w.shape
    G, P = g.groups, g.out_h * g.out_w
    K = Cg * HH * WW
    wm = xp.reshape(w, (G, F // G, K))
    out = xp.empty((N, F, g.out_h, g.out_w), dtype=x.dtype)
    for n0, n1 in _chunks(N, _dtype_size(xp, x.dtype) * P * (G * K + F)):
        steps.outputs(xp, xp.matmul(wm, steps.columns(xp, x[n0:n1, ...], G, HH, WW, g)), b, out, n0, n1)
    return out


def conv_backward(x, w, dout, g, need_dx=True, steps=ConvSteps):
    """(dx (N, C, H, W) or None, dw (F, C // groups, HH, WW), db (F,))."""
    xp = _xp(x, w, dout)
    N = x.shape[0]
    F, Cg, HH, WW = w.shape
    G, P = g.groups, g.out_h * g.out_w
    K, Fg = Cg * HH * WW, F // G
    wm = xp.reshape(w, (G, Fg, K))
    dw = xp.zeros((G, Fg, K), dtype=x.dtype)
    dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
    for n0, n1 in _chunks(N, _dtype_size(xp, x.dtype) * P * (2 * G * K + F)):
        dmat = _dout_matrix(xp, dout[n0:n1, ...], G)
        dw = dw + xp.matmul(dmat, xp.matrix_transpose(steps.columns(xp, x[n0:n1, ...], G, HH, WW, g)))
        if need_dx:
            steps.image_grads(xp, xp.matmul(xp.matrix_transpose(wm), dmat), dx, n0, n1, G, HH, WW, g)
    db = xp.sum(dout, axis=(0, 2, 3))
    return dx, xp.reshape(dw, w.shape), db


def affine_forward(x2, w, b):
    """out (N, M) = x2 (N, D) @ w (D, M) + b (M,)."""
    return _xp(x2, w, b).matmul(x2, w) + b


def affine_backward(x2, w, dout):
    """(dx (N, D), dw (D, M), db (M,)) of `affine_forward`."""
    xp = _xp(x2, w, dout)
    return (xp.matmul(dout, xp.matrix_transpose(w)), xp.matmul(xp.matrix_transpose(x2), dout),
            xp.sum(dout, axis=0))


# ----------------------------------------------------------------------------- pooling


def _window(x, a, b, g):
    (sh, sw), Ho, Wo = g.stride, g.out_h, g.out_w
    return x[..., a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw]


def _window_origins(xp, W, g):
    """(H', W') int32: the flat plane position h * W + w of each window's first element."""
    sh, sw = g.stride
    return (xp.reshape(xp.arange(g.out_h, dtype=xp.int32) * (sh * W), (-1, 1))
            + xp.reshape(xp.arange(g.out_w, dtype=xp.int32) * sw, (1, -1)))


def max_pool_forward(x, g):
    """(out (N, C, H', W'), arg): window maxima (the first on ties; NaN wins, as in
    the reference) and their flat plane positions h * W + w, int32."""
    xp = _xp(x)
    W = x.shape[3]
    best = _window(x, 0, 0, g)
    pos = xp.zeros(best.shape, dtype=xp.int32)  # window-relative a * W + b
    seen_nan = xp.isnan(best)
    for a in range(g.pool_height):
        for b in range(g.pool_width):
            if a == 0 and b == 0:
                continue
            v = _window(x, a, b, g)
            v_nan = xp.isnan(v)
            take = ((v > best) | v_nan) & ~seen_nan
            seen_nan = seen_nan | v_nan
            best = xp.where(take, v, best)
            pos = xp.where(take, xp.asarray(a * W + b, dtype=xp.int32), pos)
    return best, pos + _window_origins(xp, W, g)


def max_pool_backward(dout, arg, x_shape, g):
    """dx (x_shape): each window's gradient at its argmax; overlapping windows add up."""
    xp = _xp(dout, arg)
    W = x_shape[3]
    rel = arg - _window_origins(xp, W, g)  # a * W + b within each window
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    zero = _zero(xp, dout.dtype)
    # window positions in reverse: an element shared by overlapping windows then gets
    # their gradients in the windows' raster order, the reference's summation order
    for a in reversed(range(g.pool_height)):
        for b in reversed(range(g.pool_width)):
            _window(dx, a, b, g)[...] += xp.where(rel == a * W + b, dout, zero)
    return dx


def avg_pool_forward(x, g):
    xp = _xp(x)
    acc = xp.zeros(x.shape[:2] + (g.out_h, g.out_w), dtype=xp.float64)
    for a in range(g.pool_height):
        for b in range(g.pool_width):
            acc = acc + xp.astype(_window(x, a, b, g), xp.float64)
    return xp.astype(acc / (g.pool_height * g.pool_width), x.dtype)


def avg_pool_backward(dout, x_shape, g):
    xp = _xp(dout)
    share = dout / (g.pool_height * g.pool_width)
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    for a in reversed(range(g.pool_height)):  # the reference's summation order (max_pool_backward)
        for b in reversed(range(g.pool_width)):
            _window(dx, a, b, g)[...] += share
    return dx


# ----------------------------------------------------------------------------- batch norm, ReLU


def _per_channel(xp, v):
    return xp.reshape(v, (1, -1, 1, 1))


def bn_forward(x, gamma, beta, eps, relu, mean=None, var=None):
    """out (N, C, H, W) = [relu](gamma (x - mean) / sqrt(var + eps) + beta) and the
    float64 (C,) mean, var and inv_std: batch statistics when mean is None (train,
    float64 sums), else the given ones (test)."""
    xp = _xp(x, gamma, beta)
    dt = x.dtype
    if mean is None:
        # sums accumulated in float64 without a float64 copy of x; the deviations from
        # the mean (rounded to x's dtype) are small numbers, so their squares keep the
        # precision that a one-pass E[x^2] - E[x]^2 would lose for large means
        N, C, H, W = x.shape
        M = N * H * W
        mean = xp.sum(x, axis=(0, 2, 3), dtype=xp.float64) / M
        d = x - _per_channel(xp, xp.astype(mean, dt))
        shift = xp.sum(d, axis=(0, 2, 3), dtype=xp.float64) / M  # mean - its rounding
        var = xp.sum(d * d, axis=(0, 2, 3), dtype=xp.float64) / M - shift * shift
    else:
        mean, var = xp.astype(mean, xp.float64), xp.astype(var, xp.float64)
    inv_std = 1.0 / xp.sqrt(var + eps)
    scale = xp.astype(xp.astype(gamma, xp.float64) * inv_std, dt)
    out = (x - _per_channel(xp, xp.astype(mean, dt))) * _per_channel(xp, scale) + _per_channel(xp, beta)
    if relu:
        out = xp.maximum(out, _zero(xp, dt))
    return out, mean, var, inv_std


def bn_backward(dout, x, y, mean, inv_std, gamma, train, relu):
    """(dx, dgamma, dbeta) of `bn_forward` (y its output when relu: ReLU's mask):
    dx = gamma inv_std (g - mean(g) - xhat mean(g xhat)) in train mode, g = dout
    (masked by y > 0); sums in float64."""
    xp = _xp(dout, x, gamma)
    dt = x.dtype
    N, C, H, W = x.shape
    M = N * H * W
    g = xp.where(y > 0, dout, _zero(xp, dt)) if relu else dout
    centred = x - _per_channel(xp, xp.astype(mean, dt))
    dbeta = xp.sum(g, axis=(0, 2, 3), dtype=xp.float64)
    dgamma = xp.sum(g * centred, axis=(0, 2, 3), dtype=xp.float64) * inv_std
    k = xp.astype(gamma, xp.float64) * inv_std
    dx = g * _per_channel(xp, xp.astype(k, dt))
    if train:
        b = -k * inv_std * dgamma / M
        c = -k * dbeta / M
        dx = dx + centred * _per_channel(xp, xp.astype(b, dt)) + _per_channel(xp, xp.astype(c, dt))
    return dx, xp.astype(dgamma, dt), xp.astype(dbeta, dt)


def bn_running(running, batch, momentum, dtype):
    """momentum * running + (1 - momentum) * batch, in `dtype` (batch float64)."""
    xp = _xp(running, batch)
    return xp.astype(momentum * xp.astype(running, xp.float64) + (1 - momentum) * batch, dtype)


def relu_forward(x):
    xp = _xp(x)
    return xp.maximum(x, _zero(xp, x.dtype))


def relu_backward(dout, x):
    xp = _xp(dout, x)
    return xp.where(x > 0, dout, _zero(xp, dout.dtype))


def gelu_forward(x, tanh_form):
    """x Phi(x): the reference layer, whose tanh form is written in standard calls (the
    exact form needs erf, which the Array API lacks: NumPy arrays only; it says so)."""
    from .. import layers

    return layers.gelu_forward(x, "tanh" if tanh_form else "none")[0]


def gelu_backward(dout, x, tanh_form):
    """dout times the slope of `gelu_forward` (the reference layer's backward)."""
    from .. import layers

    return layers.gelu_backward(dout, layers.Cache((x, "tanh" if tanh_form else "none"), "gelu_forward"))


# ----------------------------------------------------------------------------- losses


def _one_hot(xp, y, C, dtype):
    return xp.astype(xp.reshape(y, (-1, 1)) == xp.reshape(xp.arange(C, dtype=y.dtype), (1, -1)), dtype)


def softmax_loss(x, y, label_smoothing=0.0):
    """(loss, dx) of `layers.softmax_loss` for scores x (N, C) and labels y (N,) of
    one namespace; loss a Python float. Labels are checked by the caller."""
    xp = _xp(x, y)
    N, C = x.shape
    shifted = x - xp.max(x, axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    target = _one_hot(xp, y, C, x.dtype)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / C
    loss = -float(xp.sum(xp.astype(target * log_probs, xp.float64))) / N
    return loss, (xp.exp(log_probs) - target) / N


def svm_loss(x, y):
    """(loss, dx) of `layers.svm_loss` (multiclass hinge, margin 1) in the namespace of x."""
    xp = _xp(x, y)
    N, C = x.shape
    onehot = _one_hot(xp, y, C, x.dtype)
    correct = xp.sum(x * onehot, axis=1, keepdims=True)
    margins = xp.maximum(x - correct + 1, _zero(xp, x.dtype)) * (1 - onehot)
    positive = xp.astype(margins > 0, x.dtype)
    dx = (positive - onehot * xp.sum(positive, axis=1, keepdims=True)) / N
    return float(xp.sum(xp.astype(margins, xp.float64))) / N, dx

