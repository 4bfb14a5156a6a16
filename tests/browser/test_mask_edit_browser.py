"""In headless Chromium (WebGL on SwiftShader): an annotator paints a body mask with the viewer's brush, takes
the last stroke back, saves, and the case page's level table shows the new measurement run, measured by the
server from the edited mask. ``BMDSITE_SCREENSHOTS=DIR`` keeps screenshots of the steps for a person."""

import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from analysis.models import MeasurementRun
from studies.review import actions
from studies.review.models import ReviewCase
from tests.browser.viewer import canvas_stats, console_errors, log_in, wait_for_viewer, webgl_browser  # noqa: F401
from tests.factories import MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def _screenshot(browser, name):
    folder = os.environ.get("BMDSITE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def _stroke(browser, element, dx):
    """A left drag across the viewport's centre, ``dx`` pixels right of it, downwards."""
    chain = ActionChains(browser, duration=50)
    chain.move_to_element_with_offset(element, dx, -30).click_and_hold()
    for _ in range(6):
        chain.move_by_offset(0, 10)
    chain.release().perform()
    time.sleep(0.5)


def test_annotator_brushes_a_mask_undoes_a_stroke_and_saves_a_new_run(webgl_browser, live_server, transactional_db,
                                                                         storage, password):
    browser = webgl_browser
    exam, base, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)
    user = MembershipFactory(project=project, role="annotator").user
    log_in(browser, live_server, user, password)
    browser.get(f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/")
    wait_for_viewer(browser)
    assert f"run {base.pk}" in browser.find_element(By.CSS_SELECTOR, ".side h2").text

    # Segment 4 is L1: jump there and paint beside its body with the brush.
    browser.find_element(By.CSS_SELECTOR, "#level-table tr[data-index='4']").click()
    Select(browser.find_element(By.ID, "mask-segment")).select_by_value("4")
    browser.find_element(By.ID, "mask-brush").click()
    assert browser.execute_script("return window.bmdViewer.maskMode") == "brush"
    axial = browser.find_element(By.ID, "vp-axial")
    before = canvas_stats(browser)
    _stroke(browser, axial, -90)
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return window.bmdViewer.maskStrokes()") == 1)
    first = browser.execute_script("return window.bmdViewer.maskChangedVoxels()")
    assert first > 0
    assert canvas_stats(browser)["coloured"] > before["coloured"]  # the painted voxels show in L1's colour
    _screenshot(browser, "mask-1-brushed")

    # A second stroke, taken back: the mask is as after the first.
    _stroke(browser, axial, 90)
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return window.bmdViewer.maskStrokes()") == 2)
    assert browser.execute_script("return window.bmdViewer.maskChangedVoxels()") > first
    browser.find_element(By.ID, "mask-undo").click()
    assert browser.execute_script("return window.bmdViewer.maskStrokes()") == 1
    assert browser.execute_script("return window.bmdViewer.maskChangedVoxels()") == first

    browser.find_element(By.ID, "mask-save").click()
    WebDriverWait(browser, 120).until(lambda b: MeasurementRun.objects.filter(exam=exam).count() == 2)
    wait_for_viewer(browser)
    new = MeasurementRun.objects.filter(exam=exam).latest("pk")
    edit = new.parameters["mask_edit"]
    # Only L1 changed (every other segment was locked), by exactly the voxels the page counted.
    assert list(edit["segments"]) == ["4"] and edit["segments"]["4"] == {"added": first, "removed": 0}
    assert edit["editor"] == user.username and ReviewCase.objects.get(exam=exam).base_run_id == new.pk
    old_l1, new_l1 = base.levels.get(level="L1"), new.levels.get(level="L1")
    assert new_l1.body_volume_ml > old_l1.body_volume_ml
    # The level table now shows the new run, its provenance and its L1 values.
    assert f"run {new.pk}" in browser.find_element(By.CSS_SELECTOR, ".side h2").text
    assert user.username in browser.find_element(By.ID, "mask-provenance").text
    row = browser.find_element(By.CSS_SELECTOR, "#level-table tr[data-index='4']")
    assert str(new_l1.roi_voxels) in row.text
    _screenshot(browser, "mask-2-saved")
    assert console_errors(browser) == []
