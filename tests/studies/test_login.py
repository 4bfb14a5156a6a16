"""Failed logins are rate limited (django-axes): after 5 failures the account is locked for that address."""

from django.urls import reverse

from tests.factories import UserFactory


def test_lockout_after_repeated_failures(client, db, password):
    user = UserFactory()
    for _ in range(5):
        client.post(reverse("login"), {"username": user.username, "password": "wrong"})
    response = client.post(reverse("login"), {"username": user.username, "password": password})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_good_login(client, db, password):
    user = UserFactory()
    response = client.post(reverse("login"), {"username": user.username, "password": password})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
