"""`manage.py runembedded` as a user runs it: stopping it stops its job worker and the embedded queue."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, child_pids, free_port, process_gone, wait_for

WAIT_S = 180


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def registered_workers(port):
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        return Redis(port=port, socket_connect_timeout=1).smembers("rq:workers")
    except RedisError:
        return set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_runembedded_stops_its_worker_and_queue(signum, tmp_path):
    web_port, queue_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(EMBEDDED_REDIS_PORT=str(queue_port), BMDSITE_VAR_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    log = tmp_path / "runembedded.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "runembedded", f"127.0.0.1:{web_port}"], cwd=REPO,
                                env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: accepts(web_port) and registered_workers(queue_port), timeout=WAIT_S,
                 what="the site and its worker to start")
        workers = child_pids(proc.pid)
        assert len(workers) == 1, log.read_text()
        # The signal goes to runembedded alone, as `kill PID` (or Ctrl-C to it) sends it.
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=WAIT_S) in (0, -signal.SIGINT, 1), log.read_text()
        wait_for(lambda: process_gone(workers[0]), timeout=WAIT_S, what=f"worker {workers[0]} to stop")
        assert not accepts(queue_port) and not accepts(web_port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in child_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_taken_default_queue_port_gives_way_to_a_free_one(tmp_path):
    """With EMBEDDED_REDIS_PORT unset and the default port taken (another site on this machine), the embedded
    queue takes a free port and its worker follows it; with the variable set, a taken port is an error."""
    import re

    default = 6390  # the settings' default for EMBEDDED_REDIS_PORT
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", default))
        blocker.listen()
    except OSError:
        pass  # taken already, which is the case under test
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "EMBEDDED_REDIS_PORT")}
    env.update(BMDSITE_VAR_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    log = tmp_path / "runembedded.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "runembedded", f"127.0.0.1:{web_port}"], cwd=REPO,
                                env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        found = wait_for(lambda: re.search(r"embedded job queue on 127\.0\.0\.1:(\d+)", log.read_text()),
                         timeout=WAIT_S, what="the embedded queue to start")
        port = int(found.group(1))
        assert port != default and f"port {default} is taken" in log.read_text()
        wait_for(lambda: accepts(web_port) and registered_workers(port), timeout=WAIT_S,
                 what="the site and its worker on the free port")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) in (0, 1), log.read_text()
    finally:
        blocker.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in child_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)

    env["EMBEDDED_REDIS_PORT"] = str(port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        refused = subprocess.run([sys.executable, "manage.py", "runembedded", f"127.0.0.1:{free_port()}"], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert refused.returncode != 0 and "set EMBEDDED_REDIS_PORT to a free port" in refused.stderr
