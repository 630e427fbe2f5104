"""Models with cs231n's interface: `.params` (learnable arrays by name) and
`.loss(X, y=None)` returning scores, or `(loss, grads)` when labels are given."""
from .cnn import ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet

__all__ = ["ThreeLayerConvNet", "FullyConnectedNet", "TwoLayerNet"]
