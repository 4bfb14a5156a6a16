"""Twenty readers request re-segmentation of the same case at once (PostgreSQL, one connection per thread,
released together): the database's one-active-request constraint lets one through and every other reader is
told why; one job, one request, no 500."""

import pytest
from django.test import Client
from django.urls import reverse

from studies import jobs
from studies.models import Job
from studies.review import actions, resegment
from studies.review.models import CaseStatus, ResegmentationRequest, ReviewCase
from tests.factories import MembershipFactory
from tests.integration.test_concurrent_saves import N, _run_together
from tests.studies.review.conftest import make_measured_exam


@pytest.fixture
def postgres(transactional_db):
    from django.db import connection

    from tests.conftest import missing_service

    if connection.vendor != "postgresql":
        missing_service("concurrency tests need PostgreSQL (set DATABASE_URL)")


def test_twenty_simultaneous_requests_start_one_job(postgres, redis_url, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    exam, _, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)
    case = ReviewCase.objects.get(exam=exam)
    # The case as after a cancelled request: every reader sees "Request re-segmentation again".
    first = resegment.request_resegmentation(case, MembershipFactory(project=project, role="annotator").user)
    jobs.cancel(first.job)
    users = [MembershipFactory(project=project, role="annotator").user for _ in range(N)]
    clients = []
    for user in users:
        clients.append(Client())
        clients[-1].force_login(user)
    url = reverse("review:case_resegment", args=[project.pk, exam.pk])

    responses = _run_together(clients, lambda i, client: client.post(url, {"segmenter": "anatomy"}, follow=True))
    pages = [r.content.decode() for r in responses]
    assert all(r.status_code == 200 for r in responses)
    started = [i for i, p in enumerate(pages) if "Re-segmentation with anatomy requested" in p]
    told = [i for i, p in enumerate(pages) if "already queued or running" in p]
    assert len(started) == 1 and len(told) == N - 1
    active = ResegmentationRequest.objects.get(active=True)
    assert active.requested_by == users[started[0]] and active.job.created_by == users[started[0]]
    assert ResegmentationRequest.objects.count() == 2 and Job.objects.count() == 2
    assert ReviewCase.objects.get(pk=case.pk).status == CaseStatus.RESEGMENT
