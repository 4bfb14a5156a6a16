"""API tokens (stored hashed, shown once, revocable) and the add_member / create_token commands."""

import hashlib
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from studies.dicomweb.models import ApiToken
from studies.dicomweb.tokens import user_for_token
from studies.models import Membership
from tests.factories import ProjectFactory, UserFactory


def test_create_token_command_prints_a_token_stored_only_as_its_hash(db):
    user = UserFactory(username="scripter")
    out = StringIO()
    call_command("create_token", "--user", "scripter", "--name", "nightly", stdout=out)
    token = out.getvalue().strip()
    row = ApiToken.objects.get(user=user)
    assert row.name == "nightly" and token.startswith("bmd_") and len(token) > 40
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(ApiToken.objects.values_list())  # the token itself is nowhere in the table
    assert user_for_token(token) == user


def test_create_token_for_unknown_user_fails(db):
    with pytest.raises(CommandError, match="no user 'ghost'"):
        call_command("create_token", "--user", "ghost")


def test_tokens_page_creates_shows_once_and_revokes(client, db):
    user = UserFactory()
    client.force_login(user)
    page = client.post("/account/tokens/", {"name": "laptop"})
    token = page.context["new_token"]
    assert token in page.content.decode() and user_for_token(token) == user
    again = client.get("/account/tokens/")
    assert token not in again.content.decode()
    row = ApiToken.objects.get(user=user)
    other = UserFactory()
    client.force_login(other)
    assert client.post(f"/account/tokens/{row.pk}/revoke/").status_code == 404  # not their token
    client.force_login(user)
    client.post(f"/account/tokens/{row.pk}/revoke/")
    assert user_for_token(token) is None


def test_add_member_creates_user_with_unusable_password_and_changes_role(db):
    project = ProjectFactory(name="Spine study")
    out = StringIO()
    call_command("add_member", "--project", "Spine study", "--user", "reader1", "--role", "annotator", "--create",
                 stdout=out)
    user = get_user_model().objects.get(username="reader1")
    assert not user.has_usable_password()
    assert Membership.objects.get(project=project, user=user).role == "annotator"
    call_command("add_member", "--project", "Spine study", "--user", "reader1", "--role", "pi", stdout=out)
    assert Membership.objects.get(project=project, user=user).role == "pi"
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("add_member", "--project", "Spine study", "--user", "nobody", "--role", "pi")
    with pytest.raises(CommandError, match="no project 'Nope'"):
        call_command("add_member", "--project", "Nope", "--user", "reader1", "--role", "pi")
