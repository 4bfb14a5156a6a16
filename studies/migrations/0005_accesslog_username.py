"""Access-log entries name their user with a snapshot of the user name, which stays when the account is
deleted (the link to the user is cleared then). Entries written before are filled in from their user."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_usernames(apps, schema_editor):
    AccessLog = apps.get_model("studies", "AccessLog")
    User = AccessLog._meta.get_field("user").related_model
    # The historical model's plain manager: the append-only guards belong to the current model's manager.
    AccessLog._base_manager.filter(user__isnull=False).update(
        username=Subquery(User.objects.filter(pk=OuterRef("user_id")).values("username")[:1]))


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0004_merge_versions_jobs_audit"),
    ]

    operations = [
        migrations.AddField(
            model_name="accesslog",
            name="username",
            field=models.CharField(blank=True, editable=False, max_length=150),
        ),
        migrations.RunPython(fill_usernames, migrations.RunPython.noop),
    ]
