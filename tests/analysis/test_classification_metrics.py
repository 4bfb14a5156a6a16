"""Binary and 3-class metrics agree with scikit-learn; bootstrap CIs equal the explicit per-resample path."""

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from analysis.categories import CATEGORIES
from analysis.stats.bootstrap import stratified_bootstrap_ci
from analysis.stats.classification import binary_metrics, multiclass_metrics
from analysis.stats.roc import delong_auc

CLASSES = list(CATEGORIES)  # osteoporosis, osteopenia, normal
SORTED = np.argsort(CLASSES)


def _sk_macro_auc(y, proba):
    # scikit-learn wants the label list sorted; reorder the probability columns to match.
    return roc_auc_score(y, proba[:, SORTED], multi_class="ovr", average="macro", labels=sorted(CLASSES))


def _three_class(seed=0, n=140):
    rng = np.random.default_rng(seed)
    y_idx = rng.choice(3, size=n, p=[0.35, 0.45, 0.20])
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y_idx]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba = np.round(proba, 2)  # ties, as tree ensembles produce
    proba = proba / proba.sum(axis=1, keepdims=True)
    return np.array(CLASSES)[y_idx], proba


def test_binary_metrics_agree_with_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random(120) < 0.4).astype(int)
    score = np.round(rng.random(120) * 0.6 + 0.4 * y, 2)
    m = binary_metrics(y, score, threshold=0.5, n_resamples=0)
    pred = (score >= 0.5).astype(int)
    assert m.sensitivity == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert m.specificity == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)
    assert m.precision == pytest.approx(precision_score(y, pred), abs=1e-12)
    assert m.f1 == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m.confusion_matrix == confusion_matrix(y, pred).tolist()
    assert m.auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    auc = delong_auc(y, score)
    assert (m.auc_ci_low, m.auc_ci_high, m.ci_method) == (auc.ci_low, auc.ci_high, "delong")
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(m.roc_fpr, fpr)
    np.testing.assert_allclose(m.roc_tpr, tpr)


def test_binary_zero_division_is_zero_like_sklearn():
    y = np.array([0, 1, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.45])  # nothing reaches 0.5
    m = binary_metrics(y, score, n_resamples=0)
    assert m.precision == precision_score(y, np.zeros(5, int), zero_division=0) == 0.0
    assert m.f1 == 0.0 and m.sensitivity == 0.0 and m.specificity == 1.0


def test_binary_bootstrap_ci_equals_explicit_resampling():
    rng = np.random.default_rng(2)
    y = (rng.random(100) < 0.35).astype(int)
    score = rng.random(100) * 0.7 + 0.3 * y
    m = binary_metrics(y, score, n_resamples=300, random_state=4)
    pred = (score >= 0.5).astype(int)

    def sens(y_1, p_1):
        return recall_score(y_1, p_1)

    slow = stratified_bootstrap_ci(sens, y, pred, n_resamples=300, random_state=4, vectorized=False)
    np.testing.assert_allclose(m.ci["sensitivity"], slow[:2], atol=1e-12)
    assert m.ci["accuracy"][0] <= m.accuracy <= m.ci["accuracy"][1]


def test_multiclass_metrics_agree_with_sklearn():
    y, proba = _three_class()
    m = multiclass_metrics(y, proba, CLASSES, n_resamples=200, random_state=0)
    pred = np.array(CLASSES)[proba.argmax(axis=1)]
    assert m.macro_auc == pytest.approx(_sk_macro_auc(y, proba), abs=1e-12)
    for j, c in enumerate(CLASSES):
        assert m.per_class[c]["auc"] == pytest.approx(roc_auc_score(y == c, proba[:, j]), abs=1e-12)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m.confusion_matrix == confusion_matrix(y, pred, labels=CLASSES).tolist()
    recall = recall_score(y, pred, labels=CLASSES, average=None)
    precision = precision_score(y, pred, labels=CLASSES, average=None, zero_division=0)
    f1 = f1_score(y, pred, labels=CLASSES, average=None, zero_division=0)
    # Specificity per class from scikit-learn's one-vs-rest confusion matrices: TN / (TN + FP).
    mcm = multilabel_confusion_matrix(y, pred, labels=CLASSES)
    specificity = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
    for j, c in enumerate(CLASSES):
        assert m.per_class[c]["sensitivity"] == pytest.approx(recall[j], abs=1e-12)
        assert m.per_class[c]["precision"] == pytest.approx(precision[j], abs=1e-12)
        assert m.per_class[c]["f1"] == pytest.approx(f1[j], abs=1e-12)
        assert m.per_class[c]["specificity"] == pytest.approx(specificity[j], abs=1e-12)
    assert m.macro_sensitivity == pytest.approx(recall_score(y, pred, average="macro"), abs=1e-12)
    assert m.macro_precision == pytest.approx(precision_score(y, pred, average="macro"), abs=1e-12)
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert m.macro_specificity == pytest.approx(specificity.mean(), abs=1e-12)


def test_multiclass_bootstrap_cis_equal_explicit_resampling():
    # Same seed and (default) strata as the generic function: identical resamples, so the fast
    # weighted-count CIs must equal scikit-learn evaluated on each explicitly resampled data set.
    y, proba = _three_class(seed=3)
    m = multiclass_metrics(y, proba, CLASSES, n_resamples=250, random_state=11)

    def macro_auc(y_1, p_1):
        return _sk_macro_auc(y_1, p_1)

    def macro_f1(y_1, p_1):
        return f1_score(y_1, np.array(CLASSES)[p_1.argmax(axis=1)], average="macro", labels=CLASSES)

    slow_auc = stratified_bootstrap_ci(macro_auc, y, proba, n_resamples=250, random_state=11, vectorized=False)
    slow_f1 = stratified_bootstrap_ci(macro_f1, y, proba, n_resamples=250, random_state=11, vectorized=False)
    np.testing.assert_allclose(m.ci["macro_auc"], slow_auc[:2], atol=1e-12)
    np.testing.assert_allclose(m.ci["macro_f1"], slow_f1[:2], atol=1e-12)
    assert slow_auc.estimate == pytest.approx(m.macro_auc, abs=1e-12)
    for key in ("macro_auc", "accuracy", "macro_sensitivity", "macro_specificity", "macro_precision"):
        low, high = m.ci[key]
        assert low <= high


def test_multiclass_is_reproducible_and_seed_dependent():
    y, proba = _three_class(seed=5)
    a = multiclass_metrics(y, proba, CLASSES, n_resamples=100, random_state=1)
    b = multiclass_metrics(y, proba, CLASSES, n_resamples=100, random_state=1)
    c = multiclass_metrics(y, proba, CLASSES, n_resamples=100, random_state=2)
    assert a.to_dict() == b.to_dict()
    assert a.ci["macro_auc"] != c.ci["macro_auc"]


def test_binary_osteoporosis_task_inside_multiclass():
    y, proba = _three_class(seed=6)
    m = multiclass_metrics(y, proba, CLASSES, n_resamples=50)
    j = CLASSES.index("osteoporosis")
    expected = binary_metrics(
        y == "osteoporosis", proba[:, j], y_pred=proba.argmax(axis=1) == j, n_resamples=50
    )
    assert m.binary_positive_class == "osteoporosis"
    assert m.binary == expected
    assert m.binary.auc == pytest.approx(roc_auc_score(y == "osteoporosis", proba[:, j]), abs=1e-12)
    assert m.binary.ci_method == "delong" and m.binary.threshold is None


def test_to_dict_is_strict_json():
    y, proba = _three_class(seed=7)
    d = multiclass_metrics(y, proba, CLASSES, n_resamples=50).to_dict()
    text = json.dumps(d, allow_nan=False)  # the ROC's first threshold (inf) became null
    back = json.loads(text)
    assert back["classes"] == CLASSES
    assert back["roc"]["normal"]["thresholds"][0] is None
    assert back["binary"]["n"] == 140


@pytest.mark.parametrize(
    "labels, message",
    [
        (["osteoporosis", "osteopenia"] * 5, "absent: \\['normal'\\]"),
        (["osteoporosis", "osteopenia", "normal", "other"] + ["normal"] * 6, "label 'other'"),
    ],
)
def test_multiclass_bad_labels(labels, message):
    proba = np.full((len(labels), 3), 1 / 3)
    with pytest.raises(ValueError, match=message):
        multiclass_metrics(labels, proba, CLASSES, n_resamples=10)


def test_multiclass_rejects_wrong_proba_shape():
    y, proba = _three_class()
    with pytest.raises(ValueError, match="proba must have shape"):
        multiclass_metrics(y, proba[:, :2], CLASSES, n_resamples=10)
