"""In headless Chromium (WebGL on SwiftShader): the case page puts the viewer beside the level table on a wide
window and stacks them, viewer first, below about 1000 px, so that an 800 px window never scrolls sideways.
Screenshots are kept for a person to look at."""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from studies.review import actions
from tests.browser.viewer import log_in, wait_for_viewer, webgl_browser  # noqa: F401
from tests.factories import MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser

BOXES = """
const box = (s) => document.querySelector(s).getBoundingClientRect();
const v = box('.viewer-pane'), t = box('#level-table'), side = box('.side');
return {viewer: [v.left, v.right, v.top, v.bottom], side: [side.left, side.right, side.top, side.bottom],
        table: [t.left, t.right], inner: window.innerWidth, scroll: document.documentElement.scrollWidth};
"""


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def test_case_page_stacks_viewer_and_levels_on_a_narrow_window(webgl_browser, live_server, transactional_db,
                                                               storage, password, tmp_path):
    browser = webgl_browser
    exam, _, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)  # the reader's review panel is on the page too
    user = MembershipFactory(project=project, role="annotator").user
    log_in(browser, live_server, user, password)
    shots = Path(os.environ.get("BMDSITE_SCREENSHOT_DIR", tmp_path))

    def boxes_at(width):
        browser.set_window_size(width, 1000)
        browser.get(f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/")
        wait_for_viewer(browser)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#level-table tr[data-index]")) == 5
        assert browser.find_element(By.ID, "op-accept").is_displayed()
        shot = shots / f"case-page-{width}px.png"
        browser.save_screenshot(str(shot))
        boxes = browser.execute_script(BOXES)
        browser.execute_script("document.querySelector('.side').scrollIntoView()")
        browser.save_screenshot(str(shots / f"case-page-{width}px-levels.png"))
        return boxes, shot

    # Wide: the level table sits to the right of the viewer.
    wide, shot = boxes_at(1400)
    assert wide["side"][0] >= wide["viewer"][1], f"levels not beside the viewer at 1400 px ({shot})"

    # Narrow: stacked, the levels below the viewer, each as wide as the page's column; nothing sideways.
    narrow, shot = boxes_at(800)
    assert narrow["inner"] <= 800
    assert narrow["scroll"] <= narrow["inner"], f"the page scrolls sideways at 800 px ({narrow}, {shot})"
    assert narrow["side"][2] >= narrow["viewer"][3], f"levels not below the viewer at 800 px ({narrow}, {shot})"
    assert narrow["viewer"][1] <= narrow["inner"] and narrow["table"][1] <= narrow["inner"], (narrow, shot)
    assert narrow["viewer"][1] - narrow["viewer"][0] > 0.8 * narrow["inner"], (narrow, shot)
