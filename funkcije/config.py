"""Every switch of funkcije in one place (docs/ARCHITECTURE.md, Contract 7).

    from funkcije import config
    config.get()                         # {'layers': 'fast', 'implementation': 'cython', ...}
    config.get("winograd")               # True
    config.set(direct=False)             # returns the previous values, {'direct': True}
    with config.using(layers="reference", implementation="numpy"):
        ...                              # scoped: restored on exit, also on an exception

Switches:

    layers           "fast" | "reference"   which layer functions the composed models
                                            (classifiers.Sequential and the zoo) call;
                                            "reference" runs layers.py, the specification
    implementation   "cython" | "numpy"     the fast path's kernels (compiled or NumPy)
    winograd         bool                   Winograd for eligible 3x3 layers
    winograd_tile    2 or 4                 its float32 output tile: F(2x2, 3x3) or F(4x4, 3x3)
    direct           bool                   direct AVX-512 kernels for small float32 layers
    conv_threads     int >= 1               threads the convolution splits its batch over
    workspace_mb     real > 0               bound on the convolution's column workspace (MiB)
    flush_denormals  bool                   flush subnormal floats to zero in the fast path
    cuda_kernels     bool                   on a GPU, the convolution's steps around its GEMMs,
                                            max pooling and batch norm by funkcije's CUDA
                                            kernels (else their Array API form)

Each is read from the environment once, when funkcije is imported:
FUNKCIJE_LAYERS, FUNKCIJE_FORCE_NUMPY (1: implementation "numpy"),
FUNKCIJE_WINOGRAD, FUNKCIJE_WINOGRAD_TILE, FUNKCIJE_DIRECT, FUNKCIJE_CONV_THREADS, FUNKCIJE_WORKSPACE_MB,
FUNKCIJE_FLUSH_DENORMALS, FUNKCIJE_KEEP_HEAP, FUNKCIJE_CUDA_KERNELS. Booleans accept 1/0, true/false, yes/no,
on/off; a value that is none of these, or a workspace that is not a positive finite
number, is a ValueError naming the variable. Importing funkcije changes two things
outside it (kernels/runtime.py says why): OMP_WAIT_POLICY, unless set, which only
applies to funkcije's own OpenMP threads; and on glibc, malloc's mmap and trim
thresholds (1 GiB; FUNKCIJE_KEEP_HEAP=0 leaves them alone).

The values of the kernel switches live with the engine (`funkcije.kernels`, which
reads its defaults from `ENV` below); this module is the one door to read and
change all of them.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from .checks import check_bool, check_choice, check_int, check_real

__all__ = ["get", "set", "using", "names", "ENV", "quick_mode"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _env_bool(var: str, default: bool) -> bool:
    raw = os.environ.get(var)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{var} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _env_number(var: str, kind, default):
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{var} must be a {'whole ' if kind is int else ''}number, got {raw!r}") from None
    if kind is int:
        return check_int(var, "the value", value)
    return check_real(var, "the value", value, strict=True)


def _env_choice(var: str, choices, default: str) -> str:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    return check_choice(var, "the value", raw.strip().lower(), choices)


# Read once, at import (the engine takes its defaults from here).
ENV = {
    "layers": _env_choice("FUNKCIJE_LAYERS", ("fast", "reference"), "fast"),
    "force_numpy": _env_bool("FUNKCIJE_FORCE_NUMPY", False),
    "winograd": _env_bool("FUNKCIJE_WINOGRAD", True),
    "winograd_tile": int(_env_choice("FUNKCIJE_WINOGRAD_TILE", ("2", "4"), "4")),
    "direct": _env_bool("FUNKCIJE_DIRECT", True),
    "conv_threads": _env_number("FUNKCIJE_CONV_THREADS", int, None),
    "workspace_mb": _env_number("FUNKCIJE_WORKSPACE_MB", float, 256.0),
    "flush_denormals": _env_bool("FUNKCIJE_FLUSH_DENORMALS", True),
    "keep_heap": _env_bool("FUNKCIJE_KEEP_HEAP", True),
    "cuda_kernels": _env_bool("FUNKCIJE_CUDA_KERNELS", True),
}

_layers = ENV["layers"]
_cuda_kernels = ENV["cuda_kernels"]


def _fast():
    from . import fast_layers  # imported on use: fast_layers itself imports this module

    return fast_layers


def _engine(name):
    import importlib

    return importlib.import_module(f"funkcije.kernels.{name}")


def _get_layers():
    return _layers


def _set_layers(value):
    global _layers
    _layers = check_choice("config.set", "layers", value, ("fast", "reference"))


def _set_cuda_kernels(value):
    global _cuda_kernels
    _cuda_kernels = check_bool("config.set", "cuda_kernels", value, ints=True)


# name -> (getter, setter); setters validate and raise on bad values
_SWITCHES = {
    "layers": (_get_layers, _set_layers),
    "implementation": (lambda: _fast().implementation(), lambda v: _fast().use_implementation(v)),
    "winograd": (lambda: _engine("conv")._winograd_enabled, lambda v: _fast().use_winograd(v)),
    "winograd_tile": (lambda: _engine("conv").get_winograd_tile(), lambda v: _fast().use_winograd_tile(v)),
    "direct": (lambda: _engine("conv")._direct_enabled, lambda v: _fast().use_direct(v)),
    "conv_threads": (lambda: _fast().get_conv_threads(), lambda v: _fast().set_conv_threads(v)),
    "workspace_mb": (
        lambda: _fast().get_workspace_limit() / 2**20,
        lambda v: _fast().set_workspace_limit(int(check_real("config.set", "workspace_mb", v, strict=True) * 2**20)),
    ),
    "flush_denormals": (lambda: _engine("runtime").flushing_denormals(), lambda v: _fast().use_flush_denormals(v)),
    "cuda_kernels": (lambda: _cuda_kernels, _set_cuda_kernels),
}


def names() -> tuple[str, ...]:
    """The switches' names."""
    return tuple(_SWITCHES)


def _check_names(where, keys):
    unknown = [k for k in keys if k not in _SWITCHES]
    if unknown:
        raise ValueError(f"{where}: unknown switch {', '.join(map(repr, unknown))}; valid: {', '.join(_SWITCHES)}")


def get(name: str | None = None):
    """The value of one switch, or a dict of all of them."""
    if name is None:
        return {k: g() for k, (g, _) in _SWITCHES.items()}
    _check_names("config.get", [name])
    return _SWITCHES[name][0]()


def set(**values) -> dict:
    """Set switches; returns their previous values (a dict to pass back to `set`).
    All names are checked before anything changes; a bad value leaves the others as set."""
    _check_names("config.set", values)
    previous = {}
    name = None
    try:
        for name, v in values.items():
            old = _SWITCHES[name][0]()
            _SWITCHES[name][1](v)
            previous[name] = old
    except Exception as e:
        for k, v in previous.items():
            _SWITCHES[k][1](v)
        if not isinstance(e, (ValueError, TypeError)) or str(e).startswith("config.set"):
            raise
        # the setter names itself (use_winograd: ...); say which call and switch it was
        raise type(e)(f"config.set: {name}: {e}") from e
    return previous


@contextmanager
def using(**values):
    """Context manager: the given switches hold inside the block and are restored after it."""
    previous = set(**values)
    try:
        yield
    finally:
        for k, v in previous.items():
            _SWITCHES[k][1](v)


def quick_mode() -> bool:
    """FUNKCIJE_QUICK, read now (not at import): True shrinks the notebooks' data, networks
    and epochs so the tests run them in minutes; unset or 0 means full settings. A value
    that is not a boolean is a ValueError naming the variable."""
    return _env_bool("FUNKCIJE_QUICK", False)
