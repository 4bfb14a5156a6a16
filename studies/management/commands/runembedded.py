"""python manage.py runembedded [ADDRPORT]: the whole site on one machine with nothing installed.

Starts the embedded Redis-protocol server (unless REDIS_URL points elsewhere), one RQ worker process for
the default and gpu queues, and the development web server. Ctrl-C stops all three.
"""

import os
import subprocess
import sys
from urllib.parse import urlparse

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve the site with background jobs on the embedded default (no Redis or PostgreSQL needed)."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--workers", type=int, default=1, help="RQ worker processes (default 1)")

    def handle(self, *args, addrport, workers, **options):
        url = urlparse(settings.REDIS_URL)
        embedded = "REDIS_URL" not in os.environ
        if embedded:
            from studies.embedded import start_server

            try:
                start_server(url.hostname, url.port)
            except OSError as exc:
                raise CommandError(f"cannot start the embedded job queue on {url.hostname}:{url.port}: {exc} "
                                   "(set EMBEDDED_REDIS_PORT to a free port)") from None
            self.stdout.write(f"embedded job queue on {url.hostname}:{url.port}")
        worker_cmd = [sys.executable, "manage.py", "rqworker", "default", "gpu"]
        if embedded:
            worker_cmd += ["--worker-class", "studies.embedded.EmbeddedWorker"]
        procs = [subprocess.Popen(worker_cmd, cwd=settings.BASE_DIR) for _ in range(workers)]
        self.stdout.write(f"{workers} job worker(s) started")
        try:
            call_command("runserver", addrport, use_reloader=False)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
