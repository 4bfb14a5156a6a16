"""Dashboard pages of a small trained cohort: the charts and tables carry the stored numbers, the comparison
runs the paired tests on the common cases, the cohort table is table 1, and other projects stay hidden."""

import json
import re

import numpy as np
import pytest
from django.urls import reverse
from django.utils.html import escape

from analysis.categories import CATEGORIES
from analysis.charts import format_p, format_r2
from analysis.dashboards import metric_cells
from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from analysis.stats.regression import paired_mae_comparison
from analysis.stats.roc import delong_paired
from studies.cohorts import cohort_table_for
from studies.demo import seed_demo_project
from tests.analysis.test_model_pages import login
from tests.factories import MembershipFactory, ProjectFactory, UserFactory


@pytest.fixture
def trained(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=90, random_state=1, name="dashboard-demo")
    seed_demo_measurements(project, random_state=1)
    versions, _ = train_cohort(project, feature_sets=("abdomen", "chest_cal"),
                               algorithms={"classification": ["LR"], "regression": ["SGD"]}, n_resamples=20,
                               calibration_variants=("abdomen_transfer", "feature_augmentation"))
    # ("chest_cal", task) is abdomen transfer, ("chest_cal:feature_augmentation", task) the augmented chest.
    by_key = {(f"{v.feature_set}:{v.calibration_variant}" if v.calibration_variant == "feature_augmentation"
               else v.feature_set, v.task): v for v in versions}
    return project, by_key


def figure(page, figure_id):
    """The plotly figure a page hands to charts.js (the json_script element with that id)."""
    match = re.search(rf'<script id="{figure_id}" type="application/json">(.*?)</script>', page, re.S)
    assert match, f"no figure {figure_id} on the page"
    return json.loads(match.group(1))


def common_predictions(a, b, split):
    pa = {p.exam_id: p for p in a.predictions.filter(split=split).select_related("exam__qct")}
    pb = {p.exam_id: p for p in b.predictions.filter(split=split)}
    common = sorted(set(pa) & set(pb))
    return common, pa, pb


def test_classification_version_page_draws_the_stored_roc_points_and_confusion(client, trained):
    project, v = trained
    lr = v[("abdomen", "classification")]
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_detail", args=[project.pk, lr.pk])).content.decode()
    for split in ("train", "validation", "test"):
        m = lr.evaluations.get(split=split).metrics
        roc = figure(page, f"fig-{split}-roc")
        # The curves are the stored ROC points, class by class, then the binary task.
        for trace, name in zip(roc["data"], CATEGORIES):
            assert trace["x"] == m["roc"][name]["fpr"] and trace["y"] == m["roc"][name]["tpr"]
        assert roc["data"][3]["x"] == m["binary"]["roc_fpr"]
        assert figure(page, f"fig-{split}-confusion")["data"][0]["z"] == m["confusion_matrix"]
        # The same numbers as tables, for readers without JavaScript.
        c = m["per_class"]["normal"]
        assert f"{c['auc']:.3f} ({c['auc_ci_low']:.3f}–{c['auc_ci_high']:.3f})" in page
    assert 'src="/static/vendor/plotly/plotly.min.js"' in page and "js/charts.js" in page


@pytest.mark.parametrize(("p", "text"), [(3.2e-41, "0.912 (p <0.001)"), (0.0123, "0.912 (p 0.012)")])
def test_regression_pearson_cell_prints_p_with_the_site_formatter(p, text):
    metrics = {"mae": 5.0, "rmse": 6.0, "explained_variance": 0.8, "r2": 0.8, "pearson_r": 0.912, "pearson_p": p,
               "bland_altman": {"bias": 0.5, "loa_low": -10.0, "loa_high": 11.0}}
    assert metric_cells("regression", metrics)[4] == text


def test_regression_version_page_plots_each_case_and_the_bland_altman_limits(client, trained):
    project, v = trained
    sgd = v[("abdomen", "regression")]
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_detail", args=[project.pk, sgd.pk])).content.decode()
    m = sgd.evaluations.get(split="validation").metrics
    predictions = sgd.predictions.filter(split="validation").select_related("exam__qct").order_by("exam_id")
    scatter = figure(page, "fig-validation-scatter")
    assert scatter["data"][0]["x"] == [p.exam.qct.qct_bmd for p in predictions]
    assert scatter["data"][0]["y"] == [p.predicted_bmd for p in predictions]
    assert len(scatter["data"][0]["x"]) == m["n"]
    assert f"Pearson r = {m['pearson_r']:.3f}" in scatter["data"][0]["name"]
    # The p of Pearson r is printed like every other p on the site.
    pearson = f"{m['pearson_r']:.3f} (p {format_p(m['pearson_p'])})"
    assert f"<td>{escape(pearson)}</td>" in page
    ba = m["bland_altman"]
    lines = [t for t in figure(page, "fig-validation-bland-altman")["data"][1:] if "fill" not in t]
    assert [t["y"][0] for t in lines] == [ba["bias"], ba["loa_low"], ba["loa_high"]]
    assert f"{ba['loa_high']:.2f} ({ba['loa_high_ci_low']:.2f}–{ba['loa_high_ci_high']:.2f})" in page


def test_calibrated_version_page_shows_the_stored_fit_and_the_training_patients(client, trained):
    project, v = trained
    version = v[("chest_cal", "classification")]
    cal = version.calibration
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_detail", args=[project.pk, version.pk])).content.decode()
    traces = figure(page, "fig-calibration")["data"]
    patients, means, fit, pooled = traces
    # The fit drawn is the stored line fitted to the level means; the means are the stored per-level means.
    np.testing.assert_allclose(fit["y"], [cal["k"] * n + cal["intercept"] for n in range(1, 11)], rtol=1e-12)
    np.testing.assert_allclose(means["y"], cal["level_mean"], rtol=1e-12)
    expected_k, expected_b = np.polyfit(np.arange(1, 11), cal["level_mean"], 1)
    assert cal["k"] == pytest.approx(expected_k, abs=1e-9) and cal["intercept"] == pytest.approx(expected_b, abs=1e-9)
    assert pooled["name"].startswith("pooled fit (all points)") and fit["name"].startswith("fit to the level means")
    assert f"{cal['k']:.3f}" in page and "R² of the fit to the level means" in page
    # R² with four decimals (the demo's 0.99971 is not a perfect line), in the header, the fit table and the chart.
    r2 = format_r2(cal["r2"])
    assert len(r2.split(".")[1]) == 4 and f"R² of the level means = {r2}" in page
    assert f"<td>{r2}</td>" in page and fit["name"].endswith(f"R² = {r2}")
    assert f"R² = {format_r2(cal['pooled']['r2'])} (small" in page
    assert "abdomen transfer" in page and "The slope k therefore changes the predictions" in page
    assert "cannot change a z-scored model" not in page
    # Every training patient of the 90-patient demo has both regions; up to 40 of them are stored and drawn.
    assert cal["n_patients"] == version.data_snapshot["n_by_split"]["train"]
    assert patients["name"] == f"per-patient HU, {min(40, cal['n_patients'])} of {cal['n_patients']} patients"
    # Feature augmentation: the page says why k cannot matter (tests/analysis/test_calibration_variants.py
    # shows that it does not).
    augmented = v[("chest_cal:feature_augmentation", "classification")]
    page = client.get(reverse("analysis:model_detail", args=[project.pk, augmented.pk])).content.decode()
    assert "Variant <strong>feature augmentation</strong>" in page
    assert "They are a linear combination of the chest features" in page
    assert "<strong>this calibration cannot change a z-scored model's predictions with k</strong>" in page
    abdomen = v[("abdomen", "classification")]
    page = client.get(reverse("analysis:model_detail", args=[project.pk, abdomen.pk])).content.decode()
    assert "fig-calibration" not in page
    # Classifier reliability (not the HU calibration): a chart and Brier scores per class per split.
    rel = abdomen.evaluations.get(split="validation").metrics["reliability"]
    assert "Reliability of the predicted probabilities" in page and "fig-validation-reliability" in page
    assert f"{rel['classes']['osteoporosis']['brier']:.4f}" in page


def _common(a, b, split):
    common, pa, pb = common_predictions(a, b, split)
    return common, pa, pb


def test_comparison_is_the_paired_bootstrap_of_macro_auc_beside_delong_on_the_common_cases(client, trained):
    from analysis.stats.paired import paired_macro_auc_bootstrap

    project, v = trained
    a, b = v[("abdomen", "classification")], v[("chest_cal", "classification")]
    login(client, project, "pi")
    url = reverse("analysis:model_compare", args=[project.pk])
    page = client.get(url, {"v": [a.pk, b.pk], "split": "validation"}).content.decode()
    common, pa, pb = _common(a, b, "validation")
    y = [pa[e].exam.qct.category for e in common]
    # Expected: the paired stratified bootstrap of the macro AUC on the common cases in exam-id order with the
    # stored 20 resamples and seed 0, and DeLong's paired test on the probability of osteoporosis.
    macro = paired_macro_auc_bootstrap(y, [[pa[e].probabilities[c] for c in CATEGORIES] for e in common],
                                       [[pb[e].probabilities[c] for c in CATEGORIES] for e in common], CATEGORIES,
                                       n_resamples=20, random_state=0)
    expected = delong_paired([c == "osteoporosis" for c in y], [pa[e].probabilities["osteoporosis"] for e in common],
                             [pb[e].probabilities["osteoporosis"] for e in common])
    pairs = re.search(r'id="compare-pairs">(.*?)</table>', page, re.S).group(1)
    from analysis.charts import format_ci, format_p

    assert (f"<td>{macro['macro_auc_a']:.3f}</td><td>{macro['macro_auc_b']:.3f}</td>"
            f"<td>{format_ci(macro['diff'], macro['ci_low'], macro['ci_high'])}</td><td>{format_p(macro['p'])}</td>") in pairs
    assert (f"<td>{format_ci(expected.diff, expected.ci_low, expected.ci_high)}</td><td>{expected.z:.2f}</td>"
            f"<td>{format_p(expected.p)}</td>") in pairs
    assert f'<td class="num">{len(common)}</td>' in pairs
    # The overlay: each version's stored binary ROC and DeLong AUC (both were evaluated on the same cases).
    overlay = figure(page, "fig-compare-roc")
    assert f"AUC {expected.auc_a:.3f}" in overlay["data"][0]["name"]
    # Cases are named by patient id, never by internal exam id.
    assert pa[common[0]].exam.patient.pseudonym in page and "(exam " not in page
    # Side by side: each version's stored validation metrics.
    for version in (a, b):
        m = version.evaluations.get(split="validation").metrics
        low, high = m["ci"]["macro_auc"]
        assert f"{m['macro_auc']:.3f} ({low:.3f}–{high:.3f})" in page


def test_regression_comparison_is_the_paired_bootstrap_of_mae(client, trained):
    from analysis.charts import format_ci, format_p

    project, v = trained
    a, b = v[("abdomen", "regression")], v[("chest_cal", "regression")]
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_compare", args=[project.pk]),
                      {"v": [a.pk, b.pk], "split": "test"}).content.decode()
    common, pa, pb = _common(a, b, "test")
    expected = paired_mae_comparison([pa[e].exam.qct.qct_bmd for e in common], [pa[e].predicted_bmd for e in common],
                                     [pb[e].predicted_bmd for e in common], n_resamples=20, random_state=0)
    pairs = re.search(r'id="compare-pairs">(.*?)</table>', page, re.S).group(1)
    assert (f"<td>{expected.mae_a:.2f}</td><td>{expected.mae_b:.2f}</td>"
            f"<td>{format_ci(expected.diff, expected.ci_low, expected.ci_high, 2)}</td>"
            f"<td>{format_p(expected.p_value)}</td>") in pairs
    scatter = figure(page, "fig-compare-scatter")
    assert len(scatter["data"]) == 3 and scatter["data"][0]["x"] == [pa[e].exam.qct.qct_bmd for e in common]


def test_comparison_refuses_mixed_tasks_a_single_version_and_other_projects_versions(client, trained):
    project, v = trained
    login(client, project, "annotator")
    url = reverse("analysis:model_compare", args=[project.pk])
    mixed = client.get(url, {"v": [v[("abdomen", "classification")].pk, v[("abdomen", "regression")].pk]})
    assert mixed.status_code == 400 and "one task" in mixed.content.decode()
    single = client.get(url, {"v": [v[("abdomen", "classification")].pk], "split": "test"})
    assert single.status_code == 400 and "two or more" in single.content.decode()
    other = ProjectFactory()
    foreign = other.model_versions.create(name="foreign", task="classification", algorithm="LR", feature_set="chest")
    response = client.get(url, {"v": [v[("abdomen", "classification")].pk, foreign.pk]})
    assert response.status_code == 400 and "foreign" not in response.content.decode()
    assert client.get(url).status_code == 200  # the empty form


def test_cohort_table_page_is_table_1_of_the_cohort(client, trained):
    project, _ = trained
    login(client, project, "annotator")
    page = client.get(reverse("analysis:cohort_table", args=[project.pk])).content.decode()
    table = cohort_table_for(project, "main")
    assert f"Training (n = {table['n']['train']})" in page
    assert f"χ² = {table['sex']['chi2']:.3f}" in page and f"χ² = {table['category']['chi2']:.3f}" in page
    assert f"H = {table['age']['h']:.3f}" in page
    female = table["sex"]["validation"]["F"]
    assert f"{female['n']} ({female['percent']:.1f})" in page
    unknown = client.get(reverse("analysis:cohort_table", args=[project.pk]), {"cohort": "nope"}).content.decode()
    assert "not one of the available choices" in unknown and 'id="cohort-table"' not in unknown
    link = reverse("analysis:cohort_table", args=[project.pk])
    # An annotator opening the project is sent to the review queue (studies.views.project_detail, merged with
    # the review queue); the project overview with its link is at ?overview.
    assert link in client.get(project.get_absolute_url(), {"overview": 1}).content.decode()
    assert link in client.get(reverse("analysis:model_list", args=[project.pk])).content.decode()


def test_other_projects_dashboards_are_not_found(client, trained):
    project, v = trained
    outsider = MembershipFactory(role="pi").user  # a PI, but of another project
    client.force_login(outsider)
    version = v[("abdomen", "classification")]
    assert client.get(reverse("analysis:model_detail", args=[project.pk, version.pk])).status_code == 404
    assert client.get(reverse("analysis:model_compare", args=[project.pk]),
                      {"v": [version.pk, v[("chest_cal", "classification")].pk]}).status_code == 404
    assert client.get(reverse("analysis:cohort_table", args=[project.pk])).status_code == 404
    client.force_login(UserFactory())
    assert client.get(reverse("analysis:cohort_table", args=[project.pk])).status_code == 404
