"""Training steps of the model zoo and of ThreeLayerConvNet: funkcije against PyTorch CPU.

One step is forward, backward and the parameter update of every parameter. funkcije's
step is `model.loss(X, y)` plus one update rule call per parameter, each parameter with
its own config dict (what `funkcije.solver.Solver` does per iteration); PyTorch's is the
twin with the same architecture and weights (`funkcije.torch_twin.to_torch` for the zoo,
written out below for ThreeLayerConvNet), `F.cross_entropy`, `backward()` and the
matching `torch.optim` optimiser.

Cases (`--only` names; batches from `--batch`, default 128 and 512, plus 50 for tlc):

    fer_mnist fer_cifar vgg7 vgg7bn resnet9   SGD momentum 0.9, lr 0.01; inputs (1, 28, 28)
                                              for fer_mnist, (3, 32, 32) otherwise
    fast_cifar fast_cifar_gelu                FastCifarNet with ReLU / GELU (the fast recipes' network,
                                              its whitening fitted to the batch), SGD momentum 0.9,
                                              lr 0.01; default batches 512 and 1024 (the recipes')
    tlc  ThreeLayerConvNet (conv 32 7x7 pad 3 - ReLU - 2x2 max pool - affine - ReLU - affine 10);
         at batch 50 the two cs231n settings, hidden 100 with plain SGD (lr 0.01) and hidden
         500 with Adam (lr 1e-3); at other batches hidden 100 with SGD momentum

How it measures (as bench_train_step.py and bench_layers.py do, benchmarks/README.md):
each side runs in its own worker process (numpy's OpenBLAS pool and torch's OpenMP pool
slow each other down in one process); every worker gets OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS = --threads, torch also torch.set_num_threads,
funkcije splits its convolutions over its own threads (as many as OpenMP allows).
Synthetic data: X ~ N(0, 1) float32, uniform random labels, seeded. A worker takes
--warmup untimed steps (5: a fresh process's first steps pay page faults until glibc's
allocator adapts to the step's arrays; PyTorch's first step is slow), then --steps timed
ones and reports their median. Rounds alternate which side goes first; the ratio is the
median over rounds of the per-round funkcije / PyTorch ratios (< 1: funkcije faster).
Before each round the driver waits (up to --wait-idle seconds) for an idle CPU.

Two more runs per case, neither of them timed for the table:
- the breakdown: one funkcije worker whose layer objects' forward/backward methods are
  wrapped by a timer (exclusive times: a layer nested in another is not counted twice;
  Residual, Flatten and the loss fall into "other"), giving per-step milliseconds for
  conv, batch norm, ReLU, pool, affine, the update and the rest;
- peak memory: one worker per side doing --mem-warmup + --mem-steps steps, reporting
  ru_maxrss and ru_maxrss minus the RSS after imports and data creation.

    python benchmarks/bench_models.py --quick                 # does the script work (~30 s)
    python benchmarks/bench_models.py --batch 128 --write     # table, and its section of RESULTS.md
    python benchmarks/bench_models.py --only vgg7bn resnet9 --batch 512 --rounds 3 --steps 5
    python benchmarks/bench_models.py --small --write         # batch 16: the small-batch section
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import RESULTS, blas_name, cpu_model, replace_section, worker_env  # benchmarks/_common.py
from bench_train_step import _load, _wait_idle  # benchmarks/bench_train_step.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEGIN, END = "<!-- bench_models:begin -->", "<!-- bench_models:end -->"
HEADING = "## Model training steps (bench_models.py)"
SMALL_BEGIN, SMALL_END = "<!-- bench_models_small:begin -->", "<!-- bench_models_small:end -->"
SMALL_HEADING = "## Model training steps at a small batch (bench_models.py --small)"
SMALL_BATCH = 16

MODELS = ("fer_mnist", "fer_cifar", "vgg7", "vgg7bn", "resnet9", "fast_cifar", "fast_cifar_gelu", "tlc")
LABELS = {"fer_mnist": "FERMnistNet", "fer_cifar": "FERCifarNet", "vgg7": "VGG7", "vgg7bn": "VGG7BN",
          "resnet9": "ResNet9", "fast_cifar": "FastCifarNet", "fast_cifar_gelu": "FastCifarNet (GELU)",
          "tlc": "ThreeLayerConvNet"}
DEFAULT_BATCHES = {"tlc": (50, 128, 512), "fast_cifar": (512, 1024), "fast_cifar_gelu": (512, 1024)}
WIDTHED = ("vgg7", "vgg7bn", "resnet9", "fast_cifar", "fast_cifar_gelu")  # constructors that take `width`
CLASSES = 10
LR = {"sgd": 1e-2, "sgd_momentum": 1e-2, "adam": 1e-3}
MOMENTUM = 0.9
OPT_LABELS = {"sgd": "SGD lr 0.01", "sgd_momentum": "SGD momentum 0.9 lr 0.01", "adam": "Adam lr 1e-3"}
PHASES = ("conv", "batch norm", "ReLU", "pool", "affine", "update", "other")
DEFAULTS = {"rounds": 5, "steps": 10, "warmup": 5, "threads": 2, "wait_idle": 60.0,
            "mem_warmup": 2, "mem_steps": 2, "breakdown_steps": 5}
QUICK = {"rounds": 1, "steps": 2, "warmup": 1, "threads": 1, "wait_idle": 0.0, "mem_warmup": 1, "mem_steps": 1,
         "breakdown_steps": 2, "width": 1 / 8, "batch": 8}


def _cases(models, batches, quick):
    """The list of cases (dicts) for the selected models and batch sizes."""
    cases = []
    for m in models:
        bs = batches if batches is not None else DEFAULT_BATCHES.get(m, (128, 512))
        for b in bs:
            if m == "tlc" and b == 50:
                cases.append({"model": m, "batch": b, "hidden": 100, "opt": "sgd"})
                cases.append({"model": m, "batch": b, "hidden": 500, "opt": "adam"})
            elif m == "tlc":
                cases.append({"model": m, "batch": b, "hidden": 100, "opt": "sgd_momentum"})
            else:
                cases.append({"model": m, "batch": b, "hidden": None, "opt": "sgd_momentum"})
    width = QUICK["width"] if quick else 1.0
    out, seen = [], set()
    for c in cases:
        if quick:
            c["batch"] = QUICK["batch"]
        c["width"] = width if c["model"] in WIDTHED else 1.0
        key = tuple(sorted(c.items()))
        if key not in seen:  # --quick maps every batch to one
            seen.add(key)
            out.append(c)
    return out


def _case_label(c):
    label = LABELS[c["model"]]
    if c["model"] == "tlc":
        label += f" (hidden {c['hidden']})"
    if c["width"] != 1.0:
        label += f" (width {c['width']:g})"
    return label


# ----------------------------------------------------------------------------- workers


def _input_shape(case):
    return (1, 28, 28) if case["model"] == "fer_mnist" else (3, 32, 32)


def _data(case):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((case["batch"],) + _input_shape(case)).astype(np.float32)
    y = rng.integers(CLASSES, size=case["batch"])
    return X, y


def _funkcije_model(case):
    """The case's model; FastCifarNet's whitening fitted to the case's (synthetic) batch."""
    import numpy as np

    from funkcije import classifiers as K

    if case["model"] in ("fast_cifar", "fast_cifar_gelu"):
        model = K.FastCifarNet(num_classes=CLASSES, dtype=np.float32, seed=0, width=case["width"],
                               activation="gelu" if case["model"] == "fast_cifar_gelu" else "relu")
        model.fit(_data(case)[0])
        return model

    if case["model"] == "tlc":
        return K.ThreeLayerConvNet(input_dim=_input_shape(case), num_filters=32, filter_size=7,
                                   hidden_dim=case["hidden"], num_classes=CLASSES, weight_scale=1e-3,
                                   reg=0.0, dtype=np.float32, seed=0)
    ctor = {"fer_mnist": K.FERMnistNet, "fer_cifar": K.FERCifarNet, "vgg7": K.VGG7, "vgg7bn": K.VGG7BN,
            "resnet9": K.ResNet9}[case["model"]]
    kwargs = {"width": case["width"]} if case["model"] in WIDTHED else {}
    return ctor(num_classes=CLASSES, dtype=np.float32, seed=0, **kwargs)


def _tlc_twin(model):
    """ThreeLayerConvNet as nn.Sequential with model's weights (W2, W3 are (in, out):
    nn.Linear keeps (out, in))."""
    import torch

    nn = torch.nn
    p = model.params
    F, C, k, _ = p["W1"].shape
    flat, hidden = p["W2"].shape
    twin = nn.Sequential(
        nn.Conv2d(C, F, k, stride=1, padding=model.conv_param["pad"]), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, p["W3"].shape[1]),
    )
    with torch.no_grad():
        for mod, w, b, transposed in ((twin[0], "W1", "b1", False), (twin[4], "W2", "b2", True),
                                      (twin[6], "W3", "b3", True)):
            wt = torch.from_numpy(p[w].copy())
            mod.weight.copy_(wt.T if transposed else wt)
            mod.bias.copy_(torch.from_numpy(p[b].copy()))
    return twin


def _funkcije_step(case):
    """(model, step) with step() -> loss: model.loss plus the update rule per parameter."""
    from funkcije import optim

    model = _funkcije_model(case)
    rule = getattr(optim, case["opt"])
    cfg = {"learning_rate": LR[case["opt"]]}
    if case["opt"] == "sgd_momentum":
        cfg["momentum"] = MOMENTUM
    configs = {k: dict(cfg) for k in model.params}  # one config per parameter, as the Solver keeps

    def update(grads):
        params = model.params
        for k in params:
            params[k], configs[k] = rule(params[k], grads[k], configs[k])

    return model, update


def _torch_setup(case, args):
    """(twin, step) for PyTorch; the funkcije model the twin is copied from is dropped."""
    import gc

    import torch

    from funkcije.torch_twin import to_torch

    model = _funkcije_model(case)
    twin = _tlc_twin(model) if case["model"] == "tlc" else to_torch(model)
    nparams = sum(int(p.size) for p in model.params.values())
    del model
    gc.collect()
    twin.train()
    kw = {"foreach": True} if args.torch_foreach else {}
    if case["opt"] == "adam":
        opt = torch.optim.Adam(twin.parameters(), lr=LR["adam"], **kw)
    elif case["opt"] == "sgd":
        opt = torch.optim.SGD(twin.parameters(), lr=LR["sgd"], **kw)
    else:
        opt = torch.optim.SGD(twin.parameters(), lr=LR["sgd_momentum"], momentum=MOMENTUM, **kw)
    F = torch.nn.functional

    def step(X, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(twin(X), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step, nparams


def _time_steps(step, warmup, steps):
    times, losses = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = step()
        t1 = time.perf_counter()
        losses.append(float(loss))
        if i >= warmup:
            times.append(t1 - t0)
    return times, losses


def _rss_kb():
    """The current resident set size in KiB (/proc/self/status), None where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _hwm_kb():
    """Peak RSS of this process's own address space (VmHWM, KiB). ru_maxrss can be larger:
    Linux carries the pre-exec address space's peak (the parent's, for a subprocess) into it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_kb():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


class _PhaseTimer:
    """Exclusive wall time per key: time spent in a nested wrapped call is charged to the
    inner key only. `sync` (a GPU's synchronize) is called before a call starts and before
    it is counted as done, so asynchronous work is charged to the call that queued it."""

    def __init__(self, sync=None):
        self.acc = {}
        self._stack = []
        self._sync = sync or (lambda: None)

    def wrap(self, fn, key):
        def timed(*a, **kw):
            self._stack.append(0.0)
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._sync()
                elapsed = time.perf_counter() - t0
                inner = self._stack.pop()
                self.acc[key] = self.acc.get(key, 0.0) + elapsed - inner
                if self._stack:
                    self._stack[-1] += elapsed
        timed.__wrapped__ = fn
        return timed


def _layer_phase(layer):
    from funkcije.classifiers import sequential as S

    for cls, phase in ((S.Conv2d, "conv"), ((S.BatchNorm2d, S.GroupNorm, S.LayerNorm), "batch norm"),
                       ((S.ReLU, S.LeakyReLU, S.GELU, S.Sigmoid, S.Tanh), "ReLU"),
                       ((S.MaxPool2d, S.AvgPool2d, S.GlobalAvgPool), "pool"), (S.Affine, "affine")):
        if isinstance(layer, cls):  # BatchNorm1d is a BatchNorm2d
            return phase
    return None  # Flatten, Residual's add, Dropout, Scale: "other"


def _instrument(model, timer):
    """Wrap the forward/backward of every layer of the five timed kinds."""
    from funkcije import layer_utils as U
    from funkcije.classifiers import cnn
    from funkcije.classifiers import sequential as S

    if isinstance(model, S.Sequential):
        def walk(layers):
            for layer in layers:
                if isinstance(layer, S.Residual):
                    walk(layer.layers)
                phase = _layer_phase(layer)
                if phase is not None:
                    layer.forward = timer.wrap(layer.forward, (phase, "fwd"))
                    layer.backward = timer.wrap(layer.backward, (phase, "bwd"))
        walk(model.layers)
        return
    # ThreeLayerConvNet calls the layer_utils sandwiches, which look their layers up in
    # layer_utils' namespace, and its own affine_forward / affine_backward
    for mod, names in ((U, {"conv_forward_fast": ("conv", "fwd"), "conv_backward_fast": ("conv", "bwd"),
                            "max_pool_forward_fast": ("pool", "fwd"), "max_pool_backward_fast": ("pool", "bwd"),
                            "affine_forward": ("affine", "fwd"), "affine_backward": ("affine", "bwd"),
                            "_relu_inplace": ("ReLU", "fwd"), "_relu_backward_from_out": ("ReLU", "bwd")}),
                       (cnn, {"affine_forward": ("affine", "fwd"), "affine_backward": ("affine", "bwd")})):
        for name, key in names.items():
            setattr(mod, name, timer.wrap(getattr(mod, name), key))


def _worker(args):
    """One side of one case; --mode is a comma-separated list of time, memory, breakdown
    (run in that order; a real run gives each its own process, --quick all in one)."""
    case = json.loads(args.case)
    side = args.worker
    modes = args.mode.split(",")
    if side == "torch":
        import torch

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
    import numpy as np  # noqa: F401

    from funkcije import classifiers, fast_layers, optim  # noqa: F401  (imported before the RSS baseline)

    if side == "torch":
        from funkcije import torch_twin  # noqa: F401

    X_np, y_np = _data(case)
    out = {"side": side, "mode": args.mode}
    if "memory" in modes:
        out["rss_after_setup_kb"] = _rss_kb()
        out["maxrss_after_setup_kb"] = _maxrss_kb()

    if side == "funkcije":
        model, update = _funkcije_step(case)
        nparams = sum(int(p.size) for p in model.params.values())
        timer = _PhaseTimer()
        timed_update = timer.wrap(update, ("update", "-"))

        def step():
            loss, grads = model.loss(X_np, y_np)
            update(grads)
            return loss
    else:
        import torch

        X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
        torch_step, nparams = _torch_setup(case, args)

        def step():
            return torch_step(X, y)

    out["params"] = nparams
    if "time" in modes:
        times, losses = _time_steps(step, args.warmup, args.steps)
        out.update(median_s=statistics.median(times), min_s=min(times), loss0=losses[0], loss_last=losses[-1])
    if "memory" in modes:
        if "time" not in modes:
            _time_steps(step, args.mem_warmup, args.mem_steps)
        out["maxrss_kb"] = _maxrss_kb()
        out["hwm_kb"] = _hwm_kb()
    if "breakdown" in modes:
        if side != "funkcije":
            raise SystemExit("the breakdown is of funkcije's step")
        _instrument(model, timer)

        def step():
            loss, grads = model.loss(X_np, y_np)
            timed_update(grads)
            return loss

        _time_steps(step, 0 if "time" in modes else args.warmup, 0)
        per_step = []
        for _ in range(args.breakdown_steps):
            timer.acc.clear()
            t0 = time.perf_counter()
            step()
            total = time.perf_counter() - t0
            row = {f"{p}|{d}": 1e3 * v for (p, d), v in timer.acc.items()}
            row["step"] = 1e3 * total
            row["other|-"] = 1e3 * total - sum(v for k, v in row.items() if k != "step")
            per_step.append(row)
        keys = sorted({k for r in per_step for k in r})
        out["breakdown_ms"] = {k: statistics.median(r.get(k, 0.0) for r in per_step) for k in keys}
    if side == "funkcije":
        out["implementation"] = fast_layers.IMPLEMENTATION
        out["conv_threads"] = fast_layers.get_conv_threads()
    else:
        import torch

        out["torch"] = torch.__version__
        out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


# ----------------------------------------------------------------------------- driver


def _run_worker(side, mode, case, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--mode", mode, "--case", json.dumps(case),
           "--threads", str(args.threads)]
    for k in ("steps", "warmup", "mem_warmup", "mem_steps", "breakdown_steps"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    if args.torch_foreach:
        cmd.append("--torch-foreach")
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env=worker_env(args.threads, side, args.torch_keep_heap))
    if res.returncode != 0:
        raise SystemExit(f"{side} {mode} worker failed on {case}:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _run_case(case, args, log):
    t0 = time.time()
    label = f"{_case_label(case)}, batch {case['batch']}, {case['opt']}"
    rounds = []
    # --quick (not a measurement) takes the memory reading and the breakdown in its timing processes
    combined = {"funkcije": "time,memory,breakdown", "torch": "time,memory"}
    for r in range(args.rounds):
        order = ("funkcije", "torch") if r % 2 == 0 else ("torch", "funkcije")
        busy = _wait_idle(args.wait_idle)
        res = {side: _run_worker(side, combined[side] if args.quick and r == 0 else "time", case, args)
               for side in order}
        ratio = res["funkcije"]["median_s"] / res["torch"]["median_s"]
        rounds.append({"funkcije": res["funkcije"], "torch": res["torch"], "ratio": ratio,
                       "busy_at_start": busy, "first": order[0]})
        busy_s = "?" if busy is None else f"{100 * busy:.0f}%"
        log(f"{label}: round {r + 1}/{args.rounds} ({order[0]} first, CPU busy {busy_s}): funkcije "
            f"{1e3 * res['funkcije']['median_s']:.1f} ms, torch {1e3 * res['torch']['median_s']:.1f} ms, "
            f"ratio {ratio:.3f}")
    f0, t0_loss = rounds[0]["funkcije"]["loss0"], rounds[0]["torch"]["loss0"]
    loss_ok = abs(f0 - t0_loss) <= 1e-3 * max(1.0, abs(t0_loss))
    if not loss_ok:
        log(f"{label}: WARNING first-step losses differ: funkcije {f0:.6f}, torch {t0_loss:.6f}")
    if args.quick:
        breakdown = rounds[0]["funkcije"].pop("breakdown_ms")
        memory = {side: rounds[0][side] for side in ("funkcije", "torch")}
    else:
        breakdown = _run_worker("funkcije", "breakdown", case, args)["breakdown_ms"]
        memory = {side: _run_worker(side, "memory", case, args) for side in ("funkcije", "torch")}
    for side, m in memory.items():
        if m.get("hwm_kb") is not None and m["maxrss_kb"] - m["hwm_kb"] > 1024:
            log(f"{label}: note: {side} ru_maxrss {m['maxrss_kb'] / 1024:.0f} MB exceeds its VmHWM "
                f"{m['hwm_kb'] / 1024:.0f} MB (a peak inherited from the parent process)")
    out = {"case": case, "label": _case_label(case), "rounds": rounds, "breakdown_ms": breakdown,
           "memory": memory, "loss0": {"funkcije": f0, "torch": t0_loss}, "loss0_agree": loss_ok,
           "params": rounds[0]["funkcije"]["params"],
           "funkcije_ms": statistics.median(1e3 * r["funkcije"]["median_s"] for r in rounds),
           "torch_ms": statistics.median(1e3 * r["torch"]["median_s"] for r in rounds),
           "ratio": statistics.median(r["ratio"] for r in rounds), "wall_s": time.time() - t0}
    log(f"{label}: funkcije {out['funkcije_ms']:.1f} ms, torch {out['torch_ms']:.1f} ms, ratio "
        f"{out['ratio']:.3f}; peak RSS funkcije {memory['funkcije']['maxrss_kb'] / 1024:.0f} MB, torch "
        f"{memory['torch']['maxrss_kb'] / 1024:.0f} MB; {out['wall_s']:.0f} s")
    return out


def _avx512f():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return None


def _machine():
    # no torch here: a worker's ru_maxrss starts at least at this process's RSS (see _hwm_kb)
    import numpy as np

    return {"cpu": cpu_model(), "avx512f": _avx512f(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas_name()}


def _mb(kb):
    return kb / 1024.0


def _command(args):
    parts = ["python benchmarks/bench_models.py"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts.append("--only " + " ".join(args.only))
    if args.small:
        parts.append("--small")
    if args.batch and not (args.small and list(args.batch) == [SMALL_BATCH]):
        parts.append("--batch " + " ".join(map(str, args.batch)))
    base = dict(DEFAULTS, **({k: v for k, v in QUICK.items() if k in DEFAULTS} if args.quick else {}))
    for k, v in base.items():
        if getattr(args, k) != v:
            parts.append(f"--{k.replace('_', '-')} {getattr(args, k):g}")
    if args.torch_foreach:
        parts.append("--torch-foreach")
    if args.torch_keep_heap:
        parts.append("--torch-keep-heap")
    return " ".join(parts)


def _report(results, args, machine, load_before, load_after, started):
    def fmt_load(v):
        return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"

    f_info, t_info = results[0]["rounds"][0]["funkcije"], results[0]["rounds"][0]["torch"]
    n_rounds = sum(len(r["rounds"]) for r in results)
    idle = sum(1 for r in results for x in r["rounds"] if x["busy_at_start"] is not None and x["busy_at_start"] <= 0.10)
    avx = {True: "AVX-512F", False: "no AVX-512F", None: "AVX-512F unknown"}[machine["avx512f"]]
    opt_impl = "foreach=True" if args.torch_foreach else \
        "default implementation (on CPU the per-parameter for-loop: torch defaults to foreach only on CUDA)"
    heap = ("both sides with funkcije's glibc heap settings (--torch-keep-heap)" if args.torch_keep_heap else
            "funkcije with its glibc heap settings (FUNKCIJE_KEEP_HEAP), PyTorch with malloc's defaults")
    mem_run = ("the timing process (--quick)" if args.quick else
               f"a separate process per side after {args.mem_warmup} + {args.mem_steps} steps")
    lines = [SMALL_HEADING if args.small else HEADING, ""]
    if args.quick:
        lines += ["**--quick: tiny widths and batches, one round: a check that the script runs, not a measurement.**",
                  ""]
    lines += [
        f"Generated {started} by `{_command(args)}`.",
        "",
        f"Machine: {machine['cpu']} ({avx}), {machine['cores']} logical cores; Python {machine['python']}, numpy "
        f"{machine['numpy']} ({machine['blas']}), torch {t_info['torch']}; funkcije kernels: "
        f"{f_info['implementation']}, {f_info['conv_threads']} convolution thread(s); OMP_NUM_THREADS = "
        f"OPENBLAS_NUM_THREADS = {args.threads}, torch.set_num_threads({args.threads}) "
        f"(torch reports {t_info['threads']}). Load average (1, 5, 15 min) before {fmt_load(load_before)}, after "
        f"{fmt_load(load_after)}; {idle} of {n_rounds} rounds started on an idle CPU (<= 10% busy over 1 s).",
        "",
        "One step: forward, softmax cross-entropy, backward, update of every parameter; float32, synthetic data "
        "(X ~ N(0, 1), random labels). funkcije: `model.loss(X, y)` + `funkcije.optim.<rule>` per parameter with "
        "one config each (as the Solver does); PyTorch: the twin with the same architecture and weights "
        f"(`funkcije.torch_twin.to_torch`; ThreeLayerConvNet's written out), `F.cross_entropy`, `torch.optim` "
        f"with the same hyperparameters, {opt_impl}; {heap}. Each side in its own process; a side's time in a round is "
        f"the median of {args.steps} steps after {args.warmup} warm-ups; rounds ({args.rounds} per case) alternate "
        "which side goes first; the ratio is the median of the per-round ratios (< 1: funkcije faster). Peak "
        f"RSS: `ru_maxrss` of {mem_run}, in brackets above the RSS after imports and data creation (the model, "
        "its gradients, optimiser state, activations and workspace).",
        "",
        "| model | params | batch | optimiser | funkcije (ms/step) | PyTorch (ms/step) | **funkcije / PyTorch** "
        "| peak RSS funkcije (MB) | peak RSS PyTorch (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c, m = r["case"], r["memory"]

        def mem(side):
            peak = m[side]["maxrss_kb"]
            base = m[side]["rss_after_setup_kb"]
            return f"{_mb(peak):.0f}" + ("" if base is None else f" (+{_mb(peak - base):.0f})")

        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f} M | {c['batch']} | {OPT_LABELS[c['opt']]} | "
                     f"{r['funkcije_ms']:.1f} | {r['torch_ms']:.1f} | **{r['ratio']:.2f}** | {mem('funkcije')} | "
                     f"{mem('torch')} |")
    bad = [r for r in results if not r["loss0_agree"]]
    if bad:
        lines += ["", "First-step losses differ between the sides (twin mismatch?) for: "
                  + ", ".join(f"{r['label']} batch {r['case']['batch']}" for r in bad) + "."]
    lines += [
        "",
        f"funkcije's step by phase: ms per step (share of the step), median of {args.breakdown_steps} steps of a "
        f"{'process (--quick: the timing one)' if args.quick else 'separate run'} whose layers' forward/backward methods are wrapped by a timer (exclusive times; "
        "\"other\" is the rest of the step: loss, Flatten, residual additions, gathering parameters and "
        "gradients). \"step\" is that run's step time, timers included.",
        "",
        "| model | batch | " + " | ".join(PHASES) + " | step |",
        "| --- | --- | " + " | ".join("---" for _ in PHASES) + " | --- |",
    ]
    for r in results:
        b = r["breakdown_ms"]
        step = b["step"]
        cells = []
        for p in PHASES:
            v = sum(val for k, val in b.items() if k.split("|")[0] == p)
            present = any(k.split("|")[0] == p for k in b)
            cells.append(f"{v:.1f} ({100 * v / step:.0f}%)" if present else "-")
        lines.append(f"| {r['label']} | {r['case']['batch']} | " + " | ".join(cells) + f" | {step:.1f} |")
    lines += ["", "<details><summary>forward / backward split of the phases (ms)</summary>", "",
              "| model | batch | " + " | ".join(p for p in PHASES[:5]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in PHASES[:5]) + " |"]
    for r in results:
        b = r["breakdown_ms"]
        cells = [(f"{b[p + '|fwd']:.1f} / {b[p + '|bwd']:.1f}" if p + "|fwd" in b else "-") for p in PHASES[:5]]
        lines.append(f"| {r['label']} | {r['case']['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "</details>", "", "<details><summary>rounds</summary>", "",
              "| model | batch | round | first | CPU busy at start | funkcije (ms) | PyTorch (ms) | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for i, x in enumerate(r["rounds"]):
            busy = "?" if x["busy_at_start"] is None else f"{100 * x['busy_at_start']:.0f}%"
            lines.append(f"| {r['label']} | {r['case']['batch']} | {i + 1} | {x['first']} | {busy} | "
                         f"{1e3 * x['funkcije']['median_s']:.1f} | {1e3 * x['torch']['median_s']:.1f} | "
                         f"{x['ratio']:.2f} |")
    lines += ["", "</details>"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=MODELS, metavar="MODEL",
                    help=f"models to run (default all: {' '.join(MODELS)})")
    ap.add_argument("--batch", nargs="+", type=int, metavar="N",
                    help="batch sizes (default 128 512; 50 128 512 for tlc, 512 1024 for fast_cifar*)")
    ap.add_argument("--rounds", type=int, default=DEFAULTS["rounds"], help="alternating rounds per case (default 5)")
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="timed steps per worker (default 10)")
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="untimed steps per worker (default 5)")
    ap.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="threads per side (default 2)")
    ap.add_argument("--wait-idle", type=float, default=DEFAULTS["wait_idle"], metavar="SECONDS",
                    help="before each round wait up to this long for an idle CPU (default 60; 0: don't)")
    ap.add_argument("--mem-warmup", type=int, default=DEFAULTS["mem_warmup"],
                    help="steps before the peak-memory reading (default 2)")
    ap.add_argument("--mem-steps", type=int, default=DEFAULTS["mem_steps"],
                    help="further steps of the peak-memory run (default 2)")
    ap.add_argument("--breakdown-steps", type=int, default=DEFAULTS["breakdown_steps"],
                    help="steps of the per-phase run, after --warmup (default 5)")
    ap.add_argument("--torch-foreach", action="store_true",
                    help="torch.optim with foreach=True (default: torch's default, a for-loop on CPU)")
    ap.add_argument("--torch-keep-heap", action="store_true",
                    help="let the PyTorch workers run with funkcije's glibc heap settings too (default: malloc's defaults)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny widths (1/8) and batches (8), 1 round of 2 steps: checks that the script works")
    ap.add_argument("--small", action="store_true",
                    help=f"every model at batch {SMALL_BATCH} (unless --batch), written to its own section")
    ap.add_argument("--json", metavar="FILE", help="write the raw results to FILE")
    ap.add_argument("--write", nargs="?", const=str(RESULTS), default=None, metavar="PATH",
                    help="write the table into its section of PATH (default benchmarks/RESULTS.md)")
    ap.add_argument("--worker", choices=["funkcije", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return _worker(args)

    if args.quick:
        given = set(a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])
                    if a.startswith("--"))
        for k, v in QUICK.items():
            if k in DEFAULTS and k not in given:
                setattr(args, k, v)
        if args.write and Path(args.write).resolve() == RESULTS.resolve():
            ap.error("--quick does not write benchmarks/RESULTS.md (give --write another PATH to test the writer)")
    for k in ("rounds", "steps", "mem_steps", "breakdown_steps"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.batch and min(args.batch) < 1:
        ap.error("--batch sizes must be >= 1")

    if args.small and not args.batch:
        args.batch = [SMALL_BATCH]
    cases = _cases(args.only or MODELS, args.batch, args.quick)
    machine = _machine()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_start = time.time()
    load_before = _load()
    print(f"{len(cases)} cases, {args.rounds} rounds each; {machine['cpu']}, {machine['cores']} cores", flush=True)

    def log(msg):
        print(msg, flush=True)

    if args.quick:  # not a measurement: run cases side by side to finish sooner
        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as ex:
            results = list(ex.map(lambda c: _run_case(c, args, log), cases))
    else:
        results = [_run_case(c, args, log) for c in cases]
    load_after = _load()

    text = _report(results, args, machine, load_before, load_after, started)
    print()
    print(text)
    print(f"\ntotal {time.time() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "load_before": load_before, "load_after": load_after,
                       "args": vars(args), "results": results}, f, indent=1)
    if args.write:
        replace_section(args.write, *((SMALL_BEGIN, SMALL_END) if args.small else (BEGIN, END)), text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
