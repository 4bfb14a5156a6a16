"""Plotly figures of the dashboards (seed study figures 4-8) and the rendering of its table 1.

Every function is pure: it takes numbers (stored metrics, per-case values, calibration curve data) and
returns a JSON-ready plotly figure dict ``{"data": [...], "layout": {...}}`` that ``static/js/charts.js``
hands to ``Plotly.newPlot``. Nothing here computes a statistic: AUCs, CIs, Pearson r and Bland-Altman
limits come from :mod:`analysis.stats` (through the stored evaluations), so a chart always shows the same
numbers as the table beside it.

Figures carry no template: plotly.py's default template would add about 7 kB to every figure on a page
with eight of them, and plotly.js's own defaults read well.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.stats.roc import jsonable

__all__ = [
    "bland_altman_figure",
    "calibration_figure",
    "cohort_table_rows",
    "confusion_figure",
    "format_ci",
    "format_number",
    "format_p",
    "format_r2",
    "reliability_figure",
    "roc_curves_from_metrics",
    "roc_figure",
    "scatter_figure",
    "validate_figure",
]

# Colours per category as in static/css/site.css, so a curve and a badge of one class match.
CATEGORY_COLOURS = {"osteoporosis": "#b3261e", "osteopenia": "#a15c00", "normal": "#2e7d32"}
SERIES_COLOURS = ("#1f5fa8", "#b3261e", "#2e7d32", "#a15c00", "#6b4fa0", "#00838f", "#5f6b7a")
BMD_UNITS = "mg/cm³"
# Top margin of a chart with a title: the mode bar's strip (about 30 px) above the title's line.
TITLE_MARGIN_PX = 84


def _legend_below(n_entries, plot_height=340):
    """Layout keys putting a vertical legend under the plot, with room for ``n_entries`` lines."""
    # Legend y is a fraction of the plot height: start 80 px below the axis, under its tick labels and title.
    bottom = 90 + 21 * n_entries
    return {"legend": {"x": 0, "xanchor": "left", "y": -80 / plot_height, "yanchor": "top", "bgcolor": "rgba(0,0,0,0)"},
            "height": plot_height + 60 + bottom, "margin": {"l": 60, "r": 20, "t": 50, "b": bottom}}


def _figure(traces, layout):
    """A plain figure dict ``{"data", "layout"}`` (JSON-ready) with the site's common layout.

    Built as plain dicts: plotly's validating ``go.Figure`` costs about 30 ms per figure, which a report with
    20 charts cannot afford on page view. :func:`validate_figure` runs plotly's validators; the tests run it
    on every kind of figure, so a typo in a property still fails in Python, not in the browser.
    """
    base = {
        "margin": {"l": 60, "r": 20, "t": 50, "b": 55},
        "height": 420,
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 13},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
        "hovermode": "closest",
    }
    # The mode bar takes the top strip of the chart on the right: a long title at its height runs under the
    # buttons. Titles sit at the left on a line of their own just above the plot area, below that strip.
    layout = {**layout, "title": {"x": 0.01, "xanchor": "left", "yref": "paper", "y": 1, "yanchor": "bottom",
                                  "pad": {"b": 12}, **layout.get("title", {})}}
    base.update(layout)
    extra = TITLE_MARGIN_PX - base["margin"].get("t", 0)
    if layout["title"].get("text") and extra > 0:
        # The plot area keeps its size: the chart grows by the extra margin.
        base["margin"] = {**base["margin"], "t": TITLE_MARGIN_PX}
        base["height"] += extra
    return jsonable({"data": list(traces), "layout": base})


def validate_figure(figure):
    """Run plotly's validators on a figure dict (raises ValueError on an unknown or invalid property)."""
    import plotly.graph_objects as go

    go.Figure(data=figure["data"], layout=figure["layout"])
    return figure


def format_number(value, digits=3):
    """``value`` with ``digits`` decimals, never a negative zero: ``-0.0002`` prints as ``"0.000"``."""
    text = f"{value:.{digits}f}"
    # A negative number that rounds to zero would print as "-0.000", a sign without a value behind it.
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def format_ci(value, low=None, high=None, digits=3):
    """``"0.948 (0.908–0.984)"`` (``"-0.91 (-2.30 to 0.48)"`` when an end is negative); the value alone
    without an interval; ``"–"`` without a value. No number prints as a negative zero."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = format_number(value, digits)
    if low is None or high is None:
        return text
    low_text, high_text = format_number(low, digits), format_number(high, digits)
    # "-29.24–-24.38" misreads; an interval with a negative end (as printed) is written with "to".
    sep = " to " if low_text.startswith("-") or high_text.startswith("-") else "–"
    return f"{text} ({low_text}{sep}{high_text})"


def format_r2(r2, digits=4):
    """An R² with ``digits`` decimals that never prints a value below 1 as ``1.0000``: ``"0.9997"``;
    ``">0.9999"`` when only more decimals would tell it from 1; ``"–"`` without a value."""
    if r2 is None or (isinstance(r2, float) and not math.isfinite(r2)):
        return "–"
    text = format_number(r2, digits)
    if r2 < 1 and float(text) >= 1:
        return f">{1 - 10 ** -digits:.{digits}f}"
    return text


def format_p(p):
    """A p-value as a paper prints it: ``"<0.001"`` below 0.001, otherwise three decimals."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ROC curves -------------------------------------------------------------------------------------------------


def roc_curves_from_metrics(metrics):
    """The curves of a stored 3-class evaluation: one-vs-rest per class, then osteoporosis vs not.

    Parameters
    ----------
    metrics : dict
        ``MulticlassMetrics.to_dict()`` (an ``Evaluation.metrics`` of a classification version).

    Returns
    -------
    list of dict
        ``{"name", "fpr", "tpr", "auc", "ci_low", "ci_high", "colour", "dash"}`` per curve, in the input's
        class order; the binary curve (DeLong CI) last and dashed.
    """
    curves = []
    for name in metrics.get("classes", []):
        points = metrics["roc"][name]
        per_class = metrics["per_class"][name]
        curves.append({
            "name": f"{name} vs rest",
            "fpr": points["fpr"], "tpr": points["tpr"],
            "auc": per_class["auc"], "ci_low": per_class.get("auc_ci_low"), "ci_high": per_class.get("auc_ci_high"),
            "colour": CATEGORY_COLOURS.get(name), "dash": "solid",
        })
    binary = metrics.get("binary")
    if binary:
        positive = metrics.get("binary_positive_class") or "positive"
        curves.append({
            "name": f"{positive} vs not (binary)",
            "fpr": binary["roc_fpr"], "tpr": binary["roc_tpr"],
            "auc": binary["auc"], "ci_low": binary["auc_ci_low"], "ci_high": binary["auc_ci_high"],
            "colour": "#1d2530", "dash": "dash",
        })
    return curves


def roc_figure(curves, *, title=""):
    """ROC curves with the chance diagonal; each legend entry carries the AUC with its 95% CI.

    Parameters
    ----------
    curves : sequence of dict
        ``{"name", "fpr", "tpr", "auc", "ci_low", "ci_high"}`` and optionally ``"colour"``, ``"dash"``;
        ``fpr``/``tpr`` as :func:`analysis.stats.roc.roc_points` returns them (from (0, 0) to (1, 1)).
    title : str

    Returns
    -------
    dict
        Plotly figure: one step-free line trace per curve (in order), then the diagonal.
    """
    traces = []
    for i, curve in enumerate(curves):
        colour = curve.get("colour") or SERIES_COLOURS[i % len(SERIES_COLOURS)]
        auc = format_ci(curve.get("auc"), curve.get("ci_low"), curve.get("ci_high"))
        traces.append({
            "type": "scatter", "mode": "lines",
            "x": list(curve["fpr"]), "y": list(curve["tpr"]),
            "name": f"{curve['name']}: AUC {auc}",
            "line": {"color": colour, "width": 2, "dash": curve.get("dash") or "solid"},
            "hovertemplate": "1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}<extra>" + curve["name"] + "</extra>",
        })
    traces.append({
        "type": "scatter", "mode": "lines", "x": [0.0, 1.0], "y": [0.0, 1.0], "name": "chance (AUC 0.5)",
        "line": {"color": "#9aa4b1", "width": 1, "dash": "dot"}, "hoverinfo": "skip",
    })
    return _figure(traces, {
        "title": {"text": title},
        "xaxis": {"title": {"text": "1 − specificity"}, "range": [-0.01, 1.01], "constrain": "domain"},
        "yaxis": {"title": {"text": "Sensitivity"}, "range": [-0.01, 1.01], "scaleanchor": "x"},
        **_legend_below(len(traces)),
    })


# Regression: scatter and Bland-Altman -----------------------------------------------------------------------


def _finite_pair(reference, predicted):
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    if ref.shape != pred.shape or ref.ndim != 1:
        raise ValueError(f"reference and predicted must be 1-D of one length, got {ref.shape} and {pred.shape}")
    return ref, pred


def scatter_figure(series, *, title="", units=BMD_UNITS):
    """Predicted against QCT BMD with the identity line (figures 5 and 8 of the seed study).

    Parameters
    ----------
    series : sequence of dict
        ``{"name", "reference", "predicted", "pearson_r"}`` and optionally ``"labels"`` (hover text per
        case): one marker trace each (several overlay on the comparison page). ``pearson_r`` is the stored
        value of :func:`analysis.stats.regression.regression_metrics`, shown in the legend.
    title : str
    units : str

    Returns
    -------
    dict
        Plotly figure: one marker trace per series, then the identity line y = x spanning the smallest to
        the largest value of all series (reference and predicted together).
    """
    traces = []
    lows, highs = [], []
    for i, s in enumerate(series):
        ref, pred = _finite_pair(s["reference"], s["predicted"])
        if ref.size:
            lows.append(min(ref.min(), pred.min()))
            highs.append(max(ref.max(), pred.max()))
        r = s.get("pearson_r")
        name = s["name"] + (f" (n = {ref.size}, Pearson r = {r:.3f})" if r is not None else f" (n = {ref.size})")
        trace = {
            "type": "scatter", "mode": "markers", "x": ref.tolist(), "y": pred.tolist(), "name": name,
            "marker": {"color": SERIES_COLOURS[i % len(SERIES_COLOURS)], "size": 6, "opacity": 0.7},
            "hovertemplate": f"QCT %{{x:.1f}}<br>predicted %{{y:.1f}} {units}<extra>{s['name']}</extra>",
        }
        if s.get("labels") is not None:
            trace["text"] = list(s["labels"])
            trace["hovertemplate"] = "%{text}<br>" + trace["hovertemplate"]
        traces.append(trace)
    axis_range = None
    if lows:
        low, high = float(min(lows)), float(max(highs))
        pad = 0.04 * (high - low) or 1.0
        axis_range = [low - pad, high + pad]
        traces.append({
            "type": "scatter", "mode": "lines", "x": [low, high], "y": [low, high], "name": "identity (y = x)",
            "line": {"color": "#5f6b7a", "width": 1, "dash": "dash"}, "hoverinfo": "skip",
        })
    return _figure(traces, {
        "title": {"text": title},
        # One range on both axes and square cells, so the identity line is the diagonal.
        "xaxis": {"title": {"text": f"QCT BMD ({units})"}, "range": axis_range, "zeroline": False,
                  "constrain": "domain"},
        "yaxis": {"title": {"text": f"Predicted BMD ({units})"}, "range": axis_range, "zeroline": False,
                  "scaleanchor": "x"},
        **_legend_below(len(traces)),
    })


def bland_altman_figure(reference, predicted, ba, *, title="", units=BMD_UNITS, labels=None):
    """Bland-Altman plot: mean of the two methods against predicted minus QCT (figure 6 of the seed study).

    Parameters
    ----------
    reference, predicted : array_like, shape (n_cases,)
        QCT and predicted BMD.
    ba : dict
        ``BlandAltman.to_dict()`` of the same cases (stored with the evaluation): ``bias``, ``loa_low``,
        ``loa_high`` and the ``*_ci_low`` / ``*_ci_high`` of each.
    title, units : str
    labels : sequence of str, optional
        Hover text per case.

    Returns
    -------
    dict
        Plotly figure: the cases; then for the bias, the lower and the upper limit a shaded band over the
        limit's 95% CI and a horizontal line at its value, spanning the range of the means.
    """
    ref, pred = _finite_pair(reference, predicted)
    mean = (ref + pred) / 2.0
    diff = pred - ref
    x0, x1 = (float(mean.min()), float(mean.max())) if mean.size else (0.0, 1.0)
    points = {
        "type": "scatter", "mode": "markers", "x": mean.tolist(), "y": diff.tolist(), "name": f"cases (n = {ref.size})",
        "marker": {"color": SERIES_COLOURS[0], "size": 6, "opacity": 0.7},
        "hovertemplate": f"mean %{{x:.1f}}<br>difference %{{y:.1f}} {units}<extra></extra>",
    }
    if labels is not None:
        points["text"] = list(labels)
        points["hovertemplate"] = "%{text}<br>" + points["hovertemplate"]
    traces = [points]
    z = ba.get("loa_z", 1.96)
    for key, label, colour, dash in (
        ("bias", "bias", "#1d2530", "solid"),
        ("loa_low", f"lower limit (bias − {z:g} SD)", "#b3261e", "dash"),
        ("loa_high", f"upper limit (bias + {z:g} SD)", "#b3261e", "dash"),
    ):
        value, low, high = ba[key], ba[f"{key}_ci_low"], ba[f"{key}_ci_high"]
        traces.append({
            "type": "scatter", "mode": "lines", "x": [x0, x1, x1, x0, x0], "y": [low, low, high, high, low],
            "fill": "toself", "fillcolor": "rgba(95,107,122,0.15)", "line": {"width": 0},
            "name": f"95% CI of the {label.split(' (')[0]}", "legendgroup": key, "showlegend": False,
            "hoverinfo": "skip",
        })
        traces.append({
            "type": "scatter", "mode": "lines", "x": [x0, x1], "y": [value, value],
            "name": f"{label}: {value:.2f} ({low:.2f} to {high:.2f})", "legendgroup": key,
            "line": {"color": colour, "width": 2, "dash": dash},
            "hovertemplate": f"{label}: {value:.2f} {units}<extra></extra>",
        })
    return _figure(traces, {
        "title": {"text": title},
        "xaxis": {"title": {"text": f"Mean of QCT and predicted BMD ({units})"}},
        "yaxis": {"title": {"text": f"Predicted − QCT BMD ({units})"}, "zeroline": True},
        **_legend_below(4),
    })


# Confusion matrix -------------------------------------------------------------------------------------------


def confusion_figure(matrix, classes, *, title=""):
    """Heatmap of a confusion matrix with the count written in each cell.

    Parameters
    ----------
    matrix : array_like of int, shape (n_classes, n_classes)
        ``matrix[i][j]`` = cases of true ``classes[i]`` predicted as ``classes[j]``.
    classes : sequence of str
    title : str

    Returns
    -------
    dict
        Plotly figure with one heatmap trace; rows are drawn top to bottom in ``classes`` order.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must have shape ({k}, {k}), got {counts.shape}")
    trace = {
        "type": "heatmap", "z": counts.tolist(), "x": list(classes), "y": list(classes),
        "text": [[str(c) for c in row] for row in counts.tolist()], "texttemplate": "%{text}",
        # White gaps between the cells (the plot background), so that they read as cells; the lightest cell
        # (no cases) is a shade darker than the gaps.
        "colorscale": [[0.0, "#e4e8ee"], [1.0, "#1f5fa8"]], "showscale": False, "xgap": 3, "ygap": 3,
        "hovertemplate": "QCT %{y}<br>predicted %{x}<br>%{z} cases<extra></extra>",
    }
    return _figure([trace], {
        "title": {"text": title},
        "plot_bgcolor": "#ffffff",
        "xaxis": {"title": {"text": "Predicted"}, "side": "bottom"},
        "yaxis": {"title": {"text": "QCT category"}, "autorange": "reversed"},
        "height": 340,
        "margin": {"l": 110, "r": 20, "t": 50, "b": 60},
    })


# Thoraco-lumbar calibration ---------------------------------------------------------------------------------


def calibration_figure(curve, *, max_patients=40, random_state=0, title=""):
    """The calibration curve as in the seed study: per-level mean HU T5..L2 with its linear fit.

    Parameters
    ----------
    curve : dict
        :meth:`analysis.modeling.calibration.ThoracolumbarCalibration.summary` (as stored with a model
        version) or ``curve_data`` output: ``k``, ``intercept``, ``r2`` (fit to the per-level means),
        ``levels``, ``n``, optionally ``level_mean``, ``level_sd``, ``pooled`` and ``patients``
        (``{"patient_id", "n", "hu"}`` each).
    max_patients : int
        Patients drawn at most behind the curve (a seeded sample without replacement when there are more).
    random_state : int
        Seed of that sample.
    title : str

    Returns
    -------
    dict
        Plotly figure: the sampled patients' measured HU as one thin line trace (patients separated by
        gaps), the per-level means with error bars of one SD, the fit to the means ``k * n + intercept``
        with its R^2, and the pooled fit (dashed, labelled as pooled).
    """
    n_axis = [float(v) for v in curve["n"]]
    patients = list(curve.get("patients") or [])
    total = int(curve.get("n_patients") or len(patients))
    if len(patients) > max_patients:
        keep = np.sort(np.random.default_rng(random_state).choice(len(patients), max_patients, replace=False))
        patients = [patients[i] for i in keep]
    traces = []
    if patients:
        x, y, text = [], [], []
        for p in patients:
            x += list(p["n"]) + [None]
            y += list(p["hu"]) + [None]
            text += [str(p["patient_id"])] * len(p["n"]) + [""]
        shown = len(patients)
        traces.append({
            "type": "scatter", "mode": "lines", "x": x, "y": y, "text": text, "connectgaps": False,
            "name": f"per-patient HU, {shown} of {total} patients" if shown < total else f"per-patient HU, {total} patients",
            "line": {"color": "rgba(95,107,122,0.3)", "width": 1},
            "hovertemplate": "%{text}<br>n = %{x}<br>%{y:.1f} HU<extra></extra>",
        })
    if curve.get("level_mean") is not None:
        means = [None if m is None else float(m) for m in curve["level_mean"]]
        sds = [0.0 if v is None else float(v) for v in (curve.get("level_sd") or [None] * len(means))]
        traces.append({
            "type": "scatter", "mode": "markers", "x": n_axis, "y": means,
            "error_y": {"type": "data", "array": sds, "visible": True, "color": "#5f6b7a", "thickness": 1.5},
            "name": "mean HU per level (± 1 SD)", "marker": {"color": "#1d2530", "size": 8},
            "hovertemplate": "n = %{x}<br>mean %{y:.1f} HU<extra></extra>",
        })
    k, intercept, r2 = curve["k"], curve["intercept"], curve.get("r2")
    r2_text = f", R² = {format_r2(r2)}" if r2 is not None else ""
    traces.append({
        "type": "scatter", "mode": "lines", "x": n_axis, "y": [k * n + intercept for n in n_axis],
        "name": f"fit to the level means: HU = {k:.2f}·n + {intercept:.1f}{r2_text}",
        "line": {"color": "#1f5fa8", "width": 3},
        "hovertemplate": "n = %{x}<br>%{y:.1f} HU<extra>fit to the means</extra>",
    })
    pooled = curve.get("pooled")
    if pooled:
        traces.append({
            "type": "scatter", "mode": "lines", "x": n_axis, "y": [pooled["k"] * n + pooled["intercept"] for n in n_axis],
            "name": f"pooled fit (all points): HU = {pooled['k']:.2f}·n + {pooled['intercept']:.1f}, "
                    f"R² = {format_r2(pooled['r2'])}",
            "line": {"color": "#a15c00", "width": 2, "dash": "dash"},
            "hovertemplate": "n = %{x}<br>%{y:.1f} HU<extra>pooled fit</extra>",
        })
    return _figure(traces, {
        "title": {"text": title},
        "xaxis": {"title": {"text": "Vertebra level (n)"}, "tickmode": "array", "tickvals": n_axis,
                  "ticktext": [f"{level}<br>{int(n)}" for level, n in zip(curve["levels"], n_axis)]},
        "yaxis": {"title": {"text": "Mean trabecular HU"}},
        **_legend_below(len(traces), plot_height=380),
    })


def reliability_figure(reliability, *, title=""):
    """Reliability curves: observed share of each class against the mean predicted probability per bin.

    Parameters
    ----------
    reliability : dict
        :func:`analysis.stats.reliability.reliability` output (stored with the evaluation).
    title : str

    Returns
    -------
    dict
        Plotly figure: one line per class (legend with its Brier score), then the diagonal of perfect
        reliability.
    """
    traces = []
    for name, c in reliability["classes"].items():
        traces.append({
            "type": "scatter", "mode": "lines+markers", "x": c["mean_predicted"], "y": c["observed"],
            "text": [f"{k} cases" for k in c["count"]], "name": f"{name}: Brier {c['brier']:.3f}",
            "line": {"color": CATEGORY_COLOURS.get(name), "width": 2},
            "hovertemplate": "predicted %{x:.2f}<br>observed %{y:.2f}<br>%{text}<extra>" + name + "</extra>",
        })
    traces.append({
        "type": "scatter", "mode": "lines", "x": [0.0, 1.0], "y": [0.0, 1.0], "name": "perfect reliability",
        "line": {"color": "#9aa4b1", "width": 1, "dash": "dot"}, "hoverinfo": "skip",
    })
    return _figure(traces, {
        "title": {"text": title},
        "xaxis": {"title": {"text": "Mean predicted probability"}, "range": [-0.01, 1.01], "constrain": "domain"},
        "yaxis": {"title": {"text": "Observed share"}, "range": [-0.01, 1.01], "scaleanchor": "x"},
        **_legend_below(len(traces)),
    })


# Table 1 ----------------------------------------------------------------------------------------------------


def _number(x, digits):
    return "–" if x is None else f"{x:.{digits}f}"


def cohort_table_rows(table, *, split_labels=None, category_labels=None, age_digits=0):
    """Rows of table 1 as the seed study prints it, from :func:`analysis.stats.cohort.cohort_table`.

    Parameters
    ----------
    table : dict
        ``cohort_table(...)`` output.
    split_labels : dict, optional
        Column heading per split (default the split name); ``n`` is appended as "(n = ...)".
    category_labels : dict, optional
        Row label per BMD category and sex (default "female"/"male" and the category names).
    age_digits : int
        Decimals of the age median and quartiles (the seed prints whole years).

    Returns
    -------
    dict
        ``{"columns": [heading per split], "rows": [{"label", "cells": [per split], "statistic", "p",
        "kind": "variable" | "level"}]}``: age median (P25, P75) with "H = ..."; sex and category as a
        heading row with "χ² = ..." and P, then one "n (%)" row per level. Percentages have one decimal.
    """
    splits = list(table["splits"])
    split_labels = split_labels or {}
    names = {"F": "female", "M": "male", **(category_labels or {})}
    columns = [f"{split_labels.get(s, s)} (n = {table['n'][s]})" for s in splits]
    age = table["age"]
    rows = [{
        "label": "Age, median (P25, P75), years",
        "cells": [
            "–" if age[s]["median"] is None
            else f"{_number(age[s]['median'], age_digits)} ({_number(age[s]['p25'], age_digits)}, "
                 f"{_number(age[s]['p75'], age_digits)})"
            for s in splits
        ],
        "statistic": "–" if age.get("h") is None else f"H = {age['h']:.3f}",
        "p": format_p(age.get("p")),
        "kind": "variable",
    }]
    for key, label in (("sex", "Sex, n (%)"), ("category", "BMD category (QCT), n (%)")):
        block = table[key]
        rows.append({
            "label": label, "cells": [""] * len(splits),
            "statistic": "–" if block.get("chi2") is None else f"χ² = {block['chi2']:.3f}",
            "p": format_p(block.get("p")), "kind": "variable",
        })
        for level in block["levels"]:
            cells = []
            for s in splits:
                entry = block[s][level]
                cells.append(f"{entry['n']}" if entry["percent"] is None else f"{entry['n']} ({entry['percent']:.1f})")
            rows.append({"label": names.get(level, level), "cells": cells, "statistic": "", "p": "", "kind": "level"})
        missing = [block[s].get("missing", 0) for s in splits]
        if any(missing):
            rows.append({"label": "missing", "cells": [str(m) for m in missing], "statistic": "", "p": "",
                         "kind": "level"})
    return {"columns": columns, "rows": rows}
