"""Pictures: image grids, first-layer filters, training curves, confusion
matrices and the worst-classified examples.

Display-safe everywhere: figures are `matplotlib.figure.Figure` objects drawn by
the Agg canvas directly, so this module never imports `matplotlib.pyplot` and
never calls `matplotlib.use` — a notebook's inline backend, a user's chosen
backend and a headless CI machine are all left alone. Every figure function
returns its Figure (a notebook shows it as a PNG, with or without
``%matplotlib inline``) and takes an optional `path` to save a PNG of exactly
figsize * dpi pixels. Plain image arrays (grids, filters) are written with
imageio by `save_image`, no figure needed.

Shapes: N images, H, W pixels, C channels; filters W are (F, C, HH, WW).
"""
from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .checks import check_real_in, names_errors
from .metrics import _check_cm, _class_names

__all__ = [
    "visualize_grid",
    "save_image",
    "figure_to_array",
    "filter_grid",
    "show_filters",
    "plot_training",
    "plot_confusion_matrix",
    "plot_worst_examples",
]


# ----------------------------------------------------------------------------- figures and files


class _NotebookFigure(Figure):
    """A Figure that IPython can render by itself (`_repr_png_`), so a returned
    figure shows in a notebook even when no inline backend has been activated."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


def _new_figure(where: str, figsize, dpi) -> Figure:
    if (
        not isinstance(figsize, (tuple, list))
        or len(figsize) != 2
        or not all(isinstance(v, numbers.Real) and v > 0 for v in figsize)
    ):
        raise ValueError(f"{where}: figsize must be a (width, height) pair of positive inches, got {figsize!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or dpi <= 0:
        raise ValueError(f"{where}: dpi must be a positive number, got {dpi!r}")
    fig = _NotebookFigure(figsize=tuple(float(v) for v in figsize), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        _make_parent(path)
        # no bbox_inches="tight": the file keeps the promised figsize * dpi pixels
        fig.savefig(path, dpi=fig.dpi, facecolor="white")
    return fig


def _make_parent(path) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure with Agg and return its pixels, (height, width, 4) uint8 RGBA."""
    if not isinstance(fig, Figure):
        raise TypeError(f"figure_to_array: fig must be a matplotlib Figure, got {type(fig).__name__}")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def save_image(path, image) -> None:
    """Write an image array as a PNG (or any format imageio infers from `path`).

    image: (H, W) grayscale or (H, W, 3|4) RGB(A). uint8 is written as is; other
    real dtypes are taken to be on the 0..255 scale, rounded and clipped to uint8
    (so `visualize_grid(...)` output can be saved directly).
    """
    import imageio.v3 as iio

    where = "save_image"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where}: image must be a numpy.ndarray, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{where}: image must have shape (H, W) or (H, W, 1|3|4), got {image.shape}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"{where}: image must hold integers or floats on the 0..255 scale, got dtype {image.dtype}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
            raise ValueError(f"{where}: image contains NaN or infinite values")
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    _make_parent(path)
    iio.imwrite(path, image)


# ----------------------------------------------------------------------------- grids


def _rescale(a: np.ndarray, ubound: float) -> np.ndarray:
    """Map a's range linearly onto [0, ubound] (float64); a constant array, which
    has no range, becomes ubound / 2."""
    a = a.astype(np.float64)
    low, high = a.min(), a.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("image values must be finite, got NaN or infinity")
    if high == low:
        return np.full(a.shape, ubound / 2.0)
    return ubound * (a - low) / (high - low)


def _tile(tiles: np.ndarray, nrows: int, ncols: int, padding: int, fill) -> np.ndarray:
    """Place tiles (n, h, w[, c]) row-major on an nrows x ncols grid with `padding`
    pixels of `fill` between neighbours (none around the border)."""
    n, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    grid = np.full((nrows * h + (nrows - 1) * padding, ncols * w + (ncols - 1) * padding) + extra, fill, dtype=tiles.dtype)
    for i in range(n):
        r, c = divmod(i, ncols)
        y0, x0 = r * (h + padding), c * (w + padding)
        grid[y0:y0 + h, x0:x0 + w] = tiles[i]
    return grid


def _check_padding(where: str, padding) -> int:
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"{where}: padding must be an int >= 0, got {padding!r}")
    return int(padding)


def _check_real_array(where: str, name: str, a, ndim) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{where}: {name} must hold real numbers, got dtype {a.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if a.ndim not in allowed:
        raise ValueError(f"{where}: {name} must have {' or '.join(map(str, allowed))} dimensions, got shape {a.shape}")
    return a


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Lay N images out on a square grid (cs231n's signature and semantics).

    Xs: (N, H, W, C). Each image is rescaled on its own to [0, ubound]; the grid
    has ceil(sqrt(N)) images per side, `padding` zero pixels between them, and
    cells without an image stay 0. Returns a float64 array of shape
    (G H + (G - 1) padding, G W + (G - 1) padding, C) with G = ceil(sqrt(N)).
    """
    where = "visualize_grid"
    _check_real_array(where, "Xs", Xs, 4)
    padding = _check_padding(where, padding)
    N = Xs.shape[0]
    if N < 1:
        raise ValueError(f"{where}: Xs must hold at least one image, got shape {Xs.shape}")
    ubound = check_real_in(where, "ubound", ubound, 0, np.inf, low_open=True, high_open=True)
    G = math.isqrt(N - 1) + 1  # ceil(sqrt(N)) without float rounding
    tiles = np.stack([_rescale(x, ubound) for x in Xs])
    return _tile(tiles, G, G, padding, 0.0)


def _auto_scale(HH: int, WW: int) -> int:
    # enough nearest-neighbour magnification that a 7x7 filter is ~42 px wide
    return max(1, 48 // max(HH, WW))


def filter_grid(W, padding: int = 1, scale: int | None = None, pad_value: int = 255) -> np.ndarray:
    """First-layer filters as one uint8 image.

    W: (F, C, HH, WW). Each filter is rescaled on its own (over all its channels,
    so their relative strength shows) to 0..255, then magnified `scale` times by
    nearest-neighbour (default: 48 // max(HH, WW), at least 1). Layout:
      C == 3: RGB tiles on a square grid of ceil(sqrt(F)) per side -> (gh, gw, 3);
      C == 1: grayscale tiles on the same square grid -> (gh, gw);
      other C: every input channel as its own grayscale tile, one row per filter and
               one column per channel -> (F S HH + (F-1) padding, C S WW + (C-1) padding).
    Tiles are separated by `padding` pixels of `pad_value`; empty cells are pad_value.
    """
    where = "filter_grid"
    _check_real_array(where, "W", W, 4)
    padding = _check_padding(where, padding)
    F, C, HH, WW = W.shape
    if min(F, C, HH, WW) < 1:
        raise ValueError(f"{where}: W must have shape (F, C, HH, WW) with no empty axis, got {W.shape}")
    if scale is None:
        scale = _auto_scale(HH, WW)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"{where}: scale must be an int >= 1, got {scale!r}")
    if isinstance(pad_value, bool) or not isinstance(pad_value, numbers.Integral) or not 0 <= pad_value <= 255:
        raise ValueError(f"{where}: pad_value must be an int in [0, 255], got {pad_value!r}")
    scaled = np.stack([_rescale(w, 255.0) for w in W])  # (F, C, HH, WW)
    scaled = np.rint(scaled).astype(np.uint8)
    scaled = scaled.repeat(scale, axis=2).repeat(scale, axis=3)
    if C == 3:
        G = math.isqrt(F - 1) + 1
        return _tile(scaled.transpose(0, 2, 3, 1), G, G, padding, pad_value)
    if C == 1:
        G = math.isqrt(F - 1) + 1
        return _tile(scaled[:, 0], G, G, padding, pad_value)
    tiles = scaled.reshape(F * C, HH * scale, WW * scale)
    return _tile(tiles, F, C, padding, pad_value)


@names_errors
def show_filters(W, path=None, padding: int = 1, scale: int | None = None, title: str | None = None,
                 figsize=None, dpi: int = 100) -> Figure:
    """Figure of `filter_grid(W)`; with `path`, the grid image itself (not the
    figure) is written as a PNG with imageio, pixel for pixel.

    W: (F, C, HH, WW). For C other than 1 or 3 the rows are filters and the columns
    input channels. figsize defaults to 6 inches wide with the grid's aspect.
    """
    grid = filter_grid(W, padding=padding, scale=scale)
    F, C, HH, WW = W.shape
    if path is not None:
        save_image(path, grid)
    gh, gw = grid.shape[:2]
    if figsize is None:
        figsize = (6.0, float(np.clip(6.0 * gh / gw, 1.5, 24.0)) + 0.5)
    fig = _new_figure("show_filters", figsize, dpi)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if C not in (1, 3):
        ax.set_xlabel(f"input channel (0..{C - 1})")
        ax.set_ylabel(f"filter (0..{F - 1})")
    ax.set_title(title if title is not None else f"{F} filters, {C} x {HH} x {WW}")
    return fig


# ----------------------------------------------------------------------------- training curves


def _series(dicts, key):
    vals = [d.get(key) for d in dicts]
    if all(v is None for v in vals):
        return None
    return np.array([np.nan if v is None else float(v) for v in vals])


def _unpack_history(where, history):
    """-> (epoch dicts, loss_history, train_acc_history, val_acc_history) from a
    list of per-epoch dicts, a mapping with those keys, or a Solver-like object."""
    keys = ("history", "loss_history", "train_acc_history", "val_acc_history")
    if isinstance(history, Mapping):
        got = [history.get(k) for k in keys]
        lr_it = history.get("lr_history")
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        got = [history, None, None, None]
        lr_it = None
    else:
        got = [getattr(history, k, None) for k in keys]
        lr_it = getattr(history, "lr_history", None)
    epochs = list(got[0]) if got[0] is not None else []
    for i, d in enumerate(epochs):
        if not isinstance(d, Mapping):
            raise TypeError(f"{where}: per-epoch history entries must be dicts, entry {i} is {type(d).__name__}")
    lists = [np.asarray(v, dtype=np.float64).ravel() if v is not None and len(v) else None
             for v in (*got[1:], lr_it)]
    return (epochs, *lists)


def _is_pr_key(key) -> bool:
    k = str(key).lower()
    return "precision" in k or "recall" in k or k == "f1" or k.endswith("_f1") or "f1_" in k


def _moving_average(v: np.ndarray, n: int) -> np.ndarray:
    kernel = np.ones(n) / n
    return np.convolve(v, kernel, mode="valid")


@names_errors
def plot_training(history, path=None, figsize=None, dpi: int = 100) -> Figure:
    """The training-progress figure: loss, accuracy, learning rate and, when the
    per-epoch dicts carry them, precision / recall / F1.

    history: the per-epoch dicts {epoch, loss, train_acc, val_acc, lr, seconds}
    (a list), or a Solver (or a dict such as a checkpoint) with attributes / keys
    `history`, `loss_history` (per iteration), `train_acc_history`,
    `val_acc_history`. Panels appear for what is present: the loss panel shows the
    per-iteration loss (faint, with a moving average) and the per-epoch loss; the
    precision/recall panel plots every numeric per-epoch key whose name contains
    'precision', 'recall' or 'f1'. Two panels per row; figsize defaults to
    (6 * columns, 4 * rows) inches.
    """
    where = "plot_training"
    epochs, it_loss, train_hist, val_hist, it_lr = _unpack_history(where, history)
    n_ep = len(epochs)
    ep_x = _series(epochs, "epoch")
    if ep_x is None:
        ep_x = np.arange(1, n_ep + 1, dtype=np.float64)
    ep_loss = _series(epochs, "loss")
    ep_train = _series(epochs, "train_acc")
    ep_val = _series(epochs, "val_acc")
    ep_lr = _series(epochs, "lr")
    ep_val_loss = _series(epochs, "val_loss")
    pr_keys = []
    for d in epochs:
        for k, v in d.items():
            if _is_pr_key(k) and k not in pr_keys and isinstance(v, numbers.Real):
                pr_keys.append(k)

    def acc_x(values):
        # the cs231n lists check once before training and once per epoch
        if n_ep and len(values) == n_ep + 1:
            return np.concatenate([[0.0], ep_x]), "epoch"
        if n_ep and len(values) == n_ep:
            return ep_x, "epoch"
        return np.arange(len(values), dtype=np.float64), "accuracy check"

    panels = []
    if it_loss is not None or ep_loss is not None:
        panels.append("loss")
    if any(v is not None for v in (ep_train, ep_val, train_hist, val_hist)):
        panels.append("accuracy")
    if ep_lr is not None or it_lr is not None:
        panels.append("lr")
    if pr_keys:
        panels.append("pr")
    if not panels:
        raise ValueError(
            f"{where}: nothing to plot: expected per-epoch dicts with loss/train_acc/val_acc/lr "
            "or a loss_history / train_acc_history / val_acc_history"
        )
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    if figsize is None:
        figsize = (6.0 * ncols, 4.0 * nrows)
    fig = _new_figure(where, figsize, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels):
        ax.grid(True, alpha=0.3)
        if panel == "loss":
            xlabel = "epoch" if n_ep else "iteration"
            if it_loss is not None:
                n = len(it_loss)
                # spread the iterations evenly over the epochs, so both share one axis
                x = (np.arange(1, n + 1) * (ep_x[-1] / n)) if n_ep else np.arange(1, n + 1, dtype=np.float64)
                ax.plot(x, it_loss, color="tab:blue", alpha=0.3, lw=0.8, label="per iteration")
                w = max(1, n // 50)
                if w > 1:
                    ax.plot(x[w - 1:], _moving_average(it_loss, w), color="tab:blue", lw=1.5,
                            label=f"moving average ({w})")
            if ep_loss is not None:
                ax.plot(ep_x, ep_loss, "o-", color="tab:orange", label="epoch mean")
            if ep_val_loss is not None:
                ax.plot(ep_x, ep_val_loss, "s--", color="tab:red", label="validation")
            if it_loss is not None and len(it_loss) >= 20:
                # the first steps' loss can be 10x the rest: keep the axis on the run's body
                body = [np.percentile(it_loss[np.isfinite(it_loss)], 98)]
                body += [np.nanmax(v) for v in (ep_loss, ep_val_loss) if v is not None]
                ax.set_ylim(bottom=min(0.0, float(np.nanmin(it_loss))), top=1.1 * max(body))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("loss")
            ax.set_title("training loss")
        elif panel == "accuracy":
            xlabel = "epoch"
            for name, ep_vals, hist, color in (("train", ep_train, train_hist, "tab:blue"),
                                               ("val", ep_val, val_hist, "tab:orange")):
                if hist is not None and n_ep and len(hist) == n_ep + 1:
                    # the check before training (epoch 0) and one per epoch
                    x, xlabel = acc_x(hist)
                    ax.plot(x, hist, "o-", color=color, label=name)
                elif ep_vals is not None:
                    ax.plot(ep_x, ep_vals, "o-", color=color, label=name)
                elif hist is not None:
                    x, xlabel = acc_x(hist)
                    ax.plot(x, hist, "o-", color=color, label=name)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy")
            ax.set_title("accuracy")
        elif panel == "lr":
            if it_lr is not None and n_ep:
                # per-iteration rates (warm-up, one-cycle): a line over the epochs
                x = np.arange(len(it_lr)) * (ep_x[-1] / len(it_lr))
                ax.plot(x, it_lr, color="tab:green", lw=1.5)
                rates = it_lr
            else:
                ax.plot(ep_x, ep_lr, "o-", color="tab:green")
                rates = ep_lr
            finite = rates[np.isfinite(rates)]
            # per-epoch steps over decades read best on a log axis; a warm-up or cycle
            # (linear pieces, often ending near 0) on a linear one
            stepped = it_lr is None or not n_ep
            if stepped and finite.size and np.all(finite > 0) and finite.max() > 30 * finite.min():
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("learning rate")
            ax.set_title("learning rate")
        else:
            for k in pr_keys:
                ax.plot(ep_x, _series(epochs, k), "o-", label=str(k))
            ax.set_xlabel("epoch")
            ax.set_ylabel("score")
            ax.set_title("precision / recall")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _finish(fig, path)


# ----------------------------------------------------------------------------- confusion matrix


def plot_confusion_matrix(cm, class_names=None, normalize=False, path=None, annotate=None,
                          figsize=None, dpi: int = 100, title: str | None = None) -> Figure:
    """Heat map of a (C, C) confusion matrix (rows true, columns predicted).

    normalize: False (colour by count), 'true' or True (by the fraction of each true
    class, i.e. recall along the diagonal), 'pred' (by the fraction of each predicted
    class, precision along the diagonal) or 'all'. Rows / columns with no samples
    get 0. annotate: write the count in every cell (and the fraction when
    normalised); default when C <= 20. figsize defaults to a square that grows with C.
    """
    where = "plot_confusion_matrix"
    cm = _check_cm(where, cm)
    C = cm.shape[0]
    names = _class_names(where, class_names, C)
    if normalize is True:
        normalize = "true"
    if normalize not in (False, None, "true", "pred", "all"):
        raise ValueError(f"{where}: normalize must be False, True, 'true', 'pred' or 'all', got {normalize!r}")
    counts = cm.astype(np.float64)
    if normalize == "true":
        den = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        den = counts.sum(axis=0, keepdims=True)
    elif normalize == "all":
        den = np.full((1, 1), counts.sum())
    else:
        den = None
    if den is None:
        values, vmax = counts, max(1.0, counts.max())
    else:
        values = np.zeros_like(counts)
        np.divide(counts, den, out=values, where=np.broadcast_to(den, counts.shape) != 0)
        vmax = 1.0
    if annotate is None:
        annotate = C <= 20
    if figsize is None:
        side = max(4.0, 0.55 * C + 2.5)
        figsize = (side + 1.0, side)
    fig = _new_figure(where, figsize, dpi)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="count" if den is None else "fraction")
    ax.set_xticks(np.arange(C), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(C), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if annotate:
        fontsize = 9 if C <= 10 else 7
        is_int = np.issubdtype(cm.dtype, np.integer)
        for i in range(C):
            for j in range(C):
                text = f"{cm[i, j]:d}" if is_int else f"{cm[i, j]:.3g}"
                if den is not None:
                    text += f"\n{values[i, j]:.0%}"
                dark = values[i, j] > 0.55 * vmax
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if dark else "black")
    total = cm.sum()
    if title is None:
        title = f"confusion matrix ({total:g} samples, accuracy {np.trace(cm) / total:.1%})" if total else "confusion matrix"
    ax.set_title(title)
    return _finish(fig, path)


# ----------------------------------------------------------------------------- worst examples


def _as_hwc_images(where: str, images) -> np.ndarray:
    """(k, H, W), (k, H, W, 1|3) or unambiguous channels-first (k, 1|3, H, W) ->
    (k, H, W, 1|3)."""
    _check_real_array(where, "images", images, (3, 4))
    if images.ndim == 3:
        return images[..., None]
    if images.shape[3] in (1, 3):
        return images
    if images.shape[1] in (1, 3):
        return images.transpose(0, 2, 3, 1)
    raise ValueError(
        f"{where}: images must be (k, H, W), (k, H, W, 1|3) or (k, 1|3, H, W), got shape {images.shape}"
    )


def plot_worst_examples(images, true, top3_classes, top3_probs, class_names=None, path=None,
                        ncols: int | None = None, figsize=None, dpi: int = 100) -> Figure:
    """A grid of images, each titled with its true class and the top predictions.

    images: (k, H, W, C) with C = 1 or 3, (k, H, W) grayscale, or (k, C, H, W);
    uint8 is shown as is, any other dtype is rescaled per image to the full range
    (so mean-subtracted inputs display). true: (k,) classes; top3_classes,
    top3_probs: (k, K) most probable classes first, as in
    `funkcije.metrics.worst_examples`. A title is green when the top prediction is
    right, red otherwise. ncols defaults to min(k, 5); figsize to
    (2.2 ncols, 2.9 rows) inches.
    """
    where = "plot_worst_examples"
    imgs = _as_hwc_images(where, images)
    k = imgs.shape[0]
    if k < 1:
        raise ValueError(f"{where}: need at least one image, got shape {images.shape}")
    true = np.asarray(true)
    top3_classes = np.asarray(top3_classes)
    top3_probs = np.asarray(top3_probs)
    if true.shape != (k,):
        raise ValueError(f"{where}: true must have shape ({k},) for {k} images, got {true.shape}")
    if top3_classes.ndim != 2 or top3_classes.shape[0] != k or top3_probs.shape != top3_classes.shape:
        raise ValueError(
            f"{where}: top3_classes and top3_probs must both have shape ({k}, K), got "
            f"{top3_classes.shape} and {top3_probs.shape}"
        )
    for name, a in (("true", true), ("top3_classes", top3_classes)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{where}: {name} must hold integer classes, got dtype {a.dtype}")
    max_label = int(max(true.max(), top3_classes.max(initial=0)))
    if min(true.min(), top3_classes.min(initial=0)) < 0:
        raise ValueError(f"{where}: class indices must be >= 0")
    if class_names is None:
        names = [str(c) for c in range(max_label + 1)]
    else:
        names = [str(n) for n in class_names]
        if max_label >= len(names):
            raise ValueError(f"{where}: class index {max_label} is out of range for {len(names)} class names")
    if ncols is None:
        ncols = min(k, 5)
    if isinstance(ncols, bool) or not isinstance(ncols, numbers.Integral) or ncols < 1:
        raise ValueError(f"{where}: ncols must be an int >= 1, got {ncols!r}")
    nrows = -(-k // ncols)
    if figsize is None:
        figsize = (2.2 * ncols, 2.9 * nrows)
    fig = _new_figure(where, figsize, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        img = imgs[i]
        if img.dtype != np.uint8:
            img = _rescale(img, 1.0)
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else 1.0,
                      interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        lines = [f"true: {names[true[i]]}"]
        lines += [f"{names[c]} {p:.2f}" for c, p in zip(top3_classes[i], top3_probs[i])]
        ok = top3_classes.shape[1] > 0 and top3_classes[i, 0] == true[i]
        ax.set_title("\n".join(lines), fontsize=8, color="tab:green" if ok else "tab:red")
    return _finish(fig, path)
