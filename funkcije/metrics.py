"""Classification metrics: confusion matrix, accuracy, precision / recall / F1,
model evaluation and the worst-classified examples.

Shapes: N samples, C classes. A confusion matrix `cm` is (C, C) with rows the
true class and columns the predicted class, so `cm[i, j]` counts samples of
class i that were predicted as class j.

The 0/0 convention (the same as scikit-learn's ``zero_division=0``): a ratio
whose denominator is zero is 0. So a class that is never predicted has
precision 0, a class that never occurs has recall 0, and F1 is 0 when precision
and recall are both 0. These zeros are *included* in the macro averages, which
are plain means over all C classes; pass a confusion matrix restricted to the
classes you care about if absent classes should not count.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import augment, backend
from .checks import check_array, check_int, check_labels
from .layers import softmax_loss

__all__ = [
    "confusion_matrix",
    "accuracy",
    "ClassMetrics",
    "precision_recall_f1",
    "classification_report",
    "EvalResult",
    "evaluate",
    "WorstExamples",
    "worst_examples",
]


# ----------------------------------------------------------------------------- confusion matrix


def confusion_matrix(y_true, y_pred, num_classes) -> np.ndarray:
    """Count (true, predicted) pairs.

    y_true, y_pred: (N,) integer labels in [0, num_classes). Returns an int64 array
    of shape (num_classes, num_classes); rows are true classes, columns predicted
    classes. Classes that never occur simply have zero rows / columns.
    """
    where = "confusion_matrix"
    C = check_int(where, "num_classes", num_classes)
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(f"{where}: y_true must be a 1-D array of labels (N,), got shape {y_true.shape}")
    N = y_true.shape[0]
    y_true = check_labels(f"{where} (y_true)", y_true, N, C)
    y_pred = check_labels(f"{where} (y_pred)", y_pred, N, C)
    # one bincount over the flattened (true, pred) index is O(N) and exact
    flat = y_true.astype(np.int64) * C + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=C * C).astype(np.int64, copy=False).reshape(C, C)


def _check_cm(where: str, cm) -> np.ndarray:
    if not isinstance(cm, np.ndarray):
        raise TypeError(f"{where}: the confusion matrix must be a numpy.ndarray, got {type(cm).__name__}")
    if cm.dtype == bool or not (np.issubdtype(cm.dtype, np.integer) or np.issubdtype(cm.dtype, np.floating)):
        raise TypeError(f"{where}: the confusion matrix must hold integer or float counts, got dtype {cm.dtype}")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"{where}: the confusion matrix must be square (C, C) with C >= 1, got shape {cm.shape}")
    if cm.size and (not np.all(np.isfinite(cm)) or cm.min() < 0):
        raise ValueError(f"{where}: the confusion matrix must hold finite, non-negative counts")
    return cm


def accuracy(cm) -> float:
    """Fraction of samples on the diagonal of a (C, C) confusion matrix.

    Raises ValueError for a matrix with no samples (accuracy is undefined there).
    """
    cm = _check_cm("accuracy", cm)
    total = cm.sum()
    if total == 0:
        raise ValueError("accuracy: the confusion matrix is empty (0 samples); accuracy is undefined")
    return float(np.trace(cm) / total)


class ClassMetrics(NamedTuple):
    """Per-class arrays of shape (C,) and their macro averages (plain means over C)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # (C,) number of true samples per class (row sums)
    macro_precision: float
    macro_recall: float
    macro_f1: float


def _ratio(num, den):
    """num / den elementwise, 0 where den == 0 (the module's 0/0 convention)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(cm) -> ClassMetrics:
    """Per-class precision, recall and F1 from a (C, C) confusion matrix.

    precision[c] = cm[c, c] / cm[:, c].sum()   (of samples predicted c, how many are c)
    recall[c]    = cm[c, c] / cm[c, :].sum()   (of samples of class c, how many were found)
    f1[c]        = 2 p r / (p + r)
    A zero denominator gives 0 (see the module docstring). The macro averages are
    the means of the per-class arrays over all C classes (macro F1 is the mean of
    per-class F1, not the F1 of macro precision and recall).
    """
    cm = _check_cm("precision_recall_f1", cm)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    return ClassMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        support=support.astype(np.int64) if np.issubdtype(cm.dtype, np.integer) else support,
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
    )


def _class_names(where: str, class_names, C: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(C)]
    # a string would be taken letter by letter, a number is not a list of names
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (list, tuple, np.ndarray)):
        raise TypeError(f"{where}: class_names must be a list of {C} names, got {type(class_names).__name__}")
    names = [str(n) for n in class_names]
    if len(names) != C:
        raise ValueError(f"{where}: expected {C} class names for {C} classes, got {len(names)}")
    return names


def classification_report(cm, class_names=None, digits: int = 3) -> str:
    """A plain-text table: precision, recall, F1 and support per class, then the
    macro averages and the overall accuracy. Returns the string (nothing is printed)."""
    where = "classification_report"
    cm = _check_cm(where, cm)
    check_int(where, "digits", digits, 0)
    C = cm.shape[0]
    names = _class_names(where, class_names, C)
    m = precision_recall_f1(cm)
    total = cm.sum()
    width = max([len(n) for n in names] + [len("macro avg"), len("accuracy")])
    col = max(digits + 3, 9)
    counts = [_count_text(v) for v in m.support] + [_count_text(total)]
    scol = max(col, 1 + max(len(t) for t in counts))  # a space before the widest count
    header = f"{'':>{width}} " + "".join(f"{h:>{col}}" for h in ("precision", "recall", "f1")) + f"{'support':>{scol}}"
    lines = [header]
    for c in range(C):
        lines.append(
            f"{names[c]:>{width}} {m.precision[c]:>{col}.{digits}f}{m.recall[c]:>{col}.{digits}f}"
            f"{m.f1[c]:>{col}.{digits}f}{counts[c]:>{scol}}"
        )
    lines.append("")
    acc = np.trace(cm) / total if total else float("nan")
    lines.append(f"{'accuracy':>{width}} {'':>{col}}{'':>{col}}{acc:>{col}.{digits}f}{counts[-1]:>{scol}}")
    lines.append(
        f"{'macro avg':>{width}} {m.macro_precision:>{col}.{digits}f}{m.macro_recall:>{col}.{digits}f}"
        f"{m.macro_f1:>{col}.{digits}f}{counts[-1]:>{scol}}"
    )
    return "\n".join(lines)


def _count_text(v) -> str:
    """A count as a table or title writes it: whole numbers in full (1234567, not
    1.23457e+06), fractional ones (weighted counts) to four significant digits."""
    v = float(v)
    return f"{v:.0f}" if v.is_integer() else f"{v:.4g}"


# ----------------------------------------------------------------------------- model evaluation


@contextmanager
def _frozen_state(model):
    """Hold the model's state dicts (`model.bn_params`, a list of bn_param dicts, and
    `model.dropout_param`) in test mode and put them back exactly as they were.

    Models switch to test mode themselves when `loss` is called without labels, but
    even test-mode batch norm writes `running_mean` / `running_var` back (a dtype
    cast or a lazily created array would replace the stored one), and a model may
    leave `mode` changed. Restoring the same keys, the same array objects and their
    contents makes "evaluation does not touch state" a guarantee, not a hope.
    """
    dicts = []
    bn_params = getattr(model, "bn_params", None)
    if bn_params:
        dicts.extend(p for p in bn_params if isinstance(p, dict))
    dropout_param = getattr(model, "dropout_param", None)
    if isinstance(dropout_param, dict):
        dicts.append(dropout_param)
    saved = []
    for d in dicts:
        entries = dict(d)
        contents = {k: v.copy() for k, v in entries.items() if isinstance(v, np.ndarray)}
        saved.append((d, entries, contents))
        if "mode" in d:
            d["mode"] = "test"
    try:
        yield
    finally:
        for d, entries, contents in saved:
            d.clear()
            d.update(entries)
            for k, v in contents.items():
                arr = entries[k]
                # an in-place update (e.g. running_mean *= momentum) is undone here;
                # read-only arrays cannot have been written in place
                if arr.flags.writeable:
                    np.copyto(arr, v)


def _check_eval_inputs(where: str, X, y, batch_size, model=None):
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"{where}: model must have a loss(X, y=None) method, got {type(model).__name__}")
    if not backend.is_array(X):
        raise TypeError(f"{where}: X must be a numpy.ndarray (or an array on the model's device), "
                        f"got {type(X).__name__}")
    if X.ndim < 1 or X.shape[0] < 1:
        raise ValueError(f"{where}: X must hold at least one sample along axis 0, got shape {X.shape}")
    batch_size = check_int(where, "batch_size", batch_size)
    y = backend.to_host(y)  # labels on a device come to the host
    if y.shape != (X.shape[0],):
        raise ValueError(f"{where}: y must have shape ({X.shape[0]},) to match X {tuple(X.shape)}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{where}: labels y must be integers, got dtype {y.dtype}")
    return y, batch_size


def _scores_of(where: str, model, X):
    """model.loss(X) on the host; a model that returns anything but one array (a
    (scores, cache) tuple, say) is told so."""
    scores = model.loss(X)
    if not backend.is_array(scores):
        raise TypeError(f"{where}: model.loss(X) without labels must return the scores (N, C) as one array, "
                        f"got {type(scores).__name__}")
    return backend.to_host(scores)


def _batched_scores(where: str, model, X, batch_size, tta=None):
    """Yield (start, scores) for consecutive batches of X; scores (Nb, C) floating.

    Callers wrap the loop in `_frozen_state(model)` themselves (not inside this
    generator) so that the state is restored as soon as they return or raise.
    """
    N = X.shape[0]
    C = None
    weights = tta_weights(tta)
    for start in range(0, N, batch_size):
        Xb = X[start:min(N, start + batch_size), ...]
        views = tta_views(Xb, tta)
        # scores of a model on the GPU come back to the host (a small (Nb, C) copy)
        scores = _scores_of(where, model, views[0])
        check_array(where, "the scores returned by model.loss(X)", scores, 2)
        if len(views) > 1:
            total = scores.astype(np.float64) * weights[0]
            for v, wt in zip(views[1:], weights[1:]):
                total += _scores_of(where, model, v) * wt
            scores = total.astype(scores.dtype)
        if scores.shape[0] != Xb.shape[0]:
            raise ValueError(
                f"{where}: model.loss(X) returned scores of shape {scores.shape} for a batch of "
                f"{Xb.shape[0]} samples; expected ({Xb.shape[0]}, C)"
            )
        if C is None:
            C = scores.shape[1]
        elif scores.shape[1] != C:
            raise ValueError(f"{where}: model.loss(X) returned {scores.shape[1]} classes, earlier batches had {C}")
        yield start, scores


class EvalResult(NamedTuple):
    loss: float  # mean softmax cross-entropy over all N samples (data loss, no regularisation)
    accuracy: float
    confusion: np.ndarray  # (C, C) int64, rows true class, columns predicted class


TTA_MODES = ("flip", "flip_translate", "flip_translate_weighted")


def tta_views(X, tta):
    """The inputs whose scores test-time augmentation averages, for X (N, C, H, W):
    tta=None: [X]; 'flip': [X, mirrored X]; 'flip_translate' and
    'flip_translate_weighted': those two and each of them shifted by (+1, +1) and
    (-1, -1) pixels with reflected borders (six views; `tta_weights` gives their weights)."""
    if tta is None:
        return [X]
    _check_tta(tta)
    check_array("evaluate", "X (for test-time augmentation)", X, 4)
    views = [X, augment.hflip(X)]
    if tta.startswith("flip_translate"):
        views += [augment.translate(v, d, d) for v in views[:2] for d in (1, -1)]
    return views


def tta_weights(tta):
    """The weights of `tta_views`' scores, summing to 1: equal, except for
    'flip_translate_weighted', which weighs the views as if the image were shifted half
    of the time (airbench94's test-time augmentation): 1/4 each for the image and its
    mirror, 1/8 for each of the four shifted views."""
    if tta is None:
        return [1.0]
    _check_tta(tta)
    if tta == "flip_translate_weighted":
        return [0.25, 0.25] + [0.125] * 4
    n = 2 if tta == "flip" else 6
    return [1.0 / n] * n


def _check_tta(tta):
    if tta not in TTA_MODES:
        raise ValueError(f"evaluate: tta must be None or one of {TTA_MODES}, got {tta!r}")


def evaluate(model, X, y, batch_size: int = 100, tta=None) -> EvalResult:
    """Loss, accuracy and confusion matrix of `model` on (X, y), in batches.

    tta: None, 'flip', 'flip_translate' or 'flip_translate_weighted' (test-time
    augmentation, see `tta_views` and `tta_weights`): the scores are the weighted mean of
    the model's scores over the views of each batch.

    model: has `loss(X)` returning scores (N, C) when called without labels (test
    mode). X: (N, ...) inputs, as the model expects them (e.g. (N, C, H, W));
    y: (N,) integer labels in [0, C). The loss is the softmax cross-entropy of the
    scores (`funkcije.layers.softmax_loss`) averaged over all N samples, without
    the model's regularisation term.

    Nothing is modified: `model.params` is only read, and batch-norm / dropout state
    (`model.bn_params`, `model.dropout_param`) is held in test mode during the pass
    and restored exactly afterwards.
    """
    where = "evaluate"
    y, batch_size = _check_eval_inputs(where, X, y, batch_size, model)
    N = X.shape[0]
    total_loss = 0.0
    preds = np.empty(N, dtype=np.int64)
    C = None
    with _frozen_state(model):
        for start, scores in _batched_scores(where, model, X, batch_size, tta):
            Nb = scores.shape[0]
            C = scores.shape[1]
            yb = check_labels(where, y[start:start + Nb], Nb, C)
            loss, _ = softmax_loss(scores, yb)
            total_loss += float(loss) * Nb
            preds[start:start + Nb] = np.argmax(scores, axis=1)
    cm = confusion_matrix(y, preds, C)
    return EvalResult(loss=total_loss / N, accuracy=accuracy(cm), confusion=cm)


@dataclass(frozen=True)
class WorstExamples:
    """The k examples with the highest loss, worst first (K = min(3, C) columns).

    indices: (k,) positions in X; loss: (k,) per-example cross-entropy
    -log softmax(scores)[true]; true: (k,) true classes; top3_classes: (k, K) the
    most probable classes, most probable first; top3_probs: (k, K) their softmax
    probabilities.
    """

    indices: np.ndarray
    loss: np.ndarray
    true: np.ndarray
    top3_classes: np.ndarray
    top3_probs: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def worst_examples(model, X, y, k: int = 16, batch_size: int = 100) -> WorstExamples:
    """The k worst-classified examples of (X, y): highest cross-entropy first.

    X: (N, ...), y: (N,) labels in [0, C). k larger than N returns all N examples.
    Equal losses keep their order in X; a NaN loss ranks as the worst. Like
    `evaluate`, this leaves params and batch-norm / dropout state untouched.
    Memory is O(N) (per-example loss and top-3), not O(N C).
    """
    where = "worst_examples"
    y, batch_size = _check_eval_inputs(where, X, y, batch_size, model)
    k = check_int(where, "k", k)
    N = X.shape[0]
    losses = np.empty(N, dtype=np.float64)
    top_cls = top_p = None
    with _frozen_state(model):
        for start, scores in _batched_scores(where, model, X, batch_size):
            Nb, C = scores.shape
            yb = check_labels(where, y[start:start + Nb], Nb, C)
            # float64 so that ranking and probabilities do not suffer float32 rounding
            s = scores.astype(np.float64)
            s -= s.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(s).sum(axis=1))
            losses[start:start + Nb] = log_z - s[np.arange(Nb), yb]
            K = min(3, C)
            if top_cls is None:
                top_cls = np.empty((N, K), dtype=np.int64)
                top_p = np.empty((N, K), dtype=np.float64)
            # stable sort on -scores: equal scores keep the lower class index first
            order = np.argsort(-s, axis=1, kind="stable")[:, :K]
            top_cls[start:start + Nb] = order
            top_p[start:start + Nb] = np.exp(np.take_along_axis(s, order, axis=1) - log_z[:, None])
    rank_key = np.where(np.isnan(losses), np.inf, losses)
    idx = np.argsort(-rank_key, kind="stable")[: min(k, N)]
    return WorstExamples(
        indices=idx,
        loss=losses[idx],
        true=y[idx].astype(np.int64),
        top3_classes=top_cls[idx],
        top3_probs=top_p[idx],
    )
