"""Project admins create users from the members page; the one-time link lets the new user set a password."""

import re

from django.contrib.auth import get_user_model

from studies.models import Membership
from tests.factories import MembershipFactory


def test_admin_creates_a_user_who_sets_a_password_from_the_link(client, db):
    admin = MembershipFactory(role="admin")
    project = admin.project
    client.force_login(admin.user)
    page = client.post(f"/p/{project.pk}/members/invite/", {"username": "newreader", "email": "r@example.org",
                                                           "role": "annotator"}, follow=True)
    user = get_user_model().objects.get(username="newreader")
    assert not user.has_usable_password() and user.email == "r@example.org"
    assert Membership.objects.get(project=project, user=user).role == "annotator"
    link = re.search(r"(http://testserver/accounts/reset/[\w-]+/[\w-]+/)", page.content.decode()).group(1)
    client.logout()
    form = client.get(link, follow=True)  # Django swaps the token for a session-bound URL
    set_url = form.redirect_chain[-1][0]
    done = client.post(set_url, {"new_password1": "a long new passphrase 42", "new_password2": "a long new passphrase 42"})
    assert done.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a long new passphrase 42")


def test_only_project_admins_create_users(client, db):
    coordinator = MembershipFactory(role="coordinator")
    client.force_login(coordinator.user)
    answer = client.post(f"/p/{coordinator.project_id}/members/invite/", {"username": "x", "role": "pi"})
    assert answer.status_code == 403
    assert not get_user_model().objects.filter(username="x").exists()
