# Joins three migrations written side by side (registry versions, job attempts, pseudonym audit scrub);
# they touch different tables and need no order between them.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0003_job_attempts_traceback"),
        ("studies", "0003_scrub_real_ids_from_pseudonym_audit"),
        ("studies", "0003_versions_and_one_training"),
    ]

    operations = []
