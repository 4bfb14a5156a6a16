"""Jobs on real Redis with a real `manage.py rqworker` process on the test database."""

import os
import signal

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
    assert "RuntimeError: this job always fails" in job.error


def test_killed_worker_leaves_job_failed_and_retry_succeeds(rq_worker, project):
    job = jobs.submit("test.sleep", project=project, seconds=30)
    worker = rq_worker()
    wait_for(lambda: state_of(job) == JobState.RUNNING, timeout=60, what="the job to start")
    # SIGKILL the whole process group (worker and its work horse): nothing gets a chance to clean up.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    # Reconciliation notices within JOB_LOST_AFTER_S (5 s in the tests) that the worker stopped heartbeating.
    wait_for(lambda: jobs.reconcile() or state_of(job) == JobState.FAILED, timeout=60,
             what="the lost job to be marked failed")
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "worker" in job.error and job.finished_at is not None

    job.params = {"seconds": 0}
    job.save(update_fields=["params"])
    jobs.retry(job)
    rq_worker(burst=True).wait(timeout=60)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
