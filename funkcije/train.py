"""The main job: train a model on real data and report how it went.

    python -m funkcije.train --model three_layer --dataset cifar10 --epochs 1 \
        --hidden-dim 500 --reg 1e-3 --lr 1e-3 --batch-size 50 --out runs/cifar10

trains with the Solver (progress bar), evaluates on the test set and writes into
`--out`: `run_config.json` (the arguments), `history.json` (per-epoch history and
the final results), `training.png` (loss, accuracies, learning rate),
`filters.png` (the first-layer filters), `confusion.png` (test confusion matrix)
and `checkpoint_epoch_E.pkl` (written every epoch). `--resume CKPT` continues a
checkpoint of a run of the same folder, with that run's settings.

Data come from FUNKCIJE_DATA (see funkcije.data_utils).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from . import data_utils, metrics, vis_utils
from .classifiers import FullyConnectedNet, ThreeLayerConvNet
from .solver import Solver, TrainingDiverged

DATASETS = {
    "cifar10": (data_utils.get_CIFAR10_data, data_utils.CIFAR10_CLASSES, 49000),
    "fashion-mnist": (data_utils.get_fashion_mnist_data, data_utils.FASHION_MNIST_CLASSES, 59000),
}
# Settings that define the run; on --resume they are read back from run_config.json.
RUN_KEYS = (
    "model", "dataset", "num_train", "num_val", "batch_size", "update_rule", "lr", "lr_decay",
    "lr_schedule", "reg", "weight_scale", "num_filters", "filter_size", "hidden_dim", "hidden_dims",
    "normalization", "dropout_keep", "dtype", "seed",
)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m funkcije.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["three_layer", "fc"], default="three_layer")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10")
    p.add_argument("--epochs", type=int, default=1, help="total epochs (also when resuming)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--update-rule", default="adam", help="sgd, sgd_momentum, rmsprop or adam")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--lr-decay", type=float, default=1.0, help="cs231n per-epoch decay factor")
    p.add_argument("--lr-schedule", choices=["none", "cosine", "step", "exponential"], default="none")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="factor for step/exponential schedules")
    p.add_argument("--lr-step", type=int, default=5, help="epochs per step for the step schedule")
    p.add_argument("--reg", type=float, default=1e-3)
    p.add_argument("--weight-scale", type=float, default=1e-3)
    p.add_argument("--num-filters", type=int, default=32)
    p.add_argument("--filter-size", type=int, default=7)
    p.add_argument("--hidden-dim", type=int, default=500, help="three_layer: hidden units")
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[512, 256], help="fc: hidden layer sizes")
    p.add_argument("--normalization", choices=["none", "batchnorm", "layernorm"], default="none")
    p.add_argument("--dropout-keep", type=float, default=1.0, help="fc: keep probability")
    p.add_argument("--num-train", type=int, default=None, help="training images (default: all but validation)")
    p.add_argument("--num-val", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latest", help="output folder")
    p.add_argument("--resume", default=None, help="checkpoint to continue (its folder's run_config.json is used)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _schedule(args):
    if args.lr_schedule == "none":
        return None
    if args.lr_schedule == "cosine":
        return {"type": "cosine", "t_max": args.epochs}
    if args.lr_schedule == "step":
        return {"type": "step", "step_size": args.lr_step, "gamma": args.lr_gamma}
    return {"type": "exponential", "gamma": args.lr_gamma}


def build_model(cfg, input_shape, num_classes):
    dtype = np.dtype(cfg["dtype"])
    if cfg["model"] == "three_layer":
        return ThreeLayerConvNet(
            input_dim=tuple(input_shape), num_filters=cfg["num_filters"], filter_size=cfg["filter_size"],
            hidden_dim=cfg["hidden_dim"], num_classes=num_classes, weight_scale=cfg["weight_scale"],
            reg=cfg["reg"], dtype=dtype, seed=cfg["seed"],
        )
    norm = None if cfg["normalization"] == "none" else cfg["normalization"]
    return FullyConnectedNet(
        cfg["hidden_dims"], input_dim=int(np.prod(input_shape)), num_classes=num_classes,
        dropout_keep_ratio=cfg["dropout_keep"], normalization=norm, reg=cfg["reg"],
        # A Generator, not the int: an int seed means the same dropout mask on every
        # call (cs231n's gradient-check semantics); the Solver checkpoints this Generator.
        weight_scale=cfg["weight_scale"], dtype=dtype, seed=np.random.default_rng(cfg["seed"]),
    )


def first_layer_filters(model, input_shape):
    """W1 as (F, C, HH, WW): a conv net's filters, or a fully connected net's first
    weights seen as images of `input_shape` (C, H, W), one per hidden unit, at most 64."""
    W1 = model.params["W1"]
    if W1.ndim == 4:
        return W1
    return W1.T[:64].reshape((-1,) + tuple(input_shape))


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    if args.resume:
        out = Path(args.resume).resolve().parent
        cfg_path = out / "run_config.json"
        if not cfg_path.is_file():
            sys.exit(f"--resume: {cfg_path} not found; resume a checkpoint inside a funkcije.train output folder")
        cfg = json.loads(cfg_path.read_text())
    else:
        cfg = {
            "model": args.model, "dataset": args.dataset, "num_train": args.num_train,
            "num_val": args.num_val, "batch_size": args.batch_size, "update_rule": args.update_rule,
            "lr": args.lr, "lr_decay": args.lr_decay, "lr_schedule": _schedule(args), "reg": args.reg,
            "weight_scale": args.weight_scale, "num_filters": args.num_filters,
            "filter_size": args.filter_size, "hidden_dim": args.hidden_dim, "hidden_dims": args.hidden_dims,
            "normalization": args.normalization, "dropout_keep": args.dropout_keep, "dtype": args.dtype,
            "seed": args.seed,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(cfg, indent=2))

    loader, class_names, default_train = DATASETS[cfg["dataset"]]
    num_train = cfg["num_train"] or default_train
    data = loader(num_training=num_train, num_validation=cfg["num_val"], num_test=args.num_test,
                  dtype=np.dtype(cfg["dtype"]))
    input_shape = data["X_train"].shape[1:]
    model = build_model(cfg, input_shape, len(class_names))
    print(f"funkcije.train: {cfg['model']} on {cfg['dataset']}: {data['X_train'].shape[0]} train, "
          f"{data['X_val'].shape[0]} val, {data['X_test'].shape[0]} test images {tuple(input_shape)}, "
          f"{sum(p.size for p in model.params.values())} parameters; output in {out}")

    solver_kwargs = dict(
        num_epochs=args.epochs, checkpoint_name=str(out / "checkpoint"), verbose=not args.quiet,
        print_every=0, num_train_samples=1000, num_val_samples=None,
    )
    if args.resume:
        solver = Solver(model, data, resume=args.resume, **solver_kwargs)
        print(f"resumed from {args.resume} at epoch {solver.epoch}")
    else:
        solver = Solver(
            model, data, update_rule=cfg["update_rule"], optim_config={"learning_rate": cfg["lr"]},
            lr_decay=cfg["lr_decay"], lr_schedule=cfg["lr_schedule"], batch_size=cfg["batch_size"],
            seed=cfg["seed"], **solver_kwargs,
        )
    status = "finished"
    try:
        solver.train()
    except TrainingDiverged as err:
        status = f"diverged: {err}"
        print(f"training stopped: {err}")
    train_seconds = time.perf_counter() - t0

    test = metrics.evaluate(model, data["X_test"], data["y_test"], batch_size=500)
    per_class = metrics.precision_recall_f1(test.confusion)
    results = {
        "status": status,
        "epochs": solver.epoch,
        "best_val_acc": float(solver.best_val_acc),
        "test_acc": float(test.accuracy),
        "test_loss": float(test.loss),
        "test_macro_f1": float(per_class.macro_f1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(train_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    (out / "history.json").write_text(json.dumps(
        {"config": cfg, "history": solver.history, "loss_history": [float(v) for v in solver.loss_history],
         "results": results}, indent=2))
    vis_utils.plot_training(solver, path=out / "training.png")
    vis_utils.show_filters(first_layer_filters(model, input_shape), path=out / "filters.png")
    vis_utils.plot_confusion_matrix(test.confusion, class_names, normalize=True, path=out / "confusion.png")

    print(metrics.classification_report(test.confusion, class_names))
    print(f"best validation accuracy {results['best_val_acc']:.4f} | test accuracy {results['test_acc']:.4f} "
          f"on {data['X_test'].shape[0]} images | wall time {results['wall_seconds']} s | "
          f"peak memory {results['peak_rss_mb']:.0f} MB")
    print(f"wrote {out}/history.json, training.png, filters.png, confusion.png, checkpoint_epoch_*.pkl")
    return 0 if status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
