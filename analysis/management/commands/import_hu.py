"""python manage.py import_hu FILE.csv --project NAME --source NAME"""

from django.core.management.base import BaseCommand

from analysis.modeling.hu_import import import_hu_file
from analysis.models import LevelMeasurement
from studies.csvfiles import reported_to_command


class Command(BaseCommand):
    help = (
        "Import per-vertebra mean HU measured by another tool (one row per exam and level: patient_id, "
        "exam_date, level, mean_hu; optional median_hu, sd_hu, roi_voxels, body_volume_ml) as one measurement "
        "run per exam. All rows or none; bad rows are listed as 'line N: reason' on stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--project", required=True, help="name of an existing project")
        parser.add_argument("--source", required=True, help="the tool that measured the values, e.g. TotalSegmentator")

    def handle(self, *args, file, project, source, **options):
        with reported_to_command(file, self.stderr):
            runs = import_hu_file(file, project, source=source)
        n_levels = LevelMeasurement.objects.filter(run__in=runs).count()
        self.stdout.write(f"imported {n_levels} level value(s) as {len(runs)} {source} measurement run(s) into {project}")
