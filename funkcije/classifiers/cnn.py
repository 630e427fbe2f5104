"""ThreeLayerConvNet: conv - relu - 2x2 max pool - affine - relu - affine - softmax."""
from __future__ import annotations


import numpy as np

from ..checks import check_int as _check_int, check_real as _check_real, conv_output_size
from ..layer_utils import (
    affine_relu_backward,
    affine_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from ..fast_layers import affine_backward_fast as affine_backward, affine_forward_fast as affine_forward, in_engine_step
from ..layers import softmax_loss
from .base import (
    add_l2_grads as _add_l2_grads,
    as_model_input as _as_model_input,
    gaussian as _gaussian,
    l2_penalty as _l2_penalty,
    model_dtype as _model_dtype,
    model_labels as _model_labels,
    rng_from_seed as _rng_from_seed,
)

__all__ = ["ThreeLayerConvNet"]


class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    input_dim: (C, H, W) of each sample; X: (N, C, H, W). The convolution has
    F = num_filters filters of size filter_size x filter_size, stride 1 and pad
    (filter_size - 1) // 2 (size-preserving for odd filters); the pool is 2x2 with
    stride 2 (floored for odd sizes).

    Params: `W1` (F, C, HH, WW), `b1` (F,), `W2` (F * H'' * W'', hidden_dim), `b2`,
    `W3` (hidden_dim, num_classes), `b3`, with H'', W'' the pooled size. Weights
    ~ N(0, weight_scale ** 2), biases zero; `seed` (None, int or Generator) drives
    the initialisation. `reg` is the L2 strength: the loss adds
    0.5 * reg * sum(W ** 2) over W1, W2, W3.

    loss(X, y=None): X is cast to `dtype`; returns scores (N, num_classes) without
    labels, else (loss, grads) with every gradient in `dtype`.
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100,
                 num_classes=10, weight_scale=1e-3, reg=0.0, dtype=np.float32, seed=None):
        name = "ThreeLayerConvNet"
        if not isinstance(input_dim, (tuple, list)) or len(input_dim) != 3:
            raise ValueError(f"{name}: input_dim must be (C, H, W), got {input_dim!r}")
        C, H, W = (_check_int(name, "each of input_dim", d) for d in input_dim)
        self.input_dim = (C, H, W)
        F = _check_int(name, "num_filters", num_filters)
        fs = _check_int(name, "filter_size", filter_size)
        hidden_dim = _check_int(name, "hidden_dim", hidden_dim)
        self.num_classes = _check_int(name, "num_classes", num_classes)
        weight_scale = _check_real(name, "weight_scale", weight_scale)
        self.reg = _check_real(name, "reg", reg)
        self.dtype = _model_dtype(name, dtype)

        pad = (fs - 1) // 2
        self.conv_param = {"stride": 1, "pad": pad}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        detail = f"filter_size={fs}, pad={pad}, then a 2x2 pool with stride 2"
        pooled = []
        for size in (H, W):
            conv_out = conv_output_size(name, size, fs, 1, pad, 1, (None, C, H, W), detail)
            pooled.append(conv_output_size(name, conv_out, 2, 2, 0, 1, (None, C, H, W), detail))
        flat = F * pooled[0] * pooled[1]

        rng = _rng_from_seed(seed, name)
        self.params = {
            "W1": _gaussian(rng, (F, C, fs, fs), weight_scale, self.dtype),
            "b1": np.zeros(F, dtype=self.dtype),
            "W2": _gaussian(rng, (flat, hidden_dim), weight_scale, self.dtype),
            "b2": np.zeros(hidden_dim, dtype=self.dtype),
            "W3": _gaussian(rng, (hidden_dim, self.num_classes), weight_scale, self.dtype),
            "b3": np.zeros(self.num_classes, dtype=self.dtype),
        }

    @in_engine_step
    def loss(self, X, y=None):
        """X: (N, C, H, W) matching input_dim; y: (N,) labels in [0, num_classes) or None.

        Returns scores (N, num_classes) when y is None, else (loss, grads).
        """
        X = _as_model_input("ThreeLayerConvNet", X, self.dtype)
        if X.ndim != 4 or X.shape[1:] != self.input_dim:
            raise ValueError(
                f"ThreeLayerConvNet: X must have shape (N, C, H, W) = (N, {', '.join(map(str, self.input_dim))}) "
                f"to match input_dim={self.input_dim}, got shape {X.shape}"
            )
        if y is not None:
            y = _model_labels("ThreeLayerConvNet", y, X.shape[0], self.num_classes)
        p = self.params
        h1, cache1 = conv_relu_pool_forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param)
        h2, cache2 = affine_relu_forward(h1, p["W2"], p["b2"])
        scores, cache3 = affine_forward(h2, p["W3"], p["b3"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)
        dh1, grads["W2"], grads["b2"] = affine_relu_backward(dh2, cache2)
        # the images need no gradient: skip the first layer's dx (a GEMM and a col2im)
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dh1, cache1, need_dx=False)
        weights = ("W1", "W2", "W3")
        if self.reg:
            loss = loss + _l2_penalty(p, weights, self.reg, self.dtype)
            _add_l2_grads(grads, p, weights, self.reg)
        return self.dtype.type(loss), grads
