"""Model version pages: the list of a project's versions and one version's metrics with CIs."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from studies import jobs
from studies.access import get_project_for_user
from studies.models import TRAINING_LAUNCHERS, Cohort

from .models import ModelVersion

SPLIT_ORDER = ("train", "validation", "test")


def _with_ci(metrics, key, ci_key=None, digits=3):
    value = metrics.get(key)
    if value is None:
        return "–"
    low, high = (metrics.get("ci") or {}).get(ci_key or key) or (None, None)
    text = f"{value:.{digits}f}"
    return f"{text} ({low:.{digits}f}–{high:.{digits}f})" if low is not None and high is not None else text


def _rows(version):
    """One table row per evaluated split, values formatted with their 95% CIs."""
    rows = []
    for evaluation in sorted(version.evaluations.all(), key=lambda e: SPLIT_ORDER.index(e.split)):
        m = evaluation.metrics
        row = {"split": evaluation.split, "n": evaluation.n, "error": m.get("error", "")}
        if not row["error"] and version.task == "classification":
            binary = m.get("binary") or {}
            auc_ci = (binary.get("auc_ci_low"), binary.get("auc_ci_high"))
            row["cells"] = [
                _with_ci(m, "macro_auc"), _with_ci(m, "macro_sensitivity"), _with_ci(m, "macro_specificity"),
                _with_ci(m, "accuracy"), _with_ci(m, "macro_precision"), _with_ci(m, "macro_f1"),
                f"{binary['auc']:.3f} ({auc_ci[0]:.3f}–{auc_ci[1]:.3f})" if binary and None not in auc_ci else "–",
            ]
            row["confusion"] = m.get("confusion_matrix")
        elif not row["error"]:
            ba = m["bland_altman"]
            row["cells"] = [
                _with_ci(m, "mae", digits=2), _with_ci(m, "rmse", digits=2), _with_ci(m, "explained_variance"),
                _with_ci(m, "r2"), f"{m['pearson_r']:.3f} (p {m['pearson_p']:.2g})",
                f"{ba['bias']:.2f} [{ba['loa_low']:.2f}, {ba['loa_high']:.2f}]",
            ]
        rows.append(row)
    return rows


CLASSIFICATION_HEADERS = ["AUC", "Sensitivity", "Specificity", "Accuracy", "Precision", "F1",
                          "Osteoporosis vs not: AUC (DeLong CI)"]
REGRESSION_HEADERS = ["MAE (mg/cm3)", "RMSE (mg/cm3)", "Explained variance", "R²", "Pearson r",
                      "Bland-Altman bias [limits of agreement]"]


@login_required
def model_list(request, project_id):
    project = get_project_for_user(request, project_id)
    versions = ModelVersion.objects.filter(project=project).select_related("cohort")
    cohorts = Cohort.objects.filter(project=project)
    can_train = request.project_role in TRAINING_LAUNCHERS
    return render(request, "analysis/model_list.html",
                  {"project": project, "versions": versions, "cohorts": cohorts, "can_train": can_train})


@login_required
def model_detail(request, project_id, version_id):
    project = get_project_for_user(request, project_id)
    version = get_object_or_404(ModelVersion, project=project, pk=version_id)
    headers = CLASSIFICATION_HEADERS if version.task == "classification" else REGRESSION_HEADERS
    evaluation = version.evaluations.first()
    snapshot = version.data_snapshot
    return render(request, "analysis/model_detail.html", {
        "project": project, "version": version, "headers": headers, "rows": _rows(version),
        "n_resamples": evaluation.n_resamples if evaluation else 0,
        "n_used": len(snapshot.get("exam_ids", [])), "left_out": snapshot.get("excluded", []),
    })


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
