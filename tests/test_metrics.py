"""Metrics against hand-computed matrices, and evaluation that leaves models alone."""
import numpy as np
import pytest

from funkcije.layers import batchnorm_forward, softmax_loss
from funkcije.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    evaluate,
    precision_recall_f1,
    worst_examples,
)

# 4 classes; class 3 never occurs and is never predicted
Y_TRUE = np.array([0, 0, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 1, 2, 0, 2])
CM = np.array([[1, 1, 0, 0],
               [0, 1, 0, 0],
               [1, 0, 2, 0],
               [0, 0, 0, 0]])


# ----------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)


def test_confusion_matrix_matches_a_counting_loop(rng):
    C = 7
    y_true = rng.integers(0, C, 500)
    y_pred = rng.integers(0, C - 2, 500)  # the last two classes are never predicted
    expected = np.zeros((C, C), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    cm = confusion_matrix(y_true, y_pred, C)
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 500 and not cm[:, C - 2:].any()


def test_confusion_matrix_with_no_samples():
    cm = confusion_matrix(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3)
    np.testing.assert_array_equal(cm, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        accuracy(cm)


@pytest.mark.parametrize(
    "y_true, y_pred, C, exc, msg",
    [
        ([0, 1, 4], [0, 1, 1], 4, ValueError, r"\[0, 4\).*from 0 to 4"),
        ([0, 1, 2], [0, -1, 1], 4, ValueError, r"y_pred.*\[0, 4\)"),
        ([0, 1, 2], [0, 1], 4, ValueError, r"shape \(3,\)"),
        ([0.0, 1.0], [0, 1], 4, TypeError, "integers"),
        ([[0, 1]], [[0, 1]], 4, ValueError, "1-D"),
        ([0, 1], [0, 1], 0, ValueError, "num_classes"),
        ([0, 1], [0, 1], 2.0, TypeError, "num_classes"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, C, exc, msg):
    with pytest.raises(exc, match=msg):
        confusion_matrix(np.array(y_true), np.array(y_pred), C)


# ----------------------------------------------------------------------------- derived metrics


def test_accuracy_by_hand():
    assert accuracy(CM) == pytest.approx(4 / 6)


def test_precision_recall_f1_by_hand():
    m = precision_recall_f1(CM)
    # class 0: tp 1, predicted 2, true 2; class 1: tp 1, predicted 2, true 1;
    # class 2: tp 2, predicted 2, true 3; class 3: nothing at all -> 0 by convention
    np.testing.assert_allclose(m.precision, [1 / 2, 1 / 2, 1, 0])
    np.testing.assert_allclose(m.recall, [1 / 2, 1, 2 / 3, 0])
    np.testing.assert_allclose(m.f1, [1 / 2, 2 / 3, 4 / 5, 0])
    np.testing.assert_array_equal(m.support, [2, 1, 3, 0])
    # the never-seen class counts as 0 in the macro averages (documented convention)
    assert m.macro_precision == pytest.approx((1 / 2 + 1 / 2 + 1 + 0) / 4)
    assert m.macro_recall == pytest.approx((1 / 2 + 1 + 2 / 3 + 0) / 4)
    assert m.macro_f1 == pytest.approx((1 / 2 + 2 / 3 + 4 / 5 + 0) / 4)


def test_zero_division_cases_are_zero_not_nan():
    # class 0 occurs but is never predicted: precision 0/0 -> 0, recall 0/2 = 0
    # class 2 is predicted but never occurs: precision 0/1 = 0, recall 0/0 -> 0
    cm = confusion_matrix(np.array([0, 0, 1, 1]), np.array([1, 2, 1, 1]), 3)
    np.testing.assert_array_equal(cm, [[0, 1, 1], [0, 2, 0], [0, 0, 0]])
    m = precision_recall_f1(cm)
    np.testing.assert_allclose(m.precision, [0, 2 / 3, 0])
    np.testing.assert_allclose(m.recall, [0, 1, 0])
    np.testing.assert_allclose(m.f1, [0, 0.8, 0])
    assert np.all(np.isfinite(m.precision)) and np.all(np.isfinite(m.f1))
    assert m.macro_f1 == pytest.approx(0.8 / 3)


def test_perfect_predictions():
    y = np.array([0, 1, 2, 2, 1])
    m = precision_recall_f1(confusion_matrix(y, y, 3))
    np.testing.assert_array_equal(m.precision, 1)
    np.testing.assert_array_equal(m.recall, 1)
    assert m.macro_f1 == 1.0


@pytest.mark.parametrize(
    "cm, exc",
    [
        (np.zeros((2, 3), dtype=np.int64), ValueError),
        (np.array([[1, -1], [0, 1]]), ValueError),
        (np.array([[1.0, np.nan], [0, 1]]), ValueError),
        (np.ones((2, 2), dtype=bool), TypeError),
        ([[1, 0], [0, 1]], TypeError),
    ],
)
def test_bad_confusion_matrices_are_rejected(cm, exc):
    with pytest.raises(exc, match="confusion matrix"):
        precision_recall_f1(cm)


def test_classification_report():
    text = classification_report(CM, ["cat", "dog", "plane", "never"])
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert lines[3].split() == ["plane", "1.000", "0.667", "0.800", "3"]
    assert lines[4].split() == ["never", "0.000", "0.000", "0.000", "0"]
    assert "accuracy" in text and "0.667" in text and "macro avg" in text
    with pytest.raises(ValueError, match="expected 4 class names"):
        classification_report(CM, ["a", "b"])
    # counts of a million and more in full, a space from the column before; weighted ones rounded
    big = classification_report(np.array([[1_234_577, 0], [0, 1_000_019]]), ["cat", "dog"]).splitlines()
    assert big[1].split()[-1] == "1234577" and big[-2].split()[-1] == "2234596"
    assert len({len(line) for line in big if line}) == 1  # the columns stay aligned
    assert classification_report(np.array([[0.5, 0.25], [0.0, 1.0]])).splitlines()[1].split()[-1] == "0.75"


# ----------------------------------------------------------------------------- models for evaluate


class BNModel:
    """Batch norm then an affine layer. `set_mode`: like cs231n models, switch
    bn_params to test mode when called without labels; otherwise obey whatever mode
    is stored (so a caller that does not force test mode would update the stats)."""

    def __init__(self, rng, D=6, C=5, set_mode=True, dtype=np.float64):
        self.params = {
            "gamma": (1 + 0.1 * rng.standard_normal(D)).astype(dtype),
            "beta": (0.1 * rng.standard_normal(D)).astype(dtype),
            "W": rng.standard_normal((D, C)).astype(dtype),
            "b": rng.standard_normal(C).astype(dtype),
        }
        self.bn_params = [{
            "mode": "train",
            "running_mean": rng.standard_normal(D).astype(dtype),
            "running_var": (1 + rng.random(D)).astype(dtype),
        }]
        self.dropout_param = {"mode": "train", "p": 0.5}
        self.set_mode = set_mode
        self.calls = 0

    def loss(self, X, y=None):
        self.calls += 1
        if self.set_mode:
            mode = "test" if y is None else "train"
            for bp in self.bn_params:
                bp["mode"] = mode
            self.dropout_param["mode"] = mode
        p = self.params
        h, _ = batchnorm_forward(X, p["gamma"], p["beta"], self.bn_params[0])
        scores = h @ p["W"] + p["b"]
        if y is None:
            return scores
        return softmax_loss(scores, y)[0], {}

    def test_scores(self, X):
        """Reference scores computed from copies, in test mode."""
        bp = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.bn_params[0].items()}
        bp["mode"] = "test"
        h, _ = batchnorm_forward(X, self.params["gamma"], self.params["beta"], bp)
        return h @ self.params["W"] + self.params["b"]


class InPlaceStatsModel(BNModel):
    """A badly behaved model that nudges its running statistics on every call."""

    def loss(self, X, y=None):
        out = super().loss(X, y)
        self.bn_params[0]["running_mean"] += 1.0
        self.bn_params[0]["running_var"] *= 2.0
        # a key the dict did not hold before (bn_param accepts only its own keys, so a
        # valid one: evaluation must still remove it afterwards)
        self.bn_params[0]["momentum"] = 0.5
        return out


def _snapshot(model):
    params = {k: (v, v.copy()) for k, v in model.params.items()}
    state = [dict(bp) for bp in model.bn_params]
    copies = [{k: v.copy() for k, v in bp.items() if isinstance(v, np.ndarray)} for bp in model.bn_params]
    return params, state, copies, dict(model.dropout_param)


def _assert_untouched(model, snap):
    params, state, copies, dropout = snap
    assert set(model.params) == set(params)
    for k, (obj, copy) in params.items():
        assert model.params[k] is obj
        np.testing.assert_array_equal(obj, copy)
    for bp, before, cp in zip(model.bn_params, state, copies):
        assert bp.keys() == before.keys()
        for k, v in before.items():
            assert bp[k] is v  # the same array objects, not replacements
        for k, v in cp.items():
            np.testing.assert_array_equal(bp[k], v)
    assert model.dropout_param == dropout


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("set_mode", [True, False])
def test_evaluate_matches_direct_computation_and_touches_nothing(rng, set_mode):
    model = BNModel(rng, set_mode=set_mode)
    X = rng.standard_normal((53, 6))
    y = rng.integers(0, 5, 53)
    expected_scores = model.test_scores(X)
    snap = _snapshot(model)
    res = evaluate(model, X, y, batch_size=10)  # 53 = 5 full batches + 3
    assert model.calls == 6
    _assert_untouched(model, snap)
    loss, acc, cm = res  # unpacks like a tuple
    assert isinstance(loss, float)
    assert loss == pytest.approx(float(softmax_loss(expected_scores, y)[0]), rel=1e-12)
    np.testing.assert_array_equal(cm, confusion_matrix(y, expected_scores.argmax(1), 5))
    assert acc == pytest.approx(np.mean(expected_scores.argmax(1) == y))
    # evaluating again gives the same answer: nothing drifted
    assert evaluate(model, X, y, batch_size=7).loss == pytest.approx(loss, rel=1e-12)


def test_state_a_model_writes_in_place_is_put_back(rng):
    model = InPlaceStatsModel(rng)
    X = rng.standard_normal((25, 6))
    y = rng.integers(0, 5, 25)
    snap = _snapshot(model)
    evaluate(model, X, y, batch_size=10)
    _assert_untouched(model, snap)
    worst_examples(model, X, y, k=3, batch_size=10)
    _assert_untouched(model, snap)


def test_evaluate_float32(rng):
    model = BNModel(rng, dtype=np.float32)
    X = rng.standard_normal((20, 6)).astype(np.float32)
    y = rng.integers(0, 5, 20)
    snap = _snapshot(model)
    res = evaluate(model, X, y, batch_size=8)
    _assert_untouched(model, snap)
    ref = float(softmax_loss(model.test_scores(X).astype(np.float64), y)[0])
    assert res.loss == pytest.approx(ref, rel=1e-5)


def test_state_is_restored_when_evaluation_fails(rng):
    model = InPlaceStatsModel(rng)
    X = rng.standard_normal((30, 6))
    y = rng.integers(0, 5, 30)
    y[25] = 9  # out of range for 5 classes, in the third batch
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        evaluate(model, X, y, batch_size=10)
    _assert_untouched(model, snap)


def test_evaluate_input_errors(rng):
    model = BNModel(rng)
    X = rng.standard_normal((10, 6))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        evaluate(model, X, np.zeros(9, dtype=int))
    with pytest.raises(TypeError, match="integers"):
        evaluate(model, X, np.zeros(10))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, X, np.zeros(10, dtype=int), batch_size=0)
    with pytest.raises(ValueError, match="at least one sample"):
        evaluate(model, X[:0], np.zeros(0, dtype=int))

    class Flat:
        def loss(self, X, y=None):
            return np.zeros(len(X))

    with pytest.raises(ValueError, match="2 dimensions"):
        evaluate(Flat(), X, np.zeros(10, dtype=int))

    class ScoresAndCache:  # loss(X) returning (scores, cache) by mistake
        def loss(self, X, y=None):
            return np.zeros((len(X), 3)), {}

    with pytest.raises(TypeError, match=r"^evaluate: model.loss\(X\) without labels must return the scores"):
        evaluate(ScoresAndCache(), X, np.zeros(10, dtype=int))


# ----------------------------------------------------------------------------- worst examples


class TableModel:
    """Scores looked up from a table by the sample's id in X[:, 0]."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float64)
        self.params = {}

    def loss(self, X, y=None):
        return self.table[X[:, 0].astype(int)]


def test_worst_examples_by_hand():
    table = np.log(np.array([
        [0.7, 0.1, 0.1, 0.1],    # id 0, true 0: loss -log 0.7
        [0.1, 0.2, 0.3, 0.4],    # id 1, true 0: loss -log 0.1, the worst
        [0.25, 0.25, 0.4, 0.1],  # id 2, true 1: loss -log 0.25
        [0.1, 0.2, 0.3, 0.4],    # id 3: the same row and label as id 1, an exact tie
        [0.05, 0.9, 0.03, 0.02], # id 4, true 1: loss -log 0.9, the best
    ]))
    X = np.arange(5, dtype=np.float64)[:, None]
    y = np.array([0, 0, 1, 0, 1])
    w = worst_examples(TableModel(table), X, y, k=4, batch_size=2)
    assert len(w) == 4
    # the tie keeps the order in X
    np.testing.assert_array_equal(w.indices, [1, 3, 2, 0])
    np.testing.assert_allclose(w.loss, -np.log([0.1, 0.1, 0.25, 0.7]), rtol=1e-12)
    np.testing.assert_array_equal(w.true, [0, 0, 1, 0])
    # top-3: most probable first; equal probabilities keep the lower class first
    np.testing.assert_array_equal(w.top3_classes, [[3, 2, 1], [3, 2, 1], [2, 0, 1], [0, 1, 2]])
    np.testing.assert_allclose(w.top3_probs, [[0.4, 0.3, 0.2], [0.4, 0.3, 0.2], [0.4, 0.25, 0.25], [0.7, 0.1, 0.1]],
                               rtol=1e-12)


def test_worst_examples_agrees_with_evaluate(rng):
    model = BNModel(rng)
    X = rng.standard_normal((41, 6))
    y = rng.integers(0, 5, 41)
    snap = _snapshot(model)
    w = worst_examples(model, X, y, k=1000, batch_size=9)  # k > N returns all N
    _assert_untouched(model, snap)
    assert len(w) == 41 and sorted(w.indices) == list(range(41))
    assert np.all(np.diff(w.loss) <= 0)
    assert w.loss.mean() == pytest.approx(evaluate(model, X, y, batch_size=9).loss, rel=1e-10)
    scores = model.test_scores(X)
    np.testing.assert_array_equal(w.top3_classes[:, 0], scores[w.indices].argmax(1))
    np.testing.assert_allclose(w.top3_probs.sum(1) <= 1 + 1e-12, True)
    # independent of batching
    w1 = worst_examples(model, X, y, k=5, batch_size=1)
    np.testing.assert_array_equal(w1.indices, w.indices[:5])
    np.testing.assert_allclose(w1.top3_probs, w.top3_probs[:5], rtol=1e-12)


def test_worst_examples_two_classes_and_nan():
    table = np.array([[0.0, 1.0], [np.nan, 0.0], [2.0, 0.0]])
    X = np.arange(3.0)[:, None]
    w = worst_examples(TableModel(table), X, np.array([0, 0, 1]), k=2)
    assert w.top3_classes.shape == (2, 2)  # only two classes to rank
    np.testing.assert_array_equal(w.indices, [1, 2])  # the NaN loss ranks as worst
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        worst_examples(TableModel(table), X, np.array([0, 0, 1]), k=0)
