"""Model versions built on measurement runs that a review has since superseded (a newer run of the same exam
and source, e.g. an accepted relabel): their features no longer match what the exam's features read now."""

from analysis.models import MeasurementRun, ModelVersion


def superseded_run_ids(run_ids):
    """The subset of ``run_ids`` for which the same exam has a newer run of the same source."""
    runs = list(MeasurementRun.objects.filter(pk__in=run_ids).values_list("pk", "exam_id", "source", "created_at"))
    if not runs:
        return set()
    newest = {}
    for exam_id, source, created_at, pk in (MeasurementRun.objects.filter(exam_id__in={r[1] for r in runs})
                                           .values_list("exam_id", "source", "created_at", "pk")):
        key = (exam_id, source)
        if key not in newest or (created_at, pk) > newest[key]:
            newest[key] = (created_at, pk)
    return {pk for pk, exam_id, source, created_at in runs if newest[(exam_id, source)][1] != pk}


def stale_versions(project):
    """``{model version id: number of its measurement runs superseded since it was built}`` (stale ones only)."""
    versions = list(ModelVersion.objects.filter(project=project, external=False).values_list("pk", "data_snapshot"))
    used = {pk: set((snapshot or {}).get("measurement_run_ids") or []) for pk, snapshot in versions}
    superseded = superseded_run_ids(set().union(*used.values()) if used else set())
    return {pk: len(ids & superseded) for pk, ids in used.items() if ids & superseded}
