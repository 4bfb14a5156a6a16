"""Request re-segmentation from review: a real segment-and-measure job, run by a real `manage.py rqworker`,
whose new run puts the case back into the queue; who may request it; one request at a time; audited."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from analysis.models import MeasurementRun
from analysis.segmenters import resolve_name, segmenter_choices
from studies import jobs
from studies.models import Job, JobState
from studies.review import actions, resegment
from studies.review.models import CaseStatus, Reading, ResegmentationRequest, ReviewCase
from tests.factories import ExamFactory, MembershipFactory, UserFactory
from tests.studies.review.conftest import make_measured_exam

WAIT_S = 300  # the rule-based segmenter takes ~2 s on this phantom; generous for a loaded 2-core machine


@pytest.fixture
def case(transactional_db, storage):
    exam, run, phantom = make_measured_exam()
    actions.open_cases(exam.patient.project)
    return ReviewCase.objects.get(exam=exam)


def _login(client, case, role):
    user = MembershipFactory(project=case.project, role=role).user
    client.force_login(user)
    return user


def _decide_resegment(client, case, segmenter):
    page = client.get(reverse("review:case", args=[case.project_id, case.exam_id]))
    reading = page.context["reading"]
    return client.post(reverse("review:case_action", args=[case.project_id, case.exam_id]),
                       {"operation": "resegment", "reading": reading.pk, "version": reading.version,
                        "segmenter": segmenter})


def test_annotator_request_runs_the_exam_job_and_the_case_returns_with_the_new_run(client, case, rq_worker,
                                                                                   storage, redis_url):
    annotator = _login(client, case, "annotator")
    old_run = case.base_run
    response = _decide_resegment(client, case, "anatomy")
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == CaseStatus.RESEGMENT
    row = ResegmentationRequest.objects.get(case=case)
    job = row.job
    # The job the exam's HU page starts, with the reader's segmenter, named after the reader.
    assert (job.kind, job.params["exam_id"], job.params["segmenter"], job.queue) == (
        "analysis.measure_exam", case.exam_id, "anatomy", "default")
    assert job.created_by == annotator and row.requested_by == annotator and row.active
    page = client.get(reverse("review:case", args=[case.project_id, case.exam_id])).content.decode()
    assert f"job #{job.pk}" in page and 'id="resegment-state" data-job-state>Queued' in page

    worker = rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(storage)})
    worker.wait(timeout=WAIT_S)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error or worker.output()
    row.refresh_from_db()
    case.refresh_from_db()
    new_run = MeasurementRun.objects.get(pk=job.result["measurement_run"])
    # The worker's success signal put the case back: pending, on the new run, with that run's priority.
    assert not row.active and row.new_run == new_run and row.replaced_run == old_run
    assert case.status == CaseStatus.PENDING and case.base_run == new_run and case.result_run is None
    assert new_run.segmenter_version.startswith("anatomy") and new_run.exam_id == case.exam_id
    assert (case.priority, case.priority_reasons) == actions.priority_of(new_run)
    assert MeasurementRun.objects.filter(pk=old_run.pk).exists()  # the old run stays
    assert case in actions.queue(case.project)
    # The reader's reading starts again on the new segments, at a new version.
    reading = Reading.objects.get(case=case)
    assert reading.decided_at is None and reading.decision == "" and reading.version == 3
    assert actions.as_int_map(reading.level_map) == {s["index"]: s["level"] for s in new_run.segments}
    page = client.get(reverse("review:case", args=[case.project_id, case.exam_id])).content.decode()
    assert f"run {new_run.pk}</a> (replaced run {old_run.pk})" in page and 'id="op-accept"' in page
    # Audited: the request's creation with its actor, the case's status changes.
    entries = LogEntry.objects.get_for_object(row)
    assert entries.filter(action=LogEntry.Action.CREATE, actor=annotator).exists()
    # What the worker wrote names the reader who asked: the new run, the case put back, the reading reset.
    created = LogEntry.objects.get_for_object(new_run).get(action=LogEntry.Action.CREATE)
    assert created.actor == annotator and created.changes_dict["segmenter_version"][1] == new_run.segmenter_version
    put_back = LogEntry.objects.get_for_object(case).filter(changes__has_key="base_run").latest("timestamp")
    assert put_back.actor == annotator and put_back.changes_dict["base_run"] == [str(old_run.pk), str(new_run.pk)]
    assert LogEntry.objects.get_for_object(reading).latest("timestamp").actor == annotator
    assert {"resegment", "resegmented"} <= set(case.events.values_list("action", flat=True))


def test_who_may_request(client, case, redis_url):
    url = reverse("review:case_resegment", args=[case.project_id, case.exam_id])
    ReviewCase.objects.filter(pk=case.pk).update(status=CaseStatus.RESEGMENT)  # as after a failed request
    # Coordinators assign cases but do not read them: refused. A user outside the project does not see it.
    _login(client, case, "coordinator")
    assert client.post(url, {"segmenter": ""}).status_code == 403
    client.force_login(UserFactory())
    assert client.post(url, {"segmenter": ""}).status_code == 404
    assert not ResegmentationRequest.objects.exists() and not Job.objects.exists()
    # Annotators, PIs and admins (the readers) may: the first is accepted, the others refused while it is queued.
    readers = {role: _login(client, case, role) for role in ("annotator", "pi", "admin")}
    for role, user in readers.items():
        client.force_login(user)
        page = client.post(url, {"segmenter": ""}, follow=True).content.decode()
        assert ("already queued or running" in page) == (role != "annotator")
    assert ResegmentationRequest.objects.count() == 1 and Job.objects.count() == 1
    assert ResegmentationRequest.objects.get().requested_by == readers["annotator"]


def test_second_request_refused_while_queued_and_allowed_after_a_cancel(case, redis_url):
    user = MembershipFactory(project=case.project, role="annotator").user
    first = resegment.request_resegmentation(case, user, "")
    assert first.segmenter == "anatomy"  # no promoted version: the project default is the rule-based one
    with pytest.raises(resegment.ResegmentationError, match="already queued or running"):
        resegment.request_resegmentation(case, user, "anatomy")
    assert ResegmentationRequest.objects.count() == 1 and Job.objects.count() == 1
    jobs.cancel(first.job, user=None)
    second = resegment.request_resegmentation(case, user, "anatomy")
    first.refresh_from_db()
    assert not first.active and second.active and Job.objects.count() == 2
    assert "cancelled" in case.events.get(action="resegment_failed").summary


def test_unknown_segmenter_or_no_stored_series_writes_nothing(client, transactional_db, storage, redis_url):
    exam, run, _ = make_measured_exam()
    project = exam.patient.project
    other = ExamFactory(patient__project=project)
    actions.open_cases(project)
    case = ReviewCase.objects.get(exam=exam)
    user = MembershipFactory(project=project, role="annotator").user
    with pytest.raises(resegment.ResegmentationError, match="no segmenter named 'nonesuch'"):
        resegment.request_resegmentation(case, user, "nonesuch")
    # An exam without stored series: the decision is refused whole (the reading stays undecided).
    other_case = ReviewCase.objects.create(project=project, exam=other, base_run=run)
    reading = actions.working_reading(other_case, user, "annotator")
    with pytest.raises(resegment.ResegmentationError, match="no stored CT series"):
        actions.decide(reading, reading.version, user, "resegment")
    reading.refresh_from_db()
    other_case.refresh_from_db()
    assert reading.decided_at is None and other_case.status == CaseStatus.PENDING
    assert not ResegmentationRequest.objects.exists() and not Job.objects.exists()


def test_choices_offer_the_promoted_default_the_rule_based_one_and_the_versions(case):
    from analysis.models import SegmenterVersion

    SegmenterVersion.objects.create(project=case.project, name="net-a", weights="x.pt", weights_sha256="0" * 64)
    # No promoted version: the default is the rule-based segmenter, offered once (as the default).
    assert segmenter_choices(case.project) == [("", "project default (rule-based, anatomy rules)"), ("net-a", "net-a")]
    assert segmenter_choices(case.project, with_default=False) == [
        ("anatomy", "rule-based (anatomy rules)"), ("net-a", "net-a")]
    SegmenterVersion.objects.create(project=case.project, name="net-b", weights="y.pt", weights_sha256="0" * 64,
                                    promoted=True)
    assert segmenter_choices(case.project) == [
        ("", "project default (net-b)"), ("anatomy", "rule-based (anatomy rules)"),
        ("net-b", "net-b (promoted)"), ("net-a", "net-a")]
    assert resolve_name(case.project, "") == "net-b"
    assert resolve_name(case.project, "rule-based") == "anatomy"


def test_double_read_case_both_asking_is_one_request_and_both_readings_start_again(case, storage):
    """Two blind readers both ask for re-segmentation: the case settles with one request (the choice of the
    reader who decided last). The job, executed here in-process, puts the case back and both readings start
    again undecided on the new segments; a later disagreement reuses the adjudication reading."""
    first, second = (MembershipFactory(project=case.project, role="annotator").user for _ in range(2))
    actions.assign(case.project, readers=[first, second], double_read_share=1.0)
    case.refresh_from_db()
    one = actions.working_reading(case, first, "annotator")
    two = actions.working_reading(case, second, "annotator")
    actions.decide(one, one.version, first, "resegment", segmenter="")
    assert not ResegmentationRequest.objects.exists()  # the second reader has not decided yet
    actions.decide(two, two.version, second, "resegment", segmenter="anatomy")
    row = ResegmentationRequest.objects.get()
    assert (row.segmenter, row.requested_by) == ("anatomy", second)

    jobs.execute(row_id=row.job_id, attempt=row.job.attempts)
    case.refresh_from_db()
    row.refresh_from_db()
    assert row.job.state == JobState.SUCCEEDED and case.status == CaseStatus.PENDING and case.double_read
    assert case.base_run_id == row.new_run_id
    readings = {r.kind: r for r in case.readings.all()}
    assert {k: (r.decision, r.decided_at) for k, r in readings.items()} == {
        "first": ("", None), "second": ("", None)}
    # The next round disagrees: adjudication, on the new run.
    one, two = readings["first"], readings["second"]
    actions.decide(one, one.version, first, "accept")
    actions.decide(two, two.version, second, "reject")
    case.refresh_from_db()
    assert case.status == CaseStatus.ADJUDICATION
    adjudication = case.readings.get(kind="adjudication")
    assert actions.as_int_map(adjudication.level_map) == {s["index"]: s["level"] for s in case.base_run.segments}


def test_a_result_settled_by_a_page_is_audited_as_the_reader_who_asked(client, case, storage, redis_url):
    """The worker stopped between the job's success and telling the case: the queue page settles it, and
    the audit names the reader who asked, not whoever opened the page."""
    from studies.jobs import job_succeeded

    annotator = MembershipFactory(project=case.project, role="annotator").user
    row = resegment.request_resegmentation(case, annotator, "anatomy")
    job_succeeded.disconnect(dispatch_uid="review.resegmentation")
    try:
        jobs.execute(row_id=row.job_id, attempt=row.job.attempts)
    finally:
        job_succeeded.connect(resegment.on_job_succeeded, dispatch_uid="review.resegmentation")
    case.refresh_from_db()
    assert case.status == CaseStatus.RESEGMENT

    _login(client, case, "coordinator")
    assert client.get(reverse("review:queue", args=[case.project_id])).status_code == 200
    case.refresh_from_db()
    row.refresh_from_db()
    assert case.status == CaseStatus.PENDING and case.base_run_id == row.new_run_id
    put_back = LogEntry.objects.get_for_object(case).filter(changes__has_key="base_run").latest("timestamp")
    assert put_back.actor == annotator


def test_a_case_sent_back_after_acceptance_no_longer_feeds_training_comparison_or_features(case, storage, redis_url):
    """Reviewed data has one definition, the cases accepted now (``ReviewCase.objects.reviewed``): the relabelled
    run of a case accepted and then sent back to re-segmentation (and rejected) trains no network, is no
    reference of a comparison and is no longer the exam's reviewed run for the features, though it stays
    marked as a reader's work."""
    from analysis.modeling.records import PROJECT_DEFAULT_SOURCE, chosen_runs
    from analysis.segmenters import reviewed_reference_runs
    from analysis.tasks import expand_reviewed_sources
    from studies.models import Exam

    exams = Exam.objects.filter(pk=case.exam_id)

    def reviewed():
        try:
            trained = [s["id"] for s in expand_reviewed_sources(case.project, [{"kind": "reviewed"}])]
        except ValueError:
            trained = []
        return trained, [r.pk for r in reviewed_reference_runs(case.project)], chosen_runs(
            exams, PROJECT_DEFAULT_SOURCE)[case.exam_id]

    reader = MembershipFactory(project=case.project, role="annotator").user
    reading = actions.working_reading(case, reader, "annotator")
    actions.edit_levels(reading, reading.version, reader, "shift", delta=1)
    case = actions.decide(reading, reading.version, reader, "accept")
    relabelled = case.result_run
    assert reviewed() == ([relabelled.pk], [relabelled.pk], relabelled.pk)

    row = resegment.request_resegmentation(case, reader, "anatomy")
    jobs.execute(row_id=row.job_id, attempt=row.job.attempts)
    case.refresh_from_db()
    row.refresh_from_db()
    assert case.status == CaseStatus.PENDING and case.base_run_id == row.new_run_id
    assert reviewed() == ([], [], row.new_run_id)  # the newest run, as for any exam not reviewed
    reading = actions.working_reading(case, reader, "annotator")
    assert actions.decide(reading, reading.version, reader, "reject").status == CaseStatus.REJECTED
    assert reviewed() == ([], [], row.new_run_id)
    assert MeasurementRun.objects.get(pk=relabelled.pk).parameters["reviewed"] is True
