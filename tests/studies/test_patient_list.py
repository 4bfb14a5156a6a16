"""The patient list: the page size shown is the one used, its filter fields have labels, and the exam save
message rounds QCT BMD as the list does."""

import re

from django.urls import reverse

from studies.models import Exam
from tests.factories import ExamFactory, PatientFactory, QCTResultFactory


def _rows(html):
    body = html.split('<tbody>', 1)[1].split('</tbody>', 1)[0]
    return body.count("<tr>")


def test_page_size_shown_is_the_page_size_used(coordinator_client, project):
    for i in range(60):
        QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym=f"L{i:03d}")))
    url = reverse("studies:patient_list", args=[project.pk])
    html = coordinator_client.get(url).content.decode()
    # No choice made: 50 rows, and the page-size menu says 50 (it said 25, its first choice, over 50 rows).
    assert _rows(html) == 50
    assert re.search(r'<option value="50" selected>', html)
    assert not re.search(r'<option value="25" selected>', html)
    html = coordinator_client.get(url, {"per_page": "25"}).content.decode()
    assert _rows(html) == 25 and re.search(r'<option value="25" selected>', html)
    # The pager keeps the page size.
    assert "?per_page=25&page=2" in html


def test_filter_fields_have_labels(coordinator_client, project):
    html = coordinator_client.get(reverse("studies:patient_list", args=[project.pk])).content.decode()
    form = html.split('<form method="get" class="filters">', 1)[1].split("</form>", 1)[0]
    for name in ("q", "category", "split", "excluded", "region", "per_page"):
        assert re.search(rf'<label for="id_{name}">[^<]+<(input|select)[^>]*id="id_{name}"', form), name


def test_save_message_rounds_like_the_table(coordinator_client, project):
    patient = PatientFactory(project=project, pseudonym="R1")
    url = reverse("studies:exam_add", args=[project.pk, patient.pk])
    # 93.25 is exact in binary: Python's :.1f rounds it half to even (93.2); the table's floatformat, half
    # up (93.3). The message and the table must agree.
    response = coordinator_client.post(url, {"exam-exam_date": "2022-05-03", "exam-age_at_exam": "66",
                                             "exam-region": "chest", "qct-bmd_l1": "93.25"}, follow=True)
    assert "QCT BMD 93.3 mg/cm3, osteopenia." in response.content.decode()
    table = coordinator_client.get(reverse("studies:patient_list", args=[project.pk])).content.decode()
    assert '<td class="num">93.3</td>' in table
    assert Exam.objects.get(patient=patient).qct.qct_bmd == 93.25
