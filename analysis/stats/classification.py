"""Classification metrics of the seed study (tables 2 and 4): AUC with CI, sensitivity, specificity,
accuracy, precision, F1, confusion matrix, ROC points.

Definitions (per class k, one-vs-rest, from the confusion matrix C with rows = true class, columns =
predicted class): sensitivity = recall = TP / (TP + FN); specificity = TN / (TN + FP); precision =
TP / (TP + FP), 0 when nothing is predicted as k (scikit-learn's ``zero_division`` default); F1 =
2 TP / (2 TP + FP + FN) (= 2 P R / (P + R), 0 when TP = 0). Macro values are unweighted means over the
classes; accuracy = trace(C) / n. They equal scikit-learn's ``recall_score``, ``precision_score``,
``f1_score`` (``average="macro"`` / ``None``), ``accuracy_score`` and ``confusion_matrix``.

AUC: empirical (Mann-Whitney) AUC; binary with the DeLong CI (:mod:`analysis.stats.roc`); three classes as
the one-vs-rest macro mean of per-class AUCs (``roc_auc_score(multi_class="ovr", average="macro")``) with a
stratified bootstrap percentile CI (:mod:`analysis.stats.bootstrap`), since no closed form exists. The
other metrics get bootstrap CIs from the same resamples. Resamples are stratified by true class, so every
class keeps its size in every resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.categories import OSTEOPOROSIS
from analysis.stats.bootstrap import bootstrap_indices, percentile_interval, resample_counts
from analysis.stats.roc import _check_labels_scores, delong_auc, jsonable, roc_points, weighted_auc

__all__ = ["BinaryMetrics", "MulticlassMetrics", "binary_metrics", "confusion_rates", "multiclass_metrics"]

_CI_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1")


def confusion_rates(confusion):
    """Per-class one-vs-rest rates from confusion matrices, vectorised over leading axes.

    Parameters
    ----------
    confusion : array_like, shape (..., K, K)
        Counts (or bootstrap-weighted counts), rows = true class, columns = predicted class.

    Returns
    -------
    dict
        ``"sensitivity"``, ``"specificity"``, ``"precision"``, ``"f1"``: shape (..., K);
        ``"accuracy"``: shape (...). Undefined ratios (0/0) are 0, as scikit-learn's default; a class
        without true cases has sensitivity 0 here and must be rejected by the caller.
    """
    c = np.asarray(confusion, dtype=np.float64)
    total = c.sum(axis=(-2, -1))
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    row = c.sum(axis=-1)
    col = c.sum(axis=-2)
    fn = row - tp
    fp = col - tp
    tn = total[..., None] - tp - fn - fp

    def ratio(num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "f1": ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "accuracy": ratio(tp.sum(axis=-1), total),
    }


def _weighted_confusion(true_idx, pred_idx, n_classes, weights):
    """Confusion matrices of weighted copies of the sample, shape (B, K, K)."""
    cell = true_idx * n_classes + pred_idx
    onehot = np.zeros((cell.size, n_classes * n_classes))
    onehot[np.arange(cell.size), cell] = 1.0
    return (weights @ onehot).reshape(-1, n_classes, n_classes)


@dataclass(frozen=True)
class BinaryMetrics:
    """Binary classification metrics; the positive class is label 1 / True.

    ``confusion_matrix`` is ``[[TN, FP], [FN, TP]]`` (scikit-learn order). ``ci`` maps a metric name to its
    bootstrap percentile ``(low, high)`` (empty when ``n_resamples`` was 0); the AUC CI is DeLong.
    ``threshold`` is None when the caller supplied ``y_pred``.
    """

    n: int
    n_pos: int
    n_neg: int
    auc: float
    auc_se: float
    auc_ci_low: float
    auc_ci_high: float
    sensitivity: float
    specificity: float
    accuracy: float
    precision: float
    f1: float
    confusion_matrix: list
    roc_fpr: list
    roc_tpr: list
    roc_thresholds: list
    threshold: float | None
    alpha: float = 0.05
    ci_method: str = "delong"
    ci: dict = field(default_factory=dict)
    n_resamples: int = 0
    random_state: int | None = None

    def to_dict(self):
        """Plain JSON-ready dict (non-finite numbers, e.g. the ROC's first threshold ``inf``, become None)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class MulticlassMetrics:
    """Multiclass (one-vs-rest) metrics; ``classes`` fixes the order of every per-class list.

    ``macro_auc`` with its stratified bootstrap CI in ``ci["macro_auc"]``; per-class AUCs with DeLong CIs in
    ``per_class``; ``ci`` also holds bootstrap CIs of accuracy and the macro sensitivity, specificity,
    precision and F1. ``confusion_matrix[i][j]`` counts true ``classes[i]`` predicted as ``classes[j]``.
    ``binary`` is the "osteoporosis vs not" task (None when that class is not among ``classes``).
    """

    classes: list
    n: int
    macro_auc: float
    accuracy: float
    macro_sensitivity: float
    macro_specificity: float
    macro_precision: float
    macro_f1: float
    per_class: dict
    confusion_matrix: list
    roc: dict
    ci: dict
    binary: BinaryMetrics | None
    binary_positive_class: str | None
    alpha: float = 0.05
    auc_average: str = "macro one-vs-rest"
    ci_method: str = "stratified bootstrap percentile"
    n_resamples: int = 2000
    random_state: int = 0

    def to_dict(self):
        """Plain JSON-ready dict (non-finite numbers become None)."""
        out = asdict(self)
        out["binary"] = self.binary.to_dict() if self.binary is not None else None
        return jsonable(out)


def binary_metrics(
    y_true, score, threshold=0.5, *, y_pred=None, alpha=0.05, n_resamples=2000, random_state=0
):
    """Binary metrics with the DeLong AUC CI and bootstrap CIs of the threshold metrics.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        0/1 or boolean, 1 = positive.
    score : array_like, shape (n_samples,)
        Higher = more likely positive (probability or any score).
    threshold : float
        A case is predicted positive when ``score >= threshold``.
    y_pred : array_like of 0/1 or bool, shape (n_samples,), optional
        Predicted labels overriding ``threshold`` (e.g. the arg-max class of a 3-class model).
    alpha : float
        0.05 for 95% CIs.
    n_resamples : int
        Stratified bootstrap resamples for the CIs of sensitivity, specificity, accuracy, precision and F1;
        0 skips them.
    random_state : int

    Returns
    -------
    BinaryMetrics
    """
    labels, scores = _check_labels_scores(y_true, [score], names=["score"])
    s = scores[0]
    if y_pred is None:
        predicted = s >= threshold
    else:
        predicted = np.asarray(y_pred)
        if predicted.shape != labels.shape:
            raise ValueError(f"y_pred has shape {predicted.shape}, expected {labels.shape}")
        predicted = predicted.astype(bool)
        threshold = None
    true_idx = labels.astype(np.int64)
    pred_idx = predicted.astype(np.int64)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (true_idx, pred_idx), 1)
    rates = confusion_rates(confusion)
    auc = delong_auc(labels, s, alpha=alpha)
    fpr, tpr, thresholds = roc_points(labels, s)
    ci = {}
    if n_resamples:
        weights = resample_counts(bootstrap_indices(true_idx, n_resamples, random_state), labels.size)
        boot = confusion_rates(_weighted_confusion(true_idx, pred_idx, 2, weights))
        ci["accuracy"] = percentile_interval(boot["accuracy"], alpha)
        ci["sensitivity"] = percentile_interval(boot["sensitivity"][:, 1], alpha)
        ci["specificity"] = percentile_interval(boot["sensitivity"][:, 0], alpha)
        ci["precision"] = percentile_interval(boot["precision"][:, 1], alpha)
        ci["f1"] = percentile_interval(boot["f1"][:, 1], alpha)
    return BinaryMetrics(
        n=int(labels.size),
        n_pos=auc.n_pos,
        n_neg=auc.n_neg,
        auc=auc.auc,
        auc_se=auc.se,
        auc_ci_low=auc.ci_low,
        auc_ci_high=auc.ci_high,
        # Sensitivity and specificity of the positive class are the recalls of classes 1 and 0.
        sensitivity=float(rates["sensitivity"][1]),
        specificity=float(rates["sensitivity"][0]),
        accuracy=float(rates["accuracy"]),
        precision=float(rates["precision"][1]),
        f1=float(rates["f1"][1]),
        confusion_matrix=confusion.tolist(),
        roc_fpr=fpr.tolist(),
        roc_tpr=tpr.tolist(),
        roc_thresholds=thresholds.tolist(),
        threshold=None if threshold is None else float(threshold),
        alpha=float(alpha),
        ci=ci,
        n_resamples=int(n_resamples),
        random_state=int(random_state) if n_resamples else None,
    )


def _class_indices(y_true, classes):
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    lookup = {c: i for i, c in enumerate(classes)}
    if len(lookup) != len(classes):
        raise ValueError(f"classes has duplicates: {list(classes)}")
    try:
        idx = np.array([lookup[v] for v in y.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"y_true has label {exc.args[0]!r}, not among classes {list(classes)}") from None
    counts = np.bincount(idx, minlength=len(classes))
    if (counts == 0).any():
        absent = [c for c, k in zip(classes, counts) if k == 0]
        raise ValueError(f"one-vs-rest AUC needs every class in y_true; absent: {absent}")
    return idx


def multiclass_metrics(
    y_true,
    proba,
    classes,
    n_resamples=2000,
    random_state=0,
    *,
    alpha=0.05,
    y_pred=None,
    binary_positive=OSTEOPOROSIS,
    resamples_out=None,
):
    """One-vs-rest multiclass metrics with stratified bootstrap CIs, plus the binary sub-task.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        True class labels, each one of ``classes``.
    proba : array_like, shape (n_samples, n_classes)
        Class probabilities (or scores), column j for ``classes[j]``.
    classes : sequence, length n_classes
        Class labels in the column order of ``proba``; every class must occur in ``y_true``.
    n_resamples : int
        Bootstrap resamples (stratified by true class), >= 1.
    random_state : int
        Seed of the resamples; the same seed gives the same CIs bit for bit.
    alpha : float
        0.05 for 95% CIs.
    y_pred : array_like, shape (n_samples,), optional
        Predicted labels; default the arg-max column of ``proba`` (first on ties, like ``predict``).
    binary_positive : str or None
        Class of the binary task "``binary_positive`` vs the rest" (score = its probability column,
        predicted positive when it is the predicted class), with DeLong CI. None or absent skips it.
    resamples_out : dict, optional
        Receives ``"macro_auc"``: the macro AUC on each resample, shape (n_resamples,) (what
        :func:`analysis.stats.paired.resample_state` keeps, so it is not computed twice).

    Returns
    -------
    MulticlassMetrics
    """
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError("need at least two classes")
    p = np.asarray(proba, dtype=np.float64)
    true_idx = _class_indices(y_true, classes)
    if p.shape != (true_idx.size, len(classes)):
        raise ValueError(f"proba must have shape ({true_idx.size}, {len(classes)}), got {p.shape}")
    if np.isnan(p).any():
        row = int(np.flatnonzero(np.isnan(p).any(axis=1))[0])
        raise ValueError(f"proba contains NaN in row {row}")
    pred_idx = p.argmax(axis=1) if y_pred is None else _class_indices_any(y_pred, classes)
    k = len(classes)
    n = true_idx.size
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true_idx, pred_idx), 1)
    rates = confusion_rates(confusion)

    per_class = {}
    roc = {}
    aucs = []
    for j, name in enumerate(classes):
        is_j = true_idx == j
        auc = delong_auc(is_j, p[:, j], alpha=alpha)
        aucs.append(auc.auc)
        fpr, tpr, thr = roc_points(is_j, p[:, j])
        roc[str(name)] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}
        per_class[str(name)] = {
            "n": int(is_j.sum()),
            "auc": auc.auc,
            "auc_ci_low": auc.ci_low,
            "auc_ci_high": auc.ci_high,
            "auc_ci_method": "delong",
            "sensitivity": float(rates["sensitivity"][j]),
            "specificity": float(rates["specificity"][j]),
            "precision": float(rates["precision"][j]),
            "f1": float(rates["f1"][j]),
        }

    # Strata are the labels as given, so these are the resamples stratified_bootstrap_ci(...) draws with
    # the same seed and its default strata.
    weights = resample_counts(bootstrap_indices(np.asarray(y_true), n_resamples, random_state), n)
    boot_auc = np.mean([weighted_auc(true_idx == j, p[:, j], weights) for j in range(k)], axis=0)
    if resamples_out is not None:
        resamples_out["macro_auc"] = boot_auc
    boot = confusion_rates(_weighted_confusion(true_idx, pred_idx, k, weights))
    ci = {"macro_auc": percentile_interval(boot_auc, alpha)}
    ci["accuracy"] = percentile_interval(boot["accuracy"], alpha)
    for metric in _CI_METRICS[1:]:
        ci[f"macro_{metric}"] = percentile_interval(boot[metric].mean(axis=1), alpha)

    binary = None
    if binary_positive is not None and binary_positive in classes:
        j = classes.index(binary_positive)
        binary = binary_metrics(
            true_idx == j,
            p[:, j],
            y_pred=pred_idx == j,
            alpha=alpha,
            n_resamples=n_resamples,
            random_state=random_state,
        )

    return MulticlassMetrics(
        classes=[str(c) for c in classes],
        n=int(n),
        macro_auc=float(np.mean(aucs)),
        accuracy=float(rates["accuracy"]),
        macro_sensitivity=float(rates["sensitivity"].mean()),
        macro_specificity=float(rates["specificity"].mean()),
        macro_precision=float(rates["precision"].mean()),
        macro_f1=float(rates["f1"].mean()),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        roc=roc,
        ci=ci,
        binary=binary,
        binary_positive_class=str(binary_positive) if binary is not None else None,
        alpha=float(alpha),
        n_resamples=int(n_resamples),
        random_state=int(random_state),
    )


def _class_indices_any(labels, classes):
    """Indices of predicted labels; unlike true labels, a class may be absent."""
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([lookup[v] for v in np.asarray(labels).tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"y_pred has label {exc.args[0]!r}, not among classes {classes}") from None
