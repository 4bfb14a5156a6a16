"""Seeded stratified bootstrap: draws, percentile intervals, vectorised and per-resample paths, paired p."""

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score

from analysis.stats.bootstrap import (
    bootstrap_indices,
    bootstrap_p_value,
    paired_bootstrap_ci,
    percentile_interval,
    resample_counts,
    stratified_bootstrap_ci,
)
from analysis.stats.roc import weighted_auc


def _data(seed=0, n=90):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    score = np.round(rng.normal(size=n) + 1.2 * y, 1)
    return y, score


def test_indices_keep_every_stratum_size_and_membership():
    strata = np.array(["a"] * 5 + ["b"] * 12 + ["c"] * 3)
    idx = bootstrap_indices(strata, n_resamples=300, random_state=1)
    assert idx.shape == (300, 20)
    # Column i draws only from the stratum of case i, so every row has the original stratum sizes.
    assert (strata[idx] == strata[None, :]).all()


def test_indices_are_reproducible_and_depend_on_seed():
    strata = np.repeat([0, 1], [30, 40])
    a = bootstrap_indices(strata, 50, random_state=7)
    b = bootstrap_indices(strata, 50, random_state=7)
    c = bootstrap_indices(strata, 50, random_state=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_resample_counts_count_each_case():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(resample_counts(idx, 3), [[2, 0, 1], [0, 1, 2]])


def test_percentile_interval_is_numpy_linear_percentile_without_nan():
    samples = np.array([3.0, np.nan, 1.0, 2.0, 10.0, 4.0])
    finite = samples[~np.isnan(samples)]
    assert percentile_interval(samples, 0.1) == tuple(np.percentile(finite, [5, 95]))


def test_vectorised_and_per_resample_paths_agree():
    # Same indices either way: a vectorised mean and a plain Python mean give the same interval.
    y, score = _data()

    def mean_score_vec(y_b, s_b):
        return s_b.mean(axis=1)

    def mean_score(y_1, s_1):
        return float(np.mean(s_1))

    fast = stratified_bootstrap_ci(mean_score_vec, y, score, n_resamples=400, random_state=3)
    slow = stratified_bootstrap_ci(mean_score, y, score, n_resamples=400, random_state=3, vectorized=False)
    assert fast.estimate == pytest.approx(score.mean(), abs=1e-12)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_auc_ci_from_weights_equals_sklearn_on_each_resample():
    # The fast path of the metric modules (weighted AUC on resample counts) against scikit-learn's
    # roc_auc_score called on every explicitly resampled data set, same seed and strata.
    y, score = _data(seed=4)
    slow = stratified_bootstrap_ci(roc_auc_score, y, score, n_resamples=300, random_state=9, vectorized=False)
    counts = resample_counts(bootstrap_indices(y, 300, random_state=9), y.size)
    fast = percentile_interval(weighted_auc(y, score, counts), 0.05)
    np.testing.assert_allclose(fast, slow[:2], atol=1e-12)
    assert slow.estimate == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert slow.low < slow.estimate < slow.high


def test_constant_statistic_gives_degenerate_interval():
    y, score = _data()
    result = stratified_bootstrap_ci(lambda y_b, s_b: np.full(y_b.shape[0], 0.5), y, score, n_resamples=50)
    assert tuple(result) == (0.5, 0.5, 0.5)


def test_continuous_labels_need_explicit_strata():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    with pytest.raises(ValueError, match="strata=False"):
        stratified_bootstrap_ci(lambda a, b: a.mean(axis=1), y, y)
    plain = stratified_bootstrap_ci(lambda a, b: a.mean(axis=1), y, y, strata=False, n_resamples=200)
    assert plain.low < y.mean() < plain.high


def test_bootstrap_p_value_hand_cases():
    # d = (1, 2, 3, 4): no resample at or below 0, p = 2 * (0 + 1) / (4 + 1) = 0.4.
    assert bootstrap_p_value([1, 2, 3, 4]) == pytest.approx(0.4)
    # d = (-1, 2, 3, 0): #(d <= 0) = 2, #(d >= 0) = 3, p = min(1, 2 * 3 / 5) = 1.
    assert bootstrap_p_value([-1, 2, 3, 0]) == 1.0
    # d = (-3, -2, -1, 1, 2, 5, 6, 7, 8): #(d <= 0) = 3, p = 2 * 4 / 10 = 0.8.
    assert bootstrap_p_value([-3, -2, -1, 1, 2, 5, 6, 7, 8]) == pytest.approx(0.8)


def test_paired_bootstrap_of_mae_difference():
    rng = np.random.default_rng(2)
    truth = rng.normal(100, 30, size=120)
    good = truth + rng.normal(0, 5, size=120)
    bad = truth + rng.normal(0, 15, size=120)

    def mae(y_b, p_b):
        return np.abs(p_b - y_b).mean(axis=1)

    result = paired_bootstrap_ci(mae, truth, good, bad, strata=False, n_resamples=500, random_state=0)
    assert result.estimate_a == pytest.approx(mean_absolute_error(truth, good), abs=1e-12)
    assert result.estimate_b == pytest.approx(mean_absolute_error(truth, bad), abs=1e-12)
    assert result.estimate == pytest.approx(result.estimate_a - result.estimate_b, abs=1e-12)
    assert result.high < 0
    # Every resampled difference is negative, so p is the smallest possible: 2 * 1 / (500 + 1).
    assert result.p_value == pytest.approx(2 / 501)


def test_statistic_of_wrong_shape_is_rejected():
    y, score = _data()
    with pytest.raises(ValueError, match="must return shape"):
        stratified_bootstrap_ci(lambda a, b: 1.0, y, score, n_resamples=10)
