"""Object-level access by project: a user sees only projects they are a member of; anything else is a 404.

Superusers are site administrators and see every project.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Project, Role


def projects_for(user):
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def role_in(user, project):
    """The user's role in ``project`` (superusers act as admins), or None."""
    if user.is_superuser:
        return Role.ADMIN
    membership = project.memberships.filter(user=user).only("role").first()
    return Role(membership.role) if membership else None


def get_project_for_user(request, project_id, roles=None):
    """The project if the user is a member (404 otherwise); PermissionDenied if ``roles`` excludes theirs."""
    try:
        project = projects_for(request.user).distinct().get(pk=project_id)
    except Project.DoesNotExist:
        raise Http404("No such project.") from None
    role = role_in(request.user, project)
    if roles is not None and role not in roles:
        raise PermissionDenied(f"Your role in {project.name} does not allow this.")
    request.project_role = role
    return project
