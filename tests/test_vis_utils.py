"""Every picture has the expected size and content on known input; nothing needs a display."""
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from funkcije import vis_utils as vu
from funkcije.metrics import confusion_matrix


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts + [ax.title]]


def _check_size(fig, path, width_px, height_px):
    """The rendered canvas and the saved PNG are both figsize * dpi pixels."""
    assert isinstance(fig, Figure)
    assert vu.figure_to_array(fig).shape == (height_px, width_px, 4)
    png = iio.imread(path)
    assert png.shape[:2] == (height_px, width_px)


# ----------------------------------------------------------------------------- visualize_grid


@pytest.mark.parametrize("N, H, W, C, padding", [(1, 4, 5, 3, 1), (4, 3, 3, 1, 0), (5, 2, 6, 3, 2), (10, 7, 4, 3, 1)])
def test_visualize_grid_shape_and_tiles(rng, N, H, W, C, padding):
    Xs = rng.standard_normal((N, H, W, C)) * 10 + 3
    grid = vu.visualize_grid(Xs, ubound=255.0, padding=padding)
    G = math.ceil(math.sqrt(N))
    assert grid.shape == (G * H + (G - 1) * padding, G * W + (G - 1) * padding, C)
    for i in range(G * G):
        r, c = divmod(i, G)
        tile = grid[r * (H + padding):r * (H + padding) + H, c * (W + padding):c * (W + padding) + W]
        if i < N:
            x = Xs[i]
            np.testing.assert_allclose(tile, 255.0 * (x - x.min()) / (x.max() - x.min()), atol=1e-12)
        else:
            assert not tile.any()  # empty cells stay 0
    # padding rows between grid rows are zero
    for r in range(1, G):
        assert not grid[r * (H + padding) - padding:r * (H + padding)].any()


def test_visualize_grid_ubound_constant_image_and_errors():
    Xs = np.stack([np.full((2, 2, 1), 5.0), np.arange(4.0).reshape(2, 2, 1)])
    grid = vu.visualize_grid(Xs, ubound=1.0, padding=0)
    np.testing.assert_array_equal(grid[:2, :2], 0.5)  # no range: the middle of [0, ubound]
    np.testing.assert_allclose(grid[:2, 2:4, 0], [[0, 1 / 3], [2 / 3, 1]])
    with pytest.raises(ValueError, match="4 dimensions"):
        vu.visualize_grid(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="padding"):
        vu.visualize_grid(np.zeros((2, 3, 3, 1)), padding=-1)


@pytest.mark.parametrize("N, H, W, C", [(1, 4, 5, 3), (4, 3, 3, 1), (5, 2, 6, 3)])
def test_vis_grid_layout_gaps_and_global_scale(rng, N, H, W, C):
    Xs = rng.standard_normal((N, H, W, C)) * 4 - 1
    grid = vu.vis_grid(Xs)
    G = math.ceil(math.sqrt(N))
    assert grid.dtype == np.float64 and grid.shape == (G * (H + 1), G * (W + 1), C)
    low, high = Xs.min(), Xs.max()
    for i in range(G * G):
        r, c = divmod(i, G)
        cell = grid[r * (H + 1):(r + 1) * (H + 1), c * (W + 1):(c + 1) * (W + 1)]
        if i < N:  # one scale for the whole grid, not one per image
            np.testing.assert_allclose(cell[:H, :W], (Xs[i] - low) / (high - low), atol=1e-12)
        else:
            assert not cell.any()
        assert not cell[H].any() and not cell[:, W].any()  # the gap after each cell is the minimum
    assert grid.min() == 0.0 and grid.max() == 1.0


def test_vis_nn_rows_of_images(rng):
    H, W, C = 3, 4, 3
    rows = [[rng.uniform(10, 20, (H, W, C)) for _ in range(3)] for _ in range(2)]
    grid = vu.vis_nn(rows)
    assert grid.shape == (2 * (H + 1), 3 * (W + 1), C)
    allv = np.stack([im for row in rows for im in row])
    low, high = allv.min(), allv.max()
    for n in range(2):
        for d in range(3):
            cell = grid[n * (H + 1):n * (H + 1) + H, d * (W + 1):d * (W + 1) + W]
            np.testing.assert_allclose(cell, (rows[n][d] - low) / (high - low), atol=1e-12)
    assert not grid[H].any() and not grid[:, W].any()
    # a row may be an (D, H, W, C) array; a constant input has no range: 0.5
    np.testing.assert_allclose(vu.vis_nn([np.ones((2, H, W, C))]), 0.5)


def test_vis_grid_and_vis_nn_reject_bad_input():
    with pytest.raises(ValueError, match="vis_grid: Xs must have 4 dimensions"):
        vu.vis_grid(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="at least one image"):
        vu.vis_grid(np.zeros((0, 3, 3, 1)))
    with pytest.raises(ValueError, match="vis_grid: image values must be finite"):
        vu.vis_grid(np.full((1, 2, 2, 1), np.nan))
    im = np.zeros((2, 2, 3))
    with pytest.raises(TypeError, match="vis_nn: rows must be"):
        vu.vis_nn([])
    with pytest.raises(TypeError, match=r"vis_nn: rows\[1\] must be"):
        vu.vis_nn([[im], im])
    with pytest.raises(ValueError, match="same number of images"):
        vu.vis_nn([[im, im], [im]])
    with pytest.raises(ValueError, match=r"rows\[0\]\[1\] has \(3, 2, 3\)"):
        vu.vis_nn([[im, np.zeros((3, 2, 3))]])
    with pytest.raises(ValueError, match=r"rows\[0\]\[0\] must have 3 dimensions"):
        vu.vis_nn([[np.zeros((2, 2))]])
    with pytest.raises(TypeError, match="real numbers"):
        vu.vis_nn([[im.astype(bool)]])


# ----------------------------------------------------------------------------- save_image


def test_save_image_round_trip(tmp_path, rng):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    vu.save_image(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(iio.imread(tmp_path / "rgb.png"), rgb)
    gray = np.array([[-3.0, 0.4, 100.6, 300.0]])
    vu.save_image(tmp_path / "sub" / "gray.png", gray)  # creates the folder
    np.testing.assert_array_equal(iio.imread(tmp_path / "sub" / "gray.png"), [[0, 0, 101, 255]])
    grid = vu.visualize_grid(rng.standard_normal((3, 4, 4, 3)))
    vu.save_image(tmp_path / "grid.png", grid)
    assert iio.imread(tmp_path / "grid.png").shape == grid.shape
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        vu.save_image(tmp_path / "x.png", np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        vu.save_image(tmp_path / "x.png", np.full((2, 2), np.nan))


# ----------------------------------------------------------------------------- filters


def _rescaled(w):
    return np.rint(255 * (w - w.min()) / (w.max() - w.min())).astype(np.uint8)


def test_filter_grid_rgb(rng):
    W = rng.standard_normal((5, 3, 7, 7))
    grid = vu.filter_grid(W, padding=1)
    s = 48 // 7  # default magnification for 7x7 filters
    assert s == 6
    assert grid.dtype == np.uint8 and grid.shape == (3 * 7 * s + 2, 3 * 7 * s + 2, 3)
    # filter 4 sits at row 1, column 1; every filter is rescaled on its own
    tile = grid[43:85, 43:85]
    expected = _rescaled(W[4]).transpose(1, 2, 0).repeat(s, 0).repeat(s, 1)
    np.testing.assert_array_equal(tile, expected)
    assert (grid[42] == 255).all()  # the padding line
    assert (grid[86:, 86:] == 255).all()  # the empty cells


def test_filter_grid_grayscale(rng):
    W = rng.standard_normal((3, 1, 5, 3))
    grid = vu.filter_grid(W, padding=2, scale=2)
    assert grid.shape == (2 * 10 + 2, 2 * 6 + 2)
    np.testing.assert_array_equal(grid[:10, 8:14], _rescaled(W[1, 0]).repeat(2, 0).repeat(2, 1))


def test_filter_grid_every_channel_of_multichannel_filters(rng):
    F, C = 4, 2
    W = rng.standard_normal((F, C, 3, 3))
    grid = vu.filter_grid(W, padding=1, scale=4)
    assert grid.shape == (F * 12 + F - 1, C * 12 + C - 1)
    for f in range(F):
        scaled = _rescaled(W[f])  # one scale per filter, shared by its channels
        for c in range(C):
            tile = grid[f * 13:f * 13 + 12, c * 13:c * 13 + 12]
            np.testing.assert_array_equal(tile, scaled[c].repeat(4, 0).repeat(4, 1))


def test_filter_grid_errors():
    with pytest.raises(ValueError, match="4 dimensions"):
        vu.filter_grid(np.zeros((3, 7, 7)))
    with pytest.raises(ValueError, match="scale"):
        vu.filter_grid(np.zeros((2, 3, 7, 7)), scale=0)
    with pytest.raises(TypeError, match="real numbers"):
        vu.filter_grid(np.zeros((2, 3, 7, 7), dtype=complex))


def test_show_filters_writes_the_grid_and_returns_a_figure(tmp_path, rng):
    W = rng.standard_normal((6, 4, 7, 7))
    fig = vu.show_filters(W, path=tmp_path / "filters.png", figsize=(4, 5), dpi=50)
    np.testing.assert_array_equal(iio.imread(tmp_path / "filters.png"), vu.filter_grid(W))
    assert vu.figure_to_array(fig).shape == (250, 200, 4)
    fig.savefig(tmp_path / "fig.png")
    assert iio.imread(tmp_path / "fig.png").shape[:2] == (250, 200)


# ----------------------------------------------------------------------------- training curves


def _epochs(n, pr=False):
    out = []
    for e in range(1, n + 1):
        d = dict(epoch=e, loss=2.0 / e, train_acc=0.3 + 0.1 * e, val_acc=0.25 + 0.08 * e, lr=1e-3 * 0.5 ** e, seconds=1.0)
        if pr:
            d.update(val_macro_precision=0.2 + 0.1 * e, val_macro_recall=0.25 + 0.1 * e)
        out.append(d)
    return out


def _visible_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def test_plot_training_from_a_solver_like_object(tmp_path, rng):
    solver = SimpleNamespace(
        history=_epochs(4, pr=True),
        loss_history=list(2.3 - np.linspace(0, 1, 200) + 0.1 * rng.random(200)),
        train_acc_history=[0.1, 0.4, 0.5, 0.6, 0.7],
        val_acc_history=[0.1, 0.33, 0.41, 0.49, 0.57],
    )
    fig = vu.plot_training(solver, path=tmp_path / "train.png", dpi=50)
    _check_size(fig, tmp_path / "train.png", 600, 400)  # 2 x 2 panels, (12, 8) inches
    assert _visible_titles(fig) == ["training loss", "accuracy", "learning rate", "precision / recall"]
    pr_ax = fig.axes[3]
    assert [l.get_label() for l in pr_ax.get_lines()] == ["val_macro_precision", "val_macro_recall"]
    loss_ax = fig.axes[0]
    per_iter = loss_ax.get_lines()[0]
    assert len(per_iter.get_xdata()) == 200 and per_iter.get_xdata()[-1] == pytest.approx(4.0)
    assert loss_ax.get_xlabel() == "epoch"


def test_plot_training_keeps_the_run_in_view(tmp_path):
    """A huge first loss does not flatten the curve; the epoch-0 accuracy check is drawn;
    per-iteration learning rates are one line over the epochs; the training and validation
    data losses appear, and the legend says which curves include the penalty."""
    loss = [30.0] + list(np.linspace(2.0, 0.5, 199))
    run = {
        "history": [{"epoch": e, "loss": 2.0 - 0.4 * e, "val_loss": 1.9 - 0.3 * e, "lr": 0.1,
                     "train_loss": 1.8 - 0.35 * e, "train_acc": 0.2 * e, "val_acc": 0.18 * e}
                    for e in (1, 2, 3, 4)],
        "loss_history": loss,
        "train_acc_history": [0.1, 0.2, 0.4, 0.6, 0.8],
        "val_acc_history": [0.1, 0.18, 0.36, 0.54, 0.72],
        "lr_history": list(np.interp(np.arange(200), [0, 50, 199], [0.02, 0.1, 0.0])),
    }
    fig = vu.plot_training(run, path=tmp_path / "t.png", dpi=40)
    loss_ax, acc_ax, lr_ax = fig.axes[:3]
    assert loss_ax.get_ylim()[1] < 3.0  # the 30.0 spike is clipped
    lines = {l.get_label(): l for l in loss_ax.get_lines()}
    assert list(lines) == ["per iteration (data + reg.)", "moving average (5)", "epoch mean (data + reg.)",
                           "train (data loss)", "validation (data loss)"]
    np.testing.assert_allclose(lines["train (data loss)"].get_ydata(), [1.45, 1.1, 0.75, 0.4])
    np.testing.assert_allclose(lines["validation (data loss)"].get_ydata(), [1.6, 1.3, 1.0, 0.7])
    assert acc_ax.get_lines()[0].get_xdata()[0] == 0.0  # the check before training
    (line,) = lr_ax.get_lines()
    # a step line: rate i spans iterations i .. i + 1, the run's 4 epochs end to end
    assert len(line.get_xdata()) == 201 and line.get_ydata().max() == pytest.approx(0.1)
    assert line.get_drawstyle() == "steps-post" and line.get_xdata()[[0, -1]].tolist() == [0.0, 4.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_plot_training_of_a_run_that_diverged_at_once(bad):
    """Not one finite loss (a run that blew up from its first step): the figure is drawn,
    its loss axis on what is finite (the epoch means here), the rest left out."""
    fig = vu.plot_training({"loss_history": [bad] * 25, "history": [{"epoch": 1, "loss": 3.0, "val_acc": 0.1}],
                            "train_acc_history": [0.1, 0.1], "val_acc_history": [0.1, 0.1]})
    assert np.isfinite(fig.axes[0].get_ylim()).all()


def test_plot_training_from_plain_lists(tmp_path):
    # a list of per-epoch dicts without precision/recall: three panels
    fig = vu.plot_training(_epochs(3), path=tmp_path / "a.png", figsize=(8, 6), dpi=40)
    _check_size(fig, tmp_path / "a.png", 320, 240)
    assert _visible_titles(fig) == ["training loss", "accuracy", "learning rate"]
    # only the cs231n lists (no per-epoch dicts): loss by iteration and accuracy by check
    fig = vu.plot_training({"loss_history": [2.3, 2.0, 1.8], "val_acc_history": [0.1, 0.2]},
                           path=tmp_path / "b.png", dpi=30)
    _check_size(fig, tmp_path / "b.png", 360, 120)  # 1 row of 2 panels, (12, 4) inches
    assert _visible_titles(fig) == ["training loss", "accuracy"]
    assert fig.axes[0].get_xlabel() == "iteration"
    with pytest.raises(ValueError, match="nothing to plot"):
        vu.plot_training([])
    with pytest.raises(TypeError, match="must be dicts"):
        vu.plot_training([1, 2])


# ----------------------------------------------------------------------------- confusion matrix


@pytest.mark.parametrize("name,call", [
    ("visualize_grid", lambda a: vu.visualize_grid(a.transpose(0, 2, 3, 1))),
    ("filter_grid", lambda a: vu.filter_grid(a)),
    ("plot_worst_examples", lambda a: vu.plot_worst_examples(a, [0, 0], [[0], [0]], [[1.0], [1.0]])),
])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_pictures_of_non_finite_values_are_refused_by_name(name, call, bad):
    a = np.ones((2, 3, 4, 4))
    a[1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match=f"^{name}: image values must be finite"):
        call(a)


def test_plot_confusion_matrix(tmp_path):
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 4)
    names = ["cat", "dog", "plane", "never"]
    fig = vu.plot_confusion_matrix(cm, names, path=tmp_path / "cm.png", figsize=(5, 4), dpi=60)
    _check_size(fig, tmp_path / "cm.png", 300, 240)
    ax = fig.axes[0]
    cells = [t.get_text() for t in ax.texts]
    assert cells == [str(v) for v in cm.ravel()]  # every count, row by row
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert "accuracy 66.7%" in ax.get_title()
    # normalised by true class: counts plus the row fraction; the empty row is 0%, not NaN
    fig = vu.plot_confusion_matrix(cm, names, normalize="true", path=tmp_path / "cmn.png", dpi=30)
    side = max(4.0, 0.55 * 4 + 2.5)
    _check_size(fig, tmp_path / "cmn.png", round((side + 1) * 30), round(side * 30))
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert cells[2 * 4 + 2] == "2\n67%" and cells[15] == "0\n0%"
    np.testing.assert_allclose(fig.axes[0].images[0].get_array()[0], [0.5, 0.5, 0, 0])
    # by predicted class: column fractions (an empty column 0, not NaN); over all samples
    fig = vu.plot_confusion_matrix(cm, names, normalize="pred", dpi=30)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), cm / np.maximum(cm.sum(axis=0), 1))
    assert fig.axes[0].texts[0].get_text() == "1\n50%"
    fig = vu.plot_confusion_matrix(cm * 1_000_000, names, dpi=30, annotate=False)
    assert fig.axes[0].get_title().startswith("confusion matrix (6000000 samples,")  # not 6e+06
    fig = vu.plot_confusion_matrix(cm, names, normalize="all", dpi=30)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), cm / 6)
    assert fig.axes[0].texts[2 * 4 + 2].get_text() == "2\n33%"


def test_plot_confusion_matrix_errors():
    cm = np.eye(3, dtype=np.int64)
    with pytest.raises(ValueError, match="3 class names"):
        vu.plot_confusion_matrix(cm, ["a", "b"])
    with pytest.raises(ValueError, match="normalize"):
        vu.plot_confusion_matrix(cm, normalize="rows")
    with pytest.raises(ValueError, match="square"):
        vu.plot_confusion_matrix(np.zeros((2, 3), dtype=np.int64))


# ----------------------------------------------------------------------------- worst examples


def test_plot_worst_examples_rgb_uint8(tmp_path, rng):
    images = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    true = np.array([0, 1, 2, 0, 1, 2, 0])
    top = np.array([[1, 2, 0], [0, 2, 1], [2, 0, 1], [1, 0, 2], [2, 1, 0], [0, 1, 2], [2, 0, 1]])
    probs = np.tile([0.6, 0.3, 0.1], (7, 1))
    fig = vu.plot_worst_examples(images, true, top, probs, ["cat", "dog", "frog"], path=tmp_path / "w.png", dpi=40)
    # default: 5 columns of 2.2 inches, 2 rows of 2.2 inches and four 0.17-inch title lines
    height = 2 * (2.2 + 4 * 0.17) + 0.15
    np.testing.assert_allclose(fig.get_size_inches(), (11, height))
    _check_size(fig, tmp_path / "w.png", round(11 * 40), round(height * 40))
    renderer = fig.canvas.get_renderer()
    tops = [ax.title.get_window_extent(renderer).y1 for ax in fig.axes if ax.get_title()]
    assert max(tops) < fig.bbox.height  # every title's first line inside the figure
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 7
    np.testing.assert_array_equal(shown[0].images[0].get_array(), images[0])
    assert shown[0].get_title() == "true: cat\ndog 0.60\nfrog 0.30\ncat 0.10"
    assert shown[2].get_title().startswith("true: frog\nfrog 0.60")


def test_plot_worst_examples_grayscale_and_channels_first(tmp_path, rng):
    true = np.array([3, 1])
    top = np.array([[1, 3], [0, 1]])
    probs = np.array([[0.7, 0.2], [0.5, 0.4]])
    gray = rng.standard_normal((2, 6, 5)) * 50  # float: rescaled per image for display
    fig = vu.plot_worst_examples(gray, true, top, probs, path=tmp_path / "g.png", figsize=(4, 3), dpi=50)
    _check_size(fig, tmp_path / "g.png", 200, 150)
    arr = fig.axes[0].images[0].get_array()
    assert arr.shape == (6, 5) and arr.min() == 0.0 and arr.max() == 1.0
    assert fig.axes[0].get_title() == "true: 3\n1 0.70\n3 0.20"
    chw = rng.standard_normal((2, 3, 6, 5))
    fig = vu.plot_worst_examples(chw, true, top, probs, figsize=(4, 3), dpi=50)
    assert fig.axes[1].images[0].get_array().shape == (6, 5, 3)
    with pytest.raises(ValueError, match="out of range for 2 class names"):
        vu.plot_worst_examples(gray, true, top, probs, ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2, K\)"):
        vu.plot_worst_examples(gray, true, top[:1], probs[:1])
    with pytest.raises(ValueError, match=r"\(k, H, W\)"):
        vu.plot_worst_examples(rng.standard_normal((2, 5, 6, 7)), true, top, probs)


# ----------------------------------------------------------------------------- display safety


def test_figures_render_in_notebooks_by_themselves():
    fig = vu.plot_confusion_matrix(np.eye(2, dtype=np.int64), figsize=(3, 2), dpi=50)
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert iio.imread(png).shape[:2] == (100, 150)


def test_no_pyplot_and_no_backend_switch():
    code = (
        "import matplotlib, sys, numpy as np\n"
        "before = matplotlib.rcParams['backend']\n"
        "from funkcije import vis_utils as vu\n"
        "vu.figure_to_array(vu.plot_confusion_matrix(np.eye(2, dtype=np.int64)))\n"
        "print('matplotlib.pyplot' in sys.modules, before == matplotlib.rcParams['backend'] == 'svg')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "svg"})
    assert out.stdout.split() == ["False", "True"]


# ----------------------------------------------------------------------------- training figure: short and long runs


def _run(n_epochs, ipe, lr=0.05, checks=None):
    """A Solver-like record of n_epochs epochs of ipe iterations at a constant rate."""
    n = n_epochs * ipe
    checks = checks if checks is not None else [1] + [e * ipe for e in range(1, n_epochs + 1)]
    return SimpleNamespace(
        history=[dict(epoch=e, loss=1.0 / e, val_loss=1.1 / e, train_acc=0.5, val_acc=0.4, lr=lr)
                 for e in range(1, n_epochs + 1)],
        loss_history=list(np.linspace(2.0, 0.5, n)), lr_history=[lr] * n,
        train_acc_history=list(np.linspace(0.1, 0.9, len(checks))), val_acc_history=list(np.linspace(0.1, 0.8, len(checks))),
        check_iterations=checks, iterations_per_epoch=ipe,
    )


def test_plot_training_one_epoch_is_readable(tmp_path):
    """A one-epoch run: fractional epochs from 0 to 1 on every panel (not one dot on an
    axis from 0.96 to 1.04), every check in its place, the constant rate a flat line."""
    fig = vu.plot_training(_run(1, 50, checks=[1, 10, 20, 30, 40, 50]), path=tmp_path / "one.png", dpi=40)
    loss_ax, acc_ax, lr_ax = fig.axes[:3]
    for ax in (loss_ax, acc_ax, lr_ax):
        assert ax.get_xlim() == pytest.approx((-0.02, 1.02)) and ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_xdata(), [0.02, 0.2, 0.4, 0.6, 0.8, 1.0])
    (line,) = lr_ax.get_lines()
    assert line.get_xdata()[[0, -1]].tolist() == [0.0, 1.0] and set(line.get_ydata()) == {0.05}
    assert lr_ax.get_yscale() == "linear" and lr_ax.get_ylim()[0] == 0.0  # not a +-4 % band around 0.05
    assert line.get_label() == "constant 0.05"
    assert "moving average (5)" in [l.get_label() for l in loss_ax.get_lines()]
    assert iio.imread(tmp_path / "one.png").shape[:2] == (160, 660)  # three panels in one row


def test_plot_training_many_epochs_is_readable(tmp_path):
    fig = vu.plot_training(_run(100, 20), path=tmp_path / "long.png", dpi=30)
    loss_ax, acc_ax, lr_ax = fig.axes[:3]
    assert loss_ax.get_xlim() == pytest.approx((-2.0, 102.0))
    acc = acc_ax.get_lines()
    assert acc[0].get_xdata()[0] == pytest.approx(0.05) and acc[0].get_xdata()[-1] == 100.0  # check 0, then epochs
    assert all(l.get_marker() in (None, "None", "") for l in acc + loss_ax.get_lines())  # 101 points: lines only
    assert "best 0.8000 at epoch 100" in acc[1].get_label()
    # per-epoch rates only (no lr_history): epoch e's rate spans e - 1 .. e, a step line from 0
    run = _run(100, 20)
    run.lr_history = None
    run.history = [dict(h, lr=0.1 * 0.5 ** (h["epoch"] // 30)) for h in run.history]
    (line,) = vu.plot_training(run, dpi=30).axes[2].get_lines()
    assert line.get_xdata()[0] == 0.0 and line.get_xdata()[-1] == 100.0 and line.get_drawstyle() == "steps-post"


def test_plot_training_draws_epoch_evaluation(tmp_path):
    run = _run(3, 10)
    for h in run.history:
        h["eval"] = {s: {"macro_precision": 0.5, "macro_recall": 0.6} for s in ("train", "val")}
    fig = vu.plot_training(run, dpi=30)
    assert _visible_titles(fig)[3] == "precision / recall"
    assert [l.get_label() for l in fig.axes[3].get_lines()] == [
        "train macro precision", "train macro recall", "val macro precision", "val macro recall"]


# ----------------------------------------------------------------------------- filters over time, histograms


def test_plot_filter_snapshots(tmp_path, rng):
    snaps = [rng.standard_normal((6, 3, 5, 5)) for _ in range(20)]
    fig = vu.plot_filter_snapshots(snaps, [f"step {i}" for i in range(20)], path=tmp_path / "s.png",
                                   max_filters=4, max_rows=5, dpi=50)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["step 0", "step 5", "step 10", "step 14", "step 19"]
    grid = ax.images[0].get_array()
    tile = 5 * 9  # 5 x 5 filters magnified 48 // 5 = 9 times
    assert grid.shape == (5 * tile + 4 * 4, 4 * tile + 3 * 2, 3)  # 5 rows of 4 filters
    np.testing.assert_array_equal(grid[:tile, :tile], vu.filter_grid(snaps[0][:1], scale=9))
    assert "5 of 20 snapshots, 4 of 6 filters" in fig.get_suptitle()
    assert iio.imread(tmp_path / "s.png").ndim == 3
    gray = vu.plot_filter_snapshots([rng.standard_normal((3, 1, 3, 3))])
    assert gray.axes[0].images[0].get_array().ndim == 2
    with pytest.raises(ValueError, match="share one shape"):
        vu.plot_filter_snapshots([snaps[0], snaps[0][:2]])


def _inside(fig, texts=None):
    """Each Text's rendered box (by default every visible text of the figure) lies within
    the figure's pixels."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    if texts is None:
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    width, height = fig.canvas.get_width_height()
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height, (t.get_text(), box, width)


@pytest.mark.parametrize("F, C, k, n, step", [(4, 1, 3, 40, 10000), (4, 1, 3, 2, 3), (1, 3, 5, 3, 10000),
                                              (8, 3, 3, 12, 10000), (16, 1, 5, 30, 1000), (64, 3, 7, 5, 200)])
def test_plot_filter_snapshots_labels_and_title_fit(rng, F, C, k, n, step):
    # FilterSnapshots' labels, few and many snapshots, few and many filters: nothing is cut at an edge
    # (a narrow figure of 4 filters used to lose "step 110000 (epoch 1101)" and the title's end)
    snaps = [rng.standard_normal((F, C, k, k)) for _ in range(n)]
    labels = [f"step {i * step} (epoch {1 + i * step // 100})" for i in range(n)]
    fig = vu.plot_filter_snapshots(snaps, labels)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == min(n, 12)
    assert any(t.get_text().startswith("filters over training") for t in fig.findobj(Text))
    _inside(fig)  # the row labels, the filter numbers, "filter" and the title
    # a given figsize: the labels' measured width is the left margin
    fig = vu.plot_filter_snapshots(snaps, labels, figsize=(6, 5), dpi=50)
    assert fig.get_size_inches().tolist() == [6, 5]
    _inside(fig, fig.axes[0].get_yticklabels())


def _peak_share(ax, curve):
    """The height of a drawn histogram curve as a fraction of its panel's y range."""
    return float(np.max(curve.get_data().values)) / ax.get_ylim()[1]


def test_plot_weight_histograms_a_constant_or_a_spike_flattens_nothing(rng):
    spread = [np.histogram(rng.normal(0, 0.02 * e, 512), bins=30) for e in (1, 2, 3)]
    hist = {
        # as WeightHistograms records zero biases: all edges at the value
        "recorded.b": [(0, np.array([0] * 29 + [512]), np.zeros(31))] + [(e, c, x) for e, (c, x) in
                                                                             enumerate(spread, 1)],
        # as np.histogram draws them: every count in the bin around 0, edges from -0.5 to 0.5
        "np.b": [(0, *np.histogram(np.zeros(512), bins=30))] + [(e, c, x) for e, (c, x) in enumerate(spread, 1)],
        # a narrow first epoch: 500 of 512 values in one bin, the rest spread
        "spiky.b": [(0, np.array([6, 500, 6]), np.array([-0.03, -0.01, 0.01, 0.03]))]
                   + [(e, c, x) for e, (c, x) in enumerate(spread, 1)],
    }
    fig = vu.plot_weight_histograms(hist, ncols=3)
    rec, npb, spiky = fig.axes[:3]
    for ax in (rec, npb):
        assert len(ax.patches) == 3  # epochs 1-3 drawn; epoch 0 is said, not drawn
        assert all(_peak_share(ax, p) > 0.6 for p in ax.patches)
        assert max(abs(v) for v in ax.get_xlim()) < 0.2  # the +-0.5 of np.histogram does not widen the panel
    assert [t.get_text() for t in rec.texts] == ["epoch 0: all 512 = 0"]
    assert [t.get_text() for t in npb.texts] == ["epoch 0: all 512 in [0, 0.03333]"]
    assert len(spiky.patches) == 4 and all(_peak_share(spiky, p) > 0.6 for p in spiky.patches)


def test_plot_weight_histograms(tmp_path, rng):
    hist = {}
    for name, spread in (("conv1.W", 1.0), ("conv1.b", 0.1), ("fc.W", 0.5)):
        rows = []
        for e in range(12):
            c, x = np.histogram(rng.normal(0, spread * (1 + e / 10), 500), bins=20)
            rows.append((e, c, x))
        hist[name] = rows
    hist["conv1.b"][0] = (0, np.array([0, 0, 5]), np.zeros(4))  # a constant at the start
    fig = vu.plot_weight_histograms(hist, path=tmp_path / "h.png", max_epochs=4, ncols=2, dpi=40)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["conv1.W", "conv1.b", "fc.W"]
    assert len(panels[0].patches) == 4  # epochs 0, 4, 7, 11
    # the constant: no curve, a note and a marker at its value
    assert len(panels[1].patches) == 3 and [t.get_text() for t in panels[1].texts] == ["epoch 0: all 5 = 0"]
    assert panels[1].get_lines()[0].get_xdata().tolist() == [0.0]
    want_in = (3.2 * 2 + 1.0, 2.3 * 2 + 0.6)  # (width, height): 2 columns, 2 rows of panels
    np.testing.assert_allclose(fig.get_size_inches(), want_in)
    # at 40 dpi; matplotlib < 3.11 truncates 5.2 * 40 = 207.99... to 207 pixels, newer ones round
    h_px, w_px = iio.imread(tmp_path / "h.png").shape[:2]
    assert abs(h_px - want_in[1] * 40) < 1 and abs(w_px - want_in[0] * 40) < 1
    fig = vu.plot_weight_histograms(hist, max_epochs=1, dpi=20)  # the last epoch alone
    assert len([ax for ax in fig.axes if ax.get_title() == "conv1.W"][0].patches) == 1
    with pytest.raises(TypeError, match="non-empty dict"):
        vu.plot_weight_histograms({})
