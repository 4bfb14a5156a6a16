"""Every page carries the Content-Security-Policy; pages and exports seen by a signed-in user are
``Cache-Control: no-store`` (patient lists and details, exam pages, the pseudonym map, PACS search results,
CSV exports); access-log entries are append-only."""

import pytest
from django.urls import reverse

from bmdsite.middleware import content_security_policy
from studies.pacs.models import PseudonymMap
from tests.factories import ExamFactory, MembershipFactory, PatientFactory, ProjectFactory

# The policy as README's Security section states it, directive by directive.
EXPECTED_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' "
                "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
                "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='; "
                "img-src 'self' data: blob:; font-src 'self' data:; "
                "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'self'; "
                "form-action 'self'; frame-ancestors 'none'")


@pytest.fixture
def admin_client(client, db):
    project = ProjectFactory()
    user = MembershipFactory(project=project, role="admin").user
    exam = ExamFactory(patient=PatientFactory(project=project))
    PseudonymMap.objects.create(project=project, real_patient_id="MRN-1", pseudonym=exam.patient.pseudonym)
    client.force_login(user)
    client.project, client.exam = project, exam
    return client


def phi_pages(project, exam):
    patient = exam.patient
    return [
        reverse("studies:patient_list", args=[project.pk]),
        reverse("studies:patient_detail", args=[project.pk, patient.pk]),
        reverse("studies:patient_history", args=[project.pk, patient.pk]),
        reverse("studies:exam_edit", args=[project.pk, patient.pk, exam.pk]),
        reverse("analysis:exam_measurements", args=[project.pk, exam.pk]),
        reverse("studies:pacs_pseudonyms", args=[project.pk]),
        reverse("studies:pacs_search", args=[project.pk]),
        reverse("studies:export_csv", args=[project.pk]),
    ]


def test_the_policy_string():
    from django.conf import settings

    assert content_security_policy(settings.CONTENT_SECURITY_POLICY) == EXPECTED_CSP


def test_phi_pages_and_exports_are_no_store_with_the_policy(admin_client):
    project, exam = admin_client.project, admin_client.exam
    for url in phi_pages(project, exam):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == EXPECTED_CSP, url
        directives = {d.strip() for d in response["Cache-Control"].split(",")}
        assert {"no-store", "private"} <= directives, (url, response["Cache-Control"])
    export = admin_client.get(reverse("studies:export_csv", args=[project.pk]))
    assert export["Content-Type"].startswith("text/csv") and "no-store" in export["Cache-Control"]


def test_every_page_has_the_policy(admin_client, client):
    project = admin_client.project
    for url in ["/", reverse("studies:project_detail", args=[project.pk]),
                reverse("analysis:model_list", args=[project.pk]), reverse("studies:job_list"),
                reverse("studies:members", args=[project.pk]), "/p/999999/patients/", "/no-such-page/"]:
        response = admin_client.get(url)
        assert response["Content-Security-Policy"] == EXPECTED_CSP, url
    admin_client.logout()
    login = client.get(reverse("login"))
    assert login.status_code == 200 and login["Content-Security-Policy"] == EXPECTED_CSP
    assert login["Referrer-Policy"] == "same-origin" and login["X-Frame-Options"] == "DENY"
