"""The fast spatial batch norm (fast_layers.spatial_batchnorm_*_fast, also fused with
ReLU), the fast ReLU and the fast GELU against the reference, on the compiled and the NumPy kernels."""
import os

import numpy as np
import pytest

from funkcije import fast_layers as FL
from funkcije import layers as L
from funkcije.gradient_check import eval_numerical_gradient_array, rel_error

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True, params=["cython", "numpy", "namespace"])
def impl(request):
    """Every test here runs on both kernel implementations."""
    if request.param not in FL.available_implementations():
        if IN_CI:
            pytest.fail("the compiled extension funkcije.kernels._compiled must be built under CI=true")
        pytest.skip("compiled extension not built")
    previous = FL.use_implementation(request.param)
    yield request.param
    FL.use_implementation(previous)


# small and odd shapes, batch 1, and the zoo's (VGG7BN / ResNet9 at batch 2: 64 channels
# at 32x32 down to 512 at 4x4)
SHAPES = [(2, 3, 4, 5), (1, 4, 3, 3), (5, 1, 1, 1), (3, 16, 7, 1), (4, 64, 8, 8), (1, 2, 1, 7),
          (2, 64, 32, 32), (2, 128, 16, 16), (1, 512, 4, 4)]


def _scale_error(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _inputs(rng, shape, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, gamma, beta


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("unbiased", [False, True])
def test_matches_reference_float64(shape, unbiased, rng):
    x, gamma, beta = _inputs(rng, shape, np.float64)
    p_ref = {"mode": "train", "momentum": 0.7, "unbiased": unbiased}
    p_fast = dict(p_ref)
    out_r, c_r = L.spatial_batchnorm_forward(x, gamma, beta, p_ref)
    out_f, c_f = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p_fast)
    assert out_f.dtype == np.float64 and out_f.shape == x.shape
    assert _scale_error(out_f, out_r) < 1e-12
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(p_fast[k], p_ref[k], rtol=1e-12, atol=1e-14)
    dout = rng.standard_normal(x.shape)
    for got, want in zip(FL.spatial_batchnorm_backward_fast(dout, c_f), L.spatial_batchnorm_backward(dout, c_r)):
        assert got.shape == want.shape and _scale_error(got, want) < 1e-11
    # test mode with the statistics just written
    p_ref["mode"] = p_fast["mode"] = "test"
    out_r, c_r = L.spatial_batchnorm_forward(x, gamma, beta, p_ref)
    out_f, c_f = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p_fast)
    assert _scale_error(out_f, out_r) < 1e-12
    for got, want in zip(FL.spatial_batchnorm_backward_fast(dout, c_f), L.spatial_batchnorm_backward(dout, c_r)):
        assert _scale_error(got, want) < 1e-12


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(2, 0, 3, 3), (3, 0, 1, 1)])
def test_zero_channels_give_empty_results_like_the_reference(shape, relu, rng):
    """No channels: empty outputs, gradients and statistics, in both modes (the
    reference's result; no special case in the kernels)."""
    x, gamma, beta = _inputs(rng, shape, np.float64)
    for mode in ("train", "test"):
        p = {"mode": mode}
        out, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p, relu=relu)
        want, _ = L.spatial_batchnorm_forward(x, gamma, beta, {"mode": mode})
        assert out.shape == want.shape == shape and out.dtype == np.float64
        assert p["running_mean"].shape == p["running_var"].shape == (0,)
        dx, dgamma, dbeta = FL.spatial_batchnorm_backward_fast(np.ones(shape), cache)
        assert dx.shape == shape and dgamma.shape == dbeta.shape == (0,)


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_kept_and_close_to_float64(shape, rng):
    x, gamma, beta = _inputs(rng, shape, np.float64)
    out64, c64 = FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"})
    f = lambda a: a.astype(np.float32)  # noqa: E731
    p = {"mode": "train"}
    out32, c32 = FL.spatial_batchnorm_forward_fast(f(x), f(gamma), f(beta), p)
    assert out32.dtype == np.float32 and p["running_mean"].dtype == np.float32 and p["running_var"].dtype == np.float32
    assert _scale_error(out32, out64) < 1e-5
    dout = rng.standard_normal(x.shape)
    for g32, g64 in zip(FL.spatial_batchnorm_backward_fast(f(dout), c32), FL.spatial_batchnorm_backward_fast(dout, c64)):
        assert g32.dtype == np.float32 and _scale_error(g32, g64) < 1e-5


def test_float32_statistics_accumulate_in_float64(rng):
    # a large mean over many values: float32 accumulation would lose the variance
    x = (rng.standard_normal((64, 2, 32, 32)) + 300.0).astype(np.float32)
    p = {"mode": "train", "momentum": 0.0}
    FL.spatial_batchnorm_forward_fast(x, np.ones(2, np.float32), np.zeros(2, np.float32), p)
    want = x.astype(np.float64).var(axis=(0, 2, 3))
    np.testing.assert_allclose(p["running_var"], want, rtol=1e-5)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_numerical_gradient(mode, rng):
    x, gamma, beta = _inputs(rng, (3, 2, 3, 4), np.float64)
    p = {"mode": "train"}
    FL.spatial_batchnorm_forward_fast(x, gamma, beta, p)
    p["mode"] = mode
    out, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, dict(p))
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = FL.spatial_batchnorm_backward_fast(dout, cache)
    for arr, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        num = eval_numerical_gradient_array(lambda _: FL.spatial_batchnorm_forward_fast(x, gamma, beta, dict(p))[0],
                                            arr, dout)
        assert rel_error(grad, num) < 1e-7


def test_against_torch(torch, rng):
    x, gamma, beta = _inputs(rng, (4, 3, 5, 5), np.float64)
    p = {"mode": "train", "unbiased": True, "momentum": 0.9}
    out, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ref = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    dout = rng.standard_normal(x.shape)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip(FL.spatial_batchnorm_backward_fast(dout, cache), (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p["running_mean"], rm.numpy(), rtol=1e-13)
    np.testing.assert_allclose(p["running_var"], rv.numpy(), rtol=1e-13)


def test_bad_input(rng):
    x, gamma, beta = _inputs(rng, (2, 3, 4, 4), np.float64)
    with pytest.raises(ValueError, match="mode"):
        FL.spatial_batchnorm_forward_fast(x, gamma, beta, {})
    with pytest.raises(ValueError, match="4 dimensions"):
        FL.spatial_batchnorm_forward_fast(x[0], gamma, beta, {"mode": "train"})
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        FL.spatial_batchnorm_forward_fast(x, gamma[:2], beta, {"mode": "train"})
    with pytest.raises(TypeError, match="share one dtype"):
        FL.spatial_batchnorm_forward_fast(x, gamma.astype(np.float32), beta, {"mode": "train"})
    out, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"})
    with pytest.raises(ValueError, match="forward output's shape"):
        FL.spatial_batchnorm_backward_fast(out[:1], cache)
    with pytest.raises(TypeError, match="spatial_batchnorm_forward_fast"):
        FL.spatial_batchnorm_backward_fast(out, L.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})[1])
    with pytest.raises(ValueError, match="non-empty"):
        FL.spatial_batchnorm_forward_fast(x[:0], gamma, beta, {"mode": "train"})


def _bn_relu_reference(x, gamma, beta, p):
    h, c_bn = L.spatial_batchnorm_forward(x, gamma, beta, p)
    out, c_relu = L.relu_forward(h)
    return out, (c_bn, c_relu)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_fused_relu_matches_the_composition(shape, mode, rng):
    x, gamma, beta = _inputs(rng, shape, np.float64)
    p_ref = {"mode": "train", "momentum": 0.5}
    L.spatial_batchnorm_forward(x * 0.5 + 1, gamma, beta, p_ref)  # running statistics that differ from x's
    p_ref["mode"] = mode
    p_fast = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p_ref.items()}
    out_r, (c_bn, c_relu) = _bn_relu_reference(x, gamma, beta, p_ref)
    out_f, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p_fast, relu=True)
    assert _scale_error(out_f, out_r) < 1e-12 and (out_f >= 0).all()
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(p_fast[k], p_ref[k], rtol=1e-12, atol=1e-14)
    dout = rng.standard_normal(x.shape)
    want = L.spatial_batchnorm_backward(L.relu_backward(dout, c_relu), c_bn)
    for got, w in zip(FL.spatial_batchnorm_backward_fast(dout, cache), want):
        assert got.shape == w.shape and _scale_error(got, w) < 1e-11


def test_fused_relu_numerical_gradient(rng):
    x, gamma, beta = _inputs(rng, (3, 2, 3, 4), np.float64)
    out, cache = FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"}, relu=True)
    assert np.abs(out[out > 0]).min() > 1e-4  # no output at ReLU's kink, where the slope jumps
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = FL.spatial_batchnorm_backward_fast(dout, cache)
    f = lambda _: FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"}, relu=True)[0]  # noqa: E731
    for arr, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        assert rel_error(grad, eval_numerical_gradient_array(f, arr, dout, h=1e-6)) < 1e-7


def test_float32_large_mean_keeps_its_precision(rng):
    """Statistics around a shift and (x - mean) formed before scaling: a mean 1e4 times
    the spread still gives float32 results close to float64's, forward and backward."""
    x64 = rng.standard_normal((8, 3, 6, 6)) + 1e4
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    dout = rng.standard_normal(x64.shape)
    f = lambda a: a.astype(np.float32)  # noqa: E731
    for relu in (False, True):
        o64, c64 = FL.spatial_batchnorm_forward_fast(x64, gamma, beta, {"mode": "train"}, relu=relu)
        o32, c32 = FL.spatial_batchnorm_forward_fast(f(x64), f(gamma), f(beta), {"mode": "train"}, relu=relu)
        assert _scale_error(o32, o64) < 1e-3  # x itself is stored to 1e4 * 6e-8 = 6e-4 of its spread
        g32 = FL.spatial_batchnorm_backward_fast(f(dout), c32)
        g64 = L.spatial_batchnorm_backward(
            dout * (o64 > 0) if relu else dout,
            L.spatial_batchnorm_forward(f(x64).astype(np.float64), gamma, beta, {"mode": "train"})[1])
        for a, b in zip(g32, g64):
            assert a.dtype == np.float32 and _scale_error(a, b) < 1e-3


def test_fused_relu_flag_is_checked_and_fused_cache_kept_apart(rng):
    x, gamma, beta = _inputs(rng, (2, 3, 4, 4), np.float64)
    with pytest.raises(TypeError, match="relu must be True or False"):
        FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"}, relu=1)
    with pytest.raises(TypeError, match="relu_forward_fast"):
        FL.relu_backward_fast(x, FL.spatial_batchnorm_forward_fast(x, gamma, beta, {"mode": "train"}, relu=True)[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", [(0, 3), (7,), (2, 3, 4, 5), (64, 16, 32, 32)])
def test_fast_relu_matches_reference(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    if x.size:
        x.flat[0] = 0.0  # the kink: subgradient 0, as the reference
    out, cache = FL.relu_forward_fast(x)
    out_r, cache_r = L.relu_forward(x)
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_array_equal(out, out_r)
    dout = rng.standard_normal(shape).astype(dtype)
    dx = FL.relu_backward_fast(dout, cache)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, L.relu_backward(dout, cache_r))
    np.testing.assert_array_equal(FL.relu_backward_fast(dout, cache_r), dx)  # the caches are interchangeable


@pytest.mark.parametrize("mode", ["train", "test"])
def test_fused_relu_passes_nan_as_the_composition_does(mode, rng):
    """A NaN (diverged weights, a bad pixel) comes out of batch norm + ReLU as NaN, as
    from the reference's maximum, so the loss shows it and the Solver stops."""
    x, gamma, beta = _inputs(rng, (3, 2, 4, 5), np.float32)
    x[1, 0, 2, 3] = np.nan
    p = {"mode": mode, "running_mean": np.zeros(2, np.float32), "running_var": np.ones(2, np.float32)}
    out_r, _ = _bn_relu_reference(x, gamma, beta, dict(p, running_mean=p["running_mean"].copy(),
                                                       running_var=p["running_var"].copy()))
    out_f, _ = FL.spatial_batchnorm_forward_fast(x, gamma, beta, p, relu=True)
    np.testing.assert_array_equal(np.isnan(out_f), np.isnan(out_r))
    assert np.isnan(out_f).any()


def test_fast_relu_nan_and_non_contiguous(rng):
    x = rng.standard_normal((4, 6))[:, ::2]
    x[0, 0] = np.nan
    out, cache = FL.relu_forward_fast(x)
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(out[1:], np.maximum(x[1:], 0))
    dx = FL.relu_backward_fast(np.ones(x.shape), cache)
    assert dx[0, 0] == 0
    with pytest.raises(ValueError, match="relu_backward_fast"):
        FL.relu_backward_fast(np.ones((4, 2)), cache)
    with pytest.raises(TypeError, match="relu_forward_fast"):
        FL.relu_forward_fast([1.0, -1.0])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", [(0, 3), (7,), (2, 3, 4, 5), (8, 16, 32, 32)])
def test_fast_gelu_matches_reference(shape, dtype, approximate, rng):
    """GELU's fast pass against the reference (Phi in float64 on both), special values
    included; the caches are interchangeable both ways."""
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if x.size >= 6:
        x.flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, -30.0]
    with np.errstate(invalid="ignore"):
        out, cache = FL.gelu_forward_fast(x, approximate)
        out_r, cache_r = L.gelu_forward(x, approximate)
        dout = rng.standard_normal(shape).astype(dtype)
        dx = FL.gelu_backward_fast(dout, cache)
        dx_r = L.gelu_backward(dout, cache_r)
        swapped = (FL.gelu_backward_fast(dout, cache_r), L.gelu_backward(dout, cache))
    assert out.dtype == dx.dtype == dtype and out.shape == dx.shape == x.shape
    # the C library's erfc and tanh against NumPy's and the reference's series, in double:
    # within 1e-14 of the scale (where 1 + tanh cancels, far left, either may be off by
    # that much), then rounded once to x's dtype, so one unit in its last place beside
    tol = 1e-14
    for got, want in ((out, out_r), (dx, dx_r), swapped):
        special = ~np.isfinite(want)
        np.testing.assert_array_equal(got[special], want[special])
        got, want = got[~special], want[~special]
        scale = max(np.abs(want).max(initial=0.0), 1.0)
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        assert np.all(err <= tol * scale + np.abs(np.spacing(want)).astype(np.float64))


def test_fast_gelu_gradient_and_bad_input(rng):
    x = rng.standard_normal((3, 5))
    dout = rng.standard_normal(x.shape)
    for approximate in ("none", "tanh"):
        _, cache = FL.gelu_forward_fast(x, approximate)
        num = eval_numerical_gradient_array(lambda v: FL.gelu_forward_fast(v, approximate)[0], x.copy(), dout)
        assert rel_error(FL.gelu_backward_fast(dout, cache), num) < 1e-8
    with pytest.raises(ValueError, match="gelu_forward_fast: approximate must be one of 'none', 'tanh'"):
        FL.gelu_forward_fast(x, "erf")
    with pytest.raises(TypeError, match="gelu_backward_fast"):
        FL.gelu_backward_fast(dout, FL.relu_forward_fast(x)[1])
    with pytest.raises(ValueError, match="gelu_backward_fast"):
        FL.gelu_backward_fast(dout[:2], FL.gelu_forward_fast(x)[1])


_THREADS_SCRIPT = """
import hashlib, numpy as np
from funkcije import fast_layers as FL
rng = np.random.default_rng(5)
x = (rng.standard_normal((16, 64, 32, 32)) * 2 + 1).astype(np.float32)
g, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
dout = rng.standard_normal(x.shape).astype(np.float32)
h = hashlib.sha256()
for relu in (False, True):
    out, cache = FL.spatial_batchnorm_forward_fast(x, g, b, {"mode": "train"}, relu=relu)
    for a in (out,) + FL.spatial_batchnorm_backward_fast(dout, cache):
        h.update(a.tobytes())
out, cache = FL.relu_forward_fast(x)
h.update(out.tobytes()); h.update(FL.relu_backward_fast(dout, cache).tobytes())
print(h.hexdigest())
"""


def test_same_bits_on_one_and_two_threads(impl):
    """Each channel's sums are made by one thread in a fixed order, and the elementwise
    passes do not depend on the split: the thread count changes no bit."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FUNKCIJE_FORCE_NUMPY"}
    env["FUNKCIJE_FORCE_NUMPY"] = "1" if impl == "numpy" else "0"
    digests = set()
    for threads in ("1", "2"):
        env["OMP_NUM_THREADS"] = threads
        res = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        digests.add(res.stdout.strip())
    assert len(digests) == 1
