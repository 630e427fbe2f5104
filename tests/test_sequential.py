"""Composed models: the new functional pairs, every layer object, Sequential and Residual,
config switches, and the Solver on a composed model."""
import numpy as np
import pytest

from funkcije import fast_layers as FL

from funkcije import config
from funkcije import layers as L
from funkcije.classifiers import sequential as S
from funkcije.classifiers.sequential import (
    Affine, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GELU, GlobalAvgPool, GroupNorm,
    LayerNorm, LeakyReLU, MaxPool2d, PatchWhiten, ReLU, Residual, Scale, Sequential, Sigmoid, Tanh,
)
from funkcije.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, grad_check_sparse, rel_error
from funkcije.solver import Solver


def _scaled_error(a, b):
    """max |a - b| over the larger of the two gradients' magnitudes: where a gradient
    crosses zero (GELU' vanishes at x = -0.75) the elementwise relative error of a
    finite difference measures its rounding, not the gradient."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300))


def _separated(rng, shape, gap=1e-3):
    """Values with no two closer than gap (no ties or kinks within a finite-difference step)."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2) * gap + rng.uniform(0, gap / 4, n)
    return v.reshape(shape)


# ----------------------------------------------------------------------------- new functional pairs

UNARY = [
    ("leaky_relu", lambda x: L.leaky_relu_forward(x, 0.1), L.leaky_relu_backward),
    ("sigmoid", L.sigmoid_forward, L.sigmoid_backward),
    ("tanh", L.tanh_forward, L.tanh_backward),
    ("gelu", L.gelu_forward, L.gelu_backward),
    ("gelu_tanh", lambda x: L.gelu_forward(x, "tanh"), L.gelu_backward),
    ("scale", lambda x: L.scale_forward(x, -2.5), L.scale_backward),
    ("flatten", L.flatten_forward, L.flatten_backward),
    ("global_avg_pool", L.global_avg_pool_forward, L.global_avg_pool_backward),
]


@pytest.mark.parametrize("name,fwd,bwd", UNARY, ids=[u[0] for u in UNARY])
def test_new_pairs_numerical_gradient(name, fwd, bwd, rng):
    x = _separated(rng, (3, 4, 5, 2), gap=3e-2) if name == "leaky_relu" else rng.standard_normal((3, 4, 5, 2)) * 2
    out, cache = fwd(x)
    dout = rng.standard_normal(out.shape)
    dx = bwd(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: fwd(v)[0], x.copy(), dout)
    assert dx.shape == x.shape
    assert _scaled_error(dx, dx_num) < 1e-9
    if not name.startswith("gelu"):
        assert rel_error(dx, dx_num) < 1e-7


@pytest.mark.parametrize("name,fwd,bwd", UNARY, ids=[u[0] for u in UNARY])
def test_new_pairs_keep_float32(name, fwd, bwd, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, cache = fwd(x)
    assert out.dtype == np.float32
    dx = bwd(np.ones_like(out), cache)
    assert dx.dtype == np.float32 and dx.shape == x.shape


@pytest.mark.parametrize("name,fwd,bwd", UNARY, ids=[u[0] for u in UNARY])
def test_new_pairs_reject_bad_input(name, fwd, bwd, rng):
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        fwd([[1.0, 2.0]])
    with pytest.raises(TypeError, match="floating dtype"):
        fwd(np.ones((2, 3, 4, 4), dtype=np.int64))
    out, cache = fwd(rng.standard_normal((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="dout must have the forward output's shape"):
        bwd(np.ones((1,) + out.shape[1:]), cache)


def test_new_pairs_against_torch(torch, rng):
    x = rng.standard_normal((4, 6)) * 3
    t = torch.tensor(x, requires_grad=True)
    dout = rng.standard_normal(x.shape)
    cases = [
        (lambda v: L.leaky_relu_forward(v, 0.2), L.leaky_relu_backward, lambda v: torch.nn.functional.leaky_relu(v, 0.2)),
        (L.sigmoid_forward, L.sigmoid_backward, torch.sigmoid),
        (L.tanh_forward, L.tanh_backward, torch.tanh),
        (L.gelu_forward, L.gelu_backward, torch.nn.functional.gelu),
        (lambda v: L.gelu_forward(v, "tanh"), L.gelu_backward, lambda v: torch.nn.functional.gelu(v, approximate="tanh")),
    ]
    for fwd, bwd, tf in cases:
        out, cache = fwd(x)
        t.grad = None
        ref = tf(t)
        ref.backward(torch.tensor(dout))
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bwd(dout, cache), t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_erf_matches_math_erf():
    import math

    z = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 2.9999999, 3.0, 5.9999, 6.0, 1e-300, 40.0, -40.0]])
    ref = np.array([math.erf(v) for v in z])
    assert np.abs(L._erf(z) - ref).max() < 1e-13


def test_sigmoid_no_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    out, _ = L.sigmoid_forward(x)
    assert np.all(np.isfinite(out)) and out[0] == 0.0 and out[-1] == 1.0 and out[2] == 0.5


def test_softmax_label_smoothing_formula_and_gradient(rng, torch):
    x = rng.standard_normal((5, 7))
    y = rng.integers(0, 7, 5)
    eps = 0.1
    loss, dx = L.softmax_loss(x, y, label_smoothing=eps)
    logp = x - x.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    q = np.full_like(x, eps / 7)
    q[np.arange(5), y] += 1 - eps
    assert abs(loss - (-(q * logp).sum() / 5)) < 1e-13
    num = eval_numerical_gradient(lambda v: L.softmax_loss(v, y, label_smoothing=eps)[0], x.copy(), verbose=False)
    assert rel_error(dx, num) < 1e-7
    ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y), label_smoothing=eps)
    assert abs(loss - ref.item()) < 1e-13
    assert L.softmax_loss(x, y, 0.0)[0] == L.softmax_loss(x, y)[0]
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            L.softmax_loss(x, y, label_smoothing=bad)


def test_batchnorm_unbiased_running_var(rng):
    x = rng.standard_normal((6, 3))
    p = {"mode": "train", "unbiased": True, "momentum": 0.5}
    L.batchnorm_forward(x, np.ones(3), np.zeros(3), p)
    np.testing.assert_allclose(p["running_var"], 0.5 * 1 + 0.5 * x.var(axis=0, ddof=1), rtol=1e-14)
    q = {"mode": "train", "momentum": 0.5}
    L.batchnorm_forward(x, np.ones(3), np.zeros(3), q)
    np.testing.assert_allclose(q["running_var"], 0.5 + 0.5 * x.var(axis=0), rtol=1e-14)


# ----------------------------------------------------------------------------- every layer object

# (layers, input shape): a small model around each layer object, ending in scores
LAYER_CASES = {
    "Conv2d": ([Conv2d(4, (3, 2), stride=(2, 1), pad=(1, 0), dilation=(1, 2), groups=2)], (4, 7, 8)),
    "Conv2d_nobias": ([Conv2d(3, 3, pad=1, bias=False)], (2, 5, 5)),
    "BatchNorm2d": ([Conv2d(3, 3, bias=False), BatchNorm2d()], (2, 6, 6)),
    "BatchNorm2d_noscale": ([Conv2d(3, 3, bias=False), BatchNorm2d(scale=False)], (2, 6, 6)),
    "PatchWhiten": ([PatchWhiten(2)], (2, 3, 4)),
    "GroupNorm": ([Conv2d(4, 3), GroupNorm(2)], (2, 6, 6)),
    "BatchNorm1d": ([Flatten(), Affine(6), BatchNorm1d()], (2, 3, 3)),
    "LayerNorm": ([Flatten(), Affine(6), LayerNorm()], (2, 3, 3)),
    "ReLU": ([Conv2d(3, 3), ReLU()], (2, 5, 5)),
    # the fast path runs these two as one fused kernel
    "BatchNorm2d+ReLU": ([Conv2d(4, 3, bias=False), BatchNorm2d(), ReLU(), Conv2d(2, 1)], (2, 6, 6)),
    # the fast path pools first, then applies the ReLU (overlapping windows here)
    "ReLU+MaxPool2d": ([Conv2d(3, 3), ReLU(), MaxPool2d(3, stride=2), Conv2d(2, 1), ReLU(), MaxPool2d(2)], (2, 10, 10)),
    "LeakyReLU": ([Conv2d(3, 3), LeakyReLU(0.1)], (2, 5, 5)),
    "GELU": ([Conv2d(3, 3), GELU()], (2, 5, 5)),
    "Sigmoid": ([Conv2d(3, 3), Sigmoid()], (2, 5, 5)),
    "Tanh": ([Conv2d(3, 3), Tanh()], (2, 5, 5)),
    "MaxPool2d": ([Conv2d(3, 3), MaxPool2d(3, stride=2)], (2, 8, 9)),
    "AvgPool2d": ([Conv2d(3, 3), AvgPool2d((2, 3), stride=(1, 2))], (2, 7, 8)),
    "GlobalAvgPool": ([Conv2d(3, 3), GlobalAvgPool()], (2, 6, 5)),
    "Scale": ([Conv2d(3, 3), Scale(0.125)], (2, 5, 5)),
    "Dropout": ([Conv2d(3, 3), Dropout(0.6)], (2, 5, 5)),
    # (a bias right before batch norm has a zero gradient: bias-free there, as in the zoo)
    "Residual": ([Conv2d(3, 3, pad=1), Residual(Conv2d(3, 3, pad=1, bias=False), BatchNorm2d(), ReLU(), Conv2d(3, 1))],
                 (2, 5, 5)),
}


def _case_model(name, **kw):
    layers, shape = LAYER_CASES[name]
    tail = [] if isinstance(layers[-1], (Affine,)) else [Flatten()]
    kw.setdefault("init", "torch")
    return Sequential(*layers, *tail, Affine(5), input_shape=shape, dtype=np.float64, seed=3, **kw)


# "BatchNorm2d+ReLU" puts ReLU's kink right behind batch norm, whose outputs crowd
# around 0 (2 of its 192 within 5e-5 here), and "ReLU+MaxPool2d" stacks ReLU's kinks on
# max pooling's switches: a finite difference steps across one. Both are compared with
# the reference composition below (test_layer_objects_fast_equals_reference), and
# their parts have numerical gradient checks of their own.
KINKY = {"BatchNorm2d+ReLU", "ReLU+MaxPool2d"}


@pytest.mark.parametrize("name", sorted(set(LAYER_CASES) - KINKY))
def test_layer_objects_gradient_check(name, rng):
    model = _case_model(name, reg=0.3)
    X = _separated(rng, (3,) + model.input_shape, gap=1e-2)
    y = np.array([0, 4, 2])
    model.fit(X)  # PatchWhiten: filters from the data, as in use (the other layers have no fit)
    with config.using(layers="reference"):
        loss, grads = model.loss(X, y)
        assert set(grads) == set(model.params)
        for k, p in model.params.items():
            if name == "Dropout":  # a fixed mask: the same Generator state for every evaluation
                state = model.dropout_param["seed"].bit_generator.state

                def f(_):
                    model.dropout_param["seed"].bit_generator.state = state
                    return model.loss(X, y)[0]
                model.dropout_param["seed"].bit_generator.state = state
                loss, grads = model.loss(X, y)
            else:
                def f(_):
                    return model.loss(X, y)[0]
            num = eval_numerical_gradient(f, p, verbose=False)
            assert rel_error(grads[k], num) < 1e-7, k


@pytest.mark.parametrize("name", sorted(set(LAYER_CASES) - {"Dropout"} - KINKY))
def test_layer_objects_dx(name, rng):
    model = _case_model(name)
    X = _separated(rng, (4,) + model.input_shape, gap=1e-2)
    with config.using(layers="reference"):
        scores, caches = model.forward(X, train=True)
        dscores = rng.standard_normal(scores.shape)
        dx, _ = model.backward(dscores, caches, need_dx=True)
        num = eval_numerical_gradient_array(lambda v: model.forward(v, train=True)[0], X.copy(), dscores)
    assert dx.shape == X.shape and _scaled_error(dx, num) < 1e-8


@pytest.mark.parametrize("name", sorted(set(LAYER_CASES) - {"Dropout"}))
def test_layer_objects_fast_equals_reference(name, rng):
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-4)):
        model = _case_model(name)
        model.params = {k: v.astype(dtype) for k, v in model.params.items()}
        model.dtype = np.dtype(dtype)
        X = rng.standard_normal((3,) + model.input_shape).astype(dtype)
        y = np.array([1, 2, 3])
        loss_fast, g_fast = model.loss(X, y)
        with config.using(layers="reference"):
            loss_ref, g_ref = model.loss(X, y)
        assert type(loss_fast) is np.dtype(dtype).type
        assert abs(loss_fast - loss_ref) <= tol * max(1, abs(loss_ref))
        for k in g_ref:
            assert g_fast[k].dtype == dtype
            assert rel_error(g_fast[k], g_ref[k]) < tol, k


def test_dtype_kept_through_a_model(rng):
    for dtype in (np.float32, np.float64):
        model = _case_model("Residual")
        model = Sequential(*model.layers, input_shape=model.input_shape, dtype=dtype, seed=0)
        assert all(p.dtype == dtype for p in model.params.values())
        X = rng.standard_normal((2,) + model.input_shape)  # float64 data is cast to the model dtype
        assert model.loss(X).dtype == dtype
        loss, grads = model.loss(X, np.array([0, 1]))
        assert isinstance(loss, np.dtype(dtype).type) and all(g.dtype == dtype for g in grads.values())


def test_reference_switch_runs_the_reference(monkeypatch, rng):
    calls = []
    real = L.conv_forward_naive
    monkeypatch.setitem(S._FUNCTIONS["reference"], "conv",
                        (lambda *a: calls.append(1) or real(*a), L.conv_backward_naive))
    model = _case_model("ReLU")
    X = rng.standard_normal((2,) + model.input_shape)
    model.loss(X)
    assert calls == []
    with config.using(layers="reference"):
        model.loss(X)
    assert calls == [1]
    assert config.get("layers") == "fast"


def test_batchnorm_then_relu_fuses_on_the_fast_path_only(monkeypatch, rng):
    seen = []
    real = FL.spatial_batchnorm_forward_fast

    def spy(*a, **kw):
        seen.append(kw.get("relu", False))
        return real(*a, **kw)

    monkeypatch.setitem(S._FUNCTIONS["fast"], "batchnorm2d", (spy, FL.spatial_batchnorm_backward_fast))
    # fused: a BN with a ReLU after it, also inside a Residual; not fused: a BN followed by something else
    model = Sequential(Conv2d(4, 3, pad=1, bias=False), BatchNorm2d(), ReLU(),
                       Residual(Conv2d(4, 3, pad=1, bias=False), BatchNorm2d(), ReLU()),
                       BatchNorm2d(), MaxPool2d(2), Flatten(), Affine(3), input_shape=(2, 6, 6), seed=0)
    X = rng.standard_normal((4, 2, 6, 6))
    loss, grads = model.loss(X, np.array([0, 1, 2, 0]))
    assert seen == [True, True, False]
    with config.using(layers="reference"):
        loss_ref, grads_ref = model.loss(X, np.array([0, 1, 2, 0]))
    assert seen == [True, True, False]  # the reference path does not call the fast functions
    assert abs(loss - loss_ref) < 1e-5
    for k in grads:
        assert rel_error(grads[k], grads_ref[k]) < 2e-4, k


def test_relu_then_max_pool_runs_swapped_on_the_fast_path(monkeypatch, rng):
    shapes = []
    real = FL.relu_forward_fast
    monkeypatch.setitem(S._FUNCTIONS["fast"], "relu",
                        (lambda x: shapes.append(x.shape) or real(x), FL.relu_backward_fast))
    model = Sequential(Conv2d(3, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(3, 3), ReLU(), AvgPool2d(2),
                       Flatten(), Affine(3), input_shape=(2, 8, 8), seed=0, dtype=np.float64)
    X = rng.standard_normal((4, 2, 8, 8))
    y = np.array([0, 1, 2, 0])
    loss, grads = model.loss(X, y)
    assert shapes == [(4, 3, 4, 4), (4, 3, 2, 2)]  # pooled before the first ReLU; the second is before an AvgPool
    with config.using(layers="reference"):
        loss_ref, grads_ref = model.loss(X, y)
    assert abs(loss - loss_ref) < 1e-12
    for k in grads:
        assert rel_error(grads[k], grads_ref[k]) < 1e-10, k


def test_backward_release_uses_the_caches_up_and_changes_nothing_else(rng):
    model = _case_model("Residual")
    X = rng.standard_normal((3,) + model.input_shape)
    scores, caches = model.forward(X, train=True)
    dscores = rng.standard_normal(scores.shape)
    dx_keep, g_keep = model.backward(dscores, caches, need_dx=True)
    dx_rel, g_rel = model.backward(dscores, caches, need_dx=True, release=True)  # the caches survived the first
    assert caches == [None] * len(caches)
    np.testing.assert_array_equal(dx_rel, dx_keep)
    for k in g_keep:
        np.testing.assert_array_equal(g_rel[k], g_keep[k])


# ----------------------------------------------------------------------------- Sequential

def test_param_names_and_state():
    model = Sequential(
        Conv2d(4, 3, pad=1, bias=False), BatchNorm2d(), ReLU(),
        Residual(Conv2d(4, 3, pad=1), BatchNorm2d(), ReLU()),
        MaxPool2d(2), Flatten(), Affine(8), ReLU(), Affine(3),
        input_shape=(2, 6, 6), seed=0,
    )
    assert list(model.params) == ["conv1.W", "bn1.gamma", "bn1.beta", "conv2.W", "conv2.b", "bn2.gamma",
                                  "bn2.beta", "fc1.W", "fc1.b", "fc2.W", "fc2.b"]
    assert model.params["conv1.W"].shape == (4, 2, 3, 3) and model.params["fc1.W"].shape == (36, 8)
    assert list(model.state) == ["bn1", "bn2"]
    assert model.bn_params == [model.state["bn1"], model.state["bn2"]]
    assert all("running_mean" not in k for k in model.params)  # state is not a parameter
    assert model.num_classes == 3 and not hasattr(model, "dropout_param")


def test_reg_applies_to_conv_and_affine_weights_only(rng):
    model = _case_model("BatchNorm2d")
    X = rng.standard_normal((2,) + model.input_shape)
    y = np.array([0, 1])
    base, g0 = model.loss(X, y)
    model.reg = 0.7
    loss, g1 = model.loss(X, y)
    weights = [k for k in model.params if k.endswith(".W")]
    assert weights == ["conv1.W", "fc1.W"]
    expected = 0.5 * 0.7 * sum((model.params[k] ** 2).sum() for k in weights)
    assert abs((loss - base) - expected) < 1e-12
    for k in model.params:
        extra = 0.7 * model.params[k] if k in weights else 0
        np.testing.assert_allclose(g1[k], g0[k] + extra, rtol=1e-12, atol=1e-14)


def test_hinge_loss(rng):
    model = Sequential(Flatten(), Affine(4), input_shape=(3, 2, 2), loss="hinge", dtype=np.float64, seed=1)
    X = rng.standard_normal((5, 3, 2, 2))
    y = rng.integers(0, 4, 5)
    loss, grads = model.loss(X, y)
    assert abs(loss - L.svm_loss(model.loss(X), y)[0]) < 1e-14
    num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params["fc1.W"], verbose=False)
    assert rel_error(grads["fc1.W"], num) < 1e-7


def test_init_schemes():
    def make(init, seed=5):
        return Sequential(Conv2d(64, 3), ReLU(), Flatten(), Affine(200), input_shape=(16, 8, 8), init=init,
                          seed=seed, dtype=np.float64)

    k = make("kaiming")
    assert abs(k.params["conv1.W"].std() - np.sqrt(2 / 144)) < 0.02 * np.sqrt(2 / 144)
    assert not k.params["conv1.b"].any()
    t = make("torch")
    bound = 1 / np.sqrt(144)
    W = t.params["conv1.W"]
    assert W.max() <= bound and W.min() >= -bound and W.max() > 0.99 * bound
    assert np.abs(t.params["conv1.b"]).max() <= bound and t.params["conv1.b"].any()
    g = make(("gaussian", 1e-3))
    assert abs(g.params["fc1.W"].std() - 1e-3) < 2e-5 and not g.params["fc1.b"].any()
    for key in k.params:
        np.testing.assert_array_equal(k.params[key], make("kaiming").params[key])  # same seed, same weights
    assert not np.array_equal(k.params["conv1.W"], make("kaiming", seed=6).params["conv1.W"])
    np.random.seed(231)
    a = make("kaiming", seed=None)
    np.random.seed(231)
    b = make("kaiming", seed=None)
    np.testing.assert_array_equal(a.params["conv1.W"], b.params["conv1.W"])  # Contract 6: the global RNG


def test_float32_and_float64_models_of_one_seed_agree():
    a = Sequential(Conv2d(4, 3), Flatten(), Affine(3), input_shape=(2, 5, 5), dtype=np.float32, seed=2)
    b = Sequential(Conv2d(4, 3), Flatten(), Affine(3), input_shape=(2, 5, 5), dtype=np.float64, seed=2)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-7)


def test_train_and_test_modes(rng):
    model = Sequential(Conv2d(3, 3), BatchNorm2d(momentum=0.5), ReLU(), Dropout(0.5), Flatten(), Affine(2),
                       input_shape=(2, 6, 6), dtype=np.float64, seed=0)
    X = rng.standard_normal((8,) + model.input_shape) * 3 + 1
    y = rng.integers(0, 2, 8)
    st = model.state["bn1"]
    s1 = model.loss(X)
    np.testing.assert_array_equal(st["running_mean"], 0)  # test mode leaves the statistics alone
    np.testing.assert_array_equal(model.loss(X), s1)       # no dropout in test mode: deterministic
    model.loss(X, y)
    assert st["running_mean"].any() and st["mode"] == "train"
    rm = st["running_mean"].copy()
    model.loss(X, y)
    assert not np.array_equal(rm, st["running_mean"])
    # train mode draws fresh masks: two steps on the same batch differ
    g1 = model.loss(X, y)[1]["fc1.W"]
    g2 = model.loss(X, y)[1]["fc1.W"]
    assert not np.array_equal(g1, g2)


def test_sequential_rejects_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        Sequential(Affine(2), input_shape=(3, 4))
    with pytest.raises(TypeError, match="layer object"):
        Sequential(Affine(2), "relu", input_shape=(3,))
    with pytest.raises(ValueError, match="needs at least one layer"):
        Sequential(input_shape=(3,))
    with pytest.raises(ValueError, match="loss must be"):
        Sequential(Affine(2), input_shape=(3,), loss="mse")
    with pytest.raises(ValueError, match="init must be"):
        Sequential(Affine(2), input_shape=(3,), init="xavier")
    with pytest.raises(ValueError, match="gaussian scale"):
        Sequential(Affine(2), input_shape=(3,), init=("gaussian", -1))
    with pytest.raises(ValueError, match="reg"):
        Sequential(Affine(2), input_shape=(3,), reg=-1)
    with pytest.raises(ValueError, match="last layer must give"):
        Sequential(Conv2d(2, 1), input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="empty output"):
        Sequential(Conv2d(2, 5), Flatten(), Affine(2), input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="groups=2 must divide"):
        Sequential(Conv2d(2, 1, groups=2), Flatten(), Affine(2), input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="Residual needs equal shapes"):
        Sequential(Residual(Conv2d(2, 3)), Flatten(), Affine(2), input_shape=(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Sequential(Flatten(), Conv2d(2, 1), input_shape=(2, 4, 4))
    with pytest.raises(ValueError, match="keep"):
        Dropout(0)
    with pytest.raises(ValueError, match="out_channels"):
        Conv2d(0, 3)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm2d(eps=0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2d(momentum=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        Sequential(Affine(2), input_shape=(3,), label_smoothing=1.0)
    with pytest.raises(ValueError, match="label_smoothing needs loss='softmax'"):
        Sequential(Affine(2), input_shape=(3,), loss="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="G=3 must divide the channels C=4"):
        Sequential(GroupNorm(3), Flatten(), Affine(2), input_shape=(4, 2, 2))
    with pytest.raises(ValueError, match=r"LayerNorm: needs \(D,\) inputs \(put a Flatten before it\)"):
        Sequential(LayerNorm(), Flatten(), Affine(2), input_shape=(4, 2, 2))
    with pytest.raises(ValueError, match=r"BatchNorm2d: needs \(C, H, W\) inputs"):
        Sequential(Flatten(), BatchNorm2d(), Affine(2), input_shape=(4, 2, 2))
    model = Sequential(Flatten(), Affine(2), input_shape=(3, 2, 2), seed=0)
    with pytest.raises(ValueError, match=r"\(N, 3, 2, 2\)"):
        model.loss(np.zeros((4, 3, 2, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        model.loss(np.zeros((4, 3, 2, 2), dtype=complex))
    with pytest.raises(ValueError, match="labels"):
        model.loss(np.zeros((2, 3, 2, 2)), np.array([0, 5]))
    with pytest.raises(ValueError, match=r"^Sequential.data_loss: labels must lie in \[0, 2\)"):
        model.data_loss(np.zeros((2, 2)), np.array([0, 5]))
    with pytest.raises(ValueError, match="^PatchWhiten: kernel"):
        PatchWhiten(k=0)


def test_layer_object_reused_is_two_layers():
    conv = Conv2d(2, 1)
    model = Sequential(conv, conv, Flatten(), Affine(2), input_shape=(2, 3, 3), seed=0)
    assert "conv1.W" in model.params and "conv2.W" in model.params
    assert model.layers[0] is not model.layers[1]


def test_solver_trains_a_composed_model_and_resumes_exactly(tmp_path, rng):
    def make():
        return Sequential(Conv2d(4, 3, pad=1), BatchNorm2d(), ReLU(), Dropout(0.8), MaxPool2d(2), Flatten(),
                          Affine(3), input_shape=(2, 6, 6), seed=4)

    X = rng.standard_normal((60, 2, 6, 6)).astype(np.float32)
    y = (X[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 1, 3:].mean(axis=(1, 2)) > 0)
    data = {"X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:]}
    kw = dict(update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=8, seed=3, verbose=False)
    a = make()
    sa = Solver(a, data, num_epochs=4, **kw)
    sa.train()
    b = make()
    Solver(b, data, num_epochs=2, checkpoint_name=str(tmp_path / "ck"), **kw).train()
    c = make()
    sc = Solver(c, data, num_epochs=4, resume=str(tmp_path / "ck_epoch_2.pkl"), verbose=False)
    sc.train()
    # every step's loss: the dropout masks of epochs 3-4 continue the same stream
    assert sa.loss_history == sc.loss_history
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k])
    for sa, sc in zip(a.bn_params, c.bn_params):
        np.testing.assert_array_equal(sa["running_mean"], sc["running_mean"])
    assert a.loss(X).shape == (60, 3)


def test_overfits_a_small_batch(rng):
    model = Sequential(Conv2d(8, 3, pad=1, bias=False), BatchNorm2d(), ReLU(), MaxPool2d(2),
                       Residual(Conv2d(8, 3, pad=1, bias=False), BatchNorm2d(), ReLU()),
                       GlobalAvgPool(), Affine(4), input_shape=(3, 8, 8), seed=0)
    X = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 3e-2}, batch_size=16,
                    num_epochs=150, seed=0, verbose=False)
    solver.train()
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]
    assert (model.loss(X).argmax(1) == y).mean() == 1.0


# ----------------------------------------------------------------------------- config

def test_config_get_set_using():
    before = config.get()
    assert set(before) == {"layers", "implementation", "winograd", "winograd_tile", "direct", "conv_threads",
                           "workspace_mb", "flush_denormals", "cuda_kernels"}
    with config.using(winograd=False, workspace_mb=8, layers="reference"):
        assert config.get("winograd") is False and config.get("workspace_mb") == 8
        assert config.get("layers") == "reference"
    assert config.get() == before
    with pytest.raises(RuntimeError):
        with config.using(direct=False):
            assert config.get("direct") is False
            raise RuntimeError
    assert config.get() == before
    prev = config.set(flush_denormals=False)
    assert prev == {"flush_denormals": before["flush_denormals"]}
    config.set(**prev)
    assert config.get() == before


@pytest.mark.parametrize("kwargs,exc", [
    ({"winograd": "false"}, TypeError), ({"direct": None}, TypeError), ({"layers": "slow"}, ValueError),
    ({"workspace_mb": float("nan")}, ValueError), ({"workspace_mb": 0}, ValueError),
    ({"conv_threads": 0}, ValueError), ({"implementation": "fortran"}, ValueError), ({"windograd": True}, ValueError),
])
def test_config_rejects_bad_values(kwargs, exc):
    before = config.get()
    with pytest.raises(exc):
        config.set(**kwargs)
    (name,) = kwargs
    with pytest.raises(exc, match=rf"^config\.set: .*{name}"):
        with config.using(flush_denormals=not before["flush_denormals"], **kwargs):
            pass
    assert config.get() == before


def test_config_set_names_the_switch_that_failed_and_undoes_the_others(monkeypatch):
    before = config.get()
    with pytest.raises(ValueError, match=r"^config\.set: conv_threads: "):
        config.set(winograd=not before["winograd"], direct=not before["direct"], conv_threads=-3)
    assert config.get() == before

    def broken(value):
        raise RuntimeError("setter failed")

    getter, _ = config._SWITCHES["workspace_mb"]
    monkeypatch.setitem(config._SWITCHES, "workspace_mb", (getter, broken))
    with pytest.raises(RuntimeError, match="^setter failed$"):
        config.set(winograd=not before["winograd"], workspace_mb=8)
    assert config.get() == before


@pytest.mark.parametrize("var,value,expect", [
    ("FUNKCIJE_WORKSPACE_MB", "nan", "FUNKCIJE_WORKSPACE_MB"),
    ("FUNKCIJE_WORKSPACE_MB", "-3", "FUNKCIJE_WORKSPACE_MB"),
    ("FUNKCIJE_WINOGRAD", "maybe", "FUNKCIJE_WINOGRAD"),
    ("FUNKCIJE_LAYERS", "slow", "FUNKCIJE_LAYERS"),
])
def test_config_environment_errors(var, value, expect):
    import os
    import subprocess
    import sys

    env = dict(os.environ, **{var: value})
    res = subprocess.run([sys.executable, "-c", "import funkcije.fast_layers"], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and expect in res.stderr and "ValueError" in res.stderr


def test_config_quick_mode(monkeypatch):
    for value, want in (("1", True), ("0", False), ("", False), ("yes", True)):
        monkeypatch.setenv("FUNKCIJE_QUICK", value)
        assert config.quick_mode() is want
    monkeypatch.delenv("FUNKCIJE_QUICK")
    assert config.quick_mode() is False
    monkeypatch.setenv("FUNKCIJE_QUICK", "2")
    with pytest.raises(ValueError, match="FUNKCIJE_QUICK"):
        config.quick_mode()


def test_config_environment_read_once():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FUNKCIJE_LAYERS="reference", FUNKCIJE_WINOGRAD="off", FUNKCIJE_WORKSPACE_MB="3")
    code = "from funkcije import config; g = config.get(); print(g['layers'], g['winograd'], g['workspace_mb'])"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.stdout.split() == ["reference", "False", "3.0"], res.stderr


def test_patch_whiten_fit_whitens_the_patches(rng):
    """After fit, the layer's first half of filters maps the k x k patches of the data
    to decorrelated unit-variance features (eps small against the eigenvalues), the
    second half is their negative, and only the bias is a parameter."""
    mix = rng.standard_normal((12, 12))
    base = rng.standard_normal((200, 8, 8, 12)) @ mix.T  # correlated channels and positions
    X = base.reshape(200, 8, 8, 3, 2, 2).transpose(0, 3, 1, 4, 2, 5).reshape(200, 3, 16, 16)
    model = Sequential(PatchWhiten(2, eps=1e-9), Flatten(), Affine(3), input_shape=(3, 16, 16),
                       dtype=np.float64, seed=0)
    assert set(model.params) == {"white1.b", "fc1.W", "fc1.b"}
    model.fit(X)
    W = model.state["white1"]["W"]
    assert W.shape == (24, 3, 2, 2) and model.state["white1"]["fitted"]
    np.testing.assert_array_equal(W[12:], -W[:12])
    out, _ = L.conv_forward_naive(X, W[:12], np.zeros(12), {"stride": 1, "pad": 0})
    feats = out.transpose(0, 2, 3, 1).reshape(-1, 12)
    np.testing.assert_allclose(np.cov(feats, rowvar=False), np.eye(12), atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        model.layers[0].fit(X[:, :2], model.state["white1"])
    for bad, exc in ((0, ValueError), (2.5, TypeError), (None, TypeError)):
        with pytest.raises(exc, match="^Sequential.fit: batch_size must be an int >= 1"):
            model.fit(X, batch_size=bad)


def test_batchnorm_without_scale_has_only_beta(rng):
    model = Sequential(Conv2d(3, 3, bias=False), BatchNorm2d(scale=False), Flatten(), Affine(2),
                       input_shape=(2, 5, 5), dtype=np.float64, seed=0)
    assert "bn1.gamma" not in model.params and "bn1.beta" in model.params
    with pytest.raises(TypeError, match="scale"):
        BatchNorm2d(scale=1)


# ----------------------------------------------------------------------------- dirac initialisation


def test_conv_dirac_start_passes_the_input_through():
    from funkcije.classifiers.sequential import Conv2d

    def init(layer, in_shape):
        return layer.init(np.random.default_rng(0), in_shape, np.float64, ("torch", None))[0]

    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5))
    layer = Conv2d(5, 3, pad=1, bias=False, dirac=True)
    params = init(layer, (3, 5, 5))
    W = params["W"]
    out, _ = layer.forward(x, params, None, True)
    np.testing.assert_allclose(out[:, :3], x, rtol=0, atol=1e-12)  # the first 3 filters are the identity
    assert np.count_nonzero(W[:3]) == 3 and np.all(W[[0, 1, 2], [0, 1, 2], 1, 1] == 1)
    plain = init(Conv2d(5, 3, pad=1, bias=False), (3, 5, 5))
    np.testing.assert_array_equal(W[3:], plain["W"][3:])  # the rest drawn as usual
    # groups: filter i of each group is the identity on that group's channel i
    Wg = init(Conv2d(6, (3, 1), pad=(1, 0), groups=2, bias=False, dirac=True), (4, 5, 5))["W"]
    assert Wg.shape == (6, 2, 3, 1)  # groups of 3 filters over 2 channels
    for f, c in ((0, 0), (1, 1), (3, 0), (4, 1)):
        expect = np.zeros((2, 3, 1))
        expect[c, 1, 0] = 1
        np.testing.assert_array_equal(Wg[f], expect)
    assert np.count_nonzero(Wg[[2, 5]]) > 1
    assert "dirac=True" in repr(layer)
    with pytest.raises(TypeError, match="dirac must be True or False"):
        Conv2d(4, 3, dirac=1)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_layer_runs_the_fast_pass_and_matches_the_reference(approximate):
    """A model with GELU layers: the same loss and gradients through the fast layers
    (GELU's compiled pass) and through the reference layers."""
    def make():
        return Sequential([Conv2d(4, 3, pad=1), GELU(approximate), Flatten(), Affine(5)], input_shape=(2, 5, 5),
                          seed=0, dtype=np.float64)

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 2, 5, 5)), rng.integers(0, 5, 3)
    fast = make().loss(X, y)
    with config.using(layers="reference"):
        ref = make().loss(X, y)
    assert fast[0] == pytest.approx(ref[0], rel=1e-12)
    for k, g in ref[1].items():
        np.testing.assert_allclose(fast[1][k], g, rtol=1e-10, atol=1e-12)
    assert GELU(approximate).forward(X, {}, {}, True)[1].forward == "gelu_forward_fast"
    with config.using(layers="reference"):
        assert GELU(approximate).forward(X, {}, {}, True)[1].forward == "gelu_forward"
