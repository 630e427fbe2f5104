"""Validation, parameter normalisation and shape arithmetic, in one place.

Every layer (reference and fast) calls these helpers at its boundary so that bad
input is rejected with the same clear message on both paths (docs/ARCHITECTURE.md,
Contracts 2 and 3). Nothing here allocates large arrays.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
from typing import NamedTuple

import numpy as np

from .backend import array_api, is_array, is_floating, is_integer, namespace

__all__ = [
    "as_pair",
    "check_array",
    "check_same_dtype",
    "check_labels",
    "check_mode",
    "check_dout",
    "check_perturbable",
    "check_step",
    "affine_shapes",
    "conv_output_size",
    "ConvGeometry",
    "conv_geometry",
    "PoolGeometry",
    "pool_geometry",
    "as_dout",
    "as_params",
    "check_param_keys",
    "check_real_in",
    "Cache",
    "unpack_cache",
    "cache_array",
    "describe",
    "names_errors",
    "errors_named",
    "check_callable",
    "as_real_array",
    "as_generator",
]


def as_pair(value, name: str, layer: str) -> tuple[int, int]:
    """Normalise an int or an (h, w) pair to a tuple of two Python ints."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {name} must be an int or an (h, w) pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{layer}: {name} must be an int or an (h, w) pair of ints, got {value!r}")


def check_array(layer: str, name: str, a, ndim=None, floating: bool = True) -> np.ndarray:
    """Check that `a` is an ndarray of the expected rank (int or tuple of allowed ranks)
    and, by default, of a floating dtype. Returns `a` unchanged."""
    if not is_array(a):
        raise TypeError(f"{layer}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if floating and not is_floating(a):
        raise TypeError(
            f"{layer}: {name} must have a floating dtype (float32 or float64), got {a.dtype}"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(
                f"{layer}: {name} must have {want} dimensions, got shape {a.shape} ({a.ndim} dimensions)"
            )
    return a


def check_same_dtype(layer: str, **arrays) -> np.dtype:
    """All arrays must share one floating dtype: mixing float32 and float64 would
    silently upcast the fast float32 path, so it is an error instead."""
    try:  # a CuPy array beside a NumPy one: say so before their dtypes are compared
        namespace(*arrays.values())
    except TypeError as exc:
        raise TypeError(f"{layer}: {exc}") from None
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    first = next(iter(dtypes.values()))
    if any(d != first for d in dtypes.values()):
        listing = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{layer}: all arrays must share one dtype, got {listing}")
    return first


def check_labels(layer: str, y, num_samples: int, num_classes: int) -> np.ndarray:
    """Labels: integer array of shape (N,) with values in [0, C)."""
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{layer}: labels y must be integers, got dtype {y.dtype}")
    if y.shape != (num_samples,):
        raise ValueError(
            f"{layer}: labels y must have shape ({num_samples},) to match the scores, got {y.shape}"
        )
    if num_samples and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{layer}: labels must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values from {y.min()} to {y.max()}"
        )
    return y


def check_mode(layer: str, param: dict, pname: str) -> str:
    if not isinstance(param, dict):
        raise TypeError(f"{layer}: {pname} must be a dict, got {type(param).__name__}")
    if "mode" not in param:
        raise ValueError(f"{layer}: {pname}['mode'] is required and must be 'train' or 'test'")
    mode = param["mode"]
    if mode not in ("train", "test"):
        raise ValueError(f"{layer}: {pname}['mode'] must be 'train' or 'test', got {mode!r}")
    return mode


def conv_output_size(layer, size, kernel, stride, pad, dilation, x_shape, detail) -> int:
    """Output length along one axis: floor((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1.

    This is the only place output sizes are computed; pooling is the case pad=0,
    dilation=1. Raises ValueError naming the layer, shapes and parameters when the
    (dilated) window does not fit.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - span) // stride + 1
    if out <= 0:
        raise ValueError(
            f"{layer}: empty output: the window spans {span} but the padded input is only "
            f"{size + 2 * pad} along one axis (input shape {tuple(x_shape)}, {detail})"
        )
    return int(out)


class ConvGeometry(NamedTuple):
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_h: int
    out_w: int


def conv_geometry(layer: str, x, w, conv_param) -> ConvGeometry:
    """Validate a convolution's inputs and return its normalised geometry.

    x: (N, C, H, W); w: (F, C // groups, HH, WW); conv_param keys `stride` and
    `pad` (int or (h, w) pair), optional `dilation` (default 1) and `groups` (default 1).
    """
    check_array(layer, "x", x, 4)
    check_array(layer, "w", w, 4)
    if not isinstance(conv_param, dict):
        raise TypeError(f"{layer}: conv_param must be a dict, got {type(conv_param).__name__}")
    unknown = set(conv_param) - {"stride", "pad", "dilation", "groups"}
    if unknown:
        raise ValueError(
            f"{layer}: unknown conv_param keys {sorted(unknown)}; valid keys are "
            "'stride', 'pad', 'dilation', 'groups'"
        )
    stride = as_pair(conv_param.get("stride", 1), "stride", layer)
    pad = as_pair(conv_param.get("pad", 0), "pad", layer)
    dilation = as_pair(conv_param.get("dilation", 1), "dilation", layer)
    groups = conv_param.get("groups", 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{layer}: groups must be an int, got {groups!r}")
    groups = int(groups)
    params = f"stride={stride}, pad={pad}, dilation={dilation}, groups={groups}"
    if min(stride) < 1:
        raise ValueError(f"{layer}: stride must be >= 1, got {stride}")
    if min(pad) < 0:
        raise ValueError(f"{layer}: pad must be >= 0, got {pad}")
    if min(dilation) < 1:
        raise ValueError(f"{layer}: dilation must be >= 1, got {dilation}")
    N, C, H, W = x.shape
    F, Cg, HH, WW = w.shape
    if groups < 1 or C % groups or F % groups:
        raise ValueError(
            f"{layer}: groups={groups} must be >= 1 and divide both the input channels C={C} "
            f"and the filters F={F} (x shape {x.shape}, w shape {w.shape})"
        )
    if Cg * groups != C:
        raise ValueError(
            f"{layer}: channel mismatch: x has C={C} channels, so with groups={groups} w must "
            f"have shape (F, {C // groups}, HH, WW), got w shape {w.shape}"
        )
    if min(HH, WW, F) < 1:
        raise ValueError(f"{layer}: w must have at least one filter and a non-empty kernel, got {w.shape}")
    detail = f"w shape {w.shape}, {params}"
    out_h = conv_output_size(layer, H, HH, stride[0], pad[0], dilation[0], x.shape, detail)
    out_w = conv_output_size(layer, W, WW, stride[1], pad[1], dilation[1], x.shape, detail)
    return ConvGeometry(stride, pad, dilation, groups, out_h, out_w)


class PoolGeometry(NamedTuple):
    pool_height: int
    pool_width: int
    stride: tuple[int, int]
    out_h: int
    out_w: int


def pool_geometry(layer: str, x, pool_param) -> PoolGeometry:
    """Validate a pooling layer's input and return its geometry.

    x: (N, C, H, W); pool_param keys `pool_height`, `pool_width` (required) and
    `stride` (int or (h, w) pair; default: the window size). The output size is
    floored, as in PyTorch: windows that do not tile the input drop the remainder.
    """
    check_array(layer, "x", x, 4)
    if not isinstance(pool_param, dict):
        raise TypeError(f"{layer}: pool_param must be a dict, got {type(pool_param).__name__}")
    unknown = set(pool_param) - {"pool_height", "pool_width", "stride"}
    if unknown:
        raise ValueError(
            f"{layer}: unknown pool_param keys {sorted(unknown)}; valid keys are "
            "'pool_height', 'pool_width', 'stride'"
        )
    for key in ("pool_height", "pool_width"):
        if key not in pool_param:
            raise ValueError(f"{layer}: pool_param['{key}'] is required")
    ph, pw = as_pair((pool_param["pool_height"], pool_param["pool_width"]), "pool_height/pool_width", layer)
    if min(ph, pw) < 1:
        raise ValueError(f"{layer}: pool_height and pool_width must be >= 1, got ({ph}, {pw})")
    stride = as_pair(pool_param.get("stride", (ph, pw)), "stride", layer)
    if min(stride) < 1:
        raise ValueError(f"{layer}: stride must be >= 1, got {stride}")
    detail = f"pool {ph}x{pw}, stride={stride}"
    out_h = conv_output_size(layer, x.shape[2], ph, stride[0], 0, 1, x.shape, detail)
    out_w = conv_output_size(layer, x.shape[3], pw, stride[1], 0, 1, x.shape, detail)
    return PoolGeometry(ph, pw, stride, out_h, out_w)


def check_dout(layer: str, dout, expected_shape, dtype) -> np.ndarray:
    """The upstream gradient must match the forward output's shape and dtype."""
    check_array(layer, "dout", dout)
    if dout.shape != tuple(expected_shape):
        raise ValueError(
            f"{layer}: dout must have the forward output's shape {tuple(expected_shape)}, got {dout.shape}"
        )
    if dout.dtype != dtype:
        raise TypeError(f"{layer}: dout must have the forward dtype {dtype}, got {dout.dtype}")
    return dout


def affine_shapes(layer: str, x, w, b) -> tuple[int, int, int]:
    """Validate affine inputs x (N, d1, ..., dk), w (D, M), b (M,) with
    D = d1 * ... * dk; return (N, D, M)."""
    check_array(layer, "x", x)
    check_array(layer, "w", w, 2)
    check_array(layer, "b", b, 1)
    check_same_dtype(layer, x=x, w=w, b=b)
    if x.ndim < 1:
        raise ValueError(f"{layer}: x must have a batch dimension, got shape {x.shape}")
    N = x.shape[0]
    D = int(np.prod(x.shape[1:], dtype=np.int64))
    if w.shape[0] != D or b.shape[0] != w.shape[1]:
        raise ValueError(
            f"{layer}: x of shape {x.shape} has D={D} features per sample, so w must be "
            f"(D, M) = ({D}, M) and b (M,); got w {w.shape}, b {b.shape}"
        )
    return N, D, w.shape[1]


def check_perturbable(func: str, name: str, x) -> np.ndarray:
    """An array a numerical-gradient routine may perturb in place: a writable ndarray
    of a real floating dtype (an integer array would truncate x + h)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{func}: {name} must be a numpy.ndarray (it is perturbed in place and f reads it), "
            f"got {type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{func}: {name} must have a floating dtype (float64 for gradient checks), got {x.dtype}; "
            f"perturbing a {x.dtype} array in place would truncate the step h, so pass "
            f"{name}.astype(np.float64) and let f read that array"
        )
    if not x.flags.writeable:
        raise ValueError(f"{func}: {name} must be writable (it is perturbed in place and restored), got a read-only array")
    return x


def check_step(func: str, h) -> float:
    """The finite-difference step: a finite real number > 0."""
    if isinstance(h, (bool, np.bool_)) or not isinstance(h, numbers.Real):
        raise TypeError(f"{func}: h must be a real number > 0, got {h!r}")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"{func}: h must be a finite number > 0, got {h!r}")
    return float(h)


def as_dout(layer: str, dout, expected_shape, dtype) -> np.ndarray:
    """The upstream gradient, checked and cast: an ndarray of the forward output's
    shape (no broadcasting); a real numeric dtype other than the forward's is cast
    to it, so the gradients come out in the forward's dtype (Contract 4)."""
    if not is_array(dout):
        raise TypeError(f"{layer}: dout must be a numpy.ndarray, got {type(dout).__name__}")
    if not isinstance(dout, np.ndarray):  # another array library's (CuPy, array-api-strict)
        if not (is_floating(dout) or is_integer(dout)):
            raise TypeError(f"{layer}: dout must have a real numeric dtype, got {dout.dtype}")
    elif dout.dtype.kind not in "biuf":
        raise TypeError(f"{layer}: dout must have a real numeric dtype, got {dout.dtype}")
    if tuple(dout.shape) != tuple(expected_shape):
        raise ValueError(
            f"{layer}: dout must have the forward output's shape {tuple(expected_shape)}, got {dout.shape}"
        )
    if dout.dtype == dtype:
        return dout
    return dout.astype(dtype) if isinstance(dout, np.ndarray) else array_api(dout).astype(dout, dtype)


def as_params(layer: str, x, **params):
    """Parameter arrays given as integer or bool arrays (cs231n writes
    `b = np.array([0, 128])`) cast to x's dtype; others returned unchanged (and
    checked by the layer). x must already be checked to be floating."""
    out = []
    for name, a in params.items():
        if isinstance(a, np.ndarray) and a.dtype.kind in "biu":
            a = a.astype(x.dtype)
        out.append(a)
    return out


def check_param_keys(layer: str, pname: str, param, valid) -> dict:
    """A *_param dict (None allowed, meaning {}) with no keys outside `valid`."""
    if param is None:
        return {}
    if not isinstance(param, dict):
        raise TypeError(f"{layer}: {pname} must be a dict, got {type(param).__name__}")
    unknown = set(param) - set(valid)
    if unknown:
        raise ValueError(
            f"{layer}: unknown {pname} keys {sorted(map(str, unknown))}; valid keys are {sorted(valid)}"
        )
    return param


def check_bool(where: str, name: str, value, ints: bool = False) -> bool:
    """True or False (a string 'false' would be truthy, so only bools pass; with ints, the
    switches of funkcije.config, 0 and 1 too)."""
    if not isinstance(value, (bool, np.bool_)) and not (ints and isinstance(value, numbers.Integral) and value in (0, 1)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(where: str, name: str, value, choices) -> str:
    """One of the strings `choices`: TypeError for anything not a string, ValueError for
    another string."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be one of {', '.join(map(repr, choices))} (a str), got {value!r}")
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_int(where: str, name: str, value, minimum: int = 1, allow_none: bool = False):
    """An int >= minimum (a bool is not one), returned as a Python int; None passes when
    allow_none. TypeError for another type, ValueError below the minimum."""
    if value is None and allow_none:
        return None
    expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be {expected}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")
    return int(value)


def check_real(where: str, name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite real number >= minimum (> minimum when strict), returned as a Python float;
    a bool, a string or None is refused rather than converted."""
    return check_real_in(where, name, value, minimum, float("inf"), low_open=strict, high_open=True)


def check_real_in(layer: str, name: str, value, low, high, low_open=False, high_open=False) -> float:
    """A finite real number in the interval; returned as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: {name} must be a real number, got {value!r}")
    v = float(value)
    ok = np.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{layer}: {name} must be finite and in {interval}, got {value!r}")
    return v


class Cache(tuple):
    """A forward's cache: a tuple, so that it unpacks as cs231n's caches do, tagged
    with the name of the forward that made it. Caches of different layers often have
    the same length (affine's (x, w, b) and layer norm's (xhat, inv_std, gamma)); the
    tag lets a backward tell another layer's cache from its own instead of computing
    a silently wrong gradient from it."""

    def __new__(cls, items, forward=None):
        self = super().__new__(cls, items)
        self.forward = forward
        return self


def describe(obj) -> str:
    if isinstance(obj, Cache) and obj.forward:
        return f"the cache of {obj.forward}"
    if isinstance(obj, tuple):
        return f"a tuple of {len(obj)} ({', '.join(type(v).__name__ for v in obj)})"
    if is_array(obj):
        return f"an ndarray of shape {tuple(obj.shape)}"
    return type(obj).__name__


def unpack_cache(layer: str, cache, forwards, types) -> tuple:
    """The items of a backward's cache. `forwards`: the forwards whose caches this
    backward takes (a str or a tuple of them); `types`: one type (or tuple of types,
    or None for any) per item. A cache tagged by another forward is a TypeError, and
    so is anything that is not a tuple of that many items of those types (a cache
    built by hand, untagged, is accepted when its items fit)."""
    forwards = (forwards,) if isinstance(forwards, str) else tuple(forwards)
    want = " or ".join(forwards)
    tag = cache.forward if isinstance(cache, Cache) else None
    fits = (
        (tag is None or tag in forwards)
        and isinstance(cache, tuple)
        and len(cache) == len(types)
        and all(t is None or isinstance(v, t) for v, t in zip(cache, types))
    )
    if not fits:
        raise TypeError(f"{layer}: cache must be the cache that {want} returned, got {describe(cache)}")
    return cache


def cache_array(layer: str, cache, forward: str) -> np.ndarray:
    """A cache that is one array (relu's x, sigmoid's and tanh's output)."""
    if not is_array(cache):
        raise TypeError(f"{layer}: cache must be the cache that {forward} returned (an ndarray), got {describe(cache)}")
    return cache


def names_errors(fn):
    """Decorator for a function made of other checked functions (a sandwich layer): a
    ValueError or TypeError raised by one of them is raised again with fn's name in
    front, so the message names the function the caller called as well as the part
    that refused the input (`affine_relu_forward: affine_forward_fast: x must ...`)."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with errors_named(name):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def errors_named(name: str, instead_of: str | None = None):
    """The block's ValueError or TypeError raised again with `name: ` in front (once:
    a message that already starts with it is left alone), for a function or
    constructor built from other checked parts: `with errors_named("Solver"): ...`
    gives "Solver: get_update_rule: invalid update_rule 'sgdd' ...". With
    `instead_of`, a message that starts with `instead_of: ` has that replaced by
    `name: ` (a zoo constructor speaking for the Sequential it builds:
    "VGG7: reg must be ..." rather than "VGG7: Sequential: reg must be ...")."""
    try:
        yield
    except (ValueError, TypeError) as e:
        msg = str(e)
        if msg.startswith(name + ":"):
            raise
        if instead_of and msg.startswith(instead_of + ": "):
            msg = msg[len(instead_of) + 2:]
        raise type(e)(f"{name}: {msg}") from e


def check_callable(func: str, name: str, f):
    if not callable(f):
        raise TypeError(f"{func}: {name} must be callable, got {type(f).__name__}")
    return f


def as_real_array(func: str, name: str, a) -> np.ndarray:
    """np.asarray(a) for an argument that may be a list of numbers (lenient, as cs231n),
    but must hold real numbers: a string, an object or complex array is a TypeError
    naming func instead of NumPy's conversion error or a silently dropped imaginary part."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{func}: {name} must be an array of real numbers, got {type(a).__name__} ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{func}: {name} must hold real numbers, got {type(a).__name__} of dtype {arr.dtype}")
    return arr


def as_generator(func: str, seed) -> np.random.Generator:
    """A Generator from a seed (docs/ARCHITECTURE.md, Contract 6): an int >= 0 or a
    Generator; None draws the seed from NumPy's global RNG."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        if seed < 0:
            raise ValueError(f"{func}: seed must be an int >= 0, got {seed!r}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"{func}: seed must be None, an int >= 0 or a numpy.random.Generator, got {seed!r}")
