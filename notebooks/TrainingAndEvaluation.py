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
# # Training and evaluation
#
# This notebook trains convolutional networks on real data and looks at the results from
# several sides:
#
# 1. **L2 regularisation** on Fashion-MNIST: the same network trained with L2 strength 0,
#    1e-3, 1e-2 and 1e-1, its first-layer filters and accuracies side by side;
# 2. **cross-entropy vs multiclass hinge loss**: the same network trained with each;
# 3. **CIFAR-10**: training progress, the confusion matrix, per-class precision and recall,
#    and the 20 test images the network gets most wrong, with its top-3 guesses.
#
# Data come from the folder named by `FUNKCIJE_DATA`. `FUNKCIJE_QUICK=1` shrinks data and
# epochs for CI; unset, the notebook runs the full settings listed in `notebooks/README.md`.

# %%
# %matplotlib inline
import time

import numpy as np
import matplotlib.pyplot as plt

from funkcije import config, metrics, vis_utils
from funkcije.classifiers import ThreeLayerConvNet
from funkcije.data_utils import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, get_CIFAR10_data, get_fashion_mnist_data
from funkcije.layer_utils import (
    affine_relu_backward, affine_relu_forward, conv_relu_pool_backward, conv_relu_pool_forward,
)
from funkcije.layers import affine_backward, affine_forward, softmax_loss, svm_loss
from funkcije.solver import Solver

plt.rcParams["image.interpolation"] = "nearest"

# %%
# FUNKCIJE_QUICK=1 shrinks the data and the epochs so that CI runs this notebook in
# a minute or two; unset (or "0") gives the full settings quoted in notebooks/README.md.
QUICK = config.quick_mode()  # FUNKCIJE_QUICK: 1 quick, 0 / unset full; anything else is an error
print("settings:", "quick (FUNKCIJE_QUICK=1)" if QUICK else "full")

# %% [markdown]
# ## 1. L2 regularisation on Fashion-MNIST
#
# Fashion-MNIST has 28 x 28 grayscale images of ten kinds of clothing. The network is a
# `ThreeLayerConvNet` with 16 filters of 7 x 7, 100 hidden units and L2 strength `reg`,
# which adds 0.5 * reg * sum(W ** 2) over all weight matrices to the loss. Every run starts
# from the same initial weights (seed 0) and sees the same minibatches; only `reg` differs.

# %%
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


# %%
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

# %%
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

# %% [markdown]
# What the full settings show (quick mode trains too briefly for any of this).
#
# **Accuracy.** No regularisation and 1e-3 do best (about 87 % on the test set), 1e-2 loses
# two or three points and 1e-1 more than ten. After three epochs on 20 000 images the
# unregularised network hardly overfits (its training accuracy is within a few points of
# its validation accuracy), so there is little for L2 to cure, and its pull towards zero
# only costs fit. At 1e-1 the network underfits: its training accuracy falls as low as its
# test accuracy.
#
# **Filters.** With `reg` 0 and 1e-3 the 7 x 7 filters still carry the speckle of their
# random initialisation on top of what they learned. At 1e-2 the speckle fades and smooth
# light/dark edges come through; at 1e-1 only smooth structure is left — vertical bars and
# centre-surround blobs — because every weight the data do not keep asking for decays
# towards zero.
#
# **Norms.** The penalty is paid mostly by `W2`, the 313 600 weights between the pooled
# feature maps and the hidden layer: its norm falls from about 33 to about 2, while `|W1|`
# hardly moves until 1e-1. A ReLU network can shift scale between layers (multiplying `W1`
# and `b1` by 2 and `W2` by 1/2 leaves the scores unchanged), so the cheapest way to pay an
# L2 penalty is to shrink the big layer.
#
# ## 2. Cross-entropy vs multiclass hinge loss
#
# For scores s of one sample with true class y:
#
# * **softmax cross-entropy** (`softmax_loss`): $-\log\left(e^{s_y} / \sum_j e^{s_j}\right)$ — it is never
#   zero, so it keeps pushing the correct score up relative to the others;
# * **multiclass hinge loss** (`svm_loss`): $\sum_{j \ne y} \max(0,\; s_j - s_y + 1)$ — it is zero as soon
#   as the correct score beats every other score by a margin of 1, and then stops caring.

# %%
scores = np.array([[5.0, 1.0, 2.0], [2.0, 1.9, 0.0], [1.0, 3.0, 0.0]])
for s, (lc, _), (lh, _) in zip(scores, (softmax_loss(s[None], np.array([0])) for s in scores),
                               (svm_loss(s[None], np.array([0])) for s in scores)):
    print(f"scores {s}, true class 0:  cross-entropy {lc:.3f}   hinge {lh:.3f}")


# %% [markdown]
# `ThreeLayerConvNet` is built with the softmax loss. To train the same architecture with the
# hinge loss we write its `loss` method once more from the sandwich layers, with the data loss
# as a parameter. (Its softmax version must reproduce `ThreeLayerConvNet` exactly — checked
# below.)

# %%
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

# %%
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

# %% [markdown]
# With the full settings both losses train the network to about the same accuracy: what
# matters for the prediction is only which score is largest. They differ in what they do
# beyond that. The hinge loss is satisfied once the correct score leads by 1, so its margins
# pile up just above the dashed line at 1 (median about 1.7); cross-entropy never stops
# pushing, so its margins spread out to 10 and beyond (median about 3), and its scores read as
# confident probabilities after a softmax.
#
# ## 3. CIFAR-10: train and evaluate
#
# The cs231n `ThreeLayerConvNet` (32 filters of 7 x 7, 500 hidden units, weight scale 1e-3,
# L2 strength 1e-3, Adam with learning rate 1e-3 decayed by 0.9 per epoch, minibatches of 50)
# trained on 49 000 CIFAR-10 images for 2 epochs (1000 images for 1 epoch in quick mode), then
# evaluated on the 10 000 test images (1000 in quick mode).

# %%
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

# %%
vis_utils.plot_training(solver)

# %% [markdown]
# The training-progress figure: the per-iteration loss (faint) with its moving average and
# the mean loss of each epoch; the training (1000 sampled images) and validation accuracy
# after each epoch; and the learning rate, decayed by 0.9 per epoch.
#
# ### Confusion matrix
#
# Row *i*, column *j* counts test images of class *i* that the network called *j*. Normalised
# by row, the diagonal is each class's recall.

# %%
X_test, y_test = data["X_test"], data["y_test"]
result = metrics.evaluate(model, X_test, y_test)
cm = result.confusion
print(f"test accuracy {result.accuracy:.3f}, test loss {result.loss:.3f} on {cm.sum()} images")
# evaluate() and the Solver's own accuracy must agree on the same images
assert cm.sum() == len(y_test)
assert abs(result.accuracy - solver.check_accuracy(X_test, y_test)) < 1e-12
vis_utils.plot_confusion_matrix(cm, CIFAR10_CLASSES, normalize="true")

# %% [markdown]
# ### Per-class precision and recall
#
# *Precision* of class c: of the images the network called c, the fraction that are c.
# *Recall* of class c: of the images of class c, the fraction the network found.

# %%
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

# %% [markdown]
# ### The 20 worst-classified test images
#
# "Worst" means the highest cross-entropy: the lowest probability given to the true class.
# Each image is titled with its true class and the network's top 3 classes with their
# softmax probabilities (red: the top guess is wrong).

# %%
worst = metrics.worst_examples(model, X_test, y_test, k=20)
# show the photographs, not the mean-subtracted network inputs
images = np.clip(np.rint(X_test[worst.indices] + data["mean_image"]), 0, 255).astype(np.uint8)
print("their losses:", np.round(worst.loss, 1))
vis_utils.plot_worst_examples(images, worst.true, worst.top3_classes, worst.top3_probs,
                              class_names=CIFAR10_CLASSES, ncols=5)

# %% [markdown]
# With the full settings (two epochs, about 52 % test accuracy; chance is 10 %) the largest
# off-diagonal entries of the confusion matrix are between related classes: cats and dogs
# taken for each other, airplanes called ships, trucks and automobiles mixed up, and the other
# animals (birds, frogs, horses, cats) often called deer, so that deer has the lowest
# precision. Ships, automobiles and trucks are recognised best, birds and cats worst.
#
# The 20 worst images get almost no probability for their true class (losses of 7 and more
# mean p < 0.001), and most are understandable mistakes for a network this small, which
# leans on colour and background. In the run we looked at they included trucks in front of
# blue sky called ship, a dog on a blue cushion called ship, a dog on mottled leaves called
# frog, a black airplane silhouette on a white sky called dog, and dark cars among greenery
# called deer.
