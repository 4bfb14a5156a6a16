"""python manage.py import_qct FILE.csv --project NAME"""

from django.core.management.base import BaseCommand, CommandError

from studies.importers import CSVImportError, import_qct_file


class Command(BaseCommand):
    help = (
        "Import patients, exams and QCT BMD values (mg/cm3) from a CSV file, one row per patient exam. "
        "All rows or none; bad rows are listed as 'line N: reason' on stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--project", required=True, help="project name (created if it does not exist)")

    def handle(self, *args, file, project, **options):
        try:
            plan = import_qct_file(file, project)
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file") from None
        except IsADirectoryError:
            raise CommandError(f"{file}: is a directory, not a CSV file") from None
        except CSVImportError as exc:
            for error in exc.errors:
                self.stderr.write(error)
            raise CommandError(f"{file}: {len(exc.errors)} bad row(s); nothing was imported") from None
        self.stdout.write(
            f"imported {len(plan.rows)} row(s) into {project}: {plan.new_patients} new patient(s), "
            f"{plan.new_exams} new exam(s), {plan.updated_exams} updated exam(s)"
        )
