"""Data augmentation and input normalisation on whole batches (N, C, H, W).

Random transforms draw from a Generator that the caller passes in, so a run is
repeated exactly from a seed and resumed exactly from a checkpoint (the Solver
owns one augmentation stream and saves its state). Every transform works on the
whole batch at once with NumPy indexing (no Python loop over images), keeps the
input's dtype and never modifies its input.

    pipe = augment.Compose(augment.RandomCrop(4, mode="reflect"), augment.HorizontalFlip())
    Solver(model, data, augment=pipe, ...)           # training batches only
    augment.parse("crop:4:reflect,flip,cutout:8")    # the same from a string (the CLI's --augment)

Arrays on a device (CuPy, or any Array API array) are transformed where they are: the
random draws are the same host draws from `rng` (so a run repeats, and resumes, alike on
either device), and each transform is one gather or select on the device (`_shifted`),
equal element for element to the NumPy path.

Transforms (each `t(X, rng) -> X'`, X of shape (N, C, H, W)):
  RandomCrop(padding, mode="zero"|"reflect")  pad by `padding` on every side, cut a
      random H x W window: a translation by up to `padding` pixels each way
  Translate(k, mode="zero")                    the same operation under its other name
  HorizontalFlip(p=0.5)                        mirror each image with probability p
  AlternatingFlip()                            mirror each image in every other epoch (Jordan
      2024's derandomised flip); called as t(X, rng, index=, epoch=), which the Solver does
      for a transform whose `needs_index` is True
  Cutout(size, p=1.0)                          zero a size x size square at a random
      centre (clipped at the border; DeVries & Taylor, 2017)
Deterministic preprocessing for all splits (train, validation, test alike):
  channel_stats(X) -> (mean, std) per channel, from the training set (the FER lab)
  Normalize(mean, std)                         (X - mean) / std per channel; also the
      `ans` course's ImageNet constants, IMAGENET_MEAN / IMAGENET_STD on [0, 1] pixels
  translate(X, dy, dx, mode)                   one fixed shift of every image (TTA)
  hflip(X)                                     mirror every image
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import backend
from .checks import as_real_array, check_array, check_choice, check_int, check_real_in

__all__ = [
    "RandomCrop",
    "Translate",
    "HorizontalFlip",
    "AlternatingFlip",
    "Cutout",
    "Normalize",
    "Compose",
    "parse",
    "channel_stats",
    "hflip",
    "translate",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODES = ("zero", "reflect")


def _check_batch(where, X):
    check_array(where, "X", X, 4)
    return X


def _check_rng(where, rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _shift(where, name, value):
    """A whole number of pixels: int(1.5) would silently shift by 1 and int('1') accept
    a string, so only integers (and integral floats such as 2.0) pass."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be an int (pixels), got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not (np.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"{where}: {name} must be a whole number of pixels, got {value!r}")
    return int(value)


def _pad(X, padding, mode):
    widths = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    if mode == "zero":
        return np.pad(X, widths)
    return np.pad(X, widths, mode="reflect")


def _check_reflect(where, padding, mode, X):
    """A reflection of `padding` pixels needs images wider and taller than that."""
    if mode == "reflect" and padding >= min(X.shape[2], X.shape[3]):
        raise ValueError(f"{where}: reflect padding of {padding} needs images larger than {padding} pixels, "
                         f"got {tuple(X.shape[2:])}")


def _windows(X, dy, dx, padding, mode):
    """Image n shifted so that its window starts at (dy[n], dx[n]) of the padded
    batch: one gather over a strided view of all windows, no copy of the others."""
    N, C, H, W = X.shape
    view = sliding_window_view(_pad(X, padding, mode), (H, W), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W)
    return np.ascontiguousarray(view[np.arange(N), :, dy, dx])


def _reflect_or_clip(idx, size, mode):
    """(indices into an axis of `size`, valid mask) for positions idx of the padded axis
    counted from the unpadded origin: mirrored without repeating the edge (NumPy's
    'reflect'), or clipped and marked invalid (zero padding)."""
    if mode == "reflect":
        idx = np.abs(idx)
        idx = np.where(idx > size - 1, 2 * (size - 1) - idx, idx)
        return idx, None
    valid = (idx >= 0) & (idx < size)
    return np.clip(idx, 0, size - 1), valid


def _shifted(X, dy, dx, padding, mode):
    """Off the CPU: image n's H x W window starting at (dy[n], dx[n]) of the batch padded
    by `padding`; X (N, C, H, W) on its device, the offsets host (N,) integers. The
    padding is never built: the window's rows and columns map to source rows and columns
    (reflected, or clipped and masked to zero), and the output is one flat `take` of X."""
    xp = backend.array_api(X)
    N, C, H, W = X.shape
    rows, rvalid = _reflect_or_clip(np.asarray(dy)[:, None] + np.arange(H) - padding, H, mode)  # (N, H)
    cols, cvalid = _reflect_or_clip(np.asarray(dx)[:, None] + np.arange(W) - padding, W, mode)  # (N, W)
    planes = np.arange(N * C, dtype=np.int64).reshape(N, C) * (H * W)
    # the (N, C, H, W) index is formed on the device from (N, C), (N, H) and (N, W) pieces
    r = backend.asarray_like(X, rows.astype(np.int64) * W)
    c = backend.asarray_like(X, cols.astype(np.int64))
    index = (xp.reshape(backend.asarray_like(X, planes), (N, C, 1, 1))
             + xp.reshape(r, (N, 1, H, 1)) + xp.reshape(c, (N, 1, 1, W)))
    out = xp.reshape(xp.take(xp.reshape(X, (-1,)), xp.reshape(index, (-1,))), (N, C, H, W))
    if rvalid is not None:
        keep = rvalid[:, :, None] & cvalid[:, None, :]  # (N, H, W)
        if not keep.all():
            out = _zero_where(out, ~keep)
    return out


def _zero_where(X, hole):
    """X (N, C, H, W) with the host (N, H, W) mask's pixels set to zero in every channel,
    in X's namespace; a new array."""
    N, _, H, W = X.shape
    if isinstance(X, np.ndarray):
        out = X.copy()
        np.copyto(out, 0, where=hole[:, None])  # exact +0, also where X is inf or NaN
        return out
    xp = backend.array_api(X)
    mask = xp.reshape(backend.asarray_like(X, hole), (N, 1, H, W))
    return xp.where(mask, xp.zeros((), dtype=X.dtype), X)


def _flipped(X, flip):
    """X (N, C, H, W) with the images where the host (N,) bool flip is True mirrored."""
    if isinstance(X, np.ndarray):
        out = X.copy()
        out[flip] = X[flip, :, :, ::-1]
        return out
    xp = backend.array_api(X)
    mask = xp.reshape(backend.asarray_like(X, flip), (X.shape[0], 1, 1, 1))
    return xp.where(mask, xp.flip(X, axis=3), X)


def _exact(p: float) -> str:
    """A probability as a spec writes it: short where that is exact (0.5, 1), else all
    its digits, so that the transform a checkpoint's spec rebuilds is this one."""
    short = f"{p:g}"
    return short if float(short) == p else repr(p)


class Transform:
    """A random batch transform: `t(X, rng)`. `spec` is its string in parse()'s form,
    used to tell whether a resumed run augments as the original did."""

    spec = ""
    needs_index = False  # True: called as t(X, rng, index=, epoch=) (the batch's training-set indices)

    def __call__(self, X, rng):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __repr__(self):
        return f"augment.parse({self.spec!r})"


class RandomCrop(Transform):
    """Pad every image by `padding` pixels (zeros or a reflection of the border) and
    cut a random H x W window from it: each image moves by dy, dx uniform in
    [-padding, padding]. X (N, C, H, W) -> (N, C, H, W), same dtype."""

    name = "crop"

    def __init__(self, padding=4, mode="zero"):
        where = type(self).__name__
        self.padding = check_int(where, "padding", padding, 0)
        check_choice(where, "mode", mode, _MODES)
        self.mode = mode
        self.spec = f"{self.name}:{self.padding}:{mode}"

    def __call__(self, X, rng):
        where = type(self).__name__
        _check_batch(where, X)
        _check_rng(where, rng)
        N = X.shape[0]
        p = self.padding
        offsets = rng.integers(0, 2 * p + 1, size=(2, N))
        if p == 0 or N == 0:
            return backend.copy(X)
        _check_reflect(where, p, self.mode, X)
        if not isinstance(X, np.ndarray):
            return _shifted(X, offsets[0], offsets[1], p, self.mode)
        return _windows(X, offsets[0], offsets[1], p, self.mode)


class Translate(RandomCrop):
    """A random translation by up to `k` pixels in each direction, the vacated border
    filled with zeros (or a reflection): RandomCrop(k, mode) under the name the
    airbench and `ans` recipes use."""

    name = "translate"

    def __init__(self, k=2, mode="zero"):
        super().__init__(k, mode)


class HorizontalFlip(Transform):
    """Mirror each image left-right with probability p. X (N, C, H, W) -> same."""

    def __init__(self, p=0.5):
        self.p = check_real_in("HorizontalFlip", "p", p, 0.0, 1.0)
        self.spec = f"flip:{_exact(self.p)}"

    def __call__(self, X, rng):
        _check_batch("HorizontalFlip", X)
        _check_rng("HorizontalFlip", rng)
        return _flipped(X, rng.random(X.shape[0]) < self.p)


class AlternatingFlip(Transform):
    """Derandomised flipping (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): training
    image i is mirrored in the epochs e (0-based) where b_i + e is odd, b_i a fixed
    pseudo-random bit of i (the top bit of a multiplicative hash), so half the images
    are mirrored in each epoch and every image is seen both ways in any two epochs
    running; random flips show an image the same way twice in a row half the time.
    Called as t(X, rng, index=, epoch=) with the batch's indices into the training set
    (the Solver passes them); draws nothing from rng. X (N, C, H, W) -> same."""

    spec = "altflip"
    needs_index = True
    _MULT = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: Knuth's multiplicative hash

    def __call__(self, X, rng, index=None, epoch=None):
        _check_batch("AlternatingFlip", X)
        _check_rng("AlternatingFlip", rng)
        if index is None or epoch is None:
            raise ValueError("AlternatingFlip: needs the images' training-set indices and the epoch "
                             "(t(X, rng, index=, epoch=), as the Solver calls it); HorizontalFlip flips at random")
        index = backend.to_host(index)
        if index.shape != (X.shape[0],) or not np.issubdtype(index.dtype, np.integer) or (index < 0).any():
            raise ValueError(f"AlternatingFlip: index must be ({X.shape[0]},) non-negative integers, got "
                             f"{index.dtype} of shape {index.shape}")
        check_int("AlternatingFlip", "epoch", epoch, 0)
        bit = (index.astype(np.uint64) * self._MULT) >> np.uint64(63)  # wraps modulo 2^64
        return _flipped(X, (bit + np.uint64(epoch % 2)) % np.uint64(2) == 1)


class Cutout(Transform):
    """Set a size x size square of every image (with probability p) to zero, centred
    at a uniformly random pixel; squares reaching over the border are clipped.
    X (N, C, H, W) -> same; applied to all channels alike."""

    def __init__(self, size=8, p=1.0):
        self.size = check_int("Cutout", "size", size, 1)
        self.p = check_real_in("Cutout", "p", p, 0.0, 1.0)
        self.spec = f"cutout:{self.size}:{_exact(self.p)}"

    def __call__(self, X, rng):
        _check_batch("Cutout", X)
        _check_rng("Cutout", rng)
        N, _, H, W = X.shape
        cy = rng.integers(0, H, size=N)
        cx = rng.integers(0, W, size=N)
        apply = rng.random(N) < self.p
        y0 = cy - self.size // 2
        x0 = cx - self.size // 2
        rows = np.arange(H)
        cols = np.arange(W)
        in_rows = (rows >= y0[:, None]) & (rows < (y0 + self.size)[:, None])  # (N, H)
        in_cols = (cols >= x0[:, None]) & (cols < (x0 + self.size)[:, None])  # (N, W)
        hole = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]  # (N, H, W)
        return _zero_where(X, hole)


class Compose(Transform):
    """Apply transforms in order, each drawing from the same Generator."""

    def __init__(self, *transforms):
        for t in transforms:
            # a class is callable too, but Compose(HorizontalFlip) would call
            # HorizontalFlip(X, rng) as a constructor at the first batch
            if isinstance(t, type):
                raise TypeError(
                    f"Compose: every transform must be a transform instance t(X, rng), got the class "
                    f"{t.__name__} (write {t.__name__}(...))"
                )
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable t(X, rng), got {type(t).__name__}")
        self.transforms = tuple(transforms)
        self.spec = ",".join(getattr(t, "spec", None) or _callable_name(t) for t in transforms)
        self.needs_index = any(getattr(t, "needs_index", False) for t in transforms)

    def __call__(self, X, rng, index=None, epoch=None):
        for t in self.transforms:
            X = t(X, rng, index=index, epoch=epoch) if getattr(t, "needs_index", False) else t(X, rng)
        return X


def _callable_name(fn):
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def spec_of(augment):
    """A string naming an augmentation (parse()'s form for funkcije's transforms,
    'module:qualname' for another callable), recorded in checkpoints."""
    if augment is None:
        return None
    return getattr(augment, "spec", None) or _callable_name(augment)


_PARSERS = {
    "crop": (RandomCrop, (int, str)),
    "translate": (Translate, (int, str)),
    "flip": (HorizontalFlip, (float,)),
    "altflip": (AlternatingFlip, ()),
    "cutout": (Cutout, (int, float)),
}


def parse(text):
    """A pipeline from a comma-separated string: 'crop[:padding[:zero|reflect]]',
    'translate[:k[:mode]]', 'flip[:p]', 'altflip', 'cutout[:size[:p]]'. Example:
    parse('crop:4:reflect,flip,cutout:12'). An empty string or 'none' gives None."""
    if not isinstance(text, str):
        raise TypeError(f"augment.parse: expected a string such as 'crop:4,flip', got {type(text).__name__}")
    text = text.strip()
    if text in ("", "none"):
        return None
    transforms = []
    for item in text.split(","):
        name, *args = item.strip().split(":")
        if name not in _PARSERS:
            raise ValueError(f"augment.parse: unknown transform {name!r} in {text!r}; valid: {sorted(_PARSERS)}")
        cls, types = _PARSERS[name]
        if len(args) > len(types):
            raise ValueError(f"augment.parse: {name} takes at most {len(types)} arguments, got {item!r}")
        try:
            values = [typ(a) for typ, a in zip(types, args)]
        except ValueError:
            raise ValueError(f"augment.parse: bad argument in {item!r}") from None
        try:
            transforms.append(cls(*values))
        except (ValueError, TypeError) as e:
            # the transform names itself; say also that parse read it from the text
            raise type(e)(f"augment.parse: {item.strip()!r}: {e}") from None
    return transforms[0] if len(transforms) == 1 else Compose(*transforms)


# ----------------------------------------------------------------------------- deterministic


def hflip(X):
    """Every image mirrored left-right: X (N, C, H, W) -> a new array, same dtype."""
    _check_batch("hflip", X)
    if not isinstance(X, np.ndarray):
        return backend.array_api(X).flip(X, axis=3)
    return np.ascontiguousarray(X[:, :, :, ::-1])


def translate(X, dy, dx, mode="reflect"):
    """Every image shifted by (dy, dx) pixels (content moves down/right for positive
    values), the border filled by `mode` ('zero' or 'reflect'). X (N, C, H, W)."""
    _check_batch("translate", X)
    dy = _shift("translate", "dy", dy)
    dx = _shift("translate", "dx", dx)
    check_choice("translate", "mode", mode, _MODES)
    p = max(abs(dy), abs(dx))
    N = X.shape[0]
    if p == 0 or N == 0:
        return backend.copy(X)
    _check_reflect("translate", p, mode, X)
    if not isinstance(X, np.ndarray):
        return _shifted(X, np.full(N, p - dy), np.full(N, p - dx), p, mode)
    return _windows(X, np.full(N, p - dy), np.full(N, p - dx), p, mode)


def channel_stats(X):
    """Per-channel mean and standard deviation of X (N, C, H, W), accumulated in
    float64 and returned as two (C,) float64 arrays (population std)."""
    _check_batch("channel_stats", X)
    if X.shape[0] == 0:
        raise ValueError("channel_stats: X is empty")
    mean = X.mean(axis=(0, 2, 3), dtype=np.float64)
    var = np.zeros_like(mean)
    for c in range(X.shape[1]):  # one channel at a time: no float64 copy of the whole set
        d = X[:, c].astype(np.float64) - mean[c]
        var[c] = np.mean(d * d)
    return mean, np.sqrt(var)


class Normalize:
    """(X - mean) / std per channel: X (N, C, H, W), mean and std (C,) (or scalars).
    Deterministic, for every split alike; the result has X's dtype. Normalize.fit(X)
    takes the statistics from X (the training set)."""

    def __init__(self, mean, std):
        # real numbers only: a string would fail in NumPy's conversion without our name,
        # a complex mean would lose its imaginary part
        mean = as_real_array("Normalize", "mean", mean).astype(np.float64).reshape(-1)
        std = as_real_array("Normalize", "std", std).astype(np.float64).reshape(-1)
        if mean.size == 0 or std.size == 0 or not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("Normalize: mean and std must be finite, non-empty")
        if (std <= 0).any():
            raise ValueError(f"Normalize: std must be > 0, got {std.tolist()}")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, X):
        return cls(*channel_stats(X))

    def __call__(self, X):
        _check_batch("Normalize", X)
        C = X.shape[1]
        if self.mean.size not in (1, C) or self.std.size not in (1, C):
            raise ValueError(
                f"Normalize: {self.mean.size} means and {self.std.size} stds for {C} channels"
            )
        shape = (1, -1, 1, 1)
        dtype = np.dtype(backend.dtype_name(X))
        mean = backend.asarray_like(X, self.mean.astype(dtype).reshape(shape))
        scale = backend.asarray_like(X, (1.0 / self.std).astype(dtype).reshape(shape))
        out = X - mean
        if isinstance(out, np.ndarray):
            out *= scale  # in place: one full-size temporary fewer
            return out
        return out * scale

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
