"""Predictions: apply a model version to exams (the opportunistic screening list), and import an external
model's predictions from CSV as a model version so it is evaluated and compared like ours.

External predictions CSV (header on line 1, one row per exam): ``patient_id``, ``exam_date`` (YYYY-MM-DD),
and either ``predicted_bmd`` (mg/cm3; task regression) or ``p_osteoporosis``, ``p_osteopenia``,
``p_normal`` (probabilities summing to 1; task classification, optional ``predicted_category``, default the
most probable one). Problems are reported as ``line N: reason``; nothing is stored unless the whole file is
valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db import transaction

from analysis.categories import CATEGORIES
from analysis.modeling.features import build_feature_table
from analysis.modeling.records import records_for_exams
from analysis.modeling.training import predict
from analysis.models import ModelVersion, Prediction
from studies.models import Cohort, CohortMember, Exam
from studies.csvfiles import CSVFileError, line_order, read_rows
from studies.validation import parse_date, row_patient_id

__all__ = [
    "PredictionImportError",
    "ScreeningList",
    "ScreeningRow",
    "import_external_predictions",
    "predict_exams",
]

PROBABILITY_COLUMNS = tuple(f"p_{c}" for c in CATEGORIES)
PREDICTED_BMD_RANGE = (-200.0, 600.0)  # mg/cm3; a wider range than any bone so a linear model's tail fits
PROBABILITY_SUM_TOLERANCE = 0.01


@dataclass(frozen=True)
class ScreeningRow:
    exam_id: int
    patient_id: str
    exam_date: object
    measurement_run_id: int
    predicted_bmd: float | None
    predicted_category: str
    probabilities: dict | None


@dataclass
class ScreeningList:
    """Predictions of one version for a set of exams, plus the exams it could not predict and why."""

    version: ModelVersion
    rows: list = field(default_factory=list)
    dropped: list = field(default_factory=list)


def predict_exams(version, exams=None, *, source=None, store=True):
    """Apply a stored model version to exams.

    Parameters
    ----------
    version : ModelVersion
        A trained (not external) version.
    exams : QuerySet of Exam, optional
        Default: every exam of the version's project.
    source : str, optional
        Measurement source; default the one the version was trained on.
    store : bool
        Store a ``Prediction`` (split "") for each predicted exam the version has not predicted yet.

    Returns
    -------
    ScreeningList
        Rows ordered by predicted BMD (regression) or by osteoporosis probability, most at risk first.
    """
    from analysis.modeling.versions import load_model

    model = load_model(version)
    exams = Exam.objects.filter(patient__project=version.project) if exams is None else exams
    exams = exams.order_by("pk")
    records = records_for_exams(exams, source or version.measurement_source)
    steps = getattr(model.pipeline, "named_steps", {})
    table = build_feature_table(
        records, version.feature_set, calibration=model.calibration, require_label=False, require_split=False,
        calibration_variant=model.calibration_variant or None, lumbar_map=steps.get("lumbar"),
    )
    output = predict(model, table.X)
    thresholds = version.project.thresholds
    by_id = {r.exam_id: r for r in records}
    rows = []
    for i, exam_id in enumerate(table.exam_ids.tolist()):
        record = by_id[exam_id]
        if model.task == "classification":
            probabilities = {c: float(p) for c, p in zip(model.classes, output["proba"][i])}
            bmd, category = None, str(output["category"][i])
        else:
            probabilities = None
            bmd = float(output["bmd"][i])
            category = thresholds.categorize(bmd)
        rows.append(ScreeningRow(exam_id, record.patient_id, record.exam_date, record.run_id, bmd, category,
                                 probabilities))
    if model.task == "classification":
        rows.sort(key=lambda r: (-r.probabilities[CATEGORIES[0]], r.exam_id))
    else:
        rows.sort(key=lambda r: (r.predicted_bmd, r.exam_id))
    if store:
        done = set(version.predictions.filter(exam_id__in=[r.exam_id for r in rows]).values_list("exam_id", flat=True))
        Prediction.objects.bulk_create(
            [
                Prediction(model_version=version, exam_id=r.exam_id, measurement_run_id=r.measurement_run_id,
                           split="", predicted_bmd=r.predicted_bmd, probabilities=r.probabilities,
                           predicted_category=r.predicted_category)
                for r in rows if r.exam_id not in done
            ],
            batch_size=2000,
        )
    return ScreeningList(version=version, rows=rows, dropped=[d.to_dict() for d in table.dropped])


class PredictionImportError(CSVFileError):
    """The predictions file cannot be imported; ``errors`` lists ``line N: reason`` strings."""


def _number(text, name, low, high):
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text or '(empty)'!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} {text!r} is outside {low:g}..{high:g}")
    return value


def _parse_prediction(cells, task):
    patient_id = row_patient_id(cells)
    exam_date = parse_date(cells["exam_date"])
    if task == "regression":
        return patient_id, exam_date, {"predicted_bmd": _number(cells["predicted_bmd"], "predicted_bmd",
                                                                *PREDICTED_BMD_RANGE)}
    probabilities = {c: _number(cells[f"p_{c}"], f"p_{c}", 0.0, 1.0) for c in CATEGORIES}
    total = sum(probabilities.values())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(f"probabilities sum to {total:.4f}, not 1")
    category = cells.get("predicted_category", "").strip().lower()
    if category and category not in CATEGORIES:
        raise ValueError(f"predicted_category {category!r} is not one of {', '.join(CATEGORIES)}")
    if not category:
        category = max(CATEGORIES, key=lambda c: probabilities[c])  # first of equal maxima, as argmax
    return patient_id, exam_date, {"probabilities": probabilities, "predicted_category": category}


def _read(data, task, source):
    required = ("patient_id", "exam_date") + (("predicted_bmd",) if task == "regression" else PROBABILITY_COLUMNS)
    optional = () if task == "regression" else ("predicted_category",)
    table = read_rows(data, source=source, required=required, optional=optional, error=PredictionImportError,
                      what=f"for a {task} model")
    rows, errors, seen = [], table.errors, {}
    for line, cells in table.rows:
        try:
            patient_id, exam_date, values = _parse_prediction(cells, task)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        key = (patient_id, exam_date)
        if key in seen:
            errors.append(f"line {line}: duplicate of line {seen[key]} (patient {patient_id}, exam {exam_date})")
            continue
        seen[key] = line
        rows.append((line, patient_id, exam_date, values))
    if not rows and not errors:
        errors.append(f"{source}: no data rows")
    return rows, errors


def import_external_predictions(
    data,
    project,
    *,
    name,
    task,
    cohort_name=Cohort.DEFAULT_NAME,
    n_resamples=2000,
    random_state=0,
    user=None,
    file_name="upload",
    description="",
):
    """Store an external model's predictions as a ``ModelVersion`` (``external=True``) and evaluate it.

    Each prediction takes the exam's split in ``cohort_name`` (no split: a screening prediction, not
    evaluated). The evaluations use the registry's QCT labels, leaving excluded exams out, exactly as for
    the product's own versions, so :func:`analysis.modeling.versions.compare_versions` pairs them case by case.

    Returns
    -------
    ModelVersion

    Raises
    ------
    PredictionImportError
        Listing every bad line; nothing is stored.
    """
    from analysis.modeling.versions import code_version, evaluate_version

    if task not in ("classification", "regression"):
        raise PredictionImportError([f"task must be classification or regression, got {task!r}"])
    name = (name or "").strip()
    if not name:
        raise PredictionImportError(["the external model needs a name"])
    rows, errors = _read(data, task, file_name)
    exams = {
        (e.patient.pseudonym, e.exam_date): e
        for e in Exam.objects.filter(patient__project=project, patient__pseudonym__in={r[1] for r in rows})
        .select_related("patient")
    }
    known = {p for p, _ in exams}
    for line, patient_id, exam_date, _ in rows:
        if (patient_id, exam_date) not in exams:
            errors.append(f"line {line}: unknown patient {patient_id!r}" if patient_id not in known
                          else f"line {line}: patient {patient_id} has no exam on {exam_date}")
    if errors:
        errors.sort(key=line_order)
        raise PredictionImportError(errors)
    cohort = Cohort.objects.filter(project=project, name=cohort_name).first()
    splits = dict(CohortMember.objects.filter(cohort=cohort).values_list("exam_id", "split")) if cohort else {}
    thresholds = project.thresholds
    with transaction.atomic():
        version = ModelVersion(
            project=project,
            cohort=cohort,
            name=name[:150],
            task=task,
            algorithm="external",
            hyperparameters={"description": description} if description else {},
            feature_set="external",
            external=True,
            code_version=code_version(),
            data_snapshot={
                "source_file": file_name,
                "cohort": cohort_name if cohort else None,
                "classes": list(CATEGORIES) if task == "classification" else None,
                "exam_ids": [exams[(r[1], r[2])].pk for r in rows],
                "split": [splits.get(exams[(r[1], r[2])].pk, "") for r in rows],
            },
            created_by=user,
        )
        version.save()
        predictions = []
        for _, patient_id, exam_date, values in rows:
            exam = exams[(patient_id, exam_date)]
            p = Prediction(model_version=version, exam=exam, split=splits.get(exam.pk, ""), **values)
            if task == "regression":
                p.predicted_category = thresholds.categorize(p.predicted_bmd)
            predictions.append(p)
        Prediction.objects.bulk_create(predictions, batch_size=2000)
        evaluate_version(version, n_resamples=n_resamples, random_state=random_state)
    return version
