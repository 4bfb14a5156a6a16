"""In headless Chromium, under the site's Content-Security-Policy: the dashboards draw their plotly charts and
every page loads with no policy violation and no script error (a listener installed before any page script
records both)."""

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

# Runs in every document before its own scripts (DevTools, so the page's policy does not apply to it).
RECORDER = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__problems.push(
    `CSP ${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
window.addEventListener("error", (e) => { window.__problems.push(`error ${e.message} at ${e.filename}:${e.lineno}`); });
"""


def test_pages_and_dashboards_run_under_the_policy(browser, live_server, transactional_db, password, settings,
                                                   tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=60, random_state=3, name="CSP dashboards")
    seed_demo_measurements(project, random_state=3)
    versions, _ = train_cohort(project, feature_sets=("chest_cal",), tasks=("regression", "classification"),
                               algorithms={"regression": ["SGD", "RF"], "classification": ["LR"]}, n_resamples=10)
    regressors = [v for v in versions if v.task == "regression"]
    classifier = next(v for v in versions if v.task == "classification")
    user = MembershipFactory(project=project, role="admin", user__is_superuser=True, user__is_staff=True).user
    patient = project.patients.order_by("pk").first()
    exam = patient.exams.order_by("pk").first()
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})

    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Projects")

    p = f"/p/{project.pk}"
    charts = {  # page -> number of plotly charts it draws
        f"{p}/models/{regressors[0].pk}/": 7,  # scatter and Bland-Altman per split, and the calibration curve
        # ROC, confusion matrix and reliability per split, and the calibration curve
        f"{p}/models/{classifier.pk}/": 10,
        f"{p}/models/compare/?v={regressors[0].pk}&v={regressors[1].pk}&split=validation": None,
    }
    pages = ["/", f"{p}/", f"{p}/patients/", f"{p}/patients/{patient.pk}/",
             f"{p}/patients/{patient.pk}/history/", f"{p}/patients/{patient.pk}/exams/{exam.pk}/",
             f"{p}/exams/{exam.pk}/measurements/", f"{p}/models/", f"{p}/cohort-table/", f"{p}/members/",
             f"{p}/pacs/search/", "/jobs/", "/admin/", "/admin/studies/accesslog/", *charts]
    problems = {}
    for page in pages:
        browser.get(live_server.url + page)
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")
        expected = charts.get(page)
        if page in charts:
            boxes = len(browser.find_elements(By.CSS_SELECTOR, "[data-figure]"))
            assert boxes >= 1 and (expected is None or boxes == expected), (page, boxes)
            WebDriverWait(browser, 30).until(
                lambda b: len(b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == boxes)
            # Drawn, not just started: every chart has its SVG and no no-JavaScript hint is left.
            assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= boxes
            assert not browser.find_elements(By.CSS_SELECTOR, ".chart .nojs")
            # plotly's own style rules (layered SVGs, modebar, hover) reached its sheet: allowed by the policy.
            rules = browser.execute_script(
                "const s = document.getElementById('plotly.js-style-global'); return s && s.sheet ? "
                "s.sheet.cssRules.length : -1")
            assert rules > 0, (page, rules)
            confusion = browser.find_elements(By.CSS_SELECTOR, '[data-figure="fig-validation-confusion"]')
            if confusion and os.environ.get("BMDSITE_SCREENSHOT_DIR"):  # for a person to look at
                browser.execute_script("arguments[0].scrollIntoView()", confusion[0])
                browser.save_screenshot(str(Path(os.environ["BMDSITE_SCREENSHOT_DIR"]) / "confusion-matrix.png"))
        found = browser.execute_script("return window.__problems")
        if found:
            problems[page] = found
    assert problems == {}
