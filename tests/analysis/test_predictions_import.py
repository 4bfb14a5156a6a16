"""External predictions imported as a model version: evaluated on the cohort's splits like ours,
comparable case by case, atomic, `line N: reason` errors."""

import datetime as dt

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from analysis.modeling.predictions import PredictionImportError, import_external_predictions
from analysis.models import ModelVersion, Prediction
from studies.models import Cohort, CohortMember, ExclusionFlag
from tests.factories import ExamFactory, QCTResultFactory

BMD = [50.0, 70.0, 90.0, 110.0, 130.0, 150.0, 60.0, 100.0, 140.0]


@pytest.fixture
def cohort(project):
    main = Cohort.objects.create(project=project, name="main")
    for i, bmd in enumerate(BMD):
        exam = ExamFactory(patient__project=project, patient__pseudonym=f"P{i}", exam_date=dt.date(2022, 6, 1))
        QCTResultFactory(exam=exam, bmd_l1=bmd)
        CohortMember.objects.create(cohort=main, exam=exam, split="validation" if i < 6 else "test")
    return main


def regression_csv(offsets):
    return "patient_id,exam_date,predicted_bmd\n" + "".join(
        f"P{i},2022-06-01,{bmd + d}\n" for i, (bmd, d) in enumerate(zip(BMD, offsets)))


def test_regression_predictions_are_evaluated_per_split(project, cohort):
    offsets = [4, -4, 4, -4, 4, -4, 2, -2, 2]
    version = import_external_predictions(regression_csv(offsets), project, name="Vendor X", task="regression",
                                          n_resamples=50)
    assert version.external and version.algorithm == "external" and not version.artefact
    evaluations = {e.split: e.metrics for e in version.evaluations.all()}
    # Every validation prediction is 4 mg/cm3 off: MAE 4, RMSE 4, bias 0; test: MAE = RMSE = 2.
    assert evaluations["validation"]["mae"] == pytest.approx(4.0) and evaluations["validation"]["n"] == 6
    assert evaluations["validation"]["bland_altman"]["bias"] == pytest.approx(0.0, abs=1e-12)
    assert evaluations["test"]["rmse"] == pytest.approx(2.0)
    p = version.predictions.get(exam__patient__pseudonym="P0")
    assert p.predicted_bmd == 54.0 and p.predicted_category == "osteoporosis" and p.split == "validation"


def test_excluded_exams_are_left_out_of_the_evaluation(project, cohort):
    exam = cohort.members.get(exam__patient__pseudonym="P0").exam
    ExclusionFlag.objects.create(patient=exam.patient, exam=exam, reason="artefact")
    version = import_external_predictions(regression_csv([1] * 9), project, name="X", task="regression",
                                          n_resamples=10)
    assert version.evaluations.get(split="validation").n == 5


def test_classification_probabilities(project, cohort):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    rows = ["patient_id,exam_date,p_osteoporosis,p_osteopenia,p_normal"]
    proba = []
    for i in range(len(BMD)):
        p = rng.dirichlet([1, 1, 1])
        p[2] = 1.0 - p[0] - p[1]
        proba.append(p)
        rows.append(f"P{i},2022-06-01,{float(p[0])!r},{float(p[1])!r},{float(p[2])!r}")
    version = import_external_predictions("\n".join(rows) + "\n", project, name="Vendor Y", task="classification",
                                          n_resamples=20)
    metrics = version.evaluations.get(split="validation").metrics
    y = ["osteoporosis" if b < 80 else "normal" if b > 120 else "osteopenia" for b in BMD[:6]]
    # Expected: scikit-learn's AUC of osteoporosis vs not from the imported probabilities.
    expected = roc_auc_score([c == "osteoporosis" for c in y], [p[0] for p in proba[:6]])
    assert metrics["binary"]["auc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("body,reason", [
    ("P0,2022-06-01,=A1\n", "line 3: column predicted_bmd holds a formula cell"),
    ("P0,2022-06-01,abc\n", "line 3: predicted_bmd 'abc' is not a number"),
    ("Q7,2022-06-01,80\n", "line 3: unknown patient 'Q7'"),
    ("P0,2022-06-02,80\n", "line 3: patient P0 has no exam on 2022-06-02"),
    ("P0,2022-06-01,80\nP0,2022-06-01,81\n", "line 4: duplicate of line 3"),
])
def test_bad_lines_are_named_and_nothing_is_stored(project, cohort, body, reason):
    # Line 2 is good: the import is atomic, so it must not be stored either.
    data = "patient_id,exam_date,predicted_bmd\nP1,2022-06-01,70\n" + body
    with pytest.raises(PredictionImportError) as info:
        import_external_predictions(data, project, name="bad", task="regression")
    assert info.value.errors[0].startswith(reason)
    assert not ModelVersion.objects.exists() and not Prediction.objects.exists()


def test_probabilities_must_sum_to_one(project, cohort):
    data = "patient_id,exam_date,p_osteoporosis,p_osteopenia,p_normal\nP0,2022-06-01,0.5,0.5,0.5\n"
    with pytest.raises(PredictionImportError, match="line 2: probabilities sum to 1.5000, not 1"):
        import_external_predictions(data, project, name="bad", task="classification")


def test_command(project, cohort, tmp_path, capsys):
    path = tmp_path / "pred.csv"
    path.write_text(regression_csv([3] * 9))
    call_command("import_predictions", str(path), "--project", project.name, "--name", "Vendor Z",
                 "--task", "regression", "--n-resamples", "10")
    assert "9 prediction(s)" in capsys.readouterr().out
    path.write_text("patient_id,exam_date,p_osteoporosis\n")
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_predictions", str(path), "--project", project.name, "--name", "W",
                     "--task", "classification")
    assert "line 1: missing column(s) p_osteopenia, p_normal" in capsys.readouterr().err
