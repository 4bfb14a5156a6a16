from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('analysis', '0002_measurement_run_series_and_labels'),
    ]

    operations = [
        migrations.AddField(
            model_name='measurementrun',
            name='segments',
            field=models.JSONField(blank=True, default=list, help_text='every body segment, named or not'),
        ),
        migrations.AddField(
            model_name='measurementrun',
            name='segment_labels',
            field=models.FileField(blank=True, max_length=300, upload_to='segments/%Y/%m/'),
        ),
    ]
