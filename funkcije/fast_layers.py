"""Fast convolution and pooling layers: the signatures of `funkcije.layers`, fast.

    conv_forward_fast(x, w, b, conv_param) -> (out, cache)
    conv_backward_fast(dout, cache) -> (dx, dw, db)
    affine_forward_fast(x, w, b) -> (out, cache)
    affine_backward_fast(dout, cache) -> (dx, dw, db)
    max_pool_forward_fast(x, pool_param) -> (out, cache)
    max_pool_backward_fast(dout, cache) -> dx
    avg_pool_forward_fast(x, pool_param) -> (out, cache)
    avg_pool_backward_fast(dout, cache) -> dx

x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); out: (N, F, H', W'). Every
configuration of the reference works (stride, pad and dilation as ints or (h, w)
pairs, groups, non-square kernels and windows, overlapping or non-tiling pools),
the input checks and messages are the reference's (`funkcije.checks`), and dtype is
preserved: float32 stays float32 end to end.

Caches are interchangeable with the reference: a conv cache *is* the tuple
(x, w, b, conv_param) and a pooling cache the tuple (x, pool_param), so
`conv_backward_naive` accepts a fast cache and `conv_backward_fast` a reference one.
The max-pool cache also carries the argmax positions so the backward is a scatter.

Convolution is im2col + one BLAS GEMM per batch chunk and group; 3x3 stride-1
undilated layers with at least 16 channels in and out (per group) use Winograd
F(2x2, 3x3) instead, for the forward, dx and dw (`use_winograd(False)` or
FUNKCIJE_WINOGRAD=0 turns it off; results differ from im2col only by rounding).
The workspace of either is bounded (`set_workspace_limit`, env
`FUNKCIJE_WORKSPACE_MB`, default 256 MiB): the batch is processed in chunks small
enough to keep it under the bound, and the backward recomputes the columns chunk by
chunk instead of caching them, so peak memory is inputs, outputs, gradients and
cache plus that bound (a single sample whose columns exceed the bound is still
processed, alone).

The affine layers are here too (`affine_forward_fast`): the same GEMMs as the
reference, split over the conv threads so that OpenBLAS's own thread team never
wakes up between the layers of a network (see the note at `_AFFINE_SPLIT_MIN`).

Implementations (docs/ARCHITECTURE.md, Contract 7): `IMPLEMENTATION` is "cython" when the
compiled extension `funkcije.im2col_cython` is importable, else "numpy" (a pure-NumPy
fallback with the same results, announced by one RuntimeWarning at import).
`FUNKCIJE_FORCE_NUMPY=1` at import, or `use_implementation("numpy")`, forces the
fallback; `use_implementation("cython")` switches back. Dtypes other than float32 and
float64 (e.g. float16) always take the NumPy kernels.

Threads: GEMMs run on numpy's BLAS threads, the compiled kernels on OpenMP threads
(OMP_NUM_THREADS, default all cores). Importing this module sets OMP_WAIT_POLICY=PASSIVE
unless it is already set, so idle OpenMP threads sleep instead of spinning on the cores
the BLAS threads need.
"""
from __future__ import annotations

import ctypes
import functools
import itertools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from . import _numpy_kernels
from .config import ENV as _ENV, check_bool as _check_bool
from .checks import (
    Cache, affine_shapes, as_dout, check_array, check_mode, check_same_dtype, conv_geometry, describe,
    pool_geometry, unpack_cache,
)
# which forwards' caches each backward takes (the reference's and the fast one's alike)
from .layers import AFFINE_FORWARDS, AVG_POOL_FORWARDS, CONV_FORWARDS, MAX_POOL_FORWARDS

__all__ = [
    "conv_forward_fast",
    "conv_backward_fast",
    "affine_forward_fast",
    "affine_backward_fast",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "avg_pool_forward_fast",
    "avg_pool_backward_fast",
    "spatial_batchnorm_forward_fast",
    "spatial_batchnorm_backward_fast",
    "IMPLEMENTATION",
    "implementation",
    "available_implementations",
    "use_implementation",
    "get_workspace_limit",
    "set_workspace_limit",
    "release_workspace",
    "get_conv_threads",
    "set_conv_threads",
    "use_winograd",
    "use_direct",
    "use_flush_denormals",
    "flush_denormals",
]

# libgomp threads spin after each parallel region by default; on a machine whose cores
# are shared (with OpenBLAS's GEMM threads, or other processes) a spinning thread
# steals the core another thread's barrier is waiting for, and a 0.2 ms kernel takes
# 20 ms. Sleeping waits cost microseconds per region. Set before the extension (and so
# libgomp) loads; an explicit OMP_WAIT_POLICY from the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from . import im2col_cython as _cython_kernels

    _CYTHON_ERROR = None
except ImportError as exc:  # extension not built: the NumPy fallback takes over
    _cython_kernels = None
    _CYTHON_ERROR = exc

_KERNELS = {"numpy": _numpy_kernels}
if _cython_kernels is not None:
    _KERNELS["cython"] = _cython_kernels

if _ENV["force_numpy"]:
    IMPLEMENTATION = "numpy"
elif _cython_kernels is not None:
    IMPLEMENTATION = "cython"
else:
    IMPLEMENTATION = "numpy"
    warnings.warn(
        "funkcije.fast_layers: the compiled extension funkcije.im2col_cython is not available "
        f"({_CYTHON_ERROR}); using the pure-NumPy fallback, which gives the same results more "
        "slowly. Build the extension with `pip install -e .` or `python setup.py build_ext --inplace`.",
        RuntimeWarning,
        stacklevel=2,
    )

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def implementation() -> str:
    """The active implementation: "cython" or "numpy"."""
    return IMPLEMENTATION


def available_implementations() -> tuple[str, ...]:
    return tuple(_KERNELS)


def use_implementation(name: str) -> str:
    """Switch the active implementation ("cython" or "numpy"); returns the previous one.
    Raises ImportError for "cython" when the extension is not built."""
    global IMPLEMENTATION
    if name not in ("cython", "numpy"):
        raise ValueError(f"use_implementation: name must be 'cython' or 'numpy', got {name!r}")
    if name not in _KERNELS:
        raise ImportError(
            f"use_implementation: the compiled extension funkcije.im2col_cython is not available ({_CYTHON_ERROR})"
        )
    previous, IMPLEMENTATION = IMPLEMENTATION, name
    return previous


def _kernels(dtype):
    if dtype in _FAST_DTYPES:
        return _KERNELS[IMPLEMENTATION]
    return _numpy_kernels


_workspace_limit = int(_ENV["workspace_mb"] * 2**20)


def get_workspace_limit() -> int:
    """Bound, in bytes, on the convolution's column workspace."""
    return _workspace_limit


def set_workspace_limit(nbytes: int) -> int:
    """Set the column-workspace bound in bytes; returns the previous bound."""
    global _workspace_limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 1:
        raise ValueError(f"set_workspace_limit: nbytes must be a positive int, got {nbytes!r}")
    previous, _workspace_limit = _workspace_limit, int(nbytes)
    return previous


# Chunks smaller than the bound are often faster: a column block that stays in cache
# between im2col and its GEMM saves a trip to memory. GEMMs get inefficient when they
# are short, though, so a chunk keeps at least _MIN_COLUMNS columns. Measured on the
# layer benchmark's cases (benchmarks/bench_layers.py, benchmarks/RESULTS.md).
_CACHE_COLS_BYTES = 8 * 2**20
_MIN_COLUMNS = 8192


def _chunk_size(N: int, per_sample_bytes: int, cols_per_sample: int = 0, col_bytes: int = 0,
                workers: int = 1, target_cols: int = 0) -> int:
    """Samples per chunk: at most what fits the workspace bound shared by `workers`
    threads (per_sample_bytes each, at least one sample), preferably a column block of
    about _CACHE_COLS_BYTES (col_bytes per column, cols_per_sample = H' * W' columns per
    sample) but not fewer than _MIN_COLUMNS columns — or, given target_cols, about that
    many columns; with several workers, at least two chunks each so a worker slowed by
    other processes is covered by the others; balanced so the last chunk is not a sliver."""
    nb = _workspace_limit // max(1, workers * per_sample_bytes)
    if target_cols and cols_per_sample:
        nb = min(nb, -(-target_cols // cols_per_sample))
    elif cols_per_sample and col_bytes:
        cached = _CACHE_COLS_BYTES // (cols_per_sample * col_bytes)
        nb = min(nb, max(cached, -(-_MIN_COLUMNS // cols_per_sample)))
    if workers > 1:
        nb = min(nb, -(-N // (2 * workers)))
    nb = max(1, min(N, nb))
    if N > 0:
        chunks = -(-N // nb)
        nb = -(-N // chunks)
    return nb


# ----------------------------------------------------------------------------- threads
#
# numpy's OpenBLAS runs every GEMM on its own thread team, which synchronises inside
# each call; when other processes share the cores, each synchronisation can wait a
# whole scheduler time slice, and a conv step with a dozen GEMMs and kernels slows
# down five- to tenfold (measured: benchmarks/README.md). So when numpy's OpenBLAS
# thread count can be controlled, the convolution splits its batch chunks over
# `conv threads` (the calling thread plus a small pool), each running im2col, a
# single-threaded GEMM and the scatter for whole chunks with no barrier in between,
# and BLAS is held at one thread for the duration of the call.


def _find_numpy_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS numpy is linked with, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({
                line.split(None, 5)[-1].strip() for line in f
                if "openblas" in line.lower() and "numpy" in line.lower() and "/" in line
            })
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return get, put
    return None


_BLAS_THREADS = _find_numpy_openblas()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 1


@contextmanager
def _single_threaded_blas():
    """Hold numpy's BLAS at one thread; nested and concurrent users share one save/restore."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = _BLAS_THREADS[0]()
            _BLAS_THREADS[1](1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _BLAS_THREADS[1](_blas_saved)


def _default_conv_threads():
    if _BLAS_THREADS is None or _cython_kernels is None:
        return 1
    if _ENV["conv_threads"] is not None:
        return _ENV["conv_threads"]
    return max(1, min(os.cpu_count() or 1, _cython_kernels.max_threads()))


_conv_threads = _default_conv_threads()
_pool = None
_pool_lock = threading.Lock()


def _reset_after_fork():
    # a forked child has none of the parent's pool threads, and a lock held by another
    # parent thread at the fork would never be released
    global _pool, _pool_lock, _blas_lock, _blas_users
    if _blas_users and _BLAS_THREADS is not None:  # forked in the middle of a conv call
        _BLAS_THREADS[1](_blas_saved)
    _pool = None
    _pool_lock = threading.Lock()
    _blas_lock = threading.Lock()
    _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_conv_threads() -> int:
    """Threads the compiled convolution splits its batch chunks over (1: chunks run in
    order, each kernel and GEMM using its own threads)."""
    return _conv_threads


def set_conv_threads(n: int) -> int:
    """Set the convolution's chunk threads (>= 1); returns the previous value. More
    than one needs control of numpy's OpenBLAS threads (found at import) and the
    compiled extension."""
    global _conv_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_conv_threads: n must be a positive int, got {n!r}")
    if n > 1 and (_BLAS_THREADS is None or _cython_kernels is None):
        raise RuntimeError("set_conv_threads: numpy's OpenBLAS thread control or the compiled extension is unavailable")
    previous, _conv_threads = _conv_threads, int(n)
    return previous


def _workers(kern) -> int:
    return _conv_threads if kern is _cython_kernels else 1


# Subnormal numbers (|x| < 1.2e-38 in float32) cost x86 cores 10-100x per operation.
# Training makes them: after 5 CIFAR-10 epochs 12 % of ThreeLayerConvNet's dW2 was
# subnormal (from reg * W2 where W2 had decayed towards zero), `dW2 + reg * W2` took
# 19.4 ms instead of 4.5 ms and a forward + backward 46.6 ms instead of 31.9 ms. So every chunk
# of compiled and BLAS work runs with FTZ/DAZ set on its thread (the calling thread's
# mode is restored afterwards; PyTorch offers the same as torch.set_flush_denormal).
# Only values below the smallest normal number change: they become zero.
_flush_denormals = _ENV["flush_denormals"]


def use_flush_denormals(enabled: bool) -> bool:
    """Flush subnormal numbers to zero inside the fast layers (True, the default; env
    FUNKCIJE_FLUSH_DENORMALS=0 disables); returns the previous setting. Only has an
    effect with the compiled extension on x86."""
    global _flush_denormals
    previous, _flush_denormals = _flush_denormals, _check_bool("use_flush_denormals", "enabled", enabled)
    return previous


@contextmanager
def flush_denormals():
    """Context in which this thread flushes subnormal numbers to zero (FTZ/DAZ), when
    `use_flush_denormals` is on and the compiled extension is there; the previous mode
    is restored on exit. The classifiers' `loss` and the Solver's step run inside it:
    the NumPy work between the layers (the L2 term `reg * W` of a weight decaying
    towards zero is a typical source of subnormals) is flushed too."""
    if not _flush_denormals or _cython_kernels is None:
        yield
        return
    old = _cython_kernels.flush_denormals_on()
    try:
        yield
    finally:
        _cython_kernels.restore_fp_mode(old)


def flushes_denormals(fn):
    """Decorator: run fn inside `flush_denormals()`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with flush_denormals():
            return fn(*args, **kwargs)
    return wrapper


def _in_ftz(fn, *args):
    """fn(*args) inside `flush_denormals()`."""
    with flush_denormals():
        return fn(*args)


def _run_chunks(chunks, body, workers):
    """body(i, n0, n1, nthreads) for every chunk i = (n0, n1). With several workers the
    chunks are pulled dynamically by the calling thread and workers - 1 pool threads;
    kernels then run single-threaded (nthreads=1) and BLAS on one thread. Subnormals
    are flushed to zero meanwhile (`use_flush_denormals`)."""
    workers = min(workers, len(chunks))
    if workers <= 1:
        def serial():
            for i, (n0, n1) in enumerate(chunks):
                body(i, n0, n1, 0)
        _in_ftz(serial)
        return
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers - 1:
            _pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="funkcije-conv")
        pool = _pool
    counter = itertools.count()  # next() is atomic under the GIL

    def drain():
        while True:
            i = next(counter)
            if i >= len(chunks):
                return
            body(i, *chunks[i], 1)

    with _single_threaded_blas():
        futures = [pool.submit(_in_ftz, drain) for _ in range(workers - 1)]
        try:
            _in_ftz(drain)
        finally:
            for f in futures:
                f.result()


class _Workspace(threading.local):
    """Per-thread scratch memory reused across calls: fresh multi-megabyte arrays cost
    a page fault per 4 KiB on first touch, often more than the kernel that fills them.
    Only a buffer within the workspace bound is kept between calls."""

    def __init__(self):
        self.buf = np.empty(0, dtype=np.uint8)

    def arrays(self, dtype, *shapes):
        """Uninitialised arrays of the given shapes, carved from one buffer."""
        dtype = np.dtype(dtype)
        sizes = [-(-int(np.prod(s)) * dtype.itemsize // 64) * 64 for s in shapes]
        total = sum(sizes)
        if self.buf.size < total:
            buf = np.empty(total, dtype=np.uint8)
            if total <= _workspace_limit:
                self.buf = buf
        else:
            buf = self.buf
        out, offset = [], 0
        for shape, size in zip(shapes, sizes):
            n = int(np.prod(shape))
            out.append(buf[offset : offset + n * dtype.itemsize].view(dtype).reshape(shape))
            offset += size
        return out


_workspace = _Workspace()


def release_workspace():
    """Free this thread's cached convolution workspace."""
    _workspace.buf = np.empty(0, dtype=np.uint8)


# ----------------------------------------------------------------------------- caches


def ConvCache(items):
    """The reference's conv cache (x, w, b, conv_param), tagged as the fast forward's."""
    return Cache(items, "conv_forward_fast")


class PoolCache(Cache):
    """The reference's pooling cache (x, pool_param); `arg` holds the max-pool argmax
    positions (flat h * W + w per output, int32) when the fast forward made it."""

    def __new__(cls, items, forward=None, arg=None):
        self = super().__new__(cls, items, forward)
        self.arg = arg
        return self


_A = np.ndarray


# ----------------------------------------------------------------------------- convolution


def _conv_setup(layer, x, w, conv_param):
    g = conv_geometry(layer, x, w, conv_param)
    F, Cg, HH, WW = w.shape
    return g, F, Cg, HH, WW


def _gemm_sizes(g, w_shape):
    """(G, Fg, K, P, geo) of a convolution's im2col GEMMs: groups, filters per group,
    rows of the column matrix (Cg * HH * WW), output positions per sample and the
    geometry tuple the im2col/col2im kernels take."""
    F, Cg, HH, WW = w_shape
    geo = (HH, WW) + g.stride + g.pad + g.dilation + (g.out_h, g.out_w)
    return g.groups, F // g.groups, Cg * HH * WW, g.out_h * g.out_w, geo


def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) with zero padding, as `conv_forward_naive`.

    x: (N, C, H, W); w: (F, C // groups, HH, WW); b: (F,); conv_param: `stride`,
    `pad`, optional `dilation` and `groups`. Returns out (N, F, H', W') and the cache
    (x, w, b, conv_param).
    """
    layer = "conv_forward_fast"
    g, F, Cg, HH, WW = _conv_setup(layer, x, w, conv_param)
    check_array(layer, "b", b, 1)
    check_same_dtype(layer, x=x, w=w, b=b)
    if b.shape != (F,):
        raise ValueError(f"{layer}: b must have shape ({F},) for w of shape {w.shape}, got {b.shape}")
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    b = np.ascontiguousarray(b)
    kern = _kernels(x.dtype)
    N = x.shape[0]
    Ho, Wo = g.out_h, g.out_w
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    if N == 0:  # an empty batch: nothing for the kernels to split into chunks
        return out, ConvCache((x, w, b, conv_param))
    if _winograd_applies(kern, g, F, Cg, HH, WW, g.pad):
        _winograd_conv(x, _winograd_filters(w, g.groups), g.groups, g.pad, out, b)
        return out, ConvCache((x, w, b, conv_param))
    if _direct_applies(kern, x, Cg, HH, WW):
        _direct_conv(x, _direct_filters(w, g.groups), g.groups, (HH, WW), g.stride, g.pad, g.dilation, out, b)
        return out, ConvCache((x, w, b, conv_param))
    G, Fg, K, P, geo = _gemm_sizes(g, w.shape)
    out3 = out.reshape(N, F, P)
    wmat = w.reshape(F, K)
    workers = _workers(kern)
    nb = _chunk_size(N, x.itemsize * P * (K + Fg), P, x.itemsize * K, workers)

    def chunk(i, n0, n1, nthreads):
        m = (n1 - n0) * P
        cols, res = _workspace.arrays(x.dtype, (K, m), (Fg, m))
        for grp in range(G):
            f0 = grp * Fg
            kern.im2col(x, cols, n0, n1, grp * Cg, (grp + 1) * Cg, *geo, nthreads)
            np.matmul(wmat[f0 : f0 + Fg], cols, out=res)
            kern.cols_to_out(res, b[f0 : f0 + Fg], out3, n0, f0, nthreads)

    _run_chunks([(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)], chunk, workers)
    return out, ConvCache((x, w, b, conv_param))


def conv_backward_fast(dout, cache, *, need_dx=True):
    """dout: (N, F, H', W'); cache from `conv_forward_fast` (or `conv_forward_naive`).
    Returns dx (N, C, H, W), dw (F, C // groups, HH, WW), db (F,).

    need_dx=False returns None for dx and skips its GEMM and col2im: a network's
    first layer needs no input gradient."""
    layer = "conv_backward_fast"
    x, w, b, conv_param = unpack_cache(layer, cache, CONV_FORWARDS, (_A, _A, _A, dict))
    g, F, Cg, HH, WW = _conv_setup(layer, x, w, conv_param)
    N = x.shape[0]
    Ho, Wo = g.out_h, g.out_w
    dout = as_dout(layer, dout, (N, F, Ho, Wo), x.dtype)
    if N == 0:  # an empty batch: empty dx, zero dw and db (no chunks to sum)
        return (np.empty_like(x) if need_dx else None), np.zeros_like(w), np.zeros(F, dtype=x.dtype)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    dout = np.ascontiguousarray(dout)
    kern = _kernels(x.dtype)
    G, Fg, K, P, geo = _gemm_sizes(g, w.shape)

    # dx of a stride-1 layer is itself a stride-1 convolution of dout, padded by the
    # kernel's reach minus pad, with the filters flipped and in and out channels swapped
    reach = ((HH - 1) * g.dilation[0], (WW - 1) * g.dilation[1])
    dx_pad = (reach[0] - g.pad[0], reach[1] - g.pad[1])
    if _winograd_applies(kern, g, F, Cg, HH, WW, dx_pad):
        dx = None
        if need_dx:
            dx = np.empty_like(x)
            _winograd_conv(dout, _winograd_filters(_flipped_filters(w, G), G), G, dx_pad, dx, np.empty(0, x.dtype))
        return dx, _winograd_weight_grad(x, dout, G, g.pad, w.shape), dout.sum(axis=(0, 2, 3))
    # the direct kernels' "filters" for dx are the layer's input channels; with few of
    # them (an RGB or grey first layer) the row kernels keep the vector lanes busy
    dx_direct = (need_dx and g.stride == (1, 1) and min(dx_pad) >= 0
                 and _direct_applies(kern, x, Fg, HH, WW))
    # direct dw wherever it applies, with dx from the direct kernels or else (strided
    # layers) from GEMM + col2im alone: measured on x (100, 3, 31, 31) stride 2, 2.0-2.3
    # ms against 2.2-2.7 ms for im2col's shared pass over dout for both (once dout's
    # transpose for the direct dw was vectorised; before, 3.5 against 3.3 ms)
    if _direct_applies(kern, x, Cg, HH, WW):
        dx = dx_job = None
        if dx_direct:
            dx = np.empty_like(x)
            dx_job = (_direct_filters(_flipped_filters(w, G), G), dx, dx_pad)
        elif need_dx:
            dx = _gemm_dx(dout, w, g, kern, x.shape)
        return (dx,) + _direct_weight_grad(x, dout, G, g, w.shape, dx_job)
    # col2im overwrites every (n, c) plane of dx exactly once: no zeroing pass
    dx = np.empty_like(x) if need_dx else None
    dout3 = dout.reshape(N, F, P)
    wmat = w.reshape(F, K)
    workers = _workers(kern)
    nb = _chunk_size(N, x.itemsize * P * (2 * K + Fg), P, x.itemsize * K, workers)
    chunks = [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)]
    # one dw^T partial per chunk, summed in chunk order afterwards, so the result does
    # not depend on which thread took which chunk
    parts = np.empty((len(chunks), G, K, Fg), dtype=x.dtype)
    db_parts = np.empty((len(chunks), F), dtype=x.dtype)

    def chunk(i, n0, n1, nthreads):
        db_parts[i] = dout3[n0:n1].sum(axis=(0, 2))
        m = (n1 - n0) * P
        cols, dcols, dmat = _workspace.arrays(x.dtype, (K, m), (K, m), (Fg, m))
        for grp in range(G):
            f0, c0 = grp * Fg, grp * Cg
            kern.out_to_cols(dout3, dmat, n0, f0, nthreads)
            kern.im2col(x, cols, n0, n1, c0, c0 + Cg, *geo, nthreads)
            # dw_g^T = cols @ dmat^T: OpenBLAS runs this orientation up to 3x faster than
            # dmat @ cols^T when the shared dimension (nb * P) is the long one
            np.matmul(cols, dmat.T, out=parts[i, grp])
            if need_dx:
                np.matmul(wmat[f0 : f0 + Fg].T, dmat, out=dcols)
                kern.col2im(dcols, dx, n0, n1, c0, c0 + Cg, *geo, nthreads)

    _run_chunks(chunks, chunk, workers)
    dw = np.ascontiguousarray(_sum_parts(parts).transpose(0, 2, 1)).reshape(F, K)
    return dx, dw.reshape(w.shape), _sum_parts(db_parts)


def _gemm_dx(dout, w, g, kern, x_shape):
    """dx (x_shape: N, C, H, W) by GEMM + col2im alone, chunked over the batch like
    im2col: dcols = w_g^T @ dout_g, scattered back into dx (col2im overwrites every
    plane). For layers whose dw comes from the direct kernels but whose dx cannot."""
    N, F = dout.shape[:2]
    Cg = w.shape[1]
    G, Fg, K, P, geo = _gemm_sizes(g, w.shape)
    dx = np.empty(x_shape, dtype=dout.dtype)
    dout3 = dout.reshape(N, F, P)
    wmat = w.reshape(F, K)
    workers = _workers(kern)
    nb = _chunk_size(N, dout.itemsize * P * (K + Fg), P, dout.itemsize * K, workers)

    def chunk(i, n0, n1, nthreads):
        m = (n1 - n0) * P
        dcols, dmat = _workspace.arrays(dout.dtype, (K, m), (Fg, m))
        for grp in range(G):
            f0, c0 = grp * Fg, grp * Cg
            kern.out_to_cols(dout3, dmat, n0, f0, nthreads)
            np.matmul(wmat[f0 : f0 + Fg].T, dmat, out=dcols)
            kern.col2im(dcols, dx, n0, n1, c0, c0 + Cg, *geo, nthreads)

    _run_chunks([(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)], chunk, workers)
    return dx


# ----------------------------------------------------------------------------- direct
#
# float32 layers whose Cg * HH * WW is small (few input channels, or a small kernel) do
# little arithmetic per column of im2col's matrix, so writing and reading that matrix
# costs as much as the GEMM. With AVX-512 the compiled direct kernels
# (_direct_conv.h) skip it: forward, dw, and dx for stride 1 (a convolution of dout).
# The forward (and so dx) picks per layer between vectors along filters and vectors
# along output rows (`im2col_cython.direct_layout`, `direct_forward_kernel`); the rows
# keep the lanes busy when there are few filters, as in dx of an RGB or grey layer
# (x (50, 3, 32, 32) x w (32, 3, 7, 7): dx 24 ms by filters, 4 ms by rows, one thread).
# Measured per layer: benchmarks/README.md and RESULTS.md.

_direct_enabled = _ENV["direct"]
_DIRECT_MAX_K = 1600  # the largest Cg * HH * WW that takes the direct kernels
_DIRECT_CPU = _cython_kernels is not None and _cython_kernels.direct_available()


def use_direct(enabled: bool) -> bool:
    """Allow (True, the default; env FUNKCIJE_DIRECT=0 disables) or forbid the direct
    float32 kernels; returns the previous setting. They run only on CPUs with AVX-512F."""
    global _direct_enabled
    previous, _direct_enabled = _direct_enabled, _check_bool("use_direct", "enabled", enabled)
    return previous


def _direct_applies(kern, x, Cg, HH, WW) -> bool:
    return (
        _direct_enabled
        and _DIRECT_CPU
        and kern is _cython_kernels
        and x.dtype == np.float32
        and WW <= 8
        and 0 < Cg * HH * WW <= _DIRECT_MAX_K
    )


def _direct_filters(w, G):
    """w (F, Cg, HH, WW) in G groups as (G, Cg * HH * WW, Fp): each group's filters in
    columns, zero-padded to Fp, a multiple of 32 (the kernels' register block)."""
    F, Cg, HH, WW = w.shape
    Fg = F // G
    Fp = -(-Fg // 32) * 32
    wT = np.zeros((G, Cg * HH * WW, Fp), dtype=w.dtype)
    wT[:, :, :Fg] = w.reshape(G, Fg, Cg * HH * WW).transpose(0, 2, 1)
    return wT


def _direct_chunks(N, workers):
    # two chunks per worker so a worker slowed by another process is covered
    return _split(N, 2 * workers if workers > 1 else 1, 1)


def _direct_conv(x, wT, G, kernel, stride, pad, dilation, out, b):
    """out (N, F, Ho, Wo) = the convolution of x (N, C, H, W) by the (KH, KW) = kernel
    filters wT (from `_direct_filters`), plus b (F,) unless b is empty."""
    kern = _cython_kernels
    Cg = x.shape[1] // G
    Fg = out.shape[1] // G
    KH, KW = kernel
    workers = _workers(kern)

    def chunk(i, n0, n1, nthreads):
        for grp in range(G):
            kern.direct_conv_forward(x, wT[grp], b, out, n0, n1, grp * Cg, Cg, grp * Fg, Fg, KH, KW,
                                     *stride, *pad, *dilation)

    _run_chunks(_direct_chunks(x.shape[0], workers), chunk, workers)


def _sum_parts(parts):
    """parts[0] + parts[1] + ... in that order (per-chunk partial sums: the result does
    not depend on which thread took which chunk)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def _direct_weight_grad(x, dout, G, g, w_shape, dx_job=None):
    """(dw (F, C // G, HH, WW), db (F,)) from the direct kernels: per chunk of samples
    partials (G, Cg * HH * WW, Fp) and (F,), summed in chunk order (deterministic).
    db is summed in the chunks, on the pool's threads, rather than by one NumPy pass
    over dout afterwards (0.1-0.2 ms of a small layer's backward, e.g. x (50, 16, 14, 14), w (32, 16, 5, 5)).

    dx_job = (wTf, dx, dx_pad): also dx, as the direct convolution of dout by the
    flipped filters wTf (from `_direct_filters`), in the same chunks: one pass over the
    batch instead of two (one hand-off to the pool and one tail of uneven chunks less,
    and each chunk's dout is still in cache for the second kernel). Measured, backward
    of x (50, 1, 28, 28) x (16, 1, 5, 5): 1.31 ms fused, 1.54 ms in two passes; of
    x (50, 16, 14, 14) x (32, 16, 5, 5): 3.58 / 3.81 ms (min of 40, alternating)."""
    kern = _cython_kernels
    F, Cg, HH, WW = w_shape
    Fg = F // G
    Fp = -(-Fg // 32) * 32
    workers = _workers(kern)
    chunks = _direct_chunks(x.shape[0], workers)
    parts = np.zeros((len(chunks), G, Cg * HH * WW, Fp), dtype=x.dtype)
    db_parts = np.empty((len(chunks), F), dtype=x.dtype)
    no_bias = np.empty(0, x.dtype)
    wTf, dx, dx_pad = dx_job if dx_job is not None else (None, None, None)

    def chunk(i, n0, n1, nthreads):
        db_parts[i] = dout[n0:n1].sum(axis=(0, 2, 3))
        for grp in range(G):
            kern.direct_conv_weight_grad(x, dout, parts[i, grp], n0, n1, grp * Cg, Cg, grp * Fg, Fg, HH, WW,
                                         *g.stride, *g.pad, *g.dilation)
            if dx is not None:
                kern.direct_conv_forward(dout, wTf[grp], no_bias, dx, n0, n1, grp * Fg, Fg, grp * Cg, Cg, HH, WW,
                                         1, 1, *dx_pad, *g.dilation)

    _run_chunks(chunks, chunk, workers)
    total = _sum_parts(parts)
    return np.ascontiguousarray(total[:, :, :Fg].transpose(0, 2, 1)).reshape(w_shape), _sum_parts(db_parts)


def _flipped_filters(w, G):
    """The filters of dx as a convolution of dout: w (F, Cg, HH, WW) in G groups ->
    (G * Cg, F // G, HH, WW), rotated by 180 degrees, in and out channels swapped."""
    F, Cg, HH, WW = w.shape
    return w.reshape(G, F // G, Cg, HH, WW).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1].reshape(G * Cg, F // G, HH, WW)


# ----------------------------------------------------------------------------- Winograd
#
# 3x3, stride-1, undilated layers with enough channels on both sides are GEMM-bound;
# Winograd F(2x2, 3x3) (kernels in im2col_cython.pyx) does their products with 2.25x
# fewer multiplies. Measured on (64, 256, 8, 8) x (512, 256, 3, 3): the forward's
# products took 39 ms instead of 84 ms on one thread. With few channels the transforms
# cost more than the products save, so im2col stays. Results differ from im2col only
# by rounding (the transforms add and halve; float32 agrees with the reference to
# about 1e-6 relative).

_winograd_enabled = _ENV["winograd"]
# both the input and the output channels of a group must reach this
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_TILES = 256
_WINOGRAD_DW_BYTES = 64 * 2**20  # measured best for the dw products of bench_layers.py's 3x3 layers


def use_winograd(enabled: bool) -> bool:
    """Allow (True, the default; env FUNKCIJE_WINOGRAD=0 disables) or forbid Winograd
    F(2x2, 3x3) for 3x3 stride-1 convolutions; returns the previous setting."""
    global _winograd_enabled
    previous, _winograd_enabled = _winograd_enabled, _check_bool("use_winograd", "enabled", enabled)
    return previous


def _winograd_applies(kern, g, F, Cg, HH, WW, pad) -> bool:
    return (
        _winograd_enabled
        and kern is _cython_kernels
        and (HH, WW) == (3, 3)
        and g.stride == (1, 1)
        and g.dilation == (1, 1)
        and min(pad) >= 0
        and min(Cg, F // g.groups) >= _WINOGRAD_MIN_CHANNELS
    )


def _winograd_filters(w, G):
    """Filter transform G w G^T of w (F, Cg, 3, 3) in G groups: U (G, 16, F // G, Cg)."""
    F, Cg = w.shape[:2]
    U = _padded_slabs(w.dtype, (G,), F // G, Cg)
    _cython_kernels.winograd_filters(np.ascontiguousarray(w), U)
    return U


def _winograd_plan(x, Cg, Fg, Ho, Wo):
    """(th, tw, chunks, workers) for Winograd over the batch of x: th x tw tiles per
    output plane and batch chunks within the workspace bound."""
    N = x.shape[0]
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    workers = _workers(_cython_kernels)
    # about 256 tiles per chunk: the 16 products are then (Fg, Cg) x (Cg, 256), long
    # enough for BLAS and short enough for the transformed arrays to stay in cache
    # (measured on bench_layers.py's 3x3 layers: 256 tiles was the fastest of 16..16384 for both)
    nb = _chunk_size(N, x.itemsize * 16 * th * tw * (Cg + Fg), th * tw, workers=workers,
                     target_cols=_WINOGRAD_TILES)
    return th, tw, [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)], workers


def _workspace_slab_pair(dtype, rows_a, rows_b, cols):
    """Two arrays (16, rows_a, cols) and (16, rows_b, cols) with padded-apart slabs (as
    `_padded_slabs` makes them), carved from this thread's workspace."""
    a, b = _workspace.arrays(dtype, (16, rows_a * cols + 16), (16, rows_b * cols + 16))
    return _slabs_of(a, rows_a, cols), _slabs_of(b, rows_b, cols)


def _winograd_conv(x, U, G, pad, out, b):
    """out (N, F, Ho, Wo) = the 3x3 stride-1 convolution of x (N, C, H, W) with zero
    padding `pad` by the filters whose transform is U (G, 16, F // G, C // G), plus b
    (F,) unless b is empty. Chunked over the batch like im2col, within the bound."""
    kern = _cython_kernels
    Fg, Cg = U.shape[2], U.shape[3]
    th, tw, chunks, workers = _winograd_plan(x, Cg, Fg, out.shape[2], out.shape[3])

    def chunk(i, n0, n1, nthreads):
        V, M = _workspace_slab_pair(x.dtype, Cg, Fg, (n1 - n0) * th * tw)
        for grp in range(G):
            kern.winograd_input(x, V, n0, n1, grp * Cg, (grp + 1) * Cg, pad[0], pad[1], th, tw, nthreads)
            np.matmul(U[grp], V, out=M)
            kern.winograd_output(M, out, n0, grp * Fg, th, tw, b[grp * Fg : (grp + 1) * Fg], nthreads)

    _run_chunks(chunks, chunk, workers)


def _winograd_weight_grad(x, dout, G, pad, w_shape):
    """dw (F, C // G, 3, 3) of the 3x3 stride-1 convolution of x (N, C, H, W) with
    zero padding `pad` and upstream gradient dout (N, F, Ho, Wo): 16 GEMMs
    Z[xi] (Fg, Cg) = Y[xi] (Fg, tiles) @ V[xi]^T (kernels: im2col_cython.pyx), then
    G^T Z G.

    The transforms V and Y of as many samples as fit the workspace bound (usually the
    whole batch) are made first, chunk-parallel; then each thread takes whole xi slabs,
    so every product runs over all those tiles at once (long inner dimension, no
    per-chunk partials to add up) and the result does not depend on the thread count.
    Batches beyond the bound are done in parts, added in order."""
    kern = _cython_kernels
    N = x.shape[0]
    F, Ho, Wo = dout.shape[1:]
    Fg, Cg = F // G, x.shape[1] // G
    th, tw, chunks, workers = _winograd_plan(x, Cg, Fg, Ho, Wo)
    TT = th * tw
    per_sample = x.itemsize * 16 * TT * (Cg + Fg)
    ns = max(1, min(N, min(_workspace_limit, _WINOGRAD_DW_BYTES) // per_sample))
    Z = _padded_slabs(x.dtype, (G,), Fg, Cg)
    slabs = _split(16, workers, 1)
    for s0 in range(0, N, ns):
        s1 = min(N, s0 + ns)
        V, Y = _workspace_slab_pair(x.dtype, Cg, Fg, (s1 - s0) * TT)
        parts = [(max(a, s0), min(b, s1)) for a, b in chunks if a < s1 and b > s0]
        first = s0 == 0
        for grp in range(G):
            def transform(i, n0, n1, nthreads, grp=grp):
                cols = slice((n0 - s0) * TT, (n1 - s0) * TT)
                kern.winograd_input(x, V[:, :, cols], n0, n1, grp * Cg, (grp + 1) * Cg, pad[0], pad[1], th, tw, nthreads)
                kern.winograd_dout(dout, Y[:, :, cols], n0, n1, grp * Fg, (grp + 1) * Fg, th, tw, nthreads)

            def product(i, a, b, nthreads, grp=grp, first=first):
                if first:
                    np.matmul(Y[a:b], V[a:b].transpose(0, 2, 1), out=Z[grp, a:b])
                else:
                    Z[grp, a:b] += np.matmul(Y[a:b], V[a:b].transpose(0, 2, 1))

            _run_chunks(parts, transform, workers)
            _run_chunks(slabs, product, workers)
    dw = np.empty(w_shape, dtype=x.dtype)
    kern.winograd_filters_backward(Z, dw)
    return dw


def _padded_slabs(dtype, lead, rows, cols):
    """An uninitialised array of shape lead + (16, rows, cols) whose 16 (rows, cols)
    slabs are C-contiguous but 16 elements further apart than packed: the Winograd
    transforms touch all 16 slabs per tile, and slabs a multiple of 4 KiB apart would
    all fall into the same L1 cache set (measured: 4x slower transforms)."""
    return _slabs_of(np.empty(tuple(lead) + (16, rows * cols + 16), dtype=dtype), rows, cols)


def _slabs_of(buf, rows, cols):
    """View (..., 16, rows, cols) of buf (..., 16, rows * cols + 16): the padded slabs."""
    return buf[..., : rows * cols].reshape(buf.shape[:-1] + (rows, cols))


# ----------------------------------------------------------------------------- affine
#
# The affine layers are single GEMMs, which numpy would hand to OpenBLAS's own thread
# team. After such a call OpenBLAS's workers keep spinning (with sched_yield) for about
# 0.1 s, and the convolution or kernel that follows fights them for the two cores:
# measured on ThreeLayerConvNet's layers, an 8192x500 affine forward (3.3 ms) followed
# by the first conv forward (7.4 ms) took 22.8 ms together. Splitting the GEMM over
# the conv threads with BLAS held at one thread keeps OpenBLAS's team asleep: 11.2 ms.
# It also helps the products themselves: dout @ w.T for (50, 500) x (500, 8192) took
# 23 ms on OpenBLAS's two threads and 6.5 ms as w @ dout.T split in two.

# below this many multiply-adds one thread does the whole product (OpenBLAS itself
# stays on one thread below 4 * 65536)
_AFFINE_SPLIT_MIN = 1 << 18


def _split(n: int, parts: int, align: int = 16):
    """[(start, stop), ...]: range(n) in at most `parts` pieces, boundaries on
    multiples of `align` (SIMD-friendly column blocks), none empty."""
    step = -(-n // max(1, parts))
    step = max(align, -(-step // align) * align)  # n = 0 would give a zero step
    return [(i, min(n, i + step)) for i in range(0, n, step)] or [(0, 0)]


def _affine_workers(x, work: int) -> int:
    if work < _AFFINE_SPLIT_MIN or x.dtype not in _FAST_DTYPES:
        return 1
    return _workers(_kernels(x.dtype))


def affine_forward_fast(x, w, b):
    """out = x.reshape(N, D) @ w + b, as `affine_forward`.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,). Returns out
    (N, M) and the reference cache (x, w, b).
    """
    N, D, M = affine_shapes("affine_forward_fast", x, w, b)
    x2 = x.reshape(N, D)
    out = np.empty((N, M), dtype=x.dtype)
    workers = _affine_workers(x, N * D * M)

    def piece(i, m0, m1, nthreads):
        np.matmul(x2, w[:, m0:m1], out=out[:, m0:m1])

    _run_chunks(_split(M, workers), piece, workers)
    out += b
    return out, Cache((x, w, b), "affine_forward_fast")


def affine_backward_fast(dout, cache):
    """dout: (N, M); cache from `affine_forward_fast` (or `affine_forward`).
    Returns dx (N, d1, ..., dk), dw (D, M), db (M,)."""
    x, w, b = unpack_cache("affine_backward_fast", cache, AFFINE_FORWARDS, (_A, _A, _A))
    N, D, M = affine_shapes("affine_backward_fast", x, w, b)
    dout = as_dout("affine_backward_fast", dout, (N, M), x.dtype)
    x2 = x.reshape(N, D)
    doutT = np.ascontiguousarray(dout.T)
    dw = np.empty((D, M), dtype=x.dtype)
    # dx^T (D, N) = w @ dout^T: the (D, M) x (M, N) orientation runs 1.3-3.5x faster
    # in OpenBLAS than dout @ w.T when N is a small batch (measured above)
    dxT = np.empty((D, N), dtype=x.dtype)
    workers = _affine_workers(x, N * D * M)

    def piece(i, d0, d1, nthreads):
        # each thread owns rows [d0, d1) of w, dw and dx^T
        np.matmul(x2[:, d0:d1].T, dout, out=dw[d0:d1])
        np.matmul(w[d0:d1], doutT, out=dxT[d0:d1])

    _run_chunks(_split(D, workers), piece, workers)
    dx = np.ascontiguousarray(dxT.T).reshape(x.shape)
    return dx, dw, dout.sum(axis=0)


# ----------------------------------------------------------------------------- pooling


def _pool_arrays(layer, x, pool_param):
    g = pool_geometry(layer, x, pool_param)
    N, C, H, W = x.shape
    if H * W >= 2**31:
        raise ValueError(f"{layer}: planes of {H}x{W} are too large for int32 argmax positions")
    return g, np.ascontiguousarray(x)


def max_pool_forward_fast(x, pool_param):
    """Max pooling as `max_pool_forward_naive`. x: (N, C, H, W); pool_param:
    `pool_height`, `pool_width`, `stride`. Returns out (N, C, H', W') and the cache
    (x, pool_param) carrying the argmax positions."""
    layer = "max_pool_forward_fast"
    g, x = _pool_arrays(layer, x, pool_param)
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    arg = np.empty(out.shape, dtype=np.int32)
    _kernels(x.dtype).max_pool_forward(x, out, arg, g.pool_height, g.pool_width, *g.stride)
    return out, PoolCache((x, pool_param), "max_pool_forward_fast", arg)


def max_pool_backward_fast(dout, cache):
    """Each window's gradient goes to its maximum (the first, on ties); overlapping
    windows add up. Returns dx (N, C, H, W)."""
    layer = "max_pool_backward_fast"
    x, pool_param = unpack_cache(layer, cache, MAX_POOL_FORWARDS, (_A, dict))
    g, x = _pool_arrays(layer, x, pool_param)
    N, C = x.shape[:2]
    dout = as_dout(layer, dout, (N, C, g.out_h, g.out_w), x.dtype)
    kern = _kernels(x.dtype)
    arg = getattr(cache, "arg", None)
    if arg is None:  # a reference cache: find the maxima again
        arg = np.empty((N, C, g.out_h, g.out_w), dtype=np.int32)
        kern.max_pool_forward(x, np.empty(arg.shape, dtype=x.dtype), arg, g.pool_height, g.pool_width, *g.stride)
    dx = np.zeros_like(x)
    kern.max_pool_backward(np.ascontiguousarray(dout), arg, dx)
    return dx


def avg_pool_forward_fast(x, pool_param):
    """Average pooling as `avg_pool_forward_naive`. Returns out (N, C, H', W') and
    the cache (x, pool_param)."""
    layer = "avg_pool_forward_fast"
    g, x = _pool_arrays(layer, x, pool_param)
    N, C = x.shape[:2]
    out = np.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    _kernels(x.dtype).avg_pool_forward(x, out, g.pool_height, g.pool_width, *g.stride)
    return out, PoolCache((x, pool_param), "avg_pool_forward_fast")


def avg_pool_backward_fast(dout, cache):
    """Each window spreads dout / (pool_height * pool_width) over its elements.
    Returns dx (N, C, H, W)."""
    layer = "avg_pool_backward_fast"
    x, pool_param = unpack_cache(layer, cache, AVG_POOL_FORWARDS, (_A, dict))
    g = pool_geometry(layer, x, pool_param)
    N, C = x.shape[:2]
    dout = as_dout(layer, dout, (N, C, g.out_h, g.out_w), x.dtype)
    dx = np.zeros(x.shape, dtype=x.dtype)
    _kernels(x.dtype).avg_pool_backward(np.ascontiguousarray(dout), dx, g.pool_height, g.pool_width, *g.stride)
    return dx


# ----------------------------------------------------------------------------- spatial batch norm


def BatchNormCache(items):
    """(mode, xhat, inv_std, gamma) of `spatial_batchnorm_forward_fast`; xhat (N, C, H, W),
    inv_std and gamma (C,)."""
    return Cache(items, "spatial_batchnorm_forward_fast")


def spatial_batchnorm_forward_fast(x, gamma, beta, bn_param):
    """Spatial batch norm as `layers.spatial_batchnorm_forward`, computed on the NCHW
    array directly: no transposed copies, the statistics reduced over (N, H, W) with
    float64 accumulation for float32 data, and the cache keeps xhat alone.

    x: (N, C, H, W); gamma, beta: (C,); bn_param as for `layers.batchnorm_forward`
    (`mode` required; running statistics written back). Returns out and a cache for
    `spatial_batchnorm_backward_fast` (not interchangeable with the reference's).
    """
    from . import layers as L  # the reference defines the bn_param contract

    layer = "spatial_batchnorm_forward_fast"
    mode, gamma, beta, eps, momentum, unbiased, running_mean, running_var = L.bn_setup(
        layer, x, gamma, beta, bn_param, 4)
    N, C, H, W = x.shape
    dt = x.dtype
    if mode == "train":
        M = N * H * W
        if M < 1:
            raise ValueError(f"{layer}: train mode needs a non-empty batch, got x shape {x.shape}")
        mu = x.mean(axis=(0, 2, 3), dtype=np.float64)
        xhat = x - mu.astype(dt)[:, None, None]
        var = np.einsum("nchw,nchw->c", xhat, xhat, dtype=np.float64) / M
        inv_std = (1.0 / np.sqrt(var + eps)).astype(dt)
        xhat *= inv_std[:, None, None]
        running_mean = (momentum * running_mean + (1 - momentum) * mu).astype(dt)
        tracked = var * (M / (M - 1)) if unbiased and M > 1 else var
        running_var = (momentum * running_var + (1 - momentum) * tracked).astype(dt)
    else:
        inv_std = (1.0 / np.sqrt(running_var + eps)).astype(dt)
        xhat = (x - running_mean[:, None, None]) * inv_std[:, None, None]
    out = xhat * gamma[:, None, None]
    out += beta[:, None, None]
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, BatchNormCache((mode, xhat, inv_std, gamma))


def spatial_batchnorm_backward_fast(dout, cache):
    """Returns dx (N, C, H, W), dgamma (C,), dbeta (C,), in the closed form
    dx = gamma inv_std (dout - mean(dout) - xhat mean(dout xhat)), means over (N, H, W)."""
    layer = "spatial_batchnorm_backward_fast"
    if not isinstance(cache, Cache):  # its layout is not the reference's: only its own, tagged cache
        raise TypeError(f"{layer}: cache must be the cache that spatial_batchnorm_forward_fast returned, "
                        f"got {describe(cache)}")
    mode, xhat, inv_std, gamma = unpack_cache(layer, cache, "spatial_batchnorm_forward_fast", (str, _A, _A, _A))
    dout = as_dout(layer, dout, xhat.shape, xhat.dtype)
    N, C, H, W = xhat.shape
    dt = xhat.dtype
    dbeta = dout.sum(axis=(0, 2, 3), dtype=np.float64)
    dgamma = np.einsum("nchw,nchw->c", dout, xhat, dtype=np.float64)
    scale = (gamma * inv_std)[:, None, None]
    if mode == "test":
        return dout * scale, dgamma.astype(dt), dbeta.astype(dt)
    M = N * H * W
    dx = xhat * (dgamma / M).astype(dt)[:, None, None]
    np.subtract(dout, dx, out=dx)
    dx -= (dbeta / M).astype(dt)[:, None, None]
    dx *= scale
    return dx, dgamma.astype(dt), dbeta.astype(dt)
