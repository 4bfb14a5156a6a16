"""Two readers save the same reading at the same moment on PostgreSQL: exactly one save wins, the other is
told what changed; nothing is overwritten silently."""

import threading

import pytest
from django.db import connection, connections

from studies.review import actions
from studies.review.models import Reading, ReviewCase
from tests.conftest import missing_service
from tests.factories import MembershipFactory
from tests.studies.review.conftest import make_measured_exam


def test_simultaneous_saves_one_wins_one_conflicts(transactional_db, storage):
    if connection.vendor != "postgresql":
        missing_service("PostgreSQL (DATABASE_URL) for concurrent transactions")
    exam, _, _ = make_measured_exam()
    actions.open_cases(exam.patient.project)
    case = ReviewCase.objects.get(exam=exam)
    readers = [MembershipFactory(project=case.project, role="annotator").user for _ in range(2)]
    reading = actions.working_reading(case, readers[0], "annotator")
    barrier = threading.Barrier(2)
    outcomes = {}

    def save(i, operation, kwargs):
        try:
            stale = Reading.objects.get(pk=reading.pk)  # both opened version 1
            barrier.wait(timeout=60)
            actions.edit_levels(stale, 1, readers[i], operation, **kwargs)
            outcomes[i] = "saved"
        except actions.EditConflict as conflict:
            outcomes[i] = conflict
        finally:
            connections.close_all()

    threads = [threading.Thread(target=save, args=(0, "shift", {"delta": 1})),
               threading.Thread(target=save, args=(1, "rename", {"index": 2, "level": "T9"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(type(o).__name__ for o in outcomes.values()) == ["EditConflict", "str"]
    winner = next(i for i, o in outcomes.items() if o == "saved")
    loser = outcomes[1 - winner]
    final = Reading.objects.get(pk=reading.pk)
    assert final.version == 2 and loser.reading.version == 2
    assert [e.user for e in loser.events] == [readers[winner]]
