"""python manage.py cohort_table --project NAME --json"""

import json

from django.core.management.base import BaseCommand, CommandError

from studies.cohorts import cohort_table_for
from studies.models import Cohort, Project


class Command(BaseCommand):
    help = ("Table 1 by split: age median (P25, P75) with Kruskal-Wallis H, sex and category counts with "
            "chi-square (no continuity correction). Excluded patients are left out unless --include-excluded.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--cohort", default=Cohort.DEFAULT_NAME)
        parser.add_argument("--include-excluded", action="store_true")
        parser.add_argument("--json", action="store_true", help="print JSON (the only output format for now)")

    def handle(self, *args, project, cohort, include_excluded, **options):
        try:
            project_obj = Project.objects.get(name=project)
        except Project.DoesNotExist:
            raise CommandError(f"no project named {project!r}") from None
        if not project_obj.cohorts.filter(name=cohort).exists():
            raise CommandError(f"project {project!r} has no cohort {cohort!r}")
        try:
            table = cohort_table_for(project_obj, cohort, include_excluded=include_excluded)
        except ValueError as exc:
            raise CommandError(f"project {project!r}: {exc}") from None
        self.stdout.write(json.dumps(table, indent=2))
