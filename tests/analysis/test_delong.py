"""DeLong AUC variance, CI and paired test (DeLong et al. 1988; fast midrank algorithm of Sun & Xu 2014).

Expected values are derived by hand from the definitions pROC implements (``var(method="delong")``,
``ci.auc(method="delong")``, ``roc.test(method="delong", paired=TRUE)``), and cross-checked against a naive
O(n^2) implementation of DeLong 1988 written here on random data with many ties.
"""

import math

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from analysis.stats.roc import delong_auc, delong_paired, midranks, roc_points, weighted_auc

# Hand example: 5 cases in this order, labels and two scores.
LABELS = [1, 0, 1, 0, 1]
SCORE_A = [0.9, 0.1, 0.7, 0.4, 0.4]
SCORE_B = [0.8, 0.3, 0.2, 0.5, 0.9]


def test_hand_example_auc_variance_and_ci():
    # Cases X = (0.9, 0.7, 0.4), controls Y = (0.1, 0.4); psi = 1 if x > y, 1/2 if tied.
    # Placements of the cases V10 = (1, 1, 3/4) (0.4 ties the control 0.4); AUC = mean = 11/12.
    # Placements of the controls V01 = (3/3, 2.5/3) = (1, 5/6).
    # S10 = var(1, 1, 3/4) = ((1/12)^2 + (1/12)^2 + (2/12)^2) / 2 = 1/48;
    # S01 = var(1, 5/6) = 2 * (1/12)^2 / 1 = 1/72; Var = S10/3 + S01/2 = 1/144 + 1/144 = 1/72.
    # pROC ci.auc: 11/12 -/+ qnorm(0.975) * sqrt(1/72), clipped to [0, 1].
    result = delong_auc(LABELS, SCORE_A)
    assert result.auc == pytest.approx(11 / 12, abs=1e-12)
    assert result.variance == pytest.approx(1 / 72, abs=1e-12)
    assert result.se == pytest.approx(1 / math.sqrt(72), abs=1e-12)
    z = norm.ppf(0.975)
    assert result.ci_low == pytest.approx(11 / 12 - z / math.sqrt(72), abs=1e-9)
    assert result.ci_low == pytest.approx(0.6856827, abs=1e-6)
    assert result.ci_high == 1.0  # 11/12 + 0.231 is clipped, as pROC does
    assert (result.n_pos, result.n_neg) == (3, 2)


def test_hand_example_paired_test():
    # Score B: cases X = (0.8, 0.2, 0.9), controls Y = (0.3, 0.5): V10_B = (1, 0, 1), AUC_B = 2/3,
    # V01_B = (2/3, 2/3). S10_B = ((1/3)^2 + (2/3)^2 + (1/3)^2) / 2 = 1/3, S01_B = 0, Var_B = 1/9.
    # Cross terms (cases in the same order): S10_AB = (1/12 * 1/3 + 1/12 * -2/3 + -2/12 * 1/3) / 2
    # = -1/24, S01_AB = 0, Cov = -1/24 / 3 = -1/72.
    # Var(A - B) = 1/72 + 1/9 + 2/72 = 11/72; z = (11/12 - 2/3) / sqrt(11/72) = 0.6396021...
    result = delong_paired(LABELS, SCORE_A, SCORE_B)
    assert result.auc_a == pytest.approx(11 / 12, abs=1e-12)
    assert result.auc_b == pytest.approx(2 / 3, abs=1e-12)
    assert result.diff == pytest.approx(1 / 4, abs=1e-12)
    assert result.var_b == pytest.approx(1 / 9, abs=1e-12)
    assert result.covariance == pytest.approx(-1 / 72, abs=1e-12)
    assert result.se == pytest.approx(math.sqrt(11 / 72), abs=1e-12)
    assert result.z == pytest.approx(0.25 / math.sqrt(11 / 72), abs=1e-12)
    assert result.z == pytest.approx(0.6396021, abs=1e-6)
    assert result.p == pytest.approx(2 * norm.sf(0.25 / math.sqrt(11 / 72)), abs=1e-12)
    assert result.p == pytest.approx(0.5224313, abs=1e-6)
    # Swapping the scores flips the sign of z only.
    swapped = delong_paired(LABELS, SCORE_B, SCORE_A)
    assert swapped.z == pytest.approx(-result.z, abs=1e-12)
    assert swapped.p == pytest.approx(result.p, abs=1e-12)


def _naive_delong(y, scores):
    """DeLong 1988 from the full psi matrix, O(m * n): AUCs and covariance matrix."""
    y = np.asarray(y, dtype=bool)
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, yy = s[y], s[~y]
        psi = (x[:, None] > yy[None, :]) + 0.5 * (x[:, None] == yy[None, :])
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    v10 = np.array(v10s)
    v01 = np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    return np.array(aucs), np.cov(v10) / m + np.cov(v01) / n


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_naive_delong_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = rng.random(n) < 0.4
    # Scores rounded to a coarse grid: many ties within and across classes.
    a = np.round(rng.normal(size=n) + 1.0 * y, 1)
    b = np.round(0.6 * a + rng.normal(size=n) * 0.8, 0)
    aucs, cov = _naive_delong(y, [a, b])
    single = delong_auc(y, a)
    assert single.auc == pytest.approx(aucs[0], abs=1e-12)
    assert single.variance == pytest.approx(cov[0, 0], abs=1e-12)
    paired = delong_paired(y, a, b)
    assert paired.var_b == pytest.approx(cov[1, 1], abs=1e-12)
    assert paired.covariance == pytest.approx(cov[0, 1], abs=1e-12)
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert paired.z == pytest.approx(z, abs=1e-9)
    assert paired.p == pytest.approx(2 * norm.sf(abs(z)), abs=1e-9)
    # And the AUC itself is scikit-learn's.
    assert single.auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def test_ci_of_perfect_separation_is_one():
    # All placements equal 1: variance 0, so pROC's interval is (1, 1).
    result = delong_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (result.auc, result.variance, result.ci_low, result.ci_high) == (1.0, 0.0, 1.0, 1.0)


def test_identical_scores_give_z_zero_and_p_one():
    result = delong_paired(LABELS, SCORE_A, SCORE_A)
    assert (result.diff, result.z, result.p) == (0.0, 0.0, 1.0)


def test_single_case_gives_undefined_variance():
    # With one case the sample variance of its placements is 0/0 (pROC gives NaN too).
    result = delong_auc([1, 0, 0], [0.9, 0.2, 0.3])
    assert result.auc == 1.0
    assert math.isnan(result.variance) and math.isnan(result.ci_low)
    assert result.to_dict()["ci_low"] is None


def test_ci_level_follows_alpha():
    r90 = delong_auc(LABELS, SCORE_A, alpha=0.10)
    assert r90.ci_low == pytest.approx(11 / 12 - norm.ppf(0.95) / math.sqrt(72), abs=1e-12)


def test_midranks_equal_scipy_rankdata():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, size=(4, 40)).astype(float)
    np.testing.assert_array_equal(midranks(x), rankdata(x, method="average", axis=-1))
    np.testing.assert_array_equal(midranks(x[0]), rankdata(x[0]))


def test_roc_points_equal_sklearn_roc_curve():
    rng = np.random.default_rng(7)
    y = rng.random(80) < 0.5
    s = np.round(rng.normal(size=80) + y, 1)
    fpr, tpr, thr = roc_points(y, s)
    efpr, etpr, ethr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, efpr, atol=1e-15)
    np.testing.assert_allclose(tpr, etpr, atol=1e-15)
    np.testing.assert_array_equal(thr, ethr)


def test_weighted_auc_equals_auc_of_resampled_data():
    # A bootstrap resample repeats cases; its AUC (scikit-learn on the resampled arrays) must equal the
    # weighted Mann-Whitney statistic with the resample counts as weights.
    rng = np.random.default_rng(11)
    y = rng.random(60) < 0.4
    s = np.round(rng.normal(size=60) + y, 1)
    idx = rng.integers(0, 60, size=(20, 60))
    counts = np.stack([np.bincount(i, minlength=60) for i in idx])
    expected = [roc_auc_score(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(weighted_auc(y, s, counts), expected, atol=1e-12)


@pytest.mark.parametrize(
    "y, s, message",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "no negative"),
        ([0, 0], [0.1, 0.2], "no positive"),
        ([0, 1, 1], [0.1, 0.2], "has 2 values but y_true has 3"),
        ([0, 1, 1], [0.1, float("nan"), 0.3], "NaN at index 1"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0/1 or boolean"),
    ],
)
def test_bad_input_raises_clear_error(y, s, message):
    with pytest.raises(ValueError, match=message):
        delong_auc(y, s)


def test_paired_rejects_score_of_other_length():
    with pytest.raises(ValueError, match="score_b has 4 values"):
        delong_paired(LABELS, SCORE_A, SCORE_B[:4])
