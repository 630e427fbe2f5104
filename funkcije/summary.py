"""A composed model's layer table: output shapes, parameters, receptive fields, memory.

    from funkcije.classifiers import FERMnistNet, summary
    print(summary(FERMnistNet(), batch_size=50))

    python -m funkcije.summary --model fer_mnist [--batch-size 50] [--width 1]

Per layer: the output shape at that batch size, the parameter count, the
receptive field of one output position in input pixels and its jump (the
distance in input pixels between neighbouring output positions; "-" once a layer
has no positions left), and the activation memory the layer keeps for the
backward pass. The memory is measured, not estimated: one training-mode forward
pass runs on a random batch (on copies of the model's state, which stays
untouched) and the arrays in each layer's cache are added up, every buffer once,
parameters excluded, counted at the first layer that keeps it (so the first layer
holds the input batch). Totals: parameters, their bytes in the model's dtype, and
the activation memory of a training step at that batch size.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import NamedTuple

import numpy as np

__all__ = ["summary", "Summary", "SummaryRow", "main"]


class SummaryRow(NamedTuple):
    name: str            # "conv1", "res1", ...
    layer: str           # the layer object's repr
    depth: int           # 0 for the model's layers, 1 inside a Residual block, ...
    output_shape: tuple  # (N, ...) at the summary's batch size
    params: int
    receptive_field: tuple | None  # (h, w) in input pixels, None after Flatten / Affine / global pooling
    jump: tuple | None             # (h, w) input pixels between neighbouring outputs
    activation_bytes: int          # what the layer's cache keeps for the backward pass


class Summary(NamedTuple):
    rows: list
    batch_size: int
    input_shape: tuple
    dtype: np.dtype
    total_params: int
    param_bytes: int
    activation_bytes: int

    def __str__(self):
        return format_table(self)

    __repr__ = __str__


def _mib(nbytes):
    return nbytes / 2**20


def _size(nbytes):
    if nbytes >= 2**20:
        return f"{_mib(nbytes):.2f} MiB"
    if nbytes >= 2**10:
        return f"{nbytes / 2**10:.1f} KiB"
    return f"{nbytes} B"


def _pair(p):
    if p is None:
        return "-"
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def format_table(s: Summary) -> str:
    head = ("layer", "type", "output shape", "params", "RF", "jump", "activations")
    body = []
    for r in s.rows:
        body.append((
            "  " * r.depth + r.name, r.layer, "x".join(map(str, r.output_shape)), f"{r.params:,}",
            _pair(r.receptive_field), _pair(r.jump), _size(r.activation_bytes),
        ))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    right = {3, 4, 5, 6}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(head))
    out = [f"input {'x'.join(map(str, (s.batch_size,) + s.input_shape))} ({s.dtype.name})", line(head), rule]
    out += [line(b) for b in body]
    out.append(rule)
    out.append(f"parameters: {s.total_params:,} ({_size(s.param_bytes)} of {s.dtype.name})")
    out.append(f"activation memory kept for the backward pass at batch {s.batch_size}: {_size(s.activation_bytes)}")
    return "\n".join(out)


def _buffers(obj, out):
    """The root buffers of every ndarray reachable from a cache (tuples, lists, dicts,
    attributes of tuple subclasses), by id."""
    if isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        out.setdefault(id(root), root)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _buffers(item, out)
        for item in getattr(obj, "__dict__", {}).values():
            _buffers(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _buffers(item, out)


def summary(model, batch_size: int = 50) -> Summary:
    """The layer table of a `Sequential` model (and so of every zoo model) at `batch_size`."""
    from .checks import check_int
    from .classifiers.sequential import Residual, Sequential, _chain_forward

    if not isinstance(model, Sequential):
        raise TypeError(f"summary: model must be a Sequential (or a zoo model), got {type(model).__name__}")
    B = check_int("summary", "batch_size", batch_size)
    params, states = model._gather(model.layers)
    states = copy.deepcopy(states)  # running statistics and the dropout Generator stay as they were
    X = np.random.default_rng(0).standard_normal((B,) + model.input_shape).astype(model.dtype)
    _, caches = _chain_forward(model.layers, X, params, states, True)

    seen = {}
    for p in model.params.values():
        _buffers(p, seen)
    param_ids = set(seen)
    rows = []

    def walk(layers, caches, depth, rf):
        for layer, cache in zip(layers, caches):
            if isinstance(layer, Residual):
                header = len(rows)
                rows.append(None)
                rf_block = walk(layer.layers, cache, depth + 1, rf)
                names = [n for n in layer_param_names(layer)]
                shape = _out_shape(model, layer)
                rows[header] = SummaryRow(layer.name, "Residual (x + block(x))", depth, (B,) + shape,
                                          sum(model.params[n].size for n in names),
                                          *_rf_cells(rf_block), 0)
                rf = rf_block
                continue
            found = {}
            _buffers(cache, found)
            fresh = {k: v for k, v in found.items() if k not in seen}
            seen.update(fresh)
            nbytes = sum(v.nbytes for k, v in fresh.items() if k not in param_ids)
            r = layer.receptive()
            if r is None or rf is None:
                rf = None
            else:
                kh, kw, jh, jw = rf
                rf = (kh + (r[0] - 1) * jh, kw + (r[1] - 1) * jw, jh * r[2], jw * r[3])
            rows.append(SummaryRow(
                layer.name, repr(layer), depth, (B,) + _out_shape(model, layer),
                sum(model.params[n].size for n in layer.param_names.values()), *_rf_cells(rf), nbytes,
            ))
        return rf

    def layer_param_names(block):
        for child in block.layers:
            if isinstance(child, Residual):
                yield from layer_param_names(child)
            else:
                yield from child.param_names.values()

    walk(model.layers, caches, 0, (1, 1, 1, 1) if len(model.input_shape) == 3 else None)
    total = model.num_params()
    return Summary(
        rows=rows, batch_size=B, input_shape=model.input_shape, dtype=model.dtype, total_params=total,
        param_bytes=total * model.dtype.itemsize,
        activation_bytes=sum(r.activation_bytes for r in rows),
    )


def _out_shape(model, layer):
    for name, obj, shape in model.shapes:
        if obj is layer:
            return shape
    raise KeyError(layer)


def _rf_cells(rf):
    if rf is None:
        return None, None
    return (rf[0], rf[1]), (rf[2], rf[3])


def main(argv=None) -> int:
    from .classifiers.zoo import ZOO

    p = argparse.ArgumentParser(prog="python -m funkcije.summary", description="A zoo model's layer table.")
    p.add_argument("--model", required=True, choices=sorted(ZOO))
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--width", type=float, default=None, help="channel multiplier (VGG and ResNet models)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    kwargs = {"dtype": np.dtype(args.dtype), "seed": 0}
    if args.width is not None:
        if args.model.startswith("fer_"):
            p.error(f"--width applies to the VGG and ResNet models, not {args.model}")
        if not args.width > 0:
            p.error(f"--width must be positive, got {args.width}")
        kwargs["width"] = args.width
    try:
        model = ZOO[args.model](**kwargs)
    except (ValueError, TypeError) as exc:  # the model's own limits (a width too small or not finite)
        p.error(str(exc))
    print(f"{args.model}: {type(model).__name__ if args.model not in ZOO else ZOO[args.model].__name__}")
    print(summary(model, batch_size=args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
