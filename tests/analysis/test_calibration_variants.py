"""Calibration variants of the chest model (issue 12): abdomen transfer carries k into the predictions,
feature augmentation cannot (documented inertness, tested)."""

import copy

import numpy as np
import pytest

from analysis.categories import DEFAULT_THRESHOLDS
from analysis.modeling.features import ExamRecord, build_feature_table
from analysis.modeling.training import fit_model, predict, train_grid, transfer_model
from analysis.segmentation.levels import CALIBRATION_INDEX, CALIBRATION_LEVELS

K_TRUE = -3.0


def _noiseless_records(n=240, seed=0):
    """Patients whose HU lies exactly on HU(n) = b_i + K_TRUE * n (n = 1 for T5 ... 10 for L2): the lumbar
    HU is the thoracic line extrapolated. b_i follows the patient's BMD, so the models have something to
    learn; splits 60 / 20 / 20 %."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        bmd = float(rng.uniform(30, 200))
        b = 0.9 * bmd + 40 + float(rng.normal(0, 8))
        split = ("train", "train", "train", "validation", "test")[i % 5]
        records.append(ExamRecord(
            exam_id=i + 1, patient_id=f"P{i + 1}", sex="M" if i % 3 == 0 else "F", age=float(50 + i % 30),
            split=split, qct_bmd=bmd, category=DEFAULT_THRESHOLDS.categorize(bmd), run_id=i + 1,
            hu={level: b + K_TRUE * CALIBRATION_INDEX[level] for level in CALIBRATION_LEVELS},
        ))
    return records


@pytest.fixture(scope="module")
def records():
    return _noiseless_records()


@pytest.mark.parametrize("task, algorithm", [("classification", "LR"), ("classification", "BDT"),
                                             ("regression", "SGD"), ("regression", "RF")])
def test_abdomen_transfer_reproduces_the_abdomen_models_predictions_on_measured_lumbar_hu(records, task, algorithm):
    # Noiseless lines: the intercept fitted to T5-T10 with k fixed is b_i, so HU_cal(T12, L1, L2) is the
    # measured lumbar HU and the calibrated chest model must give the abdomen model's predictions on the
    # measured values (to rounding: HU_cal is computed, not copied).
    abdomen = build_feature_table(records, "abdomen")
    chest_cal = build_feature_table(records, "chest_cal", calibration_variant="abdomen_transfer")
    assert chest_cal.calibration.k_ == pytest.approx(K_TRUE, abs=1e-9)
    np.testing.assert_array_equal(abdomen.exam_ids, chest_cal.exam_ids)
    abdomen_model = fit_model(abdomen, task, algorithm)
    calibrated = transfer_model(abdomen_model, chest_cal)
    expected = predict(abdomen_model, abdomen.X)
    got = predict(calibrated, chest_cal.X)
    for key in expected:
        if key == "category":
            np.testing.assert_array_equal(got[key], expected[key])
        else:
            np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-9)


def _with_k(calibration, k):
    """The same fitted calibration with its cohort slope forced to ``k`` (HU per level)."""
    forced = copy.deepcopy(calibration)
    forced.k_ = float(k)
    return forced


def test_changing_k_changes_the_abdomen_transfer_predictions(records):
    # The abdomen scaler is fitted on measured lumbar HU, so a different slope moves HU_cal(8..10) and the
    # abdomen model's inputs: the predictions must change.
    abdomen = build_feature_table(records, "abdomen")
    fitted = build_feature_table(records, "chest_cal", calibration_variant="abdomen_transfer")
    model = fit_model(abdomen, "regression", "SGD")
    base = predict(transfer_model(model, fitted), fitted.X)["bmd"]
    for k in (0.0, 10.0):
        table = build_feature_table(records, "chest_cal", calibration_variant="abdomen_transfer",
                                    calibration=_with_k(fitted.calibration, k))
        moved = predict(transfer_model(model, table), table.X)["bmd"]
        # k = 0 puts T12-L2 at the chest mean, 13.5 HU above the line (K_TRUE * (9 - 3.5) = -16.5 HU off at L1).
        assert np.abs(moved - base).max() > 1.0


@pytest.mark.parametrize("task, algorithm", [("classification", "LR"), ("classification", "BDT"),
                                             ("regression", "SGD"), ("regression", "RF")])
def test_feature_augmentation_predictions_do_not_change_with_k(records, task, algorithm):
    # HU_cal(n) = mean(T5..T10) + k (n - 3.5): after z-scoring each column is the z-scored chest mean
    # whatever k is, so refitting with k forced to 0 or +10 changes no prediction (issue 12 measured
    # differences under 1e-13).
    fitted = build_feature_table(records, "chest_cal", calibration_variant="feature_augmentation")
    reference = predict(fit_model(fitted, task, algorithm), fitted.X)
    for k in (0.0, 10.0):
        table = build_feature_table(records, "chest_cal", calibration_variant="feature_augmentation",
                                    calibration=_with_k(fitted.calibration, k))
        assert not np.allclose(table.X[:, -3:], fitted.X[:, -3:])  # the columns themselves do change
        got = predict(fit_model(table, task, algorithm), table.X)
        for key in reference:
            if key == "category":
                np.testing.assert_array_equal(got[key], reference[key])
            else:
                np.testing.assert_allclose(got[key], reference[key], rtol=0, atol=1e-9)


def test_learned_mapping_is_fitted_on_training_patients_with_both_regions(records):
    # Noiseless lines: T12, L1, L2 are exact linear functions of the T5-T10 values (b_i + K_TRUE * n), so the
    # least-squares map reproduces the measured lumbar HU.
    table = build_feature_table(records, "chest_cal", calibration_variant="learned_mapping")
    measured = build_feature_table(records, "abdomen").X[:, 2:]
    np.testing.assert_allclose(table.lumbar_map.lumbar_hu(table.X), measured, atol=1e-6)
    assert table.lumbar_map.n_fit_ == sum(r.split == "train" for r in records)


def test_grid_records_every_variant_and_the_abdomen_models_are_shared(records):
    grid = train_grid(records, tasks=("regression",), algorithms={"regression": ("SGD",)}, n_resamples=20)
    keys = [(e.table.key, e.model.calibration_variant) for e in grid.entries]
    assert keys == [("chest", ""), ("abdomen", ""), ("chest_cal:abdomen_transfer", "abdomen_transfer"),
                    ("chest_cal:learned_mapping", "learned_mapping"),
                    ("chest_cal:feature_augmentation", "feature_augmentation")]
    abdomen, transfer = grid.entries[1], grid.entries[2]
    assert transfer.model.pipeline.named_steps["abdomen"] is abdomen.model.pipeline
    np.testing.assert_allclose(transfer.output["bmd"], abdomen.output["bmd"], atol=1e-9)
