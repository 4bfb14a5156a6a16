"""Registry jobs. Thin wrappers: primitive keyword arguments, look the object up, call one domain function."""

from .jobs import task
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
