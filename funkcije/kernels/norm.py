"""Spatial batch norm, optionally fused with the ReLU after it, and a fast ReLU.

Two passes forward (statistics; normalise, scale, shift and clamp in one write) and
two backward (the per-channel sums; dx), with per-channel statistics in float64
(kernels: csrc/norm.pxi; NumPy versions in numpy_kernels.py). The cache keeps x (and,
fused, the output, which the next layer keeps anyway) instead of a normalised copy:
xhat is recomputed on the fly from x, the mean and 1 / std.
"""
from __future__ import annotations

import numpy as np

from . import runtime as R


def _planes(a):
    """(N, C, H, W) -> (N, C, H * W) (also when C or H * W is 0, where -1 is ambiguous)."""
    N, C, H, W = a.shape
    return a.reshape(N, C, H * W)


def forward(x, gamma, beta, eps, relu, mean=None, var=None):
    """out (N, C, H, W) = [relu](gamma (x - mean) / sqrt(var + eps) + beta), and
    (mean, var, inv_std) as float64 (C,). Batch statistics when mean is None (train),
    else the given ones (test). x C-contiguous."""
    kern = R.kernels_for(x.dtype)
    dt = x.dtype
    C = x.shape[1]
    if mean is None:
        mean, var = np.empty(C), np.empty(C)
        kern.bn_stats(_planes(x), mean, var)
    else:
        mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    out = np.empty_like(x)
    kern.bn_apply(_planes(x), _planes(out), mean.astype(dt), (gamma * inv_std).astype(dt), beta.astype(dt, copy=False),
                  relu)
    return out, mean, var, inv_std


def backward(dout, x, y, mean, inv_std, gamma, train, relu):
    """(dx, dgamma, dbeta) of `forward`; y its output (ReLU's mask) when relu. In train
    mode the statistics' own gradient is included:
    dx = gamma inv_std (g - mean(g) - xhat mean(g xhat)), g = dout (masked by y > 0)."""
    kern = R.kernels_for(x.dtype)
    dt = x.dtype
    N, C = x.shape[:2]
    M = x.size // C if C else 0
    y3 = _planes(y if relu else x)
    sums = np.empty((2, C))
    kern.bn_backward_sums(_planes(dout), _planes(x), y3, mean, sums, relu)
    dbeta, dgamma = sums[0], sums[1] * inv_std
    k = gamma * inv_std
    if train:
        b = -k * inv_std * dgamma / M
        c = -k * dbeta / M
    else:
        b = c = np.zeros(C)
    dx = np.empty_like(x)
    kern.bn_backward_dx(_planes(dout), _planes(x), y3, _planes(dx), mean.astype(dt), k.astype(dt), b.astype(dt),
                        c.astype(dt), relu)
    return dx, dgamma.astype(dt), dbeta.astype(dt)


def relu_forward(x):
    out = np.empty_like(x)
    R.kernels_for(x.dtype).relu_forward(x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(dout, x):
    dx = np.empty_like(x)
    R.kernels_for(x.dtype).relu_backward(dout.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
