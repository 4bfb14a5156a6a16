"""Remove the real PatientID from the audit entries of the pseudonym map written before it was excluded
(studies/audit.py): the audit log is shown in the Django admin, the real id belongs in the map only."""

import json

from django.db import migrations

PHI_FIELD = "real_patient_id"


def scrub(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    LogEntry = apps.get_model("auditlog", "LogEntry")
    content_type = ContentType.objects.filter(app_label="studies", model="pseudonymmap").first()
    if content_type is None:
        return
    for entry in LogEntry.objects.filter(content_type=content_type).iterator():
        changes = entry.changes
        if not isinstance(changes, dict) and entry.changes_text:
            # Older entries keep the changes as JSON text only.
            try:
                changes = json.loads(entry.changes_text)
            except ValueError:
                changes = None
        serialized = entry.serialized_data
        fields = serialized.get("fields") if isinstance(serialized, dict) else None
        in_changes = isinstance(changes, dict) and PHI_FIELD in changes
        in_serialized = isinstance(fields, dict) and PHI_FIELD in fields
        if not (in_changes or in_serialized):
            continue
        if in_changes:
            changes.pop(PHI_FIELD)
            entry.changes = changes
            entry.changes_text = ""
        if in_serialized:
            fields.pop(PHI_FIELD)
        entry.save(update_fields=["changes", "changes_text", "serialized_data"])


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0002_pacsconnection_pseudonymmap_storedseries"),
        ("auditlog", "0017_add_actor_email"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(scrub, migrations.RunPython.noop)]
