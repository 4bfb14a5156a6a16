"""PACS pages. Connections are site configuration (site admins only); searching, pulling and importing
belong to a project and need a registry editor's role; the pseudonym map is for project admins.

Views validate a form, call one function (client or ingest, or submit a job) and render."""

import uuid
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from studies import jobs
from studies.access import get_project_for_user
from studies.models import MEMBER_MANAGERS, REGISTRY_EDITORS, Exam, Job
from studies.registry import log_access

from . import ingest
from .client import Endpoint, PacsClient, PacsError
from .forms import CohortPullForm, LinkExamForm, LocalImportForm, PacsConnectionForm, SearchForm, SelectionForm
from .models import PacsConnection, PseudonymMap, StoredSeries
from .uids import is_route_uid

PACS_JOB_KINDS = ("pacs.pull_series", "pacs.pull_exam", "pacs.import_local")


def _site_admin(request):
    if not request.user.is_superuser:
        raise PermissionDenied("PACS connections are configured by site admins.")


def _client(connection):
    return PacsClient(Endpoint.from_connection(connection))


# -- connections (site admins) ------------------------------------------------------------------------------
@login_required
def connection_list(request):
    _site_admin(request)
    return render(request, "studies/pacs/connection_list.html", {"connections": PacsConnection.objects.all()})


@login_required
def connection_edit(request, connection_id=None):
    _site_admin(request)
    connection = get_object_or_404(PacsConnection, pk=connection_id) if connection_id else None
    form = PacsConnectionForm(request.POST or None, instance=connection)
    if request.method == "POST" and form.is_valid():
        connection = form.save()
        messages.success(request, f"PACS connection {connection.name} saved.")
        return redirect("studies:pacs_connections")
    return render(request, "studies/pacs/connection_form.html", {"form": form, "connection": connection})


@login_required
@require_POST
def connection_test(request, connection_id):
    _site_admin(request)
    connection = get_object_or_404(PacsConnection, pk=connection_id)
    try:
        messages.success(request, f"{connection.name}: {_client(connection).test()}")
    except PacsError as exc:
        messages.error(request, f"{connection.name}: {exc}")
    return redirect("studies:pacs_connections")


# -- search and link (registry editors) -----------------------------------------------------------------------
SEARCH_SESSION_KEY = "pacs_search:{project_id}"


@login_required
def search(request, project_id):
    """Search a PACS. The criteria (a real PatientID is PHI) are POSTed and kept in the server-side session,
    then the page is shown by a redirect to its plain URL: no PHI in a URL, so none in access logs, browser
    history or Referer headers; reloading the page runs the last search again."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    key = SEARCH_SESSION_KEY.format(project_id=project.pk)
    if request.method == "POST":
        form = SearchForm(request.POST)
        if form.is_valid():
            request.session[key] = {name: request.POST.get(name, "") for name in form.fields}
            return redirect("studies:pacs_search", project.pk)
    else:
        saved = request.session.get(key)
        form = SearchForm(saved) if saved else SearchForm()
    studies, error = None, ""
    if request.method == "GET" and form.is_bound and form.is_valid():
        data = form.cleaned_data
        log_access(request.user, project, "pacs_search",
                   f"{data['connection'].name}: patient id {'given' if data['patient_id'] else 'none'}, "
                   f"{data['date_from'] or ''}..{data['date_to'] or ''} {data['modality']}")
        try:
            studies = _client(data["connection"]).search_studies(
                patient_id=data["patient_id"].strip(), date_from=data["date_from"], date_to=data["date_to"],
                modality=data["modality"].strip())
        except PacsError as exc:
            error = str(exc)
    linked = dict(Exam.objects.filter(patient__project=project).exclude(study_uid="")
                  .values_list("study_uid", "pk")) if studies else {}
    rows = [(hit, is_route_uid(hit.study_uid), linked.get(hit.study_uid)) for hit in studies or []]
    return render(request, "studies/pacs/search.html", {
        "project": project, "form": form, "studies": studies, "rows": rows, "error": error,
        "link_form": LinkExamForm(project=project),
    })


def _safe_next(request, default: str) -> str:
    """The ``next`` URL of a form when it stays on this site (same host, same or safer scheme), else ``default``."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default


@login_required
@require_POST
def link_exam(request, project_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    form = LinkExamForm(request.POST, project=project)
    if form.is_valid():
        exam = form.cleaned_data["exam"]
        exam.study_uid = form.cleaned_data["study_uid"]
        exam.save(update_fields=["study_uid"])
        messages.success(request, f"Study {exam.study_uid} linked to exam {exam}.")
    else:
        problems = "; ".join(e for errors in form.errors.values() for e in errors)
        messages.error(request, f"Not linked: {problems}")
    return redirect(_safe_next(request, reverse("studies:pacs_search", args=[project.pk])))


# -- series selection and pull ---------------------------------------------------------------------------------
@login_required
def study(request, project_id, connection_id, study_uid):
    """The study's series with the reason for each; pull the chosen one (or override) as a job."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    connection = get_object_or_404(PacsConnection, pk=connection_id)
    try:
        selection = ingest.select_in_study(_client(connection), study_uid)
    except (PacsError, ingest.IngestError) as exc:
        return render(request, "studies/pacs/study.html", {"project": project, "connection": connection,
                                                           "study_uid": study_uid, "error": str(exc)})
    exam = Exam.objects.filter(patient__project=project, study_uid=study_uid).first()
    form = SelectionForm(request.POST or None, project=project, selection=selection,
                         initial={"exam": exam.pk if exam else None})
    if request.method == "POST" and form.is_valid():
        chosen = form.cleaned_data["series_uid"]
        exam = form.cleaned_data["exam"]
        with transaction.atomic():
            job = jobs.submit("pacs.pull_series", project=project, user=request.user, project_id=project.pk,
                              connection_id=connection.pk, study_uid=study_uid,
                              series_uid=chosen if form.is_override else "",
                              exam_id=exam.pk if exam else None, user_id=request.user.pk)
        return redirect(job)
    stored = set(StoredSeries.objects.filter(project=project, study_uid=study_uid).values_list("series_uid",
                                                                                                 flat=True))
    return render(request, "studies/pacs/study.html", {
        "project": project, "connection": connection, "study_uid": study_uid, "selection": selection,
        "form": form, "stored": stored,
    })


@login_required
def cohort_pull(request, project_id):
    """Pull every exam of a cohort: one job per exam (its own progress), skipping stored or UID-less exams."""
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    form = CohortPullForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        cohort, connection = form.cleaned_data["cohort"], form.cleaned_data["connection"]
        exams = Exam.objects.filter(cohort_memberships__cohort=cohort).order_by("pk").distinct()
        submitted, skipped = 0, []
        with transaction.atomic():
            for exam in exams:
                if not exam.study_uid:
                    skipped.append(f"{exam}: no StudyInstanceUID")
                elif exam.stored_series.exists():
                    skipped.append(f"{exam}: already stored")
                else:
                    jobs.submit("pacs.pull_exam", project=project, user=request.user, exam_id=exam.pk,
                                connection_id=connection.pk, user_id=request.user.pk)
                    submitted += 1
        messages.info(request, f"{submitted} pull job(s) submitted for cohort {cohort.name}"
                               + (f"; skipped {len(skipped)}: " + "; ".join(skipped[:10]) if skipped else "."))
        return redirect("studies:pacs_cohort_pull", project.pk)
    recent = Job.objects.filter(project=project, kind__in=PACS_JOB_KINDS).order_by("-created_at")[:100]
    return render(request, "studies/pacs/cohort_pull.html", {"project": project, "form": form, "jobs": recent})


@login_required
def local_import(request, project_id):
    project = get_project_for_user(request, project_id, roles=REGISTRY_EDITORS)
    form = LocalImportForm(request.POST or None, request.FILES or None, project=project,
                           allow_folder=request.user.is_superuser)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data.get("file"):
            uploads = Path(settings.STORAGE_ROOT) / "uploads"
            uploads.mkdir(parents=True, exist_ok=True)
            path = uploads / f"{uuid.uuid4().hex}.zip"
            with open(path, "wb") as fh:
                for chunk in data["file"].chunks():
                    fh.write(chunk)
            delete = True
        else:
            path, delete = Path(data["folder"]), False
        with transaction.atomic():
            job = jobs.submit("pacs.import_local", project=project, user=request.user, project_id=project.pk,
                              path=str(path), exam_id=data["exam"].pk if data["exam"] else None,
                              series_uid=data["series_uid"].strip() or None, user_id=request.user.pk,
                              delete_source=delete)
        return redirect(job)
    return render(request, "studies/pacs/import.html", {"project": project, "form": form})


@login_required
def series_list(request, project_id):
    project = get_project_for_user(request, project_id)
    rows = StoredSeries.objects.filter(project=project).select_related("exam__patient")
    return render(request, "studies/pacs/series_list.html", {"project": project, "series": rows})


# -- the pseudonym map (project admins) -------------------------------------------------------------------------
@login_required
def pseudonyms(request, project_id):
    project = get_project_for_user(request, project_id, roles=MEMBER_MANAGERS)
    log_access(request.user, project, "view_pseudonym_map")
    rows = PseudonymMap.objects.filter(project=project).select_related("created_by")
    return render(request, "studies/pacs/pseudonyms.html", {"project": project, "rows": rows})
