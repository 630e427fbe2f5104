"""cs231n's package name for funkcije's modules, so that an assignment notebook's own
import cells run as they are written:

    import funkcije.cs231n
    funkcije.cs231n.install()

    from cs231n.classifiers.cnn import *          # ThreeLayerConvNet, the layers
    from cs231n.layers import *
    from cs231n.fast_layers import *
    from cs231n.solver import Solver
    from cs231n.gradient_check import eval_numerical_gradient_array

`install()` registers a package `cs231n` whose modules are funkcije's (the same module
objects, not copies): layers, fast_layers, layer_utils, optim, solver, gradient_check,
data_utils, vis_utils, classifiers, classifiers.cnn and classifiers.fc_net. Nothing
happens on import; `install()` is the explicit step, and `uninstall()` puts back what
was registered under those names before (a student's own cs231n package, say).
"""
from __future__ import annotations

import importlib
import sys
import types

__all__ = ["MODULES", "install", "uninstall", "installed"]

# cs231n assignment 2's module names, each served by funkcije's module of the same name
MODULES = ("layers", "fast_layers", "layer_utils", "optim", "solver", "gradient_check", "data_utils", "vis_utils",
           "classifiers", "classifiers.cnn", "classifiers.fc_net")

_NAMES = ("cs231n",) + tuple(f"cs231n.{m}" for m in MODULES)
_saved: dict | None = None


def installed() -> bool:
    """Whether `cs231n` currently names funkcije's modules."""
    return getattr(sys.modules.get("cs231n"), "__funkcije__", False)


def install() -> types.ModuleType:
    """Register `cs231n` and its submodules as names of funkcije's modules; returns the
    `cs231n` package. Whatever those names held before (another cs231n package already
    imported) is kept for `uninstall`. Calling it again changes nothing."""
    global _saved
    if installed():
        return sys.modules["cs231n"]
    stale = [n for n in sys.modules if n == "cs231n" or n.startswith("cs231n.")]
    _saved = {n: sys.modules.pop(n) for n in stale}
    package = types.ModuleType("cs231n", "funkcije's modules under cs231n's names (funkcije.cs231n.install)")
    package.__path__ = []  # a package: its submodules are the entries registered below
    package.__funkcije__ = True
    sys.modules["cs231n"] = package
    for name in MODULES:
        module = importlib.import_module(f"funkcije.{name}")
        sys.modules[f"cs231n.{name}"] = module
        parent, _, leaf = f"cs231n.{name}".rpartition(".")
        if parent == "cs231n":
            setattr(package, leaf, module)
    return package


def uninstall() -> None:
    """Undo `install`: the cs231n names go, and what they held before comes back."""
    global _saved
    if not installed():
        return
    for name in [n for n in sys.modules if n == "cs231n" or n.startswith("cs231n.")]:
        del sys.modules[name]
    sys.modules.update(_saved or {})
    _saved = None
