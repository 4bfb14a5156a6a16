"""The attempt guard, in process: an attempt that was declared lost and retried while it ran can write
neither its progress nor its result (the fault suite shows the same with real worker processes)."""

import pytest

from studies import jobs
from studies.models import Job, JobState


@pytest.mark.parametrize("report_after", [False, True])
def test_superseded_attempt_writes_nothing(project, report_after):
    job = Job.objects.create(project=project, kind="test.superseded_while_running",
                             params={"report_after": report_after})
    job.params["job_pk"] = job.pk
    job.save(update_fields=["params"])

    assert jobs.execute(row_id=job.pk, attempt=0) is None
    job.refresh_from_db()
    # The retry's attempt 1 waits in the queue, untouched by attempt 0's progress or result.
    assert job.state == JobState.QUEUED and job.attempts == 1
    assert job.result is None and job.progress == 0.0 and job.message == "" and job.error == ""


def test_attempt_of_another_number_is_not_run(project):
    job = Job.objects.create(project=project, kind="test.sleep", params={"seconds": 0}, attempts=2)
    assert jobs.execute(row_id=job.pk, attempt=1) is None  # a stale copy of an older attempt's RQ job
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.started_at is None
    assert jobs.execute(row_id=job.pk, attempt=2) == {"slept": 0}
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.result == {"slept": 0}


def test_readable_error_hides_paths_and_internal_exceptions():
    assert jobs.readable_error(ValueError("cannot read /srv/bmdsite/var/storage/uploads/abc.zip: not a zip")) \
        == "cannot read abc.zip: not a zip."
    assert jobs.readable_error(ValueError("PACS http://pacs.example.org/dicom-web/studies answered 503")) \
        == "PACS http://pacs.example.org/dicom-web/studies answered 503."
    assert jobs.readable_error(KeyError("project_id")) == (
        "The job stopped on an internal error (KeyError); a project admin can see the details on this page.")


def test_retry_of_a_training_while_another_training_is_active_is_refused_not_500(project):
    # One active training per project is a database constraint (one_active_training_per_project): a retry
    # that would make a second one active must be a readable refusal, not an IntegrityError.
    from studies.models import TRAINING_JOB_KIND

    failed = Job.objects.create(project=project, kind=TRAINING_JOB_KIND, state=JobState.FAILED, error="x")
    Job.objects.create(project=project, kind=TRAINING_JOB_KIND, state=JobState.RUNNING)
    with pytest.raises(jobs.JobError, match="already queued or running"):
        jobs.retry(failed)
    failed.refresh_from_db()
    assert failed.state == JobState.FAILED and failed.attempts == 0
