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
# # FER deep learning, lab 2: convolutional networks
#
# The second lab of the Zagreb FER deep-learning course, done with funkcije: every layer is a
# pair of NumPy functions (`forward(x, ...) -> (out, cache)`, `backward(dout, cache) -> grads`),
# and the course's two networks are in the model zoo (`FERMnistNet`, `FERCifarNet`). We
#
# 1. check every layer's backward pass against numerical gradients (the gradient report),
#    and the whole MNIST network's gradient;
# 2. read the MNIST network's layer table: tensor sizes, parameters, receptive fields and the
#    activation memory a training step keeps for a batch of 50;
# 3. compare the initial loss with log(C);
# 4. train the MNIST network with SGD and a stepped learning rate, saving first-layer filter
#    snapshots every few hundred steps;
# 5. train it with L2 strengths 0, 1e-3, 1e-2 and 1e-1: a results table and the filters side by side;
# 6. build the same network in PyTorch with the same initial weights, feed it the same
#    minibatches and watch it reproduce funkcije's loss curve;
# 7. train the CIFAR-10 network with an exponentially decaying learning rate and look at the
#    per-epoch figure, the confusion matrix, per-class precision and recall, the filters before
#    and after training and the 20 worst-classified test images;
# 8. train it once more with the multiclass hinge loss instead of cross-entropy.
#
# Data come from the folder named by `FUNKCIJE_DATA` (see `funkcije.data_utils`). The lab uses
# MNIST; when that folder has no `mnist/` (the four idx files), Fashion-MNIST stands in: same
# image size, same ten classes' worth of labels, a harder task. `FUNKCIJE_QUICK=1` shrinks the
# data and the epochs (what CI runs); unset, the notebook runs the lab's settings, listed in
# `notebooks/README.md` with what they reach.

# %%
# %matplotlib inline
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import display

from funkcije import check_grads, config, data_utils, metrics, vis_utils
from funkcije.augment import Normalize
from funkcije.classifiers.zoo import FERCifarNet, FERMnistNet
from funkcije.data_utils import CIFAR10_CLASSES, get_CIFAR10_data, get_fashion_mnist_data
from funkcije.solver import Solver
from funkcije.summary import summary

plt.rcParams["image.interpolation"] = "nearest"

# %%
# FUNKCIJE_QUICK=1 shrinks the data and the epochs so that CI runs this notebook in a few
# minutes; unset (or "0") gives the lab's settings quoted in notebooks/README.md.
QUICK = config.quick_mode()  # FUNKCIJE_QUICK: 1 quick, 0 / unset full; anything else is an error
print("settings:", "quick (FUNKCIJE_QUICK=1)" if QUICK else "full")

# Files this notebook writes (filter snapshots) go to a temporary folder, never into the
# repository; set FUNKCIJE_RUNS to keep them somewhere else.
RUNS = Path(os.environ.get("FUNKCIJE_RUNS") or tempfile.mkdtemp(prefix="funkcije-ferlab2-"))
RUNS.mkdir(parents=True, exist_ok=True)
print("files go to", RUNS)

# MNIST when the data folder has it, else Fashion-MNIST in its place
MNIST_NAME = "mnist" if (data_utils.data_root() / "mnist").is_dir() else "fashion-mnist"
MNIST_CLASSES = data_utils.MNIST_CLASSES if MNIST_NAME == "mnist" else data_utils.FASHION_MNIST_CLASSES
print("the MNIST part uses", MNIST_NAME)

# %% [markdown]
# ## 1. The gradient report
#
# Every reference layer's backward pass against centred differences, in float64:
# $\frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h}$, for a random
# upstream gradient. The relative error is the largest over the elements of
# $|a - n| / \max(10^{-8}, |a| + |n|)$; below about 1e-7 means the backward pass is right. Inputs are
# chosen so that no step crosses a kink (ReLU inputs away from 0, max-pool windows without ties),
# and convolution and pooling use non-trivial geometries (strides, padding, dilation, groups,
# overlapping windows). This is `python -m funkcije.check_grads`.

# %%
t0 = time.perf_counter()
rows = check_grads.run_checks(seed=0)
print(check_grads.format_table(rows))
print(f"\n{len(rows)} gradients in {time.perf_counter() - t0:.1f} s")
assert all(r.ok for r in rows), [r for r in rows if not r.ok]

# %% [markdown]
# The layers are right one by one; now the whole MNIST network, in float64 through the
# reference layers, with L2 regularisation on, on a few images. Checking all 821 706
# parameters numerically would take two forward passes each, so we check a few random
# coordinates of every parameter array (cs231n's `grad_check_sparse`).

# %%
from funkcije.gradient_check import grad_check_sparse

rng = np.random.default_rng(0)
Xg = rng.standard_normal((4, 1, 28, 28))
yg = rng.integers(0, 10, size=4)
with config.using(layers="reference"):
    net64 = FERMnistNet(dtype=np.float64, reg=1e-3, seed=0)
    loss, grads = net64.loss(Xg, yg)
    worst = 0.0
    for name, p in net64.params.items():
        errs = grad_check_sparse(lambda _: net64.loss(Xg, yg)[0], p, grads[name], num_checks=4,
                                 seed=1, verbose=False)
        worst = max(worst, max(errs))
        print(f"{name:<8} {str(p.shape):<16} largest relative error {max(errs):.1e}")
print(f"loss {loss:.4f}; largest relative error over all checked coordinates: {worst:.1e}")
assert worst < 1e-6

# %% [markdown]
# ## 2. The MNIST network, layer by layer
#
# conv 16 5x5 (pad 2) - max-pool 2 - ReLU - conv 32 5x5 (pad 2) - max-pool 2 - ReLU - flatten -
# affine 512 - ReLU - affine 10. `summary` runs one training-mode forward pass on a batch of 50
# and reports, per layer, the output tensor, the parameters, the receptive field (how many input
# pixels one output position sees) and its jump (how far apart, in input pixels, neighbouring
# output positions are), and the memory the layer's cache keeps for the backward pass.

# %%
mnist_net = FERMnistNet(seed=0)
table = summary(mnist_net, batch_size=50)
print(table)

# %%
# the numbers the lab asks for, worked out by hand
assert table.total_params == (16 * 1 * 5 * 5 + 16) + (32 * 16 * 5 * 5 + 32) + (32 * 7 * 7 * 512 + 512) + (512 * 10 + 10)
by_name = {r.name: r for r in table.rows}
assert by_name["conv1"].output_shape == (50, 16, 28, 28) and by_name["pool2"].output_shape == (50, 32, 7, 7)
# conv1 sees 5x5 pixels; a 2x2 pool of them 6x6; conv2's 5x5 window on a map of stride 2
# sees 6 + 4 * 2 = 14; the second pool 14 + 1 * 2 = 16 pixels, 4 apart
assert [by_name[n].receptive_field[0] for n in ("conv1", "pool1", "conv2", "pool2")] == [5, 6, 14, 16]
assert by_name["pool2"].jump == (4, 4)
print("parameters per layer:", {r.name: r.params for r in table.rows if r.params})
print(f"the fully connected layer fc1 holds {by_name['fc1'].params / table.total_params:.0%} of the parameters")
first_block = sum(by_name[n].activation_bytes for n in ("conv1", "pool1", "relu1"))
print(f"the first conv block keeps {first_block / table.activation_bytes:.0%} of the activation memory")
assert by_name["fc1"].params > 0.95 * table.total_params and first_block > 0.5 * table.activation_bytes

# %% [markdown]
# Nearly all parameters (98 %) sit in `fc1`, the 1568 x 512 matrix after the last pooling,
# while more than half of the activation memory belongs to the first convolution block, where
# the maps are still 28 x 28. The last pooling layer's units see 16 x 16 pixels of the 28 x 28 image: the
# fully connected layers are what combine the whole image.
#
# ## 3. The initial loss
#
# Before training, a network that knows nothing should spread its probability evenly over
# the C classes, so the cross-entropy is about $-\log(1/C) = \log C = 2.303$ for C = 10. A much
# larger initial loss means the initial scores are far from uniform (weights too large, inputs
# not normalised) and the first steps are spent undoing that.

# %%
n_init = 500 if QUICK else 5000
mn_probe = get_fashion_mnist_data(num_training=n_init, num_validation=1, num_test=1, name=MNIST_NAME)
losses0 = []
for seed in range(5):
    net = FERMnistNet(seed=seed)
    losses0.append(float(net.loss(mn_probe["X_train"], mn_probe["y_train"])[0]))
print("initial loss, 5 seeds:", np.round(losses0, 3), f"mean {np.mean(losses0):.3f}  log(10) = {math.log(10):.3f}")
assert abs(np.mean(losses0) - math.log(10)) < 0.5

# With the L2 term on, the loss starts higher by 0.5 * reg * sum(W^2)
net = FERMnistNet(seed=0, reg=1e-3)
l2 = 0.5 * 1e-3 * sum(float(np.sum(net.params[k].astype(np.float64) ** 2)) for k in net.params if k.endswith(".W"))
print(f"with reg=1e-3: {float(net.loss(mn_probe['X_train'], mn_probe['y_train'])[0]):.3f} "
      f"= data loss {losses0[0]:.3f} + L2 term {l2:.3f}")

# The initial scores are not zero (He initialisation keeps the activations' scale through the
# layers), hence the loss a little above log(10). Shrink the last layer and the scores, the
# softmax and the loss become uniform:
net = FERMnistNet(seed=0)
net.params["fc2.W"] *= 0.01
l_small = float(net.loss(mn_probe["X_train"], mn_probe["y_train"])[0])
print(f"last layer's weights x 0.01: initial loss {l_small:.4f}")
assert abs(l_small - math.log(10)) < 0.01
del mn_probe

# %% [markdown]
# ## 4. Training the MNIST network
#
# The lab's setting: 55 000 training images, 5 000 for validation, the 10 000 test images;
# minibatches of 50; plain SGD with learning rate 0.1, divided by 10 every two epochs, for 8
# epochs; L2 strength 1e-3. A `FilterSnapshots` callback saves the first layer's filters every
# 200 steps (named as in the lab, `conv1_epoch_EE_step_SSSSSS.png`), and `WeightHistograms`
# records every parameter's distribution at the end of each epoch.

# %%
MN = dict(num_training=55000, num_validation=5000, num_test=10000, num_epochs=8, step_size=2, every=200)
if QUICK:
    MN = dict(num_training=2000, num_validation=500, num_test=1000, num_epochs=2, step_size=1, every=10)
mn = get_fashion_mnist_data(num_training=MN["num_training"], num_validation=MN["num_validation"],
                            num_test=MN["num_test"], name=MNIST_NAME)
for k in ("X_train", "X_val", "X_test"):
    print(f"{k:<8}{mn[k].shape}")

fig, axes = plt.subplots(1, 10, figsize=(15, 2))
for c, ax in enumerate(axes):
    i = int(np.flatnonzero(mn["y_train"] == c)[0])
    ax.imshow((mn["X_train"][i] + mn["mean_image"])[0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(MNIST_CLASSES[c], fontsize=9)
    ax.axis("off")
plt.show()

# %%
from funkcije.callbacks import FilterSnapshots, WeightHistograms


def train_mnist(reg, callbacks=(), seed=0):
    model = FERMnistNet(reg=reg, seed=seed)
    solver = Solver(model, mn, update_rule="sgd", optim_config={"learning_rate": 0.1},
                    lr_schedule={"type": "step", "step_size": MN["step_size"], "gamma": 0.1},
                    batch_size=50, num_epochs=MN["num_epochs"], num_train_samples=1000,
                    callbacks=list(callbacks), verbose=False, seed=seed)
    t0 = time.perf_counter()
    solver.train()
    solver.seconds = time.perf_counter() - t0
    return model, solver


snapshots = FilterSnapshots(RUNS / "mnist_filters", every=MN["every"], layer="conv1.W")
histograms = WeightHistograms(RUNS / "mnist_weights.png", params=["*.W"])  # the weights; biases start at 0
model, solver = train_mnist(1e-3, callbacks=[snapshots, histograms])
runs = {1e-3: (model, solver)}
print(f"{solver.iteration} iterations in {solver.seconds:.0f} s; best validation accuracy "
      f"{solver.best_val_acc:.3f} after epoch {solver.best_epoch}")
for h in solver.history:
    print(f"epoch {h['epoch']}: lr {h['lr']:.0e}  loss {h['loss']:.3f}  train acc {h['train_acc']:.3f}  "
          f"val acc {h['val_acc']:.3f}")
assert solver.best_val_acc > (0.6 if QUICK else 0.88)

# %% [markdown]
# The training figure: the loss of every minibatch (faint) with its moving average, the
# accuracy on 1000 training images and on the validation images after the first step and after
# every epoch, and the learning rate. Note that the training loss includes the L2 term
# ($\frac{\lambda}{2}\sum W^2$, about 0.57 at the start), the validation loss does not: the gap
# between the two curves is mostly that term, not overfitting.

# %%
vis_utils.plot_training(solver)

# %% [markdown]
# The filter snapshots: one PNG per snapshot in the run folder, and all of them in one grid,
# time running down the rows.

# %%
files = [Path(f) for f in snapshots.files]
print(len(files), "snapshots in", files[0].parent, "e.g.", ", ".join(p.name for p in files[:3]), "...")
assert files and all(p.is_file() for p in files)
assert files[0].name == "conv1_epoch_01_step_000000.png" and files[1].name == f"conv1_epoch_01_step_{MN['every']:06d}.png"
display(snapshots.grid())

# how far the filters have moved from where they started, snapshot by snapshot
W0 = snapshots.snapshots[0]
moved = [float(np.linalg.norm(W - W0) / np.linalg.norm(W0)) for W in snapshots.snapshots]
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(snapshots.steps, moved, "o-", ms=3)
for epoch in range(MN["step_size"], MN["num_epochs"], MN["step_size"]):
    ax.axvline(epoch * solver.iterations_per_epoch, color="tab:gray", lw=1, ls=":")  # the rate drops here
ax.set_xlabel("step (dotted: the learning rate drops tenfold)")
ax.set_ylabel("|W - W0| / |W0|")
ax.set_title("conv1: distance from the initial filters")
ax.grid(True, alpha=0.3)
plt.show()
print(f"after training the filters are {moved[-1]:.0%} of their initial norm away from where they started")

# %% [markdown]
# The weights' histograms at the end of every epoch (epoch 0: the initial weights).

# %%
display(histograms.figure())

# %% [markdown]
# Things to look for in the snapshots: when do the filters stop looking like the noise they
# started as, and what do they turn into (edges? blobs? strokes)? How much do they still change
# after the learning rate drops? The histograms tell which layers move at all: 400 first-layer
# weights carry a lot of each step's gradient, while the 800 000 weights of `fc1` each move
# very little.
#
# ## 5. L2 regularisation: 0, 1e-3, 1e-2, 1e-1
#
# The same network from the same initial weights (seed 0) and the same minibatches; only the L2
# strength `reg` differs (the loss gets $\frac{\lambda}{2}\sum W^2$ over the convolution and affine
# weights). The model each run returns is the one with the best validation accuracy.

# %%
REGS = [0.0, 1e-3, 1e-2, 1e-1]
for reg in REGS:
    if reg not in runs:
        runs[reg] = train_mnist(reg)
    print(f"reg {reg:g}: {runs[reg][1].seconds:.0f} s")

results = {}
for reg in REGS:
    model = runs[reg][0]
    results[reg] = {split: metrics.evaluate(model, mn[f"X_{split}"], mn[f"y_{split}"], batch_size=500)
                    for split in ("train", "val", "test")}

header = f"{'L2':>6} | " + " | ".join(f"{s + ' acc':>9} {s + ' loss':>10}" for s in ("train", "val", "test"))
print(header + f" | {'|conv1.W|':>9} {'|fc1.W|':>8}")
print("-" * len(header) + "-" * 21)
for reg in REGS:
    r, p = results[reg], runs[reg][0].params
    print(f"{reg:>6g} | " + " | ".join(f"{r[s].accuracy:>9.4f} {r[s].loss:>10.4f}" for s in ("train", "val", "test"))
          + f" | {np.linalg.norm(p['conv1.W']):>9.2f} {np.linalg.norm(p['fc1.W']):>8.2f}")
# stronger L2 keeps the weights smaller
norms = [np.linalg.norm(runs[reg][0].params["fc1.W"]) for reg in REGS]
assert norms[-1] < norms[0]

# %%
fig, axes = plt.subplots(1, len(REGS), figsize=(4 * len(REGS), 4.6))
for ax, reg in zip(axes, REGS):
    W1 = runs[reg][0].params["conv1.W"]
    ax.imshow(vis_utils.filter_grid(W1), cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"L2 = {reg:g}\ntest acc {results[reg]['test'].accuracy:.3f}, |conv1.W| = {np.linalg.norm(W1):.2f}")
    ax.axis("off")
fig.suptitle("first-layer filters after training (each filter rescaled to its own range)")
fig.tight_layout(rect=(0, 0, 1, 0.92))
plt.show()

# %% [markdown]
# Reading the table: a regulariser is worth its strength when it narrows the gap between
# training and test accuracy without lowering the test accuracy. When the training accuracy
# itself falls to the test accuracy's level, the network underfits: the penalty is too strong.
# The norms show who pays: a ReLU network can move scale between layers, so the penalty mostly
# shrinks the 803 000 weights of `fc1`, and the 400 weights of `conv1` change much less.
#
# In our run at the full settings (Fashion-MNIST), test accuracy was 90.5 % without L2,
# 90.2 % at 1e-3, 87.6 % at 1e-2 and 74.7 % at 1e-1, where the training accuracy (75.2 %) had
# fallen to the test accuracy's level: underfitting. `|fc1.W|` fell from 32.7 to 1.5, `|conv1.W|`
# from 6.6 to 1.3, and the filters went from speckled noise (0 and 1e-3) to smooth bars and
# blobs (1e-1).
#
# ## 6. The same network in PyTorch
#
# `funkcije.torch_twin.to_torch` builds the PyTorch network of a funkcije model, with its
# weights copied. If both start from the same weights, see the same minibatches in the same
# order and take the same SGD steps (with the L2 term as PyTorch's `weight_decay` on the weights
# only), they follow the same trajectory, and their loss curves coincide. We spy on the
# funkcije model's `loss` to record the Solver's minibatches and replay them in PyTorch. Both run
# in float64 so that the two curves agree to many digits; in float32 they would agree to about
# five at first, and then drift apart slowly, as two different float32 summation orders do.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed (pip install torch): this part is skipped")

# %%
if torch is not None:
    from funkcije.torch_twin import to_torch

    TW = dict(num_training=5000, num_epochs=2) if not QUICK else dict(num_training=1000, num_epochs=2)
    reg, lr0 = 1e-3, 0.1
    twin_data = {k: v.astype(np.float64) if k.startswith("X") else v for k, v in mn.items() if k != "mean_image"}
    twin_data["X_train"], twin_data["y_train"] = twin_data["X_train"][:TW["num_training"]], twin_data["y_train"][:TW["num_training"]]

    f_model = FERMnistNet(reg=reg, dtype=np.float64, seed=1)
    t_model = to_torch(f_model)  # the same initial weights, before funkcije trains its copy

    batches = []
    funkcije_loss = f_model.loss
    def recording_loss(X, y=None):
        if y is not None:  # a training step (without labels: an accuracy check)
            batches.append((X.copy(), y.copy()))
        return funkcije_loss(X, y)
    f_model.loss = recording_loss

    f_solver = Solver(f_model, twin_data, update_rule="sgd", optim_config={"learning_rate": lr0},
                      lr_schedule={"type": "step", "step_size": 1, "gamma": 0.1}, batch_size=50,
                      num_epochs=TW["num_epochs"], num_train_samples=500, num_val_samples=500, verbose=False, seed=0)
    f_solver.train()
    f_model.loss = funkcije_loss
    assert len(batches) == len(f_solver.loss_history) == len(f_solver.lr_history)

    # PyTorch: SGD with weight decay on the weights (funkcije's L2 term), none on the biases
    weights = [p for n, p in t_model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in t_model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": reg}, {"params": biases, "weight_decay": 0.0}], lr=lr0)
    t_losses = []
    for (X, y), lr in zip(batches, f_solver.lr_history):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        data_loss = torch.nn.functional.cross_entropy(t_model(torch.from_numpy(X)), torch.from_numpy(y))
        # the loss funkcije reports includes the L2 term; the gradient of this term is what weight_decay adds
        l2_term = 0.5 * reg * sum((w ** 2).sum() for w in weights)
        t_losses.append(float((data_loss + l2_term).detach()))
        data_loss.backward()
        opt.step()

    f_losses = np.array(f_solver.loss_history)
    t_losses = np.array(t_losses)
    diff = np.abs(f_losses - t_losses) / np.abs(t_losses)
    print(f"{len(t_losses)} steps; largest relative difference between the two loss curves: {diff.max():.1e}")
    assert diff.max() < 1e-8

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    axes[0].plot(f_losses, lw=2.5, color="tab:blue", label="funkcije")
    axes[0].plot(t_losses, lw=1, ls="--", color="tab:red", label="PyTorch, same weights and minibatches")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("training loss (with L2)")
    axes[0].legend()
    axes[0].set_title("two implementations, one trajectory")
    axes[1].semilogy(np.maximum(diff, 1e-17), "o", ms=3, color="k")
    axes[1].axhline(np.finfo(np.float64).eps, color="tab:gray", lw=1, ls=":", label="float64 epsilon")
    axes[1].set_ylim(5e-18, 1e-12)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("|funkcije - PyTorch| / |PyTorch|")
    axes[1].set_title("relative difference of the losses (0 drawn at 1e-17)")
    axes[1].legend()
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 7. CIFAR-10
#
# The lab's CIFAR network: conv 16 5x5 - ReLU - max-pool 3 stride 2 - conv 32 5x5 - ReLU -
# max-pool 3 stride 2 - affine 256 - ReLU - affine 128 - ReLU - affine 10. Inputs are normalised
# per channel with the training set's mean and standard deviation. SGD with momentum 0.9,
# learning rate 0.01 decayed by 0.9 after every epoch (exponential decay), L2 strength 1e-3,
# minibatches of 50, 16 epochs on 45 000 images with 5 000 for validation. An `EpochEvaluation`
# callback evaluates the network on training and validation images after every epoch (loss,
# accuracy, per-class precision and recall: the lab's `evaluate`).

# %%
CF = dict(num_training=45000, num_validation=5000, num_test=10000, num_epochs=16, num_eval_train=10000)
if QUICK:
    CF = dict(num_training=3000, num_validation=500, num_test=1000, num_epochs=3, num_eval_train=1000)
cifar = get_CIFAR10_data(num_training=CF["num_training"], num_validation=CF["num_validation"],
                         num_test=CF["num_test"], subtract_mean=False)
norm = Normalize.fit(cifar["X_train"])
print("per-channel mean", np.round(norm.mean, 1), "std", np.round(norm.std, 1))

# why normalise: the initial loss on raw pixels (0..255) and on normalised ones
probe = FERCifarNet(seed=0)
raw_loss = float(probe.loss(cifar["X_train"][:500], cifar["y_train"][:500])[0])
for split in ("X_train", "X_val", "X_test"):
    cifar[split] = norm(cifar[split])
norm_loss = float(probe.loss(cifar["X_train"][:500], cifar["y_train"][:500])[0])
print(f"initial loss: raw pixels {raw_loss:.1f}, normalised {norm_loss:.2f} (log 10 = {math.log(10):.2f})")
assert norm_loss < raw_loss / 10


def photos(X):
    # normalised network inputs back to displayable uint8 pixels
    return np.clip(np.rint(X * norm.std[:, None, None] + norm.mean[:, None, None]), 0, 255).astype(np.uint8)

# %%
from funkcije.callbacks import EpochEvaluation


def train_cifar(loss="softmax", lr=0.01, seed=0):
    model = FERCifarNet(reg=1e-3, loss=loss, seed=seed)
    init_W = model.params["conv1.W"].copy()
    n_eval = CF["num_eval_train"]
    evaluation = EpochEvaluation(cifar["X_train"][:n_eval], cifar["y_train"][:n_eval], cifar["X_val"], cifar["y_val"])
    solver = Solver(model, cifar, update_rule="sgd_momentum", optim_config={"learning_rate": lr, "momentum": 0.9},
                    lr_schedule={"type": "exponential", "gamma": 0.9}, batch_size=50, num_epochs=CF["num_epochs"],
                    num_train_samples=1000, callbacks=[evaluation], verbose=False, seed=seed)
    t0 = time.perf_counter()
    solver.train()
    solver.seconds = time.perf_counter() - t0
    return model, solver, init_W


cifar_model, cifar_solver, cifar_W0 = train_cifar()
print(f"{cifar_solver.iteration} iterations in {cifar_solver.seconds:.0f} s; best validation accuracy "
      f"{cifar_solver.best_val_acc:.3f} after epoch {cifar_solver.best_epoch}")
assert cifar_solver.best_val_acc > (0.25 if QUICK else 0.65)

# %% [markdown]
# ### The per-epoch figure
#
# Loss and accuracy on the training and validation images after every epoch, and the learning
# rate, which falls by 10 % an epoch (to 0.01 * 0.9^15 = 0.002 in the last epoch).

# %%
ev = [h["eval"] for h in cifar_solver.history]
epochs = [h["epoch"] for h in cifar_solver.history]
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
axes[0].plot(epochs, [e["train"]["loss"] for e in ev], "o-", label="train")
axes[0].plot(epochs, [e["val"]["loss"] for e in ev], "s-", label="validation")
axes[0].set_title("cross-entropy loss")
axes[1].plot(epochs, [e["train"]["accuracy"] for e in ev], "o-", label="train")
axes[1].plot(epochs, [e["val"]["accuracy"] for e in ev], "s-", label="validation")
axes[1].set_title("accuracy")
axes[2].plot(epochs, [h["lr"] for h in cifar_solver.history], "o-", color="tab:green")
axes[2].set_title("learning rate")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.set_xticks(epochs)
    ax.grid(True, alpha=0.3)
axes[0].legend()
axes[1].legend()
fig.tight_layout()
plt.show()
lrs = [h["lr"] for h in cifar_solver.history]
assert np.allclose(lrs, 0.01 * 0.9 ** np.arange(len(lrs)))

# %% [markdown]
# The losses here are the data loss alone (no L2 term) on 10 000 training images and on the
# validation set, evaluated after each epoch. Where the validation loss stops falling while the
# training loss keeps going, the network has started to learn its training images rather than
# CIFAR-10; the shrinking learning rate and the L2 term slow that down. In our full run the
# validation loss was lowest around epochs 7-11 and rose again to 1.0 by epoch 16, while the
# training accuracy climbed to 94 % and the validation accuracy stayed near 72-73 % (best 73.0 %
# after epoch 12; 70.9 % on the 10 000 test images).
#
# ### Confusion matrix, precision and recall on the test set

# %%
test = metrics.evaluate(cifar_model, cifar["X_test"], cifar["y_test"], batch_size=500)
print(f"test accuracy {test.accuracy:.4f}, loss {test.loss:.4f} on {test.confusion.sum()} images")
display(vis_utils.plot_confusion_matrix(test.confusion, CIFAR10_CLASSES, normalize="true"))
pr = metrics.precision_recall_f1(test.confusion)
print(metrics.classification_report(test.confusion, CIFAR10_CLASSES))
assert np.allclose(pr.recall, np.diag(test.confusion) / test.confusion.sum(axis=1))

fig, ax = plt.subplots(figsize=(11, 4))
pos = np.arange(10)
ax.bar_label(ax.bar(pos - 0.2, pr.precision, width=0.4, label="precision"), fmt="%.2f", fontsize=8)
ax.bar_label(ax.bar(pos + 0.2, pr.recall, width=0.4, label="recall"), fmt="%.2f", fontsize=8)
ax.axhline(test.accuracy, color="k", lw=1, ls="--", label=f"accuracy {test.accuracy:.3f}")
ax.set_xticks(pos, CIFAR10_CLASSES)
ax.set_ylim(0, 1.05)
ax.legend(loc="lower right", ncols=3)
ax.set_title("CIFAR-10 test set: precision and recall per class")
plt.show()

# %% [markdown]
# ### The first layer's filters, at random initialisation and after training

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
for ax, W, title in ((axes[0], cifar_W0, "random initialisation"),
                     (axes[1], cifar_model.params["conv1.W"], f"after {cifar_solver.epoch} epochs")):
    ax.imshow(vis_utils.filter_grid(W, scale=10))
    ax.set_title(f"conv1: 16 filters 3 x 5 x 5, {title}")
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The 20 worst-classified test images
#
# "Worst" is the highest cross-entropy, the lowest probability given to the true class. Each
# image shows its true class and the network's three most probable classes (red: the top guess
# is wrong).

# %%
worst = metrics.worst_examples(cifar_model, cifar["X_test"], cifar["y_test"], k=20, batch_size=500)
print("their losses:", np.round(worst.loss, 1))
assert np.all(np.diff(worst.loss) <= 0) and np.all(worst.top3_classes[:, 0] != worst.true)
vis_utils.plot_worst_examples(photos(cifar["X_test"][worst.indices]), worst.true, worst.top3_classes,
                              worst.top3_probs, class_names=CIFAR10_CLASSES, ncols=5)

# %% [markdown]
# ## 8. Cross-entropy against the multiclass hinge loss
#
# The same network with the multiclass hinge (SVM) loss $\sum_{j \ne y} \max(0, s_j - s_y + 1)$
# in place of the softmax cross-entropy $-\log(e^{s_y} / \sum_j e^{s_j})$: `FERCifarNet(loss="hinge")`.
# The hinge loss is zero once the true class's score leads every other by 1, and then stops
# pushing; cross-entropy never does.
#
# One setting cannot stay the same: the learning rate. Cross-entropy's gradient with respect to
# one image's scores is $p - \text{onehot}(y)$, whose entries sum to 0 and whose true-class entry
# is at most 1 in size; the hinge loss's gradient is 1 for every class inside the margin and minus
# their count, up to 9, for the true class. At the start, when most classes are inside the
# margin, the hinge gradient is several times larger, and with cross-entropy's rate of 0.01 SGD
# overshoots and the network stalls near chance (we tried: below 20 % after four epochs on
# 10 000 images). So the hinge run gets a rate ten times smaller, 0.001.

# %%
from funkcije.layers import softmax_loss, svm_loss

probe = FERCifarNet(seed=0)
scores = probe.loss(cifar["X_train"][:500]).astype(np.float64)
for name, fn in (("cross-entropy", softmax_loss), ("hinge", svm_loss)):
    _, dscores = fn(scores, cifar["y_train"][:500])
    print(f"{name:<14} |d loss / d scores| at initialisation: {np.linalg.norm(dscores):.3f}")
ratio = np.linalg.norm(svm_loss(scores, cifar["y_train"][:500])[1]) / np.linalg.norm(softmax_loss(scores, cifar["y_train"][:500])[1])
assert ratio > 2

# %%
hinge_model, hinge_solver, _ = train_cifar(loss="hinge", lr=0.001)
hinge_test = metrics.evaluate(hinge_model, cifar["X_test"], cifar["y_test"], batch_size=500)


def margins(model, X, y):
    # true class's score minus the best other score: > 0 means correctly classified
    s = model.loss(X).astype(np.float64)
    right = s[np.arange(len(y)), y].copy()
    s[np.arange(len(y)), y] = -np.inf
    return right - s.max(axis=1)


m_ce, m_hinge = (margins(m, cifar["X_test"], cifar["y_test"]) for m in (cifar_model, hinge_model))
print(f"{'':<15}{'best val acc':>13}{'test acc':>10}{'median margin':>15}")
for name, s, t, m in (("cross-entropy", cifar_solver, test, m_ce), ("hinge", hinge_solver, hinge_test, m_hinge)):
    print(f"{name:<15}{s.best_val_acc:>13.4f}{t.accuracy:>10.4f}{np.median(m):>15.2f}")
assert hinge_solver.best_val_acc > (0.2 if QUICK else 0.55)

fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
for name, s, color in (("cross-entropy", cifar_solver, "tab:blue"), ("hinge", hinge_solver, "tab:red")):
    e = [h["eval"] for h in s.history]
    axes[0].plot(epochs, [x["val"]["accuracy"] for x in e], "o-", color=color, label=f"{name}, validation")
    axes[0].plot(epochs, [x["train"]["accuracy"] for x in e], "x--", color=color, alpha=0.6, label=f"{name}, train")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("accuracy")
axes[0].legend()
axes[0].set_title("accuracy per epoch")
bins = np.linspace(-6, 12, 55)
axes[1].hist(np.clip(m_ce, -6, 12), bins=bins, alpha=0.6, color="tab:blue", label="cross-entropy")
axes[1].hist(np.clip(m_hinge, -6, 12), bins=bins, alpha=0.6, color="tab:red", label="hinge")
axes[1].axvline(0, color="k", lw=1)
axes[1].axvline(1, color="k", lw=1, ls="--")
axes[1].set_xlabel("test margin: true score - best other score (clipped to [-6, 12])")
axes[1].set_ylabel("images")
axes[1].legend()
axes[1].set_title("how far the right answer is ahead")
fig.tight_layout()
plt.show()

# %% [markdown]
# Only which score is largest matters for the prediction, so the two losses can reach similar
# accuracies by different routes. The margins show what each asks for: the hinge loss stops
# pushing an image once its margin passes the dashed line at 1, cross-entropy never stops. In our
# full run the hinge loss reached 70.3 % validation and 68.5 % test accuracy (cross-entropy 73.0 %
# and 70.9 %), its median test margin was 0.97 against cross-entropy's 2.05, and its margins piled
# up around the dashed line while cross-entropy's spread past 10.
