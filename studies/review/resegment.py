"""Re-segmentation requested in review: the exam's segment-and-measure job with a segmenter the reader chose.

A request (:class:`.models.ResegmentationRequest`) starts ``analysis.measure_exam``, the job the exam's HU
page starts, with the chosen segmenter: the project's promoted version by default, the rule-based one, or
another of the project's segmenter versions. The case shows "re-segmentation requested" and the job's state.
While the job is queued or running the request is active, and the database refuses a second active request
of the same case (:class:`IntegrityError` on a partial unique index), whatever the timing of two clicks.

When the job succeeds (:func:`on_job_succeeded`, sent by the job runner, or :func:`settle_finished` from the
pages, should the worker have stopped between the two), its new run becomes the case's run, the case goes
back into the queue as needing review with the priority of the new run, and its readings start again on the
new segments. The replaced run is kept (runs are immutable). A failed or cancelled job ends the request; the
case stays "re-segmentation requested" and a reader may request again.

Who may request: the case's readers (annotators, PIs, admins: :data:`.actions.READERS`), not coordinators.
Every request and its outcome is audited and written to the case history.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from studies.audit import acting_as
from studies.models import Job, JobState

from .models import CaseStatus, Reading, ResegmentationRequest, ReviewCase, ReviewEvent

FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class ResegmentationError(ValueError):
    """A request that cannot be made (the message says why)."""


def may_request(role):
    """Readers of a case may request it (coordinators assign cases; they do not read them)."""
    from .actions import READERS

    return role in READERS


def request_resegmentation(case, user, segmenter=""):
    """Start the exam's segment-and-measure job with ``segmenter`` for ``case``; returns the request.

    Raises :class:`ResegmentationError` when the exam has no stored series, the segmenter is unknown, or a
    re-segmentation of the case is already queued or running (refused by the database constraint).
    The caller checks the role (:func:`may_request`).
    """
    from analysis.segmenters import SegmenterChoiceError, resolve_name, submit_measurement

    project = case.project
    if not case.exam.stored_series.exists():
        raise ResegmentationError("this exam has no stored CT series to segment; pull or import one first")
    try:
        name = resolve_name(project, segmenter)
    except SegmenterChoiceError as exc:
        raise ResegmentationError(str(exc)) from None
    settle_finished(ResegmentationRequest.objects.filter(case=case))
    with transaction.atomic(), acting_as(user):
        try:
            with transaction.atomic():
                row = ResegmentationRequest.objects.create(case=case, segmenter=name, requested_by=user,
                                                           replaced_run_id=case.result_run_id or case.base_run_id)
        except IntegrityError:
            raise ResegmentationError("a re-segmentation of this case is already queued or running; wait for "
                                      "it to finish") from None
        # The review's role check governs (annotators may request); the job row names who asked.
        job = submit_measurement(project, case.exam_id, name, requested_by=user)
        Job.objects.filter(pk=job.pk).update(created_by=user)
        row.job = job
        row.save(update_fields=["job"])
        if case.status != CaseStatus.RESEGMENT:
            case.status = CaseStatus.RESEGMENT
            case.decided_at = timezone.now()
            case.save(update_fields=["status", "decided_at"])
        ReviewEvent.objects.create(case=case, user=user, action="resegment",
                                   summary=f"re-segmentation with {name} requested (job #{job.pk})")
    return row


def settle_finished(requests):
    """End the active ``requests`` whose job has finished: apply a success, close a failure. Returns how many."""
    finished = requests.filter(active=True).filter(Q(job__isnull=True) | Q(job__state__in=FINISHED))
    n = 0
    for row in finished.select_related("job"):
        if row.job is not None and row.job.state == JobState.SUCCEEDED:
            n += apply_result(row, row.job)
        else:
            n += _close(row)
    return n


def _close(row):
    state = row.job.get_state_display().lower() if row.job else "gone"
    with transaction.atomic():
        if not ResegmentationRequest.objects.filter(pk=row.pk, active=True).update(active=False,
                                                                                    finished_at=timezone.now()):
            return 0
        ReviewEvent.objects.create(case_id=row.case_id, action="resegment_failed",
                                   summary=f"re-segmentation with {row.segmenter} {state} "
                                           f"(job #{row.job_id}); request it again")
    return 1


def apply_result(row, job):
    """Make the succeeded job's run the case's run and put the case back into the queue (once); audited as
    the job's user."""
    from analysis.models import MeasurementRun

    from .actions import _audit, _initial_map, priority_of

    run_id = (job.result or {}).get("measurement_run")
    # Written by the worker or by whichever page saw the job finish first: either way the reader who asked.
    with transaction.atomic(), acting_as(job.created_by):
        if not ResegmentationRequest.objects.filter(pk=row.pk, active=True).update(
                active=False, new_run_id=run_id, finished_at=timezone.now()):
            return 0  # applied already (the signal and a page both saw the job finish)
        case = ReviewCase.objects.select_for_update().get(pk=row.case_id)
        run = MeasurementRun.objects.filter(pk=run_id).first()
        if run is None or case.status != CaseStatus.RESEGMENT:
            why = "its run is missing" if run is None else "the case had moved on"
            ReviewEvent.objects.create(case=case, action="resegmented",
                                       summary=f"re-segmentation job #{job.pk} succeeded but {why}; case unchanged")
            return 1
        replaced = case.result_run_id or case.base_run_id
        priority, reasons = priority_of(run)
        case.base_run, case.result_run = run, None
        case.status, case.decided_at = CaseStatus.PENDING, None
        case.priority, case.priority_reasons = priority, reasons
        case.save()
        # The readings start again on the new segments (the decisions of the earlier round stay in the history
        # and the audit log); the version moves on, so a page opened before cannot save over the new round.
        level_map = _initial_map(case)
        for reading in case.readings.all():
            before = {"decision": reading.decision, "version": reading.version}
            Reading.objects.filter(pk=reading.pk).update(
                level_map=level_map, unusable=[], decision="", decided_by=None, decided_at=None,
                version=F("version") + 1)
            reading.refresh_from_db()
            _audit(reading, {"decision": [before["decision"], ""],
                             "version": [str(before["version"]), str(reading.version)],
                             "level_map": ["segments of run %s" % replaced, "segments of run %s" % run.pk]}, None)
        ReviewEvent.objects.create(case=case, action="resegmented",
                                   summary=f"re-segmented with {row.segmenter} (job #{job.pk}): run {run.pk} "
                                           f"replaces run {replaced}; back in the queue to review")
    return 1


def on_job_succeeded(sender, job, **kwargs):
    """Receiver of :data:`studies.jobs.job_succeeded`: a re-segmentation job's run goes to its case."""
    if job.kind != "analysis.measure_exam":
        return
    for row in ResegmentationRequest.objects.filter(job=job, active=True):
        apply_result(row, job)


def case_requests(case):
    """The case's requests, newest first, with their jobs and runs (for the case page)."""
    return list(ResegmentationRequest.objects.filter(case=case).select_related("job", "new_run", "requested_by"))
