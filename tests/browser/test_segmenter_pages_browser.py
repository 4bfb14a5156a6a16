"""In headless Chromium, under the site's Content-Security-Policy, with real `manage.py rqworker` processes:

- an annotator requests re-segmentation of a case with the rule-based segmenter; the page follows the job
  and, when it has finished, shows the case back in review on the new run;
- a PI opens the segmenter page, starts a comparison of the rule-based segmenter with a network version on
  the reviewed cases, and reads the stored result when the page has followed the job to its end.

No page logs a script error or a policy violation. With ``BMDSITE_SHOTS=DIR`` the walk saves screenshots there.
"""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from analysis.models import SegmenterComparison
from studies.models import JobState
from studies.review import actions
from studies.review.models import CaseStatus, ResegmentationRequest, ReviewCase
from tests.browser.test_csp_browser import RECORDER
from tests.browser.viewer import console_errors, log_in, webgl_browser  # noqa: F401
from tests.factories import ExamFactory, MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser
WAIT_S = 600  # jobs on a loaded 2-core machine


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


def _shot(browser, name):
    folder = os.environ.get("BMDSITE_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def _problems(browser):
    recorded = browser.execute_script("return window.__problems || [];")
    return recorded + [e["message"] for e in console_errors(browser)]


def test_annotator_requests_resegmentation_and_sees_the_case_back(webgl_browser, live_server, transactional_db,
                                                                  storage, password, rq_worker, redis_url):
    browser = webgl_browser
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    exam, run, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)
    annotator = MembershipFactory(project=project, role="annotator").user
    log_in(browser, live_server, annotator, password)
    browser.get(f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/")
    # No promoted version: the project default is the rule-based segmenter, offered once.
    choice = Select(browser.find_element(By.ID, "resegment-with"))
    assert [o.text for o in choice.options] == ["project default (rule-based, anatomy rules)"]
    choice.select_by_value("")
    _shot(browser, "01-annotator-case-before")
    browser.find_element(By.ID, "op-resegment").click()
    # Deciding moves to the next case in the reader's queue (none): back on this case's page.
    browser.get(f"{live_server.url}/p/{project.pk}/exams/{exam.pk}/case/")
    state = browser.find_element(By.ID, "resegment-state")
    assert state.text == "Queued"
    assert "Re-segmentation requested" in browser.find_element(By.ID, "case-status").text
    _shot(browser, "02-annotator-resegmentation-queued")

    rq_worker("default", extra_env={"STORAGE_ROOT": str(storage)})
    # The page follows the job and reloads when it has finished: the case is back to review, new run shown.
    WebDriverWait(browser, WAIT_S).until(
        lambda b: "replaced run" in b.find_element(By.ID, "resegment-history").text)
    row = ResegmentationRequest.objects.get()
    assert row.job.state == JobState.SUCCEEDED and row.new_run_id is not None
    assert ReviewCase.objects.get(exam=exam).status == CaseStatus.PENDING
    assert browser.find_element(By.ID, "case-status").text == "To review"
    assert f"run {row.new_run_id}" in browser.find_element(By.CSS_SELECTOR, ".side h2").text
    assert browser.find_element(By.ID, "op-accept").is_displayed()
    _shot(browser, "03-annotator-case-back-in-review")
    assert _problems(browser) == []


def test_pi_compares_two_segmenters_on_the_reviewed_cases(webgl_browser, live_server, transactional_db, storage,
                                                          password, rq_worker, redis_url):
    pytest.importorskip("torch")
    browser = webgl_browser
    from tests.analysis.test_segmentation_network import _untrained_weights, _version

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    project = ExamFactory().patient.project
    reader = MembershipFactory(project=project, role="annotator").user
    for seed in (0, 1, 2):
        exam, _, _ = make_measured_exam(ExamFactory(patient__project=project), random_state=seed)
        actions.open_cases(project)
        reading = actions.working_reading(ReviewCase.objects.get(exam=exam), reader, "annotator")
        actions.decide(reading, reading.version, reader, "accept")
    _version(project, "tiny-net", _untrained_weights())
    pi = MembershipFactory(project=project, role="pi").user
    log_in(browser, live_server, pi, password)

    browser.get(f"{live_server.url}/p/{project.pk}/segmenters/")
    assert "tiny-net" in browser.find_element(By.ID, "segmenter-versions").text
    assert browser.find_element(By.ID, "segmenter-train-form").is_displayed()
    _shot(browser, "04-pi-segmenters")
    problems = _problems(browser)

    browser.find_element(By.LINK_TEXT, "Compare two segmenters on the reviewed cases").click()
    Select(browser.find_element(By.ID, "id_a")).select_by_value("anatomy")
    Select(browser.find_element(By.ID, "id_b")).select_by_value("tiny-net")
    browser.find_element(By.ID, "segmenter-compare-button").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "comparison-job"))
    _shot(browser, "05-pi-comparison-running")
    problems += _problems(browser)

    rq_worker("default", "gpu", extra_env={"STORAGE_ROOT": str(storage), "BMDSITE_TORCH_THREADS": "1"})
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.ID, "comparison-n"))
    comparison = SegmenterComparison.objects.get()
    assert "3 reviewed cases" in browser.find_element(By.ID, "comparison-n").text
    assert comparison.results["agreement"]["a"] == {"agree": 15, "n": 15, "share": 1.0}
    assert "1.000" in browser.find_element(By.ID, "level-agreement").text
    assert "Wilcoxon" in browser.page_source
    _shot(browser, "06-pi-comparison-result")
    problems += _problems(browser)
    assert problems == []
