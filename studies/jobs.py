"""Background jobs on RQ with a ``Job`` row the user can follow.

- ``submit`` creates the row and enqueues after the surrounding transaction commits, so a job created in a
  transaction that rolls back never runs.
- ``execute`` is what the RQ worker runs for one *attempt* of a job: it claims the row with a conditional
  update (queued -> running, for that attempt), calls the registered task and records the outcome. The
  task runs as the user who started the attempt (who retried it, else who submitted the job): every audit
  entry it writes names them.
- ``retry`` starts a new attempt (attempts + 1); ``cancel`` ends the current one. Every write an attempt makes to its row (claim,
  progress, result, failure) and every write of the reconciler is a conditional update on (id, attempt,
  state), so an attempt that was cancelled, retried or declared lost can never write again: its next
  progress report raises :class:`JobSuperseded`, which stops the task, and its result is discarded.
- ``reconcile`` compares queued and running rows with Redis. A queued row whose RQ job Redis no longer has
  (Redis restarted empty, or the enqueue never arrived) is enqueued again, for the same attempt: it never
  started, so running it once now is what the user asked for, and the claim makes a second copy a no-op.
  A running row whose RQ job failed, or whose worker is gone or silent for ``JOB_LOST_AFTER_S``, is marked
  failed with the reason and can be retried.

Tasks register with ``@task("kind")`` in the apps' ``tasks.py``; they take keyword-only primitive arguments
and a ``progress`` callable. ``@on_end("kind")`` registers what to do once an attempt of that kind has ended,
whatever the end (succeeded, failed, cancelled, declared lost, superseded): removing files the job was given,
say. ``@housekeeping`` registers a function the reconciler runs each time (removing what such ends missed). Who may start, retry, cancel or inspect a kind is in ``studies.job_kinds``.
"""

import datetime as dt
import importlib
import logging
import re
import traceback

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from .audit import acting_as
from .job_kinds import kind_of, may_act, may_start
from .models import Job, JobState

log = logging.getLogger(__name__)

_TASKS = {}
_ENDINGS = {}
_HOUSEKEEPING = []

# RQ job states in which the job is still on its way to a worker or running there.
_LIVE_RQ_STATES = ("queued", "started", "deferred", "scheduled")


# Sent in the worker once a job's success is recorded (``job``: the Job row). Receivers act on what the job
# produced (the review puts a re-segmented case back into its queue); a receiver's error is logged, the job
# stays succeeded.
job_succeeded = Signal()


class JobError(Exception):
    """A job could not be submitted, retried or cancelled."""


class JobSuperseded(Exception):
    """This attempt of the job was cancelled, retried or declared lost: it must stop without writing."""


def task(kind):
    """Register ``func`` as the implementation of jobs of this kind."""

    def register(func):
        _TASKS[kind] = func
        return func

    return register


def on_end(kind):
    """Register ``func(job)``, called once an attempt of a job of this kind has ended: after its result or
    failure is written, when it is cancelled, declared lost or could not be enqueued, and when a superseded
    attempt stops. It must be idempotent (a cancelled attempt that stops later calls it again)."""

    def register(func):
        _ENDINGS[kind] = func
        return func

    return register


def housekeeping(func):
    """Register ``func()`` to run at each ``reconcile``."""
    _HOUSEKEEPING.append(func)
    return func


def _load_tasks():
    # Imported lazily so the web process does not load task code (and its heavy imports) at start.
    for module in settings.JOB_TASK_MODULES:
        importlib.import_module(module)


def _ended(job):
    """Run the end hook of ``job``'s kind; a failing hook is logged, never raised into the job's outcome."""
    if job.kind not in _TASKS:
        _load_tasks()
    hook = _ENDINGS.get(job.kind)
    if hook is None:
        return
    try:
        hook(job)
    except Exception:  # noqa: BLE001 - the job's state is written already; housekeeping catches up later
        log.exception("end hook of job %s (%s) failed", job.pk, job.kind)


def _task_for(kind):
    if kind not in _TASKS:
        _load_tasks()
    try:
        return _TASKS[kind]
    except KeyError:
        raise JobError(f"unknown job kind {kind!r}") from None


def get_queue(name="default"):
    import django_rq

    return django_rq.get_queue(name)


def _attempt(job_id, attempt, *states):
    """The row of this attempt of the job, if it is still in one of ``states``: the guard of every write."""
    return Job.objects.filter(pk=job_id, attempts=attempt, state__in=states)


def submit(kind, *, project=None, user=None, queue="default", **params):
    """Create a job row and enqueue it once the current transaction commits.

    Raises ``PermissionDenied`` when ``user`` is given and their role may not start this kind of job.
    """
    _task_for(kind)
    if user is not None and not may_start(user, kind, project):
        raise PermissionDenied(f"Your role does not allow starting {kind_of(kind).label.lower()}.")
    job = Job.objects.create(kind=kind, project=project, created_by=user, queue=queue, params=params,
                             queued_at=timezone.now())
    attempt = job.attempts
    transaction.on_commit(lambda: _enqueue(job.pk, attempt))
    return job


def _enqueue(job_id, attempt):
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return
    try:
        rq_job = get_queue(job.queue).enqueue(
            "studies.jobs.execute", row_id=job.pk, attempt=attempt,
            job_timeout=settings.RQ_QUEUES[job.queue]["DEFAULT_TIMEOUT"],
        )
    except Exception as exc:  # the queue is unreachable: say so on the row instead of leaving it queued
        log.exception("could not enqueue job %s", job_id)
        if _attempt(job_id, attempt, JobState.QUEUED).update(
            state=JobState.FAILED, error=f"The job queue could not be reached ({type(exc).__name__}); retry later.",
            finished_at=timezone.now(),
        ):
            _ended(job)
        return
    _attempt(job_id, attempt, JobState.QUEUED).update(rq_job_id=rq_job.id)


def execute(*, row_id, attempt=None):
    """Run one attempt of a job inside an RQ worker.

    Idempotent: a row that is not queued for this attempt is left alone, and once the attempt is superseded
    (cancelled, retried or declared lost) nothing it does reaches the row.
    """
    from rq import get_current_job

    job_id = row_id  # not "job_id", which RQ's enqueue reserves for its own id
    if attempt is None:  # enqueued before attempts were passed along: the row's current attempt
        attempt = Job.objects.filter(pk=job_id).values_list("attempts", flat=True).first()
    rq_job = get_current_job()
    claimed = _attempt(job_id, attempt, JobState.QUEUED).update(
        state=JobState.RUNNING,
        started_at=timezone.now(),
        finished_at=None,
        worker_name=(rq_job.worker_name or "") if rq_job else "",
        rq_job_id=rq_job.id if rq_job else "",
        error="",
        traceback="",
        progress=0.0,
    )
    if not claimed:
        log.warning("job %s attempt %s is not queued; not running it", job_id, attempt)
        return None
    job = Job.objects.select_related("created_by", "retried_by").get(pk=job_id)
    func = _task_for(job.kind)

    def progress(fraction, message=""):
        written = _attempt(job_id, attempt, JobState.RUNNING).update(
            progress=max(0.0, min(1.0, float(fraction))), message=message[:300])
        if not written:
            raise JobSuperseded(f"job {job_id} attempt {attempt} was superseded")

    # Every audit entry the task, its success receivers and its end hook write names the user who started this
    # attempt: who retried it, else who submitted the job (none for a system job, or once their account is
    # deleted): the worker has no request to say it.
    with acting_as(job.retried_by or job.created_by):
        try:
            try:
                result = func(progress=progress, **job.params)
            except JobSuperseded:
                log.warning("job %s attempt %s was superseded; stopped", job_id, attempt)
                return None
            except Exception as exc:
                _attempt(job_id, attempt, JobState.RUNNING).update(
                    state=JobState.FAILED, error=readable_error(exc), traceback=traceback.format_exc(),
                    finished_at=timezone.now(),
                )
                raise
            if not _attempt(job_id, attempt, JobState.RUNNING).update(
                state=JobState.SUCCEEDED, progress=1.0, result=result, finished_at=timezone.now()
            ):
                log.warning("job %s attempt %s was superseded; its result is discarded", job_id, attempt)
                return None
            for receiver, error in job_succeeded.send_robust(sender=Job, job=Job.objects.get(pk=job_id)):
                if error is not None:
                    log.error("job %s: %s failed after the job succeeded: %r", job_id, receiver, error)
            return result
        finally:
            _ended(job)


# Absolute file system paths (not URLs): shown to members by their last part only.
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.~-]+/)+([\w.~-]+)")


def readable_error(exc):
    """One sentence a project member can read for a job's failure: no traceback, no server paths.

    Errors raised on purpose by this project (``ValueError`` and the exception classes of ``studies`` and
    ``analysis``) carry a message written for users; anything else is a bug or an environment problem,
    named by its class only (the traceback is kept for admins).
    """
    ours = type(exc).__module__.split(".")[0] in ("studies", "analysis")
    if (ours or isinstance(exc, ValueError)) and str(exc).strip():
        text = " ".join(str(exc).split())
        text = _PATH.sub(r"\1", text)
        if len(text) > 1000:
            text = text[:997] + "..."
        return text if text.endswith((".", "!", "?")) else text + "."
    return (f"The job stopped on an internal error ({type(exc).__name__}); a project admin can see the details "
            "on this page.")


def reconcile(jobs=None):
    """Compare queued and running rows with Redis; returns the ids of the rows changed.

    Queued rows that Redis lost are enqueued again (same attempt); running rows whose RQ job failed or
    whose worker is gone or silent are marked failed. Nothing happens to them while Redis is unreachable.
    Then the registered housekeeping runs (see ``housekeeping``).
    """
    from redis.exceptions import RedisError
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob
    from rq.worker import Worker

    jobs = Job.objects.all() if jobs is None else jobs
    changed = []
    lost_after = dt.timedelta(seconds=settings.JOB_LOST_AFTER_S)
    try:
        for job in jobs.filter(state__in=(JobState.QUEUED, JobState.RUNNING)):
            connection = get_queue(job.queue).connection
            try:
                rq_job = RQJob.fetch(job.rq_job_id, connection=connection) if job.rq_job_id else None
            except NoSuchJobError:
                rq_job = None
            if job.state == JobState.QUEUED:
                if _requeue_if_lost(job, rq_job, lost_after):
                    changed.append(job.pk)
                continue
            reason = _lost_reason(job, rq_job, connection, Worker, lost_after)
            if reason and _attempt(job.pk, job.attempts, JobState.RUNNING).update(
                state=JobState.FAILED, error=reason, finished_at=timezone.now()
            ):
                changed.append(job.pk)
                transaction.on_commit(lambda job=job: _ended(job))
    except RedisError as exc:
        log.warning("cannot reach the job queue to reconcile jobs: %s", exc)
    _load_tasks()
    for func in _HOUSEKEEPING:
        try:
            func()
        except Exception:  # noqa: BLE001 - housekeeping must not stop reconciling (or the page calling it)
            log.exception("housekeeping %s failed", func.__name__)
    return changed


def _requeue_if_lost(job, rq_job, lost_after):
    if rq_job is not None and getattr(rq_job.get_status(refresh=True), "value", None) in _LIVE_RQ_STATES:
        return False
    if rq_job is None and not job.rq_job_id and (job.queued_at or job.created_at) > timezone.now() - lost_after:
        return False  # just submitted: its enqueue runs when the submitting transaction commits
    # The conditional update on the RQ id makes concurrent reconcilers enqueue it once.
    if not _attempt(job.pk, job.attempts, JobState.QUEUED).filter(rq_job_id=job.rq_job_id).update(
        rq_job_id="", queued_at=timezone.now(), message="enqueued again: the job queue had lost it"
    ):
        return False
    log.warning("job %s was lost by the queue; enqueuing attempt %s again", job.pk, job.attempts)
    _enqueue(job.pk, job.attempts)
    return True


def _lost_reason(job, rq_job, connection, Worker, lost_after):
    if rq_job is not None:
        status = getattr(rq_job.get_status(refresh=True), "value", None)
        if status == "failed":
            result = rq_job.latest_result()
            detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
            detail = _PATH.sub(r"\1", detail[0]) if detail else "no details"
            return f"The worker reported a failure ({detail})."
        if status in ("finished", "stopped", "canceled"):
            return f"The job queue says the job is {status} but it never reported a result."
    # The RQ job may be missing because Redis restarted while the job ran; the worker decides then.
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name, connection=connection)
    if worker is None:
        if rq_job is None:
            return ("The job and its worker disappeared from the job queue while it ran (the queue or the "
                    "worker was restarted); retry it.")
        return "The worker running this job stopped (killed or restarted) before it finished; retry it."
    if worker.last_heartbeat:
        last = worker.last_heartbeat
        silent = timezone.now() - (last if last.tzinfo else last.replace(tzinfo=dt.timezone.utc))
        if silent > lost_after:
            return (f"The worker running this job stopped answering {int(silent.total_seconds())} s ago "
                    "(killed or stuck); retry it.")
    return None


def _check_may_act(job, user):
    if user is not None and not may_act(user, job):
        raise PermissionDenied(f"Your role does not allow this on {kind_of(job.kind).label.lower()} jobs.")


def retry(job, user=None):
    """Enqueue a failed or cancelled job again as a new attempt (after commit). Returns the job.

    Raises ``PermissionDenied`` when ``user`` is given and may not act on this kind of job, ``JobError``
    when the job is not failed or cancelled (a second click on "Retry" finds it queued already).
    """
    _check_may_act(job, user)
    attempt = job.attempts
    try:
        # A savepoint: a kind that allows one active job per project (training) refuses the update by a
        # database constraint while another of its jobs is queued or running.
        with transaction.atomic():
            updated = _attempt(job.pk, attempt, JobState.FAILED, JobState.CANCELLED).update(
                state=JobState.QUEUED, attempts=attempt + 1, error="", traceback="", progress=0.0, message="",
                worker_name="", rq_job_id="", result=None, started_at=None, finished_at=None,
                queued_at=timezone.now(), retried_by=user,
            )
    except IntegrityError:
        raise JobError("Another job of this kind is already queued or running in this project; "
                       "retry this one when it has finished.") from None
    job.refresh_from_db()
    if not updated:
        raise JobError(f"Only failed or cancelled jobs can be retried; this job is {job.get_state_display().lower()}.")
    transaction.on_commit(lambda: _enqueue(job.pk, attempt + 1))
    return job


def cancel(job, user=None):
    """Cancel a queued or running job: its attempt is superseded (it stops at its next progress report and
    can write nothing), its RQ job is cancelled or its work horse stopped. Returns the job.

    Raises ``PermissionDenied`` when ``user`` may not act on this kind of job, ``JobError`` when it has
    finished already.
    """
    from redis.exceptions import RedisError

    _check_may_act(job, user)
    attempt, rq_job_id = job.attempts, job.rq_job_id
    who = f" by {user.get_username()}" if user is not None else ""
    updated = _attempt(job.pk, attempt, JobState.QUEUED, JobState.RUNNING).update(
        state=JobState.CANCELLED, error=f"Cancelled{who}.", finished_at=timezone.now(),
    )
    job.refresh_from_db()
    if not updated:
        raise JobError(f"Only queued or running jobs can be cancelled; this job is "
                       f"{job.get_state_display().lower()}.")
    transaction.on_commit(lambda: _ended(job))
    if rq_job_id:
        try:
            _stop_rq_job(job.queue, rq_job_id)
        except RedisError as exc:  # the row is cancelled already; the attempt cannot write any more
            log.warning("could not stop RQ job %s of job %s: %s", rq_job_id, job.pk, exc)
    return job


def _stop_rq_job(queue, rq_job_id):
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job as RQJob

    connection = get_queue(queue).connection
    try:
        rq_job = RQJob.fetch(rq_job_id, connection=connection)
    except NoSuchJobError:
        return
    try:
        if rq_job.get_status() == "started":
            send_stop_job_command(connection, rq_job_id)
        else:
            rq_job.cancel()
    except InvalidJobOperation:
        pass


def queue_health(visible_jobs=None):
    """Per queue: live workers and pending jobs, for the jobs page.

    Returns ``(rows, error)``: rows ``{"queue", "workers", "pending", "warning"}`` for every configured queue
    (``pending`` counts queued and running rows of ``visible_jobs``); ``error`` is a sentence when Redis
    cannot be reached (rows are then empty). A worker counts as live while it heartbeats within
    ``JOB_LOST_AFTER_S`` (its registration expires later than that).
    """
    from django.db.models import Count
    from redis.exceptions import RedisError
    from rq.worker import Worker

    jobs = Job.objects.all() if visible_jobs is None else visible_jobs
    pending = dict(jobs.filter(state__in=(JobState.QUEUED, JobState.RUNNING)).values_list("queue")
                   .annotate(n=Count("pk")).order_by())
    lost_after = dt.timedelta(seconds=settings.JOB_LOST_AFTER_S)
    rows = []
    try:
        for name in settings.RQ_QUEUES:
            queue = get_queue(name)
            live = []
            for worker in Worker.all(queue=queue):
                last = worker.last_heartbeat
                if last is not None:
                    last = last if last.tzinfo else last.replace(tzinfo=dt.timezone.utc)
                    if timezone.now() - last > lost_after:
                        continue
                live.append(worker.name)
            n_pending = pending.get(name, 0)
            warning = ""
            if n_pending and not live:
                warning = (f"No worker is listening on the {name!r} queue: its {n_pending} pending job(s) wait "
                           f"until one starts (manage.py rqworker {name}).")
            rows.append({"queue": name, "workers": sorted(live), "pending": n_pending, "warning": warning})
    except RedisError as exc:
        return [], f"The job queue cannot be reached ({type(exc).__name__}); jobs wait until it is back."
    return rows, ""
