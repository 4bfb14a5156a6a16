"""Regression metrics agree with scikit-learn/scipy; Bland-Altman against a hand-computed case."""

import json
import math

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

from analysis.stats.bootstrap import paired_bootstrap_ci, stratified_bootstrap_ci
from analysis.stats.regression import bland_altman, paired_mae_comparison, regression_metrics


def _bmd(seed=0, n=140):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(30, 200, size=n)
    pred = 0.9 * truth + 12 + rng.normal(0, 12, size=n)
    return truth, pred


def test_point_metrics_agree_with_sklearn_and_scipy():
    y, p = _bmd()
    m = regression_metrics(y, p, n_resamples=0)
    assert m.mae == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert m.rmse == pytest.approx(root_mean_squared_error(y, p), rel=1e-12)
    assert m.explained_variance == pytest.approx(explained_variance_score(y, p), abs=1e-12)
    assert m.r2 == pytest.approx(r2_score(y, p), abs=1e-12)
    r = pearsonr(y, p)
    assert m.pearson_r == pytest.approx(r.statistic, abs=1e-12)
    assert m.pearson_p == pytest.approx(r.pvalue, rel=1e-9)
    assert m.ci == {}


def test_bland_altman_hand_example():
    # d = pred - true = (2, -1, 5, 1): bias 7/4 = 1.75; squared deviations 0.0625 + 7.5625 + 10.5625 +
    # 0.5625 = 18.75, SD = sqrt(18.75 / 3) = 2.5; limits 1.75 -/+ 1.96 * 2.5 = (-3.15, 6.65).
    # t(3 df, 0.975) = 3.182446 (t table); CI of the bias 1.75 -/+ 3.182446 * 2.5 / 2 = (-2.228058, 5.728058);
    # SE of a limit sqrt(3 * 2.5^2 / 4) = 2.165064, CI half-width 3.182446 * 2.165064 = 6.890199.
    ba = bland_altman([100, 110, 120, 130], [102, 109, 125, 131])
    assert ba.bias == pytest.approx(1.75, abs=1e-12)
    assert ba.sd == pytest.approx(2.5, abs=1e-12)
    assert (ba.loa_low, ba.loa_high) == (pytest.approx(-3.15, abs=1e-12), pytest.approx(6.65, abs=1e-12))
    assert ba.bias_ci_low == pytest.approx(-2.228058, abs=1e-6)
    assert ba.bias_ci_high == pytest.approx(5.728058, abs=1e-6)
    assert ba.loa_low_ci_low == pytest.approx(-3.15 - 6.890199, abs=1e-6)
    assert ba.loa_low_ci_high == pytest.approx(-3.15 + 6.890199, abs=1e-6)
    assert ba.loa_high_ci_low == pytest.approx(6.65 - 6.890199, abs=1e-6)
    assert ba.loa_high_ci_high == pytest.approx(6.65 + 6.890199, abs=1e-6)


def test_bootstrap_cis_equal_explicit_resampling():
    # The weighted-count fast path against scikit-learn evaluated on each explicitly resampled data set
    # (same seed, unstratified).
    y, p = _bmd(seed=1)
    m = regression_metrics(y, p, n_resamples=300, random_state=5)
    for name, fn in (("mae", mean_absolute_error), ("rmse", root_mean_squared_error), ("r2", r2_score)):
        slow = stratified_bootstrap_ci(fn, y, p, strata=False, n_resamples=300, random_state=5, vectorized=False)
        np.testing.assert_allclose(m.ci[name], slow[:2], rtol=1e-10, err_msg=name)
    slow_r = stratified_bootstrap_ci(
        lambda a, b: pearsonr(a, b).statistic, y, p, strata=False, n_resamples=300, random_state=5, vectorized=False
    )
    np.testing.assert_allclose(m.ci["pearson_r"], slow_r[:2], rtol=1e-10)
    low, high = m.ci["explained_variance"]
    assert low < m.explained_variance < high


def test_paired_mae_comparison_equals_generic_paired_bootstrap():
    y, p = _bmd(seed=2)
    rng = np.random.default_rng(3)
    worse = p + rng.normal(0, 8, size=y.size)
    result = paired_mae_comparison(y, p, worse, n_resamples=400, random_state=1)

    def mae(y_b, p_b):
        return np.abs(p_b - y_b).mean(axis=1)

    generic = paired_bootstrap_ci(mae, y, p, worse, strata=False, n_resamples=400, random_state=1)
    assert result.diff == pytest.approx(generic.estimate, abs=1e-12)
    assert result.mae_a == pytest.approx(mean_absolute_error(y, p), abs=1e-12)
    np.testing.assert_allclose([result.ci_low, result.ci_high], generic[:2], atol=1e-10)
    assert result.p_value == generic.p_value
    assert result.diff < 0 and result.ci_high < 0 and result.p_value < 0.05


def test_identical_predictions_compare_as_equal():
    y, p = _bmd(seed=4)
    result = paired_mae_comparison(y, p, p, n_resamples=100)
    assert (result.diff, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_reproducible_and_json_ready():
    y, p = _bmd(seed=6)
    a = regression_metrics(y, p, n_resamples=200, random_state=3)
    b = regression_metrics(y, p, n_resamples=200, random_state=3)
    assert a == b
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["bland_altman"]["n"] == 140 and len(d["ci"]["mae"]) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="y_pred has shape"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="y_pred has a missing or non-finite value at index 1"):
        regression_metrics([1, 2, 3], [1, math.nan, 3])
    with pytest.raises(ValueError, match="at least 3"):
        regression_metrics([1, 2], [1, 2])
