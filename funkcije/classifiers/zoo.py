"""The seed model zoo: the course networks, one constructor each, built on Sequential.

    FERMnistNet, FERCifarNet     Zagreb FER deep-learning lab 2
    VGG7, VGG7BN, ResNet9        Prague `ans` course

Each is `Model(num_classes=10, input_shape=..., **Sequential kwargs)` (reg, dtype,
seed, init, loss, label_smoothing, unbiased_running_var); the VGG and ResNet
variants take `width`, a multiplier on every hidden channel count and hidden
width (at least 1 each), so a quick test can use width=1/16.

Notation of the docstrings: C(n) a 3x3 pad-1 convolution with n filters, N batch
norm, R ReLU, M(k) k x k max pooling, L(n) an affine layer.
"""
from __future__ import annotations

from ..checks import check_choice, check_int, check_real, errors_named
from .sequential import (
    Affine,
    BatchNorm2d,
    Conv2d,
    Flatten,
    GELU,
    MaxPool2d,
    PatchWhiten,
    ReLU,
    Residual,
    Scale,
    Sequential,
)

__all__ = ["FERMnistNet", "FERCifarNet", "VGG7", "VGG7BN", "ResNet9", "FastCifarNet", "ZOO", "build"]


def _scaled(where, width):
    width = check_real(where, "width", width, 0.0, strict=True)
    return lambda n: max(1, int(round(n * width)))


def _named(name, num_classes, make):
    """Build the model with make() under the constructor's name: its argument errors say
    "VGG7: reg must be ..." (not "Sequential: ..." or "Affine: out_features ..."), and
    the model keeps the name for the errors of its .loss and .forward."""
    check_int(name, "num_classes", num_classes)
    with errors_named(name, instead_of="Sequential"):
        model = make()
    model._name = name
    return model


def FERMnistNet(num_classes=10, input_shape=(1, 28, 28), **kwargs):
    """conv 16 5x5 pad 2 - pool 2 - ReLU - conv 32 5x5 pad 2 - pool 2 - ReLU - flatten -
    affine 512 - ReLU - affine num_classes (FER lab 2, the MNIST network)."""
    return _named("FERMnistNet", num_classes, lambda: Sequential(
        Conv2d(16, 5, pad=2), MaxPool2d(2), ReLU(),
        Conv2d(32, 5, pad=2), MaxPool2d(2), ReLU(),
        Flatten(), Affine(512), ReLU(), Affine(num_classes),
        input_shape=input_shape, **kwargs,
    ))


def FERCifarNet(num_classes=10, input_shape=(3, 32, 32), **kwargs):
    """conv 16 5x5 pad 2 - ReLU - pool 3 stride 2 - conv 32 5x5 pad 2 - ReLU - pool 3 stride 2 -
    flatten - affine 256 - ReLU - affine 128 - ReLU - affine num_classes (FER lab 2, CIFAR-10)."""
    return _named("FERCifarNet", num_classes, lambda: Sequential(
        Conv2d(16, 5, pad=2), ReLU(), MaxPool2d(3, stride=2),
        Conv2d(32, 5, pad=2), ReLU(), MaxPool2d(3, stride=2),
        Flatten(), Affine(256), ReLU(), Affine(128), ReLU(), Affine(num_classes),
        input_shape=input_shape, **kwargs,
    ))


def _vgg7(where, batchnorm, num_classes, input_shape, width, kwargs):
    check_int(where, "num_classes", num_classes)  # before Affine(num_classes) refuses it
    w = _scaled(where, width)
    layers = []
    for n in (64, 128, 256, 512, 512):
        if batchnorm:
            layers += [Conv2d(w(n), 3, pad=1, bias=False), BatchNorm2d(), ReLU()]
        else:
            layers += [Conv2d(w(n), 3, pad=1), ReLU()]
        layers.append(MaxPool2d(2))
    layers += [Flatten(), Affine(w(512)), ReLU(), Affine(num_classes)]
    return _named(where, num_classes, lambda: Sequential(*layers, input_shape=input_shape, **kwargs))


def VGG7(num_classes=10, input_shape=(3, 32, 32), width=1.0, **kwargs):
    """CR(64), M(2), CR(128), M(2), CR(256), M(2), CR(512), M(2), CR(512), M(2), LR(512), L(10)."""
    return _vgg7("VGG7", False, num_classes, input_shape, width, kwargs)


def VGG7BN(num_classes=10, input_shape=(3, 32, 32), width=1.0, **kwargs):
    """VGG7 with conv - batch norm - ReLU blocks (bias-free convolutions)."""
    return _vgg7("VGG7BN", True, num_classes, input_shape, width, kwargs)


def ResNet9(num_classes=10, input_shape=(3, 32, 32), width=1.0, out_scale=1.0, **kwargs):
    """CNR(64), CNR(128), M(2), res(CNR(128), CNR(128)), CNR(256), M(2), CNR(512), M(2),
    res(CNR(512), CNR(512)), M(4), LR(512), L(10) — the `ans` course's ResNet9
    (bias-free convolutions, each followed by batch norm and ReLU).

    out_scale: multiplies the scores (a Scale layer after the last affine one when not 1;
    no parameters). The fast ResNet9 recipes use 0.125 (myrtle.ai's ResNet9): the
    max-pooled residual features are large, so at scale 1 one SGD step moves the scores
    by about lr * |h|^2 and early training blows up (measured: loss 6.8 -> 38 in three
    steps at lr 0.008); the scale makes the head's effective learning rate 64x smaller."""
    check_int("ResNet9", "num_classes", num_classes)
    out_scale = check_real("ResNet9", "out_scale", out_scale, 0.0, strict=True)
    w = _scaled("ResNet9", width)

    def cnr(n):
        return [Conv2d(w(n), 3, pad=1, bias=False), BatchNorm2d(), ReLU()]

    layers = [
        *cnr(64), *cnr(128), MaxPool2d(2),
        Residual(*cnr(128), *cnr(128)),
        *cnr(256), MaxPool2d(2),
        *cnr(512), MaxPool2d(2),
        Residual(*cnr(512), *cnr(512)),
        MaxPool2d(4), Flatten(), Affine(w(512)), ReLU(), Affine(num_classes),
    ] + ([Scale(out_scale)] if out_scale != 1 else [])
    return _named("ResNet9", num_classes, lambda: Sequential(*layers, input_shape=input_shape, **kwargs))


def FastCifarNet(num_classes=10, input_shape=(3, 32, 32), width=1.0, widths=(64, 256, 256), activation="relu",
                 **kwargs):
    """The small network of the fast CIFAR-10 recipes (after the architecture of Jordan
    2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"): a frozen 2x2 patch-whitening
    convolution (24 channels, fitted to the training images by `model.fit(X_train)`),
    ReLU, then three groups of conv 3x3 - max-pool 2 - BN - ReLU - conv 3x3 - BN - ReLU
    with widths 64, 256, 256 (bias-free convolutions that start as the identity on their
    first channels, `dirac=True`; batch norms without a learnt scale, running statistics
    with momentum 0.6), a 3x3 max-pool over the last 3x3 map, affine (no bias) and a scale of 1/9.
    About 1.97 M parameters and 0.24 GFLOP per 32x32 image forward.

    activation: "relu" (R above) or "gelu" (GELU, the exact form, in every one of those
    places, as airbench94 has it)."""
    check_int("FastCifarNet", "num_classes", num_classes)
    act = {"relu": ReLU, "gelu": GELU}[check_choice("FastCifarNet", "activation", activation, ("relu", "gelu"))]
    w = _scaled("FastCifarNet", width)
    layers = [PatchWhiten(2), act()]
    for n in widths:
        layers += [
            Conv2d(w(n), 3, pad=1, bias=False, dirac=True), MaxPool2d(2), BatchNorm2d(momentum=0.6, scale=False),
            act(),
            Conv2d(w(n), 3, pad=1, bias=False, dirac=True), BatchNorm2d(momentum=0.6, scale=False), act(),
        ]
    layers += [MaxPool2d(3), Flatten(), Affine(num_classes, bias=False), Scale(1 / 9)]
    return _named("FastCifarNet", num_classes, lambda: Sequential(*layers, input_shape=input_shape, **kwargs))


# command-line names -> constructors
ZOO = {
    "fer_mnist": FERMnistNet,
    "fer_cifar": FERCifarNet,
    "vgg7": VGG7,
    "vgg7bn": VGG7BN,
    "resnet9": ResNet9,
    "fast_cifar": FastCifarNet,
}


def build(name, **kwargs):
    """ZOO[name](**kwargs), with a clear error for an unknown name."""
    if name not in ZOO:
        raise ValueError(f"build: unknown model {name!r}; the zoo has {', '.join(ZOO)}")
    return ZOO[name](**kwargs)
