"""The reference layers against PyTorch (torch==2.13.0, float64): outputs and every
gradient agree to a relative error below 1e-7 (`rel_error`), on fixed grids and on
random configurations drawn by hypothesis (derandomized, so CI runs the same cases).

The `torch` fixture (tests/conftest.py) skips these tests when torch is missing outside
CI and fails them under CI=true.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from funkcije import layers as L
from funkcije.gradient_check import rel_error

pytestmark = pytest.mark.torch

TOL = 1e-7
HYPO = settings(deadline=None, max_examples=25, derandomize=True,
                suppress_health_check=[HealthCheck.filter_too_much])


def T(torch, a):
    """A float64 leaf tensor that records its gradient."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def assert_close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert np.shape(ours) == np.shape(theirs), f"{what}: shape {np.shape(ours)} vs torch {np.shape(theirs)}"
    err = rel_error(ours, theirs)
    assert err < TOL, f"{what}: relative error {err:.3e} against torch"


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------- convolution


def check_conv(torch, x_shape, w_shape, conv_param, seed):
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    out, cache = L.conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.conv_backward_naive(dout, cache)

    tx, tw, tb = T(torch, x), T(torch, w), T(torch, b)
    tout = F.conv2d(tx, tw, tb, stride=conv_param.get("stride", 1), padding=conv_param.get("pad", 0),
                    dilation=conv_param.get("dilation", 1), groups=conv_param.get("groups", 1))
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "conv out")
    assert_close(dx, tx.grad, "conv dx")
    assert_close(dw, tw.grad, "conv dw")
    assert_close(db, tb.grad, "conv db")


CONV_GRID = [
    pytest.param((1, 1, 3, 3), (1, 1, 2, 2), {"stride": 1, "pad": 0}, id="batch1-tiny"),
    pytest.param((2, 3, 7, 7), (4, 3, 3, 3), {"stride": 1, "pad": 1}, id="cs231n-like"),
    pytest.param((2, 2, 6, 5), (3, 2, 3, 2), {"stride": (2, 1), "pad": (0, 1)}, id="nonsquare-pairs"),
    pytest.param((1, 4, 7, 6), (4, 2, 3, 3), {"stride": 1, "pad": 1, "dilation": 2, "groups": 2}, id="groups2-dil2"),
    pytest.param((2, 6, 5, 7), (3, 2, 2, 3), {"stride": (1, 2), "pad": (1, 0), "dilation": (2, 1), "groups": 3},
                 id="groups3-pairs"),
    pytest.param((1, 3, 8, 8), (6, 1, 3, 3), {"stride": 2, "pad": 2, "groups": 3}, id="depthwise-x2"),
    pytest.param((1, 2, 9, 7), (2, 2, 3, 3), {"stride": 3, "pad": 1, "dilation": 2}, id="stride3-dil2-odd"),
    pytest.param((1, 2, 7, 7), (2, 2, 2, 2), {"stride": 3}, id="stride-gt-kernel"),
]


@pytest.mark.parametrize("x_shape, w_shape, conv_param", CONV_GRID)
def test_conv_matches_torch(torch, x_shape, w_shape, conv_param):
    check_conv(torch, x_shape, w_shape, conv_param, seed=0)


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cg, fg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    hh, ww = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n = draw(st.integers(1, 3))
    assume(conv_out(h, hh, sh, ph, dh) >= 1 and conv_out(w, ww, sw, pw, dw) >= 1)
    conv_param = {"stride": (sh, sw), "pad": (ph, pw), "dilation": (dh, dw), "groups": groups}
    return (n, groups * cg, h, w), (groups * fg, cg, hh, ww), conv_param, draw(st.integers(0, 2**32 - 1))


@HYPO
@given(config=conv_configs())
def test_conv_matches_torch_random_configs(torch, config):
    check_conv(torch, *config)


# ----------------------------------------------------------------------------- pooling


def check_pool(torch, kind, x, pool_param, seed):
    F = torch.nn.functional
    forward, backward = {"max": (L.max_pool_forward_naive, L.max_pool_backward_naive),
                         "avg": (L.avg_pool_forward_naive, L.avg_pool_backward_naive)}[kind]
    out, cache = forward(x, pool_param)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dx = backward(dout, cache)
    kernel = (pool_param["pool_height"], pool_param["pool_width"])
    stride = pool_param.get("stride", kernel)
    tx = T(torch, x)
    if kind == "max":
        tout = F.max_pool2d(tx, kernel, stride=stride, ceil_mode=False)
    else:
        tout = F.avg_pool2d(tx, kernel, stride=stride, ceil_mode=False)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, f"{kind} pool out")
    assert_close(dx, tx.grad, f"{kind} pool dx")


# one pooling grid for every pooling test (tiling, overlapping, non-tiling, gaps, ...)
from test_layers import POOL_GRID  # noqa: E402


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("x_shape, pool_param", POOL_GRID)
def test_pool_matches_torch(torch, kind, x_shape, pool_param):
    x = np.random.default_rng(0).standard_normal(x_shape)
    check_pool(torch, kind, x, pool_param, seed=1)


@st.composite
def pool_configs(draw):
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(ph, 10)), draw(st.integers(pw, 10))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": (sh, sw)}
    return (n, c, h, w), pool_param, draw(st.integers(0, 2**32 - 1))


@HYPO
@given(kind=st.sampled_from(["max", "avg"]), config=pool_configs())
def test_pool_matches_torch_random_configs(torch, kind, config):
    x_shape, pool_param, seed = config
    check_pool(torch, kind, np.random.default_rng(seed).standard_normal(x_shape), pool_param, seed + 1)


@HYPO
@given(config=pool_configs())
def test_max_pool_ties_match_torch(torch, config):
    """Inputs from {0, 1, 2}: most windows have tied maxima. Both route the gradient to
    the first maximum in row-major window order."""
    x_shape, pool_param, seed = config
    x = np.random.default_rng(seed).integers(0, 3, size=x_shape).astype(np.float64)
    check_pool(torch, "max", x, pool_param, seed + 1)


def test_max_pool_all_equal_matches_torch(torch):
    check_pool(torch, "max", np.zeros((1, 2, 5, 5)), {"pool_height": 3, "pool_width": 2, "stride": 1}, seed=0)


# ----------------------------------------------------------------------------- affine, relu


@pytest.mark.parametrize("x_shape, M", [((1, 4), 3), ((3, 2, 3), 5), ((4, 3, 2, 2), 2)])
def test_affine_matches_torch(torch, x_shape, M):
    rng = np.random.default_rng(0)
    D = int(np.prod(x_shape[1:]))
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((D, M)), rng.standard_normal(M)
    out, cache = L.affine_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.affine_backward(dout, cache)
    tx, tw, tb = T(torch, x), T(torch, w), T(torch, b)
    # torch's linear takes the weight as (M, D)
    tout = torch.nn.functional.linear(tx.flatten(1), tw.T, tb)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "affine out")
    assert_close(dx, tx.grad, "affine dx")
    assert_close(dw, tw.grad, "affine dw")
    assert_close(db, tb.grad, "affine db")


def test_relu_matches_torch(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5))
    x[0, 0, :3] = 0.0  # both take the subgradient at 0 as 0
    out, cache = L.relu_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = L.relu_backward(dout, cache)
    tx = T(torch, x)
    tout = torch.relu(tx)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "relu out")
    assert_close(dx, tx.grad, "relu dx")


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("N, C, scale", [(1, 2, 1.0), (6, 5, 1.0), (8, 10, 5.0), (4, 3, 1e4)])
def test_softmax_loss_matches_torch_cross_entropy(torch, N, C, scale):
    rng = np.random.default_rng(N + C)
    x = scale * rng.standard_normal((N, C))
    y = rng.integers(0, C, size=N)
    loss, dx = L.softmax_loss(x, y)
    tx = T(torch, x)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(y))
    tloss.backward()
    assert_close(loss, tloss, "softmax loss")
    assert_close(dx, tx.grad, "softmax dx")


@pytest.mark.parametrize("N, C", [(1, 2), (6, 5), (8, 10)])
def test_svm_loss_matches_torch_multi_margin(torch, N, C):
    rng = np.random.default_rng(N + C)
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, size=N)
    loss, dx = L.svm_loss(x, y)
    tx = T(torch, x)
    # torch divides each sample's hinge sum by C as well as by N: rescale by C
    tloss = C * torch.nn.functional.multi_margin_loss(tx, torch.tensor(y), p=1, margin=1.0)
    tloss.backward()
    assert_close(loss, tloss, "svm loss")
    assert_close(dx, tx.grad, "svm dx")


# ----------------------------------------------------------------------------- normalisation


def torch_bn(torch, x, gamma, beta, mode, running_mean, running_var, momentum, eps):
    """torch's batch norm on copies of our running statistics. Its momentum weighs the
    new batch value, ours the old running value: torch momentum = 1 - ours."""
    tx, tg, tb = T(torch, x), T(torch, gamma), T(torch, beta)
    rm, rv = torch.tensor(running_mean.copy()), torch.tensor(running_var.copy())
    tout = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=(mode == "train"),
                                          momentum=1 - momentum, eps=eps)
    return tout, (tx, tg, tb), rm.numpy(), rv.numpy()


BN_CASES = [
    pytest.param((5, 3), L.batchnorm_backward, id="(5,3)-graph"),
    pytest.param((5, 3), L.batchnorm_backward_alt, id="(5,3)-alt"),
    pytest.param((16, 7), L.batchnorm_backward, id="(16,7)-graph"),
    pytest.param((16, 7), L.batchnorm_backward_alt, id="(16,7)-alt"),
    # spatial batch norm: spatial_batchnorm_backward has one implementation
    pytest.param((2, 4, 3, 3), None, id="spatial-(2,4,3,3)"),
    pytest.param((3, 2, 1, 5), None, id="spatial-(3,2,1,5)"),
]


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("x_shape, backward", BN_CASES)
def test_batchnorm_matches_torch(torch, mode, x_shape, backward):
    """(N, D) inputs go through batchnorm_forward, (N, C, H, W) ones through
    spatial_batchnorm_forward."""
    spatial = len(x_shape) == 4
    rng = np.random.default_rng(len(x_shape) + x_shape[0])
    C = x_shape[1]
    bshape = (1, C) + (1,) * (len(x_shape) - 2)
    x = 2.0 * rng.standard_normal(x_shape) + rng.standard_normal(bshape)
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)
    momentum, eps = 0.8, 1e-5
    bn_param = {"mode": mode, "momentum": momentum, "eps": eps,
                "running_mean": running_mean.copy(), "running_var": running_var.copy()}
    if spatial:
        out, cache = L.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        dout = rng.standard_normal(out.shape)
        dx, dgamma, dbeta = L.spatial_batchnorm_backward(dout, cache)
    else:
        out, cache = L.batchnorm_forward(x, gamma, beta, bn_param)
        dout = rng.standard_normal(out.shape)
        dx, dgamma, dbeta = backward(dout, cache)

    tout, (tx, tg, tb), trm, trv = torch_bn(torch, x, gamma, beta, mode, running_mean, running_var, momentum, eps)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "bn out")
    assert_close(dx, tx.grad, "bn dx")
    assert_close(dgamma, tg.grad, "bn dgamma")
    assert_close(dbeta, tb.grad, "bn dbeta")
    assert_close(bn_param["running_mean"], trm, "bn running_mean")
    if mode == "test":
        assert_close(bn_param["running_var"], trv, "bn running_var (unchanged)")
        return
    # running_var differs on purpose: torch folds in the UNBIASED batch variance
    # (divide by M - 1), funkcije the biased one (divide by M), as cs231n does. Recover
    # torch's batch variance from its update and check ours is its biased counterpart.
    M = x.size // C
    torch_batch_var = (trv - momentum * running_var) / (1 - momentum)
    expected = momentum * running_var + (1 - momentum) * torch_batch_var * (M - 1) / M
    assert_close(bn_param["running_var"], expected, "bn running_var (biased vs torch's unbiased)")
    assert rel_error(bn_param["running_var"], trv) > 1e-3  # the difference is real, not rounding


@HYPO
@given(N=st.integers(2, 12), D=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))  # torch refuses N = 1
def test_batchnorm_matches_torch_random_shapes(torch, N, D, seed):
    rng = np.random.default_rng(seed)
    x = 2.0 * rng.standard_normal((N, D)) + rng.standard_normal(D)
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    zeros, ones = np.zeros(D), np.ones(D)
    out, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(out.shape)
    grads = L.batchnorm_backward(dout, cache)
    tout, tensors, _, _ = torch_bn(torch, x, gamma, beta, "train", zeros, ones, 0.9, 1e-5)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "bn out")
    for name, g, t in zip(["dx", "dgamma", "dbeta"], grads, tensors):
        if N == 2 and name == "dx":
            # N = 2: dx is O(eps) (the normalised batch is saturated at +-1) and both
            # sides compute it as a difference of O(1) terms, so compare it in absolute
            # terms (test_layers checks the N = 2 closed form)
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=0, atol=1e-12)
            continue
        assert_close(g, t.grad, f"bn {name}")


@HYPO
@given(N=st.integers(1, 5), D=st.integers(3, 9), seed=st.integers(0, 2**32 - 1))
def test_layernorm_matches_torch(torch, N, D, seed):
    rng = np.random.default_rng(seed)
    x = 2.0 * rng.standard_normal((N, D)) + rng.standard_normal((N, 1))
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    out, cache = L.layernorm_forward(x, gamma, beta, {"eps": 1e-5})
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = L.layernorm_backward(dout, cache)
    tx, tg, tb = T(torch, x), T(torch, gamma), T(torch, beta)
    tout = torch.nn.functional.layer_norm(tx, (D,), tg, tb, eps=1e-5)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "layernorm out")
    assert_close(dx, tx.grad, "layernorm dx")
    assert_close(dgamma, tg.grad, "layernorm dgamma")
    assert_close(dbeta, tb.grad, "layernorm dbeta")


@st.composite
def groupnorm_configs(draw):
    G = draw(st.sampled_from([1, 2, 3]))
    C = G * draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    assume(C // G * H * W >= 3)  # 1 or 2 values per group: see test_batchnorm_matches_torch_random_shapes
    return (draw(st.integers(1, 3)), C, H, W), G, draw(st.integers(0, 2**32 - 1))


@HYPO
@given(config=groupnorm_configs())
def test_groupnorm_matches_torch(torch, config):
    x_shape, G, seed = config
    rng = np.random.default_rng(seed)
    C = x_shape[1]
    x = 2.0 * rng.standard_normal(x_shape) + rng.standard_normal((1, C, 1, 1))
    gamma, beta = rng.standard_normal((1, C, 1, 1)), rng.standard_normal((1, C, 1, 1))
    out, cache = L.spatial_groupnorm_forward(x, gamma, beta, G, {"eps": 1e-5})
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = L.spatial_groupnorm_backward(dout, cache)
    tx, tg, tb = T(torch, x), T(torch, gamma.reshape(C)), T(torch, beta.reshape(C))
    tout = torch.nn.functional.group_norm(tx, G, tg, tb, eps=1e-5)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "groupnorm out")
    assert_close(dx, tx.grad, "groupnorm dx")
    assert_close(dgamma, tg.grad.reshape(1, C, 1, 1), "groupnorm dgamma")
    assert_close(dbeta, tb.grad.reshape(1, C, 1, 1), "groupnorm dbeta")


# ----------------------------------------------------------------------------- dropout


def test_dropout_test_mode_matches_torch_identity(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6))
    out, cache = L.dropout_forward(x, {"mode": "test", "p": 0.3})
    dout = rng.standard_normal(out.shape)
    dx = L.dropout_backward(dout, cache)
    tx = T(torch, x)
    tout = torch.nn.functional.dropout(tx, p=0.7, training=False)  # torch's p drops
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "dropout test out")
    assert_close(dx, tx.grad, "dropout test dx")


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_train_mask_statistics_match_torch(torch, p):
    """Masks are random on both sides, so compare what they must share: the kept
    fraction (each within 5 standard deviations of p) and the inverted-dropout scaling
    (kept units are x / p, in the output and in the gradient)."""
    shape = (300, 200)
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=shape)
    out, cache = L.dropout_forward(x, {"mode": "train", "p": p, "seed": 0})
    dx = L.dropout_backward(np.ones(shape), cache)
    torch.manual_seed(0)
    tx = T(torch, x)
    tout = torch.nn.functional.dropout(tx, p=1 - p, training=True)
    tout.backward(torch.ones(shape))
    tol = 5 * np.sqrt(p * (1 - p) / x.size)
    for name, o, g in [("funkcije", out, dx), ("torch", tout.detach().numpy(), tx.grad.numpy())]:
        kept = o != 0
        assert abs(kept.mean() - p) < tol, f"{name}: kept fraction {kept.mean():.4f}, p = {p}"
        np.testing.assert_allclose(o[kept], x[kept] / p, rtol=1e-12, err_msg=name)
        np.testing.assert_array_equal(o[~kept], 0.0, err_msg=name)
        np.testing.assert_allclose(g, kept / p, rtol=1e-12, err_msg=name)
