"""Concurrent writes on PostgreSQL (threads, one connection each, released together by a barrier): 20 saves
of the same exam, 20 "add exam" for the same patient and day, 20 clicks on "Train". Each asserts exact counts
afterwards: one winner, every other request told why, no 500, nothing lost."""

import threading

import pytest
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from studies.models import Exam, QCTResult
from tests.conftest import missing_service
from tests.factories import MembershipFactory, PatientFactory, QCTResultFactory
from tests.pageforms import form_values

N = 20


@pytest.fixture
def postgres(transactional_db):
    if connection.vendor != "postgresql":
        missing_service("concurrency tests need PostgreSQL (set DATABASE_URL)")


def _clients(project, role, n=N):
    clients = []
    for _ in range(n):
        client = Client()
        client.force_login(MembershipFactory(project=project, role=role).user)
        clients.append(client)
    return clients


def _run_together(clients, request):
    """Call ``request(i, client)`` in one thread per client, all released at once; returns the responses."""
    barrier = threading.Barrier(len(clients))
    responses = [None] * len(clients)
    errors = []

    def work(i, client):
        try:
            barrier.wait(timeout=60)
            responses[i] = request(i, client)
        except Exception as exc:  # a 500 raises in the test client: collect it, the test then fails
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    return responses


def test_twenty_concurrent_saves_of_one_exam_one_wins_nineteen_are_told(postgres):
    qct = QCTResultFactory(bmd_l1=100.0, exam__age_at_exam=60)
    project = qct.exam.patient.project
    url = reverse("studies:exam_edit", args=[project.pk, qct.exam.patient_id, qct.exam_id])
    clients = _clients(project, "coordinator")
    opened = [form_values(c, url, "exam-exam_date") for c in clients]  # everyone opens version 1

    def save(i, client):
        return client.post(url, {**opened[i], "exam-age_at_exam": str(61 + i), "qct-bmd_l1": str(101 + i)})

    responses = _run_together(clients, save)
    saved = [i for i, r in enumerate(responses) if r.status_code == 302]
    told = [i for i, r in enumerate(responses)
            if r.status_code == 200 and "someone else saved this exam" in r.content.decode()]
    assert len(saved) == 1 and len(told) == N - 1
    (winner,) = saved
    exam = Exam.objects.get(pk=qct.exam_id)
    stored = QCTResult.objects.get(pk=qct.pk)
    # The winner's values, whole: no mix of two saves.
    assert (exam.age_at_exam, stored.bmd_l1) == (61 + winner, 101.0 + winner)
    assert (exam.version, stored.version) == (2, 2)
    # Each loser is shown the winner's values against their own.
    for i in told:
        assert f"Age at exam: {61 + winner} -&gt; {61 + i}" in responses[i].content.decode()


def test_twenty_concurrent_adds_of_the_same_exam_day_one_created_no_500(postgres):
    patient = PatientFactory()
    project = patient.project
    url = reverse("studies:exam_add", args=[project.pk, patient.pk])
    clients = _clients(project, "coordinator")

    def add(i, client):
        return client.post(url, {"exam-exam_date": "2023-01-10", "exam-age_at_exam": "70", "exam-region": "chest",
                                 "qct-bmd_l1": str(90 + i), "qct-bmd_l2": "", "qct-bmd_l3": ""})

    responses = _run_together(clients, add)
    assert sorted(r.status_code for r in responses) == [200] * (N - 1) + [302]
    refused = [r for r in responses if r.status_code == 200]
    assert all("This patient already has an exam on that date." in r.content.decode() for r in refused)
    assert Exam.objects.filter(patient=patient).count() == 1
    assert QCTResult.objects.filter(exam__patient=patient).count() == 1


def test_twenty_clicks_on_train_start_one_job(postgres):
    from analysis.modeling.demo import seed_demo_measurements
    from studies.demo import seed_demo_project
    from studies.models import Job

    project, _ = seed_demo_project(n_patients=30, random_state=1, name="clicks")
    seed_demo_measurements(project, random_state=1)
    url = reverse("analysis:train", args=[project.pk])
    clients = _clients(project, "pi")

    responses = _run_together(clients, lambda i, c: c.post(url, {"cohort": "main", "seed": "0",
                                                                  "measurement_source": ""}))
    assert sorted(r.status_code for r in responses) == [302] + [409] * (N - 1)
    assert Job.objects.filter(project=project, kind="analysis.train_grid").count() == 1
    job = Job.objects.get(project=project, kind="analysis.train_grid")
    for r in responses:
        if r.status_code == 409:
            assert f"already running (job #{job.pk}, queued)" in r.content.decode()
