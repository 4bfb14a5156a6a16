"""What the dashboard pages show, assembled from stored model versions (ORM glue).

One function per page: :func:`version_panels` and :func:`calibration_panel` (model version page),
:func:`comparison` (side-by-side versions), :func:`cohort_panel` (table 1). Numbers come from the stored
evaluations and from :mod:`analysis.stats`; figures from :mod:`analysis.charts`; views only pass the result
to a template. Every figure travels as ``{"id", "label", "figure"}`` for ``templates/analysis/_chart.html``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

from analysis import charts
from analysis.categories import OSTEOPOROSIS
from analysis.models import Evaluation, LevelMeasurement

__all__ = [
    "CLASSIFICATION_HEADERS",
    "REGRESSION_HEADERS",
    "SPLIT_LABELS",
    "SPLIT_ORDER",
    "CaseSet",
    "calibration_panel",
    "cohort_panel",
    "comparison",
    "evaluated_cases",
    "metric_cells",
    "metric_rows",
    "version_panels",
]

SPLIT_ORDER = ("train", "validation", "test")
SPLIT_LABELS = {"train": "Training", "validation": "Validation", "test": "Internal test"}
CLASSIFICATION_HEADERS = ["AUC", "Sensitivity", "Specificity", "Accuracy", "Precision", "F1",
                          "Osteoporosis vs not: AUC (DeLong CI)"]
REGRESSION_HEADERS = ["MAE (mg/cm3)", "RMSE (mg/cm3)", "Explained variance", "R²", "Pearson r",
                      "Bland-Altman bias [limits of agreement]"]
# Patients drawn on the calibration chart; the cohort line always uses all of them.
CALIBRATION_SAMPLE = 40


def _split_key(split):
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def _ci(metrics, key, ci_key=None, digits=3):
    low, high = (metrics.get("ci") or {}).get(ci_key or key) or (None, None)
    return charts.format_ci(metrics.get(key), low, high, digits)


def metric_cells(task, metrics):
    """Formatted cells of one evaluation, in the order of the task's headers."""
    if task == "classification":
        binary = metrics.get("binary") or {}
        return [
            _ci(metrics, "macro_auc"), _ci(metrics, "macro_sensitivity"), _ci(metrics, "macro_specificity"),
            _ci(metrics, "accuracy"), _ci(metrics, "macro_precision"), _ci(metrics, "macro_f1"),
            charts.format_ci(binary.get("auc"), binary.get("auc_ci_low"), binary.get("auc_ci_high")),
        ]
    ba = metrics["bland_altman"]
    return [
        _ci(metrics, "mae", digits=2), _ci(metrics, "rmse", digits=2), _ci(metrics, "explained_variance"),
        _ci(metrics, "r2"), f"{metrics['pearson_r']:.3f} (p {metrics['pearson_p']:.2g})",
        f"{ba['bias']:.2f} [{ba['loa_low']:.2f}, {ba['loa_high']:.2f}]",
    ]


def metric_rows(version):
    """One row per evaluated split: ``{"split", "n", "error", "cells"}``."""
    rows = []
    for evaluation in sorted(version.evaluations.all(), key=lambda e: _split_key(e.split)):
        m = evaluation.metrics
        row = {"split": evaluation.split, "n": evaluation.n, "error": m.get("error", "")}
        if not row["error"]:
            row["cells"] = metric_cells(version.task, m)
        rows.append(row)
    return rows


@dataclass
class CaseSet:
    """A version's predictions on one split with the registry's QCT values, ordered by exam id."""

    exam_ids: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    qct_bmd: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    predicted_bmd: list = field(default_factory=list)
    probabilities: list = field(default_factory=list)

    def __len__(self):
        return len(self.exam_ids)


def evaluated_cases(version, split):
    """The cases :func:`analysis.modeling.versions.evaluate_version` evaluates on ``split``.

    Predictions of the split whose exam has a QCT value and no exclusion flag (on the exam or its patient),
    with the registry's current QCT values: the points of the scatter and Bland-Altman charts.
    """
    from studies.models import ExclusionFlag

    predictions = list(
        version.predictions.filter(split=split).select_related("exam__qct", "exam__patient").order_by("exam_id")
    )
    exam_ids = [p.exam_id for p in predictions]
    excluded_exams = set(ExclusionFlag.objects.filter(exam__in=exam_ids).values_list("exam_id", flat=True))
    excluded_patients = set(
        ExclusionFlag.objects.filter(exam=None, patient__exams__in=exam_ids).values_list("patient_id", flat=True)
    )
    cases = CaseSet()
    for p in predictions:
        qct = getattr(p.exam, "qct", None)
        if p.exam_id in excluded_exams or p.exam.patient_id in excluded_patients or qct is None or qct.qct_bmd is None:
            continue
        cases.exam_ids.append(p.exam_id)
        cases.labels.append(f"{p.exam.patient.pseudonym} (exam {p.exam_id})")
        cases.qct_bmd.append(qct.qct_bmd)
        cases.categories.append(qct.category)
        cases.predicted_bmd.append(p.predicted_bmd)
        cases.probabilities.append(p.probabilities)
    return cases


def _chart(chart_id, label, figure):
    return {"id": chart_id, "label": label, "figure": figure}


def _class_rows(metrics):
    """Per-class one-vs-rest values and the binary task, formatted (the numbers behind the ROC chart)."""
    rows = []
    for name in metrics["classes"]:
        c = metrics["per_class"][name]
        rows.append({
            "label": f"{name} vs rest", "n": c["n"],
            "cells": [charts.format_ci(c["auc"], c["auc_ci_low"], c["auc_ci_high"])]
                     + [f"{c[k]:.3f}" for k in ("sensitivity", "specificity", "precision", "f1")],
        })
    b = metrics.get("binary")
    if b:
        ci = b.get("ci") or {}
        rows.append({
            "label": f"{metrics['binary_positive_class']} vs not (binary)", "n": b["n_pos"],
            "cells": [charts.format_ci(b["auc"], b["auc_ci_low"], b["auc_ci_high"])]
                     + [charts.format_ci(b[k], *(ci.get(k) or (None, None))) for k in
                        ("sensitivity", "specificity", "precision", "f1")],
        })
    return rows


def _bland_altman_rows(ba):
    return [
        {"label": "Bias (predicted − QCT)",
         "cells": [charts.format_ci(ba["bias"], ba["bias_ci_low"], ba["bias_ci_high"], 2)]},
        {"label": f"Lower limit (bias − {ba['loa_z']:g} SD)",
         "cells": [charts.format_ci(ba["loa_low"], ba["loa_low_ci_low"], ba["loa_low_ci_high"], 2)]},
        {"label": f"Upper limit (bias + {ba['loa_z']:g} SD)",
         "cells": [charts.format_ci(ba["loa_high"], ba["loa_high_ci_low"], ba["loa_high_ci_high"], 2)]},
        {"label": "SD of the differences", "cells": [f"{ba['sd']:.2f}"]},
    ]


def version_panels(version):
    """Per evaluated split: the numbers and the charts of the model version page.

    Returns
    -------
    list of dict
        ``{"split", "label", "n", "error", "charts": [...], "class_rows" | "bland_altman_rows",
        "confusion_rows" ((class, counts) per true class), "note"}`` in train, validation, test order.
    """
    panels = []
    for evaluation in sorted(version.evaluations.all(), key=lambda e: _split_key(e.split)):
        m, split = evaluation.metrics, evaluation.split
        label = SPLIT_LABELS.get(split, split)
        panel = {"split": split, "label": label, "n": evaluation.n, "error": m.get("error", ""), "charts": [],
                 "note": ""}
        if panel["error"]:
            panels.append(panel)
            continue
        if version.task == "classification":
            panel["class_rows"] = _class_rows(m)
            panel["classes"] = m["classes"]
            panel["confusion_rows"] = list(zip(m["classes"], m["confusion_matrix"]))
            panel["charts"] = [
                _chart(f"fig-{split}-roc", f"ROC curves, {label.lower()} split",
                       charts.roc_figure(charts.roc_curves_from_metrics(m),
                                         title=f"ROC, {label.lower()} (n = {m['n']})")),
                _chart(f"fig-{split}-confusion", f"Confusion matrix, {label.lower()} split",
                       charts.confusion_figure(m["confusion_matrix"], m["classes"],
                                               title=f"Confusion matrix, {label.lower()}")),
            ]
        else:
            cases = evaluated_cases(version, split)
            panel["bland_altman_rows"] = _bland_altman_rows(m["bland_altman"])
            if len(cases) != evaluation.n:
                panel["note"] = (
                    f"The charts show the {len(cases)} cases this split has now; the metrics were computed on "
                    f"{evaluation.n} (QCT values or exclusions changed since): re-evaluate the version."
                )
            panel["charts"] = [
                _chart(f"fig-{split}-scatter", f"Predicted against QCT BMD, {label.lower()} split",
                       charts.scatter_figure([{"name": version.get_algorithm_display(), "reference": cases.qct_bmd,
                                               "predicted": cases.predicted_bmd, "pearson_r": m["pearson_r"],
                                               "labels": cases.labels}],
                                             title=f"Predicted vs QCT BMD, {label.lower()}")),
                _chart(f"fig-{split}-bland-altman", f"Bland-Altman plot, {label.lower()} split",
                       charts.bland_altman_figure(cases.qct_bmd, cases.predicted_bmd, m["bland_altman"],
                                                  labels=cases.labels, title=f"Bland-Altman, {label.lower()}")),
            ]
        panels.append(panel)
    return panels


def _training_hu(version, split):
    """``{exam_id: {level: HU}}`` of the version's ``split`` exams, from their recorded measurement runs.

    Levels without a value or with a QA flag that blocks a level in the feature tables are left out, as the
    calibration fit leaves them out.
    """
    from analysis.modeling.features import BLOCKING_FLAGS
    from analysis.segmentation.levels import CALIBRATION_LEVELS

    snapshot = version.data_snapshot
    runs = [run for run, s in zip(snapshot.get("measurement_run_ids", []), snapshot.get("split", [])) if s == split]
    hu = {}
    # Chunks: an IN list of a whole cohort's run ids would exceed SQLite's limit on query parameters.
    for start in range(0, len(runs), 5000):
        levels = LevelMeasurement.objects.filter(
            run_id__in=runs[start:start + 5000], level__in=CALIBRATION_LEVELS
        ).values_list("run__exam_id", "level", "mean_hu", "flags")
        for exam_id, level, mean_hu, flags in levels:
            row = hu.setdefault(exam_id, {})
            if mean_hu is not None and math.isfinite(mean_hu) and not BLOCKING_FLAGS.intersection(flags or ()):
                row[level] = mean_hu
    return hu


def calibration_panel(version):
    """The thoraco-lumbar calibration chart of a ``chest_cal`` version (None for other versions).

    The cohort line is the stored fit (k, intercept, R^2). The per-patient points are rebuilt from the
    measurement runs of the version's training exams and refitted; they are drawn only when that refit
    reproduces the stored k and intercept, i.e. when they are the very points the line was fitted on (the
    fit may also have used training exams that the feature table then left out, whose runs the version does
    not record).

    Returns
    -------
    dict or None
        ``{"chart", "calibration" (stored JSON), "points_shown" (bool), "n_patients", "note"}``.
    """
    stored = version.calibration
    if not stored:
        return None
    from analysis.modeling.calibration import ThoracolumbarCalibration
    from analysis.segmentation.levels import CALIBRATION_LEVELS

    levels = list(CALIBRATION_LEVELS)
    curve = {"k": stored["k"], "intercept": stored["intercept"], "r2": stored.get("r2"), "levels": levels,
             "n": [float(i) for i in range(1, len(levels) + 1)], "patients": []}
    fitted_on = stored.get("fitted_on", "train")
    hu = _training_hu(version, fitted_on)
    note = ""
    points_shown = False
    try:
        refit = ThoracolumbarCalibration(variant=stored.get("variant", "cohort_slope")).fit(hu)
    except ValueError as exc:
        refit, note = None, f"Per-patient points not shown: {exc}."
    if refit is not None:
        same = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                   for a, b in ((refit.k_, stored["k"]), (refit.intercept_, stored["intercept"])))
        if same:
            curve = refit.curve_data()
            points_shown = True
            note = (f"Points: the {refit.n_patients_fit_} {fitted_on}-split patients with both regions that the "
                    f"cohort line was fitted on, rebuilt from their measurement runs (the refit reproduces k).")
        else:
            note = (f"Cohort line only: the {fitted_on}-split exams this version recorded give k = {refit.k_:.3f} "
                    f"HU/level when refitted, not the stored {stored['k']:.3f}; the fit also used exams the "
                    f"feature table left out, so their points cannot be rebuilt here.")
    figure = charts.calibration_figure(curve, max_patients=CALIBRATION_SAMPLE, random_state=0,
                                       title=f"HU by vertebra level, {stored.get('variant', '')} calibration")
    return {"chart": _chart("fig-calibration", "Thoraco-lumbar calibration curve", figure), "calibration": stored,
            "points_shown": points_shown, "n_patients": len(curve["patients"]), "sample": CALIBRATION_SAMPLE,
            "note": note}


# Comparison of versions ---------------------------------------------------------------------------------------


def _predictions_by_exam(version, split):
    """``{exam_id: Prediction}`` of the split: the cases :func:`compare_versions` pairs."""
    return {p.exam_id: p for p in version.predictions.filter(split=split).select_related("exam__qct", "exam__patient")}


def _overlay(task, versions, by_version, common):
    """ROC (osteoporosis vs not) or predicted-vs-QCT scatter of each version on the cases common to all."""
    from analysis.stats.regression import regression_metrics
    from analysis.stats.roc import delong_auc, roc_points

    if len(common) < 3:
        return None
    first = by_version[versions[0].pk]
    if task == "classification":
        positive = [first[e].exam.qct.category == OSTEOPOROSIS for e in common]
        curves = []
        for v in versions:
            try:
                score = [by_version[v.pk][e].probabilities[OSTEOPOROSIS] for e in common]
                auc = delong_auc(positive, score)
                fpr, tpr, _ = roc_points(positive, score)
            except (KeyError, TypeError, ValueError):
                # No probabilities stored (an external model that gave categories only) or one class only.
                return None
            curves.append({"name": f"#{v.pk} {v.name}", "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc.auc,
                           "ci_low": auc.ci_low, "ci_high": auc.ci_high})
        figure = charts.roc_figure(curves, title=f"Osteoporosis vs not, {len(common)} common cases")
        return _chart("fig-compare-roc", "Overlaid ROC curves", figure)
    reference = [first[e].exam.qct.qct_bmd for e in common]
    series = []
    for v in versions:
        predicted = [by_version[v.pk][e].predicted_bmd for e in common]
        r = regression_metrics(reference, predicted, n_resamples=0).pearson_r
        series.append({"name": f"#{v.pk} {v.name}", "reference": reference, "predicted": predicted, "pearson_r": r})
    figure = charts.scatter_figure(series, title=f"Predicted vs QCT BMD, {len(common)} common cases")
    return _chart("fig-compare-scatter", "Overlaid predicted-vs-QCT scatter", figure)


def _pair_cells(task, result):
    if task == "classification":
        return [f"{result['auc_a']:.3f}", f"{result['auc_b']:.3f}",
                charts.format_ci(result["diff"], result["ci_low"], result["ci_high"]),
                f"{result['z']:.3f}", f"{result['p']:.3g}"]
    return [f"{result['mae_a']:.2f}", f"{result['mae_b']:.2f}",
            charts.format_ci(result["diff"], result["ci_low"], result["ci_high"], 2), "", f"{result['p_value']:.3g}"]


def comparison(versions, split, *, n_resamples=2000, random_state=0):
    """Side-by-side metrics, an overlay chart and the paired test of every pair of versions on one split.

    Parameters
    ----------
    versions : sequence of ModelVersion
        Two or more versions of one project and one task.
    split : str
    n_resamples, random_state : int
        Paired bootstrap of the MAE difference (regression).

    Returns
    -------
    dict
        ``{"task", "headers", "rows" (per version: stored metrics of the split), "chart" (overlay on the
        cases all versions predicted, or None), "common" (those exam ids), "common_labels", "pairs" (per
        pair: the result of :func:`analysis.modeling.versions.compare_versions`, formatted cells, the cases
        only one of the two predicted), "pair_headers", "test"}``.
    """
    from analysis.modeling.versions import compare_versions

    versions = list(versions)
    tasks = {v.task for v in versions}
    if len(tasks) != 1:
        raise ValueError("choose versions of one task (classification or regression), not both")
    task = tasks.pop()
    evaluations = {e.model_version_id: e for e in Evaluation.objects.filter(model_version__in=versions, split=split)}
    rows = []
    for v in versions:
        e = evaluations.get(v.pk)
        error = "" if e else f"not evaluated on the {split} split"
        if e and e.metrics.get("error"):
            error = e.metrics["error"]
        rows.append({"version": v, "n": e.n if e else 0, "error": error,
                     "cells": metric_cells(task, e.metrics) if e and not error else []})

    by_version = {v.pk: _predictions_by_exam(v, split) for v in versions}
    common = sorted(set.intersection(*(set(p) for p in by_version.values())))
    first = by_version[versions[0].pk]
    common_labels = [f"{first[e].exam.patient.pseudonym} (exam {e})" for e in common]
    pairs = []
    for a, b in combinations(versions, 2):
        pa, pb = by_version[a.pk], by_version[b.pk]
        pair = {"a": a, "b": b, "only_a": sorted(set(pa) - set(pb)), "only_b": sorted(set(pb) - set(pa)),
                "n_common": len(set(pa) & set(pb)), "error": "", "cells": [], "result": None}
        try:
            pair["result"] = compare_versions(a, b, split=split, n_resamples=n_resamples, random_state=random_state)
            pair["cells"] = _pair_cells(task, pair["result"])
        except ValueError as exc:
            pair["error"] = str(exc)
        pairs.append(pair)
    if task == "classification":
        pair_headers = ["AUC A", "AUC B", "A − B (95% CI)", "DeLong z", "p"]
        test = ("Paired DeLong test (DeLong 1988; Sun and Xu 2014) of the osteoporosis-vs-not AUC, on the cases "
                "both versions predicted in the split; the AUC is the probability of osteoporosis.")
    else:
        pair_headers = ["MAE A (mg/cm3)", "MAE B (mg/cm3)", "A − B (95% CI)", "", "p"]
        test = (f"Paired bootstrap of the MAE difference ({n_resamples} resamples of the cases both versions "
                f"predicted in the split, seed {random_state}); percentile CI, two-sided bootstrap p.")
    return {
        "task": task, "split": split,
        "headers": CLASSIFICATION_HEADERS if task == "classification" else REGRESSION_HEADERS,
        "rows": rows, "chart": _overlay(task, versions, by_version, common), "common": common,
        "common_labels": common_labels, "pairs": pairs, "pair_headers": pair_headers, "test": test,
    }


# Cohort table ---------------------------------------------------------------------------------------------------


def cohort_panel(project, cohort_name, *, include_excluded=False):
    """Table 1 of the seed study for a cohort, as rows to print (see :func:`analysis.charts.cohort_table_rows`)."""
    from studies.cohorts import cohort_table_for

    table = cohort_table_for(project, cohort_name, include_excluded=include_excluded)
    rendered = charts.cohort_table_rows(table, split_labels=SPLIT_LABELS)
    return {"table": table, **rendered, "total": sum(table["n"].values())}



def left_out_rows(version):
    """The exams a version left out, each with its exam (patient pseudonym and date) and the reason."""
    from studies.models import Exam

    left_out = version.data_snapshot.get("excluded", [])
    exams = Exam.objects.filter(pk__in=[d["exam_id"] for d in left_out]).select_related("patient").in_bulk()
    return [{**d, "exam": exams.get(d["exam_id"])} for d in left_out]
