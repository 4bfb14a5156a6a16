"""Registry pages. Views check access, validate with a form, call one registry function and render."""

import io

from auditlog.models import LogEntry
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import jobs
from .access import get_project_for_user, projects_for, role_in
from .exporters import write_cohort_csv
from .forms import (
    CSVUploadForm,
    ExamForm,
    ExclusionFlagForm,
    MembershipForm,
    PatientFilterForm,
    PatientForm,
    ProjectThresholdsForm,
    QCTForm,
)
from .importers import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, CSVImportError, import_qct_rows, parse_qct_csv
from .models import (
    MEMBER_MANAGERS,
    REGISTRY_EDITORS,
    Exam,
    ExclusionFlag,
    Job,
    Membership,
    Patient,
    QCTResult,
    Role,
)
from .registry import exam_rows, log_access

IMPORT_SESSION_KEY = "qct_import"


def _patient(project, patient_id):
    return get_object_or_404(Patient, project=project, pk=patient_id)


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
                                      project_id=project.pk)
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


@login_required
def patient_list(request, project_id):
    project = get_project_for_user(request, project_id)
    form = PatientFilterForm(request.GET or None)
    filters = {}
    per_page = 50
    if form.is_valid():
        data = form.cleaned_data
        filters = {"search": data["q"].strip(), "category": data["category"], "split": data["split"],
                   "excluded": data["excluded"], "region": data["region"]}
        per_page = data["per_page"] or 50
    paginator = Paginator(exam_rows(project, **filters), per_page)
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    log_access(request.user, project, "view_patient_list", query.urlencode())
    return render(request, "studies/patient_list.html", {
        "project": project, "form": form, "page": page, "query": query.urlencode(),
        "can_edit": request.project_role in REGISTRY_EDITORS,
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
        with transaction.atomic():
            exam = exam_form.save()
            qct = qct_form.save(commit=False)
            qct.exam = exam
            qct.save()
        messages.success(request, f"Exam of {exam.exam_date:%Y-%m-%d} saved: QCT BMD {qct.qct_bmd:.1f} mg/cm3, "
                                  f"{qct.category}.")
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
    exam.delete()
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
@require_POST
def flag_delete(request, project_id, patient_id, flag_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    flag = get_object_or_404(ExclusionFlag, patient__project=project, patient_id=patient_id, pk=flag_id)
    flag.delete()
    messages.success(request, "Exclusion flag removed.")
    return redirect(flag.patient)


@login_required
def patient_history(request, project_id, patient_id):
    project = get_project_for_user(request, project_id)
    patient = _patient(project, patient_id)
    entries = (LogEntry.objects.filter(Q(additional_data__patient_id=patient.pk), Q(additional_data__project_id=project.pk))
               .select_related("actor", "content_type").order_by("-timestamp"))
    return render(request, "studies/history.html", {"project": project, "patient": patient, "entries": entries})


@login_required
def import_csv(request, project_id):
    """Upload -> preview with per-row errors -> confirm. The checked rows wait in the session."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    context = {"project": project, "required": REQUIRED_COLUMNS, "optional": OPTIONAL_COLUMNS}
    if request.method == "POST" and "confirm" in request.POST:
        pending = request.session.get(IMPORT_SESSION_KEY)
        if not pending or pending["project"] != project.pk:
            messages.error(request, "Nothing to import; upload the file again.")
            return redirect("studies:import_csv", project.pk)
        with transaction.atomic():
            plan = parse_qct_csv(pending["text"], source=pending["name"], project=project)
            if plan.errors:
                context.update(plan=plan, name=pending["name"])
                return render(request, "studies/import.html", context)
            count = import_qct_rows(project, plan.rows)
        del request.session[IMPORT_SESSION_KEY]
        messages.success(request, f"Imported {count} row(s) from {pending['name']}.")
        return redirect("studies:patient_list", project.pk)
    form = CSVUploadForm(request.POST or None, request.FILES or None)
    context["form"] = form
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            text = upload.read().decode("utf-8-sig")
            plan = parse_qct_csv(text, source=upload.name, project=project)
        except UnicodeDecodeError:
            plan, text = None, None
            form.add_error("file", f"{upload.name} is not UTF-8 text; save it as UTF-8 CSV.")
        except CSVImportError as exc:
            plan, text = None, None
            for error in exc.errors:
                form.add_error("file", error)
        if plan is not None:
            if plan.ok:
                request.session[IMPORT_SESSION_KEY] = {"project": project.pk, "name": upload.name, "text": text}
            context.update(plan=plan, name=upload.name, preview=plan.rows[:20])
    return render(request, "studies/import.html", context)


@login_required
def export_csv(request, project_id):
    project = get_project_for_user(request, project_id)
    buffer = io.StringIO()
    count = write_cohort_csv(project, buffer)
    log_access(request.user, project, "export_cohort_csv", f"web, {count} rows")
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
            membership = form.save()
            messages.success(request, f"{membership.user} added as {membership.get_role_display()}.")
            return redirect("studies:members", project.pk)
    return render(request, "studies/members.html", {
        "project": project, "memberships": project.memberships.select_related("user").order_by("user__username"),
        "form": form, "can_manage": can_manage,
    })


@login_required
@require_POST
def member_remove(request, project_id, membership_id):
    project = get_project_for_user(request, project_id, roles=MEMBER_MANAGERS)
    membership = get_object_or_404(Membership, project=project, pk=membership_id)
    membership.delete()
    messages.success(request, f"{membership.user} removed from {project}.")
    return redirect("studies:members", project.pk)


def _job_for_user(request, job_id):
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
    return render(request, "studies/job_list.html", {"jobs": visible.select_related("project")[:200]})


@login_required
def job_detail(request, job_id):
    job = _job_for_user(request, job_id)
    if job.state == "running" and jobs.reconcile(Job.objects.filter(pk=job.pk)):
        job.refresh_from_db()
    template = "studies/_job_status.html" if request.GET.get("partial") else "studies/job_detail.html"
    can_retry = job.state == "failed" and (
        job.created_by_id == request.user.pk or (job.project and role_in(request.user, job.project) in REGISTRY_EDITORS)
    )
    return render(request, template, {"job": job, "can_retry": can_retry})


@login_required
@require_POST
def job_retry(request, job_id):
    job = _job_for_user(request, job_id)
    try:
        jobs.retry(job)
    except jobs.JobError as exc:
        messages.error(request, str(exc))
    return redirect(job)
