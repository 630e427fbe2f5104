"""The engine's runtime: which kernels run, on how many threads, in how much memory.

- Implementation: "cython" when the compiled extension `funkcije.kernels._compiled`
  imports, else "numpy" (`kernels.numpy_kernels`, same results, one RuntimeWarning at
  import). `FUNKCIJE_FORCE_NUMPY=1` or `use_implementation("numpy")` forces the
  fallback. Dtypes other than float32 and float64 always take the NumPy kernels.
- Threads: the batch chunks of a kernel call are split over `conv threads` (the
  calling thread plus a small pool), each running its kernels and single-threaded GEMMs
  with no barrier in between; numpy's BLAS is held at one thread meanwhile through
  threadpoolctl. Why: docs/ARCHITECTURE.md and the note above `_run_chunks`.
- Workspace: per-thread scratch memory within a bound (`set_workspace_limit`, env
  FUNKCIJE_WORKSPACE_MB, default 256 MiB), reused across calls.
- Denormals: every chunk of compiled and BLAS work runs with FTZ/DAZ set on its thread.
- Steps: a model's loss and the Solver's step run inside `engine_step()`, which flushes
  denormals and holds numpy's BLAS at one thread for the whole step.
- Heap: on glibc, arrays up to 1 GiB come from the heap, and freed memory stays there
  for the next step (FUNKCIJE_KEEP_HEAP=0 leaves malloc's defaults).

Importing this module sets OMP_WAIT_POLICY=PASSIVE unless it is set already.
"""
from __future__ import annotations

import functools
import itertools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from ..checks import check_bool
from ..config import ENV
from . import numpy_kernels

# libgomp threads spin after each parallel region by default; on a machine whose cores
# are shared (with OpenBLAS's GEMM threads, or other processes) a spinning thread
# steals the core another thread's barrier is waiting for, and a 0.2 ms kernel takes
# 20 ms. Sleeping waits cost microseconds per region. Set before the extension (and so
# libgomp) loads; an explicit OMP_WAIT_POLICY from the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# glibc maps every block over its (adaptive, at most 32 MiB) mmap threshold afresh and
# unmaps it when freed, so each step's activations were faulted in page by page again:
# FERMnistNet's loss at batch 512 (BLAS held for the step) took 93-109 ms with malloc's
# defaults and 77-83 ms with blocks up to 1 GiB served from the heap and freed memory
# kept there up to 1 GiB (peak RSS 139 vs 141 MB).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_KEEP_BYTES = 1 << 30


def _keep_heap() -> bool:
    """Apply the two mallopt settings above on glibc; True when they took effect."""
    if not ENV["keep_heap"] or not hasattr(os, "confstr"):
        return False
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, ValueError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))


heap_kept = _keep_heap()

try:
    from . import _compiled as compiled

    _COMPILED_ERROR = None
except ImportError as exc:  # extension not built: the NumPy fallback takes over
    compiled = None
    _COMPILED_ERROR = exc

_KERNELS = {"numpy": numpy_kernels}
if compiled is not None:
    _KERNELS["cython"] = compiled

if ENV["force_numpy"]:
    _implementation = "numpy"
elif compiled is not None:
    _implementation = "cython"
else:
    _implementation = "numpy"
    warnings.warn(
        "funkcije.fast_layers: the compiled extension funkcije.kernels._compiled is not available "
        f"({_COMPILED_ERROR}); using the pure-NumPy fallback, which gives the same results more "
        "slowly. Build the extension with `pip install -e .` or `python setup.py build_ext --inplace`.",
        RuntimeWarning,
        stacklevel=3,
    )

FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# "namespace": the Array API code of kernels/xp_kernels.py, which arrays other than NumPy's
# (CuPy on a GPU) always take; forced, NumPy arrays take it too (how CI tests it on the CPU)
IMPLEMENTATIONS = ("cython", "numpy", "namespace")


def implementation() -> str:
    """The active implementation: "cython", "numpy" or "namespace"."""
    return _implementation


def available_implementations() -> tuple[str, ...]:
    return tuple(_KERNELS) + ("namespace",)


def namespaced(x) -> bool:
    """Whether the fast layers run `x` through the Array API kernels (kernels/xp_kernels.py):
    for any array that is not NumPy's, and for all when that implementation is forced."""
    return _implementation == "namespace" or not isinstance(x, np.ndarray)


def use_implementation(name: str) -> str:
    """Switch the active implementation ("cython", "numpy" or "namespace"); returns the
    previous one. Raises ImportError for "cython" when the extension is not built."""
    global _implementation
    if not isinstance(name, str) or name not in IMPLEMENTATIONS:
        raise ValueError(f"use_implementation: name must be one of {IMPLEMENTATIONS}, got {name!r}")
    if name == "cython" and name not in _KERNELS:
        raise ImportError(
            f"use_implementation: the compiled extension funkcije.kernels._compiled is not available ({_COMPILED_ERROR})"
        )
    previous, _implementation = _implementation, name
    return previous


def kernels_for(dtype):
    """The kernel module for arrays of `dtype` under the active implementation."""
    if dtype in FAST_DTYPES and _implementation in _KERNELS:
        return _KERNELS[_implementation]
    return numpy_kernels


def is_compiled(kern) -> bool:
    return kern is compiled and compiled is not None


# ----------------------------------------------------------------------------- workspace

_workspace_limit = int(ENV["workspace_mb"] * 2**20)


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
# are short, though, so a chunk keeps at least MIN_COLUMNS columns. Measured on the
# layer benchmark's cases (benchmarks/bench_layers.py, benchmarks/RESULTS.md).
CACHE_COLS_BYTES = 8 * 2**20
MIN_COLUMNS = 8192


def chunk_size(N: int, per_sample_bytes: int, cols_per_sample: int = 0, col_bytes: int = 0,
               workers: int = 1, target_cols: int = 0) -> int:
    """Samples per chunk: at most what fits the workspace bound shared by `workers`
    threads (per_sample_bytes each, at least one sample), preferably a column block of
    about CACHE_COLS_BYTES (col_bytes per column, cols_per_sample = H' * W' columns per
    sample) but not fewer than MIN_COLUMNS columns — or, given target_cols, about that
    many columns; with several workers, at least two chunks each so a worker slowed by
    other processes is covered by the others; balanced so the last chunk is not a sliver."""
    nb = _workspace_limit // max(1, workers * per_sample_bytes)
    if target_cols and cols_per_sample:
        nb = min(nb, -(-target_cols // cols_per_sample))
    elif cols_per_sample and col_bytes:
        cached = CACHE_COLS_BYTES // (cols_per_sample * col_bytes)
        nb = min(nb, max(cached, -(-MIN_COLUMNS // cols_per_sample)))
    if workers > 1:
        nb = min(nb, -(-N // (2 * workers)))
    nb = max(1, min(N, nb))
    if N > 0:
        chunks = -(-N // nb)
        nb = -(-N // chunks)
    return nb


def chunks_of(N: int, nb: int):
    """[(n0, n1), ...]: range(N) in pieces of nb."""
    return [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)]


def split(n: int, parts: int, align: int = 16):
    """[(start, stop), ...]: range(n) in at most `parts` pieces, boundaries on
    multiples of `align` (SIMD-friendly column blocks), none empty."""
    step = -(-n // max(1, parts))
    step = max(align, -(-step // align) * align)  # n = 0 would give a zero step
    return [(i, min(n, i + step)) for i in range(0, n, step)] or [(0, 0)]


def sum_parts(parts):
    """parts[0] + parts[1] + ... in that order (per-chunk partial sums: the result does
    not depend on which thread took which chunk)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


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


workspace = _Workspace()


def release_workspace():
    """Free this thread's cached convolution workspace."""
    workspace.buf = np.empty(0, dtype=np.uint8)


# ----------------------------------------------------------------------------- threads
#
# numpy's OpenBLAS runs every GEMM on its own thread team, which synchronises inside
# each call; when other processes share the cores, each synchronisation can wait a
# whole scheduler time slice, and a conv step with a dozen GEMMs and kernels slows
# down five- to tenfold (measured: benchmarks/README.md). So when numpy's BLAS thread
# count can be controlled (threadpoolctl finds the library numpy loaded), the kernels
# split their batch chunks over `conv threads`, each running whole chunks with a
# single-threaded GEMM, and BLAS is held at one thread for the duration of the call.
# Setting the count through threadpoolctl's controller costs under 1 microsecond.


def _numpy_blas_of(controllers):
    """Of threadpoolctl's BLAS controllers, numpy's: a wheel's numpy loads the BLAS in its
    own folder (numpy.libs/); a numpy built by conda or a Linux distribution links the
    environment's shared BLAS, which lies outside every Python package's folder (other
    packages' own copies, torch's or a wheel's scipy's, lie inside theirs)."""
    def path(c):
        return (c.filepath or "").replace("\\", "/").lower()

    own = [c for c in controllers if "numpy" in path(c)]
    if own:
        return own
    return [c for c in controllers if path(c) and "site-packages/" not in path(c) and "dist-packages/" not in path(c)]


def _numpy_blas():
    """threadpoolctl's controllers of the BLAS libraries numpy loaded ([] if none)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a dependency, but the engine still runs (on one chunk thread) without it
        return []
    try:
        found = ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:  # an unusual library layout: no control rather than no funkcije
        return []
    return _numpy_blas_of(found)


_BLAS = _numpy_blas()
if compiled is not None and not _BLAS:
    warnings.warn(
        "funkcije: threadpoolctl finds no BLAS library of numpy's to hold at one thread, so the "
        "convolution engine runs on one thread of its own (the GEMMs still use BLAS's threads); "
        "threadpoolctl >= 3.5 finds numpy 2's OpenBLAS",
        RuntimeWarning,
        stacklevel=3,
    )
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = []


def blas_controlled() -> bool:
    return bool(_BLAS)


def blas_kernels() -> str:
    """Which kernels numpy's OpenBLAS runs (threadpoolctl's "architecture"), for a run's
    record, and whether OPENBLAS_CORETYPE chose them rather than OpenBLAS's detection:
    "SkylakeX (detected)", "Haswell (OPENBLAS_CORETYPE=Haswell)"; "" where not known.
    Forcing the AVX2 kernels on an AVX-512 CPU halves numpy's float32 GEMMs."""
    arch = next((getattr(c, "architecture", None) for c in _BLAS
                 if getattr(c, "internal_api", "") == "openblas"), None)
    if not arch:
        return ""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"{arch} (OPENBLAS_CORETYPE={forced})" if forced else f"{arch} (detected)"


@contextmanager
def single_threaded_blas():
    """Hold numpy's BLAS at one thread; nested and concurrent users share one save/restore."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [c.get_num_threads() for c in _BLAS]
            for c in _BLAS:
                c.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for c, n in zip(_BLAS, _blas_saved):
                    c.set_num_threads(n)


def _default_conv_threads():
    if not _BLAS or compiled is None:
        return 1
    if ENV["conv_threads"] is not None:
        return ENV["conv_threads"]
    return max(1, min(os.cpu_count() or 1, compiled.max_threads()))


_conv_threads = _default_conv_threads()
_pool = None
_pool_lock = threading.Lock()


def _reset_after_fork():
    # a forked child has none of the parent's pool threads, and a lock held by another
    # parent thread at the fork would never be released
    global _pool, _pool_lock, _blas_lock, _blas_users
    if _blas_users:  # forked in the middle of a kernel call
        for c, n in zip(_BLAS, _blas_saved):
            c.set_num_threads(n)
    _pool = None
    _pool_lock = threading.Lock()
    _blas_lock = threading.Lock()
    _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_conv_threads() -> int:
    """Threads the compiled kernels split their batch chunks over (1: chunks run in
    order, each kernel and GEMM using its own threads)."""
    return _conv_threads


def set_conv_threads(n: int) -> int:
    """Set the kernels' chunk threads (>= 1); returns the previous value. More than
    one needs control of numpy's BLAS threads (threadpoolctl) and the compiled extension."""
    global _conv_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_conv_threads: n must be a positive int, got {n!r}")
    if n > 1 and (not _BLAS or compiled is None):
        raise RuntimeError("set_conv_threads: control of numpy's BLAS threads or the compiled extension is unavailable")
    previous, _conv_threads = _conv_threads, int(n)
    return previous


def workers_for(kern) -> int:
    return _conv_threads if is_compiled(kern) else 1


# ----------------------------------------------------------------------------- denormals
#
# Subnormal numbers (|x| < 1.2e-38 in float32) cost x86 cores 10-100x per operation.
# Training makes them: after 5 CIFAR-10 epochs 12 % of ThreeLayerConvNet's dW2 was
# subnormal (from reg * W2 where W2 had decayed towards zero), `dW2 + reg * W2` took
# 19.4 ms instead of 4.5 ms and a forward + backward 46.6 ms instead of 31.9 ms. So every chunk
# of compiled and BLAS work runs with FTZ/DAZ set on its thread (the calling thread's
# mode is restored afterwards; PyTorch offers the same as torch.set_flush_denormal).
# Only values below the smallest normal number change: they become zero.
_flush_denormals = ENV["flush_denormals"]


def flushing_denormals() -> bool:
    return _flush_denormals


def use_flush_denormals(enabled: bool) -> bool:
    """Flush subnormal numbers to zero inside the fast layers (True, the default; env
    FUNKCIJE_FLUSH_DENORMALS=0 disables); returns the previous setting. Only has an
    effect with the compiled extension on x86."""
    global _flush_denormals
    previous, _flush_denormals = _flush_denormals, check_bool("use_flush_denormals", "enabled", enabled, ints=True)
    return previous


@contextmanager
def flush_denormals():
    """Context in which this thread flushes subnormal numbers to zero (FTZ/DAZ), when
    `use_flush_denormals` is on and the compiled extension is there; the previous mode
    is restored on exit. The classifiers' `loss` and the Solver's step run inside it:
    the NumPy work between the layers (the L2 term `reg * W` of a weight decaying
    towards zero is a typical source of subnormals) is flushed too."""
    if not _flush_denormals or compiled is None:
        yield
        return
    old = compiled.flush_denormals_on()
    try:
        yield
    finally:
        compiled.restore_fp_mode(old)


def _engine_splits() -> bool:
    from .. import config  # config imports this module lazily; no cycle at import

    return _implementation == "cython" and _conv_threads > 1 and bool(_BLAS) and config.get("layers") == "fast"


@contextmanager
def engine_step():
    """Context for a whole training or inference step: subnormals flushed to zero
    (`flush_denormals`) and, while the engine splits its GEMMs over its own threads,
    numpy's BLAS held at one thread from start to end. Holding it per kernel call
    instead released it between the calls, and OpenBLAS's team, woken by the release,
    spun against the engine's threads: FERMnistNet's loss at batch 512 took 144-148 ms
    against 102-109 ms held for the step (malloc's defaults; AMD EPYC,
    benchmarks/RESULTS.md)."""
    with flush_denormals():
        if _engine_splits():
            with single_threaded_blas():
                yield
        else:
            yield


def in_engine_step(fn):
    """Decorator: run fn inside `engine_step()`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with engine_step():
            return fn(*args, **kwargs)
    return wrapper


def _in_ftz(fn, *args):
    with flush_denormals():
        return fn(*args)


def run_chunks(chunks, body, workers):
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
            _pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="funkcije-kernels")
        pool = _pool
    counter = itertools.count()  # next() is atomic under the GIL

    def drain():
        while True:
            i = next(counter)
            if i >= len(chunks):
                return
            body(i, *chunks[i], 1)

    with single_threaded_blas():
        futures = [pool.submit(_in_ftz, drain) for _ in range(workers - 1)]
        try:
            _in_ftz(drain)
        finally:
            for f in futures:
                f.result()
