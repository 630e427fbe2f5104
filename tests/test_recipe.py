"""The training recipe: Nesterov SGD, decoupled weight decay, per-iteration
learning-rate schedules, label smoothing, and the command line's recipes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from funkcije import optim
from funkcije.schedules import scheduled_learning_rate
from funkcije.solver import Solver

RNG = np.random.default_rng(0)
W0 = RNG.standard_normal((4, 5))
GRADS = [RNG.standard_normal((4, 5)) for _ in range(6)]


def run_rule(rule, config, w=W0, grads=GRADS, lrs=None):
    w = w.copy()
    config = dict(config)
    for i, g in enumerate(grads):
        if lrs is not None:
            config["learning_rate"] = lrs[i]
        w, config = rule(w, g, config)
    return w, config


# ----------------------------------------------------------------------------- hand-computed steps


def test_nesterov_two_steps_by_hand():
    lr, mu, wd = 0.1, 0.9, 0.01
    w = W0.copy()
    g1, g2 = GRADS[0] + wd * w, None
    v = g1
    w1 = w - lr * (g1 + mu * v)
    g2 = GRADS[1] + wd * w1
    v = mu * v + g2
    w2 = w1 - lr * (g2 + mu * v)
    got, config = run_rule(optim.sgd_nesterov, {"learning_rate": lr, "momentum": mu, "weight_decay": wd},
                           grads=GRADS[:2])
    np.testing.assert_allclose(got, w2, rtol=1e-14)
    np.testing.assert_allclose(config["velocity"], v, rtol=1e-14)


def test_sgdw_decay_stays_out_of_the_momentum():
    lr, mu, wd = 0.1, 0.9, 0.05
    w = W0.copy()
    v = np.zeros_like(w)
    for g in GRADS[:3]:
        v = mu * v + g
        w = w - lr * (g + mu * v) - lr * wd * w
    got, config = run_rule(optim.sgdw, {"learning_rate": lr, "momentum": mu, "weight_decay": wd}, grads=GRADS[:3])
    np.testing.assert_allclose(got, w, rtol=1e-14)
    np.testing.assert_allclose(config["velocity"], run_rule(optim.sgdw, {"weight_decay": 0.0}, grads=GRADS[:3])[1]["velocity"])


def test_adamw_is_adam_on_the_decayed_weights():
    lr, wd = 1e-2, 0.1
    w, cfg_w = W0.copy(), {"learning_rate": lr, "weight_decay": wd}
    a, cfg_a = W0.copy(), {"learning_rate": lr}
    for g in GRADS:
        w, cfg_w = optim.adamw(w, g, cfg_w)
        a, cfg_a = optim.adam(a * (1 - lr * wd), g, cfg_a)
    np.testing.assert_allclose(w, a, rtol=1e-14)
    assert cfg_w["t"] == len(GRADS)


@pytest.mark.parametrize("rule", [optim.sgd_nesterov, optim.sgdw, optim.adamw])
def test_new_rules_keep_dtype_and_check_their_config(rule):
    w = W0.astype(np.float32)
    nw, config = rule(w, GRADS[0].astype(np.float32), {"learning_rate": 1e-2})
    assert nw.dtype == np.float32 and all(
        v.dtype == np.float32 for v in config.values() if isinstance(v, np.ndarray))
    with pytest.raises(ValueError, match="weight_decay"):
        rule(w, w, {"weight_decay": -1.0})
    with pytest.raises(ValueError, match="unknown config keys"):
        rule(w, w, {"weight_decay_": 1.0})
    assert rule in optim.UPDATE_RULES.values()


# ----------------------------------------------------------------------------- against PyTorch


def torch_run(torch, opt_cls, kwargs, lrs):
    p = torch.nn.Parameter(torch.tensor(W0))
    opt = opt_cls([p], **kwargs)
    for g, lr in zip(GRADS, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


LRS = [0.1, 0.05, 0.2, 0.1, 0.02, 0.01]  # a changing rate: the buffers' units matter


@pytest.mark.torch
def test_sgd_nesterov_matches_torch(torch):
    ours, _ = run_rule(optim.sgd_nesterov, {"momentum": 0.9, "weight_decay": 5e-3}, lrs=LRS)
    theirs = torch_run(torch, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3), LRS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_adamw_matches_torch(torch):
    lrs = [1e-2, 5e-3, 2e-2, 1e-2, 1e-3, 1e-2]
    ours, _ = run_rule(optim.adamw, {"weight_decay": 0.1, "epsilon": 1e-8}, lrs=lrs)
    theirs = torch_run(torch, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, eps=1e-8), lrs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def linear_data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    y = (X[:, 0] > 0).astype(np.int64)
    return {"X_train": X, "y_train": y, "X_val": X[:20], "y_val": y[:20]}


class Linear:
    def __init__(self):
        self.params = {"W": np.full((6, 2), 0.01), "b": np.zeros(2)}

    def loss(self, X, y=None):
        from funkcije.layers import softmax_loss

        scores = X @ self.params["W"] + self.params["b"]
        if y is None:
            return scores
        loss, d = softmax_loss(scores, y)
        return loss, {"W": X.T @ d, "b": d.sum(0)}


def test_solver_applies_the_rate_of_every_iteration():
    s = Solver(Linear(), linear_data(), update_rule="sgd", optim_config={"learning_rate": 0.5},
               lr_schedule={"type": "onecycle", "start": 0.0}, num_epochs=4, batch_size=20, verbose=False, seed=0)
    s.train()
    ipe = s.iterations_per_epoch
    sched = s._lr_schedule
    expected = [scheduled_learning_rate(0.5, None, sched, iteration=i, iterations_per_epoch=ipe)
                for i in range(4 * ipe)]
    assert s.lr_history == pytest.approx(expected)
    assert s.lr_history[0] == 0.0 and max(s.lr_history) == pytest.approx(0.5)
    assert [h["lr"] for h in s.history] == pytest.approx(
        [np.mean(expected[e * ipe:(e + 1) * ipe]) for e in range(4)])


def test_weight_decay_on_weights_spares_biases_and_norm_params():
    model = Linear()
    model.params["bn1.gamma"] = np.ones(2)
    s = Solver(model, linear_data(), update_rule="sgdw", optim_config={"weight_decay": 0.1},
               weight_decay_on="weights", verbose=False, seed=0)
    assert {k: c["weight_decay"] for k, c in s.optim_configs.items()} == {"W": 0.1, "b": 0.0, "bn1.gamma": 0.0}
    with pytest.raises(ValueError, match="weight_decay_on"):
        Solver(Linear(), linear_data(), weight_decay_on="biases", verbose=False)


def test_lr_multipliers_scale_each_matching_parameter(tmp_path):
    """SGD with a constant rate: a parameter with multiplier m moves m times as far in
    its first step, the schedule's rate is reported without multipliers, and the
    multipliers survive a checkpoint and resume."""
    data = linear_data()
    sched = {"type": "onecycle", "start": 0.5}
    base = Solver(Linear(), data, update_rule="sgd", optim_config={"learning_rate": 0.1}, lr_schedule=sched,
                  num_epochs=2, batch_size=20, verbose=False, seed=0)
    scaled = Solver(Linear(), data, update_rule="sgd", optim_config={"learning_rate": 0.1}, lr_schedule=sched,
                    lr_multipliers={"b": 3.0, "W*": 0.0}, num_epochs=2, batch_size=20, verbose=False, seed=0,
                    checkpoint_name=str(tmp_path / "ck"))
    w0, b0 = scaled.model.params["W"].copy(), scaled.model.params["b"].copy()
    base._step()
    scaled._step()
    np.testing.assert_array_equal(scaled.model.params["W"], w0)  # multiplier 0: frozen
    np.testing.assert_allclose(scaled.model.params["b"] - b0, 3 * (base.model.params["b"] - b0), rtol=1e-12)
    assert scaled.lr_history == base.lr_history
    scaled.train()
    resumed = Solver(Linear(), data, resume=str(tmp_path / "ck_epoch_1.pkl"), verbose=False)
    assert resumed.lr_multipliers == {"b": 3.0, "W*": 0.0}
    resumed.train()
    np.testing.assert_array_equal(resumed.model.params["b"], scaled.model.params["b"])


@pytest.mark.parametrize("mults, exc, match", [
    ({"bn*.beta": 2.0}, ValueError, "matches no parameter"),
    ({"b": -1.0}, ValueError, r"finite and in \[0, inf\)"),
    ({"b": float("nan")}, ValueError, r"finite and in \[0, inf\)"),
    ({3: 1.0}, TypeError, "name patterns"),
    ([("b", 2.0)], TypeError, "lr_multipliers must be a dict"),
])
def test_lr_multipliers_bad_values(mults, exc, match):
    with pytest.raises(exc, match=match):
        Solver(Linear(), linear_data(), lr_multipliers=mults, verbose=False)


# ----------------------------------------------------------------------------- the command line


def cli(*args):
    return subprocess.run([sys.executable, "-m", "funkcije.train", *args], capture_output=True, text=True,
                          timeout=300)


def test_recipe_gives_defaults_and_explicit_arguments_win():
    from funkcije.train import RECIPES, parse_args

    _, args = parse_args(["--recipe", "vgg7bn-88", "--epochs", "2"])
    assert args.model == "vgg7bn" and args.epochs == 2 and args.augment == RECIPES["vgg7bn-88"]["augment"]
    assert args.update_rule == "sgd_nesterov" and args.weight_decay == 5e-4


@pytest.mark.parametrize("argv,rates", [
    ([], [1.0, 0.9, 0.81, 0.729]),  # --lr-decay 0.9 alone: cs231n's per-epoch decay
    (["--lr-schedule", "step", "--lr-step", "2", "--lr-gamma", "0.5"], [1.0, 1.0, 0.5, 0.5]),
    (["--lr-schedule", "exponential", "--lr-gamma", "0.5"], [1.0, 0.5, 0.25, 0.125]),
    (["--lr-schedule", "cosine"], [(1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]),  # t_max = --epochs
    (["--lr-schedule", "piecewise", "--lr-points", "0:1,2:0.5,4:0.5"], [1.0, 0.75, 0.5, 0.5]),
    (["--lr-schedule", "none", "--warmup", "2"], [0.5, 1.0, 1.0, 1.0]),
    (["--lr-schedule", "step", "--lr-step", "1", "--lr-gamma", "0.5", "--warmup", "4"],
     [0.25, 0.25, 0.1875, 0.125]),
])
def test_command_line_schedules_give_the_rates_they_name(argv, rates, tmp_path, monkeypatch):
    """--lr-schedule and its arguments, as the run's Solver gets them: the rate of each of
    four epochs, relative to --lr (per epoch: piecewise is evaluated at whole epochs here)."""
    from funkcije import schedules, train
    from funkcije.train import _schedule, check_args, parse_args

    (tmp_path / "cifar-10-batches-py").mkdir()  # what check_args looks for, no data read
    monkeypatch.setattr(train.data_utils, "data_root", lambda: tmp_path)
    decay = ["--lr-decay", "0.9"] if not argv else []
    p, args = parse_args(["--epochs", "4", "--lr", "1", *decay, *argv])
    check_args(p, args)
    sched = schedules.resolve_schedule(_schedule(args), args.epochs)
    got = [schedules.scheduled_learning_rate(1.0, e, sched, args.lr_decay) for e in range(4)]
    np.testing.assert_allclose(got, rates, atol=1e-12)


def test_overriding_a_recipe_drops_its_settings_that_no_longer_apply(tmp_path, monkeypatch):
    """A recipe's momentum with --update-rule adam, its output scale with another model:
    dropped (they were not asked for), while the same flags given by hand are errors."""
    from funkcije import train

    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setattr(train.data_utils, "data_root", lambda: tmp_path)
    p, args = train.parse_args(["--recipe", "vgg7bn-88", "--update-rule", "adam"])
    train.check_args(p, args)
    assert args.momentum is None and args.weight_decay is None and args.update_rule == "adam"
    p, args = train.parse_args(["--recipe", "resnet9-90", "--model", "vgg7bn"])
    train.check_args(p, args)
    assert args.out_scale == 1.0 and args.model == "vgg7bn" and args.label_smoothing == 0.2
    p, args = train.parse_args(["--recipe", "vgg7bn-88", "--update-rule", "adam", "--momentum", "0.8"])
    with pytest.raises(SystemExit):
        train.check_args(p, args)
    p, args = train.parse_args(["--epochs", "0", "--lr-schedule", "onecycle"])  # nothing to train: no error
    train.check_args(p, args)


def test_every_recipes_schedule_resolves():
    from funkcije import schedules
    from funkcije.train import RECIPES, _schedule, parse_args

    for name in RECIPES:
        _, args = parse_args(["--recipe", name])
        sched = schedules.resolve_schedule(_schedule(args), args.epochs)
        rates = [schedules.scheduled_learning_rate(args.lr, e, sched, args.lr_decay) for e in range(args.epochs)]
        assert all(np.isfinite(rates)) and max(rates) <= args.lr * (1 + 1e-12), name


@pytest.mark.slow
def test_recipe_learns_on_real_cifar_images(tmp_path, data_root):
    """A few hundred real images through the whole recipe (augmentation, Nesterov,
    one-cycle, label smoothing, TTA) at a small width: the loss falls and accuracy
    on the training images is above chance."""
    res = cli("--recipe", "vgg7bn-88", "--width", "0.125", "--epochs", "6", "--num-train", "256",
              "--batch-size", "32", "--num-val", "100", "--num-test", "200", "--lr", "0.05",
              "--out", str(tmp_path / "run"), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = [h["loss"] for h in hist["history"]]
    assert losses[-1] < losses[0]
    assert hist["results"]["test_acc"] > 0.15 and hist["results"]["tta"] == "flip"
    assert "augment=crop:4:reflect,flip" in res.stdout
