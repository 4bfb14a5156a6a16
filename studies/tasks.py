"""Registry jobs. Thin wrappers: primitive keyword arguments, look the object up, call one domain function."""

from .jobs import task
from .models import Project
from .registry import recategorize_project


@task("registry.recategorize")
def recategorize(*, project_id, progress):
    """Recompute QCT categories of a project after its thresholds changed."""
    project = Project.objects.get(pk=project_id)
    changed = recategorize_project(project, progress=progress)
    return {"changed": changed}
