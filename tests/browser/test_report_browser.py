"""In headless Chromium at 800 px: the study report of a trained demo grid shows every table and chart, each
table's CSV download equals the table, and the model list, comparison and report pages do not scroll
sideways. ``BMDSITE_SCREENSHOTS=DIR`` keeps a screenshot of each page for a person to look at."""

import csv
import io
import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from studies.demo import seed_demo_project
from tests.browser.test_registry_browser import wait_for_text
from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser

TABLES = ("table-choices", "table-1", "table-2", "table-3", "table-4", "table-5", "table-effect",
          "table-calibration")


def _screenshot(browser, name):
    folder = os.environ.get("BMDSITE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(800, min(int(height) + 120, 16000))
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))
        browser.set_window_size(800, 1000)


def _no_sideways_scroll(browser):
    """Page width and viewport width, and (for the failure message) the widest elements that stick out."""
    width, client, wide = browser.execute_script(
        "const c = document.documentElement.clientWidth;"
        "const wide = Array.from(document.querySelectorAll('main *')).filter(e => e.getBoundingClientRect().right > c)"
        ".sort((a, b) => b.getBoundingClientRect().right - a.getBoundingClientRect().right).slice(0, 5).map(e => `${e.tagName}#${e.id || e.dataset.table || ''}.${e.className} `"
        "+ `${Math.round(e.getBoundingClientRect().right)}`);"
        "return [document.documentElement.scrollWidth, c, wide];")
    return width, client if width <= client else f"{client} (too wide: {wide})"


def _titles_under_the_mode_bar(browser):
    """Titles of the drawn charts whose box overlaps their mode bar's (the bar is laid out while hidden)."""
    return browser.execute_script(
        "const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;"
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).filter(plot => {"
        "  const title = plot.querySelector('.gtitle'), bar = plot.querySelector('.modebar');"
        "  return title && bar && overlap(title.getBoundingClientRect(), bar.getBoundingClientRect());"
        "}).map(plot => plot.dataset.figure);")


def _all_charts_drawn(browser, timeout=120):
    expected = len(browser.find_elements(By.CSS_SELECTOR, "[data-figure]"))
    WebDriverWait(browser, timeout).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == expected)
    return expected


def test_report_tables_charts_csv_and_800px(browser, live_server, transactional_db, password, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=120, random_state=4, name="Browser report")
    seed_demo_measurements(project, random_state=4)
    versions, _ = train_cohort(project, algorithms={"classification": ["BDT"], "regression": ["SGD"]},
                               n_resamples=40)
    user = MembershipFactory(project=project, role="pi").user

    browser.set_window_size(800, 1000)
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Projects")

    browser.get(f"{live_server.url}/p/{project.pk}/report/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Study report")
    # Figures 4 and 7: 5 ROC charts each; 5 and 8: a scatter each; 6 and 8: 5 Bland-Altman plots each; the
    # calibration curve.
    assert _all_charts_drawn(browser) == 5 + 5 + 1 + 5 + 1 + 5 + 1
    for table_id in TABLES:
        cells = browser.execute_script(
            "const t = document.querySelector(`table[data-table='${arguments[0]}']`);"
            "return Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent));", table_id)
        assert len(cells) > 1, table_id
        link = browser.find_element(By.CSS_SELECTOR, f"#{table_id} a.csv")
        text = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
            link.get_attribute("href"))
        assert list(csv.reader(io.StringIO(text))) == cells, table_id
    # No chart title runs under the mode bar (its buttons take the top right corner of every chart).
    assert _titles_under_the_mode_bar(browser) == []
    # Each chart offers PNG (camera) and SVG downloads in its mode bar.
    browser.execute_script("document.querySelector('.js-plotly-plot').dispatchEvent(new MouseEvent('mouseover'))")
    assert browser.find_elements(By.CSS_SELECTOR, "[data-title='Download plot as SVG']")
    width, client = _no_sideways_scroll(browser)
    assert isinstance(client, int) and width <= client, f"report page is {width} px wide at 800 px: {client}"
    _screenshot(browser, "report")

    browser.get(f"{live_server.url}/p/{project.pk}/models/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Model versions")
    width, client = _no_sideways_scroll(browser)
    assert isinstance(client, int) and width <= client, f"model list is {width} px wide at 800 px: {client}"
    _screenshot(browser, "model_list")

    classifiers = [v.pk for v in versions if v.task == "classification"]
    browser.get(f"{live_server.url}/p/{project.pk}/models/compare/?split=validation&"
                + "&".join(f"v={pk}" for pk in classifiers))
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Compare model versions")
    _all_charts_drawn(browser)
    width, client = _no_sideways_scroll(browser)
    assert isinstance(client, int) and width <= client, f"comparison page is {width} px wide at 800 px: {client}"
    _screenshot(browser, "compare")

    browser.get(f"{live_server.url}/p/{project.pk}/models/{classifiers[2]}/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "T5-T10-Cal")
    _all_charts_drawn(browser)
    width, client = _no_sideways_scroll(browser)
    assert isinstance(client, int) and width <= client, f"model page is {width} px wide at 800 px: {client}"
    _screenshot(browser, "model_detail")
