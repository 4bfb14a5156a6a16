"""Bad input on the PACS pages: study UIDs in URLs are digits and dots (else 404, never a request to the PACS
built from them), the link form stores only DICOM UIDs, its ``next`` stays on this site, and the PACS
search keeps the real PatientID (PHI) out of every URL."""

import html as htmllib
import json

import pytest
from django.urls import reverse

from studies.models import AccessLog
from studies.pacs.models import PacsConnection
from tests.factories import ExamFactory, PatientFactory
from tests.studies.pacs.test_client_safety import Recorder

# A QIDO-RS answer with one study of PACS patient MRN-77 (DICOM JSON, PS3.18 F.2).
STUDY = {"0020000D": {"vr": "UI", "Value": ["1.2.840.99.1"]}, "00080020": {"vr": "DA", "Value": ["20240105"]},
         "00100020": {"vr": "LO", "Value": ["MRN-77"]}}


@pytest.fixture
def pacs(db):
    server = Recorder([(200, {}, json.dumps([STUDY]), 0)] * 10)
    connection = PacsConnection.objects.create(name="recorder", base_url=f"{server.url}/dicom-web", max_retries=0)
    yield server, connection
    server.close()


@pytest.mark.parametrize("bad", ["1.2.3%3Fx=1", "1.2.3%23frag", "1.2..3", "..", ".1.2", "1.2.", "1.2.3a",
                                 "1" * 65, "1.2%2F..%2F..%2Finstances"])
def test_a_study_url_with_a_non_uid_answers_404(coordinator_client, project, pacs, bad):
    server, connection = pacs
    url = f"/p/{project.pk}/pacs/{connection.pk}/study/{bad}/"
    assert coordinator_client.get(url).status_code == 404
    assert coordinator_client.post(url, {"series_uid": "1.2"}).status_code == 404
    assert server.requests == []  # nothing was asked of the PACS


def test_a_study_url_with_a_uid_reaches_the_pacs(coordinator_client, project, pacs):
    server, connection = pacs
    # The series search answers one structured-report series (no CT, so no metadata is asked for).
    series = {"0020000E": {"vr": "UI", "Value": ["1.2.840.99.1.2"]}, "00080060": {"vr": "CS", "Value": ["SR"]}}
    server.script = [(200, {}, json.dumps([series]), 0)]
    url = reverse("studies:pacs_study", args=[project.pk, connection.pk, "1.2.840.99.1"])
    assert url.endswith("/study/1.2.840.99.1/")
    page = coordinator_client.get(url)
    assert page.status_code == 200 and [c.series_uid for c in page.context["selection"].candidates] == [
        "1.2.840.99.1.2"]
    assert server.requests[0]["path"].startswith("/dicom-web/studies/1.2.840.99.1/series")


def test_a_series_without_a_uid_from_the_pacs_is_a_clear_error(coordinator_client, project, pacs):
    server, connection = pacs
    server.script = [(200, {}, json.dumps([{"00080060": {"vr": "CS", "Value": ["CT"]}}]), 0)]
    page = coordinator_client.get(reverse("studies:pacs_study", args=[project.pk, connection.pk, "1.2.840.99.1"]))
    assert page.status_code == 200
    assert page.context["error"] == ("series search in study 1.2.840.99.1: recorder answered a series whose "
                                     "SeriesInstanceUID '' is not a DICOM UID")


@pytest.mark.parametrize("bad, reason", [
    ("1.2.3?x=1", "StudyInstanceUID (0020,000D) '1.2.3?x=1' is not a valid DICOM UID"),
    ("1.2..3", "StudyInstanceUID (0020,000D) '1.2..3' is not a valid DICOM UID"),
    ("abc", "StudyInstanceUID (0020,000D) 'abc' is not a valid DICOM UID"),
    ("", "This field is required."),
])
def test_the_link_form_stores_only_dicom_uids(coordinator_client, project, bad, reason):
    exam = ExamFactory(patient=PatientFactory(project=project), study_uid="")
    response = coordinator_client.post(reverse("studies:pacs_link_exam", args=[project.pk]),
                                       {"study_uid": bad, "exam": exam.pk}, follow=True)
    exam.refresh_from_db()
    assert exam.study_uid == ""
    assert f"Not linked: {reason}" in htmllib.unescape(response.content.decode())


@pytest.mark.parametrize("target, kept", [
    ("https://evil.example/phish", False), ("//evil.example/phish", False), ("http://testserver.evil/x", False),
    ("javascript:alert(1)", False), ("/p/1/patients/", True), ("http://testserver/p/1/patients/", True),
])
def test_link_next_stays_on_this_site(coordinator_client, project, target, kept):
    exam = ExamFactory(patient=PatientFactory(project=project))
    response = coordinator_client.post(reverse("studies:pacs_link_exam", args=[project.pk]),
                                       {"study_uid": "1.2.840.99.1", "exam": exam.pk, "next": target})
    assert response.status_code == 302
    assert response.url == (target if kept else reverse("studies:pacs_search", args=[project.pk]))
    exam.refresh_from_db()
    assert exam.study_uid == "1.2.840.99.1"


def test_the_search_keeps_the_patient_id_out_of_urls(coordinator_client, project, pacs):
    server, connection = pacs
    url = reverse("studies:pacs_search", args=[project.pk])
    # A search in the query string (an old bookmark, a crafted link) runs nothing.
    page = coordinator_client.get(url, {"connection": connection.pk, "patient_id": "MRN-77"})
    assert page.status_code == 200 and page.context["studies"] is None and server.requests == []
    # The form posts; the answer redirects to the plain page URL, which shows the results.
    assert 'method="post"' in page.content.decode()
    response = coordinator_client.post(url, {"connection": connection.pk, "patient_id": "MRN-77",
                                             "modality": "CT"})
    assert response.status_code == 302 and response.url == url
    page = coordinator_client.get(url)
    html = page.content.decode()
    assert [s.study_uid for s in page.context["studies"]] == ["1.2.840.99.1"]
    assert "<td>MRN-77</td>" in html  # shown to the coordinator (PHI, logged) ...
    assert "patient_id=" not in html  # ... but in no link, form action or next field
    assert "PatientID=MRN-77" in server.requests[0]["path"]  # the QIDO-RS query itself goes to the PACS
    (entry,) = AccessLog.objects.filter(project=project, action="pacs_search")
    assert "MRN-77" not in entry.detail
    # The link form on the results returns to the plain page.
    assert f'name="next" value="{url}"' in html
