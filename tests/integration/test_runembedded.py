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
