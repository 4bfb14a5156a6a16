"""The case viewer's mask save: a gzipped segment map in the request body, answered in JSON (the page stays
where it is on a refusal, so the reader keeps their strokes)."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from studies.access import get_project_for_user

from . import actions
from .maskedit import MaskEditError, max_upload_bytes, save_mask_edit
from .models import ReviewCase
from .views import _exam


def _int(request, key):
    try:
        return int(request.GET.get(key, ""))
    except ValueError:
        return None


@login_required
@require_POST
def mask_edit(request, project_id, exam_id):
    project = get_project_for_user(request, project_id)
    exam = _exam(project, exam_id)
    case = get_object_or_404(ReviewCase.objects.select_related("base_run", "exam"), exam=exam)
    reading_id, version, run_id = _int(request, "reading"), _int(request, "version"), _int(request, "run")
    if None in (reading_id, version, run_id):
        return JsonResponse({"error": "reading, version and run (numbers) are required"}, status=400)
    reading = actions.working_reading(case, request.user, request.project_role)
    if reading is None or reading.pk != reading_id:
        why = (actions.why_view_only(case, request.user, request.project_role) if reading is None
               else "the reading you opened was decided or replaced; reload the page.")
        return JsonResponse({"error": f"not saved: {why}"}, status=403)
    payload = request.read(max_upload_bytes() + 1)
    try:
        run = save_mask_edit(case, reading, version, run_id, payload, user=request.user)
    except actions.EditConflict as conflict:
        return JsonResponse({"error": str(conflict), "version": conflict.reading.version,
                             "changes": [f"{e.who or 'someone'}: {e.summary}" for e in conflict.events]}, status=409)
    except MaskEditError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"run": run.pk, "url": reverse("review:case", args=[project.pk, exam.pk])})
