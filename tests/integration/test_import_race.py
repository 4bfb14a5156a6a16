"""An import racing a delete of a patient it touches: the import succeeds whole or fails whole with a clear
message, never half. Two real transactions on PostgreSQL (SQLite has one writer, so no race there)."""

import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction

from studies.importers import RegistryChanged, import_qct, parse_qct_csv
from studies.models import Exam, Patient, QCTResult
from tests.conftest import missing_service
from tests.factories import ExamFactory, PatientFactory, QCTResultFactory

HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3\n"
# P1's stored exam of 2022-06-01 updated, a new exam of P1, a new patient P2.
FILE = HEADER + "P1,F,66,2022-06-01,chest,70,,\nP1,F,67,2023-06-01,chest,71,,\nP2,M,60,2022-05-03,chest,150,,\n"


@pytest.fixture
def registry(transactional_db, project):
    if connection.vendor != "postgresql":
        missing_service("PostgreSQL (DATABASE_URL) is needed for two concurrent transactions")
    QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="P1")), bmd_l1=100.0)
    return project


def _waiting_for_a_lock(timeout=60.0):
    """Wait until another backend of this database waits for a lock (the racing transaction is blocked)."""
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            # Activity statistics are a snapshot per transaction; the caller may be inside one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.05)
    raise AssertionError("the racing transaction never waited for a lock")


def _in_thread(func):
    outcome = {}

    def run():
        try:
            outcome["value"] = func()
        except Exception as exc:  # reported to the test, which asserts on it
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_delete_during_the_import_waits_and_the_import_is_stored_whole(registry):
    deleter = {}

    def progress(fraction, message=""):
        # After the import has locked what it touches and before it writes: a user deletes P1.
        if message.startswith("storing") and "thread" not in deleter:
            deleter["thread"], deleter["outcome"] = _in_thread(
                lambda: Patient.objects.get(project=registry, pseudonym="P1").delete())
            _waiting_for_a_lock()

    plan = import_qct(registry, FILE.encode(), source="race.csv", progress=progress)
    deleter["thread"].join(timeout=120)
    assert plan.counts == {"rows": 3, "new_patients": 1, "new_exams": 2, "updated_exams": 1}
    # The delete waited for the import, then found an exam it had not collected (the import's new one) and
    # was refused whole by the foreign key; the import is all there.
    assert isinstance(deleter["outcome"].get("error"), IntegrityError), deleter["outcome"]
    assert sorted(Exam.objects.filter(patient__project=registry).values_list("patient__pseudonym", "exam_date__year")) \
        == [("P1", 2022), ("P1", 2023), ("P2", 2022)]
    assert sorted(QCTResult.objects.values_list("bmd_l1", flat=True)) == [70.0, 71.0, 150.0]


def test_import_waiting_for_a_delete_is_refused_whole(registry):
    expected = parse_qct_csv(FILE.encode(), source="race.csv", project=registry).counts  # the preview
    deleted, release = threading.Event(), threading.Event()

    def delete_and_hold():
        with transaction.atomic():
            Patient.objects.get(project=registry, pseudonym="P1").delete()
            deleted.set()
            release.wait(timeout=120)

    thread, outcome = _in_thread(delete_and_hold)
    assert deleted.wait(timeout=120)  # the deleter holds P1's row, uncommitted

    def release_when_blocked():
        _waiting_for_a_lock()
        release.set()

    releaser, _ = _in_thread(release_when_blocked)
    with pytest.raises(RegistryChanged) as excinfo:
        import_qct(registry, FILE.encode(), source="race.csv", expected=expected)
    thread.join(timeout=120)
    releaser.join(timeout=120)
    assert "error" not in outcome
    assert excinfo.value.errors == [
        "race.csv: the registry changed since the preview (1 new patient(s), 2 new exam(s), 1 updated exam(s) "
        "then, 2 new patient(s), 3 new exam(s), 0 updated exam(s) now: a patient or exam was added or deleted "
        "meanwhile); nothing was imported; check the file again"
    ]
    assert not Patient.objects.exists() and not Exam.objects.exists()


def test_progress_is_visible_while_the_import_transaction_is_open(registry):
    from studies.models import Job
    from studies.tasks import _committed

    job = Job.objects.create(kind="registry.import_qct", project=registry)

    def progress(fraction, message=""):  # what studies.jobs.execute hands to a task
        Job.objects.filter(pk=job.pk).update(progress=fraction, message=message)

    seen = []

    def observed(fraction, message=""):
        committed(fraction, message)
        # Another connection (another thread) reads the job row, as the job page does.
        thread, outcome = _in_thread(lambda: Job.objects.values_list("progress", "message").get(pk=job.pk))
        thread.join(timeout=60)
        seen.append(outcome["value"])

    committed = _committed(progress)
    import_qct(registry, FILE.encode(), source="progress.csv", progress=observed)
    # Every report was visible at once, though the import's transaction was still open for all but the last.
    assert seen[1] == (0.2, "reading the registry for 3 row(s)")
    assert seen[2] == (0.3, "storing 1 new patient(s)")
    assert seen[-1] == (1.0, "imported 3 row(s)")
