"""The checkpoint file format: arrays and plain metadata only, never code.

A checkpoint is one uncompressed ``.npz`` archive (a zip of ``.npy`` files, written
with ``np.savez`` and read with ``np.load(..., allow_pickle=False)``) holding

  ``meta``      a uint8 array: the UTF-8 bytes of one JSON document,
                ``{"format": ..., "arrays": n, "tree": ...}``, that describes the
                nested value that was saved;
  ``a0`` ...    the n arrays the tree refers to (numeric, bool or string dtypes;
                object arrays are refused on both sides);
  ``checksum``  a uint8 array: the hex SHA-256 of the meta bytes followed by, for
                every array in order, its dtype, shape and data bytes.

The tree encodes None, bools, ints (of any size: the big ints of NumPy
bit-generator states), floats (nan and infinities included; written with
``repr``, so every float comes back bit for bit), strings and lists as
themselves, and everything else as a one-key JSON object:
``{"dict": [[key, value], ...]}`` (keys of any encodable hashable kind, order
kept), ``{"tuple": [...]}``, ``{"array": i}`` (the array ``a{i}``) and
``{"scalar": i}`` (a NumPy scalar, stored as the 0-d array ``a{i}``, so its type
is kept). Anything else cannot be saved: a TypeError names where it was.

Reading never unpickles and never imports anything named by the file. An
empty, truncated or foreign file, a damaged archive, a bad checksum or a tree
that does not decode is a ValueError naming the file.

Writes are atomic: the archive goes to a temporary file
``.{name}.funkcije-{host}-{pid}-XXXXXXXX.tmp`` in the target's directory, is
flushed and fsynced, and is then ``os.replace``d onto the target, so a reader
sees either the old file or the complete new one. After a successful write,
temporary files of that pattern in the same directory that are older than the
start of this write and whose writer, a process of this host, no longer runs
(orphans of a killed writer) are removed; another run's write in progress in
the same folder is left alone.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
import zipfile

import numpy as np

__all__ = ["write", "read", "TEMP_MARK"]

TEMP_MARK = ".funkcije-"
_TEMP_SUFFIX = ".tmp"
# .{name}.funkcije-{host}-{pid}-{random}.tmp: whose write it is, so that only a dead
# writer's file is ever removed; .{name}.funkcije-{random}.tmp: an earlier version's
_TEMP_RE = re.compile(r"^\..+" + re.escape(TEMP_MARK) + r"(?:([0-9a-f]{8})-(\d+)-)?[A-Za-z0-9_]+"
                      + re.escape(_TEMP_SUFFIX) + r"$")
_ZIP_MAGIC = b"PK\x03\x04"
_META, _CHECKSUM = "meta", "checksum"


# ----------------------------------------------------------------------------- encoding


def _encode(value, arrays, where):
    """The JSON-able description of `value`; arrays are appended to `arrays`."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"checkpoint: {where} is an object array, which cannot be saved without pickle")
        arrays.append(value)
        return {"array": len(arrays) - 1}
    if isinstance(value, np.generic):
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError(f"checkpoint: {where} is a NumPy object scalar, which cannot be saved")
        arrays.append(a)
        return {"scalar": len(arrays) - 1}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if isinstance(k, (np.ndarray, list, dict)):
                raise TypeError(f"checkpoint: {where} has a key of type {type(k).__name__}")
            items.append([_encode(k, arrays, f"{where} key {k!r}"), _encode(v, arrays, f"{where}[{k!r}]")])
        return {"dict": items}
    raise TypeError(
        f"checkpoint: {where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds "
        "only dicts, lists, tuples, None, bools, ints, floats, strings, NumPy arrays and NumPy scalars"
    )


def _decode(node, arrays, used):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, arrays, used) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"an unexpected node {str(node)[:80]!r} in the tree")
    (tag, body), = node.items()
    if tag in ("array", "scalar"):
        if isinstance(body, bool) or not isinstance(body, int) or not 0 <= body < len(arrays):
            raise ValueError(f"a reference to array {body!r}, but the file holds {len(arrays)}")
        used.add(body)
        a = arrays[body]
        if tag == "array":
            return a
        if a.ndim != 0:
            raise ValueError(f"the scalar a{body} has shape {a.shape}")
        return a[()]
    if tag == "tuple" and isinstance(body, list):
        return tuple(_decode(v, arrays, used) for v in body)
    if tag == "dict" and isinstance(body, list):
        out = {}
        for item in body:
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError("a dict item that is not a [key, value] pair")
            key = _decode(item[0], arrays, used)
            try:
                hash(key)
            except TypeError:
                raise ValueError(f"an unhashable dict key of type {type(key).__name__}") from None
            out[key] = _decode(item[1], arrays, used)
        return out
    raise ValueError(f"an unknown tag {tag!r} in the tree")


def _digest(meta: bytes, arrays) -> bytes:
    h = hashlib.sha256()
    h.update(meta)
    for a in arrays:
        h.update(f"|{a.dtype.str}|{a.dtype.descr!r}|{a.shape!r}|".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest().encode("ascii")


def _payload(value, fmt: str):
    arrays = []
    tree = _encode(value, arrays, "the checkpoint")
    meta = json.dumps({"format": fmt, "arrays": len(arrays), "tree": tree}, allow_nan=True).encode("utf-8")
    entries = {f"a{i}": a for i, a in enumerate(arrays)}
    entries[_META] = np.frombuffer(meta, dtype=np.uint8)
    entries[_CHECKSUM] = np.frombuffer(_digest(meta, arrays), dtype=np.uint8)
    return entries


def _write_npz(f, entries):
    """Write the archive to the open file `f` (one place, so tests can break it)."""
    np.savez(f, **entries)


# ----------------------------------------------------------------------------- files


def _file_mode():
    # mkstemp creates 0600 files; give checkpoints the permissions any other file
    # written by this process would get.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _writer_alive(host: str, pid: int) -> bool:
    """Whether the process that named a temporary file may still be writing it: any
    process of another host (a shared folder) or of this one that still runs."""
    if host != _host_tag() or pid == os.getpid() or os.name == "nt":  # (os.kill there would end it)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _remove_orphans(directory, started, keep):
    """Remove temporary files of our pattern that a killed write left: older than
    `started` and named by a process of this host that no longer runs (or by an
    earlier version of this module, which named no writer). Another run's write in
    progress in the same folder is left alone; files that vanish meanwhile are ignored."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMP_RE.match(name)
        if not match:
            continue
        full = os.path.join(directory, name)
        if full == keep or (match.group(1) and _writer_alive(match.group(1), int(match.group(2)))):
            continue
        try:
            if os.stat(full).st_mtime < started:
                os.unlink(full)
        except OSError:
            pass


def write(path, value, fmt: str):
    """Save `value` (see the module docstring for what it may hold) to `path`
    atomically; `fmt` is recorded in the file and checked by `read`."""
    path = os.fspath(path)
    entries = _payload(value, fmt)  # before touching the disk: an unsavable value leaves nothing behind
    directory = os.path.dirname(os.path.abspath(path))
    started = time.time()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TEMP_MARK}{_host_tag()}-{os.getpid()}-",
                               suffix=_TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable; not possible on every platform.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        dir_fd = None
    if dir_fd is not None:
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    _remove_orphans(directory, started, os.path.abspath(path))


def read(path, fmt: str, what: str = "funkcije checkpoint"):
    """Load the value saved by `write(path, value, fmt)`. Raises ValueError naming
    the file for anything that is not such a file, intact."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
            f.seek(0)
            raw = f.read()
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a {what}") from None
    if not raw:
        raise ValueError(f"{path} is not a {what}: the file is empty")
    if head != _ZIP_MAGIC:
        hint = " (it looks like a pickle: old pickled checkpoints are not read, they could run code)" if raw[:1] == b"\x80" else ""
        raise ValueError(f"{path} is not a {what}: it is not an .npz archive{hint}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            names = set(npz.files)
            if _META not in names or _CHECKSUM not in names:
                raise ValueError(f"it has no '{_META}' and '{_CHECKSUM}' entries (entries: {sorted(names)[:10]})")
            meta_arr = npz[_META]
            checksum_arr = npz[_CHECKSUM]
            if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1 or checksum_arr.dtype != np.uint8:
                raise ValueError("its 'meta' or 'checksum' entry is not a uint8 vector")
            meta = meta_arr.tobytes()
            doc = json.loads(meta.decode("utf-8"))
            if not isinstance(doc, dict) or set(doc) != {"format", "arrays", "tree"}:
                raise ValueError("its metadata is not a funkcije tree document")
            n = doc["arrays"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"its metadata gives {n!r} arrays")
            expected = {f"a{i}" for i in range(n)} | {_META, _CHECKSUM}
            if names != expected:
                missing, extra = sorted(expected - names), sorted(names - expected)
                raise ValueError(f"its entries do not match its metadata (missing {missing[:5]}, extra {extra[:5]})")
            arrays = [npz[f"a{i}"] for i in range(n)]
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable {what}: {exc}") from exc
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, UnicodeDecodeError, TypeError, RuntimeError,
            OverflowError, MemoryError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable {what} (a damaged or truncated archive: {exc})") from exc
    if doc["format"] != fmt:
        raise ValueError(f"{path} is not a {what} (expected format {fmt!r}, got {doc['format']!r})")
    if checksum_arr.tobytes() != _digest(meta, arrays):
        raise ValueError(f"{path} is a damaged {what}: its checksum does not match its contents")
    used = set()
    try:
        value = _decode(doc["tree"], arrays, used)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is not a readable {what}: {exc}") from exc
    if len(used) != n:
        raise ValueError(f"{path} is not a readable {what}: {n - len(used)} of its arrays are not referenced")
    return value
