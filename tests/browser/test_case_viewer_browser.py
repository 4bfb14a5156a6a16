"""In headless Chromium (WebGL on SwiftShader): the case page's Cornerstone3D viewer loads a stored exam over
the site's DICOMweb endpoint, shows the segment overlay, scrolls, jumps to a level and reports no console
errors."""

import time

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.viewer import canvas_stats, console_errors, log_in, wait_for_viewer, webgl_browser  # noqa: F401
from tests.factories import MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def test_viewer_shows_exam_with_overlay_and_scrolls(webgl_browser, live_server, transactional_db, storage,
                                                    password):
    browser = webgl_browser
    exam, run, phantom = make_measured_exam()
    project = exam.patient.project
    user = MembershipFactory(project=project, role="annotator").user
    log_in(browser, live_server, user, password)
    browser.get(f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/")
    state = wait_for_viewer(browser)
    assert state["nSlices"] == phantom.volume.shape[0]
    assert 0 < state["loadSeconds"] < 120

    # Jump to L1 by clicking its row: the axial view shows its body, in its overlay colour.
    row = browser.find_element(By.CSS_SELECTOR, "#level-table tr[data-index='4']")
    assert "L1" in row.text
    # Its swatch has segment 4's colour (studies.review.segments.PALETTE[3]), set by case.js through the
    # CSSOM: a style="" attribute would be blocked by the CSP.
    swatch = row.find_element(By.CLASS_NAME, "swatch")
    assert swatch.value_of_css_property("background-color") == "rgba(0, 130, 200, 1)"
    row.click()
    time.sleep(1.0)
    at_l1 = canvas_stats(browser)
    assert at_l1["nonblack"] > 1000
    assert at_l1["coloured"] > 50, at_l1
    assert browser.find_element(By.ID, "axial-level").text == "L1"

    # Overlay off: no coloured pixel left; on again: back.
    browser.find_element(By.ID, "overlay-toggle").click()
    WebDriverWait(browser, 20).until(lambda b: canvas_stats(b)["coloured"] == 0)
    browser.find_element(By.ID, "overlay-toggle").click()
    WebDriverWait(browser, 20).until(lambda b: canvas_stats(b)["coloured"] > 50)

    # The mouse wheel scrolls the axial view: its pixels change.
    before = canvas_stats(browser)
    axial = browser.find_element(By.ID, "vp-axial")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(axial), 0, 400).perform()
    WebDriverWait(browser, 20).until(lambda b: canvas_stats(b)["hash"] != before["hash"])

    # The bone window preset changes the picture too.
    before = canvas_stats(browser)
    browser.find_element(By.CSS_SELECTOR, "[data-preset='lung']").click()
    WebDriverWait(browser, 20).until(lambda b: canvas_stats(b)["hash"] != before["hash"])

    assert console_errors(browser) == []
