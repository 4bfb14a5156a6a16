"""Audit entries written by a job in the worker name the user who submitted it (a real `manage.py rqworker`).

The worker has no request, so django-auditlog knows no actor there unless the job runner names one: every
change a job makes (a QCT value, a case, a measurement run) must still say who caused it.
"""

from auditlog.models import LogEntry

from studies import jobs
from studies.models import JobState
from tests.factories import QCTResultFactory, UserFactory

WAIT_S = 180  # the jobs take well under a second; generous for a loaded CI machine


def _updates(qct):
    return LogEntry.objects.get_for_object(qct).filter(action=LogEntry.Action.UPDATE).order_by("timestamp", "pk")


def test_a_jobs_audit_entries_name_the_user_who_submitted_it(rq_worker, project, member):
    coordinator, other = member("coordinator"), UserFactory()
    qct = QCTResultFactory(exam__patient__project=project, bmd_l1=100.0)
    job = jobs.submit("test.edit_qct", project=project, user=coordinator, qct_id=qct.pk, bmd=70.0,
                      other_user_id=other.pk)

    worker = rq_worker(burst=True)
    worker.wait(timeout=WAIT_S)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error or worker.output()
    entries = list(_updates(qct))
    assert [e.changes_dict["bmd_l1"][1] for e in entries] == ["70.0", "71.0", "72.0"]
    # The job's writes name its user; a block inside the task naming another user names them, and only them.
    assert [e.actor for e in entries] == [coordinator, other, coordinator]
    assert [e.additional_data["actor"] for e in entries] == [coordinator.username, other.username,
                                                             coordinator.username]


def test_a_job_whose_user_was_deleted_or_a_system_job_writes_without_an_actor(rq_worker, project, member):
    gone = member("coordinator")
    qct = QCTResultFactory(exam__patient__project=project, bmd_l1=100.0)
    of_deleted_user = jobs.submit("test.edit_qct", project=project, user=gone, qct_id=qct.pk, bmd=70.0)
    system = jobs.submit("test.edit_qct", project=project, qct_id=qct.pk, bmd=90.0)
    gone.delete()  # the job row stays, without its user (on_delete=SET_NULL)

    worker = rq_worker(burst=True)
    worker.wait(timeout=WAIT_S)
    for job in (of_deleted_user, system):
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job.error or worker.output()
    entries = list(_updates(qct))
    assert [e.changes_dict["bmd_l1"][1] for e in entries] == ["70.0", "90.0"]
    assert [(e.actor_id, "actor" in e.additional_data) for e in entries] == [(None, False), (None, False)]


def test_a_retried_job_names_who_retried_it(rq_worker, project, member):
    submitter, retrier = member("coordinator"), member("admin")
    qct = QCTResultFactory(exam__patient__project=project, bmd_l1=100.0)
    job = jobs.submit("test.edit_qct", project=project, user=submitter, qct_id=qct.pk, bmd=70.0)
    jobs.cancel(job)  # before a worker took it
    jobs.retry(job, user=retrier)

    worker = rq_worker(burst=True)
    worker.wait(timeout=WAIT_S)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 1, job.error or worker.output()
    assert (job.created_by, job.retried_by) == (submitter, retrier)
    assert [(e.changes_dict["bmd_l1"][1], e.actor) for e in _updates(qct)] == [("70.0", retrier)]
