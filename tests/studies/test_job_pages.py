"""Job pages and actions: who may retry, cancel and see details (the role that starting the kind needs), what
members read (one sentence, no traceback or server paths), and how parameters and results read."""

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from studies import jobs
from studies.models import Job, JobState, Membership
from tests.factories import UserFactory

TRACEBACK = ('Traceback (most recent call last):\n  File "/srv/bmdsite/analysis/modeling/versions.py", line 212, '
             'in train_cohort\nValueError: exams have measurement runs of several sources (bmdsite, synthetic); '
             'choose one')
SENTENCE = "exams have measurement runs of several sources (bmdsite, synthetic); choose one."


def login(client, project, role):
    user = UserFactory()
    Membership.objects.create(project=project, user=user, role=role)
    client.force_login(user)
    return user


def failed(project, kind="analysis.train_grid", **params):
    job = Job.objects.create(project=project, kind=kind, state=JobState.FAILED, error=SENTENCE,
                             params=params or {"project_id": project.pk, "seed": 0})
    Job.objects.filter(pk=job.pk).update(traceback=TRACEBACK)
    return job


def post(client, name, job):
    return client.post(reverse(f"studies:{name}", args=[job.pk]))


def test_annotator_can_neither_retry_nor_cancel_training(client, project):
    job = Job.objects.create(project=project, kind="analysis.train_grid", state=JobState.FAILED, error=SENTENCE,
                             params={"project_id": project.pk})
    login(client, project, "annotator")
    assert post(client, "job_retry", job).status_code == 403
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.attempts == 0
    queued = Job.objects.create(project=project, kind="analysis.train_grid", params={"project_id": project.pk})
    response = client.post(f"/jobs/{queued.pk}/cancel/")
    assert response.status_code == 403
    queued.refresh_from_db()
    assert queued.state == JobState.QUEUED


def test_retry_needs_the_role_that_starts_the_kind(client, project):
    training, recategorize = failed(project), failed(project, kind="registry.recategorize", project_id=project.pk)
    login(client, project, "coordinator")  # edits the registry, does not launch training
    assert post(client, "job_retry", training).status_code == 403
    assert post(client, "job_retry", recategorize).status_code == 302
    recategorize.refresh_from_db()
    assert recategorize.state == JobState.QUEUED and recategorize.attempts == 1
    login(client, project, "pi")
    assert post(client, "job_retry", training).status_code == 302
    training.refresh_from_db()
    assert training.state == JobState.QUEUED and training.attempts == 1
    # A second click finds it queued: nothing is enqueued twice.
    with pytest.raises(jobs.JobError):
        jobs.retry(training)
    training.refresh_from_db()
    assert training.attempts == 1


def test_cancel_by_an_allowed_role_ends_the_attempt(client, project):
    job = Job.objects.create(project=project, kind="registry.recategorize", params={"project_id": project.pk})
    user = login(client, project, "coordinator")
    assert post(client, "job_cancel", job).status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and job.error == f"Cancelled by {user.username}."
    assert post(client, "job_retry", job).status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.attempts == 1 and job.error == ""


def test_submitting_needs_the_role_of_the_kind(project, member):
    with pytest.raises(PermissionDenied):
        jobs.submit("analysis.train_grid", project=project, user=member("annotator"), project_id=project.pk)
    assert not Job.objects.exists()


def test_members_read_one_sentence_admins_the_traceback(client, project):
    job = failed(project)
    login(client, project, "annotator")
    page = client.get(job.get_absolute_url()).content.decode()
    assert SENTENCE in page
    assert "Traceback" not in page and "/srv/bmdsite" not in page and "versions.py" not in page
    assert "Train the model grid" in page and "analysis.train_grid" not in page
    # The project bar of every project page: the project's link and its Patients and Models links.
    assert f'href="{project.get_absolute_url()}"' in page
    assert f'href="{reverse("studies:patient_list", args=[project.pk])}"' in page
    assert "Retry" not in page and 'id="job-parameters"' not in page  # details need the starting role

    login(client, project, "pi")
    page = client.get(job.get_absolute_url()).content.decode()
    assert "Retry" in page and "Traceback" not in page  # a PI may retry training; tracebacks are for admins

    login(client, project, "admin")
    page = client.get(job.get_absolute_url()).content.decode()
    assert "Traceback (most recent call last)" in page and "Retry" in page


def test_parameters_and_results_are_tables_linking_to_what_the_job_made(client, project):
    job = Job.objects.create(
        project=project, kind="analysis.train_grid", state=JobState.SUCCEEDED, progress=1.0,
        params={"project_id": project.pk, "cohort_name": "main", "seed": 3, "user_id": 1},
        result={"model_versions": [11, 12], "fit_seconds": 1.25, "eval_seconds": 0.5,
                "excluded": {"abdomen": 2}})
    login(client, project, "pi")
    page = client.get(job.get_absolute_url()).content.decode()
    assert '<th scope="row">Cohort</th><td>main</td>' in page
    assert '<th scope="row">Random seed</th><td>3</td>' in page
    assert "user_id" not in page and "project_id" not in page and "{&#x27;" not in page  # no raw dicts
    for pk in (11, 12):
        assert f'<a href="{reverse("analysis:model_detail", args=[project.pk, pk])}">#{pk}</a>' in page
    assert '<th scope="row">Fitting time (s)</th><td>1.25</td>' in page
    assert '<th scope="row">Exams left out per feature set</th><td>abdomen: 2</td>' in page
    assert f'<a href="{reverse("analysis:model_list", args=[project.pk])}">2 model version(s)</a>' in page

    measure = Job.objects.create(
        project=project, kind="analysis.measure_exam", state=JobState.SUCCEEDED,
        params={"exam_id": 5, "user_id": 1}, result={"measurement_run": 9, "levels": ["T12", "L1"], "flags": []})
    login(client, project, "coordinator")
    page = client.get(measure.get_absolute_url()).content.decode()
    exam_page = reverse("analysis:exam_measurements", args=[project.pk, 5])
    assert "Segment and measure an exam" in page
    assert f'<a href="{exam_page}">run #9</a>' in page and f'<a href="{exam_page}">exam #5</a>' in page
    assert '<th scope="row">Levels measured</th><td>T12, L1</td>' in page


def test_job_list_names_kinds_and_warns_when_no_worker_listens(client, project, redis_url):
    Job.objects.create(project=project, kind="analysis.train_grid", params={"project_id": project.pk})
    login(client, project, "annotator")
    page = client.get(reverse("studies:job_list")).content.decode()
    assert "Train the model grid" in page and "analysis.train_grid" not in page
    # No rqworker runs on the test Redis: the one pending job on "default" waits for a worker.
    assert ("No worker is listening on the &#x27;default&#x27; queue: its 1 pending job(s) wait until one "
            "starts") in page
    assert "&#x27;gpu&#x27; queue" not in page  # nothing pending there


@pytest.mark.parametrize("state, shown", [
    # (A running row without a worker would be reconciled as lost on view: the running case is the browser's.)
    (JobState.FAILED, "stopped at: fitting model 17 of 18"),
    (JobState.SUCCEEDED, None),  # the last progress line of a finished job no longer describes it
])
def test_progress_message_describes_the_job_as_it_is_now(client, project, state, shown):
    job = Job.objects.create(project=project, kind="analysis.train_grid", state=state, progress=0.9,
                             message="fitting model 17 of 18", params={"project_id": project.pk})
    login(client, project, "pi")
    page = client.get(reverse("studies:job_detail", args=[job.pk])).content.decode()
    if shown is None:
        assert "fitting model 17 of 18" not in page
    else:
        assert f'<span id="job-message">{shown}</span>' in page
