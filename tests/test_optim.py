"""Update rules against steps computed by hand (scalar Python arithmetic, one
coordinate at a time, independent of the vectorised NumPy code), on both
implementations: every test runs once with the compiled kernels of
funkcije.kernels._update and once on the NumPy code (the `impl` fixture switches
`fast_layers.use_implementation`, which is what selects the update rules' path too).
The compiled kernels are then compared with the NumPy code directly.

Under CI=true a missing compiled extension (funkcije.kernels._compiled or
funkcije.kernels._update) fails the tests instead of skipping them.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from funkcije import fast_layers as FL
from funkcije import optim
from funkcije.optim import adam, get_update_rule, rmsprop, sgd, sgd_momentum

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RULES = [sgd, sgd_momentum, rmsprop, adam]


def _require_compiled():
    if "cython" not in FL.available_implementations() or optim._kernels is None:
        if IN_CI:
            pytest.fail(
                "the compiled extensions funkcije.kernels._compiled and funkcije.kernels._update "
                "must be built under CI=true"
            )
        pytest.skip("compiled extension not built")


@pytest.fixture(autouse=True, params=["cython", "numpy"])
def impl(request):
    """Run the test on the compiled update kernels and on the NumPy code."""
    name = request.param
    if name == "cython":
        _require_compiled()
    previous = FL.use_implementation(name)
    yield name
    FL.use_implementation(previous)

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
    # issue 11: the dict passed in is the one updated and returned (cs231n); the
    # state arrays it held before keep their values
    assert new_config is passed
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


@pytest.mark.parametrize("name", sorted(optim.UPDATE_RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_scalar_parameter_updates_as_a_one_element_array_does(name, dtype):
    """A 0-d parameter (a learnt scale): the same steps as for shape (1,), its state 0-d."""
    rule = optim.UPDATE_RULES[name]
    w0, w1 = np.array(0.7, dtype), np.array([0.7], dtype)
    c0, c1 = {"learning_rate": 0.05}, {"learning_rate": 0.05}
    for g in (0.3, -1.2, 0.5):
        w0, c0 = rule(w0, np.array(g, dtype), c0)
        w1, c1 = rule(w1, np.array([g], dtype), c1)
        assert w0.shape == () and w0.dtype == dtype and w0 == w1[0]
    for key, value in c0.items():
        if isinstance(value, np.ndarray):
            assert value.shape == () and value == c1[key][0], key


def test_registry():
    assert set(optim.UPDATE_RULES) == {"sgd", "sgd_momentum", "rmsprop", "adam", "sgd_nesterov", "sgdw", "adamw"}
    for name, fn in optim.UPDATE_RULES.items():
        assert get_update_rule(name) is fn
        assert optim.update_rule_name(fn) == name

    def custom(w, dw, config=None):
        return w, config

    assert get_update_rule(custom) is custom
    assert optim.update_rule_name(custom).endswith("test_registry.<locals>.custom")
    with pytest.raises(ValueError) as err:
        get_update_rule("adamax")
    for name in ("'adamax'", "'sgd'", "'sgd_momentum'", "'rmsprop'", "'adam'"):
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


# ----------------------------------------------------------------------------- compiled vs NumPy


class _Sub(np.ndarray):
    """An ndarray subclass: its arithmetic may be overridden, so it takes the NumPy code."""


class _Spy:
    """Stands in for optim._kernels and records which kernels ran."""

    def __init__(self, kernels):
        self.kernels, self.calls = kernels, []

    def __getattr__(self, name):
        fn = getattr(self.kernels, name)

        def call(*args):
            self.calls.append(name)
            return fn(*args)

        return call


@pytest.fixture
def spy(monkeypatch):
    s = _Spy(optim._kernels)
    monkeypatch.setattr(optim, "_kernels", s)
    return s


def _on(name, rule, *args):
    previous = FL.use_implementation(name)
    try:
        return rule(*args)
    finally:
        FL.use_implementation(previous)


def _assert_agree(got, ref, dtype, what):
    """float64: 1e-12 relative. float32: 1e-6 relative to the entry and to the array's
    largest entry. Both paths do the same IEEE operations in the array's dtype, each
    correctly rounded, so on this build they agree bit for bit. The float32 bound
    (about 8 ulps) leaves room for a build that rounds an operation differently (a
    compiler fusing a * b + c into one rounding despite setup.py's -ffp-contract=off),
    and is scaled by the largest entry because next_w = w + step cancels where
    w ~ -step, which magnifies one ulp of either term."""
    assert got.dtype == ref.dtype == dtype, what
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0, err_msg=what)
    else:
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, err_msg=what)


class TestCompiledAgainstNumPy:
    """The compiled kernels against the NumPy code (which the hand-computed tests
    above pin down): same results, same purity, same flushing, correct fallback."""

    @pytest.fixture(autouse=True)
    def impl(self):  # overrides the module's two-way fixture: these tests switch themselves
        _require_compiled()
        previous = FL.use_implementation("cython")
        yield "cython"
        FL.use_implementation(previous)

    @pytest.mark.parametrize("rule", RULES)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize(
        "shape",
        [(1,), (7,), (32,), (32, 3, 7, 7), (8, 5, 3, 2),
         (300, 500)],  # 150 000 elements: above the threshold, split over the OpenMP threads
    )
    def test_several_steps_agree(self, spy, rule, dtype, shape):
        rng = np.random.default_rng(hash((rule.__name__, np.dtype(dtype).name, shape)) % 2**32)
        w = rng.standard_normal(shape).astype(dtype)
        w_c = w_n = w
        cfg_c, cfg_n = {"learning_rate": 1e-2}, {"learning_rate": 1e-2}
        for step in range(4):  # t = 1..4 for Adam; non-zero state from step 2 on
            dw = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 2)).astype(dtype)
            w_c, cfg_c = rule(w_c, dw, cfg_c)
            w_n, cfg_n = _on("numpy", rule, w_n, dw, cfg_n)
            _assert_agree(w_c, w_n, dtype, f"next_w, step {step + 1}")
            for key in optim._STATE_KEYS[rule.__name__]:
                _assert_agree(cfg_c[key], cfg_n[key], dtype, f"{key}, step {step + 1}")
                assert cfg_c[key].shape == w.shape
            assert {k: v for k, v in cfg_c.items() if not isinstance(v, np.ndarray)} == {
                k: v for k, v in cfg_n.items() if not isinstance(v, np.ndarray)
            }
            assert w_c.shape == w.shape
        assert spy.calls == [rule.__name__] * 4
        if rule is adam:
            assert cfg_c["t"] == 4

    @pytest.mark.parametrize("rule", RULES)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_every_thread_split_agrees(self, spy, rule, dtype):
        # Threshold 0: even tiny arrays are cut into per-thread spans (span starts are
        # rounded to 16 elements, so odd sizes test every boundary case).
        previous = optim._kernels.kernels.set_parallel_threshold(0)
        try:
            rng = np.random.default_rng(7)
            for n in (1, 2, 15, 16, 17, 33, 1000, 4099):
                w, dw = rng.standard_normal((2, n)).astype(dtype)
                cfg = {"learning_rate": 1e-2}
                _, cfg = rule(w, dw, dict(cfg))  # non-zero state
                got = rule(w, dw, dict(cfg))
                ref = _on("numpy", rule, w, dw, dict(cfg))
                _assert_agree(got[0], ref[0], dtype, f"n={n}")
                for key in optim._STATE_KEYS[rule.__name__]:
                    _assert_agree(got[1][key], ref[1][key], dtype, f"{key}, n={n}")
        finally:
            optim._kernels.kernels.set_parallel_threshold(previous)
        assert set(spy.calls) == {rule.__name__}

    @pytest.mark.parametrize("rule", RULES)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_pure(self, spy, rule, dtype):
        rng = np.random.default_rng(3)
        w = rng.standard_normal((20, 30)).astype(dtype)
        dw = rng.standard_normal((20, 30)).astype(dtype)
        _, config = rule(w, dw, {"learning_rate": 1e-2})
        passed = dict(config)
        before = {k: v.copy() for k, v in passed.items() if isinstance(v, np.ndarray)}
        w0, dw0 = w.copy(), dw.copy()
        next_w, new_config = rule(w, dw, passed)
        assert spy.calls == [rule.__name__] * 2
        # issue 11: `passed` is updated in place and returned; `config` still holds
        # the state arrays that went in, which must be bitwise unchanged
        assert new_config is passed
        for a, b in [(w, w0), (dw, dw0)] + [(config[k], v) for k, v in before.items()]:
            assert a.tobytes() == b.tobytes()  # bitwise unchanged
        assert not np.shares_memory(next_w, w) and not np.shares_memory(next_w, dw)
        for key in before:
            assert new_config[key] is not config[key]
            for other in (w, dw, next_w, *before.values(), *(config[k] for k in before)):
                assert not np.shares_memory(new_config[key], other)
        assert next_w.flags.c_contiguous and next_w.flags.writeable

    @pytest.mark.parametrize("rule", RULES)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_special_values_match_bitwise(self, spy, rule, dtype):
        # Subnormal inputs and results, -0.0, values that become subnormal after the
        # step, NaN and inf: flushed (to +0.0) or propagated exactly as the NumPy code does.
        tiny = np.finfo(dtype).tiny
        w = np.array([tiny / 4, -tiny / 8, -0.0, 0.0, 1.5 * tiny, -1.5 * tiny, 1.0, np.nan,
                      np.inf, -2.0, 3 * tiny, tiny], dtype=dtype)
        dw = np.array([0.0, 0.0, 0.0, -0.0, 50 * tiny, -50 * tiny, tiny / 2, 1.0,
                       0.5, np.nan, 100 * tiny, -tiny], dtype=dtype)
        state = {k: np.array([tiny / 2, 0.0, -0.0, tiny, 1.0, 2.0, tiny / 3, 0.5,
                              0.25, 1.0, tiny, 4 * tiny], dtype=dtype)
                 for k in optim._STATE_KEYS[rule.__name__]}
        for k in ("v", "cache"):  # second moments are >= 0
            if k in state:
                state[k] = np.abs(state[k])
        for lr in (1e-3, 0.25):
            config = {"learning_rate": lr, **state}
            with np.errstate(all="ignore"):
                got_w, got = rule(w, dw, dict(config))
                ref_w, ref = _on("numpy", rule, w, dw, dict(config))
            pairs = [("next_w", got_w, ref_w)] + [(k, got[k], ref[k]) for k in state]
            for name, a, b in pairs:
                np.testing.assert_array_equal(a, b, err_msg=name)
                assert np.array_equal(np.signbit(a), np.signbit(b)), name  # -0.0 vs +0.0
                assert not np.any((a != 0) & (np.abs(a) < tiny)), name
        assert set(spy.calls) == {rule.__name__}

    @pytest.mark.parametrize("rule", RULES)
    def test_fallback_to_numpy(self, spy, rule):
        # Non-contiguous, Fortran-ordered, unaligned, float16, mixed-dtype state,
        # ndarray subclasses: the NumPy code runs (and gives its own result).
        rng = np.random.default_rng(11)
        base = rng.standard_normal((6, 8))
        raw = np.zeros(6 * 8 * 4 + 1, np.uint8)[1:].view(np.float32)  # misaligned by one byte
        raw[:] = base.astype(np.float32).ravel()
        cases = {
            "strided w": (base[:, ::2], base[:, 1::2].copy()),
            "strided dw": (base[:, :4].copy(), base[:, ::2]),
            "transposed": (base.T, base.T.copy()),
            "fortran": (np.asfortranarray(base), np.asfortranarray(base * 0.5)),
            "unaligned": (raw.reshape(6, 8), base.astype(np.float32)),
            "float16": (base.astype(np.float16), base.astype(np.float16)),
            "subclass": (base.view(_Sub), (base * 0.5).view(_Sub)),
        }
        for name, (w, dw) in cases.items():
            spy.calls.clear()
            got_w, got = rule(w, dw, {"learning_rate": 1e-2})
            ref_w, ref = _on("numpy", rule, w, dw, {"learning_rate": 1e-2})
            assert spy.calls == [], name
            np.testing.assert_array_equal(got_w, ref_w, err_msg=name)
            assert got_w.dtype == w.dtype, name
        state_keys = optim._STATE_KEYS[rule.__name__]
        if state_keys:
            w, dw = base[:, :4].copy(), base[:, 4:].copy()
            for variant in ("strided", "float32"):
                spy.calls.clear()
                state = {k: (np.ones((6, 8))[:, ::2] if variant == "strided" else np.ones((6, 4), np.float32))
                         for k in state_keys}
                got_w, got = rule(w, dw, {"learning_rate": 1e-2, **state})
                ref_w, ref = _on("numpy", rule, w, dw, {"learning_rate": 1e-2, **state})
                # a state of another dtype is cast to w's (issue 11), so it may take the compiled path
                assert spy.calls == ([] if variant == "strided" else [rule.__name__]), variant
                np.testing.assert_array_equal(got_w, ref_w, err_msg=variant)
                for k in state_keys:
                    np.testing.assert_array_equal(got[k], ref[k], err_msg=variant)
        # read-only, C-contiguous inputs are fine for the compiled path
        w, dw = base.copy(), base * 0.5
        w.flags.writeable = dw.flags.writeable = False
        spy.calls.clear()
        got_w, _ = rule(w, dw, {"learning_rate": 1e-2})
        assert spy.calls == [rule.__name__]
        np.testing.assert_allclose(got_w, _on("numpy", rule, w, dw, {"learning_rate": 1e-2})[0], rtol=1e-12)

    def test_numpy_switch_turns_the_kernels_off(self, spy):
        w, dw = np.ones(5), np.ones(5)
        adam(w, dw)
        assert spy.calls == ["adam"]
        _on("numpy", adam, w, dw)
        assert spy.calls == ["adam"]  # fast_layers.use_implementation("numpy") reaches optim too

    def test_empty_arrays(self, spy):
        for rule in RULES:
            next_w, config = rule(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
            assert next_w.shape == (0, 3) and next_w.dtype == np.float32
        assert spy.calls == [r.__name__ for r in RULES]

    def test_force_numpy_env_reaches_update_rules(self):
        code = (
            "from funkcije import optim, fast_layers as FL\n"
            "import numpy as np\n"
            "calls = []\n"
            "class K:\n"
            "    def __getattr__(self, n):\n"
            "        calls.append(n); raise AssertionError('compiled kernel used')\n"
            "optim._kernels = K()\n"
            "optim.adam(np.ones(3), np.ones(3))\n"
            "print(FL.implementation(), calls)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "FUNKCIJE_FORCE_NUMPY"}
        env["FUNKCIJE_FORCE_NUMPY"] = "1"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["numpy", "[]"]


# ----------------------------------------------------------------------------- issue 11: cs231n config semantics, ranges


def test_rules_update_the_callers_config_like_cs231n():
    w, dw = arr(W), arr(DW)
    config = {"learning_rate": 1e-2}
    next_w, _ = sgd_momentum(w, dw, config=config)
    np.testing.assert_allclose(config["velocity"], -1e-2 * dw)
    assert config["momentum"] == 0.9
    config = {}
    rmsprop(w, dw, config=config)
    np.testing.assert_allclose(config["cache"], 0.01 * dw * dw)
    config = {"learning_rate": 1e-3}
    for step in (1, 2):
        _, returned = adam(w, dw, config=config)
        assert returned is config and config["t"] == step
        assert config["m"].shape == w.shape and config["v"].shape == w.shape
    config = {}
    assert sgd(w, dw, config)[1] is config and config == {"learning_rate": 1e-2}


@pytest.mark.parametrize("rule, key, value", [
    (sgd, "learning_rate", -1), (sgd, "learning_rate", float("nan")), (sgd, "learning_rate", float("inf")),
    (sgd_momentum, "momentum", 1.0), (sgd_momentum, "momentum", -0.1), (sgd_momentum, "learning_rate", -1e-3),
    (rmsprop, "decay_rate", 1.0), (rmsprop, "decay_rate", -0.5), (rmsprop, "epsilon", 0.0),
    (rmsprop, "epsilon", -1e-8), (adam, "beta1", 1.0), (adam, "beta2", 1.0), (adam, "beta1", -0.1),
    (adam, "epsilon", 0), (adam, "epsilon", float("nan")), (adam, "t", -1), (adam, "t", 1.5),
    (adam, "learning_rate", float("-inf")),
])
def test_out_of_range_hyperparameters_are_value_errors(rule, key, value):
    w, dw = arr(W), arr(DW)
    config = {key: value}
    with pytest.raises(ValueError, match=rf"{rule.__name__}: config\['{key}'\]"):
        rule(w, dw, config)
    assert config == {key: value}  # nothing filled in on failure


def test_edge_values_in_range_work():
    w, dw = arr(W), arr(DW)
    np.testing.assert_array_equal(sgd(w, dw, {"learning_rate": 0})[0], w)
    assert np.all(np.isfinite(adam(w, dw, {"beta1": 0.0, "beta2": 0.0})[0]))
    sgd_momentum(w, dw, {"momentum": 0.0})
    adam(w, dw, {"t": 5.0})  # an integral float is taken as an int


@pytest.mark.parametrize("rule", [sgd, sgd_momentum, rmsprop, adam])
def test_unknown_keys_name_the_rule(rule):
    with pytest.raises(ValueError, match=rf"{rule.__name__}: unknown config keys \['lr'\]"):
        rule(arr(W), arr(DW), {"lr": 0.1})
    with pytest.raises(TypeError, match=rule.__name__):
        rule(arr(W), arr(DW), {"learning_rate": True})


def test_state_of_another_dtype_is_cast_to_w():
    w, dw = arr(W, np.float32), arr(DW, np.float32)
    config = {"velocity": np.zeros(w.shape, dtype=np.float64)}
    next_w, config = sgd_momentum(w, dw, config)
    assert next_w.dtype == np.float32 and config["velocity"].dtype == np.float32
    with pytest.raises(TypeError, match="sgd_momentum: config\\['velocity'\\] must be a real array"):
        sgd_momentum(w, dw, {"velocity": np.zeros(w.shape, dtype=np.complex64)})
