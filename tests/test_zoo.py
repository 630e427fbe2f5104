"""The model zoo: gradients (float64, reference layers), PyTorch twins, parameter counts,
the summary table, overfitting real CIFAR-10 images, and the command lines."""
import os
import subprocess
import sys

import numpy as np
import pytest

from funkcije import config
from funkcije.classifiers import VGG7, VGG7BN, FastCifarNet, FERCifarNet, FERMnistNet, ResNet9, ThreeLayerConvNet, summary
from funkcije.classifiers.zoo import ZOO, build
from funkcije.gradient_check import rel_error
from funkcije.solver import Solver

ZOO_SMALL = {
    "fer_mnist": lambda **kw: FERMnistNet(**kw),
    "fer_cifar": lambda **kw: FERCifarNet(**kw),
    "vgg7": lambda **kw: VGG7(width=1 / 16, **kw),
    "vgg7bn": lambda **kw: VGG7BN(width=1 / 16, **kw),
    "resnet9": lambda **kw: ResNet9(width=1 / 16, **kw),
    "fast_cifar": lambda **kw: FastCifarNet(width=1 / 16, **kw),
    "fast_cifar_gelu": lambda **kw: FastCifarNet(width=1 / 16, activation="gelu", **kw),
}


def _sparse_check(f, x, grad, num_checks, rng, h=1e-5):
    """grad_check_sparse's centred differences at random elements, skipping the rare
    element whose step crosses a kink (ReLU at 0, a max-pool switch): there the
    one-sided slopes disagree and no finite difference measures the derivative.
    Returns the relative errors of the checked elements and the number skipped."""
    errors, skipped = [], 0
    while len(errors) < num_checks:
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        old = x[ix]
        f0 = f()
        x[ix] = old + h
        fp = f()
        x[ix] = old - h
        fm = f()
        x[ix] = old
        if abs(fp - 2 * f0 + fm) > 1e-9 * max(1.0, abs(f0)):
            skipped += 1
            assert skipped <= num_checks, "too many kinks: the check would measure nothing"
            continue
        num = (fp - fm) / (2 * h)
        errors.append(abs(num - grad[ix]) / max(1e-12, abs(num) + abs(grad[ix])))
    return errors, skipped


def _off_the_identity(name, model):
    """FastCifarNet's convolutions start as the identity (dirac=True): their outputs then
    repeat the ReLU's exact zeros, max-pool windows tie, and a step of any such weight
    crosses a tie (a kink) — and batch norm's scale invariance makes the identity taps'
    gradients exactly zero. A small fixed perturbation of the conv weights gives the
    generic point that training reaches after its first step."""
    if not name.startswith("fast_cifar"):
        return
    noise = np.random.default_rng(7)
    for k, p in model.params.items():
        if p.ndim == 4:
            p += 0.05 * noise.standard_normal(p.shape)


@pytest.mark.parametrize("name", sorted(ZOO_SMALL))
def test_zoo_gradient_check(name, rng):
    model = ZOO_SMALL[name](dtype=np.float64, seed=0, init="torch", reg=1e-2)
    _off_the_identity(name, model)
    X = rng.standard_normal((2,) + model.input_shape)
    y = np.array([1, 7])
    with config.using(layers="reference"):
        loss, grads = model.loss(X, y)
        assert set(grads) == set(model.params)
        for k, p in model.params.items():
            errors, _ = _sparse_check(lambda: model.loss(X, y)[0], p, grads[k], 3, rng)
            assert max(errors) < 1e-6, (k, errors)
    fast_loss, fast_grads = model.loss(X, y)
    assert abs(fast_loss - loss) < 1e-12
    for k in grads:
        assert rel_error(fast_grads[k], grads[k]) < 1e-8, k


@pytest.mark.parametrize("name", sorted(ZOO_SMALL))
def test_zoo_initial_loss(name, rng):
    X = rng.standard_normal((20,) + ZOO_SMALL[name](seed=0).input_shape).astype(np.float32)
    y = rng.integers(0, 10, 20)
    small = ZOO_SMALL[name](seed=0, init=("gaussian", 1e-3))
    loss, _ = small.loss(X, y)
    assert abs(loss - np.log(10)) < 2e-3  # scores near zero: the softmax is uniform
    torch_init = ZOO_SMALL[name](seed=0, init="torch")
    assert abs(torch_init.loss(X, y)[0] - np.log(10)) < 0.35  # PyTorch's default init: nearly uniform


def test_resnet9_out_scale_multiplies_the_scores(rng):
    X = rng.standard_normal((2, 3, 32, 32))
    plain = ResNet9(width=1 / 16, seed=3, dtype=np.float64)
    scaled = ResNet9(width=1 / 16, seed=3, dtype=np.float64, out_scale=0.125)
    assert type(scaled.layers[-1]).__name__ == "Scale" and scaled.num_params() == plain.num_params()
    np.testing.assert_allclose(scaled.loss(X), 0.125 * plain.loss(X), rtol=1e-12)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ResNet9: out_scale must be finite and in"):
            ResNet9(width=1 / 16, out_scale=bad)
    for bad in (True, "x", None):
        with pytest.raises(TypeError, match="ResNet9: out_scale must be a real number"):
            ResNet9(width=1 / 16, out_scale=bad)


def test_fast_cifar_activation():
    kinds = [type(layer).__name__ for layer in FastCifarNet(width=1 / 16, activation="gelu", seed=0).layers]
    assert kinds.count("GELU") == 7 and "ReLU" not in kinds
    assert [type(layer).__name__ for layer in FastCifarNet(width=1 / 16, seed=0).layers].count("ReLU") == 7
    for bad in ("tanh", "GELU"):
        with pytest.raises(ValueError, match="FastCifarNet: activation must be one of 'relu', 'gelu', got"):
            FastCifarNet(activation=bad)
    for bad in (None, 1, b"gelu"):
        with pytest.raises(TypeError, match=r"FastCifarNet: activation must be one of 'relu', 'gelu' \(a str\)"):
            FastCifarNet(activation=bad)


def test_zoo_train_and_test_modes(rng):
    model = VGG7BN(width=1 / 16, dtype=np.float64, seed=0)
    X = rng.standard_normal((4, 3, 32, 32))
    y = np.array([0, 1, 2, 3])
    before = [s["running_mean"].copy() for s in model.bn_params]
    s_test = model.loss(X)
    assert all(np.array_equal(a, s["running_mean"]) for a, s in zip(before, model.bn_params))
    model.loss(X, y)
    assert all(not np.array_equal(a, s["running_mean"]) for a, s in zip(before, model.bn_params))
    # the running statistics moved, so the test-mode scores move too; batch statistics don't depend on them
    assert not np.allclose(model.loss(X), s_test)


TWIN_MODELS = {"vgg7bn": VGG7BN, "resnet9": ResNet9, "fast_cifar": FastCifarNet,
               "fast_cifar_gelu": lambda **kw: FastCifarNet(activation="gelu", **kw)}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TWIN_MODELS))
def test_zoo_torch_twin(name, torch, rng):
    from funkcije.torch_twin import to_torch, torch_grads

    model = TWIN_MODELS[name](width=1 / 8, dtype=np.float64, seed=1, init="torch", unbiased_running_var=True)
    _off_the_identity(name, model)
    twin = to_torch(model)
    # trainable parameters: PatchWhiten's filters and a fixed BN scale are frozen in the twin too
    assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == model.num_params()
    X = rng.standard_normal((5, 3, 32, 32))
    y = rng.integers(0, 10, 5)
    twin.train()
    scores_t = twin(torch.from_numpy(X))
    loss_t = torch.nn.functional.cross_entropy(scores_t, torch.from_numpy(y))
    loss_t.backward()
    # the training-mode scores (batch statistics) without touching the model's state
    import copy

    probe = copy.deepcopy(model)
    scores, _ = probe.forward(X, train=True)
    assert rel_error(scores, scores_t.detach().numpy()) < 1e-8
    loss, grads = model.loss(X, y)
    assert abs(loss - loss_t.item()) < 1e-12
    tg = torch_grads(model, twin)
    for k in model.params:
        assert rel_error(grads[k], tg[k]) < 1e-8, k
    bns = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(model.bn_params)
    for m, st in zip(bns, model.bn_params):
        np.testing.assert_allclose(st["running_mean"], m.running_mean.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(st["running_var"], m.running_var.numpy(), rtol=1e-12, atol=1e-15)
    twin.eval()
    assert rel_error(model.loss(X), twin(torch.from_numpy(X)).detach().numpy()) < 1e-8


@pytest.mark.torch
def test_torch_twin_of_every_other_layer_kind(torch, rng):
    """The layer kinds the zoo does not use (group and layer norm, leaky ReLU, sigmoid,
    tanh, average pooling, global average pooling, dropout that keeps everything,
    convolutions without bias, grouped and dilated, an Affine over (C, H, W)) have twins
    that give the same scores, loss and gradients."""
    from funkcije.classifiers.sequential import (
        Affine, AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool, GroupNorm, LayerNorm, LeakyReLU, MaxPool2d,
        Sequential, Sigmoid, Tanh)
    from funkcije.torch_twin import to_torch, torch_grads, torch_params

    def model(head):
        return Sequential(
            Conv2d(6, 3, pad=1, bias=False), GroupNorm(3), LeakyReLU(0.1), AvgPool2d(2),
            Conv2d(6, (3, 2), pad=(2, 1), dilation=(2, 1), groups=2), Sigmoid(), MaxPool2d(2, stride=1),
            Conv2d(8, 1), Tanh(), *head, input_shape=(2, 8, 8), dtype=np.float64, seed=3)

    for head in ([GlobalAvgPool(), LayerNorm(), Dropout(1.0), Affine(5)], [Affine(5)]):
        m = model(head)
        twin = to_torch(m)
        assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == m.num_params()
        assert all(np.array_equal(v, m.params[k]) for k, v in torch_params(m, twin).items())
        X, y = rng.standard_normal((4, 2, 8, 8)), rng.integers(0, 5, 4)
        twin.train()
        scores_t = twin(torch.from_numpy(X))
        loss_t = torch.nn.functional.cross_entropy(scores_t, torch.from_numpy(y))
        loss_t.backward()
        assert rel_error(m.loss(X), scores_t.detach().numpy()) < 1e-10
        loss, grads = m.loss(X, y)
        assert abs(loss - loss_t.item()) < 1e-12
        tg = torch_grads(m, twin)
        assert set(tg) == set(grads)
        for k in grads:
            assert rel_error(grads[k], tg[k]) < 1e-8, k


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_parameter_counts_equal_torch(name, torch):
    from funkcije.torch_twin import to_torch

    model = build(name, seed=0)
    twin = to_torch(model)
    # trainable parameters: PatchWhiten's filters and a fixed BN scale are frozen in the twin too
    assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == model.num_params()


def test_zoo_parameter_counts():
    # the FER lab's own figures, and the counts of the architectures as specified
    assert FERMnistNet(seed=0).num_params() == 416 + 12_832 + 803_328 + 5_130 == 821_706
    assert FERCifarNet(seed=0).num_params() == (16 * 75 + 16) + (32 * 400 + 32) + (1568 * 256 + 256) \
        + (256 * 128 + 128) + (128 * 10 + 10)
    convs = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
    vgg = sum(9 * a * b + b for a, b in convs) + 512 * 512 + 512 + 5130
    assert VGG7(seed=0).num_params() == vgg
    assert VGG7BN(seed=0).num_params() == vgg - sum(b for _, b in convs) + sum(2 * b for _, b in convs)
    res = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
    assert ResNet9(seed=0).num_params() == sum(9 * a * b + 2 * b for a, b in res) + 512 * 512 + 512 + 5130
    small = VGG7(width=1 / 16, seed=0)
    assert small.params["conv1.W"].shape == (4, 3, 3, 3) and small.params["conv5.W"].shape == (32, 32, 3, 3)
    with pytest.raises(ValueError, match="VGG7: width must be finite and in"):
        VGG7(width=0)
    with pytest.raises(TypeError, match="FastCifarNet: width must be a real number"):
        FastCifarNet(width="1/2")
    with pytest.raises(ValueError, match="unknown model"):
        build("alexnet")


def test_summary_reproduces_the_fer_table():
    s = summary(FERMnistNet(seed=0), batch_size=50)
    rows = {r.name: r for r in s.rows}
    assert [r.name for r in s.rows] == ["conv1", "pool1", "relu1", "conv2", "pool2", "relu2", "flatten1", "fc1",
                                        "relu3", "fc2"]
    assert [rows[n].params for n in ("conv1", "conv2", "fc1", "fc2")] == [416, 12_832, 803_328, 5_130]
    assert s.total_params == 821_706
    assert [rows[n].receptive_field for n in ("conv1", "pool1", "conv2", "pool2")] == [(5, 5), (6, 6), (14, 14),
                                                                                      (16, 16)]
    assert [rows[n].jump for n in ("conv1", "pool1", "conv2", "pool2")] == [(1, 1), (2, 2), (2, 2), (4, 4)]
    assert rows["fc1"].receptive_field is None
    assert round(s.param_bytes / 2**20, 2) == 3.13
    assert rows["conv1"].output_shape == (50, 16, 28, 28) and rows["fc1"].output_shape == (50, 512)
    # measured activation memory: conv1 keeps the input batch, pool1 its input and argmax positions
    assert rows["conv1"].activation_bytes == 50 * 28 * 28 * 4
    assert rows["pool1"].activation_bytes >= 50 * 16 * 28 * 28 * 4
    assert s.activation_bytes == sum(r.activation_bytes for r in s.rows)
    text = str(s)
    assert "821,706" in text and "3.13 MiB" in text


def test_summary_residual_and_scaling():
    s1 = summary(ResNet9(width=1 / 8, seed=0), batch_size=2)
    s2 = summary(ResNet9(width=1 / 8, seed=0), batch_size=4)
    assert [r.name for r in s1.rows if r.depth == 1] == [f"{k}{i}" for i in (3, 4) for k in ("conv", "bn", "relu")] \
        + [f"{k}{i}" for i in (7, 8) for k in ("conv", "bn", "relu")]
    res1 = next(r for r in s1.rows if r.name == "res1")
    assert res1.receptive_field == (14, 14) and res1.params == 2 * (16 * 16 * 9 + 32)
    # activation memory grows with the batch (parameters are excluded)
    assert 1.9 < s2.activation_bytes / s1.activation_bytes < 2.1
    with pytest.raises(TypeError, match="Sequential"):
        summary(ThreeLayerConvNet(seed=0))


def test_summary_of_nested_residual_blocks():
    from funkcije.classifiers import Affine, BatchNorm2d, Conv2d, Flatten, ReLU, Residual, Sequential

    m = Sequential(Conv2d(4, 3, pad=1), Residual(Conv2d(4, 3, pad=1), BatchNorm2d(),
                                                 Residual(Conv2d(4, 3, pad=1), ReLU())),
                   Flatten(), Affine(3), input_shape=(2, 6, 6), seed=0)
    s = summary(m, batch_size=2)
    rows = {r.name: r for r in s.rows}
    assert [r.depth for r in s.rows] == [0, 0, 1, 1, 1, 2, 2, 0, 0]
    assert rows["res2"].params == rows["conv3"].params == 4 * 4 * 9 + 4
    assert rows["res1"].params == rows["conv2"].params + rows["bn1"].params + rows["res2"].params
    assert sum(r.params for r in s.rows if r.depth == 0) == m.num_params() == s.total_params
    assert [rows[n].receptive_field for n in ("conv1", "conv2", "conv3", "res2", "res1")] == \
        [(3, 3), (5, 5), (7, 7), (7, 7), (7, 7)]


def test_summary_leaves_the_model_alone():
    model = VGG7BN(width=1 / 16, seed=0)
    before = {k: v.copy() for k, v in model.bn_params[0].items() if isinstance(v, np.ndarray)}
    summary(model, batch_size=3)
    for k, v in before.items():
        np.testing.assert_array_equal(model.bn_params[0][k], v)


def test_overfit_100_real_cifar_images_vgg7bn(data_root):
    from funkcije.data_utils import get_CIFAR10_data

    data = get_CIFAR10_data(num_training=100, num_validation=50, num_test=10)
    model = VGG7BN(width=1 / 4, seed=0)
    solver = Solver(model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")}, update_rule="adam",
                    optim_config={"learning_rate": 2e-3}, batch_size=25, num_epochs=25, seed=0, verbose=False,
                    num_train_samples=None)
    solver.train()
    acc = (model.loss(data["X_train"]).argmax(1) == data["y_train"]).mean()
    assert acc >= 0.95, (acc, solver.history[-1])


def _run(*args, env=None):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=full, timeout=600)


def test_summary_command_line():
    res = _run("funkcije.summary", "--model", "fer_mnist")
    assert res.returncode == 0, res.stderr
    assert "821,706" in res.stdout and "3.13 MiB" in res.stdout
    res = _run("funkcije.summary", "--model", "resnet9", "--width", "0.125", "--batch-size", "4")
    assert res.returncode == 0 and "res2" in res.stdout
    res = _run("funkcije.summary", "--model", "fer_mnist", "--width", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = _run("funkcije.summary", "--model", "vgg7", "--width", "inf")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "width must be finite" in res.stderr
    res = _run("funkcije.check_grads", "--seed", "-1")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--seed must be >= 0" in res.stderr


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--update-rule", "adamax"], "--update-rule"),
    (["--num-val", "0"], "--num-val"),
    (["--num-train", "0"], "--num-train"),
    (["--lr", "nan"], "--lr"),
    (["--model", "vgg7", "--width", "-1"], "--width"),
    (["--model", "three_layer", "--init", "torch"], "--init"),
    (["--model", "fer_mnist", "--width", "0.5"], "--width"),
    (["--resume", "/nonexistent/checkpoint_epoch_1.pkl"], "--resume"),
    (["--model", "alexnet"], "--model"),
    # the recipe's arguments
    (["--augment", "rotate"], "--augment"),
    (["--update-rule", "sgd", "--momentum", "0.9"], "--momentum does not apply"),
    (["--update-rule", "sgdw", "--weight-decay", "-1"], "--weight-decay"),
    (["--lr-schedule", "piecewise", "--lr-points", "0:1,x"], "--lr-points"),
    (["--label-smoothing", "1.5", "--model", "vgg7"], "--label-smoothing"),
    (["--label-smoothing", "0.1"], "zoo models"),
    (["--recipe", "nope"], "--recipe"),
    (["--warmup", "nan"], "--warmup"),
    (["--lr-mult", "bn*.beta"], "--lr-mult"),
    (["--lr-mult", "b=x"], "--lr-mult"),
    (["--onecycle", "1.5,0,0"], "--onecycle"),
    (["--onecycle", "0.3,0.1"], "--onecycle"),
    (["--lookahead", "5,0.8"], "--lookahead"),
    (["--lookahead", "0,0.8,3"], "--lookahead"),
    (["--lookahead", "2.5,0.8,3"], "--lookahead"),
    (["--lookahead", "5,1.5,3"], "--lookahead"),
    (["--model", "vgg7", "--out-scale", "0.125"], "--out-scale applies to resnet9"),
    (["--model", "resnet9", "--out-scale", "0"], "--out-scale"),
    (["--model", "vgg7", "--activation", "gelu"], "--activation applies to fast_cifar"),
    (["--model", "fast_cifar", "--activation", "tanh"], "--activation"),
    (["--tta", "rotate"], "--tta"),
    (["--model", "resnet9", "--device", "gpu"], "--device gpu"),
    (["--device", "gpu"], "--device gpu"),
    (["--tf32"], "--tf32 applies to --device gpu"),
    (["--update-rule", "sgd_momentum", "--momentum", "1"], "--momentum must be in"),
    (["--model", "fc", "--dropout-keep", "0"], "--dropout-keep"),
    (["--seed", "-1"], "--seed"),
    (["--lr-schedule", "cosine", "--lr-decay", "0.9"], "not both"),
    (["--snapshots", "-1"], "--snapshots"),
    (["--model", "fc", "--snapshots", "10"], "fc model has none"),
    (["--check-every", "0"], "--check-every"),
    (["--lr-schedule", "piecewise", "--lr-points", "0:1"], "needs at least two pairs"),
    (["--warmup", "1", "--lr-decay", "0.9"], "not both"),
    (["--num-test", "20000"], "at most the 10000 test images"),
    (["--num-train", "49500", "--num-val", "1000"], "exceed the 50000 training images"),
    (["--hidden-dims", "7"], "--hidden-dims applies to fc, not three_layer"),
    (["--model", "fer_mnist", "--num-filters", "3"], "--num-filters applies to three_layer"),
    (["--lr-points", "0:9"], "--lr-points applies to --lr-schedule piecewise, not none"),
])
def test_train_command_line_argument_errors(args, message):
    _assert_one_line_error(_run("funkcije.train", *args), message)


def _assert_one_line_error(res, message):
    """argparse's way: exit code 2 and one line on stderr that says what was wrong."""
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--model", "vgg7", "--width", "0.125", "--dataset", "fashion-mnist"],
     "--model vgg7 on fashion-mnist: VGG7: MaxPool2d: empty output"),
    (["--model", "vgg7bn", "--width", "0.125", "--lr-mult", "bnx*.beta=4"],
     "lr_multipliers pattern 'bnx*.beta' matches no parameter"),
])
def test_train_command_line_errors_found_with_the_data(data_root, tmp_path, args, message):
    """Errors only the data or the built model reveal: still one line and exit code 2."""
    _assert_one_line_error(_run("funkcije.train", *args, "--num-train", "100", "--num-val", "10", "--num-test", "10",
                                "--out", str(tmp_path), env={"FUNKCIJE_DATA": str(data_root)}), message)


def test_train_command_line_missing_data(tmp_path):
    res = _run("funkcije.train", "--epochs", "1", env={"FUNKCIJE_DATA": str(tmp_path)})
    assert res.returncode == 2 and "Traceback" not in res.stderr and "FUNKCIJE_DATA" in res.stderr


def test_train_command_line_resume_continues_the_run_it_names(data_root, tmp_path):
    """--resume without --epochs trains to the run's own epochs and evaluates on the
    run's own test images; the same run uninterrupted gives the same results; an
    argument that cannot apply to the run is refused before any data is loaded."""
    import json
    import shutil

    env = {"FUNKCIJE_DATA": str(data_root)}
    tiny = ["--model", "three_layer", "--num-filters", "4", "--hidden-dim", "20", "--num-train", "100",
            "--num-val", "50", "--num-test", "60", "--batch-size", "50", "--quiet"]
    res = _run("funkcije.train", *tiny, "--epochs", "3", "--out", str(tmp_path / "full"), env=env)
    assert res.returncode == 0, res.stderr
    part = tmp_path / "part"
    part.mkdir()
    for f in ("run_config.json", "checkpoint_epoch_1.pkl"):
        shutil.copy(tmp_path / "full" / f, part / f)
    res = _run("funkcije.train", "--resume", str(part / "checkpoint_epoch_1.pkl"), "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    assert "at epoch 1 of 3" in res.stdout and "on 60 images" in res.stdout
    full, resumed = (json.loads((d / "history.json").read_text()) for d in (tmp_path / "full", part))
    assert resumed["results"]["epochs"] == 3 and resumed["loss_history"] == full["loss_history"]
    assert resumed["results"]["test_acc"] == full["results"]["test_acc"]
    for bad, message in ((["--device", "gpu"], "three_layer is CPU-only"), (["--snapshots", "-1"], "--snapshots"),
                         (["--num-test", "0"], "--num-test")):
        _assert_one_line_error(_run("funkcije.train", "--resume", str(part / "checkpoint_epoch_3.pkl"), *bad, env=env),
                               message)
    res = _run("funkcije.train", "--resume", str(part / "checkpoint_epoch_3.pkl"), "--quiet", env=env)
    assert res.returncode == 0 and "nothing left to train" in res.stdout
    assert "checkpoint_epoch_*.pkl" not in res.stdout.splitlines()[-1]  # it wrote none


def test_train_command_line_zoo_model_on_real_data(data_root, tmp_path):
    out = tmp_path / "run"
    env = {"FUNKCIJE_DATA": str(data_root)}
    res = _run("funkcije.train", "--model", "fer_mnist", "--dataset", "fashion-mnist", "--epochs", "1",
               "--num-train", "300", "--num-val", "100", "--num-test", "200", "--batch-size", "50",
               "--update-rule", "sgd_momentum", "--lr", "0.05", "--quiet", "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr
    for f in ("history.json", "training.png", "filters.png", "confusion.png", "run_config.json"):
        assert (out / f).is_file(), f
    import json

    hist = json.loads((out / "history.json").read_text())
    assert hist["config"]["model"] == "fer_mnist" and hist["results"]["test_acc"] > 0.3
    res = _run("funkcije.train", "--model", "vgg7", "--width", "0.125", "--epochs", "0", "--num-train", "100",
               "--num-test", "100", "--quiet", "--out", str(tmp_path / "e0"), env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "e0" / "history.json").is_file()
