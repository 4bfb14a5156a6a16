"""Registry pages. Views check access, validate with a form, call one registry function and render."""

import io

from auditlog.models import LogEntry
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import floatformat
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import importers, job_kinds, jobs
from .access import get_project_for_user, projects_for
from .audit import actor_name, change_rows
from .exporters import write_cohort_csv
from .forms import (
    CSVUploadForm,
    ExamForm,
    ExclusionFlagForm,
    MembershipForm,
    MembershipRoleForm,
    PatientFilterForm,
    PatientForm,
    ProjectThresholdsForm,
    QCTForm,
    save_exam_forms,
    save_versioned,
)
from .importers import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, CSVImportError, parse_qct_csv
from .models import (
    MEMBER_MANAGERS,
    REGISTRY_EDITORS,
    Exam,
    ExclusionFlag,
    Job,
    JobState,
    Membership,
    Patient,
    QCTResult,
    Role,
)
from .registry import exam_rows, log_access

IMPORT_SESSION_KEY = "qct_import"
DEFAULT_PER_PAGE = 50


def _patient(project, patient_id):
    return get_object_or_404(Patient, project=project, pk=patient_id)


def _delete_if_unchanged(instance, version):
    """Delete ``instance`` only if it still has the version the page showed (a conditional delete; the audit
    log records it). Without a version (older pages, scripts) it is deleted as it is. Returns True if deleted."""
    rows = type(instance).objects.filter(pk=instance.pk)
    if version.isdigit():
        rows = rows.filter(version=int(version))
    try:
        with transaction.atomic():
            deleted, _ = rows.delete()
    except IntegrityError:
        # An import that held the row wrote rows referring to it meanwhile: it changed, so nothing is deleted.
        return False
    return bool(deleted)


@login_required
def project_list(request):
    projects = projects_for(request.user).distinct().annotate(
        n_patients=Count("patients", distinct=True)
    )
    return render(request, "studies/project_list.html", {"projects": projects})


@login_required
def project_detail(request, project_id):
    project = get_project_for_user(request, project_id)
    if request.project_role == Role.ANNOTATOR and "overview" not in request.GET:
        return redirect("review:queue", project.pk)  # annotators see the review queue first
    counts = dict(
        QCTResult.objects.filter(exam__patient__project=project).values_list("category").annotate(n=Count("pk"))
    )
    form = None
    if request.project_role in REGISTRY_EDITORS:
        form = ProjectThresholdsForm(request.POST or None, instance=project)
        if request.method == "POST" and form.is_valid():
            thresholds_changed = {"osteoporosis_below", "normal_above"} & set(form.changed_data)
            with transaction.atomic():
                form.save()
                if thresholds_changed:
                    job = jobs.submit("registry.recategorize", project=project, user=request.user,
                                      project_id=project.pk, user_id=request.user.pk)
            if thresholds_changed:
                messages.info(request, "Thresholds saved; categories are being recomputed.")
                return redirect(job)
            messages.success(request, "Project saved.")
            return redirect(project)
    context = {
        "project": project,
        "role": request.project_role,
        "n_patients": project.patients.count(),
        "n_exams": Exam.objects.filter(patient__project=project).count(),
        "category_counts": counts,
        "form": form,
        "recent_jobs": project.jobs.all()[:5],
    }
    return render(request, "studies/project_detail.html", context)


def _list_filters(form):
    """The registry filters of a bound, valid ``PatientFilterForm`` (none otherwise)."""
    if not form.is_bound or not form.is_valid():
        return {}
    data = form.cleaned_data
    return {"search": data["q"].strip(), "category": data["category"], "split": data["split"],
            "excluded": data["excluded"], "region": data["region"]}


@login_required
def patient_list(request, project_id):
    project = get_project_for_user(request, project_id)
    # The page size shown selected is the one used (an unbound form would show its first choice, 25).
    form = PatientFilterForm(request.GET or None, initial={"per_page": DEFAULT_PER_PAGE})
    filters = _list_filters(form)
    per_page = (form.cleaned_data["per_page"] if filters else None) or DEFAULT_PER_PAGE
    paginator = Paginator(exam_rows(project, **filters), per_page)
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    export_query = query.copy()
    export_query.pop("per_page", None)
    log_access(request.user, project, "view_patient_list", query.urlencode())
    return render(request, "studies/patient_list.html", {
        "project": project, "form": form, "page": page, "query": query.urlencode(),
        "export_query": export_query.urlencode(), "can_edit": request.project_role in REGISTRY_EDITORS,
    })


@login_required
def patient_detail(request, project_id, patient_id):
    project = get_project_for_user(request, project_id)
    patient = _patient(project, patient_id)
    exams = (patient.exams.select_related("qct").prefetch_related("cohort_memberships__cohort", "exclusions")
             .order_by("exam_date"))
    log_access(request.user, project, "view_patient", patient.pseudonym)
    return render(request, "studies/patient_detail.html", {
        "project": project, "patient": patient, "exams": exams,
        "flags": patient.exclusions.select_related("exam"),
        "can_edit": request.project_role in REGISTRY_EDITORS,
        "flag_form": ExclusionFlagForm(patient=patient),
    })


@login_required
def patient_edit(request, project_id, patient_id=None):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    patient = _patient(project, patient_id) if patient_id else None
    form = PatientForm(request.POST or None, instance=patient, project=project)
    if request.method == "POST" and form.is_valid():
        patient = form.save()
        messages.success(request, f"Patient {patient.pseudonym} saved.")
        return redirect(patient)
    return render(request, "studies/form.html", {
        "project": project, "form": form, "title": f"Edit patient {patient}" if patient else "Add patient",
        "cancel_url": patient.get_absolute_url() if patient else reverse("studies:patient_list", args=[project.pk]),
    })


@login_required
def exam_edit(request, project_id, patient_id, exam_id=None):
    """Add or edit an exam together with its QCT values, in one transaction."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    patient = _patient(project, patient_id)
    exam = get_object_or_404(Exam, patient=patient, pk=exam_id) if exam_id else None
    qct = getattr(exam, "qct", None) if exam else None
    exam_form = ExamForm(request.POST or None, instance=exam, patient=patient, prefix="exam")
    qct_form = QCTForm(request.POST or None, instance=qct, prefix="qct")
    if request.method == "POST" and exam_form.is_valid() and qct_form.is_valid():
        saved = save_exam_forms(exam_form, qct_form)
        if saved:
            exam, qct = saved
            # floatformat rounds half up, as the patient page does (93.25 -> 93.3, where :.1f gives 93.2).
            messages.success(request, f"Exam of {exam.exam_date:%Y-%m-%d} saved: QCT BMD "
                                      f"{floatformat(qct.qct_bmd, 1)} mg/cm3, {qct.category}.")
            return redirect(patient)
    return render(request, "studies/exam_form.html", {
        "project": project, "patient": patient, "exam": exam, "exam_form": exam_form, "qct_form": qct_form,
    })


@login_required
@require_POST
def exam_delete(request, project_id, patient_id, exam_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    exam = get_object_or_404(Exam, patient__project=project, patient_id=patient_id, pk=exam_id)
    patient = exam.patient
    if not _delete_if_unchanged(exam, request.POST.get("version", "")):
        messages.error(request, f"Not deleted: the exam of {exam.exam_date:%Y-%m-%d} was changed by someone else "
                                "since you opened it; check it and delete it again if it should go.")
        return redirect(patient)
    messages.success(request, f"Exam of {exam.exam_date:%Y-%m-%d} deleted.")
    return redirect(patient)


@login_required
@require_POST
def flag_add(request, project_id, patient_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    patient = _patient(project, patient_id)
    form = ExclusionFlagForm(request.POST, patient=patient)
    if form.is_valid():
        flag = form.save()
        messages.success(request, f"Exclusion flag added: {flag.get_reason_display()}.")
    else:
        messages.error(request, "Flag not added: " + "; ".join(e for errs in form.errors.values() for e in errs))
    return redirect(patient)


@login_required
def flag_edit(request, project_id, patient_id, flag_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    patient = _patient(project, patient_id)
    flag = get_object_or_404(ExclusionFlag, patient=patient, pk=flag_id)
    form = ExclusionFlagForm(request.POST or None, instance=flag, patient=patient)
    if request.method == "POST" and form.is_valid() and save_versioned(form, "this exclusion flag"):
        messages.success(request, f"Exclusion flag saved: {flag.get_reason_display()}.")
        return redirect(patient)
    return render(request, "studies/form.html", {
        "project": project, "form": form, "title": f"Exclusion flag of patient {patient}",
        "cancel_url": patient.get_absolute_url(),
    })


@login_required
@require_POST
def flag_delete(request, project_id, patient_id, flag_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    flag = get_object_or_404(ExclusionFlag, patient__project=project, patient_id=patient_id, pk=flag_id)
    if not _delete_if_unchanged(flag, request.POST.get("version", "")):
        messages.error(request, "Not removed: someone else changed this exclusion flag since you opened the page; "
                                "check it and remove it again if it should go.")
        return redirect(flag.patient)
    messages.success(request, "Exclusion flag removed.")
    return redirect(flag.patient)


@login_required
def patient_history(request, project_id, patient_id):
    project = get_project_for_user(request, project_id)
    patient = _patient(project, patient_id)
    entries = (LogEntry.objects.filter(Q(additional_data__patient_id=patient.pk), Q(additional_data__project_id=project.pk))
               .select_related("actor", "content_type").order_by("-timestamp"))
    entries = list(entries)
    for entry in entries:
        entry.who, entry.change_rows = actor_name(entry), change_rows(entry)
    return render(request, "studies/history.html", {"project": project, "patient": patient, "entries": entries})


@login_required
def import_csv(request, project_id):
    """Upload -> preview with every row's errors -> confirm. The checked file waits in the file storage; the
    confirmed import runs in the request for a small file and as a job (with progress) for a large one."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    context = {"project": project, "required": REQUIRED_COLUMNS, "optional": OPTIONAL_COLUMNS}
    if request.method == "POST" and "confirm" in request.POST:
        pending = request.session.get(IMPORT_SESSION_KEY)
        if not pending or pending.get("project") != project.pk or "path" not in pending:
            messages.error(request, "Nothing to import; upload the file again.")
            return redirect("studies:import_csv", project.pk)
        del request.session[IMPORT_SESSION_KEY]
        if pending["counts"]["rows"] > importers.INLINE_MAX_ROWS:
            with transaction.atomic():
                job = importers.submit_import_job(project, request.user, pending["path"], source=pending["name"],
                                                  expected=pending["counts"])
            return redirect(job)
        try:
            plan = importers.import_pending(project, pending["path"], source=pending["name"],
                                            expected=pending["counts"], actor=request.user)
        except CSVImportError as exc:
            context.update(plan=importers.ImportPlan(errors=exc.errors), name=pending["name"])
            return render(request, "studies/import.html", context)
        messages.success(request, f"Imported {len(plan.rows)} row(s) from {pending['name']}.")
        return redirect("studies:patient_list", project.pk)
    form = CSVUploadForm(request.POST or None, request.FILES or None)
    context["form"] = form
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        data = upload.read()
        try:
            plan = parse_qct_csv(data, source=upload.name, project=project)
        except CSVImportError as exc:
            plan = None
            for error in exc.errors:
                form.add_error("file", error)
        if plan is not None:
            if plan.ok:
                request.session[IMPORT_SESSION_KEY] = {
                    "project": project.pk, "name": upload.name, "counts": plan.counts,
                    "path": importers.save_pending(project, data),
                }
            context.update(plan=plan, name=upload.name, preview=plan.rows[:20],
                           as_job=len(plan.rows) > importers.INLINE_MAX_ROWS)
    return render(request, "studies/import.html", context)


@login_required
def export_csv(request, project_id):
    """The registry as CSV, with the patient list's filters (its export link passes them on)."""
    project = get_project_for_user(request, project_id)
    form = PatientFilterForm(request.GET or None)
    filters = _list_filters(form)
    buffer = io.StringIO()
    count = write_cohort_csv(project, buffer, **filters)
    described = ", ".join(f"{k}={v}" for k, v in filters.items() if v)
    log_access(request.user, project, "export_cohort_csv", f"web, {count} rows{', ' + described if described else ''}")
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="cohort-{project.pk}-{stamp}.csv"'
    return response


@login_required
def members(request, project_id):
    project = get_project_for_user(request, project_id)
    can_manage = request.project_role in MEMBER_MANAGERS
    form = MembershipForm(request.POST or None, project=project) if can_manage else None
    if request.method == "POST":
        if not can_manage:
            return HttpResponse("Only project admins manage members.", status=403)
        if form.is_valid():
            messages.info(request, form.add_member())
            return redirect("studies:members", project.pk)
    memberships = project.memberships.select_related("user").order_by("user__username")
    rows = [(m, MembershipRoleForm(instance=m, prefix=f"m{m.pk}") if can_manage else None) for m in memberships]
    return render(request, "studies/members.html", {
        "project": project, "rows": rows, "form": form, "can_manage": can_manage,
    })


@login_required
@require_POST
def member_role(request, project_id, membership_id):
    """Change a member's role (versioned: a role changed by someone else since the page was opened is kept)."""
    project = get_project_for_user(request, project_id, roles=MEMBER_MANAGERS)
    membership = get_object_or_404(Membership.objects.select_related("user"), project=project, pk=membership_id)
    form = MembershipRoleForm(request.POST, instance=membership, prefix=f"m{membership.pk}")
    if form.is_valid() and save_versioned(form, f"the role of {membership.user}"):
        messages.success(request, f"{membership.user} is now {membership.get_role_display()}.")
    else:
        messages.error(request, "Role not changed: " + " ".join(e for errs in form.errors.values() for e in errs))
    return redirect("studies:members", project.pk)


@login_required
@require_POST
def member_remove(request, project_id, membership_id):
    project = get_project_for_user(request, project_id, roles=MEMBER_MANAGERS)
    membership = get_object_or_404(Membership, project=project, pk=membership_id)
    if not _delete_if_unchanged(membership, request.POST.get("version", "")):
        messages.error(request, f"Not removed: the membership of {membership.user} changed since you opened the "
                                "page; check it and remove it again if it should go.")
        return redirect("studies:members", project.pk)
    messages.success(request, f"{membership.user} removed from {project}.")
    return redirect("studies:members", project.pk)


def _job_for_user(request, job_id):
    """The job if the user may see it: a member of its project, or whoever started a job outside projects."""
    job = get_object_or_404(Job.objects.select_related("project"), pk=job_id)
    if job.project is None:
        if not request.user.is_superuser and job.created_by_id != request.user.pk:
            raise Http404("No such job.")
    else:
        get_project_for_user(request, job.project_id)
    return job


@login_required
def job_list(request):
    visible = Job.objects.filter(Q(project__in=projects_for(request.user)) | Q(created_by=request.user))
    jobs.reconcile(visible)
    queues, queue_error = jobs.queue_health(visible)
    return render(request, "studies/job_list.html", {
        "jobs": visible.select_related("project")[:200], "queues": queues, "queue_error": queue_error,
    })


@login_required
def job_detail(request, job_id):
    job = _job_for_user(request, job_id)
    if not job.is_finished and jobs.reconcile(Job.objects.filter(pk=job.pk)):
        job.refresh_from_db()
    template = "studies/_job_status.html" if request.GET.get("partial") else "studies/job_detail.html"
    can_act = job_kinds.may_act(request.user, job)
    return render(request, template, {
        "job": job,
        "project": job.project,
        "can_act": can_act,
        "can_retry": can_act and job.state in (JobState.FAILED, JobState.CANCELLED),
        "can_cancel": can_act and job.state in (JobState.QUEUED, JobState.RUNNING),
        "show_traceback": job_kinds.may_see_traceback(request.user, job),
        "parameters": job_kinds.parameter_rows(job) if can_act else [],
        "results": job_kinds.result_rows(job) if can_act else [],
        "produced": job_kinds.produced_links(job),
        "summary": job_kinds.summary(job) if can_act else "",
    })


@login_required
@require_POST
def job_retry(request, job_id):
    job = _job_for_user(request, job_id)
    try:
        jobs.retry(job, user=request.user)
    except jobs.JobError as exc:
        messages.error(request, str(exc))
    return redirect(job)


@login_required
@require_POST
def job_cancel(request, job_id):
    job = _job_for_user(request, job_id)
    try:
        jobs.cancel(job, user=request.user)
    except jobs.JobError as exc:
        messages.error(request, str(exc))
    return redirect(job)
