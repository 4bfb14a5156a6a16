"""Review events and comments name their user with a snapshot of the user name, which stays when the account
is deleted (the link to the user is cleared then). Rows written before are filled in from their user."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_names(apps, schema_editor):
    for model_name, link, name in (("ReviewEvent", "user", "username"), ("ReviewComment", "author", "author_name")):
        model = apps.get_model("review", model_name)
        User = model._meta.get_field(link).related_model
        model.objects.filter(**{f"{link}__isnull": False}).update(
            **{name: Subquery(User.objects.filter(pk=OuterRef(f"{link}_id")).values("username")[:1])})


class Migration(migrations.Migration):
    dependencies = [
        ("review", "0002_review_resegmentation_and_open_queue"),
    ]

    operations = [
        migrations.AddField(
            model_name="reviewevent",
            name="username",
            field=models.CharField(blank=True, editable=False, max_length=150),
        ),
        migrations.AddField(
            model_name="reviewcomment",
            name="author_name",
            field=models.CharField(blank=True, editable=False, max_length=150),
        ),
        migrations.RunPython(fill_names, migrations.RunPython.noop),
    ]
