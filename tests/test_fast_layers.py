"""funkcije.fast_layers against the reference layers and PyTorch, on both
implementations (the compiled Cython kernels and the pure-NumPy fallback).

Tolerances: float64 results agree with the reference to 1e-10 relative; float32
results to 1e-4 relative to the array's scale (|fast - ref| <= 1e-4 * (|ref| + max|ref|)),
since float32 sums taken in a different order legitimately differ by a few ulps of the
largest terms, which is large relative to entries that cancel to near zero.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from funkcije import fast_layers as FL
from funkcije.kernels import conv as KC, runtime as KR
from funkcije import layers as L

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["cython", "numpy", "namespace"])
def impl(request):
    name = request.param
    if name not in FL.available_implementations():
        if IN_CI:
            pytest.fail("the compiled extension funkcije.kernels._compiled must be built under CI=true")
        pytest.skip("compiled extension not built")
    previous = FL.use_implementation(name)
    yield name
    FL.use_implementation(previous)


@contextlib.contextmanager
def direct_layout(mode):
    """The direct kernels' vector layout ("columns", "auto", "rows") inside the block."""
    k = KR.compiled
    if k is None:
        yield
        return
    previous = k.direct_layout(mode)
    try:
        yield
    finally:
        k.direct_layout(previous)


@pytest.fixture(params=["default", "winograd-everywhere", "winograd2-everywhere", "im2col-only", "direct-rows",
                        "direct-columns"])
def algo(request, monkeypatch):
    """"default": the library's choice of algorithm (float32 layers with small
    C * HH * WW take the direct kernels on AVX-512 CPUs); "winograd-everywhere": every
    3x3 stride-1 undilated convolution takes Winograd F(4x4, 3x3), however few its
    channels ("winograd2-everywhere": F(2x2, 3x3));
    "im2col-only": neither Winograd nor the direct kernels; "direct-rows" /
    "direct-columns": the direct forward kernels with vectors along output rows
    wherever those apply / always along filters. So the whole grid checks every
    algorithm."""
    if request.param.startswith("winograd"):
        monkeypatch.setattr(KC, "_WINOGRAD_MIN_CHANNELS", 1)
        monkeypatch.setattr(KC, "_WINOGRAD_TRANSFORM_COST", None)
        monkeypatch.setattr(KC, "_winograd_enabled", True)
        monkeypatch.setattr(KC, "_winograd_tile", 2 if request.param.startswith("winograd2") else 4)
    if request.param == "im2col-only":
        monkeypatch.setattr(KC, "_winograd_enabled", False)
        monkeypatch.setattr(KC, "_direct_enabled", False)
    if request.param.startswith("direct-"):
        with direct_layout(request.param[len("direct-"):]):
            yield request.param
        return
    yield request.param


@pytest.fixture
def tiny_workspace():
    """A workspace bound so small that every sample is its own chunk."""
    previous = FL.set_workspace_limit(1)
    yield
    FL.set_workspace_limit(previous)


def assert_close(fast, ref, dtype):
    assert fast.dtype == np.dtype(dtype), f"dtype {fast.dtype}, expected {dtype}"
    assert fast.shape == ref.shape
    fast64, ref64 = fast.astype(np.float64), ref.astype(np.float64)
    if np.dtype(dtype) == np.float64:
        err = np.abs(fast64 - ref64) / np.maximum(1e-8, np.abs(fast64) + np.abs(ref64))
        assert err.max(initial=0.0) < 1e-10, f"max relative error {err.max()}"
    else:
        scale = np.abs(ref64).max(initial=0.0)
        bound = 1e-4 * (np.abs(ref64) + scale) + 1e-30
        worst = (np.abs(fast64 - ref64) / bound).max(initial=0.0)
        assert worst <= 1.0, f"float32 error is {worst:.2f} times the 1e-4 tolerance"


# (x shape, w shape, conv_param): non-square kernels, stride != dilation, groups 1/2/3,
# (h, w) pairs, batch of 1, odd sizes, windows that do not tile, kernels as big as the input.
CONV_CASES = [
    ((2, 3, 7, 8), (4, 3, 3, 2), {"stride": 1, "pad": 1}),
    ((1, 1, 5, 5), (2, 1, 5, 5), {"stride": 1, "pad": 0}),
    ((3, 2, 9, 7), (3, 2, 2, 3), {"stride": (2, 1), "pad": (1, 2)}),
    ((2, 4, 8, 9), (4, 2, 3, 3), {"stride": 2, "pad": 1, "groups": 2}),
    ((2, 6, 9, 7), (6, 2, 2, 3), {"stride": (2, 1), "pad": (1, 2), "dilation": (2, 1), "groups": 3}),
    ((1, 3, 11, 10), (5, 3, 3, 3), {"stride": 1, "pad": 2, "dilation": 2}),
    ((2, 3, 10, 11), (2, 3, 3, 1), {"stride": 3, "pad": (0, 1), "dilation": (1, 3)}),
    ((4, 2, 6, 6), (3, 2, 1, 1), {"stride": 1, "pad": 0}),
    ((2, 3, 5, 6), (4, 3, 1, 1), {"stride": 2, "pad": 1}),
    ((3, 6, 7, 7), (6, 1, 3, 3), {"stride": 1, "pad": 1, "groups": 6}),
    ((2, 2, 4, 13), (3, 2, 4, 5), {"stride": (1, 3), "pad": (2, 0), "dilation": (1, 2)}),
    ((5, 3, 8, 8), (7, 3, 7, 7), {"stride": 2, "pad": 3}),
]


def _conv_inputs(rng, xs, ws, dtype):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", CONV_CASES)
def test_conv_matches_reference(impl, algo, rng, xs, ws, conv_param, dtype):
    x, w, b = _conv_inputs(rng, xs, ws, dtype)
    ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
    out, cache = FL.conv_forward_fast(x, w, b, conv_param)
    assert_close(out, ref, dtype)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
        assert_close(g_fast, g_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [0, 3, 4, 9, 11])
def test_conv_chunked_batch(impl, algo, rng, tiny_workspace, case, dtype):
    """One sample per chunk gives the same results as the reference (dw accumulates
    across chunks, dx is written chunk by chunk)."""
    xs, ws, conv_param = CONV_CASES[case]
    xs = (max(xs[0], 3),) + xs[1:]
    x, w, b = _conv_inputs(rng, xs, ws, dtype)
    ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
    out, cache = FL.conv_forward_fast(x, w, b, conv_param)
    assert_close(out, ref, dtype)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
        assert_close(g_fast, g_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [0, 3, 4, 11])
@pytest.mark.parametrize("orientation", [0, 2**40])
def test_im2col_weight_gradient_in_either_orientation(rng, monkeypatch, case, dtype, orientation):
    """im2col's dw per chunk as dmat @ cols^T (the layers with K * Fg >= 2^20) or as
    (cols @ dmat^T)^T (the smaller ones), with one sample per chunk so that the partial
    sums are added: both agree with the reference."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    monkeypatch.setattr(KC, "_DW_DIRECT_ORIENTATION", orientation)
    monkeypatch.setattr(KC, "_winograd_enabled", False)
    monkeypatch.setattr(KC, "_direct_enabled", False)
    monkeypatch.setattr(KC, "_SPLIT_MAX_COLUMNS", 0)  # batch chunks, not the by-filters split
    xs, ws, conv_param = CONV_CASES[case]
    x, w, b = _conv_inputs(rng, (3,) + xs[1:], ws, dtype)
    ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    want = L.conv_backward_naive(dout, ref_cache)
    previous = FL.use_implementation("cython")
    limit = FL.set_workspace_limit(1)
    try:
        _, cache = FL.conv_forward_fast(x, w, b, conv_param)
        for got, ref_grad in zip(FL.conv_backward_fast(dout, cache), want):
            assert_close(got, ref_grad, dtype)
    finally:
        FL.set_workspace_limit(limit)
        FL.use_implementation(previous)


def test_chunk_sizes_respect_the_bound():
    previous = FL.set_workspace_limit(10_000)
    try:
        assert KR.chunk_size(64, 3_000) == 3  # 3 samples fit; 22 chunks of at most 3
        assert KR.chunk_size(64, 20_000) == 1  # a sample larger than the bound runs alone
        assert KR.chunk_size(5, 1) == 5
        assert KR.chunk_size(10, 2_500) == 4  # 4 fit: 3 chunks, balanced to 4, 4, 2
    finally:
        FL.set_workspace_limit(previous)
    previous = FL.set_workspace_limit(2**30)
    try:
        # cache-sized column blocks, but never shorter than _MIN_COLUMNS columns
        per_col = KR.CACHE_COLS_BYTES // 4096  # 4096 columns fill the cache target
        assert KR.chunk_size(100, 1, 1024, per_col) == max(4, -(-KR.MIN_COLUMNS // 1024))
        assert KR.chunk_size(100, 1, 64, per_col) == 100  # short rows: the column minimum wins
    finally:
        FL.set_workspace_limit(previous)
    with pytest.raises(ValueError):
        FL.set_workspace_limit(0)


def test_workspace_is_bounded_and_releasable(impl, rng):
    x, w, b = _conv_inputs(rng, (6, 3, 10, 10), (4, 3, 3, 3), np.float32)
    param = {"stride": 1, "pad": 1}
    want, _ = L.conv_forward_naive(x, w, b, param)
    previous = FL.set_workspace_limit(20_000)  # ~ two samples' columns
    try:
        FL.release_workspace()
        out, cache = FL.conv_forward_fast(x, w, b, param)
        FL.conv_backward_fast(np.ones_like(out), cache)
        assert KR.workspace.buf.nbytes <= 20_000
        assert_close(out, want, np.float32)
    finally:
        FL.set_workspace_limit(previous)
    FL.release_workspace()
    assert KR.workspace.buf.nbytes == 0


def test_concurrent_threads_get_their_own_workspace(impl, rng):
    import threading

    param = {"stride": 1, "pad": 1}
    inputs = [_conv_inputs(rng, (4, 3, 12, 12), (5, 3, 3, 3), np.float64) for _ in range(4)]
    want = [L.conv_forward_naive(x, w, b, param)[0] for x, w, b in inputs]
    got = [None] * len(inputs)

    def run(i):
        for _ in range(20):
            got[i] = FL.conv_forward_fast(*inputs[i], param)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, r in zip(got, want):
        assert_close(g, r, np.float64)


def test_conv_random_grid(impl, algo):
    """A seeded random sweep over geometries, float64 against the reference."""
    rng = np.random.default_rng(7)
    done = 0
    while done < 25:
        groups = int(rng.choice([1, 2, 3]))
        C = groups * int(rng.integers(1, 3))
        F = groups * int(rng.integers(1, 3))
        HH, WW = (int(v) for v in rng.integers(1, 5, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        pad = tuple(int(v) for v in rng.integers(0, 4, size=2))
        dil = tuple(int(v) for v in rng.integers(1, 3, size=2))
        if done % 3 == 0:  # a third of the sweep in Winograd's domain
            HH = WW = 3
            stride = dil = (1, 1)
        H, W = (int(v) for v in rng.integers(1, 10, size=2))
        N = int(rng.integers(1, 4))
        param = {"stride": stride, "pad": pad, "dilation": dil, "groups": groups}
        if H + 2 * pad[0] < dil[0] * (HH - 1) + 1 or W + 2 * pad[1] < dil[1] * (WW - 1) + 1:
            continue
        x, w, b = _conv_inputs(rng, (N, C, H, W), (F, C // groups, HH, WW), np.float64)
        ref, ref_cache = L.conv_forward_naive(x, w, b, param)
        out, cache = FL.conv_forward_fast(x, w, b, param)
        assert_close(out, ref, np.float64)
        dout = rng.standard_normal(ref.shape)
        for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
            assert_close(g_fast, g_ref, np.float64)
        done += 1


def test_conv_caches_are_interchangeable(impl, rng):
    x, w, b = _conv_inputs(rng, (2, 3, 6, 5), (4, 3, 3, 2), np.float64)
    param = {"stride": (2, 1), "pad": 1}
    _, fast_cache = FL.conv_forward_fast(x, w, b, param)
    out, ref_cache = L.conv_forward_naive(x, w, b, param)
    dout = rng.standard_normal(out.shape)
    want = L.conv_backward_naive(dout, ref_cache)
    for got in (L.conv_backward_naive(dout, fast_cache), FL.conv_backward_fast(dout, ref_cache)):
        for g, r in zip(got, want):
            assert_close(g, r, np.float64)


def test_conv_non_contiguous_inputs(impl, rng):
    x = rng.standard_normal((3, 7, 6, 2)).astype(np.float32).transpose(3, 0, 1, 2)  # (2, 3, 7, 6)
    w = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)[:, :, ::2, :]  # (3, 3, 2, 2)
    b = rng.standard_normal(6).astype(np.float32)[::2]
    param = {"stride": 1, "pad": 1}
    ref, ref_cache = L.conv_forward_naive(x, w, b, param)
    out, cache = FL.conv_forward_fast(x, w, b, param)
    assert_close(out, ref, np.float32)
    dout = rng.standard_normal(ref.shape[::-1]).astype(np.float32).T  # non-contiguous too
    assert not dout.flags.c_contiguous
    for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
        assert_close(g_fast, g_ref, np.float32)


def test_float16_takes_the_numpy_kernels_and_keeps_its_dtype(rng):
    x, w, b = _conv_inputs(rng, (2, 2, 5, 5), (3, 2, 3, 3), np.float16)
    out, cache = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    ref, _ = L.conv_forward_naive(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), {"stride": 1, "pad": 1})
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    grads = FL.conv_backward_fast(np.ones_like(out), cache)
    assert [g.dtype for g in grads] == [np.float16] * 3
    pooled, pcache = FL.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 1})
    assert pooled.dtype == np.float16 and FL.max_pool_backward_fast(np.ones_like(pooled), pcache).dtype == np.float16


# ----------------------------------------------------------------------------- pooling

POOL_CASES = [
    ((2, 3, 8, 8), {"pool_height": 2, "pool_width": 2, "stride": 2}),  # tiling
    ((2, 3, 9, 9), {"pool_height": 3, "pool_width": 3, "stride": 2}),  # overlapping
    ((1, 2, 9, 7), {"pool_height": 2, "pool_width": 2, "stride": 2}),  # non-tiling (odd sizes)
    ((2, 2, 9, 7), {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}),  # non-square, overlapping
    ((3, 2, 7, 10), {"pool_height": 2, "pool_width": 3, "stride": (3, 4)}),  # gaps between windows
    ((2, 2, 6, 6), {"pool_height": 1, "pool_width": 1, "stride": 1}),
    ((2, 1, 5, 6), {"pool_height": 5, "pool_width": 6, "stride": 1}),  # global
    ((1, 3, 10, 10), {"pool_height": 4, "pool_width": 4, "stride": 1}),
    ((2, 2, 8, 8), {"pool_height": 2, "pool_width": 2}),  # default stride = window
    ((2, 2, 9, 9), {"pool_height": 2, "pool_width": 2, "stride": 1}),  # 2x2 kernel, overlapping
]


def _distinct(rng, shape, dtype):
    """Values without ties (a permutation scaled), so the argmax is unambiguous."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) / n - 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, pool_param", POOL_CASES)
def test_max_pool_matches_reference(impl, rng, xs, pool_param, dtype):
    x = _distinct(rng, xs, dtype)
    ref, ref_cache = L.max_pool_forward_naive(x, pool_param)
    out, cache = FL.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == dtype
    dout = rng.standard_normal(ref.shape).astype(dtype)
    assert_close(FL.max_pool_backward_fast(dout, cache), L.max_pool_backward_naive(dout, ref_cache), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, pool_param", POOL_CASES)
def test_avg_pool_matches_reference(impl, rng, xs, pool_param, dtype):
    x = rng.standard_normal(xs).astype(dtype)
    ref, ref_cache = L.avg_pool_forward_naive(x, pool_param)
    out, cache = FL.avg_pool_forward_fast(x, pool_param)
    assert_close(out, ref, dtype)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    assert_close(FL.avg_pool_backward_fast(dout, cache), L.avg_pool_backward_naive(dout, ref_cache), dtype)


@pytest.mark.parametrize("pool_param", [POOL_CASES[0][1], POOL_CASES[1][1], POOL_CASES[3][1]])
def test_max_pool_ties_go_to_the_first_maximum(impl, rng, pool_param):
    x = rng.integers(0, 3, size=(3, 2, 9, 9)).astype(np.float32)  # many ties
    ref, ref_cache = L.max_pool_forward_naive(x, pool_param)
    out, cache = FL.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(ref.shape).astype(np.float32)
    assert_close(FL.max_pool_backward_fast(dout, cache), L.max_pool_backward_naive(dout, ref_cache), np.float32)


@pytest.mark.parametrize("pool_param", [POOL_CASES[0][1], POOL_CASES[1][1]])
def test_max_pool_nan_like_the_reference(impl, rng, pool_param):
    """A NaN in a window wins (numpy's max/argmax semantics), in forward and backward."""
    x = _distinct(rng, (2, 2, 9, 9), np.float64)
    x[0, 0, 0, 1] = np.nan
    x[1, 1, 3, 3] = np.nan
    x[1, 1, 4, 4] = np.nan
    x[0, 1, 5, 2] = np.inf
    ref, ref_cache = L.max_pool_forward_naive(x, pool_param)
    out, cache = FL.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out, ref)
    assert np.isnan(out).any()
    dout = rng.standard_normal(ref.shape)
    np.testing.assert_array_equal(FL.max_pool_backward_fast(dout, cache), L.max_pool_backward_naive(dout, ref_cache))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs", [(2, 3, 33, 35), (1, 2, 32, 32), (3, 1, 5, 40), (2, 2, 2, 2)])
def test_max_pool_2x2_row_kernels(impl, rng, xs, dtype):
    """The 2x2, stride-2 kernels (forward; backward on rows of 16+ outputs writes all of
    dx itself): odd sizes leave a last row/column out of every window, ties and NaN
    follow the reference."""
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x = rng.integers(0, 3, size=xs).astype(dtype)  # many ties
    x.flat[::7] = np.nan
    x.flat[3::11] = -np.inf
    ref, ref_cache = L.max_pool_forward_naive(x, pool_param)
    out, cache = FL.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    dx = FL.max_pool_backward_fast(dout, cache)
    np.testing.assert_array_equal(dx, L.max_pool_backward_naive(dout, ref_cache))
    assert dx.dtype == dtype


def test_pool_caches_are_interchangeable(impl, rng):
    x = _distinct(rng, (2, 3, 9, 9), np.float64)
    param = {"pool_height": 3, "pool_width": 3, "stride": 2}
    out, ref_cache = L.max_pool_forward_naive(x, param)
    _, fast_cache = FL.max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    want = L.max_pool_backward_naive(dout, ref_cache)
    assert_close(FL.max_pool_backward_fast(dout, ref_cache), want, np.float64)
    assert_close(L.max_pool_backward_naive(dout, fast_cache), want, np.float64)
    _, avg_ref = L.avg_pool_forward_naive(x, param)
    _, avg_fast = FL.avg_pool_forward_fast(x, param)
    assert_close(FL.avg_pool_backward_fast(dout, avg_ref), L.avg_pool_backward_naive(dout, avg_fast), np.float64)


# ----------------------------------------------------------------------------- errors


def _same_error(ref_call, fast_call, ref_name, fast_name):
    with pytest.raises((ValueError, TypeError)) as ref_err:
        ref_call()
    with pytest.raises((ValueError, TypeError)) as fast_err:
        fast_call()
    assert fast_err.type is ref_err.type
    assert str(fast_err.value) == str(ref_err.value).replace(ref_name, fast_name)
    assert fast_name in str(fast_err.value)


def _bad_conv_inputs():
    f32 = np.float32
    x = np.zeros((2, 4, 6, 6), f32)
    w = np.zeros((4, 4, 3, 3), f32)
    b = np.zeros(4, f32)
    ok = {"stride": 1, "pad": 1}
    return [
        (np.zeros((4, 6, 6), f32), w, b, ok),  # wrong rank
        (x, np.zeros((4, 3, 3, 3), f32), b, ok),  # channel mismatch
        (x, np.zeros((4, 2, 3, 3), f32), b, {"stride": 1, "pad": 1, "groups": 3}),  # groups do not divide
        (x, w, b, {"stride": 0, "pad": 1}),
        (x, w, b, {"stride": 1, "pad": -1}),
        (x, w, b, {"stride": 1, "pad": 0, "dilation": 4}),  # dilated kernel larger than the input
        (x, w, b, {"stride": 1.5, "pad": 0}),
        (x, w, b, {"stride": 1, "padding": 1}),  # unknown key
        (x, w, np.zeros(3, f32), ok),  # bias shape
        (x.astype(np.int64), w, b, ok),  # not floating
        (x, w.astype(np.float64), b, ok),  # mixed dtypes
        (x, w, b, [1, 1]),  # conv_param not a dict
        (x.tolist(), w, b, ok),  # not an array
    ]


@pytest.mark.parametrize("case", range(13))
def test_conv_bad_input_same_errors_as_reference(impl, case):
    x, w, b, p = _bad_conv_inputs()[case]
    _same_error(
        lambda: L.conv_forward_naive(x, w, b, p),
        lambda: FL.conv_forward_fast(x, w, b, p),
        "conv_forward_naive",
        "conv_forward_fast",
    )


def test_conv_backward_bad_dout_same_errors(impl, rng):
    x, w, b = _conv_inputs(rng, (2, 3, 5, 5), (4, 3, 3, 3), np.float32)
    param = {"stride": 1, "pad": 1}
    _, ref_cache = L.conv_forward_naive(x, w, b, param)
    _, fast_cache = FL.conv_forward_fast(x, w, b, param)
    # both cast a dout of another real dtype to the layer's (checks.as_dout)
    assert L.conv_backward_naive(np.zeros((2, 4, 5, 5), np.float64), ref_cache)[0].dtype == np.float32
    assert FL.conv_backward_fast(np.zeros((2, 4, 5, 5), np.float64), fast_cache)[0].dtype == np.float32
    for dout in (np.zeros((2, 4, 5, 4), np.float32),):
        _same_error(
            lambda: L.conv_backward_naive(dout, ref_cache),
            lambda: FL.conv_backward_fast(dout, fast_cache),
            "conv_backward_naive",
            "conv_backward_fast",
        )


@pytest.mark.parametrize(
    "x, pool_param",
    [
        (np.zeros((2, 3, 4), np.float32), {"pool_height": 2, "pool_width": 2, "stride": 2}),
        (np.zeros((2, 3, 4, 4), np.float32), {"pool_height": 5, "pool_width": 2, "stride": 2}),
        (np.zeros((2, 3, 4, 4), np.float32), {"pool_height": 2, "stride": 2}),
        (np.zeros((2, 3, 4, 4), np.float32), {"pool_height": 2, "pool_width": 2, "stride": 0}),
        (np.zeros((2, 3, 4, 4), np.float32), {"pool_height": 2, "pool_width": 2, "pad": 1}),
        (np.zeros((2, 3, 4, 4), np.int32), {"pool_height": 2, "pool_width": 2, "stride": 2}),
        (np.zeros((2, 3, 4, 4), np.float32), "2x2"),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_bad_input_same_errors_as_reference(impl, x, pool_param, kind):
    _same_error(
        lambda: getattr(L, f"{kind}_pool_forward_naive")(x, pool_param),
        lambda: getattr(FL, f"{kind}_pool_forward_fast")(x, pool_param),
        f"{kind}_pool_forward_naive",
        f"{kind}_pool_forward_fast",
    )


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backward_bad_dout_same_errors(impl, rng, kind):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    _, ref_cache = getattr(L, f"{kind}_pool_forward_naive")(x, param)
    _, fast_cache = getattr(FL, f"{kind}_pool_forward_fast")(x, param)
    # issue 11: the reference casts a dout of another numeric dtype (checks.as_dout); the fast
    # path still raises TypeError until fast_layers uses as_dout too (pending there)
    assert getattr(L, f"{kind}_pool_backward_naive")(np.zeros((2, 3, 2, 2)), ref_cache).dtype == np.float32
    for dout in (np.zeros((2, 3, 2, 3), np.float32),):
        _same_error(
            lambda: getattr(L, f"{kind}_pool_backward_naive")(dout, ref_cache),
            lambda: getattr(FL, f"{kind}_pool_backward_fast")(dout, fast_cache),
            f"{kind}_pool_backward_naive",
            f"{kind}_pool_backward_fast",
        )


# ----------------------------------------------------------------------------- implementation switch


def _run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("FUNKCIJE_FORCE_NUMPY", "FUNKCIJE_WORKSPACE_MB")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


_CHECK_SCRIPT = """
import sys, warnings
{prelude}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from funkcije import fast_layers as FL
    import funkcije.fast_layers
from funkcije import layers as L
import numpy as np
x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
b = np.zeros(4, np.float32)
out, _ = FL.conv_forward_fast(x, w, b, {{"stride": 1, "pad": 1}})
ref, _ = L.conv_forward_naive(x, w, b, {{"stride": 1, "pad": 1}})
assert np.allclose(out, ref, atol=1e-4), "fallback result differs"
print(FL.IMPLEMENTATION, FL.implementation(), sum(issubclass(c.category, RuntimeWarning) for c in caught))
for c in caught:
    print("WARNING:", c.message)
"""


def test_missing_extension_falls_back_with_one_warning():
    prelude = "sys.modules['funkcije.kernels._compiled'] = None  # makes the import fail"
    res = _run_python(_CHECK_SCRIPT.format(prelude=prelude))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "numpy numpy 1", res.stdout
    assert "kernels._compiled" in lines[1] and "NumPy fallback" in lines[1]


def test_force_numpy_env_var():
    res = _run_python(_CHECK_SCRIPT.format(prelude=""), FUNKCIJE_FORCE_NUMPY="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "numpy numpy 0", res.stdout


def test_use_implementation_switches_and_validates():
    before = FL.IMPLEMENTATION
    try:
        assert FL.use_implementation("numpy") == before
        assert FL.IMPLEMENTATION == "numpy" == FL.implementation()
        with pytest.raises(ValueError):
            FL.use_implementation("fortran")
    finally:
        FL.use_implementation(before)


def test_extension_is_the_default_when_built():
    if "cython" not in FL.available_implementations():
        if IN_CI:
            pytest.fail("the compiled extension funkcije.kernels._compiled must be built under CI=true")
        pytest.skip("compiled extension not built")
    res = _run_python("from funkcije import fast_layers as FL; print(FL.IMPLEMENTATION)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "cython"


def test_workspace_env_var():
    res = _run_python("from funkcije import fast_layers as FL; print(FL.get_workspace_limit())", FUNKCIJE_WORKSPACE_MB="3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(3 * 2**20)


# ----------------------------------------------------------------------------- PyTorch oracle


@pytest.mark.torch
@pytest.mark.parametrize(
    "xs, ws, conv_param",
    [CONV_CASES[i] for i in (0, 3, 4, 5, 10, 11)]
    + [((8, 16, 12, 12), (32, 16, 3, 3), {"stride": 1, "pad": 1}), ((4, 3, 31, 31), (25, 3, 3, 3), {"stride": 2, "pad": 1})],
)
def test_conv_matches_torch(impl, torch, rng, xs, ws, conv_param):
    import torch.nn.functional as tF

    x, w, b = _conv_inputs(rng, xs, ws, np.float64)
    out, cache = FL.conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = FL.conv_backward_fast(dout, cache)

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    pair = lambda v: tuple(v) if isinstance(v, tuple) else (v, v)  # noqa: E731
    tout = tF.conv2d(
        tx, tw, tb,
        stride=pair(conv_param.get("stride", 1)),
        padding=pair(conv_param.get("pad", 0)),
        dilation=pair(conv_param.get("dilation", 1)),
        groups=conv_param.get("groups", 1),
    )
    tout.backward(torch.tensor(dout))
    for mine, theirs in ((out, tout), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)

    # and the float32 fast path against torch in float32
    out32, cache32 = FL.conv_forward_fast(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), conv_param)
    assert_close(out32, tout.detach().numpy(), np.float32)


@pytest.mark.torch
@pytest.mark.parametrize("xs, pool_param", POOL_CASES)
def test_pools_match_torch(impl, torch, rng, xs, pool_param):
    import torch.nn.functional as tF

    x = _distinct(rng, xs, np.float64)
    kernel = (pool_param["pool_height"], pool_param["pool_width"])
    stride = pool_param.get("stride", kernel)
    for fwd, bwd, tfun in (
        (FL.max_pool_forward_fast, FL.max_pool_backward_fast, tF.max_pool2d),
        (FL.avg_pool_forward_fast, FL.avg_pool_backward_fast, tF.avg_pool2d),
    ):
        out, cache = fwd(x, pool_param)
        dout = rng.standard_normal(out.shape)
        dx = bwd(dout, cache)
        tx = torch.tensor(x, requires_grad=True)
        tout = tfun(tx, kernel, stride)
        tout.backward(torch.tensor(dout))
        np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_backward_need_dx_false(impl, rng):
    """need_dx=False (for a network's first layer) skips dx and leaves dw, db unchanged."""
    x, w, b = _conv_inputs(rng, (3, 4, 7, 7), (6, 2, 3, 3), np.float64)
    param = {"stride": 2, "pad": 1, "groups": 2}
    out, cache = FL.conv_forward_fast(x, w, b, param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = FL.conv_backward_fast(dout, cache, need_dx=False)
    assert dx is None
    _, dw_full, db_full = FL.conv_backward_fast(dout, cache)
    np.testing.assert_array_equal(dw, dw_full)
    np.testing.assert_array_equal(db, db_full)


# ----------------------------------------------------------------------------- cs231n's other names


# a layer of each algorithm conv_forward_fast picks: Winograd (3x3 stride 1, >= 16
# channels), direct (small float32 C * HH * WW on AVX-512), im2col (strided 7x7)
CS231N_CONV_CASES = [
    ((3, 16, 9, 10), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((3, 3, 12, 12), (8, 3, 5, 5), {"stride": 1, "pad": 2}),
    ((2, 6, 13, 11), (6, 3, 7, 7), {"stride": 2, "pad": 3, "groups": 2}),
]


def _im2col_matches_reference(rng, xs, ws, conv_param, dtype):
    """conv_forward_im2col and conv_backward_im2col (with its own cache and the
    reference's; need_dx=False gives no dx) against the reference; returns (dout, the
    im2col cache, the reference's gradients)."""
    x, w, b = _conv_inputs(rng, xs, ws, dtype)
    ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
    out, cache = FL.conv_forward_im2col(x, w, b, conv_param)
    assert_close(out, ref, dtype)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    want = L.conv_backward_naive(dout, ref_cache)
    for got in (FL.conv_backward_im2col(dout, cache), FL.conv_backward_im2col(dout, ref_cache)):
        for g_fast, g_ref in zip(got, want):
            assert_close(g_fast, g_ref, dtype)
    assert FL.conv_backward_im2col(dout, cache, need_dx=False)[0] is None
    return dout, cache, want


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", CS231N_CONV_CASES)
def test_conv_im2col_matches_reference_and_takes_only_gemm(impl, rng, xs, ws, conv_param, dtype, monkeypatch):
    def forbidden(*args):
        raise AssertionError("conv_*_im2col took Winograd or the direct kernels")

    for name in ("_winograd_conv", "_winograd_weight_grad", "_direct_conv", "_direct_weight_grad"):
        monkeypatch.setattr(KC, name, forbidden)
    dout, cache, want = _im2col_matches_reference(rng, xs, ws, conv_param, dtype)
    assert_close(FL.conv_backward_im2col(dout, cache, need_dx=False)[1], want[1], dtype)
    # and the im2col cache serves the other backwards
    for g_other, g_ref in zip(L.conv_backward_naive(dout, cache), want):
        assert_close(g_other, g_ref, dtype)


def test_conv_im2col_bad_input_names_itself(impl, rng):
    for case in range(13):
        x, w, b, p = _bad_conv_inputs()[case]
        _same_error(lambda: L.conv_forward_naive(x, w, b, p), lambda: FL.conv_forward_im2col(x, w, b, p),
                    "conv_forward_naive", "conv_forward_im2col")
    x, w, b = _conv_inputs(rng, (2, 3, 5, 5), (4, 3, 3, 3), np.float32)
    _, cache = FL.conv_forward_im2col(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match="conv_backward_im2col"):
        FL.conv_backward_im2col(np.zeros((2, 4, 5, 4), np.float32), cache)
    with pytest.raises(TypeError, match="conv_backward_im2col: cache"):
        FL.conv_backward_im2col(np.zeros((2, 4, 5, 5), np.float32), (x, w))
    with pytest.raises(TypeError, match="need_dx must be True or False"):
        FL.conv_backward_im2col(np.zeros((2, 4, 5, 5), np.float32), cache, need_dx="no")


def test_cs231n_aliases_are_the_fast_layers():
    assert FL.conv_forward_strides is FL.conv_forward_fast
    assert FL.conv_backward_strides is FL.conv_backward_fast
    for kind in ("reshape", "im2col"):
        assert getattr(FL, f"max_pool_forward_{kind}") is FL.max_pool_forward_fast
        assert getattr(FL, f"max_pool_backward_{kind}") is FL.max_pool_backward_fast
    for name in FL.__all__:
        assert hasattr(FL, name), name


def test_parallel_kernels_are_deterministic(rng):
    """Large enough for the compiled kernels to run multi-threaded, with padding so that
    every kernel column has its own valid range: repeated runs must equal the NumPy
    fallback every time (a per-thread variable shared between threads shows up here
    as sporadic wrong entries)."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    x, w, b = _conv_inputs(rng, (8, 16, 20, 21), (8, 16, 3, 5), np.float64)
    param = {"stride": (1, 2), "pad": (1, 2), "dilation": (1, 2)}
    previous = FL.use_implementation("numpy")
    try:
        want_out, cache = FL.conv_forward_fast(x, w, b, param)
        dout = rng.standard_normal(want_out.shape)
        want = FL.conv_backward_fast(dout, cache)
    finally:
        FL.use_implementation(previous)
    FL.use_implementation("cython")
    try:
        for _ in range(40):
            out, cache = FL.conv_forward_fast(x, w, b, param)
            assert_close(out, want_out, np.float64)
            for g, r in zip(FL.conv_backward_fast(dout, cache), want):
                assert_close(g, r, np.float64)
    finally:
        FL.use_implementation(previous)


@pytest.mark.parametrize("pool_param", [POOL_CASES[0][1], POOL_CASES[1][1], POOL_CASES[3][1]])
def test_parallel_pool_kernels_are_deterministic(rng, pool_param):
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    x = _distinct(rng, (8, 16, 27, 27), np.float32)
    previous = FL.use_implementation("numpy")
    try:
        results = {}
        for name in ("numpy", "cython"):
            FL.use_implementation(name)
            runs = []
            for _ in range(1 if name == "numpy" else 20):
                m, mc = FL.max_pool_forward_fast(x, pool_param)
                a, ac = FL.avg_pool_forward_fast(x, pool_param)
                runs.append((m, FL.max_pool_backward_fast(np.ones_like(m), mc), a, FL.avg_pool_backward_fast(np.ones_like(a), ac)))
            results[name] = runs
    finally:
        FL.use_implementation(previous)
    for run in results["cython"]:
        for got, want in zip(run, results["numpy"][0]):
            assert_close(got, want, np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv_chunk_threads_agree_and_are_deterministic(rng, threads):
    """The batch split over several threads gives the reference's results, the same
    bits on every run (dw partials are summed in chunk order), and leaves numpy's BLAS
    thread count as it found it."""
    if threads > 1 and (not KR.blas_controlled() or "cython" not in FL.available_implementations()):
        pytest.skip("needs the compiled extension and numpy's OpenBLAS thread control")
    x, w, b = _conv_inputs(rng, (9, 4, 9, 8), (6, 2, 3, 2), np.float64)
    param = {"stride": (1, 2), "pad": 1, "groups": 2}
    ref, ref_cache = L.conv_forward_naive(x, w, b, param)
    dout = rng.standard_normal(ref.shape)
    want = L.conv_backward_naive(dout, ref_cache)
    previous_impl = FL.use_implementation("cython") if "cython" in FL.available_implementations() else None
    previous = FL.set_conv_threads(threads)
    blas_before = [c.get_num_threads() for c in KR._BLAS]
    try:
        runs = []
        for _ in range(5):
            out, cache = FL.conv_forward_fast(x, w, b, param)
            runs.append((out,) + FL.conv_backward_fast(dout, cache))
        assert_close(runs[0][0], ref, np.float64)
        for g, r in zip(runs[0][1:], want):
            assert_close(g, r, np.float64)
        for run in runs[1:]:
            for a, c in zip(run, runs[0]):
                np.testing.assert_array_equal(a, c)
        assert [c.get_num_threads() for c in KR._BLAS] == blas_before
    finally:
        FL.set_conv_threads(previous)
        if previous_impl:
            FL.use_implementation(previous_impl)


def test_engine_step_holds_blas_for_the_whole_step():
    """Inside engine_step (a model's loss, the Solver's step) numpy's BLAS stays at one
    thread while the engine splits its work, and is restored afterwards; with one conv
    thread, or the NumPy implementation, BLAS is left alone."""
    if not KR.blas_controlled() or "cython" not in FL.available_implementations():
        pytest.skip("needs the compiled extension and numpy's OpenBLAS thread control")
    previous_impl = FL.use_implementation("cython")
    previous = FL.set_conv_threads(2)
    blas = KR._BLAS[0]
    saved = blas.get_num_threads()
    blas.set_num_threads(2)
    try:
        with FL.engine_step():
            assert blas.get_num_threads() == 1
            with FL.engine_step():  # nested: still held, and not released by the inner exit
                pass
            assert blas.get_num_threads() == 1
        assert blas.get_num_threads() == 2
        FL.set_conv_threads(1)
        with FL.engine_step():
            assert blas.get_num_threads() == 2
        FL.set_conv_threads(2)
        FL.use_implementation("numpy")
        with FL.engine_step():
            assert blas.get_num_threads() == 2
    finally:
        blas.set_num_threads(saved)
        FL.set_conv_threads(previous)
        FL.use_implementation(previous_impl)


def _glibc():
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the heap settings apply to glibc only")
@pytest.mark.parametrize("keep", ["1", "0"])
def test_keep_heap_setting(keep):
    """On glibc, importing funkcije sets malloc's thresholds unless FUNKCIJE_KEEP_HEAP=0;
    either way a model step runs and gives the same loss."""
    import subprocess
    import sys

    code = ("import numpy as np; from funkcije.kernels import runtime as R; from funkcije.classifiers import FERMnistNet;"
            "m = FERMnistNet(dtype=np.float64, seed=0); X = np.random.default_rng(0).standard_normal((4, 1, 28, 28));"
            "print(R.heap_kept, repr(float(m.loss(X, np.arange(4))[0])))")
    env = dict(os.environ, FUNKCIJE_KEEP_HEAP=keep)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == ("True" if keep == "1" else "False")
    assert np.isfinite(float(out[1]))


def test_set_conv_threads_validates():
    with pytest.raises(ValueError):
        FL.set_conv_threads(0)
    with pytest.raises(ValueError):
        FL.set_conv_threads(2.0)
    assert FL.get_conv_threads() >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# forking a threaded process is what this test is about: Python >= 3.12 warns of it
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_conv_threads_survive_fork(rng):
    """A child forked after the conv thread pool exists must not wait on the parent's
    (absent) pool threads."""
    if not KR.blas_controlled() or "cython" not in FL.available_implementations():
        pytest.skip("needs the compiled extension and numpy's OpenBLAS thread control")
    import multiprocessing as mp

    previous = FL.set_conv_threads(2)
    try:
        x, w, b = _conv_inputs(rng, (8, 3, 10, 10), (4, 3, 3, 3), np.float32)
        out, _ = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})  # creates the pool
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            child = pool.apply_async(_conv_in_child, (x, w, b)).get(timeout=60)
        np.testing.assert_array_equal(child, out)
    finally:
        FL.set_conv_threads(previous)


def _conv_in_child(x, w, b):
    FL.set_conv_threads(2)
    return FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]


# ----------------------------------------------------------------------------- affine

# (x shape, M): tiny products (one thread), and products large enough to be split over
# the conv threads, with M and D not multiples of the split alignment
AFFINE_CASES = [((2, 3), 4), ((5, 2, 3, 2), 7), ((1, 1000), 300), ((50, 8, 16, 16), 500), ((33, 4099), 77)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, M", AFFINE_CASES)
def test_affine_matches_reference(impl, rng, xs, M, dtype):
    x = rng.standard_normal(xs).astype(dtype)
    D = int(np.prod(xs[1:]))
    w = (rng.standard_normal((D, M)) / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    out, cache = FL.affine_forward_fast(x, w, b)
    ref, ref_cache = L.affine_forward(x, w, b)
    assert_close(out, ref, dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    got = FL.affine_backward_fast(dout, cache)
    want = L.affine_backward(dout, ref_cache)
    for g, r in zip(got, want):
        assert_close(g, r, dtype)
    # the caches are the reference's (x, w, b): each backward takes the other's cache
    for g, r in zip(L.affine_backward(dout, cache), FL.affine_backward_fast(dout, ref_cache)):
        assert_close(g, r, dtype)


def test_affine_non_contiguous_inputs(impl, rng):
    x = rng.standard_normal((40, 70))[:, ::2]
    w = rng.standard_normal((70, 600))[::2, ::3]
    b = rng.standard_normal(400)[::2]
    out, cache = FL.affine_forward_fast(x, w, b)
    assert_close(out, L.affine_forward(x, w, b)[0], np.float64)
    dout = rng.standard_normal(out.shape)[:, :]
    for g, r in zip(FL.affine_backward_fast(dout.T.copy().T, cache), L.affine_backward(dout, (x, w, b))):
        assert_close(g, r, np.float64)


@pytest.mark.parametrize("case", range(8))
def test_affine_bad_input_same_errors_as_reference(impl, case):
    f64 = lambda *s: np.ones(s)  # noqa: E731
    bad = [
        (f64(2, 3), f64(4, 5), f64(5)),
        (f64(2, 3, 2), f64(6, 5), f64(4)),
        (f64(2, 3), f64(3), f64(5)),
        (f64(2, 3), f64(3, 5), f64(1, 5)),
        (np.array(1.0), f64(1, 1), f64(1)),
        (np.ones((2, 3), np.int64), f64(3, 5), f64(5)),
        (f64(2, 3), np.ones((3, 5), np.float32), f64(5)),
        ([[1.0, 2.0, 3.0]], f64(3, 5), f64(5)),
    ][case]
    _same_error(lambda: L.affine_forward(*bad), lambda: FL.affine_forward_fast(*bad),
                "affine_forward", "affine_forward_fast")


@pytest.mark.parametrize("dout", [np.ones((2, 4)), np.ones((3, 5)), np.ones((3, 5), np.float32), "x"])
def test_affine_backward_bad_dout_same_errors(impl, rng, dout):
    x, w, b = rng.standard_normal((3, 2)), rng.standard_normal((2, 5)), rng.standard_normal(5)
    cache = FL.affine_forward_fast(x, w, b)[1]
    if isinstance(dout, np.ndarray) and dout.shape == (3, 5) and dout.dtype == np.float64:
        FL.affine_backward_fast(dout, cache)  # the valid one: no error
        return
    if isinstance(dout, np.ndarray) and dout.shape == (3, 5):
        # issue 11: the reference casts it (checks.as_dout); fast_layers still raises (pending there)
        assert L.affine_backward(dout, cache)[0].dtype == np.float64
        return
    _same_error(lambda: L.affine_backward(dout, cache), lambda: FL.affine_backward_fast(dout, cache),
                "affine_backward", "affine_backward_fast")


@pytest.mark.torch
def test_affine_matches_torch(impl, torch, rng):
    x, w, b = rng.standard_normal((50, 8, 8, 8)), rng.standard_normal((512, 300)), rng.standard_normal(300)
    out, cache = FL.affine_forward_fast(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = FL.affine_backward_fast(dout, cache)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = tx.reshape(50, -1) @ tw + tb
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, t in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)



# ----------------------------------------------------------------------------- Winograd

# 3x3 stride-1 layers with enough channels for the library to choose Winograd on its
# own: odd and even planes (partial edge tiles), pads 0..3 and (h, w) pairs (pad 3
# takes im2col for the backward), groups, a 1x1 plane, a batch of one
WINOGRAD_CASES = [
    ((2, 16, 8, 8), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((3, 20, 7, 9), (24, 20, 3, 3), {"stride": 1, "pad": (0, 2)}),
    ((2, 32, 5, 6), (32, 16, 3, 3), {"stride": 1, "pad": 1, "groups": 2}),
    ((1, 16, 1, 1), (17, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 16, 6, 5), (16, 16, 3, 3), {"stride": 1, "pad": 3}),
    ((5, 18, 11, 4), (16, 18, 3, 3), {"stride": 1, "pad": (2, 1)}),
    # F(2x2)'s output transform: planes with one tile row per 256-tile block (tw = 129),
    # several rows per block with an odd width, and wider than one block (tw = 257:
    # tile-by-tile path); F(4x4)'s: 128-tile blocks, so the last two are one row per
    # block (tw = 65) and wider than a block (tw = 129); and F(4x4)'s input transform
    # with a row copy on the heap (over 1024 columns)
    ((1, 16, 5, 258), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 16, 9, 31), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((1, 16, 2, 514), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
    ((1, 16, 3, 1030), (16, 16, 3, 3), {"stride": 1, "pad": 1}),
]


@pytest.fixture
def winograd_calls(monkeypatch):
    """A list that gets an entry every time the fast convolution takes Winograd, with
    the batch-size rule off: these small test batches take Winograd wherever it applies."""
    monkeypatch.setattr(KC, "_WINOGRAD_TRANSFORM_COST", None)
    calls = []
    real = KC._winograd_conv
    monkeypatch.setattr(KC, "_winograd_conv", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("tile", [4, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", WINOGRAD_CASES)
def test_winograd_matches_reference(rng, xs, ws, conv_param, dtype, tile, winograd_calls, monkeypatch):
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    monkeypatch.setattr(KC, "_winograd_tile", tile)
    previous = FL.use_implementation("cython")
    try:
        x, w, b = _conv_inputs(rng, xs, ws, dtype)
        ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
        out, cache = FL.conv_forward_fast(x, w, b, conv_param)
        assert winograd_calls, "Winograd was not chosen for this layer"
        assert_close(out, ref, dtype)
        dout = rng.standard_normal(ref.shape).astype(dtype)
        for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
            assert_close(g_fast, g_ref, dtype)
        _, dw, db = FL.conv_backward_fast(dout, cache, need_dx=False)
        np.testing.assert_array_equal(dw, FL.conv_backward_fast(dout, cache)[1])
    finally:
        FL.use_implementation(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", [WINOGRAD_CASES[i] for i in (0, 1, 2, 5, 7)])
def test_winograd_weight_grad_both_ways(rng, xs, ws, conv_param, dtype, monkeypatch):
    """dw by cache-sized blocks of samples (small Z) and by long products over the whole
    batch (large Z) agree with the reference, also with a block of one sample and with
    the long products done one sample at a time (a batch beyond the workspace bound,
    its parts added in order), and `_winograd_weight_grad` takes the way its size rule
    names."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    monkeypatch.setattr(KC, "_WINOGRAD_TRANSFORM_COST", None)
    previous = FL.use_implementation("cython")
    taken = []
    for name in ("_winograd_dw_blocked", "_winograd_dw_long"):
        real = getattr(KC, name)
        monkeypatch.setattr(KC, name, lambda *a, _real=real, _name=name: taken.append(_name) or _real(*a))
    try:
        x, w, b = _conv_inputs(rng, xs, ws, dtype)
        ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
        dout = rng.standard_normal(ref.shape).astype(dtype)
        want = L.conv_backward_naive(dout, ref_cache)[1]
        _, cache = FL.conv_forward_fast(x, w, b, conv_param)
        for small_z, block, long_bytes, way in [
                (2**40, 2**30, 2**26, "_winograd_dw_blocked"), (2**40, 1, 2**26, "_winograd_dw_blocked"),
                (0, 2**30, 2**26, "_winograd_dw_long"), (0, 2**30, 1, "_winograd_dw_long")]:
            monkeypatch.setattr(KC, "_WINOGRAD_DW_SMALL_Z", small_z)
            monkeypatch.setattr(KC, "_WINOGRAD_DW_BLOCK", block)
            monkeypatch.setattr(KC, "_WINOGRAD_DW_BYTES", long_bytes)
            taken.clear()
            dw = FL.conv_backward_fast(dout, cache, need_dx=False)[1]
            assert taken == [way]
            assert dw.dtype == dtype
            assert_close(dw, want, dtype)
    finally:
        FL.use_implementation(previous)


def test_winograd_chunks_and_threads_agree(rng, winograd_calls):
    """Many chunks (tiny workspace), one or two conv threads: dw's per-chunk partials
    are summed in chunk order, so every run is bitwise the same."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    previous = FL.use_implementation("cython")
    x, w, b = _conv_inputs(rng, (9, 16, 7, 6), (16, 16, 3, 3), np.float32)
    param = {"stride": 1, "pad": 1}
    results = []
    try:
        for limit, threads in [(FL.get_workspace_limit(), 1), (1, 1), (1, 2), (1, 2)]:
            old_limit, old_threads = FL.set_workspace_limit(limit), FL.get_conv_threads()
            if threads > 1 and not KR.blas_controlled():
                FL.set_workspace_limit(old_limit)
                continue
            FL.set_conv_threads(threads)
            try:
                out, cache = FL.conv_forward_fast(x, w, b, param)
                results.append((limit, out) + FL.conv_backward_fast(np.ones_like(out), cache))
            finally:
                FL.set_workspace_limit(old_limit)
                FL.set_conv_threads(old_threads)
    finally:
        FL.use_implementation(previous)
    assert winograd_calls
    ref = L.conv_backward_naive(np.ones_like(results[0][1]), L.conv_forward_naive(x, w, b, param)[1])
    for limit, out, dx, dw, db in results:
        for g, r in zip((dx, dw, db), ref):
            assert_close(g, r, np.float32)
    tiny = [r for r in results if r[0] == 1]
    for other in tiny[1:]:
        for a, c in zip(tiny[0][1:], other[1:]):
            np.testing.assert_array_equal(a, c)


def test_winograd_pays_for_its_transforms_only_on_enough_of_a_batch():
    """Each pass transforms the filters once; below a batch size that depends on the
    plane, im2col is faster (ResNet9's 4x4 layers at batch 16), and more samples never
    turn Winograd off."""
    if KR.compiled is None:
        pytest.skip("compiled extension not built")
    from funkcije.checks import conv_geometry

    def choice(N, C, F, H, dtype=np.float32):
        w = np.empty((F, C, 3, 3), dtype)
        g = conv_geometry("t", np.empty((N, C, H, H), dtype), w, {"stride": 1, "pad": 1})
        return KC._winograd_choice(KR.compiled, g, N, F, C, 3, 3, g.pad, np.dtype(dtype))

    assert choice(16, 512, 512, 4) == 0 and choice(512, 512, 512, 4) == 4
    assert choice(1, 64, 128, 32) == 2  # a 32x32 plane has enough tiles in one sample, and
    assert choice(8, 64, 128, 32) == 4  # F(4x4)'s larger transform pays on a few
    assert choice(128, 512, 512, 4) == 2  # mid-sized batches through small planes: F(2x2)
    assert choice(512, 512, 512, 2) == 2 and choice(512, 512, 512, 8, np.float64) == 2
    for C, F, H in [(512, 512, 4), (256, 512, 8), (256, 256, 3), (64, 256, 15), (512, 512, 2)]:
        picks = [choice(N, C, F, H) for N in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)]
        first = next(i for i, m in enumerate(picks) if m)  # Winograd at 512 everywhere
        assert all(picks[first:]), (C, F, H, picks)


@pytest.fixture
def split_layers(monkeypatch):
    """Small layers take the by-filter split (its weight bound lowered), with two conv
    threads; a list records each split forward and backward."""
    if KR.compiled is None or not KR.blas_controlled():
        pytest.skip("needs the compiled extension and control of numpy's BLAS threads")
    calls = []
    for name in ("_forward_by_filters", "_backward_by_filters"):
        real = getattr(KC, name)
        monkeypatch.setattr(KC, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    monkeypatch.setattr(KC, "_SPLIT_MIN_WEIGHTS", 1)
    previous_impl, previous_threads = FL.use_implementation("cython"), FL.set_conv_threads(2)
    yield calls
    FL.use_implementation(previous_impl)
    FL.set_conv_threads(previous_threads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", [
    ((3, 20, 4, 4), (40, 20, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 8, 7, 6), (12, 4, 3, 2), {"stride": (2, 1), "pad": 1, "groups": 2}),
    ((1, 3, 9, 9), (33, 3, 5, 5), {"stride": 2, "pad": 2, "dilation": 1}),
    ((2, 6, 8, 8), (6, 2, 3, 3), {"stride": 1, "pad": 2, "dilation": 2, "groups": 3}),
])
def test_small_batches_split_by_filters_match_the_reference(rng, split_layers, xs, ws, conv_param, dtype):
    dout, cache, want = _im2col_matches_reference(rng, xs, ws, conv_param, dtype)
    np.testing.assert_array_equal(FL.conv_backward_im2col(dout, cache, need_dx=False)[1],
                                  FL.conv_backward_im2col(dout, cache)[1])
    assert split_layers == ["_forward_by_filters"] + ["_backward_by_filters"] * 5


def test_split_by_filters_is_bitwise_repeatable_and_bounded(rng, split_layers, monkeypatch):
    """The same results run after run (each element from one GEMM, whichever thread ran
    it); a batch whose columns exceed the bound, or a workspace too small for them,
    takes the batch chunks instead."""
    x, w, b = _conv_inputs(rng, (4, 32, 6, 6), (64, 32, 3, 3), np.float32)
    param = {"stride": 1, "pad": 1}
    runs = []
    for _ in range(3):
        out, cache = FL.conv_forward_im2col(x, w, b, param)
        runs.append((out,) + FL.conv_backward_im2col(np.ones_like(out), cache))
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)
    assert len(split_layers) == 6
    split_layers.clear()
    monkeypatch.setattr(KC, "_SPLIT_MAX_COLUMNS", 4 * 36 - 1)
    out, cache = FL.conv_forward_im2col(x, w, b, param)
    FL.conv_backward_im2col(np.ones_like(out), cache)
    monkeypatch.setattr(KC, "_SPLIT_MAX_COLUMNS", 4 * 36)
    previous = FL.set_workspace_limit(1)
    try:
        out, cache = FL.conv_forward_im2col(x, w, b, param)
    finally:
        FL.set_workspace_limit(previous)
    assert not split_layers
    assert_close(out, runs[0][0], np.float32)


def test_use_winograd_switch(rng, winograd_calls):
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    previous_impl = FL.use_implementation("cython")
    calls = winograd_calls
    x, w, b = _conv_inputs(rng, (2, 16, 6, 6), (16, 16, 3, 3), np.float64)
    try:
        assert FL.use_winograd(False) is True
        off = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]
        assert not calls
        assert FL.use_winograd(True) is False
        on = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]
        assert calls
        assert_close(on, off, np.float64)
        # the NumPy fallback never takes Winograd
        FL.use_implementation("numpy")
        calls.clear()
        FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
        assert not calls
    finally:
        FL.use_winograd(True)
        FL.use_implementation(previous_impl)


def test_winograd_env_var():
    proc = _run_python("import funkcije.kernels.conv as KC; print(KC._winograd_enabled)", FUNKCIJE_WINOGRAD="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("value, expected", [("2", "2"), ("4", "4"), ("", "4")])
def test_winograd_tile_env_var(value, expected):
    proc = _run_python("from funkcije import config; print(config.get('winograd_tile'))",
                       FUNKCIJE_WINOGRAD_TILE=value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == expected


def test_winograd_tile_env_var_rejected():
    proc = _run_python("import funkcije.config", FUNKCIJE_WINOGRAD_TILE="3")
    assert proc.returncode != 0 and "FUNKCIJE_WINOGRAD_TILE" in proc.stderr


@pytest.mark.parametrize("xs, dtype, slabs", [
    ((2, 16, 8, 8), np.float32, 36),   # F(4x4): 4 tiles x 36 products < 16 x 16
    ((2, 16, 5, 7), np.float32, 36),   # partial tiles: 4 x 36 < 12 x 16
    ((2, 16, 2, 2), np.float32, 16),   # one 4x4 tile for four outputs: F(2x2)
    ((2, 16, 6, 6), np.float32, 16),   # a tie (144 products each): F(2x2), cheaper transforms
    ((2, 16, 8, 8), np.float64, 16),   # float64: always F(2x2)
])
def test_winograd_tile_choice(rng, monkeypatch, xs, dtype, slabs):
    """F(4x4, 3x3) where it needs fewer products than F(2x2, 3x3), per layer (the
    batch-size rule off)."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    monkeypatch.setattr(KC, "_WINOGRAD_TRANSFORM_COST", None)
    tiles = []
    real = KC._winograd_conv
    monkeypatch.setattr(KC, "_winograd_conv", lambda x, U, *a: tiles.append(U.shape[1]) or real(x, U, *a))
    previous = FL.use_implementation("cython")
    try:
        x, w, b = _conv_inputs(rng, xs, (16, 16, 3, 3), dtype)
        out, cache = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
        FL.conv_backward_fast(np.ones_like(out), cache)
    finally:
        FL.use_implementation(previous)
    assert tiles == [slabs, slabs]  # the forward and dx


def _with_tile(m, fn):
    previous = FL.use_winograd_tile(m)
    try:
        return fn()
    finally:
        FL.use_winograd_tile(previous)


def test_use_winograd_tile_switch(rng, winograd_calls):
    """Both tiles agree with the reference; the switch returns the previous tile and
    refuses anything but 2 and 4."""
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    previous_impl = FL.use_implementation("cython")
    x, w, b = _conv_inputs(rng, (2, 16, 10, 9), (16, 16, 3, 3), np.float32)
    ref = L.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})[0]
    previous = FL.use_winograd_tile(2)
    try:
        two = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]
        assert FL.use_winograd_tile(4) == 2
        four = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]
        assert len(winograd_calls) == 2
        assert_close(two, ref, np.float32)
        assert_close(four, ref, np.float32)
        assert not np.array_equal(two, four)  # two algorithms, rounded differently
        # float64 takes F(2x2) whatever the setting
        x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
        np.testing.assert_array_equal(FL.conv_forward_fast(x64, w64, b64, {"stride": 1, "pad": 1})[0],
                                      _with_tile(2, lambda: FL.conv_forward_fast(x64, w64, b64,
                                                                                 {"stride": 1, "pad": 1})[0]))
        for bad in (3, 0, 2.0, "4", None, True):
            with pytest.raises(ValueError, match="use_winograd_tile"):
                FL.use_winograd_tile(bad)
        assert KC.get_winograd_tile() == 4
    finally:
        FL.use_winograd_tile(previous)
        FL.use_implementation(previous_impl)


@pytest.mark.torch
def test_winograd_matches_torch(torch, rng):
    if "cython" not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    previous = FL.use_implementation("cython")
    try:
        x, w, b = _conv_inputs(rng, (3, 32, 9, 8), (48, 16, 3, 3), np.float64)
        param = {"stride": 1, "pad": 1, "groups": 2}
        out, cache = FL.conv_forward_fast(x, w, b, param)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = FL.conv_backward_fast(dout, cache)
    finally:
        FL.use_implementation(previous)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = torch.nn.functional.conv2d(tx, tw, tb, stride=1, padding=1, groups=2)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, t in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)



# ----------------------------------------------------------------------------- direct kernels

needs_direct = pytest.mark.skipif(
    not KC._DIRECT_CPU, reason="the direct float32 kernels need AVX-512F (and the compiled extension)")

# float32 layers for the direct kernels: dx by the flipped convolution needs stride 1;
# the others take GEMM + col2im for dx. Widths that exercise every column block of both
# layouts (rows: below 16, 16, 32, and overlapping last vectors), a kernel 8 wide (the
# widest dw kernel) and one 9 wide (im2col), 1x1, dilation, groups, filters not a
# multiple of 16, one or three filters or input channels (row layout; dx of RGB and grey
# layers), heights below every row block (column layout only), row and column strides
# (the row layout's phased planes).
DIRECT_CASES = [
    ((2, 3, 32, 32), (32, 3, 7, 7), {"stride": 1, "pad": 3}),
    ((3, 1, 28, 28), (16, 1, 5, 5), {"stride": 1, "pad": 2}),
    ((2, 16, 9, 20), (1, 16, 3, 5), {"stride": 1, "pad": (1, 2)}),
    ((2, 4, 2, 40), (5, 4, 1, 3), {"stride": 1, "pad": 0}),
    ((2, 6, 15, 18), (9, 6, 3, 3), {"stride": (2, 1), "pad": 1, "dilation": (1, 2)}),
    ((2, 32, 10, 16), (3, 32, 3, 3), {"stride": 1, "pad": 1}),
    ((3, 3, 31, 31), (25, 3, 3, 3), {"stride": 2, "pad": 1}),
    ((2, 4, 11, 40), (6, 4, 3, 4), {"stride": (1, 3), "pad": (1, 2), "dilation": (1, 2)}),
    ((3, 16, 9, 11), (20, 16, 5, 3), {"stride": 1, "pad": (2, 1), "dilation": (1, 2)}),
    ((2, 32, 7, 37), (24, 16, 3, 3), {"stride": 1, "pad": 0, "groups": 2}),  # Fg 12: not Winograd
    ((4, 3, 17, 16), (33, 3, 7, 7), {"stride": 1, "pad": 3}),
    ((2, 5, 12, 13), (7, 5, 3, 3), {"stride": 2, "pad": 1}),
    ((2, 2, 6, 30), (17, 2, 2, 8), {"stride": (1, 3), "pad": (1, 4)}),
    ((2, 2, 6, 30), (6, 2, 2, 9), {"stride": 1, "pad": (0, 4)}),
    ((3, 16, 5, 1), (48, 16, 1, 1), {"stride": 1, "pad": 0}),
    ((1, 18, 14, 14), (16, 18, 5, 5), {"stride": 1, "pad": 5}),
]


@needs_direct
@pytest.mark.parametrize("layout", ["auto", "rows", "columns"])
@pytest.mark.parametrize("xs, ws, conv_param", DIRECT_CASES)
def test_direct_matches_reference(rng, xs, ws, conv_param, layout, monkeypatch):
    calls = []
    real = KC._direct_conv
    monkeypatch.setattr(KC, "_direct_conv", lambda *a: calls.append(1) or real(*a))
    previous = FL.use_implementation("cython")
    try:
        KR.compiled.direct_layout(layout)
        x, w, b = _conv_inputs(rng, xs, ws, np.float32)
        ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
        out, cache = FL.conv_forward_fast(x, w, b, conv_param)
        assert bool(calls) == (ws[3] <= 8), "the direct forward was (not) chosen"
        assert_close(out, ref, np.float32)
        dout = rng.standard_normal(ref.shape).astype(np.float32)
        for g_fast, g_ref in zip(FL.conv_backward_fast(dout, cache), L.conv_backward_naive(dout, ref_cache)):
            assert_close(g_fast, g_ref, np.float32)
        # without dx the direct dw may be taken where the full backward uses im2col:
        # equal to rounding
        dx, dw, db = FL.conv_backward_fast(dout, cache, need_dx=False)
        assert dx is None
        assert_close(dw, L.conv_backward_naive(dout, ref_cache)[1], np.float32)
    finally:
        KR.compiled.direct_layout("auto")
        FL.use_implementation(previous)


@needs_direct
def test_direct_layout_switch():
    k = KR.compiled
    assert k.direct_layout() == "auto"
    assert k.direct_layout("rows") == "auto"
    try:
        assert k.direct_layout() == "rows"
        with pytest.raises(ValueError, match="direct_layout: mode must be one of"):
            k.direct_layout("diagonal")
        assert k.direct_layout() == "rows"
        assert k.direct_forward_kernel(32, 14, 14, 400)[0] == "rows"
        assert k.direct_forward_kernel(48, 2, 40, 12) == ("columns",), "no row block fits 2 rows"
        k.direct_layout("columns")
        assert k.direct_forward_kernel(3, 32, 32, 1568) == ("columns",)
        k.direct_layout("auto")
        # dx of an RGB layer has 3 "filters": 13 of 16 lanes would idle in the column layout
        layout, fb, rb = k.direct_forward_kernel(3, 32, 32, 1568)
        assert layout == "rows" and fb <= 3
    finally:
        k.direct_layout("auto")


@needs_direct
def test_direct_is_deterministic_across_threads(rng):
    x, w, b = _conv_inputs(rng, (9, 16, 10, 10), (24, 16, 5, 5), np.float32)
    param = {"stride": 1, "pad": 2}
    old = FL.get_conv_threads()
    runs = []
    try:
        for threads in ([1, 2, 2] if KR.blas_controlled() else [1, 1]):
            FL.set_conv_threads(threads)
            out, cache = FL.conv_forward_fast(x, w, b, param)
            runs.append((out,) + FL.conv_backward_fast(np.ones_like(out), cache))
    finally:
        FL.set_conv_threads(old)
    for other in runs[2:]:
        for a, c in zip(runs[1], other):
            np.testing.assert_array_equal(a, c)


def test_direct_not_used_without_avx512_or_when_switched_off(rng, monkeypatch):
    calls = []
    real = KC._direct_conv
    monkeypatch.setattr(KC, "_direct_conv", lambda *a: calls.append(1) or real(*a))
    x, w, b = _conv_inputs(rng, (2, 3, 8, 8), (4, 3, 3, 3), np.float32)
    monkeypatch.setattr(KC, "_DIRECT_CPU", False)
    out_off = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})[0]
    assert not calls
    if not real.__module__ or "cython" not in FL.available_implementations():
        return
    monkeypatch.setattr(KC, "_DIRECT_CPU", KR.compiled.direct_available())
    assert FL.use_direct(False) is True
    try:
        FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
        assert not calls
    finally:
        FL.use_direct(True)
    assert_close(out_off, L.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})[0], np.float32)


def test_direct_env_var():
    proc = _run_python("import funkcije.kernels.conv as KC; print(KC._direct_enabled)", FUNKCIJE_DIRECT="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


@needs_direct
def test_direct_kernels_reject_bad_arguments(rng):
    k = KR.compiled
    x = np.zeros((2, 3, 5, 5), np.float32)
    out = np.zeros((2, 4, 5, 5), np.float32)
    wT = np.zeros((27, 32), np.float32)
    with pytest.raises(ValueError, match="windows reach outside"):
        k.direct_conv_forward(x, wT, np.zeros(0, np.float32), out, 0, 2, 0, 3, 0, 4, 3, 3, 1, 1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="wT must be"):
        k.direct_conv_forward(x, np.zeros((27, 16), np.float32), np.zeros(0, np.float32), out, 0, 2, 0, 3, 0, 4, 3, 3, 1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="range outside"):
        k.direct_conv_forward(x, wT, np.zeros(0, np.float32), out, 0, 3, 0, 3, 0, 4, 3, 3, 1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="wider than 8"):
        k.direct_conv_weight_grad(np.zeros((1, 1, 3, 12), np.float32), np.zeros((1, 4, 1, 4), np.float32),
                                  np.zeros((9, 32), np.float32), 0, 1, 0, 1, 0, 4, 1, 9, 1, 1, 1, 0, 1, 1)
    with pytest.raises(ValueError, match="filter range outside"):
        k.direct_conv_weight_grad(np.zeros((1, 1, 3, 5), np.float32), np.zeros((1, 4, 1, 3), np.float32),
                                  np.zeros((9, 32), np.float32), 0, 1, 0, 1, 2, 4, 3, 3, 1, 1, 0, 0, 1, 1)


# ----------------------------------------------------------------------------- subnormals

needs_ftz = pytest.mark.skipif(
    "cython" not in FL.available_implementations() or not KR.compiled.ftz_supported(),
    reason="flushing subnormals needs the compiled extension on x86")
TINY32 = np.finfo(np.float32).tiny


def _subnormal_survives():
    """True when this thread's arithmetic still produces subnormal float32 results."""
    return float((np.array([TINY32], np.float32) * np.float32(0.25))[0]) != 0.0


@needs_ftz
def test_flush_denormals_context_flushes_and_restores():
    assert _subnormal_survives()
    with FL.flush_denormals():
        assert not _subnormal_survives()
        with FL.flush_denormals():  # nested: the inner exit must not switch it off
            pass
        assert not _subnormal_survives()
    assert _subnormal_survives()
    previous = FL.use_flush_denormals(False)
    try:
        with FL.flush_denormals():
            assert _subnormal_survives()
    finally:
        FL.use_flush_denormals(previous)


@needs_ftz
def test_fast_layers_leave_the_callers_fp_mode_alone(rng):
    x, w, b = _conv_inputs(rng, (4, 16, 9, 9), (16, 16, 3, 3), np.float32)
    out, cache = FL.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    FL.conv_backward_fast(out, cache)
    h = rng.standard_normal((8, 3000)).astype(np.float32)
    FL.affine_backward_fast(np.ones((8, 200), np.float32),
                            FL.affine_forward_fast(h, np.ones((3000, 200), np.float32), np.zeros(200, np.float32))[1])
    assert _subnormal_survives()


@needs_ftz
def test_model_gradients_carry_no_subnormals():
    """A weight decayed to just above the smallest normal float32: reg * W is subnormal,
    and the model's loss (run with subnormals flushed) returns zeros there instead."""
    from funkcije.classifiers import ThreeLayerConvNet

    model = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=6, reg=1e-3, seed=0)
    model.params["W2"][0, :] = 2 * TINY32
    X = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    _, grads = model.loss(X, np.arange(5) % 10)
    g = np.abs(grads["W2"])
    assert not ((g > 0) & (g < TINY32)).any()
    assert _subnormal_survives()
    previous = FL.use_flush_denormals(False)
    try:
        _, grads = model.loss(X, np.arange(5) % 10)
    finally:
        FL.use_flush_denormals(previous)
    g = np.abs(grads["W2"])
    assert ((g > 0) & (g < TINY32)).any(), "without flushing, reg * W is subnormal here"


def test_flush_denormals_env_var():
    proc = _run_python("import funkcije.kernels.runtime as KR; print(KR.flushing_denormals())", FUNKCIJE_FLUSH_DENORMALS="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


# ----------------------------------------------------------------------------- random configurations


def _close_to_scale(fast, ref, dtype, tol64=1e-12):
    """|fast - ref| <= tol * (|ref| + max|ref|): relative to the array's scale in both
    dtypes, since the random layers sum up to a few hundred products, whose cancellations
    leave float64 entries near zero with errors far above 1e-10 of their own size."""
    if np.dtype(dtype) == np.float32:
        return assert_close(fast, ref, dtype)
    assert fast.dtype == np.float64 and fast.shape == ref.shape
    scale = np.abs(ref).max(initial=0.0)
    worst = (np.abs(fast - ref) / (np.abs(ref) + scale + 1e-300)).max(initial=0.0)
    assert worst < tol64, f"max error {worst:.2e} of the scale"


@st.composite
def _conv_layers(draw):
    """A random layer: groups, channels (a few or Winograd-sized), non-square kernels,
    strides, dilations and paddings given as (h, w) pairs, or a 3x3 stride-1 layer."""
    G = draw(st.sampled_from([1, 1, 2, 3]))
    wide = draw(st.booleans())
    Cg, Fg = (draw(st.integers(8, 20)), draw(st.integers(8, 20))) if wide else (draw(st.integers(1, 6)),
                                                                              draw(st.integers(1, 6)))
    if draw(st.booleans()):
        kh = kw = 3
        sh = sw = dh = dw = 1
    else:
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        sh, sw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    H = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 14))
    W = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 14))
    conv_param = {"stride": (sh, sw), "pad": (ph, pw), "dilation": (dh, dw), "groups": G}
    return (draw(st.integers(1, 5)), G * Cg, H, W), (G * Fg, Cg, kh, kw), conv_param


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(layer=_conv_layers(), algorithm=st.sampled_from(["default", "winograd4", "winograd2", "im2col-only"]),
       implementation=st.sampled_from(["cython", "numpy"]), workspace=st.sampled_from([None, 1, 5000]),
       threads=st.sampled_from([1, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_conv_random_layers_every_algorithm(layer, algorithm, implementation, workspace, threads, dtype, seed):
    """Random layers through each algorithm (Winograd made to take every 3x3 stride-1
    layer it can), implementation, workspace bound (1 byte: a sample per chunk) and
    thread count: forward and every gradient agree with the reference."""
    if implementation not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    xs, ws, conv_param = layer
    x, w, b = _conv_inputs(np.random.default_rng(seed), xs, ws, dtype)
    ref, ref_cache = L.conv_forward_naive(x, w, b, conv_param)
    dout = np.random.default_rng(seed + 1).standard_normal(ref.shape).astype(dtype)
    want = L.conv_backward_naive(dout, ref_cache)
    switches = {"winograd4": dict(_winograd_enabled=True, _WINOGRAD_MIN_CHANNELS=1, _WINOGRAD_TRANSFORM_COST=None,
                                  _winograd_tile=4),
                "im2col-only": dict(_winograd_enabled=False, _direct_enabled=False)}
    switches["winograd2"] = dict(switches["winograd4"], _winograd_tile=2)
    saved = {k: getattr(KC, k) for k in switches.get(algorithm, {})}
    # (where threadpoolctl cannot hold numpy's BLAS the engine keeps to one thread)
    previous = (FL.use_implementation(implementation), FL.set_conv_threads(threads) if KR.blas_controlled() else None,
                FL.set_workspace_limit(workspace) if workspace else None)
    try:
        for k, v in switches.get(algorithm, {}).items():
            setattr(KC, k, v)
        out, cache = FL.conv_forward_fast(x, w, b, dict(conv_param))
        _close_to_scale(out, ref, dtype)
        for got, ref_grad in zip(FL.conv_backward_fast(dout, cache), want):
            _close_to_scale(got, ref_grad, dtype)
    finally:
        for k, v in saved.items():
            setattr(KC, k, v)
        FL.use_implementation(previous[0])
        if previous[1] is not None:
            FL.set_conv_threads(previous[1])
        if workspace:
            FL.set_workspace_limit(previous[2])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 15), st.integers(1, 15)),
       window=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       kind=st.sampled_from(["max", "avg"]), implementation=st.sampled_from(["cython", "numpy"]),
       dtype=st.sampled_from([np.float32, np.float64]), ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_pool_random_windows(shape, window, stride, kind, implementation, dtype, ties, seed):
    """Random windows and strides (overlapping, not tiling, wider than tall), inputs with
    many tied maxima or none: max pooling exactly the reference's, its gradient to the
    same first maximum; average pooling within rounding."""
    if implementation not in FL.available_implementations():
        pytest.skip("compiled extension not built")
    assume(window[0] <= shape[2] and window[1] <= shape[3])
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    pool_param = {"pool_height": window[0], "pool_width": window[1], "stride": stride}
    ref_fwd, ref_bwd, fwd, bwd = {
        "max": (L.max_pool_forward_naive, L.max_pool_backward_naive, FL.max_pool_forward_fast,
                FL.max_pool_backward_fast),
        "avg": (L.avg_pool_forward_naive, L.avg_pool_backward_naive, FL.avg_pool_forward_fast,
                FL.avg_pool_backward_fast)}[kind]
    ref, ref_cache = ref_fwd(x, dict(pool_param))
    dout = rng.standard_normal(ref.shape).astype(dtype)
    previous = FL.use_implementation(implementation)
    try:
        out, cache = fwd(x, dict(pool_param))
        dx = bwd(dout, cache)
    finally:
        FL.use_implementation(previous)
    if kind == "max":
        np.testing.assert_array_equal(out, ref)
        assert out.dtype == dtype
    else:
        _close_to_scale(out, ref, dtype)
    _close_to_scale(dx, ref_bwd(dout, ref_cache), dtype)
