"""In headless Chromium at 800 px: the patient list fits the window (no sideways scrolling), its filter
fields are labelled, and the export link carries the filters. A screenshot is kept for a person to look at."""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from studies.registry import set_split
from tests.factories import ExamFactory, MembershipFactory, PatientFactory, QCTResultFactory

pytestmark = pytest.mark.browser


def test_patient_list_fits_800_px(browser, live_server, transactional_db, password, tmp_path):
    membership = MembershipFactory(role="coordinator", project__name="Narrow screen study")
    user, project = membership.user, membership.project
    for i in range(8):
        # Long values where real ones are long: 64-character patient ids, three-digit BMD values.
        patient = PatientFactory(project=project, pseudonym=f"HOSPITAL-A-2022-{i:04d}-" + "X" * 40)
        qct = QCTResultFactory(exam=ExamFactory(patient=patient, region="both"), bmd_l1=130.5 + i,
                               bmd_l2=118.25, bmd_l3=119.75)
        set_split(qct.exam, ("train", "validation", "test")[i % 3])

    browser.set_window_size(800, 900)
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Projects"))
    browser.get(f"{live_server.url}/p/{project.pk}/patients/?category=normal&per_page=25")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr")) == 8

    inner = browser.execute_script("return window.innerWidth")
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    shot = Path(os.environ.get("BMDSITE_SCREENSHOT_DIR", tmp_path)) / "patient-list-800px.png"
    browser.save_screenshot(str(shot))
    assert inner <= 800
    assert scroll <= inner, f"the page scrolls sideways: {scroll} px wide in a {inner} px window ({shot})"
    # Nor does the table scroll inside its box: it fits.
    table_width, box_width = browser.execute_script(
        "const t = document.getElementById('patients'); return [t.scrollWidth, t.parentElement.clientWidth]")
    assert table_width <= box_width, f"the table is {table_width} px wide in a {box_width} px box ({shot})"

    for name in ("q", "category", "split", "excluded", "region", "per_page"):
        label = browser.find_element(By.CSS_SELECTOR, f"label[for=id_{name}]")
        assert label.text.strip(), name
    href = browser.find_element(By.ID, "export-csv").get_attribute("href")
    assert href.endswith(f"/p/{project.pk}/export.csv?category=normal")
