"""Analysis jobs (image pipeline, modelling) register here with ``studies.jobs.task``.

Thin wrappers: primitive keyword arguments, look the objects up, call one domain function, return a small
JSON summary for the job row.
"""

from studies.jobs import task


@task("analysis.train_grid")
def train_grid(*, project_id, progress, cohort_name="main", seed=0, feature_sets=("chest", "abdomen", "chest_cal"),
               tasks=("classification", "regression"), n_resamples=2000, measurement_source=None,
               calibration_variants=None, user_id=None):
    """Train the model grid on a cohort; every fitted model becomes a model version."""
    from django.contrib.auth import get_user_model

    from analysis.modeling.versions import train_cohort
    from studies.models import Project

    project = Project.objects.get(pk=project_id)
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    versions, grid = train_cohort(
        project, cohort_name=cohort_name, feature_sets=tuple(feature_sets), tasks=tuple(tasks), random_state=seed,
        n_resamples=n_resamples, measurement_source=measurement_source, calibration_variants=calibration_variants,
        user=user, progress=progress,
    )
    return {
        "model_versions": [v.pk for v in versions],
        "fit_seconds": round(grid.fit_seconds, 3),
        "eval_seconds": round(grid.eval_seconds, 3),
        "excluded": {fs: len(t.dropped) for fs, t in grid.tables.items()},
    }


@task("analysis.evaluate")
def evaluate(*, model_version_id, progress, n_resamples=2000, seed=0):
    """Recompute a version's evaluations from its stored predictions."""
    from analysis.modeling.versions import evaluate_version
    from analysis.models import ModelVersion

    version = ModelVersion.objects.get(pk=model_version_id)
    progress(0.1, f"evaluating {version.name}")
    results = evaluate_version(version, n_resamples=n_resamples, random_state=seed)
    return {"model_version": version.pk, "splits": {split: m.get("n") for split, m in results.items()}}


@task("analysis.predict")
def predict(*, model_version_id, progress, exam_ids=None, measurement_source=None):
    """Apply a version to exams (default: all of its project's exams) and store the screening predictions."""
    from analysis.modeling.predictions import predict_exams
    from analysis.models import ModelVersion
    from studies.models import Exam

    version = ModelVersion.objects.select_related("project").get(pk=model_version_id)
    exams = Exam.objects.filter(patient__project=version.project)
    if exam_ids is not None:
        exams = exams.filter(pk__in=exam_ids)
    progress(0.1, f"predicting with {version.name}")
    screening = predict_exams(version, exams, source=measurement_source)
    return {"model_version": version.pk, "predicted": len(screening.rows), "not_predicted": len(screening.dropped)}


@task("analysis.measure_exam")
def measure_exam(*, exam_id, progress, erosion_mm=3.0, device="cpu", user_id=None):
    """Segment and measure an exam's stored CT series; the result is a new, immutable measurement run."""
    from django.contrib.auth import get_user_model

    from analysis import pipeline
    from studies.models import Exam

    exam = Exam.objects.select_related("patient").get(pk=exam_id)
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    run = pipeline.measure_exam(exam, erosion_mm=erosion_mm, device=device, user=user, progress=progress)
    return {"measurement_run": run.pk, "levels": list(run.levels.values_list("level", flat=True)),
            "flags": run.flags}
