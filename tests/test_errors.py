"""Bad input to the reference layers gets a clear ValueError/TypeError at the boundary
(docs/ARCHITECTURE.md, Contract 3): the message names the layer and says what was expected and
what came. Each case checks the exception type and a fragment of the message."""
import numpy as np
import pytest

from funkcije import layers as L


def f64(*shape):
    return np.ones(shape)


def conv(x_shape=(1, 2, 5, 5), w_shape=(3, 2, 3, 3), b_shape=None, dtype=np.float64, x=None, w=None, b=None,
         **conv_param):
    x = np.ones(x_shape, dtype) if x is None else x
    w = np.ones(w_shape, dtype) if w is None else w
    b = np.zeros(b_shape or (w_shape[0],), dtype) if b is None else b
    conv_param.setdefault("stride", 1)
    conv_param.setdefault("pad", 0)
    return L.conv_forward_naive(x, w, b, conv_param)


POOLS = [L.max_pool_forward_naive, L.avg_pool_forward_naive]

# ----------------------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(w_shape=(1, 2, 6, 6)), r"empty output: the window spans 6 but the padded input is only 5"),
        (dict(w_shape=(1, 2, 3, 3), dilation=3), r"empty output: the window spans 7"),
        (dict(w_shape=(1, 2, 1, 4), stride=(1, 1), pad=(0, 0), x_shape=(1, 2, 5, 3)), r"empty output"),
        (dict(stride=0), r"stride must be >= 1, got \(0, 0\)"),
        (dict(stride=(1, 0)), r"stride must be >= 1, got \(1, 0\)"),
        (dict(stride=-2), r"stride must be >= 1"),
        (dict(pad=-1), r"pad must be >= 0, got \(-1, -1\)"),
        (dict(pad=(0, -1)), r"pad must be >= 0, got \(0, -1\)"),
        (dict(dilation=0), r"dilation must be >= 1, got \(0, 0\)"),
        (dict(x_shape=(1, 4, 5, 5), w_shape=(3, 1, 3, 3), groups=3),
         r"groups=3 must be >= 1 and divide both the input channels C=4 and the filters F=3"),
        (dict(x_shape=(1, 4, 5, 5), w_shape=(3, 2, 3, 3), groups=2), r"divide both the input channels C=4 and the filters F=3"),
        (dict(groups=0), r"groups=0 must be >= 1"),
        (dict(groups=-1), r"groups=-1 must be >= 1"),
        (dict(x_shape=(1, 3, 5, 5), w_shape=(2, 2, 3, 3)),
         r"channel mismatch: x has C=3 channels, so with groups=1 w must have shape \(F, 3, HH, WW\), "
         r"got w shape \(2, 2, 3, 3\)"),
        (dict(x_shape=(1, 4, 5, 5), w_shape=(2, 4, 3, 3), groups=2), r"channel mismatch: .* must have shape \(F, 2, HH, WW\)"),
        (dict(x_shape=(2, 5, 5)), r"x must have 4 dimensions, got shape \(2, 5, 5\) \(3 dimensions\)"),
        (dict(w_shape=(3, 2, 3)), r"w must have 4 dimensions, got shape \(3, 2, 3\)"),
        (dict(b_shape=(3, 1)), r"b must have 1 dimensions, got shape \(3, 1\)"),
        (dict(b_shape=(2,)), r"b must have shape \(3,\) for w of shape \(3, 2, 3, 3\), got \(2,\)"),
        (dict(padding=1), r"unknown conv_param keys \['padding'\]"),
    ],
)
def test_conv_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        conv(**kwargs)
    assert str(info.value).startswith("conv_forward_naive: ")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dtype=np.int64), r"x must have a floating dtype \(float32 or float64\), got int64"),
        # issue 11: integer w and b are now cast to x's dtype (test_integer_params_are_cast below)
        (dict(w=np.ones((3, 2, 3, 3), np.complex64)), r"w must have a floating dtype .* got complex64"),
        (dict(x=np.ones((1, 2, 5, 5), np.float32)), r"all arrays must share one dtype, got x=float32, w=float64, b=float64"),
        (dict(x=np.ones((1, 2, 5, 5)).tolist()), r"x must be a numpy.ndarray, got list"),
        (dict(stride=1.5), r"stride must be an int or an \(h, w\) pair of ints, got 1.5"),
        (dict(stride=(1, 1, 1)), r"stride must be an int or an \(h, w\) pair of ints, got \(1, 1, 1\)"),
        (dict(pad=True), r"pad must be an int or an \(h, w\) pair of ints, got True"),
        (dict(groups=1.0), r"groups must be an int, got 1.0"),
    ],
)
def test_conv_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        conv(**kwargs)


def test_conv_param_must_be_a_dict():
    with pytest.raises(TypeError, match=r"conv_param must be a dict, got list"):
        L.conv_forward_naive(f64(1, 2, 5, 5), f64(3, 2, 3, 3), np.zeros(3), [1, 0])


def test_conv_backward_checks_dout():
    out, cache = conv()
    with pytest.raises(ValueError, match=r"conv_backward_naive: dout must have the forward output's shape \(1, 3, 3, 3\), got \(1, 3, 3, 2\)"):
        L.conv_backward_naive(np.ones((1, 3, 3, 2)), cache)
    # issue 11: a numeric dout of another dtype is cast; the gradients come out in the forward's dtype
    assert all(g.dtype == np.float64 for g in L.conv_backward_naive(out.astype(np.float32), cache))
    assert all(g.dtype == np.float64 for g in L.conv_backward_naive(out.astype(np.int64), cache))
    with pytest.raises(TypeError, match=r"conv_backward_naive: dout must have a real numeric dtype"):
        L.conv_backward_naive(out.astype(np.complex128), cache)


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("forward", POOLS)
@pytest.mark.parametrize(
    "x_shape, pool_param, match",
    [
        ((1, 1, 3, 3), {"pool_height": 4, "pool_width": 2, "stride": 1}, r"empty output: the window spans 4 but the padded input is only 3"),
        ((1, 1, 4, 4), {"pool_height": 2, "pool_width": 5}, r"empty output"),
        ((1, 1, 4, 4), {"pool_height": 2, "pool_width": 2, "stride": 0}, r"stride must be >= 1, got \(0, 0\)"),
        ((1, 1, 4, 4), {"pool_height": 2, "pool_width": 2, "stride": (2, -1)}, r"stride must be >= 1, got \(2, -1\)"),
        ((1, 1, 4, 4), {"pool_height": 0, "pool_width": 2}, r"pool_height and pool_width must be >= 1, got \(0, 2\)"),
        ((1, 1, 4, 4), {"pool_width": 2, "stride": 2}, r"pool_param\['pool_height'\] is required"),
        ((1, 1, 4, 4), {"pool_height": 2, "pool_width": 2, "pad": 1}, r"unknown pool_param keys \['pad'\]"),
        ((1, 4, 4), {"pool_height": 2, "pool_width": 2}, r"x must have 4 dimensions, got shape \(1, 4, 4\)"),
    ],
)
def test_pool_value_errors(forward, x_shape, pool_param, match):
    with pytest.raises(ValueError, match=match) as info:
        forward(np.ones(x_shape), pool_param)
    assert str(info.value).startswith(forward.__name__ + ": ")


@pytest.mark.parametrize("forward", POOLS)
def test_pool_type_errors(forward):
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    with pytest.raises(TypeError, match=r"x must have a floating dtype .* got int64"):
        forward(np.ones((1, 1, 4, 4), np.int64), pp)
    with pytest.raises(TypeError, match=r"stride must be an int or an \(h, w\) pair of ints, got 1.5"):
        forward(np.ones((1, 1, 4, 4)), dict(pp, stride=1.5))
    with pytest.raises(TypeError, match=r"pool_height/pool_width must be an int or an \(h, w\) pair of ints"):
        forward(np.ones((1, 1, 4, 4)), dict(pp, pool_height=2.0))
    with pytest.raises(TypeError, match=r"pool_param must be a dict, got int"):
        forward(np.ones((1, 1, 4, 4)), 2)


@pytest.mark.parametrize("forward, backward", [(L.max_pool_forward_naive, L.max_pool_backward_naive),
                                               (L.avg_pool_forward_naive, L.avg_pool_backward_naive)])
def test_pool_backward_checks_dout(forward, backward):
    out, cache = forward(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), {"pool_height": 2, "pool_width": 2})
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(1, 2, 2, 2\), got \(1, 2, 2\)"):
        backward(np.ones((1, 2, 2)), cache)
    assert backward(out.astype(np.float32), cache).dtype == np.float64  # issue 11: cast, not an error


# ----------------------------------------------------------------------------- affine, relu


@pytest.mark.parametrize(
    "x, w, b, exc, match",
    [
        (f64(2, 3), f64(4, 5), f64(5), ValueError, r"x of shape \(2, 3\) has D=3 features per sample, so w must be \(D, M\) = \(3, M\)"),
        (f64(2, 3, 2), f64(6, 5), f64(4), ValueError, r"and b \(M,\); got w \(6, 5\), b \(4,\)"),
        (f64(2, 3), f64(3), f64(5), ValueError, r"w must have 2 dimensions, got shape \(3,\)"),
        (f64(2, 3), f64(3, 5), f64(1, 5), ValueError, r"b must have 1 dimensions, got shape \(1, 5\)"),
        (np.array(1.0), f64(1, 1), f64(1), ValueError, r"x must have a batch dimension, got shape \(\)"),
        (np.ones((2, 3), np.int64), f64(3, 5), f64(5), TypeError, r"x must have a floating dtype .* got int64"),
        (f64(2, 3), np.ones((3, 5), np.float32), f64(5), TypeError, r"all arrays must share one dtype, got x=float64, w=float32"),
        ([[1.0, 2.0, 3.0]], f64(3, 5), f64(5), TypeError, r"x must be a numpy.ndarray, got list"),
    ],
)
def test_affine_errors(x, w, b, exc, match):
    with pytest.raises(exc, match=match) as info:
        L.affine_forward(x, w, b)
    assert str(info.value).startswith("affine_forward: ")


def test_relu_errors():
    with pytest.raises(TypeError, match=r"relu_forward: x must have a floating dtype .* got int64"):
        L.relu_forward(np.array([1, -2]))
    with pytest.raises(TypeError, match=r"relu_forward: x must be a numpy.ndarray, got list"):
        L.relu_forward([1.0, -2.0])


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss", [L.softmax_loss, L.svm_loss])
@pytest.mark.parametrize(
    "x, y, exc, match",
    [
        (f64(3, 4), np.array([0, 4, 1]), ValueError, r"labels must lie in \[0, 4\) for 4 classes, got values from 0 to 4"),
        (f64(3, 4), np.array([0, -1, 1]), ValueError, r"labels must lie in \[0, 4\) .* got values from -1 to 1"),
        (f64(3, 4), np.array([0, 1]), ValueError, r"labels y must have shape \(3,\) to match the scores, got \(2,\)"),
        (f64(3, 4), np.array([[0, 1, 2]]), ValueError, r"labels y must have shape \(3,\)"),
        (f64(3, 4), np.array([0.0, 1.0, 2.0]), TypeError, r"labels y must be integers, got dtype float64"),
        (f64(0, 4), np.array([], dtype=np.int64), ValueError, r"x must hold at least one sample .* got shape \(0, 4\)"),
        (f64(12), np.zeros(12, np.int64), ValueError, r"x must have 2 dimensions, got shape \(12,\)"),
        (f64(3, 4, 1), np.zeros(3, np.int64), ValueError, r"x must have 2 dimensions"),
        (np.ones((3, 4), np.int64), np.zeros(3, np.int64), TypeError, r"x must have a floating dtype .* got int64"),
    ],
)
def test_loss_errors(loss, x, y, exc, match):
    with pytest.raises(exc, match=match) as info:
        loss(x, y)
    assert str(info.value).startswith(loss.__name__ + ": ")


def test_loss_accepts_label_lists():
    loss, _ = L.softmax_loss(np.zeros((2, 3)), [0, 2])
    assert loss == pytest.approx(np.log(3))


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "x, gamma, beta, bn_param, exc, match",
    [
        (f64(4, 3), f64(3), f64(3), {}, ValueError, r"bn_param\['mode'\] is required and must be 'train' or 'test'"),
        (f64(4, 3), f64(3), f64(3), {"mode": "eval"}, ValueError, r"bn_param\['mode'\] must be 'train' or 'test', got 'eval'"),
        (f64(4, 3), f64(3), f64(3), None, TypeError, r"bn_param must be a dict, got NoneType"),
        (f64(12), f64(3), f64(3), {"mode": "train"}, ValueError, r"x must have 2 dimensions, got shape \(12,\)"),
        (f64(4, 3), f64(4), f64(4), {"mode": "train"}, ValueError, r"gamma and beta must have shape \(3,\) for x of shape \(4, 3\), got \(4,\) and \(4,\)"),
        (f64(4, 3), f64(3, 1), f64(3), {"mode": "train"}, ValueError, r"gamma must have 1 dimensions"),
        (f64(0, 3), f64(3), f64(3), {"mode": "train"}, ValueError, r"train mode needs a non-empty batch, got x shape \(0, 3\)"),
        (f64(4, 3), f64(3), f64(3), {"mode": "train", "running_mean": np.zeros(1)}, ValueError,
         r"bn_param\['running_mean'\] and \['running_var'\] must have shape \(3,\) for 3 features, got \(1,\) and \(3,\)"),
        (f64(4, 3), f64(3), f64(3), {"mode": "test", "running_var": np.ones(2)}, ValueError,
         r"must have shape \(3,\) for 3 features, got \(3,\) and \(2,\)"),
        (np.ones((4, 3), np.int64), f64(3), f64(3), {"mode": "train"}, TypeError, r"x must have a floating dtype .* got int64"),
        (f64(4, 3), np.ones(3, np.float32), f64(3), {"mode": "train"}, TypeError, r"all arrays must share one dtype"),
    ],
)
def test_batchnorm_errors(x, gamma, beta, bn_param, exc, match):
    with pytest.raises(exc, match=match) as info:
        L.batchnorm_forward(x, gamma, beta, bn_param)
    assert str(info.value).startswith("batchnorm_forward: ")


def test_spatial_batchnorm_errors():
    with pytest.raises(ValueError, match=r"spatial_batchnorm_forward: x must have 4 dimensions, got shape \(4, 3\)"):
        L.spatial_batchnorm_forward(f64(4, 3), f64(3), f64(3), {"mode": "train"})
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(4,\) .* got \(3,\) and \(3,\)"):
        L.spatial_batchnorm_forward(f64(2, 4, 2, 2), f64(3), f64(3), {"mode": "train"})
    with pytest.raises(TypeError, match=r"spatial_batchnorm_forward: x must have a floating dtype"):
        L.spatial_batchnorm_forward(np.ones((2, 4, 2, 2), np.int64), f64(4), f64(4), {"mode": "train"})
    with pytest.raises(ValueError, match=r"bn_param\['mode'\] is required"):
        L.spatial_batchnorm_forward(f64(2, 4, 2, 2), f64(4), f64(4), {})


@pytest.mark.parametrize(
    "x, gamma, exc, match",
    [
        (f64(2, 3, 4), f64(4), ValueError, r"layernorm_forward: x must have 2 dimensions, got shape \(2, 3, 4\)"),
        (f64(2, 4), f64(3), ValueError, r"layernorm_forward: gamma and beta must have shape \(4,\) for x of shape \(2, 4\)"),
        (np.ones((2, 4), np.int64), f64(4), TypeError, r"layernorm_forward: x must have a floating dtype"),
        (np.ones((2, 4), np.float32), f64(4), TypeError, r"layernorm_forward: all arrays must share one dtype"),
    ],
)
def test_layernorm_errors(x, gamma, exc, match):
    with pytest.raises(exc, match=match):
        L.layernorm_forward(x, gamma, np.zeros(gamma.shape), {})


@pytest.mark.parametrize(
    "x_shape, p_shape, G, exc, match",
    [
        ((2, 6, 2, 2), (1, 6, 1, 1), 4, ValueError, r"G=4 must be a positive int dividing C=6"),
        ((2, 6, 2, 2), (1, 6, 1, 1), 0, ValueError, r"G=0 must be a positive int dividing C=6"),
        ((2, 6, 2, 2), (1, 6, 1, 1), 2.0, ValueError, r"G=2.0 must be a positive int"),
        ((2, 6, 2, 2), (1, 6, 1, 1), True, ValueError, r"G=True must be a positive int"),
        ((2, 6, 2, 2), (6,), 2, ValueError, r"gamma must have 4 dimensions, got shape \(6,\)"),
        ((2, 6, 2, 2), (1, 3, 1, 1), 3, ValueError, r"gamma and beta must have shape \(1, 6, 1, 1\), got \(1, 3, 1, 1\)"),
        ((6, 2, 2), (1, 6, 1, 1), 2, ValueError, r"x must have 4 dimensions, got shape \(6, 2, 2\)"),
    ],
)
def test_groupnorm_errors(x_shape, p_shape, G, exc, match):
    with pytest.raises(exc, match=match) as info:
        L.spatial_groupnorm_forward(np.ones(x_shape), np.ones(p_shape), np.zeros(p_shape), G, {})
    assert str(info.value).startswith("spatial_groupnorm_forward: ")


def test_groupnorm_rejects_integers():
    with pytest.raises(TypeError, match=r"spatial_groupnorm_forward: x must have a floating dtype .* got int64"):
        L.spatial_groupnorm_forward(np.ones((1, 2, 2, 2), np.int64), f64(1, 2, 1, 1), f64(1, 2, 1, 1), 1, {})


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0, 0.0, -0.1, 1.5, None, float("nan"), "0.5", True])
def test_dropout_rejects_bad_keep_probability(p):
    param = {"mode": "train", "seed": 0}
    if p is not None:
        param["p"] = p
    with pytest.raises(ValueError, match=r"dropout_forward: dropout_param\['p'\] is the keep probability and must lie in \(0, 1\]"):
        L.dropout_forward(f64(3, 3), param)


def test_dropout_other_errors():
    with pytest.raises(ValueError, match=r"dropout_param\['mode'\] is required"):
        L.dropout_forward(f64(3, 3), {"p": 0.5})
    with pytest.raises(ValueError, match=r"dropout_param\['mode'\] must be 'train' or 'test', got 'Train'"):
        L.dropout_forward(f64(3, 3), {"p": 0.5, "mode": "Train"})
    with pytest.raises(TypeError, match=r"dropout_forward: x must have a floating dtype .* got int64"):
        L.dropout_forward(np.ones((3, 3), np.int64), {"p": 0.5, "mode": "train"})


# ----------------------------------------------------------------------------- issue 11: casts, dout shapes, empty batches


def test_integer_params_are_cast_like_the_cs231n_notebook():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    w = np.ones((2, 3, 3, 3))
    b = np.array([0, 128])  # the edge-detection demo's bias
    out, _ = L.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    ref, _ = L.conv_forward_naive(x, w, b.astype(np.float64), {"stride": 1, "pad": 1})
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
    gamma, beta = np.asarray([3, 4, 5]), np.asarray([6, 7, 8])
    out, _ = L.spatial_batchnorm_forward(x.astype(np.float32), gamma, beta, {"mode": "train"})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), [6, 7, 8], rtol=1e-5)
    out, _ = L.affine_forward(x.astype(np.float32), np.ones((75, 2), np.int64), np.array([True, False]))
    assert out.dtype == np.float32
    out, _ = L.layernorm_forward(np.ones((2, 3)), np.array([1, 1, 1]), np.array([0, 0, 0]), {})
    assert out.dtype == np.float64
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        L.affine_forward(np.ones((2, 3), np.int64), np.ones((3, 2)), np.zeros(2))



def test_integer_params_are_cast_on_the_fast_path_and_in_the_sandwiches_too():
    from funkcije import fast_layers as FL, layer_utils as LU

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    w, b = np.ones((2, 3, 3, 3), np.int64), np.array([0, 128])
    cp = {"stride": 1, "pad": 1}
    want, _ = L.conv_forward_naive(x, w.astype(np.float32), b.astype(np.float32), cp)
    for name, f in (("conv_forward_fast", FL.conv_forward_fast), ("conv_forward_im2col", FL.conv_forward_im2col),
                    ("conv_relu_forward", LU.conv_relu_forward)):
        out, _ = f(x, w, b, dict(cp))
        assert out.dtype == np.float32, name
        np.testing.assert_allclose(out, np.maximum(want, 0) if "relu" in name else want, rtol=1e-5, atol=1e-4)
    wa, ba = np.ones((75, 2), np.int64), np.array([True, False])
    want, _ = L.affine_forward(x, wa, ba)
    for f in (FL.affine_forward_fast, LU.affine_relu_forward):
        out, _ = f(x, wa, ba)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-5)


def test_dropout_seed_and_relu_backward_edges():
    x = np.ones((4, 4))
    for seed, exc in (("123", TypeError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="^dropout_forward: seed must be"):
            L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": seed})
    # an inf or NaN upstream gradient where x <= 0 gives 0, as the fast path and PyTorch
    _, cache = L.relu_forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(L.relu_backward(np.array([np.inf, np.nan, 1.0]), cache), [0.0, 0.0, 1.0])


def _pairs():
    rng = np.random.default_rng(1)
    x2, x4 = rng.standard_normal((4, 5)), rng.standard_normal((2, 3, 4, 4))
    g, b = np.ones(5), np.zeros(5)
    return [
        ("relu_backward", L.relu_forward(x2), L.relu_backward),
        ("affine_backward", L.affine_forward(x2, np.ones((5, 3)), np.zeros(3)), L.affine_backward),
        ("batchnorm_backward", L.batchnorm_forward(x2, g, b, {"mode": "train"}), L.batchnorm_backward),
        ("batchnorm_backward_alt", L.batchnorm_forward(x2, g, b, {"mode": "train"}), L.batchnorm_backward_alt),
        ("layernorm_backward", L.layernorm_forward(x2, g, b, {}), L.layernorm_backward),
        ("dropout_backward", L.dropout_forward(x2, {"mode": "train", "p": 0.5, "seed": 0}), L.dropout_backward),
        ("dropout_backward", L.dropout_forward(x2, {"mode": "test", "p": 0.5}), L.dropout_backward),
        ("spatial_groupnorm_backward",
         L.spatial_groupnorm_forward(x4, np.ones((1, 3, 1, 1)), np.zeros((1, 3, 1, 1)), 3, {}),
         L.spatial_groupnorm_backward),
        ("spatial_batchnorm_backward", L.spatial_batchnorm_forward(x4, np.ones(3), np.zeros(3), {"mode": "train"}),
         L.spatial_batchnorm_backward),
        ("sigmoid_backward", L.sigmoid_forward(x2), L.sigmoid_backward),
        ("conv_backward_naive", L.conv_forward_naive(x4, np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1}),
         L.conv_backward_naive),
    ]


def test_dout_of_another_shape_is_an_error_not_a_broadcast():
    for name, (out, cache), bwd in _pairs():
        bad = np.ones((1,) + out.shape[1:])
        with pytest.raises(ValueError, match=rf"{name}: dout must have the forward output's shape"):
            bwd(bad, cache)


def test_dout_of_another_numeric_dtype_gives_gradients_in_the_forward_dtype():
    for name, (out, cache), bwd in _pairs():
        ref = bwd(np.ones(out.shape), cache)
        got = bwd(np.ones(out.shape, np.int64), cache)
        for r, g in zip(ref if isinstance(ref, tuple) else (ref,), got if isinstance(got, tuple) else (got,)):
            assert g.dtype == r.dtype == np.float64, name
            np.testing.assert_array_equal(g, r, err_msg=name)
        with pytest.raises(TypeError, match=rf"{name}: dout must (have a real numeric dtype|be a numpy)"):
            bwd(np.ones(out.shape, np.complex128), cache)


def test_relu_cache_that_is_not_an_array_is_a_type_error():
    with pytest.raises(TypeError, match="relu_backward: cache must be the cache that relu_forward returned"):
        L.relu_backward(np.ones(3), (np.ones(3), None))


def test_empty_batches_work_in_the_reference_layers():
    x = np.zeros((0, 3, 4, 4))
    out, cache = L.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert L.max_pool_backward_naive(np.zeros(out.shape), cache).shape == x.shape
    out, cache = L.spatial_groupnorm_forward(x, np.ones((1, 3, 1, 1)), np.zeros((1, 3, 1, 1)), 3, {})
    assert [a.shape for a in L.spatial_groupnorm_backward(np.zeros(out.shape), cache)] == [x.shape, (1, 3, 1, 1), (1, 3, 1, 1)]
    out, cache = L.affine_forward(np.zeros((0, 6)), np.ones((6, 4)), np.zeros(4))
    assert [a.shape for a in L.affine_backward(np.zeros((0, 4)), cache)] == [(0, 6), (6, 4), (4,)]
    xc = np.zeros((2, 0, 4, 4))
    out, cache = L.spatial_batchnorm_forward(xc, np.ones(0), np.zeros(0), {"mode": "test"})
    assert L.spatial_batchnorm_backward(np.zeros(out.shape), cache)[0].shape == xc.shape


@pytest.mark.parametrize("impl", ["cython", "numpy"])
@pytest.mark.parametrize("dtype, kernel, stride", [(np.float32, 3, 1), (np.float64, 3, 1), (np.float32, 5, 2)])
def test_empty_batches_work_in_the_fast_convolution(impl, dtype, kernel, stride):
    from funkcije import config
    from funkcije import fast_layers as FL

    x = np.zeros((0, 3, 8, 8), dtype)
    w, b = np.ones((4, 3, kernel, kernel), dtype), np.zeros(4, dtype)
    param = {"stride": stride, "pad": 1}
    with config.using(implementation=impl):  # the Winograd, direct and im2col paths alike
        out, cache = FL.conv_forward_fast(x, w, b, param)
        dx, dw, db = FL.conv_backward_fast(np.zeros(out.shape, dtype), cache)
    assert out.shape[0] == 0 and dx.shape == x.shape
    assert dw.shape == w.shape and not dw.any() and db.shape == (4,) and not db.any()
    assert dx.dtype == dw.dtype == db.dtype == dtype


def test_bn_param_rejects_misspelt_keys_in_every_batch_norm():
    from funkcije import fast_layers as FL

    x2, x4, g, b = np.ones((4, 3)), np.ones((2, 3, 2, 2)), np.ones(3), np.zeros(3)
    for fn, x in ((L.batchnorm_forward, x2), (L.spatial_batchnorm_forward, x4),
                  (FL.spatial_batchnorm_forward_fast, x4)):
        for key in ("epsilon", "momentun"):
            with pytest.raises(ValueError, match=rf"{fn.__name__}: unknown bn_param keys \['{key}'\]"):
                fn(x, g, b, {"mode": "train", key: 0.9})
    # the keys the library itself writes or reads are all accepted
    bp = {"mode": "train", "eps": 1e-5, "momentum": 0.9, "unbiased": True}
    L.spatial_batchnorm_forward(x4, g, b, bp)
    assert set(bp) == {"mode", "eps", "momentum", "unbiased", "running_mean", "running_var"}
    FL.spatial_batchnorm_forward_fast(x4, g, b, bp)


def test_a_cache_from_another_forward_is_a_type_error_naming_both():
    from funkcije import fast_layers as FL

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    _, max_cache = L.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    _, ln_cache = L.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), {})
    # same layouts ((x, pool_param); three arrays), other layers: the tag tells them apart
    with pytest.raises(TypeError, match="avg_pool_backward_naive: cache must be the cache that avg_pool_forward_naive "
                                        "or avg_pool_forward_fast returned, got the cache of max_pool_forward_naive"):
        L.avg_pool_backward_naive(np.ones((2, 3, 2, 2)), max_cache)
    with pytest.raises(TypeError, match="affine_backward_fast: .* got the cache of layernorm_forward"):
        FL.affine_backward_fast(np.ones((2, 3)), ln_cache)
    # the reference and fast caches of one layer stay interchangeable
    _, fast_cache = FL.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    np.testing.assert_array_equal(L.max_pool_backward_naive(np.ones((2, 3, 2, 2)), fast_cache),
                                  FL.max_pool_backward_fast(np.ones((2, 3, 2, 2)), max_cache))


def test_param_dicts_reject_unknown_keys_and_out_of_range_values():
    x, g, b = np.ones((4, 3)), np.ones(3), np.zeros(3)
    for bad, match in (({"mode": "train", "eps": -1e-5}, r"bn_param\['eps'\]"),
                       ({"mode": "train", "momentum": 1.5}, r"bn_param\['momentum'\] must be finite and in \[0, 1\]"),
                       ({"mode": "train", "momentum": float("nan")}, r"bn_param\['momentum'\]")):
        with pytest.raises(ValueError, match="batchnorm_forward: " + match):
            L.batchnorm_forward(x, g, b, bad)
    L.batchnorm_forward(x, g, b, {"mode": "train", "momentum": 1.0, "unbiased": True})
    with pytest.raises(ValueError, match=r"layernorm_forward: unknown ln_param keys \['epsilon'\]"):
        L.layernorm_forward(x, g, b, {"epsilon": 1e-5})
    with pytest.raises(ValueError, match=r"layernorm_forward: ln_param\['eps'\]"):
        L.layernorm_forward(x, g, b, {"eps": -1.0})
    x4, g4, b4 = np.ones((2, 4, 3, 3)), np.ones((1, 4, 1, 1)), np.zeros((1, 4, 1, 1))
    L.spatial_groupnorm_forward(x4, g4, b4, 2, {"mode": "train"})  # as the cs231n notebook calls it
    with pytest.raises(ValueError, match=r"spatial_groupnorm_forward: unknown gn_param keys \['esp'\]"):
        L.spatial_groupnorm_forward(x4, g4, b4, 2, {"esp": 1e-5})
    with pytest.raises(ValueError, match=r"dropout_forward: unknown dropout_param keys \['keep'\]"):
        L.dropout_forward(x, {"mode": "train", "p": 0.5, "keep": 0.5})
