"""Learning-rate schedules (funkcije/schedules.py) on their own: the formulas by hand, per
epoch and per iteration, warm-up, and clear errors for bad schedules and arguments. The
Solver's use of them is tested in test_solver.py (rates per epoch in its history) and
test_recipe.py (the recipes)."""
import math

import pytest

from funkcije.schedules import resolve_schedule, scheduled_learning_rate


def lr_at(schedule, iteration, ipe=10, lr0=1.0, num_epochs=10):
    sched = resolve_schedule(schedule, num_epochs)
    return scheduled_learning_rate(lr0, None, sched, iteration=iteration, iterations_per_epoch=ipe)


def test_per_iteration_schedules_by_hand():
    one = {"type": "onecycle", "peak": 0.25, "start": 0.1, "end": 0.0}  # over 10 epochs of 10 updates
    assert lr_at(one, 0) == pytest.approx(0.1)
    assert lr_at(one, 25) == pytest.approx(1.0)  # the peak at epoch 2.5
    assert lr_at(one, 10) == pytest.approx(0.1 + 0.9 * 1.0 / 2.5)
    assert lr_at(one, 50) == pytest.approx(1.0 - 2.5 / 7.5)
    assert lr_at(one, 100) == pytest.approx(0.0)
    pw = {"type": "piecewise", "points": [[0, 0.2], [2, 1.0], [6, 0.0]]}
    assert lr_at(pw, 5) == pytest.approx(0.2 + 0.8 * 0.25)
    assert lr_at(pw, 40) == pytest.approx(0.5)
    assert lr_at(pw, 99) == 0.0
    cos = {"type": "cosine", "per_iteration": True}
    assert lr_at(cos, 25) == pytest.approx((1 + math.cos(math.pi * 0.25)) / 2)
    # warm-up: linear over the first 2 epochs (20 updates), then the schedule
    warm = {"type": "constant", "warmup": 2}
    assert [lr_at(warm, i) for i in (0, 9, 19, 20, 55)] == pytest.approx([1 / 20, 10 / 20, 1.0, 1.0, 1.0])
    # a per-epoch schedule with a warm-up keeps its epoch steps
    step = {"type": "step", "step_size": 3, "gamma": 0.5, "warmup": 1}
    assert [lr_at(step, i) for i in (4, 10, 29, 30)] == pytest.approx([0.5, 1.0, 1.0, 0.5])


@pytest.mark.parametrize("bad", [
    {"type": "piecewise", "points": [[1, 1], [2, 0]]},
    {"type": "piecewise", "points": [[0, 1], [0, 0]]},
    {"type": "piecewise", "points": [[0, -1], [2, 0]]},
    {"type": "piecewise", "points": "0:1"},
    {"type": "onecycle", "peak": 1.5},
    {"type": "cosine", "warmup": -1},
    {"type": "cosine", "per_iteration": "yes"},
    {"type": "constant", "gamma": 0.1},
])
def test_bad_schedules_are_clear_errors(bad):
    with pytest.raises((ValueError, TypeError), match="lr_schedule"):
        resolve_schedule(bad, 5)


def test_per_epoch_formulas_and_defaults():
    cos = resolve_schedule({"type": "cosine"}, num_epochs=10)  # t_max defaults to the run's epochs
    assert cos["t_max"] == 10 and cos["eta_min"] == 0.0 and cos["per_iteration"] is False
    assert scheduled_learning_rate(1.0, 10, cos) == pytest.approx(0.0, abs=1e-15)
    assert scheduled_learning_rate(1.0, 15, cos) == scheduled_learning_rate(1.0, 10, cos)  # stays at eta_min
    assert scheduled_learning_rate(1.0, 5, cos) == pytest.approx(0.5)
    step = resolve_schedule({"type": "step", "step_size": 2}, 10)
    assert [scheduled_learning_rate(0.4, e, step) for e in range(5)] == pytest.approx([0.4, 0.4, 0.04, 0.04, 0.004])
    exp = resolve_schedule({"type": "exponential", "gamma": 0.5}, 10)
    assert scheduled_learning_rate(1.0, 3, exp) == pytest.approx(0.125)
    assert scheduled_learning_rate(0.2, 3, None, 0.5) == pytest.approx(0.025)  # cs231n's lr_decay
    one = resolve_schedule({"type": "onecycle"}, num_epochs=7)
    assert one["total"] == 7.0 and one["per_iteration"] is True


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(lr0=-1.0, epoch=0), ValueError, r"lr0 must be finite and in \[0, inf\)"),
    (dict(lr0="0.1", epoch=0), TypeError, "lr0 must be a real number"),
    (dict(lr0=0.1, epoch=float("nan")), ValueError, "epoch must be finite"),
    (dict(lr0=0.1, epoch=0, lr_decay=0.0), ValueError, r"lr_decay must be finite and in \(0, inf\)"),
    (dict(lr0=0.1, epoch=None, iteration=-1, iterations_per_epoch=10), ValueError, "iteration must be an int >= 0"),
    (dict(lr0=0.1, epoch=None, iteration=1.5, iterations_per_epoch=10), TypeError, "iteration must be an int >= 0"),
    (dict(lr0=0.1, epoch=None, iteration=3), TypeError, "iterations_per_epoch .*must be an int >= 1"),
    (dict(lr0=0.1, epoch=0, lr_schedule={"type": "step"}), ValueError, r"a resolved 'step' lr_schedule needs"),
    (dict(lr0=0.1, epoch=0, lr_schedule="cosine"), TypeError, "lr_schedule must be None or a resolved schedule"),
])
def test_bad_arguments_name_the_function(kwargs, exc, match):
    with pytest.raises(exc, match="scheduled_learning_rate: " + match):
        scheduled_learning_rate(**kwargs)
