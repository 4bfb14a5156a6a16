"""Paired comparisons on the study's own metric: the stratified bootstrap of the 3-class macro AUC difference
(and of MAE) and the paired DeLong test, computed directly and from the per-model states stored at
evaluation time."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.categories import CATEGORIES
from analysis.stats.bootstrap import bootstrap_indices, bootstrap_p_value, percentile_interval
from analysis.stats.paired import (
    compare_states,
    decode_array,
    delong_from_placements,
    delong_placements,
    paired_macro_auc_bootstrap,
    resample_state,
)
from analysis.stats.regression import paired_mae_comparison
from analysis.stats.roc import delong_paired


def _cases(n=150, seed=3):
    rng = np.random.default_rng(seed)
    y = np.array(CATEGORIES, dtype=object)[rng.integers(0, 3, n)]
    onehot = (y[:, None] == np.array(CATEGORIES)[None, :]).astype(float)
    a = onehot * 1.2 + rng.normal(0, 0.6, (n, 3))
    b = onehot * 0.8 + rng.normal(0, 0.6, (n, 3))
    # Rounded scores: ties inside and across classes, as tree ensembles give.
    a = np.round(np.exp(a) / np.exp(a).sum(axis=1, keepdims=True), 2)
    b = np.round(np.exp(b) / np.exp(b).sum(axis=1, keepdims=True), 2)
    # Rows sum to 1 again (scikit-learn's multiclass AUC checks it).
    a[:, 2] = 1.0 - a[:, 0] - a[:, 1]
    b[:, 2] = 1.0 - b[:, 0] - b[:, 1]
    return y, a, b


def _naive_macro_auc(y, p):
    """One-vs-rest macro AUC with scikit-learn's binary AUC per class, one resample at a time (the reference;
    scikit-learn's own multiclass form wants alphabetically ordered labels)."""
    return float(np.mean([roc_auc_score(y == c, p[:, j]) for j, c in enumerate(CATEGORIES)]))


def test_paired_macro_auc_bootstrap_equals_a_naive_loop_on_fixed_resamples():
    y, a, b = _cases()
    indices = bootstrap_indices(y, 300, random_state=7)
    result = paired_macro_auc_bootstrap(y, a, b, CATEGORIES, indices=indices)
    naive = np.array([_naive_macro_auc(y[i], a[i]) - _naive_macro_auc(y[i], b[i]) for i in indices])
    np.testing.assert_allclose(result["diffs"], naive, rtol=0, atol=1e-12)
    low, high = percentile_interval(naive)
    assert result["ci_low"] == pytest.approx(low, abs=1e-12) and result["ci_high"] == pytest.approx(high, abs=1e-12)
    assert result["p"] == bootstrap_p_value(naive)
    assert result["diff"] == pytest.approx(_naive_macro_auc(y, a) - _naive_macro_auc(y, b), abs=1e-12)
    # Stratified: every resample keeps each category's count.
    for i in indices[:20]:
        assert sorted(y[i]) == sorted(y)


def test_stored_states_reproduce_the_direct_paired_bootstrap_and_delong():
    y, a, b = _cases()
    ids = np.arange(1000, 1000 + y.size)[::-1]  # any order: states sort by case id
    state_a = resample_state("classification", ids, y, {"proba": a}, classes=CATEGORIES, positive="osteoporosis",
                             n_resamples=500, random_state=2)
    state_b = resample_state("classification", ids, y, {"proba": b}, classes=CATEGORIES, positive="osteoporosis",
                             n_resamples=500, random_state=2)
    order = np.argsort(ids)
    direct = paired_macro_auc_bootstrap(y[order], a[order], b[order], CATEGORIES, n_resamples=500, random_state=2)
    result = compare_states(state_a, state_b)
    assert result["diff"] == pytest.approx(direct["diff"], abs=1e-12)
    assert result["ci_low"] == pytest.approx(direct["ci_low"], abs=1e-12)
    assert result["ci_high"] == pytest.approx(direct["ci_high"], abs=1e-12)
    assert result["p"] == direct["p"]
    # The binary DeLong test from stored placements equals delong_paired on the scores.
    positive = y == "osteoporosis"
    expected = delong_paired(positive, a[:, 0], b[:, 0])
    assert result["delong"]["z"] == pytest.approx(expected.z, abs=1e-12)
    assert result["delong"]["p"] == pytest.approx(expected.p, abs=1e-12)
    assert result["delong"]["diff"] == pytest.approx(expected.diff, abs=1e-12)


def test_delong_from_placements_equals_delong_paired():
    y, a, b = _cases(n=60, seed=9)
    positive = y == "normal"
    pa, pb = delong_placements(positive, a[:, 2]), delong_placements(positive, b[:, 2])
    got = delong_from_placements(*pa, *pb)
    expected = delong_paired(positive, a[:, 2], b[:, 2])
    for key in ("auc_a", "auc_b", "diff", "se", "z", "p", "ci_low", "ci_high"):
        assert got[key] == pytest.approx(getattr(expected, key), abs=1e-12)


def test_mae_states_reproduce_the_paired_mae_bootstrap():
    rng = np.random.default_rng(4)
    y = rng.uniform(40, 200, 120)
    a, b = y + rng.normal(0, 8, y.size), y + rng.normal(2, 12, y.size)
    ids = np.arange(y.size)
    result = compare_states(resample_state("regression", ids, y, {"bmd": a}, n_resamples=400),
                            resample_state("regression", ids, y, {"bmd": b}, n_resamples=400))
    expected = paired_mae_comparison(y, a, b, n_resamples=400)
    assert result["diff"] == pytest.approx(expected.diff, abs=1e-12)
    assert result["ci_low"] == pytest.approx(expected.ci_low, abs=1e-9)
    assert result["ci_high"] == pytest.approx(expected.ci_high, abs=1e-9)
    assert result["p"] == pytest.approx(expected.p_value, abs=1e-12)


def test_states_of_different_cases_are_not_paired():
    y, a, b = _cases(n=40)
    state_a = resample_state("classification", np.arange(40), y, {"proba": a}, classes=CATEGORIES, n_resamples=50)
    state_b = resample_state("classification", np.arange(1, 41), y, {"proba": b}, classes=CATEGORIES,
                             n_resamples=50)
    with pytest.raises(ValueError, match="different cases"):
        compare_states(state_a, state_b)


def test_compare_many_equals_compare_states_pair_by_pair():
    # The vectorised pairing of many versions gives the numbers of compare_states for every pair, and the
    # same errors for states of other cases or without resamples.
    from analysis.stats.paired import compare_many

    y, a, b = _cases(n=80, seed=5)
    rng = np.random.default_rng(6)
    probas = [a, b, np.round(rng.dirichlet(np.ones(3), 80), 3), a[::-1].copy()]
    ids = np.arange(80)
    states = [resample_state("classification", ids, y, {"proba": p}, classes=CATEGORIES, positive="osteoporosis",
                             n_resamples=300, random_state=1) for p in probas]
    states.append(resample_state("classification", ids + 1, y, {"proba": a}, classes=CATEGORIES, n_resamples=300))
    states.append(None)
    many = compare_many(states)
    assert len(many) == 15
    for (i, j), result in many.items():
        try:
            expected = compare_states(states[i], states[j])
        except ValueError as exc:
            assert isinstance(result, ValueError) and str(result) == str(exc)
            continue
        for key in ("estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "p"):
            assert result[key] == pytest.approx(expected[key], abs=1e-12), key
        for key in ("diff", "se", "z", "p", "ci_low", "ci_high"):
            assert result["delong"][key] == pytest.approx(expected["delong"][key], abs=1e-12), key


def test_states_reuse_the_metrics_resamples_exactly():
    # Training stores the state from the resamples its CIs used (no second bootstrap); the result must equal
    # a state computed from scratch, for both tasks.
    from analysis.stats.classification import multiclass_metrics
    from analysis.stats.regression import regression_metrics

    y, a, _ = _cases(n=90, seed=8)
    ids = np.arange(10, 100)
    out = {}
    multiclass_metrics(y, a, CATEGORIES, n_resamples=300, random_state=4, resamples_out=out)
    reused = resample_state("classification", ids, y, {"proba": a}, classes=CATEGORIES, n_resamples=300,
                            random_state=4, boot=out["macro_auc"])
    fresh = resample_state("classification", ids, y, {"proba": a}, classes=CATEGORIES, n_resamples=300,
                           random_state=4)
    np.testing.assert_allclose(decode_array(reused["boot"]), decode_array(fresh["boot"]), rtol=0, atol=1e-12)
    rng = np.random.default_rng(2)
    bmd = rng.uniform(40, 200, 90)
    pred = bmd + rng.normal(0, 9, 90)
    out = {}
    regression_metrics(bmd, pred, n_resamples=300, random_state=4, resamples_out=out)
    reused = resample_state("regression", ids, bmd, {"bmd": pred}, n_resamples=300, random_state=4, boot=out["mae"])
    fresh = resample_state("regression", ids, bmd, {"bmd": pred}, n_resamples=300, random_state=4)
    np.testing.assert_allclose(decode_array(reused["boot"]), decode_array(fresh["boot"]), rtol=0, atol=1e-12)
