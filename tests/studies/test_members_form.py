"""The members form does not tell whether a user name exists, and the flag and member fields have labels."""

import re

from django.urls import reverse

from studies.models import Membership
from tests.factories import PatientFactory, UserFactory


def _message(client, project, username, role="annotator"):
    response = client.post(reverse("studies:members", args=[project.pk]), {"username": username, "role": role},
                           follow=True)
    assert response.status_code == 200
    (message,) = re.findall(r'<ul class="messages"><li class="[^"]*">(.*?)</li>', response.content.decode(), re.S)
    return message


def test_unknown_and_existing_user_names_get_the_same_answer(client, member, project):
    client.force_login(member("admin"))
    existing = UserFactory(username="dr-who")
    answer_existing = _message(client, project, "dr-who")
    answer_unknown = _message(client, project, "dr-nobody")
    # Same text with the name swapped: the reply cannot be used to probe which accounts the site has.
    assert answer_unknown == answer_existing.replace("dr-who", "dr-nobody")
    assert "If an account named" in answer_unknown
    assert Membership.objects.filter(project=project, user=existing, role="annotator").exists()
    assert Membership.objects.filter(project=project).count() == 2  # the admin and dr-who; nobody else
    # Adding an existing member again answers the same and leaves their role alone.
    assert _message(client, project, "dr-who", role="admin") == answer_existing.replace("Annotator", "Admin")
    assert Membership.objects.get(project=project, user=existing).role == "annotator"


def test_member_and_flag_fields_have_labels(client, member, project):
    client.force_login(member("admin"))
    page = client.get(reverse("studies:members", args=[project.pk])).content.decode()
    assert '<label for="id_username">User name</label>' in page and '<label for="id_role">Role</label>' in page
    # The per-member role select in the table names itself.
    assert re.search(r'<select name="m\d+-role" aria-label="Role of user\d+"', page)

    patient = PatientFactory(project=project)
    page = client.get(reverse("studies:patient_detail", args=[project.pk, patient.pk])).content.decode()
    for name, label in (("reason", "Exclusion reason"), ("exam", "Applies to"), ("note", "Note")):
        assert re.search(rf'<(select|input)[^>]*name="{name}"[^>]*aria-label="{label}"|'
                         rf'<(select|input)[^>]*aria-label="{label}"[^>]*name="{name}"', page), name
