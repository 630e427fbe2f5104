"""A PyTorch twin of a composed model: the same architecture with the same weights.

    from funkcije.torch_twin import to_torch, torch_grads
    twin = to_torch(model)                 # torch.nn.Module, weights copied from model.params
    loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    grads = torch_grads(model, twin)       # dict keyed like model.params (NumPy arrays)

For tests (the layers against PyTorch), benchmarks and the course notebooks that
reproduce a run in PyTorch. PyTorch is never a dependency of funkcije: it is
imported when these functions are called. The twin's dtype is the model's;
batch norm gets PyTorch's momentum 1 - momentum (PyTorch tracks the unbiased
running variance: build the model with unbiased_running_var=True for the running
statistics to agree). Dropout layers become torch.nn.Dropout(1 - keep), whose masks
differ from funkcije's.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_torch", "torch_grads", "torch_params"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # an optional extra
        raise ImportError("funkcije.torch_twin needs PyTorch (pip install torch==2.13.0)") from exc
    return torch


def to_torch(model):
    """A torch.nn.Sequential equivalent to `model` (a funkcije Sequential), with its
    parameters and running statistics copied. `twin.funkcije_params` lists
    (name, torch parameter, transposed) for `torch_grads`."""
    torch = _torch()
    nn = torch.nn
    from .classifiers import sequential as S

    if not isinstance(model, S.Sequential):
        raise TypeError(f"to_torch: model must be a funkcije Sequential, got {type(model).__name__}")
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[model.dtype]
    pairs = []

    class _Lambda(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    class _Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    def tensor(name):
        return torch.tensor(np.array(model.params[name]), dtype=dtype)

    def param(module_param, name, transposed=False):
        value = tensor(name)
        with torch.no_grad():
            module_param.copy_(value.T if transposed else value)
        pairs.append((name, module_param, transposed))

    def build(layers, in_shape):
        mods = []
        shape = in_shape
        for layer in layers:
            out_shape = next(s for _, obj, s in model.shapes if obj is layer)
            if isinstance(layer, S.Residual):
                mods.append(_Residual(build(layer.layers, shape)))
            elif isinstance(layer, S.PatchWhiten):
                # frozen filters from the layer's state; only the bias is a parameter
                m = nn.Conv2d(shape[0], out_shape[0], layer.kernel, bias=layer.bias, dtype=dtype)
                with torch.no_grad():
                    m.weight.copy_(torch.tensor(np.array(model.state[layer.name]["W"]), dtype=dtype))
                m.weight.requires_grad_(False)
                if layer.bias:
                    param(m.bias, layer.param_names["b"])
                mods.append(m)
            elif isinstance(layer, S.Conv2d):
                m = nn.Conv2d(shape[0], layer.out_channels, layer.kernel, stride=layer.stride, padding=layer.pad,
                              dilation=layer.dilation, groups=layer.groups, bias=layer.bias, dtype=dtype)
                param(m.weight, layer.param_names["W"])
                if layer.bias:
                    param(m.bias, layer.param_names["b"])
                mods.append(m)
            elif isinstance(layer, S.Affine):
                if len(shape) > 1:
                    mods.append(nn.Flatten())
                m = nn.Linear(int(np.prod(shape)), layer.out_features, bias=layer.bias, dtype=dtype)
                param(m.weight, layer.param_names["W"], transposed=True)
                if layer.bias:
                    param(m.bias, layer.param_names["b"])
                mods.append(m)
            elif isinstance(layer, (S.BatchNorm2d, S.GroupNorm, S.LayerNorm)):
                C = shape[0]
                if isinstance(layer, S.GroupNorm):
                    m = nn.GroupNorm(layer.G, C, eps=layer.eps, dtype=dtype)
                elif isinstance(layer, S.LayerNorm):
                    m = nn.LayerNorm(C, eps=layer.eps, dtype=dtype)
                else:
                    cls = nn.BatchNorm1d if isinstance(layer, S.BatchNorm1d) else nn.BatchNorm2d
                    m = cls(C, eps=layer.eps, momentum=1 - layer.momentum, dtype=dtype)
                    st = model.state[layer.name]
                    with torch.no_grad():
                        m.running_mean.copy_(torch.tensor(np.array(st["running_mean"]), dtype=dtype))
                        m.running_var.copy_(torch.tensor(np.array(st["running_var"]), dtype=dtype))
                if "gamma" in layer.param_names:
                    param(m.weight, layer.param_names["gamma"])
                else:  # BatchNorm2d(scale=False): gamma fixed at 1
                    m.weight.requires_grad_(False)
                param(m.bias, layer.param_names["beta"])
                mods.append(m)
            elif isinstance(layer, S.ReLU):
                mods.append(nn.ReLU())
            elif isinstance(layer, S.LeakyReLU):
                mods.append(nn.LeakyReLU(layer.a))
            elif isinstance(layer, S.GELU):
                mods.append(nn.GELU(approximate=layer.approximate))
            elif isinstance(layer, S.Sigmoid):
                mods.append(nn.Sigmoid())
            elif isinstance(layer, S.Tanh):
                mods.append(nn.Tanh())
            elif isinstance(layer, S.MaxPool2d):
                mods.append(nn.MaxPool2d(layer.k, stride=layer.stride))
            elif isinstance(layer, S.AvgPool2d):
                mods.append(nn.AvgPool2d(layer.k, stride=layer.stride))
            elif isinstance(layer, S.GlobalAvgPool):
                mods.append(_Lambda(lambda x: x.mean(dim=(2, 3))))
            elif isinstance(layer, S.Flatten):
                mods.append(nn.Flatten())
            elif isinstance(layer, S.Dropout):
                mods.append(nn.Dropout(1 - layer.keep))
            elif isinstance(layer, S.Scale):
                c = layer.c
                mods.append(_Lambda(lambda x, c=c: x * c))
            else:
                raise TypeError(f"to_torch: no PyTorch twin for {layer!r}")
            shape = out_shape
        return nn.Sequential(*mods)

    twin = build(model.layers, model.input_shape)
    twin.funkcije_params = pairs
    return twin


def torch_params(model, twin):
    """The twin's parameters as NumPy arrays keyed and laid out like model.params."""
    return {n: (p.detach().T if t else p.detach()).numpy().copy() for n, p, t in twin.funkcije_params}


def torch_grads(model, twin):
    """The twin's parameter gradients (after a backward) keyed and laid out like model.params."""
    return {n: (p.grad.T if t else p.grad).numpy().copy() for n, p, t in twin.funkcije_params}
