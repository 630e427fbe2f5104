"""First-order update rules, cs231n-compatible.

Every rule has the signature

    next_w, config = rule(w, dw, config=None)

w: the current parameter array (any shape); dw: its gradient (same shape and
dtype); config: a dict of hyperparameters and of the rule's running state
(momentum velocity, RMSProp cache, Adam moments and step counter). Missing keys
are filled with cs231n's defaults, so `rule(w, dw)` works; the returned config
is the dict passed in (a new one for config=None), to pass on the next step. One config belongs to one parameter array:
the Solver gives each parameter its own copy, so Adam's step counter `t` counts
that parameter's updates.

The config dict is updated in place and returned, as in cs231n: a notebook that
calls `next_w, _ = sgd_momentum(w, dw, config=config)` then finds the new
`config['velocity']` (rmsprop: `cache`; adam: `m`, `v`, `t`) in its own dict, and
missing hyperparameters are filled in there. Hyperparameters are checked first
(a ValueError naming the rule, before the dict is changed): learning_rate finite
and >= 0, momentum, decay_rate, beta1, beta2 in [0, 1), epsilon finite and > 0,
t an int >= 0; unknown keys are a ValueError too. State arrays of another dtype
are cast to w's dtype.

The arrays are not modified: `w`, `dw` and the state arrays passed in keep their
values; the new state arrays are new arrays stored in the dict. dtype is preserved (float32 in, float32 out and float32
state): hyperparameters are converted to Python floats, because a NumPy float64
scalar would upcast float32 arrays under NumPy 2's promotion rules.

Beyond cs231n, in PyTorch's conventions: `sgd_nesterov` (torch.optim.SGD with
nesterov=True and its coupled weight_decay), `sgdw` (Nesterov momentum with
decoupled weight decay) and `adamw` (torch.optim.AdamW). Their `weight_decay` is
per parameter like every other key, so the Solver can exclude biases and
normalisation parameters (Solver(weight_decay_on="weights")). These three run the
NumPy code only; the compiled kernels cover the four cs231n rules.

Rules are found through one registry, `UPDATE_RULES`, via `get_update_rule`.

Two implementations, one result. The NumPy code below is the reference and the
fallback. The compiled extension `funkcije.kernels._update` does the same arithmetic
in one pass over the arrays (w, dw and the state read once, next_w and the new state
written once, subnormals flushed on the way, OpenMP threads for large arrays); it
runs when

  (a) the extension is built (it is compiled together with funkcije.kernels._compiled),
  (b) `funkcije.fast_layers.implementation() == "cython"`: the switch of docs/ARCHITECTURE.md
      Contract 7, so FUNKCIJE_FORCE_NUMPY=1 or `fast_layers.use_implementation("numpy")`
      puts the update rules on NumPy too, and
  (c) w, dw and the state arrays are C-contiguous, aligned float32 or float64
      ndarrays of one dtype;

otherwise the NumPy code runs. A parameter on the GPU (a CuPy array) is updated by
funkcije's CUDA kernels (`kernels/cuda_kernels.py`: every rule, the same operations in
one pass, subnormals flushed), while config's `cuda_kernels` is on; else, and for any
other Array API array, by the NumPy code's formulas in its namespace (one launch per
parameter instead of one per operation: the parameters are small next to the activations,
so launches are much of an update's cost on a GPU). The compiled kernels follow the NumPy code operation
for operation, in the array's dtype (a float32 array computes in float32, as NumPy 2
does with a Python float times a float32 array), so both give the same numbers up to
float rounding (bit for bit on the machines tested). A missing extension is not
announced here: fast_layers already warns once when the compiled code is missing.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from . import fast_layers  # first: it sets OMP_WAIT_POLICY before libgomp loads
from .backend import array_api, is_array
from .kernels import cuda_kernels as _ck
from .checks import check_array, check_same_dtype

try:
    from .kernels import _update as _kernels
except ImportError:  # not built: the NumPy code runs (fast_layers has already warned)
    _kernels = None

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

__all__ = [
    "sgd",
    "sgd_momentum",
    "rmsprop",
    "adam",
    "sgd_nesterov",
    "sgdw",
    "adamw",
    "UPDATE_RULES",
    "DEFAULT_CONFIGS",
    "get_update_rule",
    "update_rule_name",
    "check_config",
]

# cs231n's defaults; the state entries (velocity, cache, m, v) default to zeros
# shaped like w and are created on the first call.
DEFAULT_CONFIGS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 0},
    # beyond cs231n: PyTorch's conventions (and defaults where PyTorch has them)
    "sgd_nesterov": {"learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 0.0},
    "sgdw": {"learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 5e-4},
    "adamw": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 1e-2, "t": 0},
}
_STATE_KEYS = {
    "sgd": (),
    "sgd_momentum": ("velocity",),
    "rmsprop": ("cache",),
    "adam": ("m", "v"),
    "sgd_nesterov": ("velocity",),
    "sgdw": ("velocity",),
    "adamw": ("m", "v"),
}


# the allowed range of every hyperparameter: (low, high, low_inclusive, high_inclusive)
_RANGES = {
    "learning_rate": (0.0, math.inf, True, False),
    "momentum": (0.0, 1.0, True, False),
    "decay_rate": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "epsilon": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
}


def _check_hyper(rule: str, key: str, value):
    """A hyperparameter as a Python float (Adam's `t` as a Python int), in range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{rule}: config[{key!r}] must be a real number, got {value!r}")
    if key == "t":
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise ValueError(f"{rule}: config['t'] (the number of updates so far) must be an int >= 0, got {value!r}")
        return int(value)
    value = float(value)
    low, high, low_in, high_in = _RANGES[key]
    ok = math.isfinite(value) and (value >= low if low_in else value > low) and (
        value <= high if high_in else value < high
    )
    if not ok:
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ValueError(f"{rule}: config[{key!r}] must be finite and in {interval}, got {value!r}")
    return value


def check_config(rule: str, config) -> dict:
    """Validate the hyperparameters of a named rule's config (keys and ranges, not
    the state arrays) and return them with defaults filled in, as a new dict. The
    Solver calls this up front; every rule call does the same checks."""
    if rule not in DEFAULT_CONFIGS:
        raise ValueError(f"check_config: unknown update rule {rule!r}; valid names are {sorted(DEFAULT_CONFIGS)}")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"{rule}: config must be a dict or None, got {type(config).__name__}")
    defaults = DEFAULT_CONFIGS[rule]
    valid = set(defaults) | set(_STATE_KEYS[rule])
    unknown = set(config) - valid
    if unknown:
        # A misspelt key would otherwise be ignored in favour of the default.
        raise ValueError(
            f"{rule}: unknown config keys {sorted(map(str, unknown))}; valid keys are {sorted(valid)}"
        )
    return {key: _check_hyper(rule, key, config.get(key, default)) for key, default in defaults.items()}


def _prepare(rule: str, w, dw, config):
    """Validate (w, dw, config) and return the config dict to update: the caller's
    own dict (cs231n semantics), with defaults filled in and every hyperparameter
    stored as a Python float (Adam's `t` as a Python int); a new dict when config
    is None. Everything is checked before the caller's dict is touched."""
    check_array(rule, "w", w)
    check_array(rule, "dw", dw)
    if dw.shape != w.shape:
        raise ValueError(f"{rule}: dw must have w's shape {w.shape}, got {dw.shape}")
    check_same_dtype(rule, w=w, dw=dw)
    filled = check_config(rule, config)
    if config is None:
        config = {}
    for key in _STATE_KEYS[rule]:
        state = config.get(key)
        if state is None:
            filled[key] = np.zeros_like(w) if isinstance(w, np.ndarray) else array_api(w).zeros_like(w)
            continue
        if not isinstance(w, np.ndarray) and is_array(state) and state.shape == w.shape:
            # a GPU (or other Array API) parameter: its state lives beside it, in its dtype
            filled[key] = state if state.dtype == w.dtype else array_api(w).astype(state, w.dtype)
            continue
        if not isinstance(state, np.ndarray) or state.shape != w.shape:
            got = state.shape if isinstance(state, np.ndarray) else type(state).__name__
            raise ValueError(f"{rule}: config[{key!r}] must be an array of w's shape {w.shape}, got {got}")
        if state.dtype != w.dtype:
            if not (np.issubdtype(state.dtype, np.number) or state.dtype == np.bool_) or np.iscomplexobj(state):
                raise TypeError(f"{rule}: config[{key!r}] must be a real array, got dtype {state.dtype}")
            # Contract 4: w decides; a float64 state must not upcast a float32 parameter
            state = state.astype(w.dtype)
        filled[key] = state
    config.update(filled)
    return config


def _flush_subnormals(*arrays):
    """Set subnormal values (|a| below the smallest normal float, 1.2e-38 in float32)
    to zero, in place, in arrays the rule has just created.

    Why: parameters that get no data gradient (dead ReLU units) decay towards zero
    and their weights and moments become subnormal; x86 arithmetic on subnormals is
    10-100x slower. Measured on ThreeLayerConvNet after 2 CIFAR-10 epochs: 21% of W2
    was subnormal and a training step took 656 ms instead of 97 ms. Zeroing values
    below 1.2e-38 changes no result that matters (PyTorch offers the same through
    torch.set_flush_denormal).
    """
    for a in arrays:
        if isinstance(a, np.ndarray):
            a[np.abs(a) < np.finfo(a.dtype).tiny] = 0
        else:  # CuPy or another Array API library (GPUs flush subnormals in hardware, mostly)
            xp = array_api(a)
            a[xp.abs(a) < xp.finfo(a.dtype).smallest_normal] = 0


def _compiled(w, dw, *state):
    """True when the compiled kernel should run (see the module docstring)."""
    if _kernels is None or fast_layers.implementation() != "cython":
        return False
    if type(w) is not np.ndarray:
        return False
    dtype = w.dtype
    if dtype not in _KERNEL_DTYPES:
        return False
    for a in (w, dw) + state:
        if type(a) is not np.ndarray or a.dtype != dtype:
            return False
        flags = a.flags
        if not (flags.c_contiguous and flags.aligned):
            return False
    return True


def _cuda(w):
    """funkcije's CUDA kernels for a parameter on the GPU (one pass per update, the
    subnormal flush included) while config's cuda_kernels is on; else None."""
    kern = fast_layers._gpu_kernels(w)
    return kern if kern is _ck else None


def _flat(a):
    """A 1-D view of a C-contiguous array."""
    return a.reshape(-1)


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: next_w = w - learning_rate * dw.

    config: `learning_rate` (default 1e-2).
    """
    config = _prepare("sgd", w, dw, config)
    if _compiled(w, dw):
        next_w = np.empty_like(w)
        _kernels.sgd(_flat(w), _flat(dw), _flat(next_w), config["learning_rate"])
        return next_w, config
    if cuda := _cuda(w):
        return cuda.sgd(w, dw, config["learning_rate"]), config
    next_w = w - config["learning_rate"] * dw
    _flush_subnormals(next_w)
    return next_w, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum:
        velocity = momentum * velocity - learning_rate * dw
        next_w   = w + velocity

    config: `learning_rate` (1e-2), `momentum` (0.9), `velocity` (zeros like w).
    """
    config = _prepare("sgd_momentum", w, dw, config)
    if _compiled(w, dw, config["velocity"]):
        next_w, v = np.empty_like(w), np.empty_like(w)
        _kernels.sgd_momentum(
            _flat(w), _flat(dw), _flat(config["velocity"]), _flat(next_w), _flat(v),
            config["learning_rate"], config["momentum"],
        )
        config["velocity"] = v
        return next_w, config
    if cuda := _cuda(w):
        next_w, config["velocity"] = cuda.sgd_momentum(w, dw, config["velocity"], config["learning_rate"],
                                                       config["momentum"])
        return next_w, config
    v = config["momentum"] * config["velocity"] - config["learning_rate"] * dw
    config["velocity"] = v
    next_w = w + v
    _flush_subnormals(next_w, v)
    return next_w, config


def rmsprop(w, dw, config=None):
    """RMSProp: a running average of squared gradients scales each coordinate's step.
        cache  = decay_rate * cache + (1 - decay_rate) * dw**2
        next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)

    config: `learning_rate` (1e-2), `decay_rate` (0.99), `epsilon` (1e-8),
    `cache` (zeros like w).
    """
    config = _prepare("rmsprop", w, dw, config)
    decay = config["decay_rate"]
    if _compiled(w, dw, config["cache"]):
        next_w, cache = np.empty_like(w), np.empty_like(w)
        _kernels.rmsprop(
            _flat(w), _flat(dw), _flat(config["cache"]), _flat(next_w), _flat(cache),
            config["learning_rate"], decay, 1.0 - decay, config["epsilon"],
        )
        config["cache"] = cache
        return next_w, config
    if cuda := _cuda(w):
        next_w, config["cache"] = cuda.rmsprop(w, dw, config["cache"], config["learning_rate"], decay,
                                               config["epsilon"])
        return next_w, config
    cache = decay * config["cache"] + (1.0 - decay) * (dw * dw)
    config["cache"] = cache
    sqrt = np.sqrt if isinstance(w, np.ndarray) else array_api(w).sqrt
    next_w = w - config["learning_rate"] * dw / (sqrt(cache) + config["epsilon"])
    _flush_subnormals(next_w, cache)
    return next_w, config


def adam(w, dw, config=None):
    """Adam (Kingma & Ba, 2015) with bias correction:
        t      = t + 1
        m      = beta1 * m + (1 - beta1) * dw
        v      = beta2 * v + (1 - beta2) * dw**2
        m_hat  = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)
        next_w = w - learning_rate * m_hat / (sqrt(v_hat) + epsilon)

    config: `learning_rate` (1e-3), `beta1` (0.9), `beta2` (0.999), `epsilon` (1e-8),
    `m`, `v` (zeros like w), `t` (0: the number of updates this parameter has had).
    """
    config = _prepare("adam", w, dw, config)
    return _adam_step(w, dw, config)


def _adam_step(w, dw, config, wscale=1.0):
    """Adam's update of w * wscale with a prepared config (shared by adam and adamw,
    whose decoupled decay is the scale)."""
    b1, b2 = config["beta1"], config["beta2"]
    t = config["t"] + 1
    if cuda := _cuda(w):
        next_w, m, v = cuda.adam(w, dw, config["m"], config["v"], config["learning_rate"], b1, b2,
                                 config["epsilon"], t, wscale)
        config.update(m=m, v=v, t=t)
        return next_w, config
    if wscale != 1.0:
        w = w * wscale
    if _compiled(w, dw, config["m"], config["v"]):
        # The same formulas and constants as the NumPy code below, in one pass.
        next_w, m, v = np.empty_like(w), np.empty_like(w), np.empty_like(w)
        _kernels.adam(
            _flat(w), _flat(dw), _flat(config["m"]), _flat(config["v"]),
            _flat(next_w), _flat(m), _flat(v),
            b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / math.sqrt(1.0 - b2**t), config["epsilon"],
            -config["learning_rate"] / (1.0 - b1**t),
        )
        config.update(m=m, v=v, t=t)
        return next_w, config
    if not isinstance(w, np.ndarray):  # CuPy or another Array API library: the formulas as written
        m = b1 * config["m"] + (1.0 - b1) * dw
        v = b2 * config["v"] + (1.0 - b2) * (dw * dw)
        denom = array_api(w).sqrt(v) * (1.0 / math.sqrt(1.0 - b2**t)) + config["epsilon"]
        next_w = w - (config["learning_rate"] / (1.0 - b1**t)) * (m / denom)
        _flush_subnormals(next_w, m, v)
        config.update(m=m, v=v, t=t)
        return next_w, config
    # Same formulas, arranged so that a large weight (ThreeLayerConvNet's 8192 x 500)
    # costs four fresh arrays (m, v, next_w and one scratch) instead of about fifteen
    # temporaries: the update rule was as slow as the model's forward and backward.
    # The corrections are Python floats, so float32 moments stay float32.
    scratch = np.multiply(dw, 1.0 - b1)
    m = np.multiply(config["m"], b1)
    m += scratch
    v = np.multiply(dw, dw)
    v *= 1.0 - b2
    np.multiply(config["v"], b2, out=scratch)
    v += scratch
    # sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - b2**t) + eps
    np.sqrt(v, out=scratch)
    scratch *= 1.0 / math.sqrt(1.0 - b2**t)
    scratch += config["epsilon"]
    next_w = np.divide(m, scratch, out=scratch)
    next_w *= -config["learning_rate"] / (1.0 - b1**t)
    next_w += w
    _flush_subnormals(next_w, m, v)
    config.update(m=m, v=v, t=t)
    return next_w, config




def sgd_nesterov(w, dw, config=None):
    """SGD with Nesterov momentum, as torch.optim.SGD(nesterov=True, weight_decay=wd):
        g        = dw + weight_decay * w      (L2 through the gradient, PyTorch's form)
        velocity = momentum * velocity + g
        next_w   = w - learning_rate * (g + momentum * velocity)

    config: `learning_rate` (1e-2), `momentum` (0.9), `weight_decay` (0), `velocity`
    (zeros like w). The velocity is in gradient units (PyTorch's momentum buffer), not
    pre-multiplied by the learning rate as in sgd_momentum, so a learning-rate
    schedule scales the whole step at once, as in PyTorch.
    """
    config = _prepare("sgd_nesterov", w, dw, config)
    return _nesterov_step(w, dw, config, config["weight_decay"], 0.0)


def sgdw(w, dw, config=None):
    """SGD with Nesterov momentum and decoupled weight decay (SGDW, Loshchilov &
    Hutter, 2019): the decay shrinks w directly instead of entering the momentum:
        velocity = momentum * velocity + dw
        next_w   = w - learning_rate * (dw + momentum * velocity) - learning_rate * weight_decay * w

    config: `learning_rate` (1e-2), `momentum` (0.9), `weight_decay` (5e-4), `velocity`.
    The decay is scaled by the learning rate, so it follows the schedule (as AdamW's).
    """
    config = _prepare("sgdw", w, dw, config)
    return _nesterov_step(w, dw, config, 0.0, config["weight_decay"])


def _nesterov_step(w, dw, config, coupled, decoupled):
    lr, mu = config["learning_rate"], config["momentum"]
    if cuda := _cuda(w):
        next_w, config["velocity"] = cuda.nesterov(w, dw, config["velocity"], lr, mu, coupled, decoupled)
        return next_w, config
    g = dw + coupled * w if coupled else dw
    v = config["velocity"] * mu
    v += g
    step = v * mu
    step += g
    if decoupled:
        step += decoupled * w
    step *= -lr
    next_w = step
    next_w += w
    _flush_subnormals(next_w, v)
    config["velocity"] = v
    return next_w, config


def adamw(w, dw, config=None):
    """Adam with decoupled weight decay, as torch.optim.AdamW:
        w'     = w * (1 - learning_rate * weight_decay)
        next_w = adam's update of w' with dw (same moments and bias correction)

    config: adam's keys plus `weight_decay` (1e-2, PyTorch's default).
    """
    config = _prepare("adamw", w, dw, config)
    return _adam_step(w, dw, config, 1.0 - config["learning_rate"] * config["weight_decay"])


def _scalar_safe(rule):
    """The rule also for a 0-d parameter (a learnt scale, say): NumPy arithmetic on 0-d
    arrays gives scalars, which the in-place steps cannot write, so such a parameter,
    its gradient and its state go through as shape (1,) and come back as shape ()."""
    name = rule.__name__

    @functools.wraps(rule)
    def step(w, dw, config=None):
        if not (isinstance(w, np.ndarray) and w.ndim == 0 and isinstance(dw, np.ndarray) and dw.ndim == 0):
            return rule(w, dw, config)
        if config is not None:
            for key in _STATE_KEYS[name]:
                if isinstance(config.get(key), np.ndarray) and config[key].ndim == 0:
                    config[key] = config[key].reshape(1)
        try:
            next_w, config = rule(w.reshape(1), dw.reshape(1), config)
        finally:
            for key in _STATE_KEYS[name] if config is not None else ():
                if isinstance(config.get(key), np.ndarray) and config[key].shape == (1,):
                    config[key] = config[key].reshape(())
        return next_w.reshape(()), config

    return step


sgd, sgd_momentum, rmsprop, adam, sgd_nesterov, sgdw, adamw = (
    _scalar_safe(r) for r in (sgd, sgd_momentum, rmsprop, adam, sgd_nesterov, sgdw, adamw))

UPDATE_RULES = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "rmsprop": rmsprop,
    "adam": adam,
    "sgd_nesterov": sgd_nesterov,
    "sgdw": sgdw,
    "adamw": adamw,
}


def get_update_rule(rule):
    """Return the update rule named `rule` (a key of UPDATE_RULES), or `rule` itself
    if it is already a callable with the rule signature.

    Raises ValueError listing the valid names for an unknown name, TypeError for
    anything that is neither a string nor callable.
    """
    if isinstance(rule, str):
        try:
            return UPDATE_RULES[rule]
        except KeyError:
            valid = ", ".join(repr(k) for k in UPDATE_RULES)
            raise ValueError(
                f"get_update_rule: invalid update_rule {rule!r}; valid names are {valid} (or pass a callable)"
            ) from None
    if callable(rule):
        return rule
    raise TypeError(
        f"get_update_rule: update_rule must be a rule name (one of {sorted(UPDATE_RULES)}) or a callable "
        f"rule(w, dw, config) -> (next_w, config), got {type(rule).__name__}"
    )


def update_rule_name(rule) -> str:
    """The registry name of a rule, or 'module:qualname' for a custom callable
    (used to record and compare rules in checkpoints)."""
    if isinstance(rule, str) or not callable(rule):
        try:
            get_update_rule(rule)
        except (ValueError, TypeError) as e:
            raise type(e)(f"update_rule_name: {e}") from None
        return rule
    for name, fn in UPDATE_RULES.items():
        if fn is rule:
            return name
    module = getattr(rule, "__module__", None) or "?"
    qualname = getattr(rule, "__qualname__", None) or type(rule).__qualname__
    return f"{module}:{qualname}"
