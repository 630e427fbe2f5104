"""Which convolution algorithm is fastest for a layer and batch, and what the engine's
choice rules gain: the measurements behind `funkcije.kernels.conv`'s
`_WINOGRAD_TRANSFORM_COST` and `_split_by_filters` (RESULTS.md, notes on the model steps).

    python benchmarks/bench_conv_choice.py layers 16x512x512x4 128x512x512x2
        forward + backward of a 3x3, pad 1 layer x (N, C, H, H), w (F, C, 3, 3) inside a
        training step (`engine_step`), per algorithm: the engine's choice ("auto"),
        Winograd F(4x4) and F(2x2) wherever they apply, im2col by batch chunks and im2col
        split by rows; best of 3 rounds of the median of 5.
    python benchmarks/bench_conv_choice.py steps resnet9:16 vgg7:128
        a zoo model's training step (SGD momentum) with the engine's rules against the
        rules switched off (Winograd wherever it applies, batch chunks only, dw always
        transposed), alternating in one process; prints the medians and the median of the
        paired new / old ratios.

funkcije's own threads (2 by default); run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from funkcije import fast_layers as FL, optim
from funkcije.classifiers import FastCifarNet, ResNet9, VGG7, VGG7BN
from funkcije.kernels import conv as KC, runtime as R

RULES = ("_WINOGRAD_TRANSFORM_COST", "_SPLIT_MAX_COLUMNS", "_DW_DIRECT_ORIENTATION", "_winograd_tile",
         "_winograd_enabled")
NO_RULES = {"_WINOGRAD_TRANSFORM_COST": None, "_SPLIT_MAX_COLUMNS": 0, "_DW_DIRECT_ORIENTATION": 1 << 62}
ALGORITHMS = {
    "auto": {},
    "winograd4": {"_WINOGRAD_TRANSFORM_COST": None, "_winograd_tile": 4},
    "winograd2": {"_WINOGRAD_TRANSFORM_COST": None, "_winograd_tile": 2},
    "im2col-chunks": {"_SPLIT_MAX_COLUMNS": 0, "_winograd_enabled": False},
    "im2col-rows": {"_SPLIT_MAX_COLUMNS": 1 << 30, "_winograd_enabled": False},
}
MODELS = {"resnet9": ResNet9, "vgg7": VGG7, "vgg7bn": VGG7BN, "fast_cifar": FastCifarNet}


def _using(settings, defaults):
    for k, v in {**defaults, **settings}.items():
        setattr(KC, k, v)


def _median_ms(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def layers(specs, rounds=3, reps=5):
    defaults = {k: getattr(KC, k) for k in RULES}
    for spec in specs:
        N, C, F, H = (int(v) for v in spec.split("x"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (0.05 * rng.standard_normal((F, C, 3, 3))).astype(np.float32)
        b = np.zeros(F, np.float32)
        param = {"stride": 1, "pad": 1}
        best = {name: float("inf") for name in ALGORITHMS}
        with R.engine_step():
            for _ in range(rounds):
                for name, settings in ALGORITHMS.items():
                    _using(settings, defaults)
                    dout = np.ones((N, F, H, H), np.float32)

                    def step():
                        FL.conv_backward_fast(dout, FL.conv_forward_fast(x, w, b, param)[1])

                    step()
                    best[name] = min(best[name], _median_ms(step, reps))
        _using({}, defaults)
        print(f"x ({N}, {C}, {H}, {H}) w ({F}, {C}, 3, 3): "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in best.items()), flush=True)


def steps(specs, rounds=8, reps=5):
    defaults = {k: getattr(KC, k) for k in RULES}
    for spec in specs:
        name, N = spec.split(":")
        N = int(N)
        model = MODELS[name](seed=0, dtype=np.float32)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((N, 3, 32, 32)).astype(np.float32)
        y = rng.integers(10, size=N)
        if name == "fast_cifar":
            model.fit(X)
        configs = {k: {"learning_rate": 1e-2, "momentum": 0.9} for k in model.params}

        def step():
            _, grads = model.loss(X, y)
            for k in model.params:
                model.params[k], configs[k] = optim.sgd_momentum(model.params[k], grads[k], configs[k])

        times = {"new": [], "old": []}
        for r in range(rounds):
            for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
                _using(NO_RULES if label == "old" else {}, defaults)
                step()
                step()
                times[label].append(_median_ms(step, reps))
        _using({}, defaults)
        ratio = float(np.median(np.array(times["new"]) / np.array(times["old"])))
        print(f"{name} batch {N}: rules on {np.median(times['new']):.1f} ms, off {np.median(times['old']):.1f} ms, "
              f"paired on / off {ratio:.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("layers", "steps"))
    ap.add_argument("cases", nargs="+", help="NxCxFxH for layers, MODEL:N for steps (MODEL: "
                    + ", ".join(MODELS) + ")")
    ap.add_argument("--rounds", type=int, help="rounds (default 3 for layers, 8 for steps)")
    args = ap.parse_args(argv)
    for case in args.cases:
        ok = (case.count("x") == 3 and all(v.isdigit() and int(v) > 0 for v in case.split("x"))
              if args.what == "layers" else
              case.count(":") == 1 and case.split(":")[0] in MODELS and case.split(":")[1].isdigit()
              and int(case.split(":")[1]) > 0)
        if not ok:
            ap.error(f"{args.what}: bad case {case!r} (NxCxFxH for layers, MODEL:N for steps)")
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.what == "layers":
        layers(args.cases, rounds=args.rounds or 3)
    else:
        steps(args.cases, rounds=args.rounds or 8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
