"""Project admins create a user and add them to the project from the members page (``add_member`` with
``create``); the new user gets a one-time link to set their password, shown to the admin to pass on."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.http import require_POST

from .access import get_project_for_user
from .members import MemberError, add_member
from .models import MEMBER_MANAGERS, Role


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


def password_link(request, user):
    """An absolute one-time link for ``user`` to set a password (Django's password reset confirmation)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return request.build_absolute_uri(reverse("password_reset_confirm", args=[uid, token]))


@login_required
@require_POST
def invite(request, project_id):
    project = get_project_for_user(request, project_id, roles=MEMBER_MANAGERS)
    form = InviteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("studies:members", project.pk)
    data = form.cleaned_data
    try:
        membership, created = add_member(project, data["username"], data["role"], create=True, email=data["email"])
    except MemberError as exc:
        messages.error(request, str(exc))
        return redirect("studies:members", project.pk)
    if created:
        messages.success(request, f"User {membership.user.username} created as {membership.get_role_display()}. "
                                  f"Send them this link to set their password: {password_link(request, membership.user)}")
    else:
        messages.success(request, f"{membership.user.username} is now {membership.get_role_display()}.")
    return redirect("studies:members", project.pk)
