"""What the dashboard pages show, assembled from stored model versions (ORM glue).

One function per page: :func:`version_panels` and :func:`calibration_panel` (model version page),
:func:`comparison` (side-by-side versions), :func:`cohort_panel` (table 1). Numbers come from the stored
evaluations and from :mod:`analysis.stats`; figures from :mod:`analysis.charts`; views only pass the result
to a template. Every figure travels as ``{"id", "label", "figure"}`` for ``templates/analysis/_chart.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from analysis import charts
from analysis.models import Evaluation

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
    "evaluated_cases_by_version",
    "metric_cells",
    "metric_rows",
    "reliability_panels",
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
        _ci(metrics, "r2"), f"{metrics['pearson_r']:.3f} (p {charts.format_p(metrics['pearson_p'])})",
        f"{ba['bias']:.2f} [{ba['loa_low']:.2f}, {ba['loa_high']:.2f}]",
    ]


def metric_rows(version):
    """One row per evaluated split: ``{"split", "n", "error", "cells"}``."""
    rows = []
    for evaluation in sorted(version.evaluations.defer("resamples"), key=lambda e: _split_key(e.split)):
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


def evaluated_cases(version, split, *, probabilities=False):
    """The cases :func:`analysis.modeling.versions.evaluate_version` evaluates on ``split``.

    Predictions of the split whose exam has a QCT value and no exclusion flag (on the exam or its patient),
    with the registry's current QCT values: the points of the scatter and Bland-Altman charts.
    ``probabilities=True`` reads the classifiers' probabilities too (empty dicts otherwise).
    """
    return evaluated_cases_by_version([version], split, probabilities=probabilities)[version.pk]


def evaluated_cases_by_version(versions, split, *, probabilities=False):
    """:func:`evaluated_cases` of several versions at once, in three queries whatever their number.

    Returns
    -------
    dict
        ``{version pk: CaseSet}``, an empty set for a version without predictions on ``split``.
    """
    from analysis.models import Prediction
    from studies.models import ExclusionFlag

    pks = [v.pk for v in versions]
    # Plain values, not model instances: a report draws ten of these sets and instances cost ten times more.
    rows = list(
        Prediction.objects.filter(model_version__in=pks, split=split).order_by("model_version_id", "exam_id")
        .values_list("model_version_id", "exam_id", "exam__patient_id", "exam__patient__pseudonym",
                     "exam__qct__qct_bmd", "exam__qct__category", "predicted_bmd",
                     "probabilities" if probabilities else "exam_id")
    )
    exam_ids = sorted({r[1] for r in rows})
    excluded_exams = set(ExclusionFlag.objects.filter(exam__in=exam_ids).values_list("exam_id", flat=True))
    excluded_patients = set(
        ExclusionFlag.objects.filter(exam=None, patient__exams__in=exam_ids).values_list("patient_id", flat=True)
    )
    by_version = {pk: CaseSet() for pk in pks}
    for version_id, exam_id, patient_id, pseudonym, qct_bmd, category, predicted_bmd, proba in rows:
        if exam_id in excluded_exams or patient_id in excluded_patients or qct_bmd is None:
            continue
        cases = by_version[version_id]
        cases.exam_ids.append(exam_id)
        cases.labels.append(pseudonym)
        cases.qct_bmd.append(qct_bmd)
        cases.categories.append(category)
        cases.predicted_bmd.append(predicted_bmd)
        cases.probabilities.append(proba if isinstance(proba, dict) else {})
    return by_version


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
    for evaluation in sorted(version.evaluations.defer("resamples"), key=lambda e: _split_key(e.split)):
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


def calibration_panel(version):
    """The thoraco-lumbar calibration of a ``chest_cal`` version (None for other versions), from what training
    stored: the fit to the per-level means, the spread per level, the pooled fit and a sample of patients.

    Returns
    -------
    dict or None
        ``{"chart", "calibration" (stored JSON), "r2", "pooled_r2" (formatted by
        :func:`analysis.charts.format_r2`), "levels": [{"level", "n", "count", "mean", "sd", "p25", "p75"}],
        "variant", "variant_text", "n_patients"}``.
    """
    from analysis.modeling.calibration import CALIBRATION_VARIANT_LABELS

    stored = version.calibration
    if not stored:
        return None
    variant = version.calibration_variant or stored.get("variant", "")
    levels = []
    if stored.get("level_mean") is not None:
        for i, level in enumerate(stored["levels"]):
            levels.append({"level": level, "n": i + 1, "count": stored["level_count"][i],
                           "mean": stored["level_mean"][i], "sd": stored["level_sd"][i],
                           "p25": stored["level_p25"][i], "p75": stored["level_p75"][i]})
    figure = charts.calibration_figure(stored, max_patients=CALIBRATION_SAMPLE, random_state=0,
                                       title="Mean trabecular HU by vertebra level (training split)")
    pooled = stored.get("pooled") or {}
    return {"chart": _chart("fig-calibration", "Thoraco-lumbar calibration curve", figure), "calibration": stored,
            "r2": charts.format_r2(stored.get("r2")),
            "pooled_r2": charts.format_r2(pooled["r2"]) if pooled else None, "levels": levels, "variant": variant,
            "variant_label": CALIBRATION_VARIANT_LABELS.get(variant, variant),
            "n_patients": len(stored.get("patients") or []), "sample": CALIBRATION_SAMPLE}


def reliability_panels(version):
    """Per evaluated split of a classification version: the reliability chart and the Brier score per class.

    Returns
    -------
    list of dict
        ``{"split", "label", "chart", "rows": [{"class", "brier"}], "brier_multiclass"}``; empty for
        regression or evaluations stored before reliability was recorded.
    """
    if version.task != "classification":
        return []
    panels = []
    for evaluation in sorted(version.evaluations.defer("resamples"), key=lambda e: _split_key(e.split)):
        rel = evaluation.metrics.get("reliability")
        if not rel:
            continue
        label = SPLIT_LABELS.get(evaluation.split, evaluation.split)
        panels.append({
            "split": evaluation.split, "label": label,
            "chart": _chart(f"fig-{evaluation.split}-reliability", f"Reliability curves, {label.lower()} split",
                            charts.reliability_figure(rel, title=f"Reliability, {label.lower()} (n = {evaluation.n})")),
            "rows": [{"class": name, "brier": c["brier"]} for name, c in rel["classes"].items()],
            "brier_multiclass": rel["brier_multiclass"],
        })
    return panels


# Comparison of versions ---------------------------------------------------------------------------------------


def _case_names(versions, split):
    """``{version_id: {exam_id: patient pseudonym}}`` of the versions' predictions on the split (one query)."""
    from analysis.models import Prediction

    names = {v.pk: {} for v in versions}
    rows = Prediction.objects.filter(model_version__in=versions, split=split).values_list(
        "model_version_id", "exam_id", "exam__patient__pseudonym")
    for version_id, exam_id, pseudonym in rows.iterator(chunk_size=5000):
        names[version_id][exam_id] = pseudonym
    return names


def _overlay(task, versions, evaluations, split):
    """ROC (osteoporosis vs not, from the stored evaluations) or predicted-vs-QCT scatter (stored predictions)
    of each version, when every version was evaluated on the same cases."""
    keys = {(evaluations[v.pk].resamples or {}).get("case_key") if v.pk in evaluations else None for v in versions}
    if len(keys) != 1 or None in keys:
        return None
    if task == "classification":
        curves = []
        for v in versions:
            binary = evaluations[v.pk].metrics.get("binary")
            if not binary:
                return None
            curves.append({"name": f"#{v.pk} {v.name}", "fpr": binary["roc_fpr"], "tpr": binary["roc_tpr"],
                           "auc": binary["auc"], "ci_low": binary["auc_ci_low"], "ci_high": binary["auc_ci_high"]})
        n = evaluations[versions[0].pk].n
        return _chart("fig-compare-roc", "Overlaid ROC curves",
                      charts.roc_figure(curves, title=f"Osteoporosis vs not, {n} common cases"))
    series = []
    for v in versions:
        cases = evaluated_cases(v, split)
        series.append({"name": f"#{v.pk} {v.name}", "reference": cases.qct_bmd, "predicted": cases.predicted_bmd,
                       "pearson_r": evaluations[v.pk].metrics.get("pearson_r")})
    n = evaluations[versions[0].pk].n
    return _chart("fig-compare-scatter", "Overlaid predicted-vs-QCT scatter",
                  charts.scatter_figure(series, title=f"Predicted vs QCT BMD, {n} common cases"))


def pair_cells(task, result):
    """Formatted cells of one stored paired comparison (:func:`analysis.stats.paired.compare_states`)."""
    cells = [f"{result['estimate_a']:.3f}" if task == "classification" else f"{result['estimate_a']:.2f}",
             f"{result['estimate_b']:.3f}" if task == "classification" else f"{result['estimate_b']:.2f}",
             charts.format_ci(result["diff"], result["ci_low"], result["ci_high"],
                              3 if task == "classification" else 2),
             charts.format_p(result["p"])]
    if task == "classification":
        d = result.get("delong")
        cells += ([charts.format_ci(d["diff"], d["ci_low"], d["ci_high"]), f"{d['z']:.2f}", charts.format_p(d["p"])]
                  if d else ["–", "–", "–"])
    return cells


PAIR_HEADERS = {
    "classification": ["Macro AUC A", "Macro AUC B", "A − B (95% CI)", "p (bootstrap)",
                       "Osteoporosis vs not: A − B (95% CI)", "DeLong z", "p (DeLong)"],
    "regression": ["MAE A (mg/cm3)", "MAE B (mg/cm3)", "A − B (95% CI)", "p (bootstrap)"],
}


def comparison(versions, split):
    """Side-by-side metrics, an overlay chart and the paired test of every pair of versions on one split.

    Everything comes from what training or evaluation stored: the metrics of each version, and per version
    the statistic on every bootstrap resample and the DeLong placements (``Evaluation.resamples``), so a page
    pairing 45 versions (990 pairs) computes no metric.

    Parameters
    ----------
    versions : sequence of ModelVersion
        Two or more versions of one project and one task.
    split : str

    Returns
    -------
    dict
        ``{"task", "headers", "rows" (per version: stored metrics of the split), "chart" (overlay, or None
        when the versions were not evaluated on the same cases), "common" (exam ids all versions predicted),
        "common_labels" (their patient ids), "pairs" (per pair: cells, the patients only one of the two
        predicted, or the reason there is no paired result), "pair_headers", "test"}``.
    """
    from analysis.stats.paired import compare_many

    versions = list(versions)
    tasks = {v.task for v in versions}
    if len(tasks) != 1:
        raise ValueError("choose versions of one task (classification or regression), not both")
    task = tasks.pop()
    evaluations = {e.model_version_id: e for e in Evaluation.objects.filter(model_version__in=versions, split=split)}
    n_resamples = {e.n_resamples for e in evaluations.values()}
    rows = []
    for v in versions:
        e = evaluations.get(v.pk)
        error = "" if e else f"not evaluated on the {split} split"
        if e and e.metrics.get("error"):
            error = e.metrics["error"]
        rows.append({"version": v, "n": e.n if e else 0, "error": error,
                     "cells": metric_cells(task, e.metrics) if e and not error else []})

    names = _case_names(versions, split)
    common = sorted(set.intersection(*(set(names[v.pk]) for v in versions)))
    first = names[versions[0].pk]
    common_labels = [first[e] for e in common]
    states = [evaluations[v.pk].resamples if v.pk in evaluations and not evaluations[v.pk].metrics.get("error")
              else None for v in versions]
    # Every pair at once (vectorised): 45 versions are 990 pairs.
    results = compare_many(states)
    pairs = []
    for (i, j) in combinations(range(len(versions)), 2):
        a, b = versions[i], versions[j]
        na, nb = names[a.pk], names[b.pk]
        pair = {"a": a, "b": b, "only_a": sorted(na[e] for e in set(na) - set(nb)),
                "only_b": sorted(nb[e] for e in set(nb) - set(na)), "n_common": len(set(na) & set(nb)),
                "error": "", "cells": [], "result": None}
        result = results[(i, j)]
        if isinstance(result, ValueError):
            pair["error"] = str(result)
        else:
            pair["result"] = result
            pair["cells"] = pair_cells(task, result)
        pairs.append(pair)
    resamples = "/".join(str(n) for n in sorted(n_resamples)) or "the stored"
    if task == "classification":
        test = (f"Paired stratified bootstrap of the 3-class one-vs-rest macro AUC ({resamples} resamples of the "
                f"cases, stratified by QCT category, the same resamples for both versions; percentile CI, two-sided "
                f"bootstrap p), beside the paired DeLong test (DeLong 1988) of the osteoporosis-vs-not AUC. Both "
                f"need the two versions evaluated on the same cases.")
    else:
        test = (f"Paired bootstrap of the MAE difference ({resamples} resamples of the cases, the same for both "
                f"versions); percentile CI, two-sided bootstrap p. Needs the two versions evaluated on the same "
                f"cases.")
    return {
        "task": task, "split": split,
        "headers": CLASSIFICATION_HEADERS if task == "classification" else REGRESSION_HEADERS,
        "rows": rows, "chart": _overlay(task, versions, evaluations, split), "common": common,
        "common_labels": common_labels, "pairs": pairs, "pair_headers": PAIR_HEADERS[task], "test": test,
        "pair_rows_html": _pair_rows_html(versions, pairs, len(PAIR_HEADERS[task])),
    }


def _pair_rows_html(versions, pairs, n_headers):
    """The rows of the paired-test table, escaped and joined here: Django's template loop costs about 1 ms a
    row, and 45 versions have 990 pairs."""
    from django.urls import reverse
    from django.utils.html import format_html, format_html_join
    from django.utils.safestring import mark_safe

    links = {v.pk: format_html('<a href="{}" title="{}">#{}</a>',
                               reverse("analysis:model_detail", args=[v.project_id, v.pk]), v.name, v.pk)
             for v in versions}
    rows = []
    for pair in pairs:
        if pair["error"]:
            cells = format_html('<td colspan="{}">{}</td>', n_headers, pair["error"])
        else:
            cells = format_html_join("", "<td>{}</td>", ((c,) for c in pair["cells"]))
        rows.append(format_html('<tr><td>{}</td><td>{}</td><td class="num">{}</td>{}</tr>',
                                links[pair["a"].pk], links[pair["b"].pk], pair["n_common"], cells))
        if pair["only_a"] or pair["only_b"]:
            rows.append(format_html(
                '<tr class="sub"><td colspan="{}">Left out of this pair: {} patient(s) only A predicted{}, {} only '
                'B predicted{}.</td></tr>', n_headers + 3,
                len(pair["only_a"]), f" ({', '.join(pair['only_a'])})" if pair["only_a"] else "",
                len(pair["only_b"]), f" ({', '.join(pair['only_b'])})" if pair["only_b"] else ""))
    return mark_safe("\n".join(rows))


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


def cohort_split_counts(project):
    """Each cohort of the project with its number of exams per split and whether it is frozen."""
    from django.db.models import Count, Q

    from studies.models import Cohort

    cohorts = Cohort.objects.filter(project=project).order_by("name").annotate(
        **{f"n_{s}": Count("members", filter=Q(members__split=s)) for s in SPLIT_ORDER},
        n_unassigned=Count("members", filter=Q(members__split="")),
    )
    return [{"name": c.name, "frozen": c.frozen, "description": c.description,
             "counts": [getattr(c, f"n_{s}") for s in SPLIT_ORDER], "unassigned": c.n_unassigned} for c in cohorts]


def list_metrics(versions):
    """The headline metric of each version per split, for the model list: macro AUC for classifiers, MAE
    (mg/cm3) for regressors, read from the stored evaluations without loading their JSON.

    Returns
    -------
    dict
        ``{version_id: {"metric": "AUC" | "MAE", "cells": [train, validation, test]}}`` with formatted values
        ("–" where not evaluated).
    """
    from django.db.models.fields.json import KT

    values = {}
    rows = (Evaluation.objects.filter(model_version__in=versions)
            .annotate(auc=KT("metrics__macro_auc"), mae=KT("metrics__mae"))
            .values_list("model_version_id", "split", "auc", "mae"))
    for version_id, split, auc, mae in rows:
        values[(version_id, split)] = (auc, mae)
    out = {}
    for v in versions:
        classification = v.task == "classification"
        cells = []
        for split in SPLIT_ORDER:
            auc, mae = values.get((v.pk, split), (None, None))
            value = auc if classification else mae
            cells.append("–" if value in (None, "") else f"{float(value):.3f}" if classification
                         else f"{float(value):.2f}")
        out[v.pk] = {"metric": "AUC" if classification else "MAE", "cells": cells}
    return out
