"""CIFAR-10 packed small enough to travel to the device machine in two calls.

    python benchmarks/gpu_data.py pack --out gpu_data          # here: gpu_data/cifar.xz.aa, .ab, ...
    python3 benchmarks/gpu_data.py unpack gpu_data /tmp/data   # there: /tmp/data/cifar-10-batches-py/

The device tool carries at most 64 MiB a call, and CIFAR-10's python release is 186 MB
that xz shrinks by a quarter only: four calls. Images compress far better once each
pixel is replaced by its difference from a prediction made of its already-coded
neighbours; the predictor is the median edge detector of LOCO-I / JPEG-LS (left, above,
or left + above - above-left, whichever the neighbours' edges suggest), computed per
channel plane. The residuals (mod 256) xz to about two thirds of the images' size, so
the release travels in two parts. `unpack` inverts it exactly (the decoder predicts
each pixel from the pixels it has already decoded) and writes each batch back as a
pickle the CIFAR-10 loader reads: the same arrays, labels and other entries.
"""
from __future__ import annotations

import argparse
import lzma
import pickle
import sys
from pathlib import Path

import numpy as np

FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
FOLDER = "cifar-10-batches-py"
SHAPE = (3, 32, 32)
PART_PREFIX = "cifar.xz."


def _predict(left, up, upleft):
    """The median edge detector on int16 neighbours (0 outside the image)."""
    lo, hi = np.minimum(left, up), np.maximum(left, up)
    return np.where(upleft >= hi, lo, np.where(upleft <= lo, hi, left + up - upleft))


def encode(images):
    """uint8 images (N, C, H, W) -> their residuals (N, C, H, W) uint8."""
    x = images.astype(np.int16)
    pad = np.zeros(x.shape[:2] + (x.shape[2] + 1, x.shape[3] + 1), np.int16)
    pad[:, :, 1:, 1:] = x
    pred = _predict(pad[:, :, 1:, :-1], pad[:, :, :-1, 1:], pad[:, :, :-1, :-1])
    return ((x - pred) % 256).astype(np.uint8)


def decode(residuals):
    """The inverse of `encode`: pixel by pixel in raster order, each vectorised over
    every image and channel."""
    N, C, H, W = residuals.shape
    pad = np.zeros((N, C, H + 1, W + 1), np.int16)
    res = residuals.astype(np.int16)
    for i in range(1, H + 1):
        for j in range(1, W + 1):
            pred = _predict(pad[:, :, i, j - 1], pad[:, :, i - 1, j], pad[:, :, i - 1, j - 1])
            pad[:, :, i, j] = (res[:, :, i - 1, j - 1] + pred) % 256
    return pad[:, :, 1:, 1:].astype(np.uint8)


def pack(root, out, part_bytes=60 * 2**20, files=FILES):
    """The batches under root/cifar-10-batches-py (their pickles read with numpy arrays
    allowed, as the loader does) -> out/cifar.xz.aa, .ab, ...: the fewest parts of at
    most part_bytes each, of equal size."""
    from funkcije.data_utils import _load_pickle

    src = Path(root) / FOLDER
    batches = {}
    for name in files:
        d = dict(_load_pickle(src / name, "CIFAR-10", (name,)))
        d["data"] = encode(np.asarray(d["data"]).reshape((-1,) + SHAPE))
        batches[name] = d
    meta = (src / "batches.meta").read_bytes()
    blob = lzma.compress(pickle.dumps({"batches": batches, "meta": meta}, protocol=4), preset=6)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(PART_PREFIX + "*"):
        old.unlink()
    count = -(-len(blob) // part_bytes)
    size = -(-len(blob) // count)  # the fewest parts, of equal size: room beside each for the tree
    parts = []
    for k in range(count):
        name = out / (PART_PREFIX + chr(ord("a") + k // 26) + chr(ord("a") + k % 26))
        name.write_bytes(blob[k * size:(k + 1) * size])
        parts.append(name)
    return parts


def unpack(src, dest):
    """out/cifar.xz.* (in name order) -> dest/cifar-10-batches-py/, as the release lays it out."""
    parts = sorted(Path(src).glob(PART_PREFIX + "*"))
    if not parts:
        raise FileNotFoundError(f"no {PART_PREFIX}* under {src}")
    packed = pickle.loads(lzma.decompress(b"".join(p.read_bytes() for p in parts)))
    folder = Path(dest) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, d in packed["batches"].items():
        d = dict(d, data=decode(d["data"]).reshape(len(d["data"]), -1))
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=4)
    (folder / "batches.meta").write_bytes(packed["meta"])
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="CIFAR-10 under --data into parts under --out")
    a.add_argument("--data", default=None, help="the folder holding cifar-10-batches-py/ (default FUNKCIJE_DATA)")
    a.add_argument("--out", default="gpu_data")
    a.add_argument("--part-mb", type=float, default=60.0,
                   help="MiB per part at most (the device tool carries 64 a call, the working tree included)")
    b = sub.add_parser("unpack", help="the parts under SRC into DEST/cifar-10-batches-py/")
    b.add_argument("src")
    b.add_argument("dest")
    args = p.parse_args(argv)
    if args.command == "pack":
        from funkcije.data_utils import data_root

        root = Path(args.data) if args.data else data_root()
        for part in pack(root, args.out, int(args.part_mb * 2**20)):
            print(part, part.stat().st_size)
    else:
        print(unpack(args.src, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
