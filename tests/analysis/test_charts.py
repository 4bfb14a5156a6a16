"""The dashboard figures carry exactly the numbers they are given: ROC points, cases, limits, counts, fit."""

import json

import numpy as np
import pytest

from analysis import charts
from analysis.categories import CATEGORIES
from analysis.modeling.calibration import ThoracolumbarCalibration
from analysis.segmentation.levels import CALIBRATION_LEVELS
from analysis.stats.classification import multiclass_metrics
from analysis.stats.cohort import cohort_table
from analysis.stats.regression import regression_metrics


def traces_named(figure, prefix):
    return [t for t in figure["data"] if t.get("name", "").startswith(prefix)]


@pytest.fixture(scope="module")
def three_class():
    rng = np.random.default_rng(7)
    y = rng.choice(CATEGORIES, size=80)
    # Informative but imperfect probabilities: the true class gets extra weight.
    alpha = np.ones((80, 3)) + 2.0 * (y[:, None] == np.array(CATEGORIES)[None, :])
    proba = np.array([rng.dirichlet(a) for a in alpha])
    return y, proba, multiclass_metrics(y, proba, CATEGORIES, n_resamples=50).to_dict()


def test_roc_traces_are_the_roc_points_of_each_class_and_the_binary_task(three_class):
    from sklearn.metrics import roc_auc_score, roc_curve

    y, proba, metrics = three_class
    figure = charts.roc_figure(charts.roc_curves_from_metrics(metrics), title="validation")
    json.dumps(figure, allow_nan=False)  # strict JSON: what json_script hands to the browser
    for j, name in enumerate(CATEGORIES):
        (trace,) = traces_named(figure, f"{name} vs rest")
        # Expected: scikit-learn's empirical ROC of class j one-vs-rest, every threshold kept.
        fpr, tpr, _ = roc_curve(y == name, proba[:, j], drop_intermediate=False)
        np.testing.assert_allclose(trace["x"], fpr, rtol=0, atol=1e-12)
        np.testing.assert_allclose(trace["y"], tpr, rtol=0, atol=1e-12)
        c = metrics["per_class"][name]
        auc = roc_auc_score(y == name, proba[:, j])
        assert f"{auc:.3f} ({c['auc_ci_low']:.3f}–{c['auc_ci_high']:.3f})" in trace["name"]
    (binary,) = traces_named(figure, "osteoporosis vs not")
    fpr, tpr, _ = roc_curve(y == "osteoporosis", proba[:, 0], drop_intermediate=False)
    np.testing.assert_allclose(binary["x"], fpr, atol=1e-12)
    np.testing.assert_allclose(binary["y"], tpr, atol=1e-12)
    assert binary["line"]["dash"] == "dash"
    (chance,) = traces_named(figure, "chance")
    assert chance["x"] == [0.0, 1.0] and chance["y"] == [0.0, 1.0]
    assert len(figure["data"]) == 5 and figure["layout"]["title"]["text"] == "validation"


def test_scatter_identity_line_spans_all_values_and_legend_has_pearson_r():
    from scipy.stats import pearsonr

    reference = [50.0, 80.0, 120.0, 151.0]
    predicted = [45.0, 90.0, 130.0, 140.0]
    r = pearsonr(reference, predicted).statistic
    figure = charts.scatter_figure([{"name": "SGD", "reference": reference, "predicted": predicted, "pearson_r": r}])
    points, identity = figure["data"]
    assert points["x"] == reference and points["y"] == predicted
    assert f"Pearson r = {r:.3f}" in points["name"] and "n = 4" in points["name"]
    # min over both = 45 (a prediction), max over both = 151 (a reference value).
    assert identity["x"] == [45.0, 151.0] and identity["y"] == [45.0, 151.0]
    assert figure["layout"]["xaxis"]["range"] == figure["layout"]["yaxis"]["range"]


def test_overlaid_scatter_has_one_trace_per_series_and_one_identity_line():
    a = {"name": "A", "reference": [60.0, 100.0], "predicted": [70.0, 95.0], "pearson_r": 1.0}
    b = {"name": "B", "reference": [60.0, 100.0], "predicted": [30.0, 210.0], "pearson_r": 1.0}
    figure = charts.scatter_figure([a, b])
    assert [t["name"].split(" ")[0] for t in figure["data"]] == ["A", "B", "identity"]
    assert figure["data"][-1]["x"] == [30.0, 210.0]


def test_bland_altman_lines_sit_at_bias_and_limits_of_a_hand_computed_case():
    reference = np.array([100.0, 110.0, 120.0, 130.0])
    predicted = np.array([102.0, 108.0, 125.0, 131.0])
    # By hand: differences 2, -2, 5, 1; bias 1.5; SD (ddof 1) = sqrt((0.25 + 12.25 + 12.25 + 0.25) / 3)
    # = sqrt(25 / 3); limits 1.5 -/+ 1.96 * sqrt(25 / 3).
    sd = np.sqrt(25.0 / 3.0)
    ba = regression_metrics(reference, predicted, n_resamples=0).to_dict()["bland_altman"]
    figure = charts.bland_altman_figure(reference, predicted, ba)
    points = figure["data"][0]
    assert points["x"] == [101.0, 109.0, 122.5, 130.5] and points["y"] == [2.0, -2.0, 5.0, 1.0]
    lines = [t for t in figure["data"][1:] if "fill" not in t]
    bands = [t for t in figure["data"][1:] if t.get("fill") == "toself"]
    expected = {"bias": 1.5, "lower": 1.5 - 1.96 * sd, "upper": 1.5 + 1.96 * sd}
    for line, (label, value) in zip(lines, expected.items()):
        assert line["name"].startswith(label)
        assert line["y"] == pytest.approx([value, value], abs=1e-12)
        assert line["x"] == [101.0, 130.5]  # the range of the means
    for band, key in zip(bands, ("bias", "loa_low", "loa_high")):
        assert set(band["y"]) == {ba[f"{key}_ci_low"], ba[f"{key}_ci_high"]}
        assert ba[f"{key}_ci_low"] < ba[key] < ba[f"{key}_ci_high"]


def test_confusion_heatmap_shows_the_counts():
    from sklearn.metrics import confusion_matrix

    y = ["osteoporosis", "osteoporosis", "osteopenia", "normal", "normal", "normal"]
    pred = ["osteoporosis", "osteopenia", "osteopenia", "normal", "osteopenia", "normal"]
    matrix = confusion_matrix(y, pred, labels=list(CATEGORIES))
    figure = charts.confusion_figure(matrix, CATEGORIES)
    (heatmap,) = figure["data"]
    assert heatmap["z"] == [[1, 1, 0], [0, 1, 0], [0, 1, 2]]
    # Cells are drawn apart: gaps of the plot background, which no cell colour (not even an empty cell's) matches.
    assert heatmap["xgap"] > 0 and heatmap["ygap"] > 0
    assert figure["layout"]["plot_bgcolor"] not in [colour for _, colour in heatmap["colorscale"]]
    assert heatmap["text"] == [["1", "1", "0"], ["0", "1", "0"], ["0", "1", "2"]]
    assert heatmap["x"] == heatmap["y"] == list(CATEGORIES)
    with pytest.raises(ValueError, match="shape"):
        charts.confusion_figure([[1, 2], [3, 4]], CATEGORIES)


def test_calibration_chart_draws_the_level_means_their_fit_the_pooled_fit_and_a_sample_of_patients():
    # Noiseless phantom cohort: HU = 180 - 4 n + offset_i at every level, so the level means lie on
    # 180 + mean(offset) - 4 n exactly (mean offset 0): the fit to the means is k = -4, intercept 180, R^2 = 1;
    # the pooled fit has the same line (every patient contributes the same ten levels) with a smaller R^2.
    offsets = np.linspace(-30.0, 30.0, 25)
    n = np.arange(1, 11, dtype=float)
    hu = 180.0 - 4.0 * n[None, :] + offsets[:, None]
    curve = ThoracolumbarCalibration().fit(hu).curve_data()
    figure = charts.calibration_figure(curve, max_patients=10, random_state=3)
    measured, means, fit, pooled = figure["data"]
    assert fit["x"] == n.tolist()
    np.testing.assert_allclose(fit["y"], 180.0 - 4.0 * n, atol=1e-9)
    assert "-4.00·n + 180.0" in fit["name"] and "R² = 1.0000" in fit["name"] and "level means" in fit["name"]
    np.testing.assert_allclose(means["y"], 180.0 - 4.0 * n, atol=1e-9)
    np.testing.assert_allclose(means["error_y"]["array"], np.full(10, offsets.std(ddof=1)), atol=1e-9)
    assert pooled["name"].startswith("pooled fit (all points): HU = -4.00·n + 180.0")
    # Ten patients of 25, each as its ten measured points followed by a gap.
    assert measured["name"] == "per-patient HU, 10 of 25 patients"
    assert len(measured["x"]) == 10 * 11 and measured["x"].count(None) == 10
    chosen = sorted({int(t) for t in measured["text"] if t})
    expected = np.sort(np.random.default_rng(3).choice(25, 10, replace=False)).tolist()
    assert chosen == expected
    for i, pid in enumerate(chosen):
        np.testing.assert_allclose(measured["y"][11 * i: 11 * i + 10], hu[pid], atol=1e-9)
    ticks = figure["layout"]["xaxis"]["ticktext"]
    assert [t.split("<br>")[0] for t in ticks] == list(CALIBRATION_LEVELS)


def test_calibration_chart_without_patients_is_the_cohort_line_only():
    curve = {"k": -3.0, "intercept": 150.0, "r2": 0.5, "levels": list(CALIBRATION_LEVELS),
             "n": list(range(1, 11)), "patients": []}
    (fit,) = charts.calibration_figure(curve)["data"]
    assert fit["y"] == [150.0 - 3.0 * i for i in range(1, 11)]
    # The demo's fit to the level means has R² 0.99971: the legend tells it from a perfect line.
    (fit,) = charts.calibration_figure({**curve, "r2": 0.99971})["data"]
    assert fit["name"].endswith("R² = 0.9997")


def test_cohort_table_rows_print_the_seed_table_1():
    # Counts of the seed study's table 1 (train 426, validation 106, test 170); its published chi-square
    # values are sex 14.417 (P 0.001) and category 2.614 (P 0.624).
    counts = {"train": (160, 266, 155, 178, 93), "validation": (31, 75, 38, 45, 23), "test": (37, 133, 56, 83, 31)}
    splits, sexes, categories, ages = [], [], [], []
    rng = np.random.default_rng(0)
    for split, (male, female, op, open_, normal) in counts.items():
        n = male + female
        splits += [split] * n
        sexes += ["M"] * male + ["F"] * female
        categories += ["osteoporosis"] * op + ["osteopenia"] * open_ + ["normal"] * normal
        ages += rng.integers(40, 90, n).tolist()
    table = cohort_table(ages, sexes, categories, splits)
    out = charts.cohort_table_rows(table, split_labels={"train": "Training"})
    assert out["columns"] == ["Training (n = 426)", "validation (n = 106)", "test (n = 170)"]
    rows = {r["label"]: r for r in out["rows"]}
    assert rows["Sex, n (%)"]["statistic"] == "χ² = 14.417" and rows["Sex, n (%)"]["p"] == "<0.001"
    assert rows["BMD category (QCT), n (%)"]["statistic"] == "χ² = 2.614"
    assert rows["BMD category (QCT), n (%)"]["p"] == "0.624"
    assert rows["male"]["cells"] == ["160 (37.6)", "31 (29.2)", "37 (21.8)"]
    assert rows["osteopenia"]["cells"] == ["178 (41.8)", "45 (42.5)", "83 (48.8)"]
    train_ages = np.array(ages[:426], dtype=float)
    p25, med, p75 = np.percentile(train_ages, [25, 50, 75])
    age = rows["Age, median (P25, P75), years"]
    assert age["cells"][0] == f"{med:.0f} ({p25:.0f}, {p75:.0f})"
    assert age["statistic"] == f"H = {table['age']['h']:.3f}"


@pytest.mark.parametrize(("p", "text"), [(0.0004, "<0.001"), (0.001, "0.001"), (0.6244, "0.624"), (None, "–")])
def test_format_p_prints_like_the_paper(p, text):
    assert charts.format_p(p) == text


def test_format_ci_uses_to_when_an_end_is_negative():
    assert charts.format_ci(0.948, 0.908, 0.984) == "0.948 (0.908–0.984)"
    assert charts.format_ci(-0.91, -2.3, 0.48, 2) == "-0.91 (-2.30 to 0.48)"
    assert charts.format_ci(None) == "–"


def test_format_ci_never_prints_a_negative_zero():
    # A paired difference whose lower end is -0.0004 rounds to zero: "0.000 (-0.000 to 0.002)" reads as a
    # sign without a value, and "to" is only needed when a printed end is negative.
    assert charts.format_ci(0.0002, -0.0004, 0.0021) == "0.000 (0.000–0.002)"
    assert charts.format_ci(-0.0002, -0.0004, -0.0001) == "0.000 (0.000–0.000)"
    assert charts.format_ci(-0.004, -0.0104, 0.0021, 2) == "0.00 (-0.01 to 0.00)"
    assert charts.format_number(-0.0, 2) == "0.00" and charts.format_number(-0.4, 0) == "0"


@pytest.mark.parametrize(("r2", "text"), [(0.99971, "0.9997"), (0.99996, ">0.9999"), (1.0, "1.0000"),
                                          (0.0412, "0.0412"), (None, "–")])
def test_format_r2_never_prints_a_value_below_one_as_one(r2, text):
    assert charts.format_r2(r2) == text


def test_every_kind_of_figure_passes_plotlys_validators():
    # Figures are plain dicts for speed; plotly's validators (go.Figure) must accept every kind we draw, so a
    # misspelt property fails here rather than silently in the browser.
    from analysis.stats.reliability import reliability

    rng = np.random.default_rng(0)
    ref, pred = rng.uniform(40, 200, 30), rng.uniform(40, 200, 30)
    ba = {"bias": 1.0, "bias_ci_low": 0.0, "bias_ci_high": 2.0, "loa_low": -20.0, "loa_low_ci_low": -25.0,
          "loa_low_ci_high": -15.0, "loa_high": 22.0, "loa_high_ci_low": 18.0, "loa_high_ci_high": 26.0}
    y = np.array(CATEGORIES)[rng.integers(0, 3, 30)]
    proba = rng.dirichlet(np.ones(3), 30)
    cal = ThoracolumbarCalibration().fit(180.0 - 4.0 * np.arange(1, 11)[None, :] + rng.normal(0, 5, (12, 10)))
    figures = [
        charts.roc_figure([{"name": "a", "fpr": [0, 0.5, 1], "tpr": [0, 0.7, 1], "auc": 0.7, "ci_low": 0.6,
                            "ci_high": 0.8, "colour": "#000000", "dash": "dash"}], title="t"),
        charts.scatter_figure([{"name": "a", "reference": ref, "predicted": pred, "pearson_r": 0.1,
                                "labels": [f"P{i}" for i in range(30)]}]),
        charts.bland_altman_figure(ref, pred, ba, labels=[f"P{i}" for i in range(30)]),
        charts.confusion_figure([[1, 2, 3], [4, 5, 6], [7, 8, 9]], CATEGORIES),
        charts.calibration_figure(cal.summary(max_patients=5)),
        charts.reliability_figure(reliability(y, proba, CATEGORIES)),
    ]
    for figure in figures:
        charts.validate_figure(figure)
    with pytest.raises(ValueError):
        charts.validate_figure({"data": [{"type": "scatter", "colour": "red"}], "layout": {}})


def test_titles_sit_above_the_plot_area_below_the_mode_bar():
    # The mode bar covers the top strip of a chart on the right; a long title ("T5-T10-Cal (abdomen transfer),
    # BDT, validation (n = 106)") on that strip ran under its buttons. The title gets a line of its own just
    # above the plot area, and the chart grows by the margin that takes, so the plot area keeps its size.
    curves = [{"name": "a", "fpr": [0, 1], "tpr": [0, 1], "auc": 0.5, "ci_low": 0.4, "ci_high": 0.6}]
    titled = charts.roc_figure(curves, title="T5-T10-Cal (abdomen transfer), BDT, validation (n = 106)")["layout"]
    plain = charts.roc_figure(curves)["layout"]
    assert titled["title"]["yref"] == "paper" and titled["title"]["y"] == 1 and titled["title"]["yanchor"] == "bottom"
    assert titled["margin"]["t"] == charts.TITLE_MARGIN_PX >= 80 and plain["margin"]["t"] == 50
    assert (titled["height"] - titled["margin"]["t"] - titled["margin"]["b"]
            == plain["height"] - plain["margin"]["t"] - plain["margin"]["b"])
    charts.validate_figure(charts.roc_figure(curves, title="t"))
