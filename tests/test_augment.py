"""funkcije.augment: batch transforms on known images, determinism, dtype, the
Solver's training-only augmentation with exact resume, and test-time augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from funkcije import augment, metrics
from funkcije.classifiers import Sequential
from funkcije.classifiers.sequential import Affine, Conv2d, Flatten, ReLU
from funkcije.solver import Solver, load_checkpoint


def ramp(N=3, C=2, H=5, W=6, dtype=np.float32):
    """Image n, channel c, pixel (i, j) = 1000 n + 100 c + 10 i + j + 1: every pixel distinct, none zero."""
    n, c, i, j = np.meshgrid(np.arange(N), np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    return (1000 * n + 100 * c + 10 * i + j + 1).astype(dtype)


def shifted(img, dy, dx):
    """Reference translation of one (C, H, W) image with zero fill, written with loops."""
    C, H, W = img.shape
    out = np.zeros_like(img)
    for i in range(H):
        for j in range(W):
            si, sj = i - dy, j - dx
            if 0 <= si < H and 0 <= sj < W:
                out[:, i, j] = img[:, si, sj]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crop_is_a_translation_of_each_image(dtype):
    X = ramp(dtype=dtype)
    before = X.copy()
    out = augment.RandomCrop(2)(X, np.random.default_rng(0))
    assert out.shape == X.shape and out.dtype == X.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(X, before)  # input untouched
    for n in range(X.shape[0]):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[n], shifted(X[n], dy, dx))]
        assert len(matches) == 1, n


def test_crop_offsets_cover_the_whole_range_uniformly():
    X = np.zeros((4000, 1, 3, 3), np.float32)
    X[:, 0, 1, 1] = 1  # a single bright pixel in the centre
    out = augment.RandomCrop(1)(X, np.random.default_rng(1))
    where = out.reshape(len(X), 9).argmax(axis=1)
    counts = np.bincount(where, minlength=9)
    assert (counts > 350).all() and (counts < 550).all()  # 9 positions, ~444 each


def test_reflect_padding_fills_with_the_mirror_image():
    X = ramp(N=1, C=1, H=4, W=4)
    t = augment.translate(X, 0, 1, mode="reflect")  # content moves right by one pixel
    np.testing.assert_array_equal(t[0, 0, :, 1:], X[0, 0, :, :-1])
    np.testing.assert_array_equal(t[0, 0, :, 0], X[0, 0, :, 1])  # reflection of column 1
    z = augment.translate(X, -1, 0, mode="zero")  # up by one, zeros at the bottom
    np.testing.assert_array_equal(z[0, 0, :-1], X[0, 0, 1:])
    assert (z[0, 0, -1] == 0).all()
    np.testing.assert_array_equal(augment.translate(X, 1, -2, mode="zero")[0], shifted(X[0], 1, -2))
    np.testing.assert_array_equal(augment.translate(X, 1.0, -2.0, mode="zero"), augment.translate(X, 1, -2, mode="zero"))
    same = augment.translate(X, 0, 0)
    np.testing.assert_array_equal(same, X)
    assert not np.shares_memory(same, X)  # a new batch, as every shift gives
    with pytest.raises(ValueError, match="whole number of pixels"):
        augment.translate(X, 0.5, 0)
    with pytest.raises(ValueError, match="^RandomCrop: reflect padding of 4 needs images larger than 4 pixels"):
        augment.RandomCrop(4, mode="reflect")(ramp(H=3, W=3), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^translate: reflect padding of 2 needs .* got \(4, 1\)"):
        augment.translate(ramp(N=1, C=1, H=4, W=1), 0, 2)


def test_flip_mirrors_exactly_the_chosen_images():
    X = ramp(N=200)
    out = augment.HorizontalFlip()(X, np.random.default_rng(3))
    flipped = [n for n in range(len(X)) if np.array_equal(out[n], X[n, :, :, ::-1])]
    kept = [n for n in range(len(X)) if np.array_equal(out[n], X[n])]
    assert len(flipped) + len(kept) == len(X)
    assert 70 < len(flipped) < 130
    np.testing.assert_array_equal(augment.hflip(X), X[..., ::-1])
    assert augment.HorizontalFlip(0.0)(X, np.random.default_rng(0)).tolist() == X.tolist()


def test_cutout_zeroes_one_clipped_square_per_image():
    X = ramp(N=50, C=3, H=10, W=10)
    out = augment.Cutout(4)(X, np.random.default_rng(5))
    assert out.dtype == X.dtype
    for n in range(len(X)):
        zero = out[n] == 0
        assert (zero == zero[0]).all()  # every channel alike
        rows, cols = np.nonzero(zero[0])
        assert len(rows) > 0
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w and h <= 4 and w <= 4  # one rectangle, clipped at the border
        np.testing.assert_array_equal(out[n][~zero], X[n][~zero])


def test_pipeline_is_deterministic_from_the_seed_and_parses():
    pipe = augment.parse("crop:2:reflect,flip,cutout:3")
    assert isinstance(pipe, augment.Compose) and pipe.spec == "crop:2:reflect,flip:0.5,cutout:3:1"
    assert augment.parse(pipe.spec).spec == pipe.spec
    # a probability with more digits than %g writes comes back exactly (a resumed run rebuilds it)
    for p in (0.46020510816996235, 1 / 3):
        for t in (augment.HorizontalFlip(p), augment.Cutout(4, p)):
            assert augment.parse(t.spec).p == p
    X = ramp(N=16, H=8, W=8)
    a = pipe(X, np.random.default_rng(7))
    b = pipe(X, np.random.default_rng(7))
    c = pipe(X, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert augment.parse("none") is None and augment.parse("") is None
    for bad in ("rotate", "crop:x", "flip:2", "crop:1:wrap", "cutout:0", "crop:1:zero:3"):
        with pytest.raises(ValueError):
            augment.parse(bad)
    with pytest.raises(TypeError, match="Generator"):
        pipe(X, 0)
    with pytest.raises(ValueError, match="4 dimensions"):
        pipe(X[0], np.random.default_rng(0))


def test_normalize_and_channel_stats():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((50, 3, 4, 4)) * [[[[2.0]], [[3.0]], [[0.5]]]] + 7).astype(np.float32)
    mean, std = augment.channel_stats(X)
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, X.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-12)
    Z = augment.Normalize.fit(X)(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(axis=(0, 2, 3)), 1, atol=1e-5)
    imagenet = augment.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    np.testing.assert_allclose(imagenet(np.full((1, 3, 1, 1), 0.485, np.float32))[0, 0], 0, atol=1e-6)
    with pytest.raises(ValueError, match="std must be > 0"):
        augment.Normalize([0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="channels"):
        augment.Normalize([0, 0], [1, 1])(X)


def test_a_cifar_sized_batch_through_the_whole_pipeline():
    X = np.random.default_rng(0).standard_normal((512, 3, 32, 32)).astype(np.float32)
    out = augment.parse("crop:4:reflect,flip,cutout:8")(X, np.random.default_rng(0))
    assert out.shape == X.shape and out.dtype == np.float32
    assert not np.array_equal(out, X)
    # cutout zeroes 8 x 8 = 64 pixels of each image unless clipped at the border
    zeros = (out[:, 0] == 0).sum(axis=(1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16


# ----------------------------------------------------------------------------- Solver and TTA


def tiny_model(seed=0):
    return Sequential(Conv2d(4, 3, pad=1), ReLU(), Flatten(), Affine(3), input_shape=(2, 6, 6),
                      dtype=np.float64, seed=seed)


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2, 6, 6))
    y = (X[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 1].sum(axis=(1, 2)) > 0)
    return {"X_train": X, "y_train": y, "X_val": X[:20].copy(), "y_val": y[:20].copy()}


class Recorder:
    """Wraps a transform and records what it was given."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.spec = inner.spec

    def __call__(self, X, rng):
        self.seen.append(X.copy())
        return self.inner(X, rng)


def test_solver_augments_training_batches_only():
    data = tiny_data()
    rec = Recorder(augment.parse("crop:1,flip"))
    model = tiny_model()
    s = Solver(model, data, augment=rec, num_epochs=1, batch_size=16, update_rule="sgd", verbose=False, seed=0)
    s.train()
    assert len(rec.seen) == s.iteration == 4  # one call per training batch, none for accuracy checks
    assert all(x.shape == (16, 2, 6, 6) for x in rec.seen)
    plain = Solver(tiny_model(), data, num_epochs=1, batch_size=16, update_rule="sgd", verbose=False, seed=0)
    plain.train()
    assert plain.loss_history != s.loss_history
    # without augmentation the batches are the ones drawn before the augmentation stream existed
    assert plain._rng.bit_generator.state == s._rng.bit_generator.state


def test_augmented_run_resumes_exactly(tmp_path):
    data = tiny_data()
    kw = dict(augment="crop:1:reflect,flip,cutout:2", num_epochs=3, batch_size=16, update_rule="sgd_nesterov",
              optim_config={"learning_rate": 0.05, "weight_decay": 1e-3},
              lr_schedule={"type": "onecycle"}, verbose=False, seed=3)
    full_model = tiny_model()
    full = Solver(full_model, data, checkpoint_name=str(tmp_path / "full"), **kw)
    full.train()
    ckpt = load_checkpoint(tmp_path / "full_epoch_1.pkl")
    assert ckpt["augment"] == "crop:1:reflect,flip:0.5,cutout:2:1"
    resumed_model = tiny_model(seed=9)
    resumed = Solver(resumed_model, data, resume=str(tmp_path / "full_epoch_1.pkl"), verbose=False)
    assert resumed.augment.spec == ckpt["augment"]  # rebuilt from the checkpoint
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.lr_history == full.lr_history
    for k in full_model.params:
        np.testing.assert_array_equal(resumed_model.params[k], full_model.params[k])
    with pytest.raises(ValueError, match="augment"):
        Solver(tiny_model(), data, resume=str(tmp_path / "full_epoch_1.pkl"), augment="flip", verbose=False)


@pytest.mark.parametrize("pipeline", ["translate:1:zero,flip,cutout:2", "translate:1:reflect,altflip"])
def test_augmented_run_resumes_exactly_mid_epoch(tmp_path, pipeline):
    """A checkpoint written after 5 of an epoch's 8 updates (save_checkpoint at any time)
    continues the same batches, augmentations (the alternating flip's epoch and indices
    too) and per-iteration rates."""
    data = tiny_data()
    kw = dict(augment=pipeline, num_epochs=2, batch_size=8, update_rule="sgd_nesterov",
              optim_config={"learning_rate": 0.05}, lr_schedule={"type": "onecycle"}, verbose=False, seed=5)
    full_model = tiny_model()
    full = Solver(full_model, data, **kw)
    full.train()
    part = Solver(tiny_model(), data, **kw)
    for _ in range(5):
        part._step()
    part.save_checkpoint(tmp_path / "mid.ckpt")
    resumed_model = tiny_model(seed=4)
    resumed = Solver(resumed_model, data, resume=str(tmp_path / "mid.ckpt"), verbose=False)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.lr_history == full.lr_history
    for k in full_model.params:
        np.testing.assert_array_equal(resumed_model.params[k], full_model.params[k])


def test_history_records_val_loss_and_best_epoch():
    data = tiny_data()
    s = Solver(tiny_model(), data, num_epochs=3, batch_size=16, update_rule="adam", verbose=False, seed=0)
    s.train()
    assert [h["epoch"] for h in s.history] == [1, 2, 3]
    assert all(np.isfinite(h["val_loss"]) and h["val_loss"] > 0 for h in s.history)
    best = max(s.history, key=lambda h: h["val_acc"])
    assert s.best_val_acc == max([s.val_acc_history[0]] + [h["val_acc"] for h in s.history])
    if s.best_val_acc > s.val_acc_history[0]:
        assert s.best_epoch == best["epoch"]
    # the validation loss is the model's own criterion on the whole validation split
    model = tiny_model()
    model.params.update(s.model.params)
    scores = model.loss(data["X_val"])
    assert s._accuracy_and_loss(data["X_val"], data["y_val"])[1] == pytest.approx(
        model.data_loss(scores, data["y_val"]))


def test_tta_is_the_mean_of_the_views_scores():
    data = tiny_data()
    model = tiny_model()
    X, y = data["X_val"], data["y_val"]
    for tta, n_views in (("flip", 2), ("flip_translate", 6)):
        views = metrics.tta_views(X, tta)
        assert len(views) == n_views
        mean_scores = np.mean([model.loss(v) for v in views], axis=0)
        got = metrics.evaluate(model, X, y, batch_size=7, tta=tta)
        from funkcije.layers import softmax_loss
        assert got.loss == pytest.approx(float(softmax_loss(mean_scores, y)[0]), rel=1e-12)
        assert got.accuracy == np.mean(mean_scores.argmax(axis=1) == y)
    np.testing.assert_array_equal(metrics.tta_views(X, "flip")[1], X[..., ::-1])
    np.testing.assert_array_equal(metrics.tta_views(X, "flip_translate")[2], augment.translate(X, 1, 1))
    with pytest.raises(ValueError, match="tta"):
        metrics.evaluate(model, X, y, tta="rotate")
    with pytest.raises(ValueError, match="tta"):
        metrics.tta_weights("rotate")


def test_weighted_tta_halves_the_shifted_views():
    from funkcije.layers import softmax_loss

    data = tiny_data()
    model = tiny_model()
    X, y = data["X_val"], data["y_val"]
    views = metrics.tta_views(X, "flip_translate_weighted")
    assert all(np.array_equal(a, b) for a, b in zip(views, metrics.tta_views(X, "flip_translate")))
    assert metrics.tta_weights("flip_translate_weighted") == [0.25, 0.25] + [0.125] * 4
    for tta in (None, *metrics.TTA_MODES):
        assert sum(metrics.tta_weights(tta)) == pytest.approx(1.0, abs=1e-15)
        assert len(metrics.tta_weights(tta)) == len(metrics.tta_views(X, tta))  # one weight per view
    s = [model.loss(v) for v in views]
    want = 0.5 * (s[0] + s[1]) / 2 + 0.5 * (s[2] + s[3] + s[4] + s[5]) / 4
    assert not np.allclose(want, np.mean(s, axis=0))  # the weighting is visible on this model
    got = metrics.evaluate(model, X, y, batch_size=7, tta="flip_translate_weighted")
    assert got.loss == pytest.approx(float(softmax_loss(want, y)[0]), rel=1e-12)
    assert got.accuracy == np.mean(want.argmax(axis=1) == y)


# ----------------------------------------------------------------------------- alternating flip


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    t = augment.AlternatingFlip()
    X = ramp(N=1000, C=1, H=2, W=3, dtype=np.float64)
    index = np.arange(1000)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    flipped = []
    for epoch in range(3):
        out = t(X, rng, index=index, epoch=epoch)
        f = np.all(out == X[:, :, :, ::-1], axis=(1, 2, 3))
        assert np.all(f | np.all(out == X, axis=(1, 2, 3)))  # each image either mirrored or untouched
        flipped.append(f)
    assert rng.bit_generator.state == state  # draws nothing
    assert np.all(flipped[0] != flipped[1]) and np.array_equal(flipped[0], flipped[2])
    assert 0.45 < flipped[0].mean() < 0.55
    # an image's orientation depends on its index, not its place in the batch
    perm = np.random.default_rng(1).permutation(1000)
    np.testing.assert_array_equal(t(X[perm], rng, index=perm, epoch=1), t(X, rng, index=index, epoch=1)[perm])
    assert t(X.astype(np.float32), rng, index=index, epoch=0).dtype == np.float32
    assert augment.parse("translate:1,altflip").needs_index and augment.parse("altflip").spec == "altflip"
    with pytest.raises(ValueError, match="needs the images' training-set indices"):
        t(X, rng)
    with pytest.raises(ValueError, match=r"index must be \(1000,\) non-negative integers"):
        t(X, rng, index=index[:10], epoch=0)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        t(X, rng, index=index, epoch=-1)


class IndexRecorder(augment.Transform):
    needs_index = True
    spec = "recorder"

    def __init__(self):
        self.calls = []

    def __call__(self, X, rng, index=None, epoch=None):
        self.calls.append((np.array(index), epoch))
        return X


def test_solver_passes_batch_indices_and_epoch():
    data = tiny_data()
    rec = IndexRecorder()
    s = Solver(tiny_model(), data, augment=augment.Compose(augment.Translate(1), rec), num_epochs=2,
               batch_size=16, update_rule="sgd", verbose=False, seed=0)
    s.train()
    assert [e for _, e in rec.calls] == [0] * 4 + [1] * 4
    for epoch in range(2):
        seen = np.concatenate([i for i, e in rec.calls if e == epoch])
        assert sorted(seen) == list(range(data["X_train"].shape[0]))  # each training image once an epoch



def test_cutout_zeroes_its_square_whatever_the_pixels_hold():
    """The square is +0 also over inf, NaN and negative pixels (a multiplication by 0
    would leave NaN, and -0 for negative pixels)."""
    X = np.full((3, 2, 6, 6), np.nan, dtype=np.float32)
    X[1] = -np.inf
    X[2] = -1.5
    out = augment.Cutout(3)(X, np.random.default_rng(0))
    hole = np.isfinite(out) & (out == 0)
    assert hole.sum() >= 3 * 2 * 4  # at least a clipped square in every image and channel
    assert not np.signbit(out[hole]).any()
    kept = ~hole
    np.testing.assert_array_equal(out[kept], X[kept])
