"""Inference (forward only) of the model zoo and ThreeLayerConvNet: funkcije against
PyTorch CPU, from one image to a batch of 128.

funkcije: `model.loss(X)` (no labels: scores; batch norm on its running statistics);
PyTorch: the twin with the same weights (`funkcije.torch_twin.to_torch`) in eval mode
under `torch.inference_mode()`. Each side runs in its own process (numpy's OpenBLAS and
torch's OpenMP slow each other down in one); rounds alternate which side goes first; a
side's time in a round is the median of --steps calls after --warmup; the ratio is the
median over rounds of per-round ratios. The first call's scores of both sides are
compared, so a twin that computes something else is reported.

    python benchmarks/bench_inference.py --quick        # does the script work
    python benchmarks/bench_inference.py --write        # the table, into its section of RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import bench_models as BM  # benchmarks/bench_models.py: the cases' models, data and twins
from _common import RESULTS, replace_section, worker_env
from bench_train_step import _load, _wait_idle

BEGIN, END = "<!-- bench_inference:begin -->", "<!-- bench_inference:end -->"
MODELS = ("fer_mnist", "fer_cifar", "vgg7", "vgg7bn", "resnet9", "fast_cifar", "tlc")
BATCHES = (1, 8, 128)


def _cases(models, batches, width):
    return [{"model": m, "batch": b, "hidden": 100 if m == "tlc" else None, "opt": "sgd",
             "width": width if m in BM.WIDTHED else 1.0} for m in models for b in batches]


def _worker(args):
    case = json.loads(args.case)
    import numpy as np

    X_np, _ = BM._data(case)
    if args.worker == "torch":
        import torch

        torch.set_num_threads(args.threads)
        from funkcije.torch_twin import to_torch

        model = BM._funkcije_model(case)
        twin = (BM._tlc_twin(model) if case["model"] == "tlc" else to_torch(model)).eval()
        X = torch.from_numpy(X_np)

        def call():
            with torch.inference_mode():
                return twin(X).numpy()
    else:
        model = BM._funkcije_model(case)

        def call():
            return model.loss(X_np)

    first = np.asarray(call(), dtype=np.float64)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        call()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "scores": first.ravel()[:64].tolist(),
                      "scale": float(np.abs(first).max())}))


def _run_worker(side, case, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--case", json.dumps(case),
           "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(args.threads, side))
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed on {case}:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _run_case(case, args):
    rounds = []
    for r in range(args.rounds):
        order = ("funkcije", "torch") if r % 2 == 0 else ("torch", "funkcije")
        busy = _wait_idle(args.wait_idle)
        res = {side: _run_worker(side, case, args) for side in order}
        rounds.append({"funkcije": res["funkcije"]["median_s"], "torch": res["torch"]["median_s"],
                       "ratio": res["funkcije"]["median_s"] / res["torch"]["median_s"], "busy": busy})
    f, t = res["funkcije"], res["torch"]
    diff = max(abs(a - b) for a, b in zip(f["scores"], t["scores"])) / max(f["scale"], 1e-30)
    out = {"case": case, "label": BM._case_label(case), "rounds": rounds, "scores_rel_diff": diff,
           "funkcije_ms": 1e3 * statistics.median(x["funkcije"] for x in rounds),
           "torch_ms": 1e3 * statistics.median(x["torch"] for x in rounds),
           "ratio": statistics.median(x["ratio"] for x in rounds)}
    print(f"{out['label']}, batch {case['batch']}: funkcije {out['funkcije_ms']:.2f} ms, torch "
          f"{out['torch_ms']:.2f} ms, ratio {out['ratio']:.3f}, scores differ by {diff:.1e} of their scale",
          flush=True)
    return out


def _command(args):
    parts = ["python benchmarks/bench_inference.py"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts.append("--only " + " ".join(args.only))
    if args.batch:
        parts.append("--batch " + " ".join(map(str, args.batch)))
    if not args.quick:
        for k, default in (("rounds", 3), ("steps", 10), ("warmup", 3), ("threads", 2)):
            if getattr(args, k) != default:
                parts.append(f"--{k} {getattr(args, k)}")
    return " ".join(parts)


def _report(results, args, machine, started, load_before, load_after):
    def fmt_load(v):
        return "(" + ", ".join(f"{x:.2f}" for x in v) + ")" if v else "unknown"

    idle = sum(1 for r in results for x in r["rounds"] if x["busy"] is not None and x["busy"] <= 0.10)
    n_rounds = sum(len(r["rounds"]) for r in results)
    lines = [
        "## Inference: forward only (bench_inference.py)", "",
        f"Generated {started} by `{_command(args)}`.", "",
        f"Machine: {machine['cpu']} ({'AVX-512F' if machine['avx512f'] else 'no AVX-512F'}), "
        f"{machine['cores']} logical cores; Python {machine['python']}, numpy {machine['numpy']} "
        f"({machine['blas']}); {args.threads} threads per side. Load average before "
        f"{fmt_load(load_before)}, after {fmt_load(load_after)}; {idle} of {n_rounds} rounds started on an idle CPU.", "",
        "funkcije `model.loss(X)` (scores) against the PyTorch twin in eval mode under "
        "`torch.inference_mode()`, float32, synthetic images; each side in its own process, "
        f"{args.rounds} rounds alternating which goes first, a round's time the median of "
        f"{args.steps} calls after {args.warmup}; the ratio is the median of the per-round ratios "
        "(< 1: funkcije faster). \"scores\": the largest difference of the first call's scores, "
        "relative to their largest magnitude.", "",
        "| model | batch | funkcije (ms) | PyTorch (ms) | **funkcije / PyTorch** | scores |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['label']} | {r['case']['batch']} | {r['funkcije_ms']:.2f} | {r['torch_ms']:.2f} | "
                     f"**{r['ratio']:.2f}** | {r['scores_rel_diff']:.0e} |")
    gm = math.exp(statistics.mean(math.log(r["ratio"]) for r in results))
    lines += ["", f"Geometric mean of funkcije / PyTorch: **{gm:.2f}**; worst **{max(r['ratio'] for r in results):.2f}**."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=MODELS, metavar="MODEL", help=f"models (default all: {' '.join(MODELS)})")
    ap.add_argument("--batch", nargs="+", type=int, metavar="N", help="batch sizes (default 1 8 128)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-idle", type=float, default=10.0, help="seconds to wait for an idle CPU per round")
    ap.add_argument("--quick", action="store_true", help="width 1/8, batch 2, one round of 2 calls")
    ap.add_argument("--json", metavar="FILE", help="write the raw results to FILE")
    ap.add_argument("--write", nargs="?", const=str(RESULTS), default=None, metavar="PATH",
                    help="write the table into its section of PATH (default benchmarks/RESULTS.md)")
    ap.add_argument("--worker", choices=["funkcije", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    if min(args.rounds, args.steps, args.threads) < 1 or args.warmup < 0 or min(args.batch or [1]) < 1:
        ap.error("--rounds, --steps, --threads and --batch must be >= 1, --warmup >= 0")
    if args.quick:
        if args.write and os.path.realpath(args.write) == os.path.realpath(RESULTS):
            ap.error("--quick does not write benchmarks/RESULTS.md")
        args.rounds, args.steps, args.warmup, args.wait_idle = 1, 2, 1, 0.0
    cases = _cases(args.only or MODELS, args.batch or ((2,) if args.quick else BATCHES), 1 / 8 if args.quick else 1.0)
    machine = BM._machine()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = _load()
    results = [_run_case(c, args) for c in cases]
    text = _report(results, args, machine, started, load_before, _load())
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=1)
    if args.write:
        replace_section(args.write, BEGIN, END, text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
