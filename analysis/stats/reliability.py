"""Reliability of a classifier's probabilities: reliability curve and Brier score per class.

Called "reliability" throughout the product so it is not confused with the thoraco-lumbar HU calibration of
the chest model. For class k (one-vs-rest), cases are grouped by their predicted probability of k into
``n_bins`` equal-width bins of [0, 1] (the last bin closed); each non-empty bin gives the mean predicted
probability, the observed share of class k and the number of cases (scikit-learn's
``calibration_curve(strategy="uniform")`` computes the same points). The Brier score of class k is
``mean((p_k - [y = k])^2)``; the multiclass Brier score is their sum (Brier 1950).
"""

from __future__ import annotations

import numpy as np

from analysis.stats.roc import jsonable

__all__ = ["reliability"]


def reliability(y_true, proba, classes, *, n_bins=10):
    """Reliability curve and Brier score of each class.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        True class labels.
    proba : array_like, shape (n_samples, n_classes)
        Predicted probabilities, column j for ``classes[j]``.
    classes : sequence
    n_bins : int
        Equal-width probability bins.

    Returns
    -------
    dict (JSON-ready)
        ``{"n_bins", "brier_multiclass", "classes": {class: {"brier", "mean_predicted": [...],
        "observed": [...], "count": [...]}}}``: one entry per non-empty bin, in increasing probability.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (y.size, len(classes)):
        raise ValueError(f"proba must have shape ({y.size}, {len(classes)}), got {p.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = {"n_bins": int(n_bins), "classes": {}}
    total = 0.0
    for j, name in enumerate(classes):
        hit = (y == name).astype(np.float64)
        pj = p[:, j]
        brier = float(np.mean((pj - hit) ** 2))
        total += brier
        # Bin index: right-open bins, the last one closed at 1.0.
        which = np.clip(np.searchsorted(edges, pj, side="right") - 1, 0, n_bins - 1)
        count = np.bincount(which, minlength=n_bins)
        sum_p = np.bincount(which, weights=pj, minlength=n_bins)
        sum_hit = np.bincount(which, weights=hit, minlength=n_bins)
        used = count > 0
        out["classes"][str(name)] = {
            "brier": brier,
            "mean_predicted": (sum_p[used] / count[used]).tolist(),
            "observed": (sum_hit[used] / count[used]).tolist(),
            "count": count[used].astype(int).tolist(),
        }
    out["brier_multiclass"] = total
    return jsonable(out)
