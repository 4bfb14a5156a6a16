"""Model version pages: the list of a project's versions, one version's metrics and charts, the comparison of
versions, and the cohort table."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from studies.access import get_project_for_user
from studies.models import TRAINING_LAUNCHERS, Cohort

from . import dashboards
from .forms import CohortTableForm, CompareForm, MeasureExamForm, ReportForm, SplitsForm, TrainForm
from .models import ModelVersion


def _model_list(request, project, train_form=None, status=200):
    from analysis.modeling.staleness import stale_reasons

    # The snapshots are loaded (not deferred): staleness compares them with the registry's current values.
    versions = list(ModelVersion.objects.filter(project=project).select_related("cohort"))
    stale = stale_reasons(versions)
    metrics = dashboards.list_metrics(versions)
    for version in versions:
        version.stale_reasons = stale.get(version.pk, [])
        version.list_metric = metrics[version.pk]
    can_train = request.project_role in TRAINING_LAUNCHERS
    if can_train and train_form is None and Cohort.objects.filter(project=project).exists():
        train_form = TrainForm(project=project)
    return render(request, "analysis/model_list.html",
                  {"project": project, "versions": versions, "can_train": can_train, "train_form": train_form,
                   "cohorts": Cohort.objects.filter(project=project)},
                  status=status)


@login_required
def model_list(request, project_id):
    project = get_project_for_user(request, project_id)
    return _model_list(request, project)


@login_required
def model_detail(request, project_id, version_id):
    project = get_project_for_user(request, project_id)
    version = get_object_or_404(ModelVersion, project=project, pk=version_id)
    headers = dashboards.CLASSIFICATION_HEADERS if version.task == "classification" else dashboards.REGRESSION_HEADERS
    evaluation = version.evaluations.defer("resamples").first()
    snapshot = version.data_snapshot
    from analysis.modeling.staleness import stale_reasons
    return render(request, "analysis/model_detail.html", {
        "project": project, "version": version, "headers": headers, "rows": dashboards.metric_rows(version),
        "panels": dashboards.version_panels(version), "calibration": dashboards.calibration_panel(version),
        "reliability": dashboards.reliability_panels(version),
        "n_resamples": evaluation.n_resamples if evaluation else 0,
        "n_used": len(snapshot.get("exam_ids", [])), "left_out": dashboards.left_out_rows(version),
        "stale_reasons": stale_reasons([version]).get(version.pk, []),
    })


@login_required
def model_compare(request, project_id):
    """Two or more versions side by side on one split, with the paired test of every pair."""
    project = get_project_for_user(request, project_id)
    form = CompareForm(request.GET or None, project=project)
    result = None
    if form.is_valid():
        try:
            result = dashboards.comparison(form.cleaned_data["v"], form.cleaned_data["split"])
        except ValueError as exc:
            form.add_error(None, str(exc))
    status = 400 if request.GET and not form.is_valid() else 200
    return render(request, "analysis/model_compare.html", {"project": project, "form": form, "result": result},
                  status=status)


@login_required
def cohort_table(request, project_id):
    """Table 1 of the seed study (age, sex, BMD category by split, with the tests across splits)."""
    project = get_project_for_user(request, project_id)
    form = CohortTableForm(request.GET or {"cohort": Cohort.DEFAULT_NAME}, project=project)
    panel = None
    if form.is_valid():
        panel = dashboards.cohort_panel(project, form.cleaned_data["cohort"],
                                        include_excluded=form.cleaned_data["include_excluded"])
    return render(request, "analysis/cohort_table.html", {"project": project, "form": form, "panel": panel})


@login_required
@require_POST
def train(request, project_id):
    """Start the model grid with the measurement source chosen on the page; one training per project at a time."""
    project = get_project_for_user(request, project_id, roles=TRAINING_LAUNCHERS)
    form = TrainForm(request.POST, project=project)
    job = form.submit(request.user) if form.is_valid() else None
    if job is None:
        return _model_list(request, project, train_form=form, status=409 if hasattr(form, "running_job") else 400)
    data = form.cleaned_data
    messages.info(request, f"Training the model grid on cohort {data['cohort']!r} (seed {data['seed']}, "
                           f"measurements: {data['measurement_source'] or 'project default'}).")
    return redirect(job)


@login_required
def exam_measurements(request, project_id, exam_id):
    """An exam's measurement runs with their per-level trabecular HU; editors can start a new run."""
    from studies.models import REGISTRY_EDITORS, Exam

    from .models import MeasurementRun

    project = get_project_for_user(request, project_id)
    exam = get_object_or_404(Exam.objects.select_related("patient", "review_case"), patient__project=project,
                             pk=exam_id)
    can_measure = request.project_role in REGISTRY_EDITORS
    has_series = exam.stored_series.exists()
    form = MeasureExamForm(request.POST if request.method == "POST" else None, project=project)
    status = 200
    if request.method == "POST":
        if not can_measure:
            raise PermissionDenied("Only coordinators and admins start measurements.")
        if not has_series:
            messages.error(request, "This exam has no stored CT series to measure; pull or import one first.")
            return redirect("analysis:exam_measurements", project.pk, exam.pk)
        if form.is_valid():
            return redirect(form.submit(exam, request.user))
        status = 400
    runs = MeasurementRun.objects.filter(exam=exam).prefetch_related("levels").order_by("-created_at", "-pk")
    return render(request, "analysis/exam_measurements.html", {
        "project": project, "exam": exam, "runs": runs, "can_measure": can_measure and has_series,
        "has_series": has_series, "form": form,
        # The case page (viewer and level review) once the exam has a review case.
        "has_case": hasattr(exam, "review_case"),
        "segmenter_choices": form.choices() if can_measure and has_series else [],
    }, status=status)


@login_required
def cohort_splits(request, project_id):
    """The study's splits of a cohort: exams from a date on are test, the rest random train/validation."""
    from analysis.modeling.cohort_splits import make_splits

    project = get_project_for_user(request, project_id)
    can_split = request.project_role in TRAINING_LAUNCHERS
    form = SplitsForm(request.POST or None, initial={"cohort": "study", "test_from": "2023-03-01"})
    status = 200
    if request.method == "POST":
        if not can_split:
            raise PermissionDenied("Only PIs and admins make splits.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                cohort, counts = make_splits(project, data["cohort"], test_from=data["test_from"],
                                             validation_share=data["validation_share"], stratify=data["stratify"],
                                             random_state=data["seed"])
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Cohort {cohort.name!r}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
                return redirect("analysis:cohort_splits", project.pk)
        status = 400
    return render(request, "analysis/cohort_splits.html", {
        "project": project, "form": form, "can_split": can_split, "cohorts": dashboards.cohort_split_counts(project),
    }, status=status)


def _report(request, project):
    """The report form and the report (None when the form is invalid) of a request."""
    from . import report

    data = request.GET.copy()
    data.setdefault("classifier", "BDT")
    data.setdefault("regressor", "SGD")
    form = ReportForm(data, project=project)
    if not form.is_valid():
        return form, None
    versions = list(form.cleaned_data["v"]) or report.default_versions(project)
    return form, report.study_report(project, versions, classifier=form.cleaned_data["classifier"],
                                     regressor=form.cleaned_data["regressor"])


@login_required
def study_report(request, project_id):
    """The seed study's tables 1-5 and figures 4-8 for a set of versions (``?print=1``: printable)."""
    project = get_project_for_user(request, project_id)
    form, result = _report(request, project)
    query = request.GET.copy()
    query.pop("print", None)
    return render(request, "analysis/report.html", {
        "project": project, "form": form, "report": result, "printable": request.GET.get("print") == "1",
        "query": query.urlencode(),
    }, status=200 if result is not None else 400)


@login_required
def study_report_csv(request, project_id, table_id):
    """One table of the study report as CSV (the same rows as the page)."""
    from django.http import Http404, HttpResponse

    from . import report

    project = get_project_for_user(request, project_id)
    form, result = _report(request, project)
    if result is None or table_id not in result["tables"]:
        raise Http404("No such table in this report.")
    response = HttpResponse(report.table_csv(result["tables"][table_id]), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{table_id}.csv"'
    return response
