"""In headless Chromium: an exam edited after training saves and the model shows as stale; training after a
measurement with the source chosen on the page (run by a real worker); two browsers saving the same exam,
the second is shown the conflict and decides."""

import datetime as dt

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from analysis.models import LevelMeasurement, MeasurementRun, ModelVersion
from studies.demo import seed_demo_project
from studies.models import Exam, Job, JobState, QCTResult
from tests.browser.test_registry_browser import wait_for_text
from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


def login(browser, live_server, user, password):
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Projects")


def set_value(browser, name, value):
    field = browser.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def test_edit_an_exam_after_training_saves_and_shows_the_model_stale(browser, live_server, transactional_db,
                                                                       password, storage):
    project, _ = seed_demo_project(n_patients=60, random_state=3, name="Browser after training")
    seed_demo_measurements(project, random_state=3)
    (version,), _ = train_cohort(project, feature_sets=("abdomen",), tasks=("regression",),
                                 algorithms={"regression": ["SGD"]}, n_resamples=10)
    exam = Exam.objects.select_related("patient").get(pk=version.data_snapshot["exam_ids"][0])
    user = MembershipFactory(project=project, role="coordinator").user
    login(browser, live_server, user, password)

    browser.get(f"{live_server.url}/p/{project.pk}/patients/{exam.patient_id}/exams/{exam.pk}/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Exam of")
    set_value(browser, "qct-bmd_l1", "55")
    set_value(browser, "qct-bmd_l2", "")
    set_value(browser, "qct-bmd_l3", "")
    set_value(browser, "qct-levels_note", "L1 only, corrected")
    browser.find_element(By.ID, "save-exam").click()
    # 55 mg/cm3 < 80: osteoporosis; the page said "saved" (it was a 500 "cohort 'main' is frozen").
    wait_for_text(browser, (By.CSS_SELECTOR, "ul.messages"), "QCT BMD 55.0 mg/cm3, osteoporosis")
    assert QCTResult.objects.get(exam=exam).levels_note == "L1 only, corrected"

    browser.get(f"{live_server.url}/p/{project.pk}/models/")
    badge = wait_for_text(browser, (By.CSS_SELECTOR, "[data-testid=stale]"), "stale")
    assert "QCT BMD changed for 1 exam" in badge.get_attribute("title")
    browser.get(f"{live_server.url}/p/{project.pk}/models/{version.pk}/")
    stale = wait_for_text(browser, (By.ID, "stale"), "QCT BMD changed")
    assert f"{exam.patient.pseudonym} {exam.exam_date:%Y-%m-%d}" in stale.text and "-> 55.0" in stale.text


def test_train_after_a_measurement_with_the_source_chosen_on_the_page(browser, live_server, rq_worker, password,
                                                                      storage):
    project, _ = seed_demo_project(n_patients=60, random_state=4, name="Browser training")
    seed_demo_measurements(project, random_state=4)
    # "Segment and measure" on one demo exam left a run of the pipeline next to its synthetic run.
    exam = Exam.objects.filter(patient__project=project).order_by("pk").first()
    run = MeasurementRun.objects.create(exam=exam, source=MeasurementRun.PIPELINE)
    LevelMeasurement.objects.bulk_create([LevelMeasurement(run=run, level=level, mean_hu=150.0)
                                          for level in ("T12", "L1", "L2")])
    user = MembershipFactory(project=project, role="pi").user
    login(browser, live_server, user, password)

    browser.get(f"{live_server.url}/p/{project.pk}/models/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Model versions")
    source = Select(browser.find_element(By.NAME, "measurement_source"))
    assert [o.text for o in source.options] == [
        "project default: per exam the newest reviewed run, else the newest automatic run",
        "only bmdsite (1 exam)", "only synthetic (60 exams)"]
    source.select_by_value("synthetic")
    browser.find_element(By.ID, "train-button").click()
    # The job page's heading is the kind's name then "job #N" (templates/studies/job_detail.html, since the
    # job pages named kinds for people), no longer "Job #N".
    wait_for_text(browser, (By.TAG_NAME, "h1"), "job #")
    job = Job.objects.get(project=project, kind="analysis.train_grid")
    assert job.params["measurement_source"] == "synthetic"

    # A second click while it is queued: "already running", still one job.
    browser.get(f"{live_server.url}/p/{project.pk}/models/")
    browser.find_element(By.ID, "train-button").click()
    wait_for_text(browser, (By.ID, "train-form"), "already running")
    assert Job.objects.filter(project=project, kind="analysis.train_grid").count() == 1

    worker = rq_worker(extra_env={"STORAGE_ROOT": str(storage)})
    browser.get(f"{live_server.url}/jobs/{job.pk}/")
    # The page shows the state's label ("Succeeded", templates/studies/_job_status.html), compared lower-case.
    try:
        # The page polls its status partial and replaces the element: a reference may go stale between reads.
        WebDriverWait(browser, 600, poll_frequency=1, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda b: b.find_element(By.ID, "job-state").text.lower() in ("succeeded", "failed"))
    finally:
        job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error or (worker.poll() is not None and worker.stdout.read())
    versions = ModelVersion.objects.filter(project=project)
    # The grid: chest and abdomen x 2 tasks x 3 algorithms (12), and chest_cal once per calibration variant
    # (analysis.modeling.calibration.CALIBRATION_VARIANTS, 3 since the calibration merge): 12 + 18 = 30.
    assert versions.count() == 30 and {v.measurement_source for v in versions} == {"synthetic"}
    browser.get(f"{live_server.url}/p/{project.pk}/models/")
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Model versions")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=stale]")


def test_two_browsers_save_the_same_exam_the_second_sees_the_conflict(browser, second_browser, live_server,
                                                                      transactional_db, password):
    membership = MembershipFactory(role="coordinator", project__name="Browser conflict")
    project = membership.project
    other = MembershipFactory(role="coordinator", project=project).user
    qct = QCTResult.objects.create(exam=Exam.objects.create(
        patient=project.patients.create(pseudonym="BC-001", sex="F"), exam_date=dt.date(2022, 3, 1), age_at_exam=70,
        region="chest"), bmd_l1=100.0)
    url = f"{live_server.url}/p/{project.pk}/patients/{qct.exam.patient_id}/exams/{qct.exam_id}/"
    login(browser, live_server, membership.user, password)
    login(second_browser, live_server, other, password)
    browser.get(url)
    second_browser.get(url)
    wait_for_text(browser, (By.TAG_NAME, "h1"), "Exam of")
    wait_for_text(second_browser, (By.TAG_NAME, "h1"), "Exam of")

    set_value(browser, "exam-age_at_exam", "71")
    browser.find_element(By.ID, "save-exam").click()
    wait_for_text(browser, (By.CSS_SELECTOR, "ul.messages"), "saved")

    set_value(second_browser, "qct-bmd_l1", "90")
    second_browser.find_element(By.ID, "save-exam").click()
    conflict = wait_for_text(second_browser, (By.CSS_SELECTOR, ".errorlist.nonfield"), "someone else saved")
    assert "Age at exam: 71 -> 70" in conflict.text and "BMD L1 (mg/cm3): 100 -> 90" in conflict.text
    exam = Exam.objects.get(pk=qct.exam_id)
    assert (exam.age_at_exam, QCTResult.objects.get(pk=qct.pk).bmd_l1) == (71, 100.0)  # the first save stands

    # The second user keeps their BMD but takes the colleague's age, and saves again.
    set_value(second_browser, "exam-age_at_exam", "71")
    second_browser.find_element(By.ID, "save-exam").click()
    wait_for_text(second_browser, (By.CSS_SELECTOR, "ul.messages"), "saved")
    exam.refresh_from_db()
    assert (exam.age_at_exam, QCTResult.objects.get(pk=qct.pk).bmd_l1) == (71, 90.0)
