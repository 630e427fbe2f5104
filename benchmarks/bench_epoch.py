"""One training epoch of a zoo model on real CIFAR-10, timed: the Solver's loop over all
50 000 training images (batch 512 by default: 97 steps of 512, the Solver's epoch),
with the resnet9-90 recipe's augmentation (reflect-padded 4-pixel crops, flips, 8x8
cutout) and update rule (SGD Nesterov with decoupled weight decay), float32.

    FUNKCIJE_DATA=/abs/path/to/datasets python benchmarks/bench_epoch.py --model resnet9
    python benchmarks/bench_epoch.py --model resnet9 --steps 10   # a shorter look: 10 steps, scaled

The wall time covers the Solver's iterations only (data loading, the end-of-epoch
accuracy check and evaluation are outside it); it is printed with the machine. Run it on
an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import cpu_model  # noqa: E402  (benchmarks/_common.py)

from funkcije import augment, data_utils  # noqa: E402
from funkcije.classifiers import zoo  # noqa: E402
from funkcije.solver import Solver  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet9", choices=sorted(zoo.ZOO))
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=None, help="time only this many steps and scale to an epoch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    root = os.environ.get("FUNKCIJE_DATA")
    if not root:
        ap.error("set FUNKCIJE_DATA to the folder holding cifar-10-batches-py/")
    X, y, _, _ = data_utils.load_CIFAR10(os.path.join(root, "cifar-10-batches-py"), dtype=np.float32)
    X = np.ascontiguousarray(X.transpose(0, 3, 1, 2)) / np.float32(255)
    X = augment.Normalize.fit(X)(X)
    model = zoo.build(args.model, seed=args.seed)
    steps_per_epoch = max(len(X) // args.batch, 1)
    iters = args.steps or steps_per_epoch
    n = min(len(X), iters * args.batch)
    data = {"X_train": X[:n], "y_train": y[:n], "X_val": X[:args.batch], "y_val": y[:args.batch]}
    solver = Solver(model, data, update_rule="sgd_nesterov",
                    optim_config={"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
                    weight_decay_on="weights", augment=augment.parse("crop:4:reflect,flip,cutout:8"),
                    batch_size=args.batch, num_epochs=1, num_train_samples=args.batch,
                    num_val_samples=args.batch, seed=args.seed, verbose=False)
    t0 = time.perf_counter()
    for _ in range(iters):
        solver._step()
    wall = time.perf_counter() - t0
    per_step = wall / iters
    print(f"{args.model}, batch {args.batch}, {iters} steps on real CIFAR-10 with augmentation: "
          f"{wall:.1f} s, {per_step:.2f} s/step; an epoch of {steps_per_epoch} steps "
          f"({steps_per_epoch * args.batch} of {len(X)} images): {per_step * steps_per_epoch / 60:.2f} min"
          f"{' (scaled from the steps timed)' if args.steps else ''}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
          f"numpy {np.__version__}; final training loss {solver.loss_history[-1]:.3f}")


if __name__ == "__main__":
    main()
