"""Job kinds used only by the tests (the worker imports this module through EXTRA_JOB_TASK_MODULES)."""

import time

from studies.jobs import task


@task("test.sleep")
def sleep(*, seconds, progress):
    progress(0.1, "sleeping")
    time.sleep(seconds)
    return {"slept": seconds}


@task("test.fail")
def fail(*, progress):
    raise RuntimeError("this job always fails")


@task("test.steps")
def steps(*, path, steps, step_s, progress):
    """Counts its runs in a file: "start" when it begins, "done" when it ends, so a test can say exactly how
    often the job ran and finished (nothing run twice)."""
    with open(path, "a") as fh:
        fh.write("start\n")
    for i in range(steps):
        progress(i / steps, f"step {i + 1} of {steps}")
        time.sleep(step_s)
    with open(path, "a") as fh:
        fh.write("done\n")
    return {"steps": steps}


@task("test.superseded_while_running")
def superseded_while_running(*, job_pk, report_after, progress):
    """While it runs, the job is declared lost and retried (as the reconciler and a user would do from other
    processes); then, with ``report_after``, it reports progress, else it returns its stale result."""
    from studies import jobs
    from studies.models import Job, JobState

    progress(0.5, "half way")
    Job.objects.filter(pk=job_pk, state=JobState.RUNNING).update(state=JobState.FAILED, error="lost")
    jobs.retry(Job.objects.get(pk=job_pk))
    if report_after:
        progress(0.9, "still going")
        raise AssertionError("progress of a superseded attempt must stop the task")
    return {"stale": True}


@task("test.edit_qct")
def edit_qct(*, qct_id, bmd, other_user_id=None, progress):
    """Saves an audited QCT value without naming anyone: as the job, then (with ``other_user_id``) inside a
    block naming that user, then as the job again (the block must not take the job's actor with it)."""
    from django.contrib.auth import get_user_model

    from studies.audit import acting_as
    from studies.models import QCTResult

    def save(value):
        qct = QCTResult.objects.get(pk=qct_id)
        qct.bmd_l1 = value
        qct.save()

    save(bmd)
    if other_user_id is not None:
        with acting_as(get_user_model().objects.get(pk=other_user_id)):
            save(bmd + 1)
        save(bmd + 2)
    return {"bmd_l1": QCTResult.objects.get(pk=qct_id).bmd_l1}
