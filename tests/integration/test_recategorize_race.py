"""A threshold change racing edits (PostgreSQL, a second connection edits while the job runs).

The recategorize job owns only the derived columns (QCT BMD mean, category). A QCT value saved while it runs
(told "saved") must stay saved with its note; an exam deleted while it runs is skipped, not a failed job; the
job's audit entries name the user who changed the thresholds. The edit is made from the job's own progress
callback, at the moment the job has done its first part, by another thread with its own connection: the
job's reads before that moment are what a stale copy would be made of.
"""

import threading

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from analysis.categories import Thresholds
from studies.models import Exam, Project, QCTResult
from tests.conftest import missing_service
from tests.factories import MembershipFactory, ProjectFactory
from tests.pageforms import form_values

N_ROWS = 2100  # more than one chunk of the job (and more than the 2,000 rows after which it reported before)


@pytest.fixture
def postgres(transactional_db):
    if connection.vendor != "postgresql":
        missing_service("the threshold-change race needs PostgreSQL (set DATABASE_URL)")


def _bmd(i):
    return 60.0 + (i % 100)  # 60-159 mg/cm3: every category, and many on the boundaries that move


def _registry(project):
    """N_ROWS exams with QCT values categorized with the default thresholds (80 / 120)."""
    from tests.factories import PatientFactory

    patients = [PatientFactory.build(project=project, pseudonym=f"R{i:05d}") for i in range(N_ROWS)]
    from studies.models import Patient

    Patient.objects.bulk_create(patients)
    patients = list(Patient.objects.filter(project=project).order_by("pseudonym"))
    import datetime as dt

    Exam.objects.bulk_create([Exam(patient=p, exam_date=dt.date(2022, 1, 1), region="chest", age_at_exam=60)
                              for p in patients])
    exams = list(Exam.objects.filter(patient__project=project).order_by("patient__pseudonym"))
    rows = []
    for i, exam in enumerate(exams):
        row = QCTResult(exam=exam, bmd_l1=_bmd(i))
        row.derive(project.thresholds)
        rows.append(row)
    QCTResult.objects.bulk_create(rows)
    return exams


def _in_other_thread(func):
    errors = []

    def run():
        try:
            func()
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connections.close_all()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=120)
    assert not errors, errors


def test_qct_value_saved_while_the_job_runs_is_kept(postgres):
    from studies.tasks import recategorize

    membership = MembershipFactory(role="coordinator", project=ProjectFactory())
    project = membership.project
    exams = _registry(project)
    last = exams[-1]
    editor = Client()
    editor.force_login(membership.user)
    url = reverse("studies:exam_edit", args=[project.pk, last.patient_id, last.pk])
    opened = form_values(editor, url, "exam-exam_date")  # the coordinator has the exam open
    Project.objects.filter(pk=project.pk).update(osteoporosis_below=90.0, normal_above=130.0)
    said = []

    def progress(fraction, message=""):
        if said:
            return
        # The job has done its first part: now the coordinator saves a new value and a note.
        def save():
            response = editor.post(url, {**opened, "qct-bmd_l1": "85", "qct-levels_note": "L1 re-read"})
            said.append(response.status_code)
        _in_other_thread(save)

    recategorize(project_id=project.pk, progress=progress)
    assert said == [302]  # told "saved"
    stored = QCTResult.objects.get(exam=last)
    # 85 < 90 (the new osteoporosis threshold): osteoporosis, from the saved value, not the old one.
    assert (stored.bmd_l1, stored.levels_note, stored.category) == (85.0, "L1 re-read", "osteoporosis")
    # Every other row: its category from its own value and the new thresholds.
    new = Thresholds(90.0, 130.0)
    for i, (bmd, category) in enumerate(QCTResult.objects.filter(exam__patient__project=project)
                                        .exclude(exam=last).order_by("exam__patient__pseudonym")
                                        .values_list("bmd_l1", "category")):
        assert bmd == _bmd(i) and category == new.categorize(bmd)


def test_exam_deleted_while_the_job_runs_is_skipped(postgres):
    from studies.tasks import recategorize

    project = ProjectFactory()
    exams = _registry(project)
    Project.objects.filter(pk=project.pk).update(osteoporosis_below=90.0, normal_above=130.0)
    deleted = []

    def progress(fraction, message=""):
        if not deleted:
            deleted.append(exams[-1].pk)
            _in_other_thread(lambda: Exam.objects.filter(pk=exams[-1].pk).delete())

    result = recategorize(project_id=project.pk, progress=progress)
    # Expected count by hand: of the 2,099 remaining values, those whose category differs between 80/120 and
    # 90/130 (80-89 and 121-130 mg/cm3).
    old, new = Thresholds(80.0, 120.0), Thresholds(90.0, 130.0)
    expected = sum(old.categorize(_bmd(i)) != new.categorize(_bmd(i)) for i in range(N_ROWS - 1))
    assert result == {"changed": expected}
    assert not Exam.objects.filter(pk=deleted[0]).exists()
    assert QCTResult.objects.filter(exam__patient__project=project).count() == N_ROWS - 1


def test_threshold_change_job_audits_the_user_who_changed_them(rq_worker, postgres):
    """End to end: the project page starts the job, a real worker runs it, the history names the user."""
    from studies.models import Job, JobState

    membership = MembershipFactory(role="coordinator", project=ProjectFactory())
    project = membership.project
    _registry(project)
    client = Client()
    client.force_login(membership.user)
    response = client.post(reverse("studies:project_detail", args=[project.pk]),
                           {"description": "", "osteoporosis_below": "90", "normal_above": "130"})
    job = Job.objects.get(kind="registry.recategorize", project=project)
    assert response.status_code == 302
    worker = rq_worker(burst=True)
    worker.wait(timeout=300)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error or worker.stdout.read()
    entries = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(QCTResult))
    old, new = Thresholds(80.0, 120.0), Thresholds(90.0, 130.0)
    expected = sum(old.categorize(_bmd(i)) != new.categorize(_bmd(i)) for i in range(N_ROWS))
    assert job.result == {"changed": expected}
    assert entries.count() == expected
    assert set(entries.values_list("actor", flat=True)) == {membership.user.pk}
    assert {e.additional_data["via"] for e in entries} == {f"recategorize job #{job.pk}"}
    history = client.get(reverse("studies:patient_history", args=[project.pk, entries.first().additional_data[
        "patient_id"]])).content.decode()
    assert membership.user.username in history and f"recategorize job #{job.pk}" in history
