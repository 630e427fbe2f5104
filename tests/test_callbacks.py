"""Training callbacks: the Solver calls them at the right points, the built-in ones write
what they promise, and their state survives a checkpoint and resume. The models are tiny
(a 3x3 convolution on 6x6 images) so the whole file runs in seconds."""
import json
import math
import os
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.figure import Figure

from funkcije import layers, metrics, vis_utils
from funkcije.callbacks import Callback, EpochEvaluation, FilterSnapshots, Lookahead, TensorBoard, WeightHistograms
from funkcije.solver import Solver, load_checkpoint


class TinyConvNet:
    """conv (F filters 3x3, pad 1) - relu - affine - softmax, built on the reference
    layers only; the filter parameter is called `name` ('conv1.W' or cs231n's 'W1')."""

    def __init__(self, C=1, F=4, H=6, classes=3, name="conv1.W", seed=0):
        rng = np.random.default_rng(seed)
        self.w, self.b = name, name[:-1] + "b" if name.endswith("W") else name + "_b"
        self.params = {
            self.w: 0.3 * rng.standard_normal((F, C, 3, 3)),
            self.b: np.zeros(F),
            "fc.W": 0.1 * rng.standard_normal((F * H * H, classes)),
            "fc.b": np.zeros(classes),
        }

    def loss(self, X, y=None):
        p = self.params
        a, c1 = layers.conv_forward_naive(X, p[self.w], p[self.b], {"stride": 1, "pad": 1})
        r, c2 = layers.relu_forward(a)
        scores, c3 = layers.affine_forward(r, p["fc.W"], p["fc.b"])
        if y is None:
            return scores
        loss, d = layers.softmax_loss(scores, y)
        dr, dW, db = layers.affine_backward(d, c3)
        dx, dw, dbc = layers.conv_backward_naive(layers.relu_backward(dr, c2), c1)
        return loss, {self.w: dw, self.b: dbc, "fc.W": dW, "fc.b": db}


def _data(n_train=20, n_val=12, C=1, H=6, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_train + n_val, C, H, H))
    y = (X[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 0, 3:].sum(axis=(1, 2)) > 0)
    return {"X_train": X[:n_train], "y_train": y[:n_train], "X_val": X[n_train:], "y_val": y[n_train:]}


def _solver(callbacks, num_epochs=2, model=None, data=None, **kw):
    # 20 samples in batches of 5: 4 iterations an epoch
    kw = {"update_rule": "sgd_momentum", "optim_config": {"learning_rate": 0.05}, "batch_size": 5,
          "num_epochs": num_epochs, "verbose": False, "seed": 0, **kw}
    return Solver(model or TinyConvNet(), data or _data(), callbacks=callbacks, **kw)


class Recorder(Callback):
    """Writes down every hook call with what the solver says at that moment."""

    def __init__(self):
        self.calls = []

    def _note(self, hook, s):
        self.calls.append((hook, s.iteration, s.epoch, len(s.history)))

    def on_train_begin(self, s):
        self._note("begin", s)

    def on_iteration_end(self, s):
        self._note("iter", s)

    def on_epoch_end(self, s):
        self._note("epoch", s)

    def on_train_end(self, s):
        self._note("end", s)


class DuckRecorder:
    """Not a Callback subclass: the four hooks are enough."""

    def __init__(self):
        self.hooks = []

    def on_train_begin(self, s):
        self.hooks.append("begin")

    def on_iteration_end(self, s):
        self.hooks.append("iter")

    def on_epoch_end(self, s):
        self.hooks.append("epoch")

    def on_train_end(self, s):
        self.hooks.append("end")


# ----------------------------------------------------------------------------- the Solver's calls


def test_hooks_are_called_at_the_right_points():
    rec, duck = Recorder(), DuckRecorder()
    solver = _solver([rec, duck])
    solver.train()
    iters = [(it, ep, nh) for h, it, ep, nh in rec.calls if h == "iter"]
    # after every update; epoch is still the completed epochs (the epoch in progress - 1)
    assert iters == [(i, (i - 1) // 4, (i - 1) // 4) for i in range(1, 9)]
    # after the accuracy check and the history entry of the epoch
    assert [c for c in rec.calls if c[0] == "epoch"] == [("epoch", 4, 1, 1), ("epoch", 8, 2, 2)]
    assert rec.calls[0] == ("begin", 0, 0, 0) and rec.calls[-1] == ("end", 8, 2, 2)
    order = [h for h, *_ in rec.calls]
    assert order == ["begin"] + ["iter"] * 4 + ["epoch"] + ["iter"] * 4 + ["epoch", "end"]
    assert duck.hooks == order
    # nothing left to train: no hook runs
    solver.train()
    assert len(rec.calls) == len(order)


def test_callbacks_do_not_change_the_run():
    plain = _solver(None)
    plain.train()
    watched = _solver([Recorder(), EpochEvaluation(**{k: v for k, v in _data().items()}, num_samples=8)])
    watched.train()
    for k in plain.model.params:
        np.testing.assert_array_equal(plain.model.params[k], watched.model.params[k])
    assert plain.loss_history == watched.loss_history and plain.val_acc_history == watched.val_acc_history


def test_check_every_adds_accuracy_checks_within_epochs():
    plain = _solver(None)
    plain.train()
    solver = _solver(None, check_every=3)
    solver.train()
    # cs231n's checks (after the first update and at each epoch end) and every 3rd update
    assert solver.check_iterations == [1, 3, 4, 6, 8]
    assert plain.check_iterations == [1, 4, 8]
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 5
    assert len(solver.history) == 2
    # checks do not move the training trajectory
    assert plain.loss_history == solver.loss_history
    fig = vis_utils.plot_training(solver)
    acc = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(acc.get_xdata(), np.array([1, 3, 4, 6, 8]) / 4)
    with pytest.raises(ValueError, match="Solver: check_every"):
        _solver(None, check_every=0)


def test_check_every_is_checkpointed_and_a_checkpoint_plots_every_check(tmp_path):
    first = _solver(None, num_epochs=1, check_every=3, checkpoint_name=str(tmp_path / "ck"))
    first.train()
    path = str(tmp_path / "ck_epoch_1.pkl")
    ckpt = load_checkpoint(path)
    assert ckpt["check_every"] == 3 and ckpt["check_iterations"] == [1, 3, 4]
    fig = vis_utils.plot_training(ckpt)  # iterations per epoch from the checkpoint's num_train and batch_size
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_xdata(), [0.25, 0.75, 1.0])
    resumed = Solver(TinyConvNet(), _data(), resume=path, num_epochs=2, verbose=False)
    assert resumed.check_every == 3  # carried, as num_epochs would be
    resumed.train()
    assert resumed.check_iterations == [1, 3, 4, 6, 8]


# ----------------------------------------------------------------------------- FilterSnapshots


class WeightSpy(Callback):
    def __init__(self, name):
        self.name, self.seen = name, {}

    def on_train_begin(self, s):
        self.seen[s.iteration] = s.model.params[self.name].copy()

    def on_iteration_end(self, s):
        self.seen[s.iteration] = s.model.params[self.name].copy()


def test_filter_snapshots_files_named_and_sized(tmp_path):
    spy = WeightSpy("conv1.W")
    snaps = FilterSnapshots(tmp_path / "filters", every=3)
    _solver([spy, snaps]).train()
    names = ["conv1_epoch_01_step_000000.png", "conv1_epoch_01_step_000003.png",
             "conv1_epoch_02_step_000006.png", "conv1_epoch_02_step_000008.png"]  # 8: the end
    assert [os.path.basename(f) for f in snaps.files] == names
    assert snaps.steps == [0, 3, 6, 8] and snaps.epochs == [1, 1, 2, 2]
    for f, step in zip(snaps.files, snaps.steps):
        img = iio.imread(f)
        assert img.shape == (97, 97)  # 2 x 2 tiles of 3 x 3 filters magnified 16 times, 1 pixel apart
        np.testing.assert_array_equal(img, vis_utils.filter_grid(spy.seen[step]))
    assert sorted(os.listdir(tmp_path / "filters")) == sorted(names + ["conv1_snapshots.png"])
    fig = snaps.grid()
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "step 0 (epoch 1)", "step 3 (epoch 1)", "step 6 (epoch 2)", "step 8 (epoch 2)"]


def test_filter_snapshots_cs231n_names_and_a_chosen_layer(tmp_path):
    # cs231n's ThreeLayerConvNet calls its filters 'W1': the files are W1_epoch_..
    snaps = FilterSnapshots(tmp_path, every=4, layer="W1", grid_file=False)
    _solver([snaps], num_epochs=1, model=TinyConvNet(C=3, F=5, name="W1"), data=_data(C=3)).train()
    assert [os.path.basename(f) for f in snaps.files] == ["W1_epoch_01_step_000000.png", "W1_epoch_01_step_000004.png"]
    assert iio.imread(snaps.files[0]).shape == (3 * 48 + 2, 3 * 48 + 2, 3)  # RGB, 3 x 3 grid for 5 filters
    bad = FilterSnapshots(tmp_path, layer="fc.W")
    with pytest.raises(ValueError, match=r"FilterSnapshots: parameter 'fc.W' has shape \(144, 3\)"):
        _solver([bad]).train()
    with pytest.raises(ValueError, match="FilterSnapshots: the model has no parameter 'conv9.W'"):
        _solver([FilterSnapshots(tmp_path, layer="conv9.W")]).train()
    with pytest.raises(ValueError, match="FilterSnapshots: every must be an int >= 1"):
        FilterSnapshots(tmp_path, every=0)
    with pytest.raises(TypeError, match="FilterSnapshots: out_dir"):
        FilterSnapshots(None)


# ----------------------------------------------------------------------------- WeightHistograms


def test_weight_histograms_figure(tmp_path):
    path = tmp_path / "hist" / "weights.png"
    hist = WeightHistograms(path, bins=10)
    solver = _solver([hist], num_epochs=3)
    solver.train()
    assert hist.epochs == [0, 1, 2, 3]  # the initial weights, then every epoch end
    assert list(hist.histograms) == list(solver.model.params)
    for name, rows in hist.histograms.items():
        assert [e for e, _, _ in rows] == [0, 1, 2, 3]
        size = solver.model.params[name].size
        bins = min(10, 2 * math.isqrt(size))  # conv1.b: 4 values, 4 bins
        assert all(c.sum() == size and c.shape == (bins,) and x.shape == (bins + 1,) for _, c, x in rows)
    # a constant (the zero biases at the start) has all its edges at its value
    (_, c0, x0) = hist.histograms["conv1.b"][0]
    assert c0.tolist() == [0, 0, 0, 4] and np.all(x0 == 0.0)
    png = iio.imread(path)
    assert png.ndim == 3 and png.shape[0] > 100
    fig = hist.figure()
    assert [ax.get_title() for ax in fig.axes[:4]] == list(solver.model.params)
    assert len(fig.axes[0].patches) == 4  # one step curve per epoch
    # the zero biases of epoch 0 are said in words, not drawn as a spike that flattens epochs 1-3
    bias = fig.axes[1]
    assert len(bias.patches) == 3 and [t.get_text() for t in bias.texts] == ["epoch 0: all 4 = 0"]
    assert all(max(p.get_data().values) / bias.get_ylim()[1] > 0.6 for p in bias.patches)
    only = WeightHistograms(tmp_path / "w.png", params=["*.W"])
    _solver([only], num_epochs=1).train()
    assert list(only.histograms) == ["conv1.W", "fc.W"]
    with pytest.raises(ValueError, match=r"WeightHistograms: params \['bn\*'\] match no parameter"):
        _solver([WeightHistograms(tmp_path / "x.png", params=["bn*"])]).train()


# ----------------------------------------------------------------------------- EpochEvaluation


def test_epoch_evaluation_is_recorded_in_the_history():
    d = _data()
    ev = EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"], batch_size=7)
    solver = _solver([ev], num_val_samples=None)
    solver.train()
    assert len(ev.results) == 2
    for entry in solver.history:
        e = entry["eval"]
        assert set(e) == {"train", "val"}
        assert set(e["val"]) == {"loss", "accuracy", "precision", "recall", "f1", "macro_precision",
                                 "macro_recall", "macro_f1", "confusion"}
        assert len(e["val"]["precision"]) == len(e["val"]["recall"]) == 3
        assert np.sum(e["train"]["confusion"]) == 20 and np.sum(e["val"]["confusion"]) == 12
        # the whole validation set, with the epoch's params: the Solver's own val_acc
        assert e["val"]["accuracy"] == pytest.approx(entry["val_acc"])
        # and the Solver's per-epoch data losses: the same criterion on both splits, no penalty
        assert e["val"]["loss"] == pytest.approx(entry["val_loss"], rel=1e-12)
        assert e["train"]["loss"] == pytest.approx(entry["train_loss"], rel=1e-12)
        assert e["train"]["accuracy"] == pytest.approx(entry["train_acc"])
    json.dumps(solver.history)  # plain numbers only
    # the last epoch's numbers are the model's at that point (train() then restores best_params)
    r = metrics.evaluate(solver.model, d["X_val"], d["y_val"])
    if solver.best_epoch == 2:
        assert solver.history[-1]["eval"]["val"]["loss"] == pytest.approx(r.loss)
    # a fixed subset of num_samples
    sub = EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"], num_samples=5)
    assert sub.splits["train"][0].shape[0] == 5 and sub.splits["val"][0].shape[0] == 5
    with pytest.raises(ValueError, match=r"EpochEvaluation: y_val must have shape \(12,\)"):
        EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"][:3])
    with pytest.raises(ValueError, match="EpochEvaluation: num_samples"):
        EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"], num_samples=0)


# ----------------------------------------------------------------------------- checkpoint and resume


class Interrupt(Exception):
    pass


class StopAt(Callback):
    """Raises at one iteration: a crash in the middle of epoch 2."""

    def __init__(self, at=None):
        self.at = at

    def on_iteration_end(self, s):
        if s.iteration == self.at:
            raise Interrupt


def _watched(out, stop_at=None):
    d = _data()
    return [FilterSnapshots(out / "filters", every=3), WeightHistograms(out / "hist.png", bins=8),
            EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"], num_samples=10),
            StopAt(stop_at)]


def test_resumed_run_with_callbacks_equals_an_uninterrupted_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    full = _solver(_watched(a), num_epochs=3, checkpoint_name=str(a / "ck"))
    full.train()

    crashed = _solver(_watched(b, stop_at=6), num_epochs=3, checkpoint_name=str(b / "ck"))
    with pytest.raises(Interrupt):
        crashed.train()
    cbs = _watched(b)
    resumed = Solver(TinyConvNet(seed=5), _data(), resume=str(b / "ck_epoch_1.pkl"), callbacks=cbs, verbose=False)
    assert cbs[0].steps == [0, 3]  # restored from the checkpoint: the snapshots of epoch 1
    resumed.train()

    for k in full.model.params:
        np.testing.assert_array_equal(full.model.params[k], resumed.model.params[k])
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert all("eval" in h for h in resumed.history)
    fa, fb = full.callbacks[0], resumed.callbacks[0]
    assert [os.path.basename(f) for f in fa.files] == [os.path.basename(f) for f in fb.files]
    assert sorted(os.listdir(a / "filters")) == sorted(os.listdir(b / "filters"))
    for name in os.listdir(a / "filters"):  # the same pictures, byte for byte
        assert (a / "filters" / name).read_bytes() == (b / "filters" / name).read_bytes(), name
    ha, hb = full.callbacks[1], resumed.callbacks[1]
    assert ha.epochs == hb.epochs == [0, 1, 2, 3]
    for name in ha.histograms:
        for (ea, ca, xa), (eb, cb, xb) in zip(ha.histograms[name], hb.histograms[name]):
            assert ea == eb
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(xa, xb)
    assert (a / "hist.png").read_bytes() == (b / "hist.png").read_bytes()
    assert full.callbacks[2].results == resumed.callbacks[2].results


def test_resume_refuses_other_callbacks_and_runs_without_them(tmp_path):
    solver = _solver([FilterSnapshots(tmp_path / "f", every=4)], num_epochs=1, checkpoint_name=str(tmp_path / "ck"))
    solver.train()
    path = str(tmp_path / "ck_epoch_1.pkl")
    with pytest.raises(ValueError, match=r"Solver: checkpoint .* holds the state of the callbacks \['FilterSnapshots'\]"):
        Solver(TinyConvNet(), _data(), resume=path, callbacks=[WeightHistograms(tmp_path / "h.png")], verbose=False)
    # without callbacks the saved states are simply not used
    Solver(TinyConvNet(), _data(), resume=path, num_epochs=2, verbose=False).train()


def test_bad_callbacks_are_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match="Solver: callbacks must be a list"):
        _solver(FilterSnapshots(tmp_path))
    with pytest.raises(TypeError, match=r"Solver: callbacks\[1\] is a str, .* lacks the methods"):
        _solver([Recorder(), "snapshots"])
    with pytest.raises(TypeError, match=r"Solver: callbacks\[0\] is the class FilterSnapshots, not an instance"):
        _solver([FilterSnapshots])

    class Partial:
        def on_epoch_end(self, s):
            pass

    with pytest.raises(TypeError, match=r"lacks the methods \['on_train_begin', 'on_iteration_end', 'on_train_end'\]"):
        _solver([Partial()])


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_missing_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoard(tmp_path)


def test_tensorboard_writes_scalars_histograms_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d = _data()
    tb = TensorBoard(tmp_path / "tb", every=2)
    _solver([EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"]), tb]).train()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/learning_rate", "epoch/loss", "epoch/train_loss", "epoch/val_loss", "epoch/val_acc",
            "eval_val/macro_recall"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [4, 8]
    assert "params/conv1.W" in tags["histograms"]
    (img, _) = acc.Images("filters/conv1.W")
    assert (img.height, img.width) == (97, 97)



def test_tensorboard_logs_epoch_evaluation_before_or_after_it_in_the_list(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d = _data()
    logged = []
    for order in ("eval first", "tensorboard first"):
        ev, tb = EpochEvaluation(d["X_train"], d["y_train"], d["X_val"], d["y_val"]), TensorBoard(tmp_path / order)
        _solver([ev, tb] if order == "eval first" else [tb, ev]).train()
        acc = EventAccumulator(str(tmp_path / order), size_guidance={"scalars": 0})
        acc.Reload()
        tags = sorted(t for t in acc.Tags()["scalars"] if t.startswith("eval_"))
        logged.append({t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags})
    assert logged[0] == logged[1] and logged[0]["eval_val/accuracy"][-1][0] == 8  # both epochs, at their steps


# ----------------------------------------------------------------------------- the train command's flags


def _train(*args, env=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "funkcije.train", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=600)


def test_train_command_line_writes_the_pictures(data_root, tmp_path):
    out = tmp_path / "run"
    common = ["--model", "three_layer", "--dataset", "fashion-mnist", "--num-filters", "4", "--filter-size", "3",
              "--hidden-dim", "8", "--num-train", "100", "--num-val", "50", "--num-test", "50", "--batch-size", "25",
              "--quiet", "--snapshots", "2", "--histograms", "--check-every", "2"]
    res = _train(*common, "--epochs", "1", "--out", str(out), env={"FUNKCIJE_DATA": str(data_root)})
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(out / "filters")) == [
        "W1_epoch_01_step_000000.png", "W1_epoch_01_step_000002.png", "W1_epoch_01_step_000004.png", "W1_snapshots.png"]
    assert (out / "weights.png").is_file()
    hist = json.loads((out / "history.json").read_text())
    assert hist["check_iterations"] == [1, 2, 4] and hist["iterations_per_epoch"] == 4
    fig = vis_utils.plot_training(hist)  # history.json places every check
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_xdata(), [0.25, 0.5, 1.0])
    # resumed with the same flags: the pictures go on
    res = _train("--resume", str(out / "checkpoint_epoch_1.pkl"), "--epochs", "2", *common[-6:],
                 env={"FUNKCIJE_DATA": str(data_root)})
    assert res.returncode == 0, res.stderr
    assert "W1_epoch_02_step_000008.png" in os.listdir(out / "filters")
    bad = _train(*common[:-6], "--check-every", "0", env={"FUNKCIJE_DATA": str(data_root)})
    assert bad.returncode == 2 and "--check-every must be >= 1" in bad.stderr


# ----------------------------------------------------------------------------- lookahead


def _bn_net(dtype=np.float64):
    from funkcije.classifiers.sequential import Affine, BatchNorm2d, Conv2d, Flatten, ReLU, Sequential

    return Sequential(Conv2d(4, 3, pad=1), BatchNorm2d(), ReLU(), Flatten(), Affine(3),
                      input_shape=(1, 6, 6), seed=0, dtype=dtype)


class Probe(Callback):
    """Copies of the params and running statistics at each on_iteration_end."""

    def __init__(self):
        self.seen = []

    def on_iteration_end(self, s):
        self.seen.append(({k: v.copy() for k, v in s.model.params.items()},
                          [{k: d[k].copy() for k in ("running_mean", "running_var")} for d in s.model.bn_params]))


def test_lookahead_blends_by_hand_computed_weights():
    model = _bn_net()
    start = ({k: v.copy() for k, v in model.params.items()},
             [{k: d[k].copy() for k in ("running_mean", "running_var")} for d in model.bn_params])
    before, after = Probe(), Probe()
    solver = _solver([before, Lookahead(every=3, decay=0.6, power=2.0), after], model=model)
    solver.train()
    total = 8  # 2 epochs of 4 updates
    avg = start
    for t in range(1, total + 1):
        (w, bn), (w_out, bn_out) = before.seen[t - 1], after.seen[t - 1]
        if t % 3 == 0 or t == total:
            d = 0.6 * (t / total) ** 2 if t % 3 == 0 else None
            if d is not None:
                avg = ({k: d * avg[0][k] + (1 - d) * w[k] for k in w},
                       [{k: d * a[k] + (1 - d) * live[k] for k in a} for a, live in zip(avg[1], bn)])
            want = avg  # at t == total (not a multiple of 3) the weights become the average as it is
        else:
            want = (w, bn)
        for k in w:
            np.testing.assert_allclose(w_out[k], want[0][k], rtol=1e-12, atol=1e-14, err_msg=f"{k} at {t}")
        for a, b in zip(bn_out, want[1]):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=f"{k} at {t}")
    # the last update is not a blend point, so the end really moved the weights back
    assert not all(np.array_equal(before.seen[-1][0][k], after.seen[-1][0][k]) for k in w)


def test_lookahead_keeps_dtype_and_decay_zero_changes_nothing():
    plain = _solver(None, model=_bn_net(np.float32))
    plain.train()
    zero = _solver([Lookahead(every=1, decay=0.0)], model=_bn_net(np.float32))
    zero.train()
    for k in plain.model.params:
        assert zero.model.params[k].dtype == np.float32
        np.testing.assert_array_equal(plain.model.params[k], zero.model.params[k])
    moved = _solver([Lookahead(every=2, decay=0.9, power=0.0)], model=_bn_net(np.float32))
    moved.train()
    assert all(v.dtype == np.float32 for v in moved.model.params.values())
    assert all(d["running_mean"].dtype == np.float32 for d in moved.model.bn_params)
    assert not all(np.array_equal(plain.model.params[k], moved.model.params[k]) for k in plain.model.params)


def test_lookahead_resumes_exactly(tmp_path):
    full = _solver([Lookahead(every=3, decay=0.7)], model=_bn_net(), num_epochs=3,
                   checkpoint_name=str(tmp_path / "a"))
    full.train()
    crashed = _solver([Lookahead(every=3, decay=0.7), StopAt(6)], model=_bn_net(), num_epochs=3,
                      checkpoint_name=str(tmp_path / "b"))
    with pytest.raises(Interrupt):
        crashed.train()
    resumed = Solver(_bn_net(), _data(), resume=str(tmp_path / "b_epoch_1.pkl"),
                     callbacks=[Lookahead(every=3, decay=0.7), StopAt(None)], verbose=False)
    resumed.train()
    for k in full.model.params:
        np.testing.assert_array_equal(full.model.params[k], resumed.model.params[k])
    for a, b in zip(full.model.bn_params, resumed.model.bn_params):
        np.testing.assert_array_equal(a["running_var"], b["running_var"])
    assert full.loss_history == resumed.loss_history


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"every": 0}, ValueError, "every must be an int >= 1"),
    ({"every": 2.5}, TypeError, "every must be an int >= 1"),
    ({"decay": 1.5}, ValueError, r"decay must be finite and in \[0, 1\]"),
    ({"decay": float("nan")}, ValueError, "decay must be finite"),
    ({"power": -1}, ValueError, r"power must be finite and in \[0, inf\)"),
    ({"decay": True}, TypeError, "decay must be a real number"),
])
def test_lookahead_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Lookahead(**kwargs)
