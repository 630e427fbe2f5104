"""funkcije.gradient_check (numerical gradients, rel_error) and the gradient report
`python -m funkcije.check_grads`."""
import subprocess
import sys

import numpy as np
import pytest

from funkcije import check_grads as cg
from funkcije import layers as L
from funkcije.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    eval_numerical_gradient_blobs,
    grad_check_sparse,
    rel_error,
)

# ----------------------------------------------------------------------------- rel_error


def test_rel_error_known_values():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == 0.5  # |1 - 3| / (1 + 3)
    # the max over elements, not a mean
    assert rel_error(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == 0.5
    # the 1e-8 floor: two near-zero numbers are compared on an absolute scale
    assert rel_error(np.array([0.0]), np.array([1e-10])) == pytest.approx(1e-2)
    assert isinstance(rel_error(np.ones(2), np.ones(2)), float)


def test_rel_error_shapes():
    assert rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match=r"rel_error: shapes differ, \(2,\) and \(3,\)"):
        rel_error(np.ones(2), np.ones(3))
    assert rel_error(2.0, 2.0) == 0.0  # scalars are fine


# ----------------------------------------------------------------------------- numerical gradients


def test_eval_numerical_gradient_cubic(capsys):
    rng = np.random.default_rng(0)
    # |x| >= 0.5: every true gradient 3 x^2 is >= 0.75, so round-off (~1e-11) stays small
    x = rng.choice([-1.0, 1.0], size=(3, 4)) * rng.uniform(0.5, 1.5, size=(3, 4))
    x0 = x.copy()
    grad = eval_numerical_gradient(lambda x: np.sum(x**3), x, verbose=False)
    assert rel_error(grad, 3 * x0**2) < 1e-9
    np.testing.assert_array_equal(x, x0)  # x is restored exactly
    # for a cubic the centred difference is exactly 3 x^2 + h^2: with h = 1e-3 the
    # truncation term (1e-6) dwarfs round-off (~1e-12) and shows that h is used as given
    grad = eval_numerical_gradient(lambda x: np.sum(x**3), x, verbose=False, h=1e-3)
    np.testing.assert_allclose(grad - 3 * x0**2, 1e-6, rtol=1e-4)
    assert capsys.readouterr().out == ""


def test_eval_numerical_gradient_verbose_prints_one_line_per_element(capsys):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    eval_numerical_gradient(lambda x: np.sum(x**2), x, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("(0, 0)")


def test_eval_numerical_gradient_array_linear():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 4))
    x = rng.standard_normal(4)
    df = rng.standard_normal(5)
    x0 = x.copy()
    grad = eval_numerical_gradient_array(lambda x: A @ x, x, df)
    assert rel_error(grad, A.T @ df) < 1e-8
    np.testing.assert_array_equal(x, x0)


def test_eval_numerical_gradient_array_copies_outputs_that_alias_x():
    """f may return x itself (or a view): the +h output must be copied before the -h
    evaluation overwrites it, else the difference is 0."""
    x = np.random.default_rng(2).standard_normal((2, 3))
    df = np.random.default_rng(3).standard_normal((2, 3))
    grad = eval_numerical_gradient_array(lambda x: x, x, df)
    assert rel_error(grad, df) < 1e-8


def test_eval_numerical_gradient_blobs():
    class Blob:
        def __init__(self, vals, diffs=None):
            self.vals = vals
            self.diffs = diffs

    rng = np.random.default_rng(4)
    a, b = Blob(rng.standard_normal((2, 3))), Blob(rng.standard_normal((2, 3)))
    out = Blob(np.zeros((2, 3)), rng.standard_normal((2, 3)))

    def f(a, b, out):
        out.vals = a.vals * b.vals

    da, db = eval_numerical_gradient_blobs(f, (a, b), out)
    assert rel_error(da, b.vals * out.diffs) < 1e-8
    assert rel_error(db, a.vals * out.diffs) < 1e-8


def test_grad_check_sparse(capsys):
    x = np.random.default_rng(5).standard_normal((4, 5))
    f = lambda x: np.sum(np.sin(x))
    good = grad_check_sparse(f, x, np.cos(x), num_checks=7, seed=0, verbose=False)
    assert len(good) == 7 and max(good) < 1e-8
    bad = grad_check_sparse(f, x, np.cos(x) + 0.1, num_checks=7, seed=0, verbose=False)
    assert min(bad) > 1e-3
    assert capsys.readouterr().out == ""
    # the same seed checks the same elements; the global RNG is not used
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    again = grad_check_sparse(f, x, np.cos(x) + 0.1, num_checks=7, seed=0, verbose=True)
    assert again == bad
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 and "relative error" in lines[0]
    # a Generator is accepted as the seed
    assert len(grad_check_sparse(f, x, np.cos(x), num_checks=3, seed=np.random.default_rng(1), verbose=False)) == 3


# ----------------------------------------------------------------------------- the report


def _layer_functions():
    """Every function the report must exercise: all forwards, backwards and losses."""
    names = [n for n in dir(L) if not n.startswith("_") and callable(getattr(L, n))
             and (n.endswith("_forward") or n.endswith("_forward_naive") or "_backward" in n or n.endswith("_loss"))]
    assert len(names) >= 23
    return names


def test_report_passes_and_covers_every_layer(monkeypatch, capsys):
    calls = {name: 0 for name in _layer_functions()}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in calls:
        monkeypatch.setattr(L, name, counting(name, getattr(L, name)))
    np.random.seed(7)
    state = np.random.get_state()[1].copy()

    assert cg.main([]) == 0

    assert not [n for n, c in calls.items() if c == 0], "layer functions the report never called"
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched
    out = capsys.readouterr().out
    rows = cg.run_checks(0)
    assert len(rows) >= 40
    assert all(r.ok and r.threshold == cg.DEFAULT_THRESHOLD for r in rows)
    # one printed row per (layer, gradient), every gradient of every layer
    table_lines = [line for line in out.splitlines() if line.endswith("  ok") and not line.startswith("layer ")]
    assert len(table_lines) == len(rows)
    wrt = {(r.layer.split()[0], r.wrt) for r in rows}
    for layer, names in [("affine", "x w b"), ("conv", "x w b"), ("batchnorm", "x gamma beta"),
                         ("layernorm", "x gamma beta"), ("spatial_batchnorm", "x gamma beta"),
                         ("spatial_groupnorm", "x gamma beta"), ("relu", "x"), ("dropout", "x"),
                         ("max_pool", "x"), ("avg_pool", "x"), ("softmax_loss", "x"), ("svm_loss", "x")]:
        for n in names.split():
            assert (layer, n) in wrt, (layer, n)
    # the convolution rows include groups, dilation != stride and (h, w) pairs
    conv_layers = " ".join(r.layer for r in rows if r.layer.startswith("conv"))
    assert "groups=2" in conv_layers and "groups=3" in conv_layers and "dilation=(1,2)" in conv_layers
    assert f"all {len(rows)} gradients within their thresholds" in out


def test_report_fails_on_a_wrong_backward(monkeypatch, capsys):
    monkeypatch.setattr(cg, "_CASES", [cg._relu])
    # passes the gradient through negative inputs too
    monkeypatch.setattr(L, "relu_backward", lambda dout, cache: dout)
    assert cg.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED: 1 of 1 gradients" in out


def test_report_catches_an_error_just_above_threshold(monkeypatch, capsys):
    """A 1e-6 relative slip in one gradient is far below what a unit test of the output
    would notice, yet the report flags it (and only it)."""
    monkeypatch.setattr(cg, "_CASES", [cg._conv])
    real = L.conv_backward_naive

    def slightly_wrong(dout, cache):
        dx, dw, db = real(dout, cache)
        return dx, dw * (1 + 1e-6), db

    monkeypatch.setattr(L, "conv_backward_naive", slightly_wrong)
    assert cg.main([]) == 1
    failed = [r for r in cg.run_checks(0) if not r.ok]
    assert {r.wrt for r in failed} == {"w"} and len(failed) == len(cg._CONV_CONFIGS)
    assert all(4e-7 < r.rel_error < 6e-7 for r in failed)


def test_report_rows_fail_on_nan_and_shape_mismatch():
    assert not cg.Row("x", "x", float("nan"), float("nan"), 1e-5).ok
    row = cg._compare("layer", "x", np.ones(3), np.ones(4), 1e-5)
    assert not row.ok and "shape mismatch" in row.note
    assert cg._compare("layer", "x", np.ones(3), np.ones(3), 1e-5).ok


def test_report_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "funkcije.check_grads", "--seed", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].split()[:4] == ["layer", "wrt", "rel", "error"]
    assert "within their thresholds" in proc.stdout


# ----------------------------------------------------------------------------- issue 11: bad input


from funkcije.gradient_check import (  # noqa: E402
    eval_numerical_gradient as _eng,
    eval_numerical_gradient_array as _enga,
    eval_numerical_gradient_blobs as _engb,
    grad_check_sparse as _gcs,
)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex128])
def test_non_float_x_is_a_clear_error_not_a_truncated_step(dtype):
    x = np.array([1, 2, 3]).astype(dtype)
    with pytest.raises(TypeError, match=r"eval_numerical_gradient: x must have a floating dtype.*astype"):
        _eng(lambda v: float(np.sum(v * v).real), x, verbose=False)
    with pytest.raises(TypeError, match=r"eval_numerical_gradient_array: x must have a floating dtype"):
        _enga(lambda v: v * 2, x, np.ones(3))
    with pytest.raises(TypeError, match=r"grad_check_sparse: x must have a floating dtype"):
        _gcs(lambda v: float(np.sum(v)), x, np.ones(3), verbose=False)
    np.testing.assert_array_equal(x, np.array([1, 2, 3]).astype(dtype))  # untouched


def test_float_copy_of_integer_x_gives_the_right_gradient():
    x = np.array([1, 2, 3]).astype(np.float64)
    np.testing.assert_allclose(_eng(lambda v: float(np.sum(v * v)), x, verbose=False), [2, 4, 6], rtol=1e-8)


def test_list_and_read_only_x_are_clear_errors():
    with pytest.raises(TypeError, match=r"eval_numerical_gradient: x must be a numpy.ndarray.*list"):
        _eng(lambda v: 0.0, [1.0, 2.0], verbose=False)
    with pytest.raises(TypeError, match=r"eval_numerical_gradient_array: x must be a numpy.ndarray"):
        _enga(lambda v: v, [1.0], np.ones(1))
    ro = np.ones(3)
    ro.flags.writeable = False
    for fn, args in ((_eng, (lambda v: 0.0, ro)), (_enga, (lambda v: v, ro, np.ones(3))),
                     (_gcs, (lambda v: 0.0, ro, np.ones(3)))):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: x must be writable"):
            fn(*args)


class _Blob:
    def __init__(self, vals):
        self.vals = vals
        self.diffs = np.zeros_like(vals)


@pytest.mark.parametrize("h", [0, -1e-5, float("nan"), float("inf")])
def test_non_positive_or_non_finite_h_is_a_value_error(h):
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"eval_numerical_gradient: h must be a finite number > 0"):
        _eng(lambda v: 0.0, x, verbose=False, h=h)
    with pytest.raises(ValueError, match=r"eval_numerical_gradient_array: h must be"):
        _enga(lambda v: v, x, np.ones(3), h=h)
    with pytest.raises(ValueError, match=r"grad_check_sparse: h must be"):
        _gcs(lambda v: 0.0, x, np.ones(3), h=h, verbose=False)
    with pytest.raises(ValueError, match=r"eval_numerical_gradient_blobs: h must be"):
        _engb(lambda *a: None, (_Blob(np.ones(2)),), _Blob(np.ones(2)), h=h)
    with pytest.raises(TypeError, match=r"eval_numerical_gradient: h must be a real number"):
        _eng(lambda v: 0.0, x, verbose=False, h="1e-5")


def test_other_bad_arguments():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"eval_numerical_gradient_array: df must have the shape of f\(x\), \(3,\)"):
        _enga(lambda v: v * 2, x, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"eval_numerical_gradient: f must return a scalar"):
        _eng(lambda v: v * 2, x, verbose=False)
    with pytest.raises(ValueError, match=r"grad_check_sparse: analytic_grad must have x's shape"):
        _gcs(lambda v: 0.0, x, np.ones(4), verbose=False)
    with pytest.raises(ValueError, match=r"grad_check_sparse: num_checks"):
        _gcs(lambda v: 0.0, x, np.ones(3), num_checks=-1, verbose=False)
    with pytest.raises(ValueError, match=r"grad_check_sparse: x is empty"):
        _gcs(lambda v: 0.0, np.ones(0), np.ones(0), verbose=False)
    with pytest.raises(TypeError, match=r"eval_numerical_gradient_blobs: inputs\[0\].vals must be a numpy.ndarray"):
        _engb(lambda *a: None, (_Blob([1.0]),), _Blob(np.ones(2)))
