"""In headless Chromium: a coordinator imports a CSV too large for the request (a job, run by a real worker),
watches the job page move to "Succeeded" by itself, and opens a patient's history, which names them as the
author of the import's entries. The uploaded file is gone afterwards."""

import pytest
from selenium.webdriver.common.by import By

from studies import importers
from studies.models import Patient, QCTResult
from tests.browser.test_integrity_browser import login
from tests.browser.test_registry_browser import wait_for_text
from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser

HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split\n"


def test_coordinator_imports_a_large_file_as_a_job(browser, live_server, rq_worker, password, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    membership = MembershipFactory(role="coordinator", project__name="Import study")
    user, project = membership.user, membership.project
    n = importers.INLINE_MAX_ROWS + 500
    # Row i: BMD L1 = 60 + i % 100 mg/cm3, so B00042 holds 102.
    path = tmp_path / "registry.csv"
    path.write_text(HEADER + "".join(f"B{i:05d},{'FM'[i % 2]},66,2022-05-03,chest,{60 + i % 100},,,train\n"
                                     for i in range(n)))
    login(browser, live_server, user, password)
    browser.get(f"{live_server.url}/p/{project.pk}/import/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for_text(browser, (By.ID, "confirm-import"), f"Import all {n} row(s)").click()
    wait_for_text(browser, (By.ID, "job-status"), "Queued")
    rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)}).wait(timeout=300)
    # The page polls its status: no reload.
    status = wait_for_text(browser, (By.ID, "job-status"), "Succeeded", timeout=30)
    # The last progress line ("imported N row(s)") is not repeated under a finished job; the summary says it.
    assert f"imported {n} row(s)" not in status.text and f"Imported {n} row(s)" in status.text
    # The page describes the finished import, no longer that it is importing.
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"Imported {n} row(s) from registry.csv: {n} new patient(s)" in body and "all rows or none" not in body
    assert QCTResult.objects.get(exam__patient__pseudonym="B00042").bmd_l1 == 102.0
    assert not list((tmp_path / importers.PENDING_FOLDER).iterdir())

    patient = Patient.objects.get(project=project, pseudonym="B00042")
    browser.get(f"{live_server.url}/p/{project.pk}/patients/{patient.pk}/history/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(rows) == 4  # the patient, its exam, its QCT value, its split
    assert all(user.username in row.text for row in rows)
    assert "bmd_l1: — → 102.0" in browser.find_element(By.ID, "history").text
