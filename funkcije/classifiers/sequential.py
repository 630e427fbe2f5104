"""Models as compositions of layer objects (docs/ARCHITECTURE.md, "Models as compositions").

    from funkcije.classifiers.sequential import Sequential, Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Affine
    model = Sequential(
        Conv2d(16, 3, pad=1), BatchNorm2d(), ReLU(), MaxPool2d(2),
        Flatten(), Affine(10),
        input_shape=(3, 32, 32), reg=5e-4, seed=0,
    )
    scores = model.loss(X)              # X: (N, 3, 32, 32) -> (N, 10), test mode
    loss, grads = model.loss(X, y)      # train mode; grads keyed like model.params

Each layer object is a thin adaptor over one functional pair of `funkcije.layers`
(the reference) or `funkcije.fast_layers` (the fast path), with three methods:

    init(rng, in_shape, dtype, scheme) -> (params, state, out_shape)
    forward(x, params, state, train)  -> (out, cache)
    backward(dout, cache, need_dx=True) -> (dx, grads)

`in_shape`/`out_shape` are per-sample shapes ((C, H, W) or (D,)); `params` and
`grads` are the layer's own dicts ({"W", "b"}, {"gamma", "beta"}); `state` is the
layer's state dict (batch-norm running statistics) or None. Which functions run is
a configuration, not a different model: `config.using(layers="reference")` runs
every layer through `funkcije.layers`, so a float64 gradient check of any model
checks the specification.

`Sequential` gives cs231n's model interface, so `funkcije.solver.Solver` trains it
unchanged: `.params` (a flat dict with names such as "conv1.W", "bn1.gamma",
"fc2.b"; parametric layers are numbered per kind through the whole model, blocks
included), `.loss(X, y=None)`, `.reg` (L2 on convolution and affine weights, not
on biases or normalisation parameters), `.dtype`. Running statistics are state,
not params (Contract 5): `model.state` maps a layer name to its dict and
`model.bn_params` lists the same dicts (what the Solver checkpoints and what
evaluation holds in test mode). Dropout masks come from `model.dropout_param['seed']`,
a Generator derived from the model's seed (the Solver checkpoints its state).
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from .. import backend, config
from .. import fast_layers as FL
from .. import layers as L
from ..checks import as_pair, check_array, check_bool, check_choice, check_int, check_labels, check_real, check_real_in, conv_output_size, errors_named
from ..fast_layers import in_engine_step
from ..kernels import xp_kernels as XK
from .base import add_l2_grads, as_model_input, l2_penalty, model_dtype, rng_from_seed

__all__ = [
    "Layer", "Sequential", "Residual",
    "Conv2d", "BatchNorm2d", "GroupNorm", "BatchNorm1d", "LayerNorm",
    "ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool", "Flatten", "Affine", "Dropout", "Scale",
    "PatchWhiten", "INIT_SCHEMES", "LOSSES",
]

INIT_SCHEMES = ("kaiming", "torch", "gaussian")
LOSSES = ("softmax", "hinge")

# The functions each configuration runs (config switch "layers").
_FUNCTIONS = {
    "fast": {
        "conv": (FL.conv_forward_fast, FL.conv_backward_fast),
        "affine": (FL.affine_forward_fast, FL.affine_backward_fast),
        "max_pool": (FL.max_pool_forward_fast, FL.max_pool_backward_fast),
        "avg_pool": (FL.avg_pool_forward_fast, FL.avg_pool_backward_fast),
        "batchnorm2d": (FL.spatial_batchnorm_forward_fast, FL.spatial_batchnorm_backward_fast),
        "batchnorm1d": (L.batchnorm_forward, L.batchnorm_backward_alt),
        "relu": (FL.relu_forward_fast, FL.relu_backward_fast),
        "gelu": (FL.gelu_forward_fast, FL.gelu_backward_fast),
    },
    "reference": {
        "conv": (L.conv_forward_naive, L.conv_backward_naive),
        "affine": (L.affine_forward, L.affine_backward),
        "max_pool": (L.max_pool_forward_naive, L.max_pool_backward_naive),
        "avg_pool": (L.avg_pool_forward_naive, L.avg_pool_backward_naive),
        "batchnorm2d": (L.spatial_batchnorm_forward, L.spatial_batchnorm_backward),
        "batchnorm1d": (L.batchnorm_forward, L.batchnorm_backward_alt),
        "relu": (L.relu_forward, L.relu_backward),
        "gelu": (L.gelu_forward, L.gelu_backward),
    },
}


def _pair_fns(op):
    return _FUNCTIONS[config.get("layers")][op]


def _fixed(vec, x):
    """A layer's constant vector (the zero bias of a bias-free layer, the unit scale
    of a scale-free batch norm) in x's dtype and namespace (off the CPU a small copy
    made anew, on it the layer's own array)."""
    if isinstance(x, np.ndarray):
        return vec.astype(x.dtype, copy=False)
    xp = backend.array_api(x)
    return xp.astype(xp.asarray(vec), x.dtype)


def _spatial(layer, in_shape):
    if len(in_shape) != 3:
        raise ValueError(f"{layer}: needs (C, H, W) inputs, got per-sample shape {tuple(in_shape)}")
    return in_shape


def _draw_weight(rng, shape, fan_in, scheme, dtype):
    """Weights by scheme: kaiming N(0, 2 / fan_in); torch U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (PyTorch's default for Conv2d and Linear); ("gaussian", s) N(0, s^2). Drawn in float64
    and cast, so float32 and float64 models of one seed agree to rounding."""
    name, arg = scheme
    if name == "kaiming":
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif name == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=shape)
    else:
        w = rng.standard_normal(shape) * arg
    return w.astype(dtype)


def _draw_bias(rng, n, fan_in, scheme, dtype):
    if scheme[0] == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=n).astype(dtype)
    return np.zeros(n, dtype=dtype)


def _check_scheme(where, init):
    if isinstance(init, str) and init in ("kaiming", "torch"):
        return (init, None)
    if isinstance(init, (tuple, list)) and len(init) == 2 and init[0] == "gaussian":
        s = init[1]
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not np.isfinite(s) or s <= 0:
            raise ValueError(f"{where}: the gaussian scale must be a positive number, got {s!r}")
        return ("gaussian", float(s))
    raise ValueError(f"{where}: init must be 'kaiming', 'torch' or ('gaussian', scale), got {init!r}")


# ----------------------------------------------------------------------------- the layer protocol


class Layer:
    """Base of the layer objects. `kind` prefixes the layer's name in a model
    ("conv" -> "conv1", "conv2", ...); parametric layers name their params after it."""

    kind = "layer"

    def init(self, rng, in_shape, dtype, scheme):
        """Returns (params, state, out_shape); the default has neither and keeps the shape."""
        return {}, None, tuple(in_shape)

    def forward(self, x, params, state, train):
        raise NotImplementedError

    def backward(self, dout, cache, need_dx=True):
        raise NotImplementedError

    def receptive(self):
        """(kernel span h, w, stride h, w) of a spatial layer, for receptive fields;
        None where the output no longer has positions (Flatten, Affine, global pooling)."""
        return (1, 1, 1, 1)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def _repr_args(self):
        return {}


class _Elementwise(Layer):
    """A parameter-free layer around one functional pair f(x, *settings) -> (out, cache);
    the settings are the constructor's arguments (`_repr_args`, in order)."""

    def forward(self, x, params, state, train):
        return self._fwd(x, *self._repr_args().values())

    def backward(self, dout, cache, need_dx=True):
        return self._bwd(dout, cache), {}


class Conv2d(Layer):
    """Convolution. x (N, C, H, W) -> (N, F, H', W'); params W (F, C // groups, HH, WW),
    b (F,) unless bias=False. kernel, stride, pad, dilation: an int or an (h, w) pair.
    dirac=True: after the usual draw, the first min(F, C) / groups filters of each group
    start as the identity (1 at the kernel's centre tap of their own input channel, 0
    elsewhere; PyTorch's `dirac_`), so the layer first passes its input through, as the
    fast CIFAR-10 recipes initialise their convolutions."""

    kind = "conv"

    def __init__(self, out_channels, kernel, stride=1, pad=0, dilation=1, groups=1, bias=True, dirac=False):
        where = type(self).__name__  # PatchWhiten builds on it
        self.out_channels = check_int(where, "out_channels", out_channels)
        self.kernel = as_pair(kernel, "kernel", where)
        self.stride = as_pair(stride, "stride", where)
        self.pad = as_pair(pad, "pad", where)
        self.dilation = as_pair(dilation, "dilation", where)
        self.groups = check_int(where, "groups", groups)
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or min(self.pad) < 0:
            raise ValueError(
                f"{where}: kernel, stride and dilation must be >= 1 and pad >= 0, got kernel={self.kernel}, "
                f"stride={self.stride}, pad={self.pad}, dilation={self.dilation}"
            )
        self.bias, self.dirac = check_bool(where, "bias", bias), check_bool(where, "dirac", dirac)
        self.conv_param = {"stride": self.stride, "pad": self.pad, "dilation": self.dilation, "groups": self.groups}

    def init(self, rng, in_shape, dtype, scheme):
        C, H, W = _spatial("Conv2d", in_shape)
        F, G = self.out_channels, self.groups
        if C % G or F % G:
            raise ValueError(f"Conv2d: groups={G} must divide the input channels {C} and out_channels {F}")
        kh, kw = self.kernel
        detail = f"kernel={self.kernel}, stride={self.stride}, pad={self.pad}, dilation={self.dilation}"
        Ho = conv_output_size("Conv2d", H, kh, self.stride[0], self.pad[0], self.dilation[0], (None,) + tuple(in_shape), detail)
        Wo = conv_output_size("Conv2d", W, kw, self.stride[1], self.pad[1], self.dilation[1], (None,) + tuple(in_shape), detail)
        fan_in = (C // G) * kh * kw
        params = {"W": _draw_weight(rng, (F, C // G, kh, kw), fan_in, scheme, dtype)}
        if self.dirac:
            Fg, Cg = F // G, C // G
            n = min(Fg, Cg)
            rows = (np.arange(G)[:, None] * Fg + np.arange(n)).ravel()  # filter i of each group
            params["W"][rows] = 0
            params["W"][rows, np.tile(np.arange(n), G), kh // 2, kw // 2] = 1
        if self.bias:
            params["b"] = _draw_bias(rng, F, fan_in, scheme, dtype)
        else:
            self._zeros = np.zeros(F, dtype=dtype)
        return params, None, (F, Ho, Wo)

    def forward(self, x, params, state, train):
        fwd, bwd = _pair_fns("conv")
        b = params["b"] if self.bias else _fixed(self._zeros, x)
        out, cache = fwd(x, params["W"], b, self.conv_param)
        return out, (bwd, cache)

    def backward(self, dout, cache, need_dx=True):
        bwd, c = cache
        if bwd is FL.conv_backward_fast:
            dx, dw, db = bwd(dout, c, need_dx=need_dx)
        else:
            dx, dw, db = bwd(dout, c)
        grads = {"W": dw}
        if self.bias:
            grads["b"] = db
        return dx, grads

    def receptive(self):
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return (dh * (kh - 1) + 1, dw * (kw - 1) + 1) + self.stride

    def _repr_args(self):
        args = {"out_channels": self.out_channels, "kernel": self.kernel}
        for k, default in (("stride", (1, 1)), ("pad", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, k) != default:
                args[k] = getattr(self, k)
        if self.groups != 1:
            args["groups"] = self.groups
        if not self.bias:
            args["bias"] = False
        if self.dirac:
            args["dirac"] = True
        return args


class PatchWhiten(Conv2d):
    """A frozen first convolution that whitens k x k patches (Krizhevsky's ZCA idea in
    the form of the fast CIFAR-10 recipes, e.g. Jordan 2024, "94% on CIFAR-10 in 3.29
    seconds"): the filters are the eigenvectors of the covariance of the training
    images' k x k patches, each divided by sqrt(eigenvalue + eps), taken with both
    signs. x (N, C, H, W) -> (N, 2 C k k, H - k + 1, W - k + 1); no padding, stride 1.

    The filters are state, not params (they are not trained; Contract 5): `fit(x)`
    computes them from inputs (N, C, H, W) — `Sequential.fit(X)` calls it with the
    training images — and until then they are random (kaiming), so an unfitted model
    still runs. The bias b (2 C k k,) is a trained parameter unless bias=False."""

    kind = "white"

    def __init__(self, k=2, eps=5e-4, bias=True):
        super().__init__(1, k, bias=bias)
        self.eps = check_real("PatchWhiten", "eps", eps, strict=True)

    def init(self, rng, in_shape, dtype, scheme):
        C = _spatial("PatchWhiten", in_shape)[0]
        self.out_channels = 2 * C * self.kernel[0] * self.kernel[1]
        params, _, out_shape = super().init(rng, in_shape, dtype, scheme)
        state = {"W": params.pop("W"), "fitted": False}
        return params, state, out_shape

    def fit(self, x, state):
        """Set the filters from inputs x (N, C, H, W): covariance of every k x k patch
        (float64), its eigendecomposition, filters V^T / sqrt(lambda + eps) and their
        negatives, in decreasing order of eigenvalue."""
        check_array("PatchWhiten.fit", "x", x, 4)
        W = state["W"]
        if x.shape[1] != W.shape[1]:
            raise ValueError(f"PatchWhiten.fit: x has {x.shape[1]} channels, the layer was built for {W.shape[1]}")
        kh, kw = self.kernel
        D = W.shape[1] * kh * kw
        total, outer, n = np.zeros(D), np.zeros((D, D)), 0
        for start in range(0, x.shape[0], 256):  # in chunks: all patches at once would be N*H'*W'*D float64s
            chunk = np.lib.stride_tricks.sliding_window_view(x[start:start + 256], (kh, kw), axis=(2, 3))
            patches = chunk.transpose(0, 2, 3, 1, 4, 5).reshape(-1, D).astype(np.float64)
            total += patches.sum(axis=0)
            outer += patches.T @ patches
            n += patches.shape[0]
        if n < 2:
            raise ValueError("PatchWhiten.fit: needs at least two patches")
        mean = total / n
        cov = (outer - n * np.outer(mean, mean)) / (n - 1)
        eigval, eigvec = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigval)[::-1]
        filters = (eigvec[:, order] / np.sqrt(np.maximum(eigval[order], 0) + self.eps)).T
        filters = filters.reshape(-1, W.shape[1], kh, kw)
        state["W"] = np.concatenate([filters, -filters]).astype(W.dtype)
        state["fitted"] = True

    def forward(self, x, params, state, train):
        W = state["W"]
        if W.dtype != x.dtype:
            W = W.astype(x.dtype) if isinstance(W, np.ndarray) else backend.array_api(W).astype(W, x.dtype)
        return super().forward(x, {**params, "W": W}, state, train)

    def backward(self, dout, cache, need_dx=True):
        dx, grads = super().backward(dout, cache, need_dx)
        del grads["W"]  # frozen
        return dx, grads

    def _repr_args(self):
        return {"k": self.kernel[0] if self.kernel[0] == self.kernel[1] else self.kernel, "eps": self.eps} | (
            {} if self.bias else {"bias": False})


class Affine(Layer):
    """x (N, d1, ..., dk) -> (N, M); params W (D, M) with D = d1 * ... * dk, b (M,)."""

    kind = "fc"

    def __init__(self, out_features, bias=True):
        self.out_features = check_int("Affine", "out_features", out_features)
        self.bias = check_bool("Affine", "bias", bias)

    def init(self, rng, in_shape, dtype, scheme):
        D = int(np.prod(in_shape))
        params = {"W": _draw_weight(rng, (D, self.out_features), D, scheme, dtype)}
        if self.bias:
            params["b"] = _draw_bias(rng, self.out_features, D, scheme, dtype)
        else:
            self._zeros = np.zeros(self.out_features, dtype=dtype)
        return params, None, (self.out_features,)

    def forward(self, x, params, state, train):
        fwd, bwd = _pair_fns("affine")
        b = params["b"] if self.bias else _fixed(self._zeros, x)
        out, cache = fwd(x, params["W"], b)
        return out, (bwd, cache)

    def backward(self, dout, cache, need_dx=True):
        bwd, c = cache
        dx, dw, db = bwd(dout, c)
        grads = {"W": dw}
        if self.bias:
            grads["b"] = db
        return dx, grads

    def receptive(self):
        return None

    def _repr_args(self):
        return {"out_features": self.out_features} | ({} if self.bias else {"bias": False})


class _Norm(Layer):
    """gamma (ones) and beta (zeros) of `channels` entries."""

    def _affine_params(self, n, dtype):
        return {"gamma": np.ones(n, dtype=dtype), "beta": np.zeros(n, dtype=dtype)}


class BatchNorm2d(_Norm):
    """Spatial batch norm: per channel over (N, H, W). params gamma, beta (C,); state
    is a bn_param dict (running_mean, running_var, eps, momentum: cs231n's convention,
    running = momentum * running + (1 - momentum) * batch). unbiased=True tracks the
    unbiased batch variance, as PyTorch does; None follows the model's setting."""

    kind = "bn"
    op = "batchnorm2d"
    _rank = 3

    def __init__(self, eps=1e-5, momentum=0.9, unbiased=None, scale=True):
        where = type(self).__name__
        self.eps = check_real(where, "eps", eps, strict=True)
        self.momentum = check_real_in(where, "momentum", momentum, 0, 1)
        if unbiased is not None and not isinstance(unbiased, bool):
            raise TypeError(f"{where}: unbiased must be True, False or None, got {unbiased!r}")
        self.unbiased = unbiased
        check_bool(where, "scale", scale)
        # scale=False: gamma is fixed at 1 and not a parameter (only beta is learnt),
        # as in the fast CIFAR-10 recipes
        self.scale = scale

    def init(self, rng, in_shape, dtype, scheme):
        if len(in_shape) != self._rank:
            want = "(C, H, W)" if self._rank == 3 else "(D,)"
            raise ValueError(f"{type(self).__name__}: needs {want} inputs, got per-sample shape {tuple(in_shape)}")
        C = in_shape[0]
        state = {"mode": "train", "eps": self.eps, "momentum": self.momentum,
                 "running_mean": np.zeros(C, dtype=dtype), "running_var": np.ones(C, dtype=dtype)}
        if self.unbiased:
            state["unbiased"] = True
        params = self._affine_params(C, dtype)
        if not self.scale:
            self._ones = params.pop("gamma")
        return params, state, tuple(in_shape)

    def forward(self, x, params, state, train, relu=False):
        """relu=True (fast layers only; Sequential asks when a ReLU follows): out is
        max(bn(x), 0), from the fused kernel, and the backward includes ReLU's mask."""
        state["mode"] = "train" if train else "test"
        fwd, bwd = _pair_fns(self.op)
        gamma = params["gamma"] if self.scale else _fixed(self._ones, x)
        out, cache = fwd(x, gamma, params["beta"], state, relu=True) if relu else fwd(x, gamma, params["beta"], state)
        return out, (bwd, cache)

    def backward(self, dout, cache, need_dx=True):
        bwd, c = cache
        dx, dgamma, dbeta = bwd(dout, c)
        return dx, ({"gamma": dgamma, "beta": dbeta} if self.scale else {"beta": dbeta})

    def _repr_args(self):
        args = {k: getattr(self, k) for k in ("eps", "momentum") if getattr(self, k) != {"eps": 1e-5, "momentum": 0.9}[k]}
        return args | ({} if self.scale else {"scale": False})


class BatchNorm1d(BatchNorm2d):
    """Batch norm of (N, D) features; as BatchNorm2d otherwise."""

    op = "batchnorm1d"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU
    _rank = 1


class LayerNorm(_Norm):
    """Layer norm of (N, D) features: params gamma, beta (D,)."""

    kind = "ln"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU

    def __init__(self, eps=1e-5):
        self.eps = check_real("LayerNorm", "eps", eps, strict=True)

    def init(self, rng, in_shape, dtype, scheme):
        if len(in_shape) != 1:
            raise ValueError(f"LayerNorm: needs (D,) inputs (put a Flatten before it), got {tuple(in_shape)}")
        return self._affine_params(in_shape[0], dtype), None, tuple(in_shape)

    def forward(self, x, params, state, train):
        return L.layernorm_forward(x, params["gamma"], params["beta"], {"eps": self.eps})

    def backward(self, dout, cache, need_dx=True):
        dx, dgamma, dbeta = L.layernorm_backward(dout, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}


class GroupNorm(_Norm):
    """Group norm with G groups of channels: params gamma, beta (C,)."""

    kind = "gn"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU

    def __init__(self, G, eps=1e-5):
        self.G = check_int("GroupNorm", "G", G)
        self.eps = check_real("GroupNorm", "eps", eps, strict=True)

    def init(self, rng, in_shape, dtype, scheme):
        C = _spatial("GroupNorm", in_shape)[0]
        if C % self.G:
            raise ValueError(f"GroupNorm: G={self.G} must divide the channels C={C}")
        return self._affine_params(C, dtype), None, tuple(in_shape)

    def forward(self, x, params, state, train):
        C = params["gamma"].shape[0]
        out, cache = L.spatial_groupnorm_forward(
            x, params["gamma"].reshape(1, C, 1, 1), params["beta"].reshape(1, C, 1, 1), self.G, {"eps": self.eps})
        return out, cache

    def backward(self, dout, cache, need_dx=True):
        dx, dgamma, dbeta = L.spatial_groupnorm_backward(dout, cache)
        return dx, {"gamma": dgamma.reshape(-1), "beta": dbeta.reshape(-1)}

    def _repr_args(self):
        return {"G": self.G}


class ReLU(_Elementwise):
    kind = "relu"

    def forward(self, x, params, state, train):
        return _pair_fns("relu")[0](x)

    def backward(self, dout, cache, need_dx=True):
        return _pair_fns("relu")[1](dout, cache), {}


class Sigmoid(_Elementwise):
    kind = "sigmoid"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU
    _fwd = staticmethod(L.sigmoid_forward)
    _bwd = staticmethod(L.sigmoid_backward)


class Tanh(_Elementwise):
    kind = "tanh"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU
    _fwd = staticmethod(L.tanh_forward)
    _bwd = staticmethod(L.tanh_backward)


class LeakyReLU(_Elementwise):
    """x where x > 0, a * x elsewhere."""

    kind = "lrelu"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU
    _fwd = staticmethod(L.leaky_relu_forward)
    _bwd = staticmethod(L.leaky_relu_backward)

    def __init__(self, a=0.01):
        self.a = check_real_in("LeakyReLU", "a", a, -np.inf, np.inf, True, True)

    def _repr_args(self):
        return {"a": self.a}


class GELU(_Elementwise):
    """x * Phi(x) (approximate="none", PyTorch's default) or its tanh approximation."""

    kind = "gelu"

    def __init__(self, approximate="none"):
        self.approximate = check_choice("GELU", "approximate", approximate, ("none", "tanh"))

    def forward(self, x, params, state, train):
        return _pair_fns("gelu")[0](x, self.approximate)

    def backward(self, dout, cache, need_dx=True):
        return _pair_fns("gelu")[1](dout, cache), {}

    def _repr_args(self):
        return {"approximate": self.approximate}


class Scale(_Elementwise):
    """Multiply by a constant c (e.g. the scaled output layer of fast CIFAR recipes)."""

    kind = "scale"
    _fwd = staticmethod(L.scale_forward)
    _bwd = staticmethod(L.scale_backward)

    def __init__(self, c):
        self.c = check_real_in("Scale", "c", c, -np.inf, np.inf, True, True)

    def _repr_args(self):
        return {"c": self.c}


class _Pool(Layer):
    op = None

    def __init__(self, k, stride=None):
        where = type(self).__name__
        self.k = as_pair(k, "k", where)
        self.stride = self.k if stride is None else as_pair(stride, "stride", where)
        if min(self.k) < 1 or min(self.stride) < 1:
            raise ValueError(f"{where}: k and stride must be >= 1, got k={self.k}, stride={self.stride}")
        self.pool_param = {"pool_height": self.k[0], "pool_width": self.k[1], "stride": self.stride}

    def init(self, rng, in_shape, dtype, scheme):
        where = type(self).__name__
        C, H, W = _spatial(where, in_shape)
        detail = f"k={self.k}, stride={self.stride}"
        Ho = conv_output_size(where, H, self.k[0], self.stride[0], 0, 1, (None,) + tuple(in_shape), detail)
        Wo = conv_output_size(where, W, self.k[1], self.stride[1], 0, 1, (None,) + tuple(in_shape), detail)
        return {}, None, (C, Ho, Wo)

    def forward(self, x, params, state, train):
        fwd, bwd = _pair_fns(self.op)
        out, cache = fwd(x, self.pool_param)
        return out, (bwd, cache)

    def backward(self, dout, cache, need_dx=True):
        bwd, c = cache
        return bwd(dout, c), {}

    def receptive(self):
        return self.k + self.stride

    def _repr_args(self):
        return {"k": self.k} | ({} if self.stride == self.k else {"stride": self.stride})


class MaxPool2d(_Pool):
    """Max pooling with a k x k (or (kh, kw)) window; stride defaults to k."""

    kind = "pool"
    op = "max_pool"


class AvgPool2d(_Pool):
    """Average pooling with a k x k (or (kh, kw)) window; stride defaults to k."""

    kind = "avgpool"
    op = "avg_pool"


class GlobalAvgPool(_Elementwise):
    """(N, C, H, W) -> (N, C): the mean of each channel's map."""

    kind = "gap"
    host_only = True  # its functions are NumPy's reference ones: no placement off the CPU
    _fwd = staticmethod(L.global_avg_pool_forward)
    _bwd = staticmethod(L.global_avg_pool_backward)

    def init(self, rng, in_shape, dtype, scheme):
        return {}, None, (_spatial("GlobalAvgPool", in_shape)[0],)

    def receptive(self):
        return None


class Flatten(_Elementwise):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk)."""

    kind = "flatten"
    _fwd = staticmethod(L.flatten_forward)
    _bwd = staticmethod(L.flatten_backward)

    def init(self, rng, in_shape, dtype, scheme):
        return {}, None, (int(np.prod(in_shape)),)

    def receptive(self):
        return None


class Dropout(Layer):
    """Inverted dropout with keep probability `keep` in train mode, identity in test
    mode. Masks are drawn from the model's dropout Generator (its `dropout_param['seed']`)."""

    kind = "dropout"

    def __init__(self, keep=0.5):
        self.keep = check_real_in("Dropout", "keep", keep, 0, 1, low_open=True)

    def forward(self, x, params, state, train):
        if not train:
            return x, None
        return L.dropout_forward(x, {"mode": "train", "p": self.keep, "seed": state["seed"]})

    def backward(self, dout, cache, need_dx=True):
        if cache is None:
            return dout, {}
        return L.dropout_backward(dout, cache), {}

    def _repr_args(self):
        return {"keep": self.keep}


class Residual(Layer):
    """x + block(x), block the given layers in order; its output shape must be the input's.
    The backward adds the gradient of the skip path to the block's."""

    kind = "res"

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        _check_layers("Residual", layers)
        self.layers = list(layers)

    def forward(self, x, params, state, train):
        h, caches = _chain_forward(self.layers, x, params, state, train)
        if h.shape != x.shape:
            raise ValueError(f"Residual: the block maps {x.shape} to {h.shape}; x + block(x) needs equal shapes")
        return x + h, caches

    def backward(self, dout, cache, need_dx=True):
        dh, grads = _chain_backward(self.layers, dout, cache, need_dx)
        if dh is None:
            return None, grads
        if isinstance(dh, np.ndarray) and dh.flags.writeable and dh.flags.owndata and not np.may_share_memory(dh, dout):
            dh += dout  # the block's fresh input gradient: no new array for the sum
            return dh, grads
        return dout + dh, grads

    def receptive(self):
        kh = kw = jh = jw = 1
        for layer in self.layers:
            r = layer.receptive()
            if r is None:
                return None
            kh, kw = kh + (r[0] - 1) * jh, kw + (r[1] - 1) * jw
            jh, jw = jh * r[2], jw * r[3]
        return (kh, kw, jh, jw)

    def __repr__(self):
        return f"Residual({', '.join(map(repr, self.layers))})"


def _check_layers(where, layers):
    if not layers:
        raise ValueError(f"{where}: needs at least one layer")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"{where}: every layer must be a funkcije layer object (Conv2d, ReLU, ...), got {layer!r}")


# The cache of a layer whose work a neighbour's call did (fused or swapped pair).
_FUSED = "done with its neighbour"


def _fuses(layers, i):
    """Does layers[i] (a spatial batch norm) run with the ReLU after it as one kernel?
    Only on the fast path: the reference path is the specification, layer by layer."""
    return (i + 1 < len(layers) and type(layers[i + 1]) is ReLU and isinstance(layers[i], BatchNorm2d)
            and layers[i].op == "batchnorm2d" and config.get("layers") == "fast")


def _swaps(layers, i):
    """Is layers[i] a ReLU before a max pool, to be run after it instead? max commutes
    with the monotone ReLU, so pool(relu(x)) = relu(pool(x)) exactly, and the gradient
    is the same too (a window's maximum is where its ReLU'd maximum is; a window with no
    positive element passes no gradient either way); the ReLU then touches a quarter
    of the data (2x2 pools). Fast path only."""
    return (i + 1 < len(layers) and type(layers[i]) is ReLU and type(layers[i + 1]) is MaxPool2d
            and config.get("layers") == "fast")


class _Swapped(tuple):
    """The caches (pool, relu) of a ReLU + MaxPool2d pair run in swapped order."""


def _chain_forward(layers, x, params, states, train):
    """Run layers in order; params[i] / states[i] belong to layers[i]."""
    caches = []
    i = 0
    while i < len(layers):
        if _fuses(layers, i):
            x, c = layers[i].forward(x, params[i], states[i], train, relu=True)
            caches += [c, _FUSED]
            i += 2
            continue
        if _swaps(layers, i):
            x, c_pool = layers[i + 1].forward(x, params[i + 1], states[i + 1], train)
            x, c_relu = layers[i].forward(x, params[i], states[i], train)
            caches += [_FUSED, _Swapped((c_pool, c_relu))]
            i += 2
            continue
        x, c = layers[i].forward(x, params[i], states[i], train)
        caches.append(c)
        i += 1
    return x, caches


def _chain_backward(layers, dout, caches, need_dx, release=False):
    """Backward through layers in reverse order. release=True drops each cache from the
    list once its layer is done, so the activations it holds can be freed during the
    backward pass instead of after it (lower peak memory; the caches are used up)."""
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        cache = caches[i]
        if release:
            caches[i] = None
        if cache is _FUSED:  # done with its neighbour (batch norm + ReLU, or ReLU + pool swapped)
            grads[i] = {}
        elif type(cache) is _Swapped:
            c_pool, c_relu = cache
            dout, _ = layers[i - 1].backward(dout, c_relu)
            dout, grads[i] = layers[i].backward(dout, c_pool, need_dx=need_dx or i > 1)
        else:
            dout, grads[i] = layers[i].backward(dout, cache, need_dx=need_dx or i > 0)
        del cache
    return dout, grads


# ----------------------------------------------------------------------------- Sequential


def _all_layers(layers):
    """Every layer, those inside Residual blocks too."""
    for layer in layers:
        yield layer
        yield from _all_layers(getattr(layer, "layers", ()))


class Sequential:
    """A model: data through `layers` in order, then the loss.

    Sequential(*layers, input_shape=(C, H, W), loss="softmax", label_smoothing=0.0,
               reg=0.0, dtype=np.float32, seed=None, init="kaiming", unbiased_running_var=False)

    input_shape: one sample's shape, (C, H, W) or (D,). loss: "softmax" (cross-entropy,
    with optional label smoothing) or "hinge" (multiclass SVM, margin 1). reg: L2
    strength, 0.5 * reg * sum(W^2) over conv and affine weights. init: "kaiming"
    (N(0, 2 / fan_in) weights, zero biases), "torch" (PyTorch's default uniform for
    weights and biases) or ("gaussian", scale) (cs231n's weight_scale). seed: int,
    Generator, or None (drawn from NumPy's global RNG). unbiased_running_var: every
    BatchNorm that does not say otherwise tracks PyTorch's unbiased running variance.

    X: (N,) + input_shape, cast to `dtype`. `loss(X)` returns scores (N, K) in test
    mode; `loss(X, y)` returns (loss, grads) in train mode (batch statistics, dropout).

    `model.to("gpu")` moves the parameters and state to the GPU (CuPy arrays; the fast
    layers then run `funkcije.kernels.xp_kernels`), `model.to("cpu")` back. On the GPU,
    host batches given to `loss` are uploaded, scores and gradients stay on the GPU, and
    the loss is a Python float. The reference layers and Dropout are host-only.
    """

    device = "cpu"  # where params and state live (`to`)

    def __init__(self, *layers, input_shape, loss="softmax", label_smoothing=0.0, reg=0.0, dtype=np.float32,
                 seed=None, init="kaiming", unbiased_running_var=False):
        where = type(self).__name__
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        _check_layers(where, layers)
        # the model owns its layer objects: one object given twice becomes two layers
        self.layers = [copy.deepcopy(layer) for layer in layers]
        if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
            # one number reads as (D,) features
            input_shape = (input_shape,)
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (1, 3):
            raise ValueError(f"{where}: input_shape must be (C, H, W) or (D,), got {input_shape!r}")
        self.input_shape = tuple(check_int(where, "each of input_shape", d) for d in input_shape)
        self.loss_name = check_choice(where, "loss", loss, LOSSES)
        self.label_smoothing = check_real_in(where, "label_smoothing", label_smoothing, 0, 1, high_open=True)
        if self.label_smoothing and loss != "softmax":
            raise ValueError(f"{where}: label_smoothing needs loss='softmax', got loss={loss!r}")
        self.reg = check_real(where, "reg", reg)
        self.dtype = model_dtype(where, dtype)
        self.init_scheme = _check_scheme(where, init)
        check_bool(where, "unbiased_running_var", unbiased_running_var)
        rng = rng_from_seed(seed, where)

        self.params = {}
        self.state = {}
        self._decayed = []
        self._counts = {}
        self._has_dropout = False
        self.shapes = []  # (name, layer, out_shape) of every layer, blocks' layers included, in order
        # Dropout masks: a Generator of their own, spawned from the initialisation stream
        self.dropout_param = {"mode": "train", "seed": np.random.default_rng(rng.integers(0, 2**63 - 1))}
        shape = self.input_shape
        with errors_named(where):  # a layer that refuses its input shape: say which model it is in
            for layer in self.layers:
                shape = self._build(layer, rng, shape, unbiased_running_var)
        if len(shape) != 1:
            raise ValueError(f"{where}: the last layer must give (N, K) scores, it gives per-sample shape {shape}")
        self.num_classes = shape[0]
        if not self._has_dropout:
            del self.dropout_param
        self.bn_params = [s for s in self.state.values() if "running_mean" in s]

    def _build(self, layer, rng, in_shape, unbiased):
        n = self._counts[layer.kind] = self._counts.get(layer.kind, 0) + 1
        layer.name = f"{layer.kind}{n}"
        if isinstance(layer, Residual):
            shape = in_shape
            for child in layer.layers:
                shape = self._build(child, rng, shape, unbiased)
            if shape != tuple(in_shape):
                raise ValueError(
                    f"{layer.name}'s block maps {tuple(in_shape)} to {shape}; a Residual needs equal shapes")
            self.shapes.append((layer.name, layer, shape))
            return shape
        if isinstance(layer, BatchNorm2d) and layer.unbiased is None:
            layer.unbiased = unbiased
        params, state, out_shape = layer.init(rng, in_shape, self.dtype, self.init_scheme)
        layer.param_names = {k: f"{layer.name}.{k}" for k in params}
        for k, v in params.items():
            self.params[layer.param_names[k]] = v
        if isinstance(layer, (Conv2d, Affine)) and "W" in layer.param_names:
            self._decayed.append(layer.param_names["W"])
        if state is not None:
            self.state[layer.name] = state
        if isinstance(layer, Dropout):
            self._has_dropout = True
        self.shapes.append((layer.name, layer, tuple(out_shape)))
        return tuple(out_shape)

    # -- the parameters and state of each layer, nested like the layers
    def _gather(self, layers):
        params, states = [], []
        for layer in layers:
            if isinstance(layer, Residual):
                p, s = self._gather(layer.layers)
            else:
                p = {k: self.params[full] for k, full in layer.param_names.items()}
                s = self.dropout_param if isinstance(layer, Dropout) else self.state.get(layer.name)
            params.append(p)
            states.append(s)
        return params, states

    def _scatter(self, layers, grads, out):
        for layer, g in zip(layers, grads):
            if isinstance(layer, Residual):
                self._scatter(layer.layers, g, out)
            else:
                for k, v in g.items():
                    out[layer.param_names[k]] = v

    @property
    def _where(self):
        """The name the model's errors carry: the zoo constructor's (set by zoo.py) or the class's."""
        return self.__dict__.get("_name") or type(self).__name__

    def to(self, device):
        """Move every parameter and state array (batch-norm running statistics) to
        `device`, "cpu" or "gpu" (or an Array API module's name, as the tests do with
        "array_api_strict"), in place; returns the model. The params dict keeps its
        identity and keys, so a Solver built on the model sees the moved arrays."""
        where = f"{self._where}.to"
        if device != "cpu":
            if config.get("layers") != "fast" or self._has_dropout:
                raise ValueError(f"{where}: only the fast layers run off the CPU "
                                 "(no reference layers, no Dropout)")
            host = sorted({type(layer).__name__ for layer in _all_layers(self.layers)
                           if getattr(layer, "host_only", False)})
            if host:
                raise ValueError(f"{where}: {', '.join(host)} {'runs' if len(host) == 1 else 'run'} on the CPU only "
                                 "(NumPy's reference functions); "
                                 "the layers that run off it: Conv2d, BatchNorm2d, ReLU, GELU, Scale, MaxPool2d, "
                                 "AvgPool2d, Flatten, Affine, PatchWhiten, Residual")
            if device == "gpu":
                backend.require_cupy(where)
        try:
            moved = backend.to_device({"params": self.params, "state": self.state}, device)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for name, value in moved["params"].items():
            self.params[name] = value
        for layer_name, state in moved["state"].items():
            self.state[layer_name].update(state)
        self.device = device
        return self

    def _check_input(self, X):
        where = self._where
        if self.device != "cpu":
            # a batch on the device already (checked and cast there), or host data uploaded
            if backend.is_array(X) and backend.device_of(X) == self.device:
                xp = backend.array_api(X)
                if X.ndim < 2 or not backend.is_floating(X) and not backend.is_integer(X):
                    raise TypeError(f"{where}: X must be a batch of real numbers, got {X.dtype} {tuple(X.shape)}")
                want = backend.dtype_in(xp, self.dtype)
                X = X if X.dtype == want else xp.astype(X, want)
            else:
                X = backend.to_device(as_model_input(where, X, self.dtype), self.device)
            if tuple(X.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{where}: X must have shape (N,) + input_shape = (N, {', '.join(map(str, self.input_shape))}), "
                    f"got {tuple(X.shape)}")
            return X
        X = as_model_input(where, X, self.dtype)
        if X.shape[1:] != self.input_shape:
            raise ValueError(
                f"{where}: X must have shape (N,) + input_shape = (N, {', '.join(map(str, self.input_shape))}), "
                f"got {X.shape}")
        return X

    def forward(self, X, train=False):
        """Scores (N, K) and the caches of every layer (what `backward` needs)."""
        X = self._check_input(X)
        params, states = self._gather(self.layers)
        return _chain_forward(self.layers, X, params, states, train)

    def backward(self, dscores, caches, need_dx=False, release=False):
        """Gradients of every param (a dict keyed like params), and dx when need_dx.
        release=True uses the caches up (see `_chain_backward`); `loss` does that."""
        dx, grads = _chain_backward(self.layers, dscores, caches, need_dx, release)
        out = {}
        self._scatter(self.layers, grads, out)
        return dx, out

    def _data_loss(self, scores, y):
        if not isinstance(scores, np.ndarray):  # on the GPU: the namespace versions
            y = backend.to_device(y, self.device)
            if self.loss_name == "softmax":
                return XK.softmax_loss(scores, y, self.label_smoothing)
            return XK.svm_loss(scores, y)
        if self.loss_name == "softmax":
            return L.softmax_loss(scores, y, self.label_smoothing)
        return L.svm_loss(scores, y)

    def data_loss(self, scores, y):
        """The training criterion (softmax with this model's label smoothing, or hinge)
        of scores (N, K) against labels y (N,), without regularisation: a float. The
        Solver reports validation loss with it."""
        y = check_labels(f"{self._where}.data_loss", backend.to_host(y), scores.shape[0], self.num_classes)
        return float(self._data_loss(scores, y)[0])

    @in_engine_step
    def loss(self, X, y=None):
        """Scores (N, K) when y is None (test mode), else (loss, grads) (train mode)."""
        if y is not None:
            # labels checked before the forward pass, under the model's name rather than the
            # loss function's (which would check them again, unchanged)
            X = self._check_input(X)
            if self.device != "cpu":
                y = backend.to_host(y) if backend.is_array(y) else y  # checked on the host
            y = check_labels(f"{self._where}.loss", y, X.shape[0], self.num_classes)
        scores, caches = self.forward(X, train=y is not None)
        if y is None:
            return scores
        loss, dscores = self._data_loss(scores, y)
        # the images need no gradient: the first layer skips its dx
        _, grads = self.backward(dscores, caches, need_dx=False, release=True)
        if self.reg:
            loss = loss + l2_penalty(self.params, self._decayed, self.reg, self.dtype)
            add_l2_grads(grads, self.params, self._decayed, self.reg)
        return self.dtype.type(loss), grads

    def fit(self, X, batch_size=500):
        """Data-dependent initialisation: every top-level layer with a `fit` method
        (PatchWhiten) is fitted to the inputs it receives when X (N,) + input_shape,
        typically the training images or a sample of them, flows through the layers
        before it (test mode, in batches). Returns the model."""
        check_int(f"{self._where}.fit", "batch_size", batch_size, 1)
        X = self._check_input(X)
        params, states = self._gather(self.layers)
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "fit"):
                continue
            parts = []
            for start in range(0, X.shape[0], batch_size):
                h, _ = _chain_forward(self.layers[:i], X[start:start + batch_size], params[:i], states[:i], False)
                parts.append(h)
            layer.fit(np.concatenate(parts), states[i])
        return self

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def summary(self, batch_size=50):
        """The layer table (`funkcije.summary.summary`)."""
        from ..summary import summary

        return summary(self, batch_size=batch_size)

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}(\n    {inner},\n    input_shape={self.input_shape}, loss={self.loss_name!r}, " \
               f"reg={self.reg}, dtype={self.dtype.name})"
