"""Every create, change and delete of patients, exams, QCT values, flags and memberships is recorded with
who, when, before and after, and shown on the patient's history page."""

from auditlog.models import LogEntry
from django.urls import reverse

from studies.models import Exam, ExclusionFlag, Patient, QCTResult
from tests.factories import MembershipFactory, UserFactory


def entries(model, action):
    from django.contrib.contenttypes.models import ContentType

    return LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(model), action=action)


def test_changes_through_pages_are_audited(coordinator_client, project):
    c = coordinator_client
    c.post(reverse("studies:patient_add", args=[project.pk]), {"pseudonym": "AUD1", "sex": "F"})
    patient = Patient.objects.get(pseudonym="AUD1")
    created = entries(Patient, LogEntry.Action.CREATE).get(object_pk=str(patient.pk))
    assert created.actor == c.user

    c.post(reverse("studies:exam_add", args=[project.pk, patient.pk]), {
        "exam-exam_date": "2022-05-03", "exam-age_at_exam": "66", "exam-region": "chest",
        "qct-bmd_l1": "90", "qct-bmd_l2": "", "qct-bmd_l3": ""})
    exam = Exam.objects.get(patient=patient)
    qct = QCTResult.objects.get(exam=exam)
    assert entries(Exam, LogEntry.Action.CREATE).filter(object_pk=str(exam.pk)).exists()

    # An edit carries the versions the form was opened at (both rows are new: version 1).
    c.post(reverse("studies:exam_edit", args=[project.pk, patient.pk, exam.pk]), {
        "exam-exam_date": "2022-05-03", "exam-age_at_exam": "66", "exam-region": "chest", "exam-version": "1",
        "qct-bmd_l1": "70", "qct-bmd_l2": "", "qct-bmd_l3": "", "qct-version": "1"})
    change = entries(QCTResult, LogEntry.Action.UPDATE).get(object_pk=str(qct.pk))
    assert change.actor == c.user
    assert change.changes_dict["bmd_l1"] == ["90.0", "70.0"]
    assert change.changes_dict["category"] == ["osteopenia", "osteoporosis"]

    c.post(reverse("studies:flag_add", args=[project.pk, patient.pk]), {"reason": "vertebral_fracture",
                                                                         "note": "L2"})
    flag = ExclusionFlag.objects.get(patient=patient)
    c.post(reverse("studies:flag_delete", args=[project.pk, patient.pk, flag.pk]))
    assert entries(ExclusionFlag, LogEntry.Action.CREATE).count() == 1
    assert entries(ExclusionFlag, LogEntry.Action.DELETE).count() == 1

    c.post(reverse("studies:exam_delete", args=[project.pk, patient.pk, exam.pk]))
    assert entries(Exam, LogEntry.Action.DELETE).filter(object_pk=str(exam.pk)).exists()
    assert entries(QCTResult, LogEntry.Action.DELETE).filter(object_pk=str(qct.pk)).exists()

    history = c.get(reverse("studies:patient_history", args=[project.pk, patient.pk])).content.decode()
    assert "bmd_l1" in history and "90.0 → 70.0" in history
    assert history.count(c.user.username) >= 5


def test_membership_changes_are_audited(client, member, project):
    from studies.models import Membership

    admin = member("admin")
    client.force_login(admin)
    newcomer = UserFactory()
    client.post(reverse("studies:members", args=[project.pk]), {"username": newcomer.username,
                                                                "role": "annotator"})
    membership = Membership.objects.get(project=project, user=newcomer)
    assert entries(Membership, LogEntry.Action.CREATE).get(object_pk=str(membership.pk)).actor == admin
    client.post(reverse("studies:member_remove", args=[project.pk, membership.pk]))
    assert entries(Membership, LogEntry.Action.DELETE).filter(object_pk=str(membership.pk)).exists()


def test_non_admin_cannot_add_members(client, member, project):
    client.force_login(member("coordinator"))
    newcomer = UserFactory()
    response = client.post(reverse("studies:members", args=[project.pk]), {"username": newcomer.username,
                                                                           "role": "admin"})
    assert response.status_code == 403
    assert not MembershipFactory._meta.model.objects.filter(user=newcomer).exists()


def test_deleting_a_user_keeps_their_entries_and_their_name(client, member, project):
    """Access-log and audit entries stay when their user's account is deleted, and still name the user: on the
    patient's history page, in the access log's text, in the entries themselves. Covers the ways entries are
    written: page edits (django-auditlog's middleware), ``log_create`` with an actor (review and label changes),
    a CSV import (bulk entries) and a page view (access log)."""
    from studies.audit import actor_name
    from studies.importers import import_qct
    from studies.models import AccessLog

    admin = member("admin")
    user = member("coordinator")
    user.username = "dana.reader"
    user.save()
    client.force_login(user)
    client.post(reverse("studies:patient_add", args=[project.pk]), {"pseudonym": "DEL1", "sex": "F"})
    patient = Patient.objects.get(pseudonym="DEL1")
    client.get(reverse("studies:patient_list", args=[project.pk]))
    import_qct(project, b"patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3\n"
                        b"DEL1,F,66,2022-05-03,chest,90,,\n", source="del.csv", actor=user)
    exam = Exam.objects.get(patient=patient)
    LogEntry.objects.log_create(exam, action=LogEntry.Action.UPDATE, changes={"note": ["", "x"]}, actor=user,
                                additional_data=exam.get_additional_data())
    written = list(LogEntry.objects.filter(actor=user).values_list("pk", flat=True))
    assert len(written) == 1 + 2 + 1  # the patient; the exam and its QCT value; the log_create
    accesses = list(AccessLog.objects.filter(user=user).values_list("pk", flat=True))
    assert accesses

    user.delete()
    for entry in LogEntry.objects.filter(pk__in=written):
        assert entry.actor is None
        assert actor_name(entry) == "dana.reader (account deleted)"
    for entry in AccessLog.objects.filter(pk__in=accesses):
        assert entry.user is None and entry.username == "dana.reader"
        assert "dana.reader (account deleted)" in str(entry)
    client.force_login(admin)
    page = client.get(reverse("studies:patient_history", args=[project.pk, patient.pk])).content.decode()
    assert page.count("dana.reader (account deleted)") == 4
    # A created row's fields in the model's order, with no "None" before them.
    assert page.index("<code>id</code>") < page.index("<code>pseudonym</code>: — → DEL1") < page.index(
        "<code>sex</code>: — → F")


def test_the_history_page_finds_a_patients_entries_by_index(db, project):
    """The history page's query reads the audit entries of one patient through the index of migration 0005,
    not by reading every entry (planner told that a scan of the table is off the table)."""
    from django.db import connection

    from tests.conftest import missing_service

    if connection.vendor != "postgresql":
        missing_service("PostgreSQL (DATABASE_URL) is needed for the index on audit entries")
    patient = Patient.objects.create(project=project, pseudonym="IDX1", sex="F")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = (LogEntry.objects.filter(additional_data__patient_id=patient.pk, additional_data__project_id=project.pk)
            .order_by("-timestamp").explain())
    assert "auditlog_logentry_patient_id_idx" in plan, plan
