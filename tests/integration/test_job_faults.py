"""The job fault suite: real `manage.py rqworker` processes, and for Redis faults a private redis-server on a
free port (the shared Redis is never restarted). Each test ends with exact counts: how often the task
started and finished (the "start" and "done" lines ``test.steps`` writes), the rows' states and attempts.

The rolled-back enqueue is in test_jobs.py.
"""

import os
import signal
import time

from rq import Worker

from studies import jobs
from studies.models import Job, JobState
from tests.conftest import child_pids, process_gone, wait_for

WAIT_S = 180  # generous: CI machines are loaded, and workers take seconds to start


def state_of(job):
    job.refresh_from_db()
    return job.state


def runs(path):
    """(starts, completions) written by test.steps."""
    lines = path.read_text().split() if path.exists() else []
    return lines.count("start"), lines.count("done")


def horse_of(worker):
    """The work horse (RQ's forked child) of a worker process running a job."""
    pids = wait_for(lambda: child_pids(worker.pid), timeout=WAIT_S, what="the work horse to fork")
    assert len(pids) == 1, pids
    worker.horses.extend(pids)
    return pids[0]


def test_killed_worker_and_horse_leave_job_failed_and_retry_runs_it_once(rq_worker, project, tmp_path):
    counter = tmp_path / "runs.txt"
    job = jobs.submit("test.steps", project=project, path=str(counter), steps=300, step_s=0.1)
    worker = rq_worker()
    # The row turns RUNNING before the task body writes "start": wait for both, so the kill lands in the task.
    wait_for(lambda: state_of(job) == JobState.RUNNING and runs(counter)[0] == 1, timeout=WAIT_S,
             what="the job to start")
    horse = horse_of(worker)
    # RQ's work horse calls os.setpgrp(), so the worker's process group does not contain it: SIGKILL both
    # groups, as an OOM killer or `kill -9` of both would. Nothing gets a chance to clean up.
    os.killpg(worker.pid, signal.SIGKILL)
    os.killpg(horse, signal.SIGKILL)
    worker.wait(timeout=30)
    wait_for(lambda: process_gone(horse), timeout=WAIT_S, what="the work horse to die")
    # Reconciliation notices within JOB_LOST_AFTER_S (5 s in the tests) that the worker stopped heartbeating.
    wait_for(lambda: jobs.reconcile() or state_of(job) == JobState.FAILED, timeout=WAIT_S,
             what="the lost job to be marked failed")
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.finished_at is not None
    assert "worker" in job.error and job.attempts == 0

    job.params = dict(job.params, steps=1, step_s=0)
    job.save(update_fields=["params"])
    jobs.retry(job)
    rq_worker(burst=True).wait(timeout=WAIT_S)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 1 and job.result == {"steps": 1}
    assert runs(counter) == (2, 1)  # the killed run started and never finished; the retry ran once
    assert Job.objects.count() == 1


def test_superseded_attempt_cannot_write(rq_worker, project, tmp_path):
    counter = tmp_path / "runs.txt"
    job = jobs.submit("test.steps", project=project, path=str(counter), steps=40, step_s=0.5)
    worker = rq_worker()
    wait_for(lambda: state_of(job) == JobState.RUNNING and job.progress > 0, timeout=WAIT_S,
             what="the job to start")
    horse_of(worker)
    # Freeze the worker (a stalled machine): its heartbeats stop, the reconciler declares the job lost and
    # a user retries it, while the old attempt's horse goes on running. The old attempt must never write to
    # the row again: not its progress, not its result ({"steps": 40}) over the retry's.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: jobs.reconcile() or state_of(job) == JobState.FAILED, timeout=WAIT_S,
                 what="the stalled job to be marked failed")
        job.refresh_from_db()
        assert job.state == JobState.FAILED and "worker" in job.error, job.error
        job.params = dict(job.params, steps=1, step_s=0)
        job.save(update_fields=["params"])
        jobs.retry(job)
        second = rq_worker("default", burst=True)
        second.wait(timeout=WAIT_S)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.result == {"steps": 1}, second.output()
    finished = job.finished_at

    # The old attempt would have finished 20 s after it started; wait past that.
    wait_for(lambda: not child_pids(worker.pid), timeout=WAIT_S, what="the old work horse to end")
    time.sleep(1)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"steps": 1} and job.attempts == 1 and job.progress == 1.0
    assert job.finished_at == finished
    assert runs(counter) == (2, 1)  # the old attempt stopped at its first progress report after the retry


def test_queued_jobs_lost_by_a_redis_restart_are_enqueued_again_and_run_once(private_queue, rq_worker, project,
                                                                              tmp_path):
    counter = tmp_path / "runs.txt"
    submitted = [jobs.submit("test.steps", project=project, path=str(counter), steps=1, step_s=0)
                 for _ in range(3)]
    assert len(jobs.get_queue()) == 3
    private_queue.restart()  # no persistence: Redis comes back empty
    assert len(jobs.get_queue()) == 0

    # The reconciler finds the three queued rows whose RQ jobs are gone and enqueues each once, for the same
    # attempt; a second pass (another page view, a worker) finds them in Redis and does nothing.
    assert sorted(jobs.reconcile()) == sorted(j.pk for j in submitted)
    assert jobs.reconcile() == []
    assert len(jobs.get_queue()) == 3

    worker = rq_worker(burst=True, redis_url=private_queue.url)
    worker.wait(timeout=WAIT_S)
    for job in submitted:
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED and job.attempts == 0, worker.output()
        assert job.result == {"steps": 1}
    assert runs(counter) == (3, 3)
    assert Job.objects.count() == 3


def test_worker_running_through_a_redis_restart_reregisters_and_runs_the_lost_jobs(private_queue, rq_worker,
                                                                                   project, tmp_path):
    counter = tmp_path / "runs.txt"
    first = jobs.submit("test.steps", project=project, path=str(counter), steps=16, step_s=0.5)
    worker = rq_worker(redis_url=private_queue.url)
    wait_for(lambda: state_of(first) == JobState.RUNNING, timeout=WAIT_S, what="the first job to start")
    behind = [jobs.submit("test.steps", project=project, path=str(counter), steps=1, step_s=0) for _ in range(2)]
    private_queue.restart()  # the queued jobs, the running job's RQ record and the worker's registration go

    # Nobody reconciles from this process: the worker finishes its job, finds its registration gone,
    # registers again and puts back the two lost jobs.
    for job in [first, *behind]:
        wait_for(lambda: state_of(job) == JobState.SUCCEEDED, timeout=WAIT_S,
                 what=f"job {job.pk} to succeed:\n{worker.output()}")
    assert worker.poll() is None, worker.output()
    assert [w.name for w in Worker.all(queue=jobs.get_queue())] != []
    rows, error = jobs.queue_health()
    assert error == "" and rows[0]["queue"] == "default" and len(rows[0]["workers"]) == 1
    for job in [first, *behind]:
        job.refresh_from_db()
        assert job.attempts == 0 and job.result == {"steps": job.params["steps"]}
    assert runs(counter) == (3, 3)


def test_worker_reconnects_after_a_redis_outage_mid_job(redis_server, settings, rq_worker, project, tmp_path):
    # An outage that keeps Redis's data (a restart with persistence, a network cut): RQ's own worker quit
    # about 10 s into it and never came back.
    redis_server.stop()
    redis_server.persistent = True
    redis_server.start()
    settings.RQ_QUEUES = {name: dict(config, URL=redis_server.url) for name, config in settings.RQ_QUEUES.items()}
    counter = tmp_path / "runs.txt"
    job = jobs.submit("test.steps", project=project, path=str(counter), steps=40, step_s=0.5)
    worker = rq_worker(redis_url=redis_server.url)
    wait_for(lambda: state_of(job) == JobState.RUNNING, timeout=WAIT_S, what="the job to start")
    redis_server.stop()
    time.sleep(25)
    assert worker.poll() is None, worker.output()  # still there, 25 s into the outage
    redis_server.start()

    wait_for(lambda: state_of(job) == JobState.SUCCEEDED, timeout=WAIT_S,
             what=f"the job to finish:\n{worker.output()}")
    # The worker is back on the queue: a job submitted after the outage runs.
    after = jobs.submit("test.steps", project=project, path=str(counter), steps=1, step_s=0)
    wait_for(lambda: state_of(after) == JobState.SUCCEEDED, timeout=WAIT_S,
             what=f"a job submitted after the outage to run:\n{worker.output()}")
    assert worker.poll() is None
    job.refresh_from_db()
    assert job.attempts == 0 and job.result == {"steps": 40} and job.error == ""
    assert runs(counter) == (2, 2)  # the job ran once through the outage, the later one once
    assert jobs.reconcile() == []
