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
    # The site's page (its layout, not the admin's), with the form to set the password.
    assert_site_page(form, "registration/password_reset_confirm.html")
    page = form.content.decode()
    assert 'name="new_password1"' in page and 'name="new_password2"' in page and 'id="set-password-button"' in page
    # Passwords that differ are refused on the same page, nothing is set.
    refused = client.post(set_url, {"new_password1": "a long new passphrase 42", "new_password2": "another one 43"})
    assert refused.status_code == 200 and "didn’t match" in refused.content.decode()
    user.refresh_from_db()
    assert not user.has_usable_password()

    new = "a long new passphrase 42"
    done = client.post(set_url, {"new_password1": new, "new_password2": new}, follow=True)
    assert_site_page(done, "registration/password_reset_complete.html")
    assert '<a href="/accounts/login/">Log in</a>' in done.content.decode()
    user.refresh_from_db()
    assert user.check_password("a long new passphrase 42")
    # The link is spent: opening it again says so, still in the site's layout.
    again = client.get(link, follow=True)
    assert_site_page(again, "registration/password_reset_confirm.html")
    assert 'id="invalid-link"' in again.content.decode() and 'name="new_password1"' not in again.content.decode()
    # And the new password logs in through the site's login page.
    answer = client.post("/accounts/login/", {"username": "newreader", "password": "a long new passphrase 42"})
    assert answer.status_code == 302 and answer.wsgi_request.user == user


def assert_site_page(response, template):
    """Rendered from the site's own template within its layout (base.html), not the admin's look-alike."""
    names = [t.name for t in response.templates]
    assert response.status_code == 200 and names[0] == template and "base.html" in names, names
    page = response.content.decode()
    assert '<header class="top">' in page and "Django administration" not in page and "admin/" not in page


def test_only_project_admins_create_users(client, db):
    coordinator = MembershipFactory(role="coordinator")
    client.force_login(coordinator.user)
    answer = client.post(f"/p/{coordinator.project_id}/members/invite/", {"username": "x", "role": "pi"})
    assert answer.status_code == 403
    assert not get_user_model().objects.filter(username="x").exists()


def test_a_user_changes_their_password_from_their_page_in_the_sites_layout(client, db):
    member = MembershipFactory(role="annotator").user
    member.set_password("the first passphrase 1")
    member.save()
    client.force_login(member)
    assert 'href="/accounts/password_change/"' in client.get("/account/tokens/").content.decode()
    form = client.get("/accounts/password_change/")
    assert_site_page(form, "registration/password_change_form.html")
    wrong = client.post("/accounts/password_change/", {"old_password": "not it", "new_password1": "x",
                                                       "new_password2": "x"})
    assert wrong.status_code == 200 and 'id="change-password"' in wrong.content.decode()
    new = "a second long passphrase 2"
    done = client.post("/accounts/password_change/", {"old_password": "the first passphrase 1",
                                                      "new_password1": new, "new_password2": new}, follow=True)
    assert_site_page(done, "registration/password_change_done.html")
    member.refresh_from_db()
    assert member.check_password(new)
