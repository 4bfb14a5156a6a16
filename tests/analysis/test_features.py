"""Feature tables: exact columns, training-only calibration, and every left-out exam listed with its reason."""

import numpy as np
import pytest

from analysis.modeling.features import ExamRecord, build_feature_table, fit_calibration
from analysis.segmentation.levels import CALIBRATION_INDEX, CALIBRATION_LEVELS, CHEST_LEVELS


def line_hu(intercept, slope, levels=CALIBRATION_LEVELS):
    # Noiseless thoraco-lumbar line HU(n) = intercept + slope * n with n = 1 (T5) .. 10 (L2).
    return {level: intercept + slope * CALIBRATION_INDEX[level] for level in levels}


def record(exam_id, split="train", hu=None, **kw):
    defaults = dict(patient_id=f"P{exam_id}", sex="F", age=60, split=split, qct_bmd=100.0, category="osteopenia",
                    run_id=exam_id, hu=hu if hu is not None else line_hu(200.0, -3.0))
    defaults.update(kw)
    return ExamRecord(exam_id=exam_id, **defaults)


def test_chest_and_abdomen_columns_hold_sex_age_and_level_hu():
    records = [record(1, sex="M", age=71, hu=line_hu(150.0, -2.0)), record(2, sex="F", age=55)]
    chest = build_feature_table(records, "chest")
    assert chest.feature_names == ["sex_male", "age_years", "hu_T5", "hu_T6", "hu_T7", "hu_T8", "hu_T9", "hu_T10"]
    # Expected row: sex M -> 1, age 71, HU = 150 - 2 n at n = 1..6.
    np.testing.assert_array_equal(chest.X[0], [1, 71, 148, 146, 144, 142, 140, 138])
    abdomen = build_feature_table(records, "abdomen")
    assert abdomen.feature_names == ["sex_male", "age_years", "hu_T12", "hu_L1", "hu_L2"]
    # Patient 2: HU = 200 - 3 n at n = 8, 9, 10.
    np.testing.assert_array_equal(abdomen.X[1], [0, 55, 176, 173, 170])
    assert abdomen.exam_ids.tolist() == [1, 2] and abdomen.dropped == []


def test_left_out_exams_are_listed_with_reasons():
    flagged = record(5)
    flagged.level_flags["T8"] = ("hu_outlier",)
    records = [
        record(1),
        record(2, exclusions=("vertebral_fracture",)),
        record(3, hu={k: v for k, v in line_hu(200.0, -3.0).items() if k != "T7"}),
        record(4, qct_bmd=None, category=None),
        flagged,
        record(6, run_id=None, hu={}),
        record(7, split=""),
        record(8, age=None),
    ]
    table = build_feature_table(records, "chest")
    assert table.exam_ids.tolist() == [1]
    reasons = {d.exam_id: d.reason for d in table.dropped}
    assert reasons == {
        2: "excluded: vertebral_fracture",
        3: "missing T5-T10 level(s): T7",
        4: "no QCT reference value",
        5: "QA flag on T8 (hu_outlier)",
        6: "no measurement run",
        7: "no split assigned",
        8: "age missing",
    }
    # A flag on a level the table does not use does not drop the exam from that table.
    assert build_feature_table([flagged], "abdomen").exam_ids.tolist() == [5]


def test_screening_tables_keep_exams_without_label_or_split():
    table = build_feature_table([record(1, split="", qct_bmd=None, category=None)], "chest",
                                require_label=False, require_split=False)
    assert table.exam_ids.tolist() == [1]


def test_chest_cal_recovers_the_lumbar_line_exactly_on_noiseless_data():
    # Every patient lies on HU = b_i - 3 n: the cohort slope is -3 and HU_cal(T12, L1, L2) = b_i - 3 * (8, 9, 10).
    records = [record(i, hu=line_hu(150.0 + 10 * i, -3.0)) for i in range(1, 6)]
    chest_only = record(9, split="validation", hu=line_hu(260.0, -3.0, CHEST_LEVELS))
    table = build_feature_table(records + [chest_only], "chest_cal", calibration_variant="feature_augmentation")
    assert table.feature_names[-3:] == ["hu_cal_T12", "hu_cal_L1", "hu_cal_L2"]
    assert table.calibration.k_ == pytest.approx(-3.0, abs=1e-12)
    np.testing.assert_allclose(table.X[-1, -3:], [260 - 24, 260 - 27, 260 - 30], atol=1e-9)
    # The default variant (abdomen_transfer) keeps the chest columns and maps them to the abdomen model's
    # columns: sex, age, then the same HU_cal values at T12, L1, L2.
    transfer = build_feature_table(records + [chest_only], "chest_cal")
    assert transfer.calibration_variant == "abdomen_transfer" and transfer.key == "chest_cal:abdomen_transfer"
    assert transfer.feature_names == ["sex_male", "age_years"] + [f"hu_{level}" for level in CHEST_LEVELS]
    np.testing.assert_allclose(transfer.lumbar_map.transform(transfer.X[-1:]), [[0, 60, 236, 233, 230]], atol=1e-9)


def test_calibration_is_fitted_on_the_training_split_only():
    rng = np.random.default_rng(0)
    train = [record(i, hu={k: v + rng.normal(0, 5) for k, v in line_hu(180.0, -2.0).items()}) for i in range(20)]
    validation = [record(100 + i, split="validation", hu=line_hu(180.0, +6.0)) for i in range(20)]
    table = build_feature_table(train + validation, "chest_cal")
    # Expected k: pooled least-squares slope over the training patients' points only (numpy.polyfit).
    n = np.array([CALIBRATION_INDEX[k] for r in train for k in r.hu], dtype=float)
    hu = np.array([v for r in train for v in r.hu.values()])
    assert table.calibration.k_ == pytest.approx(np.polyfit(n, hu, 1)[0], rel=1e-12)
    assert table.calibration.n_patients_fit_ == 20
    assert set(table.calibration.patient_ids_) == set(range(20))
    # The same training data with other validation HU gives the same features for the training rows.
    other = build_feature_table(train + [record(100, split="validation", hu=line_hu(0.0, 50.0))], "chest_cal")
    np.testing.assert_array_equal(other.X[:20], table.X[:20])


def test_flagged_levels_stay_out_of_the_calibration_fit():
    good = [record(i) for i in range(1, 4)]
    bad = record(4, hu=dict(line_hu(200.0, -3.0), L1=900.0), level_flags={"L1": ("hu_outlier",)})
    calibration = fit_calibration(good + [bad])
    # Without the flagged L1 every point lies on HU = 200 - 3 n: k is exactly -3 (with it, k would be > 0).
    assert calibration.k_ == pytest.approx(-3.0, abs=1e-12)
