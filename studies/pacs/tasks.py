"""PACS jobs. Thin wrappers: primitive keyword arguments, look the rows up, call one ingest function.

Each returns a small JSON result (stored series UID, whether it was new); a failure raises with the reason
(:class:`~studies.pacs.client.PacsError` or :class:`~studies.pacs.ingest.IngestError`), which the job row
shows. Re-running a job is safe: a stored series is found, not stored twice.
"""

from django.contrib.auth import get_user_model

from studies.jobs import task
from studies.models import Exam, Project

from . import ingest
from .client import Endpoint, PacsClient
from .models import PacsConnection


def _client(connection_id=None, url=""):
    if connection_id:
        return PacsClient(Endpoint.from_connection(PacsConnection.objects.get(pk=connection_id)))
    return PacsClient(Endpoint(base_url=url))


def _user(user_id):
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


def _result(result):
    stored = result.stored
    out = {"series_uid": stored.series_uid, "stored_series_id": stored.pk, "created": result.created,
           "n_slices": stored.n_slices, "flags": stored.flags}
    if result.selection is not None:
        out["reasons"] = result.selection.reasons
    return out


@task("pacs.pull_series")
def pull_series(*, project_id, study_uid, series_uid="", connection_id=None, url="", exam_id=None, user_id=None,
                progress):
    """Pull one series (or, without ``series_uid``, the series the selection rules choose) of a study."""
    project = Project.objects.get(pk=project_id)
    exam = Exam.objects.get(pk=exam_id, patient__project=project) if exam_id else None
    user = _user(user_id)
    result = ingest.pull_study(project, _client(connection_id, url), study_uid, series_uid=series_uid or None,
                               exam=exam, user=user, progress=progress,
                               override_by=user.get_username() if user else "")
    return _result(result)


@task("pacs.pull_exam")
def pull_exam(*, exam_id, connection_id, user_id=None, progress):
    """Pull the series to measure of a registry exam (its series UID when the registry has one)."""
    exam = Exam.objects.select_related("patient__project").get(pk=exam_id)
    if not exam.study_uid:
        raise ValueError(f"exam {exam} has no StudyInstanceUID to pull")
    result = ingest.pull_study(exam.patient.project, _client(connection_id), exam.study_uid,
                               series_uid=exam.series_uid or None, exam=exam, user=_user(user_id),
                               progress=progress)
    return _result(result)


@task("pacs.import_local")
def import_local(*, project_id, path, exam_id=None, series_uid=None, user_id=None, delete_source=False, progress):
    """Import a folder or an uploaded zip; an uploaded zip (``delete_source``) is removed afterwards."""
    from pathlib import Path

    project = Project.objects.get(pk=project_id)
    exam = Exam.objects.get(pk=exam_id, patient__project=project) if exam_id else None
    user = _user(user_id)
    try:
        progress(0.1, "importing")
        result = ingest.import_local(project, path, exam=exam, user=user, series_uid=series_uid,
                                     override_by=user.get_username() if user else "")
    finally:
        if delete_source:
            Path(path).unlink(missing_ok=True)
    return _result(result)
