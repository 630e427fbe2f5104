"""funkcije on a CUDA GPU (CuPy arrays): correctness against the CPU and speed against PyTorch, in one short run.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out DIR      # a few minutes on an H100/H200
    PYTHONPATH=. python3 benchmarks/gpu_check.py --quick        # correctness only, no timing

1. layers: every fast layer (conv with stride/pad/dilation/groups, max and average
   pooling, batch norm with and without the fused ReLU, ReLU, affine) forward and
   backward on CuPy arrays against the NumPy reference layers on the host (float64 to
   1e-9 relative, float32 to 1e-4 of the array's scale), once through funkcije's CUDA
   kernels (convolution steps, max pooling, batch norm: kernels/cuda_kernels.py) and once through their
   Array API form (config cuda_kernels=False);
   Every update rule, three steps on CuPy arrays against the host (kernels on and off);
2. models: every zoo model (width 1/8, batch 4, float64; FERCifarNet also with the hinge
   loss) on the GPU (`model.to("gpu")`): loss, every gradient and the running statistics
   against the same model on the CPU;
3. timing (not with --quick): the training step (forward, backward, Nesterov SGD update
   of every parameter) of ResNet9 and VGG7BN at batch 512, float32, against the PyTorch
   twin on the same GPU with TF32 off; and convolution (3x3 at two sizes, the 7x7 first
   layer over 3 channels), max-pool 2x2 and batch norm forward + backward per layer
   against PyTorch, each with the CUDA kernels on and off. Median of --steps
   timed steps after --warmup;
4. ResNet9's step by phase (not with --quick or --tf32): conv, batch norm, ReLU, pooling,
   affine, update and the rest, each between GPU synchronisations;
5. an epoch (not with --quick): ResNet9 trained by the Solver for one epoch of --epoch-images
   images uploaded once (crop + flip made on the GPU, batch 512, Nesterov SGD, the epoch's
   accuracy checks included), on the CIFAR-10 training set under FUNKCIJE_DATA when it is
   there, else on random images of its shape (the time does not depend on the values).

--kernels-only: the layer and update-rule checks alone, small and quick enough to run under
compute-sanitizer (benchmarks/gpu_run.sh sanitize), which catches out-of-bounds accesses.

--tf32: the timings only, with TF32 matrix products on both sides (CuPy's CUPY_TF32=1,
PyTorch's allow_tf32), written to DIR/gpu_check_tf32.json; run it in its own process.

Prints a table and writes DIR/gpu_check.json. Needs CuPy (and PyTorch for the timing).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from funkcije import backend, config, fast_layers as FL, layers as L, optim
from funkcije.classifiers import zoo


def rel_err(got, want, dtype):
    got = backend.to_host(got)
    scale = np.abs(want).max() + 1e-30
    return float(np.abs(got - want).max() / scale) if dtype == np.float64 else float(
        (np.abs(got - want) / (np.abs(want) + scale)).max())


LAYERS = [
    ("conv 3x3 pad 1", lambda r: ((r.standard_normal((4, 16, 9, 9)),), (r.standard_normal((8, 16, 3, 3)), r.standard_normal(8)),
                                  {"stride": 1, "pad": 1}), FL.conv_forward_fast, FL.conv_backward_fast,
     L.conv_forward_naive, L.conv_backward_naive),
    ("conv 5x3 s(2,1) d(1,2) g2", lambda r: ((r.standard_normal((3, 4, 11, 10)),),
                                             (r.standard_normal((6, 2, 5, 3)), r.standard_normal(6)),
                                             {"stride": (2, 1), "pad": (2, 1), "dilation": (1, 2), "groups": 2}),
     FL.conv_forward_fast, FL.conv_backward_fast, L.conv_forward_naive, L.conv_backward_naive),
    ("conv 7x7 s2 p3 over 3 channels", lambda r: ((r.standard_normal((3, 3, 13, 12)),),
                                                  (r.standard_normal((5, 3, 7, 7)), r.standard_normal(5)),
                                                  {"stride": 2, "pad": 3}),
     FL.conv_forward_fast, FL.conv_backward_fast, L.conv_forward_naive, L.conv_backward_naive),
    ("conv 3x3 s3 depthwise", lambda r: ((r.standard_normal((2, 6, 8, 7)),),
                                         (r.standard_normal((6, 1, 3, 3)), r.standard_normal(6)),
                                         {"stride": 3, "pad": 1, "groups": 6}),
     FL.conv_forward_fast, FL.conv_backward_fast, L.conv_forward_naive, L.conv_backward_naive),
    ("max pool 3x2 s(2,1)", lambda r: ((r.standard_normal((3, 4, 9, 8)),), (),
                                       {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}),
     FL.max_pool_forward_fast, FL.max_pool_backward_fast, L.max_pool_forward_naive, L.max_pool_backward_naive),
    ("max pool 2x2", lambda r: ((r.standard_normal((3, 4, 8, 8)),), (), {"pool_height": 2, "pool_width": 2, "stride": 2}),
     FL.max_pool_forward_fast, FL.max_pool_backward_fast, L.max_pool_forward_naive, L.max_pool_backward_naive),
    ("avg pool 2x3 s2", lambda r: ((r.standard_normal((3, 4, 9, 8)),), (),
                                   {"pool_height": 2, "pool_width": 3, "stride": 2}),
     FL.avg_pool_forward_fast, FL.avg_pool_backward_fast, L.avg_pool_forward_naive, L.avg_pool_backward_naive),
    ("batch norm train", lambda r: ((r.standard_normal((5, 4, 6, 6)) + 3,), (r.standard_normal(4), r.standard_normal(4)),
                                    {"mode": "train"}),
     FL.spatial_batchnorm_forward_fast, FL.spatial_batchnorm_backward_fast,
     L.spatial_batchnorm_forward, L.spatial_batchnorm_backward),
    ("affine", lambda r: ((r.standard_normal((5, 4, 3, 2)),), (r.standard_normal((24, 7)), r.standard_normal(7)), None),
     FL.affine_forward_fast, FL.affine_backward_fast, L.affine_forward, L.affine_backward),
    ("relu", lambda r: ((r.standard_normal((5, 4, 3, 2)),), (), None), FL.relu_forward_fast, FL.relu_backward_fast,
     L.relu_forward, L.relu_backward),
    ("gelu", lambda r: ((r.standard_normal((5, 4, 3, 2)) * 3,), (), "none"), FL.gelu_forward_fast, FL.gelu_backward_fast,
     L.gelu_forward, L.gelu_backward),
    ("gelu tanh", lambda r: ((r.standard_normal((5, 4, 3, 2)) * 3,), (), "tanh"), FL.gelu_forward_fast,
     FL.gelu_backward_fast, L.gelu_forward, L.gelu_backward),
]


def check_layers(cp):
    rows = []
    for kernels, dtype in ((k, d) for k in (True, False) for d in (np.float64, np.float32)):
        for name, make, fwd, bwd, rfwd, rbwd in LAYERS:
            rng = np.random.default_rng(0)
            (x,), params, setting = make(rng)
            x = x.astype(dtype)
            params = tuple(p.astype(dtype) for p in params)
            extra = () if setting is None else (setting,)
            want, rcache = rfwd(x, *params, *(dict(s) if isinstance(s, dict) else s for s in extra))
            dout = rng.standard_normal(want.shape).astype(dtype)
            rg = rbwd(dout, rcache)
            with config.using(cuda_kernels=kernels):
                try:
                    got, cache = fwd(cp.asarray(x), *(cp.asarray(p) for p in params),
                                     *(dict(s) if isinstance(s, dict) else s for s in extra))
                except TypeError as exc:  # exact GELU without the kernels: erf is not in the Array API
                    if kernels or name != "gelu" or "CUDA kernels" not in str(exc):
                        raise
                    rows.append({"layer": name, "dtype": np.dtype(dtype).name, "cuda_kernels": kernels,
                                 "refused_clearly": True, "ok": True})
                    continue
                g = bwd(cp.asarray(dout), cache)
            rg, g = (rg, g) if isinstance(rg, tuple) else ((rg,), (g,))
            errs = [rel_err(got, want, dtype)] + [rel_err(a, b, dtype) for a, b in zip(g, rg)]
            ok = max(errs) < (1e-9 if dtype == np.float64 else 1e-4) and all(backend.device_of(a) == "gpu" for a in g)
            rows.append({"layer": name, "dtype": np.dtype(dtype).name, "cuda_kernels": kernels,
                         "max_rel_err": max(errs), "ok": bool(ok)})
    return rows


UPDATE_RULES = {"sgd": {}, "sgd_momentum": {}, "rmsprop": {}, "adam": {}, "adamw": {"weight_decay": 0.1},
                "sgd_nesterov": {"weight_decay": 5e-4}, "sgdw": {}}


def check_updates(cp):
    """Every update rule, three steps on the GPU (CUDA kernels on and off) against the host."""
    rows = []
    for kernels, dtype in ((k, d) for k in (True, False) for d in (np.float64, np.float32)):
        for rule, extra in UPDATE_RULES.items():
            fn = optim.get_update_rule(rule)
            rng = np.random.default_rng(0)
            w = rng.standard_normal((64, 33)).astype(dtype)
            grads = [rng.standard_normal(w.shape).astype(dtype) for _ in range(3)]
            hw, hc, dw_, dc = w, dict(extra), cp.asarray(w), dict(extra)
            with config.using(cuda_kernels=kernels):
                for g in grads:
                    hw, hc = fn(hw, g, hc)
                    dw_, dc = fn(dw_, cp.asarray(g), dc)
            err = rel_err(dw_, hw, dtype)
            ok = err < (1e-12 if dtype == np.float64 else 1e-5) and backend.device_of(dw_) == "gpu"
            rows.append({"update": rule, "dtype": np.dtype(dtype).name, "cuda_kernels": kernels,
                         "max_rel_err": err, "ok": bool(ok)})
    return rows


def check_models():
    import copy

    rows = []
    for name in ("FERMnistNet", "FERCifarNet", "FERCifarNet hinge", "VGG7", "VGG7BN", "ResNet9", "FastCifarNet"):
        kw = {} if name.startswith("FER") else {"width": 1 / 8}
        kw.update({"loss": "hinge"} if name.endswith("hinge") else {"label_smoothing": 0.1})
        host = getattr(zoo, name.split()[0])(seed=0, dtype=np.float64, reg=1e-3, **kw)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((4,) + host.input_shape)
        y = rng.integers(0, 10, 4)
        if name == "FastCifarNet":
            host.fit(X)
        dev = copy.deepcopy(host).to("gpu")
        loss, grads = host.loss(X, y)
        dloss, dgrads = dev.loss(X, y)
        errs = [abs(dloss - loss) / abs(loss)] + [rel_err(dgrads[k], g, np.float64) for k, g in grads.items()]
        errs += [rel_err(dev.state[n][k], s[k], np.float64) for n, s in host.state.items()
                 for k in ("running_mean", "running_var") if k in s]
        rows.append({"model": name, "max_rel_err": max(errs), "ok": bool(max(errs) < 1e-9)})
    return rows


def _median_ms(fn, sync, warmup, steps):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_models(cp, warmup, steps, batch, tf32=False):
    import torch

    from funkcije.torch_twin import to_torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    rows = []
    for name, kernels in (("ResNet9", True), ("ResNet9", False), ("VGG7BN", True)):
        model = getattr(zoo, name)(seed=0)
        twin = to_torch(model).cuda()
        model.to("gpu")
        rng = np.random.default_rng(0)
        Xh = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        yh = rng.integers(0, 10, batch)
        X = cp.asarray(Xh)
        configs = {k: {"learning_rate": 0.01, "momentum": 0.9} for k in model.params}

        def step():
            _, grads = model.loss(X, yh)
            for k, w in model.params.items():
                model.params[k], configs[k] = optim.sgd_nesterov(w, grads[k], configs[k])

        with config.using(cuda_kernels=kernels):
            ours = _median_ms(step, cp.cuda.Device().synchronize, warmup, steps)
        opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        Xt, yt = torch.from_numpy(Xh).cuda(), torch.from_numpy(yh).cuda()

        def tstep():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(twin(Xt), yt).backward()
            opt.step()

        theirs = _median_ms(tstep, torch.cuda.synchronize, warmup, steps)
        rows.append({"case": f"{name} step b{batch}" + ("" if kernels else " (no CUDA kernels)"),
                     "funkcije_ms": ours, "torch_ms": theirs, "ratio": ours / theirs})

    x = cp.random.standard_normal((batch, 128, 32, 32), dtype=cp.float32)
    xt = torch.as_tensor(x, device="cuda").requires_grad_(True)
    g, b = cp.ones(128, dtype=cp.float32), cp.zeros(128, dtype=cp.float32)
    bnt = torch.nn.BatchNorm2d(128).cuda()

    def pool():
        out, cache = FL.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
        FL.max_pool_backward_fast(out, cache)

    def tpool():
        out = torch.nn.functional.max_pool2d(xt, 2)
        out.backward(out.detach())

    def bn():
        out, cache = FL.spatial_batchnorm_forward_fast(x, g, b, {"mode": "train"})
        FL.spatial_batchnorm_backward_fast(out, cache)

    def tbn():
        out = bnt(xt)
        out.backward(out.detach())

    def conv_case(C, F, HW, k):
        xc = cp.random.standard_normal((batch, C, HW, HW), dtype=cp.float32)
        w = cp.random.standard_normal((F, C, k, k), dtype=cp.float32) * (2 / (C * k * k)) ** 0.5
        bias = cp.zeros(F, dtype=cp.float32)
        cparam = {"stride": 1, "pad": k // 2}
        xct = torch.as_tensor(xc, device="cuda").requires_grad_(True)
        wt = torch.as_tensor(w, device="cuda").requires_grad_(True)
        bt = torch.as_tensor(bias, device="cuda").requires_grad_(True)

        def conv():
            out, cache = FL.conv_forward_fast(xc, w, bias, cparam)
            FL.conv_backward_fast(out, cache)

        def tconv():
            out = torch.nn.functional.conv2d(xct, wt, bt, padding=k // 2)
            out.backward(out.detach())

        return f"conv {k}x{k} {C}->{F} (N,{C},{HW},{HW})", conv, tconv

    cases = [conv_case(64, 128, 32, 3), conv_case(256, 512, 8, 3), conv_case(3, 32, 32, 7),
             ("max pool 2x2 (N,128,32,32)", pool, tpool), ("batch norm (N,128,32,32)", bn, tbn)]
    for case, ours_fn, theirs_fn in cases:
        theirs = _median_ms(theirs_fn, torch.cuda.synchronize, warmup, steps)
        for kernels in (True, False):
            with config.using(cuda_kernels=kernels):
                ours = _median_ms(ours_fn, cp.cuda.Device().synchronize, warmup, steps)
            rows.append({"case": f"{case} b{batch}" + ("" if kernels else " (no CUDA kernels)"),
                         "funkcije_ms": ours, "torch_ms": theirs, "ratio": ours / theirs})
    return rows


def time_phases(cp, warmup, steps, batch):
    """ResNet9's training step at `batch` on the GPU (CUDA kernels on) by phase: the
    forward/backward of every conv, batch-norm, ReLU, pooling and affine layer and the
    update, each timed between GPU synchronisations (benchmarks/bench_models.py's timer);
    "other" is the rest of the step (loss, residual adds, Flatten). The synchronisations
    cost a little: the "step" here is a bit slower than the free-running one above."""
    from bench_models import _PhaseTimer, _instrument  # benchmarks/bench_models.py

    sync = cp.cuda.Device().synchronize
    model = zoo.ResNet9(seed=0).to("gpu")
    timer = _PhaseTimer(sync)
    _instrument(model, timer)
    rng = np.random.default_rng(0)
    X = cp.asarray(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = rng.integers(0, 10, batch)
    configs = {k: {"learning_rate": 0.01, "momentum": 0.9} for k in model.params}

    def update(grads):
        for k, w in model.params.items():
            model.params[k], configs[k] = optim.sgd_nesterov(w, grads[k], configs[k])

    update = timer.wrap(update, ("update", ""))
    total = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            timer.acc.clear()
            total = 0.0
        sync()
        t = time.perf_counter()
        update(model.loss(X, y)[1])
        sync()
        total += time.perf_counter() - t
    rows = {}
    for (phase, _), seconds in timer.acc.items():
        rows[phase] = rows.get(phase, 0.0) + seconds * 1e3 / steps
    rows["other"] = total * 1e3 / steps - sum(rows.values())
    rows["step"] = total * 1e3 / steps
    fwd_bwd = {f"{p} {d}": s * 1e3 / steps for (p, d), s in timer.acc.items() if d}
    return {"case": f"ResNet9 step b{batch} by phase (ms, CUDA kernels on)", "phases": rows, "fwd_bwd": fwd_bwd}


def time_epoch(cp, images, batch):
    """Seconds of one Solver epoch of ResNet9 on `images` CIFAR-shaped images on the GPU."""
    from funkcije import augment
    from funkcije.solver import Solver

    rng = np.random.default_rng(0)
    source = "random"
    try:
        from funkcije.data_utils import get_CIFAR10_data

        if os.environ.get("FUNKCIJE_DATA"):
            d = get_CIFAR10_data(num_training=images, num_validation=1000, num_test=1, subtract_mean=False)
            norm = augment.Normalize.fit(d["X_train"])
            X, y, Xv, yv = norm(d["X_train"]), d["y_train"], norm(d["X_val"]), d["y_val"]
            source = "CIFAR-10"
    except (OSError, ValueError) as exc:
        print(f"epoch: no CIFAR-10 ({exc}); random images")
    if source == "random":
        X = rng.standard_normal((images, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, images)
        Xv, yv = X[:1000], y[:1000]
    model = zoo.ResNet9(seed=0).to("gpu")
    data = {"X_train": cp.asarray(X), "y_train": y, "X_val": cp.asarray(Xv), "y_val": yv}
    solver = Solver(model, data, update_rule="sgd_nesterov", optim_config={"learning_rate": 0.01, "momentum": 0.9},
                    batch_size=batch, num_epochs=1, seed=0, verbose=False, num_train_samples=1000,
                    augment=augment.parse("crop:4:reflect,flip"))
    cp.cuda.Device().synchronize()
    t = time.perf_counter()
    solver.train()
    cp.cuda.Device().synchronize()
    seconds = time.perf_counter() - t
    return {"case": f"ResNet9 epoch, {images} {source} images, batch {batch}, data on the GPU", "seconds": seconds,
            "val_acc": solver.val_acc_history[-1], "final_loss": solver.loss_history[-1]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".", help="folder for gpu_check.json")
    p.add_argument("--quick", action="store_true", help="correctness only")
    p.add_argument("--kernels-only", action="store_true",
                   help="the layer and update-rule checks alone (what compute-sanitizer runs over)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--epoch-images", type=int, default=49000, help="training images of the timed epoch (0: none)")
    p.add_argument("--tf32", action="store_true",
                   help="timings only, with TF32 matrix products on both sides (CUPY_TF32=1; PyTorch's allow_tf32)")
    args = p.parse_args(argv)
    if args.tf32:  # before CuPy's first float32 matrix product
        os.environ["CUPY_TF32"] = "1"
    cp = backend.require_cupy("gpu_check")
    props = cp.cuda.runtime.getDeviceProperties(0)
    report = {"gpu": props["name"].decode(), "cupy": cp.__version__, "numpy": np.__version__,
              "array_api": type(backend.array_api(cp.zeros(1))).__name__}
    report["tf32"] = args.tf32
    # TF32 products are not float32's: the correctness checks run in float32 mode only
    report["layers"] = [] if args.tf32 else check_layers(cp)
    report["updates"] = [] if args.tf32 else check_updates(cp)
    report["models"] = [] if args.tf32 or args.kernels_only else check_models()
    for row in report["layers"] + report["updates"] + report["models"]:
        print(json.dumps(row))
    if not (args.quick or args.kernels_only):
        report["timing"] = time_models(cp, args.warmup, args.steps, args.batch, args.tf32)
        for row in report["timing"]:
            print(f"{row['case']:36s} funkcije {row['funkcije_ms']:9.2f} ms   torch {row['torch_ms']:9.2f} ms   "
                  f"ratio {row['ratio']:.2f}")
        if not args.tf32:
            report["phases"] = time_phases(cp, args.warmup, args.steps, args.batch)
            print(json.dumps(report["phases"]))
        if args.epoch_images:
            report["epoch"] = time_epoch(cp, args.epoch_images, args.batch)
            print(json.dumps(report["epoch"]))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "gpu_check_tf32.json" if args.tf32 else "gpu_check_kernels.json" if args.kernels_only else "gpu_check.json"
    (Path(args.out) / name).write_text(json.dumps(report, indent=2))
    bad = [r for r in report["layers"] + report["updates"] + report["models"] if not r["ok"]]
    print(f"{report['gpu']}: {len(bad)} failed checks")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
