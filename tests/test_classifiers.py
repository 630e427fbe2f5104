"""Models: initial loss, numerical gradient checks (float64), dtype, state,
seeding, bad input, agreement with PyTorch, and overfitting real CIFAR-10 images."""
import math
import pickle

import numpy as np
import pytest

from funkcije.classifiers import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet
from funkcije.gradient_check import eval_numerical_gradient, rel_error
from funkcije.optim import adam


# Whole-model checks in float64: centred differences of a loss of about 2 carry an
# absolute error near 1e-10 (more as the L2 term grows the loss), and a small model
# has gradient entries down to ~1e-4, so the elementwise relative error (rel_error's
# max) has a noise floor around 1e-7. Scanning 20 data seeds through these checks:
# median 2e-8, 95th percentile 3e-7; the few above 1e-6 shrank with a larger step
# (rounding on tiny entries) or with a smaller one (an input within h of a ReLU or
# max-pool kink). 1e-6 still sits orders of magnitude below what a wrong gradient
# gives (>= 1e-3). The single layers are held to docs/ARCHITECTURE.md's 1e-7 in test_layer_utils.py.
MODEL_TOL = 1e-6


def _grad_errors(model, X, y, rng):
    """Relative error of every analytic gradient against centred differences.

    Biases start at zero, so a sample whose inputs to a layer are all zero (ReLU
    and dropout make that likely on tiny nets) would sit exactly on a ReLU kink,
    where centred differences see half a slope; random biases move it off."""
    for name, p in model.params.items():
        if name.startswith(("b", "beta")):
            p += 0.1 * rng.standard_normal(p.shape)
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    errors = {}
    for name, p in model.params.items():
        num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], p, verbose=False)
        errors[name] = rel_error(num, grads[name])
    return errors


def _tiny_convnet(**kw):
    args = dict(input_dim=(3, 8, 8), num_filters=3, filter_size=3, hidden_dim=7, dtype=np.float64, seed=0)
    args.update(kw)
    return ThreeLayerConvNet(**args)


# ----------------------------------------------------------------------------- initial loss


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ThreeLayerConvNet(input_dim=(3, 16, 16), seed=1), (20, 3, 16, 16)),
        (lambda: TwoLayerNet(input_dim=48, hidden_dim=30, seed=1), (20, 3, 4, 4)),
        (lambda: FullyConnectedNet([30, 20], input_dim=48, weight_scale=1e-3, seed=1), (20, 48)),
        (lambda: FullyConnectedNet([30, 20], input_dim=48, normalization="batchnorm", seed=1), (20, 48)),
        (lambda: FullyConnectedNet([30, 20], input_dim=48, normalization="layernorm", seed=1), (20, 48)),
    ],
)
def test_initial_loss_is_log_num_classes(make, shape, rng):
    model = make()
    X = rng.standard_normal(shape)
    y = rng.integers(10, size=shape[0])
    loss, _ = model.loss(X, y)
    # small weights give near-uniform scores; the normalised nets' last layer is small too
    assert abs(loss - math.log(10)) < 0.05, loss
    model.reg = 1.0
    loss_reg, _ = model.loss(X, y)
    assert loss_reg > loss


# ----------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_three_layer_convnet_gradients(reg, rng):
    model = _tiny_convnet(weight_scale=0.3, reg=reg)
    X = rng.standard_normal((2, 3, 8, 8))
    y = np.array([3, 8])
    errors = _grad_errors(model, X, y, rng)
    assert max(errors.values()) < MODEL_TOL, errors


def test_three_layer_convnet_gradients_odd_size_and_even_filter(rng):
    # a 4x4 filter with pad 1 shrinks 7x9 to 6x8, pooled to 3x4
    model = ThreeLayerConvNet(input_dim=(2, 7, 9), num_filters=2, filter_size=4, hidden_dim=5,
                              num_classes=4, weight_scale=0.3, reg=0.1, dtype=np.float64, seed=3)
    assert model.params["W2"].shape == (2 * 3 * 4, 5)
    X = rng.standard_normal((3, 2, 7, 9))
    y = np.array([0, 3, 1])
    errors = _grad_errors(model, X, y, rng)
    assert max(errors.values()) < MODEL_TOL, errors


def test_two_layer_net_gradients(rng):
    model = TwoLayerNet(input_dim=12, hidden_dim=6, num_classes=4, weight_scale=0.5, reg=0.3, seed=2)
    X = rng.standard_normal((5, 12))
    y = rng.integers(4, size=5)
    errors = _grad_errors(model, X, y, rng)
    assert max(errors.values()) < MODEL_TOL, errors


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_fully_connected_net_gradients(normalization, reg, rng):
    model = FullyConnectedNet([8, 6], input_dim=10, num_classes=5, normalization=normalization,
                              reg=reg, weight_scale=0.5, dtype=np.float64, seed=4)
    X = rng.standard_normal((4, 10))
    y = rng.integers(5, size=4)
    errors = _grad_errors(model, X, y, rng)
    # the biases ahead of batch norm have an exactly-zero gradient (the batch mean
    # cancels them); the centred difference there is rounding noise
    for name in list(errors):
        if normalization == "batchnorm" and name in ("b1", "b2"):
            _, grads = model.loss(X, y)
            assert np.abs(grads[name]).max() < 1e-12
            del errors[name]
    assert max(errors.values()) < MODEL_TOL, errors


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_fully_connected_net_gradients_with_dropout(normalization, rng):
    # an int seed fixes the dropout mask across calls, as a gradient check needs
    model = FullyConnectedNet([8, 6], input_dim=10, num_classes=5, dropout_keep_ratio=0.6,
                              normalization=normalization, weight_scale=0.5, dtype=np.float64, seed=5)
    X = rng.standard_normal((4, 10))
    y = rng.integers(5, size=4)
    errors = _grad_errors(model, X, y, rng)
    if normalization == "batchnorm":
        errors = {k: v for k, v in errors.items() if k not in ("b1", "b2")}
    assert max(errors.values()) < MODEL_TOL, errors


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda dt: _tiny_convnet(dtype=dt, weight_scale=0.1), (4, 3, 8, 8)),
        (lambda dt: TwoLayerNet(input_dim=12, hidden_dim=6, weight_scale=0.1, reg=0.1, dtype=dt, seed=0), (4, 12)),
        (lambda dt: FullyConnectedNet([8], input_dim=12, normalization="batchnorm", dropout_keep_ratio=0.7,
                                      reg=0.1, dtype=dt, seed=0), (4, 12)),
        (lambda dt: FullyConnectedNet([8], input_dim=12, normalization="layernorm", dtype=dt, seed=0), (4, 12)),
    ],
)
def test_float32_model_computes_in_float32(make, shape, rng):
    m32, m64 = make(np.float32), make(np.float64)
    X = rng.standard_normal(shape)  # float64 input: cast to the model dtype
    y = rng.integers(10, size=shape[0])
    for name in m32.params:
        assert m32.params[name].dtype == np.float32
        # the same seed gives the same weights up to rounding
        np.testing.assert_allclose(m32.params[name], m64.params[name], rtol=1e-6)
    scores = m32.loss(X)
    assert scores.dtype == np.float32
    loss, grads = m32.loss(X, y)
    assert isinstance(loss, np.float32)
    assert all(g.dtype == np.float32 for g in grads.values())
    loss64, grads64 = m64.loss(X, y)
    assert abs(loss - loss64) < 1e-5
    for name in grads:
        np.testing.assert_allclose(grads[name], grads64[name], rtol=1e-3, atol=1e-5)


def test_model_accepts_integer_images():
    model = ThreeLayerConvNet(input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4, seed=0)
    X = np.arange(2 * 36, dtype=np.uint8).reshape(2, 1, 6, 6)
    assert model.loss(X).dtype == np.float32


# ----------------------------------------------------------------------------- shapes, seeds, state


def test_convnet_any_input_size_and_channels(rng):
    model = ThreeLayerConvNet(input_dim=(1, 28, 28), num_filters=4, filter_size=5, hidden_dim=10, seed=0)
    assert model.params["W1"].shape == (4, 1, 5, 5)
    assert model.params["W2"].shape == (4 * 14 * 14, 10)
    scores = model.loss(rng.standard_normal((3, 1, 28, 28)))
    assert scores.shape == (3, 10)


def test_default_convnet_matches_cs231n_shapes():
    model = ThreeLayerConvNet(seed=0)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"W1": (32, 3, 7, 7), "b1": (32,), "W2": (32 * 16 * 16, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    assert not model.params["b1"].any() and not model.params["b2"].any()
    assert abs(model.params["W2"].std() - 1e-3) < 5e-5


def test_seeding_is_explicit_and_reproducible():
    state = np.random.get_state()
    a = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=3, seed=7)
    b = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=3, seed=np.random.default_rng(7))
    c = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=3, seed=8)
    f1 = FullyConnectedNet([5], input_dim=4, seed=7)
    f2 = FullyConnectedNet([5], input_dim=4, seed=7)
    t1, t2 = TwoLayerNet(input_dim=4, seed=7), TwoLayerNet(input_dim=4, seed=7)
    after = np.random.get_state()
    # the global RNG was neither drawn from nor seeded
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    for k in f1.params:
        np.testing.assert_array_equal(f1.params[k], f2.params[k])
    for k in t1.params:
        np.testing.assert_array_equal(t1.params[k], t2.params[k])


def test_batchnorm_state_lives_in_bn_params_not_params(rng):
    model = FullyConnectedNet([6, 5], input_dim=4, normalization="batchnorm", seed=0)
    assert sorted(model.params) == sorted(
        ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    )
    assert len(model.bn_params) == 2
    X = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(10, size=8)
    model.loss(X, y)
    assert all(bp["mode"] == "train" for bp in model.bn_params)
    assert model.bn_params[0]["running_mean"].shape == (6,)
    assert model.bn_params[1]["running_var"].shape == (5,)
    assert not any("running" in k for k in model.params)
    scores = model.loss(X)
    assert all(bp["mode"] == "test" for bp in model.bn_params)
    # test mode uses the running statistics: one sample's scores ignore the batch
    np.testing.assert_allclose(model.loss(X[:1]), scores[:1], rtol=1e-5, atol=1e-6)


def test_dropout_modes_and_seeds(rng):
    X = rng.standard_normal((6, 10))
    y = rng.integers(3, size=6)
    kw = dict(input_dim=10, num_classes=3, weight_scale=0.3, dtype=np.float64)
    drop = FullyConnectedNet([20, 20], dropout_keep_ratio=0.5, seed=3, **kw)
    plain = FullyConnectedNet([20, 20], seed=3, **kw)
    assert drop.dropout_param["p"] == 0.5 and drop.use_dropout and not plain.use_dropout
    # test mode: dropout is the identity
    np.testing.assert_allclose(drop.loss(X), plain.loss(X))
    assert drop.dropout_param["mode"] == "test"
    # train mode: an int seed repeats the mask, and the mask changes the loss
    l1, _ = drop.loss(X, y)
    l2, _ = drop.loss(X, y)
    assert drop.dropout_param["mode"] == "train"
    assert l1 == l2 and l1 != plain.loss(X, y)[0]
    # a Generator seed draws a fresh mask each call
    gen = FullyConnectedNet([20, 20], dropout_keep_ratio=0.5, seed=np.random.default_rng(3), **kw)
    assert gen.loss(X, y)[0] != gen.loss(X, y)[0]
    # no seed: fresh masks from NumPy's global RNG, so np.random.seed repeats them (Contract 6)
    free = FullyConnectedNet([20, 20], dropout_keep_ratio=0.5, seed=None, **kw)
    runs = []
    for _ in range(2):
        np.random.seed(231)
        runs.append([free.loss(X, y)[0] for _ in range(2)])
    assert runs[0] == runs[1] and runs[0][0] != runs[0][1]
    assert free.dropout_param["seed"] is None  # the Solver still installs its own stream


def test_two_layer_net_forward_matches_direct_formula(rng):
    model = TwoLayerNet(input_dim=6, hidden_dim=4, num_classes=3, seed=0)
    for k in model.params:
        model.params[k] = rng.standard_normal(model.params[k].shape)
    X = rng.standard_normal((5, 6))
    p = model.params
    expected = np.maximum(X @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    np.testing.assert_allclose(model.loss(X), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- bad input


def test_convnet_rejects_wrong_channels_and_sizes(rng):
    model = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=3, seed=0)
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\).*got shape \(2, 1, 8, 8\)"):
        model.loss(rng.standard_normal((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="input_dim"):
        model.loss(rng.standard_normal((2, 3, 9, 8)))
    with pytest.raises(ValueError, match="input_dim"):
        model.loss(rng.standard_normal((3, 8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.loss(rng.standard_normal((2, 3, 8, 8)), np.array([0, 10]))


def test_fc_nets_reject_wrong_feature_count(rng):
    with pytest.raises(ValueError, match="input_dim=12"):
        FullyConnectedNet([5], input_dim=12).loss(rng.standard_normal((2, 13)))
    with pytest.raises(ValueError, match="input_dim=12"):
        TwoLayerNet(input_dim=12).loss(rng.standard_normal((2, 3, 5)))


def test_constructors_reject_bad_arguments():
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([5], normalization="groupnorm")
    with pytest.raises(ValueError, match="keep probability"):
        FullyConnectedNet([5], dropout_keep_ratio=0)
    with pytest.raises(ValueError, match="hidden_dims"):
        FullyConnectedNet([5, 0])
    with pytest.raises(TypeError, match="dtype"):
        ThreeLayerConvNet(dtype=np.int32)
    with pytest.raises(ValueError, match="input_dim"):
        ThreeLayerConvNet(input_dim=(32, 32))
    with pytest.raises(ValueError, match="reg"):
        TwoLayerNet(reg=-1)
    with pytest.raises(TypeError, match="seed"):
        ThreeLayerConvNet(seed="abc")
    # a 2x2 filter gets pad 0, so a 1x1 image has no valid conv output
    with pytest.raises(ValueError, match="ThreeLayerConvNet"):
        ThreeLayerConvNet(input_dim=(3, 1, 1), filter_size=2)


# ----------------------------------------------------------------------------- PyTorch oracle


@pytest.mark.torch
def test_convnet_matches_pytorch(torch, rng):
    model = ThreeLayerConvNet(input_dim=(3, 10, 10), num_filters=4, filter_size=5, hidden_dim=6,
                              weight_scale=0.3, reg=0.2, dtype=np.float64, seed=9)
    X = rng.standard_normal((3, 3, 10, 10))
    y = np.array([1, 0, 9])
    loss, grads = model.loss(X, y)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    tnn = torch.nn.functional
    h = tnn.max_pool2d(tnn.relu(tnn.conv2d(torch.tensor(X), tp["W1"], tp["b1"], padding=2)), 2)
    h = tnn.relu(h.reshape(3, -1) @ tp["W2"] + tp["b2"])
    scores = h @ tp["W3"] + tp["b3"]
    t_loss = tnn.cross_entropy(scores, torch.tensor(y)) + 0.5 * 0.2 * sum(
        (tp[k] ** 2).sum() for k in ("W1", "W2", "W3")
    )
    t_loss.backward()
    np.testing.assert_allclose(model.loss(X), scores.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert abs(loss - t_loss.item()) < 1e-10
    for k in grads:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------- real data


def _first_cifar_images(data_root, n):
    with open(data_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    X = np.asarray(batch["data"][:n], dtype=np.float32).reshape(n, 3, 32, 32)
    y = np.asarray(batch["labels"][:n], dtype=np.int64)
    return X, y


@pytest.mark.slow
def test_convnet_overfits_100_cifar_images(data_root):
    X, y = _first_cifar_images(data_root, 100)
    X = (X - X.mean(axis=0)) / 64.0
    model = ThreeLayerConvNet(weight_scale=1e-2, hidden_dim=100, seed=0)
    configs = {k: {"learning_rate": 2e-3} for k in model.params}
    for _ in range(25):
        _, grads = model.loss(X, y)
        for k in model.params:
            model.params[k], configs[k] = adam(model.params[k], grads[k], configs[k])
    train_acc = (model.loss(X).argmax(axis=1) == y).mean()
    assert train_acc >= 0.95, train_acc


def test_l2_gradient_on_large_weights_matches_the_formula(rng):
    # W2 here has more entries than one block of the blockwise L2 update
    model = FullyConnectedNet([300], input_dim=400, reg=0.25, weight_scale=0.1, dtype=np.float64, seed=0)
    X = rng.standard_normal((3, 400))
    y = rng.integers(10, size=3)
    _, grads = model.loss(X, y)
    model.reg = 0.0
    loss0, grads0 = model.loss(X, y)
    model.reg = 0.25
    loss, _ = model.loss(X, y)
    W1 = model.params["W1"]
    np.testing.assert_allclose(grads["W1"], grads0["W1"] + 0.25 * W1, rtol=1e-12, atol=1e-15)
    expected = loss0 + 0.125 * sum((model.params[k] ** 2).sum() for k in ("W1", "W2"))
    assert abs(loss - expected) < 1e-10


def test_fc_net_star_import_gives_the_layer_functions_like_cs231n():
    import funkcije.layer_utils as LU
    import funkcije.layers as LL
    ns = {}
    exec("from funkcije.classifiers.fc_net import *", ns)
    for name in ("affine_forward", "affine_backward", "relu_forward", "relu_backward", "batchnorm_forward",
                 "dropout_forward", "softmax_loss", "svm_loss", "layernorm_backward"):
        assert ns[name] is getattr(LL, name), name
    for name in ("affine_relu_forward", "affine_relu_backward", "conv_relu_pool_forward"):
        assert ns[name] is getattr(LU, name), name
    assert "TwoLayerNet" in ns and "FullyConnectedNet" in ns


def test_fully_connected_net_accepts_cs231n_2019_dropout_keyword():
    from funkcije.classifiers import FullyConnectedNet
    a = FullyConnectedNet([5], input_dim=4, num_classes=3, dropout=0.5, seed=0)
    b = FullyConnectedNet([5], input_dim=4, num_classes=3, dropout_keep_ratio=0.5, seed=0)
    assert a.use_dropout and a.dropout_param["p"] == b.dropout_param["p"] == 0.5
    FullyConnectedNet([5], input_dim=4, num_classes=3, dropout=0.5, dropout_keep_ratio=0.5, seed=0)
    with pytest.raises(ValueError, match="FullyConnectedNet: dropout=0.5 and dropout_keep_ratio=0.7"):
        FullyConnectedNet([5], input_dim=4, num_classes=3, dropout=0.5, dropout_keep_ratio=0.7)
    with pytest.raises(ValueError, match="keep probability"):
        FullyConnectedNet([5], input_dim=4, num_classes=3, dropout=0)
