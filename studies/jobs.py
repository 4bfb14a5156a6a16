"""Background jobs on RQ with a ``Job`` row the user can follow.

- ``submit`` creates the row and enqueues after the surrounding transaction commits, so a job created in a
  transaction that rolls back never runs.
- ``execute`` is what the RQ worker runs: it claims the row with a conditional update (queued -> running),
  calls the registered task and records the outcome.
- ``reconcile`` finds rows stuck in "running" whose RQ job failed or whose worker stopped sending heartbeats
  (a worker killed mid-job) and marks them failed with the reason; ``retry`` enqueues a failed job again.

Tasks register with ``@task("kind")`` in the apps' ``tasks.py``; they take keyword-only primitive arguments
and a ``progress`` callable.
"""

import datetime as dt
import importlib
import logging
import traceback

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import Job, JobState

log = logging.getLogger(__name__)

_TASKS = {}


class JobError(Exception):
    """A job could not be submitted or retried."""


def task(kind):
    """Register ``func`` as the implementation of jobs of this kind."""

    def register(func):
        _TASKS[kind] = func
        return func

    return register


def _task_for(kind):
    if kind not in _TASKS:
        # Imported lazily so the web process does not load task code (and its heavy imports) at start.
        for module in settings.JOB_TASK_MODULES:
            importlib.import_module(module)
    try:
        return _TASKS[kind]
    except KeyError:
        raise JobError(f"unknown job kind {kind!r}") from None


def get_queue(name="default"):
    import django_rq

    return django_rq.get_queue(name)


def submit(kind, *, project=None, user=None, queue="default", **params):
    """Create a job row and enqueue it once the current transaction commits."""
    _task_for(kind)
    job = Job.objects.create(kind=kind, project=project, created_by=user, queue=queue, params=params)
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id):
    job = Job.objects.get(pk=job_id)
    try:
        rq_job = get_queue(job.queue).enqueue(
            "studies.jobs.execute", row_id=job.pk, job_timeout=settings.RQ_QUEUES[job.queue]["DEFAULT_TIMEOUT"]
        )
    except Exception as exc:  # the queue is unreachable: say so on the row instead of leaving it queued
        log.exception("could not enqueue job %s", job_id)
        Job.objects.filter(pk=job_id).update(
            state=JobState.FAILED, error=f"could not reach the job queue: {exc}", finished_at=timezone.now()
        )
        return
    Job.objects.filter(pk=job_id).update(rq_job_id=rq_job.id)


def execute(*, row_id):
    """Run one job inside an RQ worker. Idempotent: a row that is not queued is left alone."""
    from rq import get_current_job

    job_id = row_id  # not "job_id", which RQ's enqueue reserves for its own id
    rq_job = get_current_job()
    claimed = Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        state=JobState.RUNNING,
        started_at=timezone.now(),
        finished_at=None,
        worker_name=(rq_job.worker_name or "") if rq_job else "",
        rq_job_id=rq_job.id if rq_job else "",
        error="",
        progress=0.0,
    )
    if not claimed:
        log.warning("job %s is not queued; not running it again", job_id)
        return None
    job = Job.objects.get(pk=job_id)
    func = _task_for(job.kind)

    def progress(fraction, message=""):
        Job.objects.filter(pk=job_id).update(progress=max(0.0, min(1.0, float(fraction))), message=message[:300])

    try:
        result = func(progress=progress, **job.params)
    except Exception as exc:
        Job.objects.filter(pk=job_id).update(
            state=JobState.FAILED,
            error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}",
            finished_at=timezone.now(),
        )
        raise
    Job.objects.filter(pk=job_id).update(
        state=JobState.SUCCEEDED, progress=1.0, result=result, finished_at=timezone.now()
    )
    return result


def reconcile(jobs=None):
    """Mark running jobs failed when their RQ job failed or their worker is gone. Returns the rows changed."""
    from redis.exceptions import RedisError
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob
    from rq.job import JobStatus
    from rq.worker import Worker

    jobs = Job.objects.filter(state=JobState.RUNNING) if jobs is None else jobs.filter(state=JobState.RUNNING)
    changed = []
    for job in jobs:
        try:
            connection = get_queue(job.queue).connection
            try:
                rq_job = RQJob.fetch(job.rq_job_id, connection=connection)
            except NoSuchJobError:
                rq_job = None
            reason = _lost_reason(job, rq_job, connection, Worker, JobStatus)
        except RedisError as exc:
            log.warning("cannot reach the job queue to check job %s: %s", job.pk, exc)
            return changed
        if reason and Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(
            state=JobState.FAILED, error=reason, finished_at=timezone.now()
        ):
            changed.append(job.pk)
    return changed


def _lost_reason(job, rq_job, connection, Worker, JobStatus):
    if rq_job is None:
        return "the job disappeared from the queue while running (worker or queue restarted)"
    status = rq_job.get_status(refresh=True)
    if status == JobStatus.FAILED:
        result = rq_job.latest_result()
        detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        return "the worker reported a failure: " + (detail[0] if detail else "no details")
    if status in (JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED):
        return f"the queue says the job is {status.value} but it never reported a result"
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name, connection=connection)
    lost_after = dt.timedelta(seconds=settings.JOB_LOST_AFTER_S)
    if worker is None:
        return f"worker {job.worker_name or '?'} is gone (killed or stopped while running the job)"
    if worker.last_heartbeat:
        last = worker.last_heartbeat
        silent = timezone.now() - (last if last.tzinfo else last.replace(tzinfo=dt.timezone.utc))
        if silent > lost_after:
            return f"worker {job.worker_name} stopped sending heartbeats {int(silent.total_seconds())} s ago"
    return None


def retry(job):
    """Enqueue a failed job again (after commit). Returns the job."""
    if job.state != JobState.FAILED:
        raise JobError(f"only failed jobs can be retried; job {job.pk} is {job.state}")
    updated = Job.objects.filter(pk=job.pk, state=JobState.FAILED).update(
        state=JobState.QUEUED, attempts=job.attempts + 1, error="", progress=0.0, message="", worker_name=""
    )
    if updated:
        transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job
