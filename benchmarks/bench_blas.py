"""numpy's float32 GEMM speed on this machine, per thread count: what the im2col and
Winograd products of the fast convolution can reach, and a check of which OpenBLAS
kernels numpy runs (the machine line names them).

    python benchmarks/bench_blas.py                                   # the environment's kernels
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_blas.py   # OpenBLAS's own choice

Prints GFLOP/s (2 M K N per product), the median of 5 timed batches of products after 3
warm-ups. The kernels are chosen when numpy loads, so compare settings in separate runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import blas_name, cpu_model  # noqa: E402  (benchmarks/_common.py)

SHAPES = ((2048, 2048, 2048), (256, 256, 2048), (64, 64, 4096), (512, 256, 512))


def gflops(m: int, k: int, n: int, threads: int, rng) -> float:
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    reps = max(3, int(4e9 / (2 * m * k * n)))  # about 4 GFLOP per timed batch
    with threadpool_limits(threads, user_api="blas"):
        for _ in range(3):
            a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            times.append((time.perf_counter() - t0) / reps)
    return 2 * m * k * n / float(np.median(times)) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts (default 1 2)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{cpu_model()}; numpy {np.__version__} ({blas_name()})")
    print("| threads | " + " | ".join(f"{m} x {k} x {n}" for m, k, n in SHAPES) + " |")
    print("|---|" + "---|" * len(SHAPES))
    for t in args.threads:
        row = " | ".join(f"{gflops(m, k, n, t, rng):.0f}" for m, k, n in SHAPES)
        print(f"| {t} | {row} |")
    print("GFLOP/s, float32, M x K x N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
