"""What every funkcije model shares: seeding, dtype and argument checks, input
casting, and the L2 penalty. Used by the cs231n classifiers (cnn.py, fc_net.py)
and by the composed models (sequential.py)."""
from __future__ import annotations

import numpy as np

from ..backend import array_api

__all__ = [
    "rng_from_seed", "model_dtype", "gaussian", "as_model_input", "l2_penalty", "add_l2_grads", "model_labels",
]


def rng_from_seed(seed, where=None):
    """A Generator for a model's initialisation (docs/ARCHITECTURE.md, Contract 6): an int seeds
    it, a Generator is used as it is, None draws its seed from NumPy's global RNG, so
    `np.random.seed(231)` before building a model makes a notebook repeatable."""
    from ..checks import as_generator

    return as_generator(where or "rng_from_seed", seed)


def model_dtype(model, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{model}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{model}: dtype must be float32 or float64, got {dt}")
    return dt


def gaussian(rng, shape, scale, dtype):
    # drawn in float64 and then cast, so float32 and float64 models built from the
    # same seed hold the same weights up to rounding
    return (rng.standard_normal(shape) * scale).astype(dtype)


def as_model_input(model, X, dtype):
    """Cast X to the model dtype (no copy when it already is) and check it is batched."""
    X = np.asarray(X)
    if np.issubdtype(X.dtype, np.complexfloating) or not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise TypeError(f"{model}: X must be real numbers, got dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{model}: X must be a batch of shape (N, ...), got shape {X.shape}")
    return X.astype(dtype, copy=False)


def l2_penalty(params, names, reg, dtype):
    """0.5 * reg * sum over `names` of sum(W ** 2), as a scalar of `dtype` (weights
    of any array namespace: a model on the GPU sums there, in float64)."""
    total = dtype.type(0)
    on_device = None  # the device's sums, read back once: a read is a wait for the device
    for name in names:
        w = params[name]
        if not isinstance(w, np.ndarray):
            xp = array_api(w)
            s = xp.sum(w * w, dtype=xp.float64)
            on_device = s if on_device is None else on_device + s
            continue
        w = w.ravel()
        total += np.dot(w, w)  # BLAS dot: no W ** 2 temporary the size of the weights
    if on_device is not None:
        total += float(on_device)
    return dtype.type(0.5 * reg * total)


_L2_BLOCK = 1 << 16


def add_l2_grads(grads, params, names, reg):
    """grads[name] += reg * params[name], in place. reg is a Python float, so the
    float32 path stays float32. Off the CPU (other array namespaces) grads[name] is
    replaced by the sum instead."""
    for name in names:
        g, w = grads[name], params[name]
        if not isinstance(g, np.ndarray):
            grads[name] = g + reg * w
            continue
        if g.size <= _L2_BLOCK or not (g.flags.c_contiguous and w.flags.c_contiguous):
            g += reg * w
            continue
        # block by block, so the reg * W temporary stays in cache instead of being
        # another weight-sized array (W2 of the cs231n conv net is 16 MB)
        fg, fw = g.reshape(-1), w.reshape(-1)
        tmp = np.empty(_L2_BLOCK, dtype=g.dtype)
        for s in range(0, fg.size, _L2_BLOCK):
            e = min(fg.size, s + _L2_BLOCK)
            t = tmp[: e - s]
            np.multiply(fw[s:e], reg, out=t)
            fg[s:e] += t


def model_labels(model, y, N, num_classes):
    """Labels given to model.loss, checked against the model's classes before any
    work, so the error names the model rather than its loss function."""
    from ..checks import check_labels

    return check_labels(f"{model}.loss", y, N, num_classes)
