"""``studies.audit.acting_as`` names the actor of the audit entries written inside it, and nests: leaving it
gives the enclosing actor (a job's user, a page's request user) back, or none outside any."""

from auditlog.middleware import AuditlogMiddleware
from auditlog.models import LogEntry
from django.test import RequestFactory

from studies.audit import acting_as
from tests.factories import QCTResultFactory, UserFactory


def _save(qct, bmd):
    qct.bmd_l1 = bmd
    qct.save()


def _actors(qct):
    updates = LogEntry.objects.get_for_object(qct).filter(action=LogEntry.Action.UPDATE).order_by("timestamp", "pk")
    return [(e.changes_dict["bmd_l1"][1], e.actor, e.additional_data.get("actor")) for e in updates]


def test_nested_blocks_give_the_outer_actor_back(db):
    outer, inner = UserFactory(), UserFactory()
    qct = QCTResultFactory(bmd_l1=100.0)
    with acting_as(outer):
        _save(qct, 70.0)
        with acting_as(inner):
            _save(qct, 71.0)
        _save(qct, 72.0)
        with acting_as(None):  # the system, inside a user's block
            _save(qct, 73.0)
        _save(qct, 74.0)
    _save(qct, 75.0)
    assert _actors(qct) == [("70.0", outer, outer.username), ("71.0", inner, inner.username),
                            ("72.0", outer, outer.username), ("73.0", None, None),
                            ("74.0", outer, outer.username), ("75.0", None, None)]


def test_a_block_inside_a_page_request_gives_the_request_user_back(db):
    request_user, named = UserFactory(), UserFactory()
    qct = QCTResultFactory(bmd_l1=100.0)

    def view(request):
        _save(qct, 70.0)
        with acting_as(named):
            _save(qct, 71.0)
        _save(qct, 72.0)

    request = RequestFactory().post("/")
    request.user = request_user
    AuditlogMiddleware(view)(request)
    assert _actors(qct) == [("70.0", request_user, request_user.username), ("71.0", named, named.username),
                            ("72.0", request_user, request_user.username)]


def test_a_context_left_behind_by_an_earlier_block_names_no_one(db):
    # django-auditlog's set_actor leaves its value in the context after the block (only its receiver goes):
    # a later write outside any block was stored with that earlier user's name.
    from auditlog.context import set_actor

    earlier = UserFactory()
    qct = QCTResultFactory(bmd_l1=100.0)
    with set_actor(earlier):
        _save(qct, 70.0)
    _save(qct, 71.0)
    assert _actors(qct) == [("70.0", earlier, earlier.username), ("71.0", None, None)]
