"""PHI out of audit displays, and an access log that cannot be rewritten: the pseudonym map's audit entries
leave out the real PatientID (new ones, and older ones by migration 0003); access-log entries are
append-only for superusers in the admin and for code."""

import importlib

import pytest
from auditlog.models import LogEntry
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from studies.models import AccessLog, AppendOnlyError
from studies.pacs.models import PseudonymMap
from studies.registry import log_access
from tests.factories import ProjectFactory, UserFactory


@pytest.fixture
def superuser_client(client, db):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


def test_the_pseudonym_audit_entry_holds_no_real_id(superuser_client):
    project = ProjectFactory()
    row = PseudonymMap.objects.create(project=project, real_patient_id="MRN-4711", pseudonym="PX7")
    (entry,) = LogEntry.objects.get_for_object(row)
    assert "real_patient_id" not in entry.changes
    assert entry.changes["pseudonym"] == ["None", "PX7"]  # auditlog writes None as "None"
    for url in (reverse("admin:auditlog_logentry_changelist"),
                reverse("admin:auditlog_logentry_change", args=[entry.pk])):
        page = superuser_client.get(url)
        assert page.status_code == 200 and "PX7" in page.content.decode()
        assert "MRN-4711" not in page.content.decode()
    row.delete()
    assert all("MRN-4711" not in str(e.changes) for e in LogEntry.objects.get_for_model(PseudonymMap))


def test_migration_0003_scrubs_older_entries(db):
    project = ProjectFactory()
    content_type = ContentType.objects.get_for_model(PseudonymMap)
    # What the audit log held before: the real id among the changes (dict and older text form).
    old = LogEntry.objects.create(content_type=content_type, object_pk="1", object_repr="pseudonym PX1",
                                  action=LogEntry.Action.CREATE,
                                  changes={"real_patient_id": [None, "MRN-1"], "pseudonym": [None, "PX1"]})
    older = LogEntry.objects.create(content_type=content_type, object_pk="2", object_repr="pseudonym PX2",
                                    action=LogEntry.Action.CREATE,
                                    changes_text='{"real_patient_id": [null, "MRN-2"], "pseudonym": [null, "PX2"]}')
    other = LogEntry.objects.create(content_type=ContentType.objects.get_for_model(project), object_pk="3",
                                    object_repr="p", action=LogEntry.Action.CREATE,
                                    changes={"real_patient_id": [None, "kept: not the map"]})
    migration = importlib.import_module("studies.migrations.0003_scrub_real_ids_from_pseudonym_audit")
    migration.scrub(apps, None)
    for entry in (old, older, other):
        entry.refresh_from_db()
    assert old.changes == {"pseudonym": [None, "PX1"]}
    assert older.changes == {"pseudonym": [None, "PX2"]} and older.changes_text == ""
    assert other.changes == {"real_patient_id": [None, "kept: not the map"]}


def test_superusers_cannot_delete_or_change_access_log_entries(superuser_client):
    project = ProjectFactory()
    log_access(None, project, "view_patient_list", "q=")
    entry = AccessLog.objects.get()
    changelist = superuser_client.get(reverse("admin:studies_accesslog_changelist"))
    assert changelist.status_code == 200 and "delete_selected" not in changelist.content.decode()
    assert superuser_client.get(reverse("admin:studies_accesslog_delete", args=[entry.pk])).status_code == 403
    response = superuser_client.post(reverse("admin:studies_accesslog_changelist"),
                                     {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert response.status_code in (200, 302)
    assert superuser_client.get(reverse("admin:studies_accesslog_add")).status_code == 403
    assert AccessLog.objects.filter(pk=entry.pk, detail="q=").exists()


def test_access_log_entries_are_append_only_in_code(db):
    project = ProjectFactory()
    log_access(None, project, "export_cohort_csv", "web, 3 rows")
    entry = AccessLog.objects.get()
    with pytest.raises(AppendOnlyError, match="not deleted"):
        entry.delete()
    with pytest.raises(AppendOnlyError, match="not deleted"):
        AccessLog.objects.filter(project=project).delete()
    with pytest.raises(AppendOnlyError, match="not updated"):
        AccessLog.objects.filter(project=project).update(detail="nothing to see")
    entry.detail = "nothing to see"
    with pytest.raises(AppendOnlyError, match="not changed"):
        entry.save()
    assert AccessLog.objects.get().detail == "web, 3 rows"
    log_access(None, project, "export_cohort_csv", "web, 4 rows")  # adding still works
    assert AccessLog.objects.count() == 2
