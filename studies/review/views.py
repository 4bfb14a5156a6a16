"""Review pages: the queue, the case page with its viewer, review actions and agreement. Each view checks
access, validates a form, calls one function of :mod:`.actions` and renders."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from studies.access import get_project_for_user
from studies.models import Exam
from studies.registry import log_access

from . import actions
from .case import case_context
from . import resegment
from .forms import AssignForm, CaseActionForm, ResegmentForm
from .levels import RelabelError
from .models import ReviewCase
from .segments import segment_index_volume


def _exam(project, exam_id):
    return get_object_or_404(Exam.objects.select_related("patient", "qct"), patient__project=project, pk=exam_id)


@login_required
def queue(request, project_id):
    project = get_project_for_user(request, project_id)
    role = request.project_role
    can_assign = role in actions.ASSIGNERS
    form = AssignForm(request.POST or None) if can_assign else None
    if request.method == "POST":
        if not can_assign:
            raise PermissionDenied("Only coordinators and admins build and assign the review queue.")
        if request.POST.get("operation") == "open":
            n = actions.open_cases(project)
            messages.success(request, f"{n} new case(s) in the queue.")
            return redirect("review:queue", project.pk)
        if form.is_valid():
            try:
                n = actions.assign(project, double_read_share=form.cleaned_data["double_read_share"],
                                   seed=form.cleaned_data["seed"], user=request.user)
            except actions.ReviewError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"{n} case(s) assigned.")
            return redirect("review:queue", project.pk)
    # A re-segmentation whose job finished while no worker could tell the case (one query; usually nothing).
    resegment.settle_finished(resegment.ResegmentationRequest.objects.filter(case__project=project))
    mine = request.GET.get("mine", "1" if role in actions.READERS and not can_assign else "") == "1"
    status = request.GET.get("status", "open")
    cases = actions.queue(project, user=request.user if mine else None, status=status)
    # The page's ids first (from the queue's index alone), then those cases with their exam and patient: a
    # later page skips index entries instead of joining every case before it.
    page = Paginator(cases.values_list("pk", flat=True), 50).get_page(request.GET.get("page"))
    ids = list(page.object_list)
    found = ReviewCase.objects.select_related("exam__patient").in_bulk(ids)
    page.object_list = [found[pk] for pk in ids if pk in found]
    return render(request, "review/queue.html", {
        "project": project, "page": page, "mine": mine, "status": status, "form": form, "can_assign": can_assign,
    })


@login_required
def case(request, project_id, exam_id):
    project = get_project_for_user(request, project_id)
    exam = _exam(project, exam_id)
    log_access(request.user, project, "review.case", f"exam {exam.pk}")
    return render(request, "review/case.html", case_context(project, exam, request.user, request.project_role))


@login_required
@require_POST
def case_action(request, project_id, exam_id):
    project = get_project_for_user(request, project_id)
    exam = _exam(project, exam_id)
    review_case = get_object_or_404(ReviewCase, exam=exam)
    form = CaseActionForm(request.POST)
    back = reverse("review:case", args=[project.pk, exam.pk])
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect(back)
    data = form.cleaned_data
    op = data["operation"]
    reading = actions.working_reading(review_case, request.user, request.project_role)
    if op != "comment" and (reading is None or reading.pk != data.get("reading")):
        messages.error(request, _not_yours_now(review_case, reading, request.user, request.project_role))
        return redirect(back)
    try:
        if op == "comment":
            actions.comment(review_case, request.user, data["text"], reading=reading)
        elif op in ("name", "shift", "rename"):
            actions.edit_levels(reading, data["version"], request.user, op, index=data.get("index"),
                                level=data.get("level") or None, delta=data.get("delta"))
        elif op in ("unusable", "usable"):
            actions.set_unusable(reading, data["version"], request.user, data["index"], op == "unusable")
        else:
            actions.decide(reading, data["version"], request.user, op, segmenter=data.get("segmenter") or "")
            messages.success(request, f"Decision saved: {op}.")
            return redirect(_next_case(project, request.user) or back)
    except actions.EditConflict as conflict:
        context = case_context(project, exam, request.user, request.project_role)
        context.update({"conflict": conflict, "attempt": data})
        return render(request, "review/case.html", context, status=409)
    except (actions.ReviewError, RelabelError, resegment.ResegmentationError) as exc:
        messages.error(request, str(exc))
    return redirect(back)


@login_required
@require_POST
def case_resegment(request, project_id, exam_id):
    """Request re-segmentation of a case again, after its last job failed or was cancelled."""
    project = get_project_for_user(request, project_id)
    exam = _exam(project, exam_id)
    review_case = get_object_or_404(ReviewCase, exam=exam)
    if not resegment.may_request(request.project_role):
        raise PermissionDenied("Only the readers of a case (annotators, PIs, admins) request re-segmentation.")
    form = ResegmentForm(request.POST)
    if form.is_valid():
        try:
            row = resegment.request_resegmentation(review_case, request.user, form.cleaned_data["segmenter"])
        except resegment.ResegmentationError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Re-segmentation with {row.segmenter} requested (job #{row.job_id}).")
    return redirect("review:case", project.pk, exam.pk)


def _not_yours_now(case, reading, user, role):
    """Why a reader's change to ``case`` was not saved, naming what happened since they opened it."""
    last = case.events.exclude(action="comment").order_by("-at", "-pk").first()
    since = (f" Last change: {last.summary} by {last.who or 'the system'} at {timezone.localtime(last.at):%H:%M:%S}."
             if last else "")
    if reading is not None:  # a reading, but not the one the page was opened on
        return f"Not saved: the reading you opened was decided or replaced; this page shows the current one.{since}"
    return f"Not saved: {actions.why_view_only(case, user, role)}{since}"


def _next_case(project, user):
    nxt = actions.queue(project, user=user).first()
    return reverse("review:case", args=[project.pk, nxt.exam_id]) if nxt else None


@login_required
def segments(request, project_id, exam_id, run_id):
    """The run's segment indices as raw uint8 bytes, (z, y, x) in stored slice order, for the viewer."""
    project = get_project_for_user(request, project_id)
    exam = _exam(project, exam_id)
    run = get_object_or_404(exam.measurement_runs.all(), pk=run_id)
    try:
        volume = segment_index_volume(run)
    except ValueError as exc:
        raise Http404(str(exc)) from None
    response = HttpResponse(volume.array.astype("uint8").tobytes(), content_type="application/octet-stream")
    response["X-Shape"] = ",".join(str(n) for n in volume.shape)
    response["Cache-Control"] = "private, max-age=3600"  # a run's segments never change
    return response


@login_required
def agreement(request, project_id):
    project = get_project_for_user(request, project_id)
    return render(request, "review/agreement.html", {"project": project, "agreement": actions.agreement(project)})


@login_required
def training_cases(request, project_id):
    project = get_project_for_user(request, project_id)
    return render(request, "review/training.html",
                  {"project": project, "cases": actions.reviewed_training_cases(project)})


