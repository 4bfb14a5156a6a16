"""The RQ worker class the product runs (``settings.RQ["WORKER_CLASS"]``)."""

from django.conf import settings
from rq.worker import Worker


class HeartbeatWorker(Worker):
    """An RQ worker that heartbeats every ``JOB_HEARTBEAT_S`` seconds while a job runs, so that a worker
    killed mid-job is noticed by ``studies.jobs.reconcile`` within ``JOB_LOST_AFTER_S``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", settings.JOB_HEARTBEAT_S)
        super().__init__(*args, **kwargs)
