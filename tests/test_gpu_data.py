"""benchmarks/gpu_data.py: CIFAR-10 packed for the device machine comes back exactly."""
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from funkcije.data_utils import _read_cifar_batch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_data.py"
_spec = importlib.util.spec_from_file_location("gpu_data", _PATH)
gpu_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_data)


def _images(rng, n):
    """Photograph-like uint8 images: smooth ramps, a sharp edge, noise, and the extremes
    0 and 255 side by side (where the residuals wrap around)."""
    yy, xx = np.mgrid[0:32, 0:32]
    base = (rng.uniform(0, 4, (n, 3, 1, 1)) * yy + rng.uniform(0, 4, (n, 3, 1, 1)) * xx
            + rng.normal(0, 6, (n, 3, 32, 32)))
    base[:, :, :, 16:] += 120
    x = np.clip(base, 0, 255).astype(np.uint8)
    x[0, 0, 5, 5:9] = [0, 255, 0, 255]
    return x


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (1, 1, 1, 1), (2, 3, 1, 7), (3, 2, 5, 1)])
def test_decode_inverts_encode_exactly(shape):
    rng = np.random.default_rng(0)
    for x in (rng.integers(0, 256, shape).astype(np.uint8), np.full(shape, 255, np.uint8),
              np.zeros(shape, np.uint8)):
        assert np.array_equal(gpu_data.decode(gpu_data.encode(x)), x)


def test_pack_and_unpack_give_the_batches_back(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "data" / gpu_data.FOLDER
    src.mkdir(parents=True)
    names = ("data_batch_1", "test_batch")
    originals = {}
    for name in names:
        x = _images(rng, 40)
        d = {"batch_label": f"{name} of 2", "labels": rng.integers(0, 10, 40).tolist(),
             "data": x.reshape(40, -1), "filenames": [f"img_{i}.png" for i in range(40)]}
        originals[name] = d
        with open(src / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    (src / "batches.meta").write_bytes(b"meta bytes")
    parts = gpu_data.pack(tmp_path / "data", tmp_path / "parts", part_bytes=4000, files=names)
    sizes = [p.stat().st_size for p in parts]
    assert len(parts) > 1 and max(sizes) <= 4000 and max(sizes) - min(sizes) <= len(parts)
    assert sum(sizes) < 0.85 * sum(d["data"].nbytes for d in originals.values())  # it compresses
    out = gpu_data.unpack(tmp_path / "parts", tmp_path / "there")
    assert (out / "batches.meta").read_bytes() == b"meta bytes"
    for name, d in originals.items():
        data, labels = _read_cifar_batch(out / name)  # what the loader sees
        assert data.dtype == np.uint8 and np.array_equal(data, d["data"])
        assert labels.tolist() == d["labels"]
        with open(out / name, "rb") as f:
            back = pickle.load(f)
        assert back["filenames"] == d["filenames"] and back["batch_label"] == d["batch_label"]


def test_unpack_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar.xz"):
        gpu_data.unpack(tmp_path, tmp_path / "there")
