"""Reference layers (funkcije.layers): numerical gradient checks on a parameter grid,
known values computed by hand, dtype preservation, dropout's randomness, softmax
stability and max-pool tie breaking.

All gradient checks run in float64 against centred differences and require a relative
error below 1e-7 (docs/ARCHITECTURE.md, Verification). The step follows funkcije.check_grads: h = 1e-3
(LINEAR_H) where the layer is (piecewise, away from kinks) affine in the checked input, so
the centred difference is exact but for round-off, which the larger step shrinks; h = 1e-5
(SMOOTH_H) for softmax and for the normalisations with respect to x, which also have a
truncation error.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from funkcije import layers as L
from funkcije.check_grads import LINEAR_H, SMOOTH_H
from funkcije.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

TOL = 1e-7


# ----------------------------------------------------------------------------- helpers


def grad_errors(forward, backward, arrays, seed, hs=None):
    """Relative errors of backward's gradients against numerical ones, one per array.

    forward(*arrays) -> (out, cache); the numeric gradient is that of sum(out * dout),
    with step hs[k] for arrays[k] (default LINEAR_H). Also checks that every gradient
    has its input's shape and dtype.
    """
    hs = hs or [LINEAR_H] * len(arrays)
    rng = np.random.default_rng(seed)
    out, cache = forward(*arrays)
    dout = rng.standard_normal(out.shape)
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    assert len(grads) == len(arrays)
    errors = []
    for a, g, h in zip(arrays, grads, hs):
        assert g.shape == a.shape and g.dtype == a.dtype
        numeric = eval_numerical_gradient_array(lambda _: forward(*arrays)[0], a, dout, h=h)
        errors.append(rel_error(g, numeric))
    return errors


def separated(rng, shape):
    """A random permutation of values 0.02 apart: no ties, and no centred step of
    h <= 1e-3 changes which element of a pooling window is the maximum."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2).astype(np.float64).reshape(shape) * 0.02


def away_from_zero(rng, shape):
    """Values with |x| in [0.1, 2]: no element is within h of ReLU's kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------- gradient checks

# (x shape, w shape, conv_param): non-square kernels, stride != dilation, groups 1/2/3,
# (h, w) pairs, batch of 1, odd sizes, stride larger than the kernel (inputs never read)
CONV_GRID = [
    pytest.param((1, 1, 3, 3), (1, 1, 2, 2), {"stride": 1, "pad": 0}, id="batch1-tiny"),
    pytest.param((2, 3, 5, 5), (2, 3, 3, 3), {"stride": 1, "pad": 1}, id="cs231n-like"),
    pytest.param((2, 2, 6, 5), (3, 2, 3, 2), {"stride": (2, 1), "pad": (0, 1)}, id="nonsquare-pairs"),
    pytest.param((1, 4, 7, 6), (4, 2, 3, 3), {"stride": 1, "pad": 1, "dilation": 2, "groups": 2},
                 id="groups2-dil2"),
    pytest.param((2, 6, 5, 7), (3, 2, 2, 3), {"stride": (1, 2), "pad": (1, 0), "dilation": (2, 1), "groups": 3},
                 id="groups3-pairs"),
    pytest.param((1, 3, 5, 5), (3, 1, 3, 3), {"stride": 2, "pad": 2, "groups": 3}, id="depthwise-pad2"),
    pytest.param((2, 2, 4, 3), (3, 2, 4, 3), {"stride": 1, "pad": 0}, id="kernel-covers-input"),
    pytest.param((1, 2, 9, 7), (2, 2, 3, 3), {"stride": 3, "pad": 1, "dilation": 2}, id="stride3-dil2-odd"),
    pytest.param((2, 3, 5, 4), (2, 3, 1, 1), {"stride": 2, "pad": 0}, id="1x1-stride2"),
    pytest.param((1, 2, 7, 7), (2, 2, 2, 2), {"stride": 3}, id="stride-gt-kernel"),
    pytest.param((1, 1, 3, 2), (2, 1, 2, 2), {"stride": (2, 3), "pad": (3, 2)}, id="pad-gt-kernel"),
]


@pytest.mark.parametrize("x_shape, w_shape, conv_param", CONV_GRID)
def test_conv_gradients(x_shape, w_shape, conv_param):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    fwd = lambda x, w, b: L.conv_forward_naive(x, w, b, conv_param)
    errors = grad_errors(fwd, L.conv_backward_naive, [x, w, b], seed=1)
    assert max(errors) < TOL, dict(zip("xwb", errors))


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cg = draw(st.integers(1, 2))
    fg = draw(st.integers(1, 2))
    hh, ww = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    n = draw(st.integers(1, 2))
    assume(conv_out(h, hh, sh, ph, dh) >= 1 and conv_out(w, ww, sw, pw, dw) >= 1)
    seed = draw(st.integers(0, 2**32 - 1))
    conv_param = {"stride": (sh, sw), "pad": (ph, pw), "dilation": (dh, dw), "groups": groups}
    return (n, groups * cg, h, w), (groups * fg, cg, hh, ww), conv_param, seed


@settings(deadline=None, max_examples=15, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(conv_configs())
def test_conv_gradients_random_configs(config):
    x_shape, w_shape, conv_param, seed = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    fwd = lambda x, w, b: L.conv_forward_naive(x, w, b, conv_param)
    errors = grad_errors(fwd, L.conv_backward_naive, [x, w, b], seed=seed + 1)
    assert max(errors) < TOL, dict(zip("xwb", errors))


# (x shape, pool_param): tiling, overlapping, non-tiling, gaps (stride > window),
# default stride, identity, a window as large as the input
POOL_GRID = [
    pytest.param((2, 3, 4, 4), {"pool_height": 2, "pool_width": 2, "stride": 2}, id="2x2-s2-tiling"),
    pytest.param((1, 2, 5, 5), {"pool_height": 3, "pool_width": 3, "stride": 1}, id="3x3-s1-overlap"),
    pytest.param((2, 2, 8, 6), {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}, id="3x2-overlap-nontiling"),
    pytest.param((1, 3, 5, 7), {"pool_height": 2, "pool_width": 2, "stride": 2}, id="2x2-s2-nontiling-odd"),
    pytest.param((1, 2, 7, 7), {"pool_height": 2, "pool_width": 3, "stride": (3, 2)}, id="2x3-gaps"),
    pytest.param((1, 1, 6, 4), {"pool_height": 2, "pool_width": 2}, id="default-stride"),
    pytest.param((2, 2, 3, 3), {"pool_height": 1, "pool_width": 1, "stride": 1}, id="1x1-identity"),
    pytest.param((2, 1, 3, 5), {"pool_height": 3, "pool_width": 5, "stride": 1}, id="whole-input"),
]


@pytest.mark.parametrize("x_shape, pool_param", POOL_GRID)
def test_max_pool_gradients(x_shape, pool_param):
    x = separated(np.random.default_rng(0), x_shape)
    fwd = lambda x: L.max_pool_forward_naive(x, pool_param)
    (err,) = grad_errors(fwd, L.max_pool_backward_naive, [x], seed=1)
    assert err < TOL


@pytest.mark.parametrize("x_shape, pool_param", POOL_GRID)
def test_avg_pool_gradients(x_shape, pool_param):
    x = np.random.default_rng(0).standard_normal(x_shape)
    fwd = lambda x: L.avg_pool_forward_naive(x, pool_param)
    (err,) = grad_errors(fwd, L.avg_pool_backward_naive, [x], seed=1)
    assert err < TOL


@pytest.mark.parametrize("x_shape, M", [((1, 4), 3), ((3, 2, 3), 5), ((2, 3, 2, 2), 1), ((5,), 2)])
def test_affine_gradients(x_shape, M):
    rng = np.random.default_rng(0)
    D = int(np.prod(x_shape[1:]))
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((D, M)), rng.standard_normal(M)]
    errors = grad_errors(L.affine_forward, L.affine_backward, arrays, seed=1)
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("shape", [(1, 1), (4, 5), (2, 3, 3, 2)])
def test_relu_gradients(shape):
    x = away_from_zero(np.random.default_rng(0), shape)
    (err,) = grad_errors(L.relu_forward, L.relu_backward, [x], seed=1)
    assert err < TOL


@pytest.mark.parametrize("N, C", [(1, 2), (5, 7), (8, 3)])
def test_softmax_loss_gradient(N, C):
    rng = np.random.default_rng(N * 10 + C)
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, size=N)
    loss, dx = L.softmax_loss(x, y)
    numeric = eval_numerical_gradient(lambda _: L.softmax_loss(x, y)[0], x, verbose=False, h=SMOOTH_H)
    assert rel_error(dx, numeric) < TOL


@pytest.mark.parametrize("N, C", [(1, 2), (5, 7), (8, 3)])
def test_svm_loss_gradient(N, C):
    rng = np.random.default_rng(N * 10 + C)
    y = rng.integers(0, C, size=N)
    # integers plus distinct fractions k / C (per row): every margin x_j - x_y + 1 is an
    # integer plus a non-zero multiple of 1 / C, so at least 1 / C >> h from its hinge
    frac = np.stack([rng.permutation(C) for _ in range(N)]) / C
    x = rng.integers(-2, 3, size=(N, C)) + frac
    margins = x - x[np.arange(N), y][:, None] + 1
    margins[np.arange(N), y] = 1
    assert np.abs(margins).min() > 0.9 / C
    loss, dx = L.svm_loss(x, y)
    numeric = eval_numerical_gradient(lambda _: L.svm_loss(x, y)[0], x, verbose=False, h=LINEAR_H)
    assert rel_error(dx, numeric) < TOL


def _norm_inputs(rng, x_shape, p_shape):
    x = 2.0 * rng.standard_normal(x_shape) + rng.standard_normal(x_shape[1:])
    gamma = 1.0 + 0.5 * rng.standard_normal(p_shape)
    beta = rng.standard_normal(p_shape)
    return [x, gamma, beta]


# train mode: smooth in x, affine in gamma and beta; test mode: affine in all three
NORM_H = {"train": [SMOOTH_H, LINEAR_H, LINEAR_H], "test": [LINEAR_H] * 3}


# N = 1: the output is beta whatever x is, so dx is exactly 0 (numerically too).
# N = 2 is left to test_two_sample_normalisation_gradient (dx is O(eps), see there).
@pytest.mark.parametrize("backward", [L.batchnorm_backward, L.batchnorm_backward_alt], ids=["graph", "alt"])
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("N, D", [(1, 2), (3, 1), (7, 3), (4, 6)])
def test_batchnorm_gradients(backward, mode, N, D):
    rng = np.random.default_rng(N * 10 + D)
    arrays = _norm_inputs(rng, (N, D), (D,))
    rm, rv = rng.standard_normal(D), rng.uniform(0.5, 2.0, D)

    def fwd(x, g, b):
        # a fresh bn_param per call: train mode writes the running statistics back
        return L.batchnorm_forward(x, g, b, {"mode": mode, "running_mean": rm.copy(), "running_var": rv.copy()})

    errors = grad_errors(fwd, backward, arrays, seed=1, hs=NORM_H[mode])
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("N, D", [(1, 3), (3, 5), (4, 1)])
def test_layernorm_gradients(N, D):
    rng = np.random.default_rng(N * 10 + D)
    arrays = _norm_inputs(rng, (N, D), (D,))
    fwd = lambda x, g, b: L.layernorm_forward(x, g, b, {"eps": 1e-5})
    errors = grad_errors(fwd, L.layernorm_backward, arrays, seed=1, hs=NORM_H["train"])
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (3, 4, 2, 3), (2, 1, 1, 3)])
def test_spatial_batchnorm_gradients(mode, shape):
    rng = np.random.default_rng(sum(shape))
    C = shape[1]
    arrays = _norm_inputs(rng, shape, (C,))
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)

    def fwd(x, g, b):
        return L.spatial_batchnorm_forward(x, g, b, {"mode": mode, "running_mean": rm.copy(),
                                                     "running_var": rv.copy()})

    errors = grad_errors(fwd, L.spatial_batchnorm_backward, arrays, seed=1, hs=NORM_H[mode])
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("G", [1, 2, 3, 6])
@pytest.mark.parametrize("shape", [(1, 6, 2, 3), (2, 6, 3, 1)])
def test_spatial_groupnorm_gradients(G, shape):
    rng = np.random.default_rng(G * 10 + shape[0])
    arrays = _norm_inputs(rng, shape, (1, shape[1], 1, 1))
    fwd = lambda x, g, b: L.spatial_groupnorm_forward(x, g, b, G, {})
    errors = grad_errors(fwd, L.spatial_groupnorm_backward, arrays, seed=1, hs=NORM_H["train"])
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("layer", ["batchnorm", "layernorm"])
def test_two_sample_normalisation_gradient(layer):
    """Normalising two values gives +-d / sqrt(d^2 + eps) with d half their difference:
    saturated at +-1, so dx is suppressed by eps. By hand,
    dx1 = -dx2 = gamma (dout1 - dout2) / 2 * eps / (d^2 + eps)^(3/2).
    A relative error is meaningless for a gradient that small (the round-off of the
    numerical one is of the same order), so the analytic one is checked against
    this closed form, and the numerical one only in absolute terms."""
    rng = np.random.default_rng(5)
    eps = 1e-5
    x = rng.standard_normal((2, 3)) * 2.0
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    dout = rng.standard_normal((2, 3))
    if layer == "layernorm":  # rows of two features: the same algebra on the transpose
        x, dout = x.T.copy(), dout.T.copy()
        gamma, beta = gamma[:2], beta[:2]
        fwd = lambda x: L.layernorm_forward(x, gamma, beta, {"eps": eps})
        _, cache = fwd(x)
        dx = L.layernorm_backward(dout, cache)[0]
        d = (x[:, 0] - x[:, 1]) / 2
        dx1 = gamma[0] * dout[:, 0] - gamma[1] * dout[:, 1]
        expected = np.stack([dx1, -dx1], axis=1) / 2 * eps / (d[:, None] ** 2 + eps) ** 1.5
    else:
        fwd = lambda x: L.batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": eps})
        _, cache = fwd(x)
        dx = L.batchnorm_backward(dout, cache)[0]
        np.testing.assert_allclose(L.batchnorm_backward_alt(dout, cache)[0], dx, rtol=1e-6)
        d = (x[0] - x[1]) / 2
        dx1 = gamma * (dout[0] - dout[1]) / 2 * eps / (d**2 + eps) ** 1.5
        expected = np.stack([dx1, -dx1])
    assert np.abs(dx).max() < 1e-3
    # the closed form has no cancellation; the layer's dx is a difference of O(1) terms
    np.testing.assert_allclose(dx, expected, rtol=1e-6)
    numeric = eval_numerical_gradient_array(lambda _: fwd(x)[0], x, dout, h=SMOOTH_H)
    np.testing.assert_allclose(numeric, expected, atol=1e-9)


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_dropout_gradients(mode, p):
    x = np.random.default_rng(0).standard_normal((5, 6))
    # a fixed int seed: every forward of the numerical gradient draws the same mask
    fwd = lambda x: L.dropout_forward(x, {"mode": mode, "p": p, "seed": 3})
    (err,) = grad_errors(fwd, L.dropout_backward, [x], seed=1)
    assert err < TOL


def test_batchnorm_backward_and_alt_agree(rng):
    x, gamma, beta = _norm_inputs(rng, (6, 4), (4,))
    _, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal((6, 4))
    for a, b in zip(L.batchnorm_backward(dout, cache), L.batchnorm_backward_alt(dout, cache)):
        assert rel_error(a, b) < 1e-10


# ----------------------------------------------------------------------------- known values


def test_affine_known_values():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    w = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    b = np.array([0.5, 0.0, -0.5])
    out, cache = L.affine_forward(x, w, b)
    np.testing.assert_array_equal(out, [[5.5, 2.0, -1.5], [11.5, 4.0, -3.5]])
    dx, dw, db = L.affine_backward(np.ones((2, 3)), cache)
    np.testing.assert_array_equal(dx, [[0.0, 3.0], [0.0, 3.0]])
    np.testing.assert_array_equal(dw, [[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]])
    np.testing.assert_array_equal(db, [2.0, 2.0, 2.0])


def test_affine_flattens_trailing_dims():
    x = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    w = np.eye(6)
    out, cache = L.affine_forward(x, w, np.zeros(6))
    np.testing.assert_array_equal(out, x.reshape(2, 6))
    dx, _, _ = L.affine_backward(np.ones((2, 6)), cache)
    assert dx.shape == x.shape


def test_relu_known_values():
    x = np.array([[-1.0, 0.0, 2.0]])
    out, cache = L.relu_forward(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0]])
    # the subgradient at 0 is taken as 0
    np.testing.assert_array_equal(L.relu_backward(np.array([[5.0, 5.0, 5.0]]), cache), [[0.0, 0.0, 5.0]])


X33 = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]


def test_conv_known_values_difference_kernel():
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    out, _ = L.conv_forward_naive(X33, w, np.array([0.5]), {"stride": 1, "pad": 0})
    # x[i, j] - x[i+1, j+1] = -4 everywhere, plus the bias (cross-correlation: no kernel flip)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -3.5))


def test_conv_known_values_box_kernel_and_backward():
    w = np.ones((1, 1, 3, 3))
    out, cache = L.conv_forward_naive(X33, w, np.zeros(1), {"stride": 1, "pad": 1})
    sums = [[12.0, 21.0, 16.0], [27.0, 45.0, 33.0], [24.0, 39.0, 28.0]]
    np.testing.assert_array_equal(out[0, 0], sums)
    dx, dw, db = L.conv_backward_naive(np.ones_like(out), cache)
    # each input is covered by as many windows as it has in-bounds neighbours (incl. itself)
    np.testing.assert_array_equal(dx[0, 0], [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]])
    # dw[a, b] sums the inputs seen by kernel tap (a, b): the same box sums
    np.testing.assert_array_equal(dw[0, 0], sums)
    np.testing.assert_array_equal(db, [9.0])

    out, _ = L.conv_forward_naive(X33, w, np.zeros(1), {"stride": 2, "pad": 1})
    np.testing.assert_array_equal(out[0, 0], [[12.0, 16.0], [24.0, 28.0]])


def test_conv_known_values_dilation_and_stride_pair():
    w = np.ones((1, 1, 2, 2))
    out, _ = L.conv_forward_naive(X33, w, np.zeros(1), {"stride": 1, "pad": 0, "dilation": 2})
    np.testing.assert_array_equal(out, [[[[1.0 + 3.0 + 7.0 + 9.0]]]])
    # dilation (1, 2) with a 1x2 kernel pairs columns 0 and 2; stride (2, 1) takes rows 0 and 2
    w = np.ones((1, 1, 1, 2))
    out, _ = L.conv_forward_naive(X33, w, np.zeros(1), {"stride": (2, 1), "pad": 0, "dilation": (1, 2)})
    np.testing.assert_array_equal(out[0, 0], [[4.0], [16.0]])


def test_conv_known_values_groups():
    x = np.stack([X33[0, 0], 10 * X33[0, 0]])[None]  # (1, 2, 3, 3)
    w = np.array([2.0, 3.0, -1.0, 1.0]).reshape(4, 1, 1, 1)  # groups=2: filters 0,1 see channel 0
    out, _ = L.conv_forward_naive(x, w, np.zeros(4), {"stride": 1, "pad": 0, "groups": 2})
    np.testing.assert_array_equal(out[0], [2 * x[0, 0], 3 * x[0, 0], -x[0, 1], x[0, 1]])


def test_conv_groups_equal_separate_convolutions(rng):
    x = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((4, 3, 2, 3))
    b = rng.standard_normal(4)
    cp = {"stride": (1, 2), "pad": 1, "dilation": (2, 1)}
    out, _ = L.conv_forward_naive(x, w, b, dict(cp, groups=2))
    lo, _ = L.conv_forward_naive(x[:, :3], w[:2], b[:2], cp)
    hi, _ = L.conv_forward_naive(x[:, 3:], w[2:], b[2:], cp)
    np.testing.assert_allclose(out, np.concatenate([lo, hi], axis=1), rtol=1e-12, atol=1e-12)


X44 = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)


def test_pool_known_values_tiling():
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = L.max_pool_forward_naive(X44, pp)
    np.testing.assert_array_equal(out[0, 0], [[5.0, 7.0], [13.0, 15.0]])
    dx = L.max_pool_backward_naive(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)

    out, cache = L.avg_pool_forward_naive(X44, pp)
    np.testing.assert_array_equal(out[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    dx = L.avg_pool_backward_naive(np.array([[[[4.0, 8.0], [12.0, 16.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], np.kron([[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2))))


def test_pool_known_values_overlapping():
    pp = {"pool_height": 3, "pool_width": 3, "stride": 1}
    out, cache = L.max_pool_forward_naive(X44, pp)
    np.testing.assert_array_equal(out[0, 0], [[10.0, 11.0], [14.0, 15.0]])
    dx = L.max_pool_backward_naive(np.ones((1, 1, 2, 2)), cache)
    expected = np.zeros((4, 4))
    expected[2, 2] = expected[2, 3] = expected[3, 2] = expected[3, 3] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)

    out, cache = L.avg_pool_forward_naive(X44, pp)
    np.testing.assert_array_equal(out[0, 0], [[5.0, 6.0], [9.0, 10.0]])
    dx = L.avg_pool_backward_naive(np.full((1, 1, 2, 2), 9.0), cache)
    # overlapping windows add up: the count of windows covering each input
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_pool_known_values_non_tiling():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = L.max_pool_forward_naive(x, pp)
    np.testing.assert_array_equal(out[0, 0], [[6.0, 8.0], [16.0, 18.0]])
    out, cache = L.avg_pool_forward_naive(x, pp)
    np.testing.assert_array_equal(out[0, 0], [[3.0, 5.0], [13.0, 15.0]])
    dx = L.avg_pool_backward_naive(np.ones((1, 1, 2, 2)), cache)
    # the last row and column are in no window: no gradient
    assert np.all(dx[0, 0, 4, :] == 0) and np.all(dx[0, 0, :, 4] == 0)
    np.testing.assert_array_equal(dx[0, 0, :4, :4], np.full((4, 4), 0.25))


def test_max_pool_ties_go_to_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    _, cache = L.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = L.max_pool_backward_naive(np.array([[[[7.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 7.0], [0.0, 0.0]])

    x = np.zeros((1, 1, 3, 3))
    _, cache = L.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 1})
    dx = L.max_pool_backward_naive(np.array([[[[1.0, 2.0], [4.0, 8.0]]]]), cache)
    # every window's first element (row-major) receives its gradient
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 2.0, 0.0], [4.0, 8.0, 0.0], [0.0, 0.0, 0.0]])


def test_softmax_known_values():
    C = 10
    x = np.zeros((4, C))
    y = np.array([0, 3, 9, 3])
    loss, dx = L.softmax_loss(x, y)
    assert loss == pytest.approx(np.log(C), rel=1e-14)
    expected = np.full((4, C), 1.0 / C)
    expected[np.arange(4), y] -= 1
    np.testing.assert_allclose(dx, expected / 4, rtol=1e-14)

    loss, dx = L.softmax_loss(np.array([[0.0, np.log(3.0)]]), np.array([0]))
    assert loss == pytest.approx(np.log(4.0), rel=1e-14)
    np.testing.assert_allclose(dx, [[-0.75, 0.75]], rtol=1e-14)


def test_svm_known_values():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    y = np.array([0, 0])
    loss, dx = L.svm_loss(x, y)
    # row 0: margins 2 and 3; row 1: margins -1 -> 0 and 0 (exactly on the hinge: no gradient)
    assert loss == 2.5
    np.testing.assert_array_equal(dx, [[-1.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    loss, _ = L.svm_loss(np.zeros((3, 5)), np.array([0, 1, 4]))
    assert loss == 4.0  # C - 1 margins of 1 per sample


@pytest.mark.parametrize("M", [1e4, 1e8, 1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_logits(M, dtype):
    x = np.array([[M, 0.0, -M], [M, 0.0, -M], [M, 0.0, -M]], dtype=dtype)
    y = np.array([0, 1, 2])
    loss, dx = L.softmax_loss(x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dx))
    assert loss.dtype == dtype and dx.dtype == dtype
    # the losses are 0, M and 2M: mean M
    assert float(loss) == pytest.approx(M, rel=1e-6)
    expected = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]) / 3
    np.testing.assert_allclose(dx, expected, atol=1e-7)


def test_softmax_stable_for_huge_float64_logits():
    x = np.array([[1e300, -1e300], [-1e300, 1e300]])
    loss, dx = L.softmax_loss(x, np.array([0, 0]))
    assert float(loss) == pytest.approx(1e300, rel=1e-12)
    assert np.all(np.isfinite(dx))


def test_batchnorm_train_normalises_and_updates_running_stats(rng):
    x = 3.0 * rng.standard_normal((50, 4)) + np.array([1.0, -2.0, 5.0, 0.0])
    bn_param = {"mode": "train"}
    out, _ = L.batchnorm_forward(x, np.ones(4), np.zeros(4), bn_param)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)  # sqrt(var / (var + eps))
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_var"], 0.9 + 0.1 * x.var(axis=0), rtol=1e-12)

    gamma, beta = np.array([2.0, 0.5, 1.0, 3.0]), np.array([1.0, -1.0, 0.0, 2.0])
    out, _ = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-5)


def test_batchnorm_running_stats_by_hand():
    x = np.array([[0.0], [4.0]])  # batch mean 2, biased batch variance 4
    bn_param = {"mode": "train"}
    L.batchnorm_forward(x, np.ones(1), np.zeros(1), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], [0.2], rtol=1e-14)
    np.testing.assert_allclose(bn_param["running_var"], [1.3], rtol=1e-14)
    L.batchnorm_forward(x, np.ones(1), np.zeros(1), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], [0.38], rtol=1e-14)
    np.testing.assert_allclose(bn_param["running_var"], [1.57], rtol=1e-14)

    bn_param = {"mode": "train", "momentum": 0.5, "running_mean": np.array([1.0]), "running_var": np.array([2.0])}
    L.batchnorm_forward(x, np.ones(1), np.zeros(1), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], [1.5], rtol=1e-14)
    np.testing.assert_allclose(bn_param["running_var"], [3.0], rtol=1e-14)


def test_batchnorm_test_mode_uses_running_stats():
    bn_param = {"mode": "test", "eps": 0.0, "running_mean": np.array([2.0]), "running_var": np.array([4.0])}
    out, _ = L.batchnorm_forward(np.array([[4.0], [0.0]]), np.array([3.0]), np.array([1.0]), bn_param)
    np.testing.assert_array_equal(out, [[4.0], [-2.0]])  # (x - 2) / 2 * 3 + 1
    np.testing.assert_array_equal(bn_param["running_mean"], [2.0])
    np.testing.assert_array_equal(bn_param["running_var"], [4.0])


def test_layernorm_known_values(rng):
    out, _ = L.layernorm_forward(np.array([[1.0, 3.0], [-2.0, 2.0]]), np.ones(2), np.zeros(2), {"eps": 0.0})
    np.testing.assert_array_equal(out, [[-1.0, 1.0], [-1.0, 1.0]])
    x = 4.0 * rng.standard_normal((3, 20)) + 7.0
    out, _ = L.layernorm_forward(x, np.ones(20), np.zeros(20), {})
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)


def test_spatial_batchnorm_is_batchnorm_per_channel(rng):
    x, gamma, beta = _norm_inputs(rng, (3, 4, 2, 5), (4,))
    p1, p2 = {"mode": "train"}, {"mode": "train"}
    out, _ = L.spatial_batchnorm_forward(x, gamma, beta, p1)
    ref, _ = L.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, 4), gamma, beta, p2)
    np.testing.assert_allclose(out, ref.reshape(3, 2, 5, 4).transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p1["running_mean"], p2["running_mean"], rtol=1e-12)
    np.testing.assert_allclose(p1["running_var"], p2["running_var"], rtol=1e-12)


def test_groupnorm_limits(rng):
    N, C, H, W = 2, 6, 3, 2
    x = 3.0 * rng.standard_normal((N, C, H, W)) + 2.0
    ones, zeros = np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1))
    # G = 1: layer norm over (C, H, W)
    out, _ = L.spatial_groupnorm_forward(x, ones, zeros, 1, {})
    ref, _ = L.layernorm_forward(x.reshape(N, -1), np.ones(C * H * W), np.zeros(C * H * W), {})
    np.testing.assert_allclose(out.reshape(N, -1), ref, rtol=1e-12, atol=1e-12)
    # G = C: instance norm, every (n, c) plane has mean 0 and std 1
    out, _ = L.spatial_groupnorm_forward(x, ones, zeros, C, {})
    np.testing.assert_allclose(out.mean(axis=(2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(2, 3)), 1.0, atol=1e-4)
    # G = 3: each pair of channels shares its statistics
    out, _ = L.spatial_groupnorm_forward(x, ones, zeros, 3, {})
    grouped = out.reshape(N, 3, -1)
    np.testing.assert_allclose(grouped.mean(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(grouped.std(axis=2), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- dropout


def test_dropout_test_mode_is_identity(rng):
    x = rng.standard_normal((4, 5))
    out, cache = L.dropout_forward(x, {"mode": "test", "p": 0.3})
    np.testing.assert_array_equal(out, x)
    dout = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(L.dropout_backward(dout, cache), dout)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_keep_fraction_and_scaling(p):
    x = np.ones((400, 250))
    out, cache = L.dropout_forward(x, {"mode": "train", "p": p, "seed": 0})
    kept = out != 0
    # 1e5 Bernoulli(p) draws: 5 standard deviations is ~0.008 at most
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(out[kept], 1.0 / p, rtol=1e-15)  # inverted dropout
    dx = L.dropout_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(dx, out)


def test_dropout_keep_all():
    x = np.random.default_rng(0).standard_normal((3, 4))
    out, _ = L.dropout_forward(x, {"mode": "train", "p": 1.0, "seed": 5})
    np.testing.assert_array_equal(out, x)


def test_dropout_seeds():
    x = np.ones((50, 40))
    a, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    b, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    c, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 2})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a Generator is accepted and advances: consecutive masks differ, the sequence repeats
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    m1, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": g1})
    m2, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": g1})
    m3, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": g2})
    assert not np.array_equal(m1, m2)
    np.testing.assert_array_equal(m1, m3)


def test_dropout_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()
    x = np.ones((30, 30))
    L.dropout_forward(x, {"mode": "train", "p": 0.5})
    L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 4})
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


def test_dropout_unseeded_masks_differ():
    x = np.ones((40, 40))
    a, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5})
    b, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5})
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------- dtypes


def _run_all(dtype):
    """Every forward and backward on small inputs of `dtype`: {name: array or scalar}."""
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    results = {}

    def record(name, fwd_out, grads):
        results[name + ".out"] = fwd_out
        for k, g in enumerate(grads if isinstance(grads, tuple) else (grads,)):
            results[f"{name}.grad{k}"] = g

    out, c = L.affine_forward(r(3, 2, 2), r(4, 5), r(5))
    record("affine", out, L.affine_backward(r(3, 5), c))
    out, c = L.relu_forward(r(3, 4))
    record("relu", out, L.relu_backward(r(3, 4), c))
    y = np.array([0, 2, 1])
    loss, dx = L.softmax_loss(r(3, 4), y)
    record("softmax", loss, dx)
    loss, dx = L.svm_loss(r(3, 4), y)
    record("svm", loss, dx)
    for mode in ("train", "test"):
        bn = {"mode": mode}
        out, c = L.batchnorm_forward(r(5, 3), r(3), r(3), bn)
        record(f"batchnorm-{mode}", out, L.batchnorm_backward(r(5, 3), c))
        results[f"batchnorm-{mode}.running_mean"] = bn["running_mean"]
        results[f"batchnorm-{mode}.running_var"] = bn["running_var"]
        record(f"batchnorm-alt-{mode}", out, L.batchnorm_backward_alt(r(5, 3), c))
        bn = {"mode": mode}
        out, c = L.spatial_batchnorm_forward(r(2, 3, 2, 2), r(3), r(3), bn)
        record(f"spatial_batchnorm-{mode}", out, L.spatial_batchnorm_backward(r(2, 3, 2, 2), c))
        results[f"spatial_batchnorm-{mode}.running_var"] = bn["running_var"]
        out, c = L.dropout_forward(r(4, 3), {"mode": mode, "p": 0.5, "seed": 0})
        record(f"dropout-{mode}", out, L.dropout_backward(r(4, 3), c))
    out, c = L.layernorm_forward(r(3, 5), r(5), r(5), {})
    record("layernorm", out, L.layernorm_backward(r(3, 5), c))
    out, c = L.spatial_groupnorm_forward(r(2, 4, 2, 3), r(1, 4, 1, 1), r(1, 4, 1, 1), 2, {})
    record("groupnorm", out, L.spatial_groupnorm_backward(r(2, 4, 2, 3), c))
    cp = {"stride": (2, 1), "pad": 1, "dilation": (1, 2), "groups": 2}
    out, c = L.conv_forward_naive(r(2, 4, 5, 5), r(2, 2, 2, 3), r(2), cp)
    record("conv", out, L.conv_backward_naive(r(*out.shape), c))
    pp = {"pool_height": 2, "pool_width": 3, "stride": 1}
    out, c = L.max_pool_forward_naive(r(2, 2, 4, 5), pp)
    record("max_pool", out, L.max_pool_backward_naive(r(*out.shape), c))
    out, c = L.avg_pool_forward_naive(r(2, 2, 4, 5), pp)
    record("avg_pool", out, L.avg_pool_backward_naive(r(*out.shape), c))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_everywhere(dtype):
    results = _run_all(dtype)
    wrong = {k: np.asarray(v).dtype for k, v in results.items() if np.asarray(v).dtype != dtype}
    assert not wrong, f"dtype {np.dtype(dtype)} not preserved: {wrong}"
    for k, v in results.items():
        if not isinstance(v, np.ndarray):
            assert isinstance(v, np.generic), k  # scalar losses are NumPy scalars of the dtype


def test_float32_agrees_with_float64():
    r32, r64 = _run_all(np.float32), _run_all(np.float64)
    for k in r64:
        # same draws, rounded to float32 first: agreement to float32 precision
        np.testing.assert_allclose(np.asarray(r32[k], np.float64), r64[k], rtol=2e-4, atol=2e-4, err_msg=k)


def test_numpy_float64_scalars_in_params_do_not_upcast():
    x = np.ones((4, 3), dtype=np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    bn = {"mode": "train", "eps": np.float64(1e-5), "momentum": np.float64(0.9)}
    out, c = L.batchnorm_forward(x, g, b, bn)
    assert out.dtype == np.float32 and bn["running_mean"].dtype == np.float32
    assert bn["running_var"].dtype == np.float32
    out, c = L.layernorm_forward(x, g, b, {"eps": np.float64(1e-5)})
    assert out.dtype == np.float32
    out, c = L.dropout_forward(x, {"mode": "train", "p": np.float64(0.5), "seed": 0})
    assert out.dtype == np.float32 and L.dropout_backward(x, c).dtype == np.float32
