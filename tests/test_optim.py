"""Update rules against steps computed by hand (scalar Python arithmetic, one
coordinate at a time, independent of the vectorised NumPy code)."""
import math

import numpy as np
import pytest

from funkcije import optim
from funkcije.optim import adam, get_update_rule, rmsprop, sgd, sgd_momentum

W = [1.0, -2.0, 0.5, 3.0]
DW = [0.5, 0.25, -4.0, 0.0]


def arr(values, dtype=np.float64):
    return np.array(values, dtype=dtype)


def test_sgd_hand_computed():
    next_w, config = sgd(arr(W), arr(DW), {"learning_rate": 0.1})
    # w - 0.1 * dw, coordinate by coordinate
    np.testing.assert_array_equal(next_w, arr([0.95, -2.025, 0.9, 3.0]))
    assert config == {"learning_rate": 0.1}


def test_sgd_momentum_two_steps_hand_computed():
    config = {"learning_rate": 0.1, "momentum": 0.5, "velocity": arr([1.0, 0.0, -1.0, 2.0])}
    w1, config = sgd_momentum(arr(W), arr(DW), config)
    # v = 0.5 v - 0.1 dw = [0.45, -0.025, -0.1, 1.0]; w + v
    np.testing.assert_allclose(config["velocity"], [0.45, -0.025, -0.1, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w1, [1.45, -2.025, 0.4, 4.0], rtol=0, atol=1e-15)
    w2, config = sgd_momentum(w1, arr(DW), config)
    # v = 0.5 * [0.45, -0.025, -0.1, 1.0] - 0.1 dw = [0.175, -0.0375, 0.35, 0.5]
    np.testing.assert_allclose(config["velocity"], [0.175, -0.0375, 0.35, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w2, [1.625, -2.0625, 0.75, 4.5], rtol=0, atol=1e-15)


def test_rmsprop_two_steps_hand_computed():
    lr, decay, eps = 0.01, 0.9, 1e-8
    config = {"learning_rate": lr, "decay_rate": decay, "epsilon": eps}
    w = arr(W)
    w_ref, cache_ref = list(W), [0.0] * 4
    for dw_scale in (1.0, -2.0):
        dw = [dw_scale * d for d in DW]
        w, config = rmsprop(w, arr(dw), config)
        for i in range(4):
            cache_ref[i] = decay * cache_ref[i] + (1 - decay) * dw[i] ** 2
            w_ref[i] -= lr * dw[i] / (math.sqrt(cache_ref[i]) + eps)
        np.testing.assert_allclose(config["cache"], cache_ref, rtol=1e-14, atol=0)
        np.testing.assert_allclose(w, w_ref, rtol=1e-14, atol=0)
    # first step by hand, coordinate 0: cache = 0.1 * 0.25 = 0.025,
    # step = 0.01 * 0.5 / (sqrt(0.025) + 1e-8) = 0.0316227746...
    first, _ = rmsprop(arr(W), arr(DW), {"learning_rate": lr, "decay_rate": decay, "epsilon": eps})
    assert first[0] == pytest.approx(1.0 - 0.5 * 0.01 / (math.sqrt(0.025) + 1e-8), rel=1e-12)


def test_adam_three_steps_hand_computed():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    config = {"learning_rate": lr}
    w = arr(W)
    w_ref, m_ref, v_ref = list(W), [0.0] * 4, [0.0] * 4
    for t, dw_scale in enumerate((1.0, 0.5, -3.0), start=1):
        dw = [dw_scale * d for d in DW]
        w, config = adam(w, arr(dw), config)
        for i in range(4):
            m_ref[i] = b1 * m_ref[i] + (1 - b1) * dw[i]
            v_ref[i] = b2 * v_ref[i] + (1 - b2) * dw[i] ** 2
            m_hat = m_ref[i] / (1 - b1**t)
            v_hat = v_ref[i] / (1 - b2**t)
            w_ref[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        assert config["t"] == t
        np.testing.assert_allclose(config["m"], m_ref, rtol=1e-14, atol=0)
        np.testing.assert_allclose(config["v"], v_ref, rtol=1e-14, atol=0)
        np.testing.assert_allclose(w, w_ref, rtol=1e-13, atol=1e-15)


def test_adam_first_step_is_bias_corrected():
    # With bias correction m_hat = dw and v_hat = dw**2 on step 1, so every
    # coordinate with a non-zero gradient moves by learning_rate * sign(dw).
    next_w, config = adam(arr(W), arr(DW), {"learning_rate": 0.1})
    np.testing.assert_allclose(next_w, [0.9, -2.1, 0.6, 3.0], rtol=0, atol=1e-8)
    assert config["t"] == 1


def test_adam_step_counter_is_per_config():
    rng = np.random.default_rng(0)
    w_a, w_b = rng.standard_normal(3), rng.standard_normal((2, 2))
    cfg_a, cfg_b = {}, {}
    for _ in range(3):
        w_a, cfg_a = adam(w_a, rng.standard_normal(3), cfg_a)
    w_b, cfg_b = adam(w_b, rng.standard_normal((2, 2)), cfg_b)
    assert (cfg_a["t"], cfg_b["t"]) == (3, 1)


@pytest.mark.parametrize(
    "rule, expected",
    [
        (sgd, {"learning_rate": 1e-2}),
        (sgd_momentum, {"learning_rate": 1e-2, "momentum": 0.9}),
        (rmsprop, {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8}),
        (adam, {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 1}),
    ],
)
def test_cs231n_defaults(rule, expected):
    w, dw = arr(W), arr(DW)
    _, config = rule(w, dw)
    for key, value in expected.items():
        assert config[key] == value and type(config[key]) is type(value), key
    state = set(config) - set(expected)
    assert state == set(optim._STATE_KEYS[rule.__name__])
    for key in state:
        assert config[key].shape == w.shape


def test_defaults_give_cs231n_first_steps():
    w, dw = arr(W), arr(DW)
    np.testing.assert_allclose(sgd(w, dw)[0], w - 1e-2 * dw, rtol=1e-15)
    np.testing.assert_allclose(sgd_momentum(w, dw)[0], w - 1e-2 * dw, rtol=1e-15)
    # rmsprop step 1: cache = 0.01 dw^2, step = 0.01 * dw / (0.1 |dw| + eps) ~ 0.1 sign(dw)
    np.testing.assert_allclose(rmsprop(w, dw)[0], w - 0.1 * np.sign(dw), atol=1e-7)
    np.testing.assert_allclose(adam(w, dw)[0], w - 1e-3 * np.sign(dw), atol=1e-8)


@pytest.mark.parametrize("rule", [sgd, sgd_momentum, rmsprop, adam])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_over_steps(rule, dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4)).astype(dtype)
    config = {"learning_rate": np.float64(0.05)}  # a NumPy float64 must not upcast float32
    for _ in range(3):
        w, config = rule(w, rng.standard_normal((3, 4)).astype(dtype), config)
        assert w.dtype == dtype
        for key in optim._STATE_KEYS[rule.__name__]:
            assert config[key].dtype == dtype


@pytest.mark.parametrize("rule", [sgd, sgd_momentum, rmsprop, adam])
def test_inputs_not_modified(rule):
    w, dw = arr(W), arr(DW)
    _, config = rule(w, dw)
    state = {k: v.copy() for k, v in config.items() if isinstance(v, np.ndarray)}
    passed = dict(config)
    next_w, new_config = rule(w, dw, passed)
    np.testing.assert_array_equal(w, W)
    np.testing.assert_array_equal(dw, DW)
    assert passed == config  # the dict passed in is not mutated either
    for k, v in state.items():
        np.testing.assert_array_equal(config[k], v)
    assert next_w is not w


def test_bad_input_errors():
    w = arr(W)
    with pytest.raises(ValueError, match="dw must have w's shape"):
        sgd(w, arr([1.0, 2.0]))
    with pytest.raises(TypeError, match="share one dtype"):
        adam(w, arr(DW, np.float32))
    with pytest.raises(TypeError, match="floating"):
        sgd(np.arange(4), np.arange(4))
    with pytest.raises(ValueError, match=r"unknown config keys \['learning rate'\]"):
        sgd(w, arr(DW), {"learning rate": 0.1})
    with pytest.raises(ValueError, match="velocity"):
        sgd_momentum(w, arr(DW), {"velocity": np.zeros(3)})
    with pytest.raises(TypeError, match="learning_rate"):
        sgd(w, arr(DW), {"learning_rate": "0.1"})


def test_registry():
    assert set(optim.UPDATE_RULES) == {"sgd", "sgd_momentum", "rmsprop", "adam"}
    for name, fn in optim.UPDATE_RULES.items():
        assert get_update_rule(name) is fn
        assert optim.update_rule_name(fn) == name

    def custom(w, dw, config=None):
        return w, config

    assert get_update_rule(custom) is custom
    assert optim.update_rule_name(custom).endswith("test_registry.<locals>.custom")
    with pytest.raises(ValueError) as err:
        get_update_rule("adamw")
    for name in ("'adamw'", "'sgd'", "'sgd_momentum'", "'rmsprop'", "'adam'"):
        assert name in str(err.value)
    with pytest.raises(TypeError, match="update_rule"):
        get_update_rule(3)


@pytest.mark.parametrize("rule", [sgd, sgd_momentum, rmsprop, adam])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_results_are_flushed_to_zero(rule, dtype):
    # Subnormal weights make BLAS 10-100x slower; the rules return none.
    tiny = np.finfo(dtype).tiny
    w = np.array([tiny / 4, -tiny / 8, 1.0, 0.0], dtype=dtype)
    dw = np.zeros_like(w)
    next_w, config = rule(w, dw, {"learning_rate": 1e-3})
    assert next_w[0] == 0 and next_w[1] == 0
    assert next_w[2] == 1.0
    for key in optim._STATE_KEYS[rule.__name__]:
        s = config[key]
        assert not np.any((s != 0) & (np.abs(s) < tiny))
