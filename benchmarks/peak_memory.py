"""Peak memory of one fast convolution forward + backward on a large batch.

x (256, 3, 224, 224) float32, w (64, 3, 7, 7), stride 2, pad 3 (an ImageNet-style
first layer): the column matrix for the whole batch would be 147 x 3.2M floats
(1.9 GB), so this checks that the chunked workspace keeps memory at
inputs + outputs + gradients + the workspace bound.

Runs the measurement in a fresh process and reports its peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) beside the arrays' theoretical sizes.
Needs about 2.5 GB of RAM with the default 256 MiB bound.

    python benchmarks/peak_memory.py [--impl cython|numpy] [--workspace-mb MB] [--write]

--write puts the result into the layer section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import replace_section  # benchmarks/_common.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- peak_memory:begin -->", "<!-- peak_memory:end -->"

X_SHAPE = (256, 3, 224, 224)
W_SHAPE = (64, 3, 7, 7)
PARAM = {"stride": 2, "pad": 3}
MiB = 2**20


def _maxrss_bytes():
    # Linux reports kilobytes, macOS bytes
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def worker(impl):
    import numpy as np

    from funkcije import fast_layers as FL

    FL.use_implementation(impl)
    baseline = _maxrss_bytes()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE, dtype=np.float32)
    w = rng.standard_normal(W_SHAPE, dtype=np.float32) * np.float32(0.05)
    b = np.zeros(W_SHAPE[0], dtype=np.float32)
    t0 = time.perf_counter()
    out, cache = FL.conv_forward_fast(x, w, b, PARAM)
    t1 = time.perf_counter()
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    t2 = time.perf_counter()
    dx, dw, db = FL.conv_backward_fast(dout, cache)
    t3 = time.perf_counter()
    peak = _maxrss_bytes()
    arrays = {"x": x, "w": w, "b": b, "out": out, "dout": dout, "dx": dx, "dw": dw, "db": db}
    print(json.dumps({
        "implementation": FL.IMPLEMENTATION,
        "workspace_bound": FL.get_workspace_limit(),
        "baseline": baseline,
        "peak": peak,
        "arrays": {k: int(v.nbytes) for k, v in arrays.items()},
        "out_shape": list(out.shape),
        "forward_s": t1 - t0,
        "backward_s": t3 - t2,
    }))


def report(r):
    arrays = sum(r["arrays"].values())
    extra = r["peak"] - r["baseline"] - arrays
    lines = [
        "### Peak memory: conv forward + backward on a large batch",
        "",
        f"x {X_SHAPE} float32, w {W_SHAPE}, stride 2, pad 3 -> out {tuple(r['out_shape'])}; "
        f"implementation `{r['implementation']}`; measured in a fresh process by "
        f"`python benchmarks/peak_memory.py --write`.",
        "",
        "| quantity | MiB |",
        "|---|---|",
        f"| x + w + b (inputs) | {(r['arrays']['x'] + r['arrays']['w'] + r['arrays']['b']) / MiB:.0f} |",
        f"| out (output) | {r['arrays']['out'] / MiB:.0f} |",
        f"| dout (upstream gradient) | {r['arrays']['dout'] / MiB:.0f} |",
        f"| dx + dw + db (gradients) | {(r['arrays']['dx'] + r['arrays']['dw'] + r['arrays']['db']) / MiB:.0f} |",
        f"| sum of the arrays | {arrays / MiB:.0f} |",
        f"| workspace bound | {r['workspace_bound'] / MiB:.0f} |",
        f"| process RSS before allocating (interpreter, numpy, funkcije) | {r['baseline'] / MiB:.0f} |",
        f"| **peak RSS (ru_maxrss)** | **{r['peak'] / MiB:.0f}** |",
        f"| peak - before - arrays (workspace and temporaries) | {extra / MiB:.0f} |",
        "",
        f"The column matrix of the whole batch would take "
        f"{147 * r['out_shape'][0] * r['out_shape'][2] * r['out_shape'][3] * 4 / MiB:.0f} MiB; "
        f"forward {r['forward_s']:.2f} s, backward {r['backward_s']:.2f} s.",
    ]
    return "\n".join(lines)


def write_results(path, text):
    replace_section(path, BEGIN, END, text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["cython", "numpy"], default=None,
                    help="implementation to measure (default: the active one)")
    ap.add_argument("--workspace-mb", type=float, default=None, help="workspace bound in MiB (default 256)")
    ap.add_argument("--write", nargs="?", const=str(RESULTS), default=None, metavar="PATH")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.impl)
        return 0
    if args.impl is None:
        from funkcije import fast_layers as FL

        args.impl = FL.IMPLEMENTATION
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if args.workspace_mb is not None:
        env["FUNKCIJE_WORKSPACE_MB"] = str(args.workspace_mb)
    res = subprocess.run([sys.executable, __file__, "--worker", "--impl", args.impl],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        return res.returncode
    r = json.loads(res.stdout.strip().splitlines()[-1])
    text = report(r)
    print(text)
    if args.write:
        write_results(args.write, text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
