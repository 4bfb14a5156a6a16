"""Project members: adding existing or new users with a role (pages and ``manage.py add_member`` alike)."""

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import Membership, Role


class MemberError(ValueError):
    """The member cannot be added (unknown user without --create, bad name, unknown role)."""


@transaction.atomic
def add_member(project, username, role, *, create=False, email=""):
    """Give ``username`` ``role`` in ``project``; returns (membership, user_created).

    A new user (``create``) gets an unusable password: they set one through a password reset or an admin,
    or work with API tokens. An existing member's role is changed (audited like every membership change).
    """
    if role not in Role.values:
        raise MemberError(f"unknown role {role!r}; one of {', '.join(Role.values)}")
    username = (username or "").strip()
    if not username:
        raise MemberError("a user name is required")
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    created = False
    if user is None:
        if not create:
            raise MemberError(f"no user {username!r} (pass --create to create one)")
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(username)
        except Exception as exc:
            raise MemberError(f"user name {username!r}: {'; '.join(getattr(exc, 'messages', [str(exc)]))}") from None
        user = User(username=username, email=email)
        user.set_unusable_password()
        user.save()
        created = True
    membership = Membership.objects.filter(project=project, user=user).first()
    if membership is None:
        membership = Membership.objects.create(project=project, user=user, role=role)
    elif membership.role != role:
        membership.role = role
        membership.save()
    return membership, created
