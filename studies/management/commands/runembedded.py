"""python manage.py runembedded [ADDRPORT]: the whole site on one machine with nothing installed.

Starts the embedded Redis-protocol server (unless REDIS_URL points elsewhere), one RQ worker process for
the default and gpu queues, and the development web server. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops all
three: the workers get RQ's cold shutdown (a running job is stopped and can be retried), and any worker
still there after ``STOP_TIMEOUT_S`` is killed.
"""

import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

STOP_TIMEOUT_S = 15


class Command(BaseCommand):
    help = "Serve the site with background jobs on the embedded default (no Redis or PostgreSQL needed)."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--workers", type=int, default=1, help="RQ worker processes (default 1)")

    def handle(self, *args, addrport, workers, **options):
        url = urlparse(settings.REDIS_URL)
        embedded = "REDIS_URL" not in os.environ
        server = None
        if embedded:
            from studies.embedded import start_server

            try:
                server = start_server(url.hostname, url.port)
            except OSError as exc:
                if "EMBEDDED_REDIS_PORT" in os.environ:  # asked for: that port or nothing
                    raise CommandError(f"cannot start the embedded job queue on {url.hostname}:{url.port}: {exc} "
                                       "(set EMBEDDED_REDIS_PORT to a free port)") from None
                # The default port is taken (another site on this machine, say): any free one will do.
                server = start_server(url.hostname, 0)
                _use_queue_port(server.server_address[1])
                self.stdout.write(f"port {url.port} is taken ({exc.strerror or exc}): using a free one")
            port = server.server_address[1]
            self.stdout.write(f"embedded job queue on {url.hostname}:{port}")
        worker_cmd = [sys.executable, "manage.py", "rqworker", "default", "gpu"]
        if embedded:
            worker_cmd += ["--worker-class", "studies.embedded.EmbeddedWorker"]
        # SIGTERM and SIGHUP would end this process without running the cleanup below and leave the
        # workers running: treat them as Ctrl-C. SIGINT too, explicitly: a process started from a
        # non-interactive shell in the background inherits SIGINT ignored, and `kill -INT` did nothing.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        # Own sessions: a Ctrl-C in the terminal reaches this process only, which stops the workers in order.
        procs = [subprocess.Popen(worker_cmd, cwd=settings.BASE_DIR, start_new_session=True)
                 for _ in range(workers)]
        self.stdout.write(f"{workers} job worker(s) started")
        try:
            call_command("runserver", addrport, use_reloader=False)
        except KeyboardInterrupt:
            pass
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut it short
                signal.signal(signum, signal.SIG_IGN)
            _stop_workers(procs)
            if server is not None:
                server.shutdown()
                server.server_close()
            self.stdout.write("stopped the web server, the job worker(s) and the job queue")


def _use_queue_port(port):
    """Point this process's queues and the workers it starts (through the environment) at ``port``."""
    os.environ["EMBEDDED_REDIS_PORT"] = str(port)
    current = urlparse(settings.REDIS_URL)
    url = current._replace(netloc=f"{current.hostname}:{port}").geturl()
    settings.REDIS_URL = url
    for queue in settings.RQ_QUEUES.values():  # django_rq reads these dicts when a queue is first used
        queue["URL"] = url


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_workers(procs):
    """RQ's cold shutdown (two SIGTERMs: the second stops a running job's work horse), then SIGKILL."""
    for _ in range(2):
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        time.sleep(0.5)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
