"""The CUDA kernels (funkcije/kernels/cuda_kernels.py) without a GPU: their source compiled
by the host C++ compiler, each launch's grid walked thread by thread in a loop, and the
Python wrappers run on NumPy arrays against the reference layers; every array a kernel
gets is fenced by canary bytes, so a write outside it fails the test. The kernels share
nothing between threads, so the sequential walk computes what the GPU computes (up to
the GPU's fused multiply-adds). On a GPU, benchmarks/gpu_check.py checks them there."""
import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

from funkcije import config, fast_layers as FL, layers as L
from funkcije.kernels import cuda_kernels as CK

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")

SHIM = r"""
#include <cmath>
#include <algorithm>
using std::min;
using std::sqrt;
struct dim3_ { unsigned x, y, z; };
static dim3_ threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __restrict__ __restrict
"""

_SIG = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double}


def _launcher(name, params):
    """A C function launch_<name>(grid, block, params...) that runs every thread in turn."""
    names = [p.split()[-1].lstrip("*") for p in params]
    return (f'extern "C" void launch_{name}(int grid, int block, {", ".join(params)}) {{\n'
            f"  gridDim.x = grid; blockDim.x = block;\n"
            f"  for (unsigned blk_ = 0; blk_ < (unsigned)grid; ++blk_)\n"
            f"    for (unsigned thr_ = 0; thr_ < (unsigned)block; ++thr_) {{\n"
            f"      blockIdx.x = blk_; threadIdx.x = thr_; {name}({', '.join(names)});\n    }}\n}}\n")


@pytest.fixture(scope="module", params=["int", "long long"])
def host_launch(request, tmp_path_factory):
    """A stand-in for cuda_kernels._launch that runs the kernels' source on the CPU, built
    twice: as it is (int element indices below INDEX32 elements, every case here) and
    with INDEX32 = 0 (every launch on its long long indices)."""
    folder = tmp_path_factory.mktemp("cuda_on_host")
    defines = [] if request.param == "int" else ["-DINDEX32=0"]
    libs, signatures = {}, {}
    for dtype_name in ("float32", "float64"):
        src = CK.source_for(dtype_name)
        code = SHIM + src
        for name, params in _SIG.findall(src):
            params = [" ".join(p.split()) for p in params.split(",")]
            signatures[name] = params
            code += _launcher(name, params)
        path = folder / f"kernels_{dtype_name}.cpp"
        path.write_text(code)
        lib = folder / f"kernels_{dtype_name}.so"
        subprocess.run([CXX, "-O1", "-shared", "-fPIC", *defines, "-o", str(lib), str(path)], check=True,
                       capture_output=True, text=True)
        libs[dtype_name] = ctypes.CDLL(str(lib))

    def launch(name, dtype_name, grid, block, args):
        full = f"{name}_{CK._TYPES[dtype_name]}"
        assert 1 <= grid < 2**31 and 1 <= block <= 1024, (full, grid, block)  # what CUDA accepts
        params = signatures[full]
        assert len(params) == len(args), (full, len(params), len(args))
        c_args, fenced = [], {}
        for p, a in zip(params, args):
            if "*" in p:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, (full, p)
                base = p.replace("const ", "").split("*")[0].strip()
                want = {"float": np.float32, "double": np.float64, "int": np.int32}[base]
                assert a.dtype == want, (full, p, a.dtype)
                if "const" not in p:
                    assert a.flags.writeable
                key = (a.__array_interface__["data"][0], a.size)  # one fenced copy per array passed
                if key not in fenced:
                    fenced[key] = (a, _fenced_copy(a))
                c_args.append(ctypes.c_void_p(fenced[key][1][FENCE:].ctypes.data))
            else:
                ctype = p.rsplit(" ", 1)[0]
                assert ctype in _CTYPES, p
                # the GPU launch passes _LL as int64, other ints as int32 and _Real as the
                # kernel's float type: they must match
                if ctype in ("float", "double"):
                    assert isinstance(a, CK._Real) and ctype == CK._TYPES[dtype_name], (full, p)
                else:
                    assert isinstance(a, CK._LL) == (ctype == "long long"), (full, p)
                c_args.append(_CTYPES[ctype](a))
        getattr(libs[dtype_name], f"launch_{full}")(grid, block, *c_args)
        for a, buf in fenced.values():
            for side in (buf[:FENCE], buf[buf.size - FENCE:]):
                assert (side.view(np.uint8) == CANARY).all(), f"{full} wrote outside an array of shape {a.shape}"
            if a.flags.writeable:
                a.reshape(-1)[...] = buf[FENCE:buf.size - FENCE]

    return launch


FENCE, CANARY = 64, 0xA5  # elements of canary bytes on each side of every array a kernel gets


def _fenced_copy(a):
    """a's elements in a new buffer between two fences of FENCE elements of CANARY bytes:
    a kernel's write outside the array (also into the rest of an array a view was cut
    from) changes a fence."""
    buf = np.empty(a.size + 2 * FENCE, dtype=a.dtype)
    buf.view(np.uint8)[...] = CANARY
    buf[FENCE:FENCE + a.size] = a.reshape(-1)
    return buf


@pytest.fixture
def on_host(host_launch, monkeypatch):
    monkeypatch.setattr(CK, "_launch", host_launch)


POOLS = [
    ((2, 3, 8, 8), {"pool_height": 2, "pool_width": 2, "stride": 2}),
    ((2, 2, 9, 8), {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}),
    ((1, 3, 7, 9), {"pool_height": 3, "pool_width": 3, "stride": 1}),
    ((3, 1, 5, 11), {"pool_height": 1, "pool_width": 4, "stride": (1, 3)}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,pool", POOLS)
def test_max_pool_kernels_match_the_reference(on_host, shape, pool, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 1, :3] = x[0, 0, 0, 0]  # ties: the first maximum wins
    x[-1, -1, 2, 2] = np.nan  # NaN wins its windows
    g = FL.pool_geometry("t", x, pool)
    out, arg = CK.max_pool_forward(x, g)
    want, cache = L.max_pool_forward_naive(x, pool)
    np.testing.assert_array_equal(out, want)
    ref_out, ref_arg = FL._xk.max_pool_forward(x, g)
    np.testing.assert_array_equal(arg, ref_arg)
    dout = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_allclose(CK.max_pool_backward(dout, arg, x.shape, g), L.max_pool_backward_naive(dout, cache),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)


BNS = [(4, 3, 5, 6), (3, 5, 17, 16), (2, 2, 1, 1), (1, 4, 3, 2)]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", BNS)
def test_batchnorm_kernels_match_the_namespace_path(on_host, shape, dtype, relu):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    C = shape[1]
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for stats in (None, (rng.random(C) + 4.0, rng.random(C) + 0.5)):
        mean, var = (None, None) if stats is None else stats
        got = CK.bn_forward(x, gamma, beta, 1e-5, relu, mean, var)
        want = FL._xk.bn_forward(x, gamma, beta, 1e-5, relu, mean, var)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, **tol)
        dout = rng.standard_normal(shape).astype(dtype)
        y = got[0]
        for train in (True, False):
            g = CK.bn_backward(dout, x, y, got[1], got[3], gamma, train, relu)
            w = FL._xk.bn_backward(dout, x, y, got[1], got[3], gamma, train, relu)
            for a, b in zip(g, w):
                assert a.dtype == np.dtype(dtype)
                np.testing.assert_allclose(a, b, **tol)


def test_batchnorm_relu_kernel_passes_nan(on_host):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    x[1, 2, 0, 1] = np.nan
    args = (x, np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5, True, np.zeros(3), np.ones(3))
    got, want = CK.bn_forward(*args)[0], FL._xk.bn_forward(*args)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1, 2, 0, 1]) and np.isnan(got).sum() == 1


def test_empty_launches_are_skipped(on_host):
    """No channels or no images: no launch of an empty grid (CUDA refuses those), empty results."""
    x = np.ones((2, 0, 3, 3))
    out, mean, var, inv_std = CK.bn_forward(x, np.ones(0), np.zeros(0), 1e-5, True)
    assert out.shape == x.shape and mean.shape == var.shape == (0,)
    dx, dgamma, dbeta = CK.bn_backward(x, x, out, mean, inv_std, np.ones(0), True, True)
    assert dx.shape == x.shape and dgamma.shape == (0,)
    g = FL.pool_geometry("t", x, {"pool_height": 2, "pool_width": 2, "stride": 1})
    pooled, arg = CK.max_pool_forward(x, g)
    assert pooled.shape == (2, 0, 2, 2) and CK.max_pool_backward(pooled, arg, x.shape, g).shape == x.shape
    assert CK._grid(0) == 0


def test_batchnorm_kernels_against_the_reference_layer(on_host):
    """The whole fused path (train mode, float64) against layers.spatial_batchnorm_*."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 5, 5)) * 2 - 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    out, mean, var, inv_std = CK.bn_forward(x, gamma, beta, 1e-5, False)
    want, cache = L.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": 1e-5})
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(x.shape)
    for a, b in zip(CK.bn_backward(dout, x, out, mean, inv_std, gamma, True, False),
                    L.spatial_batchnorm_backward(dout, cache)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_the_switch_and_its_dispatch():
    """fast_layers takes the CUDA kernels only for GPU arrays, and only while the switch is on."""
    assert config.get("cuda_kernels") is True
    x = np.ones((1, 1, 2, 2))
    assert FL._gpu_kernels(x) is FL._xk
    with config.using(cuda_kernels=False):
        assert config.get("cuda_kernels") is False
    with pytest.raises(TypeError, match="cuda_kernels must be True or False"):
        config.set(cuda_kernels="yes")


def test_fast_layers_through_the_kernels(on_host, monkeypatch):
    """The fast layers' GPU branch wired to the kernels (as for a CuPy array): pooling and
    batch norm with its fused ReLU, forward and backward, against the reference."""
    monkeypatch.setattr(FL, "_gpu_kernels", lambda x: CK)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 8, 6))
    pool = {"pool_height": 2, "pool_width": 3, "stride": (2, 1)}
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    with config.using(implementation="namespace"):
        out, cache = FL.max_pool_forward_fast(x, pool)
        dout = rng.standard_normal(out.shape)
        dx = FL.max_pool_backward_fast(dout, cache)
        dx_ref_cache = FL.max_pool_backward_fast(dout, (x, pool))  # a reference cache: maxima found again
        bn = {"mode": "train"}
        bout, bcache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, bn, relu=True)
        bgrads = FL.spatial_batchnorm_backward_fast(dout.repeat(2, axis=2).repeat(2, axis=3)[:, :, :8, :6], bcache)
    want, wcache = L.max_pool_forward_naive(x, pool)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(dx, L.max_pool_backward_naive(dout, wcache), rtol=1e-14)
    np.testing.assert_array_equal(dx_ref_cache, dx)
    ref_bn = {"mode": "train"}
    with config.using(implementation="numpy"):
        rout, rcache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, ref_bn, relu=True)
        rgrads = FL.spatial_batchnorm_backward_fast(dout.repeat(2, axis=2).repeat(2, axis=3)[:, :, :8, :6], rcache)
    np.testing.assert_allclose(bout, rout, rtol=1e-12, atol=1e-12)
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(bn[key], ref_bn[key], rtol=1e-12)
    for a, b in zip(bgrads, rgrads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("value,expect", [("0", "False"), ("on", "True"), ("maybe", "FUNKCIJE_CUDA_KERNELS must be 1 or 0")])
def test_the_environment_variable(value, expect):
    import os
    import sys

    res = subprocess.run([sys.executable, "-c", "from funkcije import config; print(config.get('cuda_kernels'))"],
                         env=dict(os.environ, FUNKCIJE_CUDA_KERNELS=value), capture_output=True, text=True)
    assert expect in res.stdout + res.stderr


def test_the_gpu_launch_passes_c_typed_arguments(monkeypatch):
    """What _cuda_launch hands CuPy (a stand-in RawModule records it): the dtype's source,
    the kernel by its suffixed name, ints as int32 and long long as int64, arrays as they are."""
    import types

    calls = []

    class Module:
        def __init__(self, code):
            self.code = code

        def get_function(self, name):
            return lambda grid, block, args: calls.append((self.code, name, grid, block, args))

    CK._module.cache_clear()
    monkeypatch.setattr(CK.backend, "require_cupy", lambda where="": types.SimpleNamespace(RawModule=Module))
    try:
        x = np.ones(3, dtype=np.float32)
        CK._cuda_launch("bn_apply", "float32", 5, 64, (x, CK._LL(7), 3, True))
    finally:
        CK._module.cache_clear()
    (code, name, grid, block, args), = calls
    assert code == CK.source_for("float32") and name == "bn_apply_float" and (grid, block) == ((5,), (64,))
    assert isinstance(args, tuple) and args[0] is x
    assert [type(a) for a in args[1:]] == [np.int64, np.int32, np.int32]


CONVS = [  # x shape, w shape, conv_param
    ((2, 3, 7, 7), (4, 3, 3, 3), {"stride": 1, "pad": 1}),
    ((3, 4, 11, 10), (6, 2, 5, 3), {"stride": (2, 1), "pad": (2, 0), "dilation": (1, 2), "groups": 2}),
    ((2, 3, 9, 8), (5, 3, 7, 7), {"stride": 2, "pad": 3}),  # a first layer: 7x7 over 3 channels
    ((1, 6, 5, 6), (6, 1, 3, 3), {"stride": 3, "pad": 1, "groups": 6}),  # depthwise, stride over kernel
    ((4, 5, 4, 4), (3, 5, 1, 1), {"stride": 1, "pad": 0}),
    ((2, 2, 6, 5), (3, 2, 2, 3), {"stride": (1, 2), "pad": (0, 2), "dilation": 2}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs,ws,cp", CONVS)
def test_conv_kernels_match_the_namespace_path_and_the_reference(on_host, xs, ws, cp, dtype):
    """The three conv kernels compute what xp_kernels' standard calls compute, in the same
    order (columns and output bit for bit, dx to its summation order); the whole layer
    agrees with the reference, forward and backward."""
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    g = FL.conv_geometry("t", x, w, cp)
    G, HH, WW = g.groups, ws[2], ws[3]
    np.testing.assert_array_equal(CK.ConvSteps.columns(np, x, G, HH, WW, g),
                                  FL._xk.ConvSteps.columns(np, x, G, HH, WW, g))
    out = CK.conv_forward(x, w, b, g)
    np.testing.assert_array_equal(out, FL._xk.conv_forward(x, w, b, g))
    want, cache = L.conv_forward_naive(x, w, b, cp)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, want, **tol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    got = CK.conv_backward(x, w, dout, g)
    for a, c, r in zip(got, FL._xk.conv_backward(x, w, dout, g), L.conv_backward_naive(dout, cache)):
        assert a.dtype == np.dtype(dtype) and a.shape == r.shape
        np.testing.assert_allclose(a, c, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6 if dtype == np.float32 else 1e-14)
        np.testing.assert_allclose(a, r, **tol)
    dx, dw, db = CK.conv_backward(x, w, dout, g, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, got[1])


def test_conv_kernels_write_each_chunk_in_place(on_host):
    """A workspace bound of one image: each chunk's output and dx land at their offset."""
    from funkcije.kernels import runtime as R

    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    cp = {"stride": 1, "pad": 1}
    g = FL.conv_geometry("t", x, w, cp)
    previous = R.set_workspace_limit(1)
    try:
        out = CK.conv_forward(x, w, b, g)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = CK.conv_backward(x, w, dout, g)
    finally:
        R.set_workspace_limit(previous)
    want, cache = L.conv_forward_naive(x, w, b, cp)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    for a, r in zip((dx, dw, db), L.conv_backward_naive(dout, cache)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    empty = CK.conv_forward(x[:0], w, b, g)
    assert empty.shape == (0, 4, 6, 6)
    edx, edw, edb = CK.conv_backward(x[:0], w, empty, g)
    assert edx.shape == (0, 3, 6, 6) and not edw.any() and not edb.any()


def test_fast_conv_through_the_kernels(on_host, monkeypatch):
    """conv_forward_fast / conv_backward_fast take the CUDA kernels for a GPU array."""
    monkeypatch.setattr(FL, "_gpu_kernels", lambda x: CK)
    used = []
    real = CK._launch
    monkeypatch.setattr(CK, "_launch", lambda name, *a: (used.append(name), real(name, *a)))
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    cp = {"stride": 2, "pad": 1}
    with config.using(implementation="namespace"):
        out, cache = FL.conv_forward_fast(x, w, b, cp)
        grads = FL.conv_backward_fast(np.ones_like(out), cache)
    assert set(used) == {"im2col", "conv_out", "col2im"}
    want, wcache = L.conv_forward_naive(x, w, b, cp)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    for a, r in zip(grads, L.conv_backward_naive(np.ones_like(out), wcache)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def _gpu_check_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_scripts_phase_timing_runs_on_the_host(monkeypatch):
    """gpu_check's step-by-phase timing, on a small ResNet9 on the CPU (no synchronisation
    to make): every phase of the step is there and they add up to the step."""
    import pathlib
    import types

    from funkcije.classifiers import zoo

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    gpu_check = _gpu_check_module()

    real = zoo.ResNet9

    def small(seed):
        model = real(seed=seed, width=1 / 16)
        model.to = lambda device: model  # stays on the host
        return model

    monkeypatch.setattr(gpu_check.zoo, "ResNet9", small)
    cp = types.SimpleNamespace(asarray=np.asarray,
                               cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(synchronize=lambda: None)))
    row = gpu_check.time_phases(cp, warmup=1, steps=2, batch=4)
    phases = row["phases"]
    assert {"conv", "batch norm", "pool", "affine", "update", "other", "step"} <= set(phases)
    assert all(v >= 0 for k, v in phases.items() if k != "other") and phases["step"] > 0
    assert abs(sum(v for k, v in phases.items() if k != "step") - phases["step"]) < 1e-6
    assert {"conv fwd", "conv bwd", "batch norm fwd", "batch norm bwd"} <= set(row["fwd_bwd"])


def test_the_gpu_check_scripts_layer_checks_run_on_the_host(on_host, monkeypatch):
    """benchmarks/gpu_check.py's layer and update-rule checks, CuPy played by NumPy and the CUDA kernels by
    their host build: the script runs through and every check passes, with the kernels on
    and off (a mistake in it would otherwise surface only on a GPU)."""
    import types

    gpu_check = _gpu_check_module()

    class OnDevice(np.ndarray):
        """What cp.asarray makes: NumPy arrays marked as the GPU's, so that the host
        references (plain arrays) run the NumPy code and the marked ones the kernels."""

    monkeypatch.setattr(FL, "_gpu_kernels",
                        lambda x: CK if isinstance(x, OnDevice) and config.get("cuda_kernels") else FL._xk)
    monkeypatch.setattr(gpu_check.backend, "device_of", lambda a: "gpu")
    real_update = CK._update  # a new parameter stays marked, so its next update is a device update too
    monkeypatch.setattr(CK, "_update", lambda *a: tuple(o.view(OnDevice) for o in real_update(*a)))
    with config.using(implementation="namespace"):
        cp = types.SimpleNamespace(asarray=lambda a: np.asarray(a).view(OnDevice))
        rows = gpu_check.check_layers(cp)
        assert len(rows) == 4 * len(gpu_check.LAYERS)
        used = []
        real = CK._launch
        monkeypatch.setattr(CK, "_launch", lambda name, *a: (used.append(name), real(name, *a)))
        rows += gpu_check.check_updates(cp)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert {n for n in used if n.startswith("upd_")} == {"upd_sgd", "upd_momentum", "upd_rmsprop", "upd_adam",
                                                         "upd_nesterov"}


def _nvrtc(cuda):
    """libnvrtc of CUDA `cuda` ("12" or "13") from the nvidia-cuda-nvrtc wheels (test
    dependencies on Linux x86-64), or None."""
    import glob
    import os

    try:
        import nvidia
    except ImportError:
        return None
    where = {"12": ("cuda_nvrtc", "lib", "libnvrtc.so.12"), "13": ("cu13", "lib", "libnvrtc.so.13")}[cuda]
    found = [p for d in nvidia.__path__ for p in sorted(glob.glob(os.path.join(d, *where)))]
    return ctypes.CDLL(found[0]) if found else None


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("cuda", ["12", "13"])
def test_nvrtc_compiles_the_kernels(cuda, dtype_name, arch):
    """The source as CuPy's RawModule hands it to NVRTC compiles, with CUDA 12's and 13's,
    to machine code for Turing, Ampere and Hopper GPUs (NVRTC needs no GPU), every kernel
    present, none spilling registers to memory. What g++ accepts above NVRTC might not
    (and the reverse)."""
    import os
    import sys

    lib = _nvrtc(cuda)
    if lib is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") and sys.platform == "linux":
            pytest.fail(f"CI needs CUDA {cuda}'s NVRTC (the test extra) to compile the CUDA kernels")
        pytest.skip(f"CUDA {cuda}'s NVRTC (the test extra: nvidia-cuda-nvrtc wheels) not installed")
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    src = CK.source_for(dtype_name)
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"funkcije.cu", 0, None, None) == 0
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"-Xptxas=-v"]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        log = log.value.decode()
        assert rc == 0, f"NVRTC: {lib.nvrtcGetErrorString(rc).decode()}\n{log}"
        assert lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)) == 0 and size.value > 0
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    kernels = {name for name, _ in _SIG.findall(src)}
    compiled = set(re.findall(r"Compiling entry function '(\w+)'", log))
    assert compiled == kernels and len(kernels) == 15
    spills = re.findall(r"(\d+) bytes spill stores", log)
    assert spills and all(s == "0" for s in spills), log


RULES = {
    "sgd": {"learning_rate": 0.1},
    "sgd_momentum": {"learning_rate": 0.1, "momentum": 0.9},
    "rmsprop": {"learning_rate": 0.01, "decay_rate": 0.9},
    "adam": {"learning_rate": 0.01},
    "adamw": {"learning_rate": 0.01, "weight_decay": 0.1},
    "sgd_nesterov": {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    "sgdw": {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_update_kernels_follow_the_numpy_rules(on_host, monkeypatch, rule, dtype):
    """Each rule through its CUDA kernel (as for a GPU parameter) against the NumPy code,
    three steps; state and results of w's dtype, inputs untouched, subnormal results flushed."""
    from funkcije import optim

    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((3, 5, 4)).astype(dtype)
    w0[0, 0, :2] = 0  # with a zero gradient these give subnormal or zero results
    grads = [rng.standard_normal(w0.shape).astype(dtype) for _ in range(3)]
    for g in grads:
        g[0, 0, :2] = np.finfo(dtype).smallest_normal / 4  # subnormal steps: flushed on both paths
    fn = optim.get_update_rule(rule)

    def run(use_kernels):
        used = []
        w, cfg = w0.copy(), dict(RULES[rule])
        with monkeypatch.context() as mp, config.using(implementation="numpy"):
            if use_kernels:
                mp.setattr(FL, "_gpu_kernels", lambda x: CK)
                real = CK._launch
                mp.setattr(CK, "_launch", lambda name, *a: (used.append(name), real(name, *a)))
            for g in grads:
                before = g.copy()
                w, cfg = fn(w, g, cfg)
                assert w.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(before, g)
        return w, cfg, used

    got, got_cfg, used = run(True)
    want, want_cfg, _ = run(False)
    assert len(used) == 3 and all(n.startswith("upd_") for n in used)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(got, want, **tol)
    for key, value in want_cfg.items():
        if isinstance(value, np.ndarray):
            assert got_cfg[key].dtype == np.dtype(dtype)
            np.testing.assert_allclose(got_cfg[key], value, **tol)
        else:
            assert got_cfg[key] == value
    tiny = np.finfo(dtype).smallest_normal
    assert not ((np.abs(got) < tiny) & (got != 0)).any()


def test_a_kernel_that_does_not_compile_says_how_to_go_on(monkeypatch):
    """NVRTC's failure (CuPy's CompileException) becomes an error naming the switch that
    runs the layers without the kernels; other errors pass through unchanged."""
    import types

    class CompileException(Exception):
        pass

    class Module:
        def __init__(self, code):
            pass

        def get_function(self, name):
            raise CompileException("funkcije.cu(3): error: identifier undefined")

    CK._module.cache_clear()
    monkeypatch.setattr(CK.backend, "require_cupy", lambda where="": types.SimpleNamespace(RawModule=Module))
    try:
        with pytest.raises(RuntimeError, match="did not compile.*identifier undefined(.|\\n)*FUNKCIJE_CUDA_KERNELS=0"):
            CK._cuda_launch("bn_apply", "float32", 1, 32, ())
        monkeypatch.setattr(Module, "get_function", lambda self, name: 1 / 0)
        CK._module.cache_clear()
        with pytest.raises(ZeroDivisionError):
            CK._cuda_launch("bn_apply", "float32", 1, 32, ())
    finally:
        CK._module.cache_clear()


@pytest.mark.parametrize("name", ["ResNet9", "VGG7BN"])
def test_a_zoo_model_trains_through_the_kernels_like_on_the_cpu(on_host, monkeypatch, name):
    """Two Solver steps of a small zoo model (float64, with L2, label smoothing, Nesterov
    momentum with weight decay) with every conv, pool, batch norm and update going through
    the CUDA kernels (host-built) give the CPU run's losses, parameters and running
    statistics: the kernels composed as a GPU step composes them."""
    import copy

    from funkcije.classifiers import zoo
    from funkcije.solver import Solver

    rng = np.random.default_rng(8)
    X = rng.standard_normal((8, 3, 32, 32))
    y = rng.integers(0, 10, 8)
    data = {"X_train": X, "y_train": y, "X_val": X[:4], "y_val": y[:4]}
    model = zoo.__dict__[name](seed=0, dtype=np.float64, reg=1e-3, label_smoothing=0.1, width=1 / 16)
    kw = dict(update_rule="sgd_nesterov", optim_config={"learning_rate": 0.05, "weight_decay": 5e-4},
              batch_size=4, num_epochs=1, seed=0, verbose=False, num_train_samples=4)

    def train(m, kernels):
        used = []
        with monkeypatch.context() as mp, config.using(implementation="namespace" if kernels else "numpy"):
            if kernels:
                mp.setattr(FL, "_gpu_kernels", lambda x: CK)
                real = CK._launch
                mp.setattr(CK, "_launch", lambda n, *a: (used.append(n), real(n, *a)))
            solver = Solver(m, data, **kw)
            solver.train()
        return solver, set(used)

    cpu, _ = train(copy.deepcopy(model), False)
    dev, used = train(copy.deepcopy(model), True)
    assert {"im2col", "conv_out", "col2im", "max_pool_fwd", "max_pool_bwd", "channel_sums", "bn_apply", "bn_dx",
            "upd_nesterov"} <= used
    np.testing.assert_allclose(dev.loss_history, cpu.loss_history, rtol=1e-11)
    for k, w in cpu.model.params.items():
        np.testing.assert_allclose(dev.model.params[k], w, rtol=1e-9, atol=1e-13)
    for layer, state in cpu.model.state.items():
        for key in ("running_mean", "running_var"):
            if key in state:
                np.testing.assert_allclose(dev.model.state[layer][key], state[key], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_kernels_match_the_reference(on_host, monkeypatch, dtype, approximate):
    """GELU through its CUDA kernels (Phi in double, erfc of the C library's math) and the
    fast layers' GPU branch, against the reference layer."""
    monkeypatch.setattr(FL, "_gpu_kernels", lambda x: CK)
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(dtype)
    x.flat[:3] = [0.0, np.inf, np.nan]
    dout = rng.standard_normal(x.shape).astype(dtype)
    with config.using(implementation="namespace"), np.errstate(invalid="ignore"):
        out, cache = FL.gelu_forward_fast(x, approximate)
        dx = FL.gelu_backward_fast(dout, cache)
        want, wcache = L.gelu_forward(x, approximate)
        dwant = L.gelu_backward(dout, wcache)
    for got, ref in ((out, want), (dx, dwant)):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, ref, rtol=1e-13 if dtype == np.float64 else 1e-6, atol=1e-14)
