"""python manage.py export_volume --series UID --out FILE.nii.gz"""

from django.core.management.base import BaseCommand, CommandError

from analysis.imaging.volume import save_nifti
from studies.pacs.models import StoredSeries


class Command(BaseCommand):
    help = ("Write a stored series as NIfTI: HU (int16 when exact, else float32), affine in RAS as nibabel "
            "writes it.")

    def add_arguments(self, parser):
        parser.add_argument("--series", required=True, help="SeriesInstanceUID of a stored series")
        parser.add_argument("--out", required=True, help="destination .nii.gz (or .nii)")
        parser.add_argument("--project", help="project name, when the series is stored in several projects")

    def handle(self, *args, series, out, project, **options):
        if not (out.endswith(".nii.gz") or out.endswith(".nii")):
            raise CommandError(f"{out}: the output must end in .nii.gz or .nii")
        rows = StoredSeries.objects.filter(series_uid=series.strip()).select_related("project")
        if project:
            rows = rows.filter(project__name=project)
        rows = list(rows[:10])
        if not rows:
            raise CommandError(f"no stored series {series}" + (f" in project {project}" if project else ""))
        if len(rows) > 1:
            names = ", ".join(r.project.name for r in rows)
            raise CommandError(f"series {series} is stored in several projects ({names}); pass --project")
        try:
            volume = rows[0].load_volume()
        except (OSError, ValueError) as exc:
            raise CommandError(f"series {series}: stored volume unreadable ({exc})") from None
        dtype = "int16" if volume.array.dtype.kind in "iu" else "float32"
        try:
            save_nifti(volume, out, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{out}: {exc}") from None
        self.stdout.write(f"{out}")
