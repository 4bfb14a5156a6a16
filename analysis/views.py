"""Model version pages: the list of a project's versions, one version's metrics and charts, the comparison of
versions, and the cohort table."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from studies import jobs
from studies.access import get_project_for_user
from studies.models import TRAINING_LAUNCHERS, Cohort

from . import dashboards
from .forms import CohortTableForm, CompareForm
from .models import ModelVersion

@login_required
def model_list(request, project_id):
    project = get_project_for_user(request, project_id)
    versions = ModelVersion.objects.filter(project=project).select_related("cohort")
    cohorts = Cohort.objects.filter(project=project)
    can_train = request.project_role in TRAINING_LAUNCHERS
    from studies.review.staleness import stale_versions

    return render(request, "analysis/model_list.html",
                  {"project": project, "versions": versions, "cohorts": cohorts, "can_train": can_train,
                   "stale": stale_versions(project)})


@login_required
def model_detail(request, project_id, version_id):
    project = get_project_for_user(request, project_id)
    version = get_object_or_404(ModelVersion, project=project, pk=version_id)
    headers = dashboards.CLASSIFICATION_HEADERS if version.task == "classification" else dashboards.REGRESSION_HEADERS
    evaluation = version.evaluations.first()
    snapshot = version.data_snapshot
    return render(request, "analysis/model_detail.html", {
        "project": project, "version": version, "headers": headers, "rows": dashboards.metric_rows(version),
        "panels": dashboards.version_panels(version), "calibration": dashboards.calibration_panel(version),
        "n_resamples": evaluation.n_resamples if evaluation else 0,
        "n_used": len(snapshot.get("exam_ids", [])), "left_out": dashboards.left_out_rows(version),
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
    project = get_project_for_user(request, project_id, roles=TRAINING_LAUNCHERS)
    cohort = get_object_or_404(Cohort, project=project, name=request.POST.get("cohort", Cohort.DEFAULT_NAME))
    try:
        seed = int(request.POST.get("seed", "0"))
    except ValueError:
        messages.error(request, "The seed must be a whole number.")
        return redirect("analysis:model_list", project.pk)
    job = jobs.submit("analysis.train_grid", project=project, user=request.user, project_id=project.pk,
                      cohort_name=cohort.name, seed=seed, user_id=request.user.pk)
    messages.info(request, f"Training the model grid on cohort {cohort.name!r} (seed {seed}).")
    return redirect(job)


@login_required
def exam_measurements(request, project_id, exam_id):
    """An exam's measurement runs with their per-level trabecular HU; editors can start a new run."""
    from studies.models import REGISTRY_EDITORS, Exam

    from .models import MeasurementRun

    project = get_project_for_user(request, project_id)
    exam = get_object_or_404(Exam.objects.select_related("patient"), patient__project=project, pk=exam_id)
    can_measure = request.project_role in REGISTRY_EDITORS
    has_series = exam.stored_series.exists()
    if request.method == "POST":
        if not can_measure:
            raise PermissionDenied("Only coordinators and admins start measurements.")
        if not has_series:
            messages.error(request, "This exam has no stored CT series to measure; pull or import one first.")
            return redirect("analysis:exam_measurements", project.pk, exam.pk)
        job = jobs.submit("analysis.measure_exam", project=project, user=request.user, exam_id=exam.pk,
                          user_id=request.user.pk)
        return redirect(job)
    runs = MeasurementRun.objects.filter(exam=exam).prefetch_related("levels").order_by("-created_at", "-pk")
    return render(request, "analysis/exam_measurements.html", {
        "project": project, "exam": exam, "runs": runs, "can_measure": can_measure and has_series,
        "has_series": has_series,
    })
