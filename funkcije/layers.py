"""Reference layers: the readable specification of every funkcije layer.

Each layer is a pair of pure functions. `*_forward(x, ...)` returns `(out, cache)`;
`*_backward(dout, cache)` returns the gradient(s) with respect to the forward
inputs, in forward-argument order. Shapes use N (batch), C (channels), H, W
(height, width), F (filters), HH, WW (kernel height, width), D (features),
M (outputs).

dtype is preserved: float32 in gives float32 out and float32 gradients. The
convolution and pooling references loop over output positions (clear rather than
fast); `funkcije.fast_layers` has the same signatures and is what models use.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import AnyArray, array_api
from .checks import (
    affine_shapes,
    check_array,
    check_choice,
    check_labels,
    check_dout,
    as_dout,
    as_generator,
    as_params,
    check_param_keys,
    check_real_in,
    check_mode,
    check_same_dtype,
    conv_geometry,
    pool_geometry,
    Cache,
    cache_array,
    describe,
    unpack_cache,
)

_A = np.ndarray

# ----------------------------------------------------------------------------- affine / relu


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,).
    Returns out (N, M) and cache (x, w, b).
    """
    check_array("affine_forward", "x", x)
    w, b = as_params("affine_forward", x, w=w, b=b)
    N, D, _ = affine_shapes("affine_forward", x, w, b)
    out = x.reshape(N, D) @ w + b
    return out, Cache((x, w, b), "affine_forward")


# the fast forward's cache is the same (x, w, b): either backward takes either cache
AFFINE_FORWARDS = ("affine_forward", "affine_forward_fast")


def affine_backward(dout, cache):
    """dout: (N, M). Returns dx (N, d1, ..., dk), dw (D, M), db (M,)."""
    x, w, b = unpack_cache("affine_backward", cache, AFFINE_FORWARDS, (_A, _A, _A))
    N = x.shape[0]
    dout = as_dout("affine_backward", dout, (N, w.shape[1]), x.dtype)
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(N, w.shape[0]).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0), elementwise; any shape. cache is x."""
    check_array("relu_forward", "x", x)
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at 0 is taken as 0; an inf or NaN
    dout where x <= 0 gives 0 too, as the fast path and PyTorch)."""
    x = cache_array("relu_backward", cache, "relu_forward")
    dout = as_dout("relu_backward", dout, x.shape, x.dtype)
    return np.where(x > 0, dout, dout.dtype.type(0))


def leaky_relu_forward(x, negative_slope=0.01):
    """out = x where x > 0, negative_slope * x elsewhere; any shape. cache is (x, slope)."""
    check_array("leaky_relu_forward", "x", x)
    a = check_real_in("leaky_relu_forward", "negative_slope", negative_slope, -np.inf, np.inf, True, True)
    out = np.where(x > 0, x, x * x.dtype.type(a))
    return out, Cache((x, a), "leaky_relu_forward")


def leaky_relu_backward(dout, cache):
    """dx = dout where x > 0, negative_slope * dout elsewhere."""
    x, a = unpack_cache("leaky_relu_backward", cache, "leaky_relu_forward", (_A, float))
    dout = as_dout("leaky_relu_backward", dout, x.shape, x.dtype)
    return np.where(x > 0, dout, dout * x.dtype.type(a))


def sigmoid_forward(x):
    """out = 1 / (1 + exp(-x)), elementwise, computed without overflow for large |x|.
    cache is out."""
    check_array("sigmoid_forward", "x", x)
    # exp of a non-positive number only: exp(-|x|) never overflows
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return out, out


def sigmoid_backward(dout, cache):
    """dx = dout * s * (1 - s) with s the forward output."""
    s = cache_array("sigmoid_backward", cache, "sigmoid_forward")
    dout = as_dout("sigmoid_backward", dout, s.shape, s.dtype)
    return dout * s * (1 - s)


def tanh_forward(x):
    """out = tanh(x), elementwise. cache is out."""
    check_array("tanh_forward", "x", x)
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """dx = dout * (1 - tanh(x)^2)."""
    t = cache_array("tanh_backward", cache, "tanh_forward")
    dout = as_dout("tanh_backward", dout, t.shape, t.dtype)
    return dout * (1 - t * t)


# Python floats, not NumPy scalars: a NumPy scalar times another library's array (the
# tanh form runs on any Array API array) would hand the product to NumPy
_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_series(t):
    """erf(t) by its Maclaurin series, for 0 <= t < 2 (60 terms: below 1e-16 there)."""
    t2 = t * t
    term = t.copy()
    total = t.copy()
    for n in range(1, 60):
        term = term * (-t2) / n
        total += term / (2 * n + 1)
    return total * (2 / np.sqrt(np.pi))


def _erfc_fraction(t):
    """erfc(t) for t >= 2 by its continued fraction (modified Lentz), to a relative 1e-15:
    erfc(t) = exp(-t^2) / sqrt(pi) / (t + (1/2) / (t + 1 / (t + (3/2) / (t + 2 / (t + ...)))))."""
    f = t.copy()
    C, D = t.copy(), np.zeros_like(t)
    for k in range(1, 200):
        coef = k / 2.0
        D = 1 / (t + coef * D)
        C = t + coef / C
        f = f * C * D
    return np.exp(-t * t) / np.sqrt(np.pi) / f


def _erfc(z):
    """erfc for float64 arrays, to about 1e-14 relative also where erfc is tiny (NumPy
    has neither erf nor erfc): the series below 2, the continued fraction above."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    out = np.zeros_like(a)
    small = a < 2
    out[small] = 1 - _erf_series(a[small])
    big = ~small & (a < 27)  # erfc(27) is below the smallest float64
    out[big] = _erfc_fraction(a[big])
    return np.where(z < 0, 2 - out, out)


def _erf(z):
    """erf for float64 arrays, to about 1e-14."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    out = np.empty_like(a)
    small = a < 2
    out[small] = _erf_series(a[small])
    out[~small] = 1 - _erfc(a[~small])
    return np.copysign(out, z)


def _normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt(2)) / 2, accurate in relative terms in the lower tail too."""
    return 0.5 * _erfc(-x / _SQRT_2)


GELU_FORWARDS = ("gelu_forward", "gelu_forward_fast")


def _check_gelu_form(layer, x, approximate):
    """The exact form needs erf (here in NumPy); off NumPy only the tanh form runs."""
    if approximate == "none" and not isinstance(x, np.ndarray):
        raise TypeError(
            f"{layer}: GELU's exact form needs erf, which the Array API standard lacks: on a GPU it runs in "
            f"funkcije's CUDA kernels (CuPy with config cuda_kernels on); approximate='tanh' runs on any "
            f"array library; got a {type(x).__module__}.{type(x).__name__}")


def gelu_forward(x, approximate="none"):
    """GELU: out = x * Phi(x), Phi the standard normal CDF (approximate="none", as
    PyTorch's default), or x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with
    approximate="tanh". Any shape; dtype kept (Phi is evaluated in float64). The tanh
    form is written in Array API calls, so it also runs on CuPy or array-api-strict
    arrays; the exact form needs erf (NumPy arrays). cache is (x, approximate)."""
    layer = "gelu_forward"
    check_array(layer, "x", x)
    check_choice(layer, "approximate", approximate, ("none", "tanh"))
    _check_gelu_form(layer, x, approximate)
    xp = array_api(x)
    x64 = xp.astype(x, xp.float64, copy=False)
    if approximate == "none":
        phi = _normal_cdf(x64)
    else:
        phi = 0.5 * (1 + xp.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64**3)))
    return xp.astype(x64 * phi, x.dtype, copy=False), Cache((x, approximate), "gelu_forward")


def gelu_backward(dout, cache):
    """dx = dout * d/dx [x Phi(x)] = dout * (Phi(x) + x phi(x)) (or the tanh form's derivative)."""
    x, approximate = unpack_cache("gelu_backward", cache, GELU_FORWARDS, (AnyArray, str))  # tanh form: any library
    _check_gelu_form("gelu_backward", x, approximate)
    dout = as_dout("gelu_backward", dout, x.shape, x.dtype)
    xp = array_api(x)
    x64 = xp.astype(x, xp.float64, copy=False)
    if approximate == "none":
        grad = _normal_cdf(x64) + x64 * _INV_SQRT_2PI * np.exp(-0.5 * x64 * x64)
    else:
        u = _SQRT_2_OVER_PI * (x64 + 0.044715 * x64**3)
        th = xp.tanh(u)
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x64 * x64)
        grad = 0.5 * (1 + th) + 0.5 * x64 * (1 - th * th) * du
    return xp.astype(dout * grad, x.dtype, copy=False)


def scale_forward(x, c):
    """out = c * x for a constant c (a Python or NumPy real number); dtype kept. cache is (shape, dtype, c)."""
    check_array("scale_forward", "x", x)
    c = check_real_in("scale_forward", "c", c, -np.inf, np.inf, True, True)
    if not isinstance(x, np.ndarray):  # CuPy / Array API: a Python scalar keeps x's dtype
        return x * c, Cache((tuple(x.shape), x.dtype, c), "scale_forward")
    return x * x.dtype.type(c), Cache((x.shape, x.dtype, c), "scale_forward")


def scale_backward(dout, cache):
    """dx = c * dout."""
    shape, dtype, c = unpack_cache("scale_backward", cache, "scale_forward", (tuple, None, float))
    dout = as_dout("scale_backward", dout, shape, dtype)
    return dout * dtype.type(c) if isinstance(dout, np.ndarray) else dout * c


def flatten_forward(x):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk), a view when x is contiguous. cache is x's shape and dtype."""
    check_array("flatten_forward", "x", x)
    if x.ndim < 1:
        raise ValueError(f"flatten_forward: x must have a batch dimension, got shape {x.shape}")
    if not isinstance(x, np.ndarray):
        return array_api(x).reshape(x, (x.shape[0], -1)), Cache((tuple(x.shape), x.dtype), "flatten_forward")
    return x.reshape(x.shape[0], -1), Cache((x.shape, x.dtype), "flatten_forward")


def flatten_backward(dout, cache):
    """dout (N, D) -> dx of the forward input's shape."""
    shape, dtype = unpack_cache("flatten_backward", cache, "flatten_forward", (tuple, None))
    N = shape[0]
    dout = as_dout("flatten_backward", dout, (N, int(np.prod(shape[1:], dtype=np.int64))), dtype)
    return dout.reshape(shape) if isinstance(dout, np.ndarray) else array_api(dout).reshape(dout, shape)


def global_avg_pool_forward(x):
    """Mean over each channel's H x W map. x: (N, C, H, W) -> out (N, C). cache is x's shape and dtype."""
    check_array("global_avg_pool_forward", "x", x, 4)
    return x.mean(axis=(2, 3)), Cache((x.shape, x.dtype), "global_avg_pool_forward")


def global_avg_pool_backward(dout, cache):
    """dout (N, C) -> dx (N, C, H, W), each position getting dout / (H W)."""
    shape, dtype = unpack_cache("global_avg_pool_backward", cache, "global_avg_pool_forward", (tuple, np.dtype))
    N, C, H, W = shape
    dout = as_dout("global_avg_pool_backward", dout, (N, C), dtype)
    dx = np.empty(shape, dtype=dtype)
    dx[...] = (dout * dtype.type(1.0 / (H * W)))[:, :, None, None]
    return dx


# ----------------------------------------------------------------------------- losses


def softmax_loss(x, y, label_smoothing=0.0):
    """Cross-entropy of softmax(x) against labels.

    x: (N, C) scores; y: (N,) integer labels in [0, C). Returns (loss, dx), loss a
    scalar of x's dtype averaged over the batch. Logits are shifted by their row
    maximum and the log-sum-exp is taken in log space, so scores of magnitude 1e4
    and beyond neither overflow nor produce NaN.

    label_smoothing e in [0, 1): the target is (1 - e) one_hot(y) + e / C, as in
    PyTorch's `cross_entropy(..., label_smoothing=e)`; dx = (softmax(x) - target) / N.
    """
    layer = "softmax_loss"
    check_array(layer, "x", x, 2)
    N, C = x.shape
    if N == 0:
        raise ValueError(f"{layer}: x must hold at least one sample (the loss is a batch mean), got shape {x.shape}")
    y = check_labels(layer, y, N, C)
    eps = check_real_in(layer, "label_smoothing", label_smoothing, 0, 1, high_open=True)
    shifted = x - x.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    rows = np.arange(N)
    loss = -log_probs[rows, y].sum() / N
    dx = np.exp(log_probs)
    if eps:
        loss = (1 - eps) * loss - eps / C * log_probs.sum() / N
        dx -= x.dtype.type(eps / C)
        dx[rows, y] -= x.dtype.type(1 - eps)
    else:
        dx[rows, y] -= 1
    dx /= N
    return x.dtype.type(loss), dx


def svm_loss(x, y):
    """Multiclass hinge loss with margin 1, averaged over the batch.

    x: (N, C) scores; y: (N,) integer labels. Returns (loss, dx).
    """
    layer = "svm_loss"
    check_array(layer, "x", x, 2)
    N, C = x.shape
    if N == 0:
        raise ValueError(f"{layer}: x must hold at least one sample (the loss is a batch mean), got shape {x.shape}")
    y = check_labels(layer, y, N, C)
    rows = np.arange(N)
    correct = x[rows, y][:, None]
    margins = np.maximum(0, x - correct + 1)
    margins[rows, y] = 0
    loss = margins.sum() / N
    positive = (margins > 0).astype(x.dtype)
    dx = positive
    dx[rows, y] -= positive.sum(axis=1)
    dx /= N
    return x.dtype.type(loss), dx


# ----------------------------------------------------------------------------- normalisation


def _bn_state(layer, bn_param, D, x):
    dtype = x.dtype
    rm = bn_param.get("running_mean")
    rv = bn_param.get("running_var")
    xp = np if isinstance(x, np.ndarray) else array_api(x)  # the state lives where x does
    if rm is None:
        rm = xp.zeros(D, dtype=dtype)
    if rv is None:
        rv = xp.ones(D, dtype=dtype)
    rm, rv = xp.asarray(rm, dtype=dtype), xp.asarray(rv, dtype=dtype)
    # a (1,) or () state would silently broadcast into the (D,) update
    if rm.shape != (D,) or rv.shape != (D,):
        raise ValueError(
            f"{layer}: bn_param['running_mean'] and ['running_var'] must have shape ({D},) "
            f"for {D} features, got {rm.shape} and {rv.shape}"
        )
    return rm, rv


def bn_setup(layer, x, gamma, beta, bn_param, ndim):
    """The checks and settings every batch norm shares (this one and the fast spatial one):
    x of `ndim` dimensions with its features / channels on axis 1, gamma and beta of that
    length (integer arrays cast to x's dtype), bn_param's mode, eps, momentum, unbiased and
    running statistics. Returns (mode, gamma, beta, eps, momentum, unbiased, running_mean,
    running_var); eps and momentum are Python floats, so that a NumPy float64 scalar in
    bn_param cannot upcast float32 data."""
    mode = check_mode(layer, bn_param, "bn_param")
    # a misspelt key ('epsilon', 'momentun') would silently leave the default in force
    check_param_keys(layer, "bn_param", bn_param, _BN_KEYS)
    check_array(layer, "x", x, ndim)
    gamma, beta = as_params(layer, x, gamma=gamma, beta=beta)
    check_array(layer, "gamma", gamma, 1)
    check_array(layer, "beta", beta, 1)
    check_same_dtype(layer, x=x, gamma=gamma, beta=beta)
    D = x.shape[1]
    if gamma.shape != (D,) or beta.shape != (D,):
        raise ValueError(
            f"{layer}: gamma and beta must have shape ({D},) for x of shape {x.shape}, "
            f"got {gamma.shape} and {beta.shape}"
        )
    eps = check_real_in(layer, "bn_param['eps']", bn_param.get("eps", 1e-5), 0, np.inf, high_open=True)
    momentum = check_real_in(layer, "bn_param['momentum']", bn_param.get("momentum", 0.9), 0, 1)
    unbiased = bn_param.get("unbiased", False)
    if not isinstance(unbiased, (bool, np.bool_)):
        raise TypeError(f"{layer}: bn_param['unbiased'] must be a bool, got {unbiased!r}")
    running_mean, running_var = _bn_state(layer, bn_param, D, x)
    return mode, gamma, beta, eps, momentum, bool(unbiased), running_mean, running_var


_BN_KEYS = ("mode", "eps", "momentum", "running_mean", "running_var", "unbiased")
# cs231n's notebooks pass {'mode': 'train'} to spatial_groupnorm_forward and models pass
# their bn_params to layer norm: 'mode' is accepted there and ignored
_NORM_KEYS = ("eps", "mode")


def _norm_eps(layer, pname, param):
    param = check_param_keys(layer, pname, param, _NORM_KEYS)
    return check_real_in(layer, f"{pname}['eps']", param.get("eps", 1e-5), 0, np.inf, high_open=True)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation over the batch axis.

    x: (N, D); gamma, beta: (D,). bn_param: `mode` 'train'|'test' (required), `eps`
    (1e-5), `momentum` (0.9), `running_mean`, `running_var` (D,) — created if absent
    and written back in train mode as momentum * old + (1 - momentum) * batch value
    (the batch variance is the biased one, as in cs231n; `unbiased=True` tracks
    N / (N - 1) times it, as PyTorch does, whose momentum is 1 - this one).
    """
    layer = "batchnorm_forward"
    return _batchnorm_rows(layer, x, bn_param, *bn_setup(layer, x, gamma, beta, bn_param, 2))


def _batchnorm_rows(layer, x, bn_param, mode, gamma, beta, eps, momentum, unbiased, running_mean, running_var):
    """Batch norm of x (N, D) with bn_setup's checked settings."""
    N, D = x.shape
    if mode == "train":
        if N < 1:
            raise ValueError(f"{layer}: train mode needs a non-empty batch, got x shape {x.shape}")
        mu = x.mean(axis=0)
        xc = x - mu
        var = (xc * xc).mean(axis=0)
        inv_std = 1.0 / np.sqrt(var + eps)
        xhat = xc * inv_std
        running_mean = momentum * running_mean + (1 - momentum) * mu
        # PyTorch tracks the unbiased variance N / (N - 1) var; the normalisation uses the biased one
        tracked = var * (N / (N - 1)) if unbiased and N > 1 else var
        running_var = momentum * running_var + (1 - momentum) * tracked
    else:
        inv_std = 1.0 / np.sqrt(running_var + eps)
        xc = x - running_mean
        xhat = xc * inv_std
    out = gamma * xhat + beta
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    cache = {"mode": mode, "xhat": xhat, "xc": xc, "inv_std": inv_std, "gamma": gamma}
    return out, cache


_BN_CACHE_KEYS = ("mode", "xhat", "xc", "inv_std", "gamma")


def _bn_cache(layer, cache, forward="batchnorm_forward or spatial_batchnorm_forward"):
    """(xhat, xc, inv_std, gamma) of a reference batch norm's cache (a dict)."""
    if not isinstance(cache, dict) or any(k not in cache for k in _BN_CACHE_KEYS):
        what = f"a dict with keys {sorted(cache)}" if isinstance(cache, dict) else describe(cache)
        raise TypeError(f"{layer}: cache must be the cache that {forward} returned, got {what}")
    return cache["xhat"], cache["xc"], cache["inv_std"], cache["gamma"]


def batchnorm_backward(dout, cache):
    """Backward through the batch-norm computation graph, step by step.

    Returns dx (N, D), dgamma (D,), dbeta (D,).
    """
    xhat, xc, inv_std, gamma = _bn_cache("batchnorm_backward", cache)
    dout = as_dout("batchnorm_backward", dout, xhat.shape, xhat.dtype)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    if cache["mode"] == "test":
        return dxhat * inv_std, dgamma, dbeta
    N = dout.shape[0]
    # xhat = xc * inv_std, inv_std = (var + eps)^-1/2, var = mean(xc^2), xc = x - mean(x)
    dinv_std = (dxhat * xc).sum(axis=0)
    dvar = dinv_std * (-0.5) * inv_std**3
    dxc = dxhat * inv_std + dvar * 2.0 * xc / N
    dx = dxc - dxc.mean(axis=0)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Batch-norm backward in closed form:
    dx = inv_std / N * (N dxhat - sum(dxhat) - xhat sum(dxhat xhat)).
    Same results as `batchnorm_backward`."""
    xhat, _, inv_std, gamma = _bn_cache("batchnorm_backward_alt", cache)
    dout = as_dout("batchnorm_backward_alt", dout, xhat.shape, xhat.dtype)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    if cache["mode"] == "test":
        return dxhat * inv_std, dgamma, dbeta
    dx = inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
    return dx, dgamma, dbeta


def _normalize_rows(x, eps):
    """Normalise each row of a 2-D array; returns xhat and 1/std (one per row)."""
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    inv_std = 1.0 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + eps)
    return xc * inv_std, inv_std


def _normalize_rows_backward(dxhat, xhat, inv_std):
    """Gradient through row normalisation (the closed form used by layer and group norm)."""
    return inv_std * (
        dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True)
    )


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalisation: each sample normalised over its D features.

    x: (N, D); gamma, beta: (D,); ln_param: `eps` (1e-5). No running statistics,
    so train and test behave alike.
    """
    layer = "layernorm_forward"
    check_array(layer, "x", x, 2)
    gamma, beta = as_params(layer, x, gamma=gamma, beta=beta)
    check_array(layer, "gamma", gamma, 1)
    check_array(layer, "beta", beta, 1)
    check_same_dtype(layer, x=x, gamma=gamma, beta=beta)
    D = x.shape[1]
    if gamma.shape != (D,) or beta.shape != (D,):
        raise ValueError(
            f"{layer}: gamma and beta must have shape ({D},) for x of shape {x.shape}, "
            f"got {gamma.shape} and {beta.shape}"
        )
    xhat, inv_std = _normalize_rows(x, _norm_eps(layer, "ln_param", ln_param))
    return gamma * xhat + beta, Cache((xhat, inv_std, gamma), "layernorm_forward")


def layernorm_backward(dout, cache):
    """Returns dx (N, D), dgamma (D,), dbeta (D,)."""
    xhat, inv_std, gamma = unpack_cache("layernorm_backward", cache, "layernorm_forward", (_A, _A, _A))
    dout = as_dout("layernorm_backward", dout, xhat.shape, xhat.dtype)
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    return _normalize_rows_backward(dout * gamma, xhat, inv_std), dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch norm per channel over (N, H, W).

    x: (N, C, H, W); gamma, beta: (C,); bn_param as for `batchnorm_forward`.
    """
    layer = "spatial_batchnorm_forward"
    # checked on x itself (channels on axis 1), so errors name this function and x's shape
    setup = bn_setup(layer, x, gamma, beta, bn_param, 4)
    N, C, H, W = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    out, cache = _batchnorm_rows(layer, flat, bn_param, *setup)
    cache["shape"] = x.shape  # marks it as this forward's and keeps dout's expected shape
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout, cache):
    """Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    layer = "spatial_batchnorm_backward"
    xhat = _bn_cache(layer, cache, "spatial_batchnorm_forward")[0]
    # the cache holds xhat as (N H W, C); dout is checked against (N, C, H, W) here,
    # since the transposed (N H W, C) view alone cannot tell H from W
    shape = cache.get("shape")
    if shape is None:
        raise TypeError(f"{layer}: cache must be the cache that spatial_batchnorm_forward returned, "
                        "got the cache of batchnorm_forward")
    dout = as_dout(layer, dout, shape, xhat.dtype)
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_alt(dout.transpose(0, 2, 3, 1).reshape(N * H * W, C), cache)
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalisation: each sample's C channels split into G groups, each group
    normalised over its (C // G, H, W) values.

    x: (N, C, H, W); gamma, beta: (1, C, 1, 1); G divides C; gn_param: `eps` (1e-5).
    """
    layer = "spatial_groupnorm_forward"
    check_array(layer, "x", x, 4)
    gamma, beta = as_params(layer, x, gamma=gamma, beta=beta)
    check_array(layer, "gamma", gamma, 4)
    check_array(layer, "beta", beta, 4)
    check_same_dtype(layer, x=x, gamma=gamma, beta=beta)
    N, C, H, W = x.shape
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1 or C % G:
        raise ValueError(f"{layer}: G={G!r} must be a positive int dividing C={C} (x shape {x.shape})")
    if gamma.shape != (1, C, 1, 1) or beta.shape != (1, C, 1, 1):
        raise ValueError(
            f"{layer}: gamma and beta must have shape (1, {C}, 1, 1), got {gamma.shape} and {beta.shape}"
        )
    xhat, inv_std = _normalize_rows(x.reshape(N * G, (C // G) * H * W), _norm_eps(layer, "gn_param", gn_param))
    xhat = xhat.reshape(x.shape)
    return gamma * xhat + beta, Cache((xhat, inv_std, gamma, G), "spatial_groupnorm_forward")


def spatial_groupnorm_backward(dout, cache):
    """Returns dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)."""
    xhat, inv_std, gamma, G = unpack_cache(
        "spatial_groupnorm_backward", cache, "spatial_groupnorm_forward", (_A, _A, _A, (int, np.integer)))
    dout = as_dout("spatial_groupnorm_backward", dout, xhat.shape, xhat.dtype)
    N = dout.shape[0]
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    M = int(np.prod(xhat.shape[1:], dtype=np.int64)) // G
    dxhat = (dout * gamma).reshape(N * G, M)
    dx = _normalize_rows_backward(dxhat, xhat.reshape(N * G, M), inv_std)
    return dx.reshape(dout.shape), dgamma, dbeta


# ----------------------------------------------------------------------------- dropout


def dropout_forward(x, dropout_param):
    """Inverted dropout: in train mode each unit is kept with probability `p` and
    scaled by 1 / p, so test mode is the identity.

    dropout_param: `p` keep probability in (0, 1]; `mode` 'train'|'test';
    optional `seed` (int or numpy Generator) — the same seed gives the same mask.
    Without a seed a fresh Generator is used; NumPy's global RNG is never touched.
    """
    layer = "dropout_forward"
    check_array(layer, "x", x)
    mode = check_mode(layer, dropout_param, "dropout_param")
    check_param_keys(layer, "dropout_param", dropout_param, ("p", "mode", "seed"))
    p = dropout_param.get("p")
    # a non-number would fail the comparison with an opaque TypeError; a bool is not a probability
    is_number = isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(p, bool)
    if not is_number or not (0 < p <= 1):
        raise ValueError(f"{layer}: dropout_param['p'] is the keep probability and must lie in (0, 1], got {p!r}")
    mask = None
    if mode == "train":
        seed = dropout_param.get("seed")
        rng = np.random.default_rng() if seed is None else as_generator(layer, seed)
        mask = ((rng.random(x.shape) < p) / p).astype(x.dtype, copy=False)
        out = x * mask
    else:
        out = x.copy()
    # The cache keeps its own copy of the mode: the caller's dict may be switched
    # between forward and backward (cs231n models share one dropout_param).
    return out, Cache(({"mode": mode, "p": p, "shape": x.shape, "dtype": x.dtype}, mask), "dropout_forward")


def dropout_backward(dout, cache):
    """dx = dout * mask in train mode (the mask already holds the 1 / p scale), dout in test mode."""
    dropout_param, mask = unpack_cache("dropout_backward", cache, "dropout_forward", (dict, (_A, type(None))))
    if "mode" not in dropout_param:
        raise TypeError("dropout_backward: cache must be the cache that dropout_forward returned, "
                        f"got a dict with keys {sorted(dropout_param)}")
    if "shape" in dropout_param:
        dout = as_dout("dropout_backward", dout, dropout_param["shape"], dropout_param["dtype"])
    if dropout_param["mode"] == "train":
        return dout * mask
    return dout


# ----------------------------------------------------------------------------- convolution


def _window(a, i, j, g, kh, kw):
    """Strided view of the (HH, WW) window that produces output position (i, j).
    g is the ConvGeometry; a is (N, C, Hpadded, Wpadded)."""
    sh, sw = g.stride
    dh, dw = g.dilation
    return a[:, :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw]


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation, as in cs231n and PyTorch).

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); conv_param: `stride`,
    `pad` (int or (h, w)), optional `dilation` (int or (h, w), default 1) and `groups`
    (default 1). Output (N, F, H', W') with
    H' = 1 + (H + 2 pad_h - dilation_h (HH - 1) - 1) // stride_h, likewise W'.
    Zero padding. cache is (x, w, b, conv_param).
    """
    layer = "conv_forward_naive"
    check_array(layer, "x", x, 4)
    w, b = as_params(layer, x, w=w, b=b)
    g = conv_geometry(layer, x, w, conv_param)
    check_array(layer, "b", b, 1)
    check_same_dtype(layer, x=x, w=w, b=b)
    F, Cg, HH, WW = w.shape
    if b.shape != (F,):
        raise ValueError(f"{layer}: b must have shape ({F},) for w of shape {w.shape}, got {b.shape}")
    N = x.shape[0]
    ph, pw = g.pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Fg = F // g.groups
    out = np.empty((N, F, g.out_h, g.out_w), dtype=x.dtype)
    for grp in range(g.groups):
        xs = xp[:, grp * Cg : (grp + 1) * Cg]
        ws = w[grp * Fg : (grp + 1) * Fg]
        for i in range(g.out_h):
            for j in range(g.out_w):
                win = _window(xs, i, j, g, HH, WW)  # (N, Cg, HH, WW)
                out[:, grp * Fg : (grp + 1) * Fg, i, j] = np.tensordot(win, ws, axes=([1, 2, 3], [1, 2, 3]))
    out += b[None, :, None, None]
    return out, Cache((x, w, b, conv_param), "conv_forward_naive")


# both convolutions' caches are (x, w, b, conv_param): either backward takes either cache
CONV_FORWARDS = ("conv_forward_naive", "conv_forward_fast")


def conv_backward_naive(dout, cache):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W), dw (F, C // groups, HH, WW), db (F,)."""
    x, w, b, conv_param = unpack_cache("conv_backward_naive", cache, CONV_FORWARDS, (_A, _A, _A, dict))
    g = conv_geometry("conv_backward_naive", x, w, conv_param)
    F, Cg, HH, WW = w.shape
    dout = as_dout("conv_backward_naive", dout, (x.shape[0], F, g.out_h, g.out_w), x.dtype)
    ph, pw = g.pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    Fg = F // g.groups
    for grp in range(g.groups):
        xs = xp[:, grp * Cg : (grp + 1) * Cg]
        dxs = dxp[:, grp * Cg : (grp + 1) * Cg]
        ws = w[grp * Fg : (grp + 1) * Fg]
        for i in range(g.out_h):
            for j in range(g.out_w):
                d = dout[:, grp * Fg : (grp + 1) * Fg, i, j]  # (N, Fg)
                # windows overlap when stride < span, hence += into the view
                _window(dxs, i, j, g, HH, WW)[...] += np.tensordot(d, ws, axes=([1], [0]))
                dw[grp * Fg : (grp + 1) * Fg] += np.tensordot(d, _window(xs, i, j, g, HH, WW), axes=([0], [0]))
    H, W = x.shape[2:]
    dx = dxp[:, :, ph : ph + H, pw : pw + W]
    db = dout.sum(axis=(0, 2, 3))
    return np.ascontiguousarray(dx), dw, db


# ----------------------------------------------------------------------------- pooling


def _pool_window(x, i, j, g):
    sh, sw = g.stride
    return x[:, :, i * sh : i * sh + g.pool_height, j * sw : j * sw + g.pool_width]


# the reference and fast pooling caches are both (x, pool_param); max and avg pooling
# caches look alike, so the tag is what keeps them apart
MAX_POOL_FORWARDS = ("max_pool_forward_naive", "max_pool_forward_fast")
AVG_POOL_FORWARDS = ("avg_pool_forward_naive", "avg_pool_forward_fast")


def max_pool_forward_naive(x, pool_param):
    """Max pooling. x: (N, C, H, W); pool_param: `pool_height`, `pool_width`,
    `stride` (int or (h, w)). Windows may overlap (stride < window) or not tile the
    input (the output size is floored and the remainder dropped, as in PyTorch).
    Returns out (N, C, H', W') and cache (x, pool_param)."""
    g = pool_geometry("max_pool_forward_naive", x, pool_param)
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    for i in range(g.out_h):
        for j in range(g.out_w):
            out[:, :, i, j] = _pool_window(x, i, j, g).max(axis=(2, 3))
    return out, Cache((x, pool_param), "max_pool_forward_naive")


def max_pool_backward_naive(dout, cache):
    """The gradient of each window goes to its maximum; on ties, to the first
    maximum in row-major window order (as PyTorch does). Overlapping windows add up."""
    x, pool_param = unpack_cache("max_pool_backward_naive", cache, MAX_POOL_FORWARDS, (_A, dict))
    g = pool_geometry("max_pool_backward_naive", x, pool_param)
    dout = as_dout("max_pool_backward_naive", dout, x.shape[:2] + (g.out_h, g.out_w), x.dtype)
    N, C = x.shape[:2]
    dx = np.zeros_like(x)
    n_idx, c_idx = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for i in range(g.out_h):
        for j in range(g.out_w):
            win = _pool_window(x, i, j, g).reshape(N, C, g.pool_height * g.pool_width)
            arg = win.argmax(axis=2)  # argmax returns the first maximum
            r, s = np.divmod(arg, g.pool_width)
            np.add.at(dx, (n_idx, c_idx, i * g.stride[0] + r, j * g.stride[1] + s), dout[:, :, i, j])
    return dx


def avg_pool_forward_naive(x, pool_param):
    """Average pooling over each window (no padding, so every window has
    pool_height * pool_width elements). Same geometry as `max_pool_forward_naive`."""
    g = pool_geometry("avg_pool_forward_naive", x, pool_param)
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    for i in range(g.out_h):
        for j in range(g.out_w):
            out[:, :, i, j] = _pool_window(x, i, j, g).mean(axis=(2, 3))
    return out, Cache((x, pool_param), "avg_pool_forward_naive")


def avg_pool_backward_naive(dout, cache):
    """Each window spreads dout / (pool_height * pool_width) evenly over its elements."""
    x, pool_param = unpack_cache("avg_pool_backward_naive", cache, AVG_POOL_FORWARDS, (_A, dict))
    g = pool_geometry("avg_pool_backward_naive", x, pool_param)
    dout = as_dout("avg_pool_backward_naive", dout, x.shape[:2] + (g.out_h, g.out_w), x.dtype)
    dx = np.zeros_like(x)
    scale = 1.0 / (g.pool_height * g.pool_width)
    for i in range(g.out_h):
        for j in range(g.out_w):
            _pool_window(dx, i, j, g)[...] += (dout[:, :, i, j] * scale)[:, :, None, None]
    return dx
