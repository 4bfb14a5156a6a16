"""python manage.py import_qct FILE.csv --project NAME"""

from django.core.management.base import BaseCommand

from studies.csvfiles import reported_to_command
from studies.importers import import_qct_file


class Command(BaseCommand):
    help = (
        "Import patients, exams and QCT BMD values (mg/cm3) from a CSV file, one row per patient exam. "
        "All rows or none; bad rows are listed as 'line N: reason' on stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--project", required=True, help="project name (created if it does not exist)")

    def handle(self, *args, file, project, **options):
        with reported_to_command(file, self.stderr):
            plan = import_qct_file(file, project)
        self.stdout.write(
            f"imported {len(plan.rows)} row(s) into {project}: {plan.new_patients} new patient(s), "
            f"{plan.new_exams} new exam(s), {plan.updated_exams} updated exam(s)"
        )
