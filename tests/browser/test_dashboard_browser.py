"""In headless Chromium: a model version page loads plotly.js from the installed package and draws its charts."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from studies.demo import seed_demo_project
from tests.browser.test_registry_browser import wait_for_text
from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser


def test_version_page_renders_plotly_charts(browser, live_server, transactional_db, password, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=60, random_state=3, name="Browser dashboards")
    seed_demo_measurements(project, random_state=3)
    (version,), _ = train_cohort(project, feature_sets=("chest_cal",), tasks=("regression",),
                                 algorithms={"regression": ["SGD"]}, n_resamples=10,
                                 calibration_variants=("abdomen_transfer",))
    user = MembershipFactory(project=project, role="annotator").user

    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Projects")
    browser.get(f"{live_server.url}/p/{project.pk}/models/{version.pk}/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), version.name)

    expected = len(browser.find_elements(By.CSS_SELECTOR, "[data-figure]"))
    # Scatter and Bland-Altman for each of three splits, and the calibration curve.
    assert expected == 7
    WebDriverWait(browser, 15).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == expected)
    # Drawn, not just initialised: the validation scatter has one marker per evaluated case.
    n = version.evaluations.get(split="validation").n
    markers = browser.execute_script(
        "return document.querySelector('[data-figure=\"fig-validation-scatter\"]')"
        ".querySelectorAll('.scatterlayer .trace:first-child .point').length")
    assert markers == n
    assert not browser.find_elements(By.CSS_SELECTOR, ".chart .nojs")  # the no-JavaScript hints are gone
