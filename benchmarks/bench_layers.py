"""Time convolution and max-pool (forward + backward, float32): the reference layers,
funkcije's fast layers, and PyTorch CPU when it is installed.

Each side runs in its own fresh process (numpy's OpenBLAS pool and torch's OpenMP pool
slow each other down inside one process), with the same thread count for every side
(OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, torch.set_num_threads). Rounds alternate the
order of the sides; a round's time for a side is the median of its repetitions, and
the reported ratio is the median over rounds of the per-round ratios.

The reference convolution loops in Python over output positions and takes up to a
minute on the larger cases, so it is timed once per case (one repetition, full batch,
in the first round only); its time scales worse than linearly with the batch, so a
subset would not be representative.

Regenerate the table (writes the layer section of benchmarks/RESULTS.md):

    python benchmarks/bench_layers.py --write

Options: --rounds R (default 5), --threads T (default 2), --no-reference,
--only conv|pool, --write [PATH]. Run it on a quiet machine; the load average before
and after is recorded with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from math import exp, log
from pathlib import Path

from _common import blas_name, cpu_model, replace_section, worker_env  # benchmarks/_common.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- bench_layers:begin -->", "<!-- bench_layers:end -->"

# (x shape, w shape, stride, pad)
CONV_CASES = [
    ((100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    ((50, 3, 32, 32), (32, 3, 7, 7), 1, 3),
    ((64, 64, 32, 32), (128, 64, 3, 3), 1, 1),
    ((64, 256, 8, 8), (512, 256, 3, 3), 1, 1),
    ((50, 1, 28, 28), (16, 1, 5, 5), 1, 2),
    ((50, 16, 14, 14), (32, 16, 5, 5), 1, 2),
]
# (x shape, window, stride)
POOL_CASES = [
    ((100, 3, 32, 32), 2, 2),
    ((50, 32, 32, 32), 2, 2),
    ((50, 16, 28, 28), 3, 2),
]
WARMUPS = 5
TARGETS = {
    "conv": {"geomean": 1.0, "worst": 1.5},
    "pool": {"geomean": 0.5, "worst": 1.0},
}


# ----------------------------------------------------------------------------- worker side


def _inputs(kind, case):
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "conv":
        xs, ws, stride, pad = CONV_CASES[case]
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * np.float32(0.1)
        b = rng.standard_normal(ws[0], dtype=np.float32)
        return (x, w, b), {"stride": stride, "pad": pad}
    xs, k, stride = POOL_CASES[case]
    x = rng.standard_normal(xs, dtype=np.float32)
    return (x,), {"pool_height": k, "pool_width": k, "stride": stride}


def _step_numpy(kind, side, arrays, param):
    """A closure running forward + backward once, with a fixed upstream gradient."""
    import numpy as np

    if side == "fast":
        from funkcije import fast_layers as mod

        suffix = "fast"
    else:
        from funkcije import layers as mod

        suffix = "naive"
    if kind == "conv":
        fwd, bwd = getattr(mod, f"conv_forward_{suffix}"), getattr(mod, f"conv_backward_{suffix}")
    else:
        fwd, bwd = getattr(mod, f"max_pool_forward_{suffix}"), getattr(mod, f"max_pool_backward_{suffix}")
    out, _ = fwd(*arrays, param)
    dout = np.random.default_rng(1).standard_normal(out.shape, dtype=np.float32)

    def step():
        _, cache = fwd(*arrays, param)
        return bwd(dout, cache)

    info = {}
    if side == "fast":
        info = {"implementation": mod.IMPLEMENTATION}
    return step, info


def _step_torch(kind, arrays, param, threads):
    import torch

    torch.set_num_threads(threads)
    t = [torch.from_numpy(a.copy()).requires_grad_(True) for a in arrays]
    if kind == "conv":
        def fwd():
            return torch.nn.functional.conv2d(t[0], t[1], t[2], stride=param["stride"], padding=param["pad"])
    else:
        k = (param["pool_height"], param["pool_width"])

        def fwd():
            return torch.nn.functional.max_pool2d(t[0], k, param["stride"])

    import numpy as np

    out = fwd()
    dout = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(out.shape), dtype=np.float32))

    def step():
        for a in t:
            a.grad = None
        fwd().backward(dout)

    return step, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def worker(kind, side, case, reps, threads):
    arrays, param = _inputs(kind, case)
    if side == "torch":
        step, info = _step_torch(kind, arrays, param, threads)
    else:
        step, info = _step_numpy(kind, side, arrays, param)
    # 5 warm-ups: a fresh process's first steps pay for page faults until glibc's
    # allocator has adapted to the step's array sizes (measured: 2233, 876, 625, 343, 0
    # faults in the first five steps of x (100, 3, 31, 31); PyTorch's first step takes
    # 0.3-0.5 s), and the table is about steady-state steps, as in training
    warm = 0 if side == "reference" and kind == "conv" else WARMUPS
    for _ in range(warm):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, **info}))


# ----------------------------------------------------------------------------- driver side


def run_side(kind, side, case, reps, threads):
    cmd = [sys.executable, __file__, "--worker", side, "--kind", kind, "--case", str(case),
           "--reps", str(reps), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(threads, side))
    if res.returncode != 0:
        raise RuntimeError(f"worker {side} {kind} case {case} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _reps(kind, side, case):
    if side == "reference":
        return 1 if kind == "conv" else 3
    return 5 if kind == "conv" else 20


def _loadavg():
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def machine():
    import numpy

    cpu = cpu_model()
    blas = blas_name()
    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "not installed"
    try:
        from funkcije.kernels import _compiled as im2col_cython

        ext = "built, OpenMP " + ("on" if im2col_cython.openmp_enabled() else "off")
    except ImportError:
        ext = "not built (NumPy fallback)"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "blas": blas,
        "torch": torch_v,
        "extension": ext,
        "os": f"{platform.system()} {platform.release()}",
    }


def bench(kind, rounds, threads, with_reference, with_torch, log_fn):
    cases = CONV_CASES if kind == "conv" else POOL_CASES
    rows = []
    for case in range(len(cases)):
        sides = ["fast"] + (["torch"] if with_torch else [])
        per_round = {s: [] for s in sides}
        ref_time = None
        impl = None
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            if with_reference and (r == 0 or kind == "pool"):
                order = order + ["reference"]
            for side in order:
                res = run_side(kind, side, case, _reps(kind, side, case), threads)
                t = statistics.median(res["times"])
                if side == "reference":
                    ref_time = t if ref_time is None else min(ref_time, t)
                else:
                    per_round[side].append(t)
                impl = res.get("implementation", impl)
        fast = statistics.median(per_round["fast"])
        row = {"case": cases[case], "fast": fast, "implementation": impl, "reference": ref_time}
        if with_torch:
            row["torch"] = statistics.median(per_round["torch"])
            row["ratio"] = statistics.median(f / t for f, t in zip(per_round["fast"], per_round["torch"]))
        if ref_time is not None:
            row["speedup"] = ref_time / fast
        rows.append(row)
        log_fn(_row_text(kind, row))
    return rows


def _case_text(kind, case):
    if kind == "conv":
        xs, ws, s, p = case
        return f"x {xs}, w {ws}, stride {s}, pad {p}"
    xs, k, s = case
    return f"x {xs}, {k}x{k} window, stride {s}"


def _ms(t):
    return "—" if t is None else f"{1e3 * t:.2f}"


def _row_text(kind, row):
    parts = [_case_text(kind, row["case"]), f"fast {_ms(row['fast'])} ms"]
    if "torch" in row:
        parts.append(f"torch {_ms(row['torch'])} ms, fast/torch {row['ratio']:.2f}")
    if row.get("reference") is not None:
        parts.append(f"reference {_ms(row['reference'])} ms, speedup {row['speedup']:.0f}x")
    return "; ".join(parts)


def _geomean(values):
    values = list(values)
    return exp(sum(log(v) for v in values) / len(values)) if values else float("nan")


def table(kind, rows):
    title = "Convolution" if kind == "conv" else "Max-pool"
    has_torch = all("torch" in r for r in rows)
    head = ["case", "reference (ms)", "fast (ms)"]
    if has_torch:
        head += ["PyTorch (ms)", "fast / PyTorch"]
    head += ["reference / fast"]
    lines = [f"### {title} (float32, forward + backward)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [_case_text(kind, r["case"]), _ms(r.get("reference")), _ms(r["fast"])]
        if has_torch:
            cells += [_ms(r["torch"]), f"{r['ratio']:.2f}"]
        cells.append("—" if r.get("speedup") is None else f"{r['speedup']:.0f}x")
        lines.append("| " + " | ".join(cells) + " |")
    summary = []
    if has_torch:
        ratios = [r["ratio"] for r in rows]
        tg = TARGETS[kind]
        gm, worst = _geomean(ratios), max(ratios)
        summary.append(
            f"Geometric mean of fast / PyTorch: **{gm:.2f}** (target <= {tg['geomean']}); "
            f"worst case **{worst:.2f}** (target <= {tg['worst']}) — "
            + ("both targets met." if gm <= tg["geomean"] and worst <= tg["worst"] else "target NOT met.")
        )
    speedups = [r["speedup"] for r in rows if r.get("speedup") is not None]
    if speedups:
        summary.append(f"Geometric-mean speedup of fast over reference: {_geomean(speedups):.0f}x.")
    return "\n".join(lines + [""] + summary)


def write_results(path, text):
    replace_section(path, BEGIN, END, text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["reference", "fast", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=["conv", "pool"], help=argparse.SUPPRESS)
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help="threads for every side (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case (default 5)")
    ap.add_argument("--only", choices=["conv", "pool"], help="run one kind of layer only")
    ap.add_argument("--no-reference", action="store_true", help="skip the slow reference layers")
    ap.add_argument("--write", nargs="?", const=str(RESULTS), default=None, metavar="PATH",
                    help=f"write the table into PATH (default {RESULTS.relative_to(REPO)})")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.kind, args.worker, args.case, args.reps, args.threads)
        return 0

    try:
        import torch  # noqa: F401

        with_torch = True
    except ImportError:
        with_torch = False
    info = machine()
    load_before = _loadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"machine: {info}", flush=True)
    print(f"load average before: {load_before}", flush=True)
    sections = []
    for kind in (["conv", "pool"] if args.only is None else [args.only]):
        rows = bench(kind, args.rounds, args.threads, not args.no_reference, with_torch,
                     lambda s: print(s, flush=True))
        sections.append(table(kind, rows))
    load_after = _loadavg()
    print(f"load average after: {load_after}", flush=True)
    cmd = "python benchmarks/bench_layers.py --write" + (
        f" --rounds {args.rounds}" if args.rounds != 5 else "") + (
        f" --threads {args.threads}" if args.threads != 2 else "") + (
        " --no-reference" if args.no_reference else "") + (f" --only {args.only}" if args.only else "")
    text = "\n".join([
        "## Layers: reference vs fast vs PyTorch",
        "",
        f"Generated {started} by `{cmd}`.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, numpy {info['numpy']} "
        f"({info['blas']}), torch {info['torch']}; funkcije extension {info['extension']}; {info['os']}. "
        f"Threads per side: {args.threads}. Load average (1, 5, 15 min) before {load_before}, after {load_after}.",
        "",
        f"Each side runs in its own process; {args.rounds} rounds alternate the order of fast and PyTorch; "
        f"a round's time is the median of 5 (conv) or 20 (pool) repetitions after {WARMUPS} warm-ups; "
        "fast / PyTorch is the median over rounds of the per-round ratio. The reference convolution is "
        "timed once (one forward + backward on the full batch, in the first round); the reference "
        "max-pool in every round (median of 3, best round).",
        "",
        *[s + "\n" for s in sections],
    ])
    print()
    print(text)
    if args.write:
        write_results(args.write, text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
