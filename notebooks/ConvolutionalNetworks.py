# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Convolutional networks, layer by layer
#
# This notebook walks through the convolutional part of funkcije the way the cs231n
# assignment does: every layer is a pair of functions, `forward(x, ...) -> (out, cache)`
# and `backward(dout, cache) -> gradients`. We
#
# 1. run the reference (naive) convolution on inputs whose outputs we know by hand;
# 2. use a convolution as an image filter on two photographs;
# 3. check the naive backward passes against numerical gradients;
# 4. do the same for max pooling;
# 5. time the fast layers against the naive ones;
# 6. check the sandwich layers (conv-relu-pool and friends);
# 7. build, check and train a `ThreeLayerConvNet` on CIFAR-10 and look at its filters;
# 8. check spatial batch normalisation and group normalisation.
#
# The data come from the folder named by `FUNKCIJE_DATA` (see `funkcije.data_utils`).
# With `FUNKCIJE_QUICK=1` the training runs use a small slice of CIFAR-10 (this is what CI
# does); without it they use the full settings.

# %%
# %matplotlib inline
import time

import numpy as np
import matplotlib.pyplot as plt

from funkcije import config, fast_layers, metrics, vis_utils
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

# %%
# FUNKCIJE_QUICK=1 shrinks the data and the epochs so that CI runs this notebook in
# a minute or two; unset (or "0") gives the full settings quoted in notebooks/README.md.
QUICK = config.quick_mode()  # FUNKCIJE_QUICK: 1 quick, 0 / unset full; anything else is an error
print("settings:", "quick (FUNKCIJE_QUICK=1)" if QUICK else "full")

# %% [markdown]
# ## 1. Convolution: the naive forward pass
#
# `conv_forward_naive(x, w, b, conv_param)` takes `x` of shape (N, C, H, W) and `F` filters
# `w` of shape (F, C, HH, WW) and slides each filter over the zero-padded input. Like
# cs231n and PyTorch it computes a *cross-correlation* (the kernel is not flipped):
#
# $$\text{out}[n, f, i, j] = b_f + \sum_{c, k, l} x_{\text{pad}}[n, c, i s + k, j s + l]\; w[f, c, k, l]$$
#
# The output height is H' = 1 + (H + 2 pad - HH) // stride, and likewise the width W'.
#
# First, two inputs small enough to work out by hand.

# %%
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

# %% [markdown]
# Now a multi-channel case with stride 2 and padding 1 (the geometry of the cs231n check),
# compared with an independent implementation: SciPy's 2-D cross-correlation of each
# channel, summed over channels, then sampled every second position.

# %%
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

# %% [markdown]
# ## 2. Convolution as image processing
#
# A convolution with hand-made filters is an image filter. We take two photographs that ship
# with scikit-image (Chelsea the cat and a cup of coffee), crop them square, shrink them to
# 200 x 200 and apply three 3 x 3 filters to the batch of two:
#
# * **grayscale**: only the centre tap is non-zero, weighting R, G, B by 0.3, 0.6, 0.1;
# * **horizontal edges**: a Sobel kernel [[1, 2, 1], [0, 0, 0], [-1, -2, -1]] applied to that
#   same luminance, so it responds where brightness changes from top to bottom;
# * **vertical edges**: the transposed Sobel kernel, for changes from left to right.
#
# The edge filters get a bias of 128 so that "no edge" is mid-gray.

# %%
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


# %% [markdown]
# The grayscale column is the photo's brightness. The edge columns look embossed: mid-gray
# where the image is flat, light or dark where brightness changes, the sign telling which
# way it changes. The horizontal-edge filter picks out the cat's whiskers and eyelids and the
# upper and lower rims of the cup and saucer; the vertical-edge filter picks out the stripes
# on the cat's forehead, the sides of the cup and its handle. The bright line along the bottom
# edge of the horizontal-edge maps and along the right edge of the vertical-edge maps (and the
# darker ones along the top and left) is the zero padding: there the filter sees the image end
# in black.
#
# ## 3. Convolution: the naive backward pass
#
# `conv_backward_naive(dout, cache)` returns `dx`, `dw`, `db`. We compare them with centred
# differences of `sum(out * dout)`, in float64, on random data. The project's standard is a
# relative error below 1e-7; correct code typically gets 1e-8 or less.

# %%
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

# %% [markdown]
# ## 4. Max pooling
#
# `max_pool_forward_naive(x, pool_param)` keeps the largest value of each
# `pool_height x pool_width` window; the backward pass routes each window's gradient to
# the position of its maximum. Known values first: 2 x 2 windows with stride 2 on 1..16.

# %%
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


# %% [markdown]
# ## 5. Fast layers
#
# The naive layers loop over output positions in Python. `funkcije.fast_layers` has the same
# signatures and computes the convolution as im2col (compiled Cython kernels) followed by one
# matrix multiplication per chunk of the batch, and pooling in compiled loops. Below: the same
# answers, and what the fast path buys on the machine that ran this notebook, for cs231n's
# timing case and for the first layer of the network we train later. Timings depend on what
# else runs on the machine (the best of three runs is shown): the fast kernels split their
# work over all cores, and when other programs hold those cores the threads wait for each
# other, so on a busy machine the fast path can lose much of its advantage, or all of it.
# Run this cell on an idle machine for representative numbers.

# %%
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


# %% [markdown]
# ## 6. Sandwich layers
#
# Networks repeat a few layer stacks, so `funkcije.layer_utils` packs them into one
# forward/backward pair each: `conv_relu`, `conv_relu_pool` (what `ThreeLayerConvNet` uses)
# and `conv_bn_relu`. Their backward passes go through the fast layers; we check them
# against numerical gradients too.

# %%
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

# %% [markdown]
# `conv_bn_relu` needs a closer look, for two reasons that have nothing to do with bugs:
#
# * **db is exactly zero.** Batch norm subtracts each channel's mean, so a per-channel bias
#   added just before it cannot change the output. The analytic `db` is 0 (up to rounding) and
#   the centred difference is pure rounding noise; the ratio of two noises means nothing, so we
#   check that both are tiny instead.
# * **dx has a wide range.** Through batch norm every input of a channel influences every
#   output of that channel; some entries of `dx` come out hundreds of times smaller than the
#   largest. The centred difference carries an absolute rounding error of about
#   1e-16 |out| / h, roughly 1e-10 here, which is large *relative to those small entries*, so the
#   elementwise relative error of `dx` can sit near 1e-7 even though the gradient is right. The
#   fair measure is the error relative to the gradient's scale, max |analytic - numerical| /
#   max |analytic|.

# %%
dx, dw, db, dgamma, dbeta = grads
print(f"db: analytic max |.| = {np.abs(db).max():.1e}, numerical max |.| = {np.abs(numerical[2]).max():.1e}")
assert np.abs(db).max() < 1e-12 and np.abs(numerical[2]).max() < 1e-8
for name, g, n in zip(("dx", "dw", "dgamma", "dbeta"), (dx, dw, dgamma, dbeta),
                      (numerical[0], numerical[1], numerical[3], numerical[4])):
    scaled = scaled_error(g, n)
    print(f"{name:<7} elementwise relative error {rel_error(g, n):.1e}   error relative to its scale {scaled:.1e}")
    assert scaled < 1e-8

# %% [markdown]
# ## 7. A three-layer convolutional network
#
# `ThreeLayerConvNet` is conv - relu - 2x2 max pool - affine - relu - affine - softmax.
# Before training a model, three sanity checks:
#
# * **initial loss**: with small random weights every class is equally likely, so the
#   softmax loss is about log(10) = 2.303; adding L2 regularisation raises it;
# * **gradient check**: the analytic gradients of a tiny float64 model against numerical ones;
# * **overfitting**: a model that can learn should drive the training accuracy of 100 images
#   close to 100 % (while the validation accuracy stays low).

# %%
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

# %% [markdown]
# For the gradient check the model is tiny (3 filters of 3 x 3, 7 hidden units, two 16 x 16
# images) and float64. Two choices keep the check meaningful. The weights are drawn with
# scale 0.3 rather than the training scale 1e-3: with tiny weights, a step of h = 1e-5 in a
# weight moves some ReLU or max-pool inputs across their kinks, and the centred difference then
# measures a slope that exists on neither side. The biases get small random values so that no
# unit sits exactly on a kink. As for `conv_bn_relu`, we print the elementwise relative error
# and hold the error relative to each gradient's scale to 1e-8.

# %%
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

# %%
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

# %%
print(f"after 15 epochs on 100 images: train accuracy {solver.train_acc_history[-1]:.2f}, "
      f"validation accuracy {solver.val_acc_history[-1]:.2f}")
# a model that cannot even memorise 100 images has a bug (or a bad learning rate)
assert max(solver.train_acc_history) >= 0.9

# %% [markdown]
# The training loss falls towards zero and the training accuracy approaches 100 % while the
# validation accuracy stays low (around 20 %, chance being 10 %): the network memorises 100
# images, which is exactly what it should be able to do, and learns little from them that
# carries over to new images.
#
# ### Training for one epoch
#
# Now the real thing (the cs231n setting): 32 filters of 7 x 7, 500 hidden units,
# weight scale 1e-3, L2 strength 1e-3, Adam with learning rate 1e-3, minibatches of 50,
# one epoch over 49 000 CIFAR-10 images (1000 in quick mode). cs231n expects above 40 %
# validation accuracy after this epoch.

# %%
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

# %%
val = metrics.evaluate(model, data["X_val"], data["y_val"])
test = metrics.evaluate(model, data["X_test"], data["y_test"])
print(f"validation accuracy: {val.accuracy:.3f}   test accuracy: {test.accuracy:.3f} "
      f"({len(data['y_test'])} test images; chance is 0.100)")

# %% [markdown]
# ### First-layer filters
#
# Each of the 32 filters is a 7 x 7 RGB patch, rescaled to its own range for display. After
# a single epoch they are already structured: oriented light/dark edges and blobs or
# gradients of colour (random initial filters look like colour noise).

# %%
vis_utils.show_filters(model.params["W1"], title="ThreeLayerConvNet first-layer filters after one epoch")


# %% [markdown]
# ## 8. Normalisation for convolutional layers
#
# **Spatial batch normalisation** normalises each channel over the batch and both spatial
# axes (N, H, W), then scales and shifts it by a per-channel `gamma` and `beta`. In train mode
# it uses the batch's statistics and keeps running averages in `bn_param`; in test mode it
# uses those running averages. The gradient checks print both error measures of section 6.

# %%
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

# %%
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


# %%
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

# %% [markdown]
# **Group normalisation** (Wu and He, 2018) normalises each *sample* separately: its C channels
# are split into G groups and each group is normalised over its (C / G, H, W) values. It
# needs no batch statistics, so it behaves the same in training and testing and for any batch
# size. Here `gamma` and `beta` have shape (1, C, 1, 1).

# %%
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

# %% [markdown]
# Every check passed: the reference layers agree with hand-computed values, with SciPy and
# with numerical gradients; the fast layers agree with the reference; and the
# three-layer network trains. `TrainingAndEvaluation.ipynb` continues with regularisation,
# loss functions and a closer look at what a trained network gets wrong.
