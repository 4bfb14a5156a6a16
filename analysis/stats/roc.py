"""ROC analysis: empirical AUC with the DeLong variance, paired DeLong test, ROC points.

Method
------
DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44:837-845, estimate the variance of the empirical
(Mann-Whitney) AUC from the *structural components* (placement values) of each case and control:

- for a case (positive) i with score X_i: ``V10_i = (1/n) * sum_j psi(X_i, Y_j)``,
- for a control (negative) j with score Y_j: ``V01_j = (1/m) * sum_i psi(X_i, Y_j)``,

with ``psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise``, m cases and n controls. Then
``AUC = mean(V10) = mean(V01)``, ``S10 = var(V10)``, ``S01 = var(V01)`` (sample variances, ddof=1) and
``Var(AUC) = S10 / m + S01 / n``; for two scores on the same cases the covariance matrix is built the same
way from the cross-covariances of the placement values.

Sun & Xu (2014), *IEEE Signal Processing Letters* 21:1389-1393, compute the placement values from midranks
in O(N log N): with T_Z the midranks of a case in the pooled sample, T_X its midrank among the cases only,
``V10_i = (T_Z_i - T_X_i) / n``; for a control, ``V01_j = 1 - (T_Z_j - T_Y_j) / m``. That is what this
module does, for one or several scores at once.

The numbers equal those of pROC (R): ``var(roc, method="delong")``, ``ci.auc(roc, method="delong")`` (normal
interval ``auc +/- z * se`` with the bounds clipped to [0, 1]) and ``roc.test(roc1, roc2, method="delong",
paired=TRUE)`` (``z = (auc1 - auc2) / sqrt(var1 + var2 - 2 cov)``), for ``direction = "<"`` (controls have
lower scores). This module never flips the direction automatically: a higher score means "more likely
positive"; negate a score whose direction is the other way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "AucResult",
    "PairedAucResult",
    "delong_auc",
    "delong_paired",
    "jsonable",
    "midranks",
    "roc_points",
    "weighted_auc",
]


def jsonable(value):
    """Plain JSON-ready copy: numpy scalars and arrays to Python numbers and lists, non-finite floats to None.

    Strict JSON has no NaN or infinity; None (null) says "undefined" (e.g. a CI without enough cases).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Fast path for the long lists of plain numbers that charts carry (thousands per page).
        if all(type(v) is float or type(v) is int for v in value):
            return [v if v - v == 0 else None for v in value]
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class AucResult:
    """Empirical AUC with its DeLong variance and normal-approximation confidence interval.

    ``variance``, ``se`` and the CI are NaN when there are fewer than 2 cases or 2 controls (the sample
    variance of the placement values is undefined; pROC gives NaN too).
    """

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int
    alpha: float = 0.05

    def to_dict(self):
        """Plain JSON-ready dict (non-finite numbers become None)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class PairedAucResult:
    """Paired DeLong comparison of two scores on the same cases; ``diff = auc_a - auc_b``.

    ``z = diff / se`` with ``se = sqrt(var_a + var_b - 2 * covariance)``; ``p`` is two-sided,
    ``p = 2 * (1 - Phi(|z|))``. When ``se`` is 0 (for example two identical rankings) ``z`` is 0 and
    ``p`` is 1 if ``diff`` is 0, otherwise ``z`` is +/-inf and ``p`` is 0.
    """

    auc_a: float
    auc_b: float
    diff: float
    var_a: float
    var_b: float
    covariance: float
    se: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int
    alpha: float = 0.05

    def to_dict(self):
        """Plain JSON-ready dict (non-finite numbers become None)."""
        return jsonable(asdict(self))


def midranks(x):
    """Midranks (average ranks of ties, 1-based) along the last axis.

    Parameters
    ----------
    x : array_like, shape (..., n)
        Values without NaN.

    Returns
    -------
    ranks : ndarray of float64, shape (..., n)
        ``scipy.stats.rankdata(x, method="average", axis=-1)``, computed with one sort per row.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    positions = np.broadcast_to(np.arange(n), x.shape)
    change = xs[..., 1:] != xs[..., :-1]
    edge = np.ones(x.shape[:-1] + (1,), dtype=bool)
    # A tie group spans [start, end]; every member gets the mean 1-based rank (start + end) / 2 + 1.
    is_start = np.concatenate([edge, change], axis=-1)
    is_end = np.concatenate([change, edge], axis=-1)
    start = np.maximum.accumulate(np.where(is_start, positions, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(is_end, positions, n - 1), -1), axis=-1), -1)
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=-1)
    return ranks


def _check_labels_scores(y_true, scores, *, names):
    """Validate binary labels and one or more score vectors; returns (bool labels, float scores (k, N))."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        labels = y
    else:
        try:
            yf = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y_true must be 0/1 or boolean") from None
        if np.isnan(yf).any():
            raise ValueError("y_true contains NaN")
        if not np.isin(yf, (0.0, 1.0)).all():
            bad = np.unique(yf[~np.isin(yf, (0.0, 1.0))])[:5]
            raise ValueError(f"y_true must be 0/1 or boolean, found values {bad.tolist()}")
        labels = yf == 1.0
    rows = []
    for name, score in zip(names, scores):
        s = np.asarray(score, dtype=np.float64)
        if s.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {s.shape}")
        if s.shape[0] != labels.shape[0]:
            raise ValueError(f"{name} has {s.shape[0]} values but y_true has {labels.shape[0]}")
        if np.isnan(s).any():
            raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(s))[0])}")
        rows.append(s)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        missing = "positive" if n_pos == 0 else "negative"
        raise ValueError(f"AUC needs both classes; no {missing} cases in y_true (n={labels.size})")
    return labels, np.vstack(rows)


def _delong_components(labels, scores):
    """AUCs (k,) and the DeLong covariance matrix (k, k) for scores (k, N)."""
    pos = scores[:, labels]
    neg = scores[:, ~labels]
    m = pos.shape[1]
    n = neg.shape[1]
    tz = midranks(np.concatenate([pos, neg], axis=1))
    tx = midranks(pos)
    ty = midranks(neg)
    v10 = (tz[:, :m] - tx) / n  # placement of each case among the controls
    v01 = 1.0 - (tz[:, m:] - ty) / m  # share of cases above each control
    auc = v10.mean(axis=1)
    if m < 2 or n < 2:
        cov = np.full((scores.shape[0], scores.shape[0]), np.nan)
    else:
        d10 = v10 - auc[:, None]
        d01 = v01 - auc[:, None]
        s10 = d10 @ d10.T / (m - 1)
        s01 = d01 @ d01.T / (n - 1)
        cov = s10 / m + s01 / n
    return auc, cov


def _z_quantile(alpha):
    from scipy.stats import norm

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(norm.ppf(1.0 - alpha / 2.0))


def delong_auc(y_true, score, alpha=0.05):
    """AUC with DeLong variance and ``1 - alpha`` confidence interval.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Binary labels, 0/1 or boolean (1/True = positive case).
    score : array_like, shape (n_samples,)
        Higher = more likely positive. Ties are handled by midranks (count 1/2).
    alpha : float
        Two-sided level; 0.05 gives the 95% CI.

    Returns
    -------
    AucResult
        ``ci_low, ci_high = clip(auc -/+ z_{1-alpha/2} * se, 0, 1)`` as pROC ``ci.auc(method="delong")``.

    Raises
    ------
    ValueError
        Lengths differ, NaN in a score, labels other than 0/1, or a class missing.
    """
    z = _z_quantile(alpha)
    labels, scores = _check_labels_scores(y_true, [score], names=["score"])
    auc, cov = _delong_components(labels, scores)
    auc = float(auc[0])
    variance = float(cov[0, 0])
    se = math.sqrt(variance) if variance >= 0 else float("nan")
    return AucResult(
        auc=auc,
        variance=variance,
        se=se,
        ci_low=min(max(auc - z * se, 0.0), 1.0),
        ci_high=min(max(auc + z * se, 0.0), 1.0),
        n_pos=int(labels.sum()),
        n_neg=int((~labels).sum()),
        alpha=float(alpha),
    )


def delong_paired(y_true, score_a, score_b, alpha=0.05):
    """Paired DeLong test of two scores on the same cases (pROC ``roc.test(method="delong", paired=TRUE)``).

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Binary labels, 0/1 or boolean.
    score_a, score_b : array_like, shape (n_samples,)
        Two scores for the same cases, higher = more likely positive.
    alpha : float
        Level of the normal CI of the difference ``auc_a - auc_b``.

    Returns
    -------
    PairedAucResult
        z and the two-sided p for ``auc_a - auc_b``.
    """
    from scipy.stats import norm

    zq = _z_quantile(alpha)
    labels, scores = _check_labels_scores(y_true, [score_a, score_b], names=["score_a", "score_b"])
    auc, cov = _delong_components(labels, scores)
    diff = float(auc[0] - auc[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    # Rounding can leave a tiny negative variance when the two scores rank the cases identically.
    se = math.sqrt(max(var_diff, 0.0)) if not math.isnan(var_diff) else float("nan")
    if math.isnan(se):
        z = p = float("nan")
    elif se > 0.0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    elif diff == 0.0:
        z, p = 0.0, 1.0
    else:
        z, p = math.copysign(math.inf, diff), 0.0
    return PairedAucResult(
        auc_a=float(auc[0]),
        auc_b=float(auc[1]),
        diff=diff,
        var_a=float(cov[0, 0]),
        var_b=float(cov[1, 1]),
        covariance=float(cov[0, 1]),
        se=se,
        z=float(z),
        p=float(p),
        ci_low=diff - zq * se,
        ci_high=diff + zq * se,
        n_pos=int(labels.sum()),
        n_neg=int((~labels).sum()),
        alpha=float(alpha),
    )


def roc_points(y_true, score):
    """Empirical ROC curve at every distinct score.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Binary labels, 0/1 or boolean.
    score : array_like, shape (n_samples,)
        Higher = more likely positive; a case is called positive when ``score >= threshold``.

    Returns
    -------
    fpr, tpr, thresholds : ndarray, shape (n_distinct + 1,)
        Same as ``sklearn.metrics.roc_curve(y_true, score, drop_intermediate=False)``: thresholds
        decreasing, the first one ``inf`` (nothing called positive, the (0, 0) point).
    """
    labels, scores = _check_labels_scores(y_true, [score], names=["score"])
    s = scores[0]
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = labels[order].astype(np.float64)
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_group]
    fps = (last_of_group + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thresholds = np.r_[np.inf, s_sorted[last_of_group]]
    return fpr, tpr, thresholds


def weighted_auc(y_true, score, weights):
    """Empirical AUC of many weighted copies of one sample (used for fast bootstrap AUCs).

    A bootstrap resample only repeats the original cases, so its AUC is the Mann-Whitney statistic of the
    original sample with each case counted ``weights[b, i]`` times. Sorting once and taking cumulative
    sums gives every resample's AUC in O(B * N) instead of one sort per resample.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Binary labels, 0/1 or boolean.
    score : array_like, shape (n_samples,)
        Higher = more likely positive.
    weights : array_like, shape (n_resamples, n_samples)
        Non-negative multiplicities (bootstrap counts).

    Returns
    -------
    auc : ndarray, shape (n_resamples,)
        NaN for a resample without a positive or without a negative case.
    """
    labels, scores = _check_labels_scores(y_true, [score], names=["score"])
    s = scores[0]
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != s.size:
        raise ValueError(f"weights must have shape (n_resamples, {s.size}), got {w.shape}")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    pos_sorted = labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted) != 0) + 1]  # first case of each tie group
    w_sorted = w[:, order]
    # Weight of positives and of negatives per tie group (B, G); a positive in group g beats the negatives
    # of the groups below g and ties with the negatives of g.
    w_pos = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
    w_neg = np.add.reduceat(w_sorted * ~pos_sorted, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg
    n_pos = w_pos.sum(axis=1)
    n_neg = w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc
