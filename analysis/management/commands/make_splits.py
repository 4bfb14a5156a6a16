"""python manage.py make_splits --project NAME --cohort NAME --test-from YYYY-MM-DD [--validation-share 0.2]
[--stratify] [--seed 0]"""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError


def _date(value):
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--test-from {value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = ("Split a cohort as the seed study did: exams on or after --test-from are the internal test set, the "
            "rest random train/validation with round((1 - share) n) in train. The cohort is created with every "
            "exam of the project if missing; a frozen cohort (a model was trained on it) is refused.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--cohort", required=True)
        parser.add_argument("--test-from", required=True, help="YYYY-MM-DD: exams from this date on are the test split")
        parser.add_argument("--validation-share", type=float, default=0.2)
        parser.add_argument("--stratify", action="store_true", help="stratify train/validation by QCT category")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **o):
        from analysis.modeling.cohort_splits import make_splits
        from studies.models import Project

        test_from = _date(o["test_from"])
        try:
            project = Project.objects.get(name=o["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project named {o['project']!r}") from None
        try:
            cohort, counts = make_splits(project, o["cohort"], test_from=test_from,
                                         validation_share=o["validation_share"], stratify=o["stratify"],
                                         random_state=o["seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"cohort {cohort.name!r}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
