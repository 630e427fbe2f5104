"""funkcije.backend: array namespaces and host/device moves. GPU tests are marked `gpu`
and skip cleanly without CuPy or a CUDA device."""
import importlib.util

import numpy as np
import pytest

from funkcije import backend

HAS_CUPY = importlib.util.find_spec("cupy") is not None
gpu = pytest.mark.skipif(not (HAS_CUPY and backend.gpu_available()), reason="needs CuPy and a CUDA device")


def test_namespace_of_numpy_arrays_and_scalars():
    x = np.ones(3)
    assert backend.namespace(x) is np
    assert backend.namespace(x, None, 2.0, np.float32(1)) is np
    assert backend.namespace() is np
    with pytest.raises(TypeError, match="not an array"):
        backend.namespace([1, 2])


def test_namespace_follows_the_array_api_standard():
    xps = pytest.importorskip("array_api_strict")
    a = xps.asarray([1.0, 2.0])
    assert backend.namespace(a) is xps
    with pytest.raises(TypeError, match="mixed"):
        backend.namespace(a, np.ones(2))


def test_to_device_cpu_keeps_arrays_and_rebuilds_containers():
    w = np.arange(4.0)
    moved = backend.to_device({"W": w, "list": [w, (w, "s")], "n": 3}, "cpu")
    assert moved["W"] is w and moved["list"][0] is w and moved["list"][1][0] is w
    assert moved["list"][1][1] == "s" and moved["n"] == 3
    assert isinstance(moved["list"][1], tuple)
    assert backend.device_of(w) == "cpu"


def test_bad_device_and_missing_cupy_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(np.ones(2), "tpu")
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(ImportError, match=r"to_device: CuPy is not installed.*\.\[gpu\]"):
        backend.to_device(np.ones(2), "gpu")
    assert backend.gpu_available() is False


@gpu
def test_round_trip_through_the_gpu():
    import cupy

    x = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    g = backend.to_device(x, "gpu")
    assert isinstance(g["a"], cupy.ndarray) and backend.device_of(g["a"]) == "gpu"
    assert backend.namespace(g["a"]) is cupy
    back = backend.to_device(g, "cpu")
    np.testing.assert_array_equal(back["a"], x["a"])
    with pytest.raises(TypeError, match="mixed"):
        backend.namespace(g["a"], x["a"])


# ----------------------------------------------------------------------------- fast layers on other namespaces
# array-api-strict stands in for CuPy on the CPU: it rejects every call outside the Array
# API standard, so layers that run on it run on any conforming library (kernels/xp_kernels.py).

from funkcije import fast_layers as FL  # noqa: E402
from funkcije import layers as L  # noqa: E402


def _strict(*arrays):
    xps = pytest.importorskip("array_api_strict")
    return [xps.asarray(a) for a in arrays]


def _host(a):
    return np.asarray(a)


def _close(got, want, dtype):
    assert type(got).__module__.startswith("array_api_strict")
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(_host(got), want, **tol)


LAYER_CASES = {
    "conv": (lambda x, r: ((r.standard_normal((6, 2, 3, 2)), r.standard_normal(6)),
                           {"stride": (2, 1), "pad": (1, 2), "dilation": (1, 2), "groups": 2}),
             FL.conv_forward_fast, FL.conv_backward_fast, L.conv_forward_naive, L.conv_backward_naive),
    "max_pool": (lambda x, r: ((), {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}),
                 FL.max_pool_forward_fast, FL.max_pool_backward_fast,
                 L.max_pool_forward_naive, L.max_pool_backward_naive),
    "avg_pool": (lambda x, r: ((), {"pool_height": 2, "pool_width": 3, "stride": 2}),
                 FL.avg_pool_forward_fast, FL.avg_pool_backward_fast,
                 L.avg_pool_forward_naive, L.avg_pool_backward_naive),
    "batchnorm": (lambda x, r: ((r.standard_normal(4), r.standard_normal(4)), {"mode": "train"}),
                  FL.spatial_batchnorm_forward_fast, FL.spatial_batchnorm_backward_fast,
                  L.spatial_batchnorm_forward, L.spatial_batchnorm_backward),
    "affine": (lambda x, r: ((r.standard_normal((4 * 9 * 8, 5)), r.standard_normal(5)), None),
               FL.affine_forward_fast, FL.affine_backward_fast, L.affine_forward, L.affine_backward),
    "relu": (lambda x, r: ((), None), FL.relu_forward_fast, FL.relu_backward_fast, L.relu_forward, L.relu_backward),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_fast_layers_run_on_array_api_strict_arrays(name, dtype):
    make, fwd, bwd, ref_fwd, ref_bwd = LAYER_CASES[name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    params, setting = make(x, rng)
    params = tuple(p.astype(dtype) for p in params)
    extra = () if setting is None else (setting,)
    want, ref_cache = ref_fwd(x, *params, *(dict(setting),) if setting else ())
    sx, *sp = _strict(x, *params)
    got, cache = fwd(sx, *sp, *(dict(setting),) if setting else ())
    _close(got, want, dtype)
    dout = rng.standard_normal(want.shape).astype(dtype)
    ref_grads = ref_bwd(dout, ref_cache)
    grads = bwd(*_strict(dout), cache)
    if not isinstance(grads, tuple):
        grads, ref_grads = (grads,), (ref_grads,)
    assert len(grads) == len(ref_grads) and extra is not None
    for g, r in zip(grads, ref_grads):
        assert g.dtype == got.dtype
        _close(g, r, dtype)


def test_fused_batchnorm_relu_and_test_mode_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 4, 4)) + 2.0
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    bn, sbn = {"mode": "train", "unbiased": True}, {"mode": "train", "unbiased": True}
    want, _ = FL.spatial_batchnorm_forward_fast(x, gamma, beta, bn, relu=True)
    got, cache = FL.spatial_batchnorm_forward_fast(*_strict(x, gamma, beta), sbn, relu=True)
    _close(got, want, np.float64)
    # the running statistics stay on the arrays' side and agree with the NumPy path's
    for key in ("running_mean", "running_var"):
        _close(sbn[key], bn[key], np.float64)
    sbn["mode"], bn["mode"] = "test", "test"
    want, _ = FL.spatial_batchnorm_forward_fast(x, gamma, beta, bn)
    got, _ = FL.spatial_batchnorm_forward_fast(*_strict(x, gamma, beta), sbn)
    _close(got, want, np.float64)
    assert isinstance(sbn["running_mean"], type(xps.asarray(1.0)))


def test_fast_layers_refuse_mixed_namespaces():
    xps = pytest.importorskip("array_api_strict")
    x = np.ones((2, 3, 4, 4))
    with pytest.raises(TypeError, match="mixed"):
        FL.conv_forward_fast(xps.asarray(x), np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1})
