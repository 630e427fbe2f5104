"""Models with cs231n's interface: `.params` (learnable arrays by name) and
`.loss(X, y=None)` returning scores, or `(loss, grads)` when labels are given.

cs231n's fixed models (ThreeLayerConvNet, TwoLayerNet, FullyConnectedNet), models
composed of layer objects (`Sequential` and the layers in `.sequential`), the seed
zoo (`.zoo`) and `summary`, the layer table of a composed model.
"""
from ..summary import summary
from .cnn import ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet
from .sequential import (
    Affine, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GELU, GlobalAvgPool, GroupNorm,
    LayerNorm, LeakyReLU, MaxPool2d, PatchWhiten, ReLU, Residual, Scale, Sequential, Sigmoid, Tanh,
)
from .zoo import VGG7, VGG7BN, FastCifarNet, FERCifarNet, FERMnistNet, ResNet9

__all__ = [
    "ThreeLayerConvNet", "FullyConnectedNet", "TwoLayerNet",
    "Sequential", "Residual", "Conv2d", "BatchNorm2d", "GroupNorm", "BatchNorm1d", "LayerNorm",
    "ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d", "GlobalAvgPool",
    "Flatten", "Affine", "Dropout", "Scale", "PatchWhiten",
    "FERMnistNet", "FERCifarNet", "VGG7", "VGG7BN", "ResNet9", "FastCifarNet",
    "summary",
]
