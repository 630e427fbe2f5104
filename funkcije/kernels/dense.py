"""Affine layers' GEMMs, split over the engine's threads.

The affine layers are single GEMMs, which numpy would hand to OpenBLAS's own thread
team. After such a call OpenBLAS's workers keep spinning (with sched_yield) for about
0.1 s, and the convolution or kernel that follows fights them for the two cores:
measured on ThreeLayerConvNet's layers, an 8192x500 affine forward (3.3 ms) followed
by the first conv forward (7.4 ms) took 22.8 ms together. Splitting the GEMM over
the conv threads with BLAS held at one thread keeps OpenBLAS's team asleep: 11.2 ms.
It also helps the products themselves: dout @ w.T for (50, 500) x (500, 8192) took
23 ms on OpenBLAS's two threads and 6.5 ms as w @ dout.T split in two.
"""
from __future__ import annotations

import numpy as np

from . import runtime as R

# below this many multiply-adds one thread does the whole product (OpenBLAS itself
# stays on one thread below 4 * 65536)
SPLIT_MIN = 1 << 18


def _workers(x, work: int) -> int:
    if work < SPLIT_MIN or x.dtype not in R.FAST_DTYPES:
        return 1
    return R.workers_for(R.kernels_for(x.dtype))


def forward(x2, w, b):
    """x2 (N, D) @ w (D, M) + b (M,) -> out (N, M)."""
    N, D = x2.shape
    M = w.shape[1]
    out = np.empty((N, M), dtype=x2.dtype)
    workers = _workers(x2, N * D * M)

    def piece(i, m0, m1, nthreads):
        np.matmul(x2, w[:, m0:m1], out=out[:, m0:m1])

    R.run_chunks(R.split(M, workers), piece, workers)
    out += b
    return out


def backward(x2, w, dout):
    """(dx (N, D), dw (D, M), db (M,)) of out = x2 @ w + b; dout (N, M)."""
    N, D = x2.shape
    M = w.shape[1]
    doutT = np.ascontiguousarray(dout.T)
    dw = np.empty((D, M), dtype=x2.dtype)
    # dx^T (D, N) = w @ dout^T: the (D, M) x (M, N) orientation runs 1.3-3.5x faster
    # in OpenBLAS than dout @ w.T when N is a small batch (measured above)
    dxT = np.empty((D, N), dtype=x2.dtype)
    workers = _workers(x2, N * D * M)

    def piece(i, d0, d1, nthreads):
        # each thread owns rows [d0, d1) of w, dw and dx^T
        np.matmul(x2[:, d0:d1].T, dout, out=dw[d0:d1])
        np.matmul(w[d0:d1], doutT, out=dxT[d0:d1])

    R.run_chunks(R.split(D, workers), piece, workers)
    return np.ascontiguousarray(dxT.T), dw, dout.sum(axis=0)
