"""The main job: train a model on real data and report how it went.

    python -m funkcije.train --model three_layer --dataset cifar10 --epochs 1 \
        --hidden-dim 500 --reg 1e-3 --lr 1e-3 --batch-size 50 --out runs/cifar10
    python -m funkcije.train --model vgg7 --width 0.5 --init torch --epochs 1

Models: cs231n's three_layer (ThreeLayerConvNet) and fc (FullyConnectedNet), and
the zoo (funkcije.classifiers.zoo): fer_mnist, fer_cifar, vgg7, vgg7bn, resnet9
(`--width` scales the VGG and ResNet channels; `--init` kaiming, torch or
gaussian, the last with `--weight-scale`).

trains with the Solver (progress bar), evaluates on the test set and writes into
`--out`: `run_config.json` (the arguments), `history.json` (per-epoch history and
the final results, with the device, the machine's name and funkcije.config's switches), `training.png` (loss, accuracies, learning rate),
`filters.png` (the first-layer filters), `confusion.png` (test confusion matrix)
and `checkpoint_epoch_E.pkl` (written every epoch). `--resume CKPT` continues a
checkpoint of a run of the same folder, with that run's settings (its epochs and
test images too, unless `--epochs` asks for more).

A setting that applies to some models, update rules or schedules only (`--width`,
`--momentum`, `--lr-points`, ...) is an error where it does not apply; one that a
`--recipe` gave is dropped when an explicit argument makes it inapplicable.

Pictures while it trains (funkcije.callbacks; give the same flags again with --resume):
`--snapshots N` writes the first layer's filters every N steps to `filters/`
(`conv1_epoch_01_step_000200.png`, ..., and `conv1_snapshots.png`, the filters over
time), `--histograms` every parameter's histogram per epoch to `weights.png`,
`--tensorboard` event files to `tensorboard/` (needs the tensorboard package), and
`--check-every K` adds an accuracy check every K steps to the training figure.

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

from . import augment as augment_mod
from . import backend, callbacks, config, data_utils, metrics, schedules, vis_utils
from . import optim
from .classifiers import FullyConnectedNet, ThreeLayerConvNet
from .classifiers.zoo import ZOO
from .kernels import runtime
from .solver import Solver, TrainingDiverged

# loader, class names, training images the dataset has (train + validation split from them)
DATASETS = {
    "cifar10": (data_utils.get_CIFAR10_data, data_utils.CIFAR10_CLASSES, 50000),
    "fashion-mnist": (data_utils.get_fashion_mnist_data, data_utils.FASHION_MNIST_CLASSES, 60000),
}
# Named recipes: defaults for the arguments a command line does not give. Each is
# the setting of a row of the README's results table.
RECIPES = {
    "fer-mnist": dict(  # the FER lab 2 MNIST setting, on Fashion-MNIST
        model="fer_mnist", dataset="fashion-mnist", epochs=8, batch_size=50, update_rule="sgd", lr=0.1,
        lr_schedule="step", lr_step=2, lr_gamma=0.1, reg=1e-3,
    ),
    "fer-cifar": dict(  # the FER lab 2 CIFAR setting: SGD, exponential decay, L2
        model="fer_cifar", dataset="cifar10", epochs=16, batch_size=50, update_rule="sgd_momentum", lr=0.01,
        lr_schedule="exponential", lr_gamma=0.9, reg=1e-3, normalize="channel",
    ),
    # the same two networks with this toolkit's recipe: Nesterov SGD, one-cycle rate,
    # decoupled-from-biases weight decay, augmentation, channel normalisation
    "fer-mnist-plus": dict(
        model="fer_mnist", dataset="fashion-mnist", epochs=8, batch_size=64, update_rule="sgd_nesterov", lr=0.05,
        momentum=0.9, weight_decay=5e-4, weight_decay_on="weights", lr_schedule="onecycle", reg=0.0,
        augment="translate:2:zero,flip", normalize="channel", tta="flip",
    ),
    "fer-cifar-plus": dict(
        model="fer_cifar", dataset="cifar10", epochs=16, batch_size=64, update_rule="sgd_nesterov", lr=0.05,
        momentum=0.9, weight_decay=5e-4, weight_decay_on="weights", lr_schedule="onecycle", reg=0.0,
        augment="crop:4:reflect,flip", normalize="channel", tta="flip",
    ),
    "vgg7": dict(  # the ans course's first network: Adam, no augmentation, PyTorch's default init as the lab's
        model="vgg7", dataset="cifar10", epochs=6, batch_size=64, update_rule="adam", lr=1e-3, reg=0.0,
        normalize="channel", init="torch",
    ),
    "vgg7bn-88": dict(
        model="vgg7bn", dataset="cifar10", epochs=16, batch_size=128, update_rule="sgd_nesterov", lr=0.1,
        momentum=0.9, weight_decay=5e-4, weight_decay_on="weights", lr_schedule="onecycle", reg=0.0,
        augment="crop:4:reflect,flip", normalize="channel", label_smoothing=0.1, tta="flip",
    ),
    # after the airbench94 recipe (Jordan 2024), its batch-summed hyperparameters turned
    # into a mean loss: lr 11.5 / (1024 (1 + 1 / 0.15)) * 1024 = 1.5, coupled weight decay
    # 0.0153 / 11.5 = 1.33e-3, batch-norm biases at 64x the rate; warm-up from 0.2 over
    # 23 % of the run, then down to 0.07; lookahead every 5 steps on the weights' moving average
    # (decay 0.95**5 (t/T)**3); convolutions start as the identity (FastCifarNet's dirac init);
    # alternating (derandomised) flips
    "fast-94": dict(
        model="fast_cifar", dataset="cifar10", epochs=16, batch_size=1024, update_rule="sgd_nesterov", lr=1.5,
        momentum=0.85, weight_decay=1.33e-3, weight_decay_on="weights", lr_schedule="onecycle",
        onecycle="0.23,0.2,0.07", lr_mult="bn*.beta=64", reg=0.0, init="torch",
        augment="translate:2:reflect,altflip", normalize="channel", label_smoothing=0.2, tta="flip_translate",
        lookahead="5,0.7738,3",
    ),
    "resnet9-90": dict(
        model="resnet9", dataset="cifar10", epochs=12, batch_size=256, update_rule="sgd_nesterov", lr=0.2,
        momentum=0.9, weight_decay=5e-4, weight_decay_on="weights", lr_schedule="onecycle", reg=0.0,
        augment="crop:4:reflect,flip,cutout:8", normalize="channel", label_smoothing=0.2, tta="flip",
        out_scale=0.125,
    ),
}
# the fast-94 setting in 9 epochs: the results table's "90 % in 30 minutes" row
RECIPES["fast-90"] = dict(RECIPES["fast-94"], epochs=9)
# closer to airbench94: GELU, its test-time weights (the shifted views at half weight), 12 epochs
RECIPES["fast-94-gelu"] = dict(RECIPES["fast-94"], epochs=12, activation="gelu", tta="flip_translate_weighted")
MODELS = ["three_layer", "fc"] + list(ZOO)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, no usage dump and no traceback; exit code 2 as argparse's own errors
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    p = _Parser(prog="python -m funkcije.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="a named setting (README results table); explicit arguments override it")
    p.add_argument("--model", choices=MODELS, default="three_layer")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10")
    p.add_argument("--epochs", type=int, default=None,
                   help="total epochs (default 1, or the recipe's; on --resume the run's own unless given)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--update-rule", default="adam", help=", ".join(optim.UPDATE_RULES))
    p.add_argument("--momentum", type=float, default=None, help="momentum of the momentum rules (their default 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="sgd_nesterov (coupled, as PyTorch's SGD), sgdw and adamw (decoupled)")
    p.add_argument("--weight-decay-on", choices=["all", "weights"], default="all",
                   help="weights: no decay of biases and normalisation parameters")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--lr-decay", type=float, default=1.0, help="cs231n per-epoch decay factor")
    p.add_argument("--lr-schedule", choices=["none", "cosine", "step", "exponential", "onecycle", "piecewise"],
                   default="none", help="onecycle and piecewise change the rate every iteration")
    p.add_argument("--lr-points", default="0:0,1:1,2:0",
                   help="piecewise: epoch:factor pairs, e.g. 0:0.2,2:1,10:0 (factors of --lr)")
    p.add_argument("--warmup", type=float, default=0.0, help="epochs of linear learning-rate warm-up")
    p.add_argument("--onecycle", default="0.25,0.04,0",
                   help="onecycle: PEAK,START,END — the peak's place as a fraction of the run, and the first "
                        "and last rates as fractions of --lr")
    p.add_argument("--lr-mult", default="",
                   help="learning-rate multipliers by parameter name pattern, e.g. 'bn*.beta=64' (comma-separated)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="factor for step/exponential schedules")
    p.add_argument("--lr-step", type=int, default=5, help="epochs per step for the step schedule")
    p.add_argument("--reg", type=float, default=1e-3)
    p.add_argument("--weight-scale", type=float, default=1e-3,
                   help="three_layer / fc: the weights' std; zoo models: with --init gaussian")
    p.add_argument("--width", type=float, default=1.0, help="vgg7 / vgg7bn / resnet9: channel multiplier")
    p.add_argument("--out-scale", type=float, default=1.0, help="resnet9: multiplier of the scores (0.125 in the recipes)")
    p.add_argument("--activation", choices=["relu", "gelu"], default="relu", help="fast_cifar: the nonlinearity")
    p.add_argument("--init", choices=["kaiming", "torch", "gaussian"], default=None,
                   help="zoo models' initialisation (default kaiming); three_layer and fc are gaussian")
    p.add_argument("--num-filters", type=int, default=32)
    p.add_argument("--filter-size", type=int, default=7)
    p.add_argument("--hidden-dim", type=int, default=500, help="three_layer: hidden units")
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[512, 256], help="fc: hidden layer sizes")
    p.add_argument("--normalization", choices=["none", "batchnorm", "layernorm"], default="none")
    p.add_argument("--dropout-keep", type=float, default=1.0, help="fc: keep probability")
    p.add_argument("--augment", default="none",
                   help="training-batch augmentation, e.g. crop:4:reflect,flip,cutout:8 (funkcije.augment.parse)")
    p.add_argument("--normalize", choices=["none", "channel"], default="none",
                   help="channel: every split divided into per-channel unit variance with the training "
                        "split's mean and std (after the loader's own preprocessing)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="zoo models' softmax loss")
    p.add_argument("--lookahead", default="",
                   help="EVERY,DECAY,POWER: every EVERY steps the weights are set to their moving average with "
                        "decay DECAY*(t/T)**POWER (funkcije.callbacks.Lookahead), e.g. 5,0.7738,3; empty: none")
    p.add_argument("--tta", choices=["none", *metrics.TTA_MODES], default="none",
                   help="test-time augmentation of the final validation and test evaluation")
    p.add_argument("--num-train", type=int, default=None, help="training images (default: all but validation)")
    p.add_argument("--num-val", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: train a zoo model on CuPy arrays (pip install -e \".[gpu]\"); not part of the run's "
                        "settings, so a run may resume on either device")
    p.add_argument("--tf32", action="store_true",
                   help="with --device gpu: float32 matrix products in TF32 on the tensor cores (CuPy's CUPY_TF32=1; "
                        "10-bit mantissas in the products); without it they are float32")
    p.add_argument("--upload", choices=["once", "batch"], default="once",
                   help="with --device gpu: once = the images go to the GPU at the start and batches (and their "
                        "augmentation) are made there; batch = they stay on the host and each batch is uploaded")
    p.add_argument("--out", default="runs/latest", help="output folder")
    p.add_argument("--resume", default=None, help="checkpoint to continue (its folder's run_config.json is used)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--check-every", type=int, default=None, help="also check accuracy every K steps within epochs")
    p.add_argument("--snapshots", type=int, default=0, help="first-layer filter PNGs every N steps (0: none)")
    p.add_argument("--histograms", action="store_true", help="per-epoch parameter histograms in weights.png")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard event files in tensorboard/")
    return p


def _points(text):
    try:
        return [[float(v) for v in item.split(":")] for item in text.split(",")]
    except ValueError:
        return None


def _numbers(text, n):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    return values if len(values) == n else None


def _multipliers(text):
    """'pattern=factor,...' -> {pattern: factor}; None if malformed."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        pattern, sep, factor = item.partition("=")
        try:
            out[pattern] = float(factor)
        except ValueError:
            return None
        if not sep or not pattern:
            return None
    return out


def _schedule(args):
    if args.lr_schedule == "none":
        sched = None
    elif args.lr_schedule == "cosine":  # t_max: the run's epochs, fixed by the Solver when it starts
        sched = {"type": "cosine"}
    elif args.lr_schedule == "step":
        sched = {"type": "step", "step_size": args.lr_step, "gamma": args.lr_gamma}
    elif args.lr_schedule == "exponential":
        sched = {"type": "exponential", "gamma": args.lr_gamma}
    elif args.lr_schedule == "onecycle":
        peak, start, end = _numbers(args.onecycle, 3)
        sched = {"type": "onecycle", "peak": peak, "start": start, "end": end}
    else:
        sched = {"type": "piecewise", "points": _points(args.lr_points)}
    if args.warmup:
        sched = sched or {"type": "constant"}
        sched["warmup"] = args.warmup
    return sched


def parse_args(argv=None):
    """Arguments with a --recipe's values as defaults (explicit arguments win);
    `args.explicit` is the set of those given on the command line."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.recipe:
        parser.set_defaults(**RECIPES[first.recipe])
    args = parser.parse_args(argv)
    given = build_parser()
    for action in given._actions:
        action.default = argparse.SUPPRESS
    args.explicit = set(vars(given.parse_known_args(argv)[0]))
    return parser, args


def _settings_that_apply(args):
    """(argument, neutral value, whether it applies, what to say where it does not) for
    the settings that apply to some models, update rules or schedules only."""
    rule_keys = optim.DEFAULT_CONFIGS.get(args.update_rule, {})
    model, sched = args.model, args.lr_schedule
    zoo, three, fc = model in ZOO, model == "three_layer", model == "fc"
    default = build_parser().parse_args([])

    def for_models(names):
        return f"applies to {names}, not {model}"

    def for_schedules(names):
        return f"applies to --lr-schedule {names}, not {sched}"

    return [
        ("momentum", None, "momentum" in rule_keys, f"does not apply to --update-rule {args.update_rule}"),
        ("weight_decay", None, "weight_decay" in rule_keys, f"does not apply to --update-rule {args.update_rule}"),
        ("label_smoothing", 0.0, zoo, for_models("the zoo models")),
        ("out_scale", 1.0, model == "resnet9", for_models("resnet9")),
        ("activation", "relu", model == "fast_cifar", for_models("fast_cifar")),
        ("width", 1.0, model in ("vgg7", "vgg7bn", "resnet9", "fast_cifar"),
         for_models("vgg7, vgg7bn, resnet9 and fast_cifar")),
        ("init", None, zoo or args.init == "gaussian", for_models("the zoo models")),
        ("num_filters", default.num_filters, three, for_models("three_layer")),
        ("filter_size", default.filter_size, three, for_models("three_layer")),
        ("hidden_dim", default.hidden_dim, three, for_models("three_layer")),
        ("hidden_dims", default.hidden_dims, fc, for_models("fc")),
        ("normalization", "none", fc, for_models("fc")),
        ("dropout_keep", 1.0, fc, for_models("fc")),
        ("weight_scale", default.weight_scale, three or fc or args.init == "gaussian",
         for_models("three_layer, fc and --init gaussian")),
        ("lr_points", default.lr_points, sched == "piecewise", for_schedules("piecewise")),
        ("onecycle", default.onecycle, sched == "onecycle", for_schedules("onecycle")),
        ("lr_step", default.lr_step, sched == "step", for_schedules("step")),
        ("lr_gamma", default.lr_gamma, sched in ("step", "exponential"), for_schedules("step and exponential")),
    ]


def _drop_settings_that_do_not_apply(p, args):
    """A setting given on the command line that does not apply is an error; one that a
    recipe gave (its model, rule or schedule overridden) goes back to its neutral value."""
    for dest, neutral, applies, why_not in _settings_that_apply(args):
        if applies or getattr(args, dest) == neutral:
            continue
        if dest in args.explicit:
            p.error(f"--{dest.replace('_', '-')} {why_not}")
        setattr(args, dest, neutral)


def check_args(p, args):
    """Every argument error before any data is loaded: one line and exit code 2. On
    --resume the run's settings come from its run_config.json; what applies to this
    invocation (epochs, device, pictures, the data folder) is checked against them."""
    def positive(name, value, allow_none=False):
        if value is None and allow_none:
            return
        if value is None or value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")

    def finite(name, value, low=None, strict=False):
        if not np.isfinite(value) or (low is not None and (value < low or (strict and value == low))):
            bound = "" if low is None else f" {'>' if strict else '>='} {low}"
            p.error(f"--{name} must be a finite number{bound}, got {value}")

    if args.epochs is not None and args.epochs < 0:
        p.error(f"--epochs must be >= 0, got {args.epochs}")
    if args.resume:
        path = Path(args.resume)
        if not path.is_file():
            p.error(f"--resume: no checkpoint file {path}")
        cfg_path = path.resolve().parent / "run_config.json"
        if not cfg_path.is_file():
            p.error(f"--resume: {cfg_path} not found; resume a checkpoint inside a funkcije.train output folder")
        try:
            run = json.loads(cfg_path.read_text())
            model, dataset = run["model"], run["dataset"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--resume: cannot read {cfg_path}: {exc}")
        if dataset not in DATASETS:
            p.error(f"--resume: {cfg_path} names an unknown dataset {dataset!r}")
        _check_invocation(p, args, model, dataset)
        return
    if args.epochs is None:
        args.epochs = 1
    _drop_settings_that_do_not_apply(p, args)
    positive("batch-size", args.batch_size)
    positive("num-train", args.num_train, allow_none=True)
    positive("num-val", args.num_val)
    positive("num-test", args.num_test)
    positive("num-filters", args.num_filters)
    positive("filter-size", args.filter_size)
    positive("hidden-dim", args.hidden_dim)
    positive("lr-step", args.lr_step)
    for h in args.hidden_dims:
        positive("hidden-dims", h)
    if args.update_rule not in optim.UPDATE_RULES:
        p.error(f"--update-rule must be one of {', '.join(optim.UPDATE_RULES)}, got {args.update_rule!r}")
    if args.momentum is not None and not (0 <= args.momentum < 1):
        p.error(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.weight_decay is not None:
        finite("weight-decay", args.weight_decay, 0)
    finite("warmup", args.warmup, 0)
    cycle = _numbers(args.onecycle, 3)
    if cycle is None or not all(np.isfinite(cycle)) or not 0 < cycle[0] < 1 or min(cycle[1:]) < 0:
        p.error(f"--onecycle must be PEAK,START,END with 0 < PEAK < 1 and START, END >= 0, got {args.onecycle!r}")
    if args.lookahead:
        look = _numbers(args.lookahead, 3)
        if look is None or not all(np.isfinite(look)) or look[0] < 1 or look[0] != int(look[0]) \
                or not 0 <= look[1] <= 1 or look[2] < 0:
            p.error(f"--lookahead must be EVERY,DECAY,POWER with an integer EVERY >= 1, 0 <= DECAY <= 1 and "
                    f"POWER >= 0, got {args.lookahead!r}")
    mults = _multipliers(args.lr_mult)
    if mults is None or not all(np.isfinite(v) and v >= 0 for v in mults.values()):
        p.error(f"--lr-mult must be pattern=factor pairs with finite factors >= 0, got {args.lr_mult!r}")
    if args.lr_schedule == "piecewise":
        pts = _points(args.lr_points)
        if pts is None or any(len(pt) != 2 for pt in pts):
            p.error(f"--lr-points must be epoch:factor pairs separated by commas, got {args.lr_points!r}")
    try:
        augment_mod.parse(args.augment)
    except (ValueError, TypeError) as exc:
        p.error(f"--augment: {exc}")
    if not (0 <= args.label_smoothing < 1) or not np.isfinite(args.label_smoothing):
        p.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    finite("lr", args.lr, 0, strict=True)
    finite("lr-decay", args.lr_decay, 0, strict=True)
    finite("lr-gamma", args.lr_gamma, 0, strict=True)
    finite("reg", args.reg, 0)
    finite("weight-scale", args.weight_scale, 0, strict=True)
    finite("width", args.width, 0, strict=True)
    if not (0 < args.dropout_keep <= 1):
        p.error(f"--dropout-keep is a keep probability in (0, 1], got {args.dropout_keep}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    finite("out-scale", args.out_scale, 0, strict=True)
    if _schedule(args) is not None and args.lr_decay != 1.0:
        p.error("give either --lr-decay or --lr-schedule (or --warmup), not both")
    try:  # the schedule as the Solver will take it (piecewise points in order, factors >= 0, ...)
        schedules.resolve_schedule(_schedule(args), args.epochs)
    except (ValueError, TypeError) as exc:
        p.error(f"--lr-schedule {args.lr_schedule}: {exc}")
    total = DATASETS[args.dataset][2]
    if (args.num_train or 0) + args.num_val > total:
        p.error(f"--num-train {args.num_train} + --num-val {args.num_val} exceed the {total} training images "
                f"of {args.dataset}")
    _check_invocation(p, args, args.model, args.dataset)


def _check_invocation(p, args, model, dataset):
    """The arguments that belong to this invocation rather than to the run, checked on
    --resume too: epochs, device, pictures, test images, the data folder."""
    test_total = 10000  # the test images of both datasets
    if not 1 <= args.num_test <= test_total:
        p.error(f"--num-test must be a positive integer, at most the {test_total} test images, got {args.num_test}")
    if args.tf32 and args.device != "gpu":
        p.error("--tf32 applies to --device gpu")
    if args.tf32:  # CuPy reads it at its first float32 matrix product
        os.environ["CUPY_TF32"] = "1"
    if args.device == "gpu":
        if model in ("three_layer", "fc"):
            p.error(f"--device gpu runs the zoo models (Sequential); {model} is CPU-only")
        try:
            backend.require_cupy("--device gpu")
        except ImportError as exc:
            p.error(str(exc))
        if not backend.gpu_available():
            p.error("--device gpu: CuPy is installed but sees no CUDA device")
    if args.check_every is not None and args.check_every < 1:
        p.error(f"--check-every must be >= 1, got {args.check_every}")
    if args.snapshots < 0:
        p.error(f"--snapshots must be >= 0 (0: none), got {args.snapshots}")
    if args.snapshots and model == "fc":
        p.error("--snapshots draws convolution filters; the fc model has none")
    if args.tensorboard:
        try:
            callbacks.TensorBoard(os.devnull)
        except ImportError as exc:
            p.error(f"--tensorboard: {exc}")
    root = data_utils.data_root()
    folder = {"cifar10": "cifar-10-batches-py", "fashion-mnist": "fashion-mnist"}[dataset]
    if not (root / folder).is_dir():
        p.error(f"no {folder}/ under the data folder {root} (set FUNKCIJE_DATA to the folder that holds it)")


def build_model(cfg, input_shape, num_classes):
    dtype = np.dtype(cfg["dtype"])
    if cfg["model"] in ZOO:
        init = cfg.get("init") or "kaiming"
        kwargs = dict(num_classes=num_classes, input_shape=tuple(input_shape), reg=cfg["reg"], dtype=dtype,
                      seed=cfg["seed"], init=("gaussian", cfg["weight_scale"]) if init == "gaussian" else init,
                      label_smoothing=cfg.get("label_smoothing") or 0.0)
        if cfg["model"] in ("vgg7", "vgg7bn", "resnet9", "fast_cifar"):
            kwargs["width"] = cfg.get("width", 1.0)
        if cfg["model"] == "resnet9" and cfg.get("out_scale", 1.0) != 1.0:
            kwargs["out_scale"] = cfg["out_scale"]
        if cfg.get("activation", "relu") != "relu":
            kwargs["activation"] = cfg["activation"]
        return ZOO[cfg["model"]](**kwargs)
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
    W1 = model.params["W1"] if "W1" in model.params else model.params["conv1.W"]
    if W1.ndim == 4:
        return W1
    return W1.T[:64].reshape((-1,) + tuple(input_shape))


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def optim_config(cfg):
    out = {"learning_rate": cfg["lr"]}
    for key in ("momentum", "weight_decay"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    return out


def _newest_mtime(path):
    """A file's modification time, or a folder's newest file's."""
    if path.is_dir():
        return max((f.stat().st_mtime for f in path.rglob("*") if f.is_file()), default=0.0)
    return path.stat().st_mtime


def main(argv=None):
    parser, args = parse_args(argv)
    check_args(parser, args)
    t0, started = time.perf_counter(), time.time()
    out = Path(args.out)
    if args.resume:
        out = Path(args.resume).resolve().parent
        cfg_path = out / "run_config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--resume: cannot read {cfg_path}: {exc}")
    else:
        cfg = {
            "model": args.model, "dataset": args.dataset, "num_train": args.num_train,
            "num_val": args.num_val, "num_test": args.num_test, "epochs": args.epochs,
            "batch_size": args.batch_size, "update_rule": args.update_rule,
            "lr": args.lr, "lr_decay": args.lr_decay, "lr_schedule": _schedule(args), "reg": args.reg,
            "weight_scale": args.weight_scale, "num_filters": args.num_filters,
            "filter_size": args.filter_size, "hidden_dim": args.hidden_dim, "hidden_dims": args.hidden_dims,
            "normalization": args.normalization, "dropout_keep": args.dropout_keep, "dtype": args.dtype,
            "seed": args.seed, "width": args.width, "init": args.init, "recipe": args.recipe,
            "augment": args.augment, "normalize": args.normalize, "momentum": args.momentum,
            "weight_decay": args.weight_decay, "weight_decay_on": args.weight_decay_on,
            "label_smoothing": args.label_smoothing, "tta": args.tta, "lr_mult": _multipliers(args.lr_mult) or None,
            "out_scale": args.out_scale, "lookahead": _numbers(args.lookahead, 3) if args.lookahead else None,
            "activation": args.activation,
        }
        print("settings: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(cfg, indent=2))

    loader, class_names, total = DATASETS[cfg["dataset"]]
    num_train = cfg["num_train"] or total - cfg["num_val"]  # all but validation
    # on --resume the run's own test images (run_config.json; older ones did not record them)
    num_test = cfg.get("num_test") or args.num_test
    try:
        data = loader(num_training=num_train, num_validation=cfg["num_val"], num_test=num_test,
                      dtype=np.dtype(cfg["dtype"]))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if cfg.get("normalize") == "channel":
        norm = augment_mod.Normalize.fit(data["X_train"])
        for split in ("X_train", "X_val", "X_test"):
            data[split] = norm(data[split])
    input_shape = data["X_train"].shape[1:]
    try:
        model = build_model(cfg, input_shape, len(class_names))
    except (ValueError, TypeError) as exc:  # e.g. a VGG's five poolings on 28x28 images
        parser.error(f"--model {cfg['model']} on {cfg['dataset']}: {exc}")
    if any(hasattr(layer, "fit") for layer in getattr(model, "layers", ())):
        # data-dependent layers (patch whitening) see the first 5000 training images,
        # the same ones again on --resume
        model.fit(data["X_train"][:5000])
    if args.device != "cpu":
        model.to(args.device)
        if args.upload == "once":  # else the Solver uploads each batch as it draws it
            for split in ("X_train", "X_val", "X_test"):
                data[split] = backend.to_device(data[split], args.device)
    print(f"funkcije.train: {cfg['model']} on {cfg['dataset']}: {data['X_train'].shape[0]} train, "
          f"{data['X_val'].shape[0]} val, {data['X_test'].shape[0]} test images {tuple(input_shape)}, "
          f"{sum(p.size for p in model.params.values())} parameters; output in {out}")

    epochs = args.epochs if args.epochs is not None else cfg.get("epochs")  # None: the checkpoint's
    solver_kwargs = dict(
        checkpoint_name=str(out / "checkpoint"), verbose=not args.quiet,
        print_every=0, num_train_samples=1000, num_val_samples=None,
    )
    if epochs is not None:
        solver_kwargs["num_epochs"] = epochs
    watch = []
    if cfg.get("lookahead"):  # part of the run (run_config.json), so also on --resume
        every, decay, power = cfg["lookahead"]
        watch.append(callbacks.Lookahead(every=int(every), decay=decay, power=power))
    if args.snapshots:
        watch.append(callbacks.FilterSnapshots(out / "filters", every=args.snapshots))
    if args.histograms:
        watch.append(callbacks.WeightHistograms(out / "weights.png"))
    if args.tensorboard:
        watch.append(callbacks.TensorBoard(out / "tensorboard"))
    if watch:
        solver_kwargs["callbacks"] = watch
    if args.check_every is not None:
        solver_kwargs["check_every"] = args.check_every
    if args.resume:
        try:
            solver = Solver(model, data, resume=args.resume, **solver_kwargs)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            parser.error(f"--resume: {exc}")
        print(f"resumed from {args.resume} at epoch {solver.epoch} of {solver.num_epochs}")
        if solver.epoch >= solver.num_epochs:
            print(f"nothing left to train (give --epochs above {solver.epoch} to train on): evaluating")
    else:
        try:
            solver = Solver(
                model, data, update_rule=cfg["update_rule"], optim_config=optim_config(cfg),
                lr_decay=cfg["lr_decay"], lr_schedule=cfg["lr_schedule"], batch_size=cfg["batch_size"],
                seed=cfg["seed"], augment=augment_mod.parse(cfg.get("augment") or "none"),
                weight_decay_on=cfg.get("weight_decay_on") or "all", lr_multipliers=cfg.get("lr_mult"),
                **solver_kwargs,
            )
        except (ValueError, TypeError) as exc:  # settings only the model tells apart (--lr-mult patterns)
            parser.error(str(exc))
    status = "finished"
    t_train = time.perf_counter()
    try:
        solver.train()
    except TrainingDiverged as err:
        status = f"diverged: {err}"
        print(f"training stopped: {err}")
    train_seconds = time.perf_counter() - t_train

    tta = None if cfg.get("tta") in (None, "none") else cfg["tta"]
    test = metrics.evaluate(model, data["X_test"], data["y_test"], batch_size=500, tta=tta)
    val = metrics.evaluate(model, data["X_val"], data["y_val"], batch_size=500, tta=tta)
    per_class = metrics.precision_recall_f1(test.confusion)
    if args.device != "cpu":
        model.to("cpu")  # figures and filters read host arrays
    results = {
        "status": status,
        "epochs": solver.epoch,
        # None when nothing was trained (--epochs 0): no accuracy check has run
        "best_val_acc": float(solver.best_val_acc) if solver.val_acc_history else None,
        "best_epoch": solver.best_epoch,
        "best_iteration": solver.best_iteration,
        # the returned model (best_params) on the whole validation split, with --tta
        "val_acc": float(val.accuracy),
        "tta": tta,
        "test_acc": float(test.accuracy),
        "test_loss": float(test.loss),
        "test_macro_f1": float(per_class.macro_f1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(train_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # where and how it ran: the device, its name, and every engine switch (funkcije.config)
        "device": args.device,
        "machine": backend.device_name(args.device),
        "blas_kernels": runtime.blas_kernels(),
        "engine": config.get(),
    }
    (out / "history.json").write_text(json.dumps(
        {"config": cfg, "history": solver.history, "loss_history": [float(v) for v in solver.loss_history],
         "train_acc_history": [float(v) for v in solver.train_acc_history],
         "val_acc_history": [float(v) for v in solver.val_acc_history],
         "lr_history": [float(v) for v in solver.lr_history],
         "check_iterations": solver.check_iterations, "iterations_per_epoch": solver.iterations_per_epoch,
         "results": results}, indent=2))
    if solver.loss_history:  # --epochs 0 evaluates the initial model: no curves to draw
        vis_utils.plot_training(solver, path=out / "training.png")
    vis_utils.show_filters(first_layer_filters(model, input_shape), path=out / "filters.png")
    vis_utils.plot_confusion_matrix(test.confusion, class_names, normalize=True, path=out / "confusion.png")

    print(metrics.classification_report(test.confusion, class_names))
    best = "n/a (not trained)" if results["best_val_acc"] is None else f"{results['best_val_acc']:.4f}"
    print(f"best validation accuracy {best} | test accuracy {results['test_acc']:.4f} "
          f"on {data['X_test'].shape[0]} images | wall time {results['wall_seconds']} s | "
          f"peak memory {results['peak_rss_mb']:.0f} MB")
    # what this invocation wrote (a resumed run's folder also holds the files of the runs before)
    names = ["history.json", "training.png", "filters.png", "confusion.png", "filters", "weights.png", "tensorboard"]
    written = [n + "/" if (out / n).is_dir() else n for n in names
               if (out / n).exists() and _newest_mtime(out / n) >= started]
    if any(f.stat().st_mtime >= started for f in out.glob("checkpoint_epoch_*.pkl")):
        written.append("checkpoint_epoch_*.pkl")
    print(f"wrote {out}/{', '.join(written)}")
    return 0 if status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
