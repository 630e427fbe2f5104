"""Solver: cs231n semantics, seeded reproducibility, exact resume, schedules,
atomic checkpoints, divergence. The models are defined here (built on
funkcije.layers only) so these tests do not depend on funkcije.classifiers."""
import json
import math
import os
import pickle

import numpy as np
import pytest

from funkcije import checkpoint, layers, optim
from funkcije import solver as solver_module
from funkcije.solver import CHECKPOINT_FORMAT, Solver, TrainingDiverged, load_checkpoint, scheduled_learning_rate


# ----------------------------------------------------------------------------- tiny models


class SoftmaxRegression:
    """scores = X W + b; softmax loss with L2 on W."""

    def __init__(self, D=10, C=3, reg=1e-3, dtype=np.float64, init_seed=0):
        rng = np.random.default_rng(init_seed)
        self.reg = reg
        self.params = {
            "W": (1e-2 * rng.standard_normal((D, C))).astype(dtype),
            "b": np.zeros(C, dtype=dtype),
        }

    def loss(self, X, y=None):
        scores, cache = layers.affine_forward(X, self.params["W"], self.params["b"])
        if y is None:
            return scores
        loss, dscores = layers.softmax_loss(scores, y)
        _, dW, db = layers.affine_backward(dscores, cache)
        W = self.params["W"]
        loss = loss + 0.5 * self.reg * float(np.sum(W * W))
        return loss, {"W": dW + self.reg * W, "b": db}


class BNDropoutNet:
    """affine - batchnorm - relu - dropout - affine - softmax: running statistics in
    bn_params and dropout masks, the state an exact resume must carry."""

    def __init__(self, D=10, H=16, C=3, keep=0.7, init_seed=0, dtype=np.float64):
        rng = np.random.default_rng(init_seed)
        self.params = {
            "W1": (0.3 * rng.standard_normal((D, H))).astype(dtype),
            "b1": np.zeros(H, dtype=dtype),
            "gamma1": np.ones(H, dtype=dtype),
            "beta1": np.zeros(H, dtype=dtype),
            "W2": (0.3 * rng.standard_normal((H, C))).astype(dtype),
            "b2": np.zeros(C, dtype=dtype),
        }
        self.bn_params = [{"mode": "train"}]
        self.dropout_param = {"mode": "train", "p": keep}

    def loss(self, X, y=None):
        mode = "test" if y is None else "train"
        self.bn_params[0]["mode"] = mode
        self.dropout_param["mode"] = mode
        p = self.params
        a, c1 = layers.affine_forward(X, p["W1"], p["b1"])
        bn, c2 = layers.batchnorm_forward(a, p["gamma1"], p["beta1"], self.bn_params[0])
        r, c3 = layers.relu_forward(bn)
        d, c4 = layers.dropout_forward(r, self.dropout_param)
        scores, c5 = layers.affine_forward(d, p["W2"], p["b2"])
        if y is None:
            return scores
        loss, dscores = layers.softmax_loss(scores, y)
        dd, dW2, db2 = layers.affine_backward(dscores, c5)
        dr = layers.dropout_backward(dd, c4)
        dbn = layers.relu_backward(dr, c3)
        da, dgamma, dbeta = layers.batchnorm_backward(dbn, c2)
        _, dW1, db1 = layers.affine_backward(da, c1)
        return loss, {"W1": dW1, "b1": db1, "gamma1": dgamma, "beta1": dbeta, "W2": dW2, "b2": db2}


class NaNAtCall(SoftmaxRegression):
    """Returns a non-finite training loss on the `bad_call`-th training call."""

    def __init__(self, bad_call, bad_value=float("nan"), **kw):
        super().__init__(**kw)
        self.bad_call, self.bad_value, self.calls = bad_call, bad_value, 0

    def loss(self, X, y=None):
        out = super().loss(X, y)
        if y is None:
            return out
        self.calls += 1
        if self.calls == self.bad_call:
            return self.bad_value, out[1]
        return out


def make_data(n_train=200, n_val=60, D=10, C=3, sep=1.5, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    centers = sep * rng.standard_normal((C, D))

    def split(n):
        y = rng.integers(0, C, n)
        X = (centers[y] + rng.standard_normal((n, D))).astype(dtype)
        return X, y

    X_train, y_train = split(n_train)
    X_val, y_val = split(n_val)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


QUIET = {"verbose": False}


def assert_params_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_same_state(s1, s2):
    """Two checkpoint dicts describe the same training state."""
    assert_params_equal(s1["params"], s2["params"])
    assert_params_equal(s1["best_params"], s2["best_params"])
    for p in s1["optim_configs"]:
        c1, c2 = s1["optim_configs"][p], s2["optim_configs"][p]
        assert c1.keys() == c2.keys()
        for k in c1:
            np.testing.assert_array_equal(c1[k], c2[k], err_msg=f"{p}.{k}")
    for b1, b2 in zip(s1["bn_params"] or [], s2["bn_params"] or []):
        np.testing.assert_array_equal(b1["running_mean"], b2["running_mean"])
        np.testing.assert_array_equal(b1["running_var"], b2["running_var"])
    assert s1["rng_state"] == s2["rng_state"]
    for key in ("epoch", "iteration", "loss_history", "train_acc_history", "val_acc_history", "best_val_acc"):
        assert s1[key] == s2[key], key
    assert without_seconds(s1["history"]) == without_seconds(s2["history"])


# ----------------------------------------------------------------------------- cs231n semantics


def test_trains_and_keeps_cs231n_bookkeeping():
    data = make_data()
    model = SoftmaxRegression()
    s = Solver(model, data, update_rule="sgd_momentum", optim_config={"learning_rate": 0.05},
               batch_size=50, num_epochs=4, seed=0, **QUIET)
    assert s.update_rule is optim.sgd_momentum
    assert s.optim_configs.keys() == model.params.keys()
    assert s.optim_configs["W"] is not s.optim_configs["b"]
    s.train()
    ipe = 200 // 50
    assert len(s.loss_history) == 4 * ipe
    # as in cs231n: one accuracy check after the first iteration, then one per epoch
    assert len(s.train_acc_history) == len(s.val_acc_history) == 4 + 1
    assert s.epoch == 4
    assert s.loss_history[-1] < 0.5 * s.loss_history[0]
    assert s.best_val_acc == max(s.val_acc_history) > 0.8
    assert_params_equal(model.params, s.best_params)
    assert all(isinstance(v, float) for v in s.loss_history + s.train_acc_history)


def test_unknown_kwargs_and_bad_rule_are_errors():
    data = make_data()
    with pytest.raises(ValueError, match='Unrecognized arguments "learning_rate"'):
        Solver(SoftmaxRegression(), data, learning_rate=0.1)
    with pytest.raises(ValueError) as err:
        Solver(SoftmaxRegression(), data, update_rule="nesterov")
    assert "'nesterov'" in str(err.value) and "'adam'" in str(err.value) and "'rmsprop'" in str(err.value)
    with pytest.raises(ValueError, match="missing \\['y_val'\\]"):
        Solver(SoftmaxRegression(), {k: v for k, v in data.items() if k != "y_val"})
    with pytest.raises(ValueError, match="batch_size"):
        Solver(SoftmaxRegression(), data, batch_size=0)
    with pytest.raises(TypeError, match="params"):
        Solver(object(), data)


def test_update_rule_callable():
    calls = []

    def halving(w, dw, config=None):
        calls.append(config["learning_rate"])
        return w - config["learning_rate"] * dw, config

    data = make_data()
    s = Solver(SoftmaxRegression(), data, update_rule=halving, optim_config={"learning_rate": 0.2},
               lr_decay=0.5, batch_size=100, num_epochs=2, seed=0, **QUIET)
    s.train()
    # two parameters, two iterations per epoch, lr halved after the first epoch
    assert calls == [0.2] * 4 + [0.1] * 4


def test_float32_model_stays_float32():
    data = make_data(dtype=np.float32)
    model = SoftmaxRegression(dtype=np.float32)
    s = Solver(model, data, update_rule="adam", optim_config={"learning_rate": np.float64(1e-2)},
               batch_size=50, num_epochs=2, seed=0, **QUIET)
    s.train()
    for k, v in model.params.items():
        assert v.dtype == np.float32, k
        assert s.optim_configs[k]["m"].dtype == np.float32


def test_check_accuracy():
    data = make_data()
    model = SoftmaxRegression()
    s = Solver(model, data, seed=0, **QUIET)
    X, y = data["X_val"], data["y_val"]
    expected = float(np.mean(np.argmax(model.loss(X), axis=1) == y))
    assert s.check_accuracy(X, y) == expected
    assert s.check_accuracy(X, y, batch_size=7) == expected
    sub = s.check_accuracy(X, y, num_samples=20)
    assert sub * 20 == pytest.approx(round(sub * 20))  # a fraction of 20 samples
    s2 = Solver(model, data, seed=0, **QUIET)
    assert s2.check_accuracy(X, y, num_samples=20) == sub


# ----------------------------------------------------------------------------- reproducibility


def test_seeded_runs_are_identical_and_seeds_matter():
    data = make_data()

    def run(seed):
        model = BNDropoutNet()
        s = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2},
                   batch_size=32, num_epochs=2, num_train_samples=50, seed=seed, **QUIET)
        s.train()
        return model, s

    m1, s1 = run(7)
    m2, s2 = run(7)
    m3, s3 = run(8)
    assert_params_equal(m1.params, m2.params)
    np.testing.assert_array_equal(m1.bn_params[0]["running_mean"], m2.bn_params[0]["running_mean"])
    assert s1.loss_history == s2.loss_history
    assert s1.train_acc_history == s2.train_acc_history
    assert without_seconds(s1.history) == without_seconds(s2.history)
    assert s1.loss_history != s3.loss_history


def test_library_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()
    Solver(BNDropoutNet(), make_data(), batch_size=32, num_epochs=1, seed=1, **QUIET).train()
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_seed_none_records_entropy_that_repeats_the_run():
    data = make_data()
    s1 = Solver(SoftmaxRegression(), data, batch_size=32, num_epochs=1, **QUIET)
    assert isinstance(s1.seed, int)
    s1.train()
    s2 = Solver(SoftmaxRegression(), data, batch_size=32, num_epochs=1, seed=s1.seed, **QUIET)
    s2.train()
    assert s1.loss_history == s2.loss_history


def test_dropout_generator_installed_only_when_model_has_no_seed():
    data = make_data()
    model = BNDropoutNet()
    Solver(model, data, seed=0, **QUIET)
    assert isinstance(model.dropout_param["seed"], np.random.Generator)
    fixed = BNDropoutNet()
    fixed.dropout_param["seed"] = 5
    Solver(fixed, data, seed=0, **QUIET)
    assert fixed.dropout_param["seed"] == 5


def test_a_shared_dropout_generator_without_p_is_tracked_and_checkpointed(tmp_path):
    data = make_data()
    model = SoftmaxRegression()
    g = np.random.default_rng(42)
    model.dropout_param = {"mode": "train", "seed": g}  # a composed model's shared stream
    s = Solver(model, data, batch_size=50, num_epochs=1, seed=0, checkpoint_name=str(tmp_path / "d"), **QUIET)
    assert s._dropout_rng is g and model.dropout_param["seed"] is g
    s.train()
    g.random(3)  # the stream moved on after the checkpoint
    saved = load_checkpoint(tmp_path / "d_epoch_1.pkl")["rng_state"]["dropout"]
    assert saved is not None and saved != g.bit_generator.state
    g2 = np.random.default_rng(7)
    model2 = SoftmaxRegression()
    model2.dropout_param = {"mode": "train", "seed": g2}
    Solver(model2, data, resume=tmp_path / "d_epoch_1.pkl", **QUIET)
    assert g2.bit_generator.state == saved
    # without p and without a Generator nothing is installed
    plain = SoftmaxRegression()
    plain.dropout_param = {"mode": "train"}
    assert Solver(plain, data, seed=0, **QUIET)._dropout_rng is None and "seed" not in plain.dropout_param


def test_check_accuracy_does_not_change_training():
    data = make_data()
    m1, m2 = BNDropoutNet(), BNDropoutNet()
    s1 = Solver(m1, data, batch_size=32, num_epochs=2, num_train_samples=40, seed=3, **QUIET)
    s2 = Solver(m2, data, batch_size=32, num_epochs=2, num_train_samples=90, seed=3, **QUIET)
    s2.check_accuracy(data["X_train"], data["y_train"], num_samples=10)
    s1.train()
    s2.train()
    assert s1.loss_history == s2.loss_history


# ----------------------------------------------------------------------------- history and schedules


def test_history_is_json_and_consistent():
    data = make_data()
    s = Solver(SoftmaxRegression(), data, optim_config={"learning_rate": 0.1}, lr_decay=0.9,
               batch_size=40, num_epochs=3, seed=0, **QUIET)
    s.train()
    restored = json.loads(json.dumps(s.history))
    assert restored == s.history
    ipe = 200 // 40
    assert [h["epoch"] for h in s.history] == [1, 2, 3]
    for e, h in enumerate(s.history):
        assert set(h) == {"epoch", "loss", "train_acc", "val_acc", "train_loss", "val_loss", "lr", "seconds"}
        assert h["loss"] == pytest.approx(np.mean(s.loss_history[e * ipe : (e + 1) * ipe]), rel=1e-12)
        assert h["train_acc"] == s.train_acc_history[e + 1]
        assert h["val_acc"] == s.val_acc_history[e + 1]
        assert h["seconds"] >= 0
    assert [h["lr"] for h in s.history] == pytest.approx([0.1, 0.09, 0.081], rel=1e-15)


class EpochEndParams:
    """A callback that keeps a copy of the params at every epoch end."""

    def __init__(self):
        self.params = []

    def on_train_begin(self, s):
        pass

    def on_iteration_end(self, s):
        pass

    def on_epoch_end(self, s):
        self.params.append({k: v.copy() for k, v in s.model.params.items()})

    def on_train_end(self, s):
        pass


def test_epoch_train_loss_is_the_data_loss_as_for_validation():
    """'train_loss' is measured like 'val_loss' (the data loss, no L2 penalty, at the epoch's
    end), so the two compare; 'loss' and loss_history stay the minibatch objective with the
    penalty, as in cs231n."""
    data = make_data()
    reg = 0.5  # a penalty of the size of the data loss
    seen = EpochEndParams()
    s = Solver(SoftmaxRegression(reg=reg), data, optim_config={"learning_rate": 0.1}, batch_size=40, num_epochs=3,
               num_train_samples=None, num_val_samples=None, seed=0, callbacks=[seen], **QUIET)
    s.train()
    for h, p in zip(s.history, seen.params):
        def data_loss(X, y):
            return layers.softmax_loss(X @ p["W"] + p["b"], y)[0]

        penalty = 0.5 * reg * float(np.sum(p["W"] ** 2))
        assert h["train_loss"] == pytest.approx(data_loss(data["X_train"], data["y_train"]), rel=1e-12)
        assert h["val_loss"] == pytest.approx(data_loss(data["X_val"], data["y_val"]), rel=1e-12)
        assert h["loss"] > h["train_loss"] + 0.5 * penalty  # the objective: the penalty is in it

    # a model with its own criterion (hinge) and L2: its data_loss, in test mode
    from funkcije.classifiers import Affine, ReLU, Sequential

    def net():
        return Sequential(Affine(16), ReLU(), Affine(3), input_shape=(10,), loss="hinge", reg=0.1,
                          dtype=np.float64, seed=0)

    seen = EpochEndParams()
    model = net()
    s = Solver(model, data, optim_config={"learning_rate": 0.05}, batch_size=40, num_epochs=2,
               num_train_samples=None, seed=0, callbacks=[seen], **QUIET)
    s.train()
    check = net()
    for h, p in zip(s.history, seen.params):
        check.params.update(p)
        for split in ("train", "val"):
            X, y = data[f"X_{split}"], data[f"y_{split}"]
            assert h[f"{split}_loss"] == pytest.approx(check.data_loss(check.loss(X), y), rel=1e-9)
        assert h["loss"] > h["train_loss"]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"lr_decay": 0.5}, [0.1, 0.05, 0.025, 0.0125]),
        ({"lr_schedule": {"type": "step", "step_size": 2, "gamma": 0.5}}, [0.1, 0.1, 0.05, 0.05]),
        ({"lr_schedule": {"type": "exponential", "gamma": 0.5}}, [0.1, 0.05, 0.025, 0.0125]),
        # eta_min + (lr0 - eta_min) (1 + cos(pi e / 4)) / 2 with lr0 = 0.1, eta_min = 0.01
        (
            {"lr_schedule": {"type": "cosine", "eta_min": 0.01}},
            [0.1, 0.01 + 0.045 * (1 + math.sqrt(0.5)), 0.055, 0.01 + 0.045 * (1 - math.sqrt(0.5))],
        ),
    ],
)
def test_schedules(kwargs, expected):
    data = make_data()
    s = Solver(SoftmaxRegression(), data, update_rule="sgd_momentum", optim_config={"learning_rate": 0.1},
               batch_size=100, num_epochs=4, seed=0, **kwargs, **QUIET)
    s.train()
    assert [h["lr"] for h in s.history] == pytest.approx(expected, rel=1e-14)


def test_schedule_defaults_to_the_rules_learning_rate():
    # no learning_rate given: the rule's cs231n default (adam 1e-3) is lr0
    s = Solver(SoftmaxRegression(), make_data(), update_rule="adam", lr_schedule={"type": "step", "step_size": 1},
               batch_size=100, num_epochs=2, seed=0, **QUIET)
    s.train()
    assert [h["lr"] for h in s.history] == pytest.approx([1e-3, 1e-4])
    assert s.optim_configs["W"]["learning_rate"] == pytest.approx(1e-5)  # as cs231n: decayed after the last epoch


def test_constant_rate_is_left_alone():
    s = Solver(SoftmaxRegression(), make_data(), update_rule="rmsprop", batch_size=100, num_epochs=1, seed=0, **QUIET)
    s.train()
    assert s.history[0]["lr"] == 1e-2
    assert s.optim_configs["W"]["learning_rate"] == 1e-2


def test_bad_schedules():
    data = make_data()
    with pytest.raises(ValueError, match="not both"):
        Solver(SoftmaxRegression(), data, lr_decay=0.9, lr_schedule={"type": "exponential", "gamma": 0.9})
    with pytest.raises(ValueError, match="'constant', 'cosine', 'exponential', 'onecycle', 'piecewise', 'step'"):
        Solver(SoftmaxRegression(), data, lr_schedule={"type": "linear"})
    with pytest.raises(ValueError, match="needs \\['step_size'\\]"):
        Solver(SoftmaxRegression(), data, lr_schedule={"type": "step"})
    with pytest.raises(ValueError, match="unknown keys \\['gama'\\]"):
        Solver(SoftmaxRegression(), data, lr_schedule={"type": "exponential", "gamma": 0.9, "gama": 1})


# ----------------------------------------------------------------------------- checkpoints and resume


def run_kwargs(tmp_path, name, **extra):
    kw = dict(update_rule="adam", optim_config={"learning_rate": 1e-2},
              lr_schedule={"type": "cosine", "eta_min": 1e-4}, batch_size=32, num_epochs=3,
              num_train_samples=50, seed=11, checkpoint_name=str(tmp_path / name), verbose=False)
    kw.update(extra)
    return kw


class Crash(Exception):
    pass


class CrashingNet(BNDropoutNet):
    """Dies (like a killed process) on its `crash_call`-th training call."""

    def __init__(self, crash_call, **kw):
        super().__init__(**kw)
        self.crash_call, self.calls = crash_call, 0

    def loss(self, X, y=None):
        if y is not None:
            self.calls += 1
            if self.calls == self.crash_call:
                raise Crash
        return super().loss(X, y)


@pytest.mark.parametrize("resume_epoch", [1, 0])
def test_resume_equals_uninterrupted_run(tmp_path, resume_epoch):
    data = make_data()
    ipe = 200 // 32
    full_model = BNDropoutNet()
    full = Solver(full_model, data, **run_kwargs(tmp_path, "full"))
    full.train()

    # the same 3-epoch run, killed two iterations into its second epoch
    with pytest.raises(Crash):
        Solver(CrashingNet(ipe + 3), data, **run_kwargs(tmp_path, "part")).train()
    assert sorted(p.name for p in tmp_path.glob("part*")) == ["part_epoch_0.pkl", "part_epoch_1.pkl"]
    path = tmp_path / f"part_epoch_{resume_epoch}.pkl"
    assert_same_state(load_checkpoint(path), load_checkpoint(tmp_path / f"full_epoch_{resume_epoch}.pkl"))

    # a freshly built model with different initial weights: everything comes from the file
    resumed_model = BNDropoutNet(init_seed=99)
    resumed = Solver(resumed_model, data, resume=str(path),
                     checkpoint_name=str(tmp_path / "resumed"), verbose=False)
    assert resumed.epoch == resume_epoch and resumed.update_rule is optim.adam
    resumed.train()

    assert_params_equal(resumed_model.params, full_model.params)
    np.testing.assert_array_equal(resumed_model.bn_params[0]["running_mean"], full_model.bn_params[0]["running_mean"])
    np.testing.assert_array_equal(resumed_model.bn_params[0]["running_var"], full_model.bn_params[0]["running_var"])
    assert resumed.loss_history == full.loss_history
    assert resumed.train_acc_history == full.train_acc_history
    assert resumed.val_acc_history == full.val_acc_history
    assert without_seconds(resumed.history) == without_seconds(full.history)
    # the last params (before best_params are copied back) are equal too
    assert_same_state(load_checkpoint(tmp_path / "resumed_epoch_3.pkl"), load_checkpoint(tmp_path / "full_epoch_3.pkl"))


def test_resume_with_from_checkpoint_and_carried_settings(tmp_path):
    data = make_data()
    Solver(SoftmaxRegression(), data, **run_kwargs(tmp_path, "a", num_epochs=2)).train()
    s = Solver.from_checkpoint(tmp_path / "a_epoch_1.pkl", SoftmaxRegression(), data, verbose=False)
    assert (s.num_epochs, s.batch_size, s.seed, s.num_train_samples) == (2, 32, 11, 50)
    assert s.lr_schedule == {"type": "cosine", "eta_min": 1e-4}
    s.train()
    assert s.epoch == 2
    s.train()  # num_epochs is the total: nothing left to do
    assert s.epoch == 2


def test_resume_rejects_a_different_run(tmp_path):
    data = make_data()
    Solver(SoftmaxRegression(), data, **run_kwargs(tmp_path, "a", num_epochs=1)).train()
    path = tmp_path / "a_epoch_1.pkl"
    with pytest.raises(ValueError, match="batch_size=64"):
        Solver(SoftmaxRegression(), data, resume=path, batch_size=64, verbose=False)
    with pytest.raises(ValueError, match="update_rule='sgd'"):
        Solver(SoftmaxRegression(), data, resume=path, update_rule="sgd", verbose=False)
    with pytest.raises(ValueError, match="seed=12"):
        Solver(SoftmaxRegression(), data, resume=path, seed=12, verbose=False)
    with pytest.raises(ValueError, match="shape"):
        Solver(SoftmaxRegression(D=10, C=4), data, resume=path, verbose=False)
    with pytest.raises(ValueError, match="samples"):
        Solver(SoftmaxRegression(), make_data(n_train=100), resume=path, verbose=False)
    # same values passed explicitly are fine
    Solver(SoftmaxRegression(), data, resume=path, batch_size=32, seed=11, update_rule=optim.adam,
           optim_config={"learning_rate": 1e-2}, verbose=False)
    with pytest.raises(ValueError, match="not a funkcije Solver checkpoint"):
        junk = tmp_path / "junk.pkl"
        junk.write_bytes(pickle.dumps({"model": None}))
        Solver(SoftmaxRegression(), data, resume=junk)


def test_checkpoint_files_and_contents(tmp_path):
    data = make_data()
    model = BNDropoutNet()
    s = Solver(model, data, **run_kwargs(tmp_path, "ck", num_epochs=2))
    s.train()
    assert sorted(os.listdir(tmp_path)) == ["ck_epoch_0.pkl", "ck_epoch_1.pkl", "ck_epoch_2.pkl"]
    ck = load_checkpoint(tmp_path / "ck_epoch_2.pkl")
    for key in ("update_rule", "lr_decay", "optim_config", "batch_size", "num_train_samples",
                "num_val_samples", "epoch", "loss_history", "train_acc_history", "val_acc_history"):
        assert key in ck  # cs231n's keys
    assert ck["update_rule"] == "adam" and ck["epoch"] == 2
    assert ck["optim_configs"]["W1"]["t"] == 2 * (200 // 32)
    assert ck["bn_params"][0]["running_mean"].shape == (16,)
    assert ck["rng_state"]["dropout"] is not None
    assert ck["history"] == s.history


def test_atomic_checkpoint_survives_crash_mid_write(tmp_path, monkeypatch):
    data = make_data()
    s = Solver(SoftmaxRegression(), data, **run_kwargs(tmp_path, "ck", num_epochs=1))
    s.train()
    path = tmp_path / "ck_epoch_1.pkl"
    before = path.read_bytes()
    s._step()  # new state, same epoch: the next save targets the same file

    real_write = solver_module._checkpoint_file._write_npz

    def crash_after_partial_write(f, entries):
        f.write(b"PK\x03\x04" + bytes(96))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(solver_module._checkpoint_file, "_write_npz", crash_after_partial_write)
    with pytest.raises(OSError, match="simulated"):
        s._save_checkpoint()
    monkeypatch.setattr(solver_module._checkpoint_file, "_write_npz", real_write)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 200 // 32

    def failing_fsync(fd):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(solver_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="power cut"):
        s._save_checkpoint()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck_epoch_0.pkl", "ck_epoch_1.pkl"]  # no temporary litter

    s._save_checkpoint()
    assert load_checkpoint(path)["iteration"] == 200 // 32 + 1


# ----------------------------------------------------------------------------- divergence


def test_best_iteration_names_the_check_inside_an_epoch(tmp_path):
    """With check_every, best_params can come from a check inside an epoch: best_iteration
    says which, the divergence message says it too, and a checkpoint keeps it."""
    data = make_data(n_train=60)

    model = NaNAtCall(bad_call=6)  # a NaN loss at the 6th step, inside epoch 1 of 6 steps
    s = Solver(model, data, num_epochs=3, batch_size=10, check_every=1, seed=0, update_rule="sgd",
               checkpoint_name=str(tmp_path / "ck"), optim_config={"learning_rate": 0.5}, **QUIET)
    accs = [0.15, 0.4, 0.3, 0.35, 0.2, 0.1]  # what the checks measure, in turn (train and val alike)
    s._accuracy_and_loss = lambda X, y, num_samples=None: (accs[len(s.val_acc_history)], 1.0)
    with pytest.raises(TrainingDiverged, match=r"val acc 0\.4000 at iteration 2 \(in epoch 1\)"):
        s.train()
    assert s.check_iterations == [1, 2, 3, 4, 5] and s.best_iteration == 2 and s.best_epoch == 0
    plain = Solver(SoftmaxRegression(), data, num_epochs=2, batch_size=10, seed=0,
                   checkpoint_name=str(tmp_path / "plain"), **QUIET)
    plain.train()
    assert plain.best_iteration in plain.check_iterations and plain.best_iteration % 6 in (0, 1)
    ckpt = load_checkpoint(tmp_path / "plain_epoch_2.pkl")
    assert ckpt["best_iteration"] == plain.best_iteration


def test_checkpoint_folder_is_made(tmp_path):
    s = Solver(SoftmaxRegression(), make_data(n_train=40), num_epochs=1, batch_size=20, seed=0,
               checkpoint_name=str(tmp_path / "runs" / "a" / "ck"), **QUIET)
    s.train()
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == ["ck_epoch_0.pkl", "ck_epoch_1.pkl"]


def test_checkpoints_from_before_check_iterations_were_recorded(tmp_path):
    """Files without check_iterations and best_iteration: both rebuilt, also where one
    iteration is a whole epoch (its first check is the epoch's)."""
    data = make_data(n_train=40)
    for batch, want in ((50, [1, 2, 3]), (10, [1, 4, 8, 12])):
        s = Solver(SoftmaxRegression(), data, num_epochs=3, batch_size=batch, seed=0,
                   checkpoint_name=str(tmp_path / f"b{batch}"), **QUIET)
        s.train()
        assert s.check_iterations == want
        path = tmp_path / f"b{batch}_epoch_3.pkl"
        ckpt = load_checkpoint(path)
        ckpt["check_iterations"] = ckpt["best_iteration"] = None  # as an older version wrote it
        del ckpt["check_iterations"], ckpt["best_iteration"]
        checkpoint.write(path, ckpt, CHECKPOINT_FORMAT)
        old = Solver(SoftmaxRegression(), data, resume=str(path), **QUIET)
        assert old.check_iterations == want
        first_best = want[s.val_acc_history.index(s.best_val_acc)]
        assert old.best_iteration == first_best


@pytest.mark.parametrize("layers", ["fast", "reference"])
def test_a_bad_pixel_stops_a_batch_norm_relu_model_on_either_path(layers):
    """One NaN pixel in the training set reaches the loss through conv, batch norm and
    ReLU (fused on the fast path) alike: the run stops where the batch holding it is."""
    from funkcije import config
    from funkcije.classifiers.sequential import Affine, BatchNorm2d, Conv2d, Flatten, ReLU, Sequential

    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((40, 3, 4, 4)).astype(np.float32), "y_train": rng.integers(0, 4, 40),
            "X_val": rng.standard_normal((10, 3, 4, 4)).astype(np.float32), "y_val": rng.integers(0, 4, 10)}
    data["X_train"][17, 0, 1, 1] = np.nan
    with config.using(layers=layers):
        model = Sequential(Conv2d(4, 3, pad=1), BatchNorm2d(), ReLU(), Flatten(), Affine(4), input_shape=(3, 4, 4),
                           seed=3)
        s = Solver(model, data, num_epochs=3, batch_size=10, seed=0, optim_config={"learning_rate": 1e-2}, **QUIET)
        with np.errstate(all="ignore"), pytest.raises(TrainingDiverged) as err:
            s.train()
    assert err.value.iteration <= 4  # the first epoch's batches hold image 17 once
    assert all(np.isfinite(p).all() for p in model.params.values())  # the best params are back


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_stops_and_keeps_best_params(bad):
    data = make_data()
    model = NaNAtCall(bad_call=7, bad_value=bad)  # 4 iterations per epoch: inside epoch 2
    s = Solver(model, data, optim_config={"learning_rate": 0.1}, batch_size=50, num_epochs=5, seed=0, **QUIET)
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf|-inf) at iteration 7 \(epoch 2\)") as err:
        s.train()
    assert isinstance(err.value, RuntimeError)
    assert err.value.iteration == 7 and err.value.epoch == 1
    assert "best params" in str(err.value)
    assert_params_equal(model.params, s.best_params)
    assert s.best_val_acc == max(s.val_acc_history)
    assert s.epoch == 1 and len(s.history) == 1 and len(s.loss_history) == 7


def test_divergence_restores_the_batchnorm_statistics_of_the_best_params(tmp_path):
    class BNNaN(BNDropoutNet):
        def loss(self, X, y=None):
            out = super().loss(X, y)
            if y is not None and len(self.seen) == 10:
                return float("nan"), out[1]
            if y is not None:
                self.seen.append(1)
            return out

    data = make_data()
    model = BNNaN()
    model.seen = []
    s = Solver(model, data, **run_kwargs(tmp_path, "bn", num_epochs=4))  # 6 iterations per epoch
    with pytest.raises(TrainingDiverged, match="iteration 11"):
        s.train()
    best = load_checkpoint(tmp_path / f"bn_epoch_{s._best_epoch}.pkl")
    assert_params_equal(model.params, best["params"])
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(model.bn_params[0][key], best["bn_params"][0][key])
    # the live statistics had moved on for several more iterations; the restore undid that
    assert s._best_epoch in (0, 1)


def test_real_divergence_before_any_best():
    data = make_data()
    model = SoftmaxRegression(reg=0.0)
    s = Solver(model, data, optim_config={"learning_rate": 1e308}, batch_size=50, num_epochs=2, seed=0, **QUIET)
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="iteration 2") as err:
        s.train()
    # after iteration 1 (the cs231n accuracy check) best_params exist and are restored
    assert_params_equal(model.params, s.best_params)
    assert "val acc" in str(err.value)


# ----------------------------------------------------------------------------- output


def test_silent_unless_verbose(capfd):
    data = make_data()
    Solver(SoftmaxRegression(), data, batch_size=50, num_epochs=2, seed=0, verbose=False).train()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    Solver(SoftmaxRegression(), data, batch_size=50, num_epochs=2, seed=0, print_every=3, verbose=True).train()
    out, err = capfd.readouterr()
    assert "(Iteration 1 / 8) loss:" in out and "(Iteration 4 / 8) loss:" in out
    assert "(Iteration 2 / 8)" not in out
    assert "(Epoch 0 / 2) train acc:" in out and "(Epoch 2 / 2) train acc:" in out
    assert "8/8" in err  # the tqdm bar
    Solver(SoftmaxRegression(), data, batch_size=50, num_epochs=1, seed=0, print_every=None, verbose=True).train()
    out, _ = capfd.readouterr()
    assert "Iteration" not in out and "(Epoch 1 / 1)" in out


# ----------------------------------------------------------------------------- issue 11: bad settings and labels


@pytest.mark.parametrize("lr,exc", [(float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),
                                    (-0.1, ValueError), ("0.1", TypeError), (True, TypeError)])
def test_bad_learning_rate_is_rejected_up_front(lr, exc):
    with pytest.raises(exc, match=r"Solver: optim_config\['learning_rate'\] must be (finite and in \[0, inf\)|a real number)"):
        Solver(SoftmaxRegression(), make_data(), optim_config={"learning_rate": lr}, **QUIET)


def test_optim_config_is_checked_against_the_rule_up_front():
    with pytest.raises(ValueError, match=r"adam: unknown config keys \['lr'\]"):
        Solver(SoftmaxRegression(), make_data(), update_rule="adam", optim_config={"lr": 0.1}, **QUIET)
    with pytest.raises(ValueError, match=r"adam: config\['beta1'\]"):
        Solver(SoftmaxRegression(), make_data(), update_rule="adam", optim_config={"beta1": 1.0}, **QUIET)


class NaNParamsAfter(SoftmaxRegression):
    """Its loss is finite but the update rule's step poisons W after `bad_call` calls."""

    def __init__(self, bad_call, **kw):
        super().__init__(**kw)
        self.bad_call, self.calls = bad_call, 0

    def loss(self, X, y=None):
        out = super().loss(X, y)
        if y is None:
            return np.nan_to_num(out)
        self.calls += 1
        if self.calls >= self.bad_call:
            loss, grads = out
            grads["W"] = np.full_like(grads["W"], np.inf)
            return 1.0, grads
        return out


def test_non_finite_params_are_never_kept_as_best():
    data = make_data()
    data["y_val"][:] = 0  # poisoned params score every sample as class 0: val acc 1.0, "better" than any
    model = NaNParamsAfter(bad_call=5)  # 4 iterations per epoch: W is inf from the second epoch on
    s = Solver(model, data, optim_config={"learning_rate": 0.1}, batch_size=50, num_epochs=3, seed=0, **QUIET)
    with np.errstate(invalid="ignore"):
        s.train()
    assert s.val_acc_history[-1] == 1.0 and s.best_val_acc < 1.0 and s._best_epoch in (0, 1)
    assert all(np.isfinite(v).all() for v in s.best_params.values())
    assert np.isfinite(model.params["W"]).all()  # train() ended by restoring the finite best


def test_nan_negative_and_out_of_range_labels_are_clear_errors():
    data = make_data()
    bad = dict(data, y_val=data["y_val"].astype(float))
    bad["y_val"][3] = np.nan
    with pytest.raises(ValueError, match=r"Solver: y_val must hold integer class labels, got nan at index 3"):
        Solver(SoftmaxRegression(), bad, **QUIET)
    bad = dict(data, y_train=data["y_train"] - 1)
    with pytest.raises(ValueError, match=r"Solver: y_train must hold class labels >= 0"):
        Solver(SoftmaxRegression(), bad, **QUIET)
    bad = dict(data, y_val=data["y_val"][:, None])
    with pytest.raises(ValueError, match=r"y_val must be a 1-D array"):
        Solver(SoftmaxRegression(), bad, **QUIET)
    bad = dict(data, y_val=data["y_val"].astype(str))
    with pytest.raises(TypeError, match="y_val must hold integer class labels"):
        Solver(SoftmaxRegression(), bad, **QUIET)
    bad = dict(data, y_val=data["y_val"] + 5)  # 3 classes
    s = Solver(SoftmaxRegression(), bad, batch_size=50, num_epochs=1, seed=0, **QUIET)
    with pytest.raises(ValueError, match=r"y holds label 7, but the model scores only 3 classes"):
        s.train()
    with pytest.raises(ValueError, match=r"check_accuracy: y must have shape \(60,\)"):
        s.check_accuracy(data["X_val"], data["y_val"][:10])
    for kwargs, exc in (({"batch_size": 0}, ValueError), ({"batch_size": 2.5}, TypeError),
                        ({"num_samples": 0}, ValueError), ({"num_samples": -3}, ValueError)):
        with pytest.raises(exc, match=f"^Solver.check_accuracy: {next(iter(kwargs))} must be an int >= 1"):
            s.check_accuracy(data["X_val"], data["y_val"], **kwargs)
    # integral float labels keep working, as they did, for training too (the models take integers)
    ok = dict(data, y_val=data["y_val"].astype(np.float64), y_train=data["y_train"].astype(np.float32))
    s = Solver(SoftmaxRegression(), ok, batch_size=50, num_epochs=1, seed=0, **QUIET)
    s.train()
    assert 0 <= s.best_val_acc <= 1 and s.y_train.dtype == np.int64
    from funkcije.classifiers import FullyConnectedNet

    fc = FullyConnectedNet([5], input_dim=data["X_train"][0].size, num_classes=3, seed=0)
    Solver(fc, ok, batch_size=50, num_epochs=1, seed=0, **QUIET).train()  # refused float labels before
