"""Model versions in the database (ORM glue over :mod:`analysis.modeling.training`).

:func:`train_cohort` reads a cohort's records, trains the grid, and stores one immutable ``ModelVersion``
per fitted model with its data snapshot, artefact file, evaluations per split and predictions per exam;
the cohort is frozen in the same transaction, so its splits can no longer change under the versions.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction

from analysis.modeling.records import exam_records, freeze_cohort
from analysis.modeling.training import ALGORITHMS, TASKS, dump_artefact, load_artefact, train_grid
from analysis.models import Evaluation, ModelVersion, Prediction
from studies.models import Cohort

__all__ = ["code_version", "compare_versions", "load_model", "store_entry", "train_cohort"]


@functools.lru_cache(maxsize=1)
def code_version():
    """``git describe --always --dirty`` of the code base, else the installed package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True, text=True,
            timeout=5, check=True,
        )
        if out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"bmdsite {version('bmdsite')}"
    except PackageNotFoundError:
        return "unknown"


def _snapshot(table, records, cohort, source, model):
    """Which exams, which labels, which runs, which splits, and which exams were left out and why."""
    chosen = set(table.exam_ids.tolist())
    by_exam = {r.exam_id: r for r in records}
    return {
        "cohort_id": cohort.pk if cohort else None,
        "cohort": cohort.name if cohort else None,
        "measurement_source": source,
        "thresholds": {"osteoporosis_below": cohort.project.osteoporosis_below,
                       "normal_above": cohort.project.normal_above} if cohort else None,
        "classes": model.classes,
        "feature_names": list(table.feature_names),
        "n_by_split": table.n_by_split(),
        "exam_ids": table.exam_ids.tolist(),
        "split": [str(s) for s in table.splits],
        "qct_bmd": table.y_bmd.tolist(),
        "category": [str(c) for c in table.y_category],
        "measurement_run_ids": table.run_ids.tolist(),
        # Age and sex as used, so that a later correction marks the version stale (analysis.modeling.staleness).
        "age": [by_exam[e].age for e in table.exam_ids.tolist()],
        "sex": [by_exam[e].sex for e in table.exam_ids.tolist()],
        "excluded": [d.to_dict() for d in table.dropped],
        "n_records": len(records),
        "n_used": len(chosen),
    }


def _name(model, cohort):
    from analysis.modeling.calibration import CALIBRATION_VARIANT_LABELS

    label = {"chest": "T5-T10", "abdomen": "T12-L2", "chest_cal": "T5-T10-Cal"}[model.feature_set]
    if model.calibration_variant:
        label += f" ({CALIBRATION_VARIANT_LABELS.get(model.calibration_variant, model.calibration_variant)})"
    return f"{label} {model.task} {model.algorithm} (seed {model.random_state}, {cohort.name})"


# Patients of the calibration fit whose measured HU are stored with a calibrated version, for the per-patient
# lines behind the calibration curve (the curve itself uses every patient of the fit).
CALIBRATION_PATIENT_SAMPLE = 40


def calibration_record(model, table):
    """The ``ModelVersion.calibration`` JSON of a calibrated model (None otherwise).

    Holds the fit to the per-level means (k, intercept, R^2), the pooled fit (labelled as such), the spread
    per level, a sample of patient lines, the variant and, for ``learned_mapping``, the map's coefficients.
    """
    if model.calibration is None:
        return None
    record = model.calibration.summary(max_patients=CALIBRATION_PATIENT_SAMPLE, random_state=0)
    record.update(variant=model.calibration_variant, fitted_on="train")
    mapping = getattr(table, "lumbar_map", None)
    if mapping is not None and getattr(mapping, "method", "") == "learned_mapping":
        record["mapping"] = {"inputs": list(table.feature_names), "outputs": ["hu_T12", "hu_L1", "hu_L2"],
                             "coef": mapping.coef_.tolist(), "intercept": mapping.intercept_.tolist(),
                             "n_patients": mapping.n_fit_}
    return record


def store_entry(entry, *, project, cohort, records, source, n_resamples, user=None):
    """Store one grid entry as a ModelVersion with evaluations and predictions; returns the version."""
    model, table = entry.model, entry.table
    artefact = dump_artefact(model)
    version = ModelVersion(
        project=project,
        cohort=cohort,
        name=_name(model, cohort),
        task=model.task,
        algorithm=model.algorithm,
        hyperparameters=model.hyperparameters,
        feature_set=model.feature_set,
        feature_names=list(model.feature_names),
        region=table.spec.region,
        calibration_variant=model.calibration_variant if table.spec.calibrated else "",
        calibration=calibration_record(model, table),
        measurement_source=source,
        random_seed=model.random_state,
        data_snapshot=_snapshot(table, records, cohort, source, model),
        code_version=code_version(),
        artefact_sha256=hashlib.sha256(artefact).hexdigest(),
        fit_seconds=entry.fit_seconds,
        created_by=user,
    )
    stem = model.feature_set + (f"-{model.calibration_variant}" if model.calibration_variant else "")
    version.artefact.save(f"{stem}-{model.task}-{model.algorithm}.pkl", ContentFile(artefact), save=False)
    version.save()
    Evaluation.objects.bulk_create(
        [
            Evaluation(model_version=version, split=split, n=metrics.get("n", 0), metrics=metrics,
                       n_resamples=n_resamples, resamples=entry.resamples.get(split))
            for split, metrics in entry.metrics.items()
        ]
    )
    Prediction.objects.bulk_create(_predictions(version, table, entry.output), batch_size=2000)
    return version


def _predictions(version, table, output):
    rows = []
    for i, exam_id in enumerate(table.exam_ids.tolist()):
        row = Prediction(model_version=version, exam_id=exam_id, measurement_run_id=int(table.run_ids[i]),
                         split=str(table.splits[i]))
        if "proba" in output:
            row.probabilities = {c: float(p) for c, p in zip(version.classes, output["proba"][i])}
            row.predicted_category = str(output["category"][i])
        else:
            row.predicted_bmd = float(output["bmd"][i])
            row.predicted_category = version.project.thresholds.categorize(row.predicted_bmd)
        rows.append(row)
    return rows


def train_cohort(
    project,
    *,
    cohort_name=Cohort.DEFAULT_NAME,
    feature_sets=("chest", "abdomen", "chest_cal"),
    tasks=TASKS,
    algorithms=None,
    random_state=0,
    n_resamples=2000,
    measurement_source=None,
    calibration_variants=None,
    calibration_variant=None,
    user=None,
    progress=None,
):
    """Train the grid on a cohort and store every model as a version.

    Parameters
    ----------
    project : Project
    cohort_name : str
    feature_sets, tasks : sequences of str
    algorithms : dict, optional
        ``{task: [algorithm, ...]}``; default the full grid.
    random_state : int
    n_resamples : int
        Bootstrap resamples of every CI.
    measurement_source : str, optional
        Source of the measurement runs (default: the only source present).
    calibration_variants : sequence of str, optional
        Variants of the calibrated chest model (default all of ``CALIBRATION_VARIANTS``), one version each.
    calibration_variant : str, optional
        One variant only (shorthand for ``calibration_variants=(variant,)``).
    user : User, optional
    progress : callable, optional

    Returns
    -------
    (list of ModelVersion, GridResult)
    """
    if calibration_variant and not calibration_variants:
        calibration_variants = (calibration_variant,)
    cohort = Cohort.objects.select_related("project").get(project=project, name=cohort_name)
    records, source = exam_records(cohort, measurement_source)
    if not any(r.split == "train" for r in records):
        raise ValueError(f"cohort {cohort_name!r} has no exams in the train split; assign splits first")
    grid = train_grid(
        records,
        feature_sets=feature_sets,
        tasks=tasks,
        algorithms=algorithms or ALGORITHMS,
        random_state=random_state,
        n_resamples=n_resamples,
        calibration_variants=calibration_variants,
        progress=(lambda f, m: progress(0.9 * f, m)) if progress else None,
    )
    if progress:
        progress(0.9, "storing model versions")
    with transaction.atomic():
        freeze_cohort(cohort)
        versions = [
            store_entry(entry, project=project, cohort=cohort, records=records, source=source,
                        n_resamples=n_resamples, user=user)
            for entry in grid.entries
        ]
    return versions, grid


def load_model(version):
    """The fitted model of a stored version (checks the artefact's SHA-256 first)."""
    if version.external or not version.artefact:
        raise ValueError(f"model version {version.pk} has no artefact (external predictions only)")
    with version.artefact.open("rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != version.artefact_sha256:
        raise ValueError(f"artefact of model version {version.pk} does not match its recorded SHA-256")
    return load_artefact(data)


def compare_versions(version_a, version_b, *, split="validation", n_resamples=2000, random_state=0):
    """Paired comparison of two versions of the same task on the exams both predicted in ``split``.

    Returns
    -------
    dict
        ``training.compare_predictions`` plus ``n`` and ``split``.
    """
    from analysis.modeling.training import compare_predictions

    if version_a.task != version_b.task:
        raise ValueError(f"cannot compare a {version_a.task} version with a {version_b.task} one")
    a = {p.exam_id: p for p in version_a.predictions.filter(split=split).select_related("exam__qct")}
    b = {p.exam_id: p for p in version_b.predictions.filter(split=split)}
    common = sorted(set(a) & set(b))
    if len(common) < 3:
        raise ValueError(f"the two versions share {len(common)} predicted exams in {split!r}; need at least 3")
    if version_a.task == "classification":
        from analysis.categories import CATEGORIES

        y = [a[e].exam.qct.category for e in common]
        pa = [[a[e].probabilities[c] for c in CATEGORIES] for e in common]
        pb = [[b[e].probabilities[c] for c in CATEGORIES] for e in common]
    else:
        y = [a[e].exam.qct.qct_bmd for e in common]
        pa = [a[e].predicted_bmd for e in common]
        pb = [b[e].predicted_bmd for e in common]
    result = compare_predictions(version_a.task, y, pa, pb, n_resamples=n_resamples, random_state=random_state)
    return {"n": len(common), "split": split, **result}


def evaluate_version(version, *, n_resamples=2000, random_state=0):
    """(Re)compute a version's evaluations from its stored predictions and the registry's labels.

    Only predictions with a split count; exams excluded since, or without a QCT value, are left out (and
    their number is reported). The evaluations of the version are replaced in one transaction.

    Returns
    -------
    dict
        ``{split: metrics}``.
    """
    import numpy as np

    from analysis.categories import CATEGORIES
    from analysis.modeling.training import split_metrics
    from studies.models import ExclusionFlag

    predictions = list(
        version.predictions.exclude(split="").select_related("exam__qct").order_by("split", "exam_id")
    )
    excluded_exams = set(
        ExclusionFlag.objects.filter(exam__in=[p.exam_id for p in predictions]).values_list("exam_id", flat=True)
    )
    excluded_patients = set(
        ExclusionFlag.objects.filter(exam=None, patient__exams__in=[p.exam_id for p in predictions])
        .values_list("patient_id", flat=True)
    )
    by_split = {}
    for p in predictions:
        qct = getattr(p.exam, "qct", None)
        if p.exam_id in excluded_exams or p.exam.patient_id in excluded_patients or qct is None or qct.qct_bmd is None:
            continue
        by_split.setdefault(p.split, []).append((p, qct))
    from analysis.modeling.training import split_resamples

    results, states = {}, {}
    for split, rows in by_split.items():
        categories = np.array([qct.category for _, qct in rows], dtype=object)
        bmd = np.array([qct.qct_bmd for _, qct in rows], dtype=np.float64)
        if version.task == "classification":
            output = {"proba": np.array([[p.probabilities[c] for c in CATEGORIES] for p, _ in rows])}
            classes = list(CATEGORIES)
        else:
            output = {"bmd": np.array([p.predicted_bmd for p, _ in rows], dtype=np.float64)}
            classes = None
        boot = {}
        try:
            results[split] = split_metrics(version.task, classes, categories, bmd, output, n_resamples, random_state,
                                           resamples_out=boot)
            states[split] = split_resamples(version.task, classes, [p.exam_id for p, _ in rows], categories, bmd,
                                            output, n_resamples, random_state, boot=boot)
        except ValueError as exc:
            results[split] = {"n": len(rows), "error": str(exc)}
    with transaction.atomic():
        version.evaluations.all().delete()
        Evaluation.objects.bulk_create(
            [Evaluation(model_version=version, split=split, n=m.get("n", 0), metrics=m, n_resamples=n_resamples,
                        resamples=states.get(split))
             for split, m in results.items()]
        )
    return results
