"""A user sees only projects they belong to (others answer 404); only coordinators and admins edit."""

import pytest
from django.urls import reverse

from tests.factories import ExamFactory, PatientFactory, ProjectFactory, UserFactory


@pytest.fixture
def other_patient(db):
    return PatientFactory(project=ProjectFactory(name="Someone else's"))


def test_other_projects_answer_404(coordinator_client, other_patient):
    p = other_patient.project
    urls = [
        reverse("studies:project_detail", args=[p.pk]),
        reverse("studies:patient_list", args=[p.pk]),
        reverse("studies:patient_detail", args=[p.pk, other_patient.pk]),
        reverse("studies:patient_history", args=[p.pk, other_patient.pk]),
        reverse("studies:export_csv", args=[p.pk]),
        reverse("studies:import_csv", args=[p.pk]),
    ]
    for url in urls:
        assert coordinator_client.get(url).status_code == 404, url
    assert coordinator_client.post(reverse("studies:patient_add", args=[p.pk]),
                                   {"pseudonym": "X", "sex": "F"}).status_code == 404


def test_patient_of_other_project_via_own_project_url_is_404(coordinator_client, project, other_patient):
    url = reverse("studies:patient_detail", args=[project.pk, other_patient.pk])
    assert coordinator_client.get(url).status_code == 404


def test_project_list_shows_only_own_projects(coordinator_client, project, other_patient):
    page = coordinator_client.get(reverse("studies:project_list")).content.decode()
    assert project.name in page
    assert other_patient.project.name not in page


@pytest.mark.parametrize("role, can_edit", [("coordinator", True), ("admin", True), ("annotator", False),
                                            ("pi", False)])
def test_only_coordinators_and_admins_edit(client, member, project, role, can_edit):
    client.force_login(member(role))
    patient = PatientFactory(project=project)
    assert client.get(reverse("studies:patient_detail", args=[project.pk, patient.pk])).status_code == 200
    response = client.post(reverse("studies:patient_add", args=[project.pk]), {"pseudonym": "NEW1", "sex": "M"})
    assert response.status_code == (302 if can_edit else 403)
    assert project.patients.filter(pseudonym="NEW1").exists() == can_edit


def test_anonymous_is_sent_to_login(client, project):
    response = client.get(reverse("studies:patient_list", args=[project.pk]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_exam_of_other_project_cannot_be_deleted(coordinator_client, project):
    exam = ExamFactory()
    url = reverse("studies:exam_delete", args=[project.pk, exam.patient_id, exam.pk])
    assert coordinator_client.post(url).status_code == 404
    exam.refresh_from_db()


def test_non_member_user_sees_no_projects(client, project):
    client.force_login(UserFactory())
    assert project.name not in client.get(reverse("studies:project_list")).content.decode()
