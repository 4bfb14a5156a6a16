"""The import page: preview with every row's errors, a confirmed small file imported in the request, a large
one handed to a job; bad files (NUL bytes, semicolons) answered with the reason, never a 500."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import importers
from studies.models import Job, Patient, QCTResult

HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split\n"


def upload(client, project, text, name="qct.csv"):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return client.post(reverse("studies:import_csv", args=[project.pk]),
                       {"file": SimpleUploadedFile(name, data, content_type="text/csv")})


def confirm(client, project):
    return client.post(reverse("studies:import_csv", args=[project.pk]), {"confirm": "1"})


def test_nul_byte_is_a_row_error_not_a_500(coordinator_client, project):
    response = upload(coordinator_client, project, HEADER + "P0\x0001,F,66,2022-05-03,chest,95,,,train\n")
    assert response.status_code == 200
    assert "line 2: patient_id: control character not allowed (U+0000)" in response.content.decode()
    assert "confirm-import" not in response.content.decode()
    assert Patient.objects.count() == 0


def test_semicolon_file_gets_the_hint_on_the_page(coordinator_client, project):
    response = upload(coordinator_client, project, HEADER.replace(",", ";") + "P1;F;66;2022-05-03;chest;95;;;\n")
    assert "the file looks semicolon-separated; save it as comma-separated (UTF-8) CSV" in \
        response.content.decode()


def test_small_file_is_imported_in_the_request(coordinator_client, project):
    response = upload(coordinator_client, project, HEADER + "P1,F,66,2022-05-03,chest,95,,,train\n")
    assert "1 row(s) are valid: 1 new patient(s)" in response.content.decode()
    response = confirm(coordinator_client, project)
    assert response.status_code == 302 and response["Location"] == reverse("studies:patient_list",
                                                                          args=[project.pk])
    assert QCTResult.objects.get(exam__patient__pseudonym="P1").bmd_l1 == 95.0
    assert not Job.objects.exists()


def test_registry_changed_since_the_preview_is_refused_whole(coordinator_client, project):
    from tests.factories import ExamFactory, PatientFactory, QCTResultFactory

    QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="P1")))
    text = HEADER + "P1,F,66,2022-06-01,chest,95,,,\nP2,F,66,2022-05-03,chest,96,,,\n"
    assert "1 new patient(s), 1 new exam(s), 1 updated exam(s)" in \
        upload(coordinator_client, project, text).content.decode()
    Patient.objects.get(pseudonym="P1").delete()  # someone deletes P1 before the import is confirmed
    response = confirm(coordinator_client, project)
    assert response.status_code == 200
    assert ("the registry changed since the preview (1 new patient(s), 1 new exam(s), 1 updated exam(s) then, "
            "2 new patient(s), 2 new exam(s), 0 updated exam(s) now") in response.content.decode()
    assert Patient.objects.count() == 0


def test_large_file_becomes_a_job(coordinator_client, project, django_capture_on_commit_callbacks):
    rows = "".join(f"P{i:05d},F,66,2022-05-03,chest,95,,,train\n" for i in range(importers.INLINE_MAX_ROWS + 1))
    upload(coordinator_client, project, HEADER + rows)
    with django_capture_on_commit_callbacks() as callbacks:
        response = confirm(coordinator_client, project)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert job.kind == "registry.import_qct" and job.project == project
    assert job.params["expected"] == {"rows": importers.INLINE_MAX_ROWS + 1,
                                      "new_patients": importers.INLINE_MAX_ROWS + 1,
                                      "new_exams": importers.INLINE_MAX_ROWS + 1, "updated_exams": 0}
    assert len(callbacks) == 1  # enqueued once the transaction commits
    assert Patient.objects.count() == 0  # nothing stored in the request


def test_job_page_of_a_finished_import_shows_its_result_not_the_running_message(
        coordinator_client, project, django_capture_on_commit_callbacks):
    """The job finishes before its page is opened (a fast worker): the page says what was imported (the rows
    of the file: 2 new patients, P00000 with 2 exams), not that it is importing."""
    from studies import jobs
    from studies.models import JobState

    n = importers.INLINE_MAX_ROWS + 1
    rows = "".join(f"P{i:05d},F,66,2022-05-03,chest,95,,,train\n" for i in range(n - 1))
    upload(coordinator_client, project, HEADER + rows + "P00000,F,67,2023-05-03,chest,93,,,train\n")
    with django_capture_on_commit_callbacks():
        response = confirm(coordinator_client, project)
    job = Job.objects.get()
    jobs.execute(row_id=job.pk, attempt=job.attempts)  # what the worker runs
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    for url in (response["Location"], job.get_absolute_url() + "?partial=1"):
        page = coordinator_client.get(url).content.decode()
        assert "Importing" not in page and "all rows or none" not in page
        assert (f"Imported {n} row(s) from qct.csv: {n - 1} new patient(s), {n} new exam(s), 0 exam(s) updated."
                in page)
    # While an import waits (just submitted: not enqueued until its transaction commits) or runs, its page
    # and the fragment it refreshes say what it does.
    from django.utils import timezone

    Job.objects.filter(pk=job.pk).update(state=JobState.QUEUED, result=None, rq_job_id="", queued_at=timezone.now())
    for url in (job.get_absolute_url(), job.get_absolute_url() + "?partial=1"):
        assert f"Importing {n} row(s) from qct.csv; all rows or none." in coordinator_client.get(url).content.decode()
