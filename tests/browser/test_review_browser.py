"""In headless Chromium: a reader names the spine from one segment while another reader saved the same case;
the page shows the conflict, the reader re-applies the change and accepts with the keyboard; the accepted
relabel is a new run that the exam's features use."""

import pytest
from django.test import Client
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from analysis.modeling.records import records_for_exams
from studies.models import Exam
from studies.review import actions
from studies.review.models import CaseStatus, Reading, ReviewCase
from tests.browser.viewer import console_errors, log_in, wait_for_viewer, webgl_browser  # noqa: F401
from tests.factories import MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def test_conflict_then_relabel_and_accept_by_keyboard(webgl_browser, live_server, transactional_db, storage,
                                                      password):
    browser = webgl_browser
    exam, run, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)
    reader, other = (MembershipFactory(project=project, role="annotator").user for _ in range(2))
    log_in(browser, live_server, reader, password)
    url = f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/"
    browser.get(url)
    wait_for_viewer(browser)
    reading = Reading.objects.get(case__exam=exam)

    # Meanwhile the other reader shifts every level down by one and saves.
    client = Client()
    client.force_login(other)
    client.post(f"/p/{project.pk}/exams/{exam.pk}/case/action/",
                {"operation": "shift", "delta": "1", "reading": reading.pk, "version": 1})

    # Our reader, still on version 1, names segment 1 T9: refused, told what changed and by whom.
    Select(browser.find_element(By.ID, "segment-select")).select_by_value("1")
    Select(browser.find_element(By.ID, "level-select")).select_by_value("T9")
    browser.find_element(By.ID, "op-name").click()
    conflict = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "conflict"))
    assert other.username in conflict.text and "shifted all levels down by one" in conflict.text
    assert actions.as_int_map(Reading.objects.get(pk=reading.pk).level_map)[1] == "T11"

    # Re-applying names the spine from segment 1 on the current version.
    browser.find_element(By.ID, "reapply").click()
    # The row may be read from the old page just as the new one replaces it: a stale reference is retried.
    WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: "T9" in b.find_element(By.CSS_SELECTOR, "#level-table tr[data-index='1']").text)
    wait_for_viewer(browser)
    assert actions.as_int_map(Reading.objects.get(pk=reading.pk).level_map) == {
        1: "T9", 2: "T10", 3: "T11", 4: "T12", 5: "L1"}

    # "a" accepts.
    browser.find_element(By.TAG_NAME, "body").send_keys("a")
    WebDriverWait(browser, 60).until(
        lambda b: ReviewCase.objects.get(exam=exam).status == CaseStatus.ACCEPTED)
    case = ReviewCase.objects.get(exam=exam)
    assert sorted(case.result_run.levels.values_list("level", flat=True)) == sorted(["T9", "T10", "T11", "T12", "L1"])
    (record,) = records_for_exams(Exam.objects.filter(pk=exam.pk), run.source)
    assert record.run_id == case.result_run_id and record.hu["T9"] == run.levels.get(level="T10").mean_hu
    # The refused save answered 409 Conflict on purpose; nothing else may be logged as an error.
    errors = [e for e in console_errors(browser) if "case/action/ - Failed to load resource" not in e["message"]
              or "409" not in e["message"]]
    assert errors == []
