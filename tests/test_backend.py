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
    with pytest.raises(ImportError, match=r"device_name: CuPy is not installed"):
        backend.device_name("gpu")
    assert backend.device_name("cpu")  # the CPU's model name needs nothing


def test_cpu_name_gives_family_and_model_of_the_first_processor():
    zen5 = ["processor\t: 0\n", "vendor_id\t: AuthenticAMD\n", "cpu family\t: 26\n",
            "model\t\t: 2\n", "model name\t: AMD EPYC\n", "\n",
            "processor\t: 1\n", "cpu family\t: 25\n", "model\t\t: 17\n", "model name\t: other\n"]
    assert backend._cpu_name_from_cpuinfo(zen5) == "AMD EPYC (family 26, model 2)"
    # no family or model numbers (other architectures): the name alone; no name: ""
    assert backend._cpu_name_from_cpuinfo(["model name : Some CPU\n"]) == "Some CPU"
    assert backend._cpu_name_from_cpuinfo(["processor : 0\n", "BogoMIPS : 50\n"]) == ""


def test_blas_kernels_name_the_kernels_and_who_chose_them(monkeypatch):
    from types import SimpleNamespace

    from funkcije.kernels import runtime

    fake = SimpleNamespace(internal_api="openblas", architecture="SkylakeX")
    monkeypatch.setattr(runtime, "_BLAS", [fake])
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert runtime.blas_kernels() == "SkylakeX (detected)"
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    fake.architecture = "Haswell"
    assert runtime.blas_kernels() == "Haswell (OPENBLAS_CORETYPE=Haswell)"
    monkeypatch.setattr(runtime, "_BLAS", [SimpleNamespace(internal_api="mkl", architecture=None)])
    assert runtime.blas_kernels() == ""  # not OpenBLAS: nothing claimed
    monkeypatch.setattr(runtime, "_BLAS", [])
    assert runtime.blas_kernels() == ""


def test_numpys_blas_is_told_from_other_packages_copies():
    """A wheel's numpy: the OpenBLAS in numpy.libs/, not scipy's or torch's copies; a conda
    or distribution numpy: the environment's shared BLAS outside every package's folder."""
    from types import SimpleNamespace as C

    from funkcije.kernels.runtime import _numpy_blas_of

    site = "/env/lib/python3.11/site-packages/"
    wheel = C(filepath=site + "numpy.libs/libscipy_openblas64_-32a4b2a6.so")
    scipy = C(filepath=site + "scipy.libs/libscipy_openblas-68440149.so")
    torch = C(filepath=site + "torch/lib/libtorch_cpu.so")
    conda = C(filepath="/opt/conda/lib/libopenblasp-r0.3.28.so")
    debian = C(filepath="/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
    assert _numpy_blas_of([scipy, wheel, torch]) == [wheel]
    assert _numpy_blas_of([conda, torch]) == [conda]
    assert _numpy_blas_of([debian, C(filepath="/usr/lib/python3/dist-packages/scipy.libs/x.so")]) == [debian]
    assert _numpy_blas_of([scipy, torch, C(filepath=None)]) == []


def test_the_engine_says_when_it_cannot_hold_numpys_blas():
    """Without control of numpy's BLAS the engine keeps to one thread, and says so once."""
    import subprocess
    import sys

    code = ("import threadpoolctl, warnings\n"
            "threadpoolctl.ThreadpoolController.select = lambda self, **kw: (_ for _ in ()).throw(OSError())\n"
            "import funkcije.kernels.runtime as R\n"
            "print(R.blas_controlled(), R.get_conv_threads())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "1"]
    if "cython" in FL.available_implementations():
        assert "finds no BLAS library of numpy's" in res.stderr and res.stderr.count("RuntimeWarning") == 1


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


@pytest.fixture(autouse=True)
def _no_implicit_download(monkeypatch):
    """array-api-strict's arrays refuse NumPy's implicit conversion here, as CuPy's do
    (`np.asarray(cupy_array)` is a TypeError there): library code must move data to the
    host explicitly (`backend.to_host`), or a test that passes on the stand-in would fail
    on a GPU."""
    try:
        import array_api_strict
    except ImportError:
        return
    Array = type(array_api_strict.asarray(0.0))

    def refuse(self, *args, **kwargs):
        raise TypeError("implicit conversion of a device array to a NumPy array (CuPy refuses it): "
                        "use backend.to_host")

    monkeypatch.setattr(Array, "__array__", refuse)
    monkeypatch.setattr(Array, "__buffer__", refuse, raising=False)


def test_the_stand_in_refuses_implicit_downloads_as_cupy_does():
    (a,) = _strict(np.arange(3.0))
    for implicit in (np.asarray, np.array, np.sum, lambda v: np.zeros(3)[v]):
        with pytest.raises(TypeError, match="backend.to_host"):
            implicit(a)
    got = backend.to_host(a)
    assert type(got) is np.ndarray and got.tolist() == [0.0, 1.0, 2.0]
    got[0] = 5.0  # a download is a copy
    assert backend.to_host(a)[0] == 0.0


def _strict(*arrays):
    xps = pytest.importorskip("array_api_strict")
    return [xps.asarray(a) for a in arrays]


def _host(a):
    return backend.to_host(a)


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
    want, ref_cache = ref_fwd(x, *params, *(dict(setting),) if setting else ())
    sx, *sp = _strict(x, *params)
    got, cache = fwd(sx, *sp, *(dict(setting),) if setting else ())
    _close(got, want, dtype)
    dout = rng.standard_normal(want.shape).astype(dtype)
    ref_grads = ref_bwd(dout, ref_cache)
    grads = bwd(*_strict(dout), cache)
    if not isinstance(grads, tuple):
        grads, ref_grads = (grads,), (ref_grads,)
    assert len(grads) == len(ref_grads)
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


# ----------------------------------------------------------------------------- models and the Solver off the CPU


ZOO_AT_WIDTH = {
    "ResNet9": dict(width=1 / 16), "VGG7BN": dict(width=1 / 16), "FERMnistNet": {}, "FERCifarNet": {},
    "FastCifarNet": dict(width=1 / 16),
}


@pytest.mark.parametrize("name", sorted(ZOO_AT_WIDTH))
def test_zoo_models_on_another_namespace_match_the_cpu(name):
    from funkcije.classifiers import zoo

    def make():
        return getattr(zoo, name)(seed=0, dtype=np.float64, reg=1e-3, label_smoothing=0.1, **ZOO_AT_WIDTH[name])

    rng = np.random.default_rng(0)
    model = make()
    X = rng.standard_normal((4,) + model.input_shape)
    y = rng.integers(0, 10, 4)
    if name == "FastCifarNet":
        model.fit(X)
    import copy

    host = model
    pytest.importorskip("array_api_strict")
    dev = copy.deepcopy(host).to("array_api_strict")
    assert dev.device == "array_api_strict" and all(backend.device_of(p) == dev.device for p in dev.params.values())
    loss, grads = host.loss(X, y)
    dloss, dgrads = dev.loss(X, y)  # host batches are uploaded
    assert abs(dloss - loss) < 1e-12 * max(1.0, abs(loss))
    for k, g in grads.items():
        assert backend.device_of(dgrads[k]) == dev.device
        np.testing.assert_allclose(backend.to_host(dgrads[k]), g, rtol=1e-9, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(backend.to_host(dev.loss(X)), host.loss(X), rtol=1e-10, atol=1e-12)
    for layer, state in host.state.items():
        for key in ("running_mean", "running_var"):
            if key in state:
                np.testing.assert_allclose(backend.to_host(dev.state[layer][key]), state[key], rtol=1e-12, atol=1e-15)
    dev.to("cpu")
    assert all(isinstance(p, np.ndarray) for p in dev.params.values())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_losses_on_another_namespace_match_the_reference(dtype):
    """The namespace softmax and hinge losses (what a model off the CPU trains on)
    against layers.softmax_loss and layers.svm_loss, margins of exactly 0 included."""
    from funkcije.kernels import xp_kernels as XK

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 5)).astype(dtype)
    y = rng.integers(0, 5, 7)
    x[0, (y[0] + 1) % 5] = x[0, y[0]] - 1  # a margin that is exactly zero
    sx, sy = _strict(x, y)
    for got, want in ((XK.svm_loss(sx, sy), L.svm_loss(x, y)),
                      (XK.softmax_loss(sx, sy, 0.1), L.softmax_loss(x, y, label_smoothing=0.1))):
        assert isinstance(got[0], float)
        assert got[0] == pytest.approx(want[0], rel=1e-12 if dtype == np.float64 else 1e-6)
        assert got[1].dtype == sx.dtype
        _close(got[1], want[1], dtype)


def test_a_hinge_loss_model_on_another_namespace_matches_the_cpu():
    import copy

    from funkcije.classifiers.sequential import Affine, Conv2d, Flatten, ReLU, Sequential

    pytest.importorskip("array_api_strict")
    host = Sequential(Conv2d(4, 3, pad=1), ReLU(), Flatten(), Affine(10), input_shape=(2, 5, 5), loss="hinge",
                      reg=1e-3, dtype=np.float64, seed=0)
    dev = copy.deepcopy(host).to("array_api_strict")
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 2, 5, 5)), rng.integers(0, 10, 6)
    loss, grads = host.loss(X, y)
    dloss, dgrads = dev.loss(X, y)
    assert dloss == pytest.approx(loss, rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(backend.to_host(dgrads[k]), g, rtol=1e-9, atol=1e-12 * np.abs(g).max())
    assert dev.data_loss(dev.loss(X), y) == pytest.approx(host.data_loss(host.loss(X), y), rel=1e-12)


def test_a_model_off_the_cpu_takes_integer_batches_there_and_refuses_others():
    """A batch already on the device: integer images are cast to the model's dtype there
    (as host batches are), complex ones and a wrong shape are refused clearly."""
    import copy

    from funkcije.classifiers.sequential import Affine, Flatten, Sequential

    xps = pytest.importorskip("array_api_strict")
    host = Sequential(Flatten(), Affine(3), input_shape=(2, 2, 2), dtype=np.float32, seed=0)
    dev = copy.deepcopy(host).to("array_api_strict")
    X = np.arange(24, dtype=np.uint8).reshape(3, 2, 2, 2)
    scores = dev.loss(xps.asarray(X))
    assert scores.dtype == xps.float32
    np.testing.assert_allclose(backend.to_host(scores), host.loss(X), rtol=1e-6)
    with pytest.raises(TypeError, match="real numbers"):
        dev.loss(xps.asarray(X.astype(np.complex64)))
    with pytest.raises(ValueError, match=r"\(N, 2, 2, 2\)"):
        dev.loss(xps.asarray(X[:, :1]))


def test_the_gpu_check_scripts_model_checks_run_on_the_stand_in(monkeypatch):
    """benchmarks/gpu_check.py's model checks with array-api-strict as "the GPU": every
    row there and passing, so the script's own mistakes surface before GPU time is spent."""
    import pathlib
    import sys

    from funkcije.classifiers.sequential import Sequential

    pytest.importorskip("array_api_strict")
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)
    spec.loader.exec_module(gpu_check)
    real_to = Sequential.to
    monkeypatch.setattr(Sequential, "to", lambda self, device: real_to(
        self, "array_api_strict" if device == "gpu" else device))
    rows = gpu_check.check_models()
    assert [r["model"] for r in rows] == ["FERMnistNet", "FERCifarNet", "FERCifarNet hinge", "VGG7", "VGG7BN",
                                          "ResNet9", "FastCifarNet"]
    assert all(r["ok"] for r in rows), rows


@pytest.mark.parametrize("rule", ["sgd_nesterov", "adam", "sgdw", "adamw", "rmsprop", "sgd_momentum", "sgd"])
def test_solver_trains_a_model_off_the_cpu_like_on_it(rule, tmp_path):
    """The Solver on a model moved to another namespace: the same steps as on the CPU
    (float64), host checkpoints, and a resume that lands on the model's device."""
    from funkcije.classifiers import zoo
    from funkcije.solver import Solver

    pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(1)
    data = {"X_train": rng.standard_normal((16, 3, 32, 32)), "y_train": rng.integers(0, 10, 16),
            "X_val": rng.standard_normal((8, 3, 32, 32)), "y_val": rng.integers(0, 10, 8)}

    def run(device, **kw):
        model = zoo.ResNet9(width=1 / 32, seed=0, dtype=np.float64, reg=1e-3)
        if device != "cpu":
            model.to(device)
        solver = Solver(model, data, update_rule=rule, optim_config={"learning_rate": 1e-2}, batch_size=8,
                        num_epochs=2, seed=0, verbose=False, **kw)
        solver.train()
        return model, solver

    host, hs = run("cpu")
    dev, ds = run("array_api_strict", checkpoint_name=str(tmp_path / "ck"))
    assert dev.device == "array_api_strict"
    np.testing.assert_allclose(ds.loss_history, hs.loss_history, rtol=1e-10)
    assert ds.val_acc_history == hs.val_acc_history
    for k, w in host.params.items():
        np.testing.assert_allclose(backend.to_host(dev.params[k]), w, rtol=1e-9, atol=1e-12)
    from funkcije import checkpoint
    from funkcije.solver import CHECKPOINT_FORMAT

    ckpt = checkpoint.read(tmp_path / "ck_epoch_1.pkl", CHECKPOINT_FORMAT)
    assert all(isinstance(v, np.ndarray) for v in ckpt["params"].values())
    # resume epoch 1 onto the device: the rest of the run is the uninterrupted one
    model = zoo.ResNet9(width=1 / 32, seed=5, dtype=np.float64, reg=1e-3).to("array_api_strict")
    resumed = Solver(model, data, resume=str(tmp_path / "ck_epoch_1.pkl"), verbose=False)
    resumed.train()
    assert all(backend.device_of(p) == "array_api_strict" for p in model.params.values())
    np.testing.assert_allclose(resumed.loss_history, hs.loss_history, rtol=1e-10)
    for k, w in host.params.items():
        np.testing.assert_allclose(backend.to_host(model.params[k]), w, rtol=1e-9, atol=1e-12)


def test_moving_a_model_is_refused_clearly():
    from funkcije import config
    from funkcije.classifiers import zoo

    model = zoo.FERMnistNet(seed=0)
    with pytest.raises(ValueError, match=r"FERMnistNet.to: .*device must be one of"):
        model.to("tpu")
    with config.using(layers="reference"):
        with pytest.raises(ValueError, match="only the fast layers"):
            model.to("array_api_strict")
    from funkcije.classifiers.sequential import (
        Affine, BatchNorm1d, Conv2d, Flatten, GlobalAvgPool, GroupNorm, LayerNorm, LeakyReLU, Residual, Sequential,
        Sigmoid, Tanh)

    pytest.importorskip("array_api_strict")
    cases = [
        ([GroupNorm(2), Flatten(), BatchNorm1d()], "BatchNorm1d, GroupNorm run"),
        ([Sigmoid(), Flatten(), LayerNorm()], "LayerNorm, Sigmoid run"),
        ([Residual(Conv2d(4, 3, pad=1), LeakyReLU()), Flatten(), Tanh()], "LeakyReLU, Tanh run"),
        ([GlobalAvgPool()], "GlobalAvgPool runs"),
    ]
    for layers, names in cases:
        m = Sequential(Conv2d(4, 3, pad=1), *layers, Affine(3), input_shape=(2, 5, 5), seed=0)
        with pytest.raises(ValueError, match=rf"^Sequential.to: {names} on the CPU only"):
            m.to("array_api_strict")
        assert all(isinstance(p, np.ndarray) for p in m.params.values())  # nothing moved


def test_fallbacks_stand_in_for_standard_names_a_module_lacks():
    """A CuPy without array-api-compat and without NumPy 2's names still runs the
    namespace kernels: the NumPy-style equivalents stand in (checked here on a module
    that has only those)."""
    import types

    old_style = types.SimpleNamespace(**{k: getattr(np, k) for k in ("transpose", "swapaxes", "concatenate")})
    old_style.__name__ = "cupy"
    xp = backend._Fallbacks(old_style)
    a = np.arange(24.0).reshape(2, 3, 4)
    assert xp.permute_dims(a, (2, 0, 1)).shape == (4, 2, 3)
    np.testing.assert_array_equal(xp.matrix_transpose(a), np.swapaxes(a, -1, -2))
    assert xp.concat([a, a], axis=1).shape == (2, 6, 4)
    assert xp.astype(a, np.float32).dtype == np.float32
    with pytest.raises(AttributeError):
        xp.no_such_function  # noqa: B018


# ----------------------------------------------------------------------------- data on the device
# Images uploaded once: augmentation, batch gathering and evaluation happen where they live,
# with the same host random draws as on the CPU, so the results are the same element for element.

from funkcije import augment as A  # noqa: E402

DEVICE_TRANSFORMS = {
    "crop zero": lambda: A.RandomCrop(3, mode="zero"),
    "crop reflect": lambda: A.RandomCrop(4, mode="reflect"),
    "crop 0": lambda: A.RandomCrop(0),
    "translate": lambda: A.Translate(2),
    "flip": lambda: A.HorizontalFlip(0.5),
    "cutout": lambda: A.Cutout(5, p=0.7),
    "crop reflect, flip, cutout": lambda: A.parse("crop:2:reflect,flip,cutout:4"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(DEVICE_TRANSFORMS))
def test_augmentation_on_device_arrays_equals_the_numpy_path(name, dtype):
    xps = pytest.importorskip("array_api_strict")
    X = np.random.default_rng(0).standard_normal((7, 3, 6, 5)).astype(dtype)
    t = DEVICE_TRANSFORMS[name]()
    want = t(X, np.random.default_rng(11))
    got = t(xps.asarray(X), np.random.default_rng(11))
    assert backend.device_of(got) == "array_api_strict" and backend.dtype_name(got) == np.dtype(dtype).name
    np.testing.assert_array_equal(backend.to_host(got), want)


def test_alternating_flip_and_the_deterministic_views_on_device_arrays():
    xps = pytest.importorskip("array_api_strict")
    X = np.random.default_rng(1).standard_normal((6, 2, 5, 7))
    sX = xps.asarray(X)
    idx = np.array([5, 0, 9, 3, 2, 8])
    t = A.AlternatingFlip()
    for epoch in (0, 1):
        np.testing.assert_array_equal(backend.to_host(t(sX, np.random.default_rng(0), index=idx, epoch=epoch)),
                                      t(X, np.random.default_rng(0), index=idx, epoch=epoch))
    np.testing.assert_array_equal(backend.to_host(A.hflip(sX)), A.hflip(X))
    for dy, dx, mode in ((1, -2, "reflect"), (-3, 0, "zero"), (2, 2, "zero")):
        np.testing.assert_array_equal(backend.to_host(A.translate(sX, dy, dx, mode)), A.translate(X, dy, dx, mode))
    norm = A.Normalize([0.5, -1.0], [2.0, 0.25])
    np.testing.assert_allclose(backend.to_host(norm(sX)), norm(X), rtol=1e-15)
    with pytest.raises(ValueError, match="^RandomCrop: reflect padding of 5"):
        A.RandomCrop(5, mode="reflect")(sX, np.random.default_rng(0))


def _strict_data(data):
    """data with its images on the array-api-strict 'device' (labels too: the Solver
    keeps them on the host itself)."""
    return {k: backend.to_device(v, "array_api_strict") for k, v in data.items()}


def test_solver_trains_on_data_that_lives_on_the_device():
    """Data uploaded once, batches gathered and augmented on the device: the same run,
    step for step, as with host data; evaluate reads device images too."""
    from funkcije import metrics
    from funkcije.classifiers import zoo
    from funkcije.solver import Solver

    pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    data = {"X_train": rng.standard_normal((24, 3, 32, 32)), "y_train": rng.integers(0, 10, 24),
            "X_val": rng.standard_normal((10, 3, 32, 32)), "y_val": rng.integers(0, 10, 10)}

    def run(device, data):
        model = zoo.ResNet9(width=1 / 32, seed=0, dtype=np.float64, reg=1e-3)
        if device != "cpu":
            model.to(device)
        solver = Solver(model, data, update_rule="sgd_nesterov", optim_config={"learning_rate": 1e-2},
                        batch_size=8, num_epochs=2, seed=0, verbose=False, num_train_samples=12,
                        augment="crop:4:reflect,flip,cutout:8")
        solver.train()
        return model, solver

    host, hs = run("cpu", data)
    dev, ds = run("array_api_strict", _strict_data(data))
    np.testing.assert_allclose(ds.loss_history, hs.loss_history, rtol=1e-10)
    assert ds.train_acc_history == hs.train_acc_history and ds.val_acc_history == hs.val_acc_history
    for k, w in host.params.items():
        np.testing.assert_allclose(backend.to_host(dev.params[k]), w, rtol=1e-9, atol=1e-12)
    want = metrics.evaluate(host, data["X_val"], data["y_val"], batch_size=4, tta="flip_translate")
    got = metrics.evaluate(dev, backend.to_device(data["X_val"], "array_api_strict"),
                           backend.to_device(data["y_val"], "array_api_strict"), batch_size=4, tta="flip_translate")
    assert got.accuracy == want.accuracy and abs(got.loss - want.loss) < 1e-10
    np.testing.assert_array_equal(got.confusion, want.confusion)


def test_solver_refuses_device_data_for_a_model_elsewhere():
    from funkcije.classifiers import zoo
    from funkcije.solver import Solver

    pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((4, 1, 28, 28)), "y_train": rng.integers(0, 10, 4),
            "X_val": rng.standard_normal((2, 1, 28, 28)), "y_val": rng.integers(0, 10, 2)}
    with pytest.raises(ValueError, match=r"X_train is on 'array_api_strict' but the model on 'cpu'"):
        Solver(zoo.FERMnistNet(seed=0), _strict_data(data), verbose=False)


@pytest.mark.parametrize("upload", ["once", "batch"])
def test_train_command_line_on_a_stand_in_gpu(data_root, tmp_path, monkeypatch, upload):
    """`python -m funkcije.train --device gpu` end to end, array-api-strict standing in for
    CuPy: the model, and with --upload once the images, live off the host; the run gives
    the figures of the same run on the CPU."""
    import json

    pytest.importorskip("array_api_strict")
    from funkcije import train

    args = ["--model", "fer_mnist", "--dataset", "fashion-mnist", "--epochs", "1", "--num-train", "200",
            "--num-val", "50", "--num-test", "100", "--batch-size", "50", "--update-rule", "sgd_momentum",
            "--lr", "0.05", "--augment", "crop:2,flip", "--dtype", "float64", "--quiet"]
    monkeypatch.setenv("FUNKCIJE_DATA", str(data_root))
    assert train.main(args + ["--out", str(tmp_path / "cpu")]) == 0

    real_to_device, real_device_of = backend.to_device, backend.device_of
    moved = []

    def to_device(obj, device):
        if device == "gpu":
            moved.append(obj)
        return real_to_device(obj, "array_api_strict" if device == "gpu" else device)

    monkeypatch.setattr(backend, "require_cupy", lambda where="": None)
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    real_device_name = backend.device_name
    monkeypatch.setattr(backend, "device_name",
                        lambda device="cpu": "stand-in GPU" if device == "gpu" else real_device_name(device))
    monkeypatch.setattr(backend, "to_device", to_device)
    monkeypatch.setattr(backend, "device_of", lambda a: "gpu" if real_device_of(a) == "array_api_strict"
                        else real_device_of(a))
    assert train.main(args + ["--device", "gpu", "--upload", upload, "--out", str(tmp_path / "gpu")]) == 0
    sizes = [a.shape[0] for a in moved if backend.is_array(a) and a.ndim == 4]
    if upload == "once":  # the train, val and test images, and no batch after them
        assert sizes == [200, 50, 100]
    else:  # every batch (the epoch's four training batches of 50 among them), never the training set
        assert sizes.count(50) >= 4 and 200 not in sizes
    cpu = json.loads((tmp_path / "cpu" / "history.json").read_text())
    gpu = json.loads((tmp_path / "gpu" / "history.json").read_text())
    np.testing.assert_allclose(gpu["loss_history"], cpu["loss_history"], rtol=1e-9)
    for key in ("val_acc", "test_acc"):
        assert gpu["results"][key] == cpu["results"][key]
    from funkcije import config

    assert cpu["results"]["device"] == "cpu" and cpu["results"]["machine"] == real_device_name("cpu")
    from funkcije.kernels.runtime import blas_kernels
    assert cpu["results"]["blas_kernels"] == blas_kernels()
    assert gpu["results"]["device"] == "gpu" and gpu["results"]["machine"] == "stand-in GPU"
    assert cpu["results"]["engine"] == gpu["results"]["engine"] == config.get()


def test_callbacks_and_pictures_read_a_model_on_the_device(tmp_path):
    """Filter snapshots, weight histograms and Lookahead during a run on the device, and the
    pictures of its parameters, give what they give for the same run on the CPU."""
    from funkcije import callbacks, vis_utils
    from funkcije.classifiers import zoo
    from funkcije.solver import Solver

    pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(4)
    data = {"X_train": rng.standard_normal((16, 1, 28, 28)), "y_train": rng.integers(0, 10, 16),
            "X_val": rng.standard_normal((8, 1, 28, 28)), "y_val": rng.integers(0, 10, 8)}

    def run(device):
        model = zoo.FERMnistNet(seed=0, dtype=np.float64)
        if device != "cpu":
            model.to(device)
        watch = [callbacks.FilterSnapshots(tmp_path / device / "filters", every=2),
                 callbacks.WeightHistograms(tmp_path / device / "weights.png"),
                 callbacks.Lookahead(every=2, decay=0.5, power=1)]
        Solver(model, _strict_data(data) if device != "cpu" else data, update_rule="sgd_momentum",
               optim_config={"learning_rate": 1e-2}, batch_size=8, num_epochs=2, seed=0, verbose=False,
               callbacks=watch).train()
        return model, watch

    host, hw = run("cpu")
    dev, dw = run("array_api_strict")
    assert len(dw[0].snapshots) == len(hw[0].snapshots) > 1
    for a, b in zip(dw[0].snapshots, hw[0].snapshots):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    W = dev.params["conv1.W"]
    assert backend.device_of(W) == "array_api_strict"
    np.testing.assert_array_equal(vis_utils.filter_grid(W), vis_utils.filter_grid(host.params["conv1.W"]))
    assert (tmp_path / "array_api_strict" / "weights.png").is_file()


@pytest.mark.parametrize("rule", ["sgd_momentum", "adam"])
def test_update_state_on_the_device_takes_the_parameters_dtype(rule):
    """A float64 state beside a float32 device parameter is cast to float32 (Contract 4),
    as on the host: the state never upcasts the parameter, and a one-pass kernel gets one dtype."""
    from funkcije import optim

    w, dw, s = _strict(np.ones(4, dtype=np.float32), np.ones(4, dtype=np.float32), np.ones(4))
    key = "velocity" if rule == "sgd_momentum" else "m"
    next_w, config = optim.get_update_rule(rule)(w, dw, {key: s})
    assert next_w.dtype == w.dtype and config[key].dtype == w.dtype
    assert type(config[key]).__module__.startswith("array_api_strict")


def test_gelu_off_the_cpu_tanh_form_runs_exact_form_refused_clearly():
    """The Array API has no erf: GELU's tanh form runs on any array library (against the
    reference), the exact form says it needs funkcije's CUDA kernels."""
    x_h = np.random.default_rng(3).standard_normal((2, 3, 4)) * 3
    (x,) = _strict(x_h)
    out, cache = FL.gelu_forward_fast(x, "tanh")
    want, wcache = L.gelu_forward(x_h, "tanh")
    np.testing.assert_allclose(_host(out), want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(_host(FL.gelu_backward_fast(_strict(np.ones_like(x_h))[0], cache)),
                               L.gelu_backward(np.ones_like(x_h), wcache), rtol=1e-13, atol=1e-15)
    with pytest.raises(TypeError, match="erf.*CUDA kernels.*approximate='tanh'"):
        FL.gelu_forward_fast(x)
