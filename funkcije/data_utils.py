"""Datasets: CIFAR-10 (the canonical python pickles) and MNIST-family idx files.

Where the data lives
    `data_root()` is `$FUNKCIJE_DATA` if set, else the repository's `datasets/`.
    It holds `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta) and
    `fashion-mnist/` (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; MNIST itself fits the same
    pattern in `mnist/`). `datasets/get_datasets.sh` downloads and verifies them.

Two levels
    Raw loaders keep the files' own layout: `load_CIFAR10` (cs231n's signature,
    images N x 32 x 32 x 3), `load_idx` (any idx file), `load_fashion_mnist` /
    `load_mnist` (uint8 images N x 28 x 28).
    `get_CIFAR10_data` and `get_fashion_mnist_data` return the dict a Solver trains
    on: 'X_train', 'y_train', 'X_val', 'y_val', 'X_test', 'y_test', images as
    (N, C, H, W) in float32 by default, labels int64.

Errors
    A missing folder or file raises FileNotFoundError naming the path, the files
    expected there and how to get them; a corrupt file (unreadable pickle,
    truncated or malformed idx, wrong sizes) raises ValueError naming the path and
    what was wrong. Nothing here prints or draws random numbers.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np

from .checks import check_int

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "data_root",
    "load_CIFAR_batch",
    "load_CIFAR10",
    "load_CIFAR10_class_names",
    "get_CIFAR10_data",
    "load_idx",
    "load_mnist_family",
    "load_fashion_mnist",
    "load_mnist",
    "get_fashion_mnist_data",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_SHAPE = (3, 32, 32)  # C, H, W; a pickled row is the R plane, then G, then B

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_HOW_TO_GET = "run datasets/get_datasets.sh or set FUNKCIJE_DATA to the folder that holds it"


def data_root() -> Path:
    """The data folder: $FUNKCIJE_DATA if set and non-empty, else <repo>/datasets,
    where <repo> is the folder that contains the funkcije package."""
    env = os.environ.get("FUNKCIJE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "datasets"


def _dataset_folder(root, name: str, marker: str, what: str, expected) -> Path:
    """Resolve the folder that holds a dataset's files.

    `root` may be the dataset folder itself (as cs231n passes
    'datasets/cifar-10-batches-py') or the data root that contains `name/`;
    None means data_root() / name. `marker` is a file whose presence identifies
    the dataset folder. Raises FileNotFoundError when the folder does not exist.
    """
    if root is None:
        folder = data_root() / name
    else:
        root = Path(root).expanduser()
        folder = root
        if not (root / marker).exists() and not (root / (marker + ".gz")).exists() and (root / name).is_dir():
            folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} not found: folder {folder} does not exist. Expected it to hold "
            f"{', '.join(expected)}; {_HOW_TO_GET} (the data root must contain {name}/)."
        )
    return folder


def _missing_file(path: Path, what: str, expected) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what}: file {path} is missing. Expected {', '.join(expected)} in {path.parent}; "
        f"{_HOW_TO_GET}."
    )


def _as_dtype(dtype, where: str) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be a NumPy dtype such as np.float32, got {dtype!r}") from None


def _check_path(where: str, name: str, value, optional: bool = True):
    """A file or folder argument: a str or os.PathLike (None too where it means the default)."""
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{where}: {name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return value


def _check_split_args(where, num_training, num_validation, num_test, dtype, root):
    """The split arguments, checked before any file is read (loading takes seconds)."""
    check_int(where, "num_training", num_training, 1)
    check_int(where, "num_validation", num_validation, 0)
    check_int(where, "num_test", num_test, 0)
    _check_float_dtype(dtype, where)
    _check_path(where, "root", root)


def _check_float_dtype(dtype, where: str) -> np.dtype:
    dt = _as_dtype(dtype, where)
    if dt.kind != "f":
        raise TypeError(f"{where}: dtype must be a floating dtype (float32 or float64), got {dt}")
    return dt


# ----------------------------------------------------------------------------- CIFAR-10

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    A pickle can run arbitrary code on load; a CIFAR batch needs nothing but the
    globals that rebuild an ndarray (from Python 2 pickles, the canonical release,
    and from Python 3 ones, protocols 2 to 5), so everything else is refused.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol-2 pickles from Python 3 spell bytes this way
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core."):
            # numpy >= 2 moved numpy.core to numpy._core; going there directly
            # avoids the deprecation shim. numpy 1.x only has the old name.
            try:
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _load_pickle(path: Path, what: str, expected):
    if not path.is_file():
        raise _missing_file(path, what, expected)
    try:
        with open(path, "rb") as f:
            # latin1 is what numpy documents for Python 2 pickles: it maps the
            # canonical release's byte strings 1:1 and leaves Python 3 pickles alone.
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except OSError:
        raise
    except Exception as e:  # any unpickling failure means the file is not a batch
        raise ValueError(
            f"{what}: {path} is not a readable python pickle of a CIFAR-10 batch "
            f"({type(e).__name__}: {e}); delete it and {_HOW_TO_GET}."
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: {path} should hold a dict, got {type(obj).__name__}")
    # The canonical release pickled byte-string keys (b'data'); Python 3 copies use str.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_cifar_batch(path: Path, expected=None):
    """One pickled batch -> (data uint8 (n, 3072), labels int64 (n,)), validated."""
    what = "CIFAR-10"
    expected = expected or (path.name,)
    d = _load_pickle(path, what, expected)
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise ValueError(
            f"{what}: {path} lacks the key(s) {missing} of a CIFAR-10 batch; it has {sorted(map(str, d))}"
        )
    data = d["data"]
    n_features = int(np.prod(CIFAR10_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_features:
        desc = f"{type(data).__name__}" + (
            f" of shape {data.shape}, dtype {data.dtype}" if isinstance(data, np.ndarray) else ""
        )
        raise ValueError(
            f"{what}: {path}: 'data' must be a uint8 array of shape (n, {n_features}), got {desc}"
        )
    try:
        labels = np.asarray(d["labels"])
    except Exception as e:
        raise ValueError(f"{what}: {path}: 'labels' is not a sequence of integers ({e})") from e
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: {path}: 'labels' must be a 1-D sequence of integers, got shape "
            f"{labels.shape}, dtype {labels.dtype}"
        )
    if labels.shape[0] != data.shape[0]:
        raise ValueError(
            f"{what}: {path}: {data.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(
            f"{what}: {path}: labels must lie in [0, {len(CIFAR10_CLASSES)}), got values "
            f"from {labels.min()} to {labels.max()}"
        )
    return data, labels.astype(np.int64)


def _cifar_folder(root) -> Path:
    expected = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    return _dataset_folder(root, CIFAR10_DIR, CIFAR10_TRAIN_FILES[0], "CIFAR-10", expected)


def _load_cifar10_uint8(root):
    """All of CIFAR-10 as stored: (Xtr uint8 (50000, 3072), ytr, Xte uint8 (10000, 3072), yte)."""
    folder = _cifar_folder(root)
    expected = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    for name in expected:  # report a missing file before spending seconds on the others
        if not (folder / name).is_file():
            raise _missing_file(folder / name, "CIFAR-10", expected)
    parts = [_read_cifar_batch(folder / name, expected) for name in CIFAR10_TRAIN_FILES]
    Xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    del parts
    Xte, yte = _read_cifar_batch(folder / CIFAR10_TEST_FILE, expected)
    return Xtr, ytr, Xte, yte


def _rows_to_nhwc(rows: np.ndarray, dtype) -> np.ndarray:
    """(n, 3072) uint8 rows -> (n, 32, 32, 3) C-contiguous array of `dtype`."""
    C, H, W = CIFAR10_SHAPE
    out = np.empty((rows.shape[0], H, W, C), dtype=dtype)
    out[...] = rows.reshape(-1, C, H, W).transpose(0, 2, 3, 1)
    return out


def load_CIFAR_batch(filename, dtype=np.float64):
    """One batch file -> X (n, 32, 32, 3) of `dtype`, Y (n,) int64 (cs231n's helper)."""
    path = Path(_check_path("load_CIFAR_batch", "filename", filename, optional=False))
    _check_image_dtype("load_CIFAR_batch", dtype)
    data, labels = _read_cifar_batch(path)
    return _rows_to_nhwc(data, dtype), labels


def _check_image_dtype(where, dtype):
    """Pixels 0..255 must fit: a float dtype or an integer one that holds every uint8
    (np.int8 would wrap 128..255 into negatives)."""
    dt = _as_dtype(dtype, where)
    if not (dt.kind == "f" or (dt.kind in "iu" and np.can_cast(np.uint8, dt))):
        raise TypeError(f"{where}: dtype must be a float dtype or an integer one holding 0..255, got {dt}")
    return dt


def load_CIFAR10(ROOT=None, dtype=np.float64):
    """Load all of CIFAR-10 with cs231n's signature.

    ROOT: the cifar-10-batches-py folder (as in cs231n) or a data root that
    contains it; None means data_root().
    dtype: of the images; float64 by default, as cs231n returns. Pass np.float32
    to halve the memory (pixel values 0..255 are exact in either) or np.uint8 to
    keep the stored bytes.
    Returns Xtr (50000, 32, 32, 3), Ytr (50000,) int64, Xte (10000, 32, 32, 3),
    Yte (10000,) int64; images are N x H x W x C, unscaled.
    """
    _check_path("load_CIFAR10", "ROOT", ROOT)
    _check_image_dtype("load_CIFAR10", dtype)
    Xtr, ytr, Xte, yte = _load_cifar10_uint8(ROOT)
    Xtr = _rows_to_nhwc(Xtr, dtype)
    Xte = _rows_to_nhwc(Xte, dtype)
    return Xtr, ytr, Xte, yte


def load_CIFAR10_class_names(root=None) -> list[str]:
    """The class names from batches.meta (index = label). CIFAR10_CLASSES holds the
    same names without reading a file."""
    _check_path("load_CIFAR10_class_names", "root", root)
    folder = _cifar_folder(root)
    path = folder / CIFAR10_META_FILE
    meta = _load_pickle(path, "CIFAR-10", (CIFAR10_META_FILE,))
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != len(CIFAR10_CLASSES):
        raise ValueError(
            f"CIFAR-10: {path}: 'label_names' must be a list of {len(CIFAR10_CLASSES)} names, got {names!r}"
        )
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


# ----------------------------------------------------------------------------- splits

def _spread(n_available: int, n: int):
    """n indices spread evenly over range(n_available), or a slice of all of them.

    Evenly spaced rather than the first n: a test set stored sorted by class (the
    CIFAR-10 copy in this project's CI keeps test_batch grouped by label) would
    otherwise give a one-class subset. For a shuffled set it is as good a sample.
    """
    if n == n_available:
        return slice(None)
    return (np.arange(n, dtype=np.int64) * n_available) // n


def _to_float_nchw(u8: np.ndarray, shape, dtype, scale: bool, mean):
    """uint8 rows -> (n, C, H, W) float array, optionally /255 and minus `mean`,
    without a float64 intermediate of the whole set."""
    out = np.empty((u8.shape[0],) + tuple(shape), dtype=dtype)
    out[...] = u8.reshape(out.shape)  # rows are already channel-major: C, H, W
    if scale:
        out /= 255  # Python int: stays in `dtype` under NumPy 2's promotion rules
    if mean is not None:
        out -= mean
    return out


def _make_split(Xtr, ytr, Xte, yte, shape, num_training, num_validation, num_test,
                subtract_mean, dtype, scale, where):
    num_training = check_int(where, "num_training", num_training, 1)
    num_validation = check_int(where, "num_validation", num_validation, 0)
    num_test = check_int(where, "num_test", num_test, 0)
    dt = _check_float_dtype(dtype, where)
    if num_training + num_validation > Xtr.shape[0]:
        raise ValueError(
            f"{where}: num_training + num_validation = {num_training} + {num_validation} exceeds "
            f"the {Xtr.shape[0]} training images"
        )
    if num_test > Xte.shape[0]:
        raise ValueError(f"{where}: num_test = {num_test} exceeds the {Xte.shape[0]} test images")

    tr = slice(0, num_training)
    va = slice(num_training, num_training + num_validation)
    te = _spread(Xte.shape[0], num_test)
    Xtr = Xtr.reshape(Xtr.shape[0], -1)
    Xte = Xte.reshape(Xte.shape[0], -1)

    mean = None
    if subtract_mean:
        # Exact: integer sums of uint8 pixels, divided once in float64.
        mean64 = Xtr[tr].sum(axis=0, dtype=np.int64) / num_training
        if scale:
            mean64 /= 255
        mean = mean64.astype(dt).reshape(shape)
    data = {
        "X_train": _to_float_nchw(Xtr[tr], shape, dt, scale, mean),
        "y_train": ytr[tr].copy(),
        "X_val": _to_float_nchw(Xtr[va], shape, dt, scale, mean),
        "y_val": ytr[va].copy(),
        "X_test": _to_float_nchw(Xte[te], shape, dt, scale, mean),
        "y_test": yte[te].copy(),
    }
    if mean is not None:
        data["mean_image"] = mean
    return data


def get_CIFAR10_data(num_training=49000, num_validation=1000, num_test=1000,
                     subtract_mean=True, dtype=np.float32, root=None):
    """CIFAR-10 ready for a Solver, split as in cs231n.

    X_train: the first `num_training` training images; X_val: the `num_validation`
    after them (by default images 49000..49999); X_test: `num_test` of the 10000
    test images, taken at evenly spaced positions (all of them when num_test=10000;
    cs231n takes the first num_test, which is equivalent only when the test batch
    is shuffled). With `subtract_mean`, the mean image of the training split alone
    is subtracted from all three splits. Pixels stay in 0..255 (not scaled), as in cs231n.

    Returns a dict: 'X_train' (num_training, 3, 32, 32), 'y_train' (num_training,),
    'X_val', 'y_val', 'X_test', 'y_test'; images of `dtype` (float32 by default),
    labels int64; plus 'mean_image' (3, 32, 32) when subtract_mean is set.
    Conversion goes straight from the stored uint8 to `dtype`, so float32 never
    makes a float64 copy of the set.
    """
    _check_split_args("get_CIFAR10_data", num_training, num_validation, num_test, dtype, root)
    Xtr, ytr, Xte, yte = _load_cifar10_uint8(root)
    return _make_split(Xtr, ytr, Xte, yte, CIFAR10_SHAPE, num_training, num_validation,
                       num_test, subtract_mean, dtype, scale=False, where="get_CIFAR10_data")


# ----------------------------------------------------------------------------- idx files

# idx type codes (LeCun's MNIST page): data are stored big-endian.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_all(f, path, chunk=1 << 22) -> bytearray:
    """Read a stream to its end. Chunked so that a corrupt header cannot make us
    allocate more than the file really holds."""
    buf = bytearray()
    try:
        while True:
            block = f.read(chunk)
            if not block:
                return buf
            buf += block
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"idx: {path} is a damaged or truncated gzip file ({type(e).__name__}: {e})") from e


def load_idx(path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions d, then d big-endian uint32
    sizes; the data follow, big-endian, row-major. Gzip is recognised by its magic
    bytes, not the file name. Returns a writable array of shape (sizes...) in native
    byte order. Raises FileNotFoundError if the file does not exist and ValueError if
    the header is malformed or the data are shorter or longer than it says.
    """
    path = Path(_check_path("load_idx", "path", path, optional=False))
    if not path.is_file():
        raise FileNotFoundError(f"idx: file {path} is missing; {_HOW_TO_GET}.")
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        raw = _read_all(f, path)
    kind = "gzipped idx" if gz else "idx"
    if len(raw) < 4:
        raise ValueError(f"idx: {path} is too short ({len(raw)} bytes) to hold an idx header")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"idx: {path}: wrong magic number: an idx file starts with two zero bytes, got "
            f"{bytes(raw[:4]).hex()} (is this an idx file?)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"idx: {path}: unknown data type code 0x{code:02x}; expected one of "
            f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx: {path}: truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = _IDX_DTYPES[code]
    expected = math.prod(dims) * dt.itemsize  # Python ints: a corrupt header cannot overflow them
    got = len(raw) - header
    if got != expected:
        problem = "truncated" if got < expected else "followed by trailing bytes"
        raise ValueError(
            f"idx: {path} ({kind}) is {problem}: the header says shape {dims} of {dt.name} "
            f"= {expected} data bytes, found {got}"
        )
    arr = np.frombuffer(raw, dtype=dt, offset=header).reshape(dims)
    if dt.byteorder == ">":
        arr = arr.astype(dt.newbyteorder("="))
    return arr


def _idx_path(folder: Path, stem: str):
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_family(root=None, name="fashion-mnist"):
    """Load an MNIST-family dataset (MNIST, Fashion-MNIST, ...) from its four idx files.

    root: the folder holding the files, or a data root containing `name/`; None means
    data_root() / name. Each file may be gzipped (`<stem>.gz`, preferred) or raw.
    Returns Xtr (N, H, W) uint8, ytr (N,) int64, Xte (M, H, W) uint8, yte (M,) int64,
    as stored (no scaling).
    """
    _check_path("load_mnist_family", "root", root)
    _check_dataset_name("load_mnist_family", name)
    stems = list(IDX_STEMS.values())
    expected = [s + ".gz" for s in stems]
    what = f"{name} (idx files)"
    folder = _dataset_folder(root, name, IDX_STEMS["train_images"], what, expected)
    paths = {}
    for key, stem in IDX_STEMS.items():
        p = _idx_path(folder, stem)
        if p is None:
            raise _missing_file(folder / (stem + ".gz"), what, [f"{s}[.gz]" for s in stems])
        paths[key] = p
    arrays = {key: load_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        X, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        pX, py = paths[f"{split}_images"], paths[f"{split}_labels"]
        if X.ndim != 3 or X.dtype != np.uint8:
            raise ValueError(f"{what}: {pX} must hold uint8 images (N, H, W), got {X.dtype} of shape {X.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{what}: {py} must hold integer labels (N,), got {y.dtype} of shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"{what}: {pX} has {X.shape[0]} images but {py} has {y.shape[0]} labels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(
            f"{what}: training images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]} ({paths['train_images']}, {paths['test_images']})"
        )
    return (arrays["train_images"], arrays["train_labels"].astype(np.int64),
            arrays["test_images"], arrays["test_labels"].astype(np.int64))


def _check_dataset_name(where, name):
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: name must be a dataset folder name such as 'fashion-mnist' or 'mnist', got {name!r}")


def load_fashion_mnist(root=None):
    """Fashion-MNIST as stored: Xtr (60000, 28, 28) uint8, ytr (60000,) int64,
    Xte (10000, 28, 28) uint8, yte (10000,) int64. See load_mnist_family."""
    _check_path("load_fashion_mnist", "root", root)
    return load_mnist_family(root, "fashion-mnist")


def load_mnist(root=None):
    """MNIST as stored, from `mnist/` under the data root. See load_mnist_family."""
    _check_path("load_mnist", "root", root)
    return load_mnist_family(root, "mnist")


def get_fashion_mnist_data(num_training=59000, num_validation=1000, num_test=10000,
                           subtract_mean=True, dtype=np.float32, root=None, name="fashion-mnist"):
    """An MNIST-family dataset ready for a Solver (Fashion-MNIST by default;
    name='mnist' for MNIST), split like get_CIFAR10_data.

    Pixels are scaled to [0, 1] (divided by 255) before the training split's mean
    image is subtracted. X_val holds the `num_validation` training images after the
    first `num_training`; X_test holds `num_test` test images at evenly spaced
    positions (all 10000 by default).

    Returns a dict: 'X_train' (num_training, 1, 28, 28), 'y_train' (num_training,),
    'X_val', 'y_val', 'X_test', 'y_test'; images of `dtype`, labels int64; plus
    'mean_image' (1, 28, 28) when subtract_mean is set.
    """
    where = "get_fashion_mnist_data"
    _check_split_args(where, num_training, num_validation, num_test, dtype, root)
    _check_dataset_name(where, name)
    Xtr, ytr, Xte, yte = load_mnist_family(root, name)
    shape = (1,) + Xtr.shape[1:]
    return _make_split(Xtr, ytr, Xte, yte, shape, num_training, num_validation, num_test,
                       subtract_mean, dtype, scale=True, where="get_fashion_mnist_data")
