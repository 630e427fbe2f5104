"""Fully connected classifiers with cs231n's API: `TwoLayerNet` and `FullyConnectedNet`.

A model holds its learnable arrays in `self.params` (a dict of name -> ndarray)
and exposes `loss(X, y=None)`: without labels it returns the class scores
(N, C); with labels it returns `(loss, grads)`, `grads` keyed like `params`.
Layer state (batch-norm running statistics) lives in `self.bn_params`, never in
`params` (docs/ARCHITECTURE.md, Contract 5). Initialisation takes a seed, a
`np.random.Generator`, or None (a seed drawn from NumPy's global RNG, Contract 6).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..layer_utils import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_ln_relu_backward,
    affine_ln_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
)
from ..checks import check_int as _check_int, check_real as _check_real
from ..fast_layers import affine_backward_fast as _affine_backward, affine_forward_fast as _affine_forward, in_engine_step
from ..layers import dropout_backward, dropout_forward, softmax_loss
# cs231n's fc_net does `from ..layers import *` and `from ..layer_utils import *`, and its
# notebooks rely on `from cs231n.classifiers.fc_net import *` giving the layer functions:
# the same names come out of this module's star import (the models use the fast affine).
from .. import layer_utils as _layer_utils, layers as _layers
from ..layers import *  # noqa: F401,F403
from ..layer_utils import *  # noqa: F401,F403
from .base import (
    add_l2_grads as _add_l2_grads,
    as_model_input as _as_model_input,
    model_labels as _model_labels,
    gaussian as _gaussian,
    l2_penalty as _l2_penalty,
    model_dtype as _model_dtype,
    rng_from_seed as _rng_from_seed,
)

_LAYER_NAMES = sorted(
    name for name, obj in vars(_layers).items()
    if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", None) == _layers.__name__
)
__all__ = ["TwoLayerNet", "FullyConnectedNet", *_LAYER_NAMES, *_layer_utils.__all__]


# ----------------------------------------------------------------------------- TwoLayerNet


class TwoLayerNet:
    """affine - relu - affine - softmax.

    X: (N, d1, ..., dk) with d1 * ... * dk = input_dim. Params `W1` (D, H), `b1` (H,),
    `W2` (H, C), `b2` (C,); weights ~ N(0, weight_scale ** 2), biases zero.

    `dtype` defaults to float64, as cs231n's TwoLayerNet (whose notebooks overwrite
    the parameters with float64 arrays); pass np.float32 for the fast path.
    `seed` (None, int or Generator) drives the initialisation.
    """

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3,
                 reg=0.0, dtype=np.float64, seed=None):
        name = "TwoLayerNet"
        self.input_dim = _check_int(name, "input_dim", input_dim)
        hidden_dim = _check_int(name, "hidden_dim", hidden_dim)
        self.num_classes = _check_int(name, "num_classes", num_classes)
        self.reg = _check_real(name, "reg", reg)
        self.dtype = _model_dtype(name, dtype)
        weight_scale = _check_real(name, "weight_scale", weight_scale)
        rng = _rng_from_seed(seed, name)
        self.params = {
            "W1": _gaussian(rng, (self.input_dim, hidden_dim), weight_scale, self.dtype),
            "b1": np.zeros(hidden_dim, dtype=self.dtype),
            "W2": _gaussian(rng, (hidden_dim, self.num_classes), weight_scale, self.dtype),
            "b2": np.zeros(self.num_classes, dtype=self.dtype),
        }

    @in_engine_step
    def loss(self, X, y=None):
        """Scores (N, C) when y is None, else (loss, grads)."""
        X = _as_model_input("TwoLayerNet", X, self.dtype)
        _check_features("TwoLayerNet", X, self.input_dim)
        if y is not None:
            y = _model_labels("TwoLayerNet", y, X.shape[0], self.num_classes)
        p = self.params
        h, cache1 = affine_relu_forward(X, p["W1"], p["b1"])
        scores, cache2 = _affine_forward(h, p["W2"], p["b2"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh, grads["W2"], grads["b2"] = _affine_backward(dscores, cache2)
        _, grads["W1"], grads["b1"] = affine_relu_backward(dh, cache1)
        weights = ("W1", "W2")
        if self.reg:
            loss = loss + _l2_penalty(p, weights, self.reg, self.dtype)
            _add_l2_grads(grads, p, weights, self.reg)
        return self.dtype.type(loss), grads


def _check_features(model, X, input_dim):
    D = int(np.prod(X.shape[1:], dtype=np.int64))
    if D != input_dim:
        raise ValueError(
            f"{model}: each sample of X must have input_dim={input_dim} values, "
            f"got X of shape {X.shape} ({D} values per sample)"
        )


# ----------------------------------------------------------------------------- FullyConnectedNet


class FullyConnectedNet:
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    hidden_dims: list of hidden layer sizes (L - 1 of them, possibly none).
    X: (N, d1, ..., dk) with d1 * ... * dk = input_dim.

    Params `W1`..`WL`, `b1`..`bL`, and for normalised hidden layers `gamma1`..,
    `beta1`.. (ones and zeros). Weights ~ N(0, weight_scale ** 2), biases zero.
    `normalization`: None, 'batchnorm' or 'layernorm'. `self.bn_params` holds one
    dict per hidden layer (running statistics for batch norm, `eps` etc.).

    `dropout_keep_ratio` is the keep probability p (1 disables dropout); `dropout=`
    (cs231n 2019's name) is accepted for it, and giving both with different values
    is a ValueError.
    `self.dropout_param` = {'mode', 'p', 'seed'}. `seed` (None, int or Generator)
    drives the initialisation and is handed to the dropout layers, as in cs231n:
    an int gives the same mask on every call (what a gradient check needs), a
    Generator gives fresh but reproducible masks (what training needs), None
    gives fresh masks drawn from NumPy's global RNG (repeatable after
    np.random.seed, as in cs231n).

    loss(X, y=None) runs in 'test' mode when y is None, else in 'train' mode.
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout_keep_ratio=1,
                 normalization=None, reg=0.0, weight_scale=1e-2, dtype=np.float32, seed=None, dropout=None):
        name = "FullyConnectedNet"
        if dropout is not None:
            # cs231n 2019 called the keep probability `dropout`
            if dropout_keep_ratio != 1 and dropout != dropout_keep_ratio:
                raise ValueError(
                    f"{name}: dropout={dropout!r} and dropout_keep_ratio={dropout_keep_ratio!r} are the same "
                    "setting (the keep probability); give one of them"
                )
            dropout_keep_ratio = dropout
        if isinstance(hidden_dims, numbers.Integral) and not isinstance(hidden_dims, bool):
            hidden_dims = [hidden_dims]
        if not isinstance(hidden_dims, (list, tuple, np.ndarray)):
            raise TypeError(f"{name}: hidden_dims must be a list of positive ints, got {hidden_dims!r}")
        hidden_dims = [_check_int(name, "each of hidden_dims", h) for h in hidden_dims]
        self.input_dim = _check_int(name, "input_dim", input_dim)
        self.num_classes = _check_int(name, "num_classes", num_classes)
        if normalization not in (None, "batchnorm", "layernorm"):
            raise ValueError(
                f"{name}: normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        if isinstance(dropout_keep_ratio, bool) or not isinstance(dropout_keep_ratio, numbers.Real) \
                or not 0 < dropout_keep_ratio <= 1:
            raise ValueError(
                f"{name}: dropout_keep_ratio is a keep probability in (0, 1], got {dropout_keep_ratio!r}"
            )
        self.normalization = normalization
        self.use_dropout = dropout_keep_ratio != 1
        self.reg = _check_real(name, "reg", reg)
        self.dtype = _model_dtype(name, dtype)
        self.num_layers = 1 + len(hidden_dims)
        weight_scale = _check_real(name, "weight_scale", weight_scale)
        rng = _rng_from_seed(seed, name)

        self.params = {}
        dims = [self.input_dim] + hidden_dims + [self.num_classes]
        for i in range(self.num_layers):
            self.params[f"W{i + 1}"] = _gaussian(rng, (dims[i], dims[i + 1]), weight_scale, self.dtype)
            self.params[f"b{i + 1}"] = np.zeros(dims[i + 1], dtype=self.dtype)
            if normalization is not None and i < self.num_layers - 1:
                self.params[f"gamma{i + 1}"] = np.ones(dims[i + 1], dtype=self.dtype)
                self.params[f"beta{i + 1}"] = np.zeros(dims[i + 1], dtype=self.dtype)

        self.dropout_param = {}
        if self.use_dropout:
            # an int seed stays an int (same mask each call, as cs231n); a Generator is
            # shared with the initialisation stream so one seed reproduces the whole run
            self.dropout_param = {"mode": "train", "p": float(dropout_keep_ratio), "seed": seed}
        self.bn_params = []
        if normalization == "batchnorm":
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]
        elif normalization == "layernorm":
            self.bn_params = [{} for _ in range(self.num_layers - 1)]

    @in_engine_step
    def loss(self, X, y=None):
        """Scores (N, C) when y is None ('test' mode), else (loss, grads) ('train' mode)."""
        X = _as_model_input("FullyConnectedNet", X, self.dtype)
        _check_features("FullyConnectedNet", X, self.input_dim)
        if y is not None:
            y = _model_labels("FullyConnectedNet", y, X.shape[0], self.num_classes)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        if self.normalization == "batchnorm":
            for bn_param in self.bn_params:
                bn_param["mode"] = mode

        p = self.params
        L = self.num_layers
        caches = []
        h = X
        dropout_param = self.dropout_param
        if self.use_dropout and mode == "train" and dropout_param.get("seed") is None:
            # no seed: this call's masks from NumPy's global RNG (Contract 6), so that
            # np.random.seed(...) in a notebook repeats them; the Solver installs its own
            dropout_param = dict(dropout_param, seed=np.random.default_rng(np.random.randint(2**31)))
        for i in range(1, L):
            W, b = p[f"W{i}"], p[f"b{i}"]
            if self.normalization == "batchnorm":
                h, c = affine_bn_relu_forward(h, W, b, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            elif self.normalization == "layernorm":
                h, c = affine_ln_relu_forward(h, W, b, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            else:
                h, c = affine_relu_forward(h, W, b)
            dc = None
            if self.use_dropout:
                h, dc = dropout_forward(h, dropout_param)
            caches.append((c, dc))
        scores, last_cache = _affine_forward(h, p[f"W{L}"], p[f"b{L}"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh, grads[f"W{L}"], grads[f"b{L}"] = _affine_backward(dscores, last_cache)
        for i in range(L - 1, 0, -1):
            c, dc = caches[i - 1]
            if self.use_dropout:
                dh = dropout_backward(dh, dc)
            if self.normalization == "batchnorm":
                dh, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = \
                    affine_bn_relu_backward(dh, c)
            elif self.normalization == "layernorm":
                dh, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = \
                    affine_ln_relu_backward(dh, c)
            else:
                dh, grads[f"W{i}"], grads[f"b{i}"] = affine_relu_backward(dh, c)
        weights = [f"W{i}" for i in range(1, L + 1)]
        if self.reg:
            loss = loss + _l2_penalty(p, weights, self.reg, self.dtype)
            _add_l2_grads(grads, p, weights, self.reg)
        return self.dtype.type(loss), grads
