"""Analysis jobs (image pipeline, modelling) register here with ``studies.jobs.task``.

Thin wrappers: primitive keyword arguments, look the objects up, call one domain function, return a small
JSON summary for the job row.
"""

from studies.jobs import task


@task("analysis.train_grid")
def train_grid(*, project_id, progress, cohort_name="main", seed=0, feature_sets=("chest", "abdomen", "chest_cal"),
               tasks=("classification", "regression"), n_resamples=2000, measurement_source=None,
               calibration_variants=None, user_id=None):
    """Train the model grid on a cohort; every fitted model becomes a model version."""
    from django.contrib.auth import get_user_model

    from analysis.modeling.versions import train_cohort
    from studies.models import Project

    project = Project.objects.get(pk=project_id)
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    versions, grid = train_cohort(
        project, cohort_name=cohort_name, feature_sets=tuple(feature_sets), tasks=tuple(tasks), random_state=seed,
        n_resamples=n_resamples, measurement_source=measurement_source, calibration_variants=calibration_variants,
        user=user, progress=progress,
    )
    return {
        "model_versions": [v.pk for v in versions],
        "fit_seconds": round(grid.fit_seconds, 3),
        "eval_seconds": round(grid.eval_seconds, 3),
        "excluded": {fs: len(t.dropped) for fs, t in grid.tables.items()},
    }


@task("analysis.evaluate")
def evaluate(*, model_version_id, progress, n_resamples=2000, seed=0):
    """Recompute a version's evaluations from its stored predictions."""
    from analysis.modeling.versions import evaluate_version
    from analysis.models import ModelVersion

    version = ModelVersion.objects.get(pk=model_version_id)
    progress(0.1, f"evaluating {version.name}")
    results = evaluate_version(version, n_resamples=n_resamples, random_state=seed)
    return {"model_version": version.pk, "splits": {split: m.get("n") for split, m in results.items()}}


@task("analysis.predict")
def predict(*, model_version_id, progress, exam_ids=None, measurement_source=None):
    """Apply a version to exams (default: all of its project's exams) and store the screening predictions."""
    from analysis.modeling.predictions import predict_exams
    from analysis.models import ModelVersion
    from studies.models import Exam

    version = ModelVersion.objects.select_related("project").get(pk=model_version_id)
    exams = Exam.objects.filter(patient__project=version.project)
    if exam_ids is not None:
        exams = exams.filter(pk__in=exam_ids)
    progress(0.1, f"predicting with {version.name}")
    screening = predict_exams(version, exams, source=measurement_source)
    return {"model_version": version.pk, "predicted": len(screening.rows), "not_predicted": len(screening.dropped)}


@task("analysis.measure_exam")
def measure_exam(*, exam_id, progress, erosion_mm=3.0, device="cpu", user_id=None, segmenter="", code_version=""):
    """Segment and measure an exam's stored CT series; the result is a new, immutable measurement run.

    ``segmenter``: a name for :func:`analysis.segmentation.network.registry.resolve_segmenter` (empty: the
    project's promoted version, else the rule-based one), as a reader's request of re-segmentation chooses.
    """
    from django.contrib.auth import get_user_model

    from analysis import pipeline
    from studies.models import Exam

    refuse_other_code(code_version)
    exam = Exam.objects.select_related("patient").get(pk=exam_id)
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    run = pipeline.measure_exam(exam, erosion_mm=erosion_mm, device=device, user=user, progress=progress,
                                segmenter=segmenter or None)
    return {"measurement_run": run.pk, "segmenter_version": run.segmenter_version,
            "levels": _head_to_foot(run.levels.values_list("level", flat=True)), "flags": run.flags}


# -- segmentation network (analysis/segmentation/network): jobs on the "gpu" queue ---------------------------

SEGMENTER_CHECKPOINTS = "segmenters/checkpoints"


def refuse_other_code(site_code_version):
    """Refuse a job submitted by a site running other code than this worker (a GPU worker on another machine
    must run the site's exact code: a network trained or applied by other code is not the version recorded).

    Raises ``ValueError`` naming both versions; an empty ``site_code_version`` (a job submitted without one)
    is accepted.
    """
    from analysis.modeling.versions import code_version

    mine = code_version()
    if site_code_version and site_code_version != mine:
        raise ValueError(f"This worker runs code {mine} but the site submitted the job with {site_code_version}; "
                         f"update the worker to the site's code and retry.")


def submit_segmenter_training(project, *, name, train_sources, held_out_sources, epochs=20, seed=0, user=None,
                              architecture=None, preprocessing=None, inference=None, training=None):
    """Submit a training job of the segmentation network on the ``gpu`` queue (returns the Job row).

    The site's code version is recorded with the job; a worker running other code refuses it. A source
    ``{"kind": "reviewed"}`` stands for the cases accepted in review in ``project`` now
    (:func:`expand_reviewed_sources`); a run may not be both a training and a held-out case.
    """
    from analysis.modeling.versions import code_version
    from analysis.models import SegmenterVersion
    from studies import jobs

    import re

    # The name becomes a storage folder for the checkpoints and a file name for the weights.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or ""):
        raise ValueError(f"segmenter name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit")
    if SegmenterVersion.objects.filter(name=name).exists():
        raise ValueError(f"a segmenter version named {name!r} exists already; choose another name")
    train_sources = expand_reviewed_sources(project, train_sources)
    held_out_sources = expand_reviewed_sources(project, held_out_sources)
    train_runs = {s["id"] for s in train_sources if s.get("kind") == "measurement_run"}
    both = sorted(train_runs & {s["id"] for s in held_out_sources if s.get("kind") == "measurement_run"})
    if both:
        raise ValueError(f"measurement runs {both} are both training and held-out cases; hold out other cases")
    return jobs.submit("analysis.train_segmenter", project=project, user=user, queue="gpu", project_id=project.pk,
                       name=name, train_sources=list(train_sources), held_out_sources=list(held_out_sources),
                       epochs=int(epochs),
                       seed=int(seed), architecture=architecture, preprocessing=preprocessing, inference=inference,
                       training=training, code_version=code_version(), user_id=user.pk if user else None)


def expand_reviewed_sources(project, sources):
    """Sources with every ``{"kind": "reviewed"}`` replaced by the cases accepted in review in ``project``.

    Each accepted case gives ``{"kind": "measurement_run", "id": RUN, "review_case": CASE, "exam": EXAM}``: the
    reviewed run that replaced the measured one (relabelled on acceptance), else the measured run accepted as
    it was. The job and the version thus record exactly which reviewed runs a training used, however many
    cases are accepted later.

    Raises ``ValueError`` when a ``reviewed`` source finds no accepted case.
    """
    from studies.review.actions import reviewed_training_cases

    out = []
    for source in sources:
        if source.get("kind") != "reviewed":
            out.append(source)
            continue
        found = [{"kind": "measurement_run", "id": case.reviewed_run.pk, "review_case": case.pk, "exam": case.exam_id}
                 for case in reviewed_training_cases(project)]
        if not found:
            raise ValueError(f"project {project.name!r} has no case accepted in review to train on")
        out.extend(found)
    return out


def _training_cases(sources, preprocessing):
    """Training cases for source descriptions; ``{"kind": "measurement_run", "id": N}`` loads a run's series and
    its body labels (a reviewed case), the other kinds are read by the network package."""
    import tempfile

    from analysis.imaging.volume import load_nifti
    from analysis.models import MeasurementRun
    from analysis.segmentation.network.training import case_from_volume, load_source

    cases = []
    for source in sources:
        if source.get("kind") != "measurement_run":
            cases.append(load_source(source, preprocessing))
            continue
        run = MeasurementRun.objects.select_related("exam").get(pk=source["id"])
        stored = run.exam.stored_series.filter(series_uid=run.series_uid).first()
        if stored is None or not run.labels:
            raise ValueError(f"measurement run {run.pk} has no stored series or label map to train on")
        volume = stored.load_volume()
        with run.labels.open("rb") as fh, tempfile.NamedTemporaryFile(suffix=".nii.gz") as tmp:
            tmp.write(fh.read())
            tmp.flush()
            labels = load_nifti(tmp.name).array
        cases.append(case_from_volume(f"run {run.pk}", volume, labels, preprocessing))
    return cases


@task("analysis.train_segmenter")
def train_segmenter(*, project_id, progress, name, train_sources, held_out_sources, epochs=20, seed=0,
                    architecture=None, preprocessing=None, inference=None, training=None, code_version="",
                    user_id=None, device="cuda"):
    """Train the body network; every epoch is checkpointed in storage, so a killed job resumes where it stopped.

    The version is registered when the last epoch ends, with the training log of every attempt.
    """
    import hashlib

    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from rq import get_current_job

    from analysis.models import SegmenterVersion
    from analysis.segmentation.network.architecture import DEFAULT_ARCHITECTURE
    from analysis.segmentation.network.inference import DEFAULT_INFERENCE, resolve_device
    from analysis.segmentation.network.preprocess import DEFAULT_PREPROCESSING
    from analysis.segmentation.network.training import DEFAULT_TRAINING, train
    from studies.models import Project

    refuse_other_code(code_version)
    project = Project.objects.get(pk=project_id)
    architecture = architecture or DEFAULT_ARCHITECTURE
    preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    inference = {**DEFAULT_INFERENCE, **(inference or {})}
    training = {**DEFAULT_TRAINING, **(training or {})}
    rq_job = get_current_job()
    attempt = int(rq_job.kwargs.get("attempt") or 0) if rq_job else 0
    # One folder per job row: a retry of this job resumes from it, while a new job of the same name (after an
    # earlier one failed before registering its version) starts afresh instead of resuming another run.
    row_id = rq_job.kwargs.get("row_id") if rq_job else None
    folder = f"{SEGMENTER_CHECKPOINTS}/{name}" + (f"-job{row_id}" if row_id else "")

    def checkpoints():
        if not default_storage.exists(folder):
            return []
        found = []
        for entry in default_storage.listdir(folder)[1]:
            if entry.startswith("epoch") and entry.endswith(".pt"):
                found.append((int(entry[5:-3]), f"{folder}/{entry}"))
        return sorted(found)

    def load_checkpoint():
        found = checkpoints()
        if not found:
            return None
        with default_storage.open(found[-1][1], "rb") as fh:
            return fh.read()

    def save_checkpoint(epoch, data):
        # Written under a new name before the older ones are removed: a kill at any moment leaves a checkpoint.
        default_storage.save(f"{folder}/epoch{epoch:04d}.pt", ContentFile(data))
        for e, path in checkpoints():
            if e < epoch:
                default_storage.delete(path)

    progress(0.0, "loading training cases")
    train_cases = _training_cases(train_sources, preprocessing)
    held_out = _training_cases(held_out_sources, preprocessing)
    outcome = train(train_cases, held_out, architecture=architecture, inference=inference, training=training,
                    epochs=int(epochs), seed=int(seed), attempt=attempt, load_checkpoint=load_checkpoint,
                    save_checkpoint=save_checkpoint, progress=progress, device=device)
    from analysis.modeling.versions import code_version as current_code_version
    from studies.models import Job

    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    version = SegmenterVersion(
        project=project, name=name, weights_sha256=hashlib.sha256(outcome.weights).hexdigest(),
        architecture=architecture, preprocessing=preprocessing, inference=inference, label_map={"1": "body"},
        training_data={"train": list(train_sources), "held_out": list(held_out_sources),
                       "device": resolve_device(device), "training": training, "epochs": int(epochs)},
        training_log=outcome.log, metrics=outcome.metrics, random_seed=int(seed), code_version=current_code_version(),
        training_job=Job.objects.filter(pk=row_id).first() if row_id else None, created_by=user,
    )
    version.weights.save(f"{name}.pt", ContentFile(outcome.weights), save=False)
    version.save()
    for _, path in checkpoints():
        default_storage.delete(path)
    if default_storage.exists(folder) and not any(default_storage.listdir(folder)):
        default_storage.delete(folder)
    return {"segmenter_version": version.pk, "name": name, "epochs": int(epochs),
            "mean_held_out_dice": outcome.metrics.get("mean_dice"),
            "attempts": sorted({e["attempt"] for e in outcome.log})}


@task("analysis.segment_exam")
def segment_exam(*, exam_id, progress, segmenter="", erosion_mm=3.0, device="cuda", code_version="", user_id=None):
    """Segment and measure an exam with a chosen segmenter (default: the project's promoted one) on a GPU worker."""
    from django.contrib.auth import get_user_model

    from analysis import pipeline
    from studies.models import Exam

    refuse_other_code(code_version)
    exam = Exam.objects.select_related("patient").get(pk=exam_id)
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    run = pipeline.measure_exam(exam, erosion_mm=erosion_mm, device=device, user=user, progress=progress,
                                segmenter=segmenter or None)
    return {"measurement_run": run.pk, "segmenter_version": run.segmenter_version,
            "levels": _head_to_foot(run.levels.values_list("level", flat=True)), "flags": run.flags}


@task("analysis.compare_segmenters")
def compare_segmenters(*, comparison_id, progress, device="cpu", code_version=""):
    """Two segmenters on the project's reviewed cases: Dice per level, level agreement, paired ROI HU."""
    from analysis.models import SegmenterComparison
    from analysis.segmenters import run_comparison

    refuse_other_code(code_version)
    comparison = SegmenterComparison.objects.select_related("project").get(pk=comparison_id)
    results = run_comparison(comparison, device=device, progress=progress)
    hu = results["hu"]
    return {"comparison": comparison.pk, "segmenters": [comparison.segmenter_a, comparison.segmenter_b],
            "cases": results["n_cases"], "mean_dice": [results["mean_dice_a"], results["mean_dice_b"]],
            "level_agreement": [results["agreement"]["a"]["share"], results["agreement"]["b"]["share"]],
            "hu_mean_difference": hu.get("mean_difference"), "wilcoxon_p": hu.get("p_value")}


def _head_to_foot(levels):
    """Level names in anatomical order (C1 first), as the job page lists them."""
    from analysis.segmentation.levels import level_sort_key

    return sorted(levels, key=level_sort_key)
