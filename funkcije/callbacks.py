"""Training callbacks: what to look at while a Solver trains, without editing its loop.

    from funkcije.callbacks import FilterSnapshots, WeightHistograms, EpochEvaluation
    solver = Solver(model, data, num_epochs=8, callbacks=[
        FilterSnapshots("out/filters", every=200),       # conv1_epoch_01_step_000200.png, ...
        WeightHistograms("out/histograms.png"),          # every parameter, one curve per epoch
        EpochEvaluation(X_train, y_train, X_val, y_val, num_samples=1000),
    ])
    solver.train()

The Solver calls each callback's hooks with itself, in list order:

  on_train_begin(solver)    when train() starts training (not when there is nothing left to train)
  on_iteration_end(solver)  after every update; `solver.iteration` is the number of completed
                            updates, `solver.epoch` still the completed epochs (the epoch in
                            progress is solver.epoch + 1, 1-based)
  on_epoch_end(solver)      after the epoch's accuracy check and its `solver.history` entry, before
                            the epoch's checkpoint (so what a callback records there is saved)
  on_train_end(solver)      when training reaches num_epochs, before best_params go into the model

Checkpoints: `state_dict()` returns a callback's state as plain data (dicts, lists, numbers,
strings and NumPy arrays: what a funkcije checkpoint stores without pickle), the Solver saves it
in every checkpoint, and `Solver(..., resume=path, callbacks=[...])` hands it back through
`load_state_dict(state)`, so a resumed run writes the same files and history as an uninterrupted
one. A callback that draws from randomness keeps its own Generator: the training run is the same
with or without callbacks.

Any object with the four hooks can be a callback; subclassing `Callback` gives no-op defaults.
`Lookahead` is the one built-in callback that changes training: it moves the weights.
"""
from __future__ import annotations

import fnmatch
import math
import numbers
import os

import numpy as np

from . import backend
from .checks import check_int, check_real, check_real_in

__all__ = ["Callback", "FilterSnapshots", "WeightHistograms", "EpochEvaluation", "Lookahead", "TensorBoard", "HOOKS"]

HOOKS = ("on_train_begin", "on_iteration_end", "on_epoch_end", "on_train_end")


class Callback:
    """Base class: every hook does nothing, and there is no state to save."""

    def on_train_begin(self, solver):
        pass

    def on_iteration_end(self, solver):
        pass

    def on_epoch_end(self, solver):
        pass

    def on_train_end(self, solver):
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ----------------------------------------------------------------------------- helpers


def _check_path(where, name, value):
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{where}: {name} must be a str or os.PathLike, got {type(value).__name__} {value!r}")
    return os.fspath(value)


def _filter_param(where, params, layer):
    """The name of the parameter whose filters to draw: `layer` itself (a name such as
    'conv1.W' or cs231n's 'W1') or, by default, the first 4-D parameter (a model lists
    its first convolution first)."""
    if layer is not None:
        if layer not in params:
            raise ValueError(f"{where}: the model has no parameter {layer!r}; it has {sorted(params)}")
        if np.ndim(params[layer]) != 4:
            raise ValueError(
                f"{where}: parameter {layer!r} has shape {np.shape(params[layer])}, not the (F, C, HH, WW) of "
                "a convolution's filters"
            )
        return layer
    for name, value in params.items():
        if np.ndim(value) == 4:
            return name
    raise ValueError(f"{where}: the model has no 4-D (convolution filter) parameter; its params are {sorted(params)}")


def _epoch_of_step(solver, step):
    """The 1-based epoch that update number `step` belongs to (1 before any update)."""
    ipe = solver.iterations_per_epoch
    return max(1, -(-step // ipe))


def _check_state(where, state, keys):
    if not isinstance(state, dict) or not set(keys) <= set(state):
        raise ValueError(f"{where}: load_state_dict needs a dict with keys {sorted(keys)}, got {str(state)[:80]}")


# ----------------------------------------------------------------------------- filter snapshots


class FilterSnapshots(Callback):
    """First-layer filters as PNG images every `every` updates, as the FER lab draws them.

    Files go to `out_dir` (created as needed) as `{prefix}_epoch_{EE}_step_{SSSSSS}.png`,
    e.g. `conv1_epoch_01_step_000200.png`: EE the 1-based epoch the step belongs to, SSSSSS
    the global update count. The prefix is the parameter's layer name ('conv1.W' ->
    'conv1', cs231n's 'W1' -> 'W1'). Snapshots are taken before training (step 0), at
    every multiple of `every`, and at the end of training (if that step was not one).
    Each image is `vis_utils.filter_grid` of the weights, pixel for pixel.

    layer: the parameter's name; default the model's first 4-D parameter.
    grid_file: at the end of training also write `{prefix}_snapshots.png`, the filters
    over time (`grid()`). Attributes: `files` (paths written, in order), `steps`,
    `epochs`, `snapshots` (copies of the first 64 filters at each step).
    """

    KEEP = 64  # filters kept per snapshot for the over-time figure

    def __init__(self, out_dir, every: int = 200, layer: str | None = None, grid_file: bool = True):
        where = "FilterSnapshots"
        self.out_dir = _check_path(where, "out_dir", out_dir)
        self.every = check_int(where, "every", every)
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"{where}: layer must be a parameter name (str) or None, got {layer!r}")
        if not isinstance(grid_file, (bool, np.bool_)):
            raise TypeError(f"{where}: grid_file must be a bool, got {grid_file!r}")
        self.layer = layer
        self.grid_file = bool(grid_file)
        self.param = None
        self.files: list[str] = []
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.snapshots: list[np.ndarray] = []

    @property
    def prefix(self):
        name = self.param or self.layer or "filters"
        return name.rsplit(".", 1)[0] if "." in name else name

    def _take(self, solver):
        from . import vis_utils

        step = solver.iteration
        if self.steps and self.steps[-1] == step:
            return
        W = backend.to_host(solver.model.params[self.param])
        epoch = _epoch_of_step(solver, step)
        path = os.path.join(self.out_dir, f"{self.prefix}_epoch_{epoch:02d}_step_{step:06d}.png")
        vis_utils.save_image(path, vis_utils.filter_grid(W))
        self.files.append(path)
        self.steps.append(step)
        self.epochs.append(epoch)
        self.snapshots.append(W[: self.KEEP].astype(np.float32))

    def on_train_begin(self, solver):
        self.param = _filter_param("FilterSnapshots", solver.model.params, self.layer)
        if solver.iteration == 0:  # a resumed run took its step-0 snapshot before
            self._take(solver)

    def on_iteration_end(self, solver):
        if solver.iteration % self.every == 0:
            self._take(solver)

    def on_train_end(self, solver):
        self._take(solver)
        if self.grid_file:
            self.grid(os.path.join(self.out_dir, f"{self.prefix}_snapshots.png"))

    def grid(self, path=None, max_filters: int = 16, max_rows: int = 12):
        """The filters over time as one Figure (vis_utils.plot_filter_snapshots): one row
        per snapshot, labelled with its step and epoch; written to `path` if given."""
        from . import vis_utils

        if not self.snapshots:
            raise ValueError("FilterSnapshots.grid: no snapshot has been taken yet (train first)")
        labels = [f"step {s} (epoch {e})" for s, e in zip(self.steps, self.epochs)]
        return vis_utils.plot_filter_snapshots(self.snapshots, labels, path=path, max_filters=max_filters,
                                               max_rows=max_rows)

    def state_dict(self):
        return {"param": self.param, "files": list(self.files), "steps": list(self.steps),
                "epochs": list(self.epochs), "snapshots": list(self.snapshots)}

    def load_state_dict(self, state):
        _check_state("FilterSnapshots", state, ("param", "files", "steps", "epochs", "snapshots"))
        self.param = state["param"]
        self.files = [str(f) for f in state["files"]]
        self.steps = [int(s) for s in state["steps"]]
        self.epochs = [int(e) for e in state["epochs"]]
        self.snapshots = [np.asarray(a) for a in state["snapshots"]]


# ----------------------------------------------------------------------------- weight histograms


class WeightHistograms(Callback):
    """A histogram of every parameter at every epoch end, drawn as one figure
    (vis_utils.plot_weight_histograms: a panel per parameter, a curve per epoch) and
    written to `path` at each epoch end, overwriting the last one.

    Epoch 0 (the initial weights) is recorded when training starts from scratch.
    bins: histogram bins (at most 2 sqrt(size) for a small parameter); params: None (all) or a list of names / fnmatch patterns
    ('conv*.W'); max_epochs: curves drawn per panel (evenly spaced epochs, the first and
    last among them). Attributes: `epochs` and `histograms` ({name: [(epoch, counts,
    edges), ...]}); `figure()` draws it again.
    """

    def __init__(self, path, bins: int = 50, params=None, max_epochs: int = 8):
        where = "WeightHistograms"
        self.path = _check_path(where, "path", path)
        self.bins = check_int(where, "bins", bins)
        self.max_epochs = check_int(where, "max_epochs", max_epochs)
        if params is not None and (isinstance(params, str) or not isinstance(params, (list, tuple))
                                   or not all(isinstance(p, str) for p in params)):
            raise TypeError(f"{where}: params must be None or a list of names / patterns, got {params!r}")
        self.params = None if params is None else list(params)
        self.epochs: list[int] = []
        self.histograms: dict[str, list] = {}

    def _names(self, model_params):
        if self.params is None:
            return list(model_params)
        names = [n for n in model_params if any(fnmatch.fnmatchcase(n, p) for p in self.params)]
        unmatched = [p for p in self.params if not any(fnmatch.fnmatchcase(n, p) for n in model_params)]
        if unmatched:
            raise ValueError(f"WeightHistograms: params {unmatched} match no parameter; the model has {sorted(model_params)}")
        return names

    def _record(self, solver):
        if self.epochs and self.epochs[-1] == solver.epoch:
            return
        for name in self._names(solver.model.params):
            a = np.asarray(backend.to_host(solver.model.params[name]), dtype=np.float64).ravel()
            bins = min(self.bins, 2 * math.isqrt(a.size) or 1)  # a 16-value bias in 50 bins is all spikes
            a = a[np.isfinite(a)]
            if a.size and a.min() == a.max():
                # a constant (zero biases, unit gammas at the start): all edges at the value, so
                # the figure marks it with a line instead of an arbitrary unit-wide bar
                counts = np.zeros(bins, dtype=np.int64)
                counts[-1] = a.size
                edges = np.full(bins + 1, a[0])
            else:
                counts, edges = np.histogram(a if a.size else np.zeros(1), bins=bins)
            self.histograms.setdefault(name, []).append((solver.epoch, counts, edges))
        self.epochs.append(solver.epoch)

    def on_train_begin(self, solver):
        self._names(solver.model.params)  # a pattern that matches nothing fails now, not after an epoch
        if solver.iteration == 0:
            self._record(solver)

    def on_epoch_end(self, solver):
        self._record(solver)
        self.figure(self.path)

    def figure(self, path=None):
        """The histograms so far as a Figure; written to `path` if given."""
        from . import vis_utils

        if not self.histograms:
            raise ValueError("WeightHistograms.figure: nothing recorded yet (train first)")
        return vis_utils.plot_weight_histograms(self.histograms, path=path, max_epochs=self.max_epochs)

    def state_dict(self):
        return {
            "epochs": list(self.epochs),
            "names": list(self.histograms),
            "hist_epochs": [[int(e) for e, _, _ in rows] for rows in self.histograms.values()],
            "counts": [np.stack([c for _, c, _ in rows]) for rows in self.histograms.values()],
            "edges": [np.stack([e for _, _, e in rows]) for rows in self.histograms.values()],
        }

    def load_state_dict(self, state):
        _check_state("WeightHistograms", state, ("epochs", "names", "hist_epochs", "counts", "edges"))
        self.epochs = [int(e) for e in state["epochs"]]
        self.histograms = {
            name: [(e, c, x) for e, c, x in zip(eps, counts, edges)]
            for name, eps, counts, edges in zip(state["names"], state["hist_epochs"], state["counts"], state["edges"])
        }


# ----------------------------------------------------------------------------- per-epoch evaluation


class EpochEvaluation(Callback):
    """The FER lab's per-epoch `evaluate`: at each epoch end, loss, accuracy, confusion
    matrix and per-class precision / recall / F1 on the training and validation sets
    (funkcije.metrics.evaluate and precision_recall_f1), stored as plain numbers in
    `solver.history[-1]['eval'] = {'train': {...}, 'val': {...}}` and in `results`.

    Each split's entry: loss (softmax cross-entropy, no regularisation), accuracy,
    precision, recall, f1 (lists, one per class), macro_precision, macro_recall,
    macro_f1, confusion (list of lists). num_samples: evaluate a fixed random subset
    of that many samples of each split (drawn once, from `seed`, so epochs compare
    like with like); None uses all. The model's batch-norm and dropout state is left
    untouched (metrics.evaluate restores it).
    """

    def __init__(self, X_train, y_train, X_val, y_val, num_samples: int | None = None, batch_size: int = 100,
                 seed: int = 0):
        where = "EpochEvaluation"
        self.num_samples = check_int(where, "num_samples", num_samples, allow_none=True)
        self.batch_size = check_int(where, "batch_size", batch_size)
        seed = check_int(where, "seed", seed, minimum=0)
        rng = np.random.default_rng(seed)
        self.splits = {}
        for split, X, y in (("train", X_train, y_train), ("val", X_val, y_val)):
            if not isinstance(X, np.ndarray) or X.ndim < 1 or X.shape[0] < 1:
                raise ValueError(f"{where}: X_{split} must be a non-empty numpy array, got "
                                 f"{getattr(X, 'shape', type(X).__name__)}")
            y = np.asarray(y)
            if y.shape != (X.shape[0],):
                raise ValueError(f"{where}: y_{split} must have shape ({X.shape[0]},) to match X_{split}, got {y.shape}")
            if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)  # integral float labels, as the Solver accepts them
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"{where}: y_{split} must hold integer class labels, got dtype {y.dtype}")
            if self.num_samples is not None and X.shape[0] > self.num_samples:
                idx = np.sort(rng.choice(X.shape[0], self.num_samples, replace=False))
                X, y = X[idx], y[idx]
            self.splits[split] = (X, y)
        self.results: list[dict] = []

    def evaluate(self, model) -> dict:
        """{'train': {...}, 'val': {...}} for `model` now (see the class docstring)."""
        from . import metrics

        out = {}
        for split, (X, y) in self.splits.items():
            r = metrics.evaluate(model, X, y, batch_size=self.batch_size)
            m = metrics.precision_recall_f1(r.confusion)
            out[split] = {
                "loss": float(r.loss), "accuracy": float(r.accuracy),
                "precision": [float(v) for v in m.precision], "recall": [float(v) for v in m.recall],
                "f1": [float(v) for v in m.f1],
                "macro_precision": float(m.macro_precision), "macro_recall": float(m.macro_recall),
                "macro_f1": float(m.macro_f1),
                "confusion": r.confusion.tolist(),
            }
        return out

    def on_epoch_end(self, solver):
        ev = self.evaluate(solver.model)
        if solver.history:
            solver.history[-1]["eval"] = ev
        self.results.append({"epoch": solver.epoch, **ev})

    def state_dict(self):
        return {"results": list(self.results)}

    def load_state_dict(self, state):
        _check_state("EpochEvaluation", state, ("results",))
        self.results = list(state["results"])


# ----------------------------------------------------------------------------- lookahead


class Lookahead(Callback):
    """Lookahead on a moving average of the weights, with the averaging schedule of the
    fast CIFAR-10 recipes (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1
    step back"; the schedule of Jordan 2024, "94% on CIFAR-10 in 3.29 seconds").

    Every `every` updates, with t the update count and T the run's total
    (num_epochs * iterations_per_epoch):

        d_t = decay * (t / T) ** power
        avg <- d_t * avg + (1 - d_t) * w,    then    w <- avg

    for every parameter and the batch-norm running statistics. d_t is near 0 early (the
    weights run free) and reaches `decay` at the end, when the average smooths the last
    steps' noise; after the last update the weights are set to the average. Training with
    it is as reproducible and resumable as without: the average is the callback's state,
    saved in every checkpoint. The update rule's own state (momentum, Adam's moments) is
    left alone. Arrays stay in their dtype and on their device.
    """

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5, power: float = 3.0):
        where = "Lookahead"
        self.every = check_int(where, "every", every)
        self.decay = check_real_in(where, "decay", decay, 0.0, 1.0)
        self.power = check_real(where, "power", power)
        self.avg = None      # {param name: array}
        self.avg_bn = None   # [{'running_mean': array, 'running_var': array}, ...] or None

    @staticmethod
    def _bn(solver):
        bn = getattr(solver.model, "bn_params", None)
        return bn if isinstance(bn, list) else []

    def on_train_begin(self, solver):
        params = solver.model.params
        if self.avg is None:
            self.avg = {k: backend.copy(v) for k, v in params.items()}
            self.avg_bn = [{k: backend.copy(d[k]) for k in ("running_mean", "running_var") if k in d}
                           for d in self._bn(solver)]
        elif params:  # resumed: the saved host arrays go where the model is
            device = backend.device_of(next(iter(params.values())))
            self.avg, self.avg_bn = backend.to_device(self.avg, device), backend.to_device(self.avg_bn, device)

    def _blend(self, solver, d):
        params = solver.model.params
        for k, a in self.avg.items():
            a += (1 - d) * (params[k] - a)  # in place; a Python float keeps a's dtype
            params[k] = backend.copy(a)
        for i, live in enumerate(self._bn(solver)):
            if i == len(self.avg_bn):
                self.avg_bn.append({})
            avg = self.avg_bn[i]
            for k in ("running_mean", "running_var"):
                if k not in live:  # some models create their running statistics in the first forward
                    continue
                if k not in avg:
                    avg[k] = backend.copy(live[k])
                else:
                    avg[k] += (1 - d) * (live[k] - avg[k])
                live[k] = backend.copy(avg[k])

    def on_iteration_end(self, solver):
        t = solver.iteration
        total = solver.num_epochs * solver.iterations_per_epoch
        if t % self.every == 0:
            self._blend(solver, self.decay * (min(t, total) / total) ** self.power)
        if t == total:
            self._blend(solver, 1.0)  # the weights become the average

    def state_dict(self):
        return {"avg": self.avg, "avg_bn": self.avg_bn}

    def load_state_dict(self, state):
        _check_state("Lookahead", state, ("avg", "avg_bn"))
        self.avg = None if state["avg"] is None else {k: np.array(v) for k, v in state["avg"].items()}
        self.avg_bn = None if state["avg_bn"] is None else [
            {k: np.array(v) for k, v in d.items()} for d in state["avg_bn"]]


# ----------------------------------------------------------------------------- TensorBoard


class TensorBoard(Callback):
    """TensorBoard event files in `logdir`: the training loss (the minibatch objective,
    penalty included) and learning rate every `every` updates, and at each epoch end the
    epoch's mean objective ('loss'), accuracies, the training and validation data losses,
    learning rate (and EpochEvaluation's numbers when there is one, before or after this
    callback in the list), a histogram of every
    parameter (histograms=True) and the first layer's filters as an image (images=True).

    Needs the `tensorboard` package (an optional extra: `pip install tensorboard`); it is
    written with tensorboard's own event writer, so neither TensorFlow nor PyTorch is needed.
    A resumed run appends a new event file to the same logdir, and TensorBoard joins them.
    """

    def __init__(self, logdir, every: int = 10, histograms: bool = True, images: bool = True):
        where = "TensorBoard"
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as exc:
            raise ImportError(
                f"{where}: logging for TensorBoard needs the tensorboard package, which is not installed "
                f"({exc}); pip install tensorboard"
            ) from exc
        self._event_pb2, self._summary_pb2, self._writer_cls = event_pb2, summary_pb2, EventFileWriter
        self.logdir = _check_path(where, "logdir", logdir)
        self.every = check_int(where, "every", every)
        for name, v in (("histograms", histograms), ("images", images)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{where}: {name} must be a bool, got {v!r}")
        self.histograms, self.images = bool(histograms), bool(images)
        self._writer = None
        self._eval_due = None  # (history index, step) of an epoch whose evaluation is yet to be written

    def _write(self, step, values):
        event = self._event_pb2.Event(wall_time=__import__("time").time(), step=int(step))
        event.summary.value.extend(values)
        self._writer.add_event(event)

    def scalar(self, tag, value, step):
        self._write(step, [self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])

    def histogram(self, tag, values, step, bins=50):
        a = np.asarray(values, dtype=np.float64).ravel()
        a = a[np.isfinite(a)]
        if not a.size:
            return
        counts, edges = np.histogram(a, bins=bins)
        proto = self._summary_pb2.HistogramProto(
            min=float(a.min()), max=float(a.max()), num=float(a.size), sum=float(a.sum()),
            sum_squares=float(np.dot(a, a)), bucket_limit=[float(e) for e in edges[1:]],
            bucket=[float(c) for c in counts])
        self._write(step, [self._summary_pb2.Summary.Value(tag=tag, histo=proto)])

    def image(self, tag, image, step):
        """image: uint8 (H, W) or (H, W, 3), stored as a PNG."""
        import imageio.v3 as iio

        png = iio.imwrite("<bytes>", image, extension=".png")
        channels = 1 if image.ndim == 2 else image.shape[2]
        img = self._summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=channels,
                                              encoded_image_string=png)
        self._write(step, [self._summary_pb2.Summary.Value(tag=tag, image=img)])

    def on_train_begin(self, solver):
        os.makedirs(self.logdir, exist_ok=True)
        if self._writer is None:
            self._writer = self._writer_cls(self.logdir)

    def _write_eval(self, solver):
        """EpochEvaluation's numbers of the epoch that just ended, at its step. Callbacks
        run in list order, so an EpochEvaluation after this one has written them only by
        the next hook: that is when they are read (once)."""
        if self._eval_due is None:
            return
        index, step = self._eval_due
        self._eval_due = None
        for split, ev in (solver.history[index].get("eval") or {}).items():
            for key in ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1"):
                self.scalar(f"eval_{split}/{key}", ev[key], step)

    def on_iteration_end(self, solver):
        self._write_eval(solver)
        if solver.iteration % self.every == 0:
            self.scalar("train/loss", solver.loss_history[-1], solver.iteration)
            if solver.lr_history:
                self.scalar("train/learning_rate", solver.lr_history[-1], solver.iteration)

    def on_epoch_end(self, solver):
        from . import vis_utils

        entry = solver.history[-1]
        step = solver.iteration
        for key in ("loss", "train_acc", "val_acc", "train_loss", "val_loss", "lr", "seconds"):
            v = entry.get(key)
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                self.scalar(f"epoch/{key}", v, step)
        self._eval_due = (len(solver.history) - 1, step)
        if entry.get("eval"):  # an EpochEvaluation before this callback: already there
            self._write_eval(solver)
        if self.histograms:
            for name, W in solver.model.params.items():
                self.histogram(f"params/{name}", W, step)
        if self.images:
            try:
                name = _filter_param("TensorBoard", solver.model.params, None)
            except ValueError:
                name = None  # no convolution: no filter image
            if name is not None:
                self.image(f"filters/{name}", vis_utils.filter_grid(backend.to_host(solver.model.params[name])), step)
        self._writer.flush()

    def on_train_end(self, solver):
        if self._writer is not None:
            self._write_eval(solver)
            self._writer.close()
            self._writer = None
