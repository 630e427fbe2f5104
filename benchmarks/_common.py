"""Helpers shared by the benchmark scripts: the machine description and the
results file, in which each script owns one marked section."""
from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parent.parent


def worker_env(threads: int, side: str, torch_keep_heap: bool = False) -> dict:
    """The environment of a benchmark worker process: `threads` for every thread pool,
    the working tree's funkcije on the path, the compiled kernels allowed. A PyTorch
    worker also imports funkcije (for the twin and the data), which would set glibc's
    heap thresholds for it too (kernels/runtime.py); FUNKCIJE_KEEP_HEAP=0 there keeps
    PyTorch at malloc's defaults, as its users run it, unless torch_keep_heap."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.pop("FUNKCIJE_FORCE_NUMPY", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if side == "torch" and not torch_keep_heap:
        env["FUNKCIJE_KEEP_HEAP"] = "0"
    return env


def replace_section(path, begin: str, end: str, text: str) -> None:
    """Write `text` between the markers `begin` and `end` of the results file,
    leaving the other scripts' sections alone (appended if the markers are absent)."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def cpu_model() -> str:
    """The CPU's model name, family and model (funkcije.backend.device_name)."""
    from funkcije.backend import device_name

    return device_name("cpu")


def blas_name() -> str:
    """numpy's BLAS library and version, as numpy reports them, and the kernels it runs."""
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{cfg.get('name', '?')} {cfg.get('version', '')}".strip()
    except Exception:  # show_config's layout differs between numpy versions
        name = "unknown BLAS"
    from funkcije.kernels.runtime import blas_kernels

    kernels = blas_kernels()
    return f"{name}, kernels {kernels}" if kernels else name
