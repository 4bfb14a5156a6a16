"""The RQ worker class the product runs (``settings.RQ["WORKER_CLASS"]``).

On top of RQ's worker it makes three promises the job pages rely on:

- **It survives Redis outages.** RQ's worker quits on several Redis errors (a timeout, an error while a job
  runs, a failed heartbeat); this one keeps watching its running job while Redis is away, and when its work
  loop ends without being asked to stop it waits for Redis with exponential backoff (1 s doubling to
  ``RECONNECT_MAX_S``) and starts again under the same name.
- **It re-registers after Redis restarts empty**, so the jobs page still sees it, and then reconciles the
  jobs (``studies.jobs.reconcile``): queued jobs that Redis lost are enqueued again.
- **Its work horse does not outlive it.** RQ's work horse calls ``os.setpgrp()``, so killing the worker's
  process group misses it; a horse whose worker died stops within a second instead of finishing a job that
  the reconciler has already declared lost (and whose writes the attempt guard refuses anyway).
"""

import logging
import os
import threading
import time

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.exceptions import StopRequested
from rq.worker import Worker

log = logging.getLogger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# The longest wait between two attempts to reach Redis again (seconds).
RECONNECT_MAX_S = 30.0


class HeartbeatWorker(Worker):
    """An RQ worker that heartbeats every ``JOB_HEARTBEAT_S`` seconds while a job runs, so that a worker
    killed mid-job is noticed by ``studies.jobs.reconcile`` within ``JOB_LOST_AFTER_S``, and that reconnects
    after Redis outages (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", settings.JOB_HEARTBEAT_S)
        super().__init__(*args, **kwargs)
        self._registered = False
        self._reconcile_due = False

    # -- reconnecting --------------------------------------------------------------------------------------

    def work(self, burst=False, **kwargs):
        backoff = 1.0
        while True:
            self._reconcile_jobs()
            try:
                worked = super().work(burst=burst, **kwargs)
                lost = False
            except _REDIS_DOWN as exc:  # raised by the teardown of a loop that ended on a Redis error
                if burst:
                    raise
                log.error("worker %s: lost the job queue (%s)", self.name, exc)
                worked, lost = False, True
            if burst or self._stopping():
                return worked
            if not lost and (kwargs.get("max_jobs") or kwargs.get("max_idle_time")):
                return worked
            # The loop ended without a stop request: RQ gave up on an error (Redis away, most often).
            while True:
                if not self._wait_for_redis(backoff):
                    return worked
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                try:
                    self._prepare_restart()
                    break
                except RedisError as exc:  # gone again already: wait once more
                    log.warning("worker %s: job queue lost again (%s)", self.name, exc)
            log.warning("worker %s: the job queue answers again; starting over", self.name)

    def _stopping(self):
        return self._stop_requested or self._shutdown_requested_date is not None

    def _wait_for_redis(self, backoff):
        """Sleep ``backoff`` s, then until Redis answers (doubling the wait up to ``RECONNECT_MAX_S``).
        False when a stop was requested meanwhile."""
        delay = backoff
        try:
            while True:
                log.warning("worker %s: waiting %.0f s for the job queue", self.name, delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stopping():
                        return False
                    time.sleep(0.2)
                try:
                    self.connection.ping()
                    return True
                except RedisError as exc:
                    log.warning("worker %s: job queue still unreachable: %s", self.name, exc)
                delay = min(delay * 2, RECONNECT_MAX_S)
        except StopRequested:  # SIGINT/SIGTERM while idle: RQ's handler raises this
            return False

    def _prepare_restart(self):
        if self.pubsub_thread is not None:
            try:
                self.pubsub_thread.stop(timeout=2)
                self.pubsub.close()
            except Exception:  # noqa: BLE001 - best effort: a dead connection cannot be closed cleanly
                pass
        self.pubsub = self.pubsub_thread = None
        self._stop_requested = False
        self._shutdown_requested_date = None
        # Our own registration from before the outage (no "death" written): RQ refuses to register a
        # worker name twice, and this name is ours.
        self.connection.delete(self.key)

    # -- heartbeats and registration -------------------------------------------------------------------------

    def register_birth(self):
        super().register_birth()
        self._registered = True

    def subscribe(self):
        # RQ's pubsub thread waits 60 s per read and redis-py 8 joins it without a timeout when the worker
        # stops, so every stop took up to a minute; a 1 s read keeps stopping prompt.
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None or self._is_horse or not self._registered:
            return super().heartbeat(timeout, pipeline)
        registered = self.connection.exists(self.key)
        super().heartbeat(timeout)
        if not registered or self._reconcile_due:
            # Redis restarted empty (or our key expired): register again so the jobs page sees this worker,
            # and put back the jobs Redis lost.
            log.warning("worker %s: registration gone from the job queue; registering again", self.name)
            with self.connection.pipeline() as p:
                p.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, p)
                p.expire(self.key, (timeout or self.worker_ttl + 60))
                p.execute()
            self._reconcile_due = False
            self._reconcile_jobs()

    def maintain_heartbeats(self, job, execution):
        # While a job runs, a Redis outage must not end the worker (RQ's would quit and leave its horse
        # running unwatched): the job goes on writing to the database, and heartbeats resume with Redis.
        try:
            if not self.connection.exists(self.key):
                # Redis restarted empty under the running job: RQ's heartbeat recreates our hash, and once
                # the job is done the idle heartbeat reconciles the jobs Redis lost meanwhile.
                self._reconcile_due = True
            super().maintain_heartbeats(job, execution)
            worker_registration.register(self)
        except _REDIS_DOWN as exc:
            log.warning("worker %s: job queue unreachable while job %s runs (%s); the job goes on",
                        self.name, job.id, exc)

    def _reconcile_jobs(self):
        from django.db import connections

        from studies.jobs import reconcile

        try:
            changed = reconcile()
            if changed:
                log.warning("worker %s: reconciled jobs %s with the job queue", self.name, changed)
        except Exception:  # noqa: BLE001 - reconciling is a courtesy; the worker must keep working
            log.exception("worker %s: could not reconcile jobs", self.name)
        finally:
            # The work horse is forked from this process: it must not inherit an open database connection.
            connections.close_all()

    # -- the work horse ----------------------------------------------------------------------------------

    def main_work_horse(self, job, queue):
        _exit_when_orphaned(os.getppid(), job.id)
        super().main_work_horse(job, queue)


def _exit_when_orphaned(parent_pid, rq_job_id, interval_s=1.0):
    """End this work horse when its worker is gone (killed): the job was declared lost and may be retried."""

    def watch():
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os.write(2, f"work horse {os.getpid()}: worker {parent_pid} is gone; stopping job {rq_job_id}\n"
                         .encode())
                os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
