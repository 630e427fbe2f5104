"""One training step of ThreeLayerConvNet: funkcije against PyTorch CPU.

The cs231n setting: batch 50 of 3x32x32 float32 images, 32 filters 7x7 (pad 3,
stride 1), ReLU, 2x2 max pool, affine 8192 -> 500, ReLU, affine 500 -> 10,
softmax cross-entropy, then one Adam update of every parameter (lr 1e-3, no
weight decay). funkcije's step is `ThreeLayerConvNet.loss` plus
`funkcije.optim.adam` on each parameter — what the Solver does per iteration;
PyTorch's is the same architecture as nn.Sequential with `torch.optim.Adam`.

Each side runs in its own worker process (numpy's OpenBLAS pool and torch's OpenMP
pool slow each other down in one process; docs/ARCHITECTURE.md, Speed). Rounds alternate
which side goes first; each worker reports the median of its timed steps, and the
figure is the median over rounds of funkcije-time / torch-time (< 1: funkcije is
faster). Every side gets the same thread count (--threads, default 2):
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS in the workers'
environment and torch.set_num_threads. The machine is shared, so before each round
the driver waits (up to --wait-idle seconds) for an idle CPU and reports how many
rounds started on one; the second column times forward + backward alone, which
separates the model from the update rule.

    python benchmarks/bench_train_step.py                 # the table
    python benchmarks/bench_train_step.py --write         # ... and its section of benchmarks/RESULTS.md
    python benchmarks/bench_train_step.py --rounds 9 --steps 30
    python benchmarks/bench_train_step.py --breakdown     # where funkcije's step spends its time
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
from pathlib import Path

from _common import blas_name, cpu_model, replace_section, worker_env  # benchmarks/_common.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- bench_train_step:begin -->", "<!-- bench_train_step:end -->"

BATCH, C, H, W = 50, 3, 32, 32
FILTERS, FILTER_SIZE, HIDDEN, CLASSES = 32, 7, 500, 10
LR = 1e-3


def _data(batch):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, C, H, W)).astype(np.float32)
    y = rng.integers(CLASSES, size=batch)
    return X, y


# ----------------------------------------------------------------------------- workers


def _time(fn, args):
    """Seconds per call of fn over args.steps calls after args.warmup untimed ones."""
    times, result = [], None
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        result = fn()
        t1 = time.perf_counter()
        if i >= args.warmup:
            times.append(t1 - t0)
    return times, result


def _worker_funkcije(args):
    import numpy as np

    from funkcije import fast_layers
    from funkcije.classifiers import ThreeLayerConvNet
    from funkcije.optim import adam

    X, y = _data(args.batch)
    model = ThreeLayerConvNet(num_filters=FILTERS, filter_size=FILTER_SIZE, hidden_dim=HIDDEN,
                              num_classes=CLASSES, weight_scale=1e-3, reg=0.0, dtype=np.float32, seed=0)
    configs = {k: {"learning_rate": LR} for k in model.params}

    def step():
        loss, grads = model.loss(X, y)
        for k, p in model.params.items():
            model.params[k], configs[k] = adam(p, grads[k], configs[k])
        return loss

    def fwd_bwd():
        return model.loss(X, y)[0]

    times, loss = _time(step, args)
    times_fb, _ = _time(fwd_bwd, args)
    out = {"side": "funkcije", "median_s": statistics.median(times), "min_s": min(times),
           "fwd_bwd_median_s": statistics.median(times_fb),
           "loss": float(loss), "implementation": fast_layers.IMPLEMENTATION}
    if args.breakdown:
        out["breakdown_ms"] = _breakdown(model, configs, X, y, args.steps)
    print(json.dumps(out))


def _breakdown(model, configs, X, y, steps):
    """Median milliseconds of each phase of funkcije's step, timed separately."""
    from funkcije import layer_utils as U
    from funkcije.layers import affine_backward, affine_forward, softmax_loss
    from funkcije.optim import adam

    p = model.params
    phases = {}

    def rec(name, t):
        phases.setdefault(name, []).append(1e3 * t)

    for _ in range(steps):
        t = time.perf_counter
        t0 = t()
        h1, c1 = U.conv_relu_pool_forward(X, p["W1"], p["b1"], model.conv_param, model.pool_param)
        t1 = t()
        h2, c2 = U.affine_relu_forward(h1, p["W2"], p["b2"])
        s, c3 = affine_forward(h2, p["W3"], p["b3"])
        loss, ds = softmax_loss(s, y)
        t2 = t()
        dh2, dW3, db3 = affine_backward(ds, c3)
        dh1, dW2, db2 = U.affine_relu_backward(dh2, c2)
        t3 = t()
        _ = U.conv_relu_pool_backward(dh1, c1, need_dx=False)
        t4 = t()
        _, grads = model.loss(X, y)
        t5 = t()
        for k in p:
            p[k], configs[k] = adam(p[k], grads[k], configs[k])
        t6 = t()
        rec("conv_relu_pool forward", t1 - t0)
        rec("affine layers + loss forward", t2 - t1)
        rec("affine layers backward", t3 - t2)
        rec("conv_relu_pool backward", t4 - t3)
        rec("model.loss total", t5 - t4)
        rec("adam (all params)", t6 - t5)
    return {k: round(statistics.median(v), 2) for k, v in phases.items()}


def _worker_torch(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    X_np, y_np = _data(args.batch)
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(C, FILTERS, FILTER_SIZE, padding=(FILTER_SIZE - 1) // 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(FILTERS * (H // 2) * (W // 2), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()
        return loss

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X), y)
        loss.backward()
        return loss

    times, loss = _time(step, args)
    times_fb, _ = _time(fwd_bwd, args)
    # PyTorch's fastest CPU Adam (one fused kernel, in place): a fair reader will ask
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    times_fused, _ = _time(step, args)
    print(json.dumps({"side": "torch", "median_s": statistics.median(times), "min_s": min(times),
                      "fwd_bwd_median_s": statistics.median(times_fb),
                      "fused_median_s": statistics.median(times_fused),
                      "loss": loss.item(), "torch": torch.__version__, "threads": torch.get_num_threads()}))


# ----------------------------------------------------------------------------- driver


def _run_worker(side, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--threads", str(args.threads)]
    if args.breakdown and side == "funkcije":
        cmd.append("--breakdown")
    res = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(args.threads, side))
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _machine():
    import numpy as np

    cpu = cpu_model()
    blas = blas_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas}


def _cpu_busy(interval=1.0):
    """Fraction of all CPU time spent busy over `interval` seconds (Linux /proc/stat);
    None where that is not available."""
    def sample():
        with open("/proc/stat") as f:
            vals = [float(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
        return sum(vals) - idle, idle

    try:
        b0, i0 = sample()
        time.sleep(interval)
        b1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = (b1 - b0) + (i1 - i0)
    return (b1 - b0) / total if total > 0 else 0.0


def _wait_idle(max_wait, threshold=0.10):
    """Wait up to max_wait seconds for the machine to be idle (other engineers' jobs
    share it); returns the busy fraction last seen (None: unknown)."""
    end = time.monotonic() + max_wait
    busy = _cpu_busy() if max_wait > 0 else None
    while busy is not None and busy > threshold and time.monotonic() < end:
        busy = _cpu_busy()
    return busy


def _load():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per worker (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per worker (default 3)")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of funkcije's step")
    ap.add_argument("--wait-idle", type=float, default=60.0, metavar="SECONDS",
                    help="before each round wait up to this long for an idle CPU (default 60; 0: don't)")
    ap.add_argument("--json", metavar="FILE", help="write the raw results to FILE")
    ap.add_argument("--write", nargs="?", const=str(RESULTS), default=None, metavar="PATH",
                    help="write the table into its section of PATH (default benchmarks/RESULTS.md)")
    ap.add_argument("--worker", choices=["funkcije", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker == "funkcije":
        return _worker_funkcije(args)
    if args.worker == "torch":
        return _worker_torch(args)

    machine = _machine()
    t_start = time.time()
    load_before = _load()
    rounds = []
    for r in range(args.rounds):
        order = ("funkcije", "torch") if r % 2 == 0 else ("torch", "funkcije")
        busy = _wait_idle(args.wait_idle)
        res = {side: _run_worker(side, args) for side in order}
        ratio = res["funkcije"]["median_s"] / res["torch"]["median_s"]
        ratio_fb = res["funkcije"]["fwd_bwd_median_s"] / res["torch"]["fwd_bwd_median_s"]
        ratio_fused = res["funkcije"]["median_s"] / res["torch"]["fused_median_s"]
        rounds.append({"funkcije": res["funkcije"], "torch": res["torch"], "ratio": ratio, "ratio_fwd_bwd": ratio_fb,
                       "ratio_fused": ratio_fused, "busy_at_start": busy, "first": order[0]})
        busy_s = "?" if busy is None else f"{100 * busy:.0f}%"
        print(f"round {r + 1}/{args.rounds} ({order[0]} first, CPU busy {busy_s} at start): "
              f"step funkcije {1e3 * res['funkcije']['median_s']:.1f} ms, "
              f"torch {1e3 * res['torch']['median_s']:.1f} ms, ratio {ratio:.3f}; fwd+bwd ratio {ratio_fb:.3f}; "
              f"vs fused Adam {ratio_fused:.3f}",
              flush=True)
    load_after = _load()

    f_ms = statistics.median(1e3 * r["funkcije"]["median_s"] for r in rounds)
    t_ms = statistics.median(1e3 * r["torch"]["median_s"] for r in rounds)
    ratio = statistics.median(r["ratio"] for r in rounds)
    f_fb = statistics.median(1e3 * r["funkcije"]["fwd_bwd_median_s"] for r in rounds)
    t_fb = statistics.median(1e3 * r["torch"]["fwd_bwd_median_s"] for r in rounds)
    ratio_fb = statistics.median(r["ratio_fwd_bwd"] for r in rounds)
    t_fused = statistics.median(1e3 * r["torch"]["fused_median_s"] for r in rounds)
    ratio_fused = statistics.median(r["ratio_fused"] for r in rounds)
    torch_info = rounds[0]["torch"]
    idle = sum(1 for r in rounds if r["busy_at_start"] is not None and r["busy_at_start"] <= 0.10)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start))
    defaults = {"rounds": 7, "steps": 20, "warmup": 3, "batch": BATCH, "threads": 2, "wait_idle": 60.0}
    opts = "".join(f" --{k.replace('_', '-')} {getattr(args, k):g}" for k, v in defaults.items()
                   if getattr(args, k) != v)
    cmd = f"python benchmarks/bench_train_step.py{opts}{' --breakdown' if args.breakdown else ''}"

    def fmt_load(v):
        return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"

    lines = [
        "## Training step: ThreeLayerConvNet vs PyTorch",
        "",
        f"Generated {started} by `{cmd}`.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, numpy "
        f"{machine['numpy']} ({machine['blas']}), torch {torch_info['torch']}; funkcije kernels: "
        f"{rounds[0]['funkcije']['implementation']}. Threads per side: {args.threads}. Load average "
        f"(1, 5, 15 min) before {fmt_load(load_before)}, after {fmt_load(load_after)}; {idle} of "
        f"{args.rounds} rounds started on an idle CPU (<= 10% busy over 1 s).",
        "",
        f"One step: batch {args.batch} of 3x32x32 float32, conv 32x7x7 pad 3 - ReLU - 2x2 max pool - "
        "affine 8192x500 - ReLU - affine 500x10 - softmax cross-entropy, backward, Adam (lr 1e-3) on every "
        "parameter. funkcije: `ThreeLayerConvNet(hidden_dim=500).loss` + `funkcije.optim.adam`; PyTorch: "
        "the same nn.Sequential + `torch.optim.Adam` (its default; the fused=True variant, PyTorch's fastest "
        "CPU Adam, is timed too). Each side in its own process; rounds alternate "
        f"which goes first; a side's time in a round is the median of {args.steps} steps after "
        f"{args.warmup} warm-ups; the ratio is the median over {args.rounds} rounds of per-round ratios.",
        "",
        "| ThreeLayerConvNet, batch 50 | fwd + bwd + Adam (ms) | fwd + bwd only (ms) |",
        "| --- | --- | --- |",
        f"| funkcije | {f_ms:.1f} | {f_fb:.1f} |",
        f"| PyTorch {torch_info['torch']} | {t_ms:.1f} | {t_fb:.1f} |",
        f"| **funkcije / PyTorch** (median of per-round ratios) | **{ratio:.2f}** | **{ratio_fb:.2f}** |",
        f"| PyTorch, `Adam(fused=True)` | {t_fused:.1f} | |",
        f"| funkcije / PyTorch with fused Adam | {ratio_fused:.2f} | |",
        "",
        "<details><summary>rounds</summary>",
        "",
        "| round | first | CPU busy at start | funkcije step (ms) | PyTorch step (ms) | ratio | fwd+bwd ratio "
        "| PyTorch fused-Adam step (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rounds):
        busy = "?" if r["busy_at_start"] is None else f"{100 * r['busy_at_start']:.0f}%"
        lines.append(f"| {i + 1} | {r['first']} | {busy} | {1e3 * r['funkcije']['median_s']:.1f} | "
                     f"{1e3 * r['torch']['median_s']:.1f} | {r['ratio']:.2f} | {r['ratio_fwd_bwd']:.2f} | "
                     f"{1e3 * r['torch']['fused_median_s']:.1f} |")
    lines += ["", "</details>"]
    if args.breakdown:
        keys = list(rounds[0]["funkcije"]["breakdown_ms"])
        lines += ["", "funkcije's step by phase (ms, median over rounds; each phase timed on its own):", "",
                  "| phase | ms |", "| --- | --- |"]
        for k in keys:
            v = statistics.median(r["funkcije"]["breakdown_ms"][k] for r in rounds)
            lines.append(f"| {k} | {v:.1f} |")
    text = "\n".join(lines)
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "load_before": load_before, "load_after": load_after,
                       "args": vars(args), "rounds": rounds, "median_ratio": ratio,
                       "median_ratio_fwd_bwd": ratio_fb}, f, indent=1)
    if args.write:
        _write_results(args.write, text)
        print(f"\nwritten to {args.write}")
    return 0


def _write_results(path, text):
    replace_section(path, BEGIN, END, text)


if __name__ == "__main__":
    sys.exit(main())
