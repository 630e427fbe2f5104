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

import sys

import numpy as np

__all__ = ["DEVICES", "namespace", "array_api", "is_array", "is_floating", "is_integer", "AnyArray", "device_of", "to_device",
           "require_cupy", "gpu_available"]

DEVICES = ("cpu", "gpu")

_CUPY_HINT = ("CuPy is not installed: the GPU needs it. Install the wheel for your CUDA version, "
              "e.g. `pip install -e \".[gpu]\"` (cupy-cuda12x) or `pip install cupy-cuda13x`")


def require_cupy(where: str = "funkcije.backend"):
    """The cupy module, or an ImportError naming `where` and what to install."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"{where}: {_CUPY_HINT} ({exc})") from None
    return cupy


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
            return xp
        return compat
    return xp


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
    """"gpu" for a CuPy array, "cpu" for anything else."""
    return "gpu" if _is_cupy(a) else "cpu"


def _check_device(where, device):
    if device not in DEVICES:
        raise ValueError(f"{where}: device must be one of {DEVICES}, got {device!r}")


def to_device(obj, device: str):
    """obj with every array in it on `device` ("cpu": NumPy, "gpu": CuPy). Dicts, lists
    and tuples are rebuilt with their entries moved; other values pass through. An array
    already there is returned as it is (no copy)."""
    _check_device("to_device", device)
    if device == "gpu":
        cp = require_cupy("to_device")
        mover = (lambda a: a if _is_cupy(a) else cp.asarray(a))
    else:
        mover = (lambda a: a.get() if _is_cupy(a) else a)
    return _map_arrays(obj, mover)


def _map_arrays(obj, fn):
    if isinstance(obj, np.ndarray) or _is_cupy(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_arrays(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_arrays(v, fn) for v in obj)
    return obj
