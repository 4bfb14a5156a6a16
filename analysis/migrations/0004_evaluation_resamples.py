from django.db import migrations, models


def name_old_variants(apps, schema_editor):
    """Calibrated versions trained before the variants existed appended HU_cal to the chest features: that is
    the feature_augmentation variant (their old value named the intercept fit, kept in ``calibration``)."""
    ModelVersion = apps.get_model("analysis", "ModelVersion")
    ModelVersion.objects.filter(feature_set="chest_cal", calibration_variant__in=["cohort_slope", "per_patient_slope"]
                                ).update(calibration_variant="feature_augmentation")


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
        migrations.RunPython(name_old_variants, migrations.RunPython.noop),
    ]
