"""Sandwich layers: numerical gradients (float64), agreement with the unfused
reference stack, dtype preservation and error propagation."""
import numpy as np
import pytest

from funkcije import layers as L
from funkcije import layer_utils as U
from funkcije.gradient_check import eval_numerical_gradient_array, rel_error

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _conv_args(rng, dtype=np.float64):
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return x, w, b


def _affine_args(rng, dtype=np.float64):
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    w = rng.standard_normal((6, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    return x, w, b


def _norm_args(rng, D, dtype=np.float64):
    return (1 + 0.1 * rng.standard_normal(D)).astype(dtype), (0.1 * rng.standard_normal(D)).astype(dtype)


# Each case: name, a builder returning (array args, trailing non-array args), forward, backward,
# and the unfused reference stack built from funkcije.layers (naive conv and pool).
def _ref_affine_relu(x, w, b):
    a, c1 = L.affine_forward(x, w, b)
    out, c2 = L.relu_forward(a)
    return out, lambda d: L.affine_backward(L.relu_backward(d, c2), c1)


def _ref_affine_bn_relu(x, w, b, gamma, beta, bn_param):
    a, c1 = L.affine_forward(x, w, b)
    an, c2 = L.batchnorm_forward(a, gamma, beta, bn_param)
    out, c3 = L.relu_forward(an)

    def back(d):
        da, dg, dbeta = L.batchnorm_backward(L.relu_backward(d, c3), c2)
        return L.affine_backward(da, c1) + (dg, dbeta)

    return out, back


def _ref_affine_ln_relu(x, w, b, gamma, beta, ln_param):
    a, c1 = L.affine_forward(x, w, b)
    an, c2 = L.layernorm_forward(a, gamma, beta, ln_param)
    out, c3 = L.relu_forward(an)

    def back(d):
        da, dg, dbeta = L.layernorm_backward(L.relu_backward(d, c3), c2)
        return L.affine_backward(da, c1) + (dg, dbeta)

    return out, back


def _ref_conv_relu(x, w, b, conv_param):
    a, c1 = L.conv_forward_naive(x, w, b, conv_param)
    out, c2 = L.relu_forward(a)
    return out, lambda d: L.conv_backward_naive(L.relu_backward(d, c2), c1)


def _ref_conv_relu_pool(x, w, b, conv_param, pool_param):
    # the textbook order conv -> relu -> pool, against which pool-then-relu is checked
    a, c1 = L.conv_forward_naive(x, w, b, conv_param)
    r, c2 = L.relu_forward(a)
    out, c3 = L.max_pool_forward_naive(r, pool_param)

    def back(d):
        return L.conv_backward_naive(L.relu_backward(L.max_pool_backward_naive(d, c3), c2), c1)

    return out, back


def _ref_conv_bn_relu(x, w, b, gamma, beta, conv_param, bn_param):
    a, c1 = L.conv_forward_naive(x, w, b, conv_param)
    an, c2 = L.spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, c3 = L.relu_forward(an)

    def back(d):
        da, dg, dbeta = L.spatial_batchnorm_backward(L.relu_backward(d, c3), c2)
        return L.conv_backward_naive(da, c1) + (dg, dbeta)

    return out, back


def _case(name, rng, dtype=np.float64):
    if name == "affine_relu":
        return _affine_args(rng, dtype), ()
    if name in ("affine_bn_relu", "affine_ln_relu"):
        extra = ({"mode": "train"},) if name == "affine_bn_relu" else ({"eps": 1e-5},)
        return _affine_args(rng, dtype) + _norm_args(rng, 5, dtype), extra
    if name == "conv_relu":
        return _conv_args(rng, dtype), (dict(CONV),)
    if name == "conv_relu_pool":
        return _conv_args(rng, dtype), (dict(CONV), dict(POOL))
    if name == "conv_bn_relu":
        return _conv_args(rng, dtype) + _norm_args(rng, 4, dtype), (dict(CONV), {"mode": "train"})
    raise AssertionError(name)


NAMES = ["affine_relu", "affine_bn_relu", "affine_ln_relu", "conv_relu", "conv_relu_pool", "conv_bn_relu"]
REFS = {
    "affine_relu": _ref_affine_relu,
    "affine_bn_relu": _ref_affine_bn_relu,
    "affine_ln_relu": _ref_affine_ln_relu,
    "conv_relu": _ref_conv_relu,
    "conv_relu_pool": _ref_conv_relu_pool,
    "conv_bn_relu": _ref_conv_bn_relu,
}


def _fns(name):
    return getattr(U, f"{name}_forward"), getattr(U, f"{name}_backward")


@pytest.mark.parametrize("name", NAMES)
def test_sandwich_matches_numerical_gradients(name, rng):
    arrays, extra = _case(name, rng)
    fwd, bwd = _fns(name)
    out, cache = fwd(*arrays, *extra)
    dout = rng.standard_normal(out.shape)
    grads = bwd(dout, cache)
    assert len(grads) == len(arrays)
    for i, (a, g) in enumerate(zip(arrays, grads)):
        assert g.shape == a.shape and g.dtype == np.float64

        def f(_, i=i):
            return fwd(*arrays, *extra)[0]

        num = eval_numerical_gradient_array(f, arrays[i], dout)
        if "bn" in name and i == 2:
            # batch norm subtracts the batch mean, so the bias before it has no effect:
            # its gradient is exactly zero and the centred difference is pure rounding noise
            assert np.abs(g).max() < 1e-12 and np.abs(num).max() < 1e-8, (g, num)
            continue
        assert rel_error(num, g) < 1e-7, (name, i, rel_error(num, g))


@pytest.mark.parametrize("name", NAMES)
def test_sandwich_equals_unfused_reference_stack(name, rng):
    """Same outputs and gradients as chaining the reference layers (naive conv and
    pool): in particular conv_relu_pool's pool-then-ReLU gives identical gradients."""
    arrays, extra = _case(name, rng)
    fwd, bwd = _fns(name)
    # separate bn_param dicts so both stacks see the same running statistics
    extra_ref = tuple(dict(e) for e in extra)
    out, cache = fwd(*arrays, *extra)
    ref_out, ref_back = REFS[name](*arrays, *extra_ref)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for g, rg in zip(bwd(dout, cache), ref_back(dout)):
        np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12)
    for e, er in zip(extra, extra_ref):
        for key in ("running_mean", "running_var"):
            if key in er:
                np.testing.assert_allclose(e[key], er[key], rtol=1e-12)


def test_conv_relu_pool_routes_gradient_like_relu_then_pool_on_negative_windows():
    """Windows whose maximum is negative, zero or positive: pool-then-ReLU must give
    the same zero/non-zero pattern as ReLU-then-pool (no gradient leaks through a
    window that ReLU zeroed)."""
    x = np.zeros((1, 1, 2, 6))
    x[0, 0] = [[-3.0, -1.0, 0.0, -2.0, 0.5, -0.5], [-2.0, -4.0, -1.0, -3.0, 2.0, 1.0]]
    w = np.ones((1, 1, 1, 1))
    b = np.zeros(1)
    conv_param = {"stride": 1, "pad": 0}
    out, cache = U.conv_relu_pool_forward(x, w, b, conv_param, POOL)
    np.testing.assert_array_equal(out, [[[[0.0, 0.0, 2.0]]]])
    dx, dw, db = U.conv_relu_pool_backward(np.ones_like(out), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 4] = 1.0
    np.testing.assert_array_equal(dx, expected)
    ref_out, ref_back = _ref_conv_relu_pool(x, w, b, conv_param, POOL)
    for g, rg in zip((dx, dw, db), ref_back(np.ones_like(out))):
        np.testing.assert_array_equal(g, rg)


@pytest.mark.parametrize("name", NAMES)
def test_sandwich_preserves_float32(name, rng):
    arrays64, extra = _case(name, rng)
    arrays32 = tuple(a.astype(np.float32) for a in arrays64)
    fwd, bwd = _fns(name)
    out, cache = fwd(*arrays32, *tuple(dict(e) for e in extra))
    assert out.dtype == np.float32
    dout = rng.standard_normal(out.shape)
    grads = bwd(dout.astype(np.float32), cache)
    assert all(g.dtype == np.float32 for g in grads)
    out64, cache64 = fwd(*arrays64, *tuple(dict(e) for e in extra))
    np.testing.assert_allclose(out, out64, rtol=1e-4, atol=1e-4)
    for g, g64 in zip(grads, bwd(dout, cache64)):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-3)


def test_bn_sandwiches_write_running_statistics_and_respect_test_mode(rng):
    arrays, (bn_param,) = _case("affine_bn_relu", rng)
    U.affine_bn_relu_forward(*arrays, bn_param)
    assert bn_param["running_mean"].shape == (5,)
    assert not np.allclose(bn_param["running_mean"], 0)
    bn_param["mode"] = "test"
    a, _ = U.affine_bn_relu_forward(*arrays, bn_param)
    b, _ = U.affine_bn_relu_forward(arrays[0][:1], *arrays[1:], bn_param)
    # in test mode a sample's output does not depend on the rest of the batch
    np.testing.assert_allclose(a[:1], b)

    arrays, (conv_param, bn_param) = _case("conv_bn_relu", rng)
    U.conv_bn_relu_forward(*arrays, conv_param, bn_param)
    assert bn_param["running_var"].shape == (4,)


def test_sandwich_errors_come_from_the_layer_checks(rng):
    x, w, b = _conv_args(rng)
    with pytest.raises(ValueError, match="channel"):
        U.conv_relu_pool_forward(x[:, :2], w, b, CONV, POOL)
    with pytest.raises(TypeError, match="dtype"):
        U.conv_relu_forward(x.astype(np.float32), w, b, CONV)
    xa, wa, ba = _affine_args(rng)
    with pytest.raises(ValueError):
        U.affine_relu_forward(xa, wa[:5], ba)
    with pytest.raises(ValueError, match="mode"):
        U.affine_bn_relu_forward(xa, wa, ba, np.ones(5), np.zeros(5), {})


@pytest.mark.parametrize("name", ["conv_relu", "conv_relu_pool", "conv_bn_relu"])
def test_conv_sandwich_can_skip_the_input_gradient(name, rng):
    arrays, extra = _case(name, rng)
    fwd, bwd = _fns(name)
    out, cache = fwd(*arrays, *tuple(dict(e) for e in extra))
    dout = rng.standard_normal(out.shape)
    full = bwd(dout, cache)
    skipped = bwd(dout, cache, need_dx=False)
    assert skipped[0] is None
    for g, gs in zip(full[1:], skipped[1:]):
        np.testing.assert_array_equal(g, gs)
