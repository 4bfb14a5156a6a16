"""The seed study as a report: tables 1-5 and figures 4-8 for a chosen set of model versions (ORM glue).

Everything comes from what training and evaluation stored (metrics with their CIs, the resample states of
the paired comparisons, the calibration fit, the predictions for the scatter and Bland-Altman charts) and
from the registry (table 1); no metric is computed on page view. Each table is a plain structure
``{"id", "title", "note", "columns", "rows": [[cell, ...]]}`` that the page and its CSV download both print,
so the CSV always equals the table.
"""

from __future__ import annotations

import datetime as dt

from analysis import charts
from analysis.dashboards import SPLIT_LABELS, evaluated_cases_by_version
from analysis.models import Evaluation, ModelVersion

__all__ = ["default_versions", "region_label", "study_report", "table_csv"]

REGION_ORDER = ("chest", "abdomen", "chest_cal:abdomen_transfer", "chest_cal:learned_mapping",
                "chest_cal:feature_augmentation")
ALGORITHM_ORDER = {"classification": ("BDT", "LR", "RF"), "regression": ("BDT", "SGD", "RF")}
# Estimator parameters stated as the project's choices (the paper gives none); the rest are scikit-learn's
# defaults and are in each version's record.
# A cell with nothing to say (the DeLong test of a regressor), the same on the page and in the CSV.
NOT_APPLICABLE = "—"
STATED_PARAMETERS = ("n_estimators", "estimator__min_samples_leaf", "min_samples_leaf", "C", "max_iter", "alpha",
                     "tol", "random_state")


def _region_key(version):
    return f"{version.feature_set}:{version.calibration_variant}" if version.calibration_variant else version.feature_set


def region_label(version):
    """``T5-T10``, ``T12-L2`` or ``T5-T10-Cal (abdomen transfer)`` ...; an external model's name."""
    from analysis.modeling.calibration import CALIBRATION_VARIANT_LABELS

    if version.external:
        return version.name
    label = {"chest": "T5-T10", "abdomen": "T12-L2", "chest_cal": "T5-T10-Cal"}.get(version.feature_set,
                                                                                     version.feature_set)
    if version.calibration_variant:
        label += f" ({CALIBRATION_VARIANT_LABELS.get(version.calibration_variant, version.calibration_variant)})"
    return label


def _order(version):
    key = _region_key(version)
    region = REGION_ORDER.index(key) if key in REGION_ORDER else len(REGION_ORDER)
    algorithms = ALGORITHM_ORDER.get(version.task, ())
    algorithm = algorithms.index(version.algorithm) if version.algorithm in algorithms else len(algorithms)
    return (region, algorithm, version.pk)


def default_versions(project):
    """The latest training run of the project: the newest version's cohort and seed, every version created
    within ten minutes before it, one per feature set, variant, task and algorithm (the newest)."""
    newest = ModelVersion.objects.filter(project=project, external=False).order_by("-created_at", "-pk").first()
    if newest is None:
        return []
    candidates = ModelVersion.objects.filter(
        project=project, external=False, cohort=newest.cohort, random_seed=newest.random_seed,
        created_at__gte=newest.created_at - dt.timedelta(minutes=10),
    ).order_by("-created_at", "-pk").defer("data_snapshot", "feature_names")
    chosen = {}
    for v in candidates:
        chosen.setdefault((_region_key(v), v.task, v.algorithm), v)
    return sorted(chosen.values(), key=_order)


def _cells(metrics, keys, digits=3):
    return [charts.format_ci(metrics.get(k), *((metrics.get("ci") or {}).get(ci_key) or (None, None)), digits)
            for k, ci_key in keys]


_CLASSIFICATION_KEYS = (("macro_auc", "macro_auc"), ("macro_sensitivity", "macro_sensitivity"),
                        ("macro_specificity", "macro_specificity"), ("accuracy", "accuracy"),
                        ("macro_precision", "macro_precision"), ("macro_f1", "macro_f1"))
_CLASSIFICATION_COLUMNS = ["AUC (95% CI)", "Sensitivity", "Specificity", "Accuracy", "Precision", "F1"]
_REGRESSION_COLUMNS = ["MAE (mg/cm3)", "RMSE (mg/cm3)", "EVS", "R²", "Pearson r", "P"]


def _regression_cells(m):
    return (_cells(m, (("mae", "mae"), ("rmse", "rmse")), 3) + _cells(m, (("explained_variance", "explained_variance"),
            ("r2", "r2")), 3) + [f"{m['pearson_r']:.3f}", charts.format_p(m["pearson_p"])])


def _metric_table(table_id, title, note, versions, task, splits, evaluations):
    columns = ["Region", "Split", "Method", "n"] + (_CLASSIFICATION_COLUMNS if task == "classification"
                                                    else _REGRESSION_COLUMNS)
    rows = []
    for v in versions:
        if v.task != task:
            continue
        for split in splits:
            e = evaluations.get((v.pk, split))
            if e is None:
                continue
            m = e.metrics
            if m.get("error"):
                cells = [m["error"]] + [""] * (len(columns) - 5)
            elif task == "classification":
                cells = _cells(m, _CLASSIFICATION_KEYS)
            else:
                cells = _regression_cells(m)
            rows.append([region_label(v), SPLIT_LABELS.get(split, split), v.algorithm, str(e.n)] + cells)
    return {"id": table_id, "title": title, "note": note, "columns": columns, "rows": rows}


def _cohort_table(project, cohort_name):
    from analysis.dashboards import cohort_panel

    panel = cohort_panel(project, cohort_name)
    columns = ["Characteristic"] + panel["columns"] + ["χ² (H)", "P"]
    rows = [[r["label"]] + list(r["cells"]) + [r["statistic"], r["p"]] for r in panel["rows"]]
    return {"id": "table-1", "title": f"Table 1. Demographics of the training, validation and internal test sets "
                                      f"(cohort {cohort_name})",
            "note": "Age median (P25, P75) with the Kruskal-Wallis H test; sex and QCT category n (%) with the "
                    "chi-square test (no continuity correction). Excluded cases are left out.",
            "columns": columns, "rows": rows}


def _effect_table(versions, evaluations):
    """Chest against each calibrated chest variant: the paired tests from the stored resample states."""
    from analysis.stats.paired import compare_states

    rows = []
    by_key = {(_region_key(v), v.task, v.algorithm): v for v in versions}
    for v in versions:
        if v.feature_set != "chest_cal":
            continue
        chest = by_key.get(("chest", v.task, v.algorithm))
        if chest is None:
            continue
        for split in ("validation", "test"):
            ea, eb = evaluations.get((v.pk, split)), evaluations.get((chest.pk, split))
            if ea is None or eb is None:
                continue
            try:
                r = compare_states(ea.resamples, eb.resamples)
            except ValueError as exc:
                rows.append([region_label(v), f"{v.task}, {v.algorithm}", SPLIT_LABELS.get(split, split),
                             NOT_APPLICABLE, NOT_APPLICABLE, str(exc), NOT_APPLICABLE, NOT_APPLICABLE, NOT_APPLICABLE])
                continue
            digits = 3 if v.task == "classification" else 2
            metric = "macro AUC" if v.task == "classification" else "MAE (mg/cm3)"
            delong = r.get("delong")
            rows.append([
                region_label(v), f"{metric}, {v.algorithm}", SPLIT_LABELS.get(split, split),
                f"{r['estimate_b']:.{digits}f}", f"{r['estimate_a']:.{digits}f}",
                charts.format_ci(r["diff"], r["ci_low"], r["ci_high"], digits), charts.format_p(r["p"]),
                charts.format_ci(delong["diff"], delong["ci_low"], delong["ci_high"]) if delong else NOT_APPLICABLE,
                charts.format_p(delong["p"]) if delong else NOT_APPLICABLE,
            ])
    return {"id": "table-effect", "title": "The calibration's effect: chest (T5-T10) against calibrated chest "
                                           "(T5-T10-Cal), same algorithm, same cases",
            "note": "Difference = calibrated − chest. Macro AUC and MAE: paired stratified bootstrap on the same "
                    "resamples of the same cases (percentile CI, two-sided p); osteoporosis vs not: paired DeLong "
                    "test, for the classifiers only (— for the regressors). Only feature augmentation cannot change "
                    "with k (see the model pages).",
            "columns": ["Calibrated model", "Metric, method", "Split", "Chest", "Calibrated",
                        "Difference (95% CI)", "P (bootstrap)", "Osteoporosis vs not: AUC difference (DeLong CI)",
                        "P (DeLong)"],
            "rows": rows}


def _macro_roc(metrics):
    """The macro-average one-vs-rest ROC curve: the per-class TPR averaged on a common FPR grid."""
    import numpy as np

    grid = np.unique(np.concatenate([metrics["roc"][c]["fpr"] for c in metrics["classes"]]))
    tpr = np.mean([np.interp(grid, metrics["roc"][c]["fpr"], metrics["roc"][c]["tpr"]) for c in metrics["classes"]],
                  axis=0)
    low, high = (metrics.get("ci") or {}).get("macro_auc") or (None, None)
    return {"name": "macro average (one-vs-rest)", "fpr": grid.tolist(), "tpr": tpr.tolist(),
            "auc": metrics["macro_auc"], "ci_low": low, "ci_high": high, "colour": "#1f5fa8", "dash": "solid"}


def _figures(versions, evaluations, classifier, regressor):
    figures = []
    for number, split in ((4, "validation"), (7, "test")):
        charts_ = []
        for v in versions:
            e = evaluations.get((v.pk, split))
            if v.task != "classification" or v.algorithm != classifier or e is None or e.metrics.get("error"):
                continue
            curves = charts.roc_curves_from_metrics(e.metrics) + [_macro_roc(e.metrics)]
            charts_.append({"id": f"fig-{number}-{v.pk}", "label": f"ROC, {region_label(v)}",
                            "figure": charts.roc_figure(curves, title=f"{region_label(v)}, {classifier}, "
                                                                      f"{split} (n = {e.n})")})
        figures.append({"id": f"figure-{number}", "title": f"Figure {number}. ROC curves of {classifier} in the "
                        f"{SPLIT_LABELS[split].lower()} set: three classes one-vs-rest, their macro average, and "
                        f"osteoporosis vs not", "charts": charts_})
    for numbers, split in (((5, 6), "validation"), ((8, 8), "test")):
        series, bland_altman = [], []
        drawn = [v for v in versions if v.task == "regression" and v.algorithm == regressor
                 and (v.pk, split) in evaluations and not evaluations[(v.pk, split)].metrics.get("error")]
        cases_by_version = evaluated_cases_by_version(drawn, split)
        for v in drawn:
            e = evaluations[(v.pk, split)]
            cases = cases_by_version[v.pk]
            series.append({"name": region_label(v), "reference": cases.qct_bmd, "predicted": cases.predicted_bmd,
                           "pearson_r": e.metrics["pearson_r"], "labels": cases.labels})
            bland_altman.append({"id": f"fig-{numbers[1]}-ba-{v.pk}", "label": f"Bland-Altman, {region_label(v)}",
                                 "figure": charts.bland_altman_figure(
                                     cases.qct_bmd, cases.predicted_bmd, e.metrics["bland_altman"],
                                     labels=cases.labels, title=f"{region_label(v)}, {regressor}, {split}")})
        scatter = []
        if series:
            scatter = [{"id": f"fig-{numbers[0]}-scatter-{split}", "label": f"Predicted against QCT BMD, {split}",
                        "figure": charts.scatter_figure(series, title=f"{regressor}, {split} set")}]
        label = SPLIT_LABELS[split].lower()
        if numbers[0] == numbers[1]:
            figures.append({"id": f"figure-{numbers[0]}", "title": f"Figure {numbers[0]}. Predicted against QCT BMD "
                            f"and Bland-Altman plots of {regressor} in the {label} set", "charts": scatter + bland_altman})
        else:
            figures.append({"id": f"figure-{numbers[0]}", "title": f"Figure {numbers[0]}. Predicted against QCT BMD "
                            f"of {regressor} in the {label} set (identity line dashed)", "charts": scatter})
            figures.append({"id": f"figure-{numbers[1]}", "title": f"Figure {numbers[1]}. Bland-Altman plots of "
                            f"{regressor} in the {label} set", "charts": bland_altman})
    figures.sort(key=lambda f: int(f["id"].split("-")[1]))
    return figures


def _choices(versions):
    """Hyper-parameters per task and algorithm, stated as the project's choices."""
    seen = {}
    for v in versions:
        params = {k: v.hyperparameters.get(k) for k in STATED_PARAMETERS if k in (v.hyperparameters or {})}
        seen.setdefault((v.task, v.algorithm), params)
    rows = []
    for (task, algorithm), params in sorted(seen.items()):
        rows.append([task, algorithm, ", ".join(f"{k} = {val}" for k, val in params.items()) or "defaults"])
    return {"id": "table-choices", "title": "Hyper-parameters (the project's choices; the paper gives none)",
            "note": "Each model is z-scoring (fitted on the training split) followed by the estimator; unlisted "
                    "parameters are scikit-learn's defaults and are recorded with every version.",
            "columns": ["Task", "Algorithm", "Parameters"], "rows": rows}


def study_report(project, versions, *, classifier="BDT", regressor="SGD"):
    """Tables 1-5, the calibration's effect and figures 4-8 of the seed study for ``versions``.

    Parameters
    ----------
    project : Project
    versions : sequence of ModelVersion
    classifier, regressor : str
        Algorithm drawn in the figures (the paper: BDT for ROC, SGD for scatter and Bland-Altman).

    Returns
    -------
    dict
        ``{"versions", "tables": {id: table}, "table_list" (in page order), "figures", "calibration", "cohorts",
        "n_resamples", "thresholds", "classifier", "regressor"}``.
    """
    from analysis.dashboards import calibration_panel
    from studies.models import Cohort

    versions = sorted(versions, key=_order)
    # Resample states only where the calibration's effect pairs versions (chest and calibrated chest).
    evaluations = {(e.model_version_id, e.split): e
                   for e in Evaluation.objects.filter(model_version__in=versions).defer("resamples")}
    paired = [v.pk for v in versions if v.feature_set in ("chest", "chest_cal")]
    for pk, split, resamples in Evaluation.objects.filter(model_version__in=paired).values_list(
            "model_version_id", "split", "resamples"):
        evaluations[(pk, split)].resamples = resamples
    # One query for the cohorts' names, however the versions were loaded.
    cohorts = sorted(set(Cohort.objects.filter(pk__in={v.cohort_id for v in versions if v.cohort_id})
                         .values_list("name", flat=True)))
    tables = {}
    if cohorts:
        tables["table-1"] = _cohort_table(project, cohorts[0])
    development = ("train", "validation")
    tables["table-2"] = _metric_table(
        "table-2", "Table 2. Classification models (osteoporosis, osteopenia, normal) in the training and validation "
        "sets", "AUC, sensitivity, specificity, precision and F1 are one-vs-rest macro averages over the three "
        "classes; 95% CIs by stratified bootstrap. Operating point: the most probable class.",
        versions, "classification", development, evaluations)
    tables["table-3"] = _metric_table(
        "table-3", "Table 3. BMD regression models in the training and validation sets",
        "MAE and RMSE in mg/cm3 with bootstrap 95% CIs; EVS = explained variance score; Pearson r with its P.",
        versions, "regression", development, evaluations)
    tables["table-4"] = _metric_table(
        "table-4", "Table 4. Classification models in the internal test set", tables["table-2"]["note"],
        versions, "classification", ("test",), evaluations)
    tables["table-5"] = _metric_table(
        "table-5", "Table 5. BMD regression models in the internal test set", tables["table-3"]["note"],
        versions, "regression", ("test",), evaluations)
    tables["table-effect"] = _effect_table(versions, evaluations)
    tables["table-choices"] = _choices(versions)
    calibrated = next((v for v in versions if v.calibration), None)
    calibration = calibration_panel(calibrated) if calibrated else None
    if calibration:
        stored = calibration["calibration"]
        rows = [[l["level"], str(l["n"]), str(l["count"]), f"{l['mean']:.1f}", f"{l['sd']:.1f}"]
                for l in calibration["levels"]]
        rows.append(["fit to the level means", "", "", f"k = {stored['k']:.3f} HU/level, intercept "
                     f"{stored['intercept']:.2f}", f"R² = {charts.format_r2(stored['r2'])}"])
        if stored.get("pooled"):
            p = stored["pooled"]
            rows.append(["pooled fit (all points)", "", "", f"k = {p['k']:.3f} HU/level, intercept {p['intercept']:.2f}",
                         f"R² = {charts.format_r2(p['r2'])}"])
        tables["table-calibration"] = {
            "id": "table-calibration", "title": "Calibration curve: mean HU per level T5..L2 (training split)",
            "note": f"{stored['n_patients']} training patients with both regions.",
            "columns": ["Level", "n", "Patients", "Mean HU", "SD"], "rows": rows}
    n_resamples = sorted({e.n_resamples for e in evaluations.values()})
    order = ["table-choices", "table-1", "table-2", "table-3", "table-4", "table-5", "table-effect",
             "table-calibration"]
    return {
        "versions": versions, "tables": tables, "table_list": [tables[t] for t in order if t in tables],
        "figures": _figures(versions, evaluations, classifier, regressor), "calibration": calibration,
        "cohorts": cohorts, "n_resamples": n_resamples, "thresholds": project.thresholds,
        "classifier": classifier, "regressor": regressor,
    }


def table_csv(table):
    """The table as CSV text: the header row, then the rows, cell for cell as the page prints them."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table["columns"])
    for row in table["rows"]:
        # Cells starting with = + @ would be formulas in a spreadsheet; none of ours do, but a guard costs
        # nothing. A leading minus is a negative number here and is kept as it is.
        writer.writerow([f"'{c}" if isinstance(c, str) and c and c[0] in "=+@" else c for c in row])
    return out.getvalue()
