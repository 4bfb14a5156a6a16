"""The embedded default (SQLite): two transactions that read and then write wait for each other instead of
failing with "database is locked" (which concurrent exam saves answered as 500 under load)."""

import threading
import time

import pytest
from django.db import OperationalError, connection, transaction

from studies.models import Exam
from tests.factories import ExamFactory


@pytest.mark.django_db(transaction=True)
def test_a_second_writer_waits_for_the_first():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locking; PostgreSQL takes row locks and has no such failure")
    exam = ExamFactory(kvp=80)
    first_wrote, errors = threading.Event(), []

    def first():
        try:
            with transaction.atomic():
                Exam.objects.filter(pk=exam.pk).update(kvp=100)
                first_wrote.set()
                time.sleep(1.0)  # holds the write lock meanwhile
        finally:
            connection.close()

    def second():
        first_wrote.wait(30)
        try:
            with transaction.atomic():
                seen = Exam.objects.get(pk=exam.pk).kvp  # read, then write: the lock upgrade
                Exam.objects.filter(pk=exam.pk).update(kvp=seen + 20)
        except OperationalError as exc:
            errors.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    exam.refresh_from_db()
    assert exam.kvp == 120  # the second read the first's committed 100, then added 20
