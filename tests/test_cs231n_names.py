"""funkcije.cs231n: an assignment notebook's `from cs231n... import` cells load funkcije."""
import sys
import types

import numpy as np
import pytest

import funkcije.cs231n as names
from funkcije import fast_layers, layers, solver
from funkcije.classifiers import cnn, fc_net


@pytest.fixture
def cs231n_names():
    yield names.install()
    names.uninstall()


NOTEBOOK_CELL = """
import numpy as np
from cs231n.classifiers.cnn import *
from cs231n.classifiers.fc_net import *
from cs231n.data_utils import get_CIFAR10_data
from cs231n.gradient_check import eval_numerical_gradient_array, eval_numerical_gradient
from cs231n.layers import *
from cs231n.fast_layers import *
from cs231n.layer_utils import *
from cs231n.optim import sgd_momentum, rmsprop, adam
from cs231n.solver import Solver
from cs231n.vis_utils import visualize_grid
import cs231n.classifiers.cnn

np.random.seed(231)
model = ThreeLayerConvNet()
X = np.random.randn(50, 3, 32, 32)
y = np.random.randint(10, size=50)
loss, grads = model.loss(X, y)
x = X[:2].astype(np.float32)
out_fast, _ = conv_forward_fast(x, model.params["W1"], model.params["b1"], {"stride": 1, "pad": 3})
out_naive, _ = conv_forward_naive(x, model.params["W1"], model.params["b1"], {"stride": 1, "pad": 3})
"""


def test_a_notebooks_import_cell_runs_on_funkcije(cs231n_names):
    scope = {}
    exec(NOTEBOOK_CELL, scope)
    assert scope["ThreeLayerConvNet"] is cnn.ThreeLayerConvNet
    assert scope["FullyConnectedNet"] is fc_net.FullyConnectedNet
    assert scope["conv_forward_naive"] is layers.conv_forward_naive
    assert scope["conv_forward_fast"] is fast_layers.conv_forward_fast
    assert scope["Solver"] is solver.Solver
    assert scope["cs231n"].classifiers.cnn is cnn
    assert abs(scope["loss"] - np.log(10)) < 0.05  # weight_scale 1e-3: scores near 0
    np.testing.assert_allclose(scope["out_fast"], scope["out_naive"], rtol=1e-4, atol=1e-6)


def test_install_is_explicit_idempotent_and_undone():
    assert "cs231n" not in sys.modules  # importing funkcije.cs231n registered nothing
    package = names.install()
    assert names.install() is package and names.installed()
    assert set(names.MODULES) <= {n[len("cs231n."):] for n in sys.modules if n.startswith("cs231n.")}
    names.uninstall()
    assert not names.installed() and not any(n == "cs231n" or n.startswith("cs231n.") for n in sys.modules)
    names.uninstall()  # nothing to undo: no error


def test_a_students_own_package_comes_back(monkeypatch):
    own = types.ModuleType("cs231n")
    own_layers = types.ModuleType("cs231n.layers")
    monkeypatch.setitem(sys.modules, "cs231n", own)
    monkeypatch.setitem(sys.modules, "cs231n.layers", own_layers)
    names.install()
    try:
        from cs231n.layers import conv_forward_naive  # noqa: F401 (the point is where it comes from)

        assert sys.modules["cs231n.layers"] is layers and conv_forward_naive is layers.conv_forward_naive
    finally:
        names.uninstall()
    assert sys.modules["cs231n"] is own and sys.modules["cs231n.layers"] is own_layers
