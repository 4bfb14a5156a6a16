"""Page forms refuse the same values as the CSV import, with messages that name the unit."""

from django.urls import reverse

from studies.models import Exam
from tests.factories import PatientFactory


def post_exam(client, project, patient, bmd):
    return client.post(reverse("studies:exam_add", args=[project.pk, patient.pk]), {
        "exam-exam_date": "2022-05-03", "exam-age_at_exam": "66", "exam-region": "chest",
        "qct-bmd_l1": bmd, "qct-bmd_l2": "", "qct-bmd_l3": ""})


def test_g_per_cm2_value_is_refused_with_unit(coordinator_client, project):
    patient = PatientFactory(project=project)
    response = post_exam(coordinator_client, project, patient, "0.85")
    assert response.status_code == 200
    assert "looks like an areal DXA value in g/cm2" in response.content.decode()
    assert not Exam.objects.filter(patient=patient).exists()  # exam and QCT saved together or not at all


def test_out_of_range_and_empty_are_refused(coordinator_client, project):
    patient = PatientFactory(project=project)
    assert "outside 0-400 mg/cm3" in post_exam(coordinator_client, project, patient, "401").content.decode()
    assert "at least one of L1, L2, L3" in post_exam(coordinator_client, project, patient, "").content.decode()


def test_valid_exam_shows_category(coordinator_client, project):
    patient = PatientFactory(project=project)
    response = post_exam(coordinator_client, project, patient, "120")
    assert response.status_code == 302
    page = coordinator_client.get(response["Location"]).content.decode()
    assert "osteopenia" in page  # 120 is the upper boundary of osteopenia


def test_duplicate_pseudonym_refused(coordinator_client, project):
    PatientFactory(project=project, pseudonym="DUP")
    response = coordinator_client.post(reverse("studies:patient_add", args=[project.pk]),
                                       {"pseudonym": "DUP", "sex": "F"})
    assert "already exists" in response.content.decode()


def test_patient_list_filters(coordinator_client, project):
    from tests.factories import ExamFactory, QCTResultFactory

    QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="LOW")), bmd_l1=60)
    QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="HIGH"), region="abdomen"),
                     bmd_l1=160)
    url = reverse("studies:patient_list", args=[project.pk])
    page = coordinator_client.get(url, {"category": "osteoporosis"}).content.decode()
    assert "LOW" in page and "HIGH" not in page
    page = coordinator_client.get(url, {"region": "abdomen"}).content.decode()
    assert "HIGH" in page and "LOW" not in page
    page = coordinator_client.get(url, {"q": "HI"}).content.decode()
    assert "HIGH" in page and "LOW" not in page
