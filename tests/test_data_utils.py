"""Data loading: CIFAR-10 pickles and idx files written here in the canonical formats,
their error messages, and the real datasets under FUNKCIJE_DATA (the `data_root` fixture)."""
import gzip
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from funkcije import data_utils as du

# ----------------------------------------------------------------------------- writers


def _cifar_batch_bytes(data, labels, key=bytes, protocol=2):
    k = (lambda s: s.encode()) if key is bytes else (lambda s: s)
    obj = {
        k("batch_label"): k("fake batch"),
        k("labels"): [int(v) for v in labels],
        k("data"): data,
        k("filenames"): [k(f"img_{i}.png") for i in range(len(labels))],
    }
    return pickle.dumps(obj, protocol=protocol)


def write_cifar(folder, rng, n=4, n_test=6, key=bytes, protocol=2):
    """A CIFAR-10 folder with 5 training batches of n rows and a test batch of n_test
    rows. Returns the rows and labels written, concatenated as the loader should."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tr_rows, tr_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        (folder / f"data_batch_{i}").write_bytes(_cifar_batch_bytes(data, labels, key, protocol))
        tr_rows.append(data)
        tr_labels.append(labels)
    te = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    te_labels = rng.integers(0, 10, size=n_test)
    (folder / "test_batch").write_bytes(_cifar_batch_bytes(te, te_labels, key, protocol))
    names = [s.encode() if key is bytes else s for s in du.CIFAR10_CLASSES]
    meta = {(b"label_names" if key is bytes else "label_names"): names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return np.concatenate(tr_rows), np.concatenate(tr_labels), te, te_labels


_IDX_CODE = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
             np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr):
    arr = np.asarray(arr)
    header = bytes([0, 0, _IDX_CODE[arr.dtype], arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, gz):
    raw = idx_bytes(arr)
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist_family(folder, rng, n=7, n_test=5, hw=(4, 3), gz=True):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n,) + hw, dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test,) + hw, dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    for stem, a in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), a, gz)
    return [arrays[s] for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


def nhwc(rows):
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- data_root


def test_data_root_env_then_repository_default(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNKCIJE_DATA", str(tmp_path))
    assert du.data_root() == tmp_path
    monkeypatch.delenv("FUNKCIJE_DATA")
    repo = Path(du.__file__).resolve().parent.parent
    assert du.data_root() == repo / "datasets"
    monkeypatch.setenv("FUNKCIJE_DATA", "")
    assert du.data_root() == repo / "datasets"


# ----------------------------------------------------------------------------- CIFAR-10, fake files


@pytest.mark.parametrize("key,protocol", [(bytes, 2), (str, 4), (bytes, 5)])
def test_load_CIFAR10_layout_and_dtypes(tmp_path, rng, key, protocol):
    Xtr_rows, ytr, Xte_rows, yte = write_cifar(tmp_path / "cifar-10-batches-py", rng, key=key, protocol=protocol)
    Xtr, Ytr, Xte, Yte = du.load_CIFAR10(tmp_path / "cifar-10-batches-py")
    assert Xtr.shape == (20, 32, 32, 3) and Xte.shape == (6, 32, 32, 3)
    assert Xtr.dtype == np.float64 and Xtr.flags.c_contiguous  # cs231n's default dtype
    assert Ytr.dtype == np.int64 and Yte.dtype == np.int64
    np.testing.assert_array_equal(Ytr, ytr)
    np.testing.assert_array_equal(Yte, yte)
    # A stored row is the red plane, then green, then blue, each row-major.
    n, i, j, c = 13, 5, 30, 2
    assert Xtr[n, i, j, c] == Xtr_rows[n, c * 1024 + i * 32 + j]
    np.testing.assert_array_equal(Xtr, nhwc(Xtr_rows))
    np.testing.assert_array_equal(Xte, nhwc(Xte_rows))
    for dtype in (np.float32, np.uint8):
        X32 = du.load_CIFAR10(tmp_path / "cifar-10-batches-py", dtype=dtype)[0]
        assert X32.dtype == dtype
        np.testing.assert_array_equal(X32, nhwc(Xtr_rows))


def test_cifar_root_forms(tmp_path, rng, monkeypatch):
    Xtr_rows = write_cifar(tmp_path / "cifar-10-batches-py", rng)[0]
    from_parent = du.load_CIFAR10(tmp_path, dtype=np.uint8)[0]
    monkeypatch.setenv("FUNKCIJE_DATA", str(tmp_path))
    from_env = du.load_CIFAR10(dtype=np.uint8)[0]
    np.testing.assert_array_equal(from_parent, nhwc(Xtr_rows))
    np.testing.assert_array_equal(from_env, nhwc(Xtr_rows))
    X, y = du.load_CIFAR_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    np.testing.assert_array_equal(X, nhwc(Xtr_rows[4:8]))


def test_python2_style_numpy_core_global_loads_without_warning(tmp_path, rng):
    # The canonical release names numpy.core.multiarray._reconstruct (numpy 1 / Python 2).
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    raw = _cifar_batch_bytes(data, [1, 2, 3], protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X, y = du.load_CIFAR_batch(path, dtype=np.uint8)
    np.testing.assert_array_equal(X, nhwc(data))
    np.testing.assert_array_equal(y, [1, 2, 3])


def test_class_names(tmp_path, rng):
    write_cifar(tmp_path / "cifar-10-batches-py", rng)
    assert du.load_CIFAR10_class_names(tmp_path) == list(du.CIFAR10_CLASSES)
    assert len(du.FASHION_MNIST_CLASSES) == 10 and len(set(du.FASHION_MNIST_CLASSES)) == 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_get_CIFAR10_data_split_and_mean(tmp_path, rng, dtype):
    Xtr_rows, ytr, Xte_rows, yte = write_cifar(tmp_path / "cifar-10-batches-py", rng, n=4, n_test=6)
    d = du.get_CIFAR10_data(num_training=15, num_validation=3, num_test=3, dtype=dtype, root=tmp_path)
    assert set(d) == {"X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean_image"}
    for k in ("X_train", "X_val", "X_test", "mean_image"):
        assert d[k].dtype == dtype, k
    assert d["X_train"].shape == (15, 3, 32, 32)
    assert d["X_val"].shape == (3, 3, 32, 32) and d["X_test"].shape == (3, 3, 32, 32)
    nchw = lambda rows: rows.reshape(-1, 3, 32, 32).astype(np.float64)  # noqa: E731
    mean = nchw(Xtr_rows[:15]).mean(axis=0)  # the training split only
    tol = dict(rtol=0, atol=1e-4 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(d["mean_image"], mean, **tol)
    np.testing.assert_allclose(d["X_train"], nchw(Xtr_rows[:15]) - mean, **tol)
    np.testing.assert_allclose(d["X_val"], nchw(Xtr_rows[15:18]) - mean, **tol)
    np.testing.assert_array_equal(d["y_train"], ytr[:15])
    np.testing.assert_array_equal(d["y_val"], ytr[15:18])
    # The test subset is spread evenly over the test batch: rows 0, 2, 4 of 6.
    np.testing.assert_allclose(d["X_test"], nchw(Xte_rows[[0, 2, 4]]) - mean, **tol)
    np.testing.assert_array_equal(d["y_test"], yte[[0, 2, 4]])
    assert d["y_train"].dtype == np.int64


def test_get_CIFAR10_data_without_mean_and_full_test_set(tmp_path, rng):
    Xtr_rows, _, Xte_rows, yte = write_cifar(tmp_path / "cifar-10-batches-py", rng, n=4, n_test=6)
    d = du.get_CIFAR10_data(num_training=20, num_validation=0, num_test=6, subtract_mean=False, root=tmp_path)
    assert "mean_image" not in d
    np.testing.assert_array_equal(d["X_train"], Xtr_rows.reshape(-1, 3, 32, 32))
    assert d["X_val"].shape == (0, 3, 32, 32) and d["y_val"].shape == (0,)
    np.testing.assert_array_equal(d["X_test"], Xte_rows.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(d["y_test"], yte)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(num_training=18, num_validation=3), ValueError, "exceeds the 20 training images"),
    (dict(num_training=5, num_test=7), ValueError, "exceeds the 6 test images"),
    (dict(num_training=0), ValueError, "num_training must be an int >= 1"),
    (dict(num_training=5, num_validation=-1), ValueError, "num_validation must be an int >= 0"),
    (dict(num_training=5.0), TypeError, "num_training must be an int"),
    (dict(num_training=5, num_test=True), TypeError, "num_test must be an int"),
    (dict(num_training=5, num_test=1, dtype=np.int32), TypeError, "floating dtype"),
])
def test_get_CIFAR10_data_bad_arguments(tmp_path, rng, kwargs, exc, match):
    write_cifar(tmp_path / "cifar-10-batches-py", rng, n=4, n_test=6)
    kwargs = dict(dict(num_validation=1, num_test=1), **kwargs)
    with pytest.raises(exc, match=match):
        du.get_CIFAR10_data(root=tmp_path, **kwargs)


def test_cifar_missing_folder_names_path_files_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNKCIJE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        du.get_CIFAR10_data()
    msg = str(e.value)
    for part in (str(tmp_path / "nowhere" / "cifar-10-batches-py"), "data_batch_1", "test_batch",
                 "datasets/get_datasets.sh", "FUNKCIJE_DATA"):
        assert part in msg


def test_cifar_missing_file_names_it(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, rng)
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="get_datasets.sh") as e:
        du.load_CIFAR10(folder)
    assert str(folder / "test_batch") in str(e.value)


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


def _good_batch(rng, n=3):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [0, 1, 2][:n]


@pytest.mark.parametrize("case,match", [
    ("garbage", "not a readable python pickle"),
    ("truncated", "not a readable python pickle"),
    ("empty", "not a readable python pickle"),
    ("not_a_dict", "should hold a dict, got list"),
    ("no_labels", r"lacks the key\(s\) \['labels'\]"),
    ("wrong_width", r"uint8 array of shape \(n, 3072\), got ndarray of shape \(3, 3071\)"),
    ("float_data", "dtype float32"),
    ("count_mismatch", "3 images but 2 labels"),
    ("label_range", r"labels must lie in \[0, 10\)"),
    ("foreign_global", "refusing to load global"),
])
def test_cifar_corrupt_batches_raise_ValueError_naming_the_file(tmp_path, rng, case, match):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, rng)
    data, labels = _good_batch(rng)
    good = _cifar_batch_bytes(data, labels)
    raw = {
        "garbage": bytes(rng.integers(0, 256, size=200, dtype=np.uint8)),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not_a_dict": pickle.dumps([1, 2, 3]),
        "no_labels": pickle.dumps({b"data": data}),
        "wrong_width": _cifar_batch_bytes(data[:, :3071], labels),
        "float_data": _cifar_batch_bytes(data.astype(np.float32), labels),
        "count_mismatch": _cifar_batch_bytes(data, labels[:2]),
        "label_range": _cifar_batch_bytes(data, [0, 10, 2]),
        "foreign_global": pickle.dumps({b"data": _Sneaky(), b"labels": labels}),
    }[case]
    path = folder / "data_batch_3"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as e:
        du.load_CIFAR10(folder)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------- idx files, fake


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_load_idx_round_trip(tmp_path, rng, gz, dtype):
    a = rng.integers(0, 120, size=(3, 4, 5)).astype(dtype)
    if a.dtype.kind == "f":
        a += rng.standard_normal(a.shape).astype(dtype)
    else:
        a[0, 0, :2] = np.iinfo(a.dtype).min, np.iinfo(a.dtype).max  # sign and byte order show here
    path = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(path, a, gz)
    b = du.load_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.flags.writeable
    np.testing.assert_array_equal(b, a)


def test_load_idx_detects_gzip_by_content_and_reads_1d_and_scalar_headers(tmp_path):
    path = tmp_path / "labels-no-suffix"
    write_idx(path, np.arange(7, dtype=np.uint8), gz=True)
    np.testing.assert_array_equal(du.load_idx(path), np.arange(7))
    path0 = tmp_path / "scalar"
    path0.write_bytes(bytes([0, 0, 0x0C, 0]) + np.array(5, dtype=">i4").tobytes())
    assert du.load_idx(path0).shape == () and du.load_idx(path0) == 5


def _corrupt_idx(case):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return {
        "magic": (b"\x01\x00" + good[2:], False, "wrong magic number"),
        "type_code": (good[:2] + b"\x0a" + good[3:], False, "unknown data type code 0x0a"),
        "truncated_data": (good[:-5], False, r"is truncated: the header says shape \(2, 3, 4\) of uint8 = 24 data bytes, found 19"),
        "trailing": (good + b"\x00", False, "is followed by trailing bytes"),
        # header sizes whose product overflows 64 bits: to 0 (65536^4), or negative
        "huge_dims_wrapping_to_zero": (bytes([0, 0, 8, 4]) + np.full(4, 65536, ">u4").tobytes(), False,
                                       r"is truncated: the header says shape \(65536, 65536, 65536, 65536\)"),
        "huge_dims": (bytes([0, 0, 8, 2]) + np.array([4, 2**32 - 1], ">u4").tobytes(), False,
                      "= 17179869180 data bytes, found 0"),
        "truncated_header": (good[:9], False, "truncated header"),
        "tiny": (b"\x00\x00", False, "too short"),
        "truncated_gzip_data": (good[:-5], True, r"\(gzipped idx\) is truncated"),
        "truncated_gzip_stream": (gzip.compress(good)[:-12], True, "damaged or truncated gzip"),
        "bad_gzip_stream": (b"\x1f\x8b" + bytes(40), True, "damaged or truncated gzip"),
    }[case]


@pytest.mark.parametrize("case", ["magic", "type_code", "truncated_data", "trailing", "huge_dims_wrapping_to_zero",
                                  "huge_dims", "truncated_header",
                                  "tiny", "truncated_gzip_data", "truncated_gzip_stream", "bad_gzip_stream"])
def test_load_idx_corrupt_files(tmp_path, case):
    raw, gz, match = _corrupt_idx(case)
    if gz and case == "truncated_gzip_data":
        raw = gzip.compress(raw)
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as e:
        du.load_idx(path)
    assert str(path) in str(e.value)


def test_load_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="get_datasets.sh"):
        du.load_idx(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------- MNIST family, fake


def test_fashion_mnist_gz_and_mnist_raw(tmp_path, rng, monkeypatch):
    fm = write_mnist_family(tmp_path / "fashion-mnist", rng, gz=True)
    mn = write_mnist_family(tmp_path / "mnist", rng, gz=False, hw=(2, 5))
    for root in (tmp_path, tmp_path / "fashion-mnist"):
        got = du.load_fashion_mnist(root)
        for g, w in zip(got, fm):
            np.testing.assert_array_equal(g, w)
        assert got[0].dtype == np.uint8 and got[1].dtype == np.int64
    monkeypatch.setenv("FUNKCIJE_DATA", str(tmp_path))
    got = du.load_mnist()
    assert got[0].shape == (7, 2, 5)
    for g, w in zip(got, mn):
        np.testing.assert_array_equal(g, w)


def test_get_fashion_mnist_data_scales_then_subtracts_training_mean(tmp_path, rng):
    Xtr, ytr, Xte, yte = write_mnist_family(tmp_path / "fashion-mnist", rng, n=7, n_test=5, hw=(4, 3))
    d = du.get_fashion_mnist_data(num_training=5, num_validation=2, num_test=2, root=tmp_path)
    assert d["X_train"].shape == (5, 1, 4, 3) and d["X_train"].dtype == np.float32
    ref = lambda X: X[:, None].astype(np.float64) / 255  # noqa: E731
    mean = ref(Xtr[:5]).mean(axis=0)
    np.testing.assert_allclose(d["mean_image"], mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(d["X_train"], ref(Xtr[:5]) - mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(d["X_val"], ref(Xtr[5:7]) - mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(d["X_test"], ref(Xte[[0, 2]]) - mean, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(d["y_val"], ytr[5:7])
    np.testing.assert_array_equal(d["y_test"], yte[[0, 2]])
    raw = du.get_fashion_mnist_data(num_training=7, num_validation=0, num_test=5, subtract_mean=False,
                                     dtype=np.float64, root=tmp_path)
    np.testing.assert_array_equal(raw["X_train"], ref(Xtr))
    assert raw["X_train"].min() >= 0 and raw["X_train"].max() <= 1


def test_mnist_family_errors(tmp_path, rng):
    folder = tmp_path / "fashion-mnist"
    write_mnist_family(folder, rng)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as e:
        du.load_fashion_mnist(tmp_path)
    msg = str(e.value)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in msg and "train-images-idx3-ubyte" in msg
    assert "FUNKCIJE_DATA" in msg

    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8), gz=True)  # 5 images
    with pytest.raises(ValueError, match="has 5 images but .* has 4 labels"):
        du.load_fashion_mnist(tmp_path)

    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8), gz=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((7, 4, 3), dtype=np.int16), gz=True)
    with pytest.raises(ValueError, match="must hold uint8 images"):
        du.load_fashion_mnist(tmp_path)

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "elsewhere"))):
        du.load_mnist(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- real data

# First ten labels of data_batch_1 and test_batch in the two CIFAR-10 releases we know
# (datasets/cifar-10-batches-py*.md5): the Toronto tarball, and the re-pickled copy in CI.
CIFAR_FIRST_LABELS = {
    "toronto": ((6, 9, 9, 4, 1, 1, 2, 7, 8, 3), (3, 8, 8, 0, 6, 6, 1, 6, 3, 1)),
    "ci-copy": ((7, 4, 9, 3, 5, 1, 1, 3, 3, 3), (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
}


@pytest.fixture(scope="module")
def cifar(data_root):
    return du.get_CIFAR10_data(root=data_root)


@pytest.fixture(scope="module")
def cifar_raw(data_root):
    return du.load_CIFAR10(data_root / "cifar-10-batches-py", dtype=np.uint8)


def test_real_cifar_dict(cifar):
    shapes = {"X_train": (49000, 3, 32, 32), "X_val": (1000, 3, 32, 32), "X_test": (1000, 3, 32, 32),
              "y_train": (49000,), "y_val": (1000,), "y_test": (1000,), "mean_image": (3, 32, 32)}
    assert {k: v.shape for k, v in cifar.items()} == shapes
    for k in ("X_train", "X_val", "X_test", "mean_image"):
        assert cifar[k].dtype == np.float32
    for k in ("y_train", "y_val", "y_test"):
        assert cifar[k].dtype == np.int64 and cifar[k].min() == 0 and cifar[k].max() == 9
    assert np.abs(cifar["X_train"].mean(axis=0, dtype=np.float64)).max() < 1e-3
    assert 0 < cifar["mean_image"].min() and cifar["mean_image"].max() < 255
    # Adding the mean back gives the stored integer pixels 0..255.
    back = cifar["X_train"][:500] + cifar["mean_image"]
    np.testing.assert_allclose(back, np.round(back), atol=1e-4)
    assert back.min() > -1e-4 and back.max() < 255 + 1e-4
    # Every class is represented in the 1000 test images (the CI copy's test batch is sorted by class).
    assert np.bincount(cifar["y_test"], minlength=10).min() >= 50


def test_real_cifar_raw_matches_dict_and_known_release(cifar, cifar_raw, data_root):
    Xtr, Ytr, Xte, Yte = cifar_raw
    assert Xtr.shape == (50000, 32, 32, 3) and Xte.shape == (10000, 32, 32, 3) and Xtr.dtype == np.uint8
    assert (tuple(Ytr[:10]), tuple(Yte[:10])) in CIFAR_FIRST_LABELS.values()
    np.testing.assert_array_equal(np.bincount(Yte), [1000] * 10)
    np.testing.assert_array_equal(cifar["y_train"], Ytr[:49000])
    np.testing.assert_array_equal(cifar["y_val"], Ytr[49000:])
    np.testing.assert_array_equal(cifar["y_test"], Yte[::10])
    mean = cifar["mean_image"]
    for split, j, stored in (("X_train", 0, Xtr[0]), ("X_val", 7, Xtr[49007]), ("X_test", 3, Xte[30])):
        np.testing.assert_allclose(cifar[split][j] + mean, stored.transpose(2, 0, 1), atol=1e-4)
    assert du.load_CIFAR10_class_names(data_root) == list(du.CIFAR10_CLASSES)


def test_real_fashion_mnist(data_root):
    header = du.load_idx(data_root / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    assert header.shape == (60000,) and header.dtype == np.uint8
    d = du.get_fashion_mnist_data(root=data_root)
    assert d["X_train"].shape == (59000, 1, 28, 28) and d["X_val"].shape == (1000, 1, 28, 28)
    assert d["X_test"].shape == (10000, 1, 28, 28) and d["X_train"].dtype == np.float32
    for k in ("y_train", "y_val", "y_test"):
        assert d[k].dtype == np.int64 and d[k].min() == 0 and d[k].max() == 9
    np.testing.assert_array_equal(d["y_train"][:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(d["y_test"][:10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    np.testing.assert_array_equal(np.bincount(d["y_test"]), [1000] * 10)
    assert np.abs(d["X_train"].mean(axis=0, dtype=np.float64)).max() < 1e-5
    back = d["X_train"] + d["mean_image"]
    assert back.min() > -1e-6 and back.max() < 1 + 1e-6 and back.max() > 0.99
