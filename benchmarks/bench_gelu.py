"""GELU, float32, forward and forward + backward: funkcije's fast pass, its reference
layer and PyTorch, each side in its own process (2 threads each by default).

    python benchmarks/bench_gelu.py [--write]      # --write: the GELU section of RESULTS.md

A side's time is the best of --repeat runs (the reference is slow: it runs --ref-repeat
times); x is (512, 64, 32, 14), 14.7 M elements of N(0, 9).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from _common import RESULTS, cpu_model, replace_section, worker_env  # benchmarks/_common.py

SHAPE = (512, 64, 32, 14)

_WORKER = r"""
import json, sys, time
import numpy as np
side, approximate, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = (np.random.default_rng(0).standard_normal(%r) * 3).astype(np.float32)
d = np.ones_like(x)


def best(f):
    t = []
    for _ in range(repeat):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return min(t)


if side == "torch":
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    xt, dt = torch.from_numpy(x), torch.from_numpy(d)
    xr = xt.clone().requires_grad_(True)
    fwd = best(lambda: torch.nn.functional.gelu(xt, approximate=approximate))
    both = best(lambda: torch.nn.functional.gelu(xr, approximate=approximate).backward(dt))
else:
    from funkcije import fast_layers as FL, layers as L
    f, b = (FL.gelu_forward_fast, FL.gelu_backward_fast) if side == "fast" else (L.gelu_forward, L.gelu_backward)
    fwd = best(lambda: f(x, approximate))
    both = best(lambda: b(d, f(x, approximate)[1]))
print(json.dumps({"fwd": fwd, "both": both}))
""" % (SHAPE,)


def run(side, approximate, repeat, threads):
    out = subprocess.run([sys.executable, "-c", _WORKER, side, approximate, str(repeat), str(threads)],
                         env=worker_env(threads, side), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--ref-repeat", type=int, default=1)
    p.add_argument("--write", action="store_true", help="write the GELU section of benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    rows = []
    for approximate in ("none", "tanh"):
        r = {side: run(side, approximate, args.ref_repeat if side == "reference" else args.repeat, args.threads)
             for side in ("fast", "torch", "reference")}
        rows.append((approximate, r))
    machine = (f"{cpu_model()}, {os.cpu_count()} logical cores, {args.threads} threads per side; "
               f"Python {platform.python_version()}")
    lines = ["## GELU (float32, 14.7 M elements)", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python benchmarks/bench_gelu.py "
             f"--write`. Machine: {machine}. Each side in its own process; best of {args.repeat} runs "
             f"(the reference: {args.ref_repeat}). Seconds.", "",
             "| form | fast fwd | fast fwd + bwd | PyTorch fwd | PyTorch fwd + bwd | reference fwd | "
             "reference fwd + bwd | fast / PyTorch (fwd + bwd) | reference / fast (fwd + bwd) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for approximate, r in rows:
        f, t, ref = r["fast"], r["torch"], r["reference"]
        lines.append(f"| {approximate} | {f['fwd']:.3f} | {f['both']:.3f} | {t['fwd']:.3f} | {t['both']:.3f} | "
                     f"{ref['fwd']:.2f} | {ref['both']:.2f} | {f['both'] / t['both']:.1f} | "
                     f"{ref['both'] / f['both']:.0f}x |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(RESULTS, "<!-- bench_gelu:begin -->", "<!-- bench_gelu:end -->", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
