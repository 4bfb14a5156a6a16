"""Segmenter pages: the project's segmenter versions with their training, training and promotion, and the
comparison of two segmenters on the reviewed cases. Views check access, validate a form and call one function
of :mod:`analysis.segmenters` (nothing is computed on page view: comparisons are jobs)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from studies.access import get_project_for_user
from studies.models import TRAINING_LAUNCHERS, Job

from . import segmenters
from .forms import SegmenterCompareForm, SegmenterTrainForm
from .models import SegmenterComparison, SegmenterVersion


def _segmenter_list(request, project, form=None, status=200):
    versions = list(SegmenterVersion.objects.filter(project=project).select_related("training_job"))
    for version in versions:
        version.data_summary = segmenters.training_summary(version.training_data or {})
        version.last_epoch = segmenters.last_epoch(version)
    can_train = request.project_role in TRAINING_LAUNCHERS
    if can_train and form is None:
        form = SegmenterTrainForm(project=project, initial={"configuration": "default"})
    trainings = Job.objects.filter(project=project, kind="analysis.train_segmenter").order_by("-created_at")[:10]
    return render(request, "analysis/segmenters.html", {
        "project": project, "versions": versions, "can_train": can_train, "form": form if can_train else None,
        "trainings": trainings, "rule_based_default": not any(v.promoted for v in versions),
    }, status=status)


@login_required
def segmenter_list(request, project_id):
    project = get_project_for_user(request, project_id)
    return _segmenter_list(request, project)


@login_required
@require_POST
def segmenter_train(request, project_id):
    """Start a training job of the network with the data chosen on the page (PIs and admins)."""
    from .tasks import submit_segmenter_training

    project = get_project_for_user(request, project_id, roles=TRAINING_LAUNCHERS)
    form = SegmenterTrainForm(request.POST, project=project)
    if not form.is_valid():
        return _segmenter_list(request, project, form, status=400)
    data = form.cleaned_data
    config = segmenters.CONFIGURATIONS[data["configuration"]]
    try:
        job = submit_segmenter_training(project, name=data["name"], train_sources=data["train_sources"],
                                        held_out_sources=data["held_out_sources"], epochs=data["epochs"],
                                        seed=data["seed"], user=request.user, **config)
    except ValueError as exc:
        form.add_error("name", str(exc))
        return _segmenter_list(request, project, form, status=400)
    messages.info(request, f"Training {data['name']} on {len(data['train_sources'])} case(s), "
                           f"{len(data['held_out_sources'])} held out.")
    return redirect(job)


@login_required
@require_POST
def segmenter_promote(request, project_id):
    """Make a version the project's default segmenter, or the rule-based one again (audited)."""
    from .segmentation.network.registry import RULE_BASED, promote

    project = get_project_for_user(request, project_id, roles=TRAINING_LAUNCHERS)
    name = request.POST.get("version", "")
    if name == RULE_BASED:
        segmenters.use_rule_based_default(project, request.user)
        messages.success(request, "The rule-based segmenter is the project's default again.")
    else:
        version = get_object_or_404(SegmenterVersion, project=project, name=name)
        promote(version, request.user)
        messages.success(request, f"{version.name} is the project's default segmenter.")
    return redirect("analysis:segmenter_list", project.pk)


@login_required
def segmenter_compare(request, project_id):
    """The stored comparisons of the project, and (PIs and admins) a new one started as a job."""
    project = get_project_for_user(request, project_id)
    can_compare = request.project_role in TRAINING_LAUNCHERS
    form = SegmenterCompareForm(request.POST or None, project=project)
    status = 200
    if request.method == "POST":
        project = get_project_for_user(request, project_id, roles=TRAINING_LAUNCHERS)
        if form.is_valid():
            try:
                comparison = segmenters.start_comparison(project, form.cleaned_data["a"], form.cleaned_data["b"],
                                                         user=request.user)
            except segmenters.SegmenterChoiceError as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("analysis:segmenter_comparison", project.pk, comparison.pk)
        status = 400
    comparisons = SegmenterComparison.objects.filter(project=project).select_related("job").defer("results")
    return render(request, "analysis/segmenter_compare.html", {
        "project": project, "form": form if can_compare else None, "comparisons": comparisons,
        "n_reviewed": len(segmenters.reviewed_reference_runs(project)),
    }, status=status)


@login_required
def segmenter_comparison(request, project_id, comparison_id):
    project = get_project_for_user(request, project_id)
    comparison = get_object_or_404(SegmenterComparison.objects.select_related("job"), project=project,
                                   pk=comparison_id)
    return render(request, "analysis/segmenter_comparison.html", {
        "project": project, "comparison": comparison, "results": comparison.results,
    })
