from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("analysis", "0002_measurement_run_series_and_labels"),
    ]

    operations = [
        migrations.AddField(
            model_name="evaluation",
            name="resamples",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
