"""In headless Chromium: two readers disagree on a double-read case, the adjudicator resolves it on the case
page, and the agreement page shows the hand-computed Cohen's kappa."""

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from studies.review import actions
from studies.review.models import CaseStatus, ReviewCase, ReviewSettings
from tests.browser.viewer import console_errors, log_in, wait_for_viewer, webgl_browser  # noqa: F401
from tests.factories import ExamFactory, MembershipFactory
from tests.studies.review.conftest import make_measured_exam

pytestmark = pytest.mark.browser


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def test_adjudicator_resolves_a_disagreement_and_kappa_is_shown(webgl_browser, live_server, transactional_db,
                                                                storage, password):
    browser = webgl_browser
    project = ExamFactory().patient.project
    exams = [make_measured_exam(ExamFactory(patient__project=project), random_state=i)[0] for i in range(2)]
    actions.open_cases(project)
    a, b = (MembershipFactory(project=project, role="annotator").user for _ in range(2))
    adjudicator = MembershipFactory(project=project, role="admin").user
    ReviewSettings.objects.create(project=project, adjudicator=adjudicator)
    actions.assign(project, double_read_share=1.0, readers=[a, b])

    def reading(exam, user):
        return actions.working_reading(ReviewCase.objects.get(exam=exam), user, "annotator")

    # Exam 1: both accept, but reader a shifted the levels (a disagreement on names). Exam 2: accept / reject.
    ra = reading(exams[0], a)
    actions.edit_levels(ra, 1, a, "shift", delta=1)
    actions.decide(ra, 2, a, "accept")
    actions.decide(reading(exams[0], b), 1, b, "accept")
    actions.decide(reading(exams[1], a), 1, a, "accept")
    actions.decide(reading(exams[1], b), 1, b, "reject")
    assert ReviewCase.objects.get(exam=exams[0]).status == CaseStatus.ADJUDICATION

    log_in(browser, live_server, adjudicator, password)
    browser.get(f"{live_server.url}/p/{project.pk}/exams/{exams[0].pk}/case/")
    wait_for_viewer(browser)
    assert "readers disagree" in browser.find_element(By.ID, "review-history").text
    assert "Adjudication" in browser.find_element(By.ID, "review-panel").text
    browser.find_element(By.ID, "op-shift-down").click()
    # The click reloads the page: a row found on the old page may be gone when its text is read.
    WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: "T11" in b.find_element(By.CSS_SELECTOR, "#level-table tr[data-index='1']").text)
    wait_for_viewer(browser)
    browser.find_element(By.ID, "op-accept").click()
    WebDriverWait(browser, 60).until(
        lambda b: ReviewCase.objects.get(exam=exams[0]).status == CaseStatus.ACCEPTED)
    case = ReviewCase.objects.get(exam=exams[0])
    assert case.result_run.parameters["review"]["reader"] == adjudicator.username

    # Pairs (accept, accept) and (accept, reject): observed 1/2, expected 1 x 1/2 + 0 x 1/2 = 1/2, so
    # kappa = (0.5 - 0.5) / (1 - 0.5) = 0.
    browser.get(f"{live_server.url}/p/{project.pk}/review/agreement/")
    assert browser.find_element(By.ID, "kappa").text == "0.000"
    assert browser.find_element(By.ID, "n-pairs").text == "2"
    assert console_errors(browser) == []
