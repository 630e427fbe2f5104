"""Checkpoint files (funkcije.checkpoint and Solver's load_checkpoint): arrays and
plain metadata only, checksummed, atomic; every damaged or foreign file is a
ValueError naming the file, and loading never runs code from it."""
import io
import json
import math
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from funkcije import checkpoint, layers
from funkcije import solver as solver_module
from funkcije.solver import CHECKPOINT_FORMAT, Solver, load_checkpoint

FMT = "test/1"


class Tiny:
    def __init__(self, D=6, C=3, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"W": 0.01 * rng.standard_normal((D, C)), "b": np.zeros(C)}

    def loss(self, X, y=None):
        scores, cache = layers.affine_forward(X, self.params["W"], self.params["b"])
        if y is None:
            return scores
        loss, d = layers.softmax_loss(scores, y)
        _, dW, db = layers.affine_backward(d, cache)
        return loss, {"W": dW, "b": db}


def tiny_data(n=40, D=6, C=3):
    rng = np.random.default_rng(1)
    return {"X_train": rng.standard_normal((n, D)), "y_train": rng.integers(0, C, n),
            "X_val": rng.standard_normal((20, D)), "y_val": rng.integers(0, C, 20)}


@pytest.fixture
def ckpt_path(tmp_path):
    s = Solver(Tiny(), tiny_data(), update_rule="adam", batch_size=10, num_epochs=1, seed=3,
               checkpoint_name=str(tmp_path / "ck"), verbose=False)
    s.train()
    return tmp_path / "ck_epoch_1.pkl"


# ----------------------------------------------------------------------------- round trip


def same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return type(a) is type(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def test_round_trip_of_every_value_type(tmp_path):
    value = {
        "none": None, "true": True, "false": False, "zero": 0, "neg": -7, "big": 2**200 + 12345,
        "float": 0.1, "negzero": -0.0, "nan": float("nan"), "inf": float("inf"), "ninf": -float("inf"),
        "tiny": 5e-324, "str": "ünïcode \"quoted\" {\"dict\": 1}", "empty_str": "",
        "list": [1, 2.5, None, "x", [[]]], "tuple": (1, (2, 3), ()), "empty_dict": {}, "empty_list": [],
        7: "int key", None: "none key", (1, "a"): "tuple key", 2.5: "float key",
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.array([np.nan, -0.0, np.inf]),
        "i64": np.array([2**62, -1]), "u8": np.arange(4, dtype=np.uint8), "bool": np.array([True, False]),
        "empty": np.zeros((0, 3)), "zero_d": np.array(3.5), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "unicode_arr": np.array(["ab", "c"]),
        "np_f32": np.float32(1.5), "np_i64": np.int64(-3), "np_bool": np.bool_(True), "np_f64": np.float64(0.1),
        "bn_params": [{"mode": "train", "eps": 1e-5, "momentum": 0.9, "running_mean": np.ones(3),
                       "running_var": np.full(3, 2.0), "unbiased": True}],
        "rng": np.random.default_rng(5).bit_generator.state,
        "mt": np.random.MT19937(3).state,
        "history": [{"epoch": 1, "loss": 1.25, "lr": None}],
        "perm": np.random.default_rng(0).permutation(10),
    }
    path = tmp_path / "v.pkl"
    checkpoint.write(path, value, FMT)
    back = checkpoint.read(path, FMT)
    assert same(value, back)
    assert back["fortran"].flags.writeable and back["f32"].flags.writeable
    back["f32"] += 1  # models update params in place
    g = np.random.default_rng()
    g.bit_generator.state = back["rng"]
    assert g.random() == np.random.default_rng(5).random()


def test_unsavable_values_are_type_errors_and_leave_nothing(tmp_path):
    path = tmp_path / "v.pkl"
    for bad in ({"x": object()}, {"x": np.array([None, 1], dtype=object)}, {"g": np.random.default_rng()},
                {"s": {1, 2}}, [lambda: 0]):
        with pytest.raises(TypeError, match="checkpoint"):
            checkpoint.write(path, bad, FMT)
    assert os.listdir(tmp_path) == []


def test_solver_checkpoint_is_not_a_pickle(ckpt_path):
    raw = ckpt_path.read_bytes()
    assert raw[:4] == b"PK\x03\x04"
    with np.load(ckpt_path, allow_pickle=False) as npz:
        assert {"meta", "checksum"} <= set(npz.files)
        doc = json.loads(npz["meta"].tobytes())
    assert doc["format"] == CHECKPOINT_FORMAT
    ck = load_checkpoint(ckpt_path)
    assert ck["epoch"] == 1 and isinstance(ck["rng_state"]["batch"]["state"]["state"], int)


# ----------------------------------------------------------------------------- bad files


def test_empty_truncated_foreign_files(tmp_path, ckpt_path):
    raw = ckpt_path.read_bytes()
    cases = {
        "empty.pkl": (b"", "empty"),
        "text.pkl": (b"hello world\n", "not an .npz archive"),
        "npy.pkl": (None, "not an .npz archive"),
        "old_pickle.pkl": (pickle.dumps({"format": "funkcije.solver/1"}), "looks like a pickle"),
    }
    for cut in (4, 30, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        cases[f"trunc_{cut}.pkl"] = (raw[:cut], "not a readable")
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    cases["npy.pkl"] = (buf.getvalue(), "not an .npz archive")
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3))
    cases["other_npz.pkl"] = (buf.getvalue(), "no 'meta'")
    for name, (content, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ValueError, match=msg) as err:
            load_checkpoint(p)
        assert str(p) in str(err.value), name
    with pytest.raises(ValueError, match="directory"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pkl")


def test_a_checkpoint_of_another_format_is_foreign(tmp_path):
    p = tmp_path / "x.pkl"
    checkpoint.write(p, {"epoch": 1}, "someone.else/1")
    with pytest.raises(ValueError, match="not a funkcije Solver checkpoint.*someone.else/1"):
        load_checkpoint(p)


def test_every_flipped_byte_is_detected_or_harmless(tmp_path, ckpt_path):
    raw = ckpt_path.read_bytes()
    good = load_checkpoint(ckpt_path)
    detected = 0
    p = tmp_path / "flip.pkl"
    for pos in range(0, len(raw), max(1, len(raw) // 400)):
        b = bytearray(raw)
        b[pos] ^= 0x01
        p.write_bytes(bytes(b))
        try:
            ck = load_checkpoint(p)
        except ValueError as exc:
            assert str(p) in str(exc)
            detected += 1
            continue
        # a flip in zip bookkeeping that no reader looks at (timestamps, version fields): same content
        assert same(ck, good), pos
    assert detected > 0


def rewrite(path, tamper):
    """Rewrite a checkpoint archive entry by entry, letting `tamper` change the entries."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    tamper(entries)
    with open(path, "wb") as f:
        np.savez(f, **entries)


def test_checksum_catches_a_changed_array_in_a_valid_archive(ckpt_path):
    def change(entries):
        a = entries["a0"].copy()
        a.reshape(-1).view(np.uint8)[0] ^= 1
        entries["a0"] = a

    rewrite(ckpt_path, change)
    with pytest.raises(ValueError, match="checksum") as err:
        load_checkpoint(ckpt_path)
    assert str(ckpt_path) in str(err.value)


def test_checksum_catches_changed_metadata(ckpt_path):
    def change(entries):
        meta = entries["meta"].tobytes()
        assert b'["epoch", 1]' in meta
        meta = meta.replace(b'["epoch", 1]', b'["epoch", 2]')
        entries["meta"] = np.frombuffer(meta, dtype=np.uint8)

    rewrite(ckpt_path, change)
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(ckpt_path)


def write_state(path, state):
    checkpoint.write(path, state, CHECKPOINT_FORMAT)


@pytest.mark.parametrize("change, msg", [
    (lambda s: s.pop("epoch"), r"keys \['epoch'\] are missing"),
    (lambda s: s.pop("rng_state"), "missing"),
    (lambda s: s.update(epoch=-1), "'epoch' must be an int >= 0, got -1"),
    (lambda s: s.update(epoch=1.0), "'epoch' must be an int"),
    (lambda s: s.update(iteration=True), "'iteration' must be an int"),
    (lambda s: s.update(batch_size=0), "'batch_size'"),
    (lambda s: s.update(params={"W": [1, 2]}), "'params' must be a dict of arrays"),
    (lambda s: s.update(loss_history=["x"]), "'loss_history'"),
    (lambda s: s.update(rng_state={"batch": None}), "'rng_state'"),
    (lambda s: s.update(epoch_perm=np.zeros(3)), "'epoch_perm'"),
    (lambda s: s.update(epoch_perm=np.arange(3)), "epoch_perm has shape"),
    (lambda s: s.update(optim_configs={}), "optim_configs are for"),
    (lambda s: s.update(extra=1), "unknown keys"),
    (lambda s: s.update(iteration=0, epoch=1), "iteration 0"),
])
def test_inconsistent_checkpoints(tmp_path, ckpt_path, change, msg):
    state = load_checkpoint(ckpt_path)
    change(state)
    p = tmp_path / "bad.pkl"
    write_state(p, state)
    with pytest.raises(ValueError, match=msg) as err:
        load_checkpoint(p)
    assert str(p) in str(err.value)
    with pytest.raises(ValueError):
        Solver(Tiny(), tiny_data(), resume=p, verbose=False)


def test_not_a_dict_and_bad_rng_state(tmp_path, ckpt_path):
    p = tmp_path / "list.pkl"
    write_state(p, [1, 2])
    with pytest.raises(ValueError, match="holds a list"):
        load_checkpoint(p)
    state = load_checkpoint(ckpt_path)
    state["rng_state"]["batch"] = {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}
    write_state(p, state)
    with pytest.raises(ValueError, match="batch random-stream state"):
        Solver(Tiny(), tiny_data(), resume=p, verbose=False)


# ----------------------------------------------------------------------------- crafted files run nothing


class _MakeDir:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_crafted_pickle_runs_nothing(tmp_path):
    target = str(tmp_path / "pwned")
    p = tmp_path / "evil_epoch_1.pkl"
    p.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": _MakeDir(target)}))
    with pytest.raises(ValueError, match="not a funkcije Solver checkpoint"):
        load_checkpoint(p)
    with pytest.raises(ValueError):
        Solver(Tiny(), tiny_data(), resume=p, verbose=False)
    assert not os.path.exists(target)


def test_a_crafted_object_array_inside_the_archive_runs_nothing(tmp_path, ckpt_path):
    target = str(tmp_path / "pwned")

    def plant(entries):
        entries["a0"] = np.array([_MakeDir(target)], dtype=object)

    rewrite(ckpt_path, plant)  # np.savez pickles the object array
    with pytest.raises(ValueError, match=str(ckpt_path)):
        load_checkpoint(ckpt_path)
    assert not os.path.exists(target)


def test_crafted_tree_tags_are_refused(tmp_path):
    p = tmp_path / "t.pkl"
    for tree in ({"__reduce__": ["os", "mkdir"]}, {"array": 5}, {"dict": [[["unhashable"], 1]]}, {"a": 1, "b": 2}):
        meta = json.dumps({"format": CHECKPOINT_FORMAT, "arrays": 0, "tree": tree}).encode()
        entries = {"meta": np.frombuffer(meta, np.uint8),
                   "checksum": np.frombuffer(checkpoint._digest(meta, []), np.uint8)}
        with open(p, "wb") as f:
            np.savez(f, **entries)
        with pytest.raises(ValueError, match="not a readable funkcije Solver checkpoint"):
            load_checkpoint(p)


# ----------------------------------------------------------------------------- orphans of killed writes


def _dead_pid():
    """The pid of a process that has ended (its number is not reused this soon)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphan_temporary_files_are_removed(tmp_path, ckpt_path):
    old = time.time() - 3600
    host = checkpoint._host_tag()
    orphans = [tmp_path / ".ck_epoch_1.pkl.funkcije-abc123.tmp", tmp_path / ".ck_epoch_7.pkl.funkcije-x_y.tmp",
               tmp_path / f".ck_epoch_3.pkl.funkcije-{host}-{_dead_pid()}-k2j_9x.tmp"]  # a writer that died
    others = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / ".ck_epoch_1.pkl.other.tmp",
              # writes in progress: this process's, another running one's, another host's
              tmp_path / f".ck_epoch_4.pkl.funkcije-{host}-{os.getpid()}-abcd.tmp",
              tmp_path / f".run2_epoch_4.pkl.funkcije-{host}-1-abcd.tmp",
              tmp_path / f".ck_epoch_4.pkl.funkcije-{'0' * 8 if host != '0' * 8 else '1' * 8}-{_dead_pid()}-a.tmp"]
    for f in orphans + others:
        f.write_bytes(b"partial")
        os.utime(f, (old, old))
    fresh = tmp_path / ".ck_epoch_2.pkl.funkcije-live.tmp"  # a write that started after ours: left alone
    fresh.write_bytes(b"partial")
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    state = load_checkpoint(ckpt_path)
    write_state(tmp_path / "ck_epoch_1.pkl", state)
    names = set(os.listdir(tmp_path))
    assert not any(f.name in names for f in orphans)
    assert all(f.name in names for f in others + [fresh])
    assert same(load_checkpoint(tmp_path / "ck_epoch_1.pkl"), state)


def test_a_killed_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path, ckpt_path, monkeypatch):
    before = ckpt_path.read_bytes()
    state = load_checkpoint(ckpt_path)
    state["epoch_seconds"] = 123.0

    def killed(f, entries):  # SIGKILL mid-write: nothing after this runs, the temp file stays
        f.write(b"PK\x03\x04partial")
        f.flush()
        raise SystemExit

    monkeypatch.setattr(checkpoint, "_write_npz", killed)
    monkeypatch.setattr(checkpoint.os, "unlink", lambda p: None)  # as if the process died before cleaning up
    with pytest.raises(SystemExit):
        write_state(ckpt_path, state)
    monkeypatch.undo()
    temps = [n for n in os.listdir(ckpt_path.parent) if n.endswith(".tmp")]
    assert len(temps) == 1 and ckpt_path.read_bytes() == before
    t = ckpt_path.parent / temps[0]
    assert f"{checkpoint._host_tag()}-{os.getpid()}-" in t.name  # the writer is named
    # this process is alive and might still be writing it; as the next run would, after a kill:
    t = t.rename(t.with_name(t.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")))
    os.utime(t, (time.time() - 10, time.time() - 10))
    write_state(ckpt_path, state)
    assert not [n for n in os.listdir(ckpt_path.parent) if n.endswith(".tmp")]
    assert load_checkpoint(ckpt_path)["epoch_seconds"] == 123.0


def test_another_runs_write_in_progress_is_left_alone(tmp_path, ckpt_path):
    """Two runs checkpointing into one folder: a write finishing does not remove the
    other run's unfinished temporary file (its writer is alive), so its save succeeds."""
    state = load_checkpoint(ckpt_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".runB_epoch_3.pkl.funkcije-{checkpoint._host_tag()}-{other.pid}-q1w2e3.tmp"
        theirs.write_bytes(b"PK\x03\x04 half written")
        os.utime(theirs, (time.time() - 30, time.time() - 30))
        write_state(tmp_path / "runA_epoch_3.pkl", state)
        assert theirs.exists()
    finally:
        other.kill()
        other.wait()
    write_state(tmp_path / "runA_epoch_4.pkl", state)  # now its writer is gone: an orphan
    assert not theirs.exists()


def test_checkpoint_module_names():
    assert solver_module.load_checkpoint is load_checkpoint
    assert CHECKPOINT_FORMAT == "funkcije.solver/2"
