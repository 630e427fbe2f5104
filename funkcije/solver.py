"""Solver: trains any model with `.params` and `.loss(X, y=None)`, cs231n-compatible.

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, seed=0)
    solver.train()

The model contract (cs231n's): `model.params` is a dict of parameter arrays;
`model.loss(X)` returns class scores (N, C); `model.loss(X, y)` returns
`(loss, grads)` with `grads` keyed like `params`. `data` is a dict with
'X_train', 'y_train', 'X_val', 'y_val' (other keys are ignored).

cs231n's keyword arguments and attributes work as in cs231n (`update_rule`,
`optim_config`, `lr_decay`, `batch_size`, `num_epochs`, `num_train_samples`,
`num_val_samples`, `checkpoint_name`, `print_every`, `verbose`; `loss_history`,
`train_acc_history`, `val_acc_history`, `best_val_acc`, `best_params`,
`check_accuracy`, `train`, `_step`, `_reset`, `_save_checkpoint`). Unknown keyword
arguments raise ValueError ("Unrecognized arguments ..."). Beyond cs231n:

Randomness — `seed` (int, or None for fresh OS entropy, recorded in `solver.seed`
so the run can be repeated). NumPy's global RNG is never used. The seed feeds
three independent streams: minibatches, accuracy subsampling, and dropout masks.
Each epoch is a seeded permutation of the training set cut into
`max(N // batch_size, 1)` batches (as many as cs231n's iterations per epoch; the
remainder of a permutation is not used in that epoch). Same seed, same run, bit
for bit; calling `check_accuracy` does not change the training trajectory.

Dropout — if `model.dropout_param` is a dict with a keep probability `p` and no
`seed`, the Solver sets `model.dropout_param['seed']` to its dropout Generator, so
masks are reproducible and resumable. If the model already holds a Generator there,
the Solver checkpoints and restores that Generator's state. An int seed is left
alone (cs231n semantics: the same mask on every call). A `dropout_param` without
`p` whose `seed` is a Generator (composed models share one stream between their
Dropout layers) is tracked the same way.

Schedules — `lr_schedule=None` uses cs231n's `lr_decay` (the learning rate of
epoch e is lr0 * lr_decay**e); a dict picks a schedule (step, exponential, cosine,
piecewise, onecycle, with warm-up; funkcije.schedules gives the formulas). Rates are
computed from lr0 and the epoch, not accumulated, so a resumed run gets exactly the same
ones. Without a schedule and with lr_decay=1 the Solver never writes `learning_rate`.

History — `solver.history` holds one dict per completed epoch: {'epoch',
'loss' (mean training loss of the epoch's minibatches), 'train_acc', 'val_acc',
'train_loss', 'val_loss', 'lr' (the rate used in that epoch), 'seconds' (wall clock,
accuracy checks included)}; plain Python numbers, so `json.dumps(solver.history)`
works (callbacks may add keys, e.g. EpochEvaluation's 'eval').

Losses — `loss_history` (one value per update, as in cs231n) and the history's 'loss'
(their mean over the epoch) are what `model.loss(X, y)` returned: the objective the
update minimises, i.e. the data loss plus the model's regularisation (the L2 penalty),
in training mode (dropout, batch statistics, augmentation) and on weights that changed
during the epoch. 'val_loss' and 'train_loss' are measured at the epoch's end with one
criterion, the model's `data_loss` (softmax cross-entropy for a model without one), no
penalty, in test mode: 'val_loss' on the validation set (its `num_val_samples` subset),
'train_loss' on the training samples that 'train_acc' is measured on (the
`num_train_samples` subset). Compare 'train_loss' with 'val_loss', not 'loss': with a
strong L2 penalty 'loss' can be several times larger than either.

Accuracy checks — as in cs231n, after the first iteration and after every epoch;
with `check_every=k` also after every k-th iteration within an epoch (those extra
checks add to train_acc_history / val_acc_history and may pick best_params, but
write no history entry and no checkpoint, and do not change the training
trajectory). `solver.check_iterations[i]` is the iteration count at check i, so
plots put every check at its place (vis_utils.plot_training does).

Callbacks — `callbacks=[...]` (funkcije.callbacks: FilterSnapshots,
WeightHistograms, EpochEvaluation, TensorBoard, or any object with the four hooks)
are called with the solver: on_train_begin, on_iteration_end after every update,
on_epoch_end after the epoch's check and history entry (before its checkpoint),
on_train_end before best_params are copied into the model. Their `state_dict()` is
saved in every checkpoint; resuming with the same callbacks (same classes, same
order) restores it, so a resumed run writes the same files as an uninterrupted one.
Resuming without callbacks ignores the saved states.

Progress — with `verbose=True` a tqdm bar runs over the iterations and cs231n's
"(Iteration i / n) loss" lines (every `print_every` iterations; 0 or None turns
them off) and "(Epoch e / E) train acc ...; val_acc ..." lines go through
`tqdm.write`. With `verbose=False` the Solver is silent.

Checkpoints — with `checkpoint_name`, cs231n's `{checkpoint_name}_epoch_{e}.pkl`
is written after the first iteration (e = 0, as in cs231n) and after every
epoch (its folder is made if it does not exist). Each file is complete by itself: model params, the model's `bn_params`
(running statistics) when it has them, every parameter's update-rule state,
the schedule, epoch and iteration, all histories, the best params, and the state
of every random stream, including the position inside the current epoch. Files
are written atomically (a temporary file in the same directory, flushed and
fsynced, then `os.replace`d), so a crash mid-write leaves the previous file intact;
temporary files left behind by a killed write are removed by the next write to that
folder. The files keep cs231n's `.pkl` name but are not pickles: each is an `.npz`
archive of the arrays plus one JSON document describing the rest, with a SHA-256
checksum (funkcije.checkpoint describes the format). Loading one never runs code
from it; an empty, truncated, damaged, foreign or inconsistent file is a ValueError
naming the file. The model object itself is not saved (unlike cs231n), so a
checkpoint does not depend on the model's class. Old pickled checkpoints
(format funkcije.solver/1) are refused.

Resume — `Solver(model, data, resume=path, ...)` (or `Solver.from_checkpoint`)
loads a checkpoint into a freshly built model of the same architecture and
continues; training to the same `num_epochs` ends with params bitwise equal to
an uninterrupted run. `num_epochs` is the total, not additional epochs. Settings
that shape the trajectory (update_rule, optim_config, lr_decay, lr_schedule,
batch_size, seed) come from the checkpoint; passing a different value is a
ValueError. num_epochs, num_train_samples, num_val_samples and check_every come from the
checkpoint unless given. `train()` trains until `epoch == num_epochs`, so calling it
again does nothing unless `num_epochs` was raised. Note that train() ends by
copying `best_params` into the model (as cs231n does); to continue from the last
params, resume from the last checkpoint.

Divergence — a NaN or infinite training loss stops training: the update that
would use it is not applied, `best_params` (and the matching batch-norm
statistics) are copied into the model, and `TrainingDiverged` (a RuntimeError) is
raised saying at which iteration and epoch it happened. Histories up to that point
stay on the solver (`loss_history` ends with the non-finite loss).

At the end of `train()` the model gets `best_params` — and, for models with
`bn_params`, the running statistics saved with them (cs231n restores only params,
leaving statistics from a later epoch).
"""
from __future__ import annotations

import copy
import fnmatch
import math
import numbers
import os
import time

import numpy as np
from tqdm import tqdm

from . import augment as _augment
from . import backend
from . import callbacks as _callbacks
from . import checkpoint as _checkpoint_file
from . import optim
from .checks import check_int, check_real, errors_named
from .schedules import resolve_schedule, scheduled_learning_rate
from .layers import softmax_loss
from .fast_layers import engine_step

__all__ = [
    "Solver",
    "TrainingDiverged",
    "load_checkpoint",
    "scheduled_learning_rate",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "funkcije.solver/2"  # /1 was a pickle; it is no longer read

# Settings that determine the sequence of params; a resumed run must use the
# checkpoint's values.
_TRAJECTORY_KEYS = (
    "update_rule", "optim_config", "lr_decay", "lr_schedule", "batch_size", "seed", "augment", "weight_decay_on",
    "lr_multipliers",
)
# Settings taken from the checkpoint on resume unless the caller gives them.
_CARRIED_KEYS = ("num_epochs", "num_train_samples", "num_val_samples")
_DEFAULTS = {
    "update_rule": "sgd",
    "optim_config": None,
    "lr_decay": 1.0,
    "lr_schedule": None,
    "batch_size": 100,
    "num_epochs": 10,
    "num_train_samples": 1000,
    "num_val_samples": None,
    "checkpoint_name": None,
    "print_every": 10,
    "verbose": True,
    "seed": None,
    "resume": None,
    "augment": None,
    "weight_decay_on": "all",
    "lr_multipliers": None,
    "callbacks": None,
    "check_every": None,
}

class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. Attributes: `iteration` (1-based),
    `epoch` (completed epochs when it happened), `loss`."""

    def __init__(self, message, iteration=None, epoch=None, loss=None):
        super().__init__(message)
        self.iteration = iteration
        self.epoch = epoch
        self.loss = loss


# ----------------------------------------------------------------------------- validation helpers


def _same(a, b):
    """Equality that also works for dicts holding arrays."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.dtype == b.dtype and np.array_equal(a, b)
        )
    return bool(a == b)


# ----------------------------------------------------------------------------- checkpoint files


def _is_int(v, minimum=None):
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    return ok and (minimum is None or v >= minimum)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int_or_none(v, minimum):
    return v is None or _is_int(v, minimum)


def _is_array_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(a, np.ndarray) for k, a in v.items())


def _is_bn_list(v):
    return v is None or (isinstance(v, list) and all(isinstance(d, dict) for d in v))


def _is_real_list(v):
    return isinstance(v, list) and all(_is_real(x) for x in v)


def _is_state(v):
    return isinstance(v, dict) and isinstance(v.get("bit_generator"), str)


# key -> (what it must be, test); every key is required
_CHECKPOINT_SCHEMA = {
    "format": ("the format string", lambda v: v == CHECKPOINT_FORMAT),
    "update_rule": ("a str", lambda v: isinstance(v, str)),
    "lr_decay": ("a real number", _is_real),
    "optim_config": ("a dict", lambda v: isinstance(v, dict)),
    "batch_size": ("an int >= 1", lambda v: _is_int(v, 1)),
    "num_train_samples": ("an int >= 1 or None", lambda v: _is_int_or_none(v, 1)),
    "num_val_samples": ("an int >= 1 or None", lambda v: _is_int_or_none(v, 1)),
    "epoch": ("an int >= 0", lambda v: _is_int(v, 0)),
    "loss_history": ("a list of numbers", _is_real_list),
    "train_acc_history": ("a list of numbers", _is_real_list),
    "val_acc_history": ("a list of numbers", _is_real_list),
    "num_epochs": ("an int >= 0", lambda v: _is_int(v, 0)),
    "lr_schedule": ("a dict or None", lambda v: v is None or isinstance(v, dict)),
    "lr_schedule_resolved": ("a dict or None", lambda v: v is None or isinstance(v, dict)),
    "seed": ("an int >= 0", lambda v: _is_int(v, 0)),
    "num_train": ("an int >= 1", lambda v: _is_int(v, 1)),
    "iteration": ("an int >= 0", lambda v: _is_int(v, 0)),
    "params": ("a dict of arrays", _is_array_dict),
    "bn_params": ("a list of dicts or None", _is_bn_list),
    "optim_configs": (
        "a dict of dicts",
        lambda v: isinstance(v, dict) and all(isinstance(c, dict) for c in v.values()),
    ),
    "history": ("a list of dicts", lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v)),
    "best_val_acc": ("a real number", _is_real),
    "best_params": ("a dict of arrays", _is_array_dict),
    "best_bn_params": ("a list of dicts or None", _is_bn_list),
    "best_epoch": ("an int >= 0 or None", lambda v: _is_int_or_none(v, 0)),
    "rng_state": (
        "a dict of bit-generator states {'batch', 'eval', 'dropout'[, 'augment']}",
        lambda v: isinstance(v, dict) and {"batch", "eval", "dropout"} <= set(v) <= {"batch", "eval", "dropout", "augment"}
        and _is_state(v["batch"]) and _is_state(v["eval"]) and (v["dropout"] is None or _is_state(v["dropout"]))
        and (v.get("augment") is None or _is_state(v["augment"])),
    ),
    "epoch_perm": (
        "a 1-D integer array or None",
        lambda v: v is None or (isinstance(v, np.ndarray) and v.ndim == 1 and np.issubdtype(v.dtype, np.integer)),
    ),
    "batch_pos": ("an int >= 0", lambda v: _is_int(v, 0)),
    "epoch_loss_sum": ("a real number", _is_real),
    "epoch_loss_count": ("an int >= 0", lambda v: _is_int(v, 0)),
    "epoch_seconds": ("a real number", _is_real),
}
# Keys added after format /2 was first written: a file without them gets the default.
_OPTIONAL_SCHEMA = {
    "augment": ("a str or None", lambda v: v is None or isinstance(v, str), None),
    "weight_decay_on": ("'all' or 'weights'", lambda v: v in _DECAY_CHOICES, "all"),
    "lr_history": ("a list of numbers", _is_real_list, []),
    "epoch_lr_sum": ("a real number", _is_real, 0.0),
    "lr_multipliers": ("a dict of name patterns to numbers, or None", lambda v: v is None or (
        isinstance(v, dict) and all(isinstance(k, str) and _is_real(m) for k, m in v.items())), None),
    "check_every": ("an int >= 1 or None", lambda v: _is_int_or_none(v, 1), None),
    "check_iterations": ("a list of ints >= 0 or None", lambda v: v is None or (
        isinstance(v, list) and all(_is_int(i, 0) for i in v)), None),
    "best_iteration": ("an int >= 0 or None", lambda v: _is_int_or_none(v, 0), None),
    "callbacks": ("a list of {'name': str, 'state': dict or None}", lambda v: isinstance(v, list) and all(
        isinstance(c, dict) and set(c) == {"name", "state"} and isinstance(c["name"], str)
        and (c["state"] is None or isinstance(c["state"], dict)) for c in v), []),
}
_DECAY_CHOICES = ("all", "weights")


def _check_checkpoint(ckpt, path):
    """The loaded tree must be a complete, consistent Solver state."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a funkcije Solver checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in _CHECKPOINT_SCHEMA if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an inconsistent funkcije Solver checkpoint: keys {missing} are missing")
    unknown = sorted(str(k) for k in ckpt if k not in _CHECKPOINT_SCHEMA and k not in _OPTIONAL_SCHEMA)
    if unknown:
        raise ValueError(f"{path} is an inconsistent funkcije Solver checkpoint: unknown keys {unknown}")
    for key, (_, _, default) in _OPTIONAL_SCHEMA.items():
        ckpt.setdefault(key, copy.deepcopy(default))
    schema = {**_CHECKPOINT_SCHEMA, **{k: v[:2] for k, v in _OPTIONAL_SCHEMA.items()}}
    for key, (want, test) in schema.items():
        if not test(ckpt[key]):
            got = ckpt[key]
            shown = type(got).__name__ if isinstance(got, (dict, list, np.ndarray)) else repr(got)[:80]
            raise ValueError(
                f"{path} is an inconsistent funkcije Solver checkpoint: {key!r} must be {want}, got {shown}"
            )
    if set(ckpt["optim_configs"]) != set(ckpt["params"]):
        raise ValueError(
            f"{path} is an inconsistent funkcije Solver checkpoint: optim_configs are for "
            f"{sorted(ckpt['optim_configs'])}, params are {sorted(ckpt['params'])}"
        )
    perm = ckpt["epoch_perm"]
    if perm is not None and perm.shape != (ckpt["num_train"],):
        raise ValueError(
            f"{path} is an inconsistent funkcije Solver checkpoint: epoch_perm has shape {perm.shape} "
            f"for num_train={ckpt['num_train']}"
        )
    if ckpt["iteration"] < ckpt["epoch"]:
        raise ValueError(
            f"{path} is an inconsistent funkcije Solver checkpoint: iteration {ckpt['iteration']} "
            f"is before epoch {ckpt['epoch']} ends"
        )


def _atomic_write(state, path):
    """Save a checkpoint dict to `path` atomically (funkcije.checkpoint.write)."""
    _checkpoint_file.write(path, state, CHECKPOINT_FORMAT)


def load_checkpoint(path):
    """Read a Solver checkpoint and return its dict. Nothing in the file is executed
    (it is an .npz of arrays plus a JSON description, read with allow_pickle=False;
    see funkcije.checkpoint). Raises ValueError naming the file if it is empty,
    truncated, damaged (checksum), foreign, or not a complete and consistent
    Solver state (a missing key, a negative epoch, a value of the wrong type)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"load_checkpoint: path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    ckpt = _checkpoint_file.read(path, CHECKPOINT_FORMAT, what="funkcije Solver checkpoint")
    _check_checkpoint(ckpt, path)
    return ckpt


# ----------------------------------------------------------------------------- callbacks


def _check_callbacks(callbacks):
    """callbacks: None or a list/tuple of funkcije.callbacks.Callback objects, or of
    objects that have all four hooks (duck typing, so a user's own class works without
    subclassing). Checked here, so a mistake fails before training, not at epoch 3."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"Solver: callbacks must be a list of Callback objects (funkcije.callbacks), got {type(callbacks).__name__}"
        )
    out = []
    for i, cb in enumerate(callbacks):
        if isinstance(cb, type):
            raise TypeError(f"Solver: callbacks[{i}] is the class {cb.__name__}, not an instance; write {cb.__name__}(...)")
        if not isinstance(cb, _callbacks.Callback):
            missing = [h for h in _callbacks.HOOKS if not callable(getattr(cb, h, None))]
            if missing:
                raise TypeError(
                    f"Solver: callbacks[{i}] is a {type(cb).__name__}, which is not a funkcije.callbacks.Callback "
                    f"and lacks the methods {missing} (a callback has {list(_callbacks.HOOKS)})"
                )
        out.append(cb)
    return out


# ----------------------------------------------------------------------------- Solver


class Solver:
    """Minibatch training of a classification model (see the module docstring).

    Required: `model` (with `.params` and `.loss(X, y=None)`), `data` (dict with
    X_train (N, ...), y_train (N,), X_val (N_val, ...), y_val (N_val,)).
    Optional keyword arguments, with defaults:
      update_rule='sgd' (a name in funkcije.optim.UPDATE_RULES or a callable),
      optim_config={} (copied once per parameter), lr_decay=1.0, lr_schedule=None,
      batch_size=100, num_epochs=10, num_train_samples=1000, num_val_samples=None,
      checkpoint_name=None, print_every=10, verbose=True, seed=None, resume=None,
      augment=None (a funkcije.augment transform or parse() string, training batches only),
      weight_decay_on='all' ('weights': no weight decay of biases and normalisation params),
      lr_multipliers=None ({name pattern: factor} on the learning rate, e.g. {'bn*.beta': 64}),
      check_every=None (also check accuracy every k iterations within an epoch),
      callbacks=None (a list of funkcije.callbacks.Callback objects).
    """

    def __init__(self, model, data, **kwargs):
        if not isinstance(getattr(model, "params", None), dict) or not callable(getattr(model, "loss", None)):
            raise TypeError(
                "Solver: model must have a dict .params and a .loss(X, y=None) method, "
                f"got {type(model).__name__}"
            )
        self.model = model
        self._set_data(data)

        unknown = [k for k in kwargs if k not in _DEFAULTS]
        if unknown:
            extra = ", ".join(f'"{k}"' for k in unknown)
            raise ValueError(
                f"Solver: Unrecognized arguments {extra}; valid keyword arguments are {sorted(_DEFAULTS)}"
            )
        # seed=None asks for fresh entropy; on resume it means "the checkpoint's seed".
        given = {k for k in kwargs if not (k == "seed" and kwargs[k] is None)}
        settings = {k: kwargs.get(k, v) for k, v in _DEFAULTS.items()}

        ckpt = None
        if settings["resume"] is not None:
            ckpt = load_checkpoint(settings["resume"])
            self._merge_checkpoint_settings(settings, given, ckpt)

        rule = settings["update_rule"]
        with errors_named("Solver"):  # optim's messages name optim's functions; the caller called Solver
            self.update_rule = optim.get_update_rule(rule)
            self.update_rule_name = optim.update_rule_name(rule)
        config = settings["optim_config"]
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise TypeError(f"Solver: optim_config must be a dict, got {type(config).__name__}")
        if config.get("learning_rate") is not None:
            check_real("Solver", "optim_config['learning_rate']", config["learning_rate"])
        if self.update_rule_name in optim.DEFAULT_CONFIGS:
            # the rule's own checks (unknown keys, ranges), before any data is touched
            with errors_named("Solver"):
                optim.check_config(self.update_rule_name, config)
        self.optim_config = config
        self.lr_decay = check_real("Solver", "lr_decay", settings["lr_decay"], strict=True)
        self.batch_size = check_int("Solver", "batch_size", settings["batch_size"], 1)
        self.num_epochs = check_int("Solver", "num_epochs", settings["num_epochs"], 0)
        self.num_train_samples = check_int("Solver", "num_train_samples", settings["num_train_samples"], 1, allow_none=True)
        self.num_val_samples = check_int("Solver", "num_val_samples", settings["num_val_samples"], 1, allow_none=True)
        self.print_every = check_int("Solver", "print_every", settings["print_every"] or 0, 0)
        self.verbose = bool(settings["verbose"])
        name = settings["checkpoint_name"]
        if name is not None and not isinstance(name, (str, os.PathLike)):
            raise TypeError(f"Solver: checkpoint_name must be a str or path, got {type(name).__name__}")
        self.checkpoint_name = None if name is None else os.fspath(name)

        self.lr_schedule = settings["lr_schedule"]
        if ckpt is not None:
            self._lr_schedule = ckpt["lr_schedule_resolved"]
        else:
            self._lr_schedule = resolve_schedule(self.lr_schedule, self.num_epochs)
        if self._lr_schedule is not None and self.lr_decay != 1.0:
            raise ValueError("Solver: give either lr_decay or lr_schedule, not both")
        self._schedule_active = self._lr_schedule is not None or self.lr_decay != 1.0
        base_lr = self.optim_config.get("learning_rate")
        if base_lr is None:
            base_lr = optim.DEFAULT_CONFIGS.get(self.update_rule_name, {}).get("learning_rate")
        if self._schedule_active and base_lr is None:
            raise ValueError(
                f"Solver: a learning-rate schedule needs optim_config['learning_rate'] for the custom "
                f"update rule {self.update_rule_name}"
            )
        self._base_lr = None if base_lr is None else float(base_lr)
        self._per_iteration = self._lr_schedule is not None and (
            self._lr_schedule.get("per_iteration", False) or self._lr_schedule.get("warmup", 0.0) > 0
        )

        self.augment = self._resolve_augment(settings["augment"], ckpt)
        self.lr_multipliers = self._check_multipliers(settings["lr_multipliers"])
        self.weight_decay_on = settings["weight_decay_on"]
        if self.weight_decay_on not in _DECAY_CHOICES:
            raise ValueError(
                f"Solver: weight_decay_on must be one of {_DECAY_CHOICES}, got {self.weight_decay_on!r}"
            )

        self.check_every = check_int("Solver", "check_every", settings["check_every"], 1, allow_none=True)
        self.callbacks = _check_callbacks(settings["callbacks"])

        seed = settings["seed"]
        check_int("Solver", "seed", seed, 0, allow_none=True)
        # With seed=None the OS entropy actually used is recorded, so the run can be repeated.
        seq = np.random.SeedSequence(None if seed is None else int(seed))
        self.seed = int(seq.entropy)
        batch_seq, eval_seq, dropout_seq = seq.spawn(3)
        self._rng = np.random.default_rng(batch_seq)
        self._eval_rng = np.random.default_rng(eval_seq)
        self._dropout_rng = self._attach_dropout_rng(np.random.default_rng(dropout_seq))
        # a fourth child, spawned after the first three: runs without augmentation
        # draw exactly what they drew before it existed
        self._augment_rng = np.random.default_rng(seq.spawn(1)[0])

        self._reset()
        if ckpt is not None:
            self._restore(ckpt, settings["resume"])

    @classmethod
    def from_checkpoint(cls, path, model, data, **kwargs):
        """Solver(model, data, resume=path, **kwargs)."""
        return cls(model, data, resume=path, **kwargs)

    # ------------------------------------------------------------------ setup

    def _set_data(self, data):
        if not hasattr(data, "__getitem__"):
            raise TypeError(f"Solver: data must be a dict, got {type(data).__name__}")
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise ValueError(f"Solver: data is missing {missing}; it needs 'X_train', 'y_train', 'X_val', 'y_val'")
        model_device = getattr(self.model, "device", "cpu")
        # images may live on the model's device (uploaded once: batches are gathered there);
        # labels are kept on the host, where they are checked and compared
        labels = {}
        for split in ("train", "val"):
            X, y = data[f"X_{split}"], data[f"y_{split}"]
            if backend.is_array(X) and not isinstance(X, np.ndarray) and backend.device_of(X) != model_device:
                raise ValueError(
                    f"Solver: X_{split} is on {backend.device_of(X)!r} but the model on {model_device!r}; "
                    f"move one of them (model.to(device), or backend.to_device(X, {model_device!r}))")
            if not hasattr(X, "shape") or not hasattr(y, "shape") or X.shape[0] != y.shape[0] or X.shape[0] == 0:
                raise ValueError(
                    f"Solver: X_{split} and y_{split} must be non-empty arrays of equal length, got "
                    f"{getattr(X, 'shape', type(X).__name__)} and {getattr(y, 'shape', type(y).__name__)}"
                )
            labels[split] = self._check_labels(f"y_{split}", backend.to_host(y))
            if np.issubdtype(labels[split].dtype, np.floating):  # integral, checked: the models take integers
                labels[split] = labels[split].astype(np.int64)
        self.X_train, self.y_train = data["X_train"], labels["train"]
        self.X_val, self.y_val = data["X_val"], labels["val"]
        self._num_train = int(self.X_train.shape[0])

    @staticmethod
    def _check_labels(name, y, num_classes=None):
        """Labels: a 1-D array of non-negative integers (integral floats are accepted,
        as cs231n compares them to argmax), below num_classes when it is known."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"Solver: {name} must be a 1-D array of class labels, got shape {y.shape}")
        if np.issubdtype(y.dtype, np.floating):
            bad = ~np.isfinite(y) | (y != np.round(y))
            if bad.any():
                raise ValueError(
                    f"Solver: {name} must hold integer class labels, got {y[bad][0].item()!r} "
                    f"at index {int(np.flatnonzero(bad)[0])}"
                )
        elif not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"Solver: {name} must hold integer class labels, got dtype {y.dtype}")
        if y.size and y.min() < 0:
            raise ValueError(f"Solver: {name} must hold class labels >= 0, got {y.min().item()!r}")
        if num_classes is not None and y.size and y.max() >= num_classes:
            raise ValueError(
                f"Solver: {name} holds label {y.max().item()!r}, but the model scores only {num_classes} classes "
                f"(labels must lie in [0, {num_classes}))"
            )
        return y

    def _merge_checkpoint_settings(self, settings, given, ckpt):
        conflicts = []
        for key in _TRAJECTORY_KEYS:
            saved = ckpt[key]
            if key not in given:
                if key == "update_rule" and saved not in optim.UPDATE_RULES:
                    raise ValueError(
                        f"Solver: the checkpoint was written with the custom update rule {saved}; "
                        "pass the same callable as update_rule="
                    )
                if key == "augment" and saved is not None:
                    try:
                        _augment.parse(saved)
                    except ValueError:
                        raise ValueError(
                            f"Solver: the checkpoint was written with the custom augmentation {saved}; "
                            "pass the same callable as augment="
                        ) from None
                settings[key] = saved
                continue
            value = settings[key]
            if key == "update_rule":
                same = optim.update_rule_name(value) == saved
            elif key == "augment":
                if isinstance(value, str):
                    value = _augment.parse(value)
                same = _augment.spec_of(value) == saved
            elif key == "optim_config":
                same = _same(value or {}, saved or {})
            else:
                same = _same(value, saved)
            if not same:
                conflicts.append(f"{key}={value!r} (checkpoint: {saved!r})")
        if conflicts:
            raise ValueError(
                "Solver: resuming with settings that differ from the checkpoint would not continue the "
                f"same run: {'; '.join(conflicts)}"
            )
        for key in _CARRIED_KEYS + ("check_every",):
            if key not in given:
                settings[key] = ckpt[key]

    def _attach_dropout_rng(self, own_rng):
        """Give a dropout model reproducible masks: returns the Generator its dropout
        draws from (installing `own_rng` if it has none), or None."""
        dp = getattr(self.model, "dropout_param", None)
        if not isinstance(dp, dict):
            return None
        seed = dp.get("seed")
        if "p" not in dp:
            # a composed model's shared dropout stream: {'mode': ..., 'seed': Generator}
            return seed if isinstance(seed, np.random.Generator) else None
        if seed is None:
            dp["seed"] = own_rng
            return own_rng
        if isinstance(seed, np.random.Generator):
            return seed
        return None  # a fixed int seed: the same mask every call, nothing to track

    @staticmethod
    def _resolve_augment(augment, ckpt):
        """The training-batch transform: None, a callable t(X, rng) -> X (funkcije.augment's
        transforms, or any other), or a parse() string such as 'crop:4,flip'. On resume
        without one, the checkpoint's funkcije transform is rebuilt from its spec."""
        if isinstance(augment, str):
            augment = _augment.parse(augment)
        if augment is not None and not callable(augment):
            raise TypeError(
                f"Solver: augment must be None, a str or a callable t(X, rng) -> X, got {type(augment).__name__}"
            )
        return augment

    def _check_multipliers(self, mults):
        """lr_multipliers: {pattern: factor}, fnmatch patterns over parameter names
        (e.g. {'bn*.beta': 64}); a parameter takes the factor of the first pattern it
        matches. Every pattern must match some parameter (a typo is an error)."""
        if mults is None:
            self._lr_mult = {}
            return None
        if not isinstance(mults, dict):
            raise TypeError(f"Solver: lr_multipliers must be a dict {{pattern: factor}} or None, got {type(mults).__name__}")
        out = {}
        for pattern, factor in mults.items():
            if not isinstance(pattern, str):
                raise TypeError(f"Solver: lr_multipliers keys must be name patterns (str), got {pattern!r}")
            check_real("Solver", f"lr_multipliers[{pattern!r}]", factor)
            if not any(fnmatch.fnmatchcase(name, pattern) for name in self.model.params):
                raise ValueError(
                    f"Solver: lr_multipliers pattern {pattern!r} matches no parameter; the model has {sorted(self.model.params)}"
                )
            out[pattern] = float(factor)
        self._lr_mult = {}
        for name in self.model.params:
            for pattern, factor in out.items():
                if fnmatch.fnmatchcase(name, pattern):
                    self._lr_mult[name] = factor
                    break
        return out

    @property
    def best_epoch(self):
        """The epochs completed at the check whose params are best_params (0: after the
        first iteration, or, with check_every, a check inside the first epoch), or None."""
        return self._best_epoch

    @property
    def best_iteration(self):
        """The iteration count at the check whose params are best_params, or None."""
        return self._best_iteration

    def _best_check_text(self):
        """When best_params were checked, in words."""
        it, ipe = self._best_iteration, self.iterations_per_epoch
        if it is not None and it % ipe == 0 and it > 0:
            return f"after epoch {it // ipe}"
        if it is None or it <= 1:
            return "after the first iteration"
        return f"at iteration {it} (in epoch {it // ipe + 1})"

    def _reset(self):
        """Fresh bookkeeping (cs231n's _reset): histories, best params, one copy of
        optim_config per parameter."""
        self.epoch = 0
        self.best_val_acc = 0
        self.best_params = {}
        self._best_bn_params = None
        self._best_epoch = None
        self._best_iteration = None
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.check_iterations = []
        self.history = []
        self.optim_configs = {p: self._config_for(p) for p in self.model.params}
        self.lr_history = []
        self._epoch_lr_sum = 0.0
        self._iteration = 0
        self._perm = None
        self._batch_pos = 0
        self._epoch_loss_sum = 0.0
        self._epoch_loss_count = 0
        self._epoch_seconds = 0.0

    def _config_for(self, name):
        """optim_config for one parameter: with weight_decay_on='weights', parameters
        that are not conv/affine weights (biases, batch-norm gamma and beta: any name
        whose last part, digits removed, is not 'W') get weight_decay 0."""
        config = dict(self.optim_config)
        if name in self._lr_mult and config.get("learning_rate", self._base_lr) is not None:
            config["learning_rate"] = config.get("learning_rate", self._base_lr) * self._lr_mult[name]
        if self.weight_decay_on == "weights" and "weight_decay" in optim.DEFAULT_CONFIGS.get(
            self.update_rule_name, {}
        ):
            if name.rsplit(".", 1)[-1].rstrip("0123456789") != "W":
                config["weight_decay"] = 0.0
        return config

    @property
    def iteration(self):
        """Number of update steps taken."""
        return self._iteration

    @property
    def iterations_per_epoch(self):
        return max(self._num_train // self.batch_size, 1)

    # ------------------------------------------------------------------ training

    def _lr_for_epoch(self, epoch):
        return scheduled_learning_rate(self._base_lr, epoch, self._lr_schedule, self.lr_decay)

    def _apply_lr(self, epoch):
        if self._schedule_active and not self._per_iteration:
            self._set_lr(self._lr_for_epoch(epoch))

    def _set_lr(self, lr):
        self._scheduled_lr = lr
        for name, config in self.optim_configs.items():
            config["learning_rate"] = lr * self._lr_mult.get(name, 1.0)

    def _next_batch(self):
        if self._perm is None or self._batch_pos >= self.iterations_per_epoch:
            self._perm = self._rng.permutation(self._num_train)
            self._batch_pos = 0
        start = self._batch_pos * self.batch_size
        self._batch_pos += 1
        return self._perm[start : start + self.batch_size]

    def _step(self):
        """One gradient update on the next minibatch; returns the loss (a float).
        Raises TrainingDiverged, without updating, if the loss is not finite."""
        idx = self._next_batch()
        # subnormals flushed to zero for the whole step, model and update rule alike
        # (3-4x slower steps otherwise, late in training), BLAS held at one thread
        # (fast_layers.engine_step)
        with engine_step():
            return self._step_on(idx)

    def _step_on(self, idx):
        X = backend.take_rows(self.X_train, idx)
        if getattr(self.augment, "needs_index", False):
            X = self.augment(X, self._augment_rng, index=idx, epoch=self.epoch)
        elif self.augment is not None:
            X = self.augment(X, self._augment_rng)
        if self._per_iteration:
            self._set_lr(scheduled_learning_rate(
                self._base_lr, self.epoch, self._lr_schedule, self.lr_decay,
                iteration=self._iteration, iterations_per_epoch=self.iterations_per_epoch,
            ))
        loss, grads = self.model.loss(X, self.y_train[idx])
        loss = float(loss)
        self.loss_history.append(loss)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"Training diverged: the loss is {loss} at iteration {self._iteration + 1} "
                f"(epoch {self.epoch + 1}); the learning rate may be too high",
                iteration=self._iteration + 1,
                epoch=self.epoch,
                loss=loss,
            )
        for p, w in self.model.params.items():
            if p not in grads:
                raise ValueError(f"Solver: model.loss returned no gradient for parameter {p!r}")
            next_w, next_config = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w
            self.optim_configs[p] = next_config
        lr = self._current_lr()
        if lr is not None:
            self.lr_history.append(lr)
            self._epoch_lr_sum += lr
        self._iteration += 1
        return loss

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of correct predictions of the model on (X, y), evaluated in
        batches of `batch_size`. With `num_samples`, a random subset of that many
        samples (without replacement, from the Solver's evaluation stream) is used.
        Returns a Python float."""
        check_int("Solver.check_accuracy", "num_samples", num_samples, 1, allow_none=True)
        check_int("Solver.check_accuracy", "batch_size", batch_size, 1)
        return self._accuracy_and_loss(X, y, num_samples, batch_size)[0]

    def _accuracy_and_loss(self, X, y, num_samples=None, batch_size=100):
        """(accuracy, mean data loss) on (X, y) or a random subset of num_samples. The
        loss is the model's `data_loss(scores, y)` when it has one (a composed model's
        own loss: softmax or hinge; a float or a (loss, dscores) pair), else softmax
        cross-entropy; no regularisation."""
        N = X.shape[0]
        if N == 0:
            raise ValueError("Solver.check_accuracy: X is empty")
        y_all = y = backend.to_host(y)
        if y.shape != (N,):
            raise ValueError(f"Solver.check_accuracy: y must have shape ({N},) to match X, got {y.shape}")
        if num_samples is not None and N > num_samples:
            idx = self._eval_rng.choice(N, num_samples, replace=False)
            X, y = backend.take_rows(X, idx), y[idx]
            N = num_samples
        preds = []
        num_classes = None
        loss_sum = 0.0
        data_loss = getattr(self.model, "data_loss", None)
        for start in range(0, N, batch_size):
            # scores of a model on the GPU come back to the host (a small (Nb, C) copy)
            scores = backend.to_host(self.model.loss(X[start : min(N, start + batch_size), ...]))
            num_classes = scores.shape[1]
            preds.append(np.argmax(scores, axis=1))
            if start == 0:
                self._check_labels("y", y_all, num_classes)
            yb = y[start : start + batch_size].astype(np.int64)
            loss = data_loss(scores, yb) if callable(data_loss) else softmax_loss(scores, yb)
            if isinstance(loss, tuple):  # a (loss, dscores) criterion, as softmax_loss and cs231n's
                loss = loss[0]
            loss_sum += float(loss) * scores.shape[0]
        return float(np.mean(np.concatenate(preds) == y)), loss_sum / N

    def _snapshot_bn(self):
        bn = getattr(self.model, "bn_params", None)
        return copy.deepcopy(bn) if isinstance(bn, list) else None

    def _load_bn(self, saved):
        bn = getattr(self.model, "bn_params", None)
        for live, stored in zip(bn, saved):
            # Update in place: the model's layers hold references to these dicts.
            live.update(copy.deepcopy(stored))

    def _restore_best(self):
        """Copy best_params (and the running statistics saved with them) into the
        model; returns False when there is no best yet."""
        if not self.best_params:
            return False
        self.model.params.update({k: backend.copy(v) for k, v in self.best_params.items()})
        if self._best_bn_params is not None:
            self._load_bn(self._best_bn_params)
        return True

    def _state_is_finite(self):
        """True when every param (and running statistic) is finite: params with a
        NaN or an infinity are never kept as the best ones."""
        arrays = list(self.model.params.values())
        for d in getattr(self.model, "bn_params", None) or []:
            if isinstance(d, dict):
                arrays += [v for v in d.values() if backend.is_array(v)]
        return all(backend.all_finite(a) for a in arrays if backend.is_array(a))

    def _check_epoch(self, train_loss_mean=None):
        # the same samples (and draws from the evaluation stream) as check_accuracy; the loss is
        # the data loss in test mode, measured exactly as on the validation set
        train_acc, train_loss = self._accuracy_and_loss(self.X_train, self.y_train,
                                                        num_samples=self.num_train_samples)
        val_acc, val_loss = self._accuracy_and_loss(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self._last_train_loss = train_loss
        self._last_val_loss = val_loss
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self.check_iterations.append(self._iteration)
        if (val_acc > self.best_val_acc or not self.best_params) and self._state_is_finite():
            self.best_val_acc = val_acc
            self.best_params = {k: backend.copy(v) for k, v in self.model.params.items()}
            self._best_bn_params = self._snapshot_bn()
            self._best_epoch = self.epoch
            self._best_iteration = self._iteration
        if self.verbose:
            at = (f"Iteration {self._iteration}" if self._iteration % self.iterations_per_epoch and self._iteration > 1
                  else f"Epoch {self.epoch} / {self.num_epochs}")
            tqdm.write("(%s) train acc: %f; val_acc: %f" % (at, train_acc, val_acc))
        return train_acc, val_acc

    def train(self):
        """Train until `epoch == num_epochs`, then copy best_params into the model.
        Raises TrainingDiverged (after restoring best_params) on a NaN/inf loss."""
        ipe = self.iterations_per_epoch
        num_iterations = self.num_epochs * ipe
        start = self._iteration
        if start < num_iterations:
            self._apply_lr(self.epoch)
            self._call("on_train_begin")
            bar = tqdm(total=num_iterations, initial=start, disable=not self.verbose, unit="it", desc="train")
            try:
                self._train_loop(start, num_iterations, ipe, bar)
            except TrainingDiverged as exc:
                if self._restore_best():
                    note = f"the model keeps the best params (val acc {self.best_val_acc:.4f} {self._best_check_text()})"
                else:
                    note = "the model keeps the params from before this step"
                exc.args = (f"{exc.args[0]}; {note}",)
                raise
            finally:
                bar.close()
            # before best_params go into the model: the callbacks see the last step's weights
            self._call("on_train_end")
        self._restore_best()

    def _call(self, hook):
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def _train_loop(self, start, num_iterations, ipe, bar):
        tick = time.perf_counter()
        for t in range(start, num_iterations):
            loss = self._step()
            self._epoch_loss_sum += loss
            self._epoch_loss_count += 1
            bar.update(1)
            bar.set_postfix_str(f"epoch {self.epoch + 1}/{self.num_epochs} loss {loss:.4f}", refresh=False)
            if self.verbose and self.print_every and t % self.print_every == 0:
                tqdm.write("(Iteration %d / %d) loss: %f" % (t + 1, num_iterations, loss))
            # self.epoch is still the epoch in progress (0-based) for these
            self._call("on_iteration_end")
            epoch_end = (t + 1) % ipe == 0
            if not (t == 0 or epoch_end):
                if self.check_every and (t + 1) % self.check_every == 0:
                    self._check_epoch()  # a check within the epoch: no history entry, no checkpoint
                continue
            # As in cs231n: accuracy after the first iteration and after every epoch.
            if epoch_end:
                # the epoch's mean rate (constant within an epoch for per-epoch schedules)
                lr_used = (
                    self._epoch_lr_sum / self._epoch_loss_count
                    if self._per_iteration and self._epoch_loss_count else self._current_lr()
                )
                self._epoch_lr_sum = 0.0
                self.epoch += 1
                self._apply_lr(self.epoch)
            train_acc, val_acc = self._check_epoch()
            self._epoch_seconds += time.perf_counter() - tick
            if epoch_end:
                self.history.append(
                    {
                        "epoch": self.epoch,
                        "loss": self._epoch_loss_sum / max(self._epoch_loss_count, 1),
                        "train_acc": train_acc,
                        "val_acc": val_acc,
                        "train_loss": self._last_train_loss,
                        "val_loss": self._last_val_loss,
                        "lr": lr_used,
                        "seconds": self._epoch_seconds,
                    }
                )
                self._epoch_loss_sum, self._epoch_loss_count, self._epoch_seconds = 0.0, 0, 0.0
                self._call("on_epoch_end")  # before the checkpoint, so it holds what they recorded
            self._save_checkpoint()
            tick = time.perf_counter()  # checkpoint writing is not counted as epoch time

    def _current_lr(self):
        if self._schedule_active and not self._per_iteration:
            return self._lr_for_epoch(self.epoch)
        if getattr(self, "_scheduled_lr", None) is not None:
            return float(self._scheduled_lr)
        # the rate before the parameters' multipliers (a multiplier of 0 hides it)
        for name, config in self.optim_configs.items():
            lr, mult = config.get("learning_rate"), self._lr_mult.get(name, 1.0)
            if lr is None:
                return None
            if mult != 0:
                return float(lr) / mult
        return 0.0 if self.optim_configs else None

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self):
        """cs231n's hook: write {checkpoint_name}_epoch_{epoch}.pkl if checkpointing is on."""
        if self.checkpoint_name is None:
            return None
        path = f"{self.checkpoint_name}_epoch_{self.epoch}.pkl"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # checkpoint_name="runs/a/ck"
        self.save_checkpoint(path)
        return path

    def _checkpoint_state(self):
        return {
            "format": CHECKPOINT_FORMAT,
            # cs231n's keys (except 'model': params are stored instead of the object)
            "update_rule": self.update_rule_name,
            "lr_decay": self.lr_decay,
            "optim_config": self.optim_config,
            "batch_size": self.batch_size,
            "num_train_samples": self.num_train_samples,
            "num_val_samples": self.num_val_samples,
            "epoch": self.epoch,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
            # what an exact resume needs
            "num_epochs": self.num_epochs,
            "lr_schedule": self.lr_schedule,
            "lr_schedule_resolved": self._lr_schedule,
            "seed": self.seed,
            "num_train": self._num_train,
            "iteration": self._iteration,
            # arrays of a model on the GPU are saved as host arrays: a checkpoint loads anywhere
            "params": backend.to_device(self.model.params, "cpu"),
            "bn_params": backend.to_device(self._snapshot_bn(), "cpu"),
            "optim_configs": backend.to_device(self.optim_configs, "cpu"),
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "best_params": backend.to_device(self.best_params, "cpu"),
            "best_bn_params": backend.to_device(self._best_bn_params, "cpu"),
            "best_epoch": self._best_epoch,
            "best_iteration": self._best_iteration,
            "rng_state": {
                "batch": self._rng.bit_generator.state,
                "eval": self._eval_rng.bit_generator.state,
                "dropout": None if self._dropout_rng is None else self._dropout_rng.bit_generator.state,
                "augment": self._augment_rng.bit_generator.state,
            },
            "augment": _augment.spec_of(self.augment),
            "weight_decay_on": self.weight_decay_on,
            "lr_multipliers": self.lr_multipliers,
            "lr_history": self.lr_history,
            "epoch_lr_sum": self._epoch_lr_sum,
            "epoch_perm": self._perm,
            "batch_pos": self._batch_pos,
            "epoch_loss_sum": self._epoch_loss_sum,
            "epoch_loss_count": self._epoch_loss_count,
            "epoch_seconds": self._epoch_seconds,
            "check_every": self.check_every,
            "check_iterations": self.check_iterations,
            "callbacks": [
                {"name": type(cb).__name__,
                 "state": backend.to_device(cb.state_dict(), "cpu") if callable(getattr(cb, "state_dict", None))
                 else None}
                for cb in self.callbacks
            ],
        }

    def save_checkpoint(self, path):
        """Write the complete training state to `path`, atomically."""
        _atomic_write(self._checkpoint_state(), path)

    @staticmethod
    def _set_rng_state(rng, state, name, path):
        try:
            rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(
                f"Solver: checkpoint {path} holds an unusable {name} random-stream state "
                f"for a {type(rng.bit_generator).__name__}: {exc}"
            ) from exc

    def _restore(self, ckpt, path):
        params = self.model.params
        saved = ckpt["params"]
        if saved.keys() != params.keys():
            raise ValueError(
                f"Solver: checkpoint {path} holds params {sorted(saved)}, the model has {sorted(params)}"
            )
        for k, v in saved.items():
            if tuple(v.shape) != tuple(params[k].shape) or backend.dtype_name(v) != backend.dtype_name(params[k]):
                raise ValueError(
                    f"Solver: checkpoint {path} has {k} of shape {v.shape} {v.dtype}, the model has "
                    f"{params[k].shape} {params[k].dtype}"
                )
        best = ckpt["best_params"]
        if best and (best.keys() != saved.keys() or any(best[k].shape != saved[k].shape for k in best)):
            raise ValueError(
                f"Solver: checkpoint {path} is inconsistent: its best_params do not match its params"
            )
        if ckpt["num_train"] != self._num_train:
            raise ValueError(
                f"Solver: checkpoint {path} was trained on {ckpt['num_train']} samples, data has "
                f"{self._num_train}; resuming on different data would not continue the same run"
            )
        model_bn = getattr(self.model, "bn_params", None)
        saved_bn = ckpt["bn_params"]
        model_bn_len = len(model_bn) if isinstance(model_bn, list) else None
        saved_bn_len = None if saved_bn is None else len(saved_bn)
        if model_bn_len != saved_bn_len:
            raise ValueError(
                f"Solver: checkpoint {path} has batch-norm state for {saved_bn_len} layers, the model "
                f"has {model_bn_len}"
            )
        saved_cbs = ckpt["callbacks"]
        if saved_cbs and self.callbacks:
            saved_names = [c["name"] for c in saved_cbs]
            names = [type(cb).__name__ for cb in self.callbacks]
            if saved_names != names:
                raise ValueError(
                    f"Solver: checkpoint {path} holds the state of the callbacks {saved_names}, got callbacks "
                    f"{names}; resume with the same callbacks in the same order (or with none)"
                )
        saved_drop = ckpt["rng_state"]["dropout"]
        if (saved_drop is None) != (self._dropout_rng is None):
            raise ValueError(
                f"Solver: checkpoint {path} and the model disagree on whether dropout draws from a "
                "Generator (check the model's dropout_param)"
            )

        for name, state in (("batch", ckpt["rng_state"]["batch"]), ("eval", ckpt["rng_state"]["eval"]),
                            ("dropout", saved_drop), ("augment", ckpt["rng_state"].get("augment"))):
            if state is not None:
                self._set_rng_state(np.random.default_rng(0), state, name, path)  # validate before changing anything

        params.update(saved)
        if saved_bn is not None:
            self._load_bn(saved_bn)
        self.optim_configs = ckpt["optim_configs"]
        self.epoch = ckpt["epoch"]
        self._iteration = ckpt["iteration"]
        self.loss_history = ckpt["loss_history"]
        self.train_acc_history = ckpt["train_acc_history"]
        self.val_acc_history = ckpt["val_acc_history"]
        self.history = ckpt["history"]
        self.best_val_acc = ckpt["best_val_acc"]
        self.best_params = ckpt["best_params"]
        self._best_bn_params = ckpt["best_bn_params"]
        self._best_epoch = ckpt["best_epoch"]
        self._set_rng_state(self._rng, ckpt["rng_state"]["batch"], "batch", path)
        self._set_rng_state(self._eval_rng, ckpt["rng_state"]["eval"], "eval", path)
        if saved_drop is not None:
            self._set_rng_state(self._dropout_rng, saved_drop, "dropout", path)
        if ckpt["rng_state"].get("augment") is not None:
            self._set_rng_state(self._augment_rng, ckpt["rng_state"]["augment"], "augment", path)
        self.lr_history = ckpt["lr_history"]
        self._epoch_lr_sum = ckpt["epoch_lr_sum"]
        self._perm = ckpt["epoch_perm"]
        self._batch_pos = ckpt["batch_pos"]
        self._epoch_loss_sum = ckpt["epoch_loss_sum"]
        self._epoch_loss_count = ckpt["epoch_loss_count"]
        self._epoch_seconds = ckpt["epoch_seconds"]
        checks = ckpt["check_iterations"]
        if checks is None:  # written before checks were recorded: cs231n's first iteration, then epoch ends
            ipe = self.iterations_per_epoch  # (one check at iteration 1 when that also ends epoch 1)
            checks = sorted({1} | {e * ipe for e in range(1, self.epoch + 1)})[:len(self.train_acc_history)]
        self.check_iterations = checks
        self._best_iteration = ckpt["best_iteration"]
        if self._best_iteration is None and self.best_params and self.best_val_acc in self.val_acc_history:
            # written before it was recorded: the first check that reached best_val_acc
            self._best_iteration = checks[self.val_acc_history.index(self.best_val_acc)]
        if saved_cbs and self.callbacks:
            for cb, saved_cb in zip(self.callbacks, saved_cbs):
                if saved_cb["state"] is not None and callable(getattr(cb, "load_state_dict", None)):
                    cb.load_state_dict(saved_cb["state"])
        device = getattr(self.model, "device", "cpu")
        if device != "cpu":  # resumed onto the GPU: the host arrays of the file go there
            self.model.to(device)
            self.optim_configs = backend.to_device(self.optim_configs, device)
            self.best_params = backend.to_device(self.best_params, device)
