"""Everything the case page shows about one exam, gathered in a few queries (the view only renders it)."""

from __future__ import annotations

from django.urls import reverse

from analysis.models import MeasurementRun, Prediction
from analysis.segmentation.levels import LEVEL_NAMES
from studies.dicomweb.instances import study_uid_of
from studies.models import ExclusionFlag
from studies.pacs.models import StoredSeries

from . import actions
from .models import ReadingKind, ReviewCase
from .segments import run_segments


def displayed_run(exam, case=None):
    """The run the page shows: the case's reviewed run, else its base run, else the newest image run."""
    if case is not None:
        return case.result_run or case.base_run
    return (MeasurementRun.objects.filter(exam=exam).exclude(labels="").order_by("-created_at", "-pk").first()
            or MeasurementRun.objects.filter(exam=exam).order_by("-created_at", "-pk").first())


def viewer_geometry(project, stored):
    """What the viewer needs to lay out the stored series before any pixel arrives: its shape (slices, rows,
    columns), the LPS affine of (column, row, slice) indices, the stored dtype (int16 is served unscaled), and
    the URL of its voxels (read in parallel byte ranges, see :func:`studies.dicomweb.views.series_voxels`)."""
    if stored is None:
        return None
    return {"shape": list(stored.shape), "affine": (stored.geometry or {}).get("affine_lps"), "dtype": stored.dtype,
            "voxels_url": reverse("dicomweb:series_voxels", args=[project.pk, study_uid_of(stored), stored.series_uid])}


def case_context(project, exam, user, role):
    from . import resegment

    case = ReviewCase.objects.filter(exam=exam).select_related("base_run", "result_run").first()
    # A re-segmentation whose job finished while no worker could tell the case: settled now, then shown.
    if case is not None and resegment.settle_finished(resegment.ResegmentationRequest.objects.filter(case=case)):
        case = ReviewCase.objects.filter(exam=exam).select_related("base_run", "result_run").first()
    run = displayed_run(exam, case)
    reading = actions.working_reading(case, user, role) if case else None
    segments = run_segments(run) if run else []
    names = actions.as_int_map(reading.level_map) if reading else {}
    unusable = {int(i) for i in reading.unusable} if reading else set()
    for segment in segments:
        segment["auto_level"] = segment.get("level")
        segment["shown_level"] = names.get(segment["index"], segment.get("level")) if reading else segment.get("level")
        segment["unusable"] = segment["index"] in unusable or "unusable_by_reader" in (segment.get("flags") or [])
    stored = None
    if run is not None and run.series_uid:
        stored = StoredSeries.objects.filter(project=project, series_uid=run.series_uid).first()
    stored = stored or exam.stored_series.order_by("-created_at").first()
    readings = actions.readings_visible_to(case, user, role) if case else []
    visible_ids = {r.pk for r in readings}
    events = [e for e in case.events.select_related("user")
              if e.reading_id is None or e.reading_id in visible_ids] if case else []
    comments = [c for c in case.comments.select_related("author")
                if c.reading_id is None or c.reading_id in visible_ids] if case else []
    flags = ExclusionFlag.objects.filter(patient=exam.patient).filter(exam__isnull=True) | \
        ExclusionFlag.objects.filter(exam=exam)
    predictions = (Prediction.objects.filter(exam=exam).select_related("model_version")
                   .order_by("model_version__name", "-created_at"))
    qct = getattr(exam, "qct", None) if hasattr(exam, "qct") else None
    return {
        "project": project, "exam": exam, "patient": exam.patient, "qct": qct, "case": case, "run": run,
        "runs": MeasurementRun.objects.filter(exam=exam).order_by("-created_at", "-pk"),
        "view_only": actions.why_view_only(case, user, role) if case and reading is None else "",
        "segments": segments, "reading": reading, "readings": readings, "events": events, "comments": comments,
        "stored": stored, "study_uid": study_uid_of(stored) if stored else "", "exclusions": list(flags),
        "predictions": list(predictions), "notes": run.level_notes if run else [], "role": role,
        "level_names": LEVEL_NAMES,
        # Masks are edited in a single reading or in adjudication (studies.review.maskedit).
        "can_edit_mask": bool(reading and reading.kind in (ReadingKind.SINGLE, ReadingKind.ADJUDICATION)),
        # The endpoint's root: its QIDO "studies" URL without that last segment.
        "dicomweb_root": reverse("dicomweb:studies", args=[project.pk]).rsplit("/studies", 1)[0],
        "viewer_geometry": viewer_geometry(project, stored),
        "viewer_segments": [{"index": s["index"], "level": s["shown_level"], "rgb": s["rgb"]} for s in segments],
        **resegment_context(case, role),
    }


def resegment_context(case, role):
    """The case's re-segmentation requests, and whether (and with what) the user may request one now."""
    from analysis.segmenters import segmenter_choices

    from . import resegment

    requests = resegment.case_requests(case) if case else []
    active = next((r for r in requests if r.active), None)
    return {
        "resegmentations": requests, "active_resegmentation": active,
        "segmenter_choices": segmenter_choices(case.project) if case else [],
        # A new request from the case page: after a failed or cancelled one (open cases request it by deciding).
        "can_request_again": bool(case and case.status == "resegment" and active is None
                                  and resegment.may_request(role)),
    }
