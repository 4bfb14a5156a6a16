"""python manage.py pull_series (--pacs NAME | --url DICOMWEB_ROOT) --study UID [--series UID] [--project NAME]"""

from django.core.management.base import BaseCommand, CommandError

from studies.models import Project
from studies.pacs.client import Endpoint, PacsClient, PacsError
from studies.pacs.ingest import IngestError, pull_study
from studies.pacs.models import PacsConnection


class Command(BaseCommand):
    help = (
        "Retrieve a CT series over DICOMweb (WADO-RS), de-identify, assemble and store it in a project; prints "
        "the stored SeriesInstanceUID. Without --series the selection rules choose the series to measure "
        "(their reasons go to stderr). Re-running stores nothing twice."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--pacs", help="name of a configured PACS connection")
        source.add_argument("--url", help="DICOMweb root URL (no authentication)")
        parser.add_argument("--study", required=True, help="StudyInstanceUID")
        parser.add_argument("--series", help="SeriesInstanceUID (default: the series the selection rules choose)")
        parser.add_argument("--project", default="default", help="project name (created if missing)")

    def handle(self, *args, pacs, url, study, series, project, **options):
        if pacs:
            connection = PacsConnection.objects.filter(name=pacs).first()
            if connection is None:
                known = ", ".join(PacsConnection.objects.values_list("name", flat=True)) or "none configured"
                raise CommandError(f"no PACS connection named {pacs!r} (known: {known})")
            endpoint = Endpoint.from_connection(connection)
        else:
            endpoint = Endpoint(base_url=url)
        study, series = study.strip(), (series or "").strip() or None
        if not study:
            raise CommandError("--study must be a StudyInstanceUID")
        try:
            client = PacsClient(endpoint)
            project_row, _ = Project.objects.get_or_create(name=project)
            result = pull_study(project_row, client, study, series_uid=series, override_by="pull_series")
        except (PacsError, IngestError) as exc:
            raise CommandError(" ".join(str(exc).split())) from None
        if result.selection is not None and not series:
            for candidate in result.selection.candidates:
                self.stderr.write(f"{candidate.series_uid}: {result.selection.reasons[candidate.series_uid]}")
        self.stdout.write(result.stored.series_uid)
