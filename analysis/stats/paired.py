"""Paired comparisons of two models on the same cases, from per-model quantities stored at evaluation time.

The seed study's headline comparison (chest against calibrated chest) is on its own metric, the 3-class
one-vs-rest macro AUC, for which no closed-form paired test exists: the paired **stratified bootstrap**
resamples the cases (stratified by true category, so every class keeps its size) and evaluates both models
on the same resample; the CI of ``macro_auc_a - macro_auc_b`` is the percentile interval of those
differences, and the p-value :func:`analysis.stats.bootstrap.bootstrap_p_value`. For regressors the same is
done with the MAE (one stratum). Beside it, the binary "osteoporosis vs not" AUC gets the paired DeLong test.

Both are split into a per-model part and a pairing step, so that a comparison page never recomputes a metric:

- :func:`resample_state` (run once per model and split, at training or evaluation time) keeps the statistic
  on every resample (the resamples are fixed by the sorted case ids, their labels and the seed) and the
  DeLong placement values of each case;
- :func:`compare_states` (run per pair on page view) subtracts two such arrays and takes percentiles, which
  is exactly the paired bootstrap when both models were evaluated on the same cases with the same labels
  (checked through ``case_key``), and forms the DeLong covariance from the placements.

:func:`paired_macro_auc_bootstrap` is the direct computation on arrays (the reference the states reproduce).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from statistics import NormalDist

import numpy as np

from analysis.stats.bootstrap import bootstrap_indices, bootstrap_p_value, percentile_interval, resample_counts
from analysis.stats.roc import _check_labels_scores, jsonable, midranks, weighted_auc

__all__ = [
    "compare_many",
    "compare_states",
    "decode_array",
    "decoded_state",
    "delong_from_placements",
    "delong_placements",
    "encode_array",
    "macro_auc_resamples",
    "paired_macro_auc_bootstrap",
    "resample_state",
]


def encode_array(values):
    """float64 array -> base64 text (exact, and a quarter of the size of JSON numbers)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def decode_array(text):
    """Inverse of :func:`encode_array` (an array already decoded is returned as it is)."""
    if isinstance(text, np.ndarray):
        return text
    return np.frombuffer(base64.b64decode(text), dtype="<f8")


def decoded_state(state):
    """A copy of a :func:`resample_state` with its arrays decoded once (for pairing one model many times)."""
    if not state:
        return state
    out = dict(state, boot=decode_array(state["boot"]))
    if state.get("delong"):
        out["delong"] = dict(state["delong"], v10=decode_array(state["delong"]["v10"]),
                             v01=decode_array(state["delong"]["v01"]))
    return out


def _class_index(y_true, classes):
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([lookup[v] for v in np.asarray(y_true).tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"y_true has label {exc.args[0]!r}, not among classes {list(classes)}") from None


def macro_auc_resamples(y_true, proba, classes, indices):
    """One-vs-rest macro AUC of ``proba`` on each bootstrap resample.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        True class labels.
    proba : array_like, shape (n_samples, n_classes)
        Column j is the probability of ``classes[j]``.
    classes : sequence
    indices : ndarray of int, shape (n_resamples, n_samples)
        Resample indices (:func:`analysis.stats.bootstrap.bootstrap_indices`).

    Returns
    -------
    ndarray, shape (n_resamples,)
        Mean over classes of the class-vs-rest AUC; NaN where a class is absent from a resample.
    """
    idx = _class_index(y_true, classes)
    p = np.asarray(proba, dtype=np.float64)
    weights = resample_counts(np.asarray(indices), idx.size)
    return np.mean([weighted_auc(idx == j, p[:, j], weights) for j in range(len(classes))], axis=0)


def _macro_auc(idx, p, k):
    identity = np.ones((1, idx.size))
    return float(np.mean([weighted_auc(idx == j, p[:, j], identity)[0] for j in range(k)]))


def paired_macro_auc_bootstrap(y_true, proba_a, proba_b, classes, *, n_resamples=2000, random_state=0, alpha=0.05,
                               indices=None):
    """Paired stratified bootstrap of the macro AUC difference of two models on the same cases.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
    proba_a, proba_b : array_like, shape (n_samples, n_classes)
    classes : sequence
    n_resamples, random_state : int
        Resamples stratified by ``y_true`` (ignored when ``indices`` is given).
    alpha : float
    indices : ndarray of int, shape (n_resamples, n_samples), optional
        Fixed resample indices.

    Returns
    -------
    dict
        ``{"macro_auc_a", "macro_auc_b", "diff", "ci_low", "ci_high", "p", "n", "n_resamples", "diffs"}``,
        ``diff = macro_auc_a - macro_auc_b`` on the original cases, ``diffs`` the per-resample differences.
    """
    y = np.asarray(y_true)
    if indices is None:
        indices = bootstrap_indices(y, n_resamples, random_state)
    idx = _class_index(y, classes)
    a = np.asarray(proba_a, dtype=np.float64)
    b = np.asarray(proba_b, dtype=np.float64)
    diffs = macro_auc_resamples(y, a, classes, indices) - macro_auc_resamples(y, b, classes, indices)
    est_a, est_b = _macro_auc(idx, a, len(classes)), _macro_auc(idx, b, len(classes))
    low, high = percentile_interval(diffs, alpha)
    return {"macro_auc_a": est_a, "macro_auc_b": est_b, "diff": est_a - est_b, "ci_low": low, "ci_high": high,
            "p": bootstrap_p_value(diffs), "n": int(y.size), "n_resamples": int(len(indices)), "diffs": diffs}


def delong_placements(y_true, score):
    """DeLong placement values of one score: ``v10`` per positive case, ``v01`` per negative case.

    ``auc = mean(v10) = mean(v01)``; the paired DeLong covariance of two scores is built from the
    placements of both (:func:`delong_from_placements`).
    """
    labels, scores = _check_labels_scores(y_true, [score], names=["score"])
    s = scores[0]
    pos, neg = s[labels], s[~labels]
    m, n = pos.size, neg.size
    tz = midranks(np.concatenate([pos, neg]))
    v10 = (tz[:m] - midranks(pos)) / n
    v01 = 1.0 - (tz[m:] - midranks(neg)) / m
    return v10, v01


def delong_from_placements(v10_a, v01_a, v10_b, v01_b, alpha=0.05):
    """Paired DeLong test from the placements of two scores on the same cases (same order).

    Returns
    -------
    dict
        ``{"auc_a", "auc_b", "diff", "se", "z", "p", "ci_low", "ci_high", "n_pos", "n_neg"}``, the numbers of
        :func:`analysis.stats.roc.delong_paired` on the underlying scores.
    """
    v10 = np.vstack([v10_a, v10_b])
    v01 = np.vstack([v01_a, v01_b])
    m, n = v10.shape[1], v01.shape[1]
    auc = v10.mean(axis=1)
    diff = float(auc[0] - auc[1])
    if m < 2 or n < 2:
        se = float("nan")
    else:
        d10 = v10 - auc[:, None]
        d01 = v01 - auc[:, None]
        cov = d10 @ d10.T / (m - 1) / m + d01 @ d01.T / (n - 1) / n
        se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0))
    if math.isnan(se):
        z = p = float("nan")
    elif se > 0.0:
        z = diff / se
        # Two-sided normal p, 2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2): the standard library's erfc, not
        # scipy.stats, whose per-call overhead would dominate a page pairing 45 versions (990 pairs).
        p = math.erfc(abs(z) / math.sqrt(2.0))
    elif diff == 0.0:
        z, p = 0.0, 1.0
    else:
        z, p = math.copysign(math.inf, diff), 0.0
    zq = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": se, "z": float(z), "p": float(p),
            "ci_low": diff - zq * se, "ci_high": diff + zq * se, "n_pos": int(m), "n_neg": int(n)}


def _case_key(case_ids, labels, n_resamples, random_state):
    text = json.dumps([list(map(int, case_ids)), [str(v) for v in labels], int(n_resamples), int(random_state)])
    return hashlib.sha256(text.encode()).hexdigest()


def resample_state(task, case_ids, y_true, output, *, classes=None, positive=None, n_resamples=2000,
                   random_state=0, boot=None):
    """What a model's evaluation on one split keeps for paired comparisons (JSON-ready).

    Parameters
    ----------
    task : {"classification", "regression"}
    case_ids : array_like of int, shape (n_samples,)
        Exam ids; cases are put in ascending id order, so the resamples depend only on the cases.
    y_true : array_like, shape (n_samples,)
        Categories or QCT BMD (mg/cm3).
    output : dict
        ``{"proba": (n_samples, n_classes)}`` or ``{"bmd": (n_samples,)}``.
    classes : sequence, classification only
    positive : str, optional
        Class of the binary DeLong comparison (classification).
    n_resamples, random_state : int
    boot : ndarray, shape (n_resamples,), optional
        The statistic on each resample when already computed with the same seed on the cases in the given
        order (``multiclass_metrics`` / ``regression_metrics`` with ``resamples_out``); used only when that
        order is ascending in case id, so it is the same resampling.

    Returns
    -------
    dict
        ``{"case_key", "n", "n_resamples", "random_state", "statistic" ("macro_auc" or "mae"), "estimate",
        "boot" (base64 float64, one value per resample), "delong": {"v10", "v01"} (base64, classification
        with ``positive``)}``.
    """
    ids = np.asarray(case_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if boot is not None and not np.array_equal(order, np.arange(order.size)):
        boot = None
    y = np.asarray(y_true)[order]
    state = {"n": int(ids.size), "n_resamples": int(n_resamples), "random_state": int(random_state)}
    if task == "classification":
        p = np.asarray(output["proba"], dtype=np.float64)[order]
        if boot is None:
            boot = macro_auc_resamples(y, p, classes, bootstrap_indices(y, n_resamples, random_state))
        state.update(statistic="macro_auc", estimate=_macro_auc(_class_index(y, classes), p, len(classes)),
                     boot=encode_array(boot))
        if positive is not None and positive in list(classes):
            is_pos = y == positive
            if is_pos.any() and (~is_pos).any():
                v10, v01 = delong_placements(is_pos, p[:, list(classes).index(positive)])
                state["delong"] = {"positive": str(positive), "v10": encode_array(v10), "v01": encode_array(v01)}
    else:
        y = y.astype(np.float64)
        pred = np.asarray(output["bmd"], dtype=np.float64)[order]
        errors = np.abs(pred - y)
        if boot is None:
            weights = resample_counts(bootstrap_indices(np.zeros(y.size), n_resamples, random_state), y.size)
            boot = weights @ errors / weights.sum(axis=1)
        state.update(statistic="mae", estimate=float(errors.mean()), boot=encode_array(boot))
    state["case_key"] = _case_key(ids, y, n_resamples, random_state)
    return jsonable(state)


def compare_states(state_a, state_b, *, alpha=0.05):
    """The paired comparison of two models from their :func:`resample_state` on one split.

    Returns
    -------
    dict
        ``{"statistic", "estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "p", "n", "n_resamples",
        "delong": {...} or None}``.

    Raises
    ------
    ValueError
        When the two states are not of the same cases, labels, resamples and statistic (then a paired
        bootstrap from stored resamples would not be paired).
    """
    if not state_a or not state_b:
        raise ValueError("no stored resamples for one of the versions; re-evaluate it")
    if state_a.get("statistic") != state_b.get("statistic"):
        raise ValueError("the versions are of different tasks")
    if state_a.get("case_key") != state_b.get("case_key"):
        raise ValueError(
            f"the versions were evaluated on different cases or labels (n = {state_a.get('n')} and "
            f"{state_b.get('n')}); the paired test needs the same cases"
        )
    diffs = decode_array(state_a["boot"]) - decode_array(state_b["boot"])
    low, high = percentile_interval(diffs, alpha)
    result = {"statistic": state_a["statistic"], "estimate_a": state_a["estimate"], "estimate_b": state_b["estimate"],
              "diff": state_a["estimate"] - state_b["estimate"], "ci_low": low, "ci_high": high,
              "p": bootstrap_p_value(diffs), "n": state_a["n"], "n_resamples": state_a["n_resamples"],
              "delong": None}
    da, db = state_a.get("delong"), state_b.get("delong")
    if da and db and da.get("positive") == db.get("positive"):
        result["delong"] = {"positive": da["positive"], **delong_from_placements(
            decode_array(da["v10"]), decode_array(da["v01"]), decode_array(db["v10"]), decode_array(db["v01"]),
            alpha=alpha)}
    return result


def compare_many(states, *, alpha=0.05):
    """:func:`compare_states` of every pair of a list of states at once (vectorised over the pairs).

    Parameters
    ----------
    states : sequence of dict or None
        :func:`resample_state` results (decoded or not); None for a model without one.
    alpha : float

    Returns
    -------
    dict
        ``{(i, j): result or ValueError}`` for every i < j: the result dict of :func:`compare_states`, equal
        to it number for number, or the error it would raise.
    """
    from statistics import NormalDist

    states = [decoded_state(s) if s else None for s in states]
    out = {}
    groups = {}
    for i, state in enumerate(states):
        if state:
            groups.setdefault((state.get("statistic"), state.get("case_key")), []).append(i)
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            a, b = states[i], states[j]
            if not a or not b:
                out[(i, j)] = ValueError("no stored resamples for one of the versions; re-evaluate it")
            elif a.get("statistic") != b.get("statistic"):
                out[(i, j)] = ValueError("the versions are of different tasks")
            elif a.get("case_key") != b.get("case_key"):
                out[(i, j)] = ValueError(
                    f"the versions were evaluated on different cases or labels (n = {a.get('n')} and {b.get('n')}); "
                    f"the paired test needs the same cases")
    zq = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    for members in groups.values():
        if len(members) < 2:
            continue
        first, second = np.triu_indices(len(members), k=1)
        boot = np.vstack([states[k]["boot"] for k in members])
        diffs = boot[first] - boot[second]
        finite = ~np.isnan(diffs)
        if finite.all():
            low, high = np.percentile(diffs, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=1)
        else:
            low, high = np.array([percentile_interval(d, alpha) for d in diffs]).T
        count = finite.sum(axis=1)
        tail = np.minimum(((diffs <= 0.0) & finite).sum(axis=1), ((diffs >= 0.0) & finite).sum(axis=1)) + 1
        p = np.minimum(1.0, 2.0 * tail / (count + 1))
        delong = [states[k].get("delong") for k in members]
        cov = None
        if all(delong) and len({d["positive"] for d in delong}) == 1:
            v10 = np.vstack([d["v10"] for d in delong])
            v01 = np.vstack([d["v01"] for d in delong])
            m, n = v10.shape[1], v01.shape[1]
            auc = v10.mean(axis=1)
            if m >= 2 and n >= 2:
                d10, d01 = v10 - auc[:, None], v01 - auc[:, None]
                cov = d10 @ d10.T / (m - 1) / m + d01 @ d01.T / (n - 1) / n
        for q, (x, y) in enumerate(zip(first, second)):
            a, b = states[members[x]], states[members[y]]
            result = {"statistic": a["statistic"], "estimate_a": a["estimate"], "estimate_b": b["estimate"],
                      "diff": a["estimate"] - b["estimate"], "ci_low": float(low[q]), "ci_high": float(high[q]),
                      "p": float(p[q]) if count[q] else float("nan"), "n": a["n"], "n_resamples": a["n_resamples"],
                      "delong": None}
            if delong[x] and delong[y] and delong[x]["positive"] == delong[y]["positive"]:
                if cov is None:
                    result["delong"] = {"positive": delong[x]["positive"], **delong_from_placements(
                        delong[x]["v10"], delong[x]["v01"], delong[y]["v10"], delong[y]["v01"], alpha=alpha)}
                else:
                    result["delong"] = {"positive": delong[x]["positive"],
                                        **_delong_result(auc[x], auc[y], cov[x, x] + cov[y, y] - 2.0 * cov[x, y],
                                                         zq, v10.shape[1], v01.shape[1])}
            out[(members[x], members[y])] = result
    return out


def _delong_result(auc_a, auc_b, var_diff, zq, m, n):
    """The paired DeLong numbers from the two AUCs and the variance of their difference."""
    diff = float(auc_a - auc_b)
    se = math.sqrt(max(float(var_diff), 0.0))
    if se > 0.0:
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    elif diff == 0.0:
        z, p = 0.0, 1.0
    else:
        z, p = math.copysign(math.inf, diff), 0.0
    return {"auc_a": float(auc_a), "auc_b": float(auc_b), "diff": diff, "se": se, "z": float(z), "p": float(p),
            "ci_low": diff - zq * se, "ci_high": diff + zq * se, "n_pos": int(m), "n_neg": int(n)}
