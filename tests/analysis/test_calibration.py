"""Thoraco-lumbar calibration: exact recovery of k and intercepts on noiseless synthetic data."""

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from analysis.modeling.calibration import ThoracolumbarCalibration, hu_matrix
from analysis.segmentation.levels import CALIBRATION_LEVELS

N = np.arange(1, 11, dtype=float)  # T5..L2
K_TRUE = -3.25
INTERCEPTS = np.array([180.0, 142.5, 97.0, 121.25, 60.0])


def _noiseless(intercepts=INTERCEPTS, slopes=None):
    """HU_i(n) = a_i + k_i * n exactly, all ten levels measured."""
    slopes = np.full(len(intercepts), K_TRUE) if slopes is None else np.asarray(slopes)
    return intercepts[:, None] + slopes[:, None] * N[None, :]


def test_recovers_cohort_slope_and_patient_intercepts_exactly():
    # With every patient measured at the same levels, the pooled OLS slope is exactly the common k
    # (between-patient intercept differences are orthogonal to n), and the fixed-slope intercept
    # mean(HU - k n) over T5-T10 is exactly a_i.
    hu = _noiseless()
    cal = ThoracolumbarCalibration().fit(hu)
    assert cal.k_ == pytest.approx(K_TRUE, abs=1e-9)
    assert cal.intercept_ == pytest.approx(INTERCEPTS.mean(), abs=1e-9)
    assert (cal.n_patients_fit_, cal.n_points_fit_) == (5, 50)
    chest_only = hu.copy()
    chest_only[:, 6:] = np.nan  # a chest CT: T5-T10 only
    slopes, intercepts = cal.patient_lines(chest_only)
    np.testing.assert_allclose(intercepts, INTERCEPTS, atol=1e-9)
    np.testing.assert_allclose(slopes, K_TRUE, atol=1e-12)
    # HU_cal at n = 8, 9, 10 (T12, L1, L2) equals the true lumbar values.
    np.testing.assert_allclose(cal.transform(chest_only), hu[:, 7:10], atol=1e-9)


def test_r2_is_one_for_a_single_line_and_the_line_is_fitted_to_the_level_means():
    same = _noiseless(intercepts=np.full(4, 150.0))
    assert ThoracolumbarCalibration().fit(same).r2_ == pytest.approx(1.0, abs=1e-12)
    # Unbalanced levels and noise. The paper's curve: k_, intercept_ and r2_ are np.polyfit on the ten
    # per-level means (one point per level); the pooled_* values are np.polyfit on every pooled point.
    rng = np.random.default_rng(0)
    hu = _noiseless() + rng.normal(0, 3, size=(5, 10))
    hu[0, 6] = np.nan
    hu[2, :2] = np.nan
    cal = ThoracolumbarCalibration().fit(hu)
    means = np.nanmean(hu, axis=0)
    slope, intercept = np.polyfit(N, means, 1)
    assert cal.k_ == pytest.approx(slope, abs=1e-9)
    assert cal.intercept_ == pytest.approx(intercept, abs=1e-9)
    r = np.corrcoef(N, means)[0, 1]
    assert cal.r2_ == pytest.approx(r * r, abs=1e-9)
    np.testing.assert_allclose(cal.level_mean_, means, atol=1e-9)
    np.testing.assert_allclose(cal.level_sd_, np.nanstd(hu, axis=0, ddof=1), atol=1e-9)
    assert cal.level_count_.tolist() == [4, 4, 5, 5, 5, 5, 4, 5, 5, 5]
    mask = np.isfinite(hu)
    n_pts, hu_pts = np.broadcast_to(N, hu.shape)[mask], hu[mask]
    slope, intercept = np.polyfit(n_pts, hu_pts, 1)
    assert cal.pooled_k_ == pytest.approx(slope, abs=1e-9)
    assert cal.pooled_intercept_ == pytest.approx(intercept, abs=1e-9)
    r = np.corrcoef(n_pts, hu_pts)[0, 1]
    assert cal.pooled_r2_ == pytest.approx(r * r, abs=1e-9)


def test_means_fit_is_near_one_where_the_pooled_fit_is_near_zero():
    # The numbers on the demo cohort: R^2 of the fit to the level means 0.999, of the pooled points
    # 0.039 (patients differ far more than levels). The synthetic generator (analysis.modeling.synthetic,
    # gradient -3 HU per level, patient offsets SD 12 HU plus BMD) gives the same picture.
    from analysis.modeling.synthetic import generate_cohort

    cal = ThoracolumbarCalibration().fit([e.hu_by_level for e in generate_cohort() if e.split == "train"])
    assert cal.r2_ > 0.99
    assert cal.pooled_r2_ < 0.1
    summary = cal.summary(max_patients=5)
    assert summary["fit"] == "per-level means" and summary["pooled"]["r2"] == pytest.approx(cal.pooled_r2_)
    assert len(summary["patients"]) == 5 and summary["level_count"][0] == cal.n_patients_fit_


def test_only_patients_with_both_regions_enter_the_fit():
    hu = _noiseless()
    chest_only = np.full((1, 10), np.nan)
    chest_only[0, :6] = 300.0 + 10.0 * N[:6]  # a wildly different chest-only patient
    abdomen_only = np.full((1, 10), np.nan)
    abdomen_only[0, 7:] = 10.0
    data = {f"P{i}": dict(zip(CALIBRATION_LEVELS, row)) for i, row in enumerate(hu)}
    data["CHEST"] = {lvl: v for lvl, v in zip(CALIBRATION_LEVELS, chest_only[0]) if np.isfinite(v)}
    data["ABD"] = {lvl: v for lvl, v in zip(CALIBRATION_LEVELS, abdomen_only[0]) if np.isfinite(v)}
    cal = ThoracolumbarCalibration().fit(data)
    assert cal.patient_ids_ == ["P0", "P1", "P2", "P3", "P4"]
    assert cal.k_ == pytest.approx(K_TRUE, abs=1e-9)


def test_per_patient_slope_variant_recovers_each_patients_line():
    slopes_true = np.array([-2.0, -4.5, -3.0, -1.0, -5.5])
    hu = _noiseless(slopes=slopes_true)
    cal = ThoracolumbarCalibration(variant="per_patient_slope").fit(hu)
    chest = hu[:, :6]
    chest_full = np.hstack([chest, np.full((5, 4), np.nan)])
    slopes, intercepts = cal.patient_lines(chest_full)
    np.testing.assert_allclose(slopes, slopes_true, atol=1e-9)
    np.testing.assert_allclose(intercepts, INTERCEPTS, atol=1e-9)
    np.testing.assert_allclose(cal.transform(chest_full), hu[:, 7:10], atol=1e-9)


def test_patients_without_enough_thoracic_values_get_nan():
    cal = ThoracolumbarCalibration().fit(_noiseless())
    rows = [{"T12": 120.0, "L1": 115.0}, {"T7": 140.0}]
    out = cal.transform(rows)
    assert np.isnan(out[0]).all()
    # One thoracic value: intercept = HU - k * n at T7 (n = 3).
    np.testing.assert_allclose(out[1], 140.0 - K_TRUE * 3 + K_TRUE * np.array([8, 9, 10]), atol=1e-9)
    per_patient = ThoracolumbarCalibration(variant="per_patient_slope").fit(_noiseless())
    assert np.isnan(per_patient.transform(rows)).all()  # one level gives no slope


def test_dict_and_array_inputs_agree():
    hu = _noiseless()
    rows = [dict(zip(CALIBRATION_LEVELS, r)) for r in hu]
    np.testing.assert_array_equal(hu_matrix(rows)[1], hu)
    a = ThoracolumbarCalibration().fit(hu)
    b = ThoracolumbarCalibration().fit(rows)
    assert (a.k_, a.intercept_, a.r2_) == (b.k_, b.intercept_, b.r2_)


def test_sklearn_estimator_contract():
    cal = ThoracolumbarCalibration(variant="per_patient_slope")
    assert cal.get_params()["variant"] == "per_patient_slope"
    cal.set_params(variant="cohort_slope")
    twin = clone(cal)
    assert twin.get_params() == cal.get_params()
    with pytest.raises(NotFittedError):
        twin.transform(_noiseless())
    assert list(cal.fit(_noiseless()).get_feature_names_out()) == ["hu_cal_T12", "hu_cal_L1", "hu_cal_L2"]
    np.testing.assert_allclose(cal.fit_transform(_noiseless()), _noiseless()[:, 7:10], atol=1e-9)
    with pytest.raises(ValueError, match="variant must be one of"):
        ThoracolumbarCalibration(variant="magic").fit(_noiseless())


def test_no_eligible_patient_is_a_clear_error():
    chest = np.full((3, 10), np.nan)
    chest[:, :6] = 150.0
    with pytest.raises(ValueError, match="both thoracic"):
        ThoracolumbarCalibration().fit(chest)


def test_curve_data_for_dashboards():
    cal = ThoracolumbarCalibration().fit({"A": dict(zip(CALIBRATION_LEVELS, _noiseless()[0]))} |
                                        {"B": dict(zip(CALIBRATION_LEVELS, _noiseless()[1]))})
    data = json.loads(json.dumps(cal.curve_data(), allow_nan=False))
    assert data["levels"] == list(CALIBRATION_LEVELS) and data["n"] == list(N)
    np.testing.assert_allclose(data["cohort_line"]["hu"], cal.intercept_ + cal.k_ * N)
    assert [p["patient_id"] for p in data["patients"]] == ["A", "B"]
    assert data["patients"][1]["intercept"] == pytest.approx(INTERCEPTS[1])
    assert data["patients"][1]["hu_cal"]["L1"] == pytest.approx(INTERCEPTS[1] + K_TRUE * 9)
