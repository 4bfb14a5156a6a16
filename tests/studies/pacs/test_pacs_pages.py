"""PACS pages: who may see what, the secret never shown or logged, test connection against a real Orthanc
with basic auth, search, selection with override, cohort pull, zip import, the pseudonym map."""

import io
import logging
import random
import zipfile
from pathlib import Path

import pydicom
import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from studies import jobs
from studies.models import AccessLog, Job
from studies.pacs.models import PacsConnection, PseudonymMap, StoredSeries
from tests.factories import ExamFactory, PatientFactory, UserFactory

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
LIDC = DATA / "lidc-partial"
SECRET = "Tr0ub4dor&3-not-in-pages"


@pytest.fixture
def site_admin(client, db):
    user = UserFactory(is_superuser=True, is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def secured_orthanc(orthanc_factory):
    server = orthanc_factory(users={"bmd": SECRET})
    lidc = sorted(LIDC.glob("*.dcm"))
    random.Random(3).shuffle(lidc)
    stored, _ = server.stow(lidc)
    assert len(stored) == 11
    return server


@pytest.fixture
def connection(db, secured_orthanc):
    return PacsConnection.objects.create(name="hospital", base_url=secured_orthanc.url, auth="basic",
                                         username="bmd", secret=SECRET, max_retries=0)


def lidc_uids():
    ds = pydicom.dcmread(next(LIDC.glob("*.dcm")), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.PatientID)


# -- access ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, args", [("pacs_connections", []), ("pacs_connection_add", [])])
def test_connection_pages_are_for_site_admins_only(client, member, name, args):
    url = reverse(f"studies:{name}", args=args)
    assert client.get(url).status_code == 302  # anonymous: to the login page
    for role in ("coordinator", "admin"):  # a project admin is not a site admin
        client.force_login(member(role))
        assert client.get(url).status_code == 403
    client.force_login(UserFactory(is_superuser=True))
    assert client.get(url).status_code == 200


def test_project_pages_follow_roles(client, member, project):
    pages = ["pacs_search", "pacs_cohort_pull", "pacs_import"]
    outsider = UserFactory()
    client.force_login(outsider)
    for name in pages + ["pacs_pseudonyms", "pacs_series"]:
        assert client.get(reverse(f"studies:{name}", args=[project.pk])).status_code == 404
    client.force_login(member("annotator"))
    for name in pages + ["pacs_pseudonyms"]:
        assert client.get(reverse(f"studies:{name}", args=[project.pk])).status_code == 403
    assert client.get(reverse("studies:pacs_series", args=[project.pk])).status_code == 200
    client.force_login(member("coordinator"))
    for name in pages:
        assert client.get(reverse(f"studies:{name}", args=[project.pk])).status_code == 200
    assert client.get(reverse("studies:pacs_pseudonyms", args=[project.pk])).status_code == 403


def test_pseudonym_map_is_for_project_admins_and_logged(client, member, project):
    PseudonymMap.objects.create(project=project, real_patient_id="MRN-1", pseudonym="PX1")
    client.force_login(member("admin"))
    page = client.get(reverse("studies:pacs_pseudonyms", args=[project.pk])).content.decode()
    assert "MRN-1" in page and "PX1" in page
    assert AccessLog.objects.filter(project=project, action="view_pseudonym_map").count() == 1
    # Changes to the map are audited.
    assert LogEntry.objects.get_for_model(PseudonymMap).count() == 1


# -- the secret ----------------------------------------------------------------------------------------------
def test_secret_is_never_shown_logged_or_audited(site_admin, secured_orthanc, caplog):
    caplog.set_level(logging.DEBUG)
    add = reverse("studies:pacs_connection_add")
    data = {"name": "hospital", "base_url": secured_orthanc.url, "auth": "basic", "username": "bmd",
            "secret": SECRET, "connect_timeout_s": 5, "read_timeout_s": 30, "max_retries": 0}
    # An invalid form is re-rendered without the typed secret.
    page = site_admin.post(add, {**data, "max_retries": 99}).content.decode()
    assert "At most 10 retries" in page and SECRET not in page
    assert site_admin.post(add, data).status_code == 302
    connection = PacsConnection.objects.get()
    assert connection.secret == SECRET  # stored for the workers
    edit = reverse("studies:pacs_connection_edit", args=[connection.pk])
    pages = [site_admin.get(reverse("studies:pacs_connections")), site_admin.get(edit)]
    # Saving with a blank secret keeps the stored one.
    assert site_admin.post(edit, {**data, "secret": "", "read_timeout_s": 20}).status_code == 302
    connection.refresh_from_db()
    assert connection.secret == SECRET and connection.read_timeout_s == 20
    # Test connection: right credentials, then wrong ones.
    test = reverse("studies:pacs_connection_test", args=[connection.pk])
    pages.append(site_admin.post(test, follow=True))
    assert "QIDO-RS answered" in pages[-1].content.decode()
    PacsConnection.objects.filter(pk=connection.pk).update(secret="wrong-" + SECRET[::-1])
    pages.append(site_admin.post(test, follow=True))
    assert "answered HTTP 401" in pages[-1].content.decode()
    for response in pages:
        assert SECRET not in response.content.decode()
    assert SECRET not in caplog.text and SECRET[::-1] not in caplog.text
    assert SECRET not in repr(connection) and SECRET not in str(connection)
    for entry in LogEntry.objects.get_for_model(PacsConnection):
        assert SECRET not in str(entry.changes) and "secret" not in (entry.changes or {})


# -- search, selection, pulls, import -----------------------------------------------------------------------------
def test_search_finds_the_study_and_links_it_to_an_exam(coordinator_client, project, connection):
    study, _, patient_id = lidc_uids()
    url = reverse("studies:pacs_search", args=[project.pk])
    # The search is POSTed (the PatientID stays out of URLs) and shown by a redirect to the plain page.
    coordinator_client.post(url, {"connection": connection.pk, "patient_id": patient_id, "modality": "CT"})
    page = coordinator_client.get(url)
    html = page.content.decode()
    assert patient_id in html  # the row shows the PACS patient id (PHI, logged below)
    assert page.context["studies"][0].study_uid == study and len(page.context["studies"]) == 1
    assert AccessLog.objects.filter(project=project, action="pacs_search").exists()
    # Nothing entered: refused rather than listing the whole PACS.
    empty = coordinator_client.post(url, {"connection": connection.pk, "modality": "CT"})
    assert "Give a patient id or a date range" in empty.content.decode()

    exam = ExamFactory(patient=PatientFactory(project=project))
    coordinator_client.post(reverse("studies:pacs_link_exam", args=[project.pk]),
                            {"study_uid": study, "exam": exam.pk})
    exam.refresh_from_db()
    assert exam.study_uid == study


def test_selection_page_pulls_as_a_job_and_records_an_override(coordinator_client, project, connection,
                                                               pacs_storage):
    study, series, _ = lidc_uids()
    url = reverse("studies:pacs_study", args=[project.pk, connection.pk, study])
    page = coordinator_client.get(url)
    assert page.context["selection"].chosen.series_uid == series
    assert "chosen: CT ORIGINAL/PRIMARY/AXIAL, 2.5 mm, 11 images, contrast" in page.content.decode()
    response = coordinator_client.post(url, {"series_uid": series})
    job = Job.objects.get()
    assert response.url == job.get_absolute_url()
    assert job.kind == "pacs.pull_series" and job.params["series_uid"] == ""  # automatic choice, no override
    jobs.execute(row_id=job.pk)  # what the worker runs
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    stored = StoredSeries.objects.get()
    assert stored.series_uid == series and stored.selection_reason.startswith("chosen: CT")
    assert "override" not in stored.selection_reason


def test_cohort_pull_submits_one_job_per_exam(coordinator_client, project, connection):
    study, _, _ = lidc_uids()
    cohort = project.default_cohort()
    with_uid = ExamFactory(patient=PatientFactory(project=project), study_uid=study)
    without = ExamFactory(patient=PatientFactory(project=project))
    for exam in (with_uid, without):
        cohort.members.create(exam=exam)
    response = coordinator_client.post(reverse("studies:pacs_cohort_pull", args=[project.pk]),
                                       {"cohort": cohort.pk, "connection": connection.pk}, follow=True)
    job = Job.objects.get()
    assert job.kind == "pacs.pull_exam" and job.params["exam_id"] == with_uid.pk
    html = response.content.decode()
    assert "1 pull job(s) submitted" in html and "no StudyInstanceUID" in html
    jobs.execute(row_id=job.pk)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    with_uid.refresh_from_db()
    assert with_uid.stored_series.count() == 1 and with_uid.series_uid == lidc_uids()[1]
    # Progress per exam shows on the page.
    page = coordinator_client.get(reverse("studies:pacs_cohort_pull", args=[project.pk])).content.decode()
    assert "succeeded" in page


def test_zip_upload_imports_through_a_job(coordinator_client, project, pacs_storage, settings):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in LIDC.glob("*.dcm"):
            zf.write(path, f"case/{path.name}")
    buffer.seek(0)
    buffer.name = "case.zip"
    response = coordinator_client.post(reverse("studies:pacs_import", args=[project.pk]), {"file": buffer})
    job = Job.objects.get()
    assert response.url == job.get_absolute_url() and Path(job.params["path"]).is_file()
    jobs.execute(row_id=job.pk)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert job.result["series_uid"] == lidc_uids()[1]
    assert not Path(job.params["path"]).exists()  # the upload is removed after the import
    # Coordinators cannot import server folders (only site admins can).
    page = coordinator_client.post(reverse("studies:pacs_import", args=[project.pk]), {"folder": str(LIDC)})
    assert "Give either a zip file or a folder" in page.content.decode()
