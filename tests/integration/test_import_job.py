"""A large QCT import confirmed on the page runs as a job in a real `manage.py rqworker`: all rows stored,
audited with the user who confirmed it, progress 1.0 and the counts as the job's result."""

from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import importers, jobs
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


def _storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def _pending_files(tmp_path):
    folder = tmp_path / importers.PENDING_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_failed_import_job_leaves_no_file_behind(rq_worker, member, project, tmp_path, settings):
    """The job fails in a real worker (the registry no longer matches the confirmed preview: the preview
    promised one updated exam); its uploaded file is gone, and a retry says to upload the file again."""
    _storage(settings, tmp_path)
    user = member("coordinator")
    name = importers.save_pending(project, (HEADER + "F00001,F,66,2022-05-03,chest,80,,,train\n").encode())
    assert _pending_files(tmp_path) == [name.split("/")[-1]]
    job = importers.submit_import_job(project, user, name, source="late.csv", expected={
        "rows": 1, "new_patients": 0, "new_exams": 0, "updated_exams": 1})
    rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)}).wait(timeout=300)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "the registry changed since the preview" in job.error
    assert not Exam.objects.filter(patient__project=project).exists()
    assert _pending_files(tmp_path) == []

    jobs.retry(job, user)
    rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)}).wait(timeout=300)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "upload it again" in job.error


def test_a_cancelled_import_job_leaves_no_file_behind(transactional_db, member, project, tmp_path, settings,
                                                      redis_url):
    _storage(settings, tmp_path)
    user = member("coordinator")
    name = importers.save_pending(project, (HEADER + "F00001,F,66,2022-05-03,chest,80,,,train\n").encode())
    job = importers.submit_import_job(project, user, name, source="cancelled.csv", expected={
        "rows": 1, "new_patients": 1, "new_exams": 1, "updated_exams": 0})
    assert _pending_files(tmp_path)
    jobs.cancel(job, user)
    assert job.state == JobState.CANCELLED
    assert _pending_files(tmp_path) == []


def test_the_reconciler_removes_kept_files_older_than_a_day(transactional_db, member, project, tmp_path, settings,
                                                            redis_url):
    """Files no job refers to go after a day (a preview never confirmed); a queued job's file stays however
    old it is; a new file stays."""
    import os
    import time

    _storage(settings, tmp_path)
    user = member("coordinator")
    data = (HEADER + "F00001,F,66,2022-05-03,chest,80,,,train\n").encode()
    orphan, fresh, queued = (importers.save_pending(project, data) for _ in range(3))
    two_days_ago = time.time() - 2 * 86400
    for name in (orphan, queued):
        os.utime(tmp_path / name, (two_days_ago, two_days_ago))
    Job.objects.create(kind="registry.import_qct", project=project, created_by=user, params={
        "project_id": project.pk, "pending": queued, "source": "q.csv", "expected": {}, "user_id": user.pk})
    jobs.reconcile(Job.objects.none())
    assert _pending_files(tmp_path) == sorted(n.split("/")[-1] for n in (fresh, queued))
