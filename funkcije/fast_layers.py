"""Fast layers: the signatures of `funkcije.layers`, fast. The public face of the engine
(`funkcije/kernels/`): each function checks its input as the reference does
(`funkcije.checks`) and hands the arrays to the kernels.

    conv_forward_fast(x, w, b, conv_param) -> (out, cache)
    conv_backward_fast(dout, cache) -> (dx, dw, db)
    affine_forward_fast(x, w, b) -> (out, cache)
    affine_backward_fast(dout, cache) -> (dx, dw, db)
    max_pool_forward_fast(x, pool_param) -> (out, cache)
    max_pool_backward_fast(dout, cache) -> dx
    avg_pool_forward_fast(x, pool_param) -> (out, cache)
    avg_pool_backward_fast(dout, cache) -> dx
    spatial_batchnorm_forward_fast(x, gamma, beta, bn_param) -> (out, cache)
    spatial_batchnorm_backward_fast(dout, cache) -> (dx, dgamma, dbeta)
    spatial_batchnorm_forward_fast(x, gamma, beta, bn_param, relu=True): batch norm + ReLU, fused
    relu_forward_fast(x) -> (out, cache);  relu_backward_fast(dout, cache) -> dx

cs231n's other names work too: conv_forward_strides / conv_backward_strides are
conv_forward_fast / conv_backward_fast (as there), conv_forward_im2col /
conv_backward_im2col hold the convolution to im2col + GEMM, and
max_pool_{forward,backward}_{reshape,im2col} are the fast max-pool.

x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); out: (N, F, H', W'). Every
configuration of the reference works (stride, pad and dilation as ints or (h, w)
pairs, groups, non-square kernels and windows, overlapping or non-tiling pools),
the input checks and messages are the reference's, and dtype is preserved: float32
stays float32 end to end.

Caches are interchangeable with the reference: a conv cache *is* the tuple
(x, w, b, conv_param) and a pooling cache the tuple (x, pool_param), so
`conv_backward_naive` accepts a fast cache and `conv_backward_fast` a reference one.
The max-pool cache also carries the argmax positions so the backward is a scatter.

Convolution (`kernels/conv.py`) picks per layer and pass between im2col + GEMM,
Winograd (3x3 stride-1 layers with at least 16 channels per group, on batches large
enough to pay for the filter transform; F(4x4, 3x3) or F(2x2, 3x3) in float32, F(2x2,
3x3) in float64 or by `use_winograd_tile(2)`; `use_winograd(False)` or
FUNKCIJE_WINOGRAD=0 turns it off) and direct AVX-512 kernels
for small float32 layers (`use_direct`). Its workspace is bounded
(`set_workspace_limit`, env FUNKCIJE_WORKSPACE_MB, default 256 MiB): peak memory is
inputs, outputs, gradients and cache plus that bound.

Implementations (docs/ARCHITECTURE.md, Contract 7): `IMPLEMENTATION` is "cython" when the
compiled extension `funkcije.kernels._compiled` is importable, else "numpy" (a pure-NumPy
fallback with the same results, announced by one RuntimeWarning at import).
`FUNKCIJE_FORCE_NUMPY=1` at import, or `use_implementation("numpy")`, forces the
fallback; `use_implementation("cython")` switches back. Dtypes other than float32 and
float64 (e.g. float16) always take the NumPy kernels. Threads, workspace and denormal
handling: `funkcije.kernels.runtime`; every switch is also reachable through
`funkcije.config`.
"""
from __future__ import annotations

import numpy as np

from .checks import (
    Cache, affine_shapes, as_dout, as_params, cache_array, check_array, check_bool, check_choice, check_same_dtype, conv_geometry,
    describe, pool_geometry, unpack_cache,
)
from .backend import AnyArray, array_api, device_of
from .kernels import conv as _conv, dense as _dense, norm as _norm
from .kernels import runtime as _rt
from .kernels import cuda_kernels as _ck, xp_kernels as _xk
from .kernels.conv import use_direct, use_winograd, use_winograd_tile
from .kernels.runtime import (
    available_implementations, engine_step, flush_denormals, get_conv_threads,
    get_workspace_limit, implementation, in_engine_step, release_workspace, set_conv_threads, set_workspace_limit,
    use_flush_denormals, use_implementation,
)
# which forwards' caches each backward takes (the reference's and the fast one's alike)
from .layers import AFFINE_FORWARDS, AVG_POOL_FORWARDS, CONV_FORWARDS, MAX_POOL_FORWARDS

__all__ = [
    "conv_forward_fast",
    "conv_backward_fast",
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "affine_forward_fast",
    "affine_backward_fast",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "avg_pool_forward_fast",
    "avg_pool_backward_fast",
    "spatial_batchnorm_forward_fast",
    "spatial_batchnorm_backward_fast",
    "relu_forward_fast",
    "relu_backward_fast",
    "gelu_forward_fast",
    "gelu_backward_fast",
    "IMPLEMENTATION",
    "implementation",
    "available_implementations",
    "use_implementation",
    "get_workspace_limit",
    "set_workspace_limit",
    "release_workspace",
    "get_conv_threads",
    "set_conv_threads",
    "use_winograd",
    "use_direct",
    "use_flush_denormals",
    "use_winograd_tile",
    "flush_denormals",
    "engine_step",
]

_A = AnyArray  # a NumPy array, or CuPy's / another Array API library's (kernels/xp_kernels.py)


def __getattr__(name):
    # IMPLEMENTATION follows use_implementation (the value lives in kernels.runtime)
    if name == "IMPLEMENTATION":
        return _rt.implementation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- caches


def ConvCache(items):
    """The reference's conv cache (x, w, b, conv_param), tagged as the fast forward's."""
    return Cache(items, "conv_forward_fast")


class PoolCache(Cache):
    """The reference's pooling cache (x, pool_param); `arg` holds the max-pool argmax
    positions (flat h * W + w per output, int32) when the fast forward made it."""

    def __new__(cls, items, forward=None, arg=None):
        self = super().__new__(cls, items, forward)
        self.arg = arg
        return self


# ----------------------------------------------------------------------------- convolution


def _conv_setup(layer, x, w, conv_param):
    g = conv_geometry(layer, x, w, conv_param)
    F, Cg, HH, WW = w.shape
    return g, F, Cg, HH, WW


def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) with zero padding, as `conv_forward_naive`.

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); conv_param: `stride`,
    `pad`, optional `dilation` and `groups`. Returns out (N, F, H', W') and the cache
    (x, w, b, conv_param).
    """
    return _conv_forward("conv_forward_fast", x, w, b, conv_param, gemm_only=False)


def conv_backward_fast(dout, cache, *, need_dx=True):
    """dout: (N, F, H', W'); cache from `conv_forward_fast` (or `conv_forward_naive`).
    Returns dx (N, C, H, W), dw (F, C // groups, HH, WW), db (F,).

    need_dx=False returns None for dx and skips its GEMM and col2im: a network's
    first layer needs no input gradient."""
    return _conv_backward("conv_backward_fast", dout, cache, need_dx, gemm_only=False)


def conv_forward_im2col(x, w, b, conv_param):
    """`conv_forward_fast` held to one algorithm, im2col + one BLAS GEMM per batch chunk
    (cs231n's name), whatever the layer: to compare with Winograd and the direct
    kernels, which `conv_forward_fast` picks where they are faster. Same shapes,
    checks and cache as `conv_forward_fast`."""
    return _conv_forward("conv_forward_im2col", x, w, b, conv_param, gemm_only=True)


def conv_backward_im2col(dout, cache, *, need_dx=True):
    """`conv_backward_fast` held to im2col + GEMM (col2im for dx). Takes the cache of
    any conv forward; returns dx (N, C, H, W) (None when need_dx=False), dw, db."""
    return _conv_backward("conv_backward_im2col", dout, cache, need_dx, gemm_only=True)


# cs231n's fast_layers names: there, conv_forward_fast *is* conv_forward_strides and the
# reshape / im2col max-pools are its fast pooling; here one engine serves all of them
conv_forward_strides = conv_forward_fast
conv_backward_strides = conv_backward_fast


def _cast_int_params(layer, x, **params):
    """Integer or bool parameter arrays cast to x's dtype, as the reference layers do
    (cs231n writes b = np.array([0, 128])); x that is not floating is the checks' to refuse."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return as_params(layer, x, **params)
    return list(params.values())


def _conv_forward(layer, x, w, b, conv_param, gemm_only):
    w, b = _cast_int_params(layer, x, w=w, b=b)
    g, F, Cg, HH, WW = _conv_setup(layer, x, w, conv_param)
    check_array(layer, "b", b, 1)
    check_same_dtype(layer, x=x, w=w, b=b)
    if b.shape != (F,):
        raise ValueError(f"{layer}: b must have shape ({F},) for w of shape {w.shape}, got {b.shape}")
    if _rt.namespaced(x):
        return _gpu_kernels(x).conv_forward(x, w, b, g), ConvCache((x, w, b, conv_param))
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    b = np.ascontiguousarray(b)
    out = np.empty((x.shape[0], F, g.out_h, g.out_w), dtype=x.dtype)
    if x.shape[0]:  # an empty batch: nothing for the kernels to split into chunks
        _conv.forward(x, w, b, g, out, gemm_only)
    return out, ConvCache((x, w, b, conv_param))


def _conv_backward(layer, dout, cache, need_dx, gemm_only):
    x, w, b, conv_param = unpack_cache(layer, cache, CONV_FORWARDS, (_A, _A, _A, dict))
    g, F, Cg, HH, WW = _conv_setup(layer, x, w, conv_param)
    check_bool(layer, "need_dx", need_dx)
    N = x.shape[0]
    dout = as_dout(layer, dout, (N, F, g.out_h, g.out_w), x.dtype)
    if _rt.namespaced(x):
        return _gpu_kernels(x).conv_backward(x, w, dout, g, need_dx)
    if N == 0:  # an empty batch: empty dx, zero dw and db (no chunks to sum)
        return (np.empty_like(x) if need_dx else None), np.zeros_like(w), np.zeros(F, dtype=x.dtype)
    return _conv.backward(np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(dout), g,
                          need_dx, gemm_only)


# ----------------------------------------------------------------------------- affine


def affine_forward_fast(x, w, b):
    """out = x.reshape(N, D) @ w + b, as `affine_forward`.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,). Returns out
    (N, M) and the reference cache (x, w, b).
    """
    w, b = _cast_int_params("affine_forward_fast", x, w=w, b=b)
    N, D, M = affine_shapes("affine_forward_fast", x, w, b)
    cache = Cache((x, w, b), "affine_forward_fast")
    if _rt.namespaced(x):
        return _xk.affine_forward(array_api(x).reshape(x, (N, D)), w, b), cache
    return _dense.forward(x.reshape(N, D), w, b), cache


def affine_backward_fast(dout, cache):
    """dout: (N, M); cache from `affine_forward_fast` (or `affine_forward`).
    Returns dx (N, d1, ..., dk), dw (D, M), db (M,)."""
    x, w, b = unpack_cache("affine_backward_fast", cache, AFFINE_FORWARDS, (_A, _A, _A))
    N, D, M = affine_shapes("affine_backward_fast", x, w, b)
    dout = as_dout("affine_backward_fast", dout, (N, M), x.dtype)
    if _rt.namespaced(x):
        xp = array_api(x)
        dx, dw, db = _xk.affine_backward(xp.reshape(x, (N, D)), w, dout)
        return xp.reshape(dx, x.shape), dw, db
    dx, dw, db = _dense.backward(x.reshape(N, D), w, dout)
    return dx.reshape(x.shape), dw, db


# ----------------------------------------------------------------------------- pooling


def _pool_arrays(layer, x, pool_param):
    g = pool_geometry(layer, x, pool_param)
    N, C, H, W = x.shape
    if H * W >= 2**31:
        raise ValueError(f"{layer}: planes of {H}x{W} are too large for int32 argmax positions")
    return g, (x if _rt.namespaced(x) else np.ascontiguousarray(x))


def _gpu_kernels(x):
    """The module of convolution, pooling and batch-norm kernels for an array off the NumPy path:
    funkcije's CUDA kernels for a CuPy array (while config's cuda_kernels is on), else
    the Array API form."""
    from . import config

    return _ck if device_of(x) == "gpu" and config.get("cuda_kernels") else _xk


def max_pool_forward_fast(x, pool_param):
    """Max pooling as `max_pool_forward_naive`. x: (N, C, H, W); pool_param:
    `pool_height`, `pool_width`, `stride`. Returns out (N, C, H', W') and the cache
    (x, pool_param) carrying the argmax positions."""
    layer = "max_pool_forward_fast"
    g, x = _pool_arrays(layer, x, pool_param)
    if _rt.namespaced(x):
        out, arg = _gpu_kernels(x).max_pool_forward(x, g)
        return out, PoolCache((x, pool_param), "max_pool_forward_fast", arg)
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    arg = np.empty(out.shape, dtype=np.int32)
    _rt.kernels_for(x.dtype).max_pool_forward(x, out, arg, g.pool_height, g.pool_width, *g.stride)
    return out, PoolCache((x, pool_param), "max_pool_forward_fast", arg)


def max_pool_backward_fast(dout, cache):
    """Each window's gradient goes to its maximum (the first, on ties); overlapping
    windows add up. Returns dx (N, C, H, W)."""
    layer = "max_pool_backward_fast"
    x, pool_param = unpack_cache(layer, cache, MAX_POOL_FORWARDS, (_A, dict))
    g, x = _pool_arrays(layer, x, pool_param)
    N, C = x.shape[:2]
    dout = as_dout(layer, dout, (N, C, g.out_h, g.out_w), x.dtype)
    arg = getattr(cache, "arg", None)
    if _rt.namespaced(x):
        kern = _gpu_kernels(x)
        if arg is None:  # a reference cache: find the maxima again
            arg = kern.max_pool_forward(x, g)[1]
        return kern.max_pool_backward(dout, arg, x.shape, g)
    kern = _rt.kernels_for(x.dtype)
    if arg is None:  # a reference cache: find the maxima again
        arg = np.empty((N, C, g.out_h, g.out_w), dtype=np.int32)
        kern.max_pool_forward(x, np.empty(arg.shape, dtype=x.dtype), arg, g.pool_height, g.pool_width, *g.stride)
    if (g.pool_height, g.pool_width) == (2, 2) and g.stride == (2, 2) and g.out_w >= 16:
        # the 2x2 kernel writes every element, no zeroing pass first; on short rows the
        # scatter below is faster (measured: benchmarks/RESULTS.md, engine notes)
        dx = np.empty_like(x)
        kern.max_pool2_backward(np.ascontiguousarray(dout), arg, dx)
        return dx
    dx = np.zeros_like(x)
    kern.max_pool_backward(np.ascontiguousarray(dout), arg, dx)
    return dx


# cs231n's names for its two fast max-pools (reshape: tiling square windows only; im2col:
# any); the kernels above take every window and stride
max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_fast


def avg_pool_forward_fast(x, pool_param):
    """Average pooling as `avg_pool_forward_naive`. Returns out (N, C, H', W') and
    the cache (x, pool_param)."""
    layer = "avg_pool_forward_fast"
    g, x = _pool_arrays(layer, x, pool_param)
    if _rt.namespaced(x):
        return _xk.avg_pool_forward(x, g), PoolCache((x, pool_param), "avg_pool_forward_fast")
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    _rt.kernels_for(x.dtype).avg_pool_forward(x, out, g.pool_height, g.pool_width, *g.stride)
    return out, PoolCache((x, pool_param), "avg_pool_forward_fast")


def avg_pool_backward_fast(dout, cache):
    """Each window spreads dout / (pool_height * pool_width) over its elements.
    Returns dx (N, C, H, W)."""
    layer = "avg_pool_backward_fast"
    x, pool_param = unpack_cache(layer, cache, AVG_POOL_FORWARDS, (_A, dict))
    g = pool_geometry(layer, x, pool_param)
    N, C = x.shape[:2]
    dout = as_dout(layer, dout, (N, C, g.out_h, g.out_w), x.dtype)
    if _rt.namespaced(x):
        return _xk.avg_pool_backward(dout, x.shape, g)
    dx = np.zeros(x.shape, dtype=x.dtype)
    _rt.kernels_for(x.dtype).avg_pool_backward(np.ascontiguousarray(dout), dx, g.pool_height, g.pool_width, *g.stride)
    return dx


# ----------------------------------------------------------------------------- spatial batch norm

# ----------------------------------------------------------------------------- spatial batch norm


def BatchNormCache(items):
    """(mode, x, y, mean, inv_std, gamma, relu) of `spatial_batchnorm_forward_fast`:
    x and y (its output; x when relu is False) (N, C, H, W), mean and inv_std float64 (C,)."""
    return Cache(items, "spatial_batchnorm_forward_fast")


def spatial_batchnorm_forward_fast(x, gamma, beta, bn_param, *, relu=False):
    """Spatial batch norm as `layers.spatial_batchnorm_forward`, computed on the NCHW
    array in two passes (statistics with float64 accumulation; one write of the output),
    and with relu=True followed by ReLU in the same pass (out = max(bn(x), 0)).

    x: (N, C, H, W); gamma, beta: (C,); bn_param as for `layers.batchnorm_forward`
    (`mode` required; running statistics written back). Returns out and a cache for
    `spatial_batchnorm_backward_fast` (not interchangeable with the reference's).
    """
    from . import layers as L  # the reference defines the bn_param contract

    layer = "spatial_batchnorm_forward_fast"
    check_bool(layer, "relu", relu)
    mode, gamma, beta, eps, momentum, unbiased, running_mean, running_var = L.bn_setup(
        layer, x, gamma, beta, bn_param, 4)
    N, C, H, W = x.shape
    dt = x.dtype
    if _rt.namespaced(x):
        if mode == "train":
            if N * H * W < 1:
                raise ValueError(f"{layer}: train mode needs a non-empty batch, got x shape {tuple(x.shape)}")
            out, mean, var, inv_std = _gpu_kernels(x).bn_forward(x, gamma, beta, eps, relu)
            M = N * H * W
            bn_param["running_mean"] = _xk.bn_running(running_mean, mean, momentum, dt)
            bn_param["running_var"] = _xk.bn_running(running_var, var * (M / (M - 1)) if unbiased and M > 1 else var,
                                                     momentum, dt)
        else:
            out, mean, var, inv_std = _gpu_kernels(x).bn_forward(x, gamma, beta, eps, relu, running_mean, running_var)
            bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
        return out, BatchNormCache((mode, x, out if relu else x, mean, inv_std, gamma, relu))
    x = np.ascontiguousarray(x)
    if mode == "train":
        M = N * H * W
        if M < 1:
            raise ValueError(f"{layer}: train mode needs a non-empty batch, got x shape {x.shape}")
        out, mean, var, inv_std = _norm.forward(x, gamma, beta, eps, relu)
        running_mean = (momentum * running_mean + (1 - momentum) * mean).astype(dt)
        tracked = var * (M / (M - 1)) if unbiased and M > 1 else var
        running_var = (momentum * running_var + (1 - momentum) * tracked).astype(dt)
    else:
        out, mean, var, inv_std = _norm.forward(x, gamma, beta, eps, relu, running_mean, running_var)
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, BatchNormCache((mode, x, out if relu else x, mean, inv_std, gamma, relu))


def spatial_batchnorm_backward_fast(dout, cache):
    """Returns dx (N, C, H, W), dgamma (C,), dbeta (C,), in the closed form
    dx = gamma inv_std (g - mean(g) - xhat mean(g xhat)), means over (N, H, W), where
    g = dout, masked by the output's sign when the forward fused a ReLU."""
    layer = "spatial_batchnorm_backward_fast"
    if not isinstance(cache, Cache):  # its layout is not the reference's: only its own, tagged cache
        raise TypeError(f"{layer}: cache must be the cache that spatial_batchnorm_forward_fast returned, "
                        f"got {describe(cache)}")
    mode, x, y, mean, inv_std, gamma, relu = unpack_cache(
        layer, cache, "spatial_batchnorm_forward_fast", (str, _A, _A, _A, _A, _A, bool))
    dout = as_dout(layer, dout, x.shape, x.dtype)
    if _rt.namespaced(x):
        return _gpu_kernels(x).bn_backward(dout, x, y, mean, inv_std, gamma, mode == "train", relu)
    dout = np.ascontiguousarray(dout)
    return _norm.backward(dout, x, y, mean, inv_std, gamma, mode == "train", relu)


# ----------------------------------------------------------------------------- ReLU


def relu_forward_fast(x):
    """out = max(x, 0), as `layers.relu_forward` (one multi-threaded pass); cache is x."""
    check_array("relu_forward_fast", "x", x)
    if _rt.namespaced(x):
        return _xk.relu_forward(x), x
    x = np.ascontiguousarray(x)
    return _norm.relu_forward(x), x


def relu_backward_fast(dout, cache):
    """dx = dout where x > 0, else 0 (0 also where dout is inf or NaN, as PyTorch)."""
    x = cache_array("relu_backward_fast", cache, "relu_forward_fast")
    dout = as_dout("relu_backward_fast", dout, x.shape, x.dtype)
    if _rt.namespaced(x):
        return _xk.relu_backward(dout, x)
    dout = np.ascontiguousarray(dout)
    return _norm.relu_backward(dout, np.ascontiguousarray(x))


# ----------------------------------------------------------------------------- GELU


def gelu_forward_fast(x, approximate="none"):
    """GELU as `layers.gelu_forward` (x Phi(x), or the tanh form; Phi evaluated in float64)
    in one multi-threaded pass, Phi by the C library's erfc. Any shape; dtype kept; cache
    (x, approximate), interchangeable with the reference's."""
    layer = "gelu_forward_fast"
    check_array(layer, "x", x)
    check_choice(layer, "approximate", approximate, ("none", "tanh"))
    cache = Cache((x, approximate), layer)
    if _rt.namespaced(x):
        return _gpu_kernels(x).gelu_forward(x, approximate == "tanh"), cache
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _rt.kernels_for(x.dtype).gelu_forward(x.reshape(-1), out.reshape(-1), approximate == "tanh")
    return out, cache


def gelu_backward_fast(dout, cache):
    """dx = dout * (Phi(x) + x phi(x)) (or the tanh form's slope), computed in float64."""
    from .layers import GELU_FORWARDS

    layer = "gelu_backward_fast"
    x, approximate = unpack_cache(layer, cache, GELU_FORWARDS, (_A, str))
    dout = as_dout(layer, dout, x.shape, x.dtype)
    if _rt.namespaced(x):
        return _gpu_kernels(x).gelu_backward(dout, x, approximate == "tanh")
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    dx = np.empty_like(x)
    _rt.kernels_for(x.dtype).gelu_backward(dout.reshape(-1), x.reshape(-1), dx.reshape(-1), approximate == "tanh")
    return dx
