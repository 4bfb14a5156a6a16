"""A large QCT import confirmed on the page runs as a job in a real `manage.py rqworker`: all rows stored,
audited with the user who confirmed it, progress 1.0 and the counts as the job's result."""

from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import importers
from studies.models import Exam, Job, JobState, QCTResult

HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split\n"


def test_large_import_runs_as_a_job_in_a_worker(rq_worker, client, member, project, tmp_path, settings):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    user = member("coordinator")
    client.force_login(user)
    n = importers.INLINE_MAX_ROWS + 1
    rows = "".join(f"J{i:05d},{'FM'[i % 2]},66,2022-05-03,chest,{60 + i % 100},,,train\n" for i in range(n))
    url = reverse("studies:import_csv", args=[project.pk])
    client.post(url, {"file": SimpleUploadedFile("big.csv", (HEADER + rows).encode(), content_type="text/csv")})
    response = client.post(url, {"confirm": "1"})
    job = Job.objects.get(kind="registry.import_qct")
    assert response["Location"] == job.get_absolute_url()
    pending = job.params["pending"]
    assert (tmp_path / pending).is_file()
    rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)}).wait(timeout=300)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.progress == 1.0
    assert job.result == {"rows": n, "new_patients": n, "new_exams": n, "updated_exams": 0}
    assert Exam.objects.filter(patient__project=project).count() == n
    # Values of row i: BMD 60 + i % 100 (from the rows above); J00099 -> 159.
    assert QCTResult.objects.get(exam__patient__pseudonym="J00099").bmd_l1 == 159.0
    assert LogEntry.objects.filter(actor=user, action=LogEntry.Action.CREATE).count() == 4 * n
    assert not (tmp_path / pending).exists()  # the kept upload is removed once imported
    page = client.get(job.get_absolute_url()).content.decode()
    assert "succeeded" in page
