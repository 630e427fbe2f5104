"""Pictures: image grids (cs231n's visualize_grid, vis_grid and vis_nn), first-layer
filters (and the same filters over training), training curves, per-epoch parameter
histograms, confusion matrices and the worst-classified examples.

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

from .backend import is_array, to_host
from .checks import check_real_in, names_errors
from .metrics import _check_cm, _class_names, _count_text

__all__ = [
    "visualize_grid",
    "vis_grid",
    "vis_nn",
    "save_image",
    "figure_to_array",
    "filter_grid",
    "show_filters",
    "plot_training",
    "plot_filter_snapshots",
    "plot_weight_histograms",
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


def _rescale(where: str, a: np.ndarray, ubound: float) -> np.ndarray:
    """Map a's range linearly onto [0, ubound] (float64); a constant array, which
    has no range, becomes ubound / 2."""
    a = a.astype(np.float64)
    low, high = a.min(), a.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{where}: image values must be finite, got NaN or infinity")
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
    """a checked, as a NumPy array: an array on a GPU (e.g. a parameter of a model moved
    there) comes to the host, where pictures are drawn."""
    if is_array(a) and not isinstance(a, np.ndarray):
        a = to_host(a)
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
    Xs = _check_real_array(where, "Xs", Xs, 4)
    padding = _check_padding(where, padding)
    N = Xs.shape[0]
    if N < 1:
        raise ValueError(f"{where}: Xs must hold at least one image, got shape {Xs.shape}")
    ubound = check_real_in(where, "ubound", ubound, 0, np.inf, low_open=True, high_open=True)
    G = math.isqrt(N - 1) + 1  # ceil(sqrt(N)) without float rounding
    tiles = np.stack([_rescale(where, x, ubound) for x in Xs])
    return _tile(tiles, G, G, padding, 0.0)


def vis_grid(Xs):
    """cs231n's other image grid. Xs: (N, H, W, C) on a square grid of G = ceil(sqrt(N))
    images per side, each followed by one pixel of gap to its right and below; the
    gaps and empty cells take the smallest value of Xs, and the grid as a whole (not
    each image) is rescaled to [0, 1] (a constant Xs gives 0.5). Returns float64
    (G (H + 1), G (W + 1), C).
    """
    where = "vis_grid"
    Xs = _check_real_array(where, "Xs", Xs, 4)
    N = Xs.shape[0]
    if N < 1:
        raise ValueError(f"{where}: Xs must hold at least one image, got shape {Xs.shape}")
    G = math.isqrt(N - 1) + 1
    return _gapped_grid(where, Xs, G, G)


def vis_nn(rows):
    """cs231n's grid of image rows (e.g. each query image followed by its nearest
    neighbours). rows: N sequences of D images, each (H, W, C) and all of one shape;
    image d of row n goes to grid cell (n, d), each followed by one pixel of gap to its
    right and below, at the smallest value of all the images (cs231n fills these gaps
    with 1.0, which shows as a different shade with each image range); the grid is
    rescaled as a whole to [0, 1]. Returns float64 (N (H + 1), D (W + 1), C).
    """
    where = "vis_nn"
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise TypeError(f"{where}: rows must be a non-empty list of lists of (H, W, C) images, got {rows!r:.60}")
    D = None
    images = []
    for n, row in enumerate(rows):
        if isinstance(row, np.ndarray) and row.ndim == 4:
            row = list(row)
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not row:
            raise TypeError(f"{where}: rows[{n}] must be a non-empty list of (H, W, C) images, got {type(row).__name__}")
        if D is None:
            D = len(row)
        elif len(row) != D:
            raise ValueError(f"{where}: every row must hold the same number of images: rows[0] has {D}, rows[{n}] {len(row)}")
        for d, image in enumerate(row):
            image = _check_real_array(where, f"rows[{n}][{d}]", image, 3)
            if images and image.shape != images[0].shape:
                raise ValueError(f"{where}: every image must have the shape of rows[0][0], {images[0].shape}; "
                                 f"rows[{n}][{d}] has {image.shape}")
            images.append(image)
    return _gapped_grid(where, np.stack(images), len(rows), D)


def _gapped_grid(where: str, tiles: np.ndarray, nrows: int, ncols: int) -> np.ndarray:
    """tiles (n, H, W, C) row-major on nrows x ncols cells of (H + 1, W + 1), the gap
    after each tile and the empty cells at tiles' minimum, rescaled as one to [0, 1]."""
    tiles = tiles.astype(np.float64)
    if not np.all(np.isfinite(tiles)):
        raise ValueError(f"{where}: image values must be finite, got NaN or infinity")
    low = tiles.min()
    grid = _tile(tiles, nrows, ncols, 1, low)
    # cs231n's layout has the gap after the last row and column too
    return _rescale(where, np.pad(grid, ((0, 1), (0, 1), (0, 0)), constant_values=low), 1.0)


def _auto_scale(HH: int, WW: int) -> int:
    # enough nearest-neighbour magnification that a 7x7 filter is ~42 px wide
    return max(1, 48 // max(HH, WW))


def _check_scale(where: str, scale, HH: int, WW: int) -> int:
    if scale is None:
        return _auto_scale(HH, WW)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"{where}: scale must be an int >= 1, got {scale!r}")
    return int(scale)


def _check_filters(where: str, W) -> np.ndarray:
    W = _check_real_array(where, "W", W, 4)
    if min(W.shape) < 1:
        raise ValueError(f"{where}: W must have shape (F, C, HH, WW) with no empty axis, got {W.shape}")
    return W


def _filter_tiles(where: str, W: np.ndarray, scale: int) -> np.ndarray:
    """(F, C, HH, WW) -> uint8 (F, C, HH*scale, WW*scale): each filter rescaled on its
    own over all its channels (their relative strength shows), then magnified by
    nearest-neighbour. filter_grid and plot_filter_snapshots both draw these."""
    scaled = np.stack([_rescale(where, w, 255.0) for w in W])
    scaled = np.rint(scaled).astype(np.uint8)
    return scaled.repeat(scale, axis=2).repeat(scale, axis=3)


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
    W = _check_filters(where, W)
    padding = _check_padding(where, padding)
    F, C, HH, WW = W.shape
    scale = _check_scale(where, scale, HH, WW)
    if isinstance(pad_value, bool) or not isinstance(pad_value, numbers.Integral) or not 0 <= pad_value <= 255:
        raise ValueError(f"{where}: pad_value must be an int in [0, 255], got {pad_value!r}")
    scaled = _filter_tiles(where, W, scale)  # (F, C, HH s, WW s)
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


def _evenly_spaced(n: int, k: int) -> list[int]:
    """At most k indices of range(n), evenly spread, always the first and the last
    (k = 1: the last alone)."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)})


def plot_filter_snapshots(snapshots, labels=None, path=None, max_filters: int = 16, max_rows: int = 12,
                          scale: int | None = None, figsize=None, dpi: int = 100) -> Figure:
    """Filters over time: one row per snapshot, one column per filter.

    snapshots: a sequence of arrays (F, C, HH, WW) of one shape (the same layer's
    weights at different steps, e.g. `FilterSnapshots.snapshots`); labels: one string
    per snapshot (row), e.g. "step 200". The first `max_filters` filters are drawn,
    each rescaled on its own as in `filter_grid` (RGB for C == 3, grayscale for C == 1,
    input channel 0 otherwise); with more than `max_rows` snapshots, `max_rows` evenly
    spaced ones (the first and the last among them) are shown, so a long run stays readable.
    With figsize None the figure is sized to hold the image, the row labels and the title
    (the figure's suptitle, in two lines when the image is narrow); with a figsize the
    margins are the labels' measured widths.
    """
    where = "plot_filter_snapshots"
    if isinstance(snapshots, np.ndarray) or not isinstance(snapshots, Sequence) or isinstance(snapshots, (str, bytes)):
        raise TypeError(f"{where}: snapshots must be a list of (F, C, HH, WW) arrays, got {type(snapshots).__name__}")
    if not snapshots:
        raise ValueError(f"{where}: snapshots is empty; there is nothing to draw")
    snapshots = [_check_filters(f"{where}: snapshots[{i}]", W) for i, W in enumerate(snapshots)]
    for i, W in enumerate(snapshots):
        if W.shape != snapshots[0].shape:
            raise ValueError(f"{where}: snapshots must share one shape, got {snapshots[0].shape} and {W.shape} (index {i})")
    if labels is None:
        labels = [f"snapshot {i}" for i in range(len(snapshots))]
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or len(labels) != len(snapshots):
        raise ValueError(f"{where}: labels must be a list of {len(snapshots)} strings (one per snapshot), got {labels!r}")
    for name, v, low in (("max_filters", max_filters, 1), ("max_rows", max_rows, 2)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}")
    F, C, HH, WW = snapshots[0].shape
    scale = _check_scale(where, scale, HH, WW)
    rows = _evenly_spaced(len(snapshots), max_rows)
    nf = min(F, max_filters)
    padding, pad_value = max(1, scale // 4), 255
    strips = []
    for i in rows:
        tiles = _filter_tiles(where, snapshots[i][:nf], scale)
        tiles = tiles.transpose(0, 2, 3, 1) if C == 3 else tiles[:, 0]
        strips.append(_tile(tiles, 1, nf, padding, pad_value))
    grid = _tile(np.stack(strips), len(rows), 1, 2 * padding, pad_value)
    gh, gw = grid.shape[:2]
    row_labels = [str(labels[i]) for i in rows]
    shown = f"{len(rows)} of {len(snapshots)} snapshots" if len(rows) < len(snapshots) else f"{len(rows)} snapshots"
    title = f"filters over training ({shown}, {nf} of {F} filters, {C} x {HH} x {WW})"
    # The margins are measured, not left to constrained layout: around a fixed-aspect image
    # that layout let long row labels ("step 110000 (epoch 1101)") and the title run off
    # the left and right edges of a narrow figure (few filters, many steps).
    label_w = max(_text_inches(t, 8) for t in row_labels)
    left, right, bottom = label_w + 0.2, 0.15, 0.55  # labels + tick pad; x tick labels and "filter"
    fig = _new_figure(where, (1.0, 1.0) if figsize is None else figsize, dpi)  # checks figsize and dpi
    fig.set_layout_engine("none")
    if figsize is None:
        img_w = float(np.clip(0.6 * nf, 2.5, 12.5))
        img_h = img_w * gh / gw
        if img_h > 28.0:  # a tall stack of rows: shrink the image, not the labels
            img_w, img_h = img_w * 28.0 / img_h, 28.0
        fw = left + img_w + right
    else:
        fw = float(figsize[0])
    if _text_inches(title, 10) + 0.2 > fw:  # the title in two lines
        title = title.replace(" (", "\n(", 1)
    top = 0.2 + 0.2 * (title.count("\n") + 1)
    if figsize is None:  # as wide as the title's longer line, at least
        fw = max(fw, max(_text_inches(t, 10) for t in title.split("\n")) + 0.2)
        fig.set_size_inches(fw, max(img_h + top + bottom, 1.5))
    fw, fh = fig.get_size_inches()
    # a figsize too small for the margins still gets an axes (the labels may not fit then)
    ax_w, ax_h = max(fw - left - right, 0.1 * fw), max(fh - top - bottom, 0.1 * fh)
    ax = fig.add_axes((min(left, fw - ax_w) / fw, min(bottom, fh - ax_h) / fh, ax_w / fw, ax_h / fh))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    row_h = snapshots[0].shape[2] * scale + 2 * padding
    ax.set_yticks([r * row_h + HH * scale / 2 for r in range(len(rows))], labels=row_labels, fontsize=8)
    col_w = WW * scale + padding
    step = max(1, nf // 8)
    ax.set_xticks([c * col_w + WW * scale / 2 for c in range(0, nf, step)], labels=list(range(0, nf, step)),
                  fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("filter" + (" (input channel 0)" if C not in (1, 3) else ""))
    # above the axes and centred on the figure: a title wider than a narrow image still fits
    fig.suptitle(title, fontsize=10, y=1.0 - 0.08 / fh, va="top")
    return _finish(fig, path)


def _text_inches(text: str, fontsize: float) -> float:
    """Width in inches of one line of `text` in the default font at `fontsize` points."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(1, 1, 72)  # at 72 dpi a pixel is a point
    w, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return w / 72.0


def plot_weight_histograms(histograms, path=None, max_epochs: int = 8, ncols: int = 4, figsize=None,
                           dpi: int = 100) -> Figure:
    """Per-parameter histograms over training: one panel per parameter, one curve per
    epoch, coloured from early (dark) to late (yellow), so a drifting or collapsing
    distribution is seen at a glance.

    histograms: {name: [(epoch, counts, edges), ...]} with counts (bins,) and edges
    (bins + 1,), non-decreasing, as `funkcije.callbacks.WeightHistograms` records them
    (epoch 0: the initial weights). With more than `max_epochs` epochs, `max_epochs`
    evenly spaced ones (the first and last among them; the last alone when
    `max_epochs` is 1) are drawn.

    Each curve is scaled to its own highest bin (the y axis has no unit), so an epoch
    whose values bunch up — biases still at or near their initial zeros — does not
    flatten the other epochs of its panel into the x axis. A constant (all edges at one
    value, as WeightHistograms records zero biases or unit gammas) is not drawn as a
    spike: the panel says "epoch 0: all 16 = 0" in that epoch's colour and marks the
    value with a small triangle on the x axis. A histogram with every count in one bin
    (np.histogram of a constant) is noted the same way ("all 16 in [0, 0.025]"), so its
    +-0.5 range does not squeeze the other epochs either.
    """
    where = "plot_weight_histograms"
    if not isinstance(histograms, Mapping) or not histograms:
        raise TypeError(f"{where}: histograms must be a non-empty dict {{name: [(epoch, counts, edges), ...]}}, "
                        f"got {type(histograms).__name__} {str(histograms)[:60]}")
    for name, v, low in (("max_epochs", max_epochs, 1), ("ncols", ncols, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}")
    checked = {}
    for name, entries in histograms.items():
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence) or not entries:
            raise ValueError(f"{where}: histograms[{name!r}] must be a non-empty list of (epoch, counts, edges)")
        rows = []
        for e in entries:
            if isinstance(e, (str, bytes)) or not isinstance(e, Sequence) or len(e) != 3:
                raise ValueError(f"{where}: histograms[{name!r}] holds {e!r}, not an (epoch, counts, edges) triple")
            epoch, counts, edges = e
            counts = np.asarray(counts, dtype=np.float64)
            edges = np.asarray(edges, dtype=np.float64)
            if (counts.ndim != 1 or edges.shape != (counts.size + 1,) or not np.all(np.isfinite(edges))
                    or np.any(np.diff(edges) < 0)):
                raise ValueError(f"{where}: histograms[{name!r}]: counts must be (bins,) and edges (bins + 1,) "
                                 f"finite, got {counts.shape} and {edges.shape}")
            if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real):
                raise TypeError(f"{where}: histograms[{name!r}]: epoch must be a number, got {epoch!r}")
            rows.append((float(epoch), counts, edges))
        checked[name] = rows
    all_epochs = sorted({e for rows in checked.values() for e, _, _ in rows})
    keep = {all_epochs[i] for i in _evenly_spaced(len(all_epochs), max_epochs)}
    lo, hi = all_epochs[0], all_epochs[-1]
    from matplotlib import cm, colors

    norm = colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = cm.viridis
    n = len(checked)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    if figsize is None:
        figsize = (3.2 * ncols + 1.0, 2.3 * nrows + 0.6)
    fig = _new_figure(where, figsize, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (name, rows) in zip(axes.ravel(), checked.items()):
        constants = {}  # (low, high) -> [(epoch, count)]: said in words, not drawn as a spike
        for epoch, counts, edges in rows:
            if epoch not in keep:
                continue
            full = np.flatnonzero(counts)
            if edges[0] == edges[-1]:  # every value the same: no bar of made-up width and height
                constants.setdefault((edges[0], edges[0]), []).append((epoch, int(round(counts.sum()))))
                continue
            if counts.size > 1 and full.size == 1:  # np.histogram of a constant: one bar, +-0.5 around it
                i = int(full[0])
                constants.setdefault((edges[i], edges[i + 1]), []).append((epoch, int(round(counts[i]))))
                continue
            peak = counts.max()
            ax.stairs(counts / peak if peak > 0 else counts, edges, color=cmap(norm(epoch)), lw=1.2)
        notes = []
        for (low, high), group in constants.items():
            eps = [e for e, _ in group]
            sizes = {n for _, n in group}
            when = (f"epoch {eps[0]:g}" if len(eps) == 1 else
                    f"epochs {', '.join(f'{e:g}' for e in eps)}" if len(eps) <= 3 else
                    f"epochs {eps[0]:g}-{eps[-1]:g} ({len(eps)})")
            what = f"all {sizes.pop()}" if len(sizes) == 1 else "all"
            where_ = f"= {low:.4g}" if low == high else f"in [{low:.4g}, {high:.4g}]"
            notes.append((f"{when}: {what} {where_}", cmap(norm(eps[-1]))))
            ax.plot([(low + high) / 2], [0.0], "^", color=cmap(norm(eps[-1])), ms=6, clip_on=False, zorder=3)
        for i, (text, color) in enumerate(notes[:4]):
            ax.text(0.02, 0.96 - 0.1 * i, text, transform=ax.transAxes, fontsize=7, color=color, va="top",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
        if len(notes) > 4:
            ax.text(0.02, 0.96 - 0.4, f"(+{len(notes) - 4} more constant)", transform=ax.transAxes, fontsize=7,
                    va="top")
        ax.set_ylim(0.0, 1.1 if not notes else 1.1 + 0.12 * min(len(notes), 5))  # room for the notes
        ax.set_title(str(name), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.grid(True, alpha=0.3)
    shown = [e for e in all_epochs if e in keep]
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes, label="epoch", fraction=0.02, pad=0.01,
                 ticks=shown if len(shown) <= 10 else None)
    fig.suptitle(f"parameter histograms, epochs {lo:g} to {hi:g}" if hi > lo else f"parameter histograms, epoch {lo:g}",
                 fontsize=11)
    return _finish(fig, path)


# ----------------------------------------------------------------------------- training curves


def _series(dicts, key):
    vals = [d.get(key) for d in dicts]
    if all(v is None for v in vals):
        return None
    return np.array([np.nan if v is None else float(v) for v in vals])


def _is_pr_key(key) -> bool:
    k = str(key).lower()
    return "precision" in k or "recall" in k or k == "f1" or k.endswith("_f1") or "f1_" in k


def _moving_average(v: np.ndarray, n: int) -> np.ndarray:
    kernel = np.ones(n) / n
    return np.convolve(v, kernel, mode="valid")


def _unpack_history(where, history):
    """-> (epoch dicts, loss_history, train_acc_history, val_acc_history, lr_history,
    check_iterations, iterations_per_epoch) from a list of per-epoch dicts, a mapping
    with those keys (a checkpoint, a history.json), or a Solver-like object."""
    keys = ("history", "loss_history", "train_acc_history", "val_acc_history", "lr_history", "check_iterations")
    if isinstance(history, Mapping):
        got = [history.get(k) for k in keys]
        ipe = history.get("iterations_per_epoch")
        if ipe is None and _is_count(history.get("num_train")) and _is_count(history.get("batch_size")):
            ipe = max(history["num_train"] // history["batch_size"], 1)  # a Solver checkpoint
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        got = [history] + [None] * (len(keys) - 1)
        ipe = None
    else:
        got = [getattr(history, k, None) for k in keys]
        ipe = getattr(history, "iterations_per_epoch", None)
    epochs = list(got[0]) if got[0] is not None else []
    for i, d in enumerate(epochs):
        if not isinstance(d, Mapping):
            raise TypeError(f"{where}: per-epoch history entries must be dicts, entry {i} is {type(d).__name__}")
    lists = [np.asarray(v, dtype=np.float64).ravel() if v is not None and len(v) else None for v in got[1:]]
    if isinstance(ipe, bool) or not isinstance(ipe, numbers.Real) or not ipe > 0:
        ipe = None
    return (epochs, *lists, ipe)


def _is_count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _markers(n: int, marker: str = "o") -> dict:
    # a marker per point reads well for a few points; a hundred of them hide the line
    return {"marker": marker, "ms": 4} if n <= 30 else {"marker": None}


def _eval_series(epochs):
    """Macro precision / recall that funkcije.callbacks.EpochEvaluation stores under
    each epoch's 'eval' key: {label: values}."""
    out = {}
    for split in ("train", "val"):
        for metric in ("macro_precision", "macro_recall"):
            vals = [(d.get("eval") or {}).get(split, {}).get(metric) if isinstance(d.get("eval"), Mapping) else None
                    for d in epochs]
            if any(isinstance(v, numbers.Real) for v in vals):
                out[f"{split} {metric.replace('_', ' ')}"] = np.array(
                    [float(v) if isinstance(v, numbers.Real) else np.nan for v in vals])
    return out


@names_errors
def plot_training(history, path=None, figsize=None, dpi: int = 100) -> Figure:
    """The training-progress figure: loss, accuracy, learning rate and, when the
    per-epoch dicts carry them, precision / recall / F1.

    history: the per-epoch dicts {epoch, loss, train_acc, val_acc, train_loss, val_loss,
    lr, seconds} (a list), or a Solver (or a dict such as a checkpoint) with attributes / keys
    `history`, `loss_history` (per iteration), `train_acc_history`,
    `val_acc_history`, and where present `lr_history`, `check_iterations` and
    `iterations_per_epoch`. The x axis is in epochs, fractional within an epoch, from 0
    to the end of the run (in iterations when nothing tells how long an epoch is), so
    a one-epoch run and a hundred-epoch run read alike. Panels appear for what is
    present: the loss panel shows the per-iteration loss (faint, with a moving
    average) and its per-epoch mean — the minibatch objective, data loss plus the
    model's regularisation ("data + reg."), as `loss_history` holds it — and the
    per-epoch 'train_loss' and 'val_loss', the data loss alone measured the same way on
    both splits (the two to compare for overfitting); the accuracy panel every
    accuracy check (the one after the first iteration, i.e. epoch 0, the checks within
    epochs of Solver(check_every=...), and one per epoch); the learning rate is drawn
    as a step line over the iterations or epochs it applied to (a constant rate is a
    flat line); the precision/recall panel plots every numeric per-epoch key whose
    name contains 'precision', 'recall' or 'f1', and the macro averages that
    `EpochEvaluation` stores under 'eval'. Three panels stand in one row, four in two;
    figsize defaults to 5.5 (three panels) or 6 inches a column by 4 a row.
    """
    where = "plot_training"
    epochs, it_loss, train_hist, val_hist, it_lr, checks, ipe = _unpack_history(where, history)
    n_ep = len(epochs)
    ep_x = _series(epochs, "epoch")
    if ep_x is None:
        ep_x = np.arange(1, n_ep + 1, dtype=np.float64)
    if ipe is None and n_ep and it_loss is not None and ep_x[-1] > 0:
        ipe = len(it_loss) / ep_x[-1]  # spread the iterations evenly over the epochs
    ep_loss = _series(epochs, "loss")
    ep_train = _series(epochs, "train_acc")
    ep_val = _series(epochs, "val_acc")
    ep_lr = _series(epochs, "lr")
    ep_val_loss = _series(epochs, "val_loss")
    ep_train_loss = _series(epochs, "train_loss")
    pr = {}
    for d in epochs:
        for k, v in d.items():
            if _is_pr_key(k) and k not in pr and isinstance(v, numbers.Real):
                pr[k] = _series(epochs, k)
    pr.update(_eval_series(epochs))

    by_epoch = ipe is not None or (n_ep > 0 and it_loss is None and it_lr is None)
    xlabel = "epoch" if by_epoch else "iteration"

    def it_x(count, first=1):
        # iterations first, first+1, ... on the shared axis (epochs when known)
        x = np.arange(first, first + count, dtype=np.float64)
        return x / ipe if ipe is not None else x

    def acc_x(values):
        if checks is not None and len(checks) == len(values):
            return checks / ipe if ipe is not None else checks, xlabel
        if n_ep and len(values) == n_ep + 1:  # cs231n: after the first iteration, then per epoch
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
    if pr:
        panels.append("pr")
    if not panels:
        raise ValueError(
            f"{where}: nothing to plot: expected per-epoch dicts with loss/train_acc/val_acc/lr "
            "or a loss_history / train_acc_history / val_acc_history"
        )
    ncols = 3 if len(panels) == 3 else min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    if figsize is None:
        figsize = (5.5 * ncols if ncols == 3 else 6.0 * ncols, 4.0 * nrows)
    fig = _new_figure(where, figsize, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    # the end of the run on the shared axis: every panel spans 0 .. x_end
    ends = [ep_x[-1]] if n_ep and by_epoch else []
    for series in (it_loss, it_lr):
        if series is not None:
            ends.append(len(series) / ipe if ipe is not None else len(series))
    x_end = max(ends) if ends else None
    for ax, panel in zip(axes, panels):
        ax.grid(True, alpha=0.3)
        ax_label = xlabel
        if panel == "loss":
            if it_loss is not None:
                n = len(it_loss)
                x = it_x(n)
                ax.plot(x, it_loss, color="tab:blue", alpha=0.3, lw=0.8, label="per iteration (data + reg.)")
                w = max(1, min(n // 10, max(n // 50, 5)))
                if w > 1:
                    ax.plot(x[w - 1:], _moving_average(it_loss, w), color="tab:blue", lw=1.5,
                            label=f"moving average ({w})")
            else:
                ax_label = "epoch"
            if ep_loss is not None and (by_epoch or it_loss is None):
                ax.plot(ep_x, ep_loss, "-", color="tab:orange", label="epoch mean (data + reg.)", **_markers(n_ep))
            # the two that compare: one criterion (the data loss, no penalty), test mode, at the epoch's end
            if ep_train_loss is not None and (by_epoch or it_loss is None):
                ax.plot(ep_x, ep_train_loss, "-", color="tab:green", label="train (data loss)",
                        **_markers(n_ep, "D"))
            if ep_val_loss is not None and (by_epoch or it_loss is None):
                ax.plot(ep_x, ep_val_loss, "--", color="tab:red", label="validation (data loss)",
                        **_markers(n_ep, "s"))
            finite = None if it_loss is None else it_loss[np.isfinite(it_loss)]
            if it_loss is not None and len(it_loss) >= 20 and finite.size:
                # the first steps' loss can be 10x the rest: keep the axis on the run's body
                body = [np.percentile(finite, 98)]
                body += [np.max(v[np.isfinite(v)]) for v in (ep_loss, ep_train_loss, ep_val_loss)
                         if v is not None and np.isfinite(v).any()]
                ax.set_ylim(bottom=min(0.0, float(finite.min())), top=1.1 * max(body))
            ax.set_ylabel("loss")
            ax.set_title("training loss")
        elif panel == "accuracy":
            for name, ep_vals, hist, color in (("train", ep_train, train_hist, "tab:blue"),
                                               ("val", ep_val, val_hist, "tab:orange")):
                if hist is not None and (checks is not None or not n_ep or len(hist) == n_ep + 1 or ep_vals is None):
                    x, ax_label = acc_x(hist)
                    vals = hist
                elif ep_vals is not None:
                    x, ax_label, vals = ep_x, "epoch", ep_vals
                else:
                    continue
                label = name
                if name == "val" and np.isfinite(vals).any():
                    i = int(np.nanargmax(vals))
                    label += f" (best {vals[i]:.4f}" + (f" at epoch {x[i]:.3g})" if ax_label == "epoch" else ")")
                ax.plot(x, vals, "-", color=color, label=label, **_markers(len(vals)))
            ax.set_ylabel("accuracy")
            ax.set_title("accuracy")
        elif panel == "lr":
            rates = it_lr if it_lr is not None else ep_lr
            finite = rates[np.isfinite(rates)]
            constant = finite.size > 0 and np.all(finite == finite[0])
            style = dict(color="tab:green", lw=1.5, drawstyle="steps-post",
                         label=f"constant {finite[0]:.3g}" if constant else None)
            if it_lr is not None:
                # the rate of step i applies from i to i + 1: a step line, flat when constant
                x = it_x(len(it_lr) + 1, first=0)
                ax.plot(x, np.append(it_lr, it_lr[-1]), **style)
            else:
                x = np.concatenate([[ep_x[0] - 1.0], ep_x])  # epoch e's rate spans e - 1 .. e
                ax.plot(x, np.append(ep_lr, ep_lr[-1]), **style)
                ax_label = "epoch"
            # per-epoch steps over decades read best on a log axis; a warm-up or cycle
            # (linear pieces, often ending near 0) and a constant rate on a linear one from 0
            stepped = len(np.unique(finite)) <= max(n_ep, 1) + 1
            if stepped and finite.size and np.all(finite > 0) and finite.max() > 30 * finite.min():
                ax.set_yscale("log")
            elif finite.size and finite.max() > 0:
                ax.set_ylim(bottom=0.0, top=1.15 * finite.max())
            ax.set_ylabel("learning rate")
            ax.set_title("learning rate")
        else:
            for k, v in pr.items():
                ax.plot(ep_x, v, "-", label=str(k), **_markers(n_ep))
            ax_label = "epoch"
            ax.set_ylabel("score")
            ax.set_title("precision / recall")
        ax.set_xlabel(ax_label)
        if ax_label == xlabel and x_end is not None and x_end > 0:
            ax.set_xlim(-0.02 * x_end, 1.02 * x_end)
        elif ax_label == "epoch" and n_ep:
            ax.set_xlim(-0.02 * ep_x[-1], 1.02 * ep_x[-1])
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
        title = f"confusion matrix ({_count_text(total)} samples, accuracy {np.trace(cm) / total:.1%})" if total else "confusion matrix"
    ax.set_title(title)
    return _finish(fig, path)


# ----------------------------------------------------------------------------- worst examples


def _as_hwc_images(where: str, images) -> np.ndarray:
    """(k, H, W), (k, H, W, 1|3) or unambiguous channels-first (k, 1|3, H, W) ->
    (k, H, W, 1|3)."""
    images = _check_real_array(where, "images", images, (3, 4))
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
    right, red otherwise. ncols defaults to min(k, 5); figsize to 2.2 ncols inches
    wide and, per row, 2.2 inches for the image and 0.17 for each title line.
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
    if figsize is None:  # per row: the image and its title's 1 + K lines of 8 points
        figsize = (2.2 * ncols, (2.2 + 0.17 * (1 + top3_classes.shape[1])) * nrows + 0.15)
    fig = _new_figure(where, figsize, dpi)
    fig.get_layout_engine().set(h_pad=0.1)  # room above the top row's titles: their first line fits whole
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        img = imgs[i]
        if img.dtype != np.uint8:
            img = _rescale(where, img, 1.0)
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
