"""Registers the registry models with django-auditlog: every create, change and delete of patients, exams,
QCT values, exclusion flags, cohort splits and memberships is recorded with who, when, before and after.

``get_additional_data`` on each model stores the project and patient ids with the entry, so a patient's
history page finds the entries of its exams, QCT values and flags in one query.

Every entry with an actor also names them: ``additional_data["actor"]`` holds the actor's user name when the
entry is written. django-auditlog links the actor with ``on_delete=SET_NULL``, so deleting a user account
clears that link; the entry stays and still says who it was (the history page shows the name).

Code that writes on behalf of a user outside a page request (a job in the worker) or for another user than
the request's names them with :func:`acting_as`.
"""

import contextlib

from auditlog.context import auditlog_value, set_actor
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save
from django.dispatch import receiver

from .models import CohortMember, Exam, ExclusionFlag, Membership, Patient, Project, QCTResult, account_name

auditlog.register(Project)
auditlog.register(Membership)
auditlog.register(Patient)
auditlog.register(Exam)
auditlog.register(QCTResult)
auditlog.register(ExclusionFlag)
auditlog.register(CohortMember)

# PACS (studies.pacs): the connection's secret never enters the audit log. Every change to the pseudonym map
# is recorded, without the real PatientID (PHI): the audit log is shown in the Django admin to every staff
# user, while the map itself is for project admins and logs each view (migration 0003 scrubs older entries).
from .pacs.models import PacsConnection, PseudonymMap, StoredSeries  # noqa: E402

auditlog.register(PacsConnection, exclude_fields=["secret"])
auditlog.register(StoredSeries, exclude_fields=["meta", "geometry"])
auditlog.register(PseudonymMap, exclude_fields=["real_patient_id"])


ACTOR_KEY = "actor"


@contextlib.contextmanager
def acting_as(user):
    """Audit entries written inside the block name ``user`` as their actor (None: the system).

    django-auditlog's ``set_actor`` does not nest: leaving it keeps its own context as the current one, with
    its receiver disconnected, so the writes after an inner block lost the outer actor (a page's request
    user once a view had named one) and kept the inner actor's name in ``additional_data`` without the
    actor. This restores the enclosing context on the way out, whose receiver is still connected.
    """
    token = auditlog_value.set(auditlog_value.get(None))
    try:
        with set_actor(user):
            yield
    finally:
        auditlog_value.reset(token)


def actor_snapshot(user):
    """``{"actor": user name}`` for an entry written by ``user``; empty for the system (no user)."""
    return {ACTOR_KEY: user.get_username()} if user is not None else {}


@receiver(pre_save, sender=LogEntry, dispatch_uid="studies.audit.name_the_actor")
def name_the_actor(sender, instance, **kwargs):
    """Store the actor's name with a new entry (see the module's docstring)."""
    if not instance._state.adding:
        return
    actor = instance.actor if instance.actor_id is not None else None
    if actor is None:
        # A page request: django-auditlog's middleware sets the actor in a receiver of its own, which may run
        # after this one; the actor is the one it holds (none outside a request or acting_as).
        context = auditlog_value.get(None) or {}
        actor = context.get("actor") if _is_live(context) else None
        if not isinstance(actor, get_user_model()):
            return
    extra = instance.additional_data
    if extra is None:
        extra = {}
    if isinstance(extra, dict) and ACTOR_KEY not in extra:
        instance.additional_data = {**extra, **actor_snapshot(actor)}


def _is_live(context):
    """Whether django-auditlog's context is still in force: ``set_actor`` leaves its value set after its block
    (in a thread that served a request, in a test) and only disconnects its receiver, by the context's id."""
    uid = context.get("signal_duid")
    return uid is not None and any(lookup[0] == uid for lookup, *_ in pre_save.receivers)


def actor_name(entry):
    """Who wrote an audit entry: the user, or the name stored with the entry once the account is deleted;
    None for the system."""
    extra = entry.additional_data if isinstance(entry.additional_data, dict) else {}
    return account_name(entry.actor, extra.get(ACTOR_KEY))


def change_rows(entry):
    """``(field, before, after)`` of an entry's changes, in the order of the model's fields (``id`` first);
    the side that did not exist (before a create, after a delete) as "—" rather than django-auditlog's "None"."""
    changes = entry.changes_dict
    model = entry.content_type.model_class() if entry.content_type_id else None
    order = {f.name: i for i, f in enumerate(model._meta.concrete_fields)} if model is not None else {}
    rows = []
    for name in sorted(changes, key=lambda n: (order.get(n, len(order)), n)):
        value = changes[name]
        before, after = value[:2] if isinstance(value, list) and len(value) >= 2 else ("", str(value))
        if entry.action == LogEntry.Action.CREATE and before == "None":
            before = "—"
        if entry.action == LogEntry.Action.DELETE and after == "None":
            after = "—"
        rows.append((name, before, after))
    return rows
