"""Numerical gradients by centred differences, and the relative error used to
compare them with analytic ones (cs231n's names and signatures).

These functions perturb `x` in place and restore it, so `f` must read `x` each
time it is called. Use float64 arrays: float32 rounding swamps a step of 1e-5.
`x` must therefore be a writable floating ndarray: a list, a read-only array or
an integer array (whose x + h would be truncated) is a TypeError/ValueError, as
is a step h that is not a finite number > 0.
Nothing here prints unless `verbose=True` is asked for.
"""
from __future__ import annotations

import numbers

import numpy as np

from .checks import as_generator, as_real_array, check_callable, check_perturbable, check_step

__all__ = [
    "rel_error",
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "eval_numerical_gradient_blobs",
    "grad_check_sparse",
]


def rel_error(x, y):
    """max |x - y| / max(1e-8, |x| + |y|), elementwise; 0 for two empty arrays."""
    x = as_real_array("rel_error", "x", x).astype(np.float64, copy=False)
    y = as_real_array("rel_error", "y", y).astype(np.float64, copy=False)
    if x.shape != y.shape:
        raise ValueError(f"rel_error: shapes differ, {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of a scalar function f at x: (f(x + h) - f(x - h)) / 2h per element.

    f: takes x (any shape) and returns a scalar. Returns an array shaped like x.
    """
    check_callable("eval_numerical_gradient", "f", f)
    check_perturbable("eval_numerical_gradient", "x", x)
    h = check_step("eval_numerical_gradient", h)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        fxph = f(x)
        x[ix] = old - h
        fxmh = f(x)
        x[ix] = old
        if np.ndim(fxph) != 0:
            raise ValueError(
                f"eval_numerical_gradient: f must return a scalar, got shape {np.shape(fxph)} "
                "(use eval_numerical_gradient_array for functions returning arrays)"
            )
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, grad[ix])
        it.iternext()
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x, for f returning an array (df: f's output shape)."""
    layer = "eval_numerical_gradient_array"
    check_callable(layer, "f", f)
    check_perturbable(layer, "x", x)
    h = check_step(layer, h)
    df = as_real_array(layer, "df", df)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        if df.shape != pos.shape:
            raise ValueError(f"{layer}: df must have the shape of f(x), {pos.shape}, got {df.shape}")
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def eval_numerical_gradient_blobs(f, inputs, output, h=1e-5):
    """For functions that take several arrays (`inputs`, perturbed one at a time) and
    write into `output`: returns the gradient of sum(output * output_diff) for each input,
    with `output.diff` holding the upstream gradient (cs231n's blob convention)."""
    layer = "eval_numerical_gradient_blobs"
    check_callable(layer, "f", f)
    h = check_step(layer, h)
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"{layer}: inputs must be a tuple of blobs (objects with .vals and .diffs), got {type(inputs).__name__}")
    inputs = tuple(inputs)
    for i, blob in enumerate(inputs):
        check_perturbable(layer, f"inputs[{i}].vals", getattr(blob, "vals", None))
    grads = []
    for blob in inputs:
        diff = np.zeros_like(blob.vals)
        it = np.nditer(blob.vals, flags=["multi_index"], op_flags=["readwrite"])
        while not it.finished:
            idx = it.multi_index
            orig = blob.vals[idx]
            blob.vals[idx] = orig + h
            f(*(inputs + (output,)))
            pos = np.copy(output.vals)
            blob.vals[idx] = orig - h
            f(*(inputs + (output,)))
            neg = np.copy(output.vals)
            blob.vals[idx] = orig
            diff[idx] = np.sum((pos - neg) * output.diffs) / (2.0 * h)
            it.iternext()
        grads.append(diff)
    return grads


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None, verbose=True):
    """Compare analytic_grad with centred differences at `num_checks` random elements.

    Returns the list of relative errors. `seed` (int or Generator) picks the
    elements; NumPy's global RNG is not used. Prints one line per check when verbose,
    as cs231n's version does.
    """
    layer = "grad_check_sparse"
    check_callable(layer, "f", f)
    check_perturbable(layer, "x", x)
    h = check_step(layer, h)
    analytic_grad = as_real_array(layer, "analytic_grad", analytic_grad)
    if analytic_grad.shape != x.shape:
        raise ValueError(f"{layer}: analytic_grad must have x's shape {x.shape}, got {analytic_grad.shape}")
    if isinstance(num_checks, bool) or not isinstance(num_checks, numbers.Integral) or num_checks < 0:
        raise ValueError(f"{layer}: num_checks must be an int >= 0, got {num_checks!r}")
    if num_checks and x.size == 0:
        raise ValueError(f"{layer}: x is empty (shape {x.shape}): there is no element to check")
    # None: fresh entropy, as documented above (this function never touches the global RNG)
    rng = np.random.default_rng() if seed is None else as_generator(layer, seed)
    errors = []
    for _ in range(num_checks):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        old = x[ix]
        x[ix] = old + h
        fxph = f(x)
        x[ix] = old - h
        fxmh = f(x)
        x[ix] = old
        numeric = (fxph - fxmh) / (2 * h)
        analytic = analytic_grad[ix]
        err = abs(numeric - analytic) / max(1e-12, abs(numeric) + abs(analytic))
        errors.append(float(err))
        if verbose:
            print(f"numerical: {numeric:f} analytic: {analytic:f}, relative error: {err:e}")
    return errors
