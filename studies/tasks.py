"""Registry jobs. Thin wrappers: primitive keyword arguments, look the object up, call one domain function."""

import threading

from django.db import connection

from .jobs import housekeeping, on_end, task
from .models import Job, Project
from .registry import recategorize_project


@task("registry.recategorize")
def recategorize(*, project_id, progress, user_id=None):
    """Recompute QCT categories of a project after its thresholds changed (by the user ``user_id``)."""
    from django.contrib.auth import get_user_model
    from rq import get_current_job

    project = Project.objects.get(pk=project_id)
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    rq_job = get_current_job()
    job_id = Job.objects.filter(rq_job_id=rq_job.id).values_list("pk", flat=True).first() if rq_job else None
    changed = recategorize_project(project, progress=progress, actor=actor, job_id=job_id)
    return {"changed": changed}


@task("registry.import_qct")
def import_qct(*, project_id, pending, source, expected, user_id=None, progress):
    """Import a confirmed QCT CSV (kept in the file storage) into a project: all rows or none."""
    from django.contrib.auth import get_user_model

    from .importers import import_pending

    project = Project.objects.get(pk=project_id)
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    plan = import_pending(project, pending, source=source, expected=expected, actor=actor,
                          progress=_committed(progress))
    return plan.counts


@on_end("registry.import_qct")
def discard_import_file(job):
    """The uploaded file an import job was given goes when the job ends, however it ends (a retry of a
    failed import asks for the file again)."""
    from .importers import discard_pending

    discard_pending(job.params["pending"])


@housekeeping
def remove_stale_import_files():
    """Uploaded files that no job or page will import any more (a preview never confirmed, a job whose end
    was missed)."""
    from .importers import remove_stale_pending

    remove_stale_pending()


def _committed(progress):
    """``progress`` writing through its own database connection, so the job page shows it while the
    import's single transaction is still open (a write in that transaction is invisible until it ends).

    SQLite has one writer at a time, which the import is: there the reports wait for the end."""
    if connection.vendor == "sqlite":
        return progress

    def report(fraction, message=""):
        def write():
            try:
                progress(fraction, message)
            finally:
                connection.close()  # this thread's own connection

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        thread.join()

    return report
