"""The study report page: tables 1-5 and figures 4-8 of the seed study from stored results, every table as
CSV equal to the page, the calibration's effect as paired tests on the same cases."""

import csv
import html
import io
import re

import pytest
from django.urls import reverse

from analysis.categories import CATEGORIES
from analysis.charts import format_r2
from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from analysis.stats.paired import paired_macro_auc_bootstrap
from studies.demo import seed_demo_project
from tests.analysis.test_model_pages import login
from tests.factories import ProjectFactory


@pytest.fixture
def trained(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=120, random_state=2, name="report-demo")
    seed_demo_measurements(project, random_state=2)
    versions, _ = train_cohort(project, algorithms={"classification": ["BDT"], "regression": ["SGD"]},
                               n_resamples=40)
    return project, versions


def page_table(page, table_id):
    """Header and rows of a table on the page, cell texts unescaped."""
    body = re.search(rf'<table class="grid fit report" data-table="{table_id}">(.*?)</table>', page, re.S).group(1)
    head = [html.unescape(c) for c in re.findall(r"<th>(.*?)</th>", body, re.S)]
    rows = [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.split("</thead>")[1], re.S)]
    return head, rows


def test_report_has_every_table_and_figure_and_each_csv_equals_its_table(client, trained):
    project, versions = trained
    login(client, project, "annotator")
    url = reverse("analysis:study_report", args=[project.pk])
    page = client.get(url).content.decode()
    # 5 regions (chest, abdomen, 3 calibrated variants) x (BDT classifier, SGD regressor).
    assert len(versions) == 10 and page.count('href="/p/') > 0
    for table_id in ("table-choices", "table-1", "table-2", "table-3", "table-4", "table-5", "table-effect",
                     "table-calibration"):
        head, rows = page_table(page, table_id)
        assert rows, table_id
        response = client.get(reverse("analysis:study_report_csv", args=[project.pk, table_id]))
        assert response["Content-Type"].startswith("text/csv")
        parsed = list(csv.reader(io.StringIO(response.content.decode())))
        assert parsed == [head] + rows, table_id
    # Table 2: train and validation rows of each region's BDT; table 4 the test rows.
    _, rows = page_table(page, "table-2")
    assert [(r[0], r[1]) for r in rows][:2] == [("T5-T10", "Training"), ("T5-T10", "Validation")]
    assert len(rows) == 10 and all(r[2] == "BDT" for r in rows)
    _, rows = page_table(page, "table-4")
    assert len(rows) == 5 and {r[1] for r in rows} == {"Internal test"}
    for fig in ("figure-4", "figure-5", "figure-6", "figure-7", "figure-8"):
        assert f'id="{fig}"' in page
    # Figure 4: one ROC chart per region (5), each with 3 classes, the binary task, the macro average and
    # the chance line; figure 8: the test scatter and 5 Bland-Altman plots.
    assert len(re.findall(r'data-figure="fig-4-', page)) == 5
    assert len(re.findall(r'data-figure="fig-8-', page)) == 6
    assert "macro average (one-vs-rest)" in page and "most probable of the three classes" in page
    assert "fig-calibration" in page and "pooled fit (all points)" in page
    # The fit to the level means with its R² to four decimals, as the chart's legend prints it.
    calibration = next(v.calibration for v in versions if v.calibration)
    _, rows = page_table(page, "table-calibration")
    assert rows[-2][0] == "fit to the level means" and rows[-2][4] == f"R² = {format_r2(calibration['r2'])}"
    assert rows[-1][4] == f"R² = {format_r2(calibration['pooled']['r2'])}"


def test_calibration_effect_is_the_paired_bootstrap_on_the_common_cases(client, trained):
    from analysis.charts import format_ci, format_p

    project, versions = trained
    by = {(v.feature_set, v.calibration_variant, v.task): v for v in versions}
    chest = by[("chest", "", "classification")]
    calibrated = by[("chest_cal", "abdomen_transfer", "classification")]
    login(client, project, "pi")
    page = client.get(reverse("analysis:study_report", args=[project.pk])).content.decode()
    _, rows = page_table(page, "table-effect")
    row = next(r for r in rows if r[0] == "T5-T10-Cal (abdomen transfer)" and r[1] == "macro AUC, BDT"
               and r[2] == "Validation")
    # Expected: the paired stratified bootstrap (40 stored resamples, seed 0) of calibrated minus chest on the
    # validation cases in exam-id order.
    a = {p.exam_id: p for p in calibrated.predictions.filter(split="validation").select_related("exam__qct")}
    b = {p.exam_id: p for p in chest.predictions.filter(split="validation")}
    common = sorted(a)
    assert sorted(b) == common
    result = paired_macro_auc_bootstrap([a[e].exam.qct.category for e in common],
                                        [[a[e].probabilities[c] for c in CATEGORIES] for e in common],
                                        [[b[e].probabilities[c] for c in CATEGORIES] for e in common], CATEGORIES,
                                        n_resamples=40, random_state=0)
    assert row[3] == f"{result['macro_auc_b']:.3f}" and row[4] == f"{result['macro_auc_a']:.3f}"
    assert row[5] == format_ci(result["diff"], result["ci_low"], result["ci_high"])
    assert row[6] == format_p(result["p"])
    # DeLong is for the classifiers: a regressor's DeLong cells say so with a dash (the CSV holds the same),
    # and no cell of the table is empty.
    mae = [r for r in rows if r[1].startswith("MAE")]
    assert mae and all(r[7] == r[8] == "—" for r in mae)
    assert all(cell for r in rows for cell in r)


def test_printable_version_and_access(client, trained):
    project, _ = trained
    login(client, project, "annotator")
    url = reverse("analysis:study_report", args=[project.pk])
    printable = client.get(url, {"print": "1"}).content.decode()
    assert "header.top, footer, .no-print { display:none; }" in printable
    other = ProjectFactory()
    assert client.get(reverse("analysis:study_report", args=[other.pk])).status_code == 404
    assert client.get(reverse("analysis:study_report_csv", args=[project.pk, "table-9"])).status_code == 404


def test_query_count_does_not_grow_with_the_number_of_versions(client, trained):
    # Chest and abdomen (4 versions), then with abdomen transfer and learned mapping (8): each adds a
    # classifier to figures 4 and 7 and a regressor to figures 5, 6 and 8, read in one query per split.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    project, versions = trained
    login(client, project, "annotator")
    url = reverse("analysis:study_report", args=[project.pk])
    chosen = [v.pk for v in versions if v.calibration_variant in ("", "abdomen_transfer", "learned_mapping")]
    counts = []
    for pks in ([v.pk for v in versions if v.feature_set in ("chest", "abdomen")], chosen):
        with CaptureQueriesContext(connection) as ctx:
            page = client.get(url, {"v": pks}).content.decode()
        assert f"for {len(pks)} model versions" in page
        counts.append(len(ctx.captured_queries))
    assert len(chosen) == 8 and counts[0] == counts[1], counts
