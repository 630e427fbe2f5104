"""Learning-rate schedules: the rate of every update from the initial rate, the epoch
(and, per iteration, the update's number), never accumulated, so a resumed run gets
exactly the rates of an uninterrupted one.

The Solver's `lr_schedule` is None (cs231n's `lr_decay`: epoch e runs at lr0 * lr_decay**e)
or a dict with a 'type':

    {'type': 'constant'}                                           lr0
    {'type': 'step', 'step_size': k, 'gamma': g (default 0.1)}     lr0 * g**(e // k)
    {'type': 'exponential', 'gamma': g}                            lr0 * g**e
    {'type': 'cosine', 't_max': E (default num_epochs), 'eta_min': m (default 0)}
        m + (lr0 - m) * (1 + cos(pi * min(e, E) / E)) / 2
    {'type': 'piecewise', 'points': [[0, f0], [e1, f1], ...]}      lr0 * the linear
        interpolation of the factors at e (constant beyond the last point)
    {'type': 'onecycle', 'total': T (default num_epochs), 'peak': p (0.25), 'start': s
        (0.04), 'end': z (0)}   piecewise through [0, s], [p T, 1], [T, z]

with lr0 the initial learning rate (`optim_config['learning_rate']`, else the rule's
default) and e the number of completed epochs. Every type also takes 'warmup' (w epochs:
the rate is multiplied by min(1, (updates done + 1) / (w * updates per epoch)); per epoch,
min(1, (e + 1) / w)) and 'per_iteration' (evaluate at the fractional epoch of every update
instead of once per epoch; the default for piecewise and onecycle).

`resolve_schedule` checks a dict and fills in its defaults (once, when training starts:
cosine's t_max and onecycle's total become fixed numbers, so a resumed run that trains
longer keeps the original curve); `scheduled_learning_rate` evaluates a resolved one.
"""
from __future__ import annotations

import math

import numpy as np

from .checks import check_int, check_real

__all__ = ["resolve_schedule", "scheduled_learning_rate"]

# every type also takes 'warmup' (epochs of linear warm-up, default 0) and
# 'per_iteration' (evaluate at the fractional epoch of every update)
_COMMON = {"warmup": 0.0, "per_iteration": False}
_SCHEDULES = {  # per type: required keys, optional keys with their defaults
    "constant": {"required": (), "optional": {}},
    "step": {"required": ("step_size",), "optional": {"gamma": 0.1}},
    "exponential": {"required": ("gamma",), "optional": {}},
    "cosine": {"required": (), "optional": {"t_max": None, "eta_min": 0.0}},
    "piecewise": {"required": ("points",), "optional": {"per_iteration": True}},
    "onecycle": {"required": (), "optional": {"total": None, "peak": 0.25, "start": 0.04, "end": 0.0,
                                              "per_iteration": True}},
}


def resolve_schedule(schedule, num_epochs):
    """Validate an lr_schedule dict and return a new dict with defaults filled in
    (cosine's t_max defaults to num_epochs, fixed here so a resumed run that
    trains longer keeps the original curve)."""
    if schedule is None:
        return None
    if not isinstance(schedule, dict):
        raise TypeError(f"Solver: lr_schedule must be a dict or None, got {type(schedule).__name__}")
    kind = schedule.get("type")
    if kind not in _SCHEDULES:
        raise ValueError(
            f"Solver: lr_schedule['type'] must be one of {sorted(_SCHEDULES)}, got {kind!r}"
        )
    spec = _SCHEDULES[kind]
    optional = {**_COMMON, **spec["optional"]}
    valid = {"type", *spec["required"], *optional}
    unknown = set(schedule) - valid
    if unknown:
        raise ValueError(
            f"Solver: unknown keys {sorted(unknown)} for a {kind!r} lr_schedule; valid keys are {sorted(valid)}"
        )
    missing = [k for k in spec["required"] if k not in schedule]
    if missing:
        raise ValueError(f"Solver: a {kind!r} lr_schedule needs {missing}, got {schedule!r}")
    out = {"type": kind, **optional, **{k: v for k, v in schedule.items() if k != "type"}}
    out["warmup"] = check_real("Solver", "lr_schedule['warmup']", out["warmup"])
    if not isinstance(out["per_iteration"], (bool, np.bool_)):
        raise TypeError(f"Solver: lr_schedule['per_iteration'] must be a bool, got {out['per_iteration']!r}")
    out["per_iteration"] = bool(out["per_iteration"])
    if kind == "piecewise":
        out["points"] = _check_points(out["points"])
    elif kind == "onecycle":
        if out["total"] is None:
            out["total"] = max(int(num_epochs), 1)
        out["total"] = check_real("Solver", "lr_schedule['total']", out["total"], strict=True)
        out["peak"] = check_real("Solver", "lr_schedule['peak']", out["peak"], strict=True)
        if out["peak"] >= 1:
            raise ValueError(f"Solver: lr_schedule['peak'] is a fraction of the run in (0, 1), got {out['peak']!r}")
        out["start"] = check_real("Solver", "lr_schedule['start']", out["start"])
        out["end"] = check_real("Solver", "lr_schedule['end']", out["end"])
    elif kind == "step":
        out["step_size"] = check_int("Solver", "lr_schedule['step_size']", out["step_size"], 1)
        out["gamma"] = check_real("Solver", "lr_schedule['gamma']", out["gamma"], strict=True)
    elif kind == "exponential":
        out["gamma"] = check_real("Solver", "lr_schedule['gamma']", out["gamma"], strict=True)
    elif kind == "cosine":
        if out["t_max"] is None:
            out["t_max"] = max(int(num_epochs), 1)
        out["t_max"] = check_int("Solver", "lr_schedule['t_max']", out["t_max"], 1)
        out["eta_min"] = check_real("Solver", "lr_schedule['eta_min']", out["eta_min"])
    return out


def _check_points(points):
    """piecewise's [[epoch, factor], ...]: epochs from 0, increasing; factors >= 0."""
    try:
        pts = [(float(e), float(f)) for e, f in points]
    except (TypeError, ValueError):
        raise ValueError(
            f"Solver: lr_schedule['points'] must be a list of [epoch, factor] pairs, got {points!r}"
        ) from None
    if len(pts) < 2 or pts[0][0] != 0.0:
        raise ValueError(f"Solver: lr_schedule['points'] needs at least two pairs, the first at epoch 0, got {points!r}")
    es = [e for e, _ in pts]
    fs = [f for _, f in pts]
    if any(b <= a for a, b in zip(es, es[1:])) or not all(math.isfinite(v) for v in es + fs) or min(fs) < 0:
        raise ValueError(
            f"Solver: lr_schedule['points'] must have increasing epochs and finite factors >= 0, got {points!r}"
        )
    return [list(p) for p in pts]


def _interpolate(points, t):
    """The piecewise-linear curve through points at t, constant beyond the ends."""
    for (e0, f0), (e1, f1) in zip(points, points[1:]):
        if t <= e1:
            return f0 + (f1 - f0) * (max(t, e0) - e0) / (e1 - e0)
    return points[-1][1]


def scheduled_learning_rate(lr0, epoch, lr_schedule=None, lr_decay=1.0, iteration=None, iterations_per_epoch=None):
    """The learning rate of one update, from the initial rate lr0.

    Per epoch (iteration=None): for training epoch `epoch` (0-based: the number of
    epochs already completed). Per iteration: for update number `iteration` (0-based)
    with `iterations_per_epoch` updates an epoch; the schedule is then evaluated at the
    fractional epoch t = iteration / iterations_per_epoch when it is per_iteration,
    else at the completed epochs, and a 'warmup' of w epochs multiplies the rate by
    min(1, (iteration + 1) / (w * iterations_per_epoch)). `lr_schedule` must be
    resolved (`resolve_schedule`; the module docstring gives the formulas)."""
    where = "scheduled_learning_rate"
    lr0 = check_real(where, "lr0", lr0)
    if iteration is None:
        epoch = check_real(where, "epoch", epoch)
    else:
        check_int(where, "iteration", iteration, 0)
        check_int(where, "iterations_per_epoch (needed with iteration)", iterations_per_epoch, 1)
    lr_decay = check_real(where, "lr_decay", lr_decay, strict=True)
    if lr_schedule is not None:
        _check_resolved(where, lr_schedule)
    if iteration is not None:
        frac = iteration / iterations_per_epoch
        whole = iteration // iterations_per_epoch
    else:
        frac = whole = epoch
    if lr_schedule is None:
        return lr0 * lr_decay ** whole
    t = frac if lr_schedule.get("per_iteration") else whole
    warmup = lr_schedule.get("warmup", 0.0)
    factor = 1.0
    if warmup > 0:
        done = (iteration + 1) / iterations_per_epoch if iteration is not None else whole + 1
        factor = min(1.0, done / warmup)
    return factor * _base_rate(lr0, t, lr_schedule)


# the keys _base_rate reads of each kind (what resolve_schedule fills in); 'warmup'
# and 'per_iteration' are read with defaults
_RESOLVED_KEYS = {
    "constant": (), "step": ("step_size", "gamma"), "exponential": ("gamma",),
    "cosine": ("t_max", "eta_min"), "piecewise": ("points",), "onecycle": ("total", "peak", "start", "end"),
}


def _check_resolved(where, schedule):
    if not isinstance(schedule, dict):
        raise TypeError(
            f"{where}: lr_schedule must be None or a resolved schedule dict (as Solver resolves "
            f"lr_schedule), got {type(schedule).__name__} {schedule!r}"
        )
    kind = schedule.get("type")
    if kind not in _RESOLVED_KEYS:
        raise ValueError(f"{where}: lr_schedule['type'] must be one of {sorted(_RESOLVED_KEYS)}, got {kind!r}")
    missing = [k for k in _RESOLVED_KEYS[kind] if k not in schedule]
    if missing:
        raise ValueError(f"{where}: a resolved {kind!r} lr_schedule needs {missing}, got {schedule!r}")


def _base_rate(lr0, epoch, lr_schedule):
    kind = lr_schedule["type"]
    if kind == "constant":
        return lr0
    if kind == "piecewise":
        return lr0 * _interpolate(lr_schedule["points"], epoch)
    if kind == "onecycle":
        total, peak = lr_schedule["total"], lr_schedule["peak"]
        pts = [[0.0, lr_schedule["start"]], [peak * total, 1.0], [total, lr_schedule["end"]]]
        return lr0 * _interpolate(pts, epoch)
    if kind == "step":
        return lr0 * lr_schedule["gamma"] ** (epoch // lr_schedule["step_size"])
    if kind == "exponential":
        return lr0 * lr_schedule["gamma"] ** epoch
    t_max, eta_min = lr_schedule["t_max"], lr_schedule["eta_min"]
    e = min(epoch, t_max)
    return eta_min + (lr0 - eta_min) * (1.0 + math.cos(math.pi * e / t_max)) / 2.0
