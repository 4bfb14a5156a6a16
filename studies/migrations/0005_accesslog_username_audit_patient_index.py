"""Access-log entries name their user with a snapshot of the user name, which stays when the account is
deleted (the link to the user is cleared then). Entries written before are filled in from their user.

On PostgreSQL, audit entries get an index on the patient id they carry (``additional_data -> 'patient_id'``,
the expression of the history page's query): without it the page reads every entry, 2 s for one import of
200,000 rows, and more with each import.
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_usernames(apps, schema_editor):
    AccessLog = apps.get_model("studies", "AccessLog")
    User = AccessLog._meta.get_field("user").related_model
    # The historical model's plain manager: the append-only guards belong to the current model's manager.
    AccessLog._base_manager.filter(user__isnull=False).update(
        username=Subquery(User.objects.filter(pk=OuterRef("user_id")).values("username")[:1]))


PATIENT_INDEX = "auditlog_logentry_patient_id_idx"


def add_patient_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {PATIENT_INDEX} ON auditlog_logentry "
                              "((additional_data -> 'patient_id'))")


def drop_patient_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {PATIENT_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0004_merge_versions_jobs_audit"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [
        migrations.AddField(
            model_name="accesslog",
            name="username",
            field=models.CharField(blank=True, editable=False, max_length=150),
        ),
        migrations.RunPython(fill_usernames, migrations.RunPython.noop),
        migrations.RunPython(add_patient_index, drop_patient_index),
    ]
