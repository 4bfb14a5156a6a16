from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("analysis", "0003_measurementrun_segments"),
    ]

    operations = [
        migrations.AddField(
            model_name="evaluation",
            name="resamples",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
