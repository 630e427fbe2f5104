"""Convolution algorithms: im2col + GEMM, Winograd F(4x4, 3x3) and F(2x2, 3x3), and the
direct AVX-512 kernels, each for the forward, dx and dw, chosen per layer and pass.

`forward(x, w, b, g, out)` and `backward(x, w, dout, g, need_dx)` take arrays that
`funkcije.fast_layers` has validated and made C-contiguous, and g, the layer's
`checks.conv_geometry`. Which algorithm runs is decided here, never by a model:

- Winograd for 3x3, stride-1, undilated layers with at least 16 channels in and out
  per group (forward, dx as a convolution of dout, dw), where the batch is large enough
  to pay for the filter transform (`_winograd_choice`): F(4x4, 3x3) or F(2x2, 3x3) in
  float32 (`use_winograd_tile`), F(2x2, 3x3) in float64;
- the direct kernels for small float32 layers (Cg * HH * WW <= 1600, WW <= 8) on
  CPUs with AVX-512F;
- im2col + BLAS GEMMs otherwise: one per batch chunk and group, or, for a small batch
  through large filters, one im2col of the batch whose GEMMs the threads split by rows.

The workspace of each is bounded (runtime.set_workspace_limit): the batch is processed
in chunks small enough to keep it under the bound, and the backward recomputes the
columns chunk by chunk instead of caching them.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_bool
from ..config import ENV
from . import runtime as R
from .runtime import compiled as _compiled

def _gemm_sizes(g, w_shape):
    """(G, Fg, K, P, geo) of a convolution's im2col GEMMs: groups, filters per group,
    rows of the column matrix (Cg * HH * WW), output positions per sample and the
    geometry tuple the im2col/col2im kernels take."""
    F, Cg, HH, WW = w_shape
    geo = (HH, WW) + g.stride + g.pad + g.dilation + (g.out_h, g.out_w)
    return g.groups, F // g.groups, Cg * HH * WW, g.out_h * g.out_w, geo


def forward(x, w, b, g, out, gemm_only=False):
    """out (N, F, H', W') = the convolution of x (N, C, H, W) by w (F, C // groups,
    HH, WW) plus b (F,), with geometry g; x, w, b C-contiguous, N > 0. gemm_only=True
    runs im2col + GEMM whatever the layer."""
    kern = R.kernels_for(x.dtype)
    N = x.shape[0]
    F, Cg, HH, WW = w.shape
    m = 0 if gemm_only else _winograd_choice(kern, g, N, F, Cg, HH, WW, g.pad, x.dtype)
    if m:
        _winograd_conv(x, _winograd_filters(w, g.groups, m), g.groups, g.pad, out, b)
        return
    if not gemm_only and _direct_applies(kern, x, Cg, HH, WW):
        _direct_conv(x, _direct_filters(w, g.groups), g.groups, (HH, WW), g.stride, g.pad, g.dilation, out, b)
        return
    G, Fg, K, P, geo = _gemm_sizes(g, w.shape)
    out3 = out.reshape(N, F, P)
    wmat = w.reshape(F, K)
    workers = R.workers_for(kern)
    if _split_by_filters(x, N * P, K, Fg, workers):
        _forward_by_filters(x, wmat, b, G, Fg, K, geo, out3, kern, workers)
        return
    nb = R.chunk_size(N, x.itemsize * P * (K + Fg), P, x.itemsize * K, workers)

    def chunk(i, n0, n1, nthreads):
        m = (n1 - n0) * P
        cols, res = R.workspace.arrays(x.dtype, (K, m), (Fg, m))
        for grp in range(G):
            f0 = grp * Fg
            kern.im2col(x, cols, n0, n1, grp * Cg, (grp + 1) * Cg, *geo, nthreads)
            np.matmul(wmat[f0 : f0 + Fg], cols, out=res)
            kern.cols_to_out(res, b[f0 : f0 + Fg], out3, n0, f0, nthreads)

    R.run_chunks(R.chunks_of(N, nb), chunk, workers)


_DW_DIRECT_ORIENTATION = 2**20  # K * Fg from which im2col's dw is dmat @ cols^T (see backward)


def backward(x, w, dout, g, need_dx, gemm_only=False):
    """(dx (N, C, H, W) or None, dw (F, C // groups, HH, WW), db (F,)) of the
    convolution with geometry g; x, w, dout (N, F, H', W') C-contiguous, N > 0.
    need_dx=False skips dx's GEMMs and scatter (a network's first layer);
    gemm_only=True runs im2col + GEMM whatever the layer."""
    kern = R.kernels_for(x.dtype)
    N = x.shape[0]
    F, Cg, HH, WW = w.shape
    G, Fg, K, P, geo = _gemm_sizes(g, w.shape)

    # dx of a stride-1 layer is itself a stride-1 convolution of dout, padded by the
    # kernel's reach minus pad, with the filters flipped and in and out channels swapped
    reach = ((HH - 1) * g.dilation[0], (WW - 1) * g.dilation[1])
    dx_pad = (reach[0] - g.pad[0], reach[1] - g.pad[1])
    m = 0 if gemm_only else _winograd_choice(kern, g, N, F, Cg, HH, WW, dx_pad, x.dtype)
    if m:
        dx = None
        if need_dx:
            dx = np.empty_like(x)
            _winograd_conv(dout, _winograd_filters(_flipped_filters(w, G), G, m), G, dx_pad, dx, np.empty(0, x.dtype))
        return dx, _winograd_weight_grad(x, dout, G, g.pad, w.shape, m), dout.sum(axis=(0, 2, 3))
    # the direct kernels' "filters" for dx are the layer's input channels; with few of
    # them (an RGB or grey first layer) the row kernels keep the vector lanes busy
    dx_direct = (need_dx and g.stride == (1, 1) and min(dx_pad) >= 0
                 and _direct_applies(kern, x, Fg, HH, WW))
    # direct dw wherever it applies, with dx from the direct kernels or else (strided
    # layers) from GEMM + col2im alone: measured on x (100, 3, 31, 31) stride 2, 2.0-2.3
    # ms against 2.2-2.7 ms for im2col's shared pass over dout for both (once dout's
    # transpose for the direct dw was vectorised; before, 3.5 against 3.3 ms)
    if not gemm_only and _direct_applies(kern, x, Cg, HH, WW):
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
    workers = R.workers_for(kern)
    if _split_by_filters(x, N * P, K, Fg, workers, 2):
        dw = _backward_by_filters(x, wmat, dout3, dx, G, Fg, K, geo, kern, workers)
        return dx, dw.reshape(w.shape), dout3.sum(axis=(0, 2))
    nb = R.chunk_size(N, x.itemsize * P * (2 * K + Fg), P, x.itemsize * K, workers)
    chunks = R.chunks_of(N, nb)
    # one dw partial per chunk, summed in chunk order afterwards, so the result does
    # not depend on which thread took which chunk. dw_g^T = cols @ dmat^T: OpenBLAS runs
    # this orientation up to 3x faster than dw_g = dmat @ cols^T when the shared
    # dimension (nb * P) is the long one, but numpy's transpose of the sum back to
    # (Fg, K) runs at 1.5-3 GB/s, 6.5 ms for K x Fg = 4608 x 512; from 2^20 elements on,
    # dmat @ cols^T was as fast or faster than the other orientation with its transpose
    # (benchmarks/RESULTS.md, engine notes)
    transposed = K * Fg < _DW_DIRECT_ORIENTATION
    parts = np.empty((len(chunks), G) + ((K, Fg) if transposed else (Fg, K)), dtype=x.dtype)
    db_parts = np.empty((len(chunks), F), dtype=x.dtype)

    def chunk(i, n0, n1, nthreads):
        db_parts[i] = dout3[n0:n1].sum(axis=(0, 2))
        m = (n1 - n0) * P
        cols, dcols, dmat = R.workspace.arrays(x.dtype, (K, m), (K, m), (Fg, m))
        for grp in range(G):
            f0, c0 = grp * Fg, grp * Cg
            kern.out_to_cols(dout3, dmat, n0, f0, nthreads)
            kern.im2col(x, cols, n0, n1, c0, c0 + Cg, *geo, nthreads)
            if transposed:
                np.matmul(cols, dmat.T, out=parts[i, grp])
            else:
                np.matmul(dmat, cols.T, out=parts[i, grp])
            if need_dx:
                np.matmul(wmat[f0 : f0 + Fg].T, dmat, out=dcols)
                kern.col2im(dcols, dx, n0, n1, c0, c0 + Cg, *geo, nthreads)

    R.run_chunks(chunks, chunk, workers)
    dw = R.sum_parts(parts)
    if transposed:
        dw = np.ascontiguousarray(dw.transpose(0, 2, 1))
    return dx, dw.reshape(w.shape), R.sum_parts(db_parts)


# A small batch through a layer with large filters: its batch chunks (at least two per
# worker) would be a few columns wide, and every chunk's GEMMs would stream all of w
# through the cache again. Such a layer instead takes im2col of the whole batch once
# and splits its GEMMs between the workers by rows: filters for the forward and dw,
# rows of the column matrix for dx. No partial sums: each element of out, dw and dx
# comes from one GEMM whose shape does not depend on the thread that ran it.
_SPLIT_MAX_COLUMNS = 2048  # at most this many columns (N * H' * W') in the whole batch
_SPLIT_MIN_WEIGHTS = 2**17  # and at least this many weights per group (K * Fg)
# one piece of rows per worker: two each were 5-15 % slower (longer GEMMs run closer
# to the BLAS kernels' peak)
_SPLIT_PIECES = 1


def _split_by_filters(x, m, K, Fg, workers, col_arrays=1) -> bool:
    return (
        workers > 1
        and m <= _SPLIT_MAX_COLUMNS
        and K * Fg >= _SPLIT_MIN_WEIGHTS
        and x.itemsize * m * (col_arrays * K + Fg) <= R.get_workspace_limit()
    )


def _row_pieces(n, workers):
    return R.split(n, _SPLIT_PIECES * workers, align=16)


def _forward_by_filters(x, wmat, b, G, Fg, K, geo, out3, kern, workers):
    N, Cg = x.shape[0], x.shape[1] // G
    m = out3.shape[0] * out3.shape[2]
    cols, res = R.workspace.arrays(x.dtype, (K, m), (Fg, m))
    for grp in range(G):
        f0, c0 = grp * Fg, grp * Cg
        kern.im2col(x, cols, 0, N, c0, c0 + Cg, *geo, 0)

        def rows(i, r0, r1, nthreads):
            np.matmul(wmat[f0 + r0 : f0 + r1], cols, out=res[r0:r1])

        R.run_chunks(_row_pieces(Fg, workers), rows, workers)
        kern.cols_to_out(res, b[f0 : f0 + Fg], out3, 0, f0, 0)


def _backward_by_filters(x, wmat, dout3, dx, G, Fg, K, geo, kern, workers):
    """dw (G, Fg, K), and dx in place unless it is None, for `_split_by_filters` layers."""
    N, Cg = x.shape[0], x.shape[1] // G
    m = N * dout3.shape[2]
    cols, dcols, dmat = R.workspace.arrays(x.dtype, (K, m), (K, m), (Fg, m))
    dw = np.empty((G, Fg, K), dtype=x.dtype)
    dw_jobs = _row_pieces(Fg, workers)
    jobs = dw_jobs + (_row_pieces(K, workers) if dx is not None else [])
    for grp in range(G):
        f0, c0 = grp * Fg, grp * Cg
        kern.out_to_cols(dout3, dmat, 0, f0, 0)
        kern.im2col(x, cols, 0, N, c0, c0 + Cg, *geo, 0)

        def rows(i, r0, r1, nthreads):
            if i < len(dw_jobs):  # dw rows r0:r1 = dout_g rows @ cols^T
                np.matmul(dmat[r0:r1], cols.T, out=dw[grp, r0:r1])
            else:  # dcols rows r0:r1 = (w_g's columns r0:r1)^T @ dout_g
                np.matmul(wmat[f0 : f0 + Fg, r0:r1].T, dmat, out=dcols[r0:r1])

        R.run_chunks(jobs, rows, workers)
        if dx is not None:
            kern.col2im(dcols, dx, 0, N, c0, c0 + Cg, *geo, 0)
    return dw


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
    workers = R.workers_for(kern)
    nb = R.chunk_size(N, dout.itemsize * P * (K + Fg), P, dout.itemsize * K, workers)

    def chunk(i, n0, n1, nthreads):
        m = (n1 - n0) * P
        dcols, dmat = R.workspace.arrays(dout.dtype, (K, m), (Fg, m))
        for grp in range(G):
            f0, c0 = grp * Fg, grp * Cg
            kern.out_to_cols(dout3, dmat, n0, f0, nthreads)
            np.matmul(wmat[f0 : f0 + Fg].T, dmat, out=dcols)
            kern.col2im(dcols, dx, n0, n1, c0, c0 + Cg, *geo, nthreads)

    R.run_chunks(R.chunks_of(N, nb), chunk, workers)
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

_direct_enabled = ENV["direct"]
_DIRECT_MAX_K = 1600  # the largest Cg * HH * WW that takes the direct kernels
_DIRECT_CPU = _compiled is not None and _compiled.direct_available()



def use_direct(enabled: bool) -> bool:
    """Allow (True, the default; env FUNKCIJE_DIRECT=0 disables) or forbid the direct
    float32 kernels; returns the previous setting. They run only on CPUs with AVX-512F."""
    global _direct_enabled
    previous, _direct_enabled = _direct_enabled, check_bool("use_direct", "enabled", enabled, ints=True)
    return previous


def _direct_applies(kern, x, Cg, HH, WW) -> bool:
    return (
        _direct_enabled
        and _DIRECT_CPU
        and kern is _compiled
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
    return R.split(N, 2 * workers if workers > 1 else 1, 1)


def _direct_conv(x, wT, G, kernel, stride, pad, dilation, out, b):
    """out (N, F, Ho, Wo) = the convolution of x (N, C, H, W) by the (KH, KW) = kernel
    filters wT (from `_direct_filters`), plus b (F,) unless b is empty."""
    kern = _compiled
    Cg = x.shape[1] // G
    Fg = out.shape[1] // G
    KH, KW = kernel
    workers = R.workers_for(kern)

    def chunk(i, n0, n1, nthreads):
        for grp in range(G):
            kern.direct_conv_forward(x, wT[grp], b, out, n0, n1, grp * Cg, Cg, grp * Fg, Fg, KH, KW,
                                     *stride, *pad, *dilation)

    R.run_chunks(_direct_chunks(x.shape[0], workers), chunk, workers)


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
    kern = _compiled
    F, Cg, HH, WW = w_shape
    Fg = F // G
    Fp = -(-Fg // 32) * 32
    workers = R.workers_for(kern)
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

    R.run_chunks(chunks, chunk, workers)
    total = R.sum_parts(parts)
    return np.ascontiguousarray(total[:, :, :Fg].transpose(0, 2, 1)).reshape(w_shape), R.sum_parts(db_parts)


def _flipped_filters(w, G):
    """The filters of dx as a convolution of dout: w (F, Cg, HH, WW) in G groups ->
    (G * Cg, F // G, HH, WW), rotated by 180 degrees, in and out channels swapped."""
    F, Cg, HH, WW = w.shape
    return w.reshape(G, F // G, Cg, HH, WW).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1].reshape(G * Cg, F // G, HH, WW)


# ----------------------------------------------------------------------------- Winograd
#
# 3x3, stride-1, undilated layers with enough channels on both sides are GEMM-bound;
# Winograd F(2x2, 3x3) (kernels in _compiled.pyx) does their products with 2.25x
# fewer multiplies, F(4x4, 3x3) (winograd4.h) with 4x fewer. Measured on
# (64, 256, 8, 8) x (512, 256, 3, 3): F(2x2)'s forward products took 39 ms instead of
# 84 ms on one thread. With few channels the transforms cost more than the products
# save, so im2col stays. Results differ from im2col by rounding: F(2x2)'s transforms
# add and halve (float32 within about 1e-6 relative of the reference); F(4x4)'s scale
# by up to 8 and 1/24, so its float32 rounding errors are larger (RESULTS.md).

_winograd_enabled = ENV["winograd"]
# both the input and the output channels of a group must reach this
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_TILES = 256
# What one pass's filter transform (or, for dw, the transform back) costs, in products
# per filter pair saved by Winograd F(m x m, 3x3) over im2col: measured on the zoo's 3x3
# layers at batches 4-128 inside a training step (fwd + bwd, 2 threads, AMD EPYC Zen 5),
# where F(2x2) overtook im2col at a batch saving of 1100-2600 products and F(4x4)
# overtook F(2x2) at 8000-10000 products more than F(2x2)'s saving (its 36 slabs cost
# 2.5x F(2x2)'s 16 per element). None turns the rule off: Winograd wherever it applies,
# with the tile `_tile_for` names.
_WINOGRAD_TRANSFORM_COST = {2: 1600, 4: 9600}
_WINOGRAD_DW_BYTES = 64 * 2**20  # measured best for the dw products of bench_layers.py's 3x3 layers
# dw by cache-sized blocks where one partial of the products' sums (Z) takes at most
# this many bytes; blocks of transforms of about _WINOGRAD_DW_BLOCK bytes (2 and 4 MiB
# measured alike, 1 and 8 MiB slower), in at least _WINOGRAD_DW_PARTS partial sums
_WINOGRAD_DW_SMALL_Z = 4 * 2**20
_WINOGRAD_DW_BLOCK = 4 * 2**20
_WINOGRAD_DW_PARTS = 4
_winograd_tile = ENV["winograd_tile"]


def use_winograd(enabled: bool) -> bool:
    """Allow (True, the default; env FUNKCIJE_WINOGRAD=0 disables) or forbid Winograd
    for 3x3 stride-1 convolutions; returns the previous setting."""
    global _winograd_enabled
    previous, _winograd_enabled = _winograd_enabled, check_bool("use_winograd", "enabled", enabled, ints=True)
    return previous


def use_winograd_tile(m: int) -> int:
    """Output tile of the float32 Winograd convolutions: 4 (F(4x4, 3x3), the default;
    env FUNKCIJE_WINOGRAD_TILE) or 2 (F(2x2, 3x3), fewer rounding steps); returns the
    previous value. float64 always takes F(2x2, 3x3): it is the dtype of gradient
    checks, and F(4x4)'s rounding (about 1e-14 of the output's scale) is 10x F(2x2)'s."""
    global _winograd_tile
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m not in (2, 4):
        raise ValueError(f"use_winograd_tile: m must be 2 or 4, got {m!r}")
    previous, _winograd_tile = _winograd_tile, int(m)
    return previous


def get_winograd_tile() -> int:
    return _winograd_tile


def _tile_for(dtype, Ho, Wo) -> int:
    """The Winograd tile for a layer with output planes (Ho, Wo): F(4x4, 3x3) in float32
    (unless set to 2) where it needs fewer products than F(2x2, 3x3), 36 per 4x4 tile
    against 16 per 2x2 one. Not on 2x2 planes (VGG7's last layer): one 4x4 tile for
    four outputs took 2.5x F(2x2)'s time (x (128, 512, 2, 2), w (512, 512, 3, 3))."""
    if _winograd_tile == 2 or dtype != np.float32:
        return 2
    four = 36 * -(-Ho // 4) * -(-Wo // 4)
    two = 16 * -(-Ho // 2) * -(-Wo // 2)
    return 4 if four < two else 2


def _winograd_applies(kern, g, F, Cg, HH, WW, pad) -> bool:
    return (
        _winograd_enabled
        and kern is _compiled
        and (HH, WW) == (3, 3)
        and g.stride == (1, 1)
        and g.dilation == (1, 1)
        and min(pad) >= 0
        and min(Cg, F // g.groups) >= _WINOGRAD_MIN_CHANNELS
    )


def _winograd_choice(kern, g, N, F, Cg, HH, WW, pad, dtype) -> int:
    """The Winograd tile m (4 or 2) for one pass of a layer over a batch of N, or 0 for
    im2col + GEMM. F(m x m, 3x3) saves 9 Ho Wo - tiles (m + 2)^2 products per sample and
    filter pair, and transforms the filters once per pass, which costs as much as
    _WINOGRAD_TRANSFORM_COST[m] products per pair: the tile whose batch saving exceeds its
    transform by the most, none where neither does. Small batches through small planes
    (ResNet9's 4x4 layers at batch 16) run faster as im2col, mid-sized ones as F(2x2)."""
    if not _winograd_applies(kern, g, F, Cg, HH, WW, pad):
        return 0
    m = _tile_for(dtype, g.out_h, g.out_w)
    if not _WINOGRAD_TRANSFORM_COST:
        return m

    def margin(m):
        tiles = -(-g.out_h // m) * -(-g.out_w // m)
        return N * (9 * g.out_h * g.out_w - tiles * (m + 2) ** 2) - _WINOGRAD_TRANSFORM_COST[m]

    best = max((m, 2) if m == 4 else (m,), key=margin)
    return best if margin(best) >= 0 else 0


def _winograd_filters(w, G, m):
    """Filter transform G w G^T of w (F, Cg, 3, 3) in G groups for F(m x m, 3x3):
    U (G, (m + 2)^2, F // G, Cg)."""
    F, Cg = w.shape[:2]
    U = _padded_slabs(w.dtype, (G,), F // G, Cg, (m + 2) ** 2)
    _compiled.winograd_filters(np.ascontiguousarray(w), U, 0, m)
    return U


def _tile_of(U):
    """m of F(m x m, 3x3) from a filter transform's (m + 2)^2 slabs."""
    return 4 if U.shape[1] == 36 else 2


def _winograd_plan(x, Cg, Fg, Ho, Wo, m):
    """(th, tw, chunks, workers) for Winograd F(m x m, 3x3) over the batch of x: th x tw
    tiles per output plane and batch chunks within the workspace bound."""
    N = x.shape[0]
    th, tw = -(-Ho // m), -(-Wo // m)
    workers = R.workers_for(_compiled)
    # about 256 tiles per chunk: the 16 products are then (Fg, Cg) x (Cg, 256), long
    # enough for BLAS and short enough for the transformed arrays to stay in cache
    # (measured on bench_layers.py's 3x3 layers: 256 tiles was the fastest of 16..16384 for both)
    nb = R.chunk_size(N, x.itemsize * (m + 2) ** 2 * th * tw * (Cg + Fg), th * tw, workers=workers,
                     target_cols=_WINOGRAD_TILES)
    return th, tw, R.chunks_of(N, nb), workers


def _workspace_slab_pair(dtype, rows_a, rows_b, cols, slabs):
    """Two arrays (slabs, rows_a, cols) and (slabs, rows_b, cols) with padded-apart slabs
    (as `_padded_slabs` makes them), carved from this thread's workspace."""
    a, b = R.workspace.arrays(dtype, (slabs, rows_a * cols + 16), (slabs, rows_b * cols + 16))
    return _slabs_of(a, rows_a, cols), _slabs_of(b, rows_b, cols)


def _winograd_conv(x, U, G, pad, out, b):
    """out (N, F, Ho, Wo) = the 3x3 stride-1 convolution of x (N, C, H, W) with zero
    padding `pad` by the filters whose transform is U (G, (m + 2)^2, F // G, C // G),
    plus b (F,) unless b is empty. Chunked over the batch like im2col, within the bound."""
    kern = _compiled
    m = _tile_of(U)
    Fg, Cg = U.shape[2], U.shape[3]
    th, tw, chunks, workers = _winograd_plan(x, Cg, Fg, out.shape[2], out.shape[3], m)

    def chunk(i, n0, n1, nthreads):
        V, M = _workspace_slab_pair(x.dtype, Cg, Fg, (n1 - n0) * th * tw, U.shape[1])
        for grp in range(G):
            kern.winograd_input(x, V, n0, n1, grp * Cg, (grp + 1) * Cg, pad[0], pad[1], th, tw, nthreads, m)
            np.matmul(U[grp], V, out=M)
            kern.winograd_output(M, out, n0, grp * Fg, th, tw, b[grp * Fg : (grp + 1) * Fg], nthreads, m)

    R.run_chunks(chunks, chunk, workers)


def _winograd_weight_grad(x, dout, G, pad, w_shape, m):
    """dw (F, C // G, 3, 3) of the 3x3 stride-1 convolution of x (N, C, H, W) with
    zero padding `pad` and upstream gradient dout (N, F, Ho, Wo) by F(m x m, 3x3):
    the sum over tiles of the (m + 2)^2 products Z[xi] (Fg, Cg) = Y[xi] (Fg, tiles) @
    V[xi]^T of the transforms Y of dout and V of x, then dw = G^T Z G.

    Layers whose Z is small (few channels, many tiles: the first layers of a network)
    sum it over cache-sized blocks of samples (`_winograd_dw_blocked`); the others
    transform a large part of the batch and run each product over all its tiles at once
    (`_winograd_dw_long`). Either way the result does not depend on which thread took
    which piece of work."""
    F = dout.shape[1]
    Fg, Cg = F // G, x.shape[1] // G
    z_bytes = x.itemsize * (m + 2) ** 2 * Fg * Cg
    Z = _padded_slabs(x.dtype, (G,), Fg, Cg, (m + 2) ** 2)
    if z_bytes <= _WINOGRAD_DW_SMALL_Z:
        _winograd_dw_blocked(x, dout, G, pad, m, Z)
    else:
        _winograd_dw_long(x, dout, G, pad, m, Z)
    dw = np.empty(w_shape, dtype=x.dtype)
    _compiled.winograd_filters_backward(Z, dw, 0, m)
    return dw


def _winograd_dw_blocked(x, dout, G, pad, m, Z):
    """Z (G, (m + 2)^2, Fg, Cg) for a small Z: the batch in a fixed number of parts
    (`_WINOGRAD_DW_PARTS`, or one per worker if there are more), each with its own
    partial Z, summed in part order; a part walks its samples in blocks whose transforms
    fit `_WINOGRAD_DW_BLOCK` bytes, transforms a block and adds its products to the
    partial while the block is still in cache. Measured at batch 1024 (AMD EPYC, 2
    threads): dw of x (1024, 24, 31, 31), w (64, 24, 3, 3) 234 -> 172 ms, x (1024, 64,
    15, 15), w (256, 64, 3, 3) 300 -> 239 ms against `_winograd_dw_long`; with Z of
    256 x 256 channels (9.4 MB) or more the partials cost more than they save."""
    kern = _compiled
    N = x.shape[0]
    F, Ho, Wo = dout.shape[1:]
    Fg, Cg = F // G, x.shape[1] // G
    th, tw = -(-Ho // m), -(-Wo // m)
    TT, nslabs = th * tw, (m + 2) ** 2
    per_sample = x.itemsize * nslabs * TT * (Cg + Fg)
    nb = max(1, min(N, min(R.get_workspace_limit(), _WINOGRAD_DW_BLOCK) // per_sample))
    workers = R.workers_for(kern)
    parts = R.chunks_of(N, -(-N // max(_WINOGRAD_DW_PARTS, workers)))
    partial = np.empty((len(parts), G, nslabs, Fg, Cg), dtype=x.dtype)

    def part(i, n0, n1, nthreads):
        V, Y = _workspace_slab_pair(x.dtype, Cg, Fg, min(nb, n1 - n0) * TT, nslabs)
        block = np.empty((nslabs, Fg, Cg), dtype=x.dtype)
        for grp in range(G):
            for s0 in range(n0, n1, nb):
                s1 = min(n1, s0 + nb)
                v, y = V[:, :, : (s1 - s0) * TT], Y[:, :, : (s1 - s0) * TT]
                kern.winograd_input(x, v, s0, s1, grp * Cg, (grp + 1) * Cg, pad[0], pad[1], th, tw, nthreads, m)
                kern.winograd_dout(dout, y, s0, s1, grp * Fg, (grp + 1) * Fg, th, tw, nthreads, m)
                if s0 == n0:
                    np.matmul(y, v.transpose(0, 2, 1), out=partial[i, grp])
                else:
                    np.matmul(y, v.transpose(0, 2, 1), out=block)
                    partial[i, grp] += block

    R.run_chunks(parts, part, workers)
    Z[...] = R.sum_parts(partial)


def _winograd_dw_long(x, dout, G, pad, m, Z):
    """Z (G, (m + 2)^2, Fg, Cg) for a large Z: the transforms V and Y of as many samples
    as fit the workspace bound (usually the whole batch) are made first, chunk-parallel;
    then each thread takes whole xi slabs, so every product runs over all those tiles at
    once (long inner dimension, no per-chunk partials to add up). Batches beyond the
    bound are done in parts, added in order."""
    kern = _compiled
    N = x.shape[0]
    F, Ho, Wo = dout.shape[1:]
    Fg, Cg = F // G, x.shape[1] // G
    th, tw, chunks, workers = _winograd_plan(x, Cg, Fg, Ho, Wo, m)
    TT = th * tw
    nslabs = (m + 2) ** 2
    per_sample = x.itemsize * nslabs * TT * (Cg + Fg)
    ns = max(1, min(N, min(R.get_workspace_limit(), _WINOGRAD_DW_BYTES) // per_sample))
    slabs = R.split(nslabs, workers, 1)
    for s0 in range(0, N, ns):
        s1 = min(N, s0 + ns)
        V, Y = _workspace_slab_pair(x.dtype, Cg, Fg, (s1 - s0) * TT, nslabs)
        parts = [(max(a, s0), min(b, s1)) for a, b in chunks if a < s1 and b > s0]
        first = s0 == 0
        for grp in range(G):
            def transform(i, n0, n1, nthreads, grp=grp):
                cols = slice((n0 - s0) * TT, (n1 - s0) * TT)
                kern.winograd_input(x, V[:, :, cols], n0, n1, grp * Cg, (grp + 1) * Cg, pad[0], pad[1], th, tw,
                                    nthreads, m)
                kern.winograd_dout(dout, Y[:, :, cols], n0, n1, grp * Fg, (grp + 1) * Fg, th, tw, nthreads, m)

            def product(i, a, b, nthreads, grp=grp, first=first):
                if first:
                    np.matmul(Y[a:b], V[a:b].transpose(0, 2, 1), out=Z[grp, a:b])
                else:
                    Z[grp, a:b] += np.matmul(Y[a:b], V[a:b].transpose(0, 2, 1))

            R.run_chunks(parts, transform, workers)
            R.run_chunks(slabs, product, workers)


def _padded_slabs(dtype, lead, rows, cols, slabs):
    """An uninitialised array of shape lead + (slabs, rows, cols) whose (rows, cols)
    slabs are C-contiguous but 16 elements further apart than packed: the Winograd
    transforms touch all slabs per tile, and slabs a multiple of 4 KiB apart would
    all fall into the same L1 cache set (measured: 4x slower transforms)."""
    return _slabs_of(np.empty(tuple(lead) + (slabs, rows * cols + 16), dtype=dtype), rows, cols)


def _slabs_of(buf, rows, cols):
    """View (..., slabs, rows, cols) of buf (..., slabs, rows * cols + 16): the padded slabs."""
    return buf[..., : rows * cols].reshape(buf.shape[:-1] + (rows, cols))
