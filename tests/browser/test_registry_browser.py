"""In headless Chromium: log in, add a patient and a QCT value, see the category and the history entry."""

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser


def wait_for_text(browser, locator, text, timeout=10):
    """Wait until the page that a click loads shows ``text`` (a click returns before navigation ends).

    While the old page gives way to the new one, Chromium may answer a lookup with a stale element or "Node
    with given id does not belong to the document" (a plain WebDriverException): both mean not yet."""
    WebDriverWait(browser, timeout, ignored_exceptions=(WebDriverException,)).until(
        EC.text_to_be_present_in_element(locator, text))
    return browser.find_element(*locator)


def test_coordinator_adds_patient_and_qct(browser, live_server, transactional_db, password):
    membership = MembershipFactory(role="coordinator", project__name="Browser study")
    user, project = membership.user, membership.project

    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Projects")
    browser.find_element(By.LINK_TEXT, "Browser study").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Browser study")
    browser.find_element(By.LINK_TEXT, "Patients").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Patients and exams")
    browser.find_element(By.LINK_TEXT, "Add patient").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Add patient")
    browser.find_element(By.NAME, "pseudonym").send_keys("BR-001")
    browser.find_element(By.CSS_SELECTOR, "select[name=sex] option[value=F]").click()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait_for_text(browser, (By.TAG_NAME, "h1"), "Patient BR-001")
    browser.find_element(By.ID, "add-exam").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "New exam")
    browser.execute_script("document.querySelector('[name=\"exam-exam_date\"]').value = '2022-05-03'")
    browser.find_element(By.NAME, "exam-age_at_exam").send_keys("67")
    browser.find_element(By.CSS_SELECTOR, "select[name='exam-region'] option[value=chest]").click()
    browser.find_element(By.NAME, "qct-bmd_l1").send_keys("72.5")
    browser.find_element(By.NAME, "qct-bmd_l2").send_keys("75.5")
    browser.find_element(By.ID, "save-exam").click()

    # (72.5 + 75.5) / 2 = 74.0 mg/cm3 < 80: osteoporosis.
    category = wait_for_text(browser, (By.CSS_SELECTOR, "#exams [data-testid=category]"), "osteoporosis")
    assert category.text == "osteoporosis"
    assert "74.0" in browser.find_element(By.ID, "exams").text

    browser.find_element(By.LINK_TEXT, "History").click()
    history = wait_for_text(browser, (By.ID, "history"), "BR-001").text
    assert "BR-001" in history and user.username in history
    assert "bmd_l1" in history and "72.5" in history
    assert project.patients.filter(pseudonym="BR-001").exists()
