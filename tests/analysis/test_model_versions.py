"""Model versions in the database: data snapshot, artefact that reloads and predicts identically, immutability,
frozen cohort, demo measurements, screening predictions, paired comparison of stored versions."""

import numpy as np
import pytest

from analysis.modeling.demo import SYNTHETIC_SOURCE, seed_demo_measurements
from analysis.modeling.predictions import predict_exams
from analysis.modeling.synthetic import generate_cohort
from analysis.modeling.versions import compare_versions, evaluate_version, load_model, train_cohort
from analysis.models import ImmutableRecordError, LevelMeasurement, MeasurementRun, ModelVersion
from studies.demo import seed_demo_project
from studies.models import ExclusionFlag, QCTResult
from tests.factories import ExamFactory

N = 120


@pytest.fixture
def demo(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=N, random_state=3, name="demo-test")
    assert seed_demo_measurements(project, random_state=3) == N
    return project


def test_demo_measurements_are_the_generated_hu_values(demo):
    cohort = {c.patient_id: c for c in generate_cohort(n_patients=N, random_state=3)}
    stored = LevelMeasurement.objects.filter(run__exam__patient__project=demo).values_list(
        "run__exam__patient__pseudonym", "level", "mean_hu")
    assert len(stored) == sum(len(c.hu_by_level) for c in cohort.values())
    for pseudonym, level, hu in stored:
        assert hu == cohort[pseudonym].hu_by_level[level]
    # Idempotent: a second call adds nothing.
    assert seed_demo_measurements(demo, random_state=3) == 0


def test_snapshot_records_exams_labels_runs_splits_and_exclusions(demo):
    excluded = demo.patients.order_by("pseudonym").first()
    ExclusionFlag.objects.create(patient=excluded, reason="vertebral_fracture")
    versions, grid = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                                  algorithms={"regression": ["SGD"]}, random_state=4, n_resamples=30)
    (version,) = versions
    snap = version.data_snapshot
    table = grid.tables["abdomen"]
    assert snap["exam_ids"] == table.exam_ids.tolist()
    labels = dict(QCTResult.objects.filter(exam__patient__project=demo).values_list("exam_id", "qct_bmd"))
    assert snap["qct_bmd"] == [labels[e] for e in snap["exam_ids"]]
    runs = dict(MeasurementRun.objects.filter(source=SYNTHETIC_SOURCE).values_list("exam_id", "pk"))
    assert snap["measurement_run_ids"] == [runs[e] for e in snap["exam_ids"]]
    # No source named: the project default (per exam the newest reviewed, else newest automatic run), which here
    # is the exam's one synthetic run (the run ids above).
    assert snap["measurement_source"] == "default" and set(snap["split"]) == {"train", "validation", "test"}
    reasons = {d["exam_id"]: d["reason"] for d in snap["excluded"]}
    assert reasons[excluded.exams.get().pk] == "excluded: vertebral_fracture"
    assert len(snap["exam_ids"]) + len(snap["excluded"]) == N
    assert version.random_seed == 4 and version.code_version and version.hyperparameters["random_state"] == 4
    assert {e.split for e in version.evaluations.all()} == {"train", "validation", "test"}
    version.cohort.refresh_from_db()
    assert version.cohort.frozen


def test_artefact_reloads_and_predicts_the_stored_predictions(demo):
    versions, _ = train_cohort(demo, feature_sets=("chest_cal",), tasks=("classification",),
                               algorithms={"classification": ["BDT"]}, random_state=1, n_resamples=20)
    # One calibrated chest version per calibration variant (issue 12), each recorded with its variant.
    assert [v.calibration_variant for v in versions] == ["abdomen_transfer", "learned_mapping",
                                                         "feature_augmentation"]
    for stored_version in versions:
        version = ModelVersion.objects.get(pk=stored_version.pk)
        assert version.calibration["fitted_on"] == "train"
        assert version.calibration["variant"] == version.calibration_variant
        model = load_model(version)
        screening = predict_exams(version, store=False)
        stored = {p.exam_id: p.probabilities for p in version.predictions.all()}
        assert len(stored) == len(version.data_snapshot["exam_ids"])
        for row in screening.rows:
            if row.exam_id in stored:
                assert row.probabilities == stored[row.exam_id]
        assert model.calibration.k_ == version.calibration["k"]


def test_versions_and_runs_are_immutable(demo):
    versions, _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                               algorithms={"regression": ["SGD"]}, n_resamples=10)
    version = versions[0]
    version.name = "renamed"
    with pytest.raises(ImmutableRecordError):
        version.save()
    run = MeasurementRun.objects.first()
    run.source = "other"
    with pytest.raises(ImmutableRecordError):
        run.save()
    level = LevelMeasurement.objects.first()
    level.mean_hu = 0.0
    with pytest.raises(ImmutableRecordError):
        level.save()


def test_screening_list_predicts_new_exams_without_labels_and_stores_them(demo):
    versions, _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                               algorithms={"regression": ["SGD"]}, n_resamples=10)
    version = versions[0]
    exam = ExamFactory(patient__project=demo, patient__sex="M", age_at_exam=70, region="abdomen")
    run = MeasurementRun.objects.create(exam=exam, source=SYNTHETIC_SOURCE)
    LevelMeasurement.objects.bulk_create([LevelMeasurement(run=run, level=level, mean_hu=hu)
                                          for level, hu in (("T12", 95.0), ("L1", 92.0), ("L2", 89.0))])
    before = version.predictions.count()
    screening = predict_exams(version)
    row = next(r for r in screening.rows if r.exam_id == exam.pk)
    # Expected: the pipeline applied by hand to the exam's features (sex M, age 70, HU of T12, L1, L2).
    model = load_model(version)
    assert row.predicted_bmd == pytest.approx(model.pipeline.predict([[1.0, 70.0, 95.0, 92.0, 89.0]])[0], rel=1e-12)
    assert row.predicted_category == demo.thresholds.categorize(row.predicted_bmd)
    assert [r.predicted_bmd for r in screening.rows] == sorted(r.predicted_bmd for r in screening.rows)
    stored = version.predictions.get(exam=exam)
    assert stored.split == "" and stored.measurement_run_id == run.pk
    assert version.predictions.count() == before + 1
    assert all("T12-L2" in d["reason"] for d in screening.dropped)


def test_evaluate_version_reproduces_the_training_evaluation(demo):
    versions, _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("classification",),
                               algorithms={"classification": ["LR"]}, n_resamples=40, random_state=2)
    version = versions[0]
    at_training = {e.split: e.metrics for e in version.evaluations.all()}
    again = evaluate_version(version, n_resamples=40, random_state=2)
    assert again["validation"]["macro_auc"] == at_training["validation"]["macro_auc"]
    assert again["validation"]["ci"] == at_training["validation"]["ci"]


def test_compare_two_stored_versions_on_the_same_cases(demo):
    versions, _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                               algorithms={"regression": ["SGD", "RF"]}, n_resamples=10)
    sgd, rf = versions
    result = compare_versions(sgd, rf, split="validation", n_resamples=200)
    y = {p.exam_id: p.exam.qct.qct_bmd for p in sgd.predictions.filter(split="validation").select_related("exam__qct")}
    mae = {v: np.mean([abs(p.predicted_bmd - y[p.exam_id]) for p in v.predictions.filter(split="validation")])
           for v in (sgd, rf)}
    # Expected: the plain MAE difference of the two versions' stored predictions.
    assert result["n"] == len(y)
    assert result["diff"] == pytest.approx(mae[sgd] - mae[rf], rel=1e-9)
