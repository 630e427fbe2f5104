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
    dw = np.empty((D, M), dtype=x2.dtype)
    workers = _workers(x2, N * D * M)
    d_parts = R.split(D, workers)
    if 4 * N <= M:
        # a small batch against a wide layer: dx^T (D, N) = w @ dout^T runs 1.3-3.5x
        # faster in OpenBLAS than dout @ w.T (measured above), worth the transposing copy
        doutT = np.ascontiguousarray(dout.T)
        dxT = np.empty((D, N), dtype=x2.dtype)
        tasks = [("dxT", d0, d1) for d0, d1 in d_parts]
    else:
        # otherwise dx row blocks directly: the (D, N) -> (N, D) copy alone took 22 ms
        # for D = 8192, N = 512 (a power-of-two stride defeats the cache), 3x the GEMMs
        dx = np.empty((N, D), dtype=x2.dtype)
        tasks = [("dx", n0, n1) for n0, n1 in R.split(N, workers)]
    tasks += [("dw", d0, d1) for d0, d1 in d_parts]

    def piece(i, _n0, _n1, nthreads):
        kind, s0, s1 = tasks[i]
        if kind == "dw":
            np.matmul(x2[:, s0:s1].T, dout, out=dw[s0:s1])
        elif kind == "dx":
            np.matmul(dout[s0:s1], w.T, out=dx[s0:s1])
        else:
            np.matmul(w[s0:s1], doutT, out=dxT[s0:s1])

    R.run_chunks([(0, 0)] * len(tasks), piece, workers)
    if tasks[0][0] == "dxT":
        dx = np.ascontiguousarray(dxT.T)
    return dx, dw, dout.sum(axis=0)
