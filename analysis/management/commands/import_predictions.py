"""python manage.py import_predictions FILE.csv --project NAME --name NAME --task classification|regression
[--cohort main] [--n-resamples 2000] [--seed 0]"""

from django.core.management.base import BaseCommand, CommandError

from analysis.modeling.predictions import import_external_predictions
from studies.csvfiles import reported_to_command


class Command(BaseCommand):
    help = ("Import an external model's predictions (patient_id, exam_date, and predicted_bmd or p_osteoporosis, "
            "p_osteopenia, p_normal) as a model version, evaluated on the cohort's splits like the product's own. "
            "All rows or none; bad rows are listed as 'line N: reason' on stderr.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--project", required=True)
        parser.add_argument("--name", required=True, help="name of the external model version")
        parser.add_argument("--task", required=True, choices=("classification", "regression"))
        parser.add_argument("--cohort", default="main")
        parser.add_argument("--n-resamples", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, file, project, name, task, cohort, n_resamples, seed, **options):
        from studies.models import Project

        try:
            project_obj = Project.objects.get(name=project)
        except Project.DoesNotExist:
            raise CommandError(f"no project named {project!r}") from None
        with reported_to_command(file, self.stderr):
            with open(file, "rb") as handle:
                data = handle.read()
            version = import_external_predictions(data, project_obj, name=name, task=task, cohort_name=cohort,
                                                  n_resamples=n_resamples, random_state=seed, file_name=file)
        splits = ", ".join(f"{e.split} n={e.n}" for e in version.evaluations.all())
        self.stdout.write(f"model version {version.pk} {version.name!r}: {version.predictions.count()} prediction(s); "
                          f"evaluated on {splits or 'no split'}")
