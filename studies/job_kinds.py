"""What each kind of background job is called, who may act on it, and how its parameters and results read.

One table, :data:`JOB_KINDS`, holds per job kind the human name, the roles that may start it and the labels
of the parameters and results shown on its page. Every job action asks it: starting (``jobs.submit``),
retrying, cancelling and seeing a job's details (parameters, results, the error) need the role that starting
that kind needs; the traceback of a failure is shown to project admins and superusers only. A kind missing
from the table (a new one) needs a registry editor's role and is named after its kind string.
"""

from dataclasses import dataclass, field

from django.urls import NoReverseMatch, reverse

from .access import role_in
from .models import REGISTRY_EDITORS, TRAINING_LAUNCHERS, JobState, Role


@dataclass(frozen=True)
class JobKind:
    """How one kind of job is named and guarded.

    Parameters
    ----------
    label : str
        The name shown to users ("Train the model grid").
    roles : frozenset of Role
        Roles that may start, retry or cancel it and see its details.
    params : dict
        Parameter name -> label, in display order; parameters not listed (internal ids, server paths) are
        not shown.
    results : dict
        Result key -> label, in display order; keys not listed are not shown.
    summary : callable or None
        ``summary(job)``: one sentence on what the job does or did in its present state, shown at the top of
        its page (and refreshed with it); "" or None for none.
    """

    label: str
    roles: frozenset = REGISTRY_EDITORS
    params: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    summary: object = None


def _import_summary(job):
    """The QCT import in its present state: what it imports while it waits or runs, what it did once done."""
    params = job.params or {}
    source = params.get("source") or "the file"
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        rows = (params.get("expected") or {}).get("rows")
        return f"Importing {rows} row(s) from {source}; all rows or none." if rows is not None else \
            f"Importing {source}; all rows or none."
    if job.state == JobState.SUCCEEDED and isinstance(job.result, dict):
        r = job.result
        return (f"Imported {r.get('rows', 0)} row(s) from {source}: {r.get('new_patients', 0)} new patient(s), "
                f"{r.get('new_exams', 0)} new exam(s), {r.get('updated_exams', 0)} exam(s) updated.")
    if job.state == JobState.FAILED:
        return f"Nothing was imported from {source} (all rows or none)."
    return ""


JOB_KINDS = {
    "registry.recategorize": JobKind(
        "Recompute QCT categories", REGISTRY_EDITORS, results={"changed": "Categories changed"}),
    "registry.import_qct": JobKind(
        "Import a QCT CSV", REGISTRY_EDITORS, params={"source": "File"},
        results={"rows": "Rows", "new_patients": "New patients", "new_exams": "New exams",
                 "updated_exams": "Exams updated"}, summary=_import_summary),
    "analysis.train_grid": JobKind(
        "Train the model grid", TRAINING_LAUNCHERS,
        params={"cohort_name": "Cohort", "seed": "Random seed", "feature_sets": "Feature sets", "tasks": "Tasks",
                "measurement_source": "Measurement source", "calibration_variant": "Calibration",
                "n_resamples": "Bootstrap resamples"},
        results={"model_versions": "Model versions", "fit_seconds": "Fitting time (s)",
                 "eval_seconds": "Evaluation time (s)", "excluded": "Exams left out per feature set"}),
    "analysis.evaluate": JobKind(
        "Evaluate a model version", TRAINING_LAUNCHERS,
        params={"model_version_id": "Model version", "n_resamples": "Bootstrap resamples", "seed": "Random seed"},
        results={"model_version": "Model version", "splits": "Cases per split"}),
    "analysis.predict": JobKind(
        "Predict with a model version", TRAINING_LAUNCHERS,
        params={"model_version_id": "Model version", "measurement_source": "Measurement source"},
        results={"model_version": "Model version", "predicted": "Exams predicted",
                 "not_predicted": "Exams not predicted"}),
    "analysis.measure_exam": JobKind(
        "Segment and measure an exam", REGISTRY_EDITORS,
        params={"exam_id": "Exam", "segmenter": "Segmenter", "erosion_mm": "Erosion (mm)", "device": "Device"},
        results={"measurement_run": "Measurement run", "segmenter_version": "Segmenter", "levels": "Levels measured",
                 "flags": "Flags"}),
    "analysis.train_segmenter": JobKind(
        "Train a segmentation network", TRAINING_LAUNCHERS,
        params={"name": "Segmenter version", "epochs": "Epochs", "seed": "Random seed",
                "train_sources": "Training cases", "held_out_sources": "Held-out cases", "code_version": "Code version"},
        results={"segmenter_version": "Segmenter version", "mean_held_out_dice": "Held-out Dice (mean of levels)",
                 "attempts": "Job attempts that trained it"}),
    "analysis.segment_exam": JobKind(
        "Segment and measure an exam with a chosen segmenter", REGISTRY_EDITORS,
        params={"exam_id": "Exam", "segmenter": "Segmenter", "device": "Device", "erosion_mm": "Erosion (mm)"},
        results={"measurement_run": "Measurement run", "segmenter_version": "Segmenter", "levels": "Levels measured",
                 "flags": "Flags"}),
    "analysis.compare_segmenters": JobKind(
        "Compare two segmenters on the reviewed cases", TRAINING_LAUNCHERS,
        params={"comparison_id": "Comparison", "device": "Device"},
        results={"segmenters": "Segmenters (A, B)", "cases": "Reviewed cases", "mean_dice": "Mean Dice (A, B)",
                 "level_agreement": "Level agreement (A, B)", "hu_mean_difference": "ROI HU difference A - B (mean)",
                 "wilcoxon_p": "Wilcoxon p"}),
    "pacs.pull_series": JobKind(
        "Pull a series from PACS", REGISTRY_EDITORS,
        params={"study_uid": "Study UID", "series_uid": "Series UID", "exam_id": "Exam"},
        results={"series_uid": "Stored series", "created": "Newly stored", "n_slices": "Slices", "flags": "Flags",
                 "reasons": "Series selection"}),
    "pacs.pull_exam": JobKind(
        "Pull an exam's series from PACS", REGISTRY_EDITORS,
        params={"exam_id": "Exam"},
        results={"series_uid": "Stored series", "created": "Newly stored", "n_slices": "Slices", "flags": "Flags",
                 "reasons": "Series selection"}),
    "pacs.import_local": JobKind(
        "Import DICOM files", REGISTRY_EDITORS,
        params={"series_uid": "Series UID", "exam_id": "Exam"},
        results={"series_uid": "Stored series", "created": "Newly stored", "n_slices": "Slices", "flags": "Flags"}),
}


def kind_of(kind):
    """The :class:`JobKind` of a kind string (a registry editor's kind named after the string if unknown)."""
    return JOB_KINDS.get(kind) or JobKind(kind)


def summary(job):
    """One sentence on the job in its present state ("" when its kind has none)."""
    describe = kind_of(job.kind).summary
    return describe(job) if describe else ""


def may_start(user, kind, project):
    """Whether ``user`` may start a job of ``kind`` in ``project`` (None: a job outside any project)."""
    if user.is_superuser:
        return True
    if project is None:
        return False
    return role_in(user, project) in kind_of(kind).roles


def may_act(user, job):
    """Whether ``user`` may retry or cancel ``job`` and see its details: the role that starting it needs.
    A job outside any project belongs to whoever started it."""
    if user.is_superuser:
        return True
    if job.project_id is None:
        return job.created_by_id == user.pk
    return role_in(user, job.project) in kind_of(job.kind).roles


def may_see_traceback(user, job):
    """Tracebacks name server paths and code: project admins and superusers only."""
    if user.is_superuser:
        return True
    return job.project_id is not None and role_in(user, job.project) == Role.ADMIN


# -- how parameters and results read ---------------------------------------------------------------------------

def _url(name, *args):
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _text(value):
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def _links(key, value, job):
    """(text, url) pairs for values that name something the job used or produced, else None."""
    project_id = job.project_id
    if project_id is None:
        return None
    if key in ("model_versions", "model_version", "model_version_id"):
        ids = value if isinstance(value, list) else [value]
        return [(f"#{pk}", _url("analysis:model_detail", project_id, pk)) for pk in ids if pk is not None]
    if key == "exam_id" and value:
        return [(f"exam #{value}", _url("analysis:exam_measurements", project_id, value))]
    if key == "measurement_run" and value:
        exam_id = job.params.get("exam_id")
        url = _url("analysis:exam_measurements", project_id, exam_id) if exam_id else ""
        return [(f"run #{value}", url)]
    if key in ("comparison", "comparison_id") and value:
        return [(f"comparison #{value}", _url("analysis:segmenter_comparison", project_id, value))]
    if key == "series_uid" and value and job.result and key in job.result:
        return [(str(value), _url("studies:pacs_series", project_id))]
    return None


def _rows(values, labels, job):
    rows = []
    for key, label in labels.items():
        if key not in values:
            continue
        value = values[key]
        links = _links(key, value, job)
        rows.append({"label": label, "text": _text(value), "links": links})
    return rows


def parameter_rows(job):
    """The job's parameters as [{"label", "text", "links"}], only those its kind lists."""
    return _rows(job.params or {}, kind_of(job.kind).params, job)


def result_rows(job):
    """The job's result as [{"label", "text", "links"}]: the keys its kind lists, or, for a kind without
    labels, every top-level key with its name made readable."""
    result = job.result
    if not isinstance(result, dict):
        return [] if result is None else [{"label": "Result", "text": _text(result), "links": None}]
    labels = kind_of(job.kind).results or {key: key.replace("_", " ").capitalize() for key in result}
    return _rows(result, labels, job)


def produced_links(job):
    """Pages of what the job produced, for the job list and the top of its page: [(text, url)]."""
    if job.project_id is None or not isinstance(job.result, dict):
        return []
    links = []
    result = job.result
    if result.get("model_versions"):
        links.append((f"{len(result['model_versions'])} model version(s)",
                      _url("analysis:model_list", job.project_id)))
    if result.get("measurement_run") and job.params.get("exam_id"):
        links.append(("measurement run", _url("analysis:exam_measurements", job.project_id, job.params["exam_id"])))
    if result.get("stored_series_id"):
        links.append(("stored series", _url("studies:pacs_series", job.project_id)))
    if job.kind == "registry.recategorize":
        links.append(("patients", _url("studies:patient_list", job.project_id)))
    return [(text, url) for text, url in links if url]
