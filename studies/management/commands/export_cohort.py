"""python manage.py export_cohort --project NAME --out FILE.csv"""

import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.exporters import write_cohort_csv
from studies.models import Project
from studies.registry import log_access


class Command(BaseCommand):
    help = "Export one row per patient exam (patient_id, exam_date, qct_bmd, category, split, ...) as CSV."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--out", required=True, help="CSV file to write ('-' for standard output)")

    def handle(self, *args, project, out, **options):
        try:
            project_obj = Project.objects.get(name=project)
        except Project.DoesNotExist:
            raise CommandError(f"no project named {project!r}") from None
        if out == "-":
            count = write_cohort_csv(project_obj, self.stdout)
        else:
            target = Path(out)
            if not target.parent.is_dir():
                raise CommandError(f"{out}: folder {target.parent} does not exist")
            # Write beside the target and rename, so a failure never leaves half a file.
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
            try:
                with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                    count = write_cohort_csv(project_obj, handle)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        log_access(None, project_obj, "export_cohort_csv", f"command line, {count} rows to {out}")
        if out != "-":
            self.stdout.write(f"wrote {count} row(s) to {out}")
