"""Source of the walkthrough notebooks: `python notebooks/_build_notebooks.py`
writes ConvolutionalNetworks.ipynb and TrainingAndEvaluation.ipynb next to this
file, without outputs. Edit the cells here, not in Jupyter: tests/test_notebooks.py
checks that the committed notebooks are exactly what this script builds.
"""
from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Both notebooks start with this: the one switch between CI-sized and full runs.
QUICK_CELL = '''
# FUNKCIJE_QUICK=1 shrinks the data and the epochs so that CI runs this notebook in
# a minute or two; unset (or "0") gives the full settings quoted in notebooks/README.md.
_quick = os.environ.get("FUNKCIJE_QUICK", "0").strip()
if _quick not in ("", "0", "1"):
    raise ValueError(f"FUNKCIJE_QUICK must be '1' (quick) or '0' / unset (full settings), got {_quick!r}")
QUICK = _quick == "1"
print("settings:", "quick (FUNKCIJE_QUICK=1)" if QUICK else "full")
'''


def md(text: str):
    return new_markdown_cell(dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(dedent(text).strip("\n"))


# ----------------------------------------------------------------------------- ConvolutionalNetworks

CONV_CELLS = [
    md(r"""
    # Convolutional networks, layer by layer

    This notebook walks through the convolutional part of funkcije the way the cs231n
    assignment does: every layer is a pair of functions, `forward(x, ...) -> (out, cache)`
    and `backward(dout, cache) -> gradients`. We

    1. run the reference (naive) convolution on inputs whose outputs we know by hand;
    2. use a convolution as an image filter on two photographs;
    3. check the naive backward passes against numerical gradients;
    4. do the same for max pooling;
    5. time the fast layers against the naive ones;
    6. check the sandwich layers (conv-relu-pool and friends);
    7. build, check and train a `ThreeLayerConvNet` on CIFAR-10 and look at its filters;
    8. check spatial batch normalisation and group normalisation.

    The data come from the folder named by `FUNKCIJE_DATA` (see `funkcije.data_utils`).
    With `FUNKCIJE_QUICK=1` the training runs use a small slice of CIFAR-10 (this is what CI
    does); without it they use the full settings.
    """),
    code(r"""
    %matplotlib inline
    import os
    import time

    import numpy as np
    import matplotlib.pyplot as plt

    from funkcije import fast_layers, metrics, vis_utils
    from funkcije.classifiers import ThreeLayerConvNet
    from funkcije.data_utils import CIFAR10_CLASSES, get_CIFAR10_data
    from funkcije.fast_layers import (
        conv_backward_fast, conv_forward_fast, max_pool_backward_fast, max_pool_forward_fast,
    )
    from funkcije.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
    from funkcije.layer_utils import (
        conv_bn_relu_backward, conv_bn_relu_forward, conv_relu_backward, conv_relu_forward,
        conv_relu_pool_backward, conv_relu_pool_forward,
    )
    from funkcije.layers import (
        conv_backward_naive, conv_forward_naive, max_pool_backward_naive, max_pool_forward_naive,
        spatial_batchnorm_backward, spatial_batchnorm_forward,
        spatial_groupnorm_backward, spatial_groupnorm_forward,
    )
    from funkcije.solver import Solver

    plt.rcParams["figure.figsize"] = (10.0, 6.0)
    plt.rcParams["image.interpolation"] = "nearest"
    rng = np.random.default_rng(231)
    print("fast layers use the", fast_layers.implementation(), "kernels")
    """),
    code(QUICK_CELL),
    md(r"""
    ## 1. Convolution: the naive forward pass

    `conv_forward_naive(x, w, b, conv_param)` takes `x` of shape (N, C, H, W) and `F` filters
    `w` of shape (F, C, HH, WW) and slides each filter over the zero-padded input. Like
    cs231n and PyTorch it computes a *cross-correlation* (the kernel is not flipped):

    $$\text{out}[n, f, i, j] = b_f + \sum_{c, k, l} x_{\text{pad}}[n, c, i s + k, j s + l]\; w[f, c, k, l]$$

    The output height is H' = 1 + (H + 2 pad - HH) // stride, and likewise the width W'.

    First, two inputs small enough to work out by hand.
    """),
    code(r"""
    # A 4x4 image holding 1..16; a 2x2 kernel of ones adds up each window; stride 2 means
    # the windows tile the image: [1 2 5 6], [3 4 7 8], [9 10 13 14], [11 12 15 16].
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    b = np.array([0.5])
    out, _ = conv_forward_naive(x, w, b, {"stride": 2, "pad": 0})
    expected = np.array([[[[14.5, 22.5], [46.5, 54.5]]]])
    print(out[0, 0])
    assert np.array_equal(out, expected)

    # The kernel [[1, 0], [0, -1]] computes x[i, j] - x[i + 1, j + 1]. With one pixel of zero
    # padding around 1..9 the border rows and columns show the zeros coming in, and the
    # sign shows that the kernel is not flipped.
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    out, _ = conv_forward_naive(x, w, np.zeros(1), {"stride": 1, "pad": 1})
    expected = np.array([[-1, -2, -3, 0],
                         [-4, -4, -4, 3],
                         [-7, -4, -4, 6],
                         [0, 7, 8, 9]], dtype=np.float64)
    print(out[0, 0])
    assert np.array_equal(out[0, 0], expected)
    """),
    md(r"""
    Now a multi-channel case with stride 2 and padding 1 (the geometry of the cs231n check),
    compared with an independent implementation: SciPy's 2-D cross-correlation of each
    channel, summed over channels, then sampled every second position.
    """),
    code(r"""
    from scipy.signal import correlate2d

    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    b = np.linspace(-0.1, 0.2, num=3)
    conv_param = {"stride": 2, "pad": 1}
    out, _ = conv_forward_naive(x, w, b, conv_param)

    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    scipy_out = np.array([[sum(correlate2d(xp[n, c], w[f, c], mode="valid") for c in range(3))[::2, ::2] + b[f]
                           for f in range(3)] for n in range(2)])
    print("output shape:", out.shape)
    print("relative error against SciPy:", rel_error(out, scipy_out))
    assert out.shape == (2, 3, 2, 2) and rel_error(out, scipy_out) < 1e-12
    """),
    md(r"""
    ## 2. Convolution as image processing

    A convolution with hand-made filters is an image filter. We take two photographs that ship
    with scikit-image (Chelsea the cat and a cup of coffee), crop them square, shrink them to
    200 x 200 and apply three 3 x 3 filters to the batch of two:

    * **grayscale**: only the centre tap is non-zero, weighting R, G, B by 0.3, 0.6, 0.1;
    * **horizontal edges**: a Sobel kernel [[1, 2, 1], [0, 0, 0], [-1, -2, -1]] applied to that
      same luminance, so it responds where brightness changes from top to bottom;
    * **vertical edges**: the transposed Sobel kernel, for changes from left to right.

    The edge filters get a bias of 128 so that "no edge" is mid-gray.
    """),
    code(r"""
    from skimage import data as skdata
    from skimage.transform import resize

    def square(img, size=200):
        # central square crop, so resizing does not distort the photo
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return resize(img[top:top + s, left:left + s], (size, size), anti_aliasing=True, preserve_range=True)

    photos = {"cat (skimage.data.chelsea)": skdata.chelsea(), "coffee (skimage.data.coffee)": skdata.coffee()}
    x = np.stack([square(p) for p in photos.values()]).transpose(0, 3, 1, 2)  # (2, 3, 200, 200)

    luminance = np.array([0.3, 0.6, 0.1])
    sobel = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    w = np.zeros((3, 3, 3, 3))
    w[0, :, 1, 1] = luminance
    w[1] = luminance[:, None, None] * sobel
    w[2] = luminance[:, None, None] * sobel.T
    b = np.array([0.0, 128.0, 128.0])

    out, _ = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    print("input", x.shape, "-> output", out.shape)

    titles = ["original", "grayscale", "horizontal edges", "vertical edges"]
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    for n, name in enumerate(photos):
        axes[n, 0].imshow(x[n].transpose(1, 2, 0).astype(np.uint8))
        axes[n, 0].set_ylabel(name)
        for f in range(3):
            # each response map is stretched to its own range for display
            axes[n, f + 1].imshow(out[n, f], cmap="gray")
        for k in range(4):
            axes[n, k].set_xticks([])
            axes[n, k].set_yticks([])
            axes[0, k].set_title(titles[k])
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    The grayscale column is the photo's brightness. The edge columns look embossed: mid-gray
    where the image is flat, light or dark where brightness changes, the sign telling which
    way it changes. The horizontal-edge filter picks out the cat's whiskers and eyelids and the
    upper and lower rims of the cup and saucer; the vertical-edge filter picks out the stripes
    on the cat's forehead, the sides of the cup and its handle. The bright line along the bottom
    edge of the horizontal-edge maps and along the right edge of the vertical-edge maps (and the
    darker ones along the top and left) is the zero padding: there the filter sees the image end
    in black.

    ## 3. Convolution: the naive backward pass

    `conv_backward_naive(dout, cache)` returns `dx`, `dw`, `db`. We compare them with centred
    differences of `sum(out * dout)`, in float64, on random data. The project's standard is a
    relative error below 1e-7; correct code typically gets 1e-8 or less.
    """),
    code(r"""
    def check_conv_backward(x, w, b, conv_param):
        out, cache = conv_forward_naive(x, w, b, conv_param)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = conv_backward_naive(dout, cache)
        dx_num = eval_numerical_gradient_array(lambda x_: conv_forward_naive(x_, w, b, conv_param)[0], x, dout)
        dw_num = eval_numerical_gradient_array(lambda w_: conv_forward_naive(x, w_, b, conv_param)[0], w, dout)
        db_num = eval_numerical_gradient_array(lambda b_: conv_forward_naive(x, w, b_, conv_param)[0], b, dout)
        errors = {"dx": rel_error(dx, dx_num), "dw": rel_error(dw, dw_num), "db": rel_error(db, db_num)}
        print(conv_param, {k: f"{v:.2e}" for k, v in errors.items()})
        return errors

    # the cs231n case: 3x3 filters, stride 1, pad 1
    errors = check_conv_backward(rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3)),
                                 rng.standard_normal(2), {"stride": 1, "pad": 1})
    assert max(errors.values()) < 1e-7

    # beyond cs231n: a non-square 2x3 kernel, (h, w) strides, dilation 2 and two groups
    errors = check_conv_backward(rng.standard_normal((2, 4, 7, 8)), rng.standard_normal((4, 2, 2, 3)),
                                 rng.standard_normal(4), {"stride": (1, 2), "pad": (1, 2), "dilation": 2, "groups": 2})
    assert max(errors.values()) < 1e-7
    """),
    md(r"""
    ## 4. Max pooling

    `max_pool_forward_naive(x, pool_param)` keeps the largest value of each
    `pool_height x pool_width` window; the backward pass routes each window's gradient to
    the position of its maximum. Known values first: 2 x 2 windows with stride 2 on 1..16.
    """),
    code(r"""
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    out, _ = max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    print(out[0, 0])
    assert np.array_equal(out[0, 0], [[6, 8], [14, 16]])

    # numerical gradients: random inputs have no ties, so every window has one maximum;
    # the second case has overlapping 3x3 windows with stride 2
    for pool_param in ({"pool_height": 2, "pool_width": 2, "stride": 2},
                       {"pool_height": 3, "pool_width": 3, "stride": 2}):
        x = rng.standard_normal((3, 2, 8, 8))
        out, cache = max_pool_forward_naive(x, pool_param)
        dout = rng.standard_normal(out.shape)
        dx = max_pool_backward_naive(dout, cache)
        dx_num = eval_numerical_gradient_array(lambda x_: max_pool_forward_naive(x_, pool_param)[0], x, dout)
        err = rel_error(dx, dx_num)
        print(pool_param, "dx error:", f"{err:.2e}")
        assert err < 1e-7
    """),
    md(r"""
    ## 5. Fast layers

    The naive layers loop over output positions in Python. `funkcije.fast_layers` has the same
    signatures and computes the convolution as im2col (compiled Cython kernels) followed by one
    matrix multiplication per chunk of the batch, and pooling in compiled loops. Below: the same
    answers, and what the fast path buys on the machine that ran this notebook, for cs231n's
    timing case and for the first layer of the network we train later. Timings depend on what
    else runs on the machine (the best of three runs is shown): the fast kernels split their
    work over all cores, and when other programs hold those cores the threads wait for each
    other, so on a busy machine the fast path can lose much of its advantage, or all of it.
    Run this cell on an idle machine for representative numbers.
    """),
    code(r"""
    def scaled_error(reference, other):
        # max |difference| relative to the largest entry of the reference: unlike rel_error it
        # is not inflated by entries that are tiny because many terms of both signs cancel
        return np.abs(reference - other).max() / np.abs(reference).max()

    def best_time(f, repeat=3):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    def compare_conv(x, w, b, conv_param):
        out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
        out_f, cache_f = conv_forward_fast(x, w, b, conv_param)
        dout = rng.standard_normal(out_n.shape).astype(x.dtype)
        grads_n, grads_f = conv_backward_naive(dout, cache_n), conv_backward_fast(dout, cache_f)
        return [("conv forward", lambda: conv_forward_naive(x, w, b, conv_param),
                 lambda: conv_forward_fast(x, w, b, conv_param), scaled_error(out_n, out_f)),
                ("conv backward", lambda: conv_backward_naive(dout, cache_n), lambda: conv_backward_fast(dout, cache_f),
                 max(scaled_error(a, c) for a, c in zip(grads_n, grads_f)))]

    def compare_pool(x, pool_param):
        out_n, cache_n = max_pool_forward_naive(x, pool_param)
        out_f, cache_f = max_pool_forward_fast(x, pool_param)
        dout = rng.standard_normal(out_n.shape).astype(x.dtype)
        return [("max pool forward", lambda: max_pool_forward_naive(x, pool_param),
                 lambda: max_pool_forward_fast(x, pool_param), scaled_error(out_n, out_f)),
                ("max pool backward", lambda: max_pool_backward_naive(dout, cache_n),
                 lambda: max_pool_backward_fast(dout, cache_f),
                 scaled_error(max_pool_backward_naive(dout, cache_n), max_pool_backward_fast(dout, cache_f)))]

    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    cases = {
        # cs231n's timing case, float64
        "float64: x (100, 3, 31, 31), 25 filters 3x3, stride 2, pad 1; pool x (100, 3, 32, 32)":
            (compare_conv(rng.standard_normal((100, 3, 31, 31)), rng.standard_normal((25, 3, 3, 3)),
                          rng.standard_normal(25), {"stride": 2, "pad": 1})
             + compare_pool(rng.standard_normal((100, 3, 32, 32)), pool_param), 1e-12),
        # the first layer of ThreeLayerConvNet on a CIFAR-10 minibatch, float32 (the training path)
        "float32: x (50, 3, 32, 32), 32 filters 7x7, stride 1, pad 3; pool x (50, 32, 32, 32)":
            (compare_conv(rng.standard_normal((50, 3, 32, 32), dtype=np.float32),
                          rng.standard_normal((32, 3, 7, 7), dtype=np.float32),
                          rng.standard_normal(32, dtype=np.float32), {"stride": 1, "pad": 3})
             + compare_pool(rng.standard_normal((50, 32, 32, 32), dtype=np.float32), pool_param), 1e-5),
    }
    for title, (rows, tol) in cases.items():
        print(title)
        print(f"  {'':<18}{'naive (s)':>10}{'fast (s)':>10}{'speed-up':>10}{'difference':>12}")
        for name, naive, fast, err in rows:
            t_naive, t_fast = best_time(naive), best_time(fast)
            print(f"  {name:<18}{t_naive:>10.4f}{t_fast:>10.4f}{t_naive / t_fast:>9.1f}x{err:>12.1e}")
            # float32 keeps about 7 digits and the two paths add in different orders
            assert err < tol
    """),
    md(r"""
    ## 6. Sandwich layers

    Networks repeat a few layer stacks, so `funkcije.layer_utils` packs them into one
    forward/backward pair each: `conv_relu`, `conv_relu_pool` (what `ThreeLayerConvNet` uses)
    and `conv_bn_relu`. Their backward passes go through the fast layers; we check them
    against numerical gradients too.
    """),
    code(r"""
    def check_sandwich(name, forward, backward, arrays, extra):
        # arrays: the differentiable inputs, in the forward's argument order
        out, cache = forward(*arrays, *extra)
        dout = rng.standard_normal(out.shape)
        grads = backward(dout, cache)
        numerical = []
        for i in range(len(arrays)):
            def f(a, i=i):
                args = list(arrays)
                args[i] = a
                return forward(*args, *extra)[0]
            numerical.append(eval_numerical_gradient_array(f, arrays[i], dout))
        errors = [rel_error(g, n) for g, n in zip(grads, numerical)]
        print(f"{name:<16}", "  ".join(f"{e:.1e}" for e in errors))
        return grads, numerical, errors

    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((3, 3, 3, 3))
    b = rng.standard_normal(3)
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    print("relative errors of dx, dw, db (and dgamma, dbeta)")
    _, _, errors = check_sandwich("conv_relu", conv_relu_forward, conv_relu_backward, (x, w, b), (conv_param,))
    assert max(errors) < 1e-7
    _, _, errors = check_sandwich("conv_relu_pool", conv_relu_pool_forward, conv_relu_pool_backward,
                                  (x, w, b), (conv_param, pool_param))
    assert max(errors) < 1e-7
    gamma, beta = 1 + 0.1 * rng.standard_normal(3), 0.1 * rng.standard_normal(3)
    grads, numerical, errors = check_sandwich("conv_bn_relu", conv_bn_relu_forward, conv_bn_relu_backward,
                                              (x, w, b, gamma, beta), (conv_param, {"mode": "train"}))
    """),
    md(r"""
    `conv_bn_relu` needs a closer look, for two reasons that have nothing to do with bugs:

    * **db is exactly zero.** Batch norm subtracts each channel's mean, so a per-channel bias
      added just before it cannot change the output. The analytic `db` is 0 (up to rounding) and
      the centred difference is pure rounding noise; the ratio of two noises means nothing, so we
      check that both are tiny instead.
    * **dx has a wide range.** Through batch norm every input of a channel influences every
      output of that channel; some entries of `dx` come out hundreds of times smaller than the
      largest. The centred difference carries an absolute rounding error of about
      1e-16 |out| / h, roughly 1e-10 here, which is large *relative to those small entries*, so the
      elementwise relative error of `dx` can sit near 1e-7 even though the gradient is right. The
      fair measure is the error relative to the gradient's scale, max |analytic - numerical| /
      max |analytic|.
    """),
    code(r"""
    dx, dw, db, dgamma, dbeta = grads
    print(f"db: analytic max |.| = {np.abs(db).max():.1e}, numerical max |.| = {np.abs(numerical[2]).max():.1e}")
    assert np.abs(db).max() < 1e-12 and np.abs(numerical[2]).max() < 1e-8
    for name, g, n in zip(("dx", "dw", "dgamma", "dbeta"), (dx, dw, dgamma, dbeta),
                          (numerical[0], numerical[1], numerical[3], numerical[4])):
        scaled = scaled_error(g, n)
        print(f"{name:<7} elementwise relative error {rel_error(g, n):.1e}   error relative to its scale {scaled:.1e}")
        assert scaled < 1e-8
    """),
    md(r"""
    ## 7. A three-layer convolutional network

    `ThreeLayerConvNet` is conv - relu - 2x2 max pool - affine - relu - affine - softmax.
    Before training a model, three sanity checks:

    * **initial loss**: with small random weights every class is equally likely, so the
      softmax loss is about log(10) = 2.303; adding L2 regularisation raises it;
    * **gradient check**: the analytic gradients of a tiny float64 model against numerical ones;
    * **overfitting**: a model that can learn should drive the training accuracy of 100 images
      close to 100 % (while the validation accuracy stays low).
    """),
    code(r"""
    model = ThreeLayerConvNet(seed=0)
    X = rng.standard_normal((50, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=50)
    loss, _ = model.loss(X, y)
    print(f"initial loss, no regularisation: {loss:.4f}   (log 10 = {np.log(10):.4f})")
    assert abs(loss - np.log(10)) < 0.01
    model.reg = 0.5
    loss_reg, _ = model.loss(X, y)
    print(f"initial loss, reg = 0.5:          {loss_reg:.4f}")
    assert loss_reg > loss
    """),
    md(r"""
    For the gradient check the model is tiny (3 filters of 3 x 3, 7 hidden units, two 16 x 16
    images) and float64. Two choices keep the check meaningful. The weights are drawn with
    scale 0.3 rather than the training scale 1e-3: with tiny weights, a step of h = 1e-5 in a
    weight moves some ReLU or max-pool inputs across their kinks, and the centred difference then
    measures a slope that exists on neither side. The biases get small random values so that no
    unit sits exactly on a kink. As for `conv_bn_relu`, we print the elementwise relative error
    and hold the error relative to each gradient's scale to 1e-8.
    """),
    code(r"""
    num_inputs, input_dim = 2, (3, 16, 16)
    X = rng.standard_normal((num_inputs, *input_dim))
    y = rng.integers(10, size=num_inputs)
    model = ThreeLayerConvNet(num_filters=3, filter_size=3, input_dim=input_dim, hidden_dim=7,
                              weight_scale=0.3, reg=0.1, dtype=np.float64, seed=1)
    for name in ("b1", "b2", "b3"):
        model.params[name] += 0.1 * rng.standard_normal(model.params[name].shape)
    loss, grads = model.loss(X, y)
    print(f"loss {loss:.3f}")
    for name in sorted(model.params):
        num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name], verbose=False)
        err = scaled_error(grads[name], num)
        print(f"{name}  elementwise relative error {rel_error(grads[name], num):.1e}   "
              f"error relative to its scale {err:.1e}")
        assert err < 1e-8
    """),
    code(r"""
    data = get_CIFAR10_data(num_training=49000 if not QUICK else 1000, num_validation=1000 if not QUICK else 500,
                            num_test=10000 if not QUICK else 1000)
    for k, v in data.items():
        print(f"{k:<10}{v.shape}")

    small_data = {"X_train": data["X_train"][:100], "y_train": data["y_train"][:100],
                  "X_val": data["X_val"], "y_val": data["y_val"]}
    model = ThreeLayerConvNet(weight_scale=1e-2, seed=0)
    solver = Solver(model, small_data, num_epochs=15, batch_size=50, update_rule="adam",
                    optim_config={"learning_rate": 1e-3}, verbose=False, seed=0)
    solver.train()
    vis_utils.plot_training(solver)
    """),
    code(r"""
    print(f"after 15 epochs on 100 images: train accuracy {solver.train_acc_history[-1]:.2f}, "
          f"validation accuracy {solver.val_acc_history[-1]:.2f}")
    # a model that cannot even memorise 100 images has a bug (or a bad learning rate)
    assert max(solver.train_acc_history) >= 0.9
    """),
    md(r"""
    The training loss falls towards zero and the training accuracy approaches 100 % while the
    validation accuracy stays low (around 20 %, chance being 10 %): the network memorises 100
    images, which is exactly what it should be able to do, and learns little from them that
    carries over to new images.

    ### Training for one epoch

    Now the real thing (the cs231n setting): 32 filters of 7 x 7, 500 hidden units,
    weight scale 1e-3, L2 strength 1e-3, Adam with learning rate 1e-3, minibatches of 50,
    one epoch over 49 000 CIFAR-10 images (1000 in quick mode). cs231n expects above 40 %
    validation accuracy after this epoch.
    """),
    code(r"""
    model = ThreeLayerConvNet(weight_scale=1e-3, hidden_dim=500, reg=1e-3, seed=0)
    solver = Solver(model, data, num_epochs=1, batch_size=50, update_rule="adam",
                    optim_config={"learning_rate": 1e-3}, print_every=50 if not QUICK else 5,
                    verbose=True, seed=0)
    t0 = time.perf_counter()
    solver.train()
    print(f"trained {solver.iteration} iterations in {time.perf_counter() - t0:.0f} s")

    # one epoch has a single end-of-epoch check, so plot the per-iteration loss, cs231n style
    loss = np.array(solver.loss_history)
    window = max(1, len(loss) // 50)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(np.arange(1, len(loss) + 1), loss, lw=0.7, alpha=0.4, label="minibatch loss")
    if window > 1:
        ax.plot(np.arange(window, len(loss) + 1), np.convolve(loss, np.ones(window) / window, mode="valid"),
                label=f"moving average over {window} iterations")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(f"one epoch: accuracy after the first iteration train {solver.train_acc_history[0]:.2f} / "
                 f"val {solver.val_acc_history[0]:.2f}, after the epoch train {solver.train_acc_history[-1]:.2f} / "
                 f"val {solver.val_acc_history[-1]:.2f}", fontsize=10)
    ax.legend()
    plt.show()
    """),
    code(r"""
    val = metrics.evaluate(model, data["X_val"], data["y_val"])
    test = metrics.evaluate(model, data["X_test"], data["y_test"])
    print(f"validation accuracy: {val.accuracy:.3f}   test accuracy: {test.accuracy:.3f} "
          f"({len(data['y_test'])} test images; chance is 0.100)")
    """),
    md(r"""
    ### First-layer filters

    Each of the 32 filters is a 7 x 7 RGB patch, rescaled to its own range for display. After
    a single epoch they are already structured: oriented light/dark edges and blobs or
    gradients of colour (random initial filters look like colour noise).
    """),
    code(r"""
    vis_utils.show_filters(model.params["W1"], title="ThreeLayerConvNet first-layer filters after one epoch")
    """),
    md(r"""
    ## 8. Normalisation for convolutional layers

    **Spatial batch normalisation** normalises each channel over the batch and both spatial
    axes (N, H, W), then scales and shifts it by a per-channel `gamma` and `beta`. In train mode
    it uses the batch's statistics and keeps running averages in `bn_param`; in test mode it
    uses those running averages. The gradient checks print both error measures of section 6.
    """),
    code(r"""
    def channel_stats(a):
        return a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))

    N, C, H, W = 2, 3, 4, 5
    x = 4 * rng.standard_normal((N, C, H, W)) + 10
    print("before:          means", *np.round(channel_stats(x)[0], 3), " stds", *np.round(channel_stats(x)[1], 3))
    out, _ = spatial_batchnorm_forward(x, np.ones(C), np.zeros(C), {"mode": "train"})
    means, stds = channel_stats(out)
    print("gamma=1, beta=0: means", *np.round(means, 3), " stds", *np.round(stds, 3))
    assert np.allclose(means, 0, atol=1e-12) and np.allclose(stds, 1, atol=1e-4)
    gamma, beta = np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0])
    out, _ = spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    means, stds = channel_stats(out)
    print("gamma=(3,4,5), beta=(6,7,8): means", *np.round(means, 3), " stds", *np.round(stds, 3))
    assert np.allclose(means, beta) and np.allclose(stds, gamma, atol=1e-3)
    """),
    code(r"""
    # Test mode: after enough training batches the running averages describe the data, so a
    # fresh batch from the same distribution comes out with means near 0 and stds near 1.
    N, C, H, W = 10, 4, 11, 12
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(C), np.zeros(C)
    for _ in range(50):
        spatial_batchnorm_forward(2.3 * rng.standard_normal((N, C, H, W)) + 13, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    out, _ = spatial_batchnorm_forward(2.3 * rng.standard_normal((N, C, H, W)) + 13, gamma, beta, bn_param)
    means, stds = channel_stats(out)
    print("test mode: means", *np.round(means, 3), " stds", *np.round(stds, 3))
    # 1320 values per channel give the test batch's mean a standard error of about 0.03, and the
    # running mean still carries 0.9 ** 50 of its initial zero (a bias of about +0.03 here)
    assert np.all(np.abs(means) < 0.15) and np.all(np.abs(stds - 1) < 0.15)
    """),
    code(r"""
    def check_norm_backward(name, forward, backward, x, gamma, beta, extra):
        out, cache = forward(x, gamma, beta, *extra)
        dout = rng.standard_normal(out.shape)
        dx, dgamma, dbeta = backward(dout, cache)
        fx = lambda a: forward(a, gamma, beta, *extra)[0]
        fg = lambda a: forward(x, a, beta, *extra)[0]
        fb = lambda a: forward(x, gamma, a, *extra)[0]
        worst = 0.0
        print(name)
        for gname, g, f, a in (("dx", dx, fx, x), ("dgamma", dgamma, fg, gamma), ("dbeta", dbeta, fb, beta)):
            num = eval_numerical_gradient_array(f, a, dout)
            print(f"  {gname:<7} elementwise relative error {rel_error(g, num):.1e}   "
                  f"error relative to its scale {scaled_error(g, num):.1e}")
            worst = max(worst, scaled_error(g, num))
        return worst

    N, C, H, W = 2, 3, 4, 5
    x = 5 * rng.standard_normal((N, C, H, W)) + 12
    assert check_norm_backward("spatial batch norm", spatial_batchnorm_forward, spatial_batchnorm_backward,
                               x, rng.standard_normal(C), rng.standard_normal(C), ({"mode": "train"},)) < 1e-8
    """),
    md(r"""
    **Group normalisation** (Wu and He, 2018) normalises each *sample* separately: its C channels
    are split into G groups and each group is normalised over its (C / G, H, W) values. It
    needs no batch statistics, so it behaves the same in training and testing and for any batch
    size. Here `gamma` and `beta` have shape (1, C, 1, 1).
    """),
    code(r"""
    N, C, H, W, G = 2, 6, 4, 5, 2
    x = 4 * rng.standard_normal((N, C, H, W)) + 10
    gamma, beta = np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1))
    out, _ = spatial_groupnorm_forward(x, gamma, beta, G, {"eps": 1e-5})
    groups = out.reshape(N, G, -1)
    print("per sample and group: means", np.round(groups.mean(axis=2), 3).tolist(),
          " stds", np.round(groups.std(axis=2), 3).tolist())
    assert np.allclose(groups.mean(axis=2), 0, atol=1e-12) and np.allclose(groups.std(axis=2), 1, atol=1e-4)

    x = 5 * rng.standard_normal((N, C, H, W)) + 12
    assert check_norm_backward("spatial group norm", spatial_groupnorm_forward, spatial_groupnorm_backward, x,
                               rng.standard_normal((1, C, 1, 1)), rng.standard_normal((1, C, 1, 1)),
                               (G, {"eps": 1e-5})) < 1e-8
    """),
    md(r"""
    Every check passed: the reference layers agree with hand-computed values, with SciPy and
    with numerical gradients; the fast layers agree with the reference; and the
    three-layer network trains. `TrainingAndEvaluation.ipynb` continues with regularisation,
    loss functions and a closer look at what a trained network gets wrong.
    """),
]


# ----------------------------------------------------------------------------- TrainingAndEvaluation

TRAIN_CELLS = [
    md(r"""
    # Training and evaluation

    This notebook trains convolutional networks on real data and looks at the results from
    several sides:

    1. **L2 regularisation** on Fashion-MNIST: the same network trained with L2 strength 0,
       1e-3, 1e-2 and 1e-1, its first-layer filters and accuracies side by side;
    2. **cross-entropy vs multiclass hinge loss**: the same network trained with each;
    3. **CIFAR-10**: training progress, the confusion matrix, per-class precision and recall,
       and the 20 test images the network gets most wrong, with its top-3 guesses.

    Data come from the folder named by `FUNKCIJE_DATA`. `FUNKCIJE_QUICK=1` shrinks data and
    epochs for CI; unset, the notebook runs the full settings listed in `notebooks/README.md`.
    """),
    code(r"""
    %matplotlib inline
    import os
    import time

    import numpy as np
    import matplotlib.pyplot as plt

    from funkcije import metrics, vis_utils
    from funkcije.classifiers import ThreeLayerConvNet
    from funkcije.data_utils import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, get_CIFAR10_data, get_fashion_mnist_data
    from funkcije.layer_utils import (
        affine_relu_backward, affine_relu_forward, conv_relu_pool_backward, conv_relu_pool_forward,
    )
    from funkcije.layers import affine_backward, affine_forward, softmax_loss, svm_loss
    from funkcije.solver import Solver

    plt.rcParams["image.interpolation"] = "nearest"
    """),
    code(QUICK_CELL),
    md(r"""
    ## 1. L2 regularisation on Fashion-MNIST

    Fashion-MNIST has 28 x 28 grayscale images of ten kinds of clothing. The network is a
    `ThreeLayerConvNet` with 16 filters of 7 x 7, 100 hidden units and L2 strength `reg`,
    which adds 0.5 * reg * sum(W ** 2) over all weight matrices to the loss. Every run starts
    from the same initial weights (seed 0) and sees the same minibatches; only `reg` differs.
    """),
    code(r"""
    FM = dict(num_training=20000, num_epochs=3) if not QUICK else dict(num_training=1000, num_epochs=1)
    fm = get_fashion_mnist_data(num_training=FM["num_training"], num_validation=1000,
                                num_test=10000 if not QUICK else 1000)
    for k in ("X_train", "X_val", "X_test"):
        print(f"{k:<8}{fm[k].shape}")

    # one example of every class, shown with the training mean added back
    fig, axes = plt.subplots(1, 10, figsize=(15, 2))
    for c, ax in enumerate(axes):
        i = int(np.flatnonzero(fm["y_train"] == c)[0])
        ax.imshow((fm["X_train"][i] + fm["mean_image"])[0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(FASHION_MNIST_CLASSES[c], fontsize=9)
        ax.axis("off")
    plt.show()
    """),
    code(r"""
    def fashion_net(reg, seed=0):
        return ThreeLayerConvNet(input_dim=(1, 28, 28), num_filters=16, filter_size=7, hidden_dim=100,
                                 weight_scale=5e-2, reg=reg, seed=seed)

    def train(model, data, num_epochs, batch_size=100, lr=1e-3):
        solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": lr},
                        batch_size=batch_size, num_epochs=num_epochs, num_train_samples=1000,
                        verbose=False, seed=0)
        solver.train()
        return solver

    def accuracies(model, data, num_train=5000):
        # the model the Solver kept (its best validation epoch) on training, validation and test images
        return {"train": metrics.evaluate(model, data["X_train"][:num_train], data["y_train"][:num_train]).accuracy,
                "val": metrics.evaluate(model, data["X_val"], data["y_val"]).accuracy,
                "test": metrics.evaluate(model, data["X_test"], data["y_test"]).accuracy}

    regs = [0.0, 1e-3, 1e-2, 1e-1]
    runs = {}
    for reg in regs:
        t0 = time.perf_counter()
        model = fashion_net(reg)
        solver = train(model, fm, FM["num_epochs"])
        runs[reg] = {"model": model, "solver": solver, "acc": accuracies(model, fm)}
        print(f"reg={reg:<6g}", "  ".join(f"{k} acc {v:.3f}" for k, v in runs[reg]["acc"].items()),
              f"({time.perf_counter() - t0:.0f} s)")
    """),
    code(r"""
    fig, axes = plt.subplots(2, len(regs), figsize=(4 * len(regs), 8.5),
                             gridspec_kw={"height_ratios": [1.6, 1]})
    for k, reg in enumerate(regs):
        run = runs[reg]
        W1 = run["model"].params["W1"]
        axes[0, k].imshow(vis_utils.filter_grid(W1), cmap="gray", vmin=0, vmax=255)
        axes[0, k].set_title(f"reg = {reg:g}\n|W1| = {np.linalg.norm(W1):.2f}, "
                             f"|W2| = {np.linalg.norm(run['model'].params['W2']):.2f}")
        axes[0, k].axis("off")
        bars = axes[1, k].bar(list(run["acc"]), list(run["acc"].values()), color=["tab:blue", "tab:orange", "tab:green"])
        axes[1, k].bar_label(bars, fmt="%.3f")
        axes[1, k].set_ylim(0, 1)
        axes[1, k].set_title("accuracy")
    fig.suptitle("Fashion-MNIST ThreeLayerConvNet: first-layer filters (each rescaled to its own range) "
                 "and accuracy for each L2 strength")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    What the full settings show (quick mode trains too briefly for any of this).

    **Accuracy.** No regularisation and 1e-3 do best (about 87 % on the test set), 1e-2 loses
    two or three points and 1e-1 more than ten. After three epochs on 20 000 images the
    unregularised network hardly overfits (its training accuracy is within a few points of
    its validation accuracy), so there is little for L2 to cure, and its pull towards zero
    only costs fit. At 1e-1 the network underfits: its training accuracy falls as low as its
    test accuracy.

    **Filters.** With `reg` 0 and 1e-3 the 7 x 7 filters still carry the speckle of their
    random initialisation on top of what they learned. At 1e-2 the speckle fades and smooth
    light/dark edges come through; at 1e-1 only smooth structure is left — vertical bars and
    centre-surround blobs — because every weight the data do not keep asking for decays
    towards zero.

    **Norms.** The penalty is paid mostly by `W2`, the 313 600 weights between the pooled
    feature maps and the hidden layer: its norm falls from about 33 to about 2, while `|W1|`
    hardly moves until 1e-1. A ReLU network can shift scale between layers (multiplying `W1`
    and `b1` by 2 and `W2` by 1/2 leaves the scores unchanged), so the cheapest way to pay an
    L2 penalty is to shrink the big layer.

    ## 2. Cross-entropy vs multiclass hinge loss

    For scores s of one sample with true class y:

    * **softmax cross-entropy** (`softmax_loss`): $-\log\left(e^{s_y} / \sum_j e^{s_j}\right)$ — it is never
      zero, so it keeps pushing the correct score up relative to the others;
    * **multiclass hinge loss** (`svm_loss`): $\sum_{j \ne y} \max(0,\; s_j - s_y + 1)$ — it is zero as soon
      as the correct score beats every other score by a margin of 1, and then stops caring.
    """),
    code(r"""
    scores = np.array([[5.0, 1.0, 2.0], [2.0, 1.9, 0.0], [1.0, 3.0, 0.0]])
    for s, (lc, _), (lh, _) in zip(scores, (softmax_loss(s[None], np.array([0])) for s in scores),
                                   (svm_loss(s[None], np.array([0])) for s in scores)):
        print(f"scores {s}, true class 0:  cross-entropy {lc:.3f}   hinge {lh:.3f}")
    """),
    md(r"""
    `ThreeLayerConvNet` is built with the softmax loss. To train the same architecture with the
    hinge loss we write its `loss` method once more from the sandwich layers, with the data loss
    as a parameter. (Its softmax version must reproduce `ThreeLayerConvNet` exactly — checked
    below.)
    """),
    code(r"""
    class ConvNetWithLoss(ThreeLayerConvNet):
        # ThreeLayerConvNet with a choice of data loss: data_loss(scores, y) -> (loss, dscores)

        def __init__(self, data_loss, **kwargs):
            super().__init__(**kwargs)
            self.data_loss = data_loss

        def loss(self, X, y=None):
            X = np.asarray(X, dtype=self.dtype)
            p = self.params
            h1, cache1 = conv_relu_pool_forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param)
            h2, cache2 = affine_relu_forward(h1, p["W2"], p["b2"])
            scores, cache3 = affine_forward(h2, p["W3"], p["b3"])
            if y is None:
                return scores
            loss, dscores = self.data_loss(scores, y)
            grads = {}
            dh2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)
            dh1, grads["W2"], grads["b2"] = affine_relu_backward(dh2, cache2)
            _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dh1, cache1)
            for name in ("W1", "W2", "W3"):
                loss += 0.5 * self.reg * float(np.sum(p[name].astype(np.float64) ** 2))
                grads[name] += self.reg * p[name]
            return loss, grads

    def fashion_net_with(data_loss, reg, seed=0):
        return ConvNetWithLoss(data_loss, input_dim=(1, 28, 28), num_filters=16, filter_size=7, hidden_dim=100,
                               weight_scale=5e-2, reg=reg, seed=seed)

    # same seed, same weights: the softmax version must give ThreeLayerConvNet's loss and gradients
    ref, mine = fashion_net(1e-3, seed=5), fashion_net_with(softmax_loss, 1e-3, seed=5)
    Xb, yb = fm["X_train"][:20], fm["y_train"][:20]
    (l_ref, g_ref), (l_mine, g_mine) = ref.loss(Xb, yb), mine.loss(Xb, yb)
    print(f"loss {l_ref:.6f} vs {l_mine:.6f}")
    assert np.isclose(l_ref, l_mine, rtol=1e-5)
    assert all(np.allclose(g_ref[k], g_mine[k], rtol=1e-4, atol=1e-7) for k in g_ref)
    """),
    code(r"""
    reg = 1e-3
    ce = runs[reg]  # the cross-entropy run with reg = 1e-3 from part 1
    hinge_model = fashion_net_with(svm_loss, reg)
    hinge_solver = train(hinge_model, fm, FM["num_epochs"])
    hinge_acc = accuracies(hinge_model, fm)

    def margins(model, X, y):
        # correct score minus the best other score: > 0 means correctly classified
        s = model.loss(X).astype(np.float64)
        correct = s[np.arange(len(y)), y]
        s[np.arange(len(y)), y] = -np.inf
        return correct - s.max(axis=1)

    m_ce = margins(ce["model"], fm["X_test"], fm["y_test"])
    m_hinge = margins(hinge_model, fm["X_test"], fm["y_test"])
    print(f"{'':<16}{'val acc':>9}{'test acc':>10}{'median margin':>15}")
    print(f"{'cross-entropy':<16}{ce['acc']['val']:>9.3f}{ce['acc']['test']:>10.3f}{np.median(m_ce):>15.2f}")
    print(f"{'hinge':<16}{hinge_acc['val']:>9.3f}{hinge_acc['test']:>10.3f}{np.median(m_hinge):>15.2f}")

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, s, color in (("cross-entropy", ce["solver"], "tab:blue"), ("hinge", hinge_solver, "tab:red")):
        axes[0].plot(range(len(s.val_acc_history)), s.val_acc_history, "o-", color=color, label=f"{name}, val")
        axes[0].plot(range(len(s.train_acc_history)), s.train_acc_history, "x--", color=color, alpha=0.6,
                     label=f"{name}, train (1000 images)")
    axes[0].set_xticks(range(FM["num_epochs"] + 1))
    axes[0].set_xlabel("epoch (0: after the first iteration)")
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("accuracy during training")
    axes[0].legend()
    bins = np.linspace(-8, 14, 45)
    axes[1].hist(np.clip(m_ce, -8, 14), bins=bins, alpha=0.6, color="tab:blue", label="cross-entropy")
    axes[1].hist(np.clip(m_hinge, -8, 14), bins=bins, alpha=0.6, color="tab:red", label="hinge")
    axes[1].axvline(0, color="k", lw=1)
    axes[1].axvline(1, color="k", lw=1, ls="--")
    axes[1].set_xlabel("margin on test images: correct score - best other score (clipped to [-8, 14])")
    axes[1].set_ylabel("images")
    axes[1].set_title("how far the right answer is ahead")
    axes[1].legend()
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    With the full settings both losses train the network to about the same accuracy: what
    matters for the prediction is only which score is largest. They differ in what they do
    beyond that. The hinge loss is satisfied once the correct score leads by 1, so its margins
    pile up just above the dashed line at 1 (median about 1.7); cross-entropy never stops
    pushing, so its margins spread out to 10 and beyond (median about 3), and its scores read as
    confident probabilities after a softmax.

    ## 3. CIFAR-10: train and evaluate

    The cs231n `ThreeLayerConvNet` (32 filters of 7 x 7, 500 hidden units, weight scale 1e-3,
    L2 strength 1e-3, Adam with learning rate 1e-3 decayed by 0.9 per epoch, minibatches of 50)
    trained on 49 000 CIFAR-10 images for 2 epochs (1000 images for 1 epoch in quick mode), then
    evaluated on the 10 000 test images (1000 in quick mode).
    """),
    code(r"""
    CIFAR = dict(num_training=49000, num_epochs=2, num_test=10000) if not QUICK else \
        dict(num_training=1000, num_epochs=1, num_test=1000)
    data = get_CIFAR10_data(num_training=CIFAR["num_training"], num_validation=1000, num_test=CIFAR["num_test"])
    model = ThreeLayerConvNet(weight_scale=1e-3, hidden_dim=500, reg=1e-3, seed=0)
    solver = Solver(model, data, num_epochs=CIFAR["num_epochs"], batch_size=50, update_rule="adam",
                    optim_config={"learning_rate": 1e-3}, lr_decay=0.9, print_every=100 if not QUICK else 5,
                    verbose=True, seed=0)
    t0 = time.perf_counter()
    solver.train()
    print(f"trained {solver.iteration} iterations in {time.perf_counter() - t0:.0f} s; "
          f"best validation accuracy {solver.best_val_acc:.3f} (the model keeps those params)")
    """),
    code(r"""
    vis_utils.plot_training(solver)
    """),
    md(r"""
    The training-progress figure: the per-iteration loss (faint) with its moving average and
    the mean loss of each epoch; the training (1000 sampled images) and validation accuracy
    after each epoch; and the learning rate, decayed by 0.9 per epoch.

    ### Confusion matrix

    Row *i*, column *j* counts test images of class *i* that the network called *j*. Normalised
    by row, the diagonal is each class's recall.
    """),
    code(r"""
    X_test, y_test = data["X_test"], data["y_test"]
    result = metrics.evaluate(model, X_test, y_test)
    cm = result.confusion
    print(f"test accuracy {result.accuracy:.3f}, test loss {result.loss:.3f} on {cm.sum()} images")
    # evaluate() and the Solver's own accuracy must agree on the same images
    assert cm.sum() == len(y_test)
    assert abs(result.accuracy - solver.check_accuracy(X_test, y_test)) < 1e-12
    vis_utils.plot_confusion_matrix(cm, CIFAR10_CLASSES, normalize="true")
    """),
    md(r"""
    ### Per-class precision and recall

    *Precision* of class c: of the images the network called c, the fraction that are c.
    *Recall* of class c: of the images of class c, the fraction the network found.
    """),
    code(r"""
    pr = metrics.precision_recall_f1(cm)
    print(metrics.classification_report(cm, CIFAR10_CLASSES))
    assert np.allclose(pr.recall, np.diag(cm) / cm.sum(axis=1))

    fig, ax = plt.subplots(figsize=(11, 4))
    pos = np.arange(len(CIFAR10_CLASSES))
    bars_p = ax.bar(pos - 0.2, pr.precision, width=0.4, label="precision")
    bars_r = ax.bar(pos + 0.2, pr.recall, width=0.4, label="recall")
    ax.bar_label(bars_p, fmt="%.2f", fontsize=8)
    ax.bar_label(bars_r, fmt="%.2f", fontsize=8)
    ax.axhline(result.accuracy, color="k", lw=1, ls="--", label=f"accuracy {result.accuracy:.3f}")
    ax.set_xticks(pos, CIFAR10_CLASSES)
    ax.set_ylim(0, 1)
    ax.set_title("CIFAR-10 test set: precision and recall per class")
    ax.legend(loc="upper left", ncols=3)
    plt.show()
    """),
    md(r"""
    ### The 20 worst-classified test images

    "Worst" means the highest cross-entropy: the lowest probability given to the true class.
    Each image is titled with its true class and the network's top 3 classes with their
    softmax probabilities (red: the top guess is wrong).
    """),
    code(r"""
    worst = metrics.worst_examples(model, X_test, y_test, k=20)
    # show the photographs, not the mean-subtracted network inputs
    images = np.clip(np.rint(X_test[worst.indices] + data["mean_image"]), 0, 255).astype(np.uint8)
    print("their losses:", np.round(worst.loss, 1))
    vis_utils.plot_worst_examples(images, worst.true, worst.top3_classes, worst.top3_probs,
                                  class_names=CIFAR10_CLASSES, ncols=5)
    """),
    md(r"""
    With the full settings (two epochs, about 52 % test accuracy; chance is 10 %) the largest
    off-diagonal entries of the confusion matrix are between related classes: cats and dogs
    taken for each other, airplanes called ships, trucks and automobiles mixed up, and the other
    animals (birds, frogs, horses, cats) often called deer, so that deer has the lowest
    precision. Ships, automobiles and trucks are recognised best, birds and cats worst.

    The 20 worst images get almost no probability for their true class (losses of 7 and more
    mean p < 0.001), and most are understandable mistakes for a network this small, which
    leans on colour and background. In the run we looked at they included trucks in front of
    blue sky called ship, a dog on a blue cushion called ship, a dog on mottled leaves called
    frog, a black airplane silhouette on a white sky called dog, and dark cars among greenery
    called deer.
    """),
]


NOTEBOOKS = {
    "ConvolutionalNetworks.ipynb": ("conv", CONV_CELLS),
    "TrainingAndEvaluation.ipynb": ("train", TRAIN_CELLS),
}


def build() -> dict:
    """{file name: nbformat NotebookNode} for every notebook, without outputs."""
    out = {}
    for name, (prefix, cells) in NOTEBOOKS.items():
        nb = new_notebook(
            metadata={
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            }
        )
        for i, cell in enumerate(cells):
            cell = nbformat.from_dict(cell)
            # fixed ids (nbformat draws random ones), so rebuilding gives the same file
            cell["id"] = f"{prefix}-{i:02d}"
            nb.cells.append(cell)
        nbformat.validate(nb)
        out[name] = nb
    return out


def render(nb) -> str:
    """The exact text nbformat.write produces for `nb`."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def main(argv=None) -> int:
    for name, nb in build().items():
        (HERE / name).write_text(render(nb), encoding="utf-8")
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
