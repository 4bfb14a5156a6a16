"""Jobs on real Redis with a real `manage.py rqworker` process on the test database (the fault suite is in
test_job_faults.py)."""

from django.db import transaction

from studies import jobs
from studies.models import Job, JobState
from tests.conftest import wait_for


def state_of(job):
    job.refresh_from_db()
    return job.state


def test_job_runs_in_worker_and_records_result(rq_worker, project):
    job = jobs.submit("test.sleep", project=project, seconds=0)
    rq_worker(burst=True).wait(timeout=60)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"slept": 0}
    assert job.progress == 1.0 and job.started_at and job.finished_at


def test_job_enqueued_in_rolled_back_transaction_never_runs(rq_worker, project):
    class Abort(Exception):
        pass

    try:
        with transaction.atomic():
            jobs.submit("test.sleep", project=project, seconds=0)
            raise Abort
    except Abort:
        pass
    assert not Job.objects.exists()
    assert len(jobs.get_queue()) == 0  # nothing reached Redis either
    rq_worker(burst=True).wait(timeout=60)
    assert not Job.objects.exists()


def test_failing_job_is_marked_failed_with_reason(rq_worker, project):
    job = jobs.submit("test.fail", project=project)
    rq_worker(burst=True).wait(timeout=60)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    # Members read one sentence without code or paths; admins get the traceback.
    assert job.error == ("The job stopped on an internal error (RuntimeError); a project admin can see the "
                         "details on this page.")
    assert "RuntimeError: this job always fails" in job.traceback
    assert 'job_tasks.py", line' in job.traceback
