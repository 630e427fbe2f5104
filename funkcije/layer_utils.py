"""Sandwich layers: common layer stacks as one forward/backward pair each.

Every sandwich follows the layer contract (docs/ARCHITECTURE.md, Contract 1):
`*_forward(...) -> (out, cache)` and `*_backward(dout, cache)` returns the
gradients of the forward's array arguments in argument order. Affine layers,
convolution and max pooling go through `funkcije.fast_layers`; validation happens in the
underlying layers (and so in `funkcije.checks`), so bad input is rejected with
the messages the plain layers give, prefixed with the sandwich's name. Each backward
checks its own dout and that its cache is its forward's. dtype is preserved.

ReLU runs in place on the freshly made output of the layer before it, and the
backward pass reads its mask from the sandwich output kept in the cache: do not
modify a sandwich's output in place before calling its backward.

Shapes: N batch, D features, M outputs, C channels, H, W height and width,
F filters, HH, WW kernel height and width.
"""
from __future__ import annotations

import numpy as np

from .checks import Cache, as_dout, names_errors, unpack_cache
from .fast_layers import (
    affine_backward_fast as affine_backward,
    affine_forward_fast as affine_forward,
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from .layers import (
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)

__all__ = [
    "affine_relu_forward",
    "affine_relu_backward",
    "affine_bn_relu_forward",
    "affine_bn_relu_backward",
    "affine_ln_relu_forward",
    "affine_ln_relu_backward",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    "conv_bn_relu_forward",
    "conv_bn_relu_backward",
]


def _relu_inplace(a):
    """ReLU written into `a`, which must be a fresh array nobody else holds.

    The mask for the backward pass is recovered from the output (out > 0 exactly
    where the input was > 0), so no copy of the pre-activation is kept.
    """
    np.maximum(a, 0, out=a)
    return a


def _relu_backward_from_out(layer, dout, out):
    # checked here: np.where would broadcast a dout of the wrong shape to out's
    dout = as_dout(layer, dout, out.shape, out.dtype)
    # where, not dout * mask: no bool -> float conversion pass and no dtype question
    return np.where(out > 0, dout, dout.dtype.type(0))


_A = np.ndarray


# ----------------------------------------------------------------------------- affine sandwiches


@names_errors
def affine_relu_forward(x, w, b):
    """Affine then ReLU.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,).
    Returns out (N, M) and a cache for `affine_relu_backward`.
    """
    a, fc_cache = affine_forward(x, w, b)
    # affine_forward's cache is (x, w, b): its output is ours to overwrite
    out = _relu_inplace(a)
    return out, Cache((fc_cache, out), "affine_relu_forward")


@names_errors
def affine_relu_backward(dout, cache):
    """dout: (N, M). Returns dx (N, d1, ..., dk), dw (D, M), db (M,)."""
    fc_cache, out = unpack_cache("affine_relu_backward", cache, "affine_relu_forward", (tuple, _A))
    return affine_backward(_relu_backward_from_out("affine_relu_backward", dout, out), fc_cache)


@names_errors
def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """Affine, batch normalisation, ReLU.

    x: (N, d1, ..., dk); w: (D, M); b, gamma, beta: (M,); bn_param as for
    `funkcije.layers.batchnorm_forward` (`mode` required; running statistics are
    written back into it). Returns out (N, M) and a cache.
    """
    a, fc_cache = affine_forward(x, w, b)
    a_bn, bn_cache = batchnorm_forward(a, gamma, beta, bn_param)
    out = _relu_inplace(a_bn)
    return out, Cache((fc_cache, bn_cache, out), "affine_bn_relu_forward")


@names_errors
def affine_bn_relu_backward(dout, cache):
    """dout: (N, M). Returns dx, dw, db, dgamma (M,), dbeta (M,)."""
    fc_cache, bn_cache, out = unpack_cache("affine_bn_relu_backward", cache, "affine_bn_relu_forward", (tuple, dict, _A))
    da_bn = _relu_backward_from_out("affine_bn_relu_backward", dout, out)
    da, dgamma, dbeta = batchnorm_backward_alt(da_bn, bn_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


@names_errors
def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """Affine, layer normalisation, ReLU.

    x: (N, d1, ..., dk); w: (D, M); b, gamma, beta: (M,); ln_param: `eps` (1e-5).
    Returns out (N, M) and a cache.
    """
    a, fc_cache = affine_forward(x, w, b)
    a_ln, ln_cache = layernorm_forward(a, gamma, beta, ln_param)
    out = _relu_inplace(a_ln)
    return out, Cache((fc_cache, ln_cache, out), "affine_ln_relu_forward")


@names_errors
def affine_ln_relu_backward(dout, cache):
    """dout: (N, M). Returns dx, dw, db, dgamma (M,), dbeta (M,)."""
    fc_cache, ln_cache, out = unpack_cache("affine_ln_relu_backward", cache, "affine_ln_relu_forward", (tuple, tuple, _A))
    da_ln = _relu_backward_from_out("affine_ln_relu_backward", dout, out)
    da, dgamma, dbeta = layernorm_backward(da_ln, ln_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


# ----------------------------------------------------------------------------- convolution sandwiches


@names_errors
def conv_relu_forward(x, w, b, conv_param):
    """Convolution (fast path) then ReLU.

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); conv_param as for
    `conv_forward_fast`. Returns out (N, F, H', W') and a cache.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    # the conv cache is (x, w, b, conv_param), without its output: ReLU may overwrite it
    out = _relu_inplace(a)
    return out, Cache((conv_cache, out), "conv_relu_forward")


@names_errors
def conv_relu_backward(dout, cache, *, need_dx=True):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W), dw, db (F,).
    need_dx=False returns None for dx and skips computing it (a first layer)."""
    conv_cache, out = unpack_cache("conv_relu_backward", cache, "conv_relu_forward", (tuple, _A))
    return conv_backward_fast(_relu_backward_from_out("conv_relu_backward", dout, out), conv_cache, need_dx=need_dx)


@names_errors
def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, max pooling (fast path).

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); pool_param as for
    `max_pool_forward_fast`. Returns out (N, F, H'', W'') and a cache.

    Computed as pool-then-ReLU: ReLU is monotone, so max(relu(window)) equals
    relu(max(window)), and the gradients agree too (where the window maximum is
    positive both route dout to the same element; where it is <= 0 both give zero).
    The ReLU then runs on the pooled map, a quarter of the conv output for 2x2 pools.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    p, pool_cache = max_pool_forward_fast(a, pool_param)
    # the pool cache is (x, pool_param) plus argmax positions, without its output
    out = _relu_inplace(p)
    return out, Cache((conv_cache, pool_cache, out), "conv_relu_pool_forward")


@names_errors
def conv_relu_pool_backward(dout, cache, *, need_dx=True):
    """dout: (N, F, H'', W''). Returns dx (N, C, H, W), dw, db (F,).
    need_dx=False returns None for dx and skips computing it (a first layer)."""
    conv_cache, pool_cache, out = unpack_cache("conv_relu_pool_backward", cache, "conv_relu_pool_forward", (tuple, tuple, _A))
    dp = _relu_backward_from_out("conv_relu_pool_backward", dout, out)
    da = max_pool_backward_fast(dp, pool_cache)
    return conv_backward_fast(da, conv_cache, need_dx=need_dx)


@names_errors
def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """Convolution (fast path), spatial batch normalisation, ReLU.

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b, gamma, beta: (F,);
    bn_param as for `spatial_batchnorm_forward` (`mode` required; running
    statistics written back). Returns out (N, F, H', W') and a cache.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    # spatial_batchnorm_forward returns a fresh array that its cache does not hold
    out = _relu_inplace(an)
    return out, Cache((conv_cache, bn_cache, out), "conv_bn_relu_forward")


@names_errors
def conv_bn_relu_backward(dout, cache, *, need_dx=True):
    """dout: (N, F, H', W'). Returns dx, dw, db, dgamma (F,), dbeta (F,).
    need_dx=False returns None for dx and skips computing it (a first layer)."""
    conv_cache, bn_cache, out = unpack_cache("conv_bn_relu_backward", cache, "conv_bn_relu_forward", (tuple, dict, _A))
    dan = _relu_backward_from_out("conv_bn_relu_backward", dout, out)
    da, dgamma, dbeta = spatial_batchnorm_backward(dan, bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache, need_dx=need_dx)
    return dx, dw, db, dgamma, dbeta
