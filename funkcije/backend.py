"""Which array module an array belongs to, and moving arrays between host and GPU.

    from funkcije import backend
    xp = backend.namespace(x, w)         # numpy, cupy, or an Array API namespace
    xg = backend.to_device(x, "gpu")      # CuPy array (CuPy imported only here)
    params = backend.to_device(model.params, "cpu")   # dicts, lists, tuples: moved inside

Devices are "cpu" (NumPy arrays) and "gpu" (CuPy arrays on the current CUDA device).
CuPy is an optional dependency (`pip install -e ".[gpu]"`); it is imported only when an
array of it is seen or the GPU is asked for, so without it everything on the CPU works as
before and asking for the GPU raises an ImportError that says what to install.

`namespace` follows the Array API standard's `__array_namespace__` where an array has it
(NumPy >= 2, CuPy >= 13, array-api-strict), so code written against the standard runs
unchanged on each; plain NumPy arrays and scalars give `numpy`.
"""
from __future__ import annotations

import functools
import importlib
import sys

import numpy as np

__all__ = ["DEVICES", "namespace", "array_api", "is_array", "is_floating", "is_integer", "dtype_in", "dtype_name", "copy", "all_finite", "AnyArray", "device_of",
           "to_device", "to_host", "require_cupy", "gpu_available", "device_name", "asarray_like", "take_rows"]

DEVICES = ("cpu", "gpu")

_CUPY_HINT = ("CuPy is not installed: the GPU needs it. Install the wheel for your CUDA version, "
              "`pip install -e \".[gpu]\"` (cupy-cuda12x) or `pip install -e \".[gpu-cuda13]\"` (cupy-cuda13x)")


def require_cupy(where: str = "funkcije.backend"):
    """The cupy module, or an ImportError naming `where` and what to install."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"{where}: {_CUPY_HINT} ({exc})") from None
    return cupy


def device_name(device: str = "cpu") -> str:
    """What `device` is, for a run's record: the CPU's model name with its family and
    model numbers (from /proc/cpuinfo on Linux, else the platform's name) or the current
    CUDA device's name (needs CuPy)."""
    if device == "gpu":
        cp = require_cupy("device_name")
        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo") as f:
            name = _cpu_name_from_cpuinfo(f)
        if name:
            return name
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def _cpu_name_from_cpuinfo(lines) -> str:
    """The first processor's "model name" in /proc/cpuinfo's `lines`, followed by
    "(family F, model M)" where those are given: a virtual machine may call its CPU just
    "AMD EPYC", and Zen 4 (family 25) and Zen 5 (family 26) differ twofold in AVX-512
    throughput. "" if there is no model name."""
    fields = {}
    for line in lines:
        if not line.strip():
            break  # the first processor's block ends at the first blank line
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name", "")
    if name and "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no"
        return False


def _is_cupy(a) -> bool:
    # without importing CuPy: its arrays' class lives in a cupy module
    return type(a).__module__.split(".")[0] == "cupy"


def namespace(*arrays):
    """The array module of the given arrays (None entries and Python scalars are
    skipped): numpy when there are none. Arrays of two different modules are a
    TypeError (a NumPy array beside a CuPy one is a host/device mix-up)."""
    found = None
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float, complex, np.generic)):
            continue
        if isinstance(a, np.ndarray):
            xp = np
        elif _is_cupy(a):
            xp = sys.modules["cupy"]
        elif hasattr(a, "__array_namespace__"):
            xp = a.__array_namespace__()
        else:
            raise TypeError(f"namespace: {type(a).__name__} is not an array")
        if found is not None and xp is not found:
            raise TypeError(f"namespace: arrays of {found.__name__} and {xp.__name__} mixed; "
                            "move them to one device first (backend.to_device)")
        found = xp
    return np if found is None else found


def array_api(*arrays):
    """A namespace that follows the Array API standard for the given arrays: NumPy
    itself (NumPy >= 2 conforms), for CuPy arrays `array_api_compat.cupy` (the
    array-api-compat wrapper, installed with the `gpu` extra) or CuPy itself without
    it, and an array's own `__array_namespace__()` otherwise (array-api-strict)."""
    xp = namespace(*arrays)
    if xp.__name__ == "cupy":
        try:
            from array_api_compat import cupy as compat
        except ImportError:
            return _with_fallbacks(xp)
        return compat
    return xp


# The standard names funkcije's namespace code uses that a CuPy without array-api-compat
# may lack (older releases predate them), each by its long-standing NumPy-style equivalent.
_FALLBACKS = {
    "permute_dims": lambda m, x, axes: m.transpose(x, axes),
    "matrix_transpose": lambda m, x: m.swapaxes(x, -1, -2),
    "concat": lambda m, arrays, axis=0: m.concatenate(arrays, axis=axis),
    "astype": lambda m, x, dtype, copy=True: x.astype(dtype, copy=copy),
}


class _Fallbacks:
    """A module's attributes, with `_FALLBACKS` for the names it lacks."""

    def __init__(self, module):
        self._module = module
        self.__name__ = module.__name__

    def __getattr__(self, name):
        try:
            return getattr(self._module, name)
        except AttributeError:
            if name not in _FALLBACKS:
                raise
            return functools.partial(_FALLBACKS[name], self._module)


@functools.lru_cache(maxsize=None)
def _with_fallbacks(module):
    return _Fallbacks(module)


def dtype_in(xp, dtype):
    """NumPy `dtype` as `xp`'s dtype object (the same object for NumPy and CuPy;
    array-api-strict has its own)."""
    return getattr(xp, np.dtype(dtype).name)


def dtype_name(a) -> str:
    """The name of the array's dtype ("float32"), comparable across namespaces."""
    if isinstance(a, np.ndarray) or _is_cupy(a):
        return a.dtype.name
    return str(a.dtype).rsplit(".", 1)[-1]


def copy(a):
    """A copy of the array a, in its own namespace."""
    if isinstance(a, np.ndarray) or _is_cupy(a):
        return a.copy()
    return array_api(a).asarray(a, copy=True)


def all_finite(a) -> bool:
    """True when every element of a floating array is finite (other arrays: True)."""
    if isinstance(a, np.ndarray):
        return not np.issubdtype(a.dtype, np.inexact) or bool(np.isfinite(a).all())
    if not is_floating(a):
        return True
    xp = array_api(a)
    return bool(xp.all(xp.isfinite(a)))


def is_array(a) -> bool:
    """A NumPy array, or an array of another library that follows the Array API
    standard (CuPy, array-api-strict); not lists, scalars or NumPy scalars."""
    return isinstance(a, np.ndarray) or (hasattr(a, "__array_namespace__") and hasattr(a, "shape")
                                          and not isinstance(a, np.generic))


class _AnyArrayMeta(type):
    def __instancecheck__(cls, obj):
        return is_array(obj)


class AnyArray(metaclass=_AnyArrayMeta):
    """For isinstance checks: `isinstance(a, AnyArray)` is `is_array(a)`."""


def is_floating(a) -> bool:
    """True when the array's dtype is a real floating type, in any namespace."""
    if isinstance(a, np.ndarray) or _is_cupy(a):
        return np.issubdtype(a.dtype, np.floating)
    return bool(a.__array_namespace__().isdtype(a.dtype, "real floating"))


def is_integer(a) -> bool:
    """True when the array's dtype is an integer (signed or unsigned) type, in any namespace."""
    if isinstance(a, np.ndarray) or _is_cupy(a):
        return np.issubdtype(a.dtype, np.integer)
    return bool(a.__array_namespace__().isdtype(a.dtype, "integral"))


def device_of(a) -> str:
    """"gpu" for a CuPy array, "cpu" for a NumPy array (and anything that is not an
    array), else the module name of the array's namespace (e.g. "array_api_strict")."""
    if _is_cupy(a):
        return "gpu"
    if isinstance(a, np.ndarray) or not is_array(a):
        return "cpu"
    return a.__array_namespace__().__name__.split(".")[0]


def _check_device(where, device):
    """The device's mover target: "cpu", "gpu", or an importable Array API module's
    name ("array_api_strict": how the tests run device code on the CPU)."""
    if device in DEVICES:
        return device
    if isinstance(device, str) and device.isidentifier():
        try:
            module = importlib.import_module(device)
        except ImportError:
            module = None
        if module is not None and hasattr(module, "asarray") and hasattr(module, "__array_api_version__"):
            return module
    raise ValueError(f"{where}: device must be one of {DEVICES} (or an Array API module's name), got {device!r}")


def to_host(a):
    """A NumPy array with a's values (a itself when it is one)."""
    if isinstance(a, np.ndarray):
        return a
    if _is_cupy(a):
        return a.get()
    if hasattr(a, "__dlpack__"):  # the standard's explicit exchange; a copy, as a download is
        return np.array(np.from_dlpack(a), copy=True)
    return np.asarray(a)


def to_device(obj, device: str):
    """obj with every array in it on `device` ("cpu": NumPy, "gpu": CuPy). Dicts, lists
    and tuples are rebuilt with their entries moved; other values pass through. An array
    already there is returned as it is (no copy)."""
    target = _check_device("to_device", device)
    if target == "gpu":
        cp = require_cupy("to_device")
        mover = (lambda a: a if _is_cupy(a) else cp.asarray(to_host(a)))
    elif target == "cpu":
        mover = to_host
    else:
        mover = (lambda a: a if device_of(a) == device else target.asarray(to_host(a)))
    return _map_arrays(obj, mover)


def asarray_like(ref, host):
    """The host (NumPy) array `host` as an array of ref's namespace and device: itself
    when ref is a NumPy array, else uploaded (a copy)."""
    if isinstance(ref, np.ndarray):
        return np.asarray(host)
    return array_api(ref).asarray(np.asarray(host))


def take_rows(X, idx):
    """X[idx] for host integer indices idx (k,): rows of X (N, ...) gathered where X
    lives (one `take` on the device for a device array; X[idx] for NumPy)."""
    if isinstance(X, np.ndarray):
        return X[idx]
    return array_api(X).take(X, asarray_like(X, np.asarray(idx, dtype=np.int64)), axis=0)


def _map_arrays(obj, fn):
    if is_array(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_arrays(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_arrays(v, fn) for v in obj)
    return obj
